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

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::base::BaseModelHashes;
use crate::encoder::FeatureSpec;
use crate::fast::gemm::{Epilogue, Isa, QMatrix, QRows, matmul_cols};
use crate::fast::ops::{gelu_in_place, lane_dot, multiversion};

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

/// One dense layer of the head in inference form: `y = W x + b`, `W` row-major
/// `[outputs, inputs]` so each output is one contiguous dot product.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Everything needed to turn features into predictions. Inference is plain
/// vectorised Rust: per utterance it is a few thousand multiply-adds for the
/// head and one pass over the example memory, where framework overhead would
/// cost more than the arithmetic.
#[derive(Debug, Clone)]
pub struct IntentModel {
    /// Head classes in order; `out_of_scope`, when trained, is the last.
    pub labels: Vec<String>,
    /// Dense layers with GELU between them.
    pub layers: Vec<Dense>,
    pub temperature: f64,
    pub features: FeatureSpec,
    /// Features of the in-scope training examples, for nearest-neighbour similarity.
    pub memory: ExampleMemory,
    pub oos: OosCalibration,
    pub base: BaseModelHashes,
}

/// Queries scored on the calling thread before work is spread over threads.
const PARALLEL_QUERIES: usize = 64;

impl IntentModel {
    /// Converts a trained candle head.
    pub fn dense_layers(head: &Head) -> candle_core::Result<Vec<Dense>> {
        head.layers()
            .iter()
            .map(|(w, b)| {
                let (inputs, outputs) = w.dims2()?;
                Ok(Dense {
                    inputs,
                    outputs,
                    weight: w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
                    bias: b.to_vec1::<f32>()?,
                })
            })
            .collect()
    }

