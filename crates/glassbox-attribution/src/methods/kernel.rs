//! KernelSHAP: Shapley values as the solution of a weighted regression over coalitions.
//!
//! Coalition sizes are drawn from the Shapley kernel (`p(s) ∝ (n-1) / (s (n-s))`), each
//! coalition paired with its complement (which halves the variance for free), and the linear
//! model is fitted under the efficiency constraint `Σ φ = v(N) − v(∅)`. When the budget covers
//! every coalition, all are used with their exact kernel weights and the result is the exact
//! Shapley value. Standard errors come from a bootstrap over the sampled pairs.

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{BOOTSTRAP_RESAMPLES, Estimate, full_and_empty, zeros};
use crate::linalg::weighted_least_squares;
use crate::stats::std_dev;
use crate::{AttributionError, Coalition, Game};

/// Relative ridge on the normal equations, only to keep nearly collinear designs solvable.
const RIDGE: f64 = 1e-10;

pub(super) fn kernel_shap(
    game: &mut dyn Game,
    samples: usize,
    seed: u64,
) -> Result<Estimate, AttributionError> {
    let (n, dims) = (game.players(), game.dims());
    let (full, empty) = full_and_empty(game)?;
    if n == 1 {
        let scores = (0..dims).map(|d| vec![full[d] - empty[d]]).collect();
        return Ok(done(scores, None, full, empty, json!({"enumerated": true})));
    }
    let inner = if n < 63 { (1u64 << n) - 2 } else { u64::MAX };
    if (samples as u64) >= inner {
        // Every coalition, with its exact kernel weight: the exact Shapley value.
        let coalitions: Vec<Coalition> = (1..=inner).map(|m| Coalition::from_mask(n, m)).collect();
        let weights: Vec<f64> = coalitions
            .iter()
            .map(|c| kernel_weight(n, c.len()))
            .collect();
        let values = game.values(&coalitions)?;
        let scores = solve(n, dims, &coalitions, &values, &weights, &full, &empty)?;
        return Ok(done(
            scores,
            Some(zeros(dims, n)),
            full,
            empty,
            json!({"enumerated": true}),
        ));
    }
    if samples < 2 * n {
        return Err(AttributionError::BadBudget(format!(
            "KernelSHAP needs at least {} samples for {n} units",
            2 * n
        )));
    }
    let plan = Plan::new(n, samples);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut coalitions = plan.enumerated.clone();
    let mut weights = plan.enumerated_weights.clone();
    let fixed = coalitions.len();
    let draws = (samples - fixed) / 2;
    for _ in 0..draws {
        let mut u = rng.r#gen::<f64>() * plan.sampled_sizes.iter().map(|(_, m)| m).sum::<f64>();
        let mut size = plan.sampled_sizes.last().map_or(1, |(s, _)| *s);
        for &(s, m) in &plan.sampled_sizes {
            if u < m {
                size = s;
                break;
            }
            u -= m;
        }
        let c = Coalition::from_members(n, sample(&mut rng, n, size));
        coalitions.push(c.complement());
        coalitions.push(c);
    }
    let sampled_weight = if draws > 0 {
        plan.sampled_mass / (2 * draws) as f64
    } else {
        0.0
    };
    weights.resize(coalitions.len(), sampled_weight);
    let values = game.values(&coalitions)?;
    let scores = solve(n, dims, &coalitions, &values, &weights, &full, &empty)?;

    // Bootstrap over the sampled pairs (the enumerated sizes are not random).
    let mut boot_rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut fits: Vec<Vec<Vec<f64>>> = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    if draws > 0 {
        for _ in 0..BOOTSTRAP_RESAMPLES {
            let mut cs = coalitions[..fixed].to_vec();
            let mut vs = values[..fixed].to_vec();
            for _ in 0..draws {
                let p = fixed + 2 * boot_rng.gen_range(0..draws);
                cs.extend_from_slice(&coalitions[p..p + 2]);
                vs.extend_from_slice(&values[p..p + 2]);
            }
            if let Ok(s) = solve(n, dims, &cs, &vs, &weights, &full, &empty) {
                fits.push(s);
            }
        }
    }
    let mut errors = zeros(dims, n);
    if !fits.is_empty() {
        for d in 0..dims {
            for i in 0..n {
                let xs: Vec<f64> = fits.iter().map(|s| s[d][i]).collect();
                errors[d][i] = std_dev(&xs);
            }
        }
    }
    Ok(done(
        scores,
        Some(errors),
        full,
        empty,
        json!({
            "enumerated": false,
            "enumerated_sizes": plan.enumerated_sizes,
            "enumerated_coalitions": fixed,
            "sampled_coalitions": 2 * draws,
            "bootstrap_fits": fits.len(),
        }),
    ))
}

