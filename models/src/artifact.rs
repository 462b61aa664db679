//! The trained-model directory:
//!
//! | file | contents |
//! |---|---|
//! | `head.safetensors` | head weights and the in-scope example memory (f16) |
//! | `labels.json` | the head's classes in order |
//! | `calibration.json` | temperature and out-of-scope detector calibration |
//! | `model_card.json` | format version, base-model and training-data hashes, spec, hyper-parameters, validation metrics |
//!
//! A directory is written beside its destination and swapped in, so readers
//! never see a half-written model.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::base::{BaseModelHashes, read_limited, sha256_file};
use crate::classifier::{ExampleMemory, IntentModel, OosCalibration};
use crate::encoder::{Encoder, FeatureSpec};
use crate::error::{ModelError, Result};
use crate::finetune::{FineTuneConfig, TunedWeights};
use crate::head::{Head, HeadParams};

pub const FORMAT: &str = "bankbot-intent-model";
pub const FORMAT_VERSION: u32 = 1;
const HEAD_FILE: &str = "head.safetensors";
const LABELS_FILE: &str = "labels.json";
const CALIBRATION_FILE: &str = "calibration.json";
const CARD_FILE: &str = "model_card.json";
const TUNED_FILE: &str = "encoder.safetensors";
const MEMORY_TENSOR: &str = "memory";
const MAX_JSON: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub temperature: f64,
    pub oos: OosCalibration,
    /// Weight of out-of-scope recall against in-scope accuracy used to choose the threshold.
    pub oos_weight: f64,
    /// Where the calibration rows came from (`internal-validation` or a file).
    pub source: String,
}

/// Summary metrics of a validation run, as recorded in the model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationSummary {
    pub rows: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub ece: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_scope_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oos_recall: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oos_precision: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseModelRef {
    /// `sentence-transformers/all-MiniLM-L6-v2` for the pinned default, else `custom`.
    pub name: String,
    pub hashes: BaseModelHashes,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingDataRef {
    /// sha256 of the sorted (label, text) pairs.
    pub hash: String,
    pub examples: usize,
    pub intents: usize,
    pub out_of_scope_examples: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub format_version: u32,
    pub created_by: String,
    pub trainer: String,
    pub base_model: BaseModelRef,
    pub training_data: TrainingDataRef,
    pub features: FeatureSpec,
    pub head: HeadParams,
    pub seed: u64,
    pub validation: ValidationSummary,
    pub training_seconds: f64,
    /// Set when encoder layers were fine-tuned; their tensors are in `encoder.safetensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tune: Option<FineTuneRecord>,
    /// sha256 of every other file of the directory, checked on load, so a
    /// directory assembled from two saves is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// What fine-tuning changed, as recorded in the card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTuneRecord {
    pub config: FineTuneConfig,
    /// sha256 of `encoder.safetensors`.
    pub weights_sha256: String,
    pub tensors: usize,
}

/// A trained model as stored: the model and its card.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub model: IntentModel,
    pub calibration: Calibration,
    pub card: ModelCard,
    /// Fine-tuned encoder tensors, applied on top of the base model.
    pub tuned: Option<TunedWeights>,
}

