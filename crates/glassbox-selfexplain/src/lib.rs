//! Self-explanations: ask a model to explain its own prediction, and turn its answer into an
//! attribution over the input's words.
//!
//! A model's stated reasons ("the important words are *great* and *boring*") are only worth
//! something if they agree with what actually drives its output, which attribution methods
//! measure. To compare the two, the free-text answer has to become the same kind of data as an
//! attribution: one score per input word. [`parse`] does that conversion, and says how much of
//! the answer it could read, so an unreadable answer is never mistaken for "no word matters".
//! [`task`] holds classification tasks and elicitation protocols as data (`prompts/`), and
//! [`elicit`] asks the model: its prediction from the label words' probabilities, then its
//! own explanation, returned as an ordinary attribution report.

pub mod elicit;
pub mod parse;
pub mod task;

pub use elicit::{Classification, SelfExplanation, classification_request, classify, self_explain};
pub use parse::{
    AnswerFormat, ExplanationItem, FailReason, ItemNote, ParseStatus, ParseSummary,
    ParsedExplanation, PartialReason, parse_explanation,
};
pub use task::{Framing, Order, Protocol, Task};

/// Errors of eliciting a self-explanation. A model's unreadable answer is not one: it is
/// recorded in the result with its reason.
#[derive(Debug, thiserror::Error)]
pub enum SelfExplainError {
    #[error("{origin}: {message}")]
    BadFile { origin: String, message: String },
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Attribution(#[from] glassbox_attribution::AttributionError),
    #[error(transparent)]
    Runtime(#[from] glassbox_runtime::RuntimeError),
}

impl SelfExplainError {
    /// Whether the user's input is at fault (exit code 2) rather than the run.
    pub fn is_input_error(&self) -> bool {
        match self {
            SelfExplainError::BadFile { .. } | SelfExplainError::BadInput(_) => true,
            SelfExplainError::Attribution(e) => e.is_input_error(),
            SelfExplainError::Runtime(e) => e.is_input_error(),
        }
    }
}
