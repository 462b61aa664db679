#![no_main]
#[path = "common.rs"]
mod common;
use bankbot_entities::EntityKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut ctx = common::context();
    common::check(data, &[EntityKind::Date, EntityKind::DateRange], &ctx);
    ctx.prefer_future = true;
    ctx.day_first = false;
    common::check(data, &[EntityKind::Date, EntityKind::DateRange], &ctx);
});
