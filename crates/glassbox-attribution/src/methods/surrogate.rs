//! A ContextCite-style surrogate: random ablations, a sparse linear model of the value, and its
//! held-out fit.
//!
//! Each unit is kept with probability ½ in `samples` random coalitions; a Lasso regression of
//! the value on the keep/drop indicators gives one weight per unit. The weights are only as
//! good as the linear model, so its fit is measured on fresh random coalitions as the linear
//! datamodeling score (LDS: Spearman correlation of predicted and actual values).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{Estimate, SURROGATE_HOLDOUT, full_and_empty, zeros};
use crate::stats::{mean, spearman, std_dev};
use crate::{AttributionError, Coalition, Game};

/// Lasso strengths tried (× the standard deviation of the value), chosen by cross-validation.
const ALPHAS: &[f64] = &[0.0, 0.001, 0.003, 0.01, 0.03, 0.1];
const FOLDS: usize = 4;

fn random_coalitions(n: usize, count: usize, rng: &mut StdRng) -> Vec<Coalition> {
    (0..count)
        .map(|_| Coalition::from_members(n, (0..n).filter(|_| rng.r#gen::<bool>())))
        .collect()
}

pub(super) fn surrogate(
    game: &mut dyn Game,
    samples: usize,
    seed: u64,
) -> Result<Estimate, AttributionError> {
    if samples < 8 {
        return Err(AttributionError::BadBudget(
            "the surrogate needs at least 8 samples".into(),
        ));
    }
    let (n, dims) = (game.players(), game.dims());
    let mut rng = StdRng::seed_from_u64(seed);
    let train = random_coalitions(n, samples, &mut rng);
    let test = random_coalitions(n, SURROGATE_HOLDOUT, &mut rng);
    let mut all = train.clone();
    all.extend(test.iter().cloned());
    let values = game.values(&all)?;
    let (train_v, test_v) = values.split_at(train.len());
    let z = |cs: &[Coalition]| -> Vec<Vec<f64>> {
        cs.iter()
            .map(|c| (0..n).map(|i| c.contains(i) as u8 as f64).collect())
            .collect()
    };
    let (z_train, z_test) = (z(&train), z(&test));
    let mut scores = zeros(dims, n);
    let mut lds = Vec::with_capacity(dims);
    let mut alphas = Vec::with_capacity(dims);
    for d in 0..dims {
        let y: Vec<f64> = train_v.iter().map(|v| v[d]).collect();
        let alpha = cross_validated_alpha(&z_train, &y);
        let (intercept, w) = lasso(&z_train, &y, alpha);
        let predicted: Vec<f64> = z_test.iter().map(|row| intercept + dot(row, &w)).collect();
        let actual: Vec<f64> = test_v.iter().map(|v| v[d]).collect();
        lds.push(spearman(&predicted, &actual));
        alphas.push(alpha);
        scores[d] = w;
    }
    let (full, empty) = full_and_empty(game)?;
    Ok(Estimate {
        scores,
        std_errors: None,
        value_full: full,
        value_empty: empty,
        params: json!({}),
        diagnostics: json!({"lds": lds, "alpha": alphas, "holdout": SURROGATE_HOLDOUT}),
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The Lasso strength (absolute) with the lowest K-fold squared error.
fn cross_validated_alpha(z: &[Vec<f64>], y: &[f64]) -> f64 {
    let scale = std_dev(y).max(1e-12);
    let mut best = (f64::INFINITY, 0.0);
    for &a in ALPHAS {
        let alpha = a * scale;
        let mut err = 0.0;
        for fold in 0..FOLDS {
            let (mut zt, mut yt, mut zv, mut yv) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (k, (row, &v)) in z.iter().zip(y).enumerate() {
                if k % FOLDS == fold {
                    zv.push(row.clone());
                    yv.push(v);
                } else {
                    zt.push(row.clone());
                    yt.push(v);
                }
            }
            let (b, w) = lasso(&zt, &yt, alpha);
            err += zv
                .iter()
                .zip(&yv)
                .map(|(row, v)| (v - b - dot(row, &w)).powi(2))
                .sum::<f64>();
        }
        if err < best.0 {
            best = (err, alpha);
        }
    }
    best.1
}

/// Lasso by coordinate descent: minimises `1/(2m) Σ (y − b − z·w)² + α Σ |w|`; returns (b, w).
fn lasso(z: &[Vec<f64>], y: &[f64], alpha: f64) -> (f64, Vec<f64>) {
    let m = y.len() as f64;
    let p = z.first().map_or(0, |r| r.len());
    let col_means: Vec<f64> = (0..p)
        .map(|j| z.iter().map(|r| r[j]).sum::<f64>() / m)
        .collect();
    let y_mean = mean(y);
    let zc: Vec<Vec<f64>> = z
        .iter()
        .map(|r| r.iter().zip(&col_means).map(|(a, b)| a - b).collect())
        .collect();
    let norms: Vec<f64> = (0..p)
        .map(|j| zc.iter().map(|r| r[j] * r[j]).sum::<f64>() / m)
        .collect();
    let mut w = vec![0.0; p];
    let mut residual: Vec<f64> = y.iter().map(|v| v - y_mean).collect();
    for _ in 0..2000 {
        let mut change = 0f64;
        for j in 0..p {
            if norms[j] == 0.0 {
                continue;
            }
            let rho: f64 = zc
                .iter()
                .zip(&residual)
                .map(|(r, e)| r[j] * (e + r[j] * w[j]))
                .sum::<f64>()
                / m;
            let new = soft_threshold(rho, alpha) / norms[j];
            let delta = new - w[j];
            if delta != 0.0 {
                for (e, r) in residual.iter_mut().zip(&zc) {
                    *e -= delta * r[j];
                }
                w[j] = new;
                change = change.max(delta.abs());
            }
        }
        if change < 1e-10 {
            break;
        }
    }
    let intercept = y_mean - dot(&col_means, &w);
    (intercept, w)
}

fn soft_threshold(x: f64, t: f64) -> f64 {
    if x > t {
        x - t
    } else if x < -t {
        x + t
    } else {
        0.0
    }
}
