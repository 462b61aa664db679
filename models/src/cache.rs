//! A persistent cache of sentence features, keyed by the sha256 of the text,
//! one file per (base model, spec). Retraining after editing a few
//! examples only encodes the new ones.
//!
//! File layout: an 8-byte magic, the feature width (u32 LE), then records of
//! `[32-byte text hash][width x f32 LE]`. Appends happen under an exclusive
//! file lock in one write per batch; a torn final record (crash mid-write) is
//! ignored on load.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::base::BaseModelHashes;
use crate::encoder::FeatureSpec;
use crate::error::{ModelError, Result};

const MAGIC: &[u8; 8] = b"BBFEAT01";

pub type TextKey = [u8; 32];

pub fn text_key(text: &str) -> TextKey {
    Sha256::digest(text.as_bytes()).into()
}

#[derive(Debug)]
pub struct FeatureCache {
    path: PathBuf,
    dim: usize,
    entries: HashMap<TextKey, Vec<f32>>,
}

impl FeatureCache {
    /// Opens (or starts) the cache for a base model and spec under `dir`.
    pub fn open(
        dir: &Path,
        base: &BaseModelHashes,
        spec: &FeatureSpec,
        dim: usize,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(ModelError::io(dir))?;
        let layers: Vec<String> = spec.layers.iter().map(ToString::to_string).collect();
        let path = dir.join(format!(
            "features-{}-{}-l{}.bin",
            base.id(),
            spec.precision.as_str(),
            layers.join("_")
        ));
        let mut cache = Self {
            path,
            dim,
            entries: HashMap::new(),
        };
        cache.reload()?;
        Ok(cache)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &TextKey) -> Option<&[f32]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    fn reload(&mut self) -> Result<()> {
        let Ok(mut file) = File::open(&self.path) else {
            return Ok(());
        };
        file.lock_shared().map_err(ModelError::io(&self.path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(ModelError::io(&self.path))?;
        let _ = file.unlock();
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            // Not ours or from another format: start over rather than fail training.
            return Ok(());
        }
        let dim = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        if dim != self.dim {
            return Ok(());
        }
        let record = 32 + 4 * dim;
        for rec in bytes[12..].chunks_exact(record) {
            let mut key = [0u8; 32];
            key.copy_from_slice(&rec[..32]);
            let values = rec[32..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            self.entries.insert(key, values);
        }
        Ok(())
    }

    /// Adds features and appends them to the file.
    pub fn insert_all(&mut self, items: Vec<(TextKey, Vec<f32>)>) -> Result<()> {
        let mut buf = Vec::with_capacity(items.len() * (32 + 4 * self.dim));
        let mut fresh = Vec::new();
        for (key, values) in items {
            if values.len() != self.dim || self.entries.contains_key(&key) {
                continue;
            }
            buf.extend_from_slice(&key);
            for v in &values {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            fresh.push((key, values));
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(ModelError::io(&self.path))?;
        file.lock().map_err(ModelError::io(&self.path))?;
        let mut len = file
            .seek(SeekFrom::End(0))
            .map_err(ModelError::io(&self.path))?;
        let record = 32 + 4 * self.dim as u64;
        if len >= 12 {
            let mut header = [0u8; 12];
            file.seek(SeekFrom::Start(0))
                .map_err(ModelError::io(&self.path))?;
            file.read_exact(&mut header)
                .map_err(ModelError::io(&self.path))?;
            if &header[..8] != MAGIC || header[8..] != (self.dim as u32).to_le_bytes() {
                len = 0; // another format or width: start the file over
            }
        }
        let mut out = Vec::new();
        if len < 12 {
            file.set_len(0).map_err(ModelError::io(&self.path))?;
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        } else if (len - 12) % record != 0 {
            // A torn record from an interrupted writer: cut it off first.
            file.set_len(len - (len - 12) % record)
                .map_err(ModelError::io(&self.path))?;
        }
        out.extend_from_slice(&buf);
        file.write_all(&out).map_err(ModelError::io(&self.path))?;
        let _ = file.unlock();
        self.entries.extend(fresh);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::Precision;

    fn hashes() -> BaseModelHashes {
        BaseModelHashes {
            config: "c".into(),
            tokenizer: "t".into(),
            weights: "w".into(),
        }
    }

    #[test]
    fn features_survive_reopening_and_torn_tails() {
        let dir = tempfile::tempdir().unwrap();
        let spec = FeatureSpec {
            layers: vec![0, 6],
            precision: Precision::Int8,
        };
        let mut c = FeatureCache::open(dir.path(), &hashes(), &spec, 3).unwrap();
        assert!(c.is_empty());
        c.insert_all(vec![
            (text_key("a"), vec![1.0, 2.0, 3.0]),
            (text_key("b"), vec![4.0, 5.0, 6.0]),
        ])
        .unwrap();
        // A torn record at the end, as after a crash mid-append.
        let mut f = OpenOptions::new().append(true).open(c.path()).unwrap();
        f.write_all(&[7u8; 20]).unwrap();
        drop(f);
        let mut c2 = FeatureCache::open(dir.path(), &hashes(), &spec, 3).unwrap();
        assert_eq!(c2.len(), 2);
        assert_eq!(c2.get(&text_key("b")), Some(&[4.0, 5.0, 6.0][..]));
        c2.insert_all(vec![(text_key("c"), vec![0.5; 3])]).unwrap();
        let c3 = FeatureCache::open(dir.path(), &hashes(), &spec, 3).unwrap();
        assert_eq!(c3.len(), 3);
        assert_eq!(c3.get(&text_key("c")), Some(&[0.5; 3][..]));
    }

    #[test]
    fn other_models_and_widths_do_not_share_entries() {
        let dir = tempfile::tempdir().unwrap();
        let spec = FeatureSpec {
            layers: vec![6],
            precision: Precision::Int8,
        };
        let mut c = FeatureCache::open(dir.path(), &hashes(), &spec, 2).unwrap();
        c.insert_all(vec![(text_key("a"), vec![1.0, 2.0])]).unwrap();
        let other = BaseModelHashes {
            weights: "other".into(),
            ..hashes()
        };
        assert!(
            FeatureCache::open(dir.path(), &other, &spec, 2)
                .unwrap()
                .is_empty()
        );
        let f32_spec = FeatureSpec {
            layers: vec![6],
            precision: Precision::F32,
        };
        assert!(
            FeatureCache::open(dir.path(), &hashes(), &f32_spec, 2)
                .unwrap()
                .is_empty()
        );
        assert!(
            FeatureCache::open(
                dir.path(),
                &hashes(),
                &FeatureSpec {
                    layers: vec![0, 6],
                    precision: Precision::Int8
                },
                2
            )
            .unwrap()
            .is_empty()
        );
    }
}
