//! The serving encoder: the same BERT as [`crate::bert`], run with int8
//! weights and activations on the CPU.
//!
//! * The four matrix products per layer (fused QKV, attention output, FFN in,
//!   FFN out) are int8 x int8 -> i32 with per-column weight scales and
//!   per-token activation scales ([`gemm`]); layer norm, GELU, softmax and
//!   attention stay in f32 ([`ops`]).
//! * A batch is ragged: the tokens of all utterances are stacked into one
//!   matrix without padding; only attention works per utterance.
//! * Large products are split by columns across the worker pool's threads;
//!   scratch buffers are reused between calls.
//!
//! Weights are 4x smaller than f32 (the layers fit in the L3 cache), and the
//! VNNI/AVX2 kernels do 2-4x the multiply-adds of f32 FMA per cycle.

pub(crate) mod gemm;
pub(crate) mod ops;

pub use gemm::Isa;

use std::sync::Mutex;

use candle_core::Tensor;

use crate::bert::Bert;
use crate::encoder::{FeatureSpec, Tokens};
use gemm::{Epilogue, QMatrix, QRows};

/// Work (multiply-adds) below which a product is not split across threads.
const SPLIT_MACS: usize = 1 << 20;

#[derive(Debug)]
struct Layer {
    qkv: QMatrix,
    attn_out: QMatrix,
    ln1: (Vec<f32>, Vec<f32>),
    ffn_in: QMatrix,
    ffn_out: QMatrix,
    ln2: (Vec<f32>, Vec<f32>),
}

/// Reusable buffers of one forward pass.
#[derive(Debug, Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    attn: Vec<f32>,
    inter: Vec<f32>,
    q: QRows,
    scores: Vec<f32>,
    scores_b: Vec<f32>,
}

#[derive(Debug)]
pub struct FastBert {
    isa: Isa,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    eps: f32,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_ln: (Vec<f32>, Vec<f32>),
    layers: Vec<Layer>,
    pool: rayon::ThreadPool,
    scratch: Mutex<Scratch>,
}

fn flat(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()
}

/// A candle `Linear` weight is `[out, in]`; the kernels want `[in, out]`.
fn quantize_linear(w: &Tensor, b: &Tensor, isa: Isa) -> candle_core::Result<QMatrix> {
    let (out, inp) = w.dims2()?;
    let wt = flat(&w.t()?.contiguous()?)?;
    Ok(QMatrix::new(&wt, inp, out, &flat(b)?, isa))
}

