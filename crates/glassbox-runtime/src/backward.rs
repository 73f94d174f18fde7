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

use glassbox_kernels::{KeyFilter, attention};

use crate::RuntimeError;
use crate::capture::{Array, Capture, Hook};
use crate::forward::{LogitsAt, Row, RowPlan, plan_row};
use crate::layer::{Layer, Saved, Scratch};
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
    /// Each block's input only; going back, each block is run forward again to rebuild its
    /// record. One more forward's arithmetic, but batches many times larger within the same
    /// memory — on small models the larger GEMMs more than pay for it, and the LM head
    /// (streamed twice per batch) is read far fewer times.
    BlockInputs,
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
        // Saving block inputs only, and one block's record at a time while going back.
        let per_layer = SAVED_BYTES_PER_BATCH
            / bytes(weights.layers.len() * hidden + record.iter().max().unwrap_or(&0) + extra);
        let tokens_total: usize = rows
            .iter()
            .map(|r| r.embeddings.len() / hidden.max(1))
            .sum();
        let (mode, bound) = if tokens_total <= save_all {
            (Checkpoints::EveryOp, save_all)
        } else {
            (Checkpoints::BlockInputs, per_layer)
        };
        // Batches of about equal size rather than full ones and a remainder.
        let budget = tokens_total.div_ceil(tokens_total.div_ceil(bound.max(1)).max(1));

        let mut out = Vec::with_capacity(rows.len());
        let mut pool = Vec::new();
        let mut batch: Vec<(usize, GradientRow)> = Vec::new();
        let mut tokens = 0;
        let rows_len = rows.len();
        for (index, row) in rows.into_iter().enumerate() {
            let len = row.embeddings.len() / hidden.max(1);
            if !batch.is_empty() && tokens + len > budget {
                out.extend(self.gradient_batch(
                    std::mem::take(&mut batch),
                    hooks,
                    objective,
                    mode,
                    &mut pool,
                )?);
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

        // One block over the batch: attention within each row, patches applied where asked,
        // the block's record saved when given one.
        let block = |l: usize,
                     x: &mut [f32],
                     scratch: &mut Scratch,
                     record: Option<&mut Saved>,
                     activations: Option<&mut BTreeMap<Hook, Vec<f32>>>|
         -> Result<(), RuntimeError> {
            let layer = Layer::new(cfg, &weights.layers, l, total, &ropes);
            let shape = layer.shape();
            let windowed = cfg.layer_window(l).is_some();
            let mut attend = |q: &[f32], k: &[f32], v: &[f32], attn: &mut [f32]| {
                for plan in &plans {
                    let (qr, kr) = (
                        plan.start * qw..(plan.start + plan.len) * qw,
                        plan.start * kvw..(plan.start + plan.len) * kvw,
                    );
                    let filter = KeyFilter {
                        ranges: if windowed { &plan.local } else { &plan.global },
                        blocked: &plan.blocked,
                    };
                    attention(
                        &q[qr.clone()],
                        &[&k[kr.clone()]],
                        &[&v[kr]],
                        shape,
                        filter,
                        &mut attn[qr],
                        None,
                    );
                }
            };
            let mut activations = activations;
            let mut keep = |hook: Hook, buf: &mut [f32]| {
                for (plan, patch) in plans.iter().zip(&patches) {
                    if let Some((_, values)) = patch.as_ref().filter(|p| p.0 == hook) {
                        buf[plan.start * d..(plan.start + plan.len) * d].copy_from_slice(values);
                    }
                }
                if let Some(map) = activations.as_deref_mut().filter(|_| hooks.contains(&hook)) {
                    map.insert(hook, buf.to_vec());
                }
            };
            let mut record = record;
            layer.attention_forward(x, scratch, record.as_deref_mut(), &mut attend, &mut keep)?;
            layer.mlp_forward(x, scratch, record, &mut keep)
        };

        // Forward, saving what the backward reads: every block's record, or only the blocks'
        // inputs, from which each block is run again on the way back.
        let mut activations: BTreeMap<Hook, Vec<f32>> = BTreeMap::new();
        let mut scratch = Scratch::new(cfg, total);
        let mut saved: Vec<Saved> = Vec::with_capacity(weights.layers.len());
        let mut inputs: Vec<Vec<f32>> = Vec::new();
        for l in 0..weights.layers.len() {
            match mode {
                Checkpoints::EveryOp => {
                    let mut record = pool.pop().unwrap_or_default();
                    block(
                        l,
                        &mut x,
                        &mut scratch,
                        Some(&mut record),
                        Some(&mut activations),
                    )?;
                    saved.push(record);
                }
                Checkpoints::BlockInputs => {
                    // Patches are applied again when the block is rerun.
                    let input = x.clone();
                    block(l, &mut x, &mut scratch, None, Some(&mut activations))?;
                    inputs.push(input);
                }
            }
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
            let record = match mode {
                Checkpoints::EveryOp => saved.pop().expect("one record per block"),
                Checkpoints::BlockInputs => {
                    let mut input = inputs.pop().expect("one input per block");
                    let mut record = pool.pop().unwrap_or_default();
                    block(l, &mut input, &mut scratch, Some(&mut record), None)?;
                    record
                }
            };
            layer.mlp_backward(&record, &mut dx, &mut observe)?;
            let pattern = Hook::AttnPattern(l);
            let mut row_edges = hooks.contains(&pattern).then(Vec::new);
            layer.attention_backward(
                &record,
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
