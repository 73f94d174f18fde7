//! Sensitivity of an explainer to small input changes (Yeh et al. 2019, "On the (In)fidelity
//! and Sensitivity of Explanations"; METRICS.md §8): an explanation that changes a lot when
//! the input barely does is not explaining the model. Model-free here: the caller decides what
//! a perturbed input is (a synonym swap, noise on embeddings) and re-explains it.

use crate::EvalError;
use crate::input::check_scores;

/// Relative max-sensitivity: max_j ||s(x) − s(x_j)|| / ||s(x)|| (Euclidean norms) over the
/// re-explanations `explain(j)` of perturbed inputs x_j, j = 0..`samples`, with `base` = s(x).
/// Relative to ||s(x)|| so that explainers on different scales compare. The caller's error
/// type absorbs [`EvalError`] (mismatched lengths, an all-zero base, no samples), so both kinds
/// come back through one `?`.
pub fn sensitivity_max<E: From<EvalError>>(
    mut explain: impl FnMut(usize) -> Result<Vec<f64>, E>,
    base: &[f64],
    samples: usize,
) -> Result<f64, E> {
    check_scores("base explanation", base)?;
    if samples == 0 {
        return Err(EvalError::ZeroSamples {
            what: "sensitivity_max",
        }
        .into());
    }
    let norm = base.iter().map(|s| s * s).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Err(EvalError::ZeroNorm.into());
    }
    let mut worst: f64 = 0.0;
    for j in 0..samples {
        let perturbed = explain(j)?;
        if perturbed.len() != base.len() {
            return Err(EvalError::LengthMismatch {
                what: "sensitivity_max: base and perturbed explanation",
                left: base.len(),
                right: perturbed.len(),
            }
            .into());
        }
        check_scores("perturbed explanation", &perturbed)?;
        let change = base
            .iter()
            .zip(&perturbed)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        worst = worst.max(change / norm);
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::close;

    #[test]
    fn largest_relative_change_by_hand() {
        // ||base|| = ||(3, 4)|| = 5. Changes: (0, 0) → 0; (0, 3) → 3/5; (3, 0) → 3/5;
        // (−3, −4) → 5/5 = 1.
        let perturbed = [[3.0, 4.0], [3.0, 1.0], [0.0, 4.0], [6.0, 8.0]];
        let s = sensitivity_max::<EvalError>(|j| Ok(perturbed[j].to_vec()), &[3.0, 4.0], 4);
        assert!(close(s.unwrap(), 1.0));
        let s = sensitivity_max::<EvalError>(|j| Ok(perturbed[j].to_vec()), &[3.0, 4.0], 3);
        assert!(close(s.unwrap(), 0.6));
    }

    #[test]
    fn errors_pass_through() {
        let failing = sensitivity_max(|_| Err(EvalError::ZeroNorm), &[1.0], 2);
        assert_eq!(failing, Err(EvalError::ZeroNorm));
        let ok = |_: usize| Ok::<_, EvalError>(vec![1.0]);
        assert_eq!(sensitivity_max(ok, &[0.0], 2), Err(EvalError::ZeroNorm));
        assert!(matches!(
            sensitivity_max(ok, &[1.0], 0),
            Err(EvalError::ZeroSamples { .. })
        ));
        assert!(matches!(
            sensitivity_max(|_| Ok(vec![1.0, 2.0]), &[1.0], 1),
            Err(EvalError::LengthMismatch { .. })
        ));
        assert!(matches!(
            sensitivity_max(ok, &[], 1),
            Err(EvalError::Empty { .. })
        ));
    }
}
