//! Re-scoring a saved result's input with some of its units removed: what faithfulness metrics
//! ask of the model ("does the target drop when the top-scored words go?").
//!
//! A saved [`AttributeReport`] holds the input, the answer's tokens and (in its request record)
//! the prompt's fixed text and the target, so the exact prompt and targets the explanation was
//! made for are rebuilt, whatever method made it — including methods of other tools and the
//! model's own self-explanations written in the same schema. Values come from the evaluation
//! engine (memo, prefix trie, batching); [`Rescorer::values_from_scratch`] is the reference.

use glassbox_report::{AttributeReport, Target, Unit};
use glassbox_runtime::Model;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::gradient::{GradientInput, GradientMethod, gradient_scores};
use super::{
    AnswerSpec, AttributeRequest, InputTemplate, Prepared, PromptFormat, TargetSpec, TokenMethod,
    UnitLevel, prepare_with,
};
use crate::engine::{Engine, EngineStats};
use crate::methods::Method;
use crate::{AttributionError, Coalition, Perturbation};

/// The target values of a saved result's prompt under removals of its units.
pub struct Rescorer<'m> {
    prepared: Prepared,
    engine: Engine<'m>,
    units: Vec<Unit>,
}

impl<'m> Rescorer<'m> {
    /// `report`'s prompt, answer and targets on `model`, its input cut into units at `level`
    /// and removed by `perturbation`.
    pub fn new(
        model: &'m Model,
        report: &AttributeReport,
        level: &UnitLevel,
        perturbation: Perturbation,
    ) -> Result<Self, AttributionError> {
        let prepared = prepare_saved(model, report, level, perturbation.clone())?;
        let (units, owner) = prepared.units.at(level, &report.input)?;
        let placeholder = match perturbation {
            Perturbation::Placeholder => super::gradient::special_token(model, false)?,
            Perturbation::Delete | Perturbation::AttentionBlock => 0,
        };
        let engine = prepared.engine(model, &owner, perturbation, placeholder)?;
        Ok(Self {
            prepared,
            engine,
            units,
        })
    }

    /// The units coalitions are made of.
    pub fn units(&self) -> &[Unit] {
        &self.units
    }

    /// The targets, one value each per coalition.
    pub fn targets(&self) -> &[Target] {
        &self.prepared.targets.labels
    }

    /// Target values for each coalition of kept units, from the engine.
    pub fn values(&mut self, coalitions: &[Coalition]) -> Result<Vec<Vec<f64>>, AttributionError> {
        Ok(self
            .engine
            .readouts(coalitions)?
            .iter()
            .map(|r| self.prepared.targets.from_readout(r))
            .collect())
    }

    /// The same values, each coalition's prompt built whole and run alone (the reference the
    /// engine is held to).
    pub fn values_from_scratch(
        &self,
        coalitions: &[Coalition],
    ) -> Result<Vec<Vec<f64>>, AttributionError> {
        let (readouts, _) = self.engine.from_scratch(coalitions)?;
        Ok(readouts
            .iter()
            .map(|r| self.prepared.targets.from_readout(r))
            .collect())
    }

    /// The engine's work so far.
    pub fn stats(&self) -> &EngineStats {
        self.engine.stats()
    }
}

/// A saved result's request made concrete again on `model`: its prompt, answer tokens and
/// targets, checked against the result.
fn prepare_saved(
    model: &Model,
    report: &AttributeReport,
    level: &UnitLevel,
    perturbation: Perturbation,
) -> Result<Prepared, AttributionError> {
    let record = report.request.as_ref().ok_or_else(|| {
        AttributionError::BadInput(
            "the result has no request record (it was written by another tool or an older \
         version), so its prompt cannot be rebuilt; re-run `glassbox attribute` on the input"
                .into(),
        )
    })?;
    let made_with = &report.attribution.model;
    if made_with != &model.info().name {
        return Err(AttributionError::BadInput(format!(
            "the result was made with model `{made_with}` but `{}` is loaded; pass --model {made_with}",
            model.info().name
        )));
    }
    let format = match report.prompt_format.as_str() {
        "raw" => PromptFormat::Raw,
        "chat" => PromptFormat::Chat,
        other => {
            return Err(AttributionError::BadInput(format!(
                "unknown prompt format `{other}` in the result (raw or chat)"
            )));
        }
    };
    let answer: Vec<u32> = report.answer_tokens.iter().map(|t| t.id).collect();
    if answer.is_empty() {
        return Err(AttributionError::BadInput(
            "the result's answer has no tokens".into(),
        ));
    }
    let request = AttributeRequest {
        input: report.input.clone(),
        template: InputTemplate {
            before: record.before.clone(),
            after: record.after.clone(),
        },
        answer: AnswerSpec::NextToken,
        target: TargetSpec::parse(&record.target)?,
        // Re-scoring runs no attribution method; this one is never called.
        method: TokenMethod::Perturbation(Method::LeaveOneOut),
        unit: level.clone(),
        format,
        system: record.system.clone(),
        perturbation,
        aggregate: report.view.aggregate,
        seed: 0,
    };
    let prepared = prepare_with(model, &request, Some((answer, "given")))?;
    if prepared.targets.labels != report.attribution.targets {
        return Err(AttributionError::BadInput(
            "the result's targets differ from those its request record rebuilds on this \
             model (a different tokenizer?); re-run the explanation"
                .into(),
        ));
    }
    Ok(prepared)
}

