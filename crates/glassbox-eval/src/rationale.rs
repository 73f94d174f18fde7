//! Rationales: the units an explanation points at, which the faithfulness metrics remove or
//! keep and the plausibility metrics compare with human ones. One ranking rule everywhere
//! (highest score first, ties to the lower index) so that every metric of one explanation
//! removes the same units.

use crate::stats::cmp_f64;

/// Unit indices by score, highest first; ties go to the lower index, so that the result does
/// not depend on the sort algorithm and all-zero scores rank units in document order.
pub(crate) fn ranking(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| cmp_f64(scores[b], scores[a]).then(a.cmp(&b)));
    order
}

/// The rationale size of a bin of `percent`% of `n` units, k = floor(percent · n / 100)
/// (METRICS.md §1). Computed in integers because in floating point 0.57 · 100 is 56.99…, which
/// would floor to 56.
pub(crate) fn bin_size(percent: u32, n: usize) -> usize {
    percent as usize * n / 100
}

/// The top-`k` rationale: a prefix of `order` (from [`ranking`]). With `only_positive` the
/// units with s_i <= 0 are dropped; since `order` is by descending score they form its tail,
/// so the result stays a prefix and rationales of growing k are nested.
pub(crate) fn top<'a>(
    order: &'a [usize],
    scores: &[f64],
    k: usize,
    only_positive: bool,
) -> &'a [usize] {
    let k = k.min(order.len());
    let len = if only_positive {
        order[..k].iter().take_while(|&&i| scores[i] > 0.0).count()
    } else {
        k
    };
    &order[..len]
}

/// The coalition that keeps every unit except `removed` (`kept[i]` = unit i kept).
pub(crate) fn without(n: usize, removed: &[usize]) -> Vec<bool> {
    let mut kept = vec![true; n];
    for &i in removed {
        kept[i] = false;
    }
    kept
}

/// The coalition that keeps only `kept`.
pub(crate) fn keeping(n: usize, kept: &[usize]) -> Vec<bool> {
    let mut mask = vec![false; n];
    for &i in kept {
        mask[i] = true;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_breaks_ties_by_index() {
        assert_eq!(ranking(&[0.2, 0.5, 0.5, 0.1]), vec![1, 2, 0, 3]);
        assert_eq!(
            ranking(&[0.0, -0.0, 0.0]),
            vec![0, 1, 2],
            "-0.0 ties with 0.0"
        );
    }

    #[test]
    fn bins_floor_exactly() {
        assert_eq!(bin_size(57, 100), 57);
        assert_eq!(bin_size(10, 4), 0); // 40 / 100 = 0.4 → 0
        assert_eq!(bin_size(50, 5), 2); // 250 / 100 = 2.5 → 2
        assert_eq!(bin_size(100, 3), 3);
    }

    #[test]
    fn positive_rationales_stay_prefixes() {
        let scores = [0.4, 0.1, 0.3, -0.2];
        let order = ranking(&scores); // 0 (0.4), 2 (0.3), 1 (0.1), 3 (-0.2)
        assert_eq!(top(&order, &scores, 4, false), &[0, 2, 1, 3]);
        assert_eq!(top(&order, &scores, 4, true), &[0, 2, 1]);
        assert_eq!(top(&order, &scores, 0, true), &[] as &[usize]);
        assert_eq!(without(3, &[1]), vec![true, false, true]);
        assert_eq!(keeping(3, &[1]), vec![false, true, false]);
    }
}
