//! Small statistics used by estimators and their checks.

/// Arithmetic mean (0 for an empty slice).
pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        0.0
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

/// Sample standard deviation (n - 1 denominator; 0 below two values).
pub fn std_dev(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// Spearman rank correlation, 0 where it is undefined (a constant side): the estimators'
/// convergence checks read "no agreement" there. The definition is `glassbox_eval`'s.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    glassbox_eval::stats::spearman(a, b).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_correlations() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 100.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 1.0], &[2.0, 3.0]), 0.0);
        assert!((std_dev(&[1.0, 3.0]) - 2f64.sqrt()).abs() < 1e-12);
    }
}
