//! Methods computed from complete enumerations: exact Shapley and Banzhaf values, and
//! leave-one-out.

use serde_json::json;

use super::{Estimate, MAX_EXACT_UNITS, full_and_empty, zeros};
use crate::{AttributionError, Coalition, Game};

/// Values of all 2^n coalitions, indexed by bitmask.
fn all_values(game: &mut dyn Game) -> Result<Vec<Vec<f64>>, AttributionError> {
    let n = game.players();
    if n > MAX_EXACT_UNITS {
        return Err(AttributionError::TooManyForExact {
            units: n,
            max: MAX_EXACT_UNITS,
        });
    }
    let coalitions: Vec<Coalition> = (0..1u64 << n).map(|m| Coalition::from_mask(n, m)).collect();
    game.values(&coalitions)
}

fn estimate_from(values: &[Vec<f64>], scores: Vec<Vec<f64>>) -> Estimate {
    let full = values[values.len() - 1].clone();
    let empty = values[0].clone();
    Estimate {
        scores,
        std_errors: None,
        value_full: full,
        value_empty: empty,
        params: json!({}),
        diagnostics: serde_json::Value::Null,
    }
}

/// `φ_i = Σ_{S ∌ i} |S|! (n-|S|-1)! / n! · (v(S ∪ i) - v(S))`.
pub(super) fn shapley(game: &mut dyn Game) -> Result<Estimate, AttributionError> {
    let (n, dims) = (game.players(), game.dims());
    let v = all_values(game)?;
    // weight[s] = s! (n-s-1)! / n!, built as 1 / (n · C(n-1, s)).
    let weight: Vec<f64> = (0..n)
        .map(|s| {
            let mut c = 1.0f64;
            for k in 0..s {
                c = c * (n - 1 - k) as f64 / (k + 1) as f64;
            }
            1.0 / (n as f64 * c)
        })
        .collect();
    let mut scores = zeros(dims, n);
    for mask in 0..1usize << n {
        let size = mask.count_ones() as usize;
        for i in 0..n {
            if mask >> i & 1 == 0 {
                let w = weight[size];
                let with = &v[mask | 1 << i];
                for d in 0..dims {
                    scores[d][i] += w * (with[d] - v[mask][d]);
                }
            }
        }
    }
    Ok(estimate_from(&v, scores))
}

/// `β_i = 2^{-(n-1)} Σ_{S ∌ i} (v(S ∪ i) - v(S))`.
pub(super) fn banzhaf(game: &mut dyn Game) -> Result<Estimate, AttributionError> {
    let (n, dims) = (game.players(), game.dims());
    let v = all_values(game)?;
    let w = 1.0 / (1u64 << (n - 1)) as f64;
    let mut scores = zeros(dims, n);
    for mask in 0..1usize << n {
        for i in 0..n {
            if mask >> i & 1 == 0 {
                for d in 0..dims {
                    scores[d][i] += w * (v[mask | 1 << i][d] - v[mask][d]);
                }
            }
        }
    }
    Ok(estimate_from(&v, scores))
}

/// `v(N) - v(N \ i)`: n + 2 evaluations.
pub(super) fn leave_one_out(game: &mut dyn Game) -> Result<Estimate, AttributionError> {
    occlusion(game, &[1])
}

/// Sliding-window occlusion: for each window size `w` in `sizes`, every run of `w` adjacent
/// units is removed (`Δ = v(N) - v(N \ run)`, sign kept) and a unit scores the mean `Δ` of the
/// runs covering it; scores are averaged over the sizes. Size 1 alone is leave-one-out.
pub(super) fn occlusion(
    game: &mut dyn Game,
    sizes: &[usize],
) -> Result<Estimate, AttributionError> {
    let (n, dims) = (game.players(), game.dims());
    let (full, empty) = full_and_empty(game)?;
    let all = Coalition::full(n);
    let mut scores = zeros(dims, n);
    for &w in sizes {
        let w = w.clamp(1, n);
        let runs: Vec<Coalition> = (0..=n - w)
            .map(|start| (start..start + w).fold(all.clone(), |c, i| c.without(i)))
            .collect();
        let values = game.values(&runs)?;
        for (d, row) in scores.iter_mut().enumerate() {
            for (i, score) in row.iter_mut().enumerate() {
                let covering = i.saturating_sub(w - 1)..=i.min(n - w);
                let count = covering.clone().count() as f64;
                let mean_delta: f64 = covering
                    .map(|start| full[d] - values[start][d])
                    .sum::<f64>()
                    / count;
                *score += mean_delta / sizes.len() as f64;
            }
        }
    }
    Ok(Estimate {
        scores,
        std_errors: None,
        value_full: full,
        value_empty: empty,
        params: json!({}),
        diagnostics: serde_json::Value::Null,
    })
}
