//! Caches assembled from stretches of other caches, moved to new positions.
//!
//! Rotary embeddings make a key's position a rotation of it, and rotations compose: a key
//! computed at position `p` becomes the key of position `p + s` when rotated by `s` more.
//! Values carry no position. So the keys and values of a passage computed once can be placed
//! anywhere in a later prompt by re-rotating its keys — what position-independent passage
//! caches (and any "drop these tokens from a cached prompt and close the gap" scheme) need.
//! What the moved tokens attended to when they were computed does not change: that is the
//! approximation such schemes make, and they measure it; the re-rotation itself is exact up
//! to float rounding (a shift of zero copies bit for bit).

use std::ops::Range;
use std::sync::Arc;

use crate::RuntimeError;
use crate::kv::{KvBuffers, KvCache, KvSegment};
use crate::model::Model;

/// A stretch of a cache, placed so that its first token gets position `at` (the others keep
/// their distances to it).
#[derive(Debug, Clone)]
pub struct Placed<'a> {
    pub cache: &'a KvCache,
    /// Token indices within `cache`.
    pub tokens: Range<usize>,
    pub at: u32,
}

impl Model {
    /// `base` (shared, unchanged) followed by every part in order, with their keys
    /// re-rotated to their new positions (a part that does not move and is a whole segment
    /// of its cache is shared; the others are copied into new segments). Positions must increase
    /// along the result, and stay inside the context window.
    pub fn assemble_cache(
        &self,
        base: Option<&KvCache>,
        parts: &[Placed<'_>],
    ) -> Result<KvCache, RuntimeError> {
        self.assemble_cache_in(base, parts, &KvBuffers::default())
    }

    /// [`Model::assemble_cache`], copying into buffers taken from `buffers` (those of caches
    /// given back to it with [`KvBuffers::reclaim`]) instead of new ones.
    pub fn assemble_cache_in(
        &self,
        base: Option<&KvCache>,
        parts: &[Placed<'_>],
        buffers: &KvBuffers,
    ) -> Result<KvCache, RuntimeError> {
        let cfg = self.config();
        let (layers, w) = (cfg.num_layers, cfg.kv_width());
        let mut out = base.cloned().unwrap_or_else(|| KvCache::empty(layers, w));
        if out.layers != layers || out.kv_width != w {
            return Err(RuntimeError::InvalidRequest(
                "the KV cache was made by a different model".into(),
            ));
        }
        // Parts that stay where they were and are whole segments of their cache are shared,
        // not copied (in leave-one-out, every passage before the one left out).
        let shared = |part: &Placed<'_>| -> Option<Arc<KvSegment>> {
            let shift =
                i64::from(part.at) - i64::from(*part.cache.positions.get(part.tokens.start)?);
            (shift == 0)
                .then(|| whole_segment(part.cache, &part.tokens))
                .flatten()
        };
        let copied: usize = parts
            .iter()
            .filter(|p| shared(p).is_none())
            .map(|p| p.tokens.len())
            .sum();
        let fresh = || buffers.take(layers, copied * w);
        let mut segment = fresh();
        for part in parts {
            let cache = part.cache;
            if cache.layers != layers || cache.kv_width != w {
                return Err(RuntimeError::InvalidRequest(
                    "a KV cache part was made by a different model".into(),
                ));
            }
            let Range { start, end } = part.tokens;
            if start > end || end > cache.len() {
                return Err(RuntimeError::InvalidRequest(format!(
                    "tokens {start}..{end} of a cache of {}",
                    cache.len()
                )));
            }
            if start == end {
                continue;
            }
            let shift = i64::from(part.at) - i64::from(cache.positions[start]);
            for &p in &cache.positions[start..end] {
                let moved = i64::from(p) + shift;
                let previous = out.positions.last().map(|&q| i64::from(q));
                if previous.is_some_and(|q| moved <= q) || moved < 0 {
                    return Err(RuntimeError::BadPositions(
                        "assembled positions must increase along the cache".into(),
                    ));
                }
                if moved as usize >= cfg.context_length {
                    return Err(RuntimeError::ContextOverflow {
                        tokens: moved as usize + 1,
                        window: cfg.context_length,
                    });
                }
                out.positions.push(moved as u32);
            }
            if let Some(whole) = shared(part) {
                if segment.layers[0].0.is_empty() {
                    out.segments.push(whole);
                } else {
                    let done = std::mem::replace(&mut segment, fresh());
                    out.segments.extend([Arc::new(done), whole]);
                }
                continue;
            }
            for l in 0..layers {
                let (keys, values) = &mut segment.layers[l];
                let from = keys.len();
                copy_tokens(cache, l, start..end, keys, values);
                if shift != 0 {
                    let (theta, scale) = cfg.layer_rope(l);
                    rotate(
                        &mut keys[from..],
                        cfg.num_kv_heads,
                        cfg.head_dim,
                        theta,
                        scale,
                        shift,
                    );
                }
            }
        }
        match segment.layers.first().is_some_and(|(k, _)| !k.is_empty()) {
            true => out.segments.push(Arc::new(segment)),
            false => buffers.keep(segment),
        }
        Ok(out)
    }
}

/// The segment of `cache` that holds exactly `tokens`, if one does.
fn whole_segment(cache: &KvCache, tokens: &Range<usize>) -> Option<Arc<KvSegment>> {
    let mut offset = 0;
    for seg in &cache.segments {
        let len = seg
            .layers
            .first()
            .map_or(0, |(k, _)| k.len() / cache.kv_width);
        if offset == tokens.start && len == tokens.len() {
            return Some(seg.clone());
        }
        offset += len;
        if offset > tokens.start {
            return None;
        }
    }
    None
}

/// Appends the keys and values of `tokens` of `cache` at layer `l` (across its segments).
fn copy_tokens(
    cache: &KvCache,
    l: usize,
    tokens: Range<usize>,
    keys: &mut Vec<f32>,
    values: &mut Vec<f32>,
) {
    let w = cache.kv_width;
    let mut offset = 0;
    for seg in &cache.segments {
        let (k, v) = &seg.layers[l];
        let len = k.len() / w;
        let (a, b) = (tokens.start.max(offset), tokens.end.min(offset + len));
        if a < b {
            keys.extend_from_slice(&k[(a - offset) * w..(b - offset) * w]);
            values.extend_from_slice(&v[(a - offset) * w..(b - offset) * w]);
        }
        offset += len;
        if offset >= tokens.end {
            break;
        }
    }
}

/// Rotates keys `[tokens, heads, head_dim]` (half layout) by `shift` positions more, with the
/// frequencies the forward pass uses (`θ^(-2i/d) / scale`); the angle is computed in f64 so
/// long shifts lose nothing to rounding.
fn rotate(keys: &mut [f32], heads: usize, head_dim: usize, theta: f32, scale: f32, shift: i64) {
    let half = head_dim / 2;
    let (cos, sin): (Vec<f32>, Vec<f32>) = (0..half)
        .map(|i| {
            let f = 1.0 / theta.powf((2 * i) as f32 / head_dim as f32) / scale;
            let angle = shift as f64 * f64::from(f);
            (angle.cos() as f32, angle.sin() as f32)
        })
        .unzip();
    for token in keys.chunks_mut(heads * head_dim) {
        glassbox_kernels::math::rope_half(token, heads, head_dim, &cos, &sin);
    }
}
