//! The result schema: what an explanation is, as data.
//!
//! Every attribution method produces the same [`Attribution`]: units × targets scores with
//! optional standard errors, plus everything needed to trust and reproduce the numbers (method
//! and parameters, seed, perturbation, model, cost). Raw scores are stored; aggregation (shares,
//! ranks, merging units) happens when viewing, so a saved result can be re-rendered later.
//! The JSON carries a `schema` version string; readers reject versions they do not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version tag of [`Attribution`] JSON.
pub const ATTRIBUTION_SCHEMA: &str = "glassbox.attribution/1";
/// Version tag of [`CiteReport`] JSON.
pub const CITE_SCHEMA: &str = "glassbox.cite/1";
/// Version tag of [`AttributeReport`] JSON.
pub const ATTRIBUTE_SCHEMA: &str = "glassbox.attribute/1";

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
    /// Present when the scores are an estimate made a cheaper way than the method's exact
    /// computation on the model (a proxy model, cached passages, groups first, one pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approximation: Option<Approximation>,
}

/// What an approximate result approximates, how, and (when asked) how well.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approximation {
    /// What the scores stand in for, e.g. `leave_one_out on SmolLM2-135M-Instruct`.
    pub estimate_of: String,
    /// The approximations stacked, outermost first (`proxy`, `hierarchical`,
    /// `passage_kv`, `context_kv`, `attention`, `gradxinput`), each with its parameters.
    pub steps: Vec<ApproximationStep>,
    /// The estimate measured against the exact computation on some passages (`--check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<FidelityCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApproximationStep {
    pub name: String,
    pub description: String,
    pub params: serde_json::Value,
}

/// Exact leave-one-out on the target model for a few passages, next to the estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidelityCheck {
    /// Passages checked (indices into the units), the estimate's top ones.
    pub units: Vec<usize>,
    pub estimate: Vec<f64>,
    pub exact_loo: Vec<f64>,
    /// Spearman correlation of estimate and exact over the checked passages (None for < 3).
    pub spearman: Option<f64>,
    /// Whether the estimate's top passage is also the exact top among those checked.
    pub top1_agrees: bool,
    pub cost: Cost,
}

/// How finer scores combine into a coarser unit's score when a result is viewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Sum (additive methods: a word's Shapley value or gradient × input is its tokens' sum).
    Sum,
    Mean,
    /// The score of largest magnitude, sign kept.
    AbsMax,
}

impl Aggregation {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sum" => Some(Aggregation::Sum),
            "mean" => Some(Aggregation::Mean),
            "absmax" => Some(Aggregation::AbsMax),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Mean => "mean",
            Aggregation::AbsMax => "absmax",
        }
    }

    fn combine(&self, scores: &[f64]) -> f64 {
        match self {
            Aggregation::Sum => scores.iter().sum(),
            Aggregation::Mean => scores.iter().sum::<f64>() / scores.len().max(1) as f64,
            Aggregation::AbsMax => scores
                .iter()
                .copied()
                .fold(0.0, |best, s| if s.abs() > best.abs() { s } else { best }),
        }
    }
}

/// How a result is shown unless the viewer says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewSettings {
    /// `token`, `word`, `sentence` (or `span` for custom spans).
    pub unit: String,
    pub aggregate: Aggregation,
}

/// The result of `glassbox attribute`: which parts of an input drove the model's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeReport {
    pub schema: String,
    /// The user's text, as given.
    pub input: String,
    /// `raw` (the text as the prompt) or `chat` (the text as the user turn of the chat
    /// template).
    pub prompt_format: String,
    /// The output the targets are about.
    pub answer: String,
    pub answer_tokens: Vec<AnswerToken>,
    /// `given` (teacher-forced), `generated` (greedy) or `predicted` (the next token).
    pub answer_source: String,
    /// The input's units at every level (`token`, `word`, `sentence`), with character spans,
    /// so scores can be regrouped when viewed.
    pub levels: BTreeMap<String, Vec<Unit>>,
    /// Scores at the level the method ran on (gradient and attention methods: tokens).
    pub attribution: Attribution,
    pub view: ViewSettings,
    /// What rebuilds the prompt and the targets, so the result can be re-scored on the model
    /// (`glassbox evaluate`). Absent in results written by other tools or older versions;
    /// those can be viewed and compared, not re-scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestRecord>,
}

/// The parts of an attribute request that are not in the rest of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Fixed prompt text before the input (inside the chat template's user turn with `chat`).
    pub before: String,
    /// Fixed prompt text after the input.
    pub after: String,
    /// The system message of a chat prompt.
    pub system: Option<String>,
    /// The target as the user named it (`logprob`, `label: positive, negative`, ...).
    pub target: String,
}

impl AttributeReport {
    /// Parses a saved report, checking its schema version and shapes.
    pub fn from_json(text: &str) -> Result<Self, SchemaError> {
        let report: AttributeReport =
            serde_json::from_str(text).map_err(|e| SchemaError::Json(e.to_string()))?;
        if report.schema != ATTRIBUTE_SCHEMA || report.attribution.schema != ATTRIBUTION_SCHEMA {
            return Err(SchemaError::Version {
                found: format!("{} / {}", report.schema, report.attribution.schema),
                supported: format!("{ATTRIBUTE_SCHEMA} / {ATTRIBUTION_SCHEMA}"),
            });
        }
        report
            .attribution
            .check_shape()
            .map_err(SchemaError::Shape)?;
        Ok(report)
    }

