//! Entity evaluation: predicted entities against annotated spans.
//!
//! A prediction matches an annotation of the same type when their spans
//! overlap (annotators and rules may disagree on "the" or "in") and, when the
//! annotation states a value (`[50 quid](amount=50 GBP)`), the values are
//! equal. Each annotation and each prediction is matched at most once.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Date, Decimal, Entity, EntityKind, EntityValue};
use crate::annotation::EntitySpan;

/// Counts and scores for one entity type.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EntityScore {
    /// Annotated spans of this type.
    pub support: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    /// Matched by span but with another value.
    pub wrong_value: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// One disagreement, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityMiss {
    pub text: String,
    pub entity: EntityKind,
    pub span: String,
    /// "missed", "spurious" or "wrong value".
    pub kind: &'static str,
    pub expected: Option<String>,
    pub predicted: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EntityReport {
    pub per_entity: BTreeMap<EntityKind, EntityScore>,
    /// Micro-averaged over all types.
    pub overall: EntityScore,
    pub misses: Vec<EntityMiss>,
    /// Annotated types the extractors do not produce (e.g. `account`),
    /// with their counts; they are not scored.
    pub unscored: BTreeMap<String, usize>,
}

/// Writes a value the way annotations state it: "50 GBP", "50" (no
/// currency), "2024-03-08", "2024-02-01..2024-02-29", an IBAN ("… invalid"
/// when it fails its checks), a payee id, or the normalised text.
pub fn value_text(v: &EntityValue) -> String {
    match v {
        EntityValue::Amount(a) => match &a.currency {
            Some(c) => format!("{} {c}", a.amount),
            None => a.amount.to_string(),
        },
        EntityValue::Date(d) => d.to_string(),
        EntityValue::DateRange(r) => format!("{}..{}", r.from, r.to),
        EntityValue::Iban(i) if i.valid => i.iban.clone(),
        EntityValue::Iban(i) => format!("{} invalid", i.iban),
        EntityValue::Payee(p) => p.id.clone(),
        EntityValue::Text(t) => t.clone(),
    }
}

/// Whether a predicted value equals an annotated one. Amounts compare as
/// numbers ("32.5 GBP" = "32.50 GBP"); everything else as text, ignoring
/// case and spaces.
pub fn value_matches(v: &EntityValue, expected: &str) -> bool {
    let expected = expected.trim();
    match v {
        EntityValue::Amount(a) => {
            let (num, cur) = match expected.split_once(' ') {
                Some((n, c)) => (n, Some(c.trim())),
                None => (expected, None),
            };
            let Some(d) = Decimal::parse_plain(num) else {
                return false;
            };
            d.normalized() == a.amount.normalized()
                && cur.map(str::to_ascii_uppercase) == a.currency
        }
        EntityValue::Date(d) => Date::parse_iso(expected).is_ok_and(|e| e == *d),
        _ => {
            let norm = |s: &str| s.split_whitespace().collect::<String>().to_lowercase();
            norm(&value_text(v)) == norm(expected)
        }
    }
}

fn score(s: &mut EntityScore) {
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    s.precision = ratio(s.true_positives, s.true_positives + s.false_positives);
    s.recall = ratio(s.true_positives, s.true_positives + s.false_negatives);
    s.f1 = if s.precision + s.recall == 0.0 {
        0.0
    } else {
        2.0 * s.precision * s.recall / (s.precision + s.recall)
    };
}

/// Scores predictions against annotations, one pair of lists per text.
pub fn evaluate<'a>(
    items: impl IntoIterator<Item = (&'a str, &'a [EntitySpan], &'a [Entity])>,
) -> EntityReport {
    let mut report = EntityReport::default();
    for (text, gold, predicted) in items {
        let mut used = vec![false; predicted.len()];
        for g in gold {
            let Some(kind) = EntityKind::from_name(&g.entity) else {
                *report.unscored.entry(g.entity.clone()).or_default() += 1;
                continue;
            };
            let s = report.per_entity.entry(kind).or_default();
            s.support += 1;
            let overlapping = |p: &Entity| p.entity == kind && p.start < g.end && g.start < p.end;
            let exact = predicted.iter().enumerate().find(|(k, p)| {
                !used[*k]
                    && overlapping(p)
                    && g.value
                        .as_deref()
                        .is_none_or(|v| value_matches(&p.value, v))
            });
            if let Some((k, _)) = exact {
                used[k] = true;
                s.true_positives += 1;
                continue;
            }
            s.false_negatives += 1;
            let near = predicted
                .iter()
                .enumerate()
                .find(|(k, p)| !used[*k] && overlapping(p));
            let (miss_kind, predicted_value) = match near {
                Some((k, p)) => {
                    // Counted once, as a miss: the wrong value is not also spurious.
                    used[k] = true;
                    s.wrong_value += 1;
                    ("wrong value", Some(value_text(&p.value)))
                }
                None => ("missed", None),
            };
            report.misses.push(EntityMiss {
                text: text.to_owned(),
                entity: kind,
                span: g.text.clone(),
                kind: miss_kind,
                expected: g.value.clone(),
                predicted: predicted_value,
            });
        }
        for (k, p) in predicted.iter().enumerate() {
            if used[k] {
                continue;
            }
            report
                .per_entity
                .entry(p.entity)
                .or_default()
                .false_positives += 1;
            report.misses.push(EntityMiss {
                text: text.to_owned(),
                entity: p.entity,
                span: p.text.clone(),
                kind: "spurious",
                expected: None,
                predicted: Some(value_text(&p.value)),
            });
        }
    }
    let mut overall = EntityScore::default();
    for s in report.per_entity.values_mut() {
        score(s);
        overall.support += s.support;
        overall.true_positives += s.true_positives;
        overall.false_positives += s.false_positives;
        overall.false_negatives += s.false_negatives;
        overall.wrong_value += s.wrong_value;
    }
    score(&mut overall);
    report.overall = overall;
    report
}

#[cfg(test)]
mod tests {
    use super::super::{Context, extract};
    use super::*;
    use crate::annotation;

    #[test]
    fn scores_spans_and_values() {
        let ctx = Context::new(Date::parse_iso("2024-03-13").expect("valid"));
        let rows = [
            "send [£50](amount=50 GBP) [yesterday](date=2024-03-12)",
            "pay [30](amount=30) on [Friday](date=2024-03-01)",
            "my [current](account) account had 3 payments",
        ];
        let parsed: Vec<_> = rows
            .iter()
            .map(|r| annotation::parse(r).expect("valid"))
            .collect();
        let predicted: Vec<Vec<Entity>> = parsed.iter().map(|a| extract(&a.text, &ctx)).collect();
        let report = evaluate(
            parsed
                .iter()
                .zip(&predicted)
                .map(|(a, p)| (a.text.as_str(), a.entities.as_slice(), p.as_slice())),
        );
        let amount = &report.per_entity[&EntityKind::Amount];
        assert_eq!(
            (
                amount.true_positives,
                amount.false_positives,
                amount.false_negatives
            ),
            (2, 0, 0)
        );
        let date = &report.per_entity[&EntityKind::Date];
        // Friday was 2024-03-08, not the 1st: a wrong value.
        assert_eq!(
            (date.true_positives, date.false_negatives, date.wrong_value),
            (1, 1, 1)
        );
        assert_eq!(report.unscored.get("account"), Some(&1));
        assert!((report.overall.precision - 1.0).abs() < 1e-9);
        assert!((report.overall.recall - 0.75).abs() < 1e-9);
    }
}
