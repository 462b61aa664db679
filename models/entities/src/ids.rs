//! Identifiers with fixed shapes: sort codes, UK account numbers, the last
//! four digits of a card, phone numbers and e-mail addresses.

use std::sync::LazyLock;

use regex::Regex;

use super::{Candidate, Context, EntityKind, EntityValue, Source};

// The patterns are literals: they compile, or every test fails.
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("built-in pattern {pattern:?}: {e}"))
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)[a-z0-9][a-z0-9._%+\-]{0,63}@[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?)+",
    )
});
static SORT_CODE: LazyLock<Regex> = LazyLock::new(|| re(r"\b(\d{2})([- ])(\d{2})[- ](\d{2})\b"));
static SIX_DIGITS: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d{6}\b"));
static EIGHT_DIGITS: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d{8}\b"));
static LAST4: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(?:\b(?:ending|ends|end)(?:\s+(?:in|with))?|\blast\s+(?:4|four)(?:\s+digits)?(?:\s+(?:are|is|of))?|[x*•]{2,}[\s\-]?(?:[x*•]{4}[\s\-]?){0,3})[\s:#\-]*(\d{4})\b",
    )
});
static PHONE: LazyLock<Regex> = LazyLock::new(|| re(r"(?:\+|\b00|\(|\b)\d[\d \-().]{6,20}\d\b"));

/// Words that say the nearby number is about a card.
const CARD_WORDS: &[&str] = &[
    "card",
    "visa",
    "mastercard",
    "amex",
    "debit",
    "credit",
    "cards",
];
const ACCOUNT_WORDS: &[&str] = &["account", "acc", "acct", "a/c", "number", "no", "no."];

fn words_before(text: &str, at: usize, n: usize) -> Vec<String> {
    text[..at]
        .split(|c: char| c.is_whitespace() || c == ',' || c == ':')
        .filter(|w| !w.is_empty())
        .rev()
        .take(n)
        .map(str::to_lowercase)
        .collect()
}

fn push(
    out: &mut Vec<Candidate>,
    kind: EntityKind,
    start: usize,
    end: usize,
    value: String,
    confidence: f32,
) {
    out.push(Candidate {
        kind,
        start,
        end,
        value: EntityValue::Text(value),
        source: Source::Rules,
        confidence,
    });
}

pub(crate) fn extract(text: &str, ctx: &Context, out: &mut Vec<Candidate>) {
    for m in EMAIL.find_iter(text) {
        let s = m.as_str();
        let (local, domain) = s.split_once('@').unwrap_or((s, ""));
        push(
            out,
            EntityKind::Email,
            m.start(),
            m.end(),
            format!("{local}@{}", domain.to_lowercase()),
            0.99,
        );
    }
    for c in SORT_CODE.captures_iter(text) {
        let Some(m) = c.get(0) else { continue };
        // Both separators the same ("40-11-62", "40 11 62").
        let seps: Vec<char> = m.as_str().chars().filter(|c| !c.is_ascii_digit()).collect();
        if seps.len() != 2 || seps[0] != seps[1] {
            continue;
        }
        let told = words_before(text, m.start(), 3)
            .iter()
            .any(|w| w.starts_with("sort") || w == "code" || w == "sc");
        let digits: String = m.as_str().chars().filter(char::is_ascii_digit).collect();
        let value = format!("{}-{}-{}", &digits[..2], &digits[2..4], &digits[4..]);
        push(
            out,
            EntityKind::SortCode,
            m.start(),
            m.end(),
            value,
            if told { 0.99 } else { 0.8 },
        );
    }
    for m in SIX_DIGITS.find_iter(text) {
        let told = words_before(text, m.start(), 3)
            .iter()
            .any(|w| w.starts_with("sort") || w == "sc");
        if told {
            let d = m.as_str();
            push(
                out,
                EntityKind::SortCode,
                m.start(),
                m.end(),
                format!("{}-{}-{}", &d[..2], &d[2..4], &d[4..]),
                0.97,
            );
        }
    }
    for m in EIGHT_DIGITS.find_iter(text) {
        let before = words_before(text, m.start(), 4);
        let told = before.iter().any(|w| ACCOUNT_WORDS.contains(&w.as_str()));
        // A date written as 20240115 is not an account number.
        let carded = before.iter().any(|w| CARD_WORDS.contains(&w.as_str()));
        if !carded {
            push(
                out,
                EntityKind::AccountNumber,
                m.start(),
                m.end(),
                m.as_str().to_owned(),
                if told { 0.97 } else { 0.75 },
            );
        }
    }
    for c in LAST4.captures_iter(text) {
        let (Some(all), Some(d)) = (c.get(0), c.get(1)) else {
            continue;
        };
        let masked = all.as_str().starts_with(['x', 'X', '*', '•']);
        let about_card = masked
            || words_before(text, all.start(), 5).iter().any(|w| {
                CARD_WORDS
                    .iter()
                    .any(|c| w.trim_matches(|ch: char| !ch.is_alphanumeric()) == *c)
            });
        if about_card {
            push(
                out,
                EntityKind::CardLast4,
                d.start(),
                d.end(),
                d.as_str().to_owned(),
                0.95,
            );
        }
    }
    for m in PHONE.find_iter(text) {
        let s = m.as_str();
        // Not inside a longer word or number.
        if text[..m.start()]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric())
        {
            continue;
        }
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        let international = s.starts_with('+') || s.starts_with("00");
        let national = digits.starts_with('0') && !international;
        let n = digits.len();
        let plausible = if international {
            (8..=15).contains(&n)
        } else {
            national && (10..=11).contains(&n)
        };
        // "(" only as the opening of an area code.
        let bracket_ok = !s.starts_with('(') || s[1..].contains(')');
        let dots = s.contains('.');
        if !plausible || !bracket_ok || dots {
            continue;
        }
        let value = if international {
            format!("+{}", digits.trim_start_matches("00"))
        } else {
            match ctx.phone_country_code {
                Some(cc) => format!("+{cc}{}", &digits[1..]),
                None => digits.clone(),
            }
        };
        push(out, EntityKind::Phone, m.start(), m.end(), value, 0.9);
    }
}
