//! bankbot's NLU library: it owns everything between a customer's text and an
//! intent decision. The tokenizer and a BERT-family encoder in candle turn text
//! into sentence features; a trained softmax head with temperature calibration
//! and an out-of-scope detector turn features into ranked intents; the
//! inference engine serves predictions from a dedicated thread with dynamic
//! batching. Training, evaluation metrics and the model artifact format live
//! here too. It does no network IO and knows nothing of gRPC, storage or the
//! bank's systems: callers pass it directories and texts.

pub mod artifact;
pub mod base;
pub mod bert;
pub mod cache;
pub mod calibrate;
pub mod classifier;
pub mod encoder;
pub mod engine;
pub mod error;
pub mod fast;
pub mod finetune;
pub mod head;
pub mod metrics;
pub mod rng;
pub mod train;

pub use bankbot_entities as entities;
pub use bankbot_entities::annotation;
pub use error::{ModelError, Result};

/// The device the encoder runs on: CUDA device 0 when built with the `cuda`
/// feature and one is present, otherwise the CPU. Heads always run on the CPU.
pub fn candle_device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = candle_core::Device::new_cuda(0) {
        return d;
    }
    candle_core::Device::Cpu
}
