//! One transformer block as a short sequence of [`ops`](crate::ops) calls, in both
//! directions: the fast forward runs [`Layer::attention_forward`] and [`Layer::mlp_forward`];
//! the gradient pass runs the same two with a [`Saved`] record and then
//! [`Layer::mlp_backward`] and [`Layer::attention_backward`] on it.

use glassbox_kernels::{AttentionShape, KeyFilter, attention_backward};
use rayon::prelude::*;

use crate::RuntimeError;
use crate::backward::split_rows;
use crate::capture::{Array, Hook};
use crate::config::ModelConfig;
use crate::ops::{
    QkvWidths, gate_backward, gate_forward, heads_backward, heads_forward, linear_backward,
    linear_forward, norm_backward, norm_forward, norm_in_place, norm_in_place_backward,
    residual_add, split_qkv_backward, split_qkv_forward,
};
use crate::rope::RopeTables;
use crate::weights::LayerWeights;

/// Runs attention: `(q, k, v, out)` over the packed batch (how keys are found is the caller's:
/// KV caches in the fast forward, each row's own tokens in the gradient pass).
pub(crate) type Attend<'a> = dyn FnMut(&[f32], &[f32], &[f32], &mut [f32]) + 'a;

/// Buffers of one block over a packed batch of `tokens`, reused layer after layer (fresh
/// multi-megabyte allocations per layer cost page faults that showed up as several percent
/// of a batched forward).
pub(crate) struct Scratch {
    h: Vec<f32>,
    qkv: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub attn: Vec<f32>,
    delta: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
}

impl Scratch {
    pub(crate) fn new(cfg: &ModelConfig, tokens: usize) -> Self {
        let (d, qw, kvw, inter) = (
            cfg.hidden_size,
            cfg.q_width(),
            cfg.kv_width(),
            cfg.intermediate_size,
        );
        Self {
            h: vec![0f32; tokens * d],
            qkv: vec![0f32; tokens * (qw + 2 * kvw)],
            q: vec![0f32; tokens * qw],
            k: vec![0f32; tokens * kvw],
            v: vec![0f32; tokens * kvw],
            attn: vec![0f32; tokens * qw],
            delta: vec![0f32; tokens * d],
            gu: vec![0f32; tokens * 2 * inter],
            act: vec![0f32; tokens * inter],
        }
    }
}

/// Buffers of one block's backward over a packed batch, reused layer after layer as
/// [`Scratch`] is in the forward: on a 3k-token prompt each block's backward needs ~100 MB of
/// them, and fresh ones every block spent a tenth of the gradient in page faults.
pub(crate) struct BackwardScratch {
    delta: Vec<f32>,
    h: Vec<f32>,
    act: Vec<f32>,
    gu: Vec<f32>,
    attn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    qkv: Vec<f32>,
}

impl BackwardScratch {
    pub(crate) fn new(cfg: &ModelConfig, tokens: usize) -> Self {
        let (d, qw, kvw, inter) = (
            cfg.hidden_size,
            cfg.q_width(),
            cfg.kv_width(),
            cfg.intermediate_size,
        );
        Self {
            delta: vec![0f32; tokens * d],
            h: vec![0f32; tokens * d],
            act: vec![0f32; tokens * inter],
            gu: vec![0f32; tokens * 2 * inter],
            attn: vec![0f32; tokens * qw],
            q: vec![0f32; tokens * qw],
            k: vec![0f32; tokens * kvw],
            v: vec![0f32; tokens * kvw],
            qkv: vec![0f32; tokens * (qw + 2 * kvw)],
        }
    }
}

/// What a block's backward needs from its forward: the inputs of the ops whose backward reads
/// them (linear layers need none, as only input gradients are computed).
#[derive(Default)]
pub(crate) struct Saved {
    /// The block's input (the attention norm's input).
    x: Vec<f32>,
    /// Query and key heads before their norms (Gemma 3 only).
    q_pre: Option<Vec<f32>>,
    k_pre: Option<Vec<f32>>,
    /// Queries, keys, values as attention read them (after norms and rotary embeddings).
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Attention and MLP outputs before Gemma's post-norms.
    attn_pre: Option<Vec<f32>>,
    mlp_pre: Option<Vec<f32>>,
    /// The residual stream between the sub-blocks (the MLP norm's input).
    x_mid: Vec<f32>,
    /// Gate and up projections (the activation's input).
    gu: Vec<f32>,
}

