//! Where things live on disk. One resolved set of paths is built at start-up
//! (defaults < environment < flags, clap handles the last two) and passed
//! down; nothing else reads the environment.

use std::path::{Path, PathBuf};

use bankbot_models::base::pinned;

/// Default directory for trained models, relative to the working directory.
pub const DEFAULT_MODEL_DIR: &str = ".bankbot/model";
/// Default intent catalogue, relative to the working directory.
pub const DEFAULT_INTENTS_DIR: &str = "intents";

#[derive(Debug, Clone)]
pub struct Paths {
    /// Root of downloaded and derived files (`BANKBOT_CACHE_DIR`, else the
    /// user's cache directory + `bankbot`).
    pub cache_dir: PathBuf,
    /// The base encoder directory.
    pub base_model: PathBuf,
    /// True when `base_model` is the default location of the pinned model,
    /// which `bankbot model fetch` may fill; a directory the user named is
    /// never written to.
    pub base_model_is_default: bool,
}

impl Paths {
    pub fn resolve(cache_dir: Option<PathBuf>, base_model: Option<PathBuf>) -> Self {
        let cache_dir = cache_dir.unwrap_or_else(default_cache_dir);
        let (base_model, base_model_is_default) = match base_model {
            Some(dir) => (dir, false),
            None => (default_base_model_dir(&cache_dir), true),
        };
        Self {
            cache_dir,
            base_model,
            base_model_is_default,
        }
    }

    /// Where the feature cache keeps its files.
    pub fn features_dir(&self) -> PathBuf {
        self.cache_dir.join("features")
    }
}

fn default_cache_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("bankbot")
}

/// `<cache>/base-models/all-MiniLM-L6-v2-<revision prefix>`.
pub fn default_base_model_dir(cache_dir: &Path) -> PathBuf {
    let short = pinned::NAME.rsplit('/').next().unwrap_or(pinned::NAME);
    cache_dir
        .join("base-models")
        .join(format!("{short}-{}", &pinned::REVISION[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_defaults() {
        let p = Paths::resolve(Some("/c".into()), None);
        assert_eq!(
            p.base_model,
            PathBuf::from("/c/base-models/all-MiniLM-L6-v2-1110a243")
        );
        assert!(p.base_model_is_default);
        let p = Paths::resolve(Some("/c".into()), Some("/m".into()));
        assert_eq!(p.base_model, PathBuf::from("/m"));
        assert!(!p.base_model_is_default);
        assert_eq!(p.features_dir(), PathBuf::from("/c/features"));
    }
}
