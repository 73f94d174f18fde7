//! Attention methods: what the position predicting each answer token attends to.
//!
//! Raw attention of one layer (one head, or the mean over heads), and attention rollout
//! (Abnar & Zuidema, 2020): each layer's head-mean attention mixed half-and-half with the
//! identity for the residual stream, rows renormalised, multiplied from the first layer up.
//! Attention is a property of a position, not of a target formula, so all targets at one
//! position get the same scores; it is neither signed nor faithful by construction, and the
//! report says so through its method name.

use glassbox_runtime::{Capture, Hook, LogitsAt, Model, Row};
use serde_json::json;

use crate::AttributionError;

/// An attention method and its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionMethod {
    /// Layer `layer` (default: the last), head `head` (default: the mean over heads).
    Raw {
        layer: Option<usize>,
        head: Option<usize>,
    },
    Rollout,
}

impl AttentionMethod {
    pub fn name(&self) -> &'static str {
        match self {
            AttentionMethod::Raw { .. } => "attention",
            AttentionMethod::Rollout => "attention_rollout",
        }
    }
}

/// Attention rows (`[query position][key]`, each summing to 1) of `ids` at `queries`, and the
/// method's parameters as resolved for this model.
pub fn attention_rows(
    model: &Model,
    ids: &[u32],
    queries: &[usize],
    method: AttentionMethod,
) -> Result<(Vec<Vec<f64>>, serde_json::Value), AttributionError> {
    let cfg = model.config();
    let layers = cfg.num_layers;
    let len = ids.len();
    let capture = match method {
        AttentionMethod::Raw { layer, head } => {
            let l = layer.unwrap_or(layers - 1);
            if l >= layers {
                return Err(AttributionError::BadInput(format!(
                    "layer {l}: the model has layers 0..{}",
                    layers - 1
                )));
            }
            if let Some(h) = head
                && h >= cfg.num_heads
            {
                return Err(AttributionError::BadInput(format!(
                    "head {h}: the model has heads 0..{}",
                    cfg.num_heads - 1
                )));
            }
            Capture::none().with(Hook::AttnPattern(l))
        }
        AttentionMethod::Rollout => {
            (0..layers).fold(Capture::none(), |c, l| c.with(Hook::AttnPattern(l)))
        }
    };
    let out = model
        .forward(
            vec![Row::tokens(ids.to_vec()).with_logits(LogitsAt::None)],
            &capture,
        )?
        .remove(0);
    // Head-mean (or one head's) attention of layer `l`, `[len][len]`.
    let layer_matrix = |l: usize, head: Option<usize>| -> Vec<Vec<f64>> {
        let pattern = &out.activations[&Hook::AttnPattern(l)];
        let heads = pattern.shape[0];
        let keys = pattern.shape[2];
        let picked: Vec<usize> = match head {
            Some(h) => vec![h],
            None => (0..heads).collect(),
        };
        (0..len)
            .map(|q| {
                (0..len)
                    .map(|k| {
                        picked
                            .iter()
                            .map(|&h| pattern.data[(h * len + q) * keys + k] as f64)
                            .sum::<f64>()
                            / picked.len() as f64
                    })
                    .collect()
            })
            .collect()
    };
    match method {
        AttentionMethod::Raw { layer, head } => {
            let l = layer.unwrap_or(layers - 1);
            let m = layer_matrix(l, head);
            let params = json!({
                "layer": l,
                "head": head.map_or(json!("mean"), |h| json!(h)),
            });
            Ok((queries.iter().map(|&q| m[q].clone()).collect(), params))
        }
        AttentionMethod::Rollout => {
            let mut rollout: Vec<Vec<f64>> = identity(len);
            for l in 0..layers {
                let mut a = layer_matrix(l, None);
                for (q, row) in a.iter_mut().enumerate() {
                    row.iter_mut().for_each(|v| *v *= 0.5);
                    row[q] += 0.5;
                    let total: f64 = row.iter().sum();
                    row.iter_mut().for_each(|v| *v /= total);
                }
                rollout = matmul(&a, &rollout);
            }
            Ok((
                queries.iter().map(|&q| rollout[q].clone()).collect(),
                json!({"layers": layers, "residual_weight": 0.5, "heads": "mean"}),
            ))
        }
    }
}

fn identity(n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect()
}

fn matmul(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = b.first().map_or(0, Vec::len);
    a.iter()
        .map(|row| {
            let mut out = vec![0.0; n];
            for (k, &x) in row.iter().enumerate() {
                if x != 0.0 {
                    out.iter_mut().zip(&b[k]).for_each(|(o, &y)| *o += x * y);
                }
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_of_row_stochastic_matrices_stays_row_stochastic() {
        let a = vec![vec![1.0, 0.0], vec![0.25, 0.75]];
        let b = vec![vec![0.5, 0.5], vec![0.1, 0.9]];
        let c = matmul(&a, &b);
        assert_eq!(c[0], vec![0.5, 0.5]);
        assert!((c[1][0] - (0.125 + 0.075)).abs() < 1e-12);
        assert!(
            c.iter()
                .all(|r| (r.iter().sum::<f64>() - 1.0).abs() < 1e-12)
        );
        assert_eq!(matmul(&identity(2), &b), b);
    }
}
