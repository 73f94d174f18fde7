//! Evaluation of explanations without a model, so it builds in seconds and every formula can be
//! checked by hand (formulas: `design/METRICS.md`).
//!
//! - Faithfulness ([`FaithfulnessPlan`]): plan the coalitions all requested metrics need,
//!   evaluate them in one batch with any model and perturbation operator, finish into
//!   [`MetricResult`]s. Metrics are a string-keyed registry ([`METRICS`]).
//! - [`sensitivity_max`]: how much an explanation moves under input perturbations.
//! - [`agreement`]: two explanations compared (Krishna et al.'s disagreement measures).
//! - [`plausibility`]: explanations against human rationales (ERASER).
//! - [`table`]: explainers × metrics, mean ± standard error, as text, Markdown or HTML.
//!
//! Units are ranked the same way everywhere: highest score first, ties to the lower index.

pub mod agreement;
mod error;
mod faithfulness;
mod input;
pub mod plausibility;
mod rationale;
mod request;
mod sensitivity;
pub mod stats;
pub mod table;

pub use error::EvalError;
pub use faithfulness::{
    CurvePoint, EMPTY_COALITION, FULL_COALITION, FaithfulnessPlan, MetricResult, TargetView,
};
pub use input::scores_of;
pub use request::{
    Aopc, AopcMode, CONTRASTIVE_BINS_PERCENT, DEFAULT_INFIDELITY_SAMPLES, Direction,
    ERASER_BINS_PERCENT, FERRET_BINS_PERCENT, FlipMode, METRICS, MetricRequest,
};
pub use sensitivity::sensitivity_max;
