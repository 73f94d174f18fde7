//! The vision front end of the known-content model, with its gradients: a patch embedding
//! (a SigLIP tower with no encoder layers: linear patches plus learned positions) and
//! LLaVA's projector (linear, exact GELU, linear) into the text model's embedding space.
//!
//! Stored under LLaVA's tensor names, the trained weights load as the vision part of a
//! `LlavaForConditionalGeneration` checkpoint (`vision_feature_layer = -1` with no layers:
//! the embeddings themselves), in Glassbox and in Transformers alike.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;
use sampling::normal;

use crate::scene::SIZE;

/// Pixels a patch side.
pub const PATCH: usize = 8;
/// Patches a side (and tokens a side of the image's grid).
pub const GRID: usize = SIZE as usize / PATCH;
pub const PATCHES: usize = GRID * GRID;
/// Features of a flattened patch (channel, row, column).
pub const PATCH_FEATURES: usize = 3 * PATCH * PATCH;
/// Width of the patch embedding (the "tower" hidden size).
pub const VISION_HIDDEN: usize = 64;

/// Parameters, each row-major as its tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontEnd {
    pub text_hidden: usize,
    /// `[VISION_HIDDEN, PATCH_FEATURES]`.
    pub patch: Vec<f32>,
    pub patch_bias: Vec<f32>,
    /// `[PATCHES, VISION_HIDDEN]`.
    pub position: Vec<f32>,
    /// `[text_hidden, VISION_HIDDEN]`.
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    /// `[text_hidden, text_hidden]`.
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

/// What the backward needs from the forward.
pub struct Cache {
    rows: usize,
    x: Vec<f32>,
    e: Vec<f32>,
    h1: Vec<f32>,
    g: Vec<f32>,
}

/// `y = a·wᵀ`: `a` is `[m, k]`, `w` is `[n, k]`.
fn mul_transposed(a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    y.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        let ai = &a[i * k..(i + 1) * k];
        for (j, out) in row.iter_mut().enumerate() {
            *out = ai
                .iter()
                .zip(&w[j * k..(j + 1) * k])
                .map(|(x, y)| x * y)
                .sum();
        }
    });
    debug_assert_eq!(y.len(), m * n);
    y
}

/// `dA = dY·W`: `dy` is `[m, n]`, `w` is `[n, k]`.
fn mul(dy: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * k];
    out.par_chunks_mut(k).enumerate().for_each(|(i, row)| {
        for (j, &g) in dy[i * n..(i + 1) * n].iter().enumerate() {
            if g != 0.0 {
                row.iter_mut()
                    .zip(&w[j * k..(j + 1) * k])
                    .for_each(|(o, w)| *o += g * w);
            }
        }
    });
    out
}

/// `dW = dYᵀ·A`: `dy` is `[m, n]`, `a` is `[m, k]`; the result is `[n, k]`.
fn outer_sum(dy: &[f32], a: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * k];
    out.par_chunks_mut(k).enumerate().for_each(|(j, row)| {
        for i in 0..m {
            let g = dy[i * n + j];
            if g != 0.0 {
                row.iter_mut()
                    .zip(&a[i * k..(i + 1) * k])
                    .for_each(|(o, x)| *o += g * x);
            }
        }
    });
    out
}

fn add_bias(y: &mut [f32], b: &[f32]) {
    for row in y.chunks_mut(b.len()) {
        row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
    }
}

fn column_sums(dy: &[f32], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    for row in dy.chunks(n) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
    out
}

/// Normal samples without an extra dependency (Box–Muller over `rand`'s uniforms).
mod sampling {
    use rand::Rng;

    pub fn normal(rng: &mut impl Rng, n: usize, std: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u: f64 = rng.r#gen::<f64>().max(1e-12);
                let v: f64 = rng.r#gen();
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32 * std
            })
            .collect()
    }
}