/// Captum's default radius of `sensitivity_max` perturbations, here as a fraction of the range
/// of the input's embedding values: δ is uniform in [−r, r] per embedding value.
pub const SENSITIVITY_RADIUS: f64 = 0.02;

/// Max-sensitivity of a saved gradient-method result (Yeh et al. 2019): the largest relative
/// change of its token scores when the input embeddings move by uniform noise of `radius` ×
/// their range, over `samples` seeded draws.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sensitivity {
    pub value: f64,
    pub samples: usize,
    pub radius: f64,
    /// The noise's half-width in embedding units.
    pub epsilon: f64,
    pub target: usize,
    pub seed: u64,
}

/// Re-explains a saved gradient-method result at `samples` perturbed inputs. Perturbation
/// methods work on token ids and cannot be re-run at an embedding point, so their results are
/// refused (their robustness to removals is what infidelity measures).
pub fn gradient_sensitivity(
    model: &Model,
    report: &AttributeReport,
    target: usize,
    samples: usize,
    radius: f64,
    seed: u64,
) -> Result<Sensitivity, AttributionError> {
    let a = &report.attribution;
    let method = GradientMethod::from_saved(&a.method.name, &a.method.params).ok_or_else(|| {
        AttributionError::BadInput(format!(
            "sensitivity_max re-explains under small changes of the input embeddings, which only \
             gradient methods take (saliency, gradxinput, ig, smoothgrad); this result is `{}`",
            a.method.name
        ))
    })?;
    if target >= a.targets.len() {
        return Err(AttributionError::BadInput(format!(
            "target {target} does not exist: the result has {} targets",
            a.targets.len()
        )));
    }
    if !(radius.is_finite() && radius > 0.0) {
        return Err(AttributionError::BadBudget(format!(
            "the sensitivity radius must be a positive number, not {radius}"
        )));
    }
    let prepared = prepare_saved(model, report, &UnitLevel::Token, Perturbation::Delete)?;
    let ids = super::sequence(&prepared);
    let units = prepared.prefix.len()..prepared.prefix.len() + prepared.units.ids.len();
    let first = prepared.prefix.len() + prepared.units.ids.len() + prepared.suffix.len() - 1;
    let explain = |shift: Option<&[f32]>| -> Result<Vec<f64>, AttributionError> {
        let input = GradientInput {
            ids: &ids,
            units: units.clone(),
            first,
            shift,
            empty: false,
        };
        let (estimate, _) = gradient_scores(
            model,
            &input,
            &prepared.targets,
            method,
            a.method.seed.unwrap_or(0),
        )?;
        Ok(estimate.scores[target].clone())
    };
    let base = explain(None)?;
    let d = model.config().hidden_size;
    let rows = &model.embed(&ids)?.data[units.start * d..units.end * d];
    let (lo, hi) = rows
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let epsilon = radius * (hi - lo) as f64;
    let mut rng = StdRng::seed_from_u64(seed);
    let value = glassbox_eval::sensitivity_max(
        |_| {
            let shift: Vec<f32> = (0..rows.len())
                .map(|_| rng.gen_range(-epsilon..=epsilon) as f32)
                .collect();
            explain(Some(&shift))
        },
        &base,
        samples,
    )?;
    Ok(Sensitivity {
        value,
        samples,
        radius,
        epsilon,
        target,
        seed,
    })
}
