//! The input gradient of a packed linear layer: `dX = dY · W`, read from the packing of `W`.
//!
//! [`gemm_packed`](crate::gemm_packed) computes `Y = X · Wᵀ` on `W` packed into panels of
//! [`NR`] output features (`panel[k][j] = W[p·NR + j, k]`). Its backward needs `X`'s gradient
//! only (attribution never trains weights), `dX[i, k] = Σ_j dY[i, j] · W[j, k]`. Inside a
//! panel, the `NR` values `W[p·NR.., k]` of one input feature `k` are contiguous, so each output
//! is a dot product of a row of `dY` with one packed row per panel: this kernel keeps a
//! 4 × 6 tile of such dot products in 16-lane accumulators, streams the panels, and reduces the
//! lanes once at the end. It reads the same packed data as the forward, so gradients need no
//! second, transposed copy of the model.
//!
//! That dot-product kernel suits a few rows (the LM-head rows a target reads). For many rows
//! the backward runs a micro-kernel shaped like the forward's, on `dXᵀ = Wᵀ · dYᵀ`: the packed
//! panels already hold `Wᵀ` as blocks of `NR` columns (`Wᵀ[f, p·NR + j]` at `panel_p[f][j]`),
//! so the kernel broadcasts `Wᵀ` straight from the packing, jumping to the next panel every
//! `NR` steps, and streams `dYᵀ` (packed once per call in groups of `NR` rows) as the vector
//! operand. A tile of 14 features × 32 rows of `dY` stays in registers over 8 panels of
//! depth, as the forward's tile does over its K block; `dXᵀ` is transposed at the end. On the
//! projection shapes of a 135M model it runs at the forward's speed per core (the passes
//! over `dY` and `dX` cost ~10% on top).

use rayon::prelude::*;

use crate::gemm::{self, Kernel, NR, PackedMatrix, SendPtr};

/// Rows of `dY` per micro-kernel call.
const TR: usize = 4;
/// Input features (`dX` columns) per micro-kernel call: 4 × 6 accumulators, 4 row vectors
/// and one panel vector fit the 32 AVX-512 registers.
const TC: usize = 4;
/// Rows of `dY` per cache block.
const TM: usize = 64;
/// Panels per block of `dY`'s columns in the dot-product kernel.
const PANELS_PER_BLOCK: usize = 1000;
/// Vector width of the accumulators.
const LANES: usize = 16;
/// Input features (rows of `dXᵀ`) per micro-kernel call of the panel method: 14 × 2
/// accumulators, 2 vectors of `dYᵀ` and one broadcast fit the 32 AVX-512 registers.
const MR: usize = 14;
/// Input features the panel method keeps in cache while every group of `dY` rows passes.
const FEATURES_PER_BLOCK: usize = 4 * MR;
/// Panels of `W` per block of the panel method's reduction. Consecutive panels lie `k · NR`
/// floats apart — a multiple of 4 KiB for the usual `k` — so the same features of many
/// panels map to the same L1 cache sets: a block must not visit more panels than L1 has ways
/// (12 on Zen 5), or every load of `W` misses.
const DEPTH_PANELS: usize = 8;
/// From this many rows of `dY` on, the panel method (the forward's micro-kernel) is faster.
const PANEL_METHOD_ROWS: usize = 16;
/// How many panels ahead the few-rows method prefetches its lines of `W`.
const COLUMNS_PREFETCH_PANELS: usize = 4;

