//! Attribution methods over a [`Game`]: exact and sampled Shapley values, Banzhaf values,
//! leave-one-out and n-gram occlusion, KernelSHAP, LIME and a ContextCite-style sparse linear
//! surrogate.
//!
//! Methods are named and described in one registry ([`METHODS`]) so the CLI can list them and
//! report exactly what ran. Every sampled method takes a seed; the same seed gives the same
//! numbers (the engine's values are deterministic, and all randomness comes from the seed).

mod exact;
mod kernel;
mod lime;
mod sampling;
mod surrogate;

use serde_json::json;

use crate::{AttributionError, Coalition, Game};

/// Largest number of units exact enumeration accepts by default (2^14 coalitions).
pub const MAX_EXACT_UNITS: usize = 14;
/// Permutations of permutation sampling when not given: 32 (16 antithetic pairs), which on the
/// test cases ranks passages like exact Shapley (Spearman ≥ 0.95) at ~30% of its cost for 8
/// passages.
pub const DEFAULT_PERMUTATIONS: usize = 32;
/// Coalitions KernelSHAP samples when not given.
pub const DEFAULT_KERNEL_SAMPLES: usize = 128;
/// Random ablations of the surrogate, ContextCite's default.
pub const DEFAULT_SURROGATE_SAMPLES: usize = 64;
/// Held-out random coalitions on which the surrogate's fit (LDS) is measured.
pub const SURROGATE_HOLDOUT: usize = 32;
/// Coalitions of sampled Banzhaf (maximum sample reuse) when the exact one is too large.
pub const DEFAULT_BANZHAF_SAMPLES: usize = 256;
/// Random coalitions LIME fits when not given.
pub const DEFAULT_LIME_SAMPLES: usize = 256;
/// Bootstrap resamples behind the standard errors of regression-based estimates.
pub const BOOTSTRAP_RESAMPLES: usize = 200;

/// An attribution method and its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Shapley values from all 2^n coalitions.
    ExactShapley,
    /// Monte-Carlo Shapley over random permutations, antithetic (each with its reverse).
    PermutationShapley { permutations: usize },
    /// KernelSHAP: weighted regression on coalitions drawn from the Shapley kernel, paired
    /// with their complements, with the efficiency constraint.
    KernelShap { samples: usize },
    /// Banzhaf values: exact for small n, else sampled (maximum sample reuse).
    Banzhaf { samples: usize },
    /// Value with everything minus value without the unit.
    LeaveOneOut,
    /// Sliding-window occlusion: runs of `window` adjacent units removed, each unit scored by
    /// the mean change of the runs covering it; `multiscale` averages windows `1..=window`
    /// (the uni/bi/trigram scheme of X-MuTeST for `window = 3`).
    Occlusion { window: usize, multiscale: bool },
    /// LIME: Bernoulli masks, exponential kernel on cosine distance, ridge regression.
    Lime { samples: usize },
    /// Sparse linear surrogate fitted to random ablations (ContextCite).
    Surrogate { samples: usize },
}

/// Name and one-line description of every method (for `glassbox list methods`).
pub const METHODS: &[(&str, &str)] = &[
    (
        "exact",
        "exact Shapley values over all 2^n coalitions (n <= 14)",
    ),
    (
        "permutation",
        "Shapley values by antithetic permutation sampling, with standard errors",
    ),
    (
        "kernel",
        "KernelSHAP: paired Shapley-kernel sampling, efficiency-constrained regression",
    ),
    (
        "banzhaf",
        "Banzhaf values: exact for n <= 14, else maximum-sample-reuse sampling",
    ),
    (
        "loo",
        "leave-one-out occlusion (signed): value with all units minus value without the unit",
    ),
    (
        "ngram:N",
        "sliding-window occlusion: remove every run of N adjacent units; a unit scores the mean change of the runs covering it",
    ),
    (
        "xmutest",
        "uni-, bi- and trigram occlusion averaged (the X-MuTeST scheme)",
    ),
    (
        "lime",
        "LIME: Bernoulli masks, exponential kernel on cosine distance, ridge regression",
    ),
    (
        "surrogate",
        "ContextCite-style sparse linear surrogate on random ablations, with held-out fit (LDS)",
    ),
];

