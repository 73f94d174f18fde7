//! Glassbox's model runtime: load a transformer LLM and ask it questions, instrumented.
//!
//! Every explanation method is a question asked of this runtime: "what are the log-probabilities
//! of this answer when these passages are removed", "what did layer 5 attend to", "how does the
//! target change with the input embeddings". It therefore offers more than a chat runtime:
//!
//! - [`Model::forward`] over a batch of [`Row`]s of different lengths, each with its own KV
//!   cache to continue, positions, [`AttentionMask`] and logit positions, capturing named
//!   activations ([`Hook`]: residual streams, attention patterns, final-norm states);
//! - [`KvCache`] values that are cheap to fork and extend (compute a prefix once, continue it
//!   many ways);
//! - teacher-forced scoring of a fixed continuation in one pass ([`Model::score`]);
//! - generation, greedy or seeded sampling ([`Model::generate`]);
//! - gradients of any objective of the logits with respect to the input embeddings and the
//!   residual stream, for batches of rows ([`Model::gradients`]): a hand-written backward over
//!   the fast forward's own operations (`ops.rs` pairs, `layer.rs` blocks run both ways), input
//!   gradients only, on the same packed weights;
//! - the same network composed from candle's differentiable operations
//!   ([`Model::forward_differentiable`]), the tests' autograd reference for that backward.
//!
//! Models load from GGUF (llama family, Gemma 3) or Hugging Face safetensors directories. The
//! f32 fast path runs on `glassbox-kernels`; tests hold it to candle-transformers' reference
//! models and Hugging Face fixtures, and its backward to candle autograd and finite
//! differences.

mod assemble;
mod backward;
mod capture;
mod config;
mod export;
mod forward;
mod generate;
mod grad;
mod kv;
mod layer;
mod linear;
mod mask;
mod model;
mod ops;
mod rope;
mod score;
mod weights;

use std::path::{Path, PathBuf};

pub use assemble::Placed;
pub use backward::{GradientRow, Objective, RowGradients, SAVED_BYTES_PER_BATCH};
pub use capture::{Array, Capture, HOOK_NAMES, Hook};
pub use config::{
    Activation, Architecture, ModelConfig, NormPlacement, SUPPORTED_GGUF_ARCHITECTURES,
    SUPPORTED_HF_ARCHITECTURES, SlidingWindow,
};
pub use export::EXPORTED_FILES;
pub use forward::{Logits, LogitsAt, Row, RowInput, RowOutput, TokenScore};
pub use generate::{Continuation, GenerateOptions, Generation, Sampling, StopReason};
pub use glassbox_tokenizer::{ChatMessage, ChatTemplate, Encoding, Tokenizer};
pub use kv::{KvBuffers, KvCache};
pub use mask::AttentionMask;
pub use model::{EmbeddedDecoder, LoadOptions, Model, ModelInfo, gguf_tokenizer, read_json};
pub use score::{ContinuationScore, ScoreRequest, argmax, log_softmax_at};
pub use weights::{QuantFormat, WeightMode};

/// Errors of loading and running models.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{}: not a readable GGUF model ({message})", path.display())]
    BadGguf { path: PathBuf, message: String },
    #[error(
        "{}: the file is truncated (tensor `{tensor}` ends at byte {needed}, the file has \
         {actual}); download it again",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        tensor: String,
        needed: u64,
        actual: u64,
    },
    #[error("{origin}: unreadable weights: {message}")]
    BadWeights { origin: String, message: String },
    #[error("unsupported architecture `{name}`; Glassbox runs: {supported}")]
    UnsupportedArchitecture { name: String, supported: String },
    #[error("{origin}: bad model configuration `{key}`: {message}")]
    BadConfig {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{origin}: missing tensor `{name}`")]
    MissingTensor { origin: String, name: String },
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    BadTensorShape {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Tokenizer(#[from] glassbox_tokenizer::TokenizerError),
    #[error("the input is empty")]
    EmptyInput,
    #[error(
        "the input needs {tokens} positions but the model's context window is {window} tokens; \
         shorten it"
    )]
    ContextOverflow { tokens: usize, window: usize },
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    BadTokenId { id: u32, vocab: usize },
    #[error("invalid attention mask: {0}")]
    BadMask(String),
    #[error("invalid positions: {0}")]
    BadPositions(String),
    #[error("unknown capture point `{spec}`: {why} (see `glassbox inspect --help` for names)")]
    BadHook { spec: String, why: String },
    #[error("{0} has no chat template (it is a base model): pass the prompt as raw text")]
    NoChatTemplate(String),
    #[error("gradients need f32 weights: load the model with `--weights f32`")]
    GradientsNeedF32,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("row {row}: {source}")]
    InRow {
        row: usize,
        #[source]
        source: Box<RuntimeError>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tensor computation failed: {0}")]
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for RuntimeError {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(without_backtrace(e))
    }
}

/// The error with candle's captured backtraces removed. Candle records one in the error itself
/// whenever `RUST_BACKTRACE` is set, and prints it as part of the message; an error message is
/// for the user, so only what went wrong (and its context) is kept. Panics keep theirs.
pub(crate) fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    use candle_core::Error;
    match e {
        Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        Error::Context { inner, context } => Error::Context {
            inner: Box::new(without_backtrace(*inner)),
            context,
        },
        Error::WithPath { inner, path } => Error::WithPath {
            inner: Box::new(without_backtrace(*inner)),
            path,
        },
        other => other,
    }
}

/// A candle error's message for the user, without a backtrace.
pub(crate) fn candle_message(e: candle_core::Error) -> String {
    without_backtrace(e).to_string()
}

impl RuntimeError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Attaches the batch row an error came from.
    pub(crate) fn in_row(self, row: usize) -> Self {
        Self::InRow {
            row,
            source: Box::new(self),
        }
    }

    /// Whether the error lies in what the user gave (files, text, options) rather than in a
    /// failure while running; the CLI exits 2 for these, 1 otherwise.
    pub fn is_input_error(&self) -> bool {
        match self {
            Self::InRow { source, .. } => source.is_input_error(),
            Self::Candle(_) => false,
            _ => true,
        }
    }
}
