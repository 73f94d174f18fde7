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

use glassbox_kernels::math::{gelu_tanh_mul, rms_norm_rows, rope_half, silu_mul};
use glassbox_kernels::{AttentionShape, KeyFilter, attention};

use crate::capture::{Array, Capture, Hook};
use crate::config::{Activation, ModelConfig};
use crate::kv::{KvCache, KvData};
use crate::mask::AttentionMask;
use crate::model::Model;
use crate::rope::RopeTables;
use crate::RuntimeError;

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
    pub logits: Option<Logits>,
    pub activations: BTreeMap<Hook, Array>,
    pub kv: Option<KvCache>,
}

/// Per-row bookkeeping during a forward call.
struct RowPlan {
    /// First token of the row in the packed batch.
    start: usize,
    len: usize,
    past_len: usize,
    kv: KvData,
    /// Candidate key ranges per query: causal, and causal within the sliding window.
    global: Vec<(usize, usize)>,
    local: Vec<(usize, usize)>,
    blocked: Vec<(Range<usize>, Range<usize>)>,
    logits_at: Vec<usize>,
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
    for (index, row) in rows.into_iter().enumerate() {
        let plan = plan_row(cfg, &row, total).map_err(|e| e.in_row(index))?;
        all_positions.extend_from_slice(&plan.kv.positions[plan.past_len..]);
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

    let (qw, kvw, hd) = (cfg.q_width(), cfg.kv_width(), cfg.head_dim);
    let shape = AttentionShape {
        heads: cfg.num_heads,
        kv_heads: cfg.num_kv_heads,
        head_dim: hd,
        scale: cfg.attention_scale,
    };
    let mut h = vec![0f32; total * d];
    for (l, lw) in weights.layers.iter().enumerate() {
        keep(&mut captured, Hook::ResidPre(l), &x, d);

        // Attention sub-block.
        rms_norm_rows(&x, &lw.attn_norm, cfg.rms_norm_eps, &mut h);
        let mut qkv = lw.qkv.forward(&h, total)?;
        if let Some(bias) = &lw.qkv_bias {
            for row in qkv.chunks_mut(bias.len()) {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
        }
        let (mut q, mut k, v) = split_qkv(&qkv, total, qw, kvw);
        drop(qkv);
        if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
            let qs = q.clone();
            rms_norm_rows(&qs, qn, cfg.rms_norm_eps, &mut q);
            let ks = k.clone();
            rms_norm_rows(&ks, kn, cfg.rms_norm_eps, &mut k);
        }
        let (cos, sin) = ropes.for_layer(l);
        rope_half(&mut q, cfg.num_heads, hd, cos, sin);
        rope_half(&mut k, cfg.num_kv_heads, hd, cos, sin);

        let mut attn = vec![0f32; total * qw];
        let want_pattern = capture.wants(Hook::AttnPattern(l));
        let windowed = cfg.layer_window(l).is_some();
        for (plan, map) in plans.iter_mut().zip(captured.iter_mut()) {
            let rows = plan.start..plan.start + plan.len;
            let (kc, vc) = &mut plan.kv.layers[l];
            kc.extend_from_slice(&k[rows.start * kvw..rows.end * kvw]);
            vc.extend_from_slice(&v[rows.start * kvw..rows.end * kvw]);
            let filter = KeyFilter {
                ranges: if windowed { &plan.local } else { &plan.global },
                blocked: &plan.blocked,
            };
            let keys = plan.past_len + plan.len;
            let mut probs = want_pattern.then(|| vec![0f32; cfg.num_heads * plan.len * keys]);
            attention(
                &q[rows.start * qw..rows.end * qw],
                kc,
                vc,
                shape,
                filter,
                &mut attn[rows.start * qw..rows.end * qw],
                probs.as_deref_mut(),
            );
            if let Some(p) = probs {
                map.insert(
                    Hook::AttnPattern(l),
                    Array::new(vec![cfg.num_heads, plan.len, keys], p),
                );
            }
        }
        drop((q, k, v));
        let mut o = lw.o.forward(&attn, total)?;
        drop(attn);
        if let Some(post) = &lw.post_attn_norm {
            let raw = o.clone();
            rms_norm_rows(&raw, post, cfg.rms_norm_eps, &mut o);
        }
        keep(&mut captured, Hook::AttnOut(l), &o, d);
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        drop(o);
        keep(&mut captured, Hook::ResidMid(l), &x, d);

        // MLP sub-block.
        rms_norm_rows(&x, &lw.ffn_norm, cfg.rms_norm_eps, &mut h);
        let gu = lw.gate_up.forward(&h, total)?;
        let inter = cfg.intermediate_size;
        let mut act = vec![0f32; total * inter];
        for (t, out) in act.chunks_mut(inter).enumerate() {
            let (gate, up) = gu[t * 2 * inter..(t + 1) * 2 * inter].split_at(inter);
            match cfg.activation {
                Activation::Silu => silu_mul(gate, up, out),
                Activation::GeluTanh => gelu_tanh_mul(gate, up, out),
            }
        }
        drop(gu);
        let mut m = lw.down.forward(&act, total)?;
        drop(act);
        if let Some(post) = &lw.post_ffn_norm {
            let raw = m.clone();
            rms_norm_rows(&raw, post, cfg.rms_norm_eps, &mut m);
        }
        keep(&mut captured, Hook::MlpOut(l), &m, d);
        x.iter_mut().zip(&m).for_each(|(a, b)| *a += b);
        keep(&mut captured, Hook::ResidPost(l), &x, d);
    }

    rms_norm_rows(&x, &weights.final_norm, cfg.rms_norm_eps, &mut h);
    keep(&mut captured, Hook::FinalNorm, &h, d);

    // LM head, only at the requested positions of all rows in one GEMM.
    let picked: Vec<usize> = plans
        .iter()
        .flat_map(|p| p.logits_at.iter().map(move |&i| p.start + i))
        .collect();
    let mut selected = Vec::with_capacity(picked.len() * d);
    for &t in &picked {
        selected.extend_from_slice(&h[t * d..(t + 1) * d]);
    }
    let logits = if picked.is_empty() {
        Vec::new()
    } else {
        weights.lm_head.forward(&selected, picked.len())?
    };
    let vocab = weights.lm_head.out_features();

    let mut outputs = Vec::with_capacity(plans.len());
    let mut offset = 0;
    for (plan, activations) in plans.into_iter().zip(captured) {
        let n = plan.logits_at.len();
        let logits = (n > 0).then(|| Logits {
            values: Array::new(
                vec![n, vocab],
                logits[offset * vocab..(offset + n) * vocab].to_vec(),
            ),
            positions: plan.logits_at.clone(),
        });
        offset += n;
        outputs.push(RowOutput {
            logits,
            activations,
            kv: capture.kv.then(|| KvCache {
                data: Arc::new(plan.kv),
            }),
        });
    }
    Ok(outputs)
}

/// Splits fused `[tokens, q | k | v]` projections into three packed buffers.
fn split_qkv(qkv: &[f32], total: usize, qw: usize, kvw: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let width = qw + 2 * kvw;
    let mut q = Vec::with_capacity(total * qw);
    let mut k = Vec::with_capacity(total * kvw);
    let mut v = Vec::with_capacity(total * kvw);
    for row in qkv.chunks(width) {
        q.extend_from_slice(&row[..qw]);
        k.extend_from_slice(&row[qw..qw + kvw]);
        v.extend_from_slice(&row[qw + kvw..]);
    }
    (q, k, v)
}

/// Validates a row and lays out its keys, positions and masks.
fn plan_row(cfg: &ModelConfig, row: &Row, start: usize) -> Result<RowPlan, RuntimeError> {
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
    let mut kv = match &row.past {
        Some(past) => {
            let data = past.clone().into_data();
            if data.layers.len() != cfg.num_layers || data.kv_width != cfg.kv_width() {
                return Err(RuntimeError::InvalidRequest(
                    "the KV cache was made by a different model".into(),
                ));
            }
            data
        }
        None => KvData::empty(cfg.num_layers, cfg.kv_width()),
    };
    let past_len = kv.positions.len();
    let first = kv.positions.last().map_or(0, |p| p + 1);
    let positions: Vec<u32> = match &row.positions {
        Some(p) => {
            if p.len() != len {
                return Err(RuntimeError::BadPositions(format!(
                    "{} positions for {len} tokens",
                    p.len()
                )));
            }
            let mut prev = kv.positions.last().copied();
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
    kv.positions.extend_from_slice(&positions);

    let global: Vec<(usize, usize)> = (0..len).map(|i| (0, past_len + i + 1)).collect();
    let local: Vec<(usize, usize)> = match cfg.sliding_window {
        Some(w) => (0..len)
            .map(|i| {
                let own = past_len + i;
                let pos = kv.positions[own];
                // First key whose position is less than `size` behind the query.
                let first_visible = kv.positions[..=own]
                    .partition_point(|&p| (pos - p) as usize >= w.size);
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
    Ok(RowPlan {
        start,
        len,
        past_len,
        kv,
        global,
        local,
        blocked,
        logits_at,
    })
}
