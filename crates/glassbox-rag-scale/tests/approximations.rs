//! Each approximation against the exact computation where it must equal it, on the default
//! model: position-independent caches with one passage, in-context caches for the full
//! prompt, hierarchy with groups of one, a proxy that is the target, refinements on caches
//! that recompute everything after a gap; and bad input, and determinism by seed.

#[path = "../../glassbox-attribution/tests/common/mod.rs"]
mod common;

use std::num::NonZeroUsize;

use common::model;
use glassbox_attribution::cite::{
    CiteRequest, CiteTarget, DEFAULT_TEMPLATE, RagTemplate, cite, prepare,
};
use glassbox_attribution::{
    Aggregate, AnswerGame, Coalition, Engine, Game, Method, Perturbation, TokenSegment,
};
use glassbox_rag_scale::{
    ExpandRule, FusedGame, Hierarchy, OnePass, PassageEncoding, ScaleOptions, Strategy,
    cite_at_scale,
};
use glassbox_runtime::{Capture, LogitsAt, Row};

fn request(passages: &[&str], method: Method) -> CiteRequest {
    CiteRequest {
        question: "Who rebuilt the Vellmora lighthouse?".into(),
        passages: passages.iter().map(|p| p.to_string()).collect(),
        answer: Some("The lighthouse was rebuilt by Ottilie Brask.".into()),
        system: None,
        template: RagTemplate::parse(DEFAULT_TEMPLATE).unwrap(),
        method,
        perturbation: Perturbation::Delete,
        target: CiteTarget::LogProb(Aggregate::Sum),
        seed: 0,
        refine_passages: 0,
        refine_words: false,
    }
}

const PASSAGES: [&str; 6] = [
    "The Vellmora lighthouse stands on the northern cape of Saltreach Island.",
    "Ferries to Saltreach leave twice a day from Port Anvell.",
    "The lighthouse was rebuilt in 1874 by the engineer Ottilie Brask after a storm.",
    "A second lighthouse, at Corran Point, was built in 1902 by Edwin Marr.",
    "The keeper's cottage now houses a small museum of shipwrecks.",
    "Its lamp was converted to electricity in 1931.",
];

/// The exact engine of a request's prompt.
fn engine(r: &CiteRequest) -> Engine<'static> {
    let p = prepare(model(), r).unwrap();
    Engine::new(model(), p.prompt, Perturbation::Delete, p.answer).unwrap()
}

fn values(game: &mut dyn Game, coalitions: &[Coalition]) -> Vec<Vec<f64>> {
    game.values(coalitions).unwrap()
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// The full coalition, the empty one, and every leave-one-out.
fn full_empty_and_leave_one_out(n: usize) -> Vec<Coalition> {
    let mut coalitions = vec![Coalition::full(n), Coalition::empty(n)];
    coalitions.extend((0..n).map(|i| Coalition::full(n).without(i)));
    coalitions
}

/// The coalitions' values on the exact engine.
fn exact_values(r: &CiteRequest, coalitions: &[Coalition]) -> Vec<Vec<f64>> {
    let mut exact_engine = engine(r);
    let mut exact = AnswerGame {
        engine: &mut exact_engine,
        aggregate: Aggregate::Sum,
    };
    values(&mut exact, coalitions)
}

fn options(strategy: Strategy) -> ScaleOptions<'static> {
    ScaleOptions {
        strategy,
        hierarchy: None,
        proxy: None,
        check: 0,
    }
}

#[test]
fn position_independent_caches_are_exact_with_one_passage() {
    let r = request(&PASSAGES[2..3], Method::LeaveOneOut);
    let mut exact_engine = engine(&r);
    let coalitions = [Coalition::full(1), Coalition::empty(1)];
    let mut exact = AnswerGame {
        engine: &mut exact_engine,
        aggregate: Aggregate::Sum,
    };
    let want = values(&mut exact, &coalitions);
    let mut fused =
        FusedGame::new(&engine(&r), PassageEncoding::Independent, Aggregate::Sum).unwrap();
    let got = values(&mut fused, &coalitions);
    assert!(max_diff(&got, &want) < 1e-3, "{got:?} vs {want:?}");
    // The passage matters, so agreeing is not vacuous.
    assert!((want[0][0] - want[1][0]).abs() > 0.5);
}

