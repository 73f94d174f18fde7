//! Small statistics shared by the metrics (and by the attribution estimators' checks).
//! Correlations return `None` where they are undefined (a constant side has no ordering) so
//! that no NaN ever reaches a result or a table.

use std::cmp::Ordering;

/// Orders two finite numbers. Unlike `f64::total_cmp` it treats `-0.0` and `0.0` as equal, so
/// that a score of `-0.0` ties with `0.0` and the tie goes by unit index as documented.
/// Callers check finiteness first; the `Equal` fallback is never reached for finite inputs.
pub(crate) fn cmp_f64(x: f64, y: f64) -> Ordering {
    x.partial_cmp(&y).unwrap_or(Ordering::Equal)
}

/// Arithmetic mean, `None` for no values.
pub fn mean(x: &[f64]) -> Option<f64> {
    (!x.is_empty()).then(|| x.iter().sum::<f64>() / x.len() as f64)
}

/// Standard error of the mean: the sample standard deviation (n − 1 denominator) over √n.
/// `None` below two values, where the spread is unknown.
pub fn standard_error(x: &[f64]) -> Option<f64> {
    if x.len() < 2 {
        return None;
    }
    let m = mean(x)?;
    let variance = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64;
    Some((variance / x.len() as f64).sqrt())
}

/// Ranks from 1 (smallest first), ties sharing their average rank, as Spearman's ρ with ties
/// requires.
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| cmp_f64(x[a], x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && x[order[end + 1]] == x[order[start]] {
            end += 1;
        }
        let average = (start + end) as f64 / 2.0 + 1.0;
        for &i in &order[start..=end] {
            ranks[i] = average;
        }
        start = end + 1;
    }
    ranks
}

/// Whether all values are equal. Tested exactly rather than through a variance, because a
/// mean of equal values can be off by one ulp and give a tiny nonzero variance.
fn is_constant(x: &[f64]) -> bool {
    x.first().is_none_or(|first| x.iter().all(|v| v == first))
}

/// Pearson correlation of two equally long slices; `None` when either side is constant (or has
/// fewer than two values).
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    if is_constant(a) || is_constant(b) {
        return None;
    }
    let (ma, mb) = (mean(a)?, mean(b)?);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    // Rounding can push |r| a hair past 1.
    Some((cov / (va * vb).sqrt()).clamp(-1.0, 1.0))
}

/// Spearman's ρ: Pearson on average ranks.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    pearson(&average_ranks(a), &average_ranks(b))
}

/// Kendall's τ-b, which corrects τ for ties on either side:
/// (concordant − discordant) / √((P − T_a)(P − T_b)) with P = n(n−1)/2 pairs and T_a, T_b the
/// pairs tied in a, in b. `None` when a side is constant (the denominator is 0).
pub fn kendall_tau_b(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len();
    let (mut concordant, mut discordant, mut tied_a, mut tied_b) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..n {
        for j in i + 1..n {
            let (da, db) = (cmp_f64(a[i], a[j]), cmp_f64(b[i], b[j]));
            if da == Ordering::Equal {
                tied_a += 1;
            }
            if db == Ordering::Equal {
                tied_b += 1;
            }
            if da != Ordering::Equal && db != Ordering::Equal {
                if da == db {
                    concordant += 1;
                } else {
                    discordant += 1;
                }
            }
        }
    }
    let pairs = (n * n.saturating_sub(1) / 2) as u64;
    let denominator = ((pairs - tied_a) as f64 * (pairs - tied_b) as f64).sqrt();
    (denominator > 0.0).then(|| (concordant as f64 - discordant as f64) / denominator)
}

#[cfg(test)]
pub(crate) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        // Sorted: 1.0 (rank 1), 2.0 (rank 2), 3.0 twice (ranks 3 and 4 → 3.5 each).
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
        // -0.0 ties with 0.0: ranks 1 and 2 → 1.5 each.
        assert_eq!(average_ranks(&[-0.0, 0.0]), vec![1.5, 1.5]);
    }

    #[test]
    fn mean_and_standard_error() {
        assert_eq!(mean(&[]), None);
        // (1 + 2 + 6) / 3 = 3
        assert!(close(mean(&[1.0, 2.0, 6.0]).unwrap(), 3.0));
        // deviations -2, -1, 3 → Σ² = 14, variance 14/2 = 7, SE = √(7/3)
        assert!(close(
            standard_error(&[1.0, 2.0, 6.0]).unwrap(),
            (7.0f64 / 3.0).sqrt()
        ));
        assert_eq!(standard_error(&[1.0]), None);
    }

    #[test]
    fn correlations_by_hand() {
        // a = [1, 2, 3], b = [1, 3, 2]: means 2, 2; deviations (-1, 0, 1) and (-1, 1, 0);
        // cov = 1 + 0 + 0 = 1, va = vb = 2 → r = 1 / 2.
        assert!(close(
            pearson(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]).unwrap(),
            0.5
        ));
        // Ranks equal the values, so ρ = r = 0.5.
        assert!(close(
            spearman(&[1.0, 2.0, 3.0], &[10.0, 30.0, 20.0]).unwrap(),
            0.5
        ));
        // Pairs (0,1) concordant, (0,2) concordant, (1,2) discordant: (2 − 1) / 3.
        assert!(close(
            kendall_tau_b(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]).unwrap(),
            1.0 / 3.0
        ));
        // With a tie in a: a = [1, 1, 2], b = [1, 2, 3]. P = 3, T_a = 1 (pair 0,1), T_b = 0;
        // (0,2) and (1,2) concordant → 2 / √(2 · 3).
        assert!(close(
            kendall_tau_b(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]).unwrap(),
            2.0 / 6.0f64.sqrt()
        ));
    }

    #[test]
    fn correlations_of_constants_are_undefined_not_nan() {
        let (constant, rising) = ([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]);
        assert_eq!(pearson(&constant, &rising), None);
        assert_eq!(spearman(&rising, &constant), None);
        assert_eq!(kendall_tau_b(&constant, &rising), None);
        assert_eq!(pearson(&[1.0], &[2.0]), None, "one value has no spread");
        assert_eq!(kendall_tau_b(&[], &[]), None);
    }
}
