#![no_main]
use bankbot_entities::annotation::{parse, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(a) = parse(s) {
            for e in &a.entities {
                assert_eq!(&a.text[e.start..e.end], e.text);
            }
            // Rendering and parsing again gives the same example.
            assert_eq!(parse(&render(&a)).ok(), Some(a));
        }
    }
});
