//! Shared set-up of the runtime's end-to-end tests: the real models, fetched into the cache on
//! first use (as the README's first command would), loaded once per test binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use glassbox_models::{Cache, Fetch, ModelFiles, NoProgress, ensure, find_manifest};
use glassbox_runtime::{Capture, LoadOptions, Logits, LogitsAt, Model, Row, WeightMode};

pub const SMOLLM: &str = "smollm2-135m-instruct";
pub const GEMMA: &str = "gemma3-270m";

/// Path of a built-in model's GGUF, downloading and verifying it if needed.
pub fn model_path(name: &str) -> PathBuf {
    let manifest = find_manifest(name).expect("built-in model");
    match ensure(
        &manifest,
        &Cache::from_env(),
        Fetch::IfMissing,
        false,
        &NoProgress,
    )
    .unwrap_or_else(|e| panic!("fetching {name}: {e}"))
    {
        ModelFiles::Gguf(p) => p,
        ModelFiles::HfDir(p) | ModelFiles::Derived { dir: p, .. } => {
            panic!("{name} is not a GGUF model: {}", p.display())
        }
    }
}

fn load(name: &str, weights: WeightMode) -> Model {
    Model::load_gguf(&model_path(name), name, LoadOptions { weights })
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// The default model, f32 weights.
pub fn smollm() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| load(SMOLLM, WeightMode::F32))
}

/// Gemma 3 270M, f32 weights.
pub fn gemma() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| load(GEMMA, WeightMode::F32))
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Token ids of raw text (no chat template, no BOS).
pub fn ids(model: &Model, text: &str) -> Vec<u32> {
    model.tokenizer().encode(text, false).expect("encodes").ids
}

/// A reference fixture from the repository's `tests/fixtures` (see `tools/fixtures` for how
/// they were made).
pub fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// A JSON array of token ids.
pub fn id_list(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Logits at every position of `row`, from one plain forward pass.
pub fn logits_everywhere(model: &Model, row: Row) -> Logits {
    let out = model.forward(vec![row.with_logits(LogitsAt::All)], &Capture::none());
    out.unwrap().remove(0).logits.unwrap()
}
