//! Gradients with respect to the input embeddings (and the residual stream at capture points),
//! by a hand-written backward over the fast forward's own operations.
//!
//! The forward is the fast one ([`Layer`]'s blocks on the packed GEMM), run with a [`Saved`]
//! record per block; the backward walks the blocks in reverse with the backward op of each
//! forward op. Only input gradients are computed — attribution never needs weight gradients —
//! and linear layers differentiate on the same packed weights, so gradients cost about one
//! more forward's worth of arithmetic and no second copy of the model.
//!
//! Many rows (integrated gradients' steps, SmoothGrad's samples, several targets) run as one
//! packed batch, split only where the saved activations would pass [`SAVED_BYTES_PER_BATCH`].

use std::collections::BTreeMap;

use rayon::prelude::*;

use glassbox_kernels::{KeyFilter, attention};

use crate::RuntimeError;
use crate::capture::{Array, Capture, Hook};
use crate::forward::{LogitsAt, Row, RowPlan, plan_row};
use crate::layer::{BackwardScratch, Layer, Saved, Scratch};
use crate::mask::AttentionMask;
use crate::model::Model;
use crate::ops::{norm_backward, norm_forward};
use crate::rope::RopeTables;

/// Bound on the activations one batch of the gradient pass saves for its backward (a batch
/// holds at least one row, whatever its length). At 48 MiB a 135M model's batch is ~80 tokens:
/// enough rows for the GEMMs to run at full speed, and peak memory stays within ~10% of the
/// forward's (the weights dominate it).
pub const SAVED_BYTES_PER_BATCH: usize = 48 << 20;

/// What the forward keeps for the backward.
#[derive(Clone, Copy)]
enum Checkpoints {
    /// Every block's [`Saved`] record: no recomputation. Used when all rows fit the bound.
    EveryOp,
    /// The residual stream before and between each block's sub-blocks; going back, each
    /// block's record is rebuilt from them ([`Layer::rebuild`]: the Q|K|V and gate|up
    /// projections, about two thirds of a forward's arithmetic). Batches are many times larger
    /// within the same memory — on small models the larger GEMMs more than pay for the
    /// recomputation, and the LM head (streamed twice per batch) is read far fewer times. The
    /// last block, whose backward comes first, keeps its record from the forward.
    Streams,
}

/// `buf` cut into consecutive pieces of the given lengths (the rows of a packed batch).
pub(crate) fn split_rows(
    mut buf: &mut [f32],
    lengths: impl Iterator<Item = usize>,
) -> Vec<&mut [f32]> {
    let mut pieces = Vec::new();
    for len in lengths {
        let (piece, rest) = buf.split_at_mut(len);
        pieces.push(piece);
        buf = rest;
    }
    pieces
}

/// The residual stream of one block over a batch, before (`x`) and between (`x_mid`) its
/// sub-blocks, after any patches: what [`Layer::rebuild`] needs.
#[derive(Default)]
struct Stream {
    x: Vec<f32>,
    x_mid: Vec<f32>,
}

/// What the forward keeps of one block for the backward.
enum Kept {
    Record(Saved),
    Stream(Stream),
}

/// Where the forward of one block keeps it.
enum Keep<'a> {
    Record(&'a mut Saved),
    Stream(&'a mut Stream),
}

impl Kept {
    fn as_keep(&mut self) -> Keep<'_> {
        match self {
            Kept::Record(record) => Keep::Record(record),
            Kept::Stream(stream) => Keep::Stream(stream),
        }
    }
}

/// A sequence to differentiate: input embeddings at positions `0..tokens`, no KV cache.
#[derive(Debug, Clone)]
pub struct GradientRow {
    /// `[tokens, hidden]`, row-major (as [`Model::embed`] gives them, scaling included).
    pub embeddings: Vec<f32>,
    pub mask: AttentionMask,
    /// Tokens whose logits the objective reads.
    pub logits_at: Vec<usize>,
    /// Replace the residual stream at this capture point (`resid_pre`, `resid_mid` or
    /// `resid_post`) with these values (`[tokens, hidden]`): what layer integrated gradients
    /// interpolates. Everything after the point then depends on the patch alone, so the
    /// gradients before it (the input's included) are zero.
    pub patch: Option<(Hook, Vec<f32>)>,
}

