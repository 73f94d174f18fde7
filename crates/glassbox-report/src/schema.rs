//! The result schema: what an explanation is, as data.
//!
//! Every attribution method produces the same [`Attribution`]: units × targets scores with
//! optional standard errors, plus everything needed to trust and reproduce the numbers (method
//! and parameters, seed, perturbation, model, cost). Raw scores are stored; aggregation (shares,
//! ranks, merging units) happens when viewing, so a saved result can be re-rendered later.
//! The JSON carries a `schema` version string; readers reject versions they do not know.

use serde::{Deserialize, Serialize};

/// Version tag of [`Attribution`] JSON.
pub const ATTRIBUTION_SCHEMA: &str = "glassbox.attribution/1";
/// Version tag of [`CiteReport`] JSON.
pub const CITE_SCHEMA: &str = "glassbox.cite/1";

/// A unit of the input that attributions are given to (a passage, sentence, word or token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    /// Short label for display, e.g. `[3]` for a passage or the word itself.
    pub label: String,
    /// The unit's text.
    pub text: String,
    /// `passage`, `sentence`, `word`, `token` or `span`.
    pub level: String,
    /// Character span in the source text the units were cut from, if any.
    pub span: Option<(usize, usize)>,
}

/// What a score is a score of: the whole answer, one of its tokens, a span of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub label: String,
    /// `sum_logprob`, `mean_logprob`, `token_logprob`, `answer_identity`, ...
    pub kind: String,
    /// Answer tokens the target covers (indices into the answer's tokens), if any.
    pub tokens: Option<(usize, usize)>,
}

/// What it cost to compute an attribution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Distinct coalitions (perturbed inputs) evaluated.
    pub evaluations: usize,
    /// Batched forward passes run.
    pub forward_passes: usize,
    /// Tokens run through the model.
    pub tokens: usize,
    /// Tokens evaluating every coalition from scratch would have needed (for comparison).
    pub tokens_from_scratch: usize,
    pub seconds: f64,
}

/// The method and its settings, enough to reproduce the numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodInfo {
    /// `exact_shapley`, `permutation_shapley`, `kernel_shap`, `banzhaf`, `leave_one_out`,
    /// `surrogate`, ...
    pub name: String,
    /// Method parameters (sample budget, kernel settings, ...).
    pub params: serde_json::Value,
    /// Seed of sampled methods.
    pub seed: Option<u64>,
}

/// Scores of units for targets, the one result type every method produces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub schema: String,
    pub model: String,
    pub method: MethodInfo,
    /// How removing a unit was carried out: `delete`, `placeholder`, `attention_block`, ...
    pub perturbation: String,
    pub units: Vec<Unit>,
    pub targets: Vec<Target>,
    /// `scores[t][u]`: attribution of unit `u` for target `t`.
    pub scores: Vec<Vec<f64>>,
    /// Standard errors of sampled estimates, same shape as `scores`.
    pub std_errors: Option<Vec<Vec<f64>>>,
    /// Target values with every unit kept and with none, per target.
    pub value_full: Vec<f64>,
    pub value_empty: Vec<f64>,
    pub cost: Cost,
    /// Method-specific diagnostics, e.g. a surrogate's held-out fit (`lds`).
    pub diagnostics: serde_json::Value,
}

/// One token of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerToken {
    pub id: u32,
    pub text: String,
}

/// A finer attribution inside one unit of the parent (passage → sentences → words).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refinement {
    /// Index of the refined unit in the parent attribution's units.
    pub parent_unit: usize,
    pub attribution: Attribution,
    pub refinements: Vec<Refinement>,
}

/// The result of `glassbox cite`: which passages an answer came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CiteReport {
    pub schema: String,
    pub question: String,
    pub answer: String,
    pub answer_tokens: Vec<AnswerToken>,
    /// Whether the answer was generated (greedy) rather than given.
    pub answer_generated: bool,
    /// Passage-level attribution. Its first target is the whole answer; when per-token
    /// targets are present they follow, one per answer token.
    pub attribution: Attribution,
    pub refinements: Vec<Refinement>,
}

/// Errors of reading results.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("not a Glassbox result: {0}")]
    Json(String),
    #[error("result schema `{found}` is not supported (this version reads {supported})")]
    Version { found: String, supported: String },
}

impl CiteReport {
    /// Parses a saved report, checking its schema version.
    pub fn from_json(text: &str) -> Result<Self, SchemaError> {
        let report: CiteReport =
            serde_json::from_str(text).map_err(|e| SchemaError::Json(e.to_string()))?;
        if report.schema != CITE_SCHEMA || report.attribution.schema != ATTRIBUTION_SCHEMA {
            return Err(SchemaError::Version {
                found: format!("{} / {}", report.schema, report.attribution.schema),
                supported: format!("{CITE_SCHEMA} / {ATTRIBUTION_SCHEMA}"),
            });
        }
        Ok(report)
    }
}

impl Attribution {
    /// Units ranked by score for target `t` (highest first; ties by index).
    pub fn ranking(&self, t: usize) -> Vec<usize> {
        let scores = &self.scores[t];
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        order
    }

    /// Each unit's share of the total absolute attribution for target `t` (sums to 1 unless
    /// all scores are 0).
    pub fn shares(&self, t: usize) -> Vec<f64> {
        let total: f64 = self.scores[t].iter().map(|s| s.abs()).sum();
        self.scores[t]
            .iter()
            .map(|s| if total > 0.0 { s / total } else { 0.0 })
            .collect()
    }
}
