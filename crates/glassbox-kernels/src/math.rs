//! Vectorised element-wise kernels: `exp`, softmax, RMS norm, rotary embeddings and gated
//! activations.
//!
//! The standard library's `f32::exp` is a scalar libm call; a 135M model evaluates about
//! 50 000 of them per token in SiLU and softmax, which made them a third of the forward time.
//! Here `exp` is a Cephes-style range reduction plus a degree-6 polynomial (about 1 ulp),
//! written so the compiler vectorises it. Each public function is compiled for AVX-512,
//! AVX2+FMA and baseline x86-64 and picks the best at run time.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split into a part exact in few bits and a remainder (Cephes), so `x - n·ln2` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding then subtracting 1.5·2²³ rounds to the nearest integer (ties to even) for |x| < 2²².
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Below this `exp` returns 0 (the true value is under f32's smallest normal number).
const EXP_MIN: f32 = -87.0;
/// Above this the result would overflow; inputs are clamped (exp(88) ≈ 1.65e38).
const EXP_MAX: f32 = 88.0;
/// √(2/π), of the tanh approximation of GELU that Gemma uses (`gelu_pytorch_tanh`).
const GELU_C: f32 = 0.797_884_6;
const GELU_A: f32 = 0.044_715;

/// `e^x` to about one ulp; `0` for `x < -87` (including `-inf`), saturating near `f32::MAX`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    let t = xc.mul_add(LOG2E, ROUND_MAGIC);
    let n = t - ROUND_MAGIC;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    let r2 = r * r;
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let p = p.mul_add(r2, r) + 1.0;
    // n is an integer in [-126, 127]: build 2^n from its exponent bits.
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    if x < EXP_MIN { 0.0 } else { p * scale }
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    let y = GELU_C * x * GELU_A.mul_add(x * x, 1.0);
    // tanh(y) = 1 - 2 / (e^{2y} + 1), saturating correctly at both ends through `exp`.
    let tanh = 1.0 - 2.0 / (exp(2.0 * y) + 1.0);
    0.5 * x * (1.0 + tanh)
}

/// Independent accumulators for reductions, so they vectorise (float addition is not
/// associative, so the compiler will not reorder a plain sequential sum).
const LANES: usize = 16;

#[inline(always)]
fn lanes_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for chunk in x.chunks(LANES) {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum()
}

#[inline(always)]
fn lanes_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    for chunk in x.chunks(LANES) {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a = a.max(*v);
        }
    }
    acc.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Defines a public function whose body is compiled three times (AVX-512, AVX2+FMA, baseline)
/// and dispatched on the running CPU.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports the features v4 was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above, for v3.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

multiversion! {
    /// `out[i] = e^{x[i]}`.
    pub fn exp_slice(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = exp(v);
        }
    }
}

/// `ln Σ e^{x_i}`, stable for any magnitudes (`-inf` for an empty or all `-inf` slice).
pub fn log_sum_exp(x: &[f32]) -> f32 {
    let mut out = f32::NEG_INFINITY;
    log_sum_exp_into(x, std::slice::from_mut(&mut out));
    out
}

multiversion! {
    /// Writes `ln Σ e^{x_i}` of `x` into `out[0]` (the multiversioned body of [`log_sum_exp`]).
    fn log_sum_exp_into(x: &[f32], out: &mut [f32]) {
        let max = lanes_max(x);
        if max == f32::NEG_INFINITY {
            out[0] = max;
            return;
        }
        let mut acc = [0f32; LANES];
        for chunk in x.chunks(LANES) {
            for (a, v) in acc.iter_mut().zip(chunk) {
                *a += exp(v - max);
            }
        }
        out[0] = max + acc.iter().sum::<f32>().ln();
    }
}

