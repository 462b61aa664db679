#![no_main]
use bankbot_entities::numbers::{Decimal, parse_numeral};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(d) = parse_numeral(s) {
            assert_eq!(Decimal::parse_plain(&d.to_string()), Some(d));
            let _ = d.to_minor_units(2);
            let _ = d.shift(9);
        }
    }
});
