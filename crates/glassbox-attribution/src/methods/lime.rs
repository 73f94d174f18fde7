//! LIME (Ribeiro et al., 2016) on a game: a weighted ridge regression of the value on which
//! units each random coalition keeps.
//!
//! Coalitions keep each unit with probability ½ (Bernoulli masks, as Captum's LIME draws
//! them); the full coalition is always included. Each is weighted by an exponential kernel on
//! its cosine distance to the full input, `exp(-d² / width²)`, so near-complete inputs count
//! most (the locality that distinguishes LIME from a global surrogate). The ridge penalty
//! (α = 1) is not applied to the intercept. The fit's weighted R² is reported, and standard
//! errors from refits on bootstrap resamples of the coalitions.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{BOOTSTRAP_RESAMPLES, Estimate, full_and_empty};
use crate::linalg::weighted_least_squares;
use crate::stats::std_dev;
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
    let z: Vec<Vec<f64>> = coalitions
        .iter()
        .map(|c| (0..n).map(|i| f64::from(u8::from(c.contains(i)))).collect())
        .collect();
    let rows: Vec<usize> = (0..coalitions.len()).collect();
    let (scores, r2) = fit(&z, &values, &weights, &rows, dims)?;
    // Standard errors: refits on samples drawn with replacement.
    let mut boot_rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut fits = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    for _ in 0..BOOTSTRAP_RESAMPLES {
        let drawn: Vec<usize> = (0..rows.len())
            .map(|_| boot_rng.gen_range(0..rows.len()))
            .collect();
        if let Ok((s, _)) = fit(&z, &values, &weights, &drawn, dims) {
            fits.push(s);
        }
    }
    let std_errors = (!fits.is_empty()).then(|| {
        (0..dims)
            .map(|d| {
                (0..n)
                    .map(|i| std_dev(&fits.iter().map(|f| f[d][i]).collect::<Vec<_>>()))
                    .collect()
            })
            .collect()
    });
    Ok(Estimate {
        scores,
        std_errors,
        value_full: full,
        value_empty: empty,
        params: json!({}),
        diagnostics: json!({ "weighted_r2": r2, "bootstrap_fits": fits.len() }),
    })
}

/// Ridge fits (one per target) on the sample rows `rows` (repeats allowed), and their weighted
/// R². Centring by the weighted means leaves the intercept unpenalised.
fn fit(
    z: &[Vec<f64>],
    values: &[Vec<f64>],
    weights: &[f64],
    rows: &[usize],
    dims: usize,
) -> Result<(Vec<Vec<f64>>, Vec<f64>), AttributionError> {
    let n = z[0].len();
    let w: Vec<f64> = rows.iter().map(|&r| weights[r]).collect();
    let total_w: f64 = w.iter().sum();
    let z_mean: Vec<f64> = (0..n)
        .map(|i| rows.iter().zip(&w).map(|(&r, w)| z[r][i] * w).sum::<f64>() / total_w)
        .collect();
    let zc: Vec<Vec<f64>> = rows
        .iter()
        .map(|&r| z[r].iter().zip(&z_mean).map(|(a, m)| a - m).collect())
        .collect();
    let mut scores = Vec::with_capacity(dims);
    let mut r2 = Vec::with_capacity(dims);
    for y in (0..dims).map(|d| rows.iter().map(|&r| values[r][d]).collect::<Vec<f64>>()) {
        let y_mean = y.iter().zip(&w).map(|(a, w)| a * w).sum::<f64>() / total_w;
        let yc: Vec<f64> = y.iter().map(|a| a - y_mean).collect();
        let beta = weighted_least_squares(&zc, &yc, &w, LIME_RIDGE)
            .ok_or_else(|| AttributionError::BadBudget("LIME's regression is singular".into()))?;
        let (mut ss_res, mut ss_tot) = (0.0, 0.0);
        for ((row, &t), &wk) in zc.iter().zip(&yc).zip(&w) {
            let fit: f64 = row.iter().zip(&beta).map(|(a, b)| a * b).sum();
            ss_res += wk * (t - fit) * (t - fit);
            ss_tot += wk * t * t;
        }
        r2.push(if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            1.0
        });
        scores.push(beta);
    }
    Ok((scores, r2))
}
