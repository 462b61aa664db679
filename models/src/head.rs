//! The intent head: a softmax classifier over sentence features, trained in
//! candle with AdamW on seeded mini-batches. `hidden = 0` is multinomial
//! logistic regression; `hidden > 0` adds one GELU layer.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::rng::SplitMix64;

/// Hyper-parameters of one head training run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadParams {
    /// Width of the hidden layer; 0 for a linear head.
    pub hidden: usize,
    /// L2 penalty on the weights, `l2 / 2 * ||W||^2` added to the mean loss.
    pub l2: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
}

impl Default for HeadParams {
    fn default() -> Self {
        Self {
            hidden: 0,
            l2: 1e-4,
            epochs: 40,
            batch_size: 64,
            learning_rate: 0.02,
        }
    }
}

/// A trained head: `logits = layer_n(... gelu(layer_0(x)))`.
#[derive(Debug, Clone)]
pub struct Head {
    /// `(weight [in, out], bias [out])` per layer.
    layers: Vec<(Tensor, Tensor)>,
}

impl Head {
    pub fn input_dim(&self) -> usize {
        self.layers[0].0.dims()[0]
    }

    pub fn classes(&self) -> usize {
        self.layers[self.layers.len() - 1].0.dims()[1]
    }

    /// `(weight [in, out], bias [out])` per layer.
    pub fn layers(&self) -> &[(Tensor, Tensor)] {
        &self.layers
    }

    /// Raw (uncalibrated) logits `[batch, classes]` for features `[batch, dim]`.
    pub fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        forward(&self.layers, x)
    }

    /// Named tensors for safetensors: `layer{i}.weight`, `layer{i}.bias`.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            out.insert(format!("layer{i}.weight"), w.clone());
            out.insert(format!("layer{i}.bias"), b.clone());
        }
        out
    }

    /// Rebuilds a head from [`Head::tensors`], checking that shapes chain.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>) -> Result<Self> {
        let mut layers = Vec::new();
        while let (Some(w), Some(b)) = (
            tensors.get(&format!("layer{}.weight", layers.len())),
            tensors.get(&format!("layer{}.bias", layers.len())),
        ) {
            let (_, out) = w.dims2()?;
            if b.dims1()? != out {
                return Err(ModelError::TrainingData(format!(
                    "head layer {}: bias does not match weight",
                    layers.len()
                )));
            }
            let prev_out = layers.last().map(|(w, _): &(Tensor, Tensor)| w.dims()[1]);
            if let Some(prev) = prev_out.filter(|&p| p != w.dims()[0]) {
                return Err(ModelError::TrainingData(format!(
                    "head layer {}: input {} does not match previous output {prev}",
                    layers.len(),
                    w.dims()[0]
                )));
            }
            layers.push((w.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?));
        }
        if layers.is_empty() {
            return Err(ModelError::TrainingData("head has no layers".into()));
        }
        Ok(Self { layers })
    }
}

fn forward(layers: &[(Tensor, Tensor)], x: &Tensor) -> candle_core::Result<Tensor> {
    let mut h = x.clone();
    for (i, (w, b)) in layers.iter().enumerate() {
        h = h.matmul(w)?.broadcast_add(b)?;
        if i + 1 < layers.len() {
            h = h.gelu_erf()?;
        }
    }
    Ok(h)
}

/// Trains a head on features `x` (`[n, dim]`, f32) and labels `y` (< `classes`).
/// `on_epoch` is called after each epoch with the epoch number (1-based).
pub fn train(
    x: &Tensor,
    y: &[u32],
    classes: usize,
    params: &HeadParams,
    seed: u64,
    mut on_epoch: impl FnMut(usize),
) -> Result<Head> {
    let (n, dim) = x.dims2()?;
    if n != y.len() || n == 0 {
        return Err(ModelError::TrainingData(format!(
            "{n} feature rows for {} labels",
            y.len()
        )));
    }
    if let Some(bad) = y.iter().find(|&&c| c as usize >= classes) {
        return Err(ModelError::TrainingData(format!(
            "label {bad} out of range for {classes} classes"
        )));
    }
    let device = x.device();
    let mut rng = SplitMix64::new(seed);
    let mut vars = Vec::new();
    let mut layers: Vec<(Var, Var)> = Vec::new();
    let dims: Vec<usize> = if params.hidden > 0 {
        vec![dim, params.hidden, classes]
    } else {
        vec![dim, classes]
    };
    for pair in dims.windows(2) {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        // A linear head starts at zero (the problem is convex); a hidden layer
        // needs random weights to break symmetry (Glorot uniform).
        let w = if params.hidden == 0 {
            Tensor::zeros((fan_in, fan_out), DType::F32, device)?
        } else {
            let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
            let vals: Vec<f32> = (0..fan_in * fan_out)
                .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
                .collect();
            Tensor::from_vec(vals, (fan_in, fan_out), device)?
        };
        let w = Var::from_tensor(&w)?;
        let b = Var::from_tensor(&Tensor::zeros(fan_out, DType::F32, device)?)?;
        vars.push(w.clone());
        vars.push(b.clone());
        layers.push((w, b));
    }
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: params.learning_rate,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    // Clones of a Var's tensor share its id, so gradients reach the Var.
    let tracked: Vec<(Tensor, Tensor)> = layers
        .iter()
        .map(|(w, b)| (w.as_tensor().clone(), b.as_tensor().clone()))
        .collect();
    let labels = Tensor::from_slice(y, n, device)?;
    let batch = params.batch_size.clamp(1, n);
    let steps_per_epoch = n.div_ceil(batch);
    let total = (steps_per_epoch * params.epochs).max(1);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut step = 0usize;
    for epoch in 1..=params.epochs {
        rng.shuffle(&mut order);
        for chunk in order.chunks(batch) {
            // Cosine decay to 5 % of the initial rate over the whole run.
            let progress = step as f64 / total as f64;
            let lr = params.learning_rate
                * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            opt.set_learning_rate(lr);
            let idx = Tensor::from_slice(chunk, chunk.len(), device)?;
            let xb = x.index_select(&idx, 0)?;
            let yb = labels.index_select(&idx, 0)?;
            let logits = forward(&tracked, &xb)?;
            let mut loss = candle_nn::loss::cross_entropy(&logits, &yb)?;
            if params.l2 > 0.0 {
                for (w, _) in &tracked {
                    loss = (loss + (w.sqr()?.sum_all()? * (params.l2 / 2.0))?)?;
                }
            }
            opt.backward_step(&loss)?;
            step += 1;
        }
        on_epoch(epoch);
    }
    Ok(Head {
        layers: layers
            .into_iter()
            .map(|(w, b)| (w.as_tensor().detach(), b.as_tensor().detach()))
            .collect(),
    })
}