/// `C[i, :] = A[i, :] · W` for `i < m`, where `A` is `[m, n]` (row `i` at `a[i * lda]`) and
/// `W` is the `[n, k]` matrix packed in `w`; row `i` of `C` (length `k`) starts at
/// `c[i * ldc]`. With `parallel`, the columns of `C` are split over rayon's pool.
pub fn gemm_packed_backward(
    a: &[f32],
    lda: usize,
    m: usize,
    w: &PackedMatrix,
    c: &mut [f32],
    ldc: usize,
    parallel: bool,
) {
    let (n, k) = (w.n(), w.k());
    if m == 0 || k == 0 {
        return;
    }
    // A holds `n` values a row and C `k`: the forward's check with the roles swapped.
    gemm::check_operands(a, lda, m, k, n, c, ldc);
    if n == 0 {
        for i in 0..m {
            c[i * ldc..i * ldc + k].fill(0.0);
        }
        return;
    }
    let kernel = Kernel::detect();
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    if m >= PANEL_METHOD_ROWS {
        by_panels(kernel, a, lda, m, w, c, ldc, threads);
        return;
    }
    let c_ptr = SendPtr(c.as_mut_ptr());
    let run = |cols: std::ops::Range<usize>| {
        // SAFETY: tasks write disjoint column ranges of C; bounds were checked above.
        unsafe { columns(kernel, a, lda, m, w, c_ptr, ldc, cols) }
    };
    let blocks = k.div_ceil(TC);
    if threads <= 1 || m * n * k < 32 * 1024 || blocks < 2 {
        run(0..k);
    } else {
        let per = blocks.div_ceil(threads.min(blocks)) * TC;
        (0..k.div_ceil(per))
            .into_par_iter()
            .for_each(|t| run(t * per..((t + 1) * per).min(k)));
    }
}

