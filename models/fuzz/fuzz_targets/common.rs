// Shared checks: every entity's span is a slice of the text with the same
// text, spans do not overlap, and values keep their invariants.
use bankbot_entities::{Context, Date, Decimal, Entity, EntityKind, EntityValue, extract_kinds};

pub fn context() -> Context {
    Context::new(Date::parse_iso("2024-03-13").expect("fixed date"))
}

pub fn check(data: &[u8], kinds: &[EntityKind], ctx: &Context) -> Vec<Entity> {
    let Ok(text) = std::str::from_utf8(data) else { return Vec::new() };
    let found = extract_kinds(text, ctx, kinds);
    let mut last_end = 0;
    for e in &found {
        assert!(kinds.contains(&e.entity));
        assert!(e.start >= last_end && e.start < e.end);
        assert_eq!(&text[e.start..e.end], e.text);
        last_end = e.end;
        match &e.value {
            EntityValue::Amount(a) => {
                let s = a.amount.to_string();
                assert_eq!(Decimal::parse_plain(&s), Some(a.amount), "{s}");
            }
            EntityValue::DateRange(r) => assert!(r.from <= r.to),
            EntityValue::Iban(v) => {
                assert_eq!(v.valid, bankbot_entities::iban::validate(&v.iban).is_ok());
            }
            EntityValue::Date(_) | EntityValue::Payee(_) | EntityValue::Text(_) => {}
        }
    }
    found
}