impl Artifact {
    /// Writes the model directory, replacing any previous one as a whole.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(ModelError::io(parent))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        // Unique per save, also between threads of one process.
        static SAVES: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "{}-{}",
            std::process::id(),
            SAVES.fetch_add(1, Ordering::Relaxed)
        );
        let staging = parent.join(format!(".{name}.writing-{unique}"));
        let old = parent.join(format!(".{name}.old-{unique}"));
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_dir_all(&old);
        std::fs::create_dir_all(&staging).map_err(ModelError::io(&staging))?;
        if let Err(e) = self
            .write_files(&staging)
            .and_then(|()| sync_dir_files(&staging))
        {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let had_old = dir.exists();
        if had_old && let Err(e) = std::fs::rename(dir, &old) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(ModelError::io(dir)(e));
        }
        if let Err(e) = std::fs::rename(&staging, dir) {
            // Put the previous model back rather than leave none.
            if had_old {
                let _ = std::fs::rename(&old, dir);
            }
            let _ = std::fs::remove_dir_all(&staging);
            return Err(ModelError::io(dir)(e));
        }
        if let Ok(p) = std::fs::File::open(parent) {
            let _ = p.sync_all();
        }
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    fn write_files(&self, dir: &Path) -> Result<()> {
        let mut tensors = self.model.head_tensors()?;
        let m = &self.model.memory;
        let memory = Tensor::from_slice(m.data(), (m.rows(), m.dim()), &Device::Cpu)?;
        tensors.insert(MEMORY_TENSOR.to_owned(), memory.to_dtype(DType::F16)?);
        let head_path = dir.join(HEAD_FILE);
        candle_core::safetensors::save(&tensors, &head_path)?;
        write_json(&dir.join(LABELS_FILE), &self.model.labels)?;
        write_json(&dir.join(CALIBRATION_FILE), &self.calibration)?;
        let mut card = self.card.clone();
        match (&self.tuned, card.fine_tune.as_mut()) {
            (Some(tuned), Some(record)) => {
                let path = dir.join(TUNED_FILE);
                tuned.save(&path)?;
                record.weights_sha256 = sha256_file(&path)?;
                record.tensors = tuned.tensors.len();
            }
            (None, None) => {}
            _ => {
                return Err(ModelError::TrainingData(
                    "tuned encoder tensors and the card's fine-tune record go together".into(),
                ));
            }
        }
        card.files.clear();
        for f in [HEAD_FILE, LABELS_FILE, CALIBRATION_FILE, TUNED_FILE] {
            let path = dir.join(f);
            if path.is_file() {
                card.files.insert(f.to_owned(), sha256_file(&path)?);
            }
        }
        write_json(&dir.join(CARD_FILE), &card)?;
        Ok(())
    }

    /// Reads a model directory, checking that its parts fit together.
    /// Heads are small: they always load on the CPU.
    pub fn load(dir: &Path) -> Result<Self> {
        let device = &Device::Cpu;
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
            });
        }
        let card: ModelCard = read_json(&dir.join(CARD_FILE))?;
        let card_path = dir.join(CARD_FILE);
        if card.format != FORMAT {
            return Err(ModelError::invalid(
                &card_path,
                format!("not a bankbot intent model (format `{}`)", card.format),
            ));
        }
        if card.format_version != FORMAT_VERSION {
            return Err(ModelError::invalid(
                &card_path,
                format!(
                    "model format version {} is not supported by this build (expects {FORMAT_VERSION}); retrain with `bankbot train`",
                    card.format_version
                ),
            ));
        }
        for (file, expected) in &card.files {
            if !matches!(
                file.as_str(),
                HEAD_FILE | LABELS_FILE | CALIBRATION_FILE | TUNED_FILE
            ) {
                return Err(ModelError::invalid(
                    &card_path,
                    format!("lists an unknown file `{file}`"),
                ));
            }
            let path = dir.join(file);
            if !path.is_file() {
                return Err(ModelError::MissingFile { path });
            }
            let actual = sha256_file(&path)?;
            if &actual != expected {
                return Err(ModelError::HashMismatch {
                    path,
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let labels: Vec<String> = read_json(&dir.join(LABELS_FILE))?;
        let calibration: Calibration = read_json(&dir.join(CALIBRATION_FILE))?;
        let head_path = dir.join(HEAD_FILE);
        if !head_path.is_file() {
            return Err(ModelError::MissingFile { path: head_path });
        }
        let mut tensors: HashMap<String, Tensor> =
            candle_core::safetensors::load(&head_path, device).map_err(|e| {
                ModelError::invalid(
                    &head_path,
                    format!("truncated or corrupt safetensors file ({e})"),
                )
            })?;
        let memory = tensors
            .remove(MEMORY_TENSOR)
            .ok_or_else(|| ModelError::invalid(&head_path, "no `memory` tensor"))?
            .to_dtype(DType::F32)?;
        let head = Head::from_tensors(&tensors)
            .map_err(|e| ModelError::invalid(&head_path, e.to_string()))?;
        let bad = |reason: String| ModelError::invalid(dir, reason);
        if head.classes() != labels.len() {
            return Err(bad(format!(
                "head has {} classes but labels.json lists {}",
                head.classes(),
                labels.len()
            )));
        }
        let dim = memory.dims2()?.1;
        if dim != head.input_dim() {
            return Err(bad(format!(
                "memory width {dim} does not match head input {}",
                head.input_dim()
            )));
        }
        let memory = ExampleMemory::new(memory.flatten_all()?.to_vec1::<f32>()?, dim);
        let tuned = match &card.fine_tune {
            None => None,
            Some(record) => {
                let path = dir.join(TUNED_FILE);
                if !path.is_file() {
                    return Err(ModelError::MissingFile { path });
                }
                let actual = sha256_file(&path)?;
                if actual != record.weights_sha256 {
                    return Err(ModelError::HashMismatch {
                        path,
                        expected: record.weights_sha256.clone(),
                        actual,
                    });
                }
                Some(TunedWeights::load(&path)?)
            }
        };
        let model = IntentModel {
            labels,
            layers: IntentModel::dense_layers(&head)?,
            temperature: calibration.temperature,
            features: card.features.clone(),
            memory,
            oos: calibration.oos,
            base: card.base_model.hashes.clone(),
        };
        model.validate().map_err(bad)?;
        Ok(Self {
            model,
            calibration,
            card,
            tuned,
        })
    }

    /// Errors unless `encoder` is the base model this artifact was trained
    /// on, at the same precision, producing the head's features.
    pub fn check_encoder(&self, dir: &Path, encoder: &Encoder) -> Result<()> {
        let actual = encoder.hashes();
        if &self.card.base_model.hashes != actual {
            return Err(ModelError::BaseModelMismatch {
                path: dir.to_path_buf(),
                expected_base: format!(
                    "{} ({})",
                    self.card.base_model.name,
                    self.card.base_model.hashes.id()
                ),
                actual_base: actual.id(),
            });
        }
        match self.model.encoder_mismatch(encoder) {
            Some(reason) => Err(ModelError::invalid(dir, reason)),
            None => Ok(()),
        }
    }
}

/// Flushes every file of `dir`, then the directory itself, to stable storage.
fn sync_dir_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(ModelError::io(dir))? {
        let path = entry.map_err(ModelError::io(dir))?.path();
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(ModelError::io(&path))?;
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(ModelError::io(dir))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| ModelError::invalid(path, format!("cannot serialise: {e}")))?;
    text.push('\n');
    std::fs::write(path, text).map_err(ModelError::io(path))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &PathBuf) -> Result<T> {
    if !path.is_file() {
        return Err(ModelError::MissingFile { path: path.clone() });
    }
    let bytes = read_limited(path, MAX_JSON)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ModelError::invalid(path, format!("invalid JSON: {e}")))
}