impl GradientRow {
    /// A row of input embeddings, unmasked and unpatched, read at `logits_at`.
    pub fn new(embeddings: Vec<f32>, logits_at: Vec<usize>) -> Self {
        Self {
            embeddings,
            mask: AttentionMask::default(),
            logits_at,
            patch: None,
        }
    }
}

/// The gradient pass's result for one row.
#[derive(Debug, Clone)]
pub struct RowGradients {
    /// The logits the objective was given, `[logits_at.len(), vocab]`.
    pub logits: Array,
    /// `∂objective/∂embeddings`, `[tokens, hidden]`.
    pub input: Array,
    /// At each requested capture point: its activation and the objective's gradient with
    /// respect to it, both `[tokens, hidden]`.
    pub at: BTreeMap<Hook, (Array, Array)>,
    /// At each requested `blocks.L.attn.pattern`: attention × gradient, `P ⊙ ∂objective/∂P`
    /// (`[heads, tokens, tokens]`), each attention edge's first-order share of the objective.
    pub edges: BTreeMap<Hook, Array>,
}

/// What the caller differentiates: for row `index` and its logits (`[positions, vocab]`),
/// `∂objective/∂logits` in the same layout.
pub type Objective<'a> = dyn Fn(usize, &Array) -> Vec<f32> + Sync + 'a;

impl Model {
    /// Runs the rows forward, asks `objective` for the gradient of each row's objective with
    /// respect to its logits, and propagates it back to the input embeddings (and to the
    /// capture points `hooks`: residual-stream hooks and sub-block outputs).
    pub fn gradients(
        &self,
        rows: Vec<GradientRow>,
        hooks: &[Hook],
        objective: &Objective<'_>,
    ) -> Result<Vec<RowGradients>, RuntimeError> {
        let cfg = self.config();
        if let Some(bad) = hooks.iter().find(|h| !differentiable(**h)) {
            return Err(RuntimeError::BadHook {
                spec: bad.name(),
                why: "gradients are available at the residual stream, the sub-block outputs \
                      (resid_pre, attn.out, resid_mid, mlp.out, resid_post) and the attention \
                      patterns (attn.pattern, as attention × gradient)"
                    .into(),
            });
        }
        Capture {
            hooks: hooks.iter().copied().collect(),
            kv: false,
        }
        .check_layers(cfg.num_layers)?;
        let weights = self.weights();
        let hidden = cfg.hidden_size;
        let record: Vec<usize> = weights
            .layers
            .iter()
            .map(|lw| Saved::floats_per_token(cfg, lw))
            .collect();
        let extra = hidden * (1 + 2 * hooks.len());
        let bytes = |floats: usize| 4 * floats.max(1);
        // Saving every block's record: no recomputation, but few tokens per batch.
        let save_all = SAVED_BYTES_PER_BATCH / bytes(record.iter().sum::<usize>() + extra);
        // Saving the streams only, and two blocks' records (the last one's, and the one being
        // rebuilt) while going back.
        let per_layer = SAVED_BYTES_PER_BATCH
            / bytes(
                weights.layers.len() * 2 * hidden + 2 * record.iter().max().unwrap_or(&0) + extra,
            );
        let tokens_total: usize = rows
            .iter()
            .map(|r| r.embeddings.len() / hidden.max(1))
            .sum();
        let (mode, bound) = if tokens_total <= save_all {
            (Checkpoints::EveryOp, save_all)
        } else {
            (Checkpoints::Streams, per_layer)
        };
        // Batches of about equal size rather than full ones and a small remainder (a batch
        // of a few rows runs its GEMMs far below full speed): each batch aims at an equal
        // share of the tokens still to go, and ends at the row closest to it.
        let bound = bound.max(1);
        let mut batches_left = tokens_total.div_ceil(bound).max(1);
        let mut remaining = tokens_total;
        let mut target = remaining.div_ceil(batches_left);

        let mut out = Vec::with_capacity(rows.len());
        let mut pool = Vec::new();
        let mut batch: Vec<(usize, GradientRow)> = Vec::new();
        let mut tokens = 0;
        let rows_len = rows.len();
        for (index, row) in rows.into_iter().enumerate() {
            let len = row.embeddings.len() / hidden.max(1);
            if !batch.is_empty() && (tokens + len > bound || tokens + len / 2 > target) {
                out.extend(self.gradient_batch(
                    std::mem::take(&mut batch),
                    hooks,
                    objective,
                    mode,
                    &mut pool,
                )?);
                remaining -= tokens;
                batches_left = batches_left.saturating_sub(1).max(1);
                target = remaining.div_ceil(batches_left);
                tokens = 0;
            }
            tokens += len;
            batch.push((index, row));
        }
        if !batch.is_empty() {
            out.extend(self.gradient_batch(batch, hooks, objective, mode, &mut pool)?);
        }
        debug_assert_eq!(out.len(), rows_len);
        Ok(out)
    }