multiversion! {
    /// In-place softmax of each row of length `cols` (`-inf` entries get probability 0).
    /// A row whose entries are all `-inf` becomes all zeros rather than NaN.
    pub fn softmax_rows(x: &mut [f32], cols: usize) {
        for row in x.chunks_mut(cols) {
            let max = lanes_max(row);
            if max == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            for v in row.iter_mut() {
                *v = exp(*v - max);
            }
            let inv = 1.0 / lanes_sum(row);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

/// `1 / sqrt(mean(x²) + eps)` of one row, with independent lanes so it vectorises.
#[inline(always)]
fn inverse_rms(row: &[f32], eps: f32) -> f32 {
    let mut sq = [0f32; LANES];
    for chunk in row.chunks(LANES) {
        for (acc, v) in sq.iter_mut().zip(chunk) {
            *acc = v.mul_add(*v, *acc);
        }
    }
    1.0 / (lanes_sum(&sq) / row.len() as f32 + eps).sqrt()
}

multiversion! {
    /// RMS norm of each row of `x` (length `weight.len()`):
    /// `out = x / sqrt(mean(x²) + eps) * weight`.
    pub fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let d = weight.len();
        for (row, orow) in x.chunks(d).zip(out.chunks_mut(d)) {
            let inv = inverse_rms(row, eps);
            for ((o, &v), &w) in orow.iter_mut().zip(row).zip(weight) {
                *o = v * inv * w;
            }
        }
    }
}

multiversion! {
    /// The backward of [`rms_norm_rows`]: given `dy = ∂L/∂out`, **adds** `∂L/∂x` to `dx` (a
    /// norm's input is a residual stream, whose gradient also flows around the norm). With
    /// `r = 1/sqrt(mean(x²) + eps)`: `dx = r·(dy⊙w) − r³·x·Σ(dy⊙w⊙x)/d`.
    pub fn rms_norm_rows_backward(x: &[f32], weight: &[f32], eps: f32, dy: &[f32], dx: &mut [f32]) {
        let d = weight.len();
        for ((row, g), o) in x.chunks(d).zip(dy.chunks(d)).zip(dx.chunks_mut(d)) {
            let inv = inverse_rms(row, eps);
            let mut acc = [0f32; LANES];
            for ((xc, gc), wc) in row.chunks(LANES).zip(g.chunks(LANES)).zip(weight.chunks(LANES)) {
                for (((a, &xv), &gv), &wv) in acc.iter_mut().zip(xc).zip(gc).zip(wc) {
                    *a = (gv * wv).mul_add(xv, *a);
                }
            }
            let coef = inv * inv * inv * lanes_sum(&acc) / d as f32;
            for (((o, &xv), &gv), &wv) in o.iter_mut().zip(row).zip(g).zip(weight) {
                *o += inv * gv * wv - coef * xv;
            }
        }
    }
}

multiversion! {
    /// [`rms_norm_rows`] in place.
    pub fn rms_norm_rows_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
        let d = weight.len();
        for row in x.chunks_mut(d) {
            let inv = inverse_rms(row, eps);
            for (v, &w) in row.iter_mut().zip(weight) {
                *v *= inv * w;
            }
        }
    }
}

multiversion! {
    /// Layer norm of each row of `x` in place (length `weight.len()`), as vision towers
    /// (SigLIP, CLIP) use it: `x = (x − mean) / sqrt(var + eps) * weight + bias`, with the
    /// biased variance.
    pub fn layer_norm_rows_in_place(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
        let d = weight.len();
        for row in x.chunks_mut(d) {
            let mean = lanes_sum(row) / d as f32;
            let mut sq = [0f32; LANES];
            for chunk in row.chunks(LANES) {
                for (acc, v) in sq.iter_mut().zip(chunk) {
                    let c = v - mean;
                    *acc = c.mul_add(c, *acc);
                }
            }
            let inv = 1.0 / (lanes_sum(&sq) / d as f32 + eps).sqrt();
            for ((v, &w), &b) in row.iter_mut().zip(weight).zip(bias) {
                *v = ((*v - mean) * inv).mul_add(w, b);
            }
        }
    }
}

/// `erf(x)` to about 1.5e-7 (Abramowitz & Stegun 7.1.26), enough for an f32 activation.
#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / P.mul_add(a, 1.0);
    let poly = t * A[0] + t * t * (A[1] + t * (A[2] + t * (A[3] + t * A[4])));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

multiversion! {
    /// `x = gelu(x)` in place, the exact (erf) form: `x·½(1 + erf(x/√2))` (PyTorch's
    /// default `gelu`, used by LLaVA's projector).
    pub fn gelu_erf_in_place(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v *= 0.5 * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

multiversion! {
    /// The backward of [`gelu_erf_in_place`]: `dx = dy · (Φ(x) + x·φ(x))`.
    pub fn gelu_erf_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        for ((d, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
            let cdf = 0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * exp(-0.5 * v * v);
            *d = g * v.mul_add(pdf, cdf);
        }
    }
}

multiversion! {
    /// `x = gelu_tanh(x)` in place (the MLP activation of SigLIP, `gelu_pytorch_tanh`).
    pub fn gelu_tanh_in_place(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_tanh(*v);
        }
    }
}

multiversion! {
    /// `out = silu(gate) * up` (SwiGLU, the llama-family MLP).
    pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = silu(g) * u;
        }
    }
}

