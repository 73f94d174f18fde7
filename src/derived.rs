//! Built-in models that Glassbox assembles from another built-in model and parts it ships
//! (see the models crate's `[source.derived]`): the known-content vision-language model is
//! the default text model plus a trained vision front end.

use std::path::{Path, PathBuf};

use glassbox_models::{ASSEMBLED_MARKER, Fetch, ModelsError, Progress};
use sha2::{Digest, Sha256};

use crate::{Error, LoadOptions};

/// Parts shipped for one derived model.
struct Parts {
    name: &'static str,
    /// The trained front end (`glassbox shapes train`).
    vision: &'static [u8],
    /// Its recipe, losses and caption accuracy.
    training: &'static str,
}

const PARTS: &[Parts] = &[Parts {
    name: "smollm2-135m-shapes",
    vision: include_bytes!("../models/smollm2-135m-shapes/vision.safetensors"),
    training: include_str!("../models/smollm2-135m-shapes/training.json"),
}];

/// What an assembled directory was made from: the base and a hash of the parts.
fn stamp(parts: &Parts, base: &str) -> String {
    let mut h = Sha256::new();
    h.update(parts.vision);
    h.update(parts.training.as_bytes());
    format!("{base} {:x}\n", h.finalize())
}

/// Makes sure the derived model `name` is assembled in `dir` (from `base`), assembling it when
/// it is missing, stale or `force`d.
pub(crate) fn ensure_assembled(
    name: &str,
    dir: &Path,
    base: &str,
    fetch: Fetch,
    force: bool,
    progress: &dyn Progress,
) -> Result<PathBuf, Error> {
    let parts = PARTS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ModelsError::Manifest {
            origin: name.to_string(),
            message: "a derived model without shipped parts".into(),
        })?;
    let stamp = stamp(parts, base);
    let marker = dir.join(ASSEMBLED_MARKER);
    if !force && std::fs::read_to_string(&marker).is_ok_and(|s| s == stamp) {
        return Ok(dir.to_path_buf());
    }
    if fetch == Fetch::Never && !force {
        return Err(ModelsError::NotFetched {
            name: name.to_string(),
        }
        .into());
    }
    let base_model = crate::load_model(base, LoadOptions::default(), fetch, progress)?;
    progress.begin(&format!("assembling {name}"), None);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelsError::Io { path, source }
    };
    // Built aside and moved in whole, so an interrupted assembly never looks complete.
    let partial = dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    glassbox_shapes::write_checkpoint(&base_model, parts.vision, &partial)?;
    let training = partial.join("training.json");
    std::fs::write(&training, parts.training).map_err(io(&training))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::rename(&partial, dir).map_err(io(dir))?;
    std::fs::write(&marker, &stamp).map_err(io(&marker))?;
    progress.end();
    Ok(dir.to_path_buf())
}
