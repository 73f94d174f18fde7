//! Asking the model: its prediction (from the label words' probabilities), then its own
//! explanation of it (a generated answer to a protocol's prompt), read into an attribution.
//!
//! The self-explanation becomes an ordinary `glassbox.attribute/1` report over the input's
//! word units, with the classification prompt and label target of the prediction it explains,
//! so every metric, view, heatmap and comparison works on it as on occlusion or LIME.

use std::time::Instant;

use glassbox_attribution::attribute::{
    AnswerSpec, AttributeRequest, InputTemplate, Prepared, PromptFormat, TargetSpec, TokenMethod,
    UnitLevel, full_values, prepare, report,
};
use glassbox_attribution::{Method, Perturbation};
use glassbox_report::{
    ATTRIBUTION_SCHEMA, Aggregation, AttributeReport, Attribution, Cost, MethodInfo,
};
use glassbox_runtime::{ChatMessage, GenerateOptions, Model, Sampling};
use serde::Serialize;

use crate::SelfExplainError;
use crate::parse::{AnswerFormat, ParsedExplanation, parse_explanation};
use crate::task::{Framing, Order, Protocol, Task};

/// Longest self-explanation generated when not given: a top-3 list or a score per word of a
/// 25-word snippet fits.
pub const DEFAULT_MAX_TOKENS: usize = 96;

/// The request that classifies `input` with `framing`: the label words' probabilities for the
/// next token (the `label:` target), over the input's words.
pub fn classification_request(
    framing: &Framing,
    input: &str,
) -> Result<AttributeRequest, SelfExplainError> {
    Ok(AttributeRequest {
        input: input.to_string(),
        template: InputTemplate::parse(&framing.template)?,
        answer: AnswerSpec::NextToken,
        target: TargetSpec::Label(framing.labels.clone()),
        // The request is used to prepare prompts and targets; attribution methods are chosen
        // by whoever explains it.
        method: TokenMethod::Perturbation(Method::LeaveOneOut),
        unit: UnitLevel::Word,
        format: if framing.chat {
            PromptFormat::Chat
        } else {
            PromptFormat::Raw
        },
        system: None,
        perturbation: Perturbation::Delete,
        aggregate: Aggregation::Sum,
        seed: 0,
    })
}

/// The model's prediction for an input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// Index of the most probable label.
    pub label: usize,
    /// Each label's probability among the labels.
    pub probs: Vec<f64>,
    /// The same with every input word deleted (the prompt's fixed text alone).
    pub probs_without_input: Vec<f64>,
    /// Contextual calibration (Zhao et al. 2021): each label's probability divided by its
    /// probability for a content-free input — here the prompt with the input deleted — and
    /// renormalized, which removes the framing's own lean towards a label. Reported beside
    /// the prediction; explanations explain the uncalibrated probabilities the model has.
    pub calibrated: Vec<f64>,
    /// The most probable label after calibration.
    pub calibrated_label: usize,
}

/// Index of the largest value (the first on ties).
fn best(values: &[f64]) -> Option<usize> {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map(|(i, _)| i)
}

/// `p / p_content_free`, renormalized (uniform when the content-free probabilities vanish).
fn calibrate(probs: &[f64], content_free: &[f64]) -> Vec<f64> {
    let ratios: Vec<f64> = probs
        .iter()
        .zip(content_free)
        .map(|(p, q)| if *q > 0.0 { p / q } else { 0.0 })
        .collect();
    let total: f64 = ratios.iter().sum();
    if total > 0.0 && total.is_finite() {
        ratios.iter().map(|r| r / total).collect()
    } else {
        vec![1.0 / probs.len() as f64; probs.len()]
    }
}

/// Classifies a prepared classification request (one batched pass: with and without the
/// input).
pub fn classify(model: &Model, prepared: &Prepared) -> Result<Classification, SelfExplainError> {
    let (probs, probs_without_input) = full_values(model, prepared)?;
    let no_labels = || SelfExplainError::BadInput("the task has no labels".into());
    let label = best(&probs).ok_or_else(no_labels)?;
    let calibrated = calibrate(&probs, &probs_without_input);
    let calibrated_label = best(&calibrated).ok_or_else(no_labels)?;
    Ok(Classification {
        label,
        probs,
        probs_without_input,
        calibrated,
        calibrated_label,
    })
}

/// A self-explanation and what came with it.
#[derive(Debug, Clone)]
pub struct SelfExplanation {
    /// The explanation as an attribution report (method `self_explanation`), re-scorable.
    pub report: AttributeReport,
    pub parsed: ParsedExplanation,
    pub classification: Classification,
    /// The label the model wrote after explaining (explain-then-predict), if one was found.
    pub stated_label: Option<usize>,
    /// The elicitation prompt, as text.
    pub prompt: String,
}