/// How a budget is spent (the scheme of SHAP's KernelExplainer): the coalition sizes with
/// the most kernel weight — the smallest and largest, paired — are enumerated completely while
/// the budget would cover them anyway under sampling, with their exact kernel weights; the
/// other sizes are sampled in complementary pairs and share the rest of the weight. Complete
/// small and large strata remove most of the variance of plain sampling, which redraws the
/// same few size-1 and size-(n-1) coalitions again and again.
struct Plan {
    enumerated: Vec<Coalition>,
    enumerated_weights: Vec<f64>,
    enumerated_sizes: Vec<usize>,
    /// Sizes left to sampling, with their kernel mass.
    sampled_sizes: Vec<(usize, f64)>,
    /// Kernel mass (of a total of 1) left to the sampled coalitions.
    sampled_mass: f64,
}

impl Plan {
    fn new(n: usize, samples: usize) -> Self {
        let mass = |s: usize| (n - 1) as f64 / (s * (n - s)) as f64;
        let total: f64 = (1..n).map(mass).sum();
        let mut plan = Plan {
            enumerated: Vec::new(),
            enumerated_weights: Vec::new(),
            enumerated_sizes: Vec::new(),
            sampled_sizes: Vec::new(),
            sampled_mass: 1.0,
        };
        let mut left = samples;
        let mut open = true;
        for s in 1..=n / 2 {
            let sizes: Vec<usize> = if 2 * s == n { vec![s] } else { vec![s, n - s] };
            let count: usize = sizes.iter().map(|&k| binomial(n, k)).sum();
            let pair_mass: f64 = sizes.iter().map(|&k| mass(k) / total).sum();
            // Enumerate while sampling would spend at least as many draws on these sizes.
            // At least one sampled pair must remain for the sizes not enumerated.
            open = open
                && count + 2 <= left
                && pair_mass / plan.sampled_mass * left as f64 >= count as f64;
            if open {
                for &k in &sizes {
                    let w = mass(k) / total / binomial(n, k) as f64;
                    for c in subsets(n, k) {
                        plan.enumerated.push(c);
                        plan.enumerated_weights.push(w);
                    }
                    plan.enumerated_sizes.push(k);
                }
                left -= count;
                plan.sampled_mass -= pair_mass;
            } else {
                plan.sampled_sizes
                    .extend(sizes.iter().map(|&k| (k, mass(k) / total)));
            }
        }
        plan.sampled_sizes.sort_unstable_by_key(|(k, _)| *k);
        plan
    }
}

/// `C(n, k)` (small n).
fn binomial(n: usize, k: usize) -> usize {
    (0..k).fold(1usize, |acc, i| acc * (n - i) / (i + 1))
}