    /// The attribution regrouped to `unit` (a level at least as coarse as the computed one),
    /// combining scores with `how`. Standard errors do not survive regrouping (the estimates
    /// of units are correlated) and are dropped.
    pub fn regrouped(&self, unit: &str, how: Aggregation) -> Result<Attribution, SchemaError> {
        let a = &self.attribution;
        let computed = a.units.first().map_or("token", |u| u.level.as_str());
        if unit == computed {
            return Ok(a.clone());
        }
        const ORDER: [&str; 3] = ["token", "word", "sentence"];
        let rank = |l: &str| ORDER.iter().position(|&o| o == l);
        let groups = match (rank(computed), rank(unit), self.levels.get(unit)) {
            (Some(from), Some(to), Some(groups)) if from < to => groups,
            _ => {
                return Err(SchemaError::Shape(format!(
                    "scores computed per {computed} cannot be shown per {unit}: choose {computed} \
                     or a coarser level of token < word < sentence"
                )));
            }
        };
        let owner: Vec<Option<usize>> = a
            .units
            .iter()
            .map(|u| {
                let start = u.span?.0;
                groups
                    .iter()
                    .position(|g| g.span.is_some_and(|(x, y)| x <= start && start < y))
            })
            .collect();
        let kept: Vec<usize> = (0..groups.len())
            .filter(|g| owner.contains(&Some(*g)))
            .collect();
        let scores = a
            .scores
            .iter()
            .map(|row| {
                kept.iter()
                    .map(|&g| {
                        let members: Vec<f64> = row
                            .iter()
                            .zip(&owner)
                            .filter(|(_, o)| **o == Some(g))
                            .map(|(s, _)| *s)
                            .collect();
                        how.combine(&members)
                    })
                    .collect()
            })
            .collect();
        Ok(Attribution {
            units: kept.iter().map(|&g| groups[g].clone()).collect(),
            scores,
            std_errors: None,
            ..a.clone()
        })
    }
}

/// Errors of reading results.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("not a Glassbox result: {0}")]
    Json(String),
    #[error("result schema `{found}` is not supported (this version reads {supported})")]
    Version { found: String, supported: String },
    /// The arrays disagree in size (e.g. a score row per target, a score per unit), so the
    /// file was edited or cut short; renderers index by these shapes.
    #[error("inconsistent result: {0}")]
    Shape(String),
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
        report
            .attribution
            .check_shape()
            .map_err(SchemaError::Shape)?;
        check_refinements(&report.attribution, &report.refinements).map_err(SchemaError::Shape)?;
        Ok(report)
    }
}

/// Checks that every refinement refines an existing unit and is itself well-shaped.
fn check_refinements(parent: &Attribution, refinements: &[Refinement]) -> Result<(), String> {
    for r in refinements {
        if r.parent_unit >= parent.units.len() {
            return Err(format!(
                "a refinement refines unit {} of {} units",
                r.parent_unit,
                parent.units.len()
            ));
        }
        r.attribution.check_shape()?;
        check_refinements(&r.attribution, &r.refinements)?;
    }
    Ok(())
}

impl Attribution {
    /// Checks that there is at least one target and that scores, standard errors and values
    /// have one row (or value) per target and one score per unit, as the accessors and
    /// renderers assume.
    pub fn check_shape(&self) -> Result<(), String> {
        let (units, targets) = (self.units.len(), self.targets.len());
        if targets == 0 {
            return Err("no targets".into());
        }
        let matrix_ok =
            |m: &[Vec<f64>]| m.len() == targets && m.iter().all(|row| row.len() == units);
        if !matrix_ok(&self.scores) {
            return Err(format!("scores are not {targets} targets × {units} units"));
        }
        if self.std_errors.as_deref().is_some_and(|e| !matrix_ok(e)) {
            return Err(format!(
                "standard errors are not {targets} targets × {units} units"
            ));
        }
        if self.value_full.len() != targets || self.value_empty.len() != targets {
            return Err(format!(
                "value_full and value_empty need one value per target ({targets})"
            ));
        }
        Ok(())
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::report;

    fn reparsed(r: &CiteReport) -> Result<CiteReport, SchemaError> {
        CiteReport::from_json(&serde_json::to_string(r).unwrap())
    }

    #[test]
    fn reports_round_trip_through_json() {
        let r = report();
        assert_eq!(reparsed(&r).unwrap(), r);
    }

    #[test]
    fn inconsistent_shapes_are_rejected_not_rendered() {
        let mut short_row = report();
        short_row.attribution.scores[2].pop();
        let mut missing_errors = report();
        missing_errors.attribution.std_errors = Some(vec![vec![0.1; 4]; 3]);
        let mut stray_refinement = report();
        stray_refinement.refinements[0].parent_unit = 4;
        let mut bad_nested = report();
        bad_nested.refinements[0].attribution.value_full.clear();
        let mut no_targets = report();
        no_targets.attribution.targets.clear();
        no_targets.attribution.scores.clear();
        for bad in [
            short_row,
            missing_errors,
            stray_refinement,
            bad_nested,
            no_targets,
        ] {
            assert!(
                matches!(reparsed(&bad), Err(SchemaError::Shape(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ranking_and_shares_follow_the_target() {
        let a = report().attribution;
        assert_eq!(a.ranking(0), vec![2, 0, 3, 1]);
        assert_eq!(a.ranking(3), vec![0, 3, 1, 2], "ties keep document order");
        let shares = a.shares(0);
        assert!((shares.iter().map(|s| s.abs()).sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(
            (shares[2] - 1.4 / 2.2).abs() < 1e-12 && shares[1] < 0.0,
            "signed shares"
        );
        let mut silent = a.clone();
        silent.scores[0] = vec![0.0; 4];
        assert_eq!(silent.shares(0), vec![0.0; 4]);
    }
}
