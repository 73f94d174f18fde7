//! Agreement between two explanations of the same input, without the model: do two explainers
//! (or two runs of a sampled one) point at the same units? Definitions follow Krishna et al.
//! 2022, "The Disagreement Problem in Explainable Machine Learning" (METRICS.md §6): units are
//! ranked by the *magnitude* of their scores, and signs are compared separately.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::EvalError;
use crate::input::check_scores;
use crate::rationale::ranking;
use crate::stats::{cmp_f64, kendall_tau_b, pearson, spearman};

/// The share of units in the default top-k, k = max(1, floor(20% · n)) (Krishna et al.;
/// METRICS.md §6).
pub const DEFAULT_TOP_PERCENT: usize = 20;

/// How much two explanations agree. Top-k measures are fractions of k; correlations are `None`
/// where undefined (a constant explanation has no ranking), never NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    pub n_units: usize,
    pub k: usize,
    /// |top_k(a) ∩ top_k(b)| / k.
    pub feature_agreement: f64,
    /// Ranks 1..k holding the same unit in both, over k.
    pub rank_agreement: f64,
    /// Units in both top-k with the same sign, over k.
    pub sign_agreement: f64,
    /// Ranks 1..k holding the same unit with the same sign in both, over k.
    pub signed_rank_agreement: f64,
    /// |top_k(a) ∩ top_k(b)| / |top_k(a) ∪ top_k(b)|.
    pub iou: f64,
    /// Spearman's ρ of the magnitudes over all units, ties at average ranks.
    pub spearman: Option<f64>,
    /// Kendall's τ-b of the magnitudes over all units.
    pub kendall_tau_b: Option<f64>,
    /// Fraction of unit pairs whose magnitudes are ordered the same way (a tie counts as an
    /// order of its own); `None` for n = 1, which has no pairs.
    pub pairwise_rank_agreement: Option<f64>,
    /// Pearson correlation of the signed scores, meaningful where the two scales are
    /// comparable (e.g. two estimates of the same Shapley values).
    pub pearson: Option<f64>,
}

/// Agreement of explanations `a` and `b` of the same units, with the top-`k` measures at `k`
/// (default max(1, floor(0.2 n))). Top-k sets and ranks are by |score|, ties to the lower
/// index, as everywhere in this crate.
pub fn agreement(a: &[f64], b: &[f64], k: Option<usize>) -> Result<Agreement, EvalError> {
    check_scores("explanation a", a)?;
    check_scores("explanation b", b)?;
    let n = a.len();
    if b.len() != n {
        return Err(EvalError::LengthMismatch {
            what: "agreement: explanations a and b",
            left: n,
            right: b.len(),
        });
    }
    let k = k.unwrap_or_else(|| (DEFAULT_TOP_PERCENT * n / 100).max(1));
    if k == 0 || k > n {
        return Err(EvalError::KOutOfRange {
            what: "agreement",
            k,
            min: 1,
            max: n,
        });
    }
    let magnitude = |x: &[f64]| x.iter().map(|v| v.abs()).collect::<Vec<f64>>();
    let (abs_a, abs_b) = (magnitude(a), magnitude(b));
    let (top_a, top_b) = (&ranking(&abs_a)[..k], &ranking(&abs_b)[..k]);
    let same_sign = |i: usize| sign(a[i]) == sign(b[i]);
    let set_a: BTreeSet<usize> = top_a.iter().copied().collect();
    let set_b: BTreeSet<usize> = top_b.iter().copied().collect();
    let common: Vec<usize> = set_a.intersection(&set_b).copied().collect();
    let same_rank: Vec<usize> = top_a
        .iter()
        .zip(top_b)
        .filter(|(x, y)| x == y)
        .map(|(x, _)| *x)
        .collect();
    let over_k = |count: usize| count as f64 / k as f64;
    Ok(Agreement {
        n_units: n,
        k,
        feature_agreement: over_k(common.len()),
        rank_agreement: over_k(same_rank.len()),
        sign_agreement: over_k(common.iter().filter(|&&i| same_sign(i)).count()),
        signed_rank_agreement: over_k(same_rank.iter().filter(|&&i| same_sign(i)).count()),
        iou: common.len() as f64 / set_a.union(&set_b).count() as f64,
        spearman: spearman(&abs_a, &abs_b),
        kendall_tau_b: kendall_tau_b(&abs_a, &abs_b),
        pairwise_rank_agreement: pairwise_rank_agreement(&abs_a, &abs_b),
        pearson: pearson(a, b),
    })
}