impl FastBert {
    /// Quantises a loaded encoder. `threads` workers split large products
    /// (0 = one per available core).
    pub fn from_bert(bert: &Bert, threads: usize) -> candle_core::Result<Self> {
        let isa = Isa::detect();
        let p = bert.parts()?;
        if p.activation != "gelu" {
            return Err(candle_core::Error::Msg(format!(
                "the int8 encoder implements the erf GELU only, not `{}`",
                p.activation
            )));
        }
        let mut layers = Vec::with_capacity(p.layers.len());
        for l in &p.layers {
            // Fuse Q, K and V into one [h, 3h] product.
            let w = Tensor::cat(&[l.query.0, l.key.0, l.value.0], 0)?;
            let b = Tensor::cat(&[l.query.1, l.key.1, l.value.1], 0)?;
            layers.push(Layer {
                qkv: quantize_linear(&w, &b, isa)?,
                attn_out: quantize_linear(l.attn_out.0, l.attn_out.1, isa)?,
                ln1: (flat(l.attn_norm.0)?, flat(l.attn_norm.1)?),
                ffn_in: quantize_linear(l.intermediate.0, l.intermediate.1, isa)?,
                ffn_out: quantize_linear(l.output.0, l.output.1, isa)?,
                ln2: (flat(l.out_norm.0)?, flat(l.out_norm.1)?),
            });
        }
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("bankbot-int8-{i}"))
            .build()
            .map_err(|e| candle_core::Error::Msg(format!("cannot start inference threads: {e}")))?;
        Ok(Self {
            isa,
            hidden: p.hidden,
            heads: p.heads,
            intermediate: p.intermediate,
            eps: p.eps,
            word: flat(p.word)?,
            position: flat(p.position)?,
            token_type: flat(p.token_type)?,
            emb_ln: (flat(p.emb_norm.0)?, flat(p.emb_norm.1)?),
            layers,
            pool,
            scratch: Mutex::new(Scratch::default()),
        })
    }

    /// The instruction set of the element-wise code. Each product uses its
    /// matrix's own kernel, which falls back to scalar code for shapes the
    /// SIMD kernels do not tile.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Pooled features (see [`FeatureSpec`]) for a batch of tokenised utterances.
    pub fn embed(&self, batch: &[&Tokens], spec: &FeatureSpec) -> Vec<Vec<f32>> {
        let mut guard = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let scratch: &mut Scratch = &mut guard;
        self.pool.install(|| self.forward(batch, spec, scratch))
    }

    fn forward(&self, batch: &[&Tokens], spec: &FeatureSpec, s: &mut Scratch) -> Vec<Vec<f32>> {
        let h = self.hidden;
        let lens: Vec<usize> = batch.iter().map(|t| t.len()).collect();
        let m: usize = lens.iter().sum();
        // Per pooled layer (in spec order), the normalised mean of each utterance.
        let mut parts: Vec<Option<Vec<Vec<f32>>>> = vec![None; spec.layers.len()];
        if m == 0 {
            return vec![Vec::new(); batch.len()];
        }
        // Embeddings: word + position + token type, then layer norm.
        s.x.resize(m * h, 0.0);
        let mut row = 0;
        for t in batch {
            for (pos, (&id, &ty)) in t.ids.iter().zip(&t.type_ids).enumerate() {
                let dst = &mut s.x[row * h..(row + 1) * h];
                let w = &self.word[id as usize * h..(id as usize + 1) * h];
                let p = &self.position[pos * h..(pos + 1) * h];
                let ty = &self.token_type[ty as usize * h..(ty as usize + 1) * h];
                for i in 0..h {
                    dst[i] = w[i] + p[i] + ty[i];
                }
                row += 1;
            }
        }
        ops::add_layer_norm(
            self.isa,
            &mut s.x,
            None,
            h,
            &self.emb_ln.0,
            &self.emb_ln.1,
            self.eps,
        );
        self.pool_layer(0, &s.x, &lens, spec, &mut parts);
        let depth = spec.deepest().min(self.layers.len());
        for (li, layer) in self.layers.iter().take(depth).enumerate() {
            self.layer(layer, &lens, m, s);
            self.pool_layer(li + 1, &s.x, &lens, spec, &mut parts);
        }
        let scale = 1.0 / (spec.layers.len().max(1) as f32).sqrt();
        (0..batch.len())
            .map(|u| {
                parts
                    .iter()
                    .flat_map(|p| p.as_ref().map_or(&[][..], |p| p[u].as_slice()))
                    .map(|v| v * scale)
                    .collect()
            })
            .collect()
    }

    /// Stores the normalised mean of layer `layer`'s states for every
    /// utterance in each spec slot that asks for that layer.
    fn pool_layer(
        &self,
        layer: usize,
        x: &[f32],
        lens: &[usize],
        spec: &FeatureSpec,
        parts: &mut [Option<Vec<Vec<f32>>>],
    ) {
        let slots: Vec<usize> = (0..spec.layers.len())
            .filter(|&i| spec.layers[i] == layer)
            .collect();
        if slots.is_empty() {
            return;
        }
        let h = self.hidden;
        let mut means = Vec::with_capacity(lens.len());
        let mut start = 0;
        for &len in lens {
            let mut mean = vec![0f32; h];
            for r in start..start + len {
                for (a, b) in mean.iter_mut().zip(&x[r * h..(r + 1) * h]) {
                    *a += b;
                }
            }
            let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            // Mean then normalise: the 1/len factor cancels in the normalisation.
            means.push(mean.iter().map(|v| v / norm).collect::<Vec<f32>>());
            start += len;
        }
        for slot in slots {
            parts[slot] = Some(means.clone());
        }
    }

    fn layer(&self, l: &Layer, lens: &[usize], m: usize, s: &mut Scratch) {
        let h = self.hidden;
        // Fused QKV.
        s.q.quantize(&s.x, m, h, l.qkv.isa());
        s.qkv.resize(m * 3 * h, 0.0);
        self.matmul(&s.q, &l.qkv, &mut s.qkv, Epilogue::None);
        // Attention per utterance; a batch is split between two threads at the
        // utterance boundary nearest half of the tokens.
        s.ctx.resize(m * h, 0.0);
        let split = if self.pool.current_num_threads() > 1 && lens.len() > 1 {
            let mut acc = 0;
            lens.iter()
                .take_while(|&&t| {
                    acc += t;
                    acc * 2 <= m
                })
                .count()
                .max(1)
        } else {
            lens.len()
        };
        let cut: usize = lens[..split].iter().sum();
        let (ctx_a, ctx_b) = s.ctx.split_at_mut(cut * h);
        let (qkv_a, qkv_b) = s.qkv.split_at(cut * 3 * h);
        let (scr_a, scr_b) = (&mut s.scores, &mut s.scores_b);
        let run = |qkv: &[f32], ctx: &mut [f32], lens: &[usize], scratch: &mut Vec<f32>| {
            let mut start = 0;
            for &t in lens {
                ops::attention(
                    self.isa,
                    &qkv[start * 3 * h..(start + t) * 3 * h],
                    t,
                    h,
                    self.heads,
                    &mut ctx[start * h..(start + t) * h],
                    scratch,
                );
                start += t;
            }
        };
        if split < lens.len() {
            rayon::join(
                || run(qkv_a, ctx_a, &lens[..split], scr_a),
                || run(qkv_b, ctx_b, &lens[split..], scr_b),
            );
        } else {
            run(qkv_a, ctx_a, lens, scr_a);
        }
        // Attention output + residual + norm.
        s.q.quantize(&s.ctx, m, h, l.attn_out.isa());
        s.attn.resize(m * h, 0.0);
        self.matmul(&s.q, &l.attn_out, &mut s.attn, Epilogue::None);
        ops::add_layer_norm(
            self.isa,
            &mut s.attn,
            Some(&s.x),
            h,
            &l.ln1.0,
            &l.ln1.1,
            self.eps,
        );
        // Feed-forward.
        s.q.quantize(&s.attn, m, h, l.ffn_in.isa());
        s.inter.resize(m * self.intermediate, 0.0);
        self.matmul(&s.q, &l.ffn_in, &mut s.inter, Epilogue::Gelu);
        s.q.quantize(&s.inter, m, self.intermediate, l.ffn_out.isa());
        self.matmul(&s.q, &l.ffn_out, &mut s.x, Epilogue::None);
        ops::add_layer_norm(
            self.isa,
            &mut s.x,
            Some(&s.attn),
            h,
            &l.ln2.0,
            &l.ln2.1,
            self.eps,
        );
    }

    /// One product, split across two threads by columns when worth it.
    fn matmul(&self, x: &QRows, w: &QMatrix, out: &mut [f32], epi: Epilogue) {
        let m = out.len() / w.n;
        let half = gemm::split_cols(w);
        if self.pool.current_num_threads() < 2 || m * w.k * w.n < SPLIT_MACS || half == 0 {
            gemm::matmul_cols(x, w, out, 0, w.n, epi);
            return;
        }
        gemm::check_product(x, w, out.len(), 0, half);
        gemm::check_product(x, w, out.len(), half, w.n);
        let ptr = SharedOut(out.as_mut_ptr());
        rayon::join(
            // SAFETY: both ranges passed `check_product` for `out`, which
            // stays borrowed (and unused) until the join returns, and the two
            // sides write disjoint column ranges of each row.
            || unsafe { gemm::matmul_cols_raw(x, w, ptr.get(), 0, half, epi) },
            // SAFETY: as above.
            || unsafe { gemm::matmul_cols_raw(x, w, ptr.get(), half, w.n, epi) },
        );
    }
}

/// The output matrix shared by the two column halves of one product. Only a
/// raw pointer crosses the threads: no two `&mut` to the buffer ever exist.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: used only inside `rayon::join`, where each side writes a disjoint
// set of columns through the pointer; the borrow of the buffer outlives the join.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// A method (not field access), so closures capture the whole `Send` wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}
