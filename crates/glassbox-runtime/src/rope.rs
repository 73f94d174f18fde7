//! Rotary position tables for the tokens of one forward call.

use crate::config::ModelConfig;

/// `cos`/`sin` of every token's rotation angles, one table per distinct rotary setting among
/// the layers (Gemma 3 has two: local and global).
pub(crate) struct RopeTables {
    /// (cos, sin), each `[tokens, head_dim / 2]`.
    tables: Vec<(Vec<f32>, Vec<f32>)>,
    /// Table index of every layer.
    layer_table: Vec<usize>,
}

impl RopeTables {
    pub(crate) fn new(cfg: &ModelConfig, positions: &[u32]) -> Self {
        let mut settings: Vec<(f32, f32)> = Vec::new();
        let mut layer_table = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let s = cfg.layer_rope(l);
            let index = match settings.iter().position(|&x| x == s) {
                Some(i) => i,
                None => {
                    settings.push(s);
                    settings.len() - 1
                }
            };
            layer_table.push(index);
        }
        let tables = settings
            .iter()
            .map(|&(theta, scale)| table(theta, scale, cfg.head_dim, positions))
            .collect();
        Self {
            tables,
            layer_table,
        }
    }

    pub(crate) fn for_layer(&self, layer: usize) -> (&[f32], &[f32]) {
        let (cos, sin) = &self.tables[self.layer_table[layer]];
        (cos, sin)
    }
}

/// Angles `pos · θ^(-2i/d) / scale`, computed in f32 as the reference implementations do, so
/// that logits agree to the last bits that matter.
pub(crate) fn table(
    theta: f32,
    scale: f32,
    head_dim: usize,
    positions: &[u32],
) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32) / scale)
        .collect();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for &f in &inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}
