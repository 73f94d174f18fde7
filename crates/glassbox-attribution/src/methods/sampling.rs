//! Monte-Carlo estimators: permutation Shapley (antithetic) and maximum-sample-reuse Banzhaf.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{Estimate, full_and_empty, zeros};
use crate::stats::{mean, std_dev};
use crate::{AttributionError, Coalition, Game};

/// Shapley values as mean marginal contributions along random orders. Each order is paired with
/// its reverse (antithetic sampling: a unit early in one is late in the other, which cancels
/// much of the variance); standard errors are over the pairs.
pub(super) fn permutation(
    game: &mut dyn Game,
    permutations: usize,
    seed: u64,
) -> Result<Estimate, AttributionError> {
    if permutations < 4 {
        return Err(AttributionError::BadBudget(
            "permutation sampling needs at least 4 permutations (2 antithetic pairs)".into(),
        ));
    }
    let (n, dims) = (game.players(), game.dims());
    let pairs = permutations.div_ceil(2);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut orders = Vec::with_capacity(2 * pairs);
    for _ in 0..pairs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let reversed: Vec<usize> = order.iter().rev().copied().collect();
        orders.push(order);
        orders.push(reversed);
    }
    // All prefixes of all orders in one request, so the engine can share and batch them.
    let mut coalitions = Vec::with_capacity(orders.len() * (n + 1));
    for order in &orders {
        let mut c = Coalition::empty(n);
        coalitions.push(c.clone());
        for &i in order {
            c.insert(i);
            coalitions.push(c.clone());
        }
    }
    let values = game.values(&coalitions)?;
    // marginals[pair][d][i]
    let mut pair_means = vec![zeros(dims, n); pairs];
    for (k, order) in orders.iter().enumerate() {
        let v = &values[k * (n + 1)..(k + 1) * (n + 1)];
        for (j, &i) in order.iter().enumerate() {
            for d in 0..dims {
                pair_means[k / 2][d][i] += 0.5 * (v[j + 1][d] - v[j][d]);
            }
        }
    }
    let mut scores = zeros(dims, n);
    let mut errors = zeros(dims, n);
    for d in 0..dims {
        for i in 0..n {
            let samples: Vec<f64> = pair_means.iter().map(|p| p[d][i]).collect();
            scores[d][i] = mean(&samples);
            errors[d][i] = std_dev(&samples) / (pairs as f64).sqrt();
        }
    }
    let (full, empty) = (values[n].clone(), values[0].clone());
    Ok(Estimate {
        scores,
        std_errors: Some(errors),
        value_full: full,
        value_empty: empty,
        params: json!({}),
        diagnostics: json!({"evaluations_requested": coalitions.len()}),
    })
}

/// Banzhaf values from coalitions drawn uniformly (each unit kept with probability 1/2); every
/// sample informs every unit ("maximum sample reuse"): `β_i = mean(v | i ∈ S) − mean(v | i ∉ S)`.
pub(super) fn banzhaf(
    game: &mut dyn Game,
    samples: usize,
    seed: u64,
) -> Result<Estimate, AttributionError> {
    if samples < 8 {
        return Err(AttributionError::BadBudget(
            "sampled Banzhaf needs at least 8 samples".into(),
        ));
    }
    let (n, dims) = (game.players(), game.dims());
    let mut rng = StdRng::seed_from_u64(seed);
    let coalitions: Vec<Coalition> = (0..samples)
        .map(|_| Coalition::from_members(n, (0..n).filter(|_| rng.r#gen::<bool>())))
        .collect();
    let values = game.values(&coalitions)?;
    let mut scores = zeros(dims, n);
    let mut errors = zeros(dims, n);
    for i in 0..n {
        for d in 0..dims {
            let (inside, outside): (Vec<f64>, Vec<f64>) = {
                let mut a = Vec::new();
                let mut b = Vec::new();
                for (c, v) in coalitions.iter().zip(&values) {
                    if c.contains(i) {
                        a.push(v[d])
                    } else {
                        b.push(v[d])
                    }
                }
                (a, b)
            };
            if inside.len() < 2 || outside.len() < 2 {
                return Err(AttributionError::BadBudget(format!(
                    "sampled Banzhaf: unit {i} was almost never (or always) kept; use more samples"
                )));
            }
            scores[d][i] = mean(&inside) - mean(&outside);
            let var = std_dev(&inside).powi(2) / inside.len() as f64
                + std_dev(&outside).powi(2) / outside.len() as f64;
            errors[d][i] = var.sqrt();
        }
    }
    let (full, empty) = full_and_empty(game)?;
    Ok(Estimate {
        scores,
        std_errors: Some(errors),
        value_full: full,
        value_empty: empty,
        params: json!({}),
        diagnostics: serde_json::Value::Null,
    })
}
