//! Packed f32 GEMM: `C = A · Wᵀ` with `W` packed once into column panels.
//!
//! Weights of a linear layer never change, so they are packed at load time into panels of
//! [`NR`] output columns laid out k-major (`panel[k][j] = W[p·NR + j, k]`). The micro-kernel
//! then streams one panel with two vector loads per `k` and broadcasts [`MR`] scalars of `A`,
//! keeping a 14 × 32 tile of `C` in 28 AVX-512 registers. On this project's 2-core Zen 5 test
//! machine that reaches about 210 GFLOP/s per core on the projection shapes of a 135M-parameter
//! model, against about 100 GFLOP/s for the `gemm` crate that candle uses.
//!
//! Every element of `C` is accumulated in plain `k` order with fused multiply-adds, also across
//! K blocks (the accumulators are reloaded from `C`), so results do not depend on blocking,
//! threading or batch composition: the same row of `A` gives bit-identical outputs whatever
//! other rows it is multiplied with. The runtime's batching tests rely on that.

use rayon::prelude::*;

/// Width of a packed panel (output columns per micro-kernel call): two 16-lane vectors.
pub(crate) const NR: usize = 32;
/// Rows of `A` per micro-kernel call: 14 × 2 accumulators + 2 panel vectors + 1 broadcast
/// register fit the 32 AVX-512 registers.
const MR: usize = 14;
/// Rows of `A` per cache block (a multiple of [`MR`]): 196 rows × up to 1024 floats stay in a
/// 1 MiB L2 while every panel of `W` passes over them.
const MC: usize = 196;
/// How far ahead of the micro-kernel's panel reads (in floats, 32 depth steps) it asks for
/// the panel's next cache lines. Weights stream from DRAM once per product; with a sentence's
/// rows (each panel used by a tile or two) the hardware prefetcher alone left a core waiting.
const PREFETCH_AHEAD: usize = 32 * NR;
/// Tiles of fewer rows than this do not prefetch the panel (measured: a decode step's single
/// row ran ~10% slower with it, 26 rows 1.3-1.4× faster).
const PREFETCH_MIN_ROWS: usize = 8;
/// K is split into blocks only beyond this depth, so a panel block stays cache resident.
const KC_MAX: usize = 1024;
/// Target block depth when K is split.
const KC_TARGET: usize = 768;

/// A weight matrix `W` of shape `[n, k]` (output features × input features, the layout of
/// GGUF and safetensors linear weights) packed for [`gemm_packed`].
#[derive(Clone)]
pub struct PackedMatrix {
    n: usize,
    k: usize,
    /// `ceil(n / NR)` panels of `k · NR` floats; columns past `n` are zero.
    data: Vec<f32>,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedMatrix[{} x {}]", self.n, self.k)
    }
}

impl PackedMatrix {
    /// Packs `W` given row by row: row `i` (length `k`) starts at `w[i * ldw]`.
    pub fn from_rows(w: &[f32], n: usize, k: usize, ldw: usize) -> Self {
        assert!(ldw >= k, "row stride {ldw} shorter than row length {k}");
        assert!(n == 0 || w.len() >= (n - 1) * ldw + k, "W slice too short");
        Self::from_row_iter((0..n).map(|i| &w[i * ldw..i * ldw + k]), n, k)
    }