/// −1, 0 or 1. Not `f64::signum`, which gives 0.0 the sign +1: a zero score claims nothing,
/// so it agrees only with another zero.
fn sign(x: f64) -> i8 {
    match cmp_f64(x, 0.0) {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
}

/// Fraction of pairs i < j with the same order (less, equal, greater) in both.
fn pairwise_rank_agreement(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len();
    let pairs = n * n.saturating_sub(1) / 2;
    let order = |x: &[f64], i: usize, j: usize| -> Ordering { cmp_f64(x[i], x[j]) };
    let same = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .filter(|&(i, j)| order(a, i, j) == order(b, i, j))
        .count();
    (pairs > 0).then(|| same as f64 / pairs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::close;

    const A: [f64; 5] = [0.9, -0.5, 0.1, 0.3, 0.0];
    const B: [f64; 5] = [0.8, 0.6, -0.4, 0.2, 0.1];

    #[test]
    fn top_k_measures_by_hand() {
        // |A| ranks units 0, 1, 3, 2, 4; |B| ranks 0, 1, 2, 3, 4. Top 3: {0, 1, 3} and
        // {0, 1, 2}; common {0, 1}; ranks 1 and 2 agree (units 0, 1), rank 3 does not.
        // Unit 0 has the same sign (+, +), unit 1 does not (−0.5, +0.6).
        let r = agreement(&A, &B, Some(3)).unwrap();
        assert_eq!((r.n_units, r.k), (5, 3));
        assert!(close(r.feature_agreement, 2.0 / 3.0));
        assert!(close(r.rank_agreement, 2.0 / 3.0));
        assert!(close(r.sign_agreement, 1.0 / 3.0));
        assert!(close(r.signed_rank_agreement, 1.0 / 3.0));
        // Union {0, 1, 2, 3}: 2 / 4.
        assert!(close(r.iou, 0.5));
    }

    #[test]
    fn correlations_by_hand() {
        let r = agreement(&A, &B, None).unwrap();
        // Default k = max(1, floor(0.2 · 5)) = 1: both rank unit 0 first, same sign.
        assert_eq!(r.k, 1);
        assert!(close(r.feature_agreement, 1.0) && close(r.signed_rank_agreement, 1.0));
        // Magnitude ranks (ascending): |A| → [5, 4, 2, 3, 1], |B| → [5, 4, 3, 2, 1];
        // d = 0, 0, −1, 1, 0, Σd² = 2, ρ = 1 − 6 · 2 / (5 · 24) = 0.9.
        assert!(close(r.spearman.unwrap(), 0.9));
        // Of 10 pairs only (2, 3) is discordant (0.1 < 0.3 but 0.4 > 0.2): τ = (9 − 1) / 10,
        // and 9 of 10 pairs agree.
        assert!(close(r.kendall_tau_b.unwrap(), 0.8));
        assert!(close(r.pairwise_rank_agreement.unwrap(), 0.9));
        // Signed Pearson: means 0.16, 0.26; Σ deviation products = 0.232,
        // Σ (a − 0.16)² = 1.032, Σ (b − 0.26)² = 0.872.
        assert!(close(r.pearson.unwrap(), 0.232 / (1.032f64 * 0.872).sqrt()));
    }

    #[test]
    fn constant_explanations_have_no_correlation() {
        let r = agreement(&[1.0, 1.0, 1.0], &[0.1, 0.2, 0.3], None).unwrap();
        assert_eq!((r.spearman, r.kendall_tau_b, r.pearson), (None, None, None));
        // Every pair is tied in a and ordered in b: no pair agrees.
        assert_eq!(r.pairwise_rank_agreement, Some(0.0));
        // k = 1: a's tie goes to unit 0, b's top is unit 2.
        assert_eq!(r.feature_agreement, 0.0);
        let same = agreement(&[0.0, 0.0], &[0.0, 0.0], None).unwrap();
        assert_eq!(same.pairwise_rank_agreement, Some(1.0));
        assert_eq!(same.sign_agreement, 1.0, "zero has the same sign as zero");
        let one = agreement(&[0.5], &[-0.5], None).unwrap();
        assert_eq!(
            (one.pairwise_rank_agreement, one.sign_agreement),
            (None, 0.0)
        );
    }

    #[test]
    fn bad_inputs() {
        assert!(matches!(
            agreement(&[1.0, 2.0], &[1.0], None),
            Err(EvalError::LengthMismatch { .. })
        ));
        assert!(matches!(
            agreement(&[], &[], None),
            Err(EvalError::Empty { .. })
        ));
        for k in [0, 3] {
            assert!(matches!(
                agreement(&[1.0, 2.0], &[1.0, 2.0], Some(k)),
                Err(EvalError::KOutOfRange { .. })
            ));
        }
        assert!(matches!(
            agreement(&[1.0, f64::NAN], &[1.0, 2.0], None),
            Err(EvalError::NonFinite { .. })
        ));
    }
}
