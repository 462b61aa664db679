//! Filling `{slot}` and `{result.field}` placeholders, and how values read
//! in a reply.

use std::collections::BTreeMap;

use bankbot_entities::{Date, minor_exponent};

use crate::state::{Money, Value};

/// The placeholder names in a template, in order.
pub fn placeholders(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = after[..close].trim();
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            out.push(name.to_owned());
        }
        rest = &after[close + 1..];
    }
    out
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

pub fn date(d: Date) -> String {
    let month = MONTHS
        .get(usize::from(d.month()).saturating_sub(1))
        .copied()
        .unwrap_or("?");
    format!("{} {month} {}", d.day(), d.year())
}

/// "£1,234.50", "€80.00", "1,000 JPY": exact, from minor units.
pub fn money(m: &Money) -> String {
    let exp = minor_exponent(&m.currency).unwrap_or(2);
    let sign = if m.minor < 0 { "-" } else { "" };
    let abs = m.minor.unsigned_abs();
    let scale = 10u64.pow(exp);
    let units = abs / scale;
    let frac = abs % scale;
    let digits = units.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let number = if exp == 0 {
        grouped
    } else {
        format!("{grouped}.{frac:0width$}", width = exp as usize)
    };
    let symbol = match m.currency.as_str() {
        "GBP" => Some("£"),
        "EUR" => Some("€"),
        "USD" => Some("$"),
        _ => None,
    };
    match symbol {
        Some(s) => format!("{sign}{s}{number}"),
        None => format!("{sign}{number} {}", m.currency),
    }
}

pub fn value(v: &Value) -> String {
    match v {
        Value::Money(m) => money(m),
        Value::Date { date: d } => date(*d),
        Value::DateRange { range } if range.from == range.to => date(range.from),
        Value::DateRange { range } => format!("{} to {}", date(range.from), date(range.to)),
        Value::Ref { name, .. } => name.clone(),
        Value::Text { text } => text.clone(),
    }
}

/// Fills placeholders; an unknown one is left as written (the catalogue
/// check rejects those before they reach a customer).
pub fn fill(
    template: &str,
    slots: &BTreeMap<String, Value>,
    result: &BTreeMap<String, String>,
) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = after[..close].trim();
        let filled = match name.strip_prefix("result.") {
            Some(field) => result.get(field).cloned(),
            None => slots.get(name).map(value),
        };
        match filled {
            Some(f) => out.push_str(&f),
            None => out.push_str(&rest[open..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_and_grouped() {
        let m = |minor, c: &str| {
            money(&Money {
                minor,
                currency: c.into(),
            })
        };
        assert_eq!(m(123_450, "GBP"), "£1,234.50");
        assert_eq!(m(5, "EUR"), "€0.05");
        assert_eq!(m(1000, "JPY"), "1,000 JPY");
        assert_eq!(m(1_234_567, "KWD"), "1,234.567 KWD");
    }

    #[test]
    fn placeholders_fill_from_slots_and_results() {
        let mut slots = BTreeMap::new();
        slots.insert(
            "amount".to_owned(),
            Value::Money(Money {
                minor: 5000,
                currency: "GBP".into(),
            }),
        );
        let mut result = BTreeMap::new();
        result.insert("balance".to_owned(), "£12.00".to_owned());
        assert_eq!(
            fill(
                "Send {amount}? Left: {result.balance} {unknown}",
                &slots,
                &result
            ),
            "Send £50.00? Left: £12.00 {unknown}"
        );
        assert_eq!(
            placeholders("a {x} {result.y} {not closed"),
            vec!["x", "result.y"]
        );
    }
}
