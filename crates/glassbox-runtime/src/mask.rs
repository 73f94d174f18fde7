//! Attention masks beyond causality: hide spans of keys from chosen queries.
//!
//! This is how "what if the model could not see this passage" is asked without changing token
//! positions (the attention-blocking perturbation). Indices count tokens of the whole sequence,
//! cached prefix included, so a mask can hide part of a prefix from a continuation.

use std::ops::Range;

use glassbox_kernels::BlockedSpan;

/// Blocks of (queries, keys) that may not attend, on top of the causal mask.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttentionMask {
    blocks: Vec<BlockedSpan>,
}

impl AttentionMask {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queries in `queries` may not see keys in `keys`.
    pub fn block(mut self, queries: Range<usize>, keys: Range<usize>) -> Self {
        if !queries.is_empty() && !keys.is_empty() {
            self.blocks.push((queries, keys));
        }
        self
    }

    /// Every token after `keys` is blind to `keys` (the span itself still reads itself).
    pub fn hide(self, keys: Range<usize>) -> Self {
        let after = keys.end..usize::MAX;
        self.block(after, keys)
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn blocks(&self) -> &[BlockedSpan] {
        &self.blocks
    }

    /// The blocks restricted to queries `first..first + count`, re-indexed from 0 for those
    /// queries (keys keep their absolute indices). Fails if a query would be hidden from its own
    /// key, which would leave a softmax over nothing.
    pub(crate) fn for_queries(
        &self,
        first: usize,
        count: usize,
    ) -> Result<Vec<BlockedSpan>, String> {
        let mut out = Vec::new();
        for (q, k) in &self.blocks {
            let start = q.start.max(first);
            let end = q.end.min(first + count);
            if start >= end {
                continue;
            }
            let own_start = start.max(k.start);
            let own_end = end.min(k.end);
            if own_start < own_end {
                return Err(format!(
                    "token {own_start} would be hidden from itself (block of queries {q:?} over keys {k:?})"
                ));
            }
            out.push((start - first..end - first, k.clone()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_reindexed_for_the_new_queries() {
        let m = AttentionMask::new().hide(2..5);
        // Past of 4 tokens, 3 new queries at absolute 4, 5, 6: query 4 is inside the span
        // and still reads it; 5 and 6 may not.
        assert_eq!(m.for_queries(4, 3).unwrap(), vec![(1..3, 2..5)]);
        let self_hiding = AttentionMask::new().block(3..6, 2..5);
        assert!(self_hiding.for_queries(4, 3).is_err());
        let blocks = m.for_queries(5, 3).unwrap();
        assert_eq!(blocks, vec![(0..3, 2..5)]);
        assert!(
            m.for_queries(0, 2).unwrap().is_empty(),
            "queries before the span are free"
        );
        assert!(AttentionMask::new().block(3..3, 0..1).is_empty());
    }
}