impl Saved {
    /// Floats saved per token for a block: sizes the gradient pass's batches.
    pub(crate) fn floats_per_token(cfg: &ModelConfig, lw: &LayerWeights) -> usize {
        let (d, qw, kvw) = (cfg.hidden_size, cfg.q_width(), cfg.kv_width());
        let extra = |present: bool, n: usize| if present { n } else { 0 };
        2 * d
            + qw
            + 2 * kvw
            + 2 * cfg.intermediate_size
            + extra(lw.q_norm.is_some(), qw)
            + extra(lw.k_norm.is_some(), kvw)
            + extra(lw.post_attn_norm.is_some(), d)
            + extra(lw.post_ffn_norm.is_some(), d)
    }
}

/// Overwrites `dst` with `src`, reusing its allocation: records are recycled from batch to
/// batch, and fresh multi-megabyte buffers cost page faults on every batch.
fn refill(dst: &mut Vec<f32>, src: &[f32]) {
    dst.clear();
    dst.extend_from_slice(src);
}

/// [`refill`] for a record kept only when the model has the op that reads it.
fn refill_if(dst: &mut Option<Vec<f32>>, present: bool, src: &[f32]) {
    if present {
        refill(dst.get_or_insert_with(Vec::new), src);
    } else {
        *dst = None;
    }
}

/// One block's settings and weights for a call over `tokens` packed tokens.
pub(crate) struct Layer<'a> {
    pub cfg: &'a ModelConfig,
    pub weights: &'a LayerWeights,
    pub index: usize,
    pub tokens: usize,
    /// Rotary tables of the tokens (`[tokens, head_dim / 2]` each).
    pub cos: &'a [f32],
    pub sin: &'a [f32],
}

impl<'a> Layer<'a> {
    /// Block `index` of the model for a call over `tokens` tokens with rotary tables `ropes`.
    pub(crate) fn new(
        cfg: &'a ModelConfig,
        weights: &'a [LayerWeights],
        index: usize,
        tokens: usize,
        ropes: &'a RopeTables,
    ) -> Self {
        let (cos, sin) = ropes.for_layer(index);
        Self {
            cfg,
            weights: &weights[index],
            index,
            tokens,
            cos,
            sin,
        }
    }

    fn widths(&self) -> QkvWidths {
        QkvWidths {
            q: self.cfg.q_width(),
            kv: self.cfg.kv_width(),
        }
    }

    pub(crate) fn shape(&self) -> AttentionShape {
        AttentionShape {
            heads: self.cfg.num_heads,
            kv_heads: self.cfg.num_kv_heads,
            head_dim: self.cfg.head_dim,
            scale: self.cfg.attention_scale,
        }
    }

    /// `x += attention(norm(x))`. `attend(q, k, v, out)` runs the attention itself (the fast
    /// forward extends KV caches there; the gradient pass attends within each row); `visit`
    /// sees the capture points, and may overwrite them (activation patching).
    pub(crate) fn attention_forward(
        &self,
        x: &mut [f32],
        s: &mut Scratch,
        mut save: Option<&mut Saved>,
        attend: &mut Attend<'_>,
        visit: &mut dyn FnMut(Hook, &mut [f32]),
    ) -> Result<(), RuntimeError> {
        let lw = self.weights;
        visit(Hook::ResidPre(self.index), x);
        self.attention_inputs(x, s, save.as_deref_mut())?;
        self.attention_output(s, save, attend)?;
        let out = (Hook::AttnOut(self.index), Hook::ResidMid(self.index));
        self.add_to_stream(x, &mut s.delta, lw.post_attn_norm.as_deref(), out, visit);
        Ok(())
    }

    /// `x += post_norm(delta)` for a sub-block's output `delta`, visiting the output and then
    /// the stream (`hooks`).
    fn add_to_stream(
        &self,
        x: &mut [f32],
        delta: &mut [f32],
        post_norm: Option<&[f32]>,
        hooks: (Hook, Hook),
        visit: &mut dyn FnMut(Hook, &mut [f32]),
    ) {
        if let Some(post) = post_norm {
            norm_in_place(delta, post, self.cfg.rms_norm_eps);
        }
        visit(hooks.0, delta);
        residual_add(x, delta, self.cfg.hidden_size);
        visit(hooks.1, x);
    }