    /// Packs `W` from its `n` rows (each of length `k`) in order, wherever they live: the keys
    /// of an attention head come from several KV-cache segments.
    pub fn from_row_iter<'a>(rows: impl Iterator<Item = &'a [f32]>, n: usize, k: usize) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        let mut count = 0;
        for (r, row) in rows.enumerate() {
            assert!(
                r < n && row.len() == k,
                "row {r} has length {} (want {k} of {n} rows)",
                row.len()
            );
            let (p, j) = (r / NR, r % NR);
            let panel = &mut data[p * k * NR..(p + 1) * k * NR];
            for (kk, &value) in row.iter().enumerate() {
                panel[kk * NR + j] = value;
            }
            count += 1;
        }
        assert_eq!(count, n, "fewer rows than announced");
        Self { n, k, data }
    }

    /// Output features (`n`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (`k`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes held by the packed data.
    pub fn size_bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
    }

    /// Copies row `i` of `W` (length `k`) into `out`; used for embedding lookups and LM-head
    /// rows, so a tied embedding matrix is stored only once.
    pub fn copy_row(&self, i: usize, out: &mut [f32]) {
        assert!(i < self.n && out.len() == self.k);
        let (p, j) = (i / NR, i % NR);
        let panel = &self.data[p * self.k * NR..];
        for (kk, o) in out.iter_mut().enumerate() {
            *o = panel[kk * NR + j];
        }
    }

    /// The packed panels (see the module documentation for their layout).
    pub(crate) fn data(&self) -> &[f32] {
        &self.data
    }

    /// Unpacks to the row-major `[n, k]` matrix.
    pub fn to_rows(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for (i, row) in out.chunks_mut(self.k.max(1)).enumerate().take(self.n) {
            self.copy_row(i, row);
        }
        out
    }

    /// `A · Wᵀ` for a row-major `A` of shape `[m, k]`, using all threads.
    pub fn matmul(&self, a: &[f32], m: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * self.n];
        gemm_packed(a, self.k, m, self, &mut c, self.n, true);
        c
    }
}

/// Packs `W = Bᵀ` where `B` is row-major `[k, n]` with row stride `ldb` (for example the value
/// vectors of one attention head, `[keys, head_dim]`): panel rows are plain copies of `B`'s rows.
pub fn pack_transposed(b: &[f32], k: usize, n: usize, ldb: usize) -> PackedMatrix {
    assert!(ldb >= n, "row stride {ldb} shorter than row length {n}");
    assert!(k == 0 || b.len() >= (k - 1) * ldb + n, "B slice too short");
    pack_transposed_rows((0..k).map(|kk| &b[kk * ldb..kk * ldb + n]), k, n)
}

/// [`pack_transposed`] from `B`'s `k` rows (each of length `n`) in order, wherever they live.
pub fn pack_transposed_rows<'a>(
    rows: impl Iterator<Item = &'a [f32]>,
    k: usize,
    n: usize,
) -> PackedMatrix {
    let mut packed = PackedMatrix::empty();
    packed.refill_transposed_rows(rows, k, n);
    packed
}

impl PackedMatrix {
    /// A `0 × 0` matrix, to be refilled.
    pub(crate) fn empty() -> Self {
        Self {
            n: 0,
            k: 0,
            data: Vec::new(),
        }
    }

    /// Packs `W = Bᵀ` as [`pack_transposed`] does, into this matrix's allocation: products
    /// repeated tile after tile (the attention backward's) then pack without fresh memory.
    pub(crate) fn refill_transposed(&mut self, b: &[f32], k: usize, n: usize, ldb: usize) {
        assert!(ldb >= n, "row stride {ldb} shorter than row length {n}");
        assert!(k == 0 || b.len() >= (k - 1) * ldb + n, "B slice too short");
        self.refill_transposed_rows((0..k).map(|kk| &b[kk * ldb..kk * ldb + n]), k, n)
    }

    fn refill_transposed_rows<'a>(
        &mut self,
        rows: impl Iterator<Item = &'a [f32]>,
        k: usize,
        n: usize,
    ) {
        let panels = n.div_ceil(NR);
        self.data.clear();
        self.data.resize(panels * k * NR, 0.0);
        let mut count = 0;
        for (kk, row) in rows.enumerate() {
            assert!(
                kk < k && row.len() == n,
                "row {kk} has length {} (want {n} of {k} rows)",
                row.len()
            );
            for p in 0..panels {
                let width = NR.min(n - p * NR);
                self.data[(p * k + kk) * NR..(p * k + kk) * NR + width]
                    .copy_from_slice(&row[p * NR..p * NR + width]);
            }
            count += 1;
        }
        assert_eq!(count, k, "fewer rows than announced");
        (self.n, self.k) = (n, k);
    }
}

/// `C[i, :] = A[i, :] · Wᵀ` for `i < m`; row `i` of `A` starts at `a[i * lda]`, row `i` of `C`
/// at `c[i * ldc]` (columns `n..ldc` are left untouched). With `parallel`, the work is split
/// over rayon's pool.
pub fn gemm_packed(
    a: &[f32],
    lda: usize,
    m: usize,
    w: &PackedMatrix,
    c: &mut [f32],
    ldc: usize,
    parallel: bool,
) {
    gemm_view(a, lda, m, w.part(w.n, w.k), c, ldc, parallel)
}