    /// One packed batch: forward with saved activations, then backward. `pool` holds the
    /// records of earlier batches, whose buffers are reused.
    fn gradient_batch(
        &self,
        rows: Vec<(usize, GradientRow)>,
        hooks: &[Hook],
        objective: &Objective<'_>,
        mode: Checkpoints,
        pool: &mut Vec<Saved>,
    ) -> Result<Vec<RowGradients>, RuntimeError> {
        let cfg = self.config();
        let weights = self.weights();
        let d = cfg.hidden_size;
        let eps = cfg.rms_norm_eps;
        let (qw, kvw) = (cfg.q_width(), cfg.kv_width());

        let mut plans: Vec<RowPlan> = Vec::with_capacity(rows.len());
        let mut total = 0;
        let mut positions = Vec::new();
        let mut x = Vec::new();
        let mut indices = Vec::with_capacity(rows.len());
        let mut patches: Vec<Option<(Hook, Vec<f32>)>> = Vec::with_capacity(rows.len());
        for (index, row) in rows {
            if let Some((hook, values)) = &row.patch {
                let residual = matches!(
                    hook,
                    Hook::ResidPre(_) | Hook::ResidMid(_) | Hook::ResidPost(_)
                );
                if !residual || hook.layer().is_some_and(|l| l >= cfg.num_layers) {
                    return Err(RuntimeError::BadHook {
                        spec: hook.name(),
                        why: "patches replace the residual stream of a layer of the model \
                              (resid_pre, resid_mid, resid_post)"
                            .into(),
                    });
                }
                if values.len() != row.embeddings.len() {
                    return Err(RuntimeError::InvalidRequest(format!(
                        "row {index}: a patch of {} values for {} embedding values",
                        values.len(),
                        row.embeddings.len()
                    )));
                }
            }
            patches.push(row.patch);
            let request = Row::embeddings(row.embeddings)
                .with_mask(row.mask)
                .with_logits(LogitsAt::Positions(row.logits_at));
            let plan = plan_row(cfg, &request, None, total).map_err(|e| e.in_row(index))?;
            if plan.logits_at.is_empty() {
                return Err(RuntimeError::InvalidRequest(format!(
                    "row {index}: a gradient needs logits at one position at least"
                )));
            }
            positions.extend_from_slice(&plan.positions);
            total += plan.len;
            if let crate::forward::RowInput::Embeddings(e) = request.input {
                x.extend_from_slice(&e);
            }
            plans.push(plan);
            indices.push(index);
        }
        let ropes = RopeTables::new(cfg, &positions);

        // Attention within each row of the batch, at layer `l`, rows in parallel: one row's
        // heads are too little work to split over threads.
        let attend_rows = |l: usize, q: &[f32], k: &[f32], v: &[f32], attn: &mut [f32]| {
            let windowed = cfg.layer_window(l).is_some();
            let shape = Layer::new(cfg, &weights.layers, l, total, &ropes).shape();
            let outs = split_rows(attn, plans.iter().map(|p| p.len * qw));
            plans.par_iter().zip(outs).for_each(|(plan, out)| {
                let (qr, kr) = (
                    plan.start * qw..(plan.start + plan.len) * qw,
                    plan.start * kvw..(plan.start + plan.len) * kvw,
                );
                let filter = KeyFilter {
                    ranges: if windowed { &plan.local } else { &plan.global },
                    blocked: &plan.blocked,
                };
                attention(
                    &q[qr],
                    &[&k[kr.clone()]],
                    &[&v[kr]],
                    shape,
                    filter,
                    out,
                    None,
                );
            });
        };
        // One block over the batch: patches applied where asked, the block's record saved
        // when given one, its streams when given those.
        let block = |l: usize,
                     x: &mut [f32],
                     scratch: &mut Scratch,
                     keep: Keep<'_>,
                     activations: &mut BTreeMap<Hook, Vec<f32>>|
         -> Result<(), RuntimeError> {
            let layer = Layer::new(cfg, &weights.layers, l, total, &ropes);
            let mut attend =
                |q: &[f32], k: &[f32], v: &[f32], attn: &mut [f32]| attend_rows(l, q, k, v, attn);
            let (mut record, mut stream) = match keep {
                Keep::Record(r) => (Some(r), None),
                Keep::Stream(s) => (None, Some(s)),
            };
            let mut visit = |hook: Hook, buf: &mut [f32]| {
                for (plan, patch) in plans.iter().zip(&patches) {
                    if let Some((_, values)) = patch.as_ref().filter(|p| p.0 == hook) {
                        buf[plan.start * d..(plan.start + plan.len) * d].copy_from_slice(values);
                    }
                }
                if hooks.contains(&hook) {
                    activations.insert(hook, buf.to_vec());
                }
                if let Some(stream) = stream.as_deref_mut() {
                    match hook {
                        Hook::ResidPre(_) => stream.x = buf.to_vec(),
                        Hook::ResidMid(_) => stream.x_mid = buf.to_vec(),
                        _ => {}
                    }
                }
            };
            layer.attention_forward(x, scratch, record.as_deref_mut(), &mut attend, &mut visit)?;
            layer.mlp_forward(x, scratch, record, &mut visit)
        };

        // Forward, saving what the backward reads: every block's record, or only the
        // streams, from which each block's record is rebuilt on the way back.
        let mut activations: BTreeMap<Hook, Vec<f32>> = BTreeMap::new();
        let mut scratch = Scratch::new(cfg, total);
        let layers = weights.layers.len();
        let mut kept: Vec<Kept> = Vec::with_capacity(layers);
        for l in 0..layers {
            let mut keep = if matches!(mode, Checkpoints::EveryOp) || l + 1 == layers {
                Kept::Record(pool.pop().unwrap_or_default())
            } else {
                Kept::Stream(Stream::default())
            };
            block(l, &mut x, &mut scratch, keep.as_keep(), &mut activations)?;
            kept.push(keep);
        }

        // Logits at the requested positions, and the objective's gradient there.
        let vocab = weights.lm_head.out_features();
        let picked: Vec<usize> = plans
            .iter()
            .flat_map(|p| p.logits_at.iter().map(move |&i| p.start + i))
            .collect();
        let mut h = vec![0f32; total * d];
        norm_forward(&x, &weights.final_norm, eps, &mut h);
        let selected: Vec<f32> = picked
            .iter()
            .flat_map(|&t| h[t * d..(t + 1) * d].iter().copied())
            .collect();
        let mut logits = vec![0f32; picked.len() * vocab];
        weights
            .lm_head
            .forward_into(&selected, picked.len(), &mut logits)?;
        let mut row_logits = Vec::with_capacity(plans.len());
        let mut dlogits = Vec::with_capacity(logits.len());
        let mut offset = 0;
        for (plan, &index) in plans.iter().zip(&indices) {
            let n = plan.logits_at.len();
            let values = Array::new(
                vec![n, vocab],
                logits[offset * vocab..(offset + n) * vocab].to_vec(),
            );
            let g = objective(index, &values);
            if g.len() != n * vocab {
                return Err(RuntimeError::InvalidRequest(format!(
                    "row {index}: the objective's gradient has {} values for {n} positions × \
                     {vocab} logits",
                    g.len()
                )));
            }
            dlogits.extend_from_slice(&g);
            row_logits.push(values);
            offset += n;
        }
        drop(logits);

        // Backward: LM head, final norm, then the blocks in reverse.
        let mut dselected = vec![0f32; picked.len() * d];
        weights
            .lm_head
            .backward_into(&dlogits, picked.len(), &mut dselected)?;
        let mut dh = vec![0f32; total * d];
        for (&t, g) in picked.iter().zip(dselected.chunks(d)) {
            dh[t * d..(t + 1) * d]
                .iter_mut()
                .zip(g)
                .for_each(|(a, b)| *a += b);
        }
        let mut dx = vec![0f32; total * d];
        norm_backward(&x, &weights.final_norm, eps, &dh, &mut dx);
        drop((h, dh, x));
        let mut grads: BTreeMap<Hook, Vec<f32>> = BTreeMap::new();
        let mut edges: BTreeMap<Hook, Vec<Array>> = BTreeMap::new();
        let mut back = BackwardScratch::new(cfg, total);
        for l in (0..weights.layers.len()).rev() {
            let layer = Layer::new(cfg, &weights.layers, l, total, &ropes);
            let windowed = cfg.layer_window(l).is_some();
            let filters: Vec<(std::ops::Range<usize>, KeyFilter<'_>)> = plans
                .iter()
                .map(|p| {
                    (
                        p.start..p.start + p.len,
                        KeyFilter {
                            ranges: if windowed { &p.local } else { &p.global },
                            blocked: &p.blocked,
                        },
                    )
                })
                .collect();
            let mut observe = |hook: Hook, buf: &mut [f32]| {
                if hooks.contains(&hook) {
                    grads.insert(hook, buf.to_vec());
                }
                // Upstream of a patch nothing reaches the objective.
                for (plan, patch) in plans.iter().zip(&patches) {
                    if patch.as_ref().is_some_and(|p| p.0 == hook) {
                        buf[plan.start * d..(plan.start + plan.len) * d].fill(0.0);
                    }
                }
            };
            let record = match kept.pop().expect("one record or stream per block") {
                Kept::Record(record) => record,
                Kept::Stream(stream) => {
                    let mut record = pool.pop().unwrap_or_default();
                    let mut attend = |q: &[f32], k: &[f32], v: &[f32], attn: &mut [f32]| {
                        attend_rows(l, q, k, v, attn)
                    };
                    layer.rebuild(
                        &stream.x,
                        &stream.x_mid,
                        &mut scratch,
                        &mut record,
                        &mut attend,
                    )?;
                    record
                }
            };
            layer.mlp_backward(&record, &mut back, &mut dx, &mut observe)?;
            let pattern = Hook::AttnPattern(l);
            let mut row_edges = hooks.contains(&pattern).then(Vec::new);
            layer.attention_backward(
                &record,
                &mut back,
                &filters,
                &mut dx,
                &mut observe,
                row_edges.as_mut(),
            )?;
            if let Some(e) = row_edges {
                edges.insert(pattern, e);
            }
            pool.push(record);
        }

        Ok(plans
            .iter()
            .zip(row_logits)
            .enumerate()
            .map(|(r, (plan, logits))| {
                let rows = plan.start * d..(plan.start + plan.len) * d;
                let part = |buf: &[f32]| Array::new(vec![plan.len, d], buf[rows.clone()].to_vec());
                RowGradients {
                    logits,
                    input: part(&dx),
                    at: hooks
                        .iter()
                        .filter(|h| !matches!(h, Hook::AttnPattern(_)))
                        .map(|&hook| (hook, (part(&activations[&hook]), part(&grads[&hook]))))
                        .collect(),
                    edges: edges
                        .iter()
                        .map(|(&h, per_row)| (h, per_row[r].clone()))
                        .collect(),
                }
            })
            .collect())
    }
}

/// Capture points with a gradient: the residual stream, the sub-block outputs added to it,
/// and the attention patterns (as attention × gradient).
fn differentiable(hook: Hook) -> bool {
    !matches!(hook, Hook::FinalNorm)
}
