//! Loading the NLU for the commands: the base encoder (fetched on demand
//! for commands that may download), trained models (checked against the
//! base model they were trained on), and the default model kept in step
//! with the intent catalogue.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bankbot_models::artifact::{Artifact, FineTuneRecord};
use bankbot_models::base::BaseModelDir;
use bankbot_models::cache::FeatureCache;
use bankbot_models::encoder::{Encoder, FeatureSpec, Precision};
use bankbot_models::finetune::{self, FineTuneConfig, TunedWeights};
use bankbot_models::train::{self, LabelledText, TrainConfig, TrainEvent};
use bankbot_models::{ModelError, candle_device};
use indicatif::{ProgressBar, ProgressStyle};

use crate::catalogue::{self, Catalogue};
use crate::fetch;
use crate::paths::Paths;

/// Makes sure the base model directory exists; fetches the pinned model into
/// its default location when allowed.
pub fn ensure_base_model(paths: &Paths, allow_fetch: bool) -> anyhow::Result<PathBuf> {
    let dir = &paths.base_model;
    if dir.join("model.safetensors").is_file() {
        return Ok(dir.clone());
    }
    if !paths.base_model_is_default {
        bail!(
            "base model directory {} has no model.safetensors: point --base-model (or BANKBOT_BASE_MODEL) \
             at a directory with config.json, tokenizer.json and model.safetensors",
            dir.display()
        );
    }
    if !allow_fetch {
        bail!(
            "the base model is not installed at {}: run `bankbot model fetch` first",
            dir.display()
        );
    }
    eprintln!(
        "base model not found: fetching it once (later runs use {})",
        dir.display()
    );
    fetch::fetch(dir, false, |m| eprintln!("{m}"))?;
    Ok(dir.clone())
}

/// The precision this build trains and serves at unless told otherwise: the
/// int8 encoder on the CPU, candle's f32 encoder when a GPU is in use.
pub fn default_precision() -> Precision {
    if candle_device().is_cpu() {
        Precision::Int8
    } else {
        Precision::F32
    }
}

pub fn load_encoder(
    paths: &Paths,
    allow_fetch: bool,
    precision: Precision,
) -> anyhow::Result<Encoder> {
    let dir = ensure_base_model(paths, allow_fetch)?;
    Encoder::load(&dir, &candle_device(), precision)
        .with_context(|| format!("loading the base model from {}", dir.display()))
}

/// Loads a trained model, then the encoder at the precision it was trained
/// with, and checks the model belongs to that base model.
pub fn load_model_and_encoder(
    paths: &Paths,
    dir: &Path,
    allow_fetch: bool,
) -> anyhow::Result<(Encoder, Artifact)> {
    let artifact = read_trained(dir)?;
    let base = ensure_base_model(paths, allow_fetch)?;
    let encoder = Encoder::load_tuned(
        &base,
        &candle_device(),
        artifact.card.features.precision,
        artifact.tuned.as_ref(),
    )
    .with_context(|| format!("loading the base model from {}", base.display()))?;
    artifact.check_encoder(dir, &encoder)?;
    Ok((encoder, artifact))
}

fn read_trained(dir: &Path) -> anyhow::Result<Artifact> {
    let artifact = match Artifact::load(dir) {
        Ok(a) => a,
        Err(ModelError::MissingFile { path }) if path == dir => bail!(
            "no trained model at {}: train one with `bankbot train --intents intents --out {}`",
            dir.display(),
            dir.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("loading the trained model {}", dir.display()));
        }
    };
    Ok(artifact)
}

/// A progress bar on an interactive terminal, nothing otherwise.
pub fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg:<18} [{bar:30}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

/// Feeds training events into a progress bar.
pub fn on_train_event(pb: &ProgressBar) -> impl FnMut(TrainEvent) + '_ {
    move |e| match e {
        TrainEvent::Embedding { done, total } => {
            pb.set_message("encoding");
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        }
        TrainEvent::Fitting {
            step,
            epoch,
            epochs,
        } => {
            pb.set_message(format!("fitting {step}"));
            pb.set_length(epochs as u64);
            pb.set_position(epoch as u64);
        }
    }
}

/// Trains on a catalogue and writes the model directory.
pub fn train_catalogue(
    cat: &Catalogue,
    encoder: &Encoder,
    paths: &Paths,
    out: &Path,
    calibration: Option<&[LabelledText]>,
    cfg: &TrainConfig,
    tuned: Option<(FineTuneConfig, TunedWeights)>,
) -> anyhow::Result<Artifact> {
    let data = labelled(cat);
    let spec = cfg
        .features
        .clone()
        .unwrap_or_else(|| train::default_features(encoder.num_layers(), encoder.precision()));
    // The cache is keyed by the base model, so a fine-tuned encoder does not use it.
    let mut cache = match tuned {
        Some(_) => None,
        None => feature_cache(paths, encoder, &spec),
    };
    let pb = progress_bar();
    let mut artifact = train::train(
        encoder,
        &data,
        calibration,
        cfg,
        cache.as_mut(),
        on_train_event(&pb),
    )?;
    pb.finish_and_clear();
    if let Some((config, weights)) = tuned {
        let layers = if config.layers == 0 {
            "all".to_owned()
        } else {
            format!("top {}", config.layers)
        };
        artifact.card.trainer = format!("fine-tuned encoder ({layers} layers)+softmax");
        artifact.card.fine_tune = Some(FineTuneRecord {
            config,
            weights_sha256: String::new(),
            tensors: 0,
        });
        artifact.tuned = Some(weights);
    }
    artifact
        .save(out)
        .with_context(|| format!("writing the model to {}", out.display()))?;
    Ok(artifact)
}