#[test]
fn in_context_caches_are_exact_for_the_full_prompt_and_approximate_elsewhere() {
    let r = request(&PASSAGES, Method::LeaveOneOut);
    let n = PASSAGES.len();
    let coalitions = full_empty_and_leave_one_out(n);
    let want = exact_values(&r, &coalitions);
    for encoding in [
        PassageEncoding::InContext { refresh: 0 },
        PassageEncoding::Independent,
    ] {
        let mut fused = FusedGame::new(&engine(&r), encoding, Aggregate::Sum).unwrap();
        let got = values(&mut fused, &coalitions);
        // The empty coalition is the header and the tail, exact either way.
        assert!(
            max_diff(&got[1..2], &want[1..2]) < 1e-3,
            "{encoding:?} empty"
        );
        if matches!(encoding, PassageEncoding::InContext { .. }) {
            assert!(max_diff(&got[..1], &want[..1]) < 1e-3, "full prompt");
        }
        // Elsewhere an approximation: close to, not equal to, the exact values; and the
        // gold passage's removal still costs the most.
        let d = max_diff(&got, &want);
        assert!(d > 1e-3 && d < 10.0, "{encoding:?}: {d}");
        let loo: Vec<f64> = (0..n).map(|i| got[0][0] - got[2 + i][0]).collect();
        let best = (0..n).max_by(|&a, &b| loo[a].total_cmp(&loo[b])).unwrap();
        assert_eq!(best, 2, "{encoding:?}: {loo:?}");
        // Only tails ran per coalition.
        let s = fused.stats();
        assert!(s.tokens < s.tokens_from_scratch / 2, "{s:?}");
    }
}

#[test]
fn refreshing_everything_after_the_gap_is_exact_and_a_partial_refresh_is_counted() {
    let r = request(&PASSAGES, Method::LeaveOneOut);
    let n = PASSAGES.len();
    let mut coalitions = full_empty_and_leave_one_out(n);
    // Two gaps: the refresh starts at the first and runs through the second.
    coalitions.push(Coalition::full(n).without(1).without(4));
    let want = exact_values(&r, &coalitions);
    let fused = |refresh| {
        let mut game = FusedGame::new(
            &engine(&r),
            PassageEncoding::InContext { refresh },
            Aggregate::Sum,
        )
        .unwrap();
        let got = values(&mut game, &coalitions);
        (got, game.stats().tokens)
    };
    let (whole, _) = fused(100_000);
    assert!(max_diff(&whole, &want) < 1e-3, "{whole:?} vs {want:?}");
    let (cached, cached_tokens) = fused(0);
    let (partial, partial_tokens) = fused(8);
    // Every coalition but the full one has a gap; at most 8 tokens after it are recomputed,
    // and all 8 where a whole passage follows.
    let gaps = coalitions.len() - 1;
    let extra = partial_tokens - cached_tokens;
    assert!(
        extra >= 8 * (n - 1) && extra <= 8 * gaps,
        "{extra} for {gaps}"
    );
    assert!(
        max_diff(&partial, &cached) > 1e-4,
        "the refresh changes values"
    );
    assert!(max_diff(&partial, &want) > 1e-4, "and is still an estimate");
    assert!(max_diff(&partial[..1], &want[..1]) < 1e-3, "full prompt");
}

#[test]
fn coalitions_assembled_into_reused_buffers_equal_those_assembled_afresh() {
    // One call assembles every coalition into new buffers; one call per coalition assembles
    // each (after the first) into the buffers the one before gave back.
    let r = request(&PASSAGES, Method::LeaveOneOut);
    let mut coalitions = full_empty_and_leave_one_out(PASSAGES.len());
    coalitions.push(Coalition::full(PASSAGES.len()).without(1).without(4));
    for refresh in [0, 8] {
        let game = || {
            FusedGame::new(
                &engine(&r),
                PassageEncoding::InContext { refresh },
                Aggregate::Sum,
            )
            .unwrap()
        };
        let together = values(&mut game(), &coalitions);
        let mut one_by_one = game();
        let apart: Vec<Vec<f64>> = coalitions
            .iter()
            .flat_map(|c| values(&mut one_by_one, std::slice::from_ref(c)))
            .collect();
        assert_eq!(together, apart, "refresh {refresh}");
    }
}