impl Method {
    /// The method called `name`, with `samples` as its budget where it has one.
    pub fn parse(name: &str, samples: Option<usize>) -> Result<Self, AttributionError> {
        Ok(match name {
            "exact" => Method::ExactShapley,
            "permutation" => Method::PermutationShapley {
                permutations: samples.unwrap_or(DEFAULT_PERMUTATIONS),
            },
            "kernel" => Method::KernelShap {
                samples: samples.unwrap_or(DEFAULT_KERNEL_SAMPLES),
            },
            "banzhaf" => Method::Banzhaf {
                samples: samples.unwrap_or(DEFAULT_BANZHAF_SAMPLES),
            },
            "loo" | "occlusion" => Method::LeaveOneOut,
            "xmutest" => Method::Occlusion {
                window: 3,
                multiscale: true,
            },
            "lime" => Method::Lime {
                samples: samples.unwrap_or(DEFAULT_LIME_SAMPLES),
            },
            ngram if ngram.starts_with("ngram:") => {
                let window = ngram["ngram:".len()..]
                    .parse::<usize>()
                    .ok()
                    .filter(|&w| w >= 1)
                    .ok_or_else(|| {
                        AttributionError::BadInput(format!(
                            "`{ngram}`: the window is a positive number, e.g. ngram:2"
                        ))
                    })?;
                Method::Occlusion {
                    window,
                    multiscale: false,
                }
            }
            "surrogate" => Method::Surrogate {
                samples: samples.unwrap_or(DEFAULT_SURROGATE_SAMPLES),
            },
            other => {
                return Err(AttributionError::UnknownMethod {
                    name: other.to_string(),
                    known: METHODS.iter().map(|m| m.0).collect::<Vec<_>>().join(", "),
                });
            }
        })
    }

    /// Stable name, as in results.
    pub fn name(&self) -> &'static str {
        match self {
            Method::ExactShapley => "exact_shapley",
            Method::PermutationShapley { .. } => "permutation_shapley",
            Method::KernelShap { .. } => "kernel_shap",
            Method::Banzhaf { .. } => "banzhaf",
            Method::LeaveOneOut => "leave_one_out",
            Method::Occlusion {
                multiscale: false, ..
            } => "ngram_occlusion",
            Method::Occlusion {
                multiscale: true, ..
            } => "multiscale_occlusion",
            Method::Lime { .. } => "lime",
            Method::Surrogate { .. } => "surrogate",
        }
    }

    /// Whether the method draws random coalitions (and so uses a seed).
    pub fn is_sampled(&self) -> bool {
        !matches!(
            self,
            Method::ExactShapley | Method::LeaveOneOut | Method::Occlusion { .. }
        )
    }

    fn params(&self) -> serde_json::Value {
        match *self {
            Method::ExactShapley | Method::LeaveOneOut => json!({}),
            Method::PermutationShapley { permutations } => {
                json!({"permutations": permutations, "antithetic": true})
            }
            Method::KernelShap { samples } => {
                json!({"samples": samples, "paired": true, "bootstrap": BOOTSTRAP_RESAMPLES})
            }
            Method::Banzhaf { samples } => {
                json!({"samples_if_sampled": samples, "max_exact_units": MAX_EXACT_UNITS})
            }
            Method::Surrogate { samples } => {
                json!({"samples": samples, "holdout": SURROGATE_HOLDOUT, "keep_probability": 0.5})
            }
            Method::Occlusion { window, multiscale } => {
                json!({"window": window, "multiscale": multiscale, "signed": true})
            }
            Method::Lime { samples } => json!({
                "samples": samples,
                "bootstrap": BOOTSTRAP_RESAMPLES,
                "keep_probability": 0.5,
                "kernel": "exponential on cosine distance",
                "kernel_width": lime::LIME_KERNEL_WIDTH,
                "ridge": lime::LIME_RIDGE,
            }),
        }
    }
}