thread_local! {
    /// The panel method's packed `dYᵀ`, kept between calls.
    static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The panel method's `dXᵀ` before its transpose, kept between calls for the same reason.
    static TRANSPOSED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Takes a thread's kept buffer (a fresh one when a call nested in this thread's rayon work
/// has it lent out already).
fn borrow(key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>) -> Vec<f32> {
    key.with(|cell| cell.try_borrow_mut().map(|mut v| std::mem::take(&mut *v)))
        .unwrap_or_default()
}

/// Gives a buffer back for the thread's next call.
fn keep(key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>, buffer: Vec<f32>) {
    key.with(|cell| {
        if let Ok(mut v) = cell.try_borrow_mut() {
            *v = buffer;
        }
    });
}

/// `dX = dY · W` as `dXᵀ = Wᵀ · dYᵀ` on a micro-kernel shaped like the forward's (see the
/// module documentation); threads split the input features.
#[allow(clippy::too_many_arguments)]
fn by_panels(
    kernel: Kernel,
    a: &[f32],
    lda: usize,
    m: usize,
    w: &PackedMatrix,
    c: &mut [f32],
    ldc: usize,
    threads: usize,
) {
    let (n, k) = (w.n(), w.k());
    let panels = n.div_ceil(NR);
    let depth = panels * NR;
    let groups = m.div_ceil(NR);
    // dYᵀ as the right operand: groups of NR rows of dY, each `[depth][NR]` (row r of the
    // group is lane r), zero past n and past m so that W's zero padding meets zeros.
    // Reused from call to call: a fresh buffer of megabytes costs page faults every time. A
    // call nested in this thread's rayon work (the buffer is then lent out) gets a fresh one.
    let mut packed = borrow(&PACKED);
    // Every value is written below: stale ones from an earlier call do not survive.
    packed.resize(groups * depth * NR, 0.0);
    let pack = |(g, out): (usize, &mut [f32])| {
        let rows = NR.min(m - g * NR);
        let (valid, padding) = out.split_at_mut(n * NR);
        // Sixteen values of a row (one cache line) at a time: reading down a column instead
        // strides by whole rows, which alias in L1 and made this pass a fifth of the product.
        for (c, chunk) in valid.chunks_mut(16 * NR).enumerate() {
            let j0 = c * 16;
            for r in 0..rows {
                let row = &a[(g * NR + r) * lda + j0..][..chunk.len() / NR];
                for (lanes, &value) in chunk.chunks_exact_mut(NR).zip(row) {
                    lanes[r] = value;
                }
            }
            if rows < NR {
                for lanes in chunk.chunks_exact_mut(NR) {
                    lanes[rows..].fill(0.0);
                }
            }
        }
        padding.fill(0.0);
    };
    // Packing and the final transpose are a pass over dY and dX each: run them on every
    // thread too, or they cost a good part of the multiplication.
    if threads > 1 {
        packed.par_chunks_mut(depth * NR).enumerate().for_each(pack);
    } else {
        packed.chunks_mut(depth * NR).enumerate().for_each(pack);
    }
    // Every value is written by the tiles (the first depth block does not accumulate).
    let mut ct = borrow(&TRANSPOSED);
    ct.resize(k * m, 0.0);
    let ct_ptr = SendPtr(ct.as_mut_ptr());
    let data = w.data();
    let run = |features: std::ops::Range<usize>| {
        // The whole wrapper, not its pointer field, is what the closure must capture.
        let ct = ct_ptr;
        for pc in (0..panels).step_by(DEPTH_PANELS) {
            let kc = DEPTH_PANELS.min(panels - pc) * NR;
            for f0 in features.clone().step_by(FEATURES_PER_BLOCK) {
                let fend = (f0 + FEATURES_PER_BLOCK).min(features.end);
                for g in 0..groups {
                    let mut r0 = f0;
                    while r0 < fend {
                        let rows = MR.min(fend - r0);
                        // The forward's micro-kernel, reading `Wᵀ[f, j]` from the packing:
                        // within a panel a feature's NR values are NR apart, and the next
                        // panel is `k · NR` further.
                        let tile = gemm::Tile {
                            // SAFETY (all three): offsets inside W's panels, the packed dYᵀ
                            // and dXᵀ, by the bounds above.
                            a: unsafe { data.as_ptr().add(pc * k * NR + r0 * NR) },
                            lda: NR,
                            segment: NR,
                            jump: k * NR,
                            b: unsafe { packed.as_ptr().add((g * depth + pc * NR) * NR) },
                            c: unsafe { ct.0.add(r0 * m + g * NR) },
                            ldc: m,
                            kc,
                            nvalid: NR.min(m - g * NR),
                            accumulate: pc > 0,
                        };
                        // SAFETY: tasks write disjoint feature rows of dXᵀ.
                        unsafe { tile.run(kernel, rows) };
                        r0 += rows;
                    }
                }
            }
        }
    };
    if threads <= 1 || k < 2 * MR {
        run(0..k);
    } else {
        let per = k.div_ceil(threads).div_ceil(MR) * MR;
        (0..k.div_ceil(per))
            .into_par_iter()
            .for_each(|t| run(t * per..((t + 1) * per).min(k)));
    }
    // dXᵀ → dX in square tiles, so reads and writes both stay within a few cache lines.
    const TILE: usize = 16;
    let transpose = |i0: usize, rows: &mut [f32]| {
        let count = rows.len().div_ceil(ldc);
        for k0 in (0..k).step_by(TILE) {
            for i in 0..count {
                for kk in k0..(k0 + TILE).min(k) {
                    rows[i * ldc + kk] = ct[kk * m + i0 + i];
                }
            }
        }
    };
    let c = &mut c[..(m - 1) * ldc + k];
    if threads > 1 {
        c.par_chunks_mut(TILE * ldc)
            .enumerate()
            .for_each(|(t, rows)| transpose(t * TILE, rows));
    } else {
        transpose(0, c);
    }
    keep(&PACKED, packed);
    keep(&TRANSPOSED, ct);
}

/// One micro-kernel call: rows `i0..i0 + rows` of `A` (`rows ≤ TR`) against input features
/// `k0..k0 + cols` (`cols ≤ TC`), over `A`'s columns `j0..j1`. Out-of-range rows and features
/// are clamped to the last valid one and their results dropped, so the kernels always run a
/// full tile.
struct Tile<'a> {
    a: &'a [f32],
    lda: usize,
    w: &'a PackedMatrix,
    c: SendPtr,
    ldc: usize,
    i0: usize,
    rows: usize,
    k0: usize,
    cols: usize,
    j0: usize,
    j1: usize,
    /// Add to C (later column blocks of `A`) instead of writing it.
    accumulate: bool,
}

impl Tile<'_> {
    fn row(&self, r: usize) -> usize {
        self.i0 + r.min(self.rows - 1)
    }

    fn col(&self, c: usize) -> usize {
        self.k0 + c.min(self.cols - 1)
    }

    /// Writes the tile's dot products (`sums[r][c]`) to C.
    unsafe fn store(&self, sums: &[[f32; TC]; TR]) {
        for (r, row) in sums.iter().enumerate().take(self.rows) {
            for (c, &v) in row.iter().enumerate().take(self.cols) {
                let dst = unsafe { &mut *self.c.0.add((self.i0 + r) * self.ldc + self.k0 + c) };
                *dst = if self.accumulate { *dst + v } else { v };
            }
        }
    }
}

