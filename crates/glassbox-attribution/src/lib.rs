//! Attribution: which input units an output came from.
//!
//! Perturbation methods ask one question again and again — "what is the target's value when only
//! these units are kept?" — so this crate separates the question from its answering:
//!
//! - [`Coalition`]: a set of kept units;
//! - [`Game`]: answers the values of coalitions (for several targets at once);
//! - [`methods`]: exact and sampled Shapley values, Banzhaf, leave-one-out and n-gram
//!   occlusion, KernelSHAP, LIME and a ContextCite-style surrogate, each asking a game for values
//!   and nothing else;
//! - the evaluation engine answers for a real model (memoized, prefix sharing, batched);
//! - tasks built on them: [`cite`] (passages of a RAG prompt) and [`attribute`] (tokens, words
//!   and sentences of any input, with gradient and attention methods besides perturbation).

pub mod attribute;
pub mod cite;
mod coalition;
mod engine;
mod game;
mod linalg;
pub mod methods;
mod prompt;
pub mod stats;

pub use coalition::Coalition;
pub use engine::{
    Aggregate, AnswerGame, Engine, EngineStats, IdentityGame, Readout, TokenSegment, check_universe,
};
pub use game::{FnGame, Game};
pub use methods::{Estimate, METHODS, Method, estimate};
pub use prompt::{PERTURBATIONS, Perturbation, Segment, SegmentedPrompt};

/// Errors of attribution.
#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    #[error("nothing to attribute to: there are no units")]
    NoUnits,
    #[error(
        "exact enumeration over {units} units needs 2^{units} evaluations; the limit is {max} units. \
         Use a sampled method: --method permutation (Shapley with standard errors), kernel or surrogate"
    )]
    TooManyForExact { units: usize, max: usize },
    #[error("unknown method `{name}`; methods: {known}")]
    UnknownMethod { name: String, known: String },
    #[error("{0}")]
    BadBudget(String),
    #[error("invalid input: {0}")]
    BadInput(String),
    #[error(transparent)]
    Runtime(#[from] glassbox_runtime::RuntimeError),
    #[error(transparent)]
    Eval(#[from] glassbox_eval::EvalError),
}

impl AttributionError {
    /// Whether the user's input is at fault (the CLI exits 2) rather than the run.
    pub fn is_input_error(&self) -> bool {
        match self {
            AttributionError::Runtime(e) => e.is_input_error(),
            _ => true,
        }
    }
}
