//! The SigLIP vision transformer (as Idefics3 and SigLIP-based LLaVA models hold it):
//! patch embedding, learned position embedding, pre-norm encoder layers with bidirectional
//! attention and a GELU MLP, and a final layer norm.
//!
//! Tiles are independent: all their patches go through each projection as one GEMM and
//! attention runs per tile (in parallel over tiles and heads).

use glassbox_kernels::{AttentionShape, KeyFilter, attention};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::error::VisionError;
use crate::tensors::{Dense, Norm, Tensors, add_in_place};

/// The shape of a vision tower (`vision_config`).
#[derive(Debug, Clone, Serialize)]
pub struct TowerConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f32,
}

impl TowerConfig {
    pub(crate) fn from_json(json: &Value, origin: &std::path::Path) -> Result<Self, VisionError> {
        let int = |key: &str, default: Option<usize>| -> Result<usize, VisionError> {
            json[key]
                .as_u64()
                .map(|v| v as usize)
                .or(default)
                .ok_or_else(|| {
                    VisionError::bad_config(origin, &format!("vision_config.{key}"), "missing")
                })
        };
        let act = json["hidden_act"].as_str().unwrap_or("gelu_pytorch_tanh");
        if act != "gelu_pytorch_tanh" {
            return Err(VisionError::bad_config(
                origin,
                "vision_config.hidden_act",
                format!("`{act}` is not implemented (gelu_pytorch_tanh is)"),
            ));
        }
        let config = Self {
            hidden_size: int("hidden_size", None)?,
            intermediate_size: int("intermediate_size", None)?,
            num_layers: int("num_hidden_layers", None)?,
            num_heads: int("num_attention_heads", None)?,
            num_channels: int("num_channels", Some(3))?,
            image_size: int("image_size", None)?,
            patch_size: int("patch_size", None)?,
            layer_norm_eps: json["layer_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
        };
        let bad = |key: &str, message: &str| {
            Err(VisionError::bad_config(
                origin,
                &format!("vision_config.{key}"),
                message,
            ))
        };
        if config.num_channels != 3 {
            return bad("num_channels", "only RGB (3) towers are supported");
        }
        if config.patch_size == 0 || !config.image_size.is_multiple_of(config.patch_size) {
            return bad("patch_size", "must divide image_size");
        }
        if config.num_heads == 0 || !config.hidden_size.is_multiple_of(config.num_heads) {
            return bad("num_attention_heads", "must divide hidden_size");
        }
        Ok(config)
    }

    /// Patches a side of one tile.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn patches(&self) -> usize {
        self.grid() * self.grid()
    }
}

struct EncoderLayer {
    norm1: Norm,
    /// Q | K | V rows.
    qkv: Dense,
    out: Dense,
    norm2: Norm,
    fc1: Dense,
    fc2: Dense,
}

/// A loaded vision tower.
pub struct VisionTower {
    config: TowerConfig,
    /// `[hidden, channels · patch · patch]` in (channel, row, column) order, as the
    /// convolution's weight is stored.
    patch_embed: Dense,
    position: Vec<f32>,
    layers: Vec<EncoderLayer>,
    post_norm: Option<Norm>,
}

impl VisionTower {
    /// Loads the tower whose tensors sit under `prefix` (`model.vision_model.`).
    pub(crate) fn load(
        tensors: &Tensors,
        prefix: &str,
        config: TowerConfig,
        post_norm: bool,
    ) -> Result<Self, VisionError> {
        let (d, p, c) = (config.hidden_size, config.patch_size, config.num_channels);
        let embed = format!("{prefix}embeddings.");
        let conv = tensors.get(&format!("{embed}patch_embedding.weight"), &[d, c, p, p])?;
        let patch_embed = Dense {
            weight: glassbox_kernels::PackedMatrix::from_rows(&conv, d, c * p * p, c * p * p),
            bias: Some(tensors.get(&format!("{embed}patch_embedding.bias"), &[d])?),
        };
        let position = tensors.get(
            &format!("{embed}position_embedding.weight"),
            &[config.patches(), d],
        )?;
        let layers = (0..config.num_layers)
            .map(|l| {
                let at = |name: &str| format!("{prefix}encoder.layers.{l}.{name}");
                let attn = |name: &str| -> Result<(Vec<f32>, Vec<f32>), VisionError> {
                    let n = at(&format!("self_attn.{name}"));
                    Ok((
                        tensors.get(&format!("{n}.weight"), &[d, d])?,
                        tensors.get(&format!("{n}.bias"), &[d])?,
                    ))
                };
                let (q, k, v) = (attn("q_proj")?, attn("k_proj")?, attn("v_proj")?);
                let rows: Vec<f32> = [&q.0, &k.0, &v.0].into_iter().flatten().copied().collect();
                let bias: Vec<f32> = [&q.1, &k.1, &v.1].into_iter().flatten().copied().collect();
                Ok(EncoderLayer {
                    norm1: tensors.norm(&at("layer_norm1"), d)?,
                    qkv: Dense {
                        weight: glassbox_kernels::PackedMatrix::from_rows(&rows, 3 * d, d, d),
                        bias: Some(bias),
                    },
                    out: tensors.linear(&at("self_attn.out_proj"), d, d, true)?,
                    norm2: tensors.norm(&at("layer_norm2"), d)?,
                    fc1: tensors.linear(&at("mlp.fc1"), config.intermediate_size, d, true)?,
                    fc2: tensors.linear(&at("mlp.fc2"), d, config.intermediate_size, true)?,
                })
            })
            .collect::<Result<Vec<_>, VisionError>>()?;
        let post_norm = if post_norm {
            Some(tensors.norm(&format!("{prefix}post_layernorm"), d)?)
        } else {
            None
        };
        Ok(Self {
            config,
            patch_embed,
            position,
            layers,
            post_norm,
        })
    }

