//! The default trainer: frozen encoder features + a softmax head.
//!
//! 1. Features: mean-pooled, normalised hidden states of several encoder
//!    layers (see [`default_features`]), read from the feature cache when known.
//! 2. A seeded, stratified internal split (80/20 by default) picks the L2
//!    strength from a small grid by validation accuracy.
//! 3. The model trained on the 80 % gives calibration rows (unless a separate
//!    calibration set is given): the temperature is fitted on them, and the
//!    out-of-scope detector's statistics and threshold are chosen on them.
//! 4. The final head is trained on all data with the chosen strength.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::artifact::{
    Artifact, BaseModelRef, Calibration, ModelCard, TrainingDataRef, ValidationSummary,
};
use crate::base::pinned;
use crate::cache::{FeatureCache, text_key};
use crate::calibrate::{ScoredRow, choose_threshold, fit_temperature};
use crate::classifier::{ExampleMemory, IntentModel, OosCalibration, OosSignals, Prediction, Stat};
use crate::encoder::{Encoder, FeatureSpec, Precision};
use crate::error::{ModelError, Result};
use crate::head::{self, HeadParams};
use crate::metrics::{self, OUT_OF_SCOPE, Outcome};
use crate::rng::SplitMix64;

/// One training or evaluation row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LabelledText {
    pub text: String,
    pub label: String,
}

impl LabelledText {
    pub fn new(text: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            label: label.into(),
        }
    }

    pub fn is_out_of_scope(&self) -> bool {
        self.label == OUT_OF_SCOPE
    }
}

/// sha256 over the sorted (label, text) pairs.
pub fn data_hash(rows: &[LabelledText]) -> String {
    let mut sorted: Vec<&LabelledText> = rows.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    for r in sorted {
        h.update(r.label.as_bytes());
        h.update([0]);
        h.update(r.text.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub seed: u64,
    /// Share of each intent held out for model selection and calibration.
    pub validation_fraction: f64,
    /// Candidate inverse L2 strengths (`C` as in logistic regression: the
    /// penalty is `1 / (C * n)` per example).
    pub c_grid: Vec<f64>,
    pub epochs: usize,
    /// Rows per step; 0 picks `n / 32` clamped to 32..=256.
    pub batch_size: usize,
    /// Fewest optimiser steps per fit: small data sets get more epochs.
    pub min_steps: usize,
    pub learning_rate: f64,
    /// Weight of out-of-scope recall against in-scope accuracy when choosing
    /// the detector threshold.
    pub oos_weight: f64,
    /// Share of in-scope rows rejected when no out-of-scope examples exist.
    pub fallback_reject: f64,
    /// Feature spec; `None` for [`default_features`].
    pub features: Option<FeatureSpec>,
    /// Padded tokens per encoder batch.
    pub token_budget: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 13,
            validation_fraction: 0.2,
            c_grid: vec![10.0, 30.0, 100.0],
            epochs: 20,
            batch_size: 0,
            min_steps: 600,
            learning_rate: 0.05,
            oos_weight: 0.15,
            fallback_reject: 0.02,
            features: None,
            token_budget: 2048,
        }
    }
}

/// Progress of a training run, for progress bars.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    Embedding {
        done: usize,
        total: usize,
    },
    Fitting {
        step: String,
        epoch: usize,
        epochs: usize,
    },
}

/// The embedding layer and three evenly spaced layers ending at the last:
/// `[0, 2, 4, 6]` for a 6-layer encoder. Lexical (layer 0), intermediate and
/// final representations together beat the last layer alone.
pub fn default_features(num_layers: usize, precision: Precision) -> FeatureSpec {
    let mut layers = vec![0, num_layers / 3, 2 * num_layers / 3, num_layers];
    layers.dedup();
    FeatureSpec { layers, precision }
}