/// Row-wise softmax of `logits / temperature` as plain vectors.
pub fn softmax_rows(logits: &Tensor, temperature: f64) -> candle_core::Result<Vec<Vec<f32>>> {
    let scaled = (logits / temperature)?;
    candle_nn::ops::softmax(&scaled, D::Minus1)?.to_vec2::<f32>()
}

/// Features as one `[n, dim]` tensor.
pub fn stack(features: &[Vec<f32>], device: &Device) -> Result<Tensor> {
    let dim = features.first().map_or(0, Vec::len);
    if features.iter().any(|f| f.len() != dim) {
        return Err(ModelError::TrainingData(
            "feature rows have different lengths".into(),
        ));
    }
    let flat: Vec<f32> = features.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (features.len(), dim), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two well-separated clusters per class in 4-d: a linear head must fit them.
    fn toy() -> (Tensor, Vec<u32>) {
        let mut rows = Vec::new();
        let mut y = Vec::new();
        let mut r = SplitMix64::new(5);
        for c in 0..3u32 {
            for _ in 0..30 {
                let mut v = vec![0.0f32; 4];
                v[c as usize] = 1.0;
                for x in &mut v {
                    *x += (r.next_f32() - 0.5) * 0.2;
                }
                rows.push(v);
                y.push(c);
            }
        }
        (stack(&rows, &Device::Cpu).unwrap(), y)
    }

    fn accuracy(head: &Head, x: &Tensor, y: &[u32]) -> f32 {
        let pred = head
            .logits(x)
            .unwrap()
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        pred.iter().zip(y).filter(|(a, b)| a == b).count() as f32 / y.len() as f32
    }

    #[test]
    fn linear_and_hidden_heads_learn_separable_data() {
        let (x, y) = toy();
        for hidden in [0, 16] {
            let p = HeadParams {
                hidden,
                epochs: 30,
                batch_size: 16,
                ..Default::default()
            };
            let head = train(&x, &y, 3, &p, 1, |_| {}).unwrap();
            assert_eq!(accuracy(&head, &x, &y), 1.0, "hidden={hidden}");
        }
    }

    #[test]
    fn training_is_deterministic_for_a_seed() {
        let (x, y) = toy();
        let p = HeadParams {
            hidden: 8,
            epochs: 3,
            ..Default::default()
        };
        let a = train(&x, &y, 3, &p, 9, |_| {})
            .unwrap()
            .logits(&x)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let b = train(&x, &y, 3, &p, 9, |_| {})
            .unwrap()
            .logits(&x)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn tensors_round_trip() {
        let (x, y) = toy();
        let head = train(
            &x,
            &y,
            3,
            &HeadParams {
                hidden: 4,
                epochs: 2,
                ..Default::default()
            },
            1,
            |_| {},
        )
        .unwrap();
        let back = Head::from_tensors(&head.tensors()).unwrap();
        assert_eq!(
            back.logits(&x).unwrap().to_vec2::<f32>().unwrap(),
            head.logits(&x).unwrap().to_vec2::<f32>().unwrap()
        );
        assert_eq!((back.input_dim(), back.classes()), (4, 3));
    }

    #[test]
    fn bad_labels_are_rejected() {
        let (x, mut y) = toy();
        y[0] = 7;
        assert!(train(&x, &y, 3, &HeadParams::default(), 1, |_| {}).is_err());
    }
}
