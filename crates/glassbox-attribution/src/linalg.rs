//! A small dense least-squares solver (the systems here have at most a few hundred unknowns).

/// Solves the symmetric positive (semi-)definite system `a · x = b` by Cholesky, with `ridge`
/// added to the diagonal for stability. `a` is row-major `n × n`. Returns `None` if the
/// system is singular even with the ridge.
pub fn solve_spd(a: &[f64], b: &[f64], ridge: f64) -> Option<Vec<f64>> {
    let n = b.len();
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j] + if i == j { ridge } else { 0.0 };
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * n + i];
    }
    Some(x)
}

/// Weighted least squares `min Σ w_k (y_k - x_k · β)²` via the normal equations; rows of `x`
/// have length `p`.
pub fn weighted_least_squares(
    x: &[Vec<f64>],
    y: &[f64],
    w: &[f64],
    ridge: f64,
) -> Option<Vec<f64>> {
    let p = x.first().map_or(0, |r| r.len());
    let mut ata = vec![0.0; p * p];
    let mut atb = vec![0.0; p];
    for ((row, &yk), &wk) in x.iter().zip(y).zip(w) {
        for i in 0..p {
            atb[i] += wk * row[i] * yk;
            for j in 0..=i {
                ata[i * p + j] += wk * row[i] * row[j];
            }
        }
    }
    for i in 0..p {
        for j in 0..i {
            ata[j * p + i] = ata[i * p + j];
        }
    }
    solve_spd(&ata, &atb, ridge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_exact_coefficients() {
        let beta = [2.0, -1.0, 0.5];
        let x: Vec<Vec<f64>> = (0..10)
            .map(|k| vec![1.0, (k % 3) as f64, (k * k % 7) as f64])
            .collect();
        let y: Vec<f64> = x
            .iter()
            .map(|r| r.iter().zip(&beta).map(|(a, b)| a * b).sum())
            .collect();
        let got = weighted_least_squares(&x, &y, &[1.0; 10], 0.0).unwrap();
        for (g, b) in got.iter().zip(&beta) {
            assert!((g - b).abs() < 1e-9);
        }
        assert!(solve_spd(&[0.0], &[1.0], 0.0).is_none());
    }
}