/// [`gemm_packed`] with only the first `n` rows of `W` (output columns) and the first `k`
/// of its columns (input features): what causal attention needs, whose early queries see
/// only a prefix of the keys. `A` rows hold `k` values; `C` gets `n` columns.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_part(
    a: &[f32],
    lda: usize,
    m: usize,
    w: &PackedMatrix,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    parallel: bool,
) {
    assert!(n <= w.n && k <= w.k, "a part larger than the matrix");
    gemm_view(a, lda, m, w.part(n, k), c, ldc, parallel)
}

/// [`gemm_packed`] on one thread that adds `A · Wᵀ` to what `C` holds: sums of products
/// over several row blocks of a larger reduction (the attention backward's key gradients,
/// query tile after query tile) accumulate in place instead of through a temporary.
pub(crate) fn gemm_packed_add(
    a: &[f32],
    lda: usize,
    m: usize,
    w: &PackedMatrix,
    c: &mut [f32],
    ldc: usize,
) {
    let (n, k) = (w.n, w.k);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    check_operands(a, lda, m, n, k, c, ldc);
    let c_ptr = SendPtr(c.as_mut_ptr());
    // SAFETY: one task covers all of C, within the bounds checked above.
    unsafe {
        block(
            Kernel::detect(),
            a,
            lda,
            &w.part(n, k),
            c_ptr,
            ldc,
            0..m,
            0..n.div_ceil(NR),
            true,
        )
    }
}

/// Panics unless `A` (`m` rows of `k` at stride `lda`) and `C` (`m` rows of `n` at stride
/// `ldc`) hold what a product reads and writes.
pub(crate) fn check_operands(
    a: &[f32],
    lda: usize,
    m: usize,
    n: usize,
    k: usize,
    c: &[f32],
    ldc: usize,
) {
    assert!(lda >= k && ldc >= n, "strides shorter than rows");
    assert!(a.len() >= (m - 1) * lda + k, "A slice too short");
    assert!(c.len() >= (m - 1) * ldc + n, "C slice too short");
}

/// The panels of a packed matrix that a product reads: `n` columns of `k` depth, each panel
/// `depth` deep in memory.
pub(crate) struct PanelView<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) depth: usize,
}

impl PackedMatrix {
    pub(crate) fn part(&self, n: usize, k: usize) -> PanelView<'_> {
        PanelView {
            data: &self.data,
            n,
            k,
            depth: self.k,
        }
    }
}

fn gemm_view(
    a: &[f32],
    lda: usize,
    m: usize,
    w: PanelView<'_>,
    c: &mut [f32],
    ldc: usize,
    parallel: bool,
) {
    let (n, k) = (w.n, w.k);
    if m == 0 || n == 0 {
        return;
    }
    check_operands(a, lda, m, n, k, c, ldc);
    if k == 0 {
        for i in 0..m {
            c[i * ldc..i * ldc + n].fill(0.0);
        }
        return;
    }
    let panels = n.div_ceil(NR);
    let c_ptr = SendPtr(c.as_mut_ptr());
    let kernel = Kernel::detect();
    let run = |rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
        // SAFETY: tasks cover disjoint (row range × panel range) tiles of C, bounds were
        // checked above, and A/W are only read.
        unsafe { block(kernel, a, lda, &w, c_ptr, ldc, rows, cols, false) }
    };
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    if threads <= 1 || (m * n * k) < 32 * 1024 {
        run(0..m, 0..panels);
    } else if panels >= 2 * threads || m <= MR {
        // Split the panels: each thread streams its own part of W (the usual case for weights).
        let chunk = panels.div_ceil(threads.min(panels));
        (0..panels.div_ceil(chunk))
            .into_par_iter()
            .for_each(|t| run(0..m, t * chunk..((t + 1) * chunk).min(panels)));
    } else {
        // Few panels (e.g. attention values of one head): split the rows instead.
        let chunk = m.div_ceil(threads).div_ceil(MR) * MR;
        (0..m.div_ceil(chunk))
            .into_par_iter()
            .for_each(|t| run(t * chunk..((t + 1) * chunk).min(m), 0..panels));
    }
}

