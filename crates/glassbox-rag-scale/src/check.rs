//! `--check K`: the estimate measured against exact leave-one-out on the target model for its
//! K top passages, at the price of K + 1 exact evaluations (full prompt, and each of them
//! left out), run by the exact engine.

use std::time::Instant;

use glassbox_attribution::cite::{CiteRequest, CiteTarget, Prepared};
use glassbox_attribution::{AnswerGame, AttributionError, Coalition, Engine, Game};
use glassbox_report::FidelityCheck;
use glassbox_runtime::Model;

use crate::fidelity::{ranking, spearman_or_none};

/// Exact leave-one-out of the `k` passages `estimate` ranks highest, next to the estimate.
pub fn check(
    target: &Model,
    request: &CiteRequest,
    prepared: &Prepared,
    estimate: &[f64],
    k: usize,
) -> Result<FidelityCheck, AttributionError> {
    let CiteTarget::LogProb(aggregate) = request.target else {
        return Err(AttributionError::BadInput(
            "the check measures the answer's log-probability".into(),
        ));
    };
    let n = estimate.len();
    if k == 0 || k > n {
        return Err(AttributionError::BadInput(format!(
            "cannot check {k} of {n} passages"
        )));
    }
    let started = Instant::now();
    let units: Vec<usize> = ranking(estimate).into_iter().take(k).collect();
    let mut engine = Engine::new(
        target,
        prepared.prompt.clone(),
        request.perturbation.clone(),
        prepared.answer.clone(),
    )?;
    let mut coalitions = vec![Coalition::full(n)];
    coalitions.extend(units.iter().map(|&u| Coalition::full(n).without(u)));
    let values = AnswerGame {
        engine: &mut engine,
        aggregate,
    }
    .values(&coalitions)?;
    let exact_loo: Vec<f64> = values[1..].iter().map(|v| values[0][0] - v[0]).collect();
    let picked: Vec<f64> = units.iter().map(|&u| estimate[u]).collect();
    let best = ranking(&exact_loo)[0];
    let stats = engine.stats();
    Ok(FidelityCheck {
        spearman: spearman_or_none(&picked, &exact_loo),
        top1_agrees: best == 0,
        units,
        estimate: picked,
        exact_loo,
        cost: stats.cost(started.elapsed().as_secs_f64()),
    })
}
