//! The default model, loaded once per test binary (fetched if missing).

use std::sync::OnceLock;

use glassbox_models::{Cache, Fetch, ModelFiles, NoProgress, ensure, find_manifest};
use glassbox_runtime::{LoadOptions, Model};

pub fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let manifest = find_manifest("smollm2-135m-instruct").unwrap();
        let ModelFiles::Gguf(path) = ensure(
            &manifest,
            &Cache::from_env(),
            Fetch::IfMissing,
            false,
            &NoProgress,
        )
        .unwrap() else {
            panic!("a GGUF model")
        };
        Model::load_gguf(&path, "smollm2-135m-instruct", LoadOptions::default()).unwrap()
    })
}
