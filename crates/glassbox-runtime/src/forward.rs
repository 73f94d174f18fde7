//! The instrumented forward pass over a batch of rows.
//!
//! Rows may differ in length, continue different KV caches, carry their own positions and
//! attention masks, and ask for logits at different positions. Their tokens are packed into
//! one `[tokens, hidden]` matrix, so every projection is one GEMM over the whole batch with no
//! padding; attention runs row by row over each row's own keys. Because the GEMM computes each
//! output row independently, a row's result does not depend on its batch-mates (tested).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use glassbox_kernels::{BlockedSpan, KeyFilter, attention};
use rayon::prelude::*;

use crate::RuntimeError;
use crate::capture::{Array, Capture, Hook};
use crate::config::ModelConfig;
use crate::kv::{KvCache, KvSegment};
use crate::layer::{Layer, Scratch};
use crate::mask::AttentionMask;
use crate::model::Model;
use crate::ops::norm_forward;
use crate::rope::RopeTables;
use crate::score::{argmax, log_softmax_at};

/// The tokens of a row: ids, or input embeddings (already scaled, as [`Model::embed`] gives
/// them) for callers that splice in other vectors (image features, interpolated inputs).
#[derive(Debug, Clone)]
pub enum RowInput {
    Tokens(Vec<u32>),
    /// `[tokens, hidden]`, row-major.
    Embeddings(Vec<f32>),
}

/// Where a row wants logits (indices among the row's new tokens).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum LogitsAt {
    None,
    /// The last token (next-token prediction).
    #[default]
    Last,
    All,
    Range(Range<usize>),
    Positions(Vec<usize>),
}

/// One sequence of a batch.
#[derive(Debug, Clone)]
pub struct Row {
    pub input: RowInput,
    /// Continue this cache (it is copied if shared, extended in place if not).
    pub past: Option<KvCache>,
    /// Positions of the new tokens; by default they follow the cache.
    pub positions: Option<Vec<u32>>,
    pub mask: AttentionMask,
    pub logits: LogitsAt,
    /// Score these tokens at the logit positions (one per position) instead of returning
    /// the logits: only `ln p(token)` and the argmax leave the model, so scoring many rows
    /// never holds `rows × positions × vocab` floats.
    pub score: Option<Vec<u32>>,
}

impl Row {
    pub fn tokens(ids: impl Into<Vec<u32>>) -> Self {
        Self::new(RowInput::Tokens(ids.into()))
    }

    pub fn embeddings(data: Vec<f32>) -> Self {
        Self::new(RowInput::Embeddings(data))
    }

    fn new(input: RowInput) -> Self {
        Self {
            input,
            past: None,
            positions: None,
            mask: AttentionMask::default(),
            logits: LogitsAt::Last,
            score: None,
        }
    }

    pub fn with_past(mut self, past: KvCache) -> Self {
        self.past = Some(past);
        self
    }

    pub fn with_positions(mut self, positions: Vec<u32>) -> Self {
        self.positions = Some(positions);
        self
    }

    pub fn with_mask(mut self, mask: AttentionMask) -> Self {
        self.mask = mask;
        self
    }

    pub fn with_logits(mut self, logits: LogitsAt) -> Self {
        self.logits = logits;
        self
    }

    /// Scores `tokens` at the logit positions (see [`Row::score`]).
    pub fn with_score(mut self, tokens: Vec<u32>) -> Self {
        self.score = Some(tokens);
        self
    }
}

/// A scored token: its log-probability and the most likely token at its position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenScore {
    pub logprob: f32,
    pub argmax: u32,
}

/// Logits of a row at the positions it asked for.
#[derive(Debug, Clone)]
pub struct Logits {
    /// Indices among the row's new tokens.
    pub positions: Vec<usize>,
    /// `[positions, vocab]`.
    pub values: Array,
}

impl Logits {
    /// Logits at the `i`-th requested position.
    pub fn at(&self, i: usize) -> &[f32] {
        self.values.row(i)
    }
}

/// What the forward pass returns for one row.
#[derive(Debug, Clone)]
pub struct RowOutput {
    /// Logits at the requested positions (rows that asked for scores get `scores` instead).
    pub logits: Option<Logits>,
    pub scores: Option<Vec<TokenScore>>,
    pub activations: BTreeMap<Hook, Array>,
    pub kv: Option<KvCache>,
}

