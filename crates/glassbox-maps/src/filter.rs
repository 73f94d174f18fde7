//! The rank Gaussian filter of TAM.
//!
//! Each cell's 3 × 3 window (reflect-101 padding) is sorted and averaged with Gaussian weights
//! over rank offsets −4..4 whose width is the window's coefficient of variation: a smooth
//! window (low variation) is replaced by about its median, which removes an isolated spike,
//! while a varied window is averaged more widely, which keeps a blob's extent.

/// The filtered `rows × cols` map. A window with mean 0 gives 0; a window without variation
/// gives its value (the reference divides by zero there).
pub fn rank_gaussian_filter(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(values.len(), rows * cols, "values are not rows × cols");
    let mut out = vec![0f32; values.len()];
    let mut window = [0f64; 9];
    for r in 0..rows {
        for c in 0..cols {
            let mut k = 0;
            for dr in [-1i64, 0, 1] {
                for dc in [-1i64, 0, 1] {
                    let rr = reflect101(r as i64 + dr, rows);
                    let cc = reflect101(c as i64 + dc, cols);
                    window[k] = values[rr * cols + cc] as f64;
                    k += 1;
                }
            }
            window.sort_by(f64::total_cmp);
            let mean = window.iter().sum::<f64>() / 9.0;
            out[r * cols + c] = if mean > 0.0 {
                let var = window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 9.0;
                let sigma = var.sqrt() / mean;
                if sigma > 0.0 {
                    let weights: Vec<f64> = (-4..=4)
                        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
                        .collect();
                    let total: f64 = weights.iter().sum();
                    (window.iter().zip(&weights).map(|(v, w)| v * w).sum::<f64>() / total) as f32
                } else {
                    window[4] as f32
                }
            } else {
                0.0
            };
        }
    }
    out
}

/// Index `i` reflected into `0..n` without repeating the edge (`-1 → 1`, `n → n − 2`).
fn reflect101(i: i64, n: usize) -> usize {
    let n = n as i64;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - m }) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_skips_the_edge() {
        assert_eq!(reflect101(-1, 5), 1);
        assert_eq!(reflect101(5, 5), 3);
        assert_eq!(reflect101(2, 5), 2);
        assert_eq!(reflect101(-1, 1), 0);
    }

    #[test]
    fn an_isolated_spike_is_removed_and_a_blob_is_kept() {
        let (rows, cols) = (7, 7);
        let mut spike = vec![0f32; rows * cols];
        spike[3 * cols + 3] = 1.0;
        let out = rank_gaussian_filter(&spike, rows, cols);
        assert!(out[3 * cols + 3] < 0.2, "spike kept: {}", out[3 * cols + 3]);

        let mut blob = vec![0f32; rows * cols];
        for r in 2..5 {
            for c in 2..5 {
                blob[r * cols + c] = 1.0;
            }
        }
        let out = rank_gaussian_filter(&blob, rows, cols);
        assert!(
            out[3 * cols + 3] > 0.9,
            "blob centre lost: {}",
            out[3 * cols + 3]
        );
        assert!(out[0] == 0.0);
    }

    #[test]
    fn flat_and_empty_maps_give_no_nan() {
        let flat = rank_gaussian_filter(&[0.4; 12], 3, 4);
        assert!(flat.iter().all(|&v| (v - 0.4).abs() < 1e-7));
        let zero = rank_gaussian_filter(&[0.0; 4], 2, 2);
        assert!(zero.iter().all(|&v| v == 0.0));
        let single = rank_gaussian_filter(&[0.7], 1, 1);
        assert_eq!(single, vec![0.7]);
    }
}