#[test]
fn groups_of_one_and_a_proxy_that_is_the_target_are_exact_leave_one_out() {
    let r = request(&PASSAGES, Method::LeaveOneOut);
    let exact = cite(model(), &r).unwrap().attribution;
    let grouped = cite_at_scale(
        model(),
        &r,
        &ScaleOptions {
            hierarchy: Some(Hierarchy {
                group_size: NonZeroUsize::new(1).unwrap(),
                rule: ExpandRule::new(0.5, None).unwrap(),
            }),
            ..options(Strategy::Exact)
        },
    )
    .unwrap();
    let proxied = cite_at_scale(
        model(),
        &r,
        &ScaleOptions {
            proxy: Some(model()),
            ..options(Strategy::Exact)
        },
    )
    .unwrap();
    for report in [&grouped, &proxied] {
        let a = &report.attribution;
        for (x, y) in a.scores[0].iter().zip(&exact.scores[0]) {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
        assert!(report.approximation.is_some(), "says it is an estimate");
    }
    assert_eq!(
        proxied.approximation.as_ref().unwrap().steps[0].name,
        "proxy"
    );
    assert_eq!(
        proxied.attribution.targets.len(),
        1,
        "only the whole answer transfers"
    );
}

#[test]
fn groups_expand_where_the_answer_is_and_the_check_measures_against_exact() {
    let r = request(&PASSAGES, Method::LeaveOneOut);
    let exact = cite(model(), &r).unwrap().attribution;
    let report = cite_at_scale(
        model(),
        &r,
        &ScaleOptions {
            strategy: Strategy::Cached(PassageEncoding::InContext { refresh: 0 }),
            hierarchy: Some(Hierarchy {
                group_size: NonZeroUsize::new(3).unwrap(),
                rule: ExpandRule::new(0.5, Some(1)).unwrap(),
            }),
            proxy: None,
            check: 3,
        },
    )
    .unwrap();
    let a = &report.attribution;
    assert_eq!(a.ranking(0)[0], 2);
    assert_eq!(a.diagnostics["expanded_groups"], serde_json::json!([0]));
    let approx = report.approximation.as_ref().unwrap();
    let names: Vec<&str> = approx.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["hierarchical", "context_kv"]);
    let check = approx.check.as_ref().unwrap();
    assert_eq!(check.units.len(), 3);
    assert_eq!(check.units[0], 2);
    for (u, x) in check.units.iter().zip(&check.exact_loo) {
        assert!((x - exact.scores[0][*u]).abs() < 1e-3, "passage {u}: {x}");
    }
    assert!(check.top1_agrees);
}

#[test]
fn in_context_caches_shared_with_the_generation_give_the_same_answer_and_scores() {
    let mut r = request(&PASSAGES, Method::LeaveOneOut);
    r.answer = None;
    let context = options(Strategy::Cached(PassageEncoding::InContext { refresh: 0 }));
    let shared = cite_at_scale(model(), &r, &context).unwrap();
    let plain = prepare(model(), &r).unwrap();
    let ids: Vec<u32> = shared.answer_tokens.iter().map(|t| t.id).collect();
    assert_eq!(
        ids, plain.answer,
        "the same greedy answer from the shared cache"
    );
    let step = &shared.approximation.as_ref().unwrap().steps[0];
    assert_eq!(
        step.params["prompt_cache"],
        "shared with the answer's generation"
    );
    assert_eq!(step.params["cache_tokens"], 0);
    // The same scores as caching the prompt separately, for the same answer tokens.
    r.answer = Some(plain.answer_text.trim().to_string());
    let separate = cite_at_scale(model(), &r, &context).unwrap();
    assert_eq!(
        separate.answer_tokens, shared.answer_tokens,
        "re-encoding keeps the tokens"
    );
    let (a, b) = (
        &shared.attribution.scores[0],
        &separate.attribution.scores[0],
    );
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-3, "{x} vs {y}");
    }
    assert!(shared.attribution.cost.tokens < separate.attribution.cost.tokens);
}

