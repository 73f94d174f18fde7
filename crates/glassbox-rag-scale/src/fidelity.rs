//! How close an estimated ranking of passages is to the exact one.
//!
//! - Spearman's rank correlation over all passages;
//! - top-k agreement: the share of the exact top k that the estimate also puts in its top k
//!   (top-1: the same first passage);
//! - outlier recovery (after AttriBoT): the passages whose exact score stands out — above
//!   the mean by more than [`OUTLIER_STD`] standard deviations, or the top one when none does
//!   — are the relevant set, and the estimate's ranking is scored by its average precision
//!   at retrieving them (a mean over cases gives mAP);
//! - Spearman over the passages a sampled ground truth resolves ([`resolved`]): with a few
//!   permutations most passages' Shapley values are within noise of zero, and their order —
//!   which a Spearman over all passages weighs as much as the top's — is the sampler's, not
//!   the model's.

use glassbox_attribution::stats::{mean, spearman, std_dev};

/// Standard deviations above the mean that make an exact score an outlier.
pub const OUTLIER_STD: f64 = 2.0;

/// Passage indices by decreasing score (ties: lower index first).
pub fn ranking(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

/// Spearman's correlation, or `None` for fewer than three values (where it says nothing).
pub fn spearman_or_none(a: &[f64], b: &[f64]) -> Option<f64> {
    (a.len() >= 3).then(|| spearman(a, b))
}

/// Standard errors from zero beyond which a sampled value counts as resolved.
pub const RESOLVED_Z: f64 = 2.0;

/// The passages whose sampled value is more than [`RESOLVED_Z`] standard errors from zero.
pub fn resolved(values: &[f64], std_errors: &[f64]) -> Vec<usize> {
    (0..values.len().min(std_errors.len()))
        .filter(|&i| values[i].abs() > RESOLVED_Z * std_errors[i])
        .collect()
}

/// Spearman's correlation over the passages `on` only (see [`spearman_or_none`]); `None`
/// also where `on` names a passage that `a` or `b` lacks.
pub fn spearman_on(a: &[f64], b: &[f64], on: &[usize]) -> Option<f64> {
    let pick = |v: &[f64]| {
        on.iter()
            .map(|&i| v.get(i).copied())
            .collect::<Option<Vec<f64>>>()
    };
    spearman_or_none(&pick(a)?, &pick(b)?)
}

/// Share of the exact top `k` found in the estimate's top `k`.
pub fn top_k_agreement(estimate: &[f64], exact: &[f64], k: usize) -> f64 {
    let k = k.min(exact.len()).max(1);
    let (e, x) = (&ranking(estimate)[..k], &ranking(exact)[..k]);
    x.iter().filter(|i| e.contains(i)).count() as f64 / k as f64
}

/// The passages whose exact score is an outlier (see the module docs).
pub fn outliers(exact: &[f64]) -> Vec<usize> {
    let (mu, sd) = (mean(exact), std_dev(exact));
    let out: Vec<usize> = (0..exact.len())
        .filter(|&i| exact[i] > mu + OUTLIER_STD * sd)
        .collect();
    if out.is_empty() {
        ranking(exact).into_iter().take(1).collect()
    } else {
        out
    }
}

/// Average precision of the estimate's ranking at retrieving `relevant`.
pub fn average_precision(estimate: &[f64], relevant: &[usize]) -> f64 {
    if relevant.is_empty() {
        return 1.0;
    }
    let mut hits = 0usize;
    let mut sum = 0.0;
    for (rank, i) in ranking(estimate).iter().enumerate() {
        if relevant.contains(i) {
            hits += 1;
            sum += hits as f64 / (rank + 1) as f64;
        }
    }
    sum / relevant.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_on_small_rankings() {
        let exact = [0.1, 5.0, -0.2, 0.3, 0.0, 0.05, 0.1, 0.0, 0.02, 0.2];
        assert_eq!(outliers(&exact), vec![1]);
        let good = [0.2, 4.0, -0.1, 0.5, 0.0, 0.0, 0.1, 0.0, 0.0, 0.1];
        assert_eq!(average_precision(&good, &[1]), 1.0);
        assert_eq!(top_k_agreement(&good, &exact, 1), 1.0);
        // Ranked third: precision 1/3.
        let worse = [0.9, 0.5, 0.0, 0.7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert!((average_precision(&worse, &[1]) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(top_k_agreement(&worse, &exact, 1), 0.0);
        assert!((top_k_agreement(&worse, &exact, 3) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(spearman_or_none(&[1.0, 2.0], &[2.0, 1.0]), None);
        // No outlier: the top passage is the relevant one.
        assert_eq!(outliers(&[1.0, 1.1, 0.9]), vec![1]);
    }

    #[test]
    fn ranks_only_the_resolved_passages() {
        let shapley = [3.0, 0.1, -1.0, 0.05, 0.5, 2.0];
        let errors = [0.5, 0.2, 0.4, 0.3, 0.2, 0.5];
        assert_eq!(resolved(&shapley, &errors), vec![0, 2, 4, 5]);
        // Reversed order on the noise (1, 3), same order on the resolved passages.
        let estimate = [9.0, -5.0, 1.0, 5.0, 2.0, 3.0];
        assert_eq!(spearman_on(&estimate, &shapley, &[0, 2, 4, 5]), Some(1.0));
        assert!(spearman_or_none(&estimate, &shapley).unwrap() < 0.9);
        assert_eq!(spearman_on(&estimate, &shapley, &[0, 2]), None);
        assert_eq!(spearman_on(&estimate, &shapley[..3], &[0, 2, 4]), None);
    }
}