/// Per-row bookkeeping during a forward call.
pub(crate) struct RowPlan {
    /// First token of the row in the packed batch.
    pub(crate) start: usize,
    pub(crate) len: usize,
    past_len: usize,
    /// Cache segments shared with the past (read only).
    shared: Vec<Arc<KvSegment>>,
    /// The segment receiving this row's keys and values.
    open: KvSegment,
    /// Positions of every key: past and new.
    pub(crate) positions: Vec<u32>,
    /// Candidate key ranges per query: causal, and causal within the sliding window.
    pub(crate) global: Vec<(usize, usize)>,
    pub(crate) local: Vec<(usize, usize)>,
    pub(crate) blocked: Vec<BlockedSpan>,
    pub(crate) logits_at: Vec<usize>,
    score: Option<Vec<u32>>,
}

pub(crate) fn forward(
    model: &Model,
    rows: Vec<Row>,
    capture: &Capture,
) -> Result<Vec<RowOutput>, RuntimeError> {
    let cfg = model.config();
    let weights = model.weights();
    let d = cfg.hidden_size;
    capture.check_layers(cfg.num_layers)?;

    let mut plans = Vec::with_capacity(rows.len());
    let mut total = 0usize;
    let mut inputs = Vec::with_capacity(rows.len());
    let mut all_positions: Vec<u32> = Vec::new();
    for (index, mut row) in rows.into_iter().enumerate() {
        let past = row.past.take();
        let plan = plan_row(cfg, &row, past, total).map_err(|e| e.in_row(index))?;
        all_positions.extend_from_slice(&plan.positions[plan.past_len..]);
        total += plan.len;
        plans.push(plan);
        inputs.push(row.input);
    }
    if total == 0 {
        return Ok(Vec::new());
    }

    // Input embeddings of the packed batch.
    let mut x = vec![0f32; total * d];
    for (plan, input) in plans.iter().zip(&inputs) {
        let dst = &mut x[plan.start * d..(plan.start + plan.len) * d];
        match input {
            RowInput::Tokens(ids) => {
                weights.embed_into(ids, d, dst);
                if let Some(scale) = cfg.embedding_scale {
                    dst.iter_mut().for_each(|v| *v *= scale);
                }
            }
            RowInput::Embeddings(e) => dst.copy_from_slice(e),
        }
    }
    drop(inputs);

    let ropes = RopeTables::new(cfg, &all_positions);
    let mut captured: Vec<BTreeMap<Hook, Array>> = vec![BTreeMap::new(); plans.len()];
    let spans: Vec<(usize, usize)> = plans.iter().map(|p| (p.start, p.len)).collect();
    let keep = |captured: &mut [BTreeMap<Hook, Array>], hook: Hook, buf: &[f32], width: usize| {
        if capture.wants(hook) {
            for (&(start, len), map) in spans.iter().zip(captured.iter_mut()) {
                let data = buf[start * width..(start + len) * width].to_vec();
                map.insert(hook, Array::new(vec![len, width], data));
            }
        }
    };

    let (qw, kvw) = (cfg.q_width(), cfg.kv_width());
    let eps = cfg.rms_norm_eps;
    let mut scratch = Scratch::new(cfg, total);
    for l in 0..weights.layers.len() {
        let layer = Layer::new(cfg, &weights.layers, l, total, &ropes);
        let shape = layer.shape();
        let want_pattern = capture.wants(Hook::AttnPattern(l));
        let windowed = cfg.layer_window(l).is_some();
        let mut patterns: Vec<Option<Array>> = vec![None; plans.len()];
        let mut attend = |q: &[f32], k: &[f32], v: &[f32], attn: &mut [f32]| {
            for (plan, pattern) in plans.iter_mut().zip(patterns.iter_mut()) {
                let rows = plan.start..plan.start + plan.len;
                let (kc, vc) = &mut plan.open.layers[l];
                kc.extend_from_slice(&k[rows.start * kvw..rows.end * kvw]);
                vc.extend_from_slice(&v[rows.start * kvw..rows.end * kvw]);
                let (kc, vc) = &plan.open.layers[l];
                let key_parts: Vec<&[f32]> = plan
                    .shared
                    .iter()
                    .map(|s| s.layers[l].0.as_slice())
                    .chain([kc.as_slice()])
                    .collect();
                let value_parts: Vec<&[f32]> = plan
                    .shared
                    .iter()
                    .map(|s| s.layers[l].1.as_slice())
                    .chain([vc.as_slice()])
                    .collect();
                let filter = KeyFilter {
                    ranges: if windowed { &plan.local } else { &plan.global },
                    blocked: &plan.blocked,
                };
                let keys = plan.past_len + plan.len;
                let mut probs = want_pattern.then(|| vec![0f32; cfg.num_heads * plan.len * keys]);
                attention(
                    &q[rows.start * qw..rows.end * qw],
                    &key_parts,
                    &value_parts,
                    shape,
                    filter,
                    &mut attn[rows.start * qw..rows.end * qw],
                    probs.as_deref_mut(),
                );
                *pattern = probs.map(|p| Array::new(vec![cfg.num_heads, plan.len, keys], p));
            }
        };
        let mut observe = |hook: Hook, buf: &mut [f32]| keep(&mut captured, hook, buf, d);
        layer.attention_forward(&mut x, &mut scratch, None, &mut attend, &mut observe)?;
        layer.mlp_forward(&mut x, &mut scratch, None, &mut observe)?;
        for (map, pattern) in captured.iter_mut().zip(patterns) {
            if let Some(p) = pattern {
                map.insert(Hook::AttnPattern(l), p);
            }
        }
    }
    drop(scratch);
    let mut h = vec![0f32; total * d];
    norm_forward(&x, &weights.final_norm, eps, &mut h);
    keep(&mut captured, Hook::FinalNorm, &h, d);

    // LM head only at the requested positions, in chunks so that scoring rows never hold
    // more than one chunk of full logits.
    let vocab = weights.lm_head.out_features();
    let picked: Vec<(usize, usize)> = plans
        .iter()
        .enumerate()
        .flat_map(|(p, plan)| (0..plan.logits_at.len()).map(move |k| (p, k)))
        .collect();
    let mut logits_out: Vec<Vec<f32>> = plans
        .iter()
        .map(|p| match p.score {
            None => Vec::with_capacity(p.logits_at.len() * vocab),
            Some(_) => Vec::new(),
        })
        .collect();
    let mut scores_out: Vec<Vec<TokenScore>> = plans.iter().map(|_| Vec::new()).collect();
    let mut selected = Vec::with_capacity(LM_HEAD_ROWS.min(picked.len()) * d);
    let mut logits = vec![0f32; LM_HEAD_ROWS.min(picked.len()) * vocab];
    for chunk in picked.chunks(LM_HEAD_ROWS) {
        selected.clear();
        for &(p, k) in chunk {
            let t = plans[p].start + plans[p].logits_at[k];
            selected.extend_from_slice(&h[t * d..(t + 1) * d]);
        }
        let buf = &mut logits[..chunk.len() * vocab];
        weights.lm_head.forward_into(&selected, chunk.len(), buf)?;
        let scored: Vec<Option<TokenScore>> = chunk
            .par_iter()
            .zip(buf.par_chunks(vocab))
            .map(|(&(p, k), row)| {
                plans[p].score.as_ref().map(|targets| TokenScore {
                    logprob: log_softmax_at(row, targets[k]),
                    argmax: argmax(row),
                })
            })
            .collect();
        for ((&(p, _), row), score) in chunk.iter().zip(buf.chunks(vocab)).zip(scored) {
            match score {
                Some(s) => scores_out[p].push(s),
                None => logits_out[p].extend_from_slice(row),
            }
        }
    }

    let mut outputs = Vec::with_capacity(plans.len());
    for (((plan, activations), values), scores) in plans
        .into_iter()
        .zip(captured)
        .zip(logits_out)
        .zip(scores_out)
    {
        let n = plan.logits_at.len();
        let logits = (n > 0 && plan.score.is_none()).then(|| Logits {
            values: Array::new(vec![n, vocab], values),
            positions: plan.logits_at.clone(),
        });
        outputs.push(RowOutput {
            logits,
            scores: plan.score.is_some().then_some(scores),
            activations,
            kv: capture
                .kv
                .then(|| KvCache::close(plan.shared, plan.open, plan.positions, cfg.kv_width())),
        });
    }
    Ok(outputs)
}