/// Features for `texts` in order, from the cache where possible.
pub fn features(
    encoder: &Encoder,
    texts: &[&str],
    spec: &FeatureSpec,
    cache: Option<&mut FeatureCache>,
    token_budget: usize,
    mut on_event: impl FnMut(TrainEvent),
) -> Result<Vec<Vec<f32>>> {
    let keys: Vec<_> = texts.iter().map(|t| text_key(t)).collect();
    let mut out: Vec<Option<Vec<f32>>> = keys
        .iter()
        .map(|k| cache.as_ref().and_then(|c| c.get(k)).map(<[f32]>::to_vec))
        .collect();
    let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
    // Deduplicate so repeated texts are encoded once.
    let mut unique: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in &missing {
        unique.entry(texts[i]).or_default().push(i);
    }
    let todo: Vec<&str> = unique.keys().copied().collect();
    // Progress counts the distinct texts that need the encoder.
    let total = todo.len();
    on_event(TrainEvent::Embedding { done: 0, total });
    let mut done = 0;
    let computed = encoder.embed_all(&todo, spec, token_budget, |n| {
        done += n;
        on_event(TrainEvent::Embedding { done, total });
    })?;
    let mut fresh = Vec::with_capacity(todo.len());
    for (text, feat) in todo.iter().zip(computed) {
        for &i in &unique[text] {
            out[i] = Some(feat.clone());
        }
        fresh.push((text_key(text), feat));
    }
    if let Some(cache) = cache {
        cache.insert_all(fresh)?;
    }
    Ok(out.into_iter().map(|f| f.unwrap_or_default()).collect())
}

/// Labels in head order: sorted in-scope intents, then `out_of_scope` if any row has it.
fn label_set(data: &[LabelledText]) -> Vec<String> {
    let mut intents: Vec<String> = data
        .iter()
        .filter(|r| !r.is_out_of_scope())
        .map(|r| r.label.clone())
        .collect();
    intents.sort();
    intents.dedup();
    if data.iter().any(LabelledText::is_out_of_scope) {
        intents.push(OUT_OF_SCOPE.to_owned());
    }
    intents
}

/// Stratified split: for each label, a seeded share goes to validation
/// (labels with fewer than 3 rows stay in training).
fn split(data: &[LabelledText], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in data.iter().enumerate() {
        by_label.entry(&r.label).or_default().push(i);
    }
    let mut rng = SplitMix64::new(seed ^ 0x5eed_5911);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (_, mut idx) in by_label {
        rng.shuffle(&mut idx);
        let k = if idx.len() < 3 {
            0
        } else {
            ((idx.len() as f64 * fraction).round() as usize).clamp(1, idx.len() - 1)
        };
        val.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

struct Fitted {
    model: IntentModel,
    params: HeadParams,
}

/// What every fit of one training run shares.
struct FitInputs<'a> {
    feats: &'a [Vec<f32>],
    data: &'a [LabelledText],
    labels: &'a [String],
    seed: u64,
    base: &'a crate::base::BaseModelHashes,
    spec: &'a FeatureSpec,
}

/// Trains a head on the rows `rows` of the inputs.
fn fit(
    inputs: &FitInputs<'_>,
    rows: &[usize],
    params: HeadParams,
    step: &str,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<Fitted> {
    let FitInputs {
        feats,
        data,
        labels,
        seed,
        base,
        spec,
    } = *inputs;
    let device = candle_core::Device::Cpu;
    let index: BTreeMap<&str, u32> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i as u32))
        .collect();
    let x_rows: Vec<Vec<f32>> = rows.iter().map(|&i| feats[i].clone()).collect();
    let y: Vec<u32> = rows
        .iter()
        .map(|&i| index[data[i].label.as_str()])
        .collect();
    let x = head::stack(&x_rows, &device)?;
    let epochs = params.epochs;
    let trained = head::train(&x, &y, labels.len(), &params, seed, |epoch| {
        on_event(TrainEvent::Fitting {
            step: step.to_owned(),
            epoch,
            epochs,
        });
    })?;
    let memory = ExampleMemory::new(
        rows.iter()
            .filter(|&&i| !data[i].is_out_of_scope())
            .flat_map(|&i| feats[i].iter().copied())
            .collect(),
        feats.first().map_or(0, Vec::len),
    );
    let model = IntentModel {
        labels: labels.to_vec(),
        layers: IntentModel::dense_layers(&trained)?,
        temperature: 1.0,
        features: spec.clone(),
        memory,
        oos: OosCalibration {
            knn: Stat {
                mean: 0.0,
                std: 1.0,
            },
            msp: Stat {
                mean: 0.0,
                std: 1.0,
            },
            poos: None,
            threshold: crate::calibrate::ACCEPT_ALL,
        },
        base: base.clone(),
    };
    Ok(Fitted { model, params })
}

/// Each labelled row paired with its top prediction, for the metrics.
pub fn outcomes<'a>(
    rows: impl IntoIterator<Item = &'a LabelledText>,
    preds: &'a [Prediction],
) -> Vec<Outcome<'a>> {
    rows.into_iter()
        .zip(preds)
        .map(|(r, p)| Outcome {
            text: &r.text,
            expected: &r.label,
            predicted: &p.intent.name,
            confidence: p.intent.confidence,
        })
        .collect()
}

