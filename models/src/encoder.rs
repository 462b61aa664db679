//! Text -> sentence features with the frozen base encoder.
//!
//! Utterances are tokenised one by one, sorted by length and grouped into
//! batches under a token budget, so padding stays small (batching mixed
//! lengths in arrival order pads every utterance to the longest one).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use tokenizers::{Tokenizer, TruncationParams};

use crate::base::{BaseModelDir, BaseModelHashes};
use crate::bert::{Bert, NormKind, l2_normalize, mean_pool};
use crate::error::{ModelError, Result};
use crate::fast::FastBert;
use crate::finetune::{TunedWeights, merge_weights};

/// Longest utterance (in word pieces, special tokens included) the encoder reads;
/// the rest of a longer message is cut off.
pub const MAX_TOKENS: usize = 128;

/// Which implementation of the encoder computes features. A model is served
/// with the precision its head was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The int8 CPU encoder ([`crate::fast`]): the default for serving and training.
    #[default]
    Int8,
    /// candle's f32 encoder (CPU or GPU).
    F32,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Int8 => "int8",
            Precision::F32 => "f32",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "int8" => Ok(Precision::Int8),
            "f32" => Ok(Precision::F32),
            other => Err(format!("unknown precision `{other}` (int8 or f32)")),
        }
    }
}

/// How token states become one feature vector: the mean-pooled, L2-normalised
/// hidden states of each listed layer (0 = embeddings, n = last layer),
/// concatenated and scaled to unit length, computed at `precision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSpec {
    pub layers: Vec<usize>,
    pub precision: Precision,
}

impl FeatureSpec {
    /// The sentence-transformers embedding: mean of the last layer, normalised.
    pub fn last(num_layers: usize, precision: Precision) -> Self {
        Self {
            layers: vec![num_layers],
            precision,
        }
    }

    pub fn dim(&self, hidden: usize) -> usize {
        self.layers.len() * hidden
    }

    pub fn deepest(&self) -> usize {
        self.layers.iter().copied().max().unwrap_or(0)
    }
}

/// One tokenised utterance.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The implementation that runs the transformer.
#[derive(Debug)]
enum Backend {
    // Both boxed: the encoder is built once and the variants differ in size.
    F32(Box<Bert>),
    Int8(Box<FastBert>),
}

/// The frozen base encoder with its tokenizer.
#[derive(Debug)]
pub struct Encoder {
    backend: Backend,
    tokenizer: Tokenizer,
    device: Device,
    hidden: usize,
    layers: usize,
    hashes: BaseModelHashes,
}

impl Encoder {
    /// Loads a base model directory (see [`BaseModelDir`]) for inference at
    /// `precision` (int8 runs on the CPU whatever `device` says).
    pub fn load(dir: &Path, device: &Device, precision: Precision) -> Result<Self> {
        Self::load_tuned(dir, device, precision, None)
    }

    /// Like [`Encoder::load`], with fine-tuned tensors (see
    /// [`crate::finetune`]) replacing the base model's.
    pub fn load_tuned(
        dir: &Path,
        device: &Device,
        precision: Precision,
        tuned: Option<&TunedWeights>,
    ) -> Result<Self> {
        let base = BaseModelDir::open(dir)?;
        let f32 = Self::load_with(&base, device, NormKind::Fused, tuned)?;
        match precision {
            Precision::F32 => Ok(f32),
            Precision::Int8 => {
                let Backend::F32(bert) = &f32.backend else {
                    unreachable!("load_with builds the f32 backend")
                };
                let fast = FastBert::from_bert(bert, 0).map_err(|e| {
                    ModelError::invalid(
                        base.weights_path(),
                        format!("cannot build the int8 encoder: {e}"),
                    )
                })?;
                // The f32 weights are dropped here: serving keeps only the int8 copy.
                Ok(Self {
                    backend: Backend::Int8(Box::new(fast)),
                    device: Device::Cpu,
                    ..f32
                })
            }
        }
    }

