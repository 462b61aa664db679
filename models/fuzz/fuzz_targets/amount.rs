#![no_main]
#[path = "common.rs"]
mod common;
use bankbot_entities::EntityKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::check(data, &[EntityKind::Amount], &common::context());
});
