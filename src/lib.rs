//! Glassbox: explain what large language models do.
//!
//! This facade ties the crates together for library users: resolve a model name to local
//! files ([`glassbox_models`]), load it ([`glassbox_runtime`]), and build prompts the way the
//! model expects them. The runtime's types are re-exported so one dependency suffices.
//!
//! ```no_run
//! use glassbox::{Fetch, LoadOptions, NoProgress, Prompt, load_model};
//! let model = load_model("smollm2-135m-instruct", LoadOptions::default(), Fetch::IfMissing, &NoProgress)?;
//! let prompt = Prompt::user("What is the capital of France?").tokens(&model)?;
//! let answer = model.generate(&prompt, &Default::default())?;
//! println!("{}", answer.text);
//! # Ok::<(), glassbox::Error>(())
//! ```

use std::path::PathBuf;

mod derived;
pub mod evaluate;
mod explainer;

pub use explainer::Explainer;
pub use glassbox_attribution as attribution;
pub use glassbox_datasets as datasets;
pub use glassbox_eval as eval;
pub use glassbox_maps as maps;
pub use glassbox_rag_scale as rag_scale;
pub use glassbox_report as report;
pub use glassbox_selfexplain as selfexplain;
pub use glassbox_shapes as shapes;
pub use glassbox_vision as vision;

pub use glassbox_models::{
    self as models, Cache, DEFAULT_MODEL, Fetch, ModelFiles, NoProgress, Progress,
};
pub use glassbox_runtime::{
    self as runtime, Array, AttentionMask, Capture, ChatMessage, ContinuationScore,
    GenerateOptions, Generation, GradientRow, Hook, KvCache, LoadOptions, Logits, LogitsAt, Model,
    ModelInfo, Row, RowGradients, RowInput, RowOutput, Sampling, ScoreRequest, StopReason,
    WeightMode,
};

/// Errors of the facade: from resolving a model or from running it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Models(#[from] glassbox_models::ModelsError),
    #[error(transparent)]
    Runtime(#[from] glassbox_runtime::RuntimeError),
    #[error(transparent)]
    Vision(#[from] glassbox_vision::VisionError),
    #[error("assembling a model: {0}")]
    Assembly(#[from] glassbox_shapes::CheckpointError),
}

impl Error {
    /// Whether the user's input is at fault (exit code 2) rather than the run (exit code 1).
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Models(e) => e.is_input_error(),
            Error::Runtime(e) => e.is_input_error(),
            Error::Vision(e) => e.is_input_error(),
            Error::Assembly(_) => false,
        }
    }
}

/// Resolves `spec` to local files, fetching (or, for derived models, assembling) them first
/// if allowed; `force` fetches or assembles again.
pub fn fetch_model(
    spec: &str,
    fetch: Fetch,
    force: bool,
    progress: &dyn Progress,
) -> Result<(String, PathBuf), Error> {
    let cache = Cache::from_env();
    let resolved = match glassbox_models::find_manifest(spec) {
        Some(manifest) => glassbox_models::ResolvedModel {
            name: manifest.name.clone(),
            files: glassbox_models::ensure(&manifest, &cache, fetch, force, progress)?,
            manifest: Some(manifest),
        },
        None => glassbox_models::resolve(spec, &cache, fetch, progress)?,
    };
    let path = match resolved.files {
        ModelFiles::Gguf(p) | ModelFiles::HfDir(p) => p,
        ModelFiles::Derived { dir, base } => {
            derived::ensure_assembled(&resolved.name, &dir, &base, fetch, force, progress)?
        }
    };
    Ok((resolved.name, path))
}

/// Resolves `spec` (a built-in model name, a `.gguf` path, a Hugging Face directory or
/// `hf:ORG/NAME`) and loads the model, fetching its files first if allowed.
pub fn load_model(
    spec: &str,
    options: LoadOptions,
    fetch: Fetch,
    progress: &dyn Progress,
) -> Result<Model, Error> {
    let (name, files) = resolved(spec, fetch, progress)?;
    let model = match &files {
        Local::HfDir(dir) if glassbox_vision::is_vision_checkpoint(dir) => {
            return Err(glassbox_runtime::RuntimeError::Unsupported(format!(
                "{spec} is a vision-language model; this command runs text models \
                 (`generate`, `score`, `inspect` and `tam` take vision-language models)"
            ))
            .into());
        }
        Local::Gguf(path) => Model::load_gguf(path, &name, options)?,
        Local::HfDir(dir) => Model::load_hf_dir(dir, &name, options)?,
    };
    Ok(model)
}

