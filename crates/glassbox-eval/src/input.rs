//! Checked inputs. The metrics take plain score slices so they work on any explainer's output;
//! this is where those slices are validated, and the bridge from the saved [`Attribution`].

use glassbox_report::Attribution;

use crate::EvalError;

/// The scores of target `target` of a saved attribution (`scores[target][unit]`), after
/// checking the attribution's shapes, so that a hand-edited file is reported rather than
/// indexed out of bounds.
pub fn scores_of(attribution: &Attribution, target: usize) -> Result<&[f64], EvalError> {
    attribution.check_shape().map_err(EvalError::Shape)?;
    attribution
        .scores
        .get(target)
        .map(Vec::as_slice)
        .ok_or(EvalError::NoSuchTarget {
            target,
            targets: attribution.scores.len(),
        })
}

/// Rejects empty and non-finite score vectors, which no ranking or mean survives.
pub(crate) fn check_scores(what: &'static str, scores: &[f64]) -> Result<(), EvalError> {
    if scores.is_empty() {
        return Err(EvalError::Empty { what });
    }
    match scores.iter().position(|s| !s.is_finite()) {
        Some(index) => Err(EvalError::NonFinite {
            what,
            index,
            value: scores[index],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use glassbox_report::{ATTRIBUTION_SCHEMA, Cost, MethodInfo, Target, Unit};

    use super::*;

    fn attribution(scores: Vec<Vec<f64>>) -> Attribution {
        let unit = |label: &str| Unit {
            label: label.into(),
            text: label.into(),
            level: "word".into(),
            span: None,
        };
        Attribution {
            schema: ATTRIBUTION_SCHEMA.into(),
            model: "test".into(),
            method: MethodInfo {
                name: "leave_one_out".into(),
                params: serde_json::Value::Null,
                seed: None,
            },
            perturbation: "delete".into(),
            units: vec![unit("a"), unit("b")],
            targets: vec![Target {
                label: "answer".into(),
                kind: "sum_logprob".into(),
                tokens: None,
            }],
            value_full: vec![0.0],
            value_empty: vec![0.0],
            scores,
            std_errors: None,
            cost: Cost::default(),
            diagnostics: serde_json::Value::Null,
        }
    }

    #[test]
    fn scores_of_checks_shape_and_target() {
        let good = attribution(vec![vec![0.5, -0.25]]);
        assert_eq!(scores_of(&good, 0).unwrap(), &[0.5, -0.25]);
        assert_eq!(
            scores_of(&good, 1),
            Err(EvalError::NoSuchTarget {
                target: 1,
                targets: 1
            })
        );
        let short = attribution(vec![vec![0.5]]);
        assert!(matches!(scores_of(&short, 0), Err(EvalError::Shape(_))));
    }

    #[test]
    fn empty_and_non_finite_scores_are_rejected() {
        assert_eq!(
            check_scores("scores", &[]),
            Err(EvalError::Empty { what: "scores" })
        );
        assert!(matches!(
            check_scores("scores", &[1.0, f64::NAN]),
            Err(EvalError::NonFinite { index: 1, .. })
        ));
        assert_eq!(check_scores("scores", &[0.0]), Ok(()));
    }
}
