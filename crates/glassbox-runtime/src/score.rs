//! Teacher-forced scoring: the log-probability of a given continuation, in one forward pass.
//!
//! Perturbation explanations ask "how likely is *this* answer when the input changes"; the
//! answer is fixed, so it is fed in whole and every token's log-probability is read off the
//! logits of the position before it. No decoding loop.

use glassbox_kernels::math::log_sum_exp;
use serde::Serialize;

use crate::RuntimeError;
use crate::capture::Capture;
use crate::forward::{LogitsAt, Row};
use crate::kv::KvCache;
use crate::model::Model;

/// One scoring question: `continuation` after `context` (after `past`, if given).
#[derive(Debug, Clone)]
pub struct ScoreRequest {
    /// Tokens before the continuation that are not in `past`; at least one (the position that
    /// predicts the first continuation token).
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
    pub past: Option<KvCache>,
}

/// Log-probabilities of each continuation token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContinuationScore {
    pub tokens: Vec<u32>,
    /// `ln p(token_i | everything before it)`.
    pub logprobs: Vec<f32>,
    /// The model's most likely token at each of those positions.
    pub argmax: Vec<u32>,
}

impl ContinuationScore {
    /// Sum of the token log-probabilities: `ln p(continuation | context)`.
    pub fn total(&self) -> f32 {
        self.logprobs.iter().sum()
    }

    /// Mean token log-probability.
    pub fn mean(&self) -> f32 {
        if self.logprobs.is_empty() {
            0.0
        } else {
            self.total() / self.logprobs.len() as f32
        }
    }
}

/// `ln softmax(logits)[token]`.
pub fn log_softmax_at(logits: &[f32], token: u32) -> f32 {
    logits[token as usize] - log_sum_exp(logits)
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Model {
    /// Scores `continuation` after `context` in one forward pass.
    pub fn score(
        &self,
        context: &[u32],
        continuation: &[u32],
    ) -> Result<ContinuationScore, RuntimeError> {
        let request = ScoreRequest {
            context: context.to_vec(),
            continuation: continuation.to_vec(),
            past: None,
        };
        Ok(self.score_batch(vec![request])?.remove(0))
    }

    /// Scores many requests in one batched forward pass.
    pub fn score_batch(
        &self,
        requests: Vec<ScoreRequest>,
    ) -> Result<Vec<ContinuationScore>, RuntimeError> {
        let mut rows = Vec::with_capacity(requests.len());
        let mut continuations = Vec::with_capacity(requests.len());
        for (i, r) in requests.into_iter().enumerate() {
            if r.context.is_empty() {
                return Err(RuntimeError::InvalidRequest(
                    "scoring needs at least one context token before the continuation (e.g. BOS)"
                        .into(),
                )
                .in_row(i));
            }
            if r.continuation.is_empty() {
                return Err(
                    RuntimeError::InvalidRequest("the continuation is empty".into()).in_row(i),
                );
            }
            let start = r.context.len() - 1;
            let end = start + r.continuation.len();
            let mut tokens = r.context;
            // The last continuation token predicts nothing we score: leave it out.
            tokens.extend_from_slice(&r.continuation[..r.continuation.len() - 1]);
            let mut row = Row::tokens(tokens)
                .with_logits(LogitsAt::Range(start..end))
                .with_score(r.continuation.clone());
            if let Some(past) = r.past {
                row = row.with_past(past);
            }
            rows.push(row);
            continuations.push(r.continuation);
        }
        let outputs = self.forward(rows, &Capture::none())?;
        Ok(outputs
            .into_iter()
            .zip(continuations)
            .map(|(out, tokens)| {
                let scores = out.scores.expect("every row asked for scores");
                let logprobs = scores.iter().map(|s| s.logprob).collect();
                let argmax = scores.iter().map(|s| s.argmax).collect();
                ContinuationScore {
                    tokens,
                    logprobs,
                    argmax,
                }
            })
            .collect())
    }
}