/// A model's files on disk, ready to load.
enum Local {
    Gguf(PathBuf),
    HfDir(PathBuf),
}

/// [`glassbox_models::resolve`], with derived models assembled: the model's name and files.
fn resolved(spec: &str, fetch: Fetch, progress: &dyn Progress) -> Result<(String, Local), Error> {
    let resolved = glassbox_models::resolve(spec, &Cache::from_env(), fetch, progress)?;
    let local = match resolved.files {
        ModelFiles::Gguf(p) => Local::Gguf(p),
        ModelFiles::HfDir(p) => Local::HfDir(p),
        ModelFiles::Derived { dir, base } => Local::HfDir(derived::ensure_assembled(
            &resolved.name,
            &dir,
            &base,
            fetch,
            false,
            progress,
        )?),
    };
    Ok((resolved.name, local))
}

/// A loaded model of either kind.
pub enum AnyModel {
    Text(Box<Model>),
    /// A vision-language model (its text decoder is [`glassbox_vision::VisionLanguageModel::text`]).
    Vision(Box<glassbox_vision::VisionLanguageModel>),
}

impl AnyModel {
    /// The text decoder (the whole model for a text model).
    pub fn text(&self) -> &Model {
        match self {
            AnyModel::Text(m) => m,
            AnyModel::Vision(v) => v.text(),
        }
    }
}

/// [`load_model`] for text and vision-language models alike: a Hugging Face directory whose
/// configuration has a `vision_config` loads as a vision-language model.
pub fn load_any_model(
    spec: &str,
    options: LoadOptions,
    fetch: Fetch,
    progress: &dyn Progress,
) -> Result<AnyModel, Error> {
    let (name, files) = resolved(spec, fetch, progress)?;
    Ok(match &files {
        Local::HfDir(dir) if glassbox_vision::is_vision_checkpoint(dir) => {
            AnyModel::Vision(Box::new(glassbox_vision::VisionLanguageModel::load(
                dir, &name, options,
            )?))
        }
        Local::Gguf(path) => AnyModel::Text(Box::new(Model::load_gguf(path, &name, options)?)),
        Local::HfDir(dir) => AnyModel::Text(Box::new(Model::load_hf_dir(dir, &name, options)?)),
    })
}

/// A prompt as a user writes it, turned into the token ids the model expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub system: Option<String>,
    pub user: String,
    /// Use the text as written, without the chat template.
    pub raw: bool,
}

impl Prompt {
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            system: None,
            user: text.into(),
            raw: false,
        }
    }

    /// The prompt text the model will read: the user message in the model's chat template
    /// (with the assistant turn opened), or the raw text for `raw` prompts and base models.
    pub fn render(&self, model: &Model) -> Result<String, Error> {
        if self.user.trim().is_empty() {
            return Err(glassbox_runtime::RuntimeError::EmptyInput.into());
        }
        if self.raw || !model.has_chat_template() {
            return Ok(self.user.clone());
        }
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            messages.push(ChatMessage {
                role: "system".into(),
                content: system.clone(),
            });
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: self.user.clone(),
        });
        Ok(model.render_chat(&messages, true)?)
    }

    /// Token ids of the rendered prompt. A chat template writes its own special tokens, so
    /// BOS is added only to raw prompts of models that want it.
    pub fn tokens(&self, model: &Model) -> Result<Vec<u32>, Error> {
        let text = self.render(model)?;
        let templated = !self.raw && model.has_chat_template();
        let add_bos = !templated && model.tokenizer().wants_bos();
        Ok(model
            .tokenizer()
            .encode(&text, add_bos)
            .map_err(glassbox_runtime::RuntimeError::from)?
            .ids)
    }
}