multiversion! {
    /// The backward of [`silu_mul`]: writes `∂L/∂gate` and `∂L/∂up` given `dout`.
    pub fn silu_mul_backward(gate: &[f32], up: &[f32], dout: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
        for ((((dg, du), &g), &u), &d) in dgate.iter_mut().zip(dup.iter_mut()).zip(gate).zip(up).zip(dout) {
            let sigma = 1.0 / (1.0 + exp(-g));
            *du = d * g * sigma;
            // silu'(g) = σ(g)·(1 + g·(1 − σ(g))).
            *dg = d * u * sigma * g.mul_add(1.0 - sigma, 1.0);
        }
    }
}

multiversion! {
    /// `out = gelu_tanh(gate) * up` (GeGLU, the Gemma MLP).
    pub fn gelu_tanh_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = gelu_tanh(g) * u;
        }
    }
}

multiversion! {
    /// The backward of [`gelu_tanh_mul`]: writes `∂L/∂gate` and `∂L/∂up` given `dout`.
    pub fn gelu_tanh_mul_backward(gate: &[f32], up: &[f32], dout: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
        for ((((dg, du), &g), &u), &d) in dgate.iter_mut().zip(dup.iter_mut()).zip(gate).zip(up).zip(dout) {
            let y = GELU_C * g * GELU_A.mul_add(g * g, 1.0);
            let tanh = 1.0 - 2.0 / (exp(2.0 * y) + 1.0);
            *du = d * 0.5 * g * (1.0 + tanh);
            // gelu'(g) = ½(1 + t) + ½·g·(1 − t²)·c·(1 + 3a·g²), t = tanh(c·(g + a·g³)).
            let dy = GELU_C * (3.0 * GELU_A).mul_add(g * g, 1.0);
            *dg = d * u * (0.5 * (1.0 + tanh) + 0.5 * g * (1.0 - tanh * tanh) * dy);
        }
    }
}

multiversion! {
    /// Rotary position embedding, "half" layout (pairs `(i, i + d/2)`, as in Hugging Face
    /// checkpoints), applied in place to `x` of shape `[tokens, heads, head_dim]`.
    /// `cos`/`sin` are `[tokens, head_dim / 2]`.
    pub fn rope_half(x: &mut [f32], heads: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
        let half = head_dim / 2;
        for (t, tok) in x.chunks_mut(heads * head_dim).enumerate() {
            let (c, s) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
            for head in tok.chunks_mut(head_dim) {
                let (a, b) = head.split_at_mut(half);
                for i in 0..half {
                    let (x1, x2) = (a[i], b[i]);
                    a[i] = x1 * c[i] - x2 * s[i];
                    b[i] = x2 * c[i] + x1 * s[i];
                }
            }
        }
    }
}

