//! Evaluation metrics over labelled predictions: accuracy, per-intent
//! precision/recall/F1, macro-F1, confusions, out-of-scope detection and
//! expected calibration error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The label every out-of-scope row and prediction uses.
pub const OUT_OF_SCOPE: &str = "out_of_scope";

/// One evaluated row: what it should be, what the model said, and how sure it was.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    pub text: &'a str,
    pub expected: &'a str,
    pub predicted: &'a str,
    /// Calibrated probability of `predicted`.
    pub confidence: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    pub expected: String,
    pub predicted: String,
    pub count: usize,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OosMetrics {
    /// Out-of-scope rows detected as out of scope.
    pub recall: f64,
    /// Rows predicted out of scope that really are.
    pub precision: f64,
    /// In-scope rows given their correct intent (a rejection counts as wrong).
    pub in_scope_accuracy: f64,
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub rows: usize,
    pub accuracy: f64,
    /// Unweighted mean F1 over every label that occurs in the data.
    pub macro_f1: f64,
    pub per_intent: BTreeMap<String, ClassMetrics>,
    pub confusions: Vec<Confusion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oos: Option<OosMetrics>,
    /// Expected calibration error of `confidence` over 10 equal-width bins.
    pub ece: f64,
    /// Counts `[expected][predicted]` over `labels` (rows and columns in that order).
    pub labels: Vec<String>,
    pub matrix: Vec<Vec<usize>>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Computes every metric; `max_confusions` limits the confusion list and
/// `examples_per_confusion` the texts kept for each pair.
pub fn compute(
    outcomes: &[Outcome<'_>],
    max_confusions: usize,
    examples_per_confusion: usize,
) -> Metrics {
    let mut labels: Vec<String> = outcomes
        .iter()
        .flat_map(|o| [o.expected, o.predicted])
        .map(str::to_owned)
        .collect();
    labels.sort();
    labels.dedup();
    let index: BTreeMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let n = labels.len();
    let mut matrix = vec![vec![0usize; n]; n];
    let mut pair_examples: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    for o in outcomes {
        let (e, p) = (index[o.expected], index[o.predicted]);
        matrix[e][p] += 1;
        if e != p {
            let ex = pair_examples.entry((e, p)).or_default();
            if ex.len() < examples_per_confusion {
                ex.push(o.text.to_owned());
            }
        }
    }

    let correct: usize = (0..n).map(|i| matrix[i][i]).sum();
    let mut per_intent = BTreeMap::new();
    for (i, label) in labels.iter().enumerate() {
        let support: usize = matrix[i].iter().sum();
        if support == 0 {
            continue; // predicted but never expected: not a class of this data set
        }
        let predicted: usize = (0..n).map(|r| matrix[r][i]).sum();
        let precision = ratio(matrix[i][i], predicted);
        let recall = ratio(matrix[i][i], support);
        per_intent.insert(
            label.clone(),
            ClassMetrics {
                precision,
                recall,
                f1: f1(precision, recall),
                support,
            },
        );
    }
    let macro_f1 = if per_intent.is_empty() {
        0.0
    } else {
        per_intent.values().map(|m| m.f1).sum::<f64>() / per_intent.len() as f64
    };

    let mut confusions: Vec<Confusion> = pair_examples
        .into_iter()
        .map(|((e, p), examples)| Confusion {
            expected: labels[e].clone(),
            predicted: labels[p].clone(),
            count: matrix[e][p],
            examples,
        })
        .collect();
    confusions.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.expected.cmp(&b.expected))
    });
    confusions.truncate(max_confusions);

    let oos = index.get(OUT_OF_SCOPE).and_then(|&o| {
        let support: usize = matrix[o].iter().sum();
        (support > 0).then(|| {
            let predicted: usize = (0..n).map(|r| matrix[r][o]).sum();
            let in_rows = outcomes.len() - support;
            OosMetrics {
                recall: ratio(matrix[o][o], support),
                precision: ratio(matrix[o][o], predicted),
                in_scope_accuracy: ratio(correct - matrix[o][o], in_rows),
                support,
            }
        })
    });

    Metrics {
        rows: outcomes.len(),
        accuracy: ratio(correct, outcomes.len()),
        macro_f1,
        per_intent,
        confusions,
        oos,
        ece: expected_calibration_error(outcomes, 10),
        labels,
        matrix,
    }
}