/// Asks the model to explain its prediction for `input` under `protocol`, and reads the
/// answer. Chat models get the protocol's user message and assistant opening in their chat
/// template; base models a few-shot prompt of the task's examples.
pub fn self_explain(
    model: &Model,
    task: &Task,
    framing: &Framing,
    protocol: &Protocol,
    input: &str,
    max_tokens: usize,
) -> Result<SelfExplanation, SelfExplainError> {
    let started = Instant::now();
    let request = classification_request(framing, input)?;
    let prepared = prepare(model, &request)?;
    let classification = classify(model, &prepared)?;
    if protocol.format == AnswerFormat::Scores && task.label_names.len() != 2 {
        return Err(SelfExplainError::BadInput(format!(
            "the score protocol `{}` scores words towards one of two labels; task `{}` has {}",
            protocol.name,
            task.name,
            task.label_names.len()
        )));
    }
    let prediction = &task.label_names[classification.label];
    let fill = |template: &str| fill(template, task, protocol, input, prediction);
    // Base models see the format in the few-shot examples and continue the query as written;
    // an opening cut mid-pattern (`[` where the examples tokenize `["`) derails them.
    let answer_prefix = if model.has_chat_template() {
        fill(&protocol.answer_prefix)
    } else {
        String::new()
    };
    let prompt = if model.has_chat_template() {
        let user = ChatMessage {
            role: "user".into(),
            content: fill(&protocol.user),
        };
        let head = model.render_chat(&[user], true)?;
        format!("{head}{}{answer_prefix}", fill(&protocol.assistant))
    } else {
        let mut text = String::new();
        for ex in &task.examples {
            text.push_str(&fill_example(&protocol.shot, task, ex));
        }
        text.push_str(&fill(&protocol.query));
        text
    };
    let tokenizer = model.tokenizer();
    let ids = tokenizer
        .encode(&prompt, !model.has_chat_template() && tokenizer.wants_bos())
        .map_err(glassbox_runtime::RuntimeError::from)?
        .ids;
    let generation = model.generate(
        &ids,
        &GenerateOptions {
            max_new_tokens: max_tokens,
            sampling: Sampling::Greedy,
            stop_at_eos: true,
        },
    )?;
    let mut answer = tokenizer
        .decode(&generation.tokens)
        .map_err(glassbox_runtime::RuntimeError::from)?;
    // A base model goes on to invent the next example after a blank line.
    if !model.has_chat_template()
        && let Some(end) = answer.find("\n\n")
    {
        answer.truncate(end);
    }
    let text = format!("{answer_prefix}{answer}");
    let (explanation, tail) = match protocol.order {
        Order::ExplainThenPredict => split_stated_label(&text, task),
        Order::PredictThenExplain => (text.as_str(), None),
    };
    let parsed = parse_explanation(explanation, &protocol.format, &prepared.units.words);
    let stated_label = tail;
    let rows = score_rows(
        &parsed.scores,
        &protocol.format,
        classification.label,
        task.label_names.len(),
    );
    let attribution = Attribution {
        schema: ATTRIBUTION_SCHEMA.into(),
        model: model.info().name.clone(),
        method: MethodInfo {
            name: "self_explanation".into(),
            params: serde_json::json!({
                "protocol": protocol.name,
                "version": protocol.version,
                "format": protocol.format,
                "task": task.name,
                "max_tokens": max_tokens,
            }),
            seed: None,
        },
        perturbation: "none (self-explanation)".into(),
        units: prepared.units.words.clone(),
        targets: prepared.targets.labels.clone(),
        scores: rows,
        std_errors: None,
        value_full: classification.probs.clone(),
        value_empty: classification.probs_without_input.clone(),
        cost: Cost {
            evaluations: 1,
            forward_passes: 2 + generation.tokens.len().saturating_sub(1),
            tokens: ids.len() + prepared.prompt().len() + generation.tokens.len(),
            tokens_from_scratch: ids.len() + prepared.prompt().len() + generation.tokens.len(),
            seconds: started.elapsed().as_secs_f64(),
        },
        diagnostics: serde_json::json!({
            "raw": parsed.raw,
            "status": parsed.status,
            "usable": parsed.is_usable(),
            "unmatched": parsed.unmatched,
            "stated_label": stated_label.map(|l| task.label_names[l].clone()),
            "prompt": prompt,
        }),
    };
    let report = report(model, &request, &prepared, attribution)?;
    Ok(SelfExplanation {
        report,
        parsed,
        classification,
        stated_label,
        prompt,
    })
}