    pub fn config(&self) -> &TowerConfig {
        &self.config
    }

    /// Patch features `[tiles, patches, hidden]` of channel-first tiles
    /// (`[3, image_size, image_size]` each), after the final layer norm when the tower has one.
    pub fn forward(&self, tiles: &[Vec<f32>]) -> Vec<f32> {
        let c = &self.config;
        let (d, n) = (c.hidden_size, c.patches());
        let rows = tiles.len() * n;
        let patches: Vec<f32> = tiles
            .iter()
            .flat_map(|t| unfold_patches(t, c.image_size, c.patch_size))
            .collect();
        let mut x = self.patch_embed.apply(&patches, rows);
        for tile in x.chunks_mut(n * d) {
            tile.iter_mut()
                .zip(&self.position)
                .for_each(|(v, p)| *v += p);
        }
        for layer in &self.layers {
            self.layer_forward(layer, &mut x, tiles.len());
        }
        if let Some(norm) = &self.post_norm {
            norm.apply(&mut x, c.layer_norm_eps);
        }
        x
    }

    fn layer_forward(&self, layer: &EncoderLayer, x: &mut [f32], tiles: usize) {
        let c = &self.config;
        let (d, n) = (c.hidden_size, c.patches());
        let rows = tiles * n;
        let mut h = x.to_vec();
        layer.norm1.apply(&mut h, c.layer_norm_eps);
        let qkv = layer.qkv.apply(&h, rows);
        let part = |i: usize| -> Vec<f32> {
            let mut out = vec![0f32; rows * d];
            out.par_chunks_mut(d)
                .zip(qkv.par_chunks(3 * d))
                .for_each(|(o, r)| o.copy_from_slice(&r[i * d..(i + 1) * d]));
            out
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let head_dim = d / c.num_heads;
        let shape = AttentionShape {
            heads: c.num_heads,
            kv_heads: c.num_heads,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
        };
        let everything = vec![(0, n); n];
        let mut attended = vec![0f32; rows * d];
        attended
            .par_chunks_mut(n * d)
            .enumerate()
            .for_each(|(t, out)| {
                let span = t * n * d..(t + 1) * n * d;
                let filter = KeyFilter {
                    ranges: &everything,
                    blocked: &[],
                };
                attention(
                    &q[span.clone()],
                    &[&k[span.clone()]],
                    &[&v[span]],
                    shape,
                    filter,
                    out,
                    None,
                );
            });
        let o = layer.out.apply(&attended, rows);
        add_in_place(x, &o);
        let mut h = x.to_vec();
        layer.norm2.apply(&mut h, c.layer_norm_eps);
        let mut mid = layer.fc1.apply(&h, rows);
        mid.par_chunks_mut(4096)
            .for_each(glassbox_kernels::math::gelu_tanh_in_place);
        let o = layer.fc2.apply(&mid, rows);
        add_in_place(x, &o);
    }
}

/// A channel-first `[3, size, size]` tile's `patch × patch` patches, row-major, each flattened
/// in a patch-embedding convolution weight's (channel, row, column) order: the rows a
/// convolution with stride = kernel = `patch` multiplies by its weight.
pub fn unfold_patches(tile: &[f32], size: usize, patch: usize) -> Vec<f32> {
    let grid = size / patch;
    let mut out = Vec::with_capacity(3 * size * size);
    for py in 0..grid {
        for px in 0..grid {
            for ch in 0..3 {
                for ky in 0..patch {
                    let start = ch * size * size + (py * patch + ky) * size + px * patch;
                    out.extend_from_slice(&tile[start..start + patch]);
                }
            }
        }
    }
    out
}