/// Logits and signals of `model` on some rows.
fn score_rows(model: &IntentModel, feats: &[Vec<f32>]) -> Result<(Vec<Vec<f32>>, Vec<OosSignals>)> {
    let logits = feats.iter().map(|x| model.logits(x)).collect();
    let (_, signals) = model.signals(feats);
    Ok((logits, signals))
}

/// Calibrates temperature and detector of `model` on labelled rows it was not trained on.
fn calibrate(
    model: &mut IntentModel,
    rows: &[&LabelledText],
    feats: &[Vec<f32>],
    cfg: &TrainConfig,
) -> Result<()> {
    let index: BTreeMap<&str, usize> = model
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let (logits, _) = score_rows(model, feats)?;
    let (t_logits, t_labels): (Vec<Vec<f32>>, Vec<usize>) = logits
        .iter()
        .zip(rows)
        .filter_map(|(l, r)| index.get(r.label.as_str()).map(|&y| (l.clone(), y)))
        .unzip();
    model.temperature = fit_temperature(&t_logits, &t_labels);
    let (probs, signals) = model.signals(feats);
    let in_scope: Vec<usize> = (0..rows.len())
        .filter(|&i| !rows[i].is_out_of_scope())
        .collect();
    let pick = |f: fn(&OosSignals) -> f32| {
        Stat::of(&in_scope.iter().map(|&i| f(&signals[i])).collect::<Vec<_>>())
    };
    model.oos.knn = pick(|s| s.knn);
    model.oos.msp = pick(|s| s.msp);
    model.oos.poos = model.has_oos_class().then(|| pick(|s| s.poos));
    let n_in = model.intents();
    let scored: Vec<ScoredRow> = rows
        .iter()
        .zip(probs.iter().zip(&signals))
        .map(|(r, (p, s))| {
            let top = (0..n_in)
                .max_by(|&a, &b| p[a].total_cmp(&p[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            ScoredRow {
                score: model.oos.score(s),
                in_scope: !r.is_out_of_scope(),
                correct: model.labels[top] == r.label,
            }
        })
        .collect();
    model.oos.threshold = choose_threshold(&scored, cfg.oos_weight, cfg.fallback_reject).threshold;
    Ok(())
}

/// Metrics of `model` on rows (the text is not needed for the summary).
fn summarise(
    model: &IntentModel,
    rows: &[&LabelledText],
    feats: &[Vec<f32>],
) -> Result<ValidationSummary> {
    if rows.is_empty() {
        return Ok(ValidationSummary {
            rows: 0,
            accuracy: 0.0,
            macro_f1: 0.0,
            ece: 0.0,
            in_scope_accuracy: None,
            oos_recall: None,
            oos_precision: None,
        });
    }
    let preds = model.predict(feats, 1);
    let m = metrics::compute(&outcomes(rows.iter().copied(), &preds), 0, 0);
    Ok(ValidationSummary {
        rows: m.rows,
        accuracy: m.accuracy,
        macro_f1: m.macro_f1,
        ece: m.ece,
        in_scope_accuracy: m.oos.as_ref().map(|o| o.in_scope_accuracy),
        oos_recall: m.oos.as_ref().map(|o| o.recall),
        oos_precision: m.oos.as_ref().map(|o| o.precision),
    })
}

/// Trains a model on `data`; `calibration` (held-out rows, out-of-scope
/// included) replaces the internal split for temperature and threshold.
pub fn train(
    encoder: &Encoder,
    data: &[LabelledText],
    calibration: Option<&[LabelledText]>,
    cfg: &TrainConfig,
    mut cache: Option<&mut FeatureCache>,
    mut on_event: impl FnMut(TrainEvent),
) -> Result<Artifact> {
    let started = Instant::now();
    let spec = cfg
        .features
        .clone()
        .unwrap_or_else(|| default_features(encoder.num_layers(), encoder.precision()));
    if spec.layers.is_empty() || spec.layers.iter().any(|&l| l > encoder.num_layers()) {
        return Err(ModelError::TrainingData(format!(
            "feature layers {:?} do not fit the encoder's {} layers (0 = embeddings, 1..={})",
            spec.layers,
            encoder.num_layers(),
            encoder.num_layers()
        )));
    }
    let texts: Vec<&str> = data.iter().map(|r| r.text.as_str()).collect();
    let feats = features(
        encoder,
        &texts,
        &spec,
        cache.as_deref_mut(),
        cfg.token_budget,
        &mut on_event,
    )?;
    let cal_feats = match calibration {
        Some(cal) => {
            let texts: Vec<&str> = cal.iter().map(|r| r.text.as_str()).collect();
            Some(features(
                encoder,
                &texts,
                &spec,
                cache,
                cfg.token_budget,
                &mut on_event,
            )?)
        }
        None => None,
    };
    let cal = calibration.zip(cal_feats.as_deref());
    let mut artifact =
        train_on_features(data, &feats, cal, cfg, encoder.hashes(), &spec, on_event)?;
    artifact.card.training_seconds = started.elapsed().as_secs_f64();
    Ok(artifact)
}

/// The trainer after feature extraction: `feats[i]` belongs to `data[i]`.
pub fn train_on_features(
    data: &[LabelledText],
    feats: &[Vec<f32>],
    calibration: Option<(&[LabelledText], &[Vec<f32>])>,
    cfg: &TrainConfig,
    base: &crate::base::BaseModelHashes,
    spec: &FeatureSpec,
    mut on_event: impl FnMut(TrainEvent),
) -> Result<Artifact> {
    let started = Instant::now();
    if data.len() != feats.len() {
        return Err(ModelError::TrainingData(format!(
            "{} rows but {} feature vectors",
            data.len(),
            feats.len()
        )));
    }
    if let Some(r) = data
        .iter()
        .chain(calibration.map(|c| c.0).unwrap_or_default())
        .find(|r| r.text.trim().is_empty())
    {
        return Err(ModelError::TrainingData(format!(
            "empty text labelled `{}`",
            r.label
        )));
    }
    let labels = label_set(data);
    let n_in = labels.iter().filter(|l| *l != OUT_OF_SCOPE).count();
    if n_in < 2 {
        return Err(ModelError::TrainingData(format!(
            "need at least 2 in-scope intents, found {n_in}"
        )));
    }
    if cfg.c_grid.is_empty() || cfg.epochs == 0 {
        return Err(ModelError::TrainingData(
            "empty hyper-parameter grid or zero epochs".into(),
        ));
    }
    let base = base.clone();
    let spec = spec.clone();
    let (train_idx, val_idx) = split(data, cfg.validation_fraction, cfg.seed);
    let params_for = |c: f64, n: usize| {
        let batch_size = if cfg.batch_size == 0 {
            (n / 32).clamp(32, 256)
        } else {
            cfg.batch_size
        };
        let steps_per_epoch = n.div_ceil(batch_size).max(1);
        HeadParams {
            hidden: 0,
            l2: 1.0 / (c * n as f64),
            epochs: cfg.epochs.max(cfg.min_steps.div_ceil(steps_per_epoch)),
            batch_size,
            learning_rate: cfg.learning_rate,
        }
    };
    let val_rows: Vec<&LabelledText> = val_idx.iter().map(|&i| &data[i]).collect();
    let val_feats: Vec<Vec<f32>> = val_idx.iter().map(|&i| feats[i].clone()).collect();

    let inputs = FitInputs {
        feats,
        data,
        labels: &labels,
        seed: cfg.seed,
        base: &base,
        spec: &spec,
    };

    // Model selection on the internal split.
    let mut best: Option<(f64, Fitted)> = None;
    for &c in &cfg.c_grid {
        let step = format!("C={c}");
        let fitted = fit(
            &inputs,
            &train_idx,
            params_for(c, train_idx.len()),
            &step,
            &mut on_event,
        )?;
        let acc = if val_rows.is_empty() {
            0.0
        } else {
            let (logits, _) = score_rows(&fitted.model, &val_feats)?;
            let index: BTreeMap<&str, usize> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.as_str(), i))
                .collect();
            let right = logits
                .iter()
                .zip(&val_rows)
                .filter(|(l, r)| {
                    let top = (0..l.len())
                        .max_by(|&a, &b| l[a].total_cmp(&l[b]).then(b.cmp(&a)))
                        .unwrap_or(0);
                    index.get(r.label.as_str()) == Some(&top)
                })
                .count();
            right as f64 / val_rows.len() as f64
        };
        if best.as_ref().is_none_or(|(b, _)| acc > *b + 1e-9) {
            best = Some((acc, fitted));
        }
    }
    let Some((_, mut split_model)) = best else {
        return Err(ModelError::TrainingData(
            "no hyper-parameter candidate".into(),
        ));
    };
    let chosen_c = 1.0 / (split_model.params.l2 * train_idx.len() as f64);

    // Final model on all rows.
    let all: Vec<usize> = (0..data.len()).collect();
    let mut final_model = fit(
        &inputs,
        &all,
        params_for(chosen_c, data.len()),
        "final",
        &mut on_event,
    )?;

    let (source, validation) = match calibration {
        Some((cal, cal_feats)) => {
            let cal_rows: Vec<&LabelledText> = cal.iter().collect();
            calibrate(&mut final_model.model, &cal_rows, cal_feats, cfg)?;
            let summary = summarise(&final_model.model, &cal_rows, cal_feats)?;
            ("calibration-file".to_owned(), summary)
        }
        None => {
            calibrate(&mut split_model.model, &val_rows, &val_feats, cfg)?;
            let summary = summarise(&split_model.model, &val_rows, &val_feats)?;
            final_model.model.temperature = split_model.model.temperature;
            final_model.model.oos = split_model.model.oos;
            ("internal-validation".to_owned(), summary)
        }
    };

    let n_oos = data.iter().filter(|r| r.is_out_of_scope()).count();
    let card = ModelCard {
        format: crate::artifact::FORMAT.to_owned(),
        format_version: crate::artifact::FORMAT_VERSION,
        created_by: format!("bankbot-models {}", env!("CARGO_PKG_VERSION")),
        trainer: "frozen-encoder+softmax".to_owned(),
        base_model: BaseModelRef {
            name: if base.is_pinned_default() {
                pinned::NAME.to_owned()
            } else {
                "custom".to_owned()
            },
            hashes: base.clone(),
        },
        training_data: TrainingDataRef {
            hash: data_hash(data),
            examples: data.len(),
            intents: n_in,
            out_of_scope_examples: n_oos,
        },
        features: spec.clone(),
        head: final_model.params,
        seed: cfg.seed,
        validation,
        training_seconds: started.elapsed().as_secs_f64(),
        fine_tune: None,
        files: BTreeMap::new(),
    };
    let calibration = Calibration {
        temperature: final_model.model.temperature,
        oos: final_model.model.oos,
        oos_weight: cfg.oos_weight,
        source,
    };
    Ok(Artifact {
        model: final_model.model,
        calibration,
        card,
        tuned: None,
    })
}

/// Predicts many texts with a trained model (batched by length).
pub fn predict_texts(
    encoder: &Encoder,
    model: &IntentModel,
    texts: &[&str],
    top_k: usize,
    token_budget: usize,
) -> Result<Vec<Prediction>> {
    let feats = encoder.embed_all(texts, &model.features, token_budget, |_| {})?;
    Ok(model.predict(&feats, top_k))
}

/// Rows as a tensor, for callers that hold features already.
pub fn to_tensor(feats: &[Vec<f32>]) -> Result<Tensor> {
    head::stack(feats, &candle_core::Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(spec: &[(&str, usize)]) -> Vec<LabelledText> {
        spec.iter()
            .flat_map(|(l, n)| (0..*n).map(move |i| LabelledText::new(format!("{l} {i}"), *l)))
            .collect()
    }

    #[test]
    fn split_is_stratified_seeded_and_keeps_tiny_labels_in_training() {
        let data = rows(&[("a", 10), ("b", 5), ("c", 2)]);
        let (train, val) = split(&data, 0.2, 1);
        assert_eq!(train.len() + val.len(), 17);
        let val_labels: Vec<&str> = val.iter().map(|&i| data[i].label.as_str()).collect();
        assert_eq!(val_labels.iter().filter(|l| **l == "a").count(), 2);
        assert_eq!(val_labels.iter().filter(|l| **l == "b").count(), 1);
        assert!(!val_labels.contains(&"c"));
        assert_eq!(split(&data, 0.2, 1), (train.clone(), val.clone()));
        assert_ne!(split(&data, 0.2, 2).1, val);
    }

    #[test]
    fn labels_put_out_of_scope_last() {
        let data = rows(&[("zeta", 1), (OUT_OF_SCOPE, 1), ("alpha", 1)]);
        assert_eq!(label_set(&data), ["alpha", "zeta", OUT_OF_SCOPE]);
        assert_eq!(label_set(&rows(&[("b", 1), ("a", 1)])), ["a", "b"]);
    }

    #[test]
    fn default_features_spans_the_encoder() {
        assert_eq!(default_features(6, Precision::Int8).layers, [0, 2, 4, 6]);
        assert_eq!(default_features(12, Precision::F32).layers, [0, 4, 8, 12]);
        assert_eq!(default_features(1, Precision::Int8).layers, [0, 1]);
    }

    #[test]
    fn data_hash_is_order_independent() {
        let a = rows(&[("x", 3), ("y", 2)]);
        let mut b = a.clone();
        b.reverse();
        assert_eq!(data_hash(&a), data_hash(&b));
        b[0].text.push('!');
        assert_ne!(data_hash(&a), data_hash(&b));
    }
}
