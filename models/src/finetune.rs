//! `--fine-tune`: trains the top encoder layers together with a softmax head,
//! then hands the tuned encoder to the default trainer.
//!
//! * The base weights are loaded once; the tensors of the trained layers are
//!   wrapped in `Var`s, everything else stays constant. Word embeddings are
//!   never trained (most parameters, least gain).
//! * The encoder runs with [`NormKind::Differentiable`]: candle's fused layer
//!   norm and softmax have no backward pass, and with them only the head would
//!   learn.
//! * The frozen lower layers are run once per example; each step runs only
//!   the trained layers on those cached states, batched by length.
//! * The result is the trained tensors, named as in the base weights file, so
//!   any encoder ([`crate::encoder::Encoder::load_tuned`], int8 or f32) can
//!   apply them on top of the base model.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::base::BaseModelDir;
use crate::bert::{Bert, NormKind, l2_normalize, mean_pool};
use crate::encoder::{Tokens, load_tokenizer, pad_batch};
use crate::error::{ModelError, Result};
use crate::head::HeadParams;
use crate::metrics::OUT_OF_SCOPE;
use crate::rng::SplitMix64;
use crate::train::{LabelledText, TrainEvent};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTuneConfig {
    /// Top encoder layers trained; 0 trains every transformer layer.
    pub layers: usize,
    pub epochs: usize,
    /// AdamW learning rate of the encoder layers.
    pub learning_rate: f64,
    /// AdamW learning rate of the temporary head (which starts from a linear
    /// probe, so it needs only small steps).
    pub head_learning_rate: f64,
    pub batch_size: usize,
    pub seed: u64,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        Self {
            layers: 2,
            epochs: 3,
            learning_rate: 5e-5,
            head_learning_rate: 2e-3,
            batch_size: 16,
            seed: 13,
        }
    }
}

/// The trained tensors, named as in the base model's weights file.
#[derive(Debug, Clone)]
pub struct TunedWeights {
    pub tensors: HashMap<String, Tensor>,
    /// Mean training loss of each epoch (empty when loaded from disk).
    pub epoch_losses: Vec<f32>,
}

impl TunedWeights {
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        candle_core::safetensors::save(&self.tensors, path)?;
        Ok(())
    }

    pub fn load(path: &std::path::Path) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            ModelError::invalid(path, format!("truncated or corrupt safetensors file ({e})"))
        })?;
        Ok(Self {
            tensors,
            epoch_losses: Vec::new(),
        })
    }
}

/// The base weights with `tuned` tensors put in place, checking that every
/// tuned tensor replaces one of the same shape.
pub fn merge_weights(
    base: &mut HashMap<String, Tensor>,
    tuned: &HashMap<String, Tensor>,
    origin: &std::path::Path,
) -> Result<()> {
    for (name, t) in tuned {
        match base.get(name) {
            Some(b) if b.dims() == t.dims() => {
                base.insert(name.clone(), t.to_device(b.device())?.to_dtype(b.dtype())?);
            }
            Some(b) => {
                return Err(ModelError::invalid(
                    origin,
                    format!(
                        "tuned tensor `{name}` has shape {:?}, the base model's is {:?}",
                        t.dims(),
                        b.dims()
                    ),
                ));
            }
            None => {
                return Err(ModelError::invalid(
                    origin,
                    format!("tuned tensor `{name}` is not in the base model"),
                ));
            }
        }
    }
    Ok(())
}

/// One example with the frozen part of its forward pass done.
struct Cached {
    tokens: Tokens,
    /// State after the last frozen layer, `[tokens, hidden]`.
    state: Tensor,
    /// Pooled (normalised) frozen layers of the feature spec, in spec order.
    frozen: Vec<Tensor>,
    label: u32,
}