#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: used only to hand disjoint output tiles to rayon tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Which micro-kernel this CPU runs.
#[derive(Clone, Copy)]
pub(crate) enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    /// Every kernel this CPU can run (the tests hold each to the reference).
    #[cfg(test)]
    pub(crate) fn all_available() -> Vec<Self> {
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Kernel::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                kernels.push(Kernel::Avx2);
            }
        }
        kernels
    }

    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }
}

/// Computes the C tile `rows × (panels · NR)`, blocked for the caches; with `add`, adds
/// to what C holds instead of overwriting it.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn block(
    kernel: Kernel,
    a: &[f32],
    lda: usize,
    w: &PanelView<'_>,
    c: SendPtr,
    ldc: usize,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    add: bool,
) {
    let k = w.k;
    let k_blocks = if k <= KC_MAX {
        1
    } else {
        k.div_ceil(KC_TARGET)
    };
    let kc_len = k.div_ceil(k_blocks);
    let mut ic = rows.start;
    while ic < rows.end {
        let mend = (ic + MC).min(rows.end);
        let mut pc = 0;
        while pc < k {
            let kc = kc_len.min(k - pc);
            for p in panels.clone() {
                let b = unsafe { w.data.as_ptr().add((p * w.depth + pc) * NR) };
                let nvalid = (w.n - p * NR).min(NR);
                let mut i = ic;
                while i < mend {
                    let r = MR.min(mend - i);
                    let tile = Tile {
                        a: unsafe { a.as_ptr().add(i * lda + pc) },
                        lda,
                        segment: kc,
                        jump: 0,
                        b,
                        c: unsafe { c.0.add(i * ldc + p * NR) },
                        ldc,
                        kc,
                        nvalid,
                        accumulate: add || pc > 0,
                    };
                    unsafe { tile.run(kernel, r) };
                    i += r;
                }
            }
            pc += kc;
        }
        ic = mend;
    }
}

/// One micro-kernel call: `r ≤ MR` rows of A times one panel.
pub(crate) struct Tile {
    /// Row `i`, depth `kk` of A at `a[i·lda + kk]` within a segment (see `segment`).
    pub(crate) a: *const f32,
    pub(crate) lda: usize,
    /// A is read in segments of this depth, each `jump` floats after the one before: the
    /// forward's A is one segment (`segment = kc`); the backward reads `Wᵀ` from the packing
    /// of `W`, whose panels hold it in segments of `NR` columns.
    pub(crate) segment: usize,
    pub(crate) jump: usize,
    /// The `kc × NR` packed panel of B, depth-major.
    pub(crate) b: *const f32,
    pub(crate) c: *mut f32,
    pub(crate) ldc: usize,
    pub(crate) kc: usize,
    /// Columns of C that exist (the last panel may be partial).
    pub(crate) nvalid: usize,
    /// Continue the accumulation already in C (later K blocks).
    pub(crate) accumulate: bool,
}