/// Columns `cols` of C, for every row, blocked so a block of `A`'s rows stays in cache.
#[allow(clippy::too_many_arguments)]
unsafe fn columns(
    kernel: Kernel,
    a: &[f32],
    lda: usize,
    m: usize,
    w: &PackedMatrix,
    c: SendPtr,
    ldc: usize,
    cols: std::ops::Range<usize>,
) {
    let n = w.n();
    let block = PANELS_PER_BLOCK * NR;
    let mut ib = 0;
    while ib < m {
        let iend = (ib + TM).min(m);
        let mut j0 = 0;
        while j0 < n {
            let j1 = (j0 + block).min(n);
            let mut k0 = cols.start;
            while k0 < cols.end {
                let tc = TC.min(cols.end - k0);
                let mut i0 = ib;
                while i0 < iend {
                    let tile = Tile {
                        a,
                        lda,
                        w,
                        c,
                        ldc,
                        i0,
                        rows: TR.min(iend - i0),
                        k0,
                        cols: tc,
                        j0,
                        j1,
                        accumulate: j0 > 0,
                    };
                    unsafe {
                        match kernel {
                            #[cfg(target_arch = "x86_64")]
                            Kernel::Avx512 => tile_avx512(&tile),
                            #[cfg(target_arch = "x86_64")]
                            Kernel::Avx2 => tile_avx2(&tile),
                            Kernel::Portable => tile_portable(&tile),
                        }
                    }
                    i0 += TR;
                }
                k0 += tc;
            }
            j0 = j1;
        }
        ib = iend;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(t: &Tile<'_>) {
    use std::arch::x86_64::*;
    let (n, k) = (t.w.n(), t.w.k());
    let data = t.w.data().as_ptr();
    // No closures here: they would not inherit this function's target features, and the
    // intrinsics inside them would become calls.
    let mut rows = [t.a.as_ptr(); TR];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = unsafe { t.a.as_ptr().add(t.row(r) * t.lda) };
    }
    let mut cols = [0usize; TC];
    for (c, col) in cols.iter_mut().enumerate() {
        *col = t.col(c) * NR;
    }
    let mut acc = [[_mm512_setzero_ps(); TC]; TR];
    let tail: __mmask16 = ((1u32 << (n % LANES)) - 1) as u16;
    for j in (t.j0..t.j1).step_by(LANES) {
        // The panel is zero past n; A is not, and may end there: mask its loads.
        let mask = if j + LANES <= n { 0xffff } else { tail };
        // Panel of feature block j / NR; offset of these 16 lanes inside it.
        let panel = unsafe { data.add((j / NR) * k * NR + j % NR) };
        let mut av = [_mm512_setzero_ps(); TR];
        if mask == 0xffff {
            for r in 0..TR {
                av[r] = unsafe { _mm512_loadu_ps(rows[r].add(j)) };
            }
        } else {
            for r in 0..TR {
                av[r] = unsafe { _mm512_maskz_loadu_ps(mask, rows[r].add(j)) };
            }
        }
        // The tile reads a few lines of each panel, a panel (`k · NR` floats) apart: a stride
        // the hardware prefetcher does not follow, so ask for those of a later panel.
        let ahead = panel.wrapping_add(COLUMNS_PREFETCH_PANELS * k * NR);
        for c in 0..TC {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(cols[c]) as *const i8);
            let wv = unsafe { _mm512_loadu_ps(panel.add(cols[c])) };
            for r in 0..TR {
                acc[r][c] = _mm512_fmadd_ps(av[r], wv, acc[r][c]);
            }
        }
    }
    let mut sums = [[0f32; TC]; TR];
    for r in 0..TR {
        for c in 0..TC {
            sums[r][c] = _mm512_reduce_add_ps(acc[r][c]);
        }
    }
    unsafe { t.store(&sums) };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(t: &Tile<'_>) {
    tile_body(t)
}

fn tile_portable(t: &Tile<'_>) {
    tile_body(t)
}

/// Portable tile, written so the compiler vectorises the 16-lane accumulators for whatever
/// target features the calling wrapper enables.
#[inline(always)]
fn tile_body(t: &Tile<'_>) {
    let (n, k) = (t.w.n(), t.w.k());
    let data = t.w.data();
    let cols: [usize; TC] = std::array::from_fn(|c| t.col(c));
    let mut acc = [[[0f32; LANES]; TC]; TR];
    let mut av = [[0f32; LANES]; TR];
    for j in (t.j0..t.j1).step_by(LANES) {
        let panel = &data[(j / NR) * k * NR + j % NR..];
        let valid = (n - j).min(LANES);
        for (r, lane) in av.iter_mut().enumerate() {
            let row = &t.a[t.row(r) * t.lda + j..t.row(r) * t.lda + j + valid];
            lane[..valid].copy_from_slice(row);
            lane[valid..].fill(0.0);
        }
        for c in 0..TC {
            let wv = &panel[cols[c] * NR..cols[c] * NR + LANES];
            for r in 0..TR {
                for l in 0..LANES {
                    acc[r][c][l] = av[r][l].mul_add(wv[l], acc[r][c][l]);
                }
            }
        }
    }
    let mut sums = [[0f32; TC]; TR];
    for r in 0..TR {
        for c in 0..TC {
            sums[r][c] = acc[r][c].iter().sum();
        }
    }
    // SAFETY: the tile's rows and columns lie inside C (checked by the caller).
    unsafe { t.store(&sums) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::random;
    use rand::{SeedableRng, rngs::StdRng};

    /// `A · W` in f64.
    fn reference(a: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f64> {
        let mut c = vec![0f64; m * k];
        for i in 0..m {
            for j in 0..n {
                for kk in 0..k {
                    c[i * k + kk] += a[i * n + j] as f64 * w[j * k + kk] as f64;
                }
            }
        }
        c
    }

    #[test]
    fn equals_a_times_w_on_ragged_shapes_with_every_kernel() {
        let mut rng = StdRng::seed_from_u64(21);
        let kernels = Kernel::all_available();
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 17, 5),
            (5, 33, 13),
            (9, 64, 12),
            (70, 100, 577),
            (33, 960, 60),
            (2, 1000, 7),
        ] {
            let a = random(m * n, &mut rng);
            let w = random(n * k, &mut rng);
            let packed = PackedMatrix::from_rows(&w, n, k, k);
            let want = reference(&a, m, &w, n, k);
            for &kernel in &kernels {
                let mut c = vec![0f32; m * k];
                let ptr = SendPtr(c.as_mut_ptr());
                unsafe { columns(kernel, &a, n, m, &packed, ptr, k, 0..k) };
                let err = c
                    .iter()
                    .zip(&want)
                    .map(|(&x, &y)| (x as f64 - y).abs())
                    .fold(0f64, f64::max);
                assert!(err < 1e-4, "m={m} n={n} k={k}: {err}");
            }
            for &kernel in &kernels {
                for threads in [1, 2] {
                    let mut c = vec![0f32; m * k];
                    by_panels(kernel, &a, n, m, &packed, &mut c, k, threads);
                    let err = c
                        .iter()
                        .zip(&want)
                        .map(|(&x, &y)| (x as f64 - y).abs())
                        .fold(0f64, f64::max);
                    assert!(err < 1e-4, "panels m={m} n={n} k={k}: {err}");
                }
            }
            for parallel in [false, true] {
                let mut c = vec![0f32; m * k];
                gemm_packed_backward(&a, n, m, &packed, &mut c, k, parallel);
                let err = c
                    .iter()
                    .zip(&want)
                    .map(|(&x, &y)| (x as f64 - y).abs())
                    .fold(0f64, f64::max);
                assert!(err < 1e-4, "m={m} n={n} k={k} parallel={parallel}: {err}");
            }
        }
    }

    #[test]
    fn strided_rows_and_untouched_padding() {
        let mut rng = StdRng::seed_from_u64(4);
        let (m, n, k) = (6, 40, 9);
        let a = random(m * 50, &mut rng);
        let w = random(n * k, &mut rng);
        let packed = PackedMatrix::from_rows(&w, n, k, k);
        let mut c = vec![3f32; m * 12];
        gemm_packed_backward(&a, 50, m, &packed, &mut c, 12, true);
        for i in 0..m {
            for kk in 0..k {
                let s: f64 = (0..n)
                    .map(|j| a[i * 50 + j] as f64 * w[j * k + kk] as f64)
                    .sum();
                assert!((c[i * 12 + kk] as f64 - s).abs() < 1e-4);
            }
            assert_eq!(c[i * 12 + k..i * 12 + 12], [3f32; 3]);
        }
    }
}