    /// Loads candle's f32 encoder with the given layer-norm implementation
    /// (the differentiable one is for fine-tuning), optionally with tuned tensors.
    pub fn load_with(
        base: &BaseModelDir,
        device: &Device,
        norm: NormKind,
        tuned: Option<&TunedWeights>,
    ) -> Result<Self> {
        let tokenizer = load_tokenizer(&base.tokenizer_path())?;
        // Every id, position and type id the tokenizer can produce must index
        // the embedding tables.
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > base.config.vocab_size {
            return Err(ModelError::invalid(
                base.tokenizer_path(),
                format!(
                    "the tokenizer has {vocab} tokens but config.json's vocab_size is {}",
                    base.config.vocab_size
                ),
            ));
        }
        if base.config.max_position_embeddings < MAX_TOKENS {
            return Err(ModelError::invalid(
                base.config_path(),
                format!(
                    "max_position_embeddings is {}; inputs are up to {MAX_TOKENS} tokens",
                    base.config.max_position_embeddings
                ),
            ));
        }
        let (bytes, hashes) = base.read_weights()?;
        let weights_path = base.weights_path();
        let unreadable = |e: candle_core::Error| {
            ModelError::invalid(
                &weights_path,
                format!("not a readable safetensors file ({e})"),
            )
        };
        let vb = match tuned {
            None => VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)
                .map_err(unreadable)?,
            Some(tuned) => {
                let mut tensors =
                    candle_core::safetensors::load_buffer(&bytes, device).map_err(unreadable)?;
                merge_weights(&mut tensors, &tuned.tensors, &weights_path)?;
                VarBuilder::from_tensors(tensors, DType::F32, device)
            }
        };
        let bert = Bert::load(vb, &base.config, norm).map_err(|e| {
            ModelError::invalid(
                &weights_path,
                format!("weights do not match config.json ({e}); is this a BERT-family model?"),
            )
        })?;
        Ok(Self {
            layers: bert.num_layers(),
            backend: Backend::F32(Box::new(bert)),
            tokenizer,
            device: device.clone(),
            hidden: base.config.hidden_size,
            hashes,
        })
    }

    pub fn precision(&self) -> Precision {
        match self.backend {
            Backend::F32(_) => Precision::F32,
            Backend::Int8(_) => Precision::Int8,
        }
    }

    pub fn hashes(&self) -> &BaseModelHashes {
        &self.hashes
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    pub fn num_layers(&self) -> usize {
        self.layers
    }

    /// The candle encoder, when this is the f32 backend.
    pub fn bert(&self) -> Option<&Bert> {
        match &self.backend {
            Backend::F32(b) => Some(b),
            Backend::Int8(_) => None,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn tokenize(&self, text: &str) -> Result<Tokens> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(Tokens {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
        })
    }

    /// Features for many texts, in input order. Batches are formed by length
    /// so that no batch holds more than `token_budget` padded tokens.
    pub fn embed_all(
        &self,
        texts: &[&str],
        spec: &FeatureSpec,
        token_budget: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Vec<f32>>> {
        let tokens = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| tokens[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        let mut start = 0;
        while start < order.len() {
            // Sorted ascending, so the last member of a batch is its longest.
            let mut end = start + 1;
            while end < order.len() && tokens[order[end]].len() * (end + 1 - start) <= token_budget
            {
                end += 1;
            }
            let batch: Vec<&Tokens> = order[start..end].iter().map(|&i| &tokens[i]).collect();
            let feats = self.embed_tokens(&batch, spec)?;
            for (row, &i) in feats.into_iter().zip(&order[start..end]) {
                out[i] = row;
            }
            progress(end - start);
            start = end;
        }
        Ok(out)
    }

    /// Features for one batch. The spec's precision must be this encoder's:
    /// features of the two implementations differ slightly.
    pub fn embed_tokens(&self, batch: &[&Tokens], spec: &FeatureSpec) -> Result<Vec<Vec<f32>>> {
        if spec.precision != self.precision() {
            return Err(ModelError::Inference(format!(
                "features were specified at {} precision but the encoder runs at {}",
                spec.precision.as_str(),
                self.precision().as_str()
            )));
        }
        match &self.backend {
            Backend::Int8(fast) => Ok(fast.embed(batch, spec)),
            Backend::F32(bert) => {
                let (ids, type_ids, mask) = pad_batch(batch, &self.device)?;
                let states = bert.forward_layers(&ids, &type_ids, &mask, spec.deepest())?;
                let feats = pool_states(&states, &mask, spec)?;
                Ok(feats.to_vec2::<f32>()?)
            }
        }
    }
}

/// Applies a [`FeatureSpec`] to the hidden states returned by [`Bert::forward_layers`]:
/// each layer's mean is normalised, the parts concatenated and scaled so the
/// whole vector has unit length (dot products are cosine similarities).
pub fn pool_states(
    states: &[Tensor],
    mask: &Tensor,
    spec: &FeatureSpec,
) -> candle_core::Result<Tensor> {
    let parts = spec
        .layers
        .iter()
        .map(|&l| l2_normalize(&mean_pool(&states[l], mask)?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 1)? / (spec.layers.len().max(1) as f64).sqrt()
}

/// Pads a batch to its longest member: `(ids, type_ids, mask)`, each `[batch, tokens]`.
pub fn pad_batch(
    batch: &[&Tokens],
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let t = batch.iter().map(|b| b.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![0u32; batch.len() * t];
    let mut types = vec![0u32; batch.len() * t];
    let mut mask = vec![0u32; batch.len() * t];
    for (r, tok) in batch.iter().enumerate() {
        let row = r * t;
        ids[row..row + tok.len()].copy_from_slice(&tok.ids);
        types[row..row + tok.len()].copy_from_slice(&tok.type_ids);
        mask[row..row + tok.len()].fill(1);
    }
    let shape = (batch.len(), t);
    Ok((
        Tensor::from_vec(ids, shape, device)?,
        Tensor::from_vec(types, shape, device)?,
        Tensor::from_vec(mask, shape, device)?,
    ))
}

/// Loads `tokenizer.json` with padding switched off (the shipped file pads
/// every input to 128 tokens) and truncation at [`MAX_TOKENS`].
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let mut tok = Tokenizer::from_file(path)
        .map_err(|e| ModelError::invalid(path, format!("not a tokenizers JSON file ({e})")))?;
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: MAX_TOKENS,
        ..Default::default()
    }))
    .map_err(|e| ModelError::invalid(path, format!("cannot set truncation ({e})")))?;
    Ok(tok)
}
