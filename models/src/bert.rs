//! A BERT encoder in candle, written for two uses:
//!
//! * inference, with candle's fused layer norm and fused last-dim softmax;
//! * fine-tuning, where every op must have a backward pass. candle's fused
//!   `layer_norm` and `softmax_last_dim` have none: with them `backward()`
//!   succeeds but no encoder weight receives a gradient. [`NormKind::Differentiable`]
//!   switches both to compositions of differentiable primitives.
//!
//! Unlike candle-transformers' BERT it returns the hidden states of every layer,
//! so features can pool more than the last layer.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::Deserialize;

/// The subset of a Hugging Face BERT `config.json` this encoder needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_act() -> String {
    "gelu".to_owned()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Checks the invariants the forward pass relies on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if let Some(t) = &self.model_type
            && !matches!(t.as_str(), "bert")
        {
            return Err(format!("model_type `{t}` is not a BERT-family encoder"));
        }
        if self.hidden_size == 0 || self.num_attention_heads == 0 || self.num_hidden_layers == 0 {
            return Err(
                "hidden_size, num_attention_heads and num_hidden_layers must be > 0".into(),
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.type_vocab_size == 0 || self.vocab_size == 0 {
            return Err("vocab_size and type_vocab_size must be > 0".into());
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "gelu_new" | "relu") {
            return Err(format!("unsupported hidden_act `{}`", self.hidden_act));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Which layer-norm and softmax implementation the forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// candle's fused kernels: fastest, but no backward pass.
    Fused,
    /// Compositions of primitive ops: slower, differentiable.
    Differentiable,
}

#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        // Old checkpoints name the parameters gamma/beta.
        let (weight, bias) = match (vb.get(size, "weight"), vb.get(size, "bias")) {
            (Ok(w), Ok(b)) => (w, b),
            _ => (vb.get(size, "gamma")?, vb.get(size, "beta")?),
        };
        Ok(Self {
            weight,
            bias,
            eps: eps as f32,
        })
    }

    fn forward(&self, xs: &Tensor, kind: NormKind) -> Result<Tensor> {
        match kind {
            NormKind::Fused => candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, self.eps),
            NormKind::Differentiable => {
                candle_nn::ops::layer_norm_slow(xs, &self.weight, &self.bias, self.eps)
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            word: candle_nn::embedding(cfg.vocab_size, h, vb.pp("word_embeddings"))?,
            position: candle_nn::embedding(
                cfg.max_position_embeddings,
                h,
                vb.pp("position_embeddings"),
            )?,
            token_type: candle_nn::embedding(
                cfg.type_vocab_size,
                h,
                vb.pp("token_type_embeddings"),
            )?,
            norm: LayerNorm::load(vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }

    fn forward(&self, ids: &Tensor, type_ids: &Tensor, kind: NormKind) -> Result<Tensor> {
        let (_b, t) = ids.dims2()?;
        let positions = Tensor::arange(0u32, t as u32, ids.device())?;
        let x = self
            .word
            .forward(ids)?
            .add(&self.token_type.forward(type_ids)?)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        self.norm.forward(&x, kind)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let att = vb.pp("attention");
        Ok(Self {
            query: candle_nn::linear(h, h, att.pp("self").pp("query"))?,
            key: candle_nn::linear(h, h, att.pp("self").pp("key"))?,
            value: candle_nn::linear(h, h, att.pp("self").pp("value"))?,
            attn_out: candle_nn::linear(h, h, att.pp("output").pp("dense"))?,
            attn_norm: LayerNorm::load(att.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            intermediate: candle_nn::linear(
                h,
                cfg.intermediate_size,
                vb.pp("intermediate").pp("dense"),
            )?,
            output: candle_nn::linear(cfg.intermediate_size, h, vb.pp("output").pp("dense"))?,
            out_norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }
}

/// The encoder: embeddings followed by `num_hidden_layers` transformer layers.
#[derive(Debug, Clone)]
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    intermediate: usize,
    eps: f32,
    act: String,
    norm: NormKind,
}

/// `(weight, bias)` of a linear layer (`weight` is `[out, in]`) or of a layer norm.
pub type Pair<'a> = (&'a Tensor, &'a Tensor);

/// Borrowed weights of one transformer layer.
#[derive(Debug)]
pub struct LayerParts<'a> {
    pub query: Pair<'a>,
    pub key: Pair<'a>,
    pub value: Pair<'a>,
    pub attn_out: Pair<'a>,
    pub attn_norm: Pair<'a>,
    pub intermediate: Pair<'a>,
    pub output: Pair<'a>,
    pub out_norm: Pair<'a>,
}

/// Borrowed weights of the whole encoder, for other implementations of the
/// same forward pass (the int8 serving encoder).
#[derive(Debug)]
pub struct BertParts<'a> {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub eps: f32,
    pub activation: &'a str,
    pub word: &'a Tensor,
    pub position: &'a Tensor,
    pub token_type: &'a Tensor,
    pub emb_norm: Pair<'a>,
    pub layers: Vec<LayerParts<'a>>,
}

fn linear_pair(l: &Linear) -> Result<Pair<'_>> {
    let bias = l
        .bias()
        .ok_or_else(|| candle_core::Error::Msg("linear layer without bias".into()))?;
    Ok((l.weight(), bias))
}

impl Bert {
    /// Loads weights named like Hugging Face's `BertModel`, with or without a
    /// `bert.` prefix.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, norm: NormKind) -> Result<Self> {
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        let embeddings = Embeddings::load(vb.pp("embeddings"), cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            intermediate: cfg.intermediate_size,
            eps: cfg.layer_norm_eps as f32,
            act: cfg.hidden_act.clone(),
            norm,
        })
    }

    /// All weights, borrowed.
    pub fn parts(&self) -> Result<BertParts<'_>> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerParts {
                    query: linear_pair(&l.query)?,
                    key: linear_pair(&l.key)?,
                    value: linear_pair(&l.value)?,
                    attn_out: linear_pair(&l.attn_out)?,
                    attn_norm: (&l.attn_norm.weight, &l.attn_norm.bias),
                    intermediate: linear_pair(&l.intermediate)?,
                    output: linear_pair(&l.output)?,
                    out_norm: (&l.out_norm.weight, &l.out_norm.bias),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BertParts {
            hidden: self.heads * self.head_dim,
            heads: self.heads,
            intermediate: self.intermediate,
            eps: self.eps,
            activation: &self.act,
            word: self.embeddings.word.embeddings(),
            position: self.embeddings.position.embeddings(),
            token_type: self.embeddings.token_type.embeddings(),
            emb_norm: (&self.embeddings.norm.weight, &self.embeddings.norm.bias),
            layers,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Runs the encoder and returns the hidden states after the embeddings
    /// (index 0) and after every layer (index `i + 1`), each `[batch, tokens, hidden]`.
    ///
    /// `mask` is `[batch, tokens]` with 1 for real tokens and 0 for padding.
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Vec<Tensor>> {
        self.forward_layers(ids, type_ids, mask, self.layers.len())
    }

    /// Like [`Bert::forward`] but stops after the first `depth` layers.
    pub fn forward_layers(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        depth: usize,
    ) -> Result<Vec<Tensor>> {
        let hidden = self.embeddings.forward(ids, type_ids, self.norm)?;
        let mut states = vec![hidden.clone()];
        states.extend(self.forward_range(&hidden, mask, 0, depth)?);
        Ok(states)
    }

    /// Runs layers `from..to` (0-based) on hidden states `[batch, tokens,
    /// hidden]`, returning the state after each of them. Fine-tuning uses it
    /// to run only the trained top layers on cached lower-layer states.
    pub fn forward_range(
        &self,
        hidden: &Tensor,
        mask: &Tensor,
        from: usize,
        to: usize,
    ) -> Result<Vec<Tensor>> {
        let (b, t) = mask.dims2()?;
        // Additive attention bias: 0 for tokens, a large negative number for padding.
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((b, 1, 1, t))?;
        let mut hidden = hidden.clone();
        let mut states = Vec::with_capacity(to.saturating_sub(from));
        for layer in self.layers.iter().take(to).skip(from) {
            hidden = self.layer_forward(layer, &hidden, &bias)?;
            states.push(hidden.clone());
        }
        Ok(states)
    }

    fn layer_forward(&self, l: &Layer, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let split = |y: Tensor| -> Result<Tensor> {
            y.reshape((b, t, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(l.query.forward(x)?)?;
        let k = split(l.key.forward(x)?)?;
        let v = split(l.value.forward(x)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?;
        let probs = match self.norm {
            NormKind::Fused => candle_nn::ops::softmax_last_dim(&scores)?,
            NormKind::Differentiable => candle_nn::ops::softmax(&scores, D::Minus1)?,
        };
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        let attn = l
            .attn_norm
            .forward(&(l.attn_out.forward(&ctx)? + x)?, self.norm)?;
        let inter = l.intermediate.forward(&attn)?;
        let inter = match self.act.as_str() {
            "relu" => inter.relu()?,
            "gelu_new" => inter.gelu()?,
            _ => inter.gelu_erf()?,
        };
        l.out_norm
            .forward(&(l.output.forward(&inter)? + attn)?, self.norm)
    }
}

/// Mean of the hidden states over real (unmasked) tokens: `[batch, hidden]`.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    summed.broadcast_div(&counts)
}

/// Scales each row to unit L2 norm.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}
