//! A trained intent model applied to sentence features: calibrated intent
//! probabilities, a ranking, and the out-of-scope decision.
//!
//! Out-of-scope detection combines three signals, each standardised with
//! statistics measured on held-out in-scope utterances:
//! * `knn`: cosine similarity to the nearest in-scope training example;
//! * `msp`: the highest calibrated probability of an in-scope intent;
//! * `poos`: the probability of the trained `out_of_scope` class (when the
//!   catalogue has out-of-scope examples).
//!
//! `score = z(knn) + z(msp) - z(poos)`; the utterance is out of scope when the
//! score is below the calibrated threshold.

use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};

use crate::base::BaseModelHashes;
use crate::encoder::FeatureSpec;
use crate::head::Head;
use crate::metrics::OUT_OF_SCOPE;

/// Mean and standard deviation of a signal on in-scope calibration rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f32,
    pub std: f32,
}

impl Stat {
    pub fn of(values: &[f32]) -> Self {
        let n = values.len().max(1) as f32;
        let mean = values.iter().sum::<f32>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        Self {
            mean,
            std: var.sqrt().max(1e-6),
        }
    }

    pub fn z(&self, v: f32) -> f32 {
        (v - self.mean) / self.std
    }
}

/// Calibration of the out-of-scope detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OosCalibration {
    pub knn: Stat,
    pub msp: Stat,
    /// Present when the head has an `out_of_scope` class.
    pub poos: Option<Stat>,
    pub threshold: f32,
}

/// The raw detector signals of one utterance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OosSignals {
    pub knn: f32,
    pub msp: f32,
    pub poos: f32,
}

impl OosCalibration {
    pub fn score(&self, s: &OosSignals) -> f32 {
        let mut score = self.knn.z(s.knn) + self.msp.z(s.msp);
        if let Some(p) = &self.poos {
            score -= p.z(s.poos);
        }
        score
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentScore {
    pub name: String,
    pub confidence: f32,
}

/// What the model says about one utterance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The decision: the top intent, or `out_of_scope` with the probability
    /// mass not on the top intent as its confidence.
    pub intent: IntentScore,
    /// In-scope intents by calibrated probability, best first.
    pub ranking: Vec<IntentScore>,
    pub out_of_scope: bool,
    /// Detector score (higher = more in scope) and the threshold it was held to.
    pub oos_score: f32,
}

/// Everything needed to turn features into predictions.
#[derive(Debug, Clone)]
pub struct IntentModel {
    /// Head classes in order; `out_of_scope`, when trained, is the last.
    pub labels: Vec<String>,
    pub head: Head,
    pub temperature: f64,
    pub features: FeatureSpec,
    /// Features of the in-scope training examples, `[m, dim]`, unit rows.
    pub memory: Tensor,
    pub oos: OosCalibration,
    pub base: BaseModelHashes,
}

impl IntentModel {
    pub fn has_oos_class(&self) -> bool {
        self.labels.last().is_some_and(|l| l == OUT_OF_SCOPE)
    }

    /// Number of in-scope intents.
    pub fn intents(&self) -> usize {
        self.labels.len() - usize::from(self.has_oos_class())
    }

    /// Calibrated class probabilities and detector signals for `[batch, dim]` features.
    pub fn signals(
        &self,
        features: &Tensor,
    ) -> candle_core::Result<(Vec<Vec<f32>>, Vec<OosSignals>)> {
        let logits = (self.head.logits(features)? / self.temperature)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        let knn = features
            .matmul(&self.memory.t()?)?
            .max(D::Minus1)?
            .to_vec1::<f32>()?;
        let n_in = self.intents();
        let signals = probs
            .iter()
            .zip(knn)
            .map(|(p, knn)| OosSignals {
                knn,
                msp: p[..n_in].iter().copied().fold(0.0, f32::max),
                poos: if self.has_oos_class() { p[n_in] } else { 0.0 },
            })
            .collect();
        Ok((probs, signals))
    }

    /// Predictions for `[batch, dim]` features, with the top `top_k` intents ranked.
    pub fn predict(&self, features: &Tensor, top_k: usize) -> candle_core::Result<Vec<Prediction>> {
        let (probs, signals) = self.signals(features)?;
        Ok(probs
            .iter()
            .zip(&signals)
            .map(|(p, s)| self.decide(p, s, top_k))
            .collect())
    }

    /// The decision for one row of calibrated probabilities.
    pub fn decide(&self, probs: &[f32], signals: &OosSignals, top_k: usize) -> Prediction {
        let n_in = self.intents();
        let mut order: Vec<usize> = (0..n_in).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let ranking: Vec<IntentScore> = order
            .iter()
            .take(top_k.max(1))
            .map(|&i| IntentScore {
                name: self.labels[i].clone(),
                confidence: probs[i],
            })
            .collect();
        let oos_score = self.oos.score(signals);
        let out_of_scope = oos_score < self.oos.threshold;
        let intent = if out_of_scope {
            IntentScore {
                name: OUT_OF_SCOPE.to_owned(),
                confidence: 1.0 - signals.msp,
            }
        } else {
            ranking[0].clone()
        };
        Prediction {
            intent,
            ranking,
            out_of_scope,
            oos_score,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_standardises() {
        let s = Stat::of(&[1.0, 2.0, 3.0]);
        assert!((s.mean - 2.0).abs() < 1e-6);
        assert!((s.z(2.0)).abs() < 1e-6);
        assert!(s.z(3.0) > 1.0 && s.z(1.0) < -1.0);
        // A constant signal does not divide by zero.
        assert!(Stat::of(&[0.5, 0.5]).z(0.6).is_finite());
    }

    #[test]
    fn score_rises_with_similarity_and_confidence_and_falls_with_poos() {
        let c = OosCalibration {
            knn: Stat {
                mean: 0.6,
                std: 0.1,
            },
            msp: Stat {
                mean: 0.8,
                std: 0.1,
            },
            poos: Some(Stat {
                mean: 0.05,
                std: 0.05,
            }),
            threshold: -1.0,
        };
        let base = OosSignals {
            knn: 0.6,
            msp: 0.8,
            poos: 0.05,
        };
        let s0 = c.score(&base);
        assert!(c.score(&OosSignals { knn: 0.7, ..base }) > s0);
        assert!(c.score(&OosSignals { msp: 0.9, ..base }) > s0);
        assert!(c.score(&OosSignals { poos: 0.5, ..base }) < s0);
        let no_poos = OosCalibration { poos: None, ..c };
        assert_eq!(
            no_poos.score(&OosSignals { poos: 0.9, ..base }),
            no_poos.score(&base)
        );
    }
}