/// Passages of several sentences, for refinements.
const STORIES: [&str; 4] = [
    "The Vellmora lighthouse stands on the northern cape of Saltreach Island. Its lamp was converted to electricity in 1931.",
    "Ferries to Saltreach leave twice a day from Port Anvell. The crossing takes an hour.",
    "A storm wrecked the lighthouse in 1871. It was rebuilt in 1874 by the engineer Ottilie Brask. The keeper's cottage now houses a museum.",
    "A second lighthouse, at Corran Point, was built in 1902 by Edwin Marr. Its first keeper was Ada Marr.",
];

#[test]
fn refinements_cut_the_passages_caches_and_are_exact_when_everything_after_a_gap_is_recomputed() {
    let mut r = request(&STORIES, Method::LeaveOneOut);
    r.refine_passages = 1;
    let exact = cite(model(), &r).unwrap();
    let want = &exact.refinements[0];
    assert_eq!(want.parent_unit, 2);
    assert_eq!(want.attribution.units.len(), 3);
    let at_scale = |strategy| cite_at_scale(model(), &r, &options(strategy)).unwrap();

    let whole = at_scale(Strategy::Cached(PassageEncoding::InContext {
        refresh: 100_000,
    }));
    let got = &whole.refinements[0];
    assert_eq!(got.parent_unit, 2);
    assert_eq!(got.attribution.units, want.attribution.units);
    let d = max_diff(&got.attribution.scores, &want.attribution.scores);
    assert!(
        d < 1e-3,
        "{:?} vs {:?}",
        got.attribution.scores,
        want.attribution.scores
    );

    // Without the refresh, an estimate on the same caches: the full prompt is still exact,
    // the sentence that holds the answer still counts most, and only tails ran.
    let cached = at_scale(Strategy::Cached(PassageEncoding::InContext { refresh: 0 }));
    let level = &cached.refinements[0].attribution;
    assert!((level.value_full[0] - want.attribution.value_full[0]).abs() < 1e-3);
    assert!(max_diff(&level.scores, &want.attribution.scores) > 1e-4);
    assert_eq!(level.ranking(0)[0], 1, "{:?}", level.scores);
    assert!(
        level.cost.tokens < level.cost.tokens_from_scratch / 2,
        "{:?}",
        level.cost
    );
    let steps = &cached.approximation.as_ref().unwrap().steps;
    assert!(steps.iter().any(|s| s.name == "refined"), "{steps:?}");

    // One-pass estimates refine their own top passage the same way, one pass per level.
    let how = OnePass::Attention { layers: 4 };
    let one_pass = at_scale(Strategy::OnePass(how));
    let refined = &one_pass.refinements[0];
    let top = one_pass.attribution.ranking(0)[0];
    assert_eq!(refined.parent_unit, top);
    let sentences = refined.attribution.units.iter().map(|u| u.text.as_str());
    assert_eq!(sentences.collect::<Vec<_>>().join(" "), STORIES[top]);
    assert_eq!(refined.attribution.cost.forward_passes, 1);
}

#[test]
fn a_refinement_of_another_prompt_is_refused() {
    let passages = request(&STORIES, Method::LeaveOneOut);
    let game = FusedGame::new(
        &engine(&passages),
        PassageEncoding::InContext { refresh: 0 },
        Aggregate::Sum,
    )
    .unwrap();
    let other = request(&PASSAGES[..4], Method::LeaveOneOut);
    let err = game.refine(&engine(&other)).err().unwrap().to_string();
    assert!(err.contains("refined prompt"), "{err}");
    // The same prompt is its own (trivial) refinement: the same values.
    let mut same = game.refine(&engine(&passages)).unwrap();
    let mut original = game;
    let coalitions = full_empty_and_leave_one_out(STORIES.len());
    let (a, b) = (
        values(&mut same, &coalitions),
        values(&mut original, &coalitions),
    );
    assert!(max_diff(&a, &b) < 1e-9, "{a:?} vs {b:?}");
}

#[test]
fn attention_finds_the_gold_passage() {
    let r = request(&PASSAGES, Method::LeaveOneOut);
    let how = OnePass::Attention { layers: 4 };
    let report = cite_at_scale(model(), &r, &options(Strategy::OnePass(how))).unwrap();
    let a = &report.attribution;
    assert_eq!(a.scores.len(), 1);
    assert!(
        a.scores[0].iter().all(|s| (0.0..1.0).contains(s)),
        "attention shares"
    );
    assert_eq!(a.ranking(0)[0], 2, "{:?}", a.scores[0]);
}

