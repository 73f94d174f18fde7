//! Faithfulness of a saved explanation, re-scored on the model it explains: the glue between
//! the model-free metrics of [`glassbox_eval`] and the evaluation engine.
//!
//! Every metric's removals are coalitions of the explanation's units, so all bins of all
//! requested metrics are planned first and evaluated in one engine call (one batched,
//! prefix-sharing pass set, memoized), never one forward pass per bin.

use std::time::Instant;

use glassbox_attribution::attribute::{Rescorer, Sensitivity, UnitLevel};
use glassbox_attribution::{AttributionError, Coalition, Perturbation};
use glassbox_eval::{EvalError, FaithfulnessPlan, MetricRequest, MetricResult, TargetView};
use glassbox_report::{Aggregation, AttributeReport, Cost};
use glassbox_runtime::Model;
use serde::Serialize;

/// Version tag of [`Evaluation`] JSON.
pub const EVALUATION_SCHEMA: &str = "glassbox.evaluation/1";

/// What to measure and how to remove units.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    pub metrics: Vec<MetricRequest>,
    /// The units removed (default: the result's view unit). Finer scores are summed into them.
    pub unit: Option<UnitLevel>,
    pub perturbation: Perturbation,
    /// The target whose scores are evaluated (default: the predicted label of a label target,
    /// else the first target).
    pub target: Option<usize>,
    /// Seed of the metrics that draw random removals (infidelity).
    pub seed: u64,
}

/// The metrics of one explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub schema: String,
    pub model: String,
    /// The explanation's method (`leave_one_out`, `self_explanation`, ...).
    pub explainer: String,
    pub input: String,
    pub unit: String,
    pub perturbation: String,
    /// The target evaluated (label and kind).
    pub target: String,
    pub n_units: usize,
    pub results: Vec<MetricResult>,
    /// What the re-scoring cost (every metric's coalitions together).
    pub cost: Cost,
    /// Max-sensitivity of a gradient-method result, when asked for (it re-explains the input
    /// rather than re-scoring removals, so it is not one of the planned metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<Sensitivity>,
}

/// Errors of evaluating a saved result.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Attribution(#[from] AttributionError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error("{0}")]
    BadInput(String),
}

impl EvaluateError {
    /// Whether the user's input is at fault (exit code 2).
    pub fn is_input_error(&self) -> bool {
        match self {
            EvaluateError::Attribution(e) => e.is_input_error(),
            EvaluateError::Eval(_) | EvaluateError::BadInput(_) => true,
        }
    }
}

/// The unit level a result is evaluated at by default: the one it is viewed at.
pub fn default_unit(report: &AttributeReport) -> Result<UnitLevel, EvaluateError> {
    let computed = report.attribution.units.first().map(|u| u.level.as_str());
    if computed == Some("span") {
        let spans = report
            .attribution
            .units
            .iter()
            .map(|u| u.span)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| EvaluateError::BadInput("span units without character spans".into()))?;
        return Ok(UnitLevel::Spans(spans));
    }
    Ok(UnitLevel::parse(&report.view.unit)?)
}

/// The target evaluated unless one is named: for a verbalizer (label) target, the label the
/// model predicted; otherwise the first target.
pub fn default_target(report: &AttributeReport) -> usize {
    let targets = &report.attribution.targets;
    if targets.iter().all(|t| t.kind == "label_prob") {
        let predicted = report.answer.trim();
        if let Some(t) = targets.iter().position(|t| t.label == predicted) {
            return t;
        }
    }
    0
}

/// The coalitions a metric plan needs, as the engine takes them.
pub fn plan_coalitions(plan: &FaithfulnessPlan) -> Vec<Coalition> {
    plan.coalitions()
        .iter()
        .map(|kept| Coalition::from_kept(kept))
        .collect()
}

/// Scores `report`'s explanation with `options.metrics` on `model`.
pub fn evaluate(
    model: &Model,
    report: &AttributeReport,
    options: &EvaluateOptions,
) -> Result<Evaluation, EvaluateError> {
    let unit = match &options.unit {
        Some(u) => u.clone(),
        None => default_unit(report)?,
    };
    let mut rescorer = Rescorer::new(model, report, &unit, options.perturbation.clone())?;
    evaluate_with(&mut rescorer, &unit, report, options)
}

/// [`evaluate`] on a rescorer made for `report`'s input and `unit` (shared by several
/// explanations of one input, so coalitions they have in common are evaluated once).
pub fn evaluate_with(
    rescorer: &mut Rescorer,
    unit: &UnitLevel,
    report: &AttributeReport,
    options: &EvaluateOptions,
) -> Result<Evaluation, EvaluateError> {
    let started = Instant::now();
    let before = rescorer.stats().clone();
    let targets = &report.attribution.targets;
    let t = options.target.unwrap_or_else(|| default_target(report));
    if t >= targets.len() {
        return Err(EvaluateError::BadInput(format!(
            "target {t} does not exist: the result has {} targets (0..{})",
            targets.len(),
            targets.len() - 1
        )));
    }
    if rescorer.targets() != targets.as_slice() {
        return Err(EvaluateError::BadInput(
            "the explanation's targets are not those of the prompt being re-scored".into(),
        ));
    }
    let attribution = match unit {
        UnitLevel::Spans(_) => report.attribution.clone(),
        level => report
            .regrouped(level.name(), Aggregation::Sum)
            .map_err(|e| EvaluateError::BadInput(e.to_string()))?,
    };
    let same_units = rescorer.units().len() == attribution.units.len()
        && rescorer
            .units()
            .iter()
            .zip(&attribution.units)
            .all(|(a, b)| a.span == b.span);
    if !same_units {
        return Err(EvaluateError::BadInput(format!(
            "the result's {} units do not match the input's {} {} units on this model",
            attribution.units.len(),
            rescorer.units().len(),
            unit.name()
        )));
    }
    let scores = &attribution.scores[t];
    let plan = FaithfulnessPlan::new(scores, &options.metrics, options.seed)?;
    let n = plan.n_units();
    let values = rescorer.values(&plan_coalitions(&plan))?;
    let mut view = TargetView::new(t);
    if targets.iter().all(|tg| tg.kind == "label_prob") {
        view = view.with_labels((0..targets.len()).collect());
        if targets.len() == 2 {
            view = view.with_foil(1 - t);
        }
    }
    let target = format!("{} ({})", targets[t].label, targets[t].kind);
    let results = plan
        .finish(&values, &view)?
        .into_iter()
        .map(|mut r| {
            r.perturbation = Some(options.perturbation.name().into());
            r.target = Some(target.clone());
            r
        })
        .collect();
    let s = rescorer.stats();
    Ok(Evaluation {
        schema: EVALUATION_SCHEMA.into(),
        model: report.attribution.model.clone(),
        explainer: report.attribution.method.name.clone(),
        input: report.input.clone(),
        unit: unit.name().into(),
        perturbation: options.perturbation.name().into(),
        target,
        n_units: n,
        results,
        // This explanation's share: what the rescorer did for it (coalitions it shares with
        // explanations evaluated earlier on the same rescorer were free).
        cost: Cost {
            evaluations: s.evaluations - before.evaluations,
            forward_passes: s.forward_passes - before.forward_passes,
            tokens: s.tokens - before.tokens,
            tokens_from_scratch: s.tokens_from_scratch - before.tokens_from_scratch,
            seconds: started.elapsed().as_secs_f64(),
        },
        sensitivity: None,
    })
}