/// Fine-tunes the top `cfg.layers` layers on `data`; `spec_layers` are the
/// pooled layers of the features the final head will use.
pub fn fine_tune(
    base: &BaseModelDir,
    data: &[LabelledText],
    spec_layers: &[usize],
    cfg: &FineTuneConfig,
    device: &Device,
    mut on_event: impl FnMut(TrainEvent),
) -> Result<TunedWeights> {
    let n_layers = base.config.num_hidden_layers;
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(ModelError::TrainingData(
            "fine-tuning needs at least one epoch and a batch size".into(),
        ));
    }
    let first = if cfg.layers == 0 || cfg.layers >= n_layers {
        0
    } else {
        n_layers - cfg.layers
    };
    if spec_layers.is_empty() || spec_layers.iter().any(|&l| l > n_layers) {
        return Err(ModelError::TrainingData(format!(
            "feature layers {spec_layers:?} do not fit the encoder's {n_layers} layers (0 = embeddings, 1..={n_layers})"
        )));
    }
    if spec_layers.iter().all(|&l| l <= first) {
        return Err(ModelError::TrainingData(format!(
            "the features come only from layers {spec_layers:?}, below the tuned layers \
             {}..={n_layers}: fine-tuning would change nothing",
            first + 1
        )));
    }
    let (bytes, _) = base.read_weights()?;
    let mut weights = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
        ModelError::invalid(
            base.weights_path(),
            format!("not a readable safetensors file ({e})"),
        )
    })?;
    drop(bytes);
    let prefix = if weights.contains_key("embeddings.word_embeddings.weight") {
        ""
    } else {
        "bert."
    };
    let mut vars: Vec<(String, Var)> = Vec::new();
    let mut names: Vec<String> = weights
        .keys()
        .filter(|k| {
            (first..n_layers).any(|i| k.starts_with(&format!("{prefix}encoder.layer.{i}.")))
        })
        .cloned()
        .collect();
    names.sort();
    for name in names {
        let t = weights[&name].to_dtype(DType::F32)?;
        let var = Var::from_tensor(&t)?;
        // A clone of the Var's tensor keeps its id, so gradients reach the Var.
        weights.insert(name.clone(), var.as_tensor().clone());
        vars.push((name, var));
    }
    let vb = VarBuilder::from_tensors(weights, DType::F32, device);
    let bert = Bert::load(vb, &base.config, NormKind::Differentiable)?;
    let tokenizer = load_tokenizer(&base.tokenizer_path())?;

    // Labels: in-scope intents sorted, then out-of-scope (as the default trainer).
    let mut labels: Vec<&str> = data
        .iter()
        .filter(|r| !r.is_out_of_scope())
        .map(|r| r.label.as_str())
        .collect();
    labels.sort_unstable();
    labels.dedup();
    if data.iter().any(LabelledText::is_out_of_scope) {
        labels.push(OUT_OF_SCOPE);
    }
    let index: HashMap<&str, u32> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (*l, i as u32))
        .collect();

    // Frozen part of the forward pass, once.
    let mut cached = Vec::with_capacity(data.len());
    let mut order: Vec<usize> = (0..data.len()).collect();
    let tokens: Vec<Tokens> = data
        .iter()
        .map(|r| {
            let enc = tokenizer
                .encode(r.text.as_str(), true)
                .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
            Ok(Tokens {
                ids: enc.get_ids().to_vec(),
                type_ids: enc.get_type_ids().to_vec(),
            })
        })
        .collect::<Result<_>>()?;
    order.sort_by_key(|&i| tokens[i].len());
    for chunk in order.chunks(32) {
        let batch: Vec<&Tokens> = chunk.iter().map(|&i| &tokens[i]).collect();
        let (ids, types, mask) = pad_batch(&batch, device)?;
        let states = bert.forward_layers(&ids, &types, &mask, first)?;
        let pooled: Vec<Tensor> = spec_layers
            .iter()
            .filter(|&&l| l <= first)
            .map(|&l| l2_normalize(&mean_pool(&states[l], &mask)?))
            .collect::<candle_core::Result<_>>()?;
        for (row, &i) in chunk.iter().enumerate() {
            let len = tokens[i].len();
            cached.push(Cached {
                tokens: tokens[i].clone(),
                state: states[first].get(row)?.narrow(0, 0, len)?.detach(),
                frozen: pooled
                    .iter()
                    .map(|p| p.get(row).map(|t| t.detach()))
                    .collect::<candle_core::Result<_>>()?,
                label: index[data[i].label.as_str()],
            });
        }
        on_event(TrainEvent::Embedding {
            done: cached.len(),
            total: data.len(),
        });
    }

    // The features one batch produces with the current encoder; the trained
    // layers run on the cached states.
    let scale = 1.0 / (spec_layers.len().max(1) as f64).sqrt();
    let batch_features = |batch: &[usize]| -> Result<Tensor> {
        let t = batch
            .iter()
            .map(|&i| cached[i].tokens.len())
            .max()
            .unwrap_or(1);
        let states: Vec<Tensor> = batch
            .iter()
            .map(|&i| {
                let s = &cached[i].state;
                s.pad_with_zeros(0, 0, t - s.dims()[0])
            })
            .collect::<candle_core::Result<_>>()?;
        let hidden = Tensor::stack(&states, 0)?;
        let toks: Vec<&Tokens> = batch.iter().map(|&i| &cached[i].tokens).collect();
        let (_, _, mask) = pad_batch(&toks, device)?;
        let upper = bert.forward_range(&hidden, &mask, first, n_layers)?;
        let mut parts = Vec::with_capacity(spec_layers.len());
        let mut frozen_slot = 0;
        for &l in spec_layers {
            if l <= first {
                let rows: Vec<Tensor> = batch
                    .iter()
                    .map(|&i| cached[i].frozen[frozen_slot].clone())
                    .collect();
                parts.push(Tensor::stack(&rows, 0)?);
                frozen_slot += 1;
            } else {
                parts.push(l2_normalize(&mean_pool(&upper[l - first - 1], &mask)?)?);
            }
        }
        Ok((Tensor::cat(&parts, 1)? * scale)?)
    };
    // `cached` is sorted by length: consecutive chunks pad little.
    let mut batches: Vec<Vec<usize>> = (0..cached.len())
        .collect::<Vec<_>>()
        .chunks(cfg.batch_size)
        .map(<[usize]>::to_vec)
        .collect();

    // Linear probe first: a head fitted on the untuned features starts the
    // fine-tuning, so early encoder updates follow a sensible head instead of
    // noise from a zero one (which distorts pretrained features).
    let probe_x: Vec<Tensor> = batches
        .iter()
        .map(|b| batch_features(b).map(|x| x.detach()))
        .collect::<Result<_>>()?;
    let probe_x = Tensor::cat(&probe_x, 0)?.to_device(&Device::Cpu)?;
    let probe_y: Vec<u32> = batches.iter().flatten().map(|&i| cached[i].label).collect();
    let probe = crate::head::train(
        &probe_x,
        &probe_y,
        labels.len(),
        &HeadParams {
            hidden: 0,
            l2: 1.0 / (30.0 * cached.len() as f64),
            epochs: 20,
            batch_size: (cached.len() / 32).clamp(32, 256),
            learning_rate: 0.05,
        },
        cfg.seed,
        |_| {},
    )?;
    let (w0, b0) = &probe.layers()[0];
    let w = Var::from_tensor(&w0.to_device(device)?)?;
    let b = Var::from_tensor(&b0.to_device(device)?)?;
    let mut opt_enc = AdamW::new(
        vars.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: 0.01,
            ..Default::default()
        },
    )?;
    let mut opt_head = AdamW::new(
        vec![w.clone(), b.clone()],
        ParamsAdamW {
            lr: cfg.head_learning_rate,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let (w_t, b_t) = (w.as_tensor().clone(), b.as_tensor().clone());
    let mut rng = SplitMix64::new(cfg.seed);
    let mut epoch_losses = Vec::with_capacity(cfg.epochs);
    for epoch in 1..=cfg.epochs {
        rng.shuffle(&mut batches);
        let mut total = 0f32;
        for batch in &batches {
            let x = batch_features(batch)?;
            let logits = x.matmul(&w_t)?.broadcast_add(&b_t)?;
            let y: Vec<u32> = batch.iter().map(|&i| cached[i].label).collect();
            let y = Tensor::from_vec(y, batch.len(), device)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            total += loss.to_scalar::<f32>()? * batch.len() as f32;
            let grads = loss.backward()?;
            opt_enc.step(&grads)?;
            opt_head.step(&grads)?;
        }
        epoch_losses.push(total / cached.len().max(1) as f32);
        on_event(TrainEvent::Fitting {
            step: format!("fine-tune top {}", n_layers - first),
            epoch,
            epochs: cfg.epochs,
        });
    }
    let tensors = vars
        .into_iter()
        .map(|(name, var)| Ok((name, var.as_tensor().detach().to_device(&Device::Cpu)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    Ok(TunedWeights {
        tensors,
        epoch_losses,
    })
}
