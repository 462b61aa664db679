#![no_main]
#[path = "common.rs"]
mod common;
use bankbot_entities::EntityKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::check(data, &[EntityKind::Iban], &common::context());
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = bankbot_entities::iban::validate(s);
    }
});