    /// The head as candle tensors (`layer{i}.weight` `[in, out]`, `layer{i}.bias`).
    pub fn head_tensors(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, l) in self.layers.iter().enumerate() {
            let w = Tensor::from_slice(&l.weight, (l.outputs, l.inputs), &Device::Cpu)?
                .t()?
                .contiguous()?;
            out.insert(format!("layer{i}.weight"), w);
            out.insert(
                format!("layer{i}.bias"),
                Tensor::from_slice(&l.bias, l.outputs, &Device::Cpu)?,
            );
        }
        Ok(out)
    }

    pub fn dim(&self) -> usize {
        self.layers.first().map_or(0, |l| l.inputs)
    }

    /// Why `encoder` cannot produce this model's features, if it cannot:
    /// another precision, a pooled layer it does not have, or another width.
    /// (The base model's identity is checked separately, with its hashes.)
    pub fn encoder_mismatch(&self, encoder: &crate::encoder::Encoder) -> Option<String> {
        let spec = &self.features;
        if spec.precision != encoder.precision() {
            return Some(format!(
                "the model was trained on {:?} features, the encoder is {:?}",
                spec.precision,
                encoder.precision()
            ));
        }
        if let Some(l) = spec.layers.iter().find(|&&l| l > encoder.num_layers()) {
            return Some(format!(
                "the model pools layer {l}, the encoder has {} layers",
                encoder.num_layers()
            ));
        }
        let dim = spec.dim(encoder.hidden_size());
        (dim != self.dim()).then(|| {
            format!(
                "the encoder gives {dim} features, the head takes {}",
                self.dim()
            )
        })
    }

    /// Checks what loading cannot take on trust: at least one in-scope
    /// intent, `out_of_scope` only last, and finite detector statistics.
    pub fn validate(&self) -> Result<(), String> {
        let in_scope = self.labels.iter().filter(|l| *l != OUT_OF_SCOPE).count();
        if in_scope == 0 {
            return Err("the model has no in-scope intent".into());
        }
        if in_scope + usize::from(self.has_oos_class()) != self.labels.len() {
            return Err(format!("`{OUT_OF_SCOPE}` may only be the last label"));
        }
        if self.features.layers.is_empty() {
            return Err("the feature spec pools no layer".into());
        }
        let o = &self.oos;
        let stats = [Some(o.knn), Some(o.msp), o.poos];
        if !o.threshold.is_finite()
            || stats
                .iter()
                .flatten()
                .any(|s| !(s.mean.is_finite() && s.std.is_finite() && s.std > 0.0))
        {
            return Err("the out-of-scope calibration has a non-finite value".into());
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err("calibration temperature must be a positive number".into());
        }
        Ok(())
    }

    pub fn has_oos_class(&self) -> bool {
        self.labels.last().is_some_and(|l| l == OUT_OF_SCOPE)
    }

    /// Number of in-scope intents.
    pub fn intents(&self) -> usize {
        self.labels.len() - usize::from(self.has_oos_class())
    }

    /// Raw logits of one feature vector.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        let mut h = x.to_vec();
        for (i, l) in self.layers.iter().enumerate() {
            let mut y = vec![0f32; l.outputs];
            dense(Isa::detect(), l, &h, &mut y);
            if i + 1 < self.layers.len() {
                gelu_in_place(Isa::detect(), &mut y);
            }
            h = y;
        }
        h
    }

    /// Calibrated class probabilities and detector signals of one feature vector.
    pub fn signals_one(&self, x: &[f32]) -> (Vec<f32>, OosSignals) {
        let knn = self.memory.nearest(std::slice::from_ref(&x.to_vec()))[0];
        self.signals_with(x, knn)
    }

    fn signals_with(&self, x: &[f32], knn: f32) -> (Vec<f32>, OosSignals) {
        let logits = self.logits(x);
        let t = self.temperature as f32;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logits.iter().map(|&l| ((l - max) / t).exp()).collect();
        let sum: f32 = exps.iter().sum();
        let probs: Vec<f32> = exps.iter().map(|e| e / sum).collect();
        let n_in = self.intents();
        let signals = OosSignals {
            knn,
            msp: probs[..n_in].iter().copied().fold(0.0, f32::max),
            poos: if self.has_oos_class() {
                probs[n_in]
            } else {
                0.0
            },
        };
        (probs, signals)
    }

    /// [`IntentModel::signals_one`] for many rows (spread over threads when many).
    pub fn signals(&self, features: &[Vec<f32>]) -> (Vec<Vec<f32>>, Vec<OosSignals>) {
        let knn = self.memory.nearest(features);
        if features.len() < PARALLEL_QUERIES {
            features
                .iter()
                .zip(knn)
                .map(|(x, k)| self.signals_with(x, k))
                .unzip()
        } else {
            features
                .par_iter()
                .zip(knn)
                .map(|(x, k)| self.signals_with(x, k))
                .unzip()
        }
    }

    /// Predictions for feature rows, with the top `top_k` intents ranked.
    pub fn predict(&self, features: &[Vec<f32>], top_k: usize) -> Vec<Prediction> {
        let (probs, signals) = self.signals(features);
        probs
            .iter()
            .zip(&signals)
            .map(|(p, s)| self.decide(p, s, top_k))
            .collect()
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

multiversion! {
    /// `y = W x + b` for one dense layer.
    fn dense(l: &Dense, x: &[f32], y: &mut [f32]) {
        for ((out, row), b) in y.iter_mut().zip(l.weight.chunks_exact(l.inputs)).zip(&l.bias) {
            *out = lane_dot(row, x) + b;
        }
    }
}

/// The in-scope training features (unit rows) and an int8 copy for scoring:
/// the nearest-neighbour signal is one int8 matrix product per batch of
/// queries, a quarter of the memory traffic of f32 rows.
#[derive(Debug, Clone)]
pub struct ExampleMemory {
    dim: usize,
    rows: usize,
    /// `[rows, dim]`, kept for saving.
    data: Vec<f32>,
    /// `[dim, padded rows]`: rows padded to a multiple of 64 by repeating the
    /// first one (a repeat cannot change a maximum).
    index: QMatrix,
}

/// Queries scored per matrix product (bounds the scratch matrix).
const QUERY_BLOCK: usize = 64;

impl ExampleMemory {
    pub fn new(data: Vec<f32>, dim: usize) -> Self {
        let rows = data.len().checked_div(dim).unwrap_or(0);
        let padded = rows.div_ceil(64).max(1) * 64;
        // Column j of the index is memory row j.
        let mut cols = vec![0f32; dim * padded];
        for j in 0..padded {
            let src = if j < rows { j } else { 0 };
            if rows > 0 {
                for (i, v) in data[src * dim..(src + 1) * dim].iter().enumerate() {
                    cols[i * padded + j] = *v;
                }
            }
        }
        let index = QMatrix::new(&cols, dim, padded, &vec![0.0; padded], Isa::detect());
        Self {
            dim,
            rows,
            data,
            index,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Highest similarity between each query and any example (-1 with no examples).
    pub fn nearest(&self, queries: &[Vec<f32>]) -> Vec<f32> {
        if self.rows == 0 {
            return vec![-1.0; queries.len()];
        }
        let n = self.index.n;
        let mut out = Vec::with_capacity(queries.len());
        let mut q = QRows::default();
        let mut scores = Vec::new();
        for block in queries.chunks(QUERY_BLOCK) {
            let flat: Vec<f32> = block.iter().flat_map(|x| x.iter().copied()).collect();
            q.quantize(&flat, block.len(), self.dim, self.index.isa());
            scores.resize(block.len() * n, 0.0);
            matmul_cols(&q, &self.index, &mut scores, 0, n, Epilogue::None);
            out.extend(
                scores
                    .chunks_exact(n)
                    .map(|r| r.iter().copied().fold(f32::NEG_INFINITY, f32::max)),
            );
        }
        out
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
