//! One module per `bankbot` subcommand.

pub mod bench;
pub mod chat;
pub mod check;
pub mod config;
pub mod eval;
pub mod import;
pub mod loadgen;
pub mod model;
pub mod parse;
pub mod schema;
pub mod serve;
pub mod train;

use bankbot_models::engine::{Engine, EngineConfig};

use crate::cli::ModelSource;
use crate::nlu;
use crate::paths::Paths;

/// Loads the encoder and the chosen (or default, kept current) model and
/// starts the inference engine.
pub fn load_engine(
    paths: &Paths,
    source: &ModelSource,
    config: EngineConfig,
) -> anyhow::Result<Engine> {
    let (encoder, artifact) = match &source.model {
        Some(dir) => nlu::load_model_and_encoder(paths, dir, true)?,
        None => nlu::ensure_default_model(
            paths,
            &source.intents,
            std::path::Path::new(crate::paths::DEFAULT_MODEL_DIR),
        )?,
    };
    Ok(Engine::start(encoder, artifact.model, config)?)
}