multiversion! {
    /// The backward of [`rope_half`], in place: a rotation is orthogonal, so the gradient
    /// rotates back by the same angles (`∂a = ∂a'·c + ∂b'·s`, `∂b = ∂b'·c − ∂a'·s`).
    pub fn rope_half_backward(dx: &mut [f32], heads: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
        let half = head_dim / 2;
        for (t, tok) in dx.chunks_mut(heads * head_dim).enumerate() {
            let (c, s) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
            for head in tok.chunks_mut(head_dim) {
                let (a, b) = head.split_at_mut(half);
                for i in 0..half {
                    let (g1, g2) = (a[i], b[i]);
                    a[i] = g1 * c[i] + g2 * s[i];
                    b[i] = g2 * c[i] - g1 * s[i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulp_diff(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exact_gelu_matches_reference_values() {
        // x·Φ(x), Φ the standard normal CDF (values from PyTorch's gelu in f64).
        let mut x = [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 6.0];
        let want = [
            -0.004_049_9,
            -0.158_655_25,
            -0.154_268_48,
            0.0,
            0.345_731_5,
            0.841_344_7,
            1.954_499_7,
            5.999_999_9,
        ];
        gelu_erf_in_place(&mut x);
        for (got, want) in x.iter().zip(want) {
            assert!((got - want).abs() < 3e-7, "{got} vs {want}");
        }
    }

    #[test]
    fn exact_gelu_backward_matches_finite_differences() {
        let xs = [-3.0f32, -1.2, -0.3, 0.0, 0.4, 1.1, 2.5];
        let mut dx = [0f32; 7];
        gelu_erf_backward(&xs, &[1.0; 7], &mut dx);
        for (&x, &d) in xs.iter().zip(&dx) {
            let h = 1e-2f32;
            let (mut a, mut b) = ([x + h], [x - h]);
            gelu_erf_in_place(&mut a);
            gelu_erf_in_place(&mut b);
            let fd = (a[0] - b[0]) / (2.0 * h);
            assert!((fd - d).abs() < 2e-4, "x = {x}: {d} vs {fd}");
        }
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        layer_norm_rows_in_place(&mut x, &[1.0, 1.0, 2.0, 2.0], &[0.0, 0.5, 0.0, 0.0], 0.0);
        // mean 2.5, biased variance 1.25.
        let s = 1.25f32.sqrt();
        let want = [-1.5 / s, -0.5 / s + 0.5, 2.0 * 0.5 / s, 2.0 * 1.5 / s];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn exp_is_accurate_over_the_useful_range() {
        let xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + i as f32 * 175.0 / 200_000.0)
            .collect();
        let mut out = vec![0f32; xs.len()];
        exp_slice(&xs, &mut out);
        for (&x, &y) in xs.iter().zip(&out) {
            let want = (x as f64).exp() as f32;
            assert!(ulp_diff(y, want) <= 2, "exp({x}) = {y}, want {want}");
        }
        let mut edge = [0f32; 3];
        exp_slice(&[f32::NEG_INFINITY, -100.0, 0.0], &mut edge);
        assert_eq!(edge, [0.0, 0.0, 1.0]);
    }

    #[test]
    fn softmax_matches_f64_reference_and_handles_masks() {
        let mut x = vec![1.0, 2.0, f32::NEG_INFINITY, -3.0, 0.5, 0.5, 0.5, 0.5];
        x.extend([f32::NEG_INFINITY; 4]);
        let orig = x.clone();
        softmax_rows(&mut x, 4);
        for r in 0..2 {
            let row = &orig[r * 4..r * 4 + 4];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            for c in 0..4 {
                let want = ((row[c] as f64 - max).exp() / z) as f32;
                assert!((x[r * 4 + c] - want).abs() < 1e-7);
            }
        }
        assert_eq!(&x[8..], &[0.0; 4]);
    }

    #[test]
    fn log_sum_exp_is_stable() {
        let x = [1000.0f32, 1000.0, f32::NEG_INFINITY];
        assert!((log_sum_exp(&x) - (1000.0 + 2f32.ln())).abs() < 1e-4);
        let y: Vec<f32> = (0..40).map(|i| i as f32 * 0.37 - 7.0).collect();
        let want = y.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((log_sum_exp(&y) as f64 - want).abs() < 1e-5);
        assert_eq!(log_sum_exp(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn activations_match_their_definitions() {
        let g: Vec<f32> = (0..101).map(|i| -12.0 + i as f32 * 0.24).collect();
        let u: Vec<f32> = g.iter().map(|v| 0.5 - v * 0.1).collect();
        let mut s = vec![0f32; g.len()];
        let mut ge = vec![0f32; g.len()];
        silu_mul(&g, &u, &mut s);
        gelu_tanh_mul(&g, &u, &mut ge);
        for i in 0..g.len() {
            let x = g[i] as f64;
            let silu = x / (1.0 + (-x).exp());
            let inner = 0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x);
            let gelu = 0.5 * x * (1.0 + inner.tanh());
            assert!((s[i] as f64 - silu * u[i] as f64).abs() < 1e-5, "silu {x}");
            assert!((ge[i] as f64 - gelu * u[i] as f64).abs() < 1e-5, "gelu {x}");
        }
    }

    /// Central difference of `f` along coordinate `i` of `x`, in f64.
    fn numeric(x: &[f32], i: usize, f: &dyn Fn(&[f64]) -> f64) -> f64 {
        let h = 1e-4;
        let mut p: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut m = p.clone();
        p[i] += h;
        m[i] -= h;
        (f(&p) - f(&m)) / (2.0 * h)
    }

    #[test]
    fn backward_kernels_equal_finite_differences() {
        let x: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
        let c: Vec<f32> = (0..24).map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.2).collect();
        let w: Vec<f32> = (0..8).map(|i| 0.5 + i as f32 * 0.1).collect();
        let eps = 1e-5;
        // L = Σ c ⊙ rms_norm(x): rows of 8.
        let loss = |x: &[f64]| -> f64 {
            x.chunks(8)
                .zip(c.chunks(8))
                .map(|(row, cr)| {
                    let ms = row.iter().map(|v| v * v).sum::<f64>() / 8.0;
                    let r = 1.0 / (ms + eps as f64).sqrt();
                    row.iter()
                        .zip(cr)
                        .zip(&w)
                        .map(|((v, &g), &wv)| v * r * wv as f64 * g as f64)
                        .sum::<f64>()
                })
                .sum()
        };
        let mut dx = vec![1f32; 24];
        rms_norm_rows_backward(&x, &w, eps, &c, &mut dx);
        for (i, &got) in dx.iter().enumerate() {
            let want = numeric(&x, i, &loss) + 1.0;
            assert!((got as f64 - want).abs() < 1e-3, "rms {i}: {got} vs {want}");
        }

        // Gated activations: L = Σ c ⊙ act(gate) ⊙ up.
        let (gate, up) = x.split_at(12);
        let (cg, _) = c.split_at(12);
        type Act = fn(f64) -> f64;
        let silu: Act = |g| g / (1.0 + (-g).exp());
        let gelu: Act =
            |g| 0.5 * g * (1.0 + (0.797_884_560_802_865_4 * (g + 0.044715 * g * g * g)).tanh());
        for (act, backward) in [
            (
                silu,
                silu_mul_backward as fn(&[f32], &[f32], &[f32], &mut [f32], &mut [f32]),
            ),
            (gelu, gelu_tanh_mul_backward),
        ] {
            let mut dg = vec![0f32; 12];
            let mut du = vec![0f32; 12];
            backward(gate, up, cg, &mut dg, &mut du);
            let loss = |both: &[f64]| -> f64 {
                (0..12)
                    .map(|i| act(both[i]) * both[12 + i] * cg[i] as f64)
                    .sum()
            };
            for i in 0..12 {
                assert!(
                    (dg[i] as f64 - numeric(&x, i, &loss)).abs() < 1e-3,
                    "gate {i}"
                );
                assert!(
                    (du[i] as f64 - numeric(&x, 12 + i, &loss)).abs() < 1e-3,
                    "up {i}"
                );
            }
        }

        // Rotary: L = Σ c ⊙ rope(x), 2 tokens × 3 heads × 4.
        let angles: Vec<f32> = (0..4).map(|i| 0.3 + i as f32 * 0.7).collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        let mut g = c.clone();
        rope_half_backward(&mut g, 3, 4, &cos, &sin);
        let loss = |x: &[f64]| -> f64 {
            let mut sum = 0.0;
            for t in 0..2 {
                for h in 0..3 {
                    let o = t * 12 + h * 4;
                    for i in 0..2 {
                        let (co, si) = (cos[t * 2 + i] as f64, sin[t * 2 + i] as f64);
                        let (a, b) = (x[o + i], x[o + i + 2]);
                        sum += (a * co - b * si) * c[o + i] as f64;
                        sum += (b * co + a * si) * c[o + i + 2] as f64;
                    }
                }
            }
            sum
        };
        for (i, &got) in g.iter().enumerate() {
            assert!(
                (got as f64 - numeric(&x, i, &loss)).abs() < 2e-3,
                "rope {i}"
            );
        }
    }

    #[test]
    fn rms_norm_and_rope_follow_their_formulas() {
        let x = [3.0f32, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let w = [1.0f32, 2.0, 3.0, 4.0];
        let mut out = [0f32; 8];
        rms_norm_rows(&x, &w, 0.0, &mut out);
        let mut in_place = x;
        rms_norm_rows_in_place(&mut in_place, &w, 0.0);
        assert_eq!(in_place, out);
        let inv = 1.0 / (25.0f32 / 4.0).sqrt();
        assert!((out[0] - 3.0 * inv).abs() < 1e-6 && (out[1] - 8.0 * inv).abs() < 1e-6);
        assert!((out[7] - 4.0).abs() < 1e-6);

        // One token, one head of dim 4: pairs (0,2) and (1,3) rotate by the given angles.
        let mut v = [1.0f32, 2.0, 3.0, 4.0];
        let (a0, a1) = (0.3f32, -1.2f32);
        rope_half(&mut v, 1, 4, &[a0.cos(), a1.cos()], &[a0.sin(), a1.sin()]);
        let want = [
            1.0 * a0.cos() - 3.0 * a0.sin(),
            2.0 * a1.cos() - 4.0 * a1.sin(),
            3.0 * a0.cos() + 1.0 * a0.sin(),
            4.0 * a1.cos() + 2.0 * a1.sin(),
        ];
        for i in 0..4 {
            assert!((v[i] - want[i]).abs() < 1e-6);
        }
    }
}
