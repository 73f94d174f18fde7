//! The network composed from candle's differentiable operations, from input embeddings: an
//! independent autograd reference for the hand-written backward ([`Model::gradients`]), which
//! the product runs.
//!
//! Candle's fused CPU kernels for RMS norm, softmax and rotary embeddings (and its quantized
//! matmul) have no backward pass: gradients through them silently vanish. This path composes
//! those operations from differentiable primitives, and runs linear layers through an op whose
//! backward is known ([`Linear::forward_tensor`](crate::linear::Linear)). Tests hold it to the
//! fast path (same logits) and the hand-written backward to it (same gradients).

use candle_core::{D, DType, Device, Tensor};

use crate::RuntimeError;
use crate::config::Activation;
use crate::mask::AttentionMask;
use crate::model::Model;
use crate::rope::table;

/// Row-wise RMS norm from differentiable primitives.
fn rms_norm(x: &Tensor, weight: &[f32], eps: f32) -> Result<Tensor, RuntimeError> {
    let w = Tensor::from_slice(weight, weight.len(), x.device())?;
    let mean_square = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (mean_square + eps as f64)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(&w)?)
}

/// Softmax over the last axis from differentiable primitives.
fn softmax(x: &Tensor) -> Result<Tensor, RuntimeError> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Half-layout rotary embedding of `x: [tokens, heads, head_dim]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, RuntimeError> {
    let half = x.dim(2)? / 2;
    let (x1, x2) = (x.narrow(2, 0, half)?, x.narrow(2, half, half)?);
    let (c, s) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
    let a = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&s)?)?;
    let b = (x2.broadcast_mul(&c)? + x1.broadcast_mul(&s)?)?;
    Ok(Tensor::cat(&[a, b], 2)?)
}

impl Model {
    /// Logits `[rows.len(), vocab]` at positions `rows` of one sequence given by its input
    /// embeddings `[tokens, hidden]` (see [`Model::embed`]), through differentiable operations:
    /// if `embeddings` is a candle `Var`, `backward()` on a function of the logits yields
    /// gradients with respect to the input embeddings. Positions are `0..tokens`. Asking only
    /// for the rows a target reads skips the LM head (the largest matrix) everywhere else.
    pub fn forward_differentiable(
        &self,
        embeddings: &Tensor,
        mask: &AttentionMask,
        rows: std::ops::Range<usize>,
    ) -> Result<Tensor, RuntimeError> {
        let cfg = self.config();
        let w = self.weights();
        let (len, d) = embeddings.dims2()?;
        if d != cfg.hidden_size {
            return Err(RuntimeError::InvalidRequest(format!(
                "embeddings have {d} features, the model {}",
                cfg.hidden_size
            )));
        }
        if len == 0 {
            return Err(RuntimeError::EmptyInput);
        }
        if rows.is_empty() || rows.end > len {
            return Err(RuntimeError::InvalidRequest(format!(
                "logit rows {rows:?} of a sequence of {len} tokens"
            )));
        }
        if len > cfg.context_length {
            return Err(RuntimeError::ContextOverflow {
                tokens: len,
                window: cfg.context_length,
            });
        }
        let blocked = mask.for_queries(0, len).map_err(RuntimeError::BadMask)?;
        let dev = Device::Cpu;
        let positions: Vec<u32> = (0..len as u32).collect();
        let (hd, heads, kv_heads) = (cfg.head_dim, cfg.num_heads, cfg.num_kv_heads);
        let group = heads / kv_heads;

        // Additive masks [len, len]: causal (and windowed), plus blocked spans.
        let additive = |window: Option<usize>| -> Result<Tensor, RuntimeError> {
            let mut m = vec![0f32; len * len];
            for i in 0..len {
                for j in 0..len {
                    let hidden_by_window = window.is_some_and(|w| i - j.min(i) >= w);
                    let blocked_here = blocked
                        .iter()
                        .any(|(q, k)| q.contains(&i) && k.contains(&j));
                    if j > i || hidden_by_window || blocked_here {
                        m[i * len + j] = f32::NEG_INFINITY;
                    }
                }
            }
            // Repeated for the query heads of a group (their rows are stacked).
            let m = Tensor::from_vec(m, (len, len), &dev)?;
            Ok(m.repeat((group, 1))?)
        };
        let global_mask = additive(None)?;
        let local_mask = match cfg.sliding_window {
            Some(sw) => Some(additive(Some(sw.size))?),
            None => None,
        };

        let mut x = embeddings.clone();
        for (l, lw) in w.layers.iter().enumerate() {
            let h = rms_norm(&x, &lw.attn_norm, cfg.rms_norm_eps)?;
            let mut qkv = lw.qkv.forward_tensor(&h)?;
            if let Some(b) = &lw.qkv_bias {
                qkv = qkv.broadcast_add(&Tensor::from_slice(b, b.len(), &dev)?)?;
            }
            let (qw, kvw) = (cfg.q_width(), cfg.kv_width());
            let mut q = qkv.narrow(1, 0, qw)?.reshape((len, heads, hd))?;
            let mut k = qkv.narrow(1, qw, kvw)?.reshape((len, kv_heads, hd))?;
            let v = qkv.narrow(1, qw + kvw, kvw)?.reshape((len, kv_heads, hd))?;
            if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
                q = rms_norm(&q, qn, cfg.rms_norm_eps)?;
                k = rms_norm(&k, kn, cfg.rms_norm_eps)?;
            }
            let (theta, scale) = cfg.layer_rope(l);
            let (cos, sin) = table(theta, scale, hd, &positions);
            let cos = Tensor::from_vec(cos, (len, hd / 2), &dev)?;
            let sin = Tensor::from_vec(sin, (len, hd / 2), &dev)?;
            let q = rope(&q, &cos, &sin)?;
            let k = rope(&k, &cos, &sin)?;

            // [kv_heads, group · len, hd]: query heads of a group stacked along rows.
            let q = q
                .transpose(0, 1)?
                .contiguous()?
                .reshape((kv_heads, group * len, hd))?;
            let k = k.transpose(0, 1)?.contiguous()?;
            let v = v.transpose(0, 1)?.contiguous()?;
            let scores =
                (q.matmul(&k.transpose(1, 2)?.contiguous()?)? * cfg.attention_scale as f64)?;
            let mask = match (&local_mask, cfg.layer_window(l)) {
                (Some(m), Some(_)) => m,
                _ => &global_mask,
            };
            let probs = softmax(&scores.broadcast_add(mask)?)?;
            let attn = probs
                .matmul(&v)?
                .reshape((heads, len, hd))?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((len, qw))?;
            let mut o = lw.o.forward_tensor(&attn)?;
            if let Some(post) = &lw.post_attn_norm {
                o = rms_norm(&o, post, cfg.rms_norm_eps)?;
            }
            x = (x + o)?;

            let h = rms_norm(&x, &lw.ffn_norm, cfg.rms_norm_eps)?;
            let gu = lw.gate_up.forward_tensor(&h)?;
            let inter = cfg.intermediate_size;
            let (gate, up) = (gu.narrow(1, 0, inter)?, gu.narrow(1, inter, inter)?);
            let act = match cfg.activation {
                Activation::Silu => gate.silu()?,
                Activation::GeluTanh => gate.gelu()?,
            };
            let mut m = lw.down.forward_tensor(&(act * up)?)?;
            if let Some(post) = &lw.post_ffn_norm {
                m = rms_norm(&m, post, cfg.rms_norm_eps)?;
            }
            x = (x + m)?;
        }
        let x = x.narrow(0, rows.start, rows.len())?;
        let h = rms_norm(&x, &w.final_norm, cfg.rms_norm_eps)?;
        let logits = w.lm_head.forward_tensor(&h)?;
        debug_assert_eq!(logits.dtype(), DType::F32);
        Ok(logits)
    }
}
