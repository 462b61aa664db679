#![no_main]
#[path = "common.rs"]
mod common;
use bankbot_entities::EntityKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let kinds = [EntityKind::AccountNumber, EntityKind::SortCode, EntityKind::CardLast4, EntityKind::Phone, EntityKind::Email];
    common::check(data, &kinds, &common::context());
});