/// Every coalition of `k` of `n` units, in lexicographic order of members.
fn subsets(n: usize, k: usize) -> Vec<Coalition> {
    let mut out = Vec::with_capacity(binomial(n, k));
    let mut idx: Vec<usize> = (0..k).collect();
    loop {
        out.push(Coalition::from_members(n, idx.iter().copied()));
        // Advance to the next combination.
        let Some(i) = (0..k).rev().find(|&i| idx[i] != i + n - k) else {
            return out;
        };
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

fn done(
    scores: Vec<Vec<f64>>,
    std_errors: Option<Vec<Vec<f64>>>,
    full: Vec<f64>,
    empty: Vec<f64>,
    diagnostics: serde_json::Value,
) -> Estimate {
    Estimate {
        scores,
        std_errors,
        value_full: full,
        value_empty: empty,
        params: json!({}),
        diagnostics,
    }
}

/// Shapley kernel weight of a coalition of size `s` out of `n`.
fn kernel_weight(n: usize, s: usize) -> f64 {
    let mut binom = 1.0f64;
    for k in 0..s {
        binom = binom * (n - k) as f64 / (k + 1) as f64;
    }
    (n - 1) as f64 / (binom * (s * (n - s)) as f64)
}

/// Weighted least squares of `v(S) − v(∅) ≈ Σ_{i ∈ S} φ_i` under `Σ φ = v(N) − v(∅)`, the
/// constraint eliminated by substituting the last unit.
fn solve(
    n: usize,
    dims: usize,
    coalitions: &[Coalition],
    values: &[Vec<f64>],
    weights: &[f64],
    full: &[f64],
    empty: &[f64],
) -> Result<Vec<Vec<f64>>, AttributionError> {
    let last = n - 1;
    let design: Vec<Vec<f64>> = coalitions
        .iter()
        .map(|c| {
            let zl = c.contains(last) as u8 as f64;
            (0..last).map(|i| c.contains(i) as u8 as f64 - zl).collect()
        })
        .collect();
    let mut scores = zeros(dims, n);
    for d in 0..dims {
        let delta = full[d] - empty[d];
        let y: Vec<f64> = coalitions
            .iter()
            .zip(values)
            .map(|(c, v)| v[d] - empty[d] - c.contains(last) as u8 as f64 * delta)
            .collect();
        let scale: f64 = weights.iter().sum::<f64>().max(1.0);
        let beta = weighted_least_squares(&design, &y, weights, RIDGE * scale).ok_or_else(|| {
            AttributionError::BadBudget("KernelSHAP: the sampled coalitions do not determine the values; use more samples".into())
        })?;
        for (i, b) in beta.iter().enumerate() {
            scores[d][i] = *b;
        }
        scores[d][last] = delta - beta.iter().sum::<f64>();
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_all_distinct_combinations() {
        let all = subsets(7, 3);
        assert_eq!(all.len(), 35);
        assert!(all.iter().all(|c| c.len() == 3));
        let mut sorted = all.clone();
        sorted.sort_by_key(|c| c.members().collect::<Vec<_>>());
        sorted.dedup();
        assert_eq!(sorted.len(), 35);
        assert_eq!(subsets(5, 0).len(), 1);
    }

    #[test]
    fn plans_enumerate_the_heaviest_sizes_and_keep_the_kernel_mass() {
        // n = 8, 128 samples: sizes 1 and 7 (16 coalitions) are cheaper enumerated than drawn.
        let plan = Plan::new(8, 128);
        assert_eq!(plan.enumerated_sizes, [1, 7]);
        assert_eq!(plan.enumerated.len(), 16);
        let enumerated: f64 = plan.enumerated_weights.iter().sum();
        assert!((enumerated + plan.sampled_mass - 1.0).abs() < 1e-12);
        let sampled: f64 = plan.sampled_sizes.iter().map(|(_, m)| m).sum();
        assert!((sampled - plan.sampled_mass).abs() < 1e-12);
        assert_eq!(
            plan.sampled_sizes
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>(),
            [2, 3, 4, 5, 6]
        );
        // A budget too small for them samples everything.
        assert!(Plan::new(20, 40).enumerated.is_empty());
    }
}