/// The base encoder's feature cache for `spec`. The cache only saves time: if
/// it cannot be opened, the caller encodes everything (with a warning).
pub fn feature_cache(paths: &Paths, encoder: &Encoder, spec: &FeatureSpec) -> Option<FeatureCache> {
    let dim = spec.dim(encoder.hidden_size());
    FeatureCache::open(&paths.features_dir(), encoder.hashes(), spec, dim)
        .map_err(|e| eprintln!("warning: feature cache unavailable ({e}); encoding everything"))
        .ok()
}

fn labelled(cat: &Catalogue) -> Vec<LabelledText> {
    cat.labelled()
        .into_iter()
        .map(|(t, l)| LabelledText::new(t, l))
        .collect()
}

/// Fine-tunes the top encoder layers on the catalogue (on the GPU when the
/// build has one) and returns the tuned encoder at `precision` with its tensors.
pub fn fine_tune_encoder(
    paths: &Paths,
    cat: &Catalogue,
    cfg: &FineTuneConfig,
    spec: Option<&FeatureSpec>,
    precision: Precision,
) -> anyhow::Result<(Encoder, TunedWeights)> {
    let dir = ensure_base_model(paths, true)?;
    let base = BaseModelDir::open(&dir)?;
    let spec = spec
        .cloned()
        .unwrap_or_else(|| train::default_features(base.config.num_hidden_layers, precision));
    eprintln!(
        "fine-tuning {} encoder layer(s) for {} epoch(s) on {} ...",
        if cfg.layers == 0 {
            "all".to_owned()
        } else {
            cfg.layers.to_string()
        },
        cfg.epochs,
        if candle_device().is_cpu() {
            "the CPU (slow; a CUDA build is much faster)"
        } else {
            "the GPU"
        }
    );
    let pb = progress_bar();
    let weights = finetune::fine_tune(
        &base,
        &labelled(cat),
        &spec.layers,
        cfg,
        &candle_device(),
        on_train_event(&pb),
    )?;
    pb.finish_and_clear();
    let losses: Vec<String> = weights
        .epoch_losses
        .iter()
        .map(|l| format!("{l:.4}"))
        .collect();
    eprintln!("fine-tuning loss per epoch: {}", losses.join(", "));
    let encoder = Encoder::load_tuned(&dir, &candle_device(), precision, Some(&weights))?;
    Ok((encoder, weights))
}

/// Loads the default model and its encoder, retraining the model first when
/// it is missing, unreadable, trained on other data than `intents/` holds
/// now, or on another base model. A current model keeps the precision and
/// fine-tuning it was trained with.
pub fn ensure_default_model(
    paths: &Paths,
    intents: &Path,
    model_dir: &Path,
) -> anyhow::Result<(Encoder, Artifact)> {
    let cat = match catalogue::load_dir(intents) {
        Ok((cat, _warnings)) => cat,
        Err(diags) => bail!(
            "{diags}\nthe intent catalogue in {} has errors; fix them or run `bankbot check`",
            intents.display()
        ),
    };
    let reason = match Artifact::load(model_dir) {
        Ok(a) if a.card.training_data.hash != cat.data_hash() => {
            "the intents changed since it was trained"
        }
        Ok(_) => match load_model_and_encoder(paths, model_dir, true) {
            Ok(loaded) => return Ok(loaded),
            // Only another base model is a reason to retrain; anything else
            // (no network for the fetch, a tampered file, IO) is reported.
            Err(e)
                if matches!(
                    e.downcast_ref::<ModelError>(),
                    Some(ModelError::BaseModelMismatch { .. })
                ) =>
            {
                "it was trained on another base model"
            }
            Err(e) => return Err(e),
        },
        Err(ModelError::MissingFile { .. }) => "there is none yet",
        Err(_) => "the stored one is unreadable",
    };
    eprintln!(
        "training the model from {} because {reason} ...",
        intents.display()
    );
    let encoder = load_encoder(paths, true, default_precision())?;
    let artifact = train_catalogue(
        &cat,
        &encoder,
        paths,
        model_dir,
        None,
        &TrainConfig::default(),
        None,
    )?;
    eprintln!(
        "trained in {:.1}s: {} intents, {} examples -> {}",
        artifact.card.training_seconds,
        artifact.card.training_data.intents,
        artifact.card.training_data.examples,
        model_dir.display()
    );
    Ok((encoder, artifact))
}
