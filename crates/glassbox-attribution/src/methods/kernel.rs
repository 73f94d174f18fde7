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
    let mut rng = StdRng::seed_from_u64(seed);
    let size_weights: Vec<f64> = (1..n)
        .map(|s| (n - 1) as f64 / (s * (n - s)) as f64)
        .collect();
    let total: f64 = size_weights.iter().sum();
    let mut coalitions = Vec::with_capacity(samples);
    for _ in 0..samples / 2 {
        let mut u = rng.r#gen::<f64>() * total;
        let mut size = n - 1;
        for (k, w) in size_weights.iter().enumerate() {
            if u < *w {
                size = k + 1;
                break;
            }
            u -= w;
        }
        let c = Coalition::from_members(n, sample(&mut rng, n, size));
        coalitions.push(c.complement());
        coalitions.push(c);
    }
    let values = game.values(&coalitions)?;
    let weights = vec![1.0; coalitions.len()];
    let scores = solve(n, dims, &coalitions, &values, &weights, &full, &empty)?;

    // Bootstrap over the pairs.
    let pairs = coalitions.len() / 2;
    let mut boot_rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut draws: Vec<Vec<Vec<f64>>> = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    for _ in 0..BOOTSTRAP_RESAMPLES {
        let picks: Vec<usize> = (0..pairs).map(|_| boot_rng.gen_range(0..pairs)).collect();
        let cs: Vec<Coalition> = picks
            .iter()
            .flat_map(|&p| [coalitions[2 * p].clone(), coalitions[2 * p + 1].clone()])
            .collect();
        let vs: Vec<Vec<f64>> = picks
            .iter()
            .flat_map(|&p| [values[2 * p].clone(), values[2 * p + 1].clone()])
            .collect();
        if let Ok(s) = solve(n, dims, &cs, &vs, &weights, &full, &empty) {
            draws.push(s);
        }
    }
    let mut errors = zeros(dims, n);
    for d in 0..dims {
        for i in 0..n {
            let xs: Vec<f64> = draws.iter().map(|s| s[d][i]).collect();
            errors[d][i] = std_dev(&xs);
        }
    }
    Ok(done(
        scores,
        Some(errors),
        full,
        empty,
        json!({"enumerated": false, "bootstrap_fits": draws.len()}),
    ))
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