/// What a method estimated.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// `scores[d][i]`: attribution of unit `i` for target `d`.
    pub scores: Vec<Vec<f64>>,
    pub std_errors: Option<Vec<Vec<f64>>>,
    pub value_full: Vec<f64>,
    pub value_empty: Vec<f64>,
    pub params: serde_json::Value,
    pub diagnostics: serde_json::Value,
}

/// Runs `method` on `game`; sampled methods draw from `seed`.
pub fn estimate(
    method: Method,
    game: &mut dyn Game,
    seed: u64,
) -> Result<Estimate, AttributionError> {
    let n = game.players();
    if n == 0 {
        return Err(AttributionError::NoUnits);
    }
    let mut estimate = match method {
        Method::ExactShapley => exact::shapley(game)?,
        Method::LeaveOneOut => exact::leave_one_out(game)?,
        Method::Banzhaf { samples } => {
            if n <= MAX_EXACT_UNITS {
                exact::banzhaf(game)?
            } else {
                sampling::banzhaf(game, samples, seed)?
            }
        }
        Method::PermutationShapley { permutations } => {
            sampling::permutation(game, permutations, seed)?
        }
        Method::KernelShap { samples } => kernel::kernel_shap(game, samples, seed)?,
        Method::Surrogate { samples } => surrogate::surrogate(game, samples, seed)?,
        Method::Occlusion { window, multiscale } => {
            let sizes: Vec<usize> = if multiscale {
                (1..=window).collect()
            } else {
                vec![window]
            };
            exact::occlusion(game, &sizes)?
        }
        Method::Lime { samples } => lime::lime(game, samples, seed)?,
    };
    estimate.params = method.params();
    Ok(estimate)
}

/// Values of the full and the empty coalition (every method reports them).
fn full_and_empty(game: &mut dyn Game) -> Result<(Vec<f64>, Vec<f64>), AttributionError> {
    let n = game.players();
    let mut v = game.values(&[Coalition::full(n), Coalition::empty(n)])?;
    let empty = v.pop().expect("two values");
    let full = v.pop().expect("two values");
    Ok((full, empty))
}

