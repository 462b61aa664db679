//! Calibration on data the head was not trained on: temperature scaling of
//! the logits, and the choice of the out-of-scope threshold.

/// Softmax of one row of logits divided by `t`.
pub fn softmax(logits: &[f32], t: f64) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / t).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Mean negative log-likelihood of `labels` under `softmax(logits / t)`.
pub fn nll(logits: &[Vec<f32>], labels: &[usize], t: f64) -> f64 {
    let total: f64 = logits
        .iter()
        .zip(labels)
        .map(|(row, &y)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = row
                .iter()
                .map(|&l| ((l as f64 - max) / t).exp())
                .sum::<f64>()
                .ln();
            lse - (row[y] as f64 - max) / t
        })
        .sum();
    total / logits.len().max(1) as f64
}

/// The temperature in `[0.05, 20]` that minimises the NLL (golden-section
/// search over `ln t`; the NLL is unimodal in `t`). Returns 1 for no data.
pub fn fit_temperature(logits: &[Vec<f32>], labels: &[usize]) -> f64 {
    if logits.is_empty() {
        return 1.0;
    }
    let f = |lt: f64| nll(logits, labels, lt.exp());
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..60 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

/// One calibration row for the threshold search: the detector's score
/// (higher = more in-scope), whether the row is really in scope, and whether
/// the classifier's intent was right (meaningless for out-of-scope rows).
#[derive(Debug, Clone, Copy)]
pub struct ScoredRow {
    pub score: f32,
    pub in_scope: bool,
    pub correct: bool,
}

/// What a threshold achieves on the calibration rows.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ThresholdChoice {
    pub threshold: f32,
    /// In-scope rows accepted with the right intent.
    pub in_scope_accuracy: f64,
    /// Out-of-scope rows rejected.
    pub oos_recall: f64,
}

/// Chooses the threshold (reject when `score < threshold`) that maximises
/// `in_scope_accuracy + oos_weight * oos_recall`; ties go to the lower
/// threshold (fewer rejections). Without out-of-scope rows it rejects at most
/// `fallback_reject` of the in-scope rows instead.
/// The threshold that rejects nothing: the lowest finite `f32`, so that it
/// survives JSON (which has no infinities).
pub const ACCEPT_ALL: f32 = f32::MIN;

pub fn choose_threshold(
    rows: &[ScoredRow],
    oos_weight: f64,
    fallback_reject: f64,
) -> ThresholdChoice {
    let n_in = rows.iter().filter(|r| r.in_scope).count();
    let n_oos = rows.len() - n_in;
    let mut sorted: Vec<ScoredRow> = rows.to_vec();
    sorted.sort_by(|a, b| a.score.total_cmp(&b.score));
    let rate = |num: usize, den: usize| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let correct_all = rows.iter().filter(|r| r.in_scope && r.correct).count();
    let accuracy_all = rate(correct_all, n_in);
    if sorted.is_empty() {
        return ThresholdChoice {
            threshold: ACCEPT_ALL,
            in_scope_accuracy: 0.0,
            oos_recall: 0.0,
        };
    }
    if n_oos == 0 {
        // Reject the lowest-scoring `fallback_reject` share of in-scope rows.
        let k = ((n_in as f64) * fallback_reject).floor() as usize;
        let threshold = if k == 0 {
            ACCEPT_ALL
        } else {
            sorted[k.min(sorted.len() - 1)].score
        };
        let kept_correct = sorted
            .iter()
            .filter(|r| r.score >= threshold && r.correct)
            .count();
        return ThresholdChoice {
            threshold,
            in_scope_accuracy: rate(kept_correct, n_in),
            oos_recall: 0.0,
        };
    }
    // Candidate thresholds: below everything, then just above each distinct score.
    let mut best = ThresholdChoice {
        threshold: ACCEPT_ALL,
        in_scope_accuracy: accuracy_all,
        oos_recall: 0.0,
    };
    let mut best_obj = best.in_scope_accuracy;
    let (mut rejected_oos, mut rejected_correct) = (0usize, 0usize);
    let mut i = 0;
    while i < sorted.len() {
        let s = sorted[i].score;
        // `total_cmp`, not `==`: a NaN score must still advance the loop.
        while i < sorted.len() && sorted[i].score.total_cmp(&s).is_eq() {
            let r = sorted[i];
            if !r.in_scope {
                rejected_oos += 1;
            } else if r.correct {
                rejected_correct += 1;
            }
            i += 1;
        }
        // Threshold between s and the next score: everything up to s is rejected.
        let threshold = if i < sorted.len() {
            midpoint(s, sorted[i].score)
        } else {
            next_up(s)
        };
        let in_acc = rate(correct_all - rejected_correct, n_in);
        let recall = rate(rejected_oos, n_oos);
        let obj = in_acc + oos_weight * recall;
        if obj > best_obj + 1e-12 {
            best_obj = obj;
            best = ThresholdChoice {
                threshold,
                in_scope_accuracy: in_acc,
                oos_recall: recall,
            };
        }
    }
    best
}

