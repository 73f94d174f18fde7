//! The model's operations over a packed batch (`[tokens, width]` row-major buffers), each a
//! forward/backward pair side by side. The fast forward ([`crate::forward`]) and the gradient
//! pass ([`crate::backward`]) are both sequences of these calls, so there is one
//! implementation of the model, run in two directions.
//!
//! Backward functions take the forward's saved inputs and `∂L/∂output` and produce
//! `∂L/∂input` only — never weight gradients. Where an op's input is a residual stream
//! (norms), the backward *adds* to the stream's gradient, since it also flows around the op.

use glassbox_kernels::math::{
    gelu_tanh_mul, gelu_tanh_mul_backward, rms_norm_rows, rms_norm_rows_backward,
    rms_norm_rows_in_place, rope_half, rope_half_backward, silu_mul, silu_mul_backward,
};
use rayon::prelude::*;

use crate::RuntimeError;
use crate::config::Activation;
use crate::linear::Linear;

/// Rows of element-wise work per parallel task: enough to amortise scheduling.
const ROWS_PER_TASK: usize = 32;

/// Runs `f(first_row, rows)` over chunks of the row-major `buf` (rows of `width`) in parallel.
pub(crate) fn par_rows(buf: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    buf.par_chunks_mut(width * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(i, chunk)| f(i * ROWS_PER_TASK, chunk));
}

/// `out = rms_norm(x) · w`, row by row.
pub(crate) fn norm_forward(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    par_rows(out, d, |r, o| {
        rms_norm_rows(&x[r * d..r * d + o.len()], w, eps, o)
    });
}

/// Adds `∂L/∂x` of [`norm_forward`] to `dx`.
pub(crate) fn norm_backward(x: &[f32], w: &[f32], eps: f32, dout: &[f32], dx: &mut [f32]) {
    let d = w.len();
    par_rows(dx, d, |r, g| {
        let rows = r * d..r * d + g.len();
        rms_norm_rows_backward(&x[rows.clone()], w, eps, &dout[rows], g)
    });
}

/// [`norm_forward`] in place (Gemma's post-attention and post-MLP norms).
pub(crate) fn norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    par_rows(x, w.len(), |_, r| rms_norm_rows_in_place(r, w, eps));
}

/// The backward of [`norm_in_place`]: `dx` (in: `∂L/∂out`) becomes `∂L/∂x`; `x` is the
/// norm's input.
pub(crate) fn norm_in_place_backward(x: &[f32], w: &[f32], eps: f32, dx: &mut Vec<f32>) {
    let dout = std::mem::replace(dx, vec![0f32; x.len()]);
    norm_backward(x, w, eps, &dout, dx);
}

/// `out = x · Wᵀ` for `rows` rows.
pub(crate) fn linear_forward(
    lin: &Linear,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) -> Result<(), RuntimeError> {
    lin.forward_into(x, rows, out)
}

/// `dx = dout · W` (writes `dx`).
pub(crate) fn linear_backward(
    lin: &Linear,
    dout: &[f32],
    rows: usize,
    dx: &mut [f32],
) -> Result<(), RuntimeError> {
    lin.backward_into(dout, rows, dx)
}

/// Widths of the fused query/key/value projection's parts.
#[derive(Clone, Copy)]
pub(crate) struct QkvWidths {
    pub q: usize,
    pub kv: usize,
}

impl QkvWidths {
    fn total(self) -> usize {
        self.q + 2 * self.kv
    }
}

/// Splits the fused projection `qkv` (rows of `q | k | v`) into `q`, `k`, `v`, adding the
/// bias if the model has one.
pub(crate) fn split_qkv_forward(
    qkv: &[f32],
    bias: Option<&[f32]>,
    widths: QkvWidths,
    q: &mut [f32],
    k: &mut [f32],
    v: &mut [f32],
) {
    let width = widths.total();
    for (buf, part, offset) in [
        (q, widths.q, 0),
        (k, widths.kv, widths.q),
        (v, widths.kv, widths.q + widths.kv),
    ] {
        par_rows(buf, part, |r, rows| {
            for (i, dst) in rows.chunks_mut(part).enumerate() {
                let src = &qkv[(r + i) * width + offset..(r + i) * width + offset + part];
                dst.copy_from_slice(src);
                if let Some(b) = bias {
                    dst.iter_mut()
                        .zip(&b[offset..offset + part])
                        .for_each(|(x, b)| *x += b);
                }
            }
        });
    }
}

