//! LIME (Ribeiro et al., 2016) on a game: a weighted ridge regression of the value on which
//! units each random coalition keeps.
//!
//! Coalitions keep each unit with probability ½ (Bernoulli masks, as Captum's LIME draws
//! them); the full coalition is always included. Each is weighted by an exponential kernel on
//! its cosine distance to the full input, `exp(-d² / width²)`, so near-complete inputs count
//! most (the locality that distinguishes LIME from a global surrogate). The ridge penalty
//! (α = 1) is not applied to the intercept. The fit's weighted R² is reported.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{Estimate, full_and_empty, zeros};
use crate::linalg::weighted_least_squares;
use crate::{AttributionError, Coalition, Game};

/// Width of the exponential kernel on cosine distance (LIME's text default, 25 on distances
/// scaled by 100).
pub const LIME_KERNEL_WIDTH: f64 = 0.25;
/// Ridge penalty on the unit weights (scikit-learn's `Ridge` default, which LIME uses).
pub const LIME_RIDGE: f64 = 1.0;

pub(super) fn lime(
    game: &mut dyn Game,
    samples: usize,
    seed: u64,
) -> Result<Estimate, AttributionError> {
    if samples < 4 {
        return Err(AttributionError::BadBudget(
            "LIME needs at least 4 samples".into(),
        ));
    }
    let (n, dims) = (game.players(), game.dims());
    let (full, empty) = full_and_empty(game)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut coalitions = vec![Coalition::full(n)];
    coalitions.extend(
        (1..samples).map(|_| Coalition::from_members(n, (0..n).filter(|_| rng.r#gen::<bool>()))),
    );
    let values = game.values(&coalitions)?;
    // Cosine similarity of a 0/1 mask with k ones to the all-ones vector is sqrt(k / n).
    let weights: Vec<f64> = coalitions
        .iter()
        .map(|c| {
            let distance = 1.0 - (c.len() as f64 / n as f64).sqrt();
            (-(distance * distance) / (LIME_KERNEL_WIDTH * LIME_KERNEL_WIDTH)).exp()
        })
        .collect();
    // Centring by the weighted means leaves the intercept unpenalised.
    let total_w: f64 = weights.iter().sum();
    let z: Vec<Vec<f64>> = coalitions
        .iter()
        .map(|c| (0..n).map(|i| f64::from(u8::from(c.contains(i)))).collect())
        .collect();
    let z_mean: Vec<f64> = (0..n)
        .map(|i| z.iter().zip(&weights).map(|(r, w)| r[i] * w).sum::<f64>() / total_w)
        .collect();
    let zc: Vec<Vec<f64>> = z
        .iter()
        .map(|r| r.iter().zip(&z_mean).map(|(a, m)| a - m).collect())
        .collect();
    let mut scores = zeros(dims, n);
    let mut r2 = Vec::with_capacity(dims);
    for d in 0..dims {
        let y: Vec<f64> = values.iter().map(|v| v[d]).collect();
        let y_mean = y.iter().zip(&weights).map(|(a, w)| a * w).sum::<f64>() / total_w;
        let yc: Vec<f64> = y.iter().map(|a| a - y_mean).collect();
        let beta = weighted_least_squares(&zc, &yc, &weights, LIME_RIDGE)
            .ok_or_else(|| AttributionError::BadBudget("LIME's regression is singular".into()))?;
        let (mut ss_res, mut ss_tot) = (0.0, 0.0);
        for ((row, &t), &w) in zc.iter().zip(&yc).zip(&weights) {
            let fit: f64 = row.iter().zip(&beta).map(|(a, b)| a * b).sum();
            ss_res += w * (t - fit) * (t - fit);
            ss_tot += w * t * t;
        }
        r2.push(if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            1.0
        });
        scores[d] = beta;
    }
    Ok(Estimate {
        scores,
        std_errors: None,
        value_full: full,
        value_empty: empty,
        params: json!({}),
        diagnostics: json!({ "weighted_r2": r2 }),
    })
}
