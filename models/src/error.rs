use std::path::PathBuf;

/// Everything the NLU library can fail with. Variants carry what a caller
/// needs to tell the user which file is wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}: not found", path.display())]
    MissingFile { path: PathBuf },

    #[error("{}: {reason}", path.display())]
    InvalidFile { path: PathBuf, reason: String },

    #[error(
        "{}: sha256 is {actual}, expected {expected}; the file is corrupt or from another model revision",
        path.display()
    )]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error(
        "trained model {} was built on base model {expected_base} but the configured base model is {actual_base}; \
         retrain with `bankbot train` or point --base-model at the original base model"
    , path.display())]
    BaseModelMismatch {
        path: PathBuf,
        expected_base: String,
        actual_base: String,
    },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("tensor computation: {0}")]
    Tensor(#[from] candle_core::Error),

    #[error("training data: {0}")]
    TrainingData(String),

    #[error("inference failed: {0}")]
    Inference(String),

    #[error("the text is empty")]
    EmptyText,

    #[error("the text is {bytes} bytes long; at most {max} are classified")]
    TextTooLong { bytes: usize, max: usize },

    #[error("the inference queue is full ({capacity} requests waiting); retry shortly")]
    Overloaded { capacity: usize },

    #[error("the inference engine has stopped")]
    EngineStopped,
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::InvalidFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
