//! The cheapest baselines: one pass over the full prompt and answer, no coalitions.
//!
//! - **Attention**: how much the positions that predict the answer attend to each passage's
//!   tokens, averaged over the heads of the last layers (summed over the passage's tokens,
//!   averaged over answer positions). Runs the prompt once and the answer rows on its cache.
//! - **Gradient × input**: the answer's log-probability differentiated with respect to the
//!   input embeddings, `∇·x` summed over each passage's tokens (a first-order estimate of
//!   what removing the passage's embeddings would change).
//!
//! Neither is leave-one-out or Shapley; they are what a one-forward (or one-backward) budget
//! buys, reported as estimates with their fidelity measured like the others.

use glassbox_attribution::{Aggregate, AttributionError, Engine, Estimate, TokenSegment};
use glassbox_runtime::{Capture, GradientRow, Hook, LogitsAt, Model, Row};
use serde_json::json;

/// A one-pass estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnePass {
    /// Attention from the answer positions, averaged over the last `layers` layers.
    Attention {
        layers: usize,
    },
    GradientTimesInput,
}

impl OnePass {
    pub fn name(&self) -> &'static str {
        match self {
            OnePass::Attention { .. } => "attention",
            OnePass::GradientTimesInput => "gradxinput",
        }
    }

    pub fn description(&self) -> &'static str {
        match self {
            OnePass::Attention { .. } => {
                "attention from the answer's positions to each passage's tokens, mean over heads \
                 of the last layers (one pass; not leave-one-out)"
            }
            OnePass::GradientTimesInput => {
                "gradient of the answer's log-probability times the input embeddings, summed per \
                 passage (one forward and backward; not leave-one-out)"
            }
        }
    }

    pub fn params(&self) -> serde_json::Value {
        match self {
            OnePass::Attention { layers } => json!({ "last_layers": layers }),
            OnePass::GradientTimesInput => json!({}),
        }
    }
}

/// Default number of last layers the attention estimate averages.
pub const DEFAULT_ATTENTION_LAYERS: usize = 4;

/// The full prompt's tokens and each unit's token span in it.
fn layout(engine: &Engine<'_>) -> (Vec<u32>, Vec<std::ops::Range<usize>>) {
    let mut tokens = Vec::new();
    let mut spans = vec![0..0; engine.units()];
    for p in engine.pieces() {
        match p {
            TokenSegment::Fixed(t) => tokens.extend_from_slice(t),
            TokenSegment::Unit { unit, kept, .. } => {
                spans[*unit] = tokens.len()..tokens.len() + kept.len();
                tokens.extend_from_slice(kept);
            }
        }
    }
    (tokens, spans)
}

/// Scores every passage by `how` (one target: the whole answer). Returns the estimate and
/// the tokens run.
pub fn one_pass(
    engine: &Engine<'_>,
    how: OnePass,
    aggregate: Aggregate,
) -> Result<(Estimate, usize), AttributionError> {
    let model = engine.model();
    let (prompt, spans) = layout(engine);
    let answer = engine.answer();
    let m = answer.len();
    let (per_token, tokens_run) = match how {
        OnePass::Attention { layers } => attention(model, &prompt, answer, layers)?,
        OnePass::GradientTimesInput => {
            let mut grads = gradient_times_input(model, &prompt, answer)?;
            if aggregate == Aggregate::Mean {
                grads.iter_mut().for_each(|g| *g /= m as f64);
            }
            (grads, prompt.len() + m - 1)
        }
    };
    let scores: Vec<f64> = spans
        .iter()
        .map(|s| per_token[s.clone()].iter().sum())
        .collect();
    Ok((
        Estimate {
            scores: vec![scores],
            std_errors: None,
            value_full: Vec::new(),
            value_empty: Vec::new(),
            params: how.params(),
            diagnostics: serde_json::Value::Null,
        },
        tokens_run,
    ))
}

/// Attention mass per prompt token from the answer-predicting positions.
fn attention(
    model: &Model,
    prompt: &[u32],
    answer: &[u32],
    layers: usize,
) -> Result<(Vec<f64>, usize), AttributionError> {
    let total_layers = model.config().num_layers;
    if layers == 0 || layers > total_layers {
        return Err(AttributionError::BadInput(format!(
            "attention over the last {layers} layers of a model with {total_layers}"
        )));
    }
    let (head, last) = prompt.split_at(prompt.len() - 1);
    let cache = model
        .forward(
            vec![Row::tokens(head.to_vec()).with_logits(LogitsAt::None)],
            &Capture::kv(),
        )?
        .remove(0)
        .kv
        .expect("asked for the cache");
    let mut queries = last.to_vec();
    queries.extend_from_slice(&answer[..answer.len() - 1]);
    let mut capture = Capture::none();
    for l in total_layers - layers..total_layers {
        capture = capture.with(Hook::AttnPattern(l));
    }
    let out = model
        .forward(
            vec![
                Row::tokens(queries.clone())
                    .with_past(cache)
                    .with_logits(LogitsAt::None),
            ],
            &capture,
        )?
        .remove(0);
    let heads = model.config().num_heads;
    let (lq, keys) = (queries.len(), head.len() + queries.len());
    let mut mass = vec![0f64; prompt.len()];
    for pattern in out.activations.values() {
        for h in 0..heads {
            for q in 0..lq {
                let row = &pattern.data[(h * lq + q) * keys..(h * lq + q + 1) * keys];
                for (k, &p) in row[..prompt.len()].iter().enumerate() {
                    mass[k] += f64::from(p);
                }
            }
        }
    }
    let norm = (layers * heads * lq) as f64;
    mass.iter_mut().for_each(|v| *v /= norm);
    Ok((mass, prompt.len() + lq - 1))
}

/// `∇·x` per prompt token for the answer's total log-probability.
fn gradient_times_input(
    model: &Model,
    prompt: &[u32],
    answer: &[u32],
) -> Result<Vec<f64>, AttributionError> {
    let m = answer.len();
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(&answer[..m - 1]);
    let embeddings = model.embed(&ids)?;
    let first = prompt.len() - 1;
    let row = GradientRow::new(embeddings.data.clone(), (first..first + m).collect());
    let vocab = model.config().vocab_size;
    let out = model
        .gradients(vec![row], &[], &|_, logits| {
            // ∂/∂logits of Σ_j ln softmax(logits_j)[answer_j] = one-hot − softmax.
            let mut g = vec![0f32; m * vocab];
            for j in 0..m {
                let row = logits.row(j);
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
                for (t, &v) in row.iter().enumerate() {
                    g[j * vocab + t] = -((f64::from(v - max).exp() / sum) as f32);
                }
                g[j * vocab + answer[j] as usize] += 1.0;
            }
            g
        })?
        .remove(0);
    let d = model.config().hidden_size;
    Ok((0..prompt.len())
        .map(|t| {
            let (g, x) = (
                &out.input.data[t * d..(t + 1) * d],
                &embeddings.data[t * d..(t + 1) * d],
            );
            g.iter()
                .zip(x)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum()
        })
        .collect())
}
