//! Models from the Hugging Face hub (safetensors + config.json + tokenizer.json).
//!
//! Files are looked up in the standard Hugging Face cache first (`HF_HOME`, shared with the
//! Python tools), so a model downloaded once, by anything, works offline. Only when something
//! is missing is the hub contacted through the `hf-hub` crate.

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache as HfCache, Repo, RepoType};

use crate::ModelsError;
use crate::manifest::HubRepo;

/// Files a model directory must have.
const REQUIRED: &[&str] = &["config.json", "tokenizer.json"];
/// Files used when present.
/// Files used when present (the last four: vision-language processors and chat templates).
const OPTIONAL: &[&str] = &[
    "tokenizer_config.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "chat_template.json",
    "chat_template.jinja",
];
/// Index of sharded safetensors weights.
const SHARD_INDEX: &str = "model.safetensors.index.json";
const SINGLE_WEIGHTS: &str = "model.safetensors";

/// Returns the local snapshot directory of `repo`, downloading what is missing when
/// `allow_download` (otherwise a missing file is a `NotFetched` error).
pub fn resolve_hub(repo: &HubRepo, allow_download: bool) -> Result<PathBuf, ModelsError> {
    resolve_hub_in(HfCache::from_env(), repo, allow_download)
}

pub(crate) fn resolve_hub_in(
    cache: HfCache,
    repo: &HubRepo,
    allow_download: bool,
) -> Result<PathBuf, ModelsError> {
    let hub_repo = Repo::with_revision(repo.repo.clone(), RepoType::Model, repo.revision.clone());
    let cached = cache.repo(hub_repo.clone());
    let api = if allow_download {
        let api = ApiBuilder::from_cache(cache.clone())
            .with_progress(true)
            .build()
            .map_err(|e| hub_error(repo, e))?;
        Some(api.repo(hub_repo))
    } else {
        None
    };
    let get = |file: &str, required: bool| -> Result<Option<PathBuf>, ModelsError> {
        if let Some(path) = cached.get(file) {
            return Ok(Some(path));
        }
        match &api {
            Some(api) => match api.get(file) {
                Ok(path) => Ok(Some(path)),
                Err(e) if required => Err(hub_error(repo, e)),
                Err(_) => Ok(None),
            },
            None if required => Err(ModelsError::NotFetched {
                name: format!("hf:{}", repo.repo),
            }),
            None => Ok(None),
        }
    };
    let mut dir = None;
    for file in REQUIRED {
        let path = get(file, true)?.expect("required files are Some or an error");
        dir = path.parent().map(PathBuf::from);
    }
    for file in OPTIONAL {
        get(file, false)?;
    }
    match get(SHARD_INDEX, false)? {
        Some(index) => {
            for shard in shard_names(&index)? {
                get(&shard, true)?;
            }
        }
        None => {
            get(SINGLE_WEIGHTS, true)?;
        }
    }
    Ok(dir.expect("REQUIRED is not empty"))
}

/// The distinct shard files named by a safetensors index.
fn shard_names(index: &std::path::Path) -> Result<Vec<String>, ModelsError> {
    let text = std::fs::read_to_string(index).map_err(|e| ModelsError::io(index, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelsError::Hub {
        message: format!("{}: {e}", index.display()),
    })?;
    let mut names: Vec<String> = value["weight_map"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    Ok(names)
}

fn hub_error(repo: &HubRepo, e: impl std::fmt::Display) -> ModelsError {
    ModelsError::Hub {
        message: format!(
            "{}@{}: {e} (is huggingface.co reachable? Files already in the Hugging Face cache \
             are used offline)",
            repo.repo, repo.revision
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Lays out a Hugging Face cache entry by hand, as the Python and Rust clients do.
    fn fake_cache(root: &std::path::Path, files: &[&str]) -> HfCache {
        let repo_dir = root.join("models--org--tiny");
        let snapshot = repo_dir.join("snapshots").join("abc123");
        fs::create_dir_all(&snapshot).unwrap();
        fs::create_dir_all(repo_dir.join("refs")).unwrap();
        fs::write(repo_dir.join("refs").join("main"), "abc123").unwrap();
        for f in files {
            fs::write(snapshot.join(f), "{}").unwrap();
        }
        HfCache::new(root.to_path_buf())
    }

    fn tiny() -> HubRepo {
        HubRepo {
            repo: "org/tiny".into(),
            revision: "main".into(),
        }
    }

    #[test]
    fn a_complete_cache_entry_resolves_offline() {
        let dir = tempfile::tempdir().unwrap();
        let cache = fake_cache(
            dir.path(),
            &["config.json", "tokenizer.json", "model.safetensors"],
        );
        let resolved = resolve_hub_in(cache, &tiny(), false).unwrap();
        assert!(resolved.ends_with("snapshots/abc123"));
    }

    #[test]
    fn a_missing_file_offline_says_how_to_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let cache = fake_cache(dir.path(), &["config.json", "tokenizer.json"]);
        let err = resolve_hub_in(cache, &tiny(), false).unwrap_err();
        assert!(matches!(err, ModelsError::NotFetched { .. }), "{err}");
    }
}