/// `[dim][player]` zeros.
fn zeros(dims: usize, n: usize) -> Vec<Vec<f64>> {
    vec![vec![0.0; n]; dims]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FnGame;
    use crate::stats::spearman;

    /// A game with interactions: weights, a pairwise synergy and a threshold effect, in two
    /// dimensions (the second is a scaled copy plus noise-free offset).
    fn game(n: usize) -> FnGame<impl FnMut(&Coalition) -> Vec<f64>> {
        FnGame::new(n, 2, move |c: &Coalition| {
            let w: f64 = c
                .members()
                .map(|i| (i as f64 + 1.0) * if i % 3 == 0 { -0.5 } else { 1.0 })
                .sum();
            let synergy = if c.contains(0) && c.contains(1) {
                2.0
            } else {
                0.0
            };
            let threshold = if c.len() * 2 > n { 1.5 } else { 0.0 };
            let v = w + synergy + threshold;
            vec![v, 3.0 * v + 1.0]
        })
    }

    fn exact(n: usize) -> Estimate {
        estimate(Method::ExactShapley, &mut game(n), 0).unwrap()
    }

    /// `v(S) = Σ_{i ∈ S} w_i`: every method should recover `w` (up to its shrinkage).
    fn additive(w: Vec<f64>) -> FnGame<impl FnMut(&Coalition) -> Vec<f64>> {
        FnGame::new(w.len(), 1, move |c: &Coalition| {
            vec![c.members().map(|i| w[i]).sum()]
        })
    }

    #[test]
    fn ngram_occlusion_averages_the_runs_covering_each_unit() {
        let w = vec![1.0, -2.0, 4.0, 0.5];
        let one = estimate(
            Method::parse("ngram:1", None).unwrap(),
            &mut additive(w.clone()),
            0,
        )
        .unwrap();
        let loo = estimate(Method::LeaveOneOut, &mut additive(w.clone()), 0).unwrap();
        assert_eq!(one.scores, loo.scores);
        assert_eq!(loo.scores[0], w, "signed, exact on an additive game");
        let two = estimate(
            Method::parse("ngram:2", None).unwrap(),
            &mut additive(w.clone()),
            0,
        )
        .unwrap();
        // Runs {0,1}=-1, {1,2}=2, {2,3}=4.5: unit 1 is covered by the first two.
        assert_eq!(two.scores[0], vec![-1.0, 0.5, 3.25, 4.5]);
        let multi = estimate(Method::parse("xmutest", None).unwrap(), &mut additive(w), 0).unwrap();
        assert_eq!(multi.params["multiscale"], true);
        assert!(Method::parse("ngram:0", None).is_err());
    }

    #[test]
    fn lime_recovers_an_additive_game_and_repeats_with_its_seed() {
        let w = vec![1.0, -2.0, 4.0, 0.5, 0.0, 3.0];
        let lime = |seed| {
            estimate(
                Method::Lime { samples: 200 },
                &mut additive(w.clone()),
                seed,
            )
            .unwrap()
        };
        let a = lime(1);
        for (got, want) in a.scores[0].iter().zip(&w) {
            // The ridge penalty shrinks weights a little; the fit is otherwise exact.
            assert!(
                (got - want).abs() < 0.1 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
        assert!(a.diagnostics["weighted_r2"][0].as_f64().unwrap() > 0.99);
        // A noise-free additive game leaves nothing for the bootstrap to vary but the ridge
        // shrinkage: small standard errors, one per unit.
        let se = a.std_errors.as_ref().unwrap();
        assert_eq!(se[0].len(), w.len());
        assert!(
            se[0]
                .iter()
                .all(|&e| e.is_finite() && (0.0..0.2).contains(&e)),
            "{se:?}"
        );
        assert_eq!(a.scores, lime(1).scores);
        assert_ne!(a.scores, lime(2).scores);
    }

    #[test]
    fn exact_shapley_satisfies_the_axioms() {
        let n = 6;
        let e = exact(n);
        // Efficiency.
        for d in 0..2 {
            let total: f64 = e.scores[d].iter().sum();
            assert!((total - (e.value_full[d] - e.value_empty[d])).abs() < 1e-9);
        }
        // Linearity across dimensions: the second is 3× the first.
        for i in 0..n {
            assert!((e.scores[1][i] - 3.0 * e.scores[0][i]).abs() < 1e-9);
        }
        // Symmetry: units 1 and 2 would be symmetric without their weights; test a game with
        // truly symmetric players and a null player.
        let mut sym = FnGame::new(4, 1, |c: &Coalition| {
            let a = c.contains(0) as i32 as f64;
            let b = c.contains(1) as i32 as f64;
            vec![a * b * 4.0 + (a + b) + c.contains(2) as i32 as f64 * 0.5]
        });
        let e = estimate(Method::ExactShapley, &mut sym, 0).unwrap();
        assert!(
            (e.scores[0][0] - e.scores[0][1]).abs() < 1e-12,
            "symmetric players"
        );
        assert!(
            (e.scores[0][0] - 3.0).abs() < 1e-12,
            "1 + half of the synergy 4"
        );
        assert!((e.scores[0][2] - 0.5).abs() < 1e-12);
        assert_eq!(e.scores[0][3], 0.0, "null player");
    }

    #[test]
    fn exact_limits_and_bad_names() {
        let mut big = FnGame::new(MAX_EXACT_UNITS + 1, 1, |_: &Coalition| vec![0.0]);
        let err = estimate(Method::ExactShapley, &mut big, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("permutation") || err.contains("sampled"),
            "{err}"
        );
        assert!(
            Method::parse("magic", None)
                .unwrap_err()
                .to_string()
                .contains("exact, permutation")
        );
        let mut none = FnGame::new(0, 1, |_: &Coalition| vec![0.0]);
        assert!(estimate(Method::LeaveOneOut, &mut none, 0).is_err());
    }

    #[test]
    fn leave_one_out_and_banzhaf_on_an_additive_game_equal_the_weights() {
        let w = [1.0, -2.0, 0.5, 4.0];
        let mut additive = FnGame::new(4, 1, move |c: &Coalition| {
            vec![c.members().map(|i| w[i]).sum()]
        });
        for method in [
            Method::LeaveOneOut,
            Method::Banzhaf { samples: 0 },
            Method::ExactShapley,
        ] {
            let e = estimate(method, &mut additive, 0).unwrap();
            for (s, w) in e.scores[0].iter().zip(&w) {
                assert!((s - w).abs() < 1e-12, "{method:?}");
            }
        }
    }

    /// Sampled estimators approach exact Shapley, and their standard errors mean something:
    /// across seeds, |estimate - exact| stays within 2 SE about 95% of the time.
    #[test]
    fn sampled_estimators_converge_and_their_errors_cover_the_truth() {
        let n = 8;
        let truth = exact(n);
        for method in [
            Method::PermutationShapley { permutations: 200 },
            Method::KernelShap { samples: 400 },
        ] {
            let e = estimate(method, &mut game(n), 1).unwrap();
            let rho = spearman(&e.scores[0], &truth.scores[0]);
            assert!(rho > 0.95, "{method:?}: spearman {rho}");
            let total: f64 = e.scores[0].iter().sum();
            assert!(
                (total - (truth.value_full[0] - truth.value_empty[0])).abs() < 1e-6,
                "{method:?} is efficient"
            );
            let mut covered = 0;
            let mut count = 0;
            for seed in 0..40 {
                let small = match method {
                    Method::PermutationShapley { .. } => {
                        Method::PermutationShapley { permutations: 16 }
                    }
                    _ => Method::KernelShap { samples: 64 },
                };
                let e = estimate(small, &mut game(n), seed).unwrap();
                let se = e.std_errors.as_ref().unwrap();
                for ((s, t), se) in e.scores[0].iter().zip(&truth.scores[0]).zip(&se[0]) {
                    count += 1;
                    if (s - t).abs() <= 2.0 * se + 1e-12 {
                        covered += 1;
                    }
                }
            }
            let rate = covered as f64 / count as f64;
            println!("{method:?}: 2-SE coverage {rate:.3}");
            // Nominal 95%; small samples (8 pairs) estimate their SE a little low.
            assert!(
                rate > 0.85 && rate < 0.99,
                "{method:?}: 2-SE coverage {rate}"
            );
        }
    }

    #[test]
    fn sampled_methods_are_deterministic_per_seed() {
        for method in [
            Method::PermutationShapley { permutations: 8 },
            Method::KernelShap { samples: 32 },
            Method::Surrogate { samples: 32 },
            Method::Banzhaf { samples: 64 },
        ] {
            let a = estimate(method, &mut game(6), 9).unwrap();
            let b = estimate(method, &mut game(6), 9).unwrap();
            assert_eq!(a, b, "{method:?}");
        }
        let a = estimate(
            Method::PermutationShapley { permutations: 8 },
            &mut game(6),
            1,
        )
        .unwrap();
        let b = estimate(
            Method::PermutationShapley { permutations: 8 },
            &mut game(6),
            2,
        )
        .unwrap();
        assert_ne!(a.scores, b.scores);
    }

    #[test]
    fn sampled_banzhaf_and_surrogate_on_additive_games() {
        let w: Vec<f64> = (0..20).map(|i| (i as f64 - 8.0) * 0.3).collect();
        let wc = w.clone();
        let mut additive = FnGame::new(20, 1, move |c: &Coalition| {
            vec![c.members().map(|i| wc[i]).sum::<f64>() + 2.0]
        });
        let b = estimate(Method::Banzhaf { samples: 512 }, &mut additive, 3).unwrap();
        let s = estimate(Method::Surrogate { samples: 64 }, &mut additive, 3).unwrap();
        // An additive game is linear: the surrogate fits it (LDS 1) and recovers the weights.
        assert!(s.diagnostics["lds"][0].as_f64().unwrap() > 0.99);
        for (i, w) in w.iter().enumerate() {
            assert!((s.scores[0][i] - w).abs() < 0.05, "surrogate {i}");
            let se = b.std_errors.as_ref().unwrap()[0][i];
            assert!((b.scores[0][i] - w).abs() < 4.0 * se + 1e-9, "banzhaf {i}");
        }
    }
}