/// Weighted mean gap between confidence and accuracy over equal-width bins.
pub fn expected_calibration_error(outcomes: &[Outcome<'_>], bins: usize) -> f64 {
    if outcomes.is_empty() || bins == 0 {
        return 0.0;
    }
    let mut sum_conf = vec![0.0f64; bins];
    let mut sum_acc = vec![0.0f64; bins];
    let mut count = vec![0usize; bins];
    for o in outcomes {
        let c = f64::from(o.confidence).clamp(0.0, 1.0);
        let b = ((c * bins as f64) as usize).min(bins - 1);
        sum_conf[b] += c;
        sum_acc[b] += f64::from(u8::from(o.expected == o.predicted));
        count[b] += 1;
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| (sum_conf[b] - sum_acc[b]).abs())
        .sum::<f64>()
        / outcomes.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o<'a>(expected: &'a str, predicted: &'a str, confidence: f32) -> Outcome<'a> {
        Outcome {
            text: "t",
            expected,
            predicted,
            confidence,
        }
    }

    #[test]
    fn hand_computed_example() {
        // a: 2 rows, both right; b: 2 rows, one predicted a; oos: 2 rows, one caught.
        let rows = [
            o("a", "a", 0.9),
            o("a", "a", 0.9),
            o("b", "b", 0.9),
            o("b", "a", 0.6),
            o(OUT_OF_SCOPE, OUT_OF_SCOPE, 0.7),
            o(OUT_OF_SCOPE, "b", 0.6),
        ];
        let m = compute(&rows, 10, 2);
        assert_eq!(m.rows, 6);
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        let a = &m.per_intent["a"];
        assert!((a.precision - 2.0 / 3.0).abs() < 1e-12 && (a.recall - 1.0).abs() < 1e-12);
        let b = &m.per_intent["b"];
        assert!((b.precision - 0.5).abs() < 1e-12 && (b.recall - 0.5).abs() < 1e-12);
        let oos = m.oos.as_ref().unwrap();
        assert!((oos.recall - 0.5).abs() < 1e-12);
        assert!((oos.precision - 1.0).abs() < 1e-12);
        assert!((oos.in_scope_accuracy - 0.75).abs() < 1e-12);
        let f1_a = 2.0 * (2.0 / 3.0) / (2.0 / 3.0 + 1.0);
        let f1_oos = 2.0 * 0.5 / 1.5;
        assert!((m.macro_f1 - (f1_a + 0.5 + f1_oos) / 3.0).abs() < 1e-12);
        assert_eq!(m.confusions.len(), 2);
        assert_eq!(
            m.matrix[m.labels.iter().position(|l| l == "b").unwrap()][0],
            1
        );
    }

    #[test]
    fn ece_is_zero_when_confidence_matches_accuracy() {
        let rows = [o("a", "a", 0.5), o("a", "b", 0.5)];
        assert!(expected_calibration_error(&rows, 10) < 1e-12);
        let over = [o("a", "b", 0.95), o("a", "b", 0.95)];
        assert!((expected_calibration_error(&over, 10) - 0.95).abs() < 1e-6);
    }

    #[test]
    fn empty_input_is_all_zero() {
        let m = compute(&[], 5, 1);
        assert_eq!((m.rows, m.accuracy, m.macro_f1, m.ece), (0, 0.0, 0.0, 0.0));
        assert!(m.oos.is_none());
    }
}