#[test]
fn gradient_times_input_per_passage_is_the_derivative_of_scaling_the_passage() {
    // Σ_{t in passage} ∇_t·x_t = d/dα f(x with the passage's embeddings times α) at α = 1,
    // checked by central differences on the fast forward.
    let r = request(&PASSAGES, Method::LeaveOneOut);
    let how = OnePass::GradientTimesInput;
    let scores = cite_at_scale(model(), &r, &options(Strategy::OnePass(how)))
        .unwrap()
        .attribution
        .scores
        .remove(0);
    let e = engine(&r);
    let mut ids = Vec::new();
    let mut spans = Vec::new();
    for p in e.pieces() {
        match p {
            TokenSegment::Fixed(t) => ids.extend_from_slice(t),
            TokenSegment::Unit { kept, .. } => {
                spans.push(ids.len()..ids.len() + kept.len());
                ids.extend_from_slice(kept);
            }
        }
    }
    let (prompt_len, answer) = (ids.len(), e.answer().to_vec());
    ids.extend_from_slice(&answer[..answer.len() - 1]);
    let base = model().embed(&ids).unwrap().data;
    let d = model().config().hidden_size;
    let f = |unit: usize, alpha: f32| -> f64 {
        let mut x = base.clone();
        for t in spans[unit].clone() {
            x[t * d..(t + 1) * d].iter_mut().for_each(|v| *v *= alpha);
        }
        let row = Row::embeddings(x)
            .with_logits(LogitsAt::Range(
                prompt_len - 1..prompt_len - 1 + answer.len(),
            ))
            .with_score(answer.clone());
        let out = model()
            .forward(vec![row], &Capture::none())
            .unwrap()
            .remove(0);
        out.scores
            .unwrap()
            .iter()
            .map(|s| f64::from(s.logprob))
            .sum()
    };
    let eps = 0.02;
    for unit in [0, 2, 5] {
        let numeric = (f(unit, 1.0 + eps) - f(unit, 1.0 - eps)) / (2.0 * f64::from(eps));
        let analytic = scores[unit];
        assert!(
            (numeric - analytic).abs() < 0.02 * analytic.abs() + 5e-3,
            "passage {unit}: {analytic} vs {numeric} by differences"
        );
    }
}

#[test]
fn sampled_methods_on_caches_are_deterministic_by_seed() {
    let mut r = request(&PASSAGES, Method::PermutationShapley { permutations: 4 });
    let run = |r: &CiteRequest| {
        cite_at_scale(
            model(),
            r,
            &options(Strategy::Cached(PassageEncoding::Independent)),
        )
        .unwrap()
        .attribution
        .scores
    };
    r.seed = 5;
    let (a, b) = (run(&r), run(&r));
    assert_eq!(a, b);
    r.seed = 6;
    assert_ne!(run(&r), a);
}

#[test]
fn bad_requests_are_refused_with_clear_errors() {
    let r = request(&PASSAGES, Method::LeaveOneOut);
    let err = |r: &CiteRequest, o: &ScaleOptions<'_>| {
        cite_at_scale(model(), r, o).unwrap_err().to_string()
    };
    let too_many = ScaleOptions {
        check: 7,
        ..options(Strategy::Cached(PassageEncoding::Independent))
    };
    assert!(err(&r, &too_many).contains("more than the 6 passages"));
    let nothing = ScaleOptions {
        check: 2,
        ..options(Strategy::Exact)
    };
    assert!(err(&r, &nothing).contains("nothing is approximated"));
    let mut identity = r.clone();
    identity.target = CiteTarget::AnswerIdentity;
    assert!(
        err(
            &identity,
            &options(Strategy::Cached(PassageEncoding::Independent))
        )
        .contains("log-probability")
    );
    let mut placeholder = r.clone();
    placeholder.perturbation = Perturbation::Placeholder;
    assert!(
        err(
            &placeholder,
            &options(Strategy::Cached(PassageEncoding::InContext { refresh: 0 }))
        )
        .contains("delete")
    );
    assert!(ExpandRule::new(0.5, Some(0)).is_err());
}
