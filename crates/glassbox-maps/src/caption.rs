//! TAM for a vision-language model's answer: one teacher-forced forward pass over the prompt
//! (images in it) and the answer, then maps for every answer token, with the last-layer
//! attention baseline from the same pass.

use std::time::Instant;

use glassbox_runtime::{Capture, Hook, LogitsAt, Row, RuntimeError, argmax, log_softmax_at};
use glassbox_vision::{Prompt, VisionError, VisionLanguageModel};
use serde::Serialize;

use crate::grid::Grid;
use crate::tam::{ContextToken, Mode, ReferenceQuirks, TamError, TamInput, TokenMap, tam};

/// Which TAM to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeChoice {
    #[default]
    Corrected,
    /// The reference code's quirks (its first-token handling), for parity checks.
    Reference,
}

/// An explained answer token.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerToken {
    pub id: u32,
    pub text: String,
    /// Its position in the sequence (prompt + answer).
    pub position: usize,
    /// `ln p(token)` under the model at the position that predicts it.
    pub logprob: f32,
}

/// What [`explain_answer`] returns.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerMaps {
    pub answer: Vec<AnswerToken>,
    pub grids: Vec<Grid>,
    /// One per answer token.
    pub maps: Vec<TokenMap>,
    /// Last-layer attention from each answer token's predicting position to the vision tokens
    /// (mean over heads, min-max normalised over the vision tokens), per grid.
    pub attention: Vec<Vec<Vec<f32>>>,
    /// Seconds in the forward pass and in the maps after it.
    pub forward_seconds: f64,
    pub maps_seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Vision(#[from] VisionError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Tam(#[from] TamError),
    #[error("there is no answer to explain")]
    EmptyAnswer,
}

impl ExplainError {
    pub fn is_input_error(&self) -> bool {
        match self {
            Self::Vision(e) => e.is_input_error(),
            Self::Runtime(e) => e.is_input_error(),
            Self::Tam(TamError::ReferenceUndefined) | Self::EmptyAnswer => true,
            Self::Tam(_) => false,
        }
    }
}

/// Maps for each token of `answer` after `prompt`. `question` is the user's text in the prompt
/// (its tokens are the context TAM subtracts interference from); `None` takes every non-image
/// prompt token after the last image.
pub fn explain_answer(
    model: &VisionLanguageModel,
    prompt: &Prompt,
    question: Option<&str>,
    answer: &[u32],
    mode: ModeChoice,
) -> Result<AnswerMaps, ExplainError> {
    if answer.is_empty() {
        return Err(ExplainError::EmptyAnswer);
    }
    let text = model.text();
    let d = text.config().hidden_size;
    let n = prompt.ids.len();
    let image_positions = prompt.image_positions();
    let last_image = image_positions.last().copied();
    let context: Vec<usize> = match question {
        Some(q) => prompt.positions_of(q),
        None => (last_image.map_or(0, |p| p + 1)..n).collect(),
    };
    let mut embeddings = prompt.embeddings.clone();
    embeddings.extend(text.embed(answer)?.data);
    // Logits where each answer token is predicted, and at the first context token (the
    // reference mode reads its argmax).
    let mut at: Vec<usize> = (0..answer.len()).map(|j| n - 1 + j).collect();
    at.extend(context.first());
    let last_layer = text.config().num_layers - 1;
    let capture = Capture::none()
        .with(Hook::FinalNorm)
        .with(Hook::AttnPattern(last_layer));
    let started = Instant::now();
    let row = Row::embeddings(embeddings).with_logits(LogitsAt::Positions(at.clone()));
    let mut out = text.forward(vec![row], &capture)?.remove(0);
    let forward_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let logits = out.logits.take().expect("logits were asked for");
    let hidden = out
        .activations
        .remove(&Hook::FinalNorm)
        .expect("captured")
        .data;
    let tokenizer = text.tokenizer();
    // Vocabulary pieces tell tokens apart (two different byte tokens both decode to U+FFFD);
    // decoded text is for display.
    let token_text = |id: u32| tokenizer.token_str(id).unwrap_or_default();
    let answer_tokens: Vec<AnswerToken> = answer
        .iter()
        .enumerate()
        .map(|(j, &id)| AnswerToken {
            id,
            text: tokenizer.decode(&[id]).unwrap_or_else(|_| token_text(id)),
            position: n + j,
            logprob: log_softmax_at(logits.at(j), id),
        })
        .collect();
    let grids: Vec<Grid> = prompt
        .images
        .iter()
        .flat_map(|i| &i.tiles)
        .map(|t| Grid {
            positions: t.positions.clone().collect(),
            rows: t.grid.0,
            cols: t.grid.1,
        })
        .collect();
    let prompt_context: Vec<ContextToken> = context
        .iter()
        .map(|&p| ContextToken {
            position: p,
            token: prompt.ids[p],
            text: token_text(prompt.ids[p]),
        })
        .collect();
    let explained: Vec<ContextToken> = answer_tokens
        .iter()
        .map(|a| ContextToken {
            position: a.position - 1,
            token: a.id,
            text: token_text(a.id),
        })
        .collect();
    let mode = match mode {
        ModeChoice::Corrected => Mode::Corrected,
        ModeChoice::Reference => Mode::Reference(ReferenceQuirks {
            last_prompt_token: prompt.ids[n - 1],
            first_prompt_argmax: match context.first() {
                Some(_) => argmax(logits.at(answer.len())),
                None => prompt.ids[n - 1],
            },
        }),
    };
    let head_row = |t: u32| text.lm_head_row(t).unwrap_or_else(|_| vec![0.0; d]);
    let input = TamInput {
        hidden: &hidden,
        d,
        grids: &grids,
        prompt: &prompt_context,
        answer: &explained,
        head_row: &head_row,
    };
    let maps = tam(&input, mode)?;
    let pattern = &out.activations[&Hook::AttnPattern(last_layer)];
    let attention = explained
        .iter()
        .map(|e| attention_map(&pattern.data, &pattern.shape, e.position, &grids))
        .collect();
    Ok(AnswerMaps {
        answer: answer_tokens,
        grids,
        maps,
        attention,
        forward_seconds,
        maps_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Head-mean attention of query `q` to each grid's positions, min-max normalised over all of
/// them. `pattern` is `[heads, queries, keys]`.
fn attention_map(pattern: &[f32], shape: &[usize], q: usize, grids: &[Grid]) -> Vec<Vec<f32>> {
    let (heads, lq, lk) = (shape[0], shape[1], shape[2]);
    let mean = |k: usize| -> f32 {
        (0..heads)
            .map(|h| pattern[(h * lq + q) * lk + k])
            .sum::<f32>()
            / heads as f32
    };
    let raw: Vec<Vec<f32>> = grids
        .iter()
        .map(|g| g.positions.iter().map(|&k| mean(k)).collect())
        .collect();
    let (lo, hi) = raw
        .iter()
        .flatten()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    raw.into_iter()
        .map(|g| {
            g.into_iter()
                .map(|v| if hi > lo { (v - lo) / (hi - lo) } else { 0.0 })
                .collect()
        })
        .collect()
}