impl Tile {
    /// Runs the micro-kernel on `r ≤ MR` rows of A.
    pub(crate) unsafe fn run(&self, kernel: Kernel, r: usize) {
        macro_rules! dispatch {
            ($f:ident) => {
                match r {
                    1 => $f::<1>(self),
                    2 => $f::<2>(self),
                    3 => $f::<3>(self),
                    4 => $f::<4>(self),
                    5 => $f::<5>(self),
                    6 => $f::<6>(self),
                    7 => $f::<7>(self),
                    8 => $f::<8>(self),
                    9 => $f::<9>(self),
                    10 => $f::<10>(self),
                    11 => $f::<11>(self),
                    12 => $f::<12>(self),
                    13 => $f::<13>(self),
                    _ => $f::<14>(self),
                }
            };
        }
        unsafe {
            match kernel {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => dispatch!(kernel_avx512),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => dispatch!(kernel_avx2),
                Kernel::Portable => dispatch!(kernel_portable),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512<const R: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    let nvalid = t.nvalid;
    let m0: __mmask16 = if nvalid >= 16 {
        0xffff
    } else {
        ((1u32 << nvalid) - 1) as u16
    };
    let m1: __mmask16 = if nvalid >= 32 {
        0xffff
    } else if nvalid <= 16 {
        0
    } else {
        ((1u32 << (nvalid - 16)) - 1) as u16
    };
    let mut c0 = [_mm512_setzero_ps(); R];
    let mut c1 = [_mm512_setzero_ps(); R];
    if t.accumulate {
        for i in 0..R {
            let cp = unsafe { t.c.add(i * t.ldc) };
            c0[i] = unsafe { _mm512_maskz_loadu_ps(m0, cp) };
            c1[i] = unsafe { _mm512_maskz_loadu_ps(m1, cp.add(16)) };
        }
    }
    let mut b = t.b;
    for q in 0..t.kc.div_ceil(t.segment) {
        let a = unsafe { t.a.add(q * t.jump) };
        // A read in segments is the backward's `Wᵀ`, straight from the weights' packing: its
        // rows of one segment are contiguous, so the next segment is fetched one line per step.
        let next = a.wrapping_add(t.jump);
        let next_lines = if t.jump == 0 { 0 } else { R * t.lda / 16 };
        for kk in 0..t.segment.min(t.kc - q * t.segment) {
            if kk < next_lines {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(kk * 16) as *const i8);
            }
            let b0 = unsafe { _mm512_loadu_ps(b) };
            let b1 = unsafe { _mm512_loadu_ps(b.add(16)) };
            // Prefetches never fault: past the panel's end they are only wasted. With a few
            // rows the loop is a pure stream, which the hardware prefetcher serves better.
            if R >= PREFETCH_MIN_ROWS {
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_AHEAD) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_AHEAD + 16) as *const i8);
            }
            b = unsafe { b.add(NR) };
            for i in 0..R {
                let av = _mm512_set1_ps(unsafe { *a.add(i * t.lda + kk) });
                c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
                c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
            }
        }
    }
    for i in 0..R {
        let cp = unsafe { t.c.add(i * t.ldc) };
        unsafe {
            _mm512_mask_storeu_ps(cp, m0, c0[i]);
            _mm512_mask_storeu_ps(cp.add(16), m1, c1[i]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2<const R: usize>(t: &Tile) {
    unsafe { kernel_body::<R>(t) }
}

unsafe fn kernel_portable<const R: usize>(t: &Tile) {
    unsafe { kernel_body::<R>(t) }
}

/// Portable micro-kernel, written so that the compiler vectorises the 32-wide inner loop for
/// whatever target features the calling wrapper enables. `mul_add` keeps the fused rounding
/// of the AVX-512 kernel (exact equality across kernels is not promised, only closeness).
#[inline(always)]
unsafe fn kernel_body<const R: usize>(t: &Tile) {
    let mut acc = [[0f32; NR]; R];
    if t.accumulate {
        for (i, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate().take(t.nvalid) {
                *v = unsafe { *t.c.add(i * t.ldc + j) };
            }
        }
    }
    for q in 0..t.kc.div_ceil(t.segment) {
        let a = unsafe { t.a.add(q * t.jump) };
        let depth = q * t.segment;
        for kk in 0..t.segment.min(t.kc - depth) {
            let b = unsafe { std::slice::from_raw_parts(t.b.add((depth + kk) * NR), NR) };
            for (i, row) in acc.iter_mut().enumerate() {
                let av = unsafe { *a.add(i * t.lda + kk) };
                for j in 0..NR {
                    row[j] = av.mul_add(b[j], row[j]);
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate().take(t.nvalid) {
            unsafe { *t.c.add(i * t.ldc + j) = v };
        }
    }
}

/// Uniform values in [-1, 1) for the kernels' tests.
#[cfg(test)]
pub(crate) fn random(len: usize, rng: &mut rand::rngs::StdRng) -> Vec<f32> {
    use rand::Rng;
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::random;
    use rand::{SeedableRng, rngs::StdRng};

    /// Reference: sequential fused multiply-add in k order, the order the kernels use.
    fn reference(a: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f32;
                for kk in 0..k {
                    s = a[i * k + kk].mul_add(w[j * k + kk], s);
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    #[test]
    fn matches_reference_on_ragged_shapes() {
        let mut rng = StdRng::seed_from_u64(7);
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 33, 17),
            (15, 31, 64),
            (29, 65, 100),
            (200, 96, 576),
            (3, 40, 1500),
            (7, 5, 2100),
        ] {
            let a = random(m * k, &mut rng);
            let w = random(n * k, &mut rng);
            let packed = PackedMatrix::from_rows(&w, n, k, k);
            let expect = reference(&a, m, &w, n, k);
            for parallel in [false, true] {
                let mut c = vec![0f32; m * n];
                gemm_packed(&a, k, m, &packed, &mut c, n, parallel);
                let err = c
                    .iter()
                    .zip(&expect)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(err <= 1e-5, "m={m} n={n} k={k} parallel={parallel}: {err}");
            }
        }
    }

    #[test]
    fn every_kernel_this_cpu_runs_matches_the_reference() {
        let mut rng = StdRng::seed_from_u64(9);
        let (m, n, k) = (31, 45, 1100);
        let a = random(m * k, &mut rng);
        let w = random(n * k, &mut rng);
        let packed = PackedMatrix::from_rows(&w, n, k, k);
        let expect = reference(&a, m, &w, n, k);
        for kernel in Kernel::all_available() {
            let mut c = vec![0f32; m * n];
            let ptr = SendPtr(c.as_mut_ptr());
            unsafe {
                block(
                    kernel,
                    &a,
                    k,
                    &packed.part(n, k),
                    ptr,
                    n,
                    0..m,
                    0..n.div_ceil(NR),
                    false,
                )
            };
            let err = c
                .iter()
                .zip(&expect)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(err <= 1e-5, "{err}");
        }
    }

    #[test]
    fn row_results_do_not_depend_on_batch_mates() {
        let mut rng = StdRng::seed_from_u64(3);
        let (n, k) = (70, 2100);
        let w = random(n * k, &mut rng);
        let packed = PackedMatrix::from_rows(&w, n, k, k);
        let a = random(37 * k, &mut rng);
        let all = packed.matmul(&a, 37);
        for i in [0usize, 13, 36] {
            let one = packed.matmul(&a[i * k..(i + 1) * k], 1);
            assert_eq!(one, all[i * n..(i + 1) * n], "row {i}");
        }
    }

    #[test]
    fn strided_operands_and_transposed_packing() {
        let mut rng = StdRng::seed_from_u64(11);
        let (m, n, k) = (9, 40, 33);
        // A rows with stride 50, B = Wᵀ given as [k, n] with stride 45, C with stride 47.
        let a_buf = random(m * 50, &mut rng);
        let b_buf = random(k * 45, &mut rng);
        let packed = pack_transposed(&b_buf, k, n, 45);
        let mut c = vec![7f32; m * 47];
        gemm_packed(&a_buf, 50, m, &packed, &mut c, 47, true);
        for i in 0..m {
            for j in 0..n {
                let s: f32 = (0..k)
                    .map(|kk| a_buf[i * 50 + kk] * b_buf[kk * 45 + j])
                    .sum();
                assert!((c[i * 47 + j] - s).abs() < 1e-4);
            }
            assert_eq!(
                c[i * 47 + n..i * 47 + 47],
                [7f32; 7],
                "padding columns untouched"
            );
        }
    }

    #[test]
    fn adding_continues_the_sum_in_c() {
        let mut rng = StdRng::seed_from_u64(13);
        let (m, n, k) = (20, 45, 70);
        let a = random(m * k, &mut rng);
        let w = random(n * k, &mut rng);
        let packed = PackedMatrix::from_rows(&w, n, k, k);
        let start = random(m * n, &mut rng);
        let mut c = start.clone();
        gemm_packed_add(&a, k, m, &packed, &mut c, n);
        let product = reference(&a, m, &w, n, k);
        for ((got, s), p) in c.iter().zip(&start).zip(&product) {
            assert!((got - (s + p)).abs() < 1e-5, "{got} vs {}", s + p);
        }
    }

    #[test]
    fn rows_round_trip() {
        let mut rng = StdRng::seed_from_u64(5);
        let w = random(45 * 13, &mut rng);
        let packed = PackedMatrix::from_rows(&w, 45, 13, 13);
        assert_eq!(packed.to_rows(), w);
        let mut row = vec![0f32; 13];
        packed.copy_row(44, &mut row);
        assert_eq!(row, w[44 * 13..]);
    }
}