impl FrontEnd {
    /// Random initial parameters; the projector's bias starts at `embedding_mean` (the mean
    /// token embedding) and its output scale at `embedding_std`, so image tokens begin where
    /// text tokens live.
    pub fn init(seed: u64, text_hidden: usize, embedding_mean: &[f32], embedding_std: f32) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let d = VISION_HIDDEN;
        Self {
            text_hidden,
            patch: normal(
                &mut rng,
                d * PATCH_FEATURES,
                1.0 / (PATCH_FEATURES as f32).sqrt(),
            ),
            patch_bias: vec![0.0; d],
            position: normal(&mut rng, PATCHES * d, 0.02),
            w1: normal(&mut rng, text_hidden * d, 1.0 / (d as f32).sqrt()),
            b1: vec![0.0; text_hidden],
            w2: normal(
                &mut rng,
                text_hidden * text_hidden,
                embedding_std / (text_hidden as f32).sqrt(),
            ),
            b2: embedding_mean.to_vec(),
        }
    }

    /// Image-token embeddings `[tiles · PATCHES, text_hidden]`.
    pub fn forward(&self, tiles: &[Vec<f32>]) -> (Vec<f32>, Cache) {
        let d = VISION_HIDDEN;
        let rows = tiles.len() * PATCHES;
        let x: Vec<f32> = tiles
            .iter()
            .flat_map(|t| glassbox_vision::unfold_patches(t, SIZE as usize, PATCH))
            .collect();
        let mut e = mul_transposed(&x, &self.patch, rows, PATCH_FEATURES, d);
        add_bias(&mut e, &self.patch_bias);
        for tile in e.chunks_mut(PATCHES * d) {
            tile.iter_mut()
                .zip(&self.position)
                .for_each(|(v, p)| *v += p);
        }
        let t = self.text_hidden;
        let mut h1 = mul_transposed(&e, &self.w1, rows, d, t);
        add_bias(&mut h1, &self.b1);
        let mut g = h1.clone();
        glassbox_kernels::math::gelu_erf_in_place(&mut g);
        let mut out = mul_transposed(&g, &self.w2, rows, t, t);
        add_bias(&mut out, &self.b2);
        (out, Cache { rows, x, e, h1, g })
    }

    /// The parameters' gradients given `∂L/∂output`.
    pub fn backward(&self, cache: &Cache, dout: &[f32]) -> FrontEnd {
        let (d, t, rows) = (VISION_HIDDEN, self.text_hidden, cache.rows);
        let w2 = outer_sum(dout, &cache.g, rows, t, t);
        let b2 = column_sums(dout, t);
        let dg = mul(dout, &self.w2, rows, t, t);
        let mut dh1 = vec![0f32; dg.len()];
        glassbox_kernels::math::gelu_erf_backward(&cache.h1, &dg, &mut dh1);
        let w1 = outer_sum(&dh1, &cache.e, rows, t, d);
        let b1 = column_sums(&dh1, t);
        let de = mul(&dh1, &self.w1, rows, t, d);
        let patch = outer_sum(&de, &cache.x, rows, d, PATCH_FEATURES);
        let patch_bias = column_sums(&de, d);
        let mut position = vec![0f32; PATCHES * d];
        for tile in de.chunks(PATCHES * d) {
            position.iter_mut().zip(tile).for_each(|(p, v)| *p += v);
        }
        FrontEnd {
            text_hidden: t,
            patch,
            patch_bias,
            position,
            w1,
            b1,
            w2,
            b2,
        }
    }

    /// Every parameter tensor, mutable, in a fixed order (for the optimiser).
    pub fn tensors_mut(&mut self) -> [&mut Vec<f32>; 7] {
        [
            &mut self.patch,
            &mut self.patch_bias,
            &mut self.position,
            &mut self.w1,
            &mut self.b1,
            &mut self.w2,
            &mut self.b2,
        ]
    }

    pub fn parameter_count(&self) -> usize {
        let mut copy = self.clone();
        copy.tensors_mut().iter().map(|t| t.len()).sum()
    }

    /// The weights under LLaVA's tensor names (`model.vision_tower.vision_model.…`,
    /// `model.multi_modal_projector.…`), plus the unused post layer norm a SigLIP tower has.
    pub fn llava_tensors(&self) -> Result<HashMap<String, Tensor>, candle_core::Error> {
        let dev = Device::Cpu;
        let d = VISION_HIDDEN;
        let t = self.text_hidden;
        let tower = "model.vision_tower.vision_model.";
        let projector = "model.multi_modal_projector.";
        let mut out = HashMap::new();
        let mut put =
            |name: String, data: &[f32], shape: &[usize]| -> Result<(), candle_core::Error> {
                out.insert(name, Tensor::from_vec(data.to_vec(), shape, &dev)?);
                Ok(())
            };
        put(
            format!("{tower}embeddings.patch_embedding.weight"),
            &self.patch,
            &[d, 3, PATCH, PATCH],
        )?;
        put(
            format!("{tower}embeddings.patch_embedding.bias"),
            &self.patch_bias,
            &[d],
        )?;
        put(
            format!("{tower}embeddings.position_embedding.weight"),
            &self.position,
            &[PATCHES, d],
        )?;
        put(format!("{tower}post_layernorm.weight"), &vec![1.0; d], &[d])?;
        put(format!("{tower}post_layernorm.bias"), &vec![0.0; d], &[d])?;
        put(format!("{projector}linear_1.weight"), &self.w1, &[t, d])?;
        put(format!("{projector}linear_1.bias"), &self.b1, &[t])?;
        put(format!("{projector}linear_2.weight"), &self.w2, &[t, t])?;
        put(format!("{projector}linear_2.bias"), &self.b2, &[t])?;
        Ok(out)
    }

    /// Writes [`FrontEnd::llava_tensors`] as a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), candle_core::Error> {
        candle_core::safetensors::save(&self.llava_tensors()?, path)
    }

    /// Reads weights written by [`FrontEnd::save`].
    pub fn load(path: &Path, text_hidden: usize) -> Result<Self, candle_core::Error> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let get = |name: &str| -> Result<Vec<f32>, candle_core::Error> {
            tensors
                .get(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {name}")))?
                .flatten_all()?
                .to_vec1()
        };
        let tower = "model.vision_tower.vision_model.embeddings.";
        let projector = "model.multi_modal_projector.";
        Ok(Self {
            text_hidden,
            patch: get(&format!("{tower}patch_embedding.weight"))?,
            patch_bias: get(&format!("{tower}patch_embedding.bias"))?,
            position: get(&format!("{tower}position_embedding.weight"))?,
            w1: get(&format!("{projector}linear_1.weight"))?,
            b1: get(&format!("{projector}linear_1.bias"))?,
            w2: get(&format!("{projector}linear_2.weight"))?,
            b2: get(&format!("{projector}linear_2.bias"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written backward equals central finite differences of a random projection
    /// of the output.
    #[test]
    fn backward_matches_finite_differences() {
        let t = 8;
        let mut rng = StdRng::seed_from_u64(1);
        let mean = normal(&mut rng, t, 0.1);
        let front = FrontEnd::init(3, t, &mean, 0.5);
        let tiles: Vec<Vec<f32>> = (0..2)
            .map(|_| normal(&mut rng, 3 * (SIZE * SIZE) as usize, 0.5))
            .collect();
        let probe = normal(&mut rng, 2 * PATCHES * t, 1.0);
        let loss = |f: &FrontEnd| -> f64 {
            let (out, _) = f.forward(&tiles);
            out.iter()
                .zip(&probe)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum()
        };
        let (_, cache) = front.forward(&tiles);
        let grads = front.backward(&cache, &probe);
        let mut g = grads.clone();
        let grad_tensors = g.tensors_mut();
        for (which, grad) in grad_tensors.into_iter().enumerate() {
            for &i in &[0usize, 5, 17] {
                if i >= grad.len() {
                    continue;
                }
                let h = 1e-2f32;
                let mut plus = front.clone();
                plus.tensors_mut()[which][i] += h;
                let mut minus = front.clone();
                minus.tensors_mut()[which][i] -= h;
                let fd = (loss(&plus) - loss(&minus)) / (2.0 * h as f64);
                let an = grad[i] as f64;
                assert!(
                    (fd - an).abs() <= 2e-2 * fd.abs().max(an.abs()).max(1.0),
                    "tensor {which} [{i}]: {an} vs {fd}"
                );
            }
        }
    }
}
