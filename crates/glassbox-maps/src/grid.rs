//! Token grids over images and their upsampling to pixels.

use serde::Serialize;

/// The vision tokens of one image, tile or frame: their positions in the sequence, row-major
/// over a `rows × cols` grid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grid {
    pub positions: Vec<usize>,
    pub rows: usize,
    pub cols: usize,
}

impl Grid {
    /// A grid of `rows × cols` consecutive positions from `first`.
    pub fn consecutive(first: usize, rows: usize, cols: usize) -> Self {
        Self {
            positions: (first..first + rows * cols).collect(),
            rows,
            cols,
        }
    }
}

/// Bilinear upsampling of a `rows × cols` map to `width × height` pixels with pixel centres
/// aligned (OpenCV's `INTER_LINEAR`: source `(x + ½)·cols/width − ½`, clamped at the edges).
pub fn upsample_bilinear(
    values: &[f32],
    rows: usize,
    cols: usize,
    width: usize,
    height: usize,
) -> Vec<f32> {
    assert_eq!(values.len(), rows * cols, "values are not rows × cols");
    let axis = |out: usize, n: usize| -> Vec<(usize, usize, f32)> {
        let scale = n as f64 / out as f64;
        (0..out)
            .map(|i| {
                let s = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
                let lo = (s.floor() as usize).min(n - 1);
                let hi = (lo + 1).min(n - 1);
                (lo, hi, (s - lo as f64).min(1.0) as f32)
            })
            .collect()
    };
    let xs = axis(width, cols);
    let ys = axis(height, rows);
    let mut out = Vec::with_capacity(width * height);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let at = |y: usize, x: usize| values[y * cols + x];
            let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
            let bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
            out.push(top + (bottom - top) * fy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsampling_keeps_constants_and_corners_and_interpolates_between() {
        let flat = upsample_bilinear(&[0.25; 6], 2, 3, 12, 8);
        assert!(flat.iter().all(|&v| (v - 0.25).abs() < 1e-7));
        // A 1 × 2 ramp upsampled ×4: the outer quarter of each side is clamped.
        let ramp = upsample_bilinear(&[0.0, 1.0], 1, 2, 8, 1);
        assert_eq!(ramp[0], 0.0);
        assert_eq!(ramp[7], 1.0);
        assert!(ramp.windows(2).all(|w| w[0] <= w[1]));
        assert!((ramp[3] - 0.375).abs() < 1e-6 && (ramp[4] - 0.625).abs() < 1e-6);
        // Row-major order: the bright cell of a 2 × 2 grid lands in the right quadrant.
        let cell = upsample_bilinear(&[0.0, 0.0, 0.0, 1.0], 2, 2, 4, 4);
        assert_eq!(cell[15], 1.0);
        assert_eq!(cell[0], 0.0);
    }
}