/// One score row per label target. A top-k answer names what pushed towards the predicted
/// label; a score answer scores towards the first label. With two labels, what raises one
/// label's probability among the two lowers the other's by as much, so the other row is the
/// negation; with more labels only the explained label's row carries scores.
fn score_rows(
    scores: &[f64],
    format: &AnswerFormat,
    predicted: usize,
    labels: usize,
) -> Vec<Vec<f64>> {
    let towards = match format {
        AnswerFormat::TopK { .. } => predicted,
        AnswerFormat::Scores => 0,
    };
    (0..labels)
        .map(|l| {
            if l == towards {
                scores.to_vec()
            } else if labels == 2 {
                scores.iter().map(|s| -s).collect()
            } else {
                vec![0.0; scores.len()]
            }
        })
        .collect()
}

/// Splits an explain-then-predict answer at the label the model wrote last: the explanation
/// before it, and which label it was.
fn split_stated_label<'a>(text: &'a str, task: &Task) -> (&'a str, Option<usize>) {
    let lower = text.to_lowercase();
    let found = task
        .label_names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| lower.rfind(&name.to_lowercase()).map(|at| (at, i)))
        .max();
    match found {
        // Lowercasing can move byte offsets in rare scripts; keep the whole text then.
        Some((at, label)) if text.is_char_boundary(at) && at > 0 => (&text[..at], Some(label)),
        Some((_, label)) => (text, Some(label)),
        None => (text, None),
    }
}

fn fill(template: &str, task: &Task, protocol: &Protocol, input: &str, prediction: &str) -> String {
    let k = match protocol.format {
        AnswerFormat::TopK { k } => k.to_string(),
        AnswerFormat::Scores => String::new(),
    };
    template
        .replace("{question}", &task.question)
        .replace("{labels}", &task.labels_phrase())
        .replace("{first_label}", &task.label_names[0])
        .replace(
            "{second_label}",
            task.label_names.get(1).map_or("", String::as_str),
        )
        .replace("{k}", &k)
        .replace("{prediction}", prediction)
        .replace(
            "{first_word}",
            input.split_whitespace().next().unwrap_or_default(),
        )
        .replace("{input}", input)
}

fn fill_example(template: &str, task: &Task, ex: &crate::task::Example) -> String {
    let words = serde_json::to_string(&ex.words).unwrap_or_default();
    let scores: String = ex
        .input
        .split_whitespace()
        .zip(&ex.scores)
        .map(|(w, s)| format!("{w}: {s}\n"))
        .collect();
    template
        .replace("{label}", &task.label_names[ex.label])
        .replace("{words}", &words)
        .replace("{scores}", scores.trim_end())
        .replace("{input}", &ex.input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_label_rows_mirror_each_other_and_follow_the_format() {
        let s = [0.5, 0.0, -1.0];
        let topk = score_rows(&s, &AnswerFormat::TopK { k: 2 }, 1, 2);
        assert_eq!(topk, vec![vec![-0.5, -0.0, 1.0], s.to_vec()]);
        let scores = score_rows(&s, &AnswerFormat::Scores, 1, 2);
        assert_eq!(
            scores[0],
            s.to_vec(),
            "scores point towards the first label"
        );
        let three = score_rows(&s, &AnswerFormat::TopK { k: 2 }, 2, 3);
        assert_eq!(three[0], vec![0.0; 3]);
        assert_eq!(three[2], s.to_vec());
    }

    #[test]
    fn calibration_removes_the_framing_lean() {
        // The framing alone says 0.8 / 0.2; the input 0.6 / 0.4 leans negative relative to it:
        // 0.6/0.8 = 0.75 and 0.4/0.2 = 2 → 0.75/2.75 and 2/2.75.
        let c = calibrate(&[0.6, 0.4], &[0.8, 0.2]);
        assert!((c[0] - 0.75 / 2.75).abs() < 1e-12 && (c[1] - 2.0 / 2.75).abs() < 1e-12);
        assert_eq!(best(&c), Some(1));
        assert_eq!(calibrate(&[0.5, 0.5], &[0.0, 0.0]), vec![0.5, 0.5]);
    }

    #[test]
    fn the_stated_label_is_the_last_one_written() {
        let task = Task::load("sentiment").unwrap();
        let (head, label) = split_stated_label("[\"dull\"] so not positive: Negative.", &task);
        assert_eq!(label, Some(1));
        assert_eq!(head, "[\"dull\"] so not positive: ");
        assert_eq!(
            split_stated_label("[\"dull\"]", &task),
            ("[\"dull\"]", None)
        );
    }
}
