//! The local model cache: where fetched files live and how we know they are intact.
//!
//! Hashing a model file takes about a second, too long to repeat on every run, so a verified
//! file gets a small marker (`<file>.verified`) recording its hash, size and modification
//! time. A file whose size or time no longer matches its marker is hashed again.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::ModelsError;

/// Environment variable overriding the cache location.
pub const CACHE_ENV: &str = "GLASSBOX_CACHE_DIR";

/// Root of the cache (`$GLASSBOX_CACHE_DIR`, else `$XDG_CACHE_HOME/glassbox`, else
/// `~/.cache/glassbox`).
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache named by the environment.
    pub fn from_env() -> Self {
        if let Some(dir) = std::env::var_os(CACHE_ENV) {
            return Self::new(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Self::new(PathBuf::from(dir).join("glassbox"));
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| ".".into());
        Self::new(home.join(".cache").join("glassbox"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Folder of one model's files.
    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.root.join("models").join(name)
    }
}

fn marker_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    file.with_file_name(name)
}

/// `sha256 size mtime_ns` of a file as it is now.
fn fingerprint(file: &Path, sha256: &str) -> Result<String, ModelsError> {
    let meta = fs::metadata(file).map_err(|e| ModelsError::io(file, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!(
        "{} {} {}",
        sha256.to_ascii_lowercase(),
        meta.len(),
        mtime
    ))
}

/// Records that `file` was verified to have `sha256`; public so that other cached downloads
/// (data sets) skip re-hashing the same way model files do.
pub fn write_verified_marker(file: &Path, sha256: &str) -> Result<(), ModelsError> {
    let marker = marker_path(file);
    fs::write(&marker, fingerprint(file, sha256)?).map_err(|e| ModelsError::io(&marker, e))
}

/// Whether `file` carries a marker that still matches it for `sha256`; public with
/// [`write_verified_marker`].
pub fn is_verified(file: &Path, sha256: &str) -> bool {
    match (
        fs::read_to_string(marker_path(file)),
        fingerprint(file, sha256),
    ) {
        (Ok(marker), Ok(now)) => marker.trim() == now,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.gguf");
        fs::write(&file, b"weights").unwrap();
        assert!(!is_verified(&file, "ab"));
        write_verified_marker(&file, "AB").unwrap();
        assert!(is_verified(&file, "ab"));
        assert!(!is_verified(&file, "cd"), "another hash is not verified");
        fs::write(&file, b"weights, changed").unwrap();
        assert!(
            !is_verified(&file, "ab"),
            "a changed file needs hashing again"
        );
    }

    #[test]
    fn cache_layout() {
        let cache = Cache::new("/c");
        assert_eq!(cache.model_dir("x"), PathBuf::from("/c/models/x"));
    }
}