fn midpoint(a: f32, b: f32) -> f32 {
    a + (b - a) / 2.0
}

fn next_up(x: f32) -> f32 {
    if x.is_finite() {
        x + x.abs().max(1.0) * 1e-6
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_recovers_a_known_scale() {
        // Labels drawn so that the true model is softmax(logits / 2).
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        let mut rng = crate::rng::SplitMix64::new(11);
        for _ in 0..4000 {
            let row: Vec<f32> = (0..4).map(|_| rng.next_f32() * 8.0 - 4.0).collect();
            let p = softmax(&row, 2.0);
            let u = f64::from(rng.next_f32());
            let mut acc = 0.0;
            let y = p
                .iter()
                .position(|&pi| {
                    acc += pi;
                    u < acc
                })
                .unwrap_or(3);
            logits.push(row);
            labels.push(y);
        }
        let t = fit_temperature(&logits, &labels);
        assert!((t - 2.0).abs() < 0.2, "t = {t}");
        assert!(nll(&logits, &labels, t) <= nll(&logits, &labels, 1.0));
    }

    #[test]
    fn threshold_separates_clean_scores() {
        let mut rows = Vec::new();
        for i in 0..10 {
            rows.push(ScoredRow {
                score: 1.0 + i as f32 * 0.1,
                in_scope: true,
                correct: true,
            });
            rows.push(ScoredRow {
                score: -1.0 - i as f32 * 0.1,
                in_scope: false,
                correct: false,
            });
        }
        let c = choose_threshold(&rows, 0.5, 0.02);
        assert!(c.threshold > -1.0 && c.threshold < 1.0, "{c:?}");
        assert_eq!((c.in_scope_accuracy, c.oos_recall), (1.0, 1.0));
    }

    #[test]
    fn nan_scores_end_the_search() {
        let row = |score: f32, in_scope: bool| ScoredRow {
            score,
            in_scope,
            correct: in_scope,
        };
        let rows = [
            row(f32::NAN, true),
            row(1.0, true),
            row(-1.0, false),
            row(f32::NAN, false),
        ];
        // Terminates (it used to spin on the NaN) and still separates the finite rows.
        let c = choose_threshold(&rows, 0.5, 0.0);
        assert!(c.oos_recall >= 0.5, "{c:?}");
    }

    #[test]
    fn weight_trades_accuracy_for_recall() {
        // One OOS row scores above one correct in-scope row.
        let rows = [
            ScoredRow {
                score: 0.0,
                in_scope: true,
                correct: true,
            },
            ScoredRow {
                score: 0.5,
                in_scope: false,
                correct: false,
            },
            ScoredRow {
                score: 1.0,
                in_scope: true,
                correct: true,
            },
            ScoredRow {
                score: 2.0,
                in_scope: true,
                correct: true,
            },
        ];
        // Catching the OOS row costs 1/3 accuracy: worth it only if recall weighs more.
        assert_eq!(choose_threshold(&rows, 0.3, 0.0).oos_recall, 0.0);
        let heavy = choose_threshold(&rows, 1.0, 0.0);
        assert_eq!(heavy.oos_recall, 1.0);
        assert!(heavy.threshold > 0.5 && heavy.threshold <= 1.0);
    }

    #[test]
    fn without_oos_rows_a_small_share_is_rejected() {
        let rows: Vec<ScoredRow> = (0..100)
            .map(|i| ScoredRow {
                score: i as f32,
                in_scope: true,
                correct: true,
            })
            .collect();
        let c = choose_threshold(&rows, 0.5, 0.02);
        assert_eq!(c.threshold, 2.0);
        assert!((c.in_scope_accuracy - 0.98).abs() < 1e-9);
    }
}