    /// Queries, keys and values of `x` (in `s.q`, `s.k`, `s.v`): norm, the fused projection,
    /// per-head norms and rotary embeddings.
    fn attention_inputs(
        &self,
        x: &[f32],
        s: &mut Scratch,
        mut save: Option<&mut Saved>,
    ) -> Result<(), RuntimeError> {
        let (cfg, lw) = (self.cfg, self.weights);
        let (eps, hd) = (cfg.rms_norm_eps, cfg.head_dim);
        if let Some(saved) = save.as_deref_mut() {
            refill(&mut saved.x, x);
        }
        norm_forward(x, &lw.attn_norm, eps, &mut s.h);
        linear_forward(&lw.qkv, &s.h, self.tokens, &mut s.qkv)?;
        let bias = lw.qkv_bias.as_deref();
        split_qkv_forward(&s.qkv, bias, self.widths(), &mut s.q, &mut s.k, &mut s.v);
        if let Some(saved) = save.as_deref_mut() {
            refill_if(&mut saved.q_pre, lw.q_norm.is_some(), &s.q);
            refill_if(&mut saved.k_pre, lw.k_norm.is_some(), &s.k);
        }
        let (cos, sin) = (self.cos, self.sin);
        heads_forward(
            &mut s.q,
            cfg.num_heads,
            hd,
            lw.q_norm.as_deref(),
            eps,
            cos,
            sin,
        );
        heads_forward(
            &mut s.k,
            cfg.num_kv_heads,
            hd,
            lw.k_norm.as_deref(),
            eps,
            cos,
            sin,
        );
        if let Some(saved) = save {
            refill(&mut saved.q, &s.q);
            refill(&mut saved.k, &s.k);
            refill(&mut saved.v, &s.v);
        }
        Ok(())
    }

    /// The attention's output projection, before any post-norm (in `s.delta`).
    fn attention_output(
        &self,
        s: &mut Scratch,
        save: Option<&mut Saved>,
        attend: &mut Attend<'_>,
    ) -> Result<(), RuntimeError> {
        let lw = self.weights;
        attend(&s.q, &s.k, &s.v, &mut s.attn);
        linear_forward(&lw.o, &s.attn, self.tokens, &mut s.delta)?;
        if let Some(saved) = save {
            refill_if(&mut saved.attn_pre, lw.post_attn_norm.is_some(), &s.delta);
        }
        Ok(())
    }

    /// `x += mlp(norm(x))`.
    pub(crate) fn mlp_forward(
        &self,
        x: &mut [f32],
        s: &mut Scratch,
        mut save: Option<&mut Saved>,
        visit: &mut dyn FnMut(Hook, &mut [f32]),
    ) -> Result<(), RuntimeError> {
        let lw = self.weights;
        self.mlp_inputs(x, s, save.as_deref_mut())?;
        self.mlp_output(s, save)?;
        let out = (Hook::MlpOut(self.index), Hook::ResidPost(self.index));
        self.add_to_stream(x, &mut s.delta, lw.post_ffn_norm.as_deref(), out, visit);
        Ok(())
    }

    /// The gate and up projections of `x` (in `s.gu`).
    fn mlp_inputs(
        &self,
        x: &[f32],
        s: &mut Scratch,
        save: Option<&mut Saved>,
    ) -> Result<(), RuntimeError> {
        let lw = self.weights;
        norm_forward(x, &lw.ffn_norm, self.cfg.rms_norm_eps, &mut s.h);
        linear_forward(&lw.gate_up, &s.h, self.tokens, &mut s.gu)?;
        if let Some(saved) = save {
            refill(&mut saved.x_mid, x);
            refill(&mut saved.gu, &s.gu);
        }
        Ok(())
    }

    /// The MLP's down projection, before any post-norm (in `s.delta`).
    fn mlp_output(&self, s: &mut Scratch, save: Option<&mut Saved>) -> Result<(), RuntimeError> {
        let (cfg, lw) = (self.cfg, self.weights);
        gate_forward(&s.gu, cfg.intermediate_size, cfg.activation, &mut s.act);
        linear_forward(&lw.down, &s.act, self.tokens, &mut s.delta)?;
        if let Some(saved) = save {
            refill_if(&mut saved.mlp_pre, lw.post_ffn_norm.is_some(), &s.delta);
        }
        Ok(())
    }

    /// The block's [`Saved`] record from its residual stream before (`x`) and between
    /// (`x_mid`) its sub-blocks, as the forward saw them (patches applied). Only what the
    /// backward reads is computed: the attention itself and the output projections run only
    /// for a post-norm's input (Gemma 3), so a rebuilt block costs the Q|K|V and gate|up
    /// projections, about two thirds of a forward.
    pub(crate) fn rebuild(
        &self,
        x: &[f32],
        x_mid: &[f32],
        s: &mut Scratch,
        record: &mut Saved,
        attend: &mut Attend<'_>,
    ) -> Result<(), RuntimeError> {
        let lw = self.weights;
        self.attention_inputs(x, s, Some(record))?;
        if lw.post_attn_norm.is_some() {
            self.attention_output(s, Some(record), attend)?;
        } else {
            record.attn_pre = None;
        }
        self.mlp_inputs(x_mid, s, Some(record))?;
        if lw.post_ffn_norm.is_some() {
            self.mlp_output(s, Some(record))?;
        } else {
            record.mlp_pre = None;
        }
        Ok(())
    }