/// The backward of [`split_qkv_forward`]: interleaves `dq`, `dk`, `dv` back into `dqkv`.
pub(crate) fn split_qkv_backward(
    dq: &[f32],
    dk: &[f32],
    dv: &[f32],
    widths: QkvWidths,
    dqkv: &mut [f32],
) {
    let width = widths.total();
    par_rows(dqkv, width, |r, rows| {
        for (i, dst) in rows.chunks_mut(width).enumerate() {
            let t = r + i;
            let (dq_part, rest) = dst.split_at_mut(widths.q);
            let (dk_part, dv_part) = rest.split_at_mut(widths.kv);
            dq_part.copy_from_slice(&dq[t * widths.q..(t + 1) * widths.q]);
            dk_part.copy_from_slice(&dk[t * widths.kv..(t + 1) * widths.kv]);
            dv_part.copy_from_slice(&dv[t * widths.kv..(t + 1) * widths.kv]);
        }
    });
}

/// Query or key heads `[tokens, heads · head_dim]` in place: the optional per-head RMS norm
/// (Gemma 3), then rotary embeddings with the tokens' `cos`/`sin` tables.
#[allow(clippy::too_many_arguments)]
pub(crate) fn heads_forward(
    x: &mut [f32],
    heads: usize,
    head_dim: usize,
    norm: Option<&[f32]>,
    eps: f32,
    cos: &[f32],
    sin: &[f32],
) {
    let (width, half) = (heads * head_dim, head_dim / 2);
    par_rows(x, width, |r, rows| {
        if let Some(w) = norm {
            rms_norm_rows_in_place(rows, w, eps);
        }
        let n = rows.len() / width;
        rope_half(
            rows,
            heads,
            head_dim,
            &cos[r * half..(r + n) * half],
            &sin[r * half..(r + n) * half],
        );
    });
}

/// The backward of [`heads_forward`], in place on `dx`; `pre_norm` is the heads' value before
/// the norm (needed only when there is one).
#[allow(clippy::too_many_arguments)]
pub(crate) fn heads_backward(
    dx: &mut [f32],
    pre_norm: Option<&[f32]>,
    heads: usize,
    head_dim: usize,
    norm: Option<&[f32]>,
    eps: f32,
    cos: &[f32],
    sin: &[f32],
) {
    let (width, half) = (heads * head_dim, head_dim / 2);
    par_rows(dx, width, |r, rows| {
        let n = rows.len() / width;
        rope_half_backward(
            rows,
            heads,
            head_dim,
            &cos[r * half..(r + n) * half],
            &sin[r * half..(r + n) * half],
        );
        if let (Some(w), Some(x)) = (norm, pre_norm) {
            let x = &x[r * width..(r + n) * width];
            let dout = rows.to_vec();
            rows.fill(0.0);
            rms_norm_rows_backward(x, w, eps, &dout, rows);
        }
    });
}

/// The gated MLP activation: rows of `gu` are `gate | up` (`2 · inter` values); `out` gets
/// `act(gate) · up`.
pub(crate) fn gate_forward(gu: &[f32], inter: usize, activation: Activation, out: &mut [f32]) {
    par_rows(out, inter, |r, rows| {
        for (i, o) in rows.chunks_mut(inter).enumerate() {
            let (gate, up) = gu[(r + i) * 2 * inter..(r + i + 1) * 2 * inter].split_at(inter);
            match activation {
                Activation::Silu => silu_mul(gate, up, o),
                Activation::GeluTanh => gelu_tanh_mul(gate, up, o),
            }
        }
    });
}

/// The backward of [`gate_forward`]: writes `∂L/∂gu` given `∂L/∂out`.
pub(crate) fn gate_backward(
    gu: &[f32],
    inter: usize,
    activation: Activation,
    dout: &[f32],
    dgu: &mut [f32],
) {
    par_rows(dgu, 2 * inter, |r, rows| {
        for (i, d) in rows.chunks_mut(2 * inter).enumerate() {
            let t = r + i;
            let (gate, up) = gu[t * 2 * inter..(t + 1) * 2 * inter].split_at(inter);
            let (dgate, dup) = d.split_at_mut(inter);
            let g = &dout[t * inter..(t + 1) * inter];
            match activation {
                Activation::Silu => silu_mul_backward(gate, up, g, dgate, dup),
                Activation::GeluTanh => gelu_tanh_mul_backward(gate, up, g, dgate, dup),
            }
        }
    });
}

/// `x += delta` (a residual connection; its backward passes the gradient to both sides).
pub(crate) fn residual_add(x: &mut [f32], delta: &[f32], width: usize) {
    par_rows(x, width, |r, rows| {
        let n = rows.len();
        rows.iter_mut()
            .zip(&delta[r * width..r * width + n])
            .for_each(|(a, b)| *a += b)
    });
}
