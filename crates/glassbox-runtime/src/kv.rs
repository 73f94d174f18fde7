//! The key/value cache as a value: compute a prefix once, then continue it many ways.
//!
//! Explanations evaluate one prompt under many perturbations that share a prefix (the chat
//! header, the passages kept so far). A [`KvCache`] is cheap to clone (reference counted) and
//! immutable from the outside: continuing a cache that is shared copies it first, continuing
//! one that is not shared appends in place. So forking is free and decoding stays linear.

use std::sync::Arc;

/// Cached keys (after rotary embedding) and values of every layer for a token sequence.
#[derive(Clone)]
pub struct KvCache {
    pub(crate) data: Arc<KvData>,
}

#[derive(Clone)]
pub(crate) struct KvData {
    /// Per layer: keys and values, `[len, kv_heads · head_dim]` each.
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// Position of every cached token.
    pub positions: Vec<u32>,
    pub kv_width: usize,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KvCache[{} tokens, {} layers]",
            self.len(),
            self.data.layers.len()
        )
    }
}

impl KvData {
    pub(crate) fn empty(layers: usize, kv_width: usize) -> Self {
        Self {
            layers: vec![(Vec::new(), Vec::new()); layers],
            positions: Vec::new(),
            kv_width,
        }
    }
}

impl KvCache {
    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.data.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.positions.is_empty()
    }

    /// Positions of the cached tokens.
    pub fn positions(&self) -> &[u32] {
        &self.data.positions
    }

    /// The position a token appended next gets by default.
    pub fn next_position(&self) -> u32 {
        self.data.positions.last().map_or(0, |p| p + 1)
    }

    /// The cache of the first `len` tokens (a copy; `self` is unchanged).
    pub fn truncated(&self, len: usize) -> KvCache {
        let len = len.min(self.len());
        let w = self.data.kv_width;
        let data = KvData {
            layers: self
                .data
                .layers
                .iter()
                .map(|(k, v)| (k[..len * w].to_vec(), v[..len * w].to_vec()))
                .collect(),
            positions: self.data.positions[..len].to_vec(),
            kv_width: w,
        };
        KvCache {
            data: Arc::new(data),
        }
    }

    /// Memory held by the cache, in bytes.
    pub fn size_bytes(&self) -> usize {
        self.data
            .layers
            .iter()
            .map(|(k, v)| (k.len() + v.len()) * 4)
            .sum()
    }

    /// Takes the data out for extension: in place when this is the only handle.
    pub(crate) fn into_data(self) -> KvData {
        Arc::try_unwrap(self.data).unwrap_or_else(|shared| (*shared).clone())
    }
}