    /// The backward of [`Layer::mlp_forward`]: `dx` holds `∂L/∂x` after the block and
    /// becomes `∂L/∂x` before it. `visit` sees (and may cut) the gradient at the capture
    /// points, in the forward's reverse order.
    pub(crate) fn mlp_backward(
        &self,
        saved: &Saved,
        s: &mut BackwardScratch,
        dx: &mut [f32],
        visit: &mut dyn FnMut(Hook, &mut [f32]),
    ) -> Result<(), RuntimeError> {
        let (cfg, lw) = (self.cfg, self.weights);
        let (eps, t, inter) = (cfg.rms_norm_eps, self.tokens, cfg.intermediate_size);
        visit(Hook::ResidPost(self.index), dx);
        visit(Hook::MlpOut(self.index), dx);
        s.delta.copy_from_slice(dx);
        if let (Some(post), Some(pre)) = (&lw.post_ffn_norm, &saved.mlp_pre) {
            norm_in_place_backward(pre, post, eps, &mut s.delta);
        }
        linear_backward(&lw.down, &s.delta, t, &mut s.act)?;
        gate_backward(&saved.gu, inter, cfg.activation, &s.act, &mut s.gu);
        linear_backward(&lw.gate_up, &s.gu, t, &mut s.h)?;
        norm_backward(&saved.x_mid, &lw.ffn_norm, eps, &s.h, dx);
        Ok(())
    }

    /// The backward of [`Layer::attention_forward`] for rows that attend within themselves:
    /// `filters` gives each row's token range in the batch and key filter. With `edges`, each
    /// row's attention × gradient (`P ⊙ ∂L/∂P`, `[heads, len, len]`) is pushed there.
    pub(crate) fn attention_backward(
        &self,
        saved: &Saved,
        s: &mut BackwardScratch,
        filters: &[(std::ops::Range<usize>, KeyFilter<'_>)],
        dx: &mut [f32],
        visit: &mut dyn FnMut(Hook, &mut [f32]),
        edges: Option<&mut Vec<Array>>,
    ) -> Result<(), RuntimeError> {
        let (cfg, lw) = (self.cfg, self.weights);
        let (eps, t, hd) = (cfg.rms_norm_eps, self.tokens, cfg.head_dim);
        let (qw, kvw) = (cfg.q_width(), cfg.kv_width());
        visit(Hook::ResidMid(self.index), dx);
        visit(Hook::AttnOut(self.index), dx);
        s.delta.copy_from_slice(dx);
        if let (Some(post), Some(pre)) = (&lw.post_attn_norm, &saved.attn_pre) {
            norm_in_place_backward(pre, post, eps, &mut s.delta);
        }
        linear_backward(&lw.o, &s.delta, t, &mut s.attn)?;
        // Rows in parallel: one row's heads are too little work to split over threads.
        let lengths = |width: usize| filters.iter().map(move |(rows, _)| rows.len() * width);
        let want_edges = edges.is_some();
        let dattn = &s.attn;
        let row_edges: Vec<Option<Array>> = filters
            .par_iter()
            .zip(split_rows(&mut s.q, lengths(qw)))
            .zip(split_rows(&mut s.k, lengths(kvw)))
            .zip(split_rows(&mut s.v, lengths(kvw)))
            .map(|((((rows, filter), dqr), dkr), dvr)| {
                let (q, kv) = (
                    rows.start * qw..rows.end * qw,
                    rows.start * kvw..rows.end * kvw,
                );
                let len = rows.len();
                let mut e = want_edges.then(|| vec![0f32; cfg.num_heads * len * len]);
                attention_backward(
                    &saved.q[q.clone()],
                    &saved.k[kv.clone()],
                    &saved.v[kv],
                    self.shape(),
                    *filter,
                    &dattn[q],
                    dqr,
                    dkr,
                    dvr,
                    e.as_deref_mut(),
                );
                e.map(|e| Array::new(vec![cfg.num_heads, len, len], e))
            })
            .collect();
        if let Some(out) = edges {
            out.extend(row_edges.into_iter().flatten());
        }
        let (cos, sin) = (self.cos, self.sin);
        let (qn, kn) = (lw.q_norm.as_deref(), lw.k_norm.as_deref());
        let (q_pre, k_pre) = (saved.q_pre.as_deref(), saved.k_pre.as_deref());
        heads_backward(&mut s.q, q_pre, cfg.num_heads, hd, qn, eps, cos, sin);
        heads_backward(&mut s.k, k_pre, cfg.num_kv_heads, hd, kn, eps, cos, sin);
        // A bias adds a constant: its input gradient passes through unchanged.
        split_qkv_backward(&s.q, &s.k, &s.v, self.widths(), &mut s.qkv);
        linear_backward(&lw.qkv, &s.qkv, t, &mut s.h)?;
        norm_backward(&saved.x, &lw.attn_norm, eps, &s.h, dx);
        visit(Hook::ResidPre(self.index), dx);
        Ok(())
    }
}