/// Positions per LM-head chunk: bounds the logits held at once (64 × vocab floats).
const LM_HEAD_ROWS: usize = 64;

/// Validates a row and lays out its keys, positions and masks.
pub(crate) fn plan_row(
    cfg: &ModelConfig,
    row: &Row,
    past: Option<KvCache>,
    start: usize,
) -> Result<RowPlan, RuntimeError> {
    let d = cfg.hidden_size;
    let len = match &row.input {
        RowInput::Tokens(ids) => {
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
                return Err(RuntimeError::BadTokenId {
                    id: bad,
                    vocab: cfg.vocab_size,
                });
            }
            ids.len()
        }
        RowInput::Embeddings(e) => {
            if e.len() % d != 0 {
                return Err(RuntimeError::InvalidRequest(format!(
                    "embeddings of {} values are not rows of the hidden size {d}",
                    e.len()
                )));
            }
            e.len() / d
        }
    };
    if len == 0 {
        return Err(RuntimeError::EmptyInput);
    }
    let past = past.unwrap_or_else(|| KvCache::empty(cfg.num_layers, cfg.kv_width()));
    if past.layers != cfg.num_layers || past.kv_width != cfg.kv_width() {
        return Err(RuntimeError::InvalidRequest(
            "the KV cache was made by a different model".into(),
        ));
    }
    let (shared, open, mut all_positions) = past.open(len);
    let past_len = all_positions.len();
    let first = all_positions.last().map_or(0, |p| p + 1);
    let positions: Vec<u32> = match &row.positions {
        Some(p) => {
            if p.len() != len {
                return Err(RuntimeError::BadPositions(format!(
                    "{} positions for {len} tokens",
                    p.len()
                )));
            }
            let mut prev = all_positions.last().copied();
            for &pos in p {
                if prev.is_some_and(|q| pos <= q) {
                    return Err(RuntimeError::BadPositions(
                        "positions must increase along the sequence (cache included)".into(),
                    ));
                }
                prev = Some(pos);
            }
            p.clone()
        }
        None => (first..first + len as u32).collect(),
    };
    let last = *positions.last().expect("len > 0") as usize;
    if last >= cfg.context_length {
        return Err(RuntimeError::ContextOverflow {
            tokens: last + 1,
            window: cfg.context_length,
        });
    }
    all_positions.extend_from_slice(&positions);

    let global: Vec<(usize, usize)> = (0..len).map(|i| (0, past_len + i + 1)).collect();
    let local: Vec<(usize, usize)> = match cfg.sliding_window {
        Some(w) => (0..len)
            .map(|i| {
                let own = past_len + i;
                let pos = all_positions[own];
                // First key whose position is less than `size` behind the query.
                let first_visible =
                    all_positions[..=own].partition_point(|&p| (pos - p) as usize >= w.size);
                (first_visible, own + 1)
            })
            .collect(),
        None => Vec::new(),
    };
    let blocked = row
        .mask
        .for_queries(past_len, len)
        .map_err(RuntimeError::BadMask)?;
    let logits_at = match &row.logits {
        LogitsAt::None => Vec::new(),
        LogitsAt::Last => vec![len - 1],
        LogitsAt::All => (0..len).collect(),
        LogitsAt::Range(r) => r.clone().collect(),
        LogitsAt::Positions(p) => p.clone(),
    };
    if let Some(&bad) = logits_at.iter().find(|&&i| i >= len) {
        return Err(RuntimeError::InvalidRequest(format!(
            "logits requested at token {bad} of a row of {len} tokens"
        )));
    }
    if let Some(targets) = &row.score {
        if targets.len() != logits_at.len() {
            return Err(RuntimeError::InvalidRequest(format!(
                "{} tokens to score at {} positions",
                targets.len(),
                logits_at.len()
            )));
        }
        if let Some(&bad) = targets.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            return Err(RuntimeError::BadTokenId {
                id: bad,
                vocab: cfg.vocab_size,
            });
        }
    }
    Ok(RowPlan {
        start,
        len,
        past_len,
        shared,
        open,
        positions: all_positions,
        global,
        local,
        blocked,
        logits_at,
        score: row.score.clone(),
    })
}
