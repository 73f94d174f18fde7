//! Masked multi-head attention of one sequence, grouped-query aware, on the packed GEMM.
//!
//! Scores and weighted values are two GEMMs per head (`Q·Kᵀ` and `P·V`), so attention runs at
//! matrix-unit speed instead of as a loop of dot products. Keys and values of a KV group are
//! packed once and shared by the query heads of the group. The probabilities can be written
//! out, because explanations (attention maps, rollout) read them.

use std::ops::Range;

use rayon::prelude::*;

use crate::gemm::{
    PackedMatrix, gemm_packed_add, gemm_packed_part, pack_transposed, pack_transposed_rows,
};
use crate::math::softmax_rows;

/// Head layout of an attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub heads: usize,
    /// Key/value heads; `heads` must be a multiple (grouped-query attention).
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q·k` before the softmax (usually `1/sqrt(head_dim)`).
    pub scale: f32,
}

impl AttentionShape {
    /// Query heads per KV head (grouped-query attention); panics on a shape that has none.
    fn group(&self) -> usize {
        assert!(
            self.kv_heads > 0 && self.heads.is_multiple_of(self.kv_heads),
            "heads must be a multiple of kv_heads"
        );
        self.heads / self.kv_heads
    }
}

/// Queries (first range) that may not see keys (second range).
pub type BlockedSpan = (Range<usize>, Range<usize>);

/// Which keys each query may see.
#[derive(Debug, Clone, Copy)]
pub struct KeyFilter<'a> {
    /// For query `i`, the candidate keys `ranges[i].0 .. ranges[i].1` (causality and any
    /// sliding window); one entry per query.
    pub ranges: &'a [(usize, usize)],
    /// Extra blocks on top of the ranges: queries in `.0` may not see keys in `.1`.
    pub blocked: &'a [BlockedSpan],
}

/// Attention for `lq = filter.ranges.len()` queries over `lk` keys.
///
/// Layouts are token-major, as projections produce them: `q` and `out` are
/// `[lq, heads · head_dim]`; keys and values come in parts (KV-cache segments, shared between
/// sequences and never concatenated), each `[len_i, kv_heads · head_dim]`, `lk = Σ len_i`.
/// When given, `probs` receives the attention probabilities `[heads, lq, lk]` (0 where
/// masked). A query that can see no key gets a zero output.
pub fn attention(
    q: &[f32],
    k: &[&[f32]],
    v: &[&[f32]],
    shape: AttentionShape,
    filter: KeyFilter<'_>,
    out: &mut [f32],
    probs: Option<&mut [f32]>,
) {
    let group = shape.group();
    let AttentionShape {
        heads,
        kv_heads,
        head_dim: hd,
        scale,
    } = shape;
    let lq = filter.ranges.len();
    let kv_width = kv_heads * hd;
    let lk: usize = k.iter().map(|part| part.len() / kv_width).sum();
    for (kp, vp) in k.iter().zip(v) {
        assert_eq!(
            kp.len() % kv_width,
            0,
            "a key part is not [len, kv_heads * head_dim]"
        );
        assert_eq!(kp.len(), vp.len(), "key and value parts differ in size");
    }
    assert_eq!(k.len(), v.len(), "as many key parts as value parts");
    assert_eq!(q.len(), lq * heads * hd, "q is not [lq, heads * head_dim]");
    assert_eq!(out.len(), q.len(), "out is not the size of q");
    if lq == 0 {
        return;
    }
    if lk == 0 {
        out.fill(0.0);
        if let Some(p) = probs {
            p.fill(0.0);
        }
        return;
    }
    let packed: Vec<(PackedMatrix, PackedMatrix)> = (0..kv_heads)
        .into_par_iter()
        .map(|g| {
            (
                PackedMatrix::from_row_iter(head_rows(k, kv_width, g, hd), lk, hd),
                pack_transposed_rows(head_rows(v, kv_width, g, hd), lk, hd),
            )
        })
        .collect();

    // One task per (head, tile of queries): a tile's scores cover only the keys its queries
    // may see (causal prefill skips the upper triangle) and stay small enough to be reused
    // from cache instead of being allocated fresh for the whole [lq, lk] square.
    let tiles = lq.div_ceil(QUERY_TILE);
    let want_probs = probs.is_some();
    let results: Vec<(Vec<f32>, Vec<f32>, usize)> = (0..heads * tiles)
        .into_par_iter()
        .map(|task| {
            let (h, t) = (task / tiles, task % tiles);
            let (keys, values) = &packed[h / group];
            let q0 = t * QUERY_TILE;
            let q1 = (q0 + QUERY_TILE).min(lq);
            let seen = seen_by(filter, q0..q1, lk);
            let mut o = vec![0f32; (q1 - q0) * hd];
            if seen == 0 {
                return (o, Vec::new(), 0);
            }
            let mut scores = Vec::new();
            probabilities(
                &q[q0 * heads * hd + h * hd..],
                heads * hd,
                keys,
                seen,
                scale,
                filter,
                q0..q1,
                &mut scores,
            );
            gemm_packed_part(&scores, seen, q1 - q0, values, hd, seen, &mut o, hd, false);
            (o, if want_probs { scores } else { Vec::new() }, seen)
        })
        .collect();
    if let Some(p) = probs {
        assert_eq!(p.len(), heads * lq * lk, "probs is not [heads, lq, lk]");
        p.fill(0.0);
        for (task, (_, scores, seen)) in results.iter().enumerate() {
            let (h, t) = (task / tiles, task % tiles);
            if *seen == 0 {
                continue;
            }
            for (i, row) in scores.chunks(*seen).enumerate() {
                let at = (h * lq + t * QUERY_TILE + i) * lk;
                p[at..at + seen].copy_from_slice(row);
            }
        }
    }
    for (task, (o, _, _)) in results.iter().enumerate() {
        let (h, t) = (task / tiles, task % tiles);
        for (i, row) in o.chunks(hd).enumerate() {
            let at = (t * QUERY_TILE + i) * heads * hd + h * hd;
            out[at..at + hd].copy_from_slice(row);
        }
    }
}

/// Queries per attention task of the forward pass: bounds a task's scores to
/// `QUERY_TILE × keys` floats (64 × 4k keys = 1 MiB).
const QUERY_TILE: usize = 64;

/// Attention probabilities of one head for queries `rows` (indices into `filter.ranges`)
/// over the first `seen` keys: `softmax(scale · q·kᵀ)` over the keys each query may see (0
/// elsewhere), written to `scores` as `[rows.len(), seen]`. `q` holds the rows' query vectors at stride `ldq`, `keys`
/// the head's keys packed as the weight of a GEMM.
#[allow(clippy::too_many_arguments)]
fn probabilities(
    q: &[f32],
    ldq: usize,
    keys: &PackedMatrix,
    seen: usize,
    scale: f32,
    filter: KeyFilter<'_>,
    rows: Range<usize>,
    scores: &mut Vec<f32>,
) {
    let (lq, lk) = (rows.len(), seen);
    // Every value is written by the product (stale ones from a reused buffer do not survive).
    scores.resize(lq * lk, 0.0);
    gemm_packed_part(q, ldq, lq, keys, lk, keys.k(), scores, lk, false);
    for (i, row) in scores.chunks_mut(lk).enumerate() {
        let query = rows.start + i;
        let (start, end) = filter.ranges[query];
        let end = end.min(lk);
        let start = start.min(end);
        row[..start].fill(f32::NEG_INFINITY);
        row[end..].fill(f32::NEG_INFINITY);
        for s in &mut row[start..end] {
            *s *= scale;
        }
        for (queries, blocked) in filter.blocked {
            if queries.contains(&query) {
                row[blocked.start.min(lk)..blocked.end.min(lk)].fill(f32::NEG_INFINITY);
            }
        }
    }
    softmax_rows(scores, lk);
}

/// The backward of [`attention()`] for one sequence whose keys and values are contiguous
/// (`k`, `v`: `[lk, kv_heads · head_dim]`): given `dout = ∂L/∂out`, writes `∂L/∂q`, `∂L/∂k`
/// and `∂L/∂v`. Per head, with `P = softmax(S)`: `∂P = ∂O·Vᵀ`,
/// `∂S = P ⊙ (∂P − rowsum(P ⊙ ∂P))`, `∂Q = scale·∂S·K`, `∂K = scale·∂Sᵀ·Q`, `∂V = Pᵀ·∂O`; the
/// query heads of a KV group add into its `∂K`, `∂V`. When given, `edges`
/// (`[heads, lq, lk]`) receives `P ⊙ ∂L/∂P`: each attention edge's first-order share of `L`
/// (attention × gradient).
///
/// Like the forward, each head runs tile by tile of [`QUERY_TILE`] queries over only the keys
/// the tile may see, and recomputes the tile's probabilities by the forward's own code rather
/// than storing them: a 3k-token prompt never holds a `[lq, lk]` square (four of them per head
/// made long prompts' gradients several times slower than their arithmetic, mostly in page
/// faults and transposes), and causal attention skips the upper triangle. Key and value
/// gradients are summed over the tiles transposed (`∂Kᵀ += Qᵀ_tile · ∂S_tile`), which reads
/// each tile's `∂S` and `P` as packed rows instead of transposing them.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    filter: KeyFilter<'_>,
    dout: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    edges: Option<&mut [f32]>,
) {
    let group = shape.group();
    let AttentionShape {
        heads,
        kv_heads,
        head_dim: hd,
        scale,
    } = shape;
    let (qw, kvw) = (heads * hd, kv_heads * hd);
    let lq = filter.ranges.len();
    let lk = k.len() / kvw;
    assert_eq!(q.len(), lq * qw, "q is not [lq, heads * head_dim]");
    assert_eq!(k.len(), lk * kvw, "k is not [lk, kv_heads * head_dim]");
    assert!(v.len() == k.len() && dk.len() == k.len() && dv.len() == v.len());
    assert!(dout.len() == q.len() && dq.len() == q.len());
    dk.fill(0.0);
    dv.fill(0.0);
    let mut edges = edges;
    if let Some(e) = edges.as_deref_mut() {
        assert_eq!(e.len(), heads * lq * lk, "edges is not [heads, lq, lk]");
        e.fill(0.0);
    }
    if lq == 0 || lk == 0 {
        dq.fill(0.0);
        return;
    }
    // Per KV group: K and V as the weights of `S = Q·Kᵀ` and `∂P = ∂O·Vᵀ`, and `Kᵀ` as the
    // weight of `∂Q = ∂S·K`.
    let packed: Vec<(PackedMatrix, PackedMatrix, PackedMatrix)> = (0..kv_heads)
        .into_par_iter()
        .map(|g| {
            (
                PackedMatrix::from_rows(&k[g * hd..], lk, hd, kvw),
                PackedMatrix::from_rows(&v[g * hd..], lk, hd, kvw),
                pack_transposed(&k[g * hd..], lk, hd, kvw),
            )
        })
        .collect();
    let tiles = lq.div_ceil(QUERY_TILE);
    let want_edges = edges.is_some();
    let per_head: Vec<HeadGradients> = (0..heads)
        .into_par_iter()
        .map(|h| {
            let (keys, values, keys_t) = &packed[h / group];
            let mut grads = HeadGradients {
                dq: vec![0f32; lq * hd],
                dkt: vec![0f32; hd * lk],
                dvt: vec![0f32; hd * lk],
                edges: Vec::new(),
            };
            // One tile's buffers, reused by the next tile.
            let (mut p, mut ds) = (Vec::new(), Vec::new());
            let mut rows = PackedMatrix::empty();
            for t in 0..tiles {
                let (q0, q1) = (t * QUERY_TILE, ((t + 1) * QUERY_TILE).min(lq));
                let tq = q1 - q0;
                let seen = seen_by(filter, q0..q1, lk);
                if seen == 0 {
                    continue;
                }
                let (qh, doh) = (&q[q0 * qw + h * hd..], &dout[q0 * qw + h * hd..]);
                probabilities(qh, qw, keys, seen, scale, filter, q0..q1, &mut p);
                ds.resize(tq * seen, 0.0);
                gemm_packed_part(doh, qw, tq, values, seen, hd, &mut ds, seen, false);
                if want_edges {
                    let tile = p.iter().zip(&ds).map(|(a, b)| a * b).collect();
                    grads.edges.push((q0, seen, tile));
                }
                // ∂S, scaled: the scores are scale·q·k.
                for (prow, row) in p.chunks(seen).zip(ds.chunks_mut(seen)) {
                    let dot: f32 = prow.iter().zip(row.iter()).map(|(a, b)| a * b).sum();
                    for (d, &pv) in row.iter_mut().zip(prow) {
                        *d = scale * pv * (*d - dot);
                    }
                }
                let dq_tile = &mut grads.dq[q0 * hd..q1 * hd];
                gemm_packed_part(&ds, seen, tq, keys_t, hd, seen, dq_tile, hd, false);
                // ∂Kᵀ += Qᵀ·∂S and ∂Vᵀ += ∂Oᵀ·P over this tile's queries.
                let (qt, dot) = (
                    head_transposed(qh, qw, tq, hd),
                    head_transposed(doh, qw, tq, hd),
                );
                rows.refill_transposed(&ds, tq, seen, seen);
                gemm_packed_add(&qt, tq, hd, &rows, &mut grads.dkt, lk);
                rows.refill_transposed(&p, tq, seen, seen);
                gemm_packed_add(&dot, tq, hd, &rows, &mut grads.dvt, lk);
            }
            grads
        })
        .collect();
    if let Some(e) = edges {
        for (h, grads) in per_head.iter().enumerate() {
            for (q0, seen, tile) in &grads.edges {
                for (i, row) in tile.chunks(*seen).enumerate() {
                    let at = (h * lq + q0 + i) * lk;
                    e[at..at + seen].copy_from_slice(row);
                }
            }
        }
    }
    for (h, grads) in per_head.iter().enumerate() {
        let g = h / group;
        for i in 0..lq {
            dq[i * qw + h * hd..i * qw + (h + 1) * hd]
                .copy_from_slice(&grads.dq[i * hd..(i + 1) * hd]);
        }
        for d in 0..hd {
            let (dkt, dvt) = (
                &grads.dkt[d * lk..(d + 1) * lk],
                &grads.dvt[d * lk..(d + 1) * lk],
            );
            for j in 0..lk {
                dk[j * kvw + g * hd + d] += dkt[j];
                dv[j * kvw + g * hd + d] += dvt[j];
            }
        }
    }
}

/// One query head's share of [`attention_backward`]: `∂Q_h` (`[lq, hd]`), its contributions to
/// its group's `∂K` and `∂V`, transposed (`[hd, lk]`), and if asked each tile's edges
/// (`[tile queries, seen]`) with its first query and key count.
struct HeadGradients {
    dq: Vec<f32>,
    dkt: Vec<f32>,
    dvt: Vec<f32>,
    edges: Vec<(usize, usize, Vec<f32>)>,
}

/// The keys the queries `rows` may see at most (the width of their tile's scores).
fn seen_by(filter: KeyFilter<'_>, rows: Range<usize>, lk: usize) -> usize {
    filter.ranges[rows]
        .iter()
        .map(|&(_, end)| end.min(lk))
        .max()
        .unwrap_or(0)
}

/// One head's `[rows, hd]` slice (rows at stride `ld`) transposed to `[hd, rows]`.
fn head_transposed(x: &[f32], ld: usize, rows: usize, hd: usize) -> Vec<f32> {
    let mut t = vec![0f32; hd * rows];
    for i in 0..rows {
        for (d, &value) in x[i * ld..i * ld + hd].iter().enumerate() {
            t[d * rows + i] = value;
        }
    }
    t
}

/// The `head_dim` slice of KV group `g` in every row of every part, in order.
fn head_rows<'a>(
    parts: &[&'a [f32]],
    kv_width: usize,
    g: usize,
    hd: usize,
) -> impl Iterator<Item = &'a [f32]> {
    parts.iter().flat_map(move |part| {
        part.chunks(kv_width)
            .map(move |row| &row[g * hd..(g + 1) * hd])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Direct f64 evaluation of the definition.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: AttentionShape,
        f: KeyFilter<'_>,
    ) -> (Vec<f32>, Vec<f32>) {
        let lq = f.ranges.len();
        let lk = k.len() / (s.kv_heads * s.head_dim);
        let hd = s.head_dim;
        let mut out = vec![0f32; lq * s.heads * hd];
        let mut probs = vec![0f32; s.heads * lq * lk];
        for h in 0..s.heads {
            let g = h / (s.heads / s.kv_heads);
            for i in 0..lq {
                let visible: Vec<usize> = (0..lk)
                    .filter(|&j| j >= f.ranges[i].0 && j < f.ranges[i].1)
                    .filter(|&j| {
                        !f.blocked
                            .iter()
                            .any(|(qs, ks)| qs.contains(&i) && ks.contains(&j))
                    })
                    .collect();
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        (0..hd)
                            .map(|d| {
                                q[i * s.heads * hd + h * hd + d] as f64
                                    * k[j * s.kv_heads * hd + g * hd + d] as f64
                            })
                            .sum::<f64>()
                            * s.scale as f64
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                for (&j, &sc) in visible.iter().zip(&scores) {
                    let p = (sc - max).exp() / z;
                    probs[h * lq * lk + i * lk + j] = p as f32;
                    for d in 0..hd {
                        out[i * s.heads * hd + h * hd + d] +=
                            (p * v[j * s.kv_heads * hd + g * hd + d] as f64) as f32;
                    }
                }
            }
        }
        (out, probs)
    }

    #[test]
    fn matches_direct_evaluation_with_gqa_window_blocks_and_query_tiles() {
        let mut rng = StdRng::seed_from_u64(1);
        let shape = AttentionShape {
            heads: 6,
            kv_heads: 2,
            head_dim: 40,
            scale: 0.2,
        };
        // Queries span three tiles (the last one partial), each seeing a different key prefix.
        let (past, lq) = (5usize, 2 * QUERY_TILE + 22);
        let lk = past + lq;
        let rand = |n: usize, rng: &mut StdRng| -> Vec<f32> {
            (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
        };
        let q = rand(lq * 6 * 40, &mut rng);
        let k = rand(lk * 2 * 40, &mut rng);
        let v = rand(lk * 2 * 40, &mut rng);
        // Causal with a sliding window of 40 keys.
        let ranges: Vec<(usize, usize)> = (0..lq)
            .map(|i| ((past + i + 1).saturating_sub(40), past + i + 1))
            .collect();
        let blocked = vec![(10..lq, 9..12), (70..90, 60..75)];
        let filter = KeyFilter {
            ranges: &ranges,
            blocked: &blocked,
        };
        let mut out = vec![0f32; q.len()];
        let mut probs = vec![0f32; 6 * lq * lk];
        // Keys and values split into three parts, as KV-cache segments are.
        fn cut(x: &[f32]) -> Vec<&[f32]> {
            let w = 2 * 40;
            vec![&x[..3 * w], &x[3 * w..3 * w], &x[3 * w..]]
        }
        attention(
            &q,
            &cut(&k),
            &cut(&v),
            shape,
            filter,
            &mut out,
            Some(&mut probs),
        );
        let (want_out, want_probs) = reference(&q, &k, &v, shape, filter);
        let max_err = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        assert!(max_err(&out, &want_out) < 1e-5);
        assert!(max_err(&probs, &want_probs) < 1e-6);
        for row in probs.chunks(lk) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        // Without probabilities the output is the same.
        let mut out2 = vec![0f32; q.len()];
        attention(&q, &[&k], &[&v], shape, filter, &mut out2, None);
        assert_eq!(out, out2);
    }

    /// Direct f64 evaluation of the backward's formulas: `(∂Q, ∂K, ∂V, edges)`.
    #[allow(clippy::type_complexity)]
    fn reference_backward(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: AttentionShape,
        f: KeyFilter<'_>,
        dout: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (_, probs) = reference(q, k, v, s, f);
        let lq = f.ranges.len();
        let hd = s.head_dim;
        let (qw, kvw) = (s.heads * hd, s.kv_heads * hd);
        let lk = k.len() / kvw;
        let (mut dq, mut dk, mut dv) = (
            vec![0f64; q.len()],
            vec![0f64; k.len()],
            vec![0f64; v.len()],
        );
        let mut edges = vec![0f64; s.heads * lq * lk];
        for h in 0..s.heads {
            let g = h / (s.heads / s.kv_heads);
            for i in 0..lq {
                let p = |j: usize| probs[(h * lq + i) * lk + j] as f64;
                let dp: Vec<f64> = (0..lk)
                    .map(|j| {
                        (0..hd)
                            .map(|d| {
                                dout[i * qw + h * hd + d] as f64 * v[j * kvw + g * hd + d] as f64
                            })
                            .sum()
                    })
                    .collect();
                let dot: f64 = (0..lk).map(|j| p(j) * dp[j]).sum();
                for j in 0..lk {
                    edges[(h * lq + i) * lk + j] = p(j) * dp[j];
                    let ds = s.scale as f64 * p(j) * (dp[j] - dot);
                    for d in 0..hd {
                        dq[i * qw + h * hd + d] += ds * k[j * kvw + g * hd + d] as f64;
                        dk[j * kvw + g * hd + d] += ds * q[i * qw + h * hd + d] as f64;
                        dv[j * kvw + g * hd + d] += p(j) * dout[i * qw + h * hd + d] as f64;
                    }
                }
            }
        }
        (dq, dk, dv, edges)
    }

    #[test]
    fn tiled_backward_matches_direct_evaluation_over_several_query_tiles() {
        let mut rng = StdRng::seed_from_u64(3);
        let shape = AttentionShape {
            heads: 6,
            kv_heads: 2,
            head_dim: 40,
            scale: 0.2,
        };
        // Three query tiles (the last one partial) after 5 earlier keys, causal with a window
        // of 90 keys, so tiles see different key prefixes and some keys none of a tile's.
        let (past, lq) = (5usize, 2 * QUERY_TILE + 22);
        let lk = past + lq;
        let rand = |n: usize, rng: &mut StdRng| -> Vec<f32> {
            (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
        };
        let q = rand(lq * 240, &mut rng);
        let k = rand(lk * 80, &mut rng);
        let v = rand(lk * 80, &mut rng);
        let dout = rand(lq * 240, &mut rng);
        let ranges: Vec<(usize, usize)> = (0..lq)
            .map(|i| ((past + i + 1).saturating_sub(90), past + i + 1))
            .collect();
        let blocked = vec![(10..lq, 9..12), (70..140, 60..75)];
        let filter = KeyFilter {
            ranges: &ranges,
            blocked: &blocked,
        };
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; q.len()],
            vec![0f32; k.len()],
            vec![0f32; v.len()],
        );
        // Stale values in the outputs must not leak into the result.
        let mut edges = vec![9f32; 6 * lq * lk];
        dk.fill(5.0);
        attention_backward(
            &q,
            &k,
            &v,
            shape,
            filter,
            &dout,
            &mut dq,
            &mut dk,
            &mut dv,
            Some(&mut edges),
        );
        let (want_dq, want_dk, want_dv, want_edges) =
            reference_backward(&q, &k, &v, shape, filter, &dout);
        let max_err = |a: &[f32], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(&x, &y)| (x as f64 - y).abs())
                .fold(0f64, f64::max)
        };
        assert!(
            max_err(&dq, &want_dq) < 1e-5,
            "dq {}",
            max_err(&dq, &want_dq)
        );
        assert!(
            max_err(&dk, &want_dk) < 1e-5,
            "dk {}",
            max_err(&dk, &want_dk)
        );
        assert!(
            max_err(&dv, &want_dv) < 1e-5,
            "dv {}",
            max_err(&dv, &want_dv)
        );
        assert!(max_err(&edges, &want_edges) < 1e-6);
        // Without edges the gradients are the same.
        let (mut dq2, mut dk2, mut dv2) = (vec![0f32; q.len()], dk.clone(), dv.clone());
        attention_backward(
            &q, &k, &v, shape, filter, &dout, &mut dq2, &mut dk2, &mut dv2, None,
        );
        assert_eq!((dq, dk, dv), (dq2, dk2, dv2));
    }

    #[test]
    fn backward_equals_finite_differences_with_gqa_window_and_blocks() {
        let mut rng = StdRng::seed_from_u64(2);
        let shape = AttentionShape {
            heads: 4,
            kv_heads: 2,
            head_dim: 6,
            scale: 0.4,
        };
        let l = 7usize;
        let rand = |n: usize, rng: &mut StdRng| -> Vec<f32> {
            (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
        };
        let (q, k, v) = (
            rand(l * 24, &mut rng),
            rand(l * 12, &mut rng),
            rand(l * 12, &mut rng),
        );
        let c = rand(l * 24, &mut rng);
        let ranges: Vec<(usize, usize)> =
            (0..l).map(|i| ((i + 1).saturating_sub(4), i + 1)).collect();
        let blocked = vec![(3..7, 1..3)];
        let filter = KeyFilter {
            ranges: &ranges,
            blocked: &blocked,
        };
        // L = Σ c ⊙ attention(q, k, v), evaluated in f64 by the reference.
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            let (out, _) = reference(q, k, v, shape, filter);
            out.iter().zip(&c).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; q.len()],
            vec![0f32; k.len()],
            vec![0f32; v.len()],
        );
        let mut edges = vec![0f32; 4 * l * l];
        attention_backward(
            &q,
            &k,
            &v,
            shape,
            filter,
            &c,
            &mut dq,
            &mut dk,
            &mut dv,
            Some(&mut edges),
        );
        // Edges: P ⊙ ∂L/∂P with ∂L/∂P[h, i, j] = c_h[i] · v_g[j] (L is linear in P given V).
        let (_, probs) = reference(&q, &k, &v, shape, filter);
        for h in 0..4 {
            let g = h / 2;
            for i in 0..l {
                for j in 0..l {
                    let dp: f64 = (0..6)
                        .map(|t| c[i * 24 + h * 6 + t] as f64 * v[j * 12 + g * 6 + t] as f64)
                        .sum();
                    let want = probs[h * l * l + i * l + j] as f64 * dp;
                    let got = edges[h * l * l + i * l + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "edge {h},{i},{j}: {got} vs {want}"
                    );
                }
            }
        }
        let h = 1e-2f32;
        let check = |which: usize, grad: &[f32]| {
            for i in 0..grad.len() {
                let bump = |delta: f32| {
                    let (mut q2, mut k2, mut v2) = (q.clone(), k.clone(), v.clone());
                    [&mut q2, &mut k2, &mut v2][which][i] += delta;
                    loss(&q2, &k2, &v2)
                };
                let want = (bump(h) - bump(-h)) / (2.0 * h as f64);
                assert!(
                    (grad[i] as f64 - want).abs() < 2e-3,
                    "input {which}, {i}: {} vs {want}",
                    grad[i]
                );
            }
        };
        check(0, &dq);
        check(1, &dk);
        check(2, &dv);
    }
}
