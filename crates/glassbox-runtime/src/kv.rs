//! The key/value cache as a value: compute a prefix once, then continue it many ways.
//!
//! Explanations evaluate one prompt under many perturbations that share prefixes (the chat
//! header, the passages kept so far). A [`KvCache`] is a list of immutable, reference-counted
//! segments, one per stretch of tokens computed together: continuing a cache adds a segment and
//! never copies the prefix, so any number of forks share their common part in memory. A segment
//! that no other cache holds is extended in place instead, so decoding one token at a time keeps
//! a single growing segment.

use std::sync::{Arc, Mutex};

/// Keys (after rotary embedding) and values of a stretch of tokens, for every layer.
#[derive(Clone)]
pub(crate) struct KvSegment {
    /// Per layer: keys and values, `[len, kv_heads · head_dim]` each.
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl KvSegment {
    pub(crate) fn empty(layers: usize) -> Self {
        Self {
            layers: vec![(Vec::new(), Vec::new()); layers],
        }
    }
}

/// Cached keys and values of every layer for a token sequence.
#[derive(Clone)]
pub struct KvCache {
    pub(crate) segments: Vec<Arc<KvSegment>>,
    /// Position of every cached token.
    pub(crate) positions: Vec<u32>,
    pub(crate) layers: usize,
    pub(crate) kv_width: usize,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KvCache[{} tokens in {} segments, {} layers]",
            self.len(),
            self.segments.len(),
            self.layers
        )
    }
}

impl KvCache {
    pub(crate) fn empty(layers: usize, kv_width: usize) -> Self {
        Self {
            segments: Vec::new(),
            positions: Vec::new(),
            layers,
            kv_width,
        }
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Positions of the cached tokens.
    pub fn positions(&self) -> &[u32] {
        &self.positions
    }

    /// The position a token appended next gets by default.
    pub fn next_position(&self) -> u32 {
        self.positions.last().map_or(0, |p| p + 1)
    }

    /// The cache of the first `len` tokens (`self` is unchanged; whole segments are shared).
    pub fn truncated(&self, len: usize) -> KvCache {
        let len = len.min(self.len());
        let w = self.kv_width;
        let mut segments = Vec::new();
        let mut kept = 0;
        for seg in &self.segments {
            let seg_len = seg.layers.first().map_or(0, |(k, _)| k.len() / w);
            if kept + seg_len <= len {
                segments.push(seg.clone());
                kept += seg_len;
            } else {
                let take = len - kept;
                if take > 0 {
                    segments.push(Arc::new(KvSegment {
                        layers: seg
                            .layers
                            .iter()
                            .map(|(k, v)| (k[..take * w].to_vec(), v[..take * w].to_vec()))
                            .collect(),
                    }));
                }
                break;
            }
        }
        KvCache {
            segments,
            positions: self.positions[..len].to_vec(),
            layers: self.layers,
            kv_width: w,
        }
    }

    /// Bytes of keys and values this cache refers to (segments shared with other caches are
    /// counted in full).
    pub fn size_bytes(&self) -> usize {
        self.segments
            .iter()
            .flat_map(|s| s.layers.iter())
            .map(|(k, v)| (k.len() + v.len()) * 4)
            .sum()
    }

    /// Splits the cache for extension by `extra` tokens: the shared segments, and a segment
    /// to append to — the last one, taken over in place when no other cache holds it and
    /// growing it is cheap (it has room, or is small next to what is appended, as when
    /// decoding one token at a time); otherwise a new one, so that continuing a long
    /// assembled or prefilled segment never reallocates and copies it.
    pub(crate) fn open(mut self, extra: usize) -> (Vec<Arc<KvSegment>>, KvSegment, Vec<u32>) {
        let w = self.kv_width;
        let open = match self.segments.pop() {
            Some(last) => match Arc::try_unwrap(last) {
                Ok(owned)
                    if owned.layers.first().is_none_or(|(k, _)| {
                        k.capacity() - k.len() >= extra * w || k.len() <= 8 * extra * w
                    }) =>
                {
                    owned
                }
                Ok(owned) => {
                    self.segments.push(Arc::new(owned));
                    KvSegment::empty(self.layers)
                }
                Err(shared) => {
                    self.segments.push(shared);
                    KvSegment::empty(self.layers)
                }
            },
            None => KvSegment::empty(self.layers),
        };
        (self.segments, open, self.positions)
    }

    /// Reassembles a cache from shared segments, the extended open segment and positions.
    pub(crate) fn close(
        mut segments: Vec<Arc<KvSegment>>,
        open: KvSegment,
        positions: Vec<u32>,
        kv_width: usize,
    ) -> Self {
        let layers = open.layers.len();
        if open.layers.first().is_some_and(|(k, _)| !k.is_empty()) {
            segments.push(Arc::new(open));
        }
        KvCache {
            segments,
            positions,
            layers,
            kv_width,
        }
    }
}

/// Key/value buffers of caches that are done with, kept to be filled again.
///
/// Assembling a cache copies most of a long prompt's keys and values into new buffers, and
/// an attribution assembles one per coalition. Fresh buffers of that size come from the
/// operating system as untouched pages, and faulting them in (zeroing included) cost a
/// third of the coalitions' time on the 2-core VMs measured — more than the copy itself.
/// Reusing the buffers of the previous batch's caches costs nothing of the sort.
/// Shared across threads: coalitions are assembled one per thread.
#[derive(Default)]
pub struct KvBuffers {
    spare: Mutex<Vec<KvSegment>>,
}

impl KvBuffers {
    /// Keeps the segments of `cache` that no other cache holds (those still shared stay
    /// with their other holders).
    pub fn reclaim(&self, cache: KvCache) {
        for segment in cache.segments {
            if let Ok(segment) = Arc::try_unwrap(segment) {
                self.keep(segment);
            }
        }
    }

    /// Keeps `segment`'s buffers, emptied (a segment without any is dropped).
    pub(crate) fn keep(&self, mut segment: KvSegment) {
        if segment
            .layers
            .first()
            .is_none_or(|(k, _)| k.capacity() == 0)
        {
            return;
        }
        for (k, v) in &mut segment.layers {
            k.clear();
            v.clear();
        }
        self.spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(segment);
    }

    /// An empty segment of `layers` layers with room for `floats` keys and as many values per
    /// layer: the smallest kept one that has the room, else the largest kept one (grown),
    /// else a new one.
    pub(crate) fn take(&self, layers: usize, floats: usize) -> KvSegment {
        let room = |s: &KvSegment| {
            s.layers
                .first()
                .map_or(0, |(k, v)| k.capacity().min(v.capacity()))
        };
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        spare.retain(|s| s.layers.len() == layers);
        let pick = spare
            .iter()
            .enumerate()
            .filter(|(_, s)| room(s) >= floats)
            .min_by_key(|(_, s)| room(s))
            .or_else(|| spare.iter().enumerate().max_by_key(|(_, s)| room(s)))
            .map(|(i, _)| i);
        let mut segment = match pick {
            Some(i) => spare.swap_remove(i),
            None => KvSegment::empty(layers),
        };
        drop(spare);
        for (k, v) in &mut segment.layers {
            k.reserve(floats);
            v.reserve(floats);
        }
        segment
    }
}
