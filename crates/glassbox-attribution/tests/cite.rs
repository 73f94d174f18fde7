//! `cite` end to end on the default model: the game's axioms hold on real values, sampled
//! estimators agree with exact Shapley, refinement works, bad input is refused.

mod common;

use std::sync::OnceLock;

use common::model;

use glassbox_attribution::cite::{CiteRequest, CiteTarget, DEFAULT_TEMPLATE, RagTemplate, cite};
use glassbox_attribution::stats::spearman;
use glassbox_attribution::{Aggregate, AttributionError, Method, Perturbation};

fn request(method: Method) -> CiteRequest {
    CiteRequest {
        question: "Who rebuilt the Vellmora lighthouse?".into(),
        passages: vec![
            "The Vellmora lighthouse stands on the northern cape of Saltreach Island.".into(),
            "Ferries to Saltreach leave twice a day from Port Anvell.".into(),
            "The lighthouse was rebuilt in 1874 by the engineer Ottilie Brask after a storm. Her design used local granite.".into(),
            "A second lighthouse, at Corran Point, was built in 1902 by Edwin Marr.".into(),
            "The keeper's cottage now houses a small museum of shipwrecks.".into(),
            "Its lamp was converted to electricity in 1931.".into(),
        ],
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

#[test]
fn exact_shapley_on_a_real_case_is_efficient_and_finds_the_gold_passage() {
    let mut r = request(Method::ExactShapley);
    // A short gold sentence: its 7 words are enumerated exactly (2^7 coalitions).
    r.passages[2] =
        "Ottilie Brask rebuilt the lighthouse in 1874. Her design used local granite after the storm."
            .into();
    r.refine_passages = 1;
    r.refine_words = true;
    let report = cite(model(), &r).unwrap();
    let a = &report.attribution;
    assert_eq!(a.units.len(), 6);
    assert_eq!(a.targets.len(), 1 + report.answer_tokens.len());
    for t in 0..a.targets.len() {
        let total: f64 = a.scores[t].iter().sum();
        let gap = a.value_full[t] - a.value_empty[t];
        assert!(
            (total - gap).abs() < 1e-6 * gap.abs().max(1.0),
            "efficiency, target {t}"
        );
    }
    // Per-token attributions add up to the whole answer's (the value is a sum of tokens).
    for u in 0..6 {
        let by_tokens: f64 = (1..a.targets.len()).map(|t| a.scores[t][u]).sum();
        assert!((by_tokens - a.scores[0][u]).abs() < 1e-6);
    }
    assert_eq!(
        a.ranking(0)[0],
        2,
        "the passage naming Ottilie Brask: {:?}",
        a.scores[0]
    );
    assert_eq!(a.cost.evaluations, 64);
    assert!(a.cost.tokens * 2 < a.cost.tokens_from_scratch);
    // Refinement: the gold passage's sentences, then the top sentence's words.
    let refined = &report.refinements[0];
    assert_eq!(refined.parent_unit, 2);
    assert_eq!(refined.attribution.units.len(), 2);
    assert_eq!(
        refined.attribution.ranking(0)[0],
        0,
        "the sentence with the name"
    );
    let words = &refined.refinements[0].attribution;
    assert_eq!(
        words
            .units
            .iter()
            .map(|u| u.text.as_str())
            .collect::<Vec<_>>()[..4],
        ["Ottilie", "Brask", "rebuilt", "the"]
    );
    assert_eq!(words.method.name, "exact_shapley");
    let top_word = &words.units[words.ranking(0)[0]].text;
    assert!(
        ["Ottilie", "Brask"].iter().any(|w| top_word.contains(w)),
        "top word {top_word}"
    );
    // The JSON round-trips.
    let text = serde_json::to_string(&report).unwrap();
    assert_eq!(
        glassbox_report::CiteReport::from_json(&text).unwrap(),
        report
    );
}

/// A test RAG case (`tests/fixtures/rag_cases.jsonl`: fictional facts, one gold passage).
#[derive(serde::Deserialize)]
struct Case {
    id: String,
    question: String,
    passages: Vec<String>,
    gold: usize,
    answer: String,
}

fn cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/rag_cases.jsonl"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn case_request(case: &Case, method: Method) -> CiteRequest {
    CiteRequest {
        question: case.question.clone(),
        passages: case.passages.clone(),
        answer: Some(case.answer.clone()),
        ..request(method)
    }
}

/// Exact Shapley values of the six-passage test cases (computed once, shared by the tests).
fn six_passage_cases() -> &'static [(Case, glassbox_report::Attribution)] {
    static EXACT: OnceLock<Vec<(Case, glassbox_report::Attribution)>> = OnceLock::new();
    EXACT.get_or_init(|| {
        cases()
            .into_iter()
            .filter(|c| c.passages.len() == 6)
            .map(|c| {
                let a = cite(model(), &case_request(&c, Method::ExactShapley))
                    .unwrap()
                    .attribution;
                (c, a)
            })
            .collect()
    })
}

#[test]
fn the_gold_passage_ranks_first_on_most_test_cases() {
    let exact = six_passage_cases();
    let first = exact
        .iter()
        .filter(|(c, a)| a.ranking(0)[0] == c.gold)
        .count();
    for (c, a) in exact {
        println!("{}: gold {} ranks {:?}", c.id, c.gold, a.ranking(0));
    }
    println!("gold passage first: {first} of {}", exact.len());
    assert_eq!(exact.len(), 12);
    assert!(first >= 9, "gold first in only {first} of 12 cases");
}

#[test]
fn sampled_estimators_agree_with_exact_shapley_at_their_default_budget() {
    let exact = &six_passage_cases()[..4];
    for name in ["permutation", "kernel", "surrogate", "banzhaf", "loo"] {
        let method = Method::parse(name, None).unwrap();
        let mut rhos = Vec::new();
        let (mut covered, mut intervals) = (0, 0);
        for (case, truth) in exact {
            let a = cite(model(), &case_request(case, method))
                .unwrap()
                .attribution;
            rhos.push(spearman(&a.scores[0], &truth.scores[0]));
            assert_eq!(
                a.ranking(0)[0],
                truth.ranking(0)[0],
                "{name} finds the same top passage on {}",
                case.id
            );
            let errors = a.scores[0]
                .iter()
                .zip(&truth.scores[0])
                .map(|(x, t)| (x - t).abs());
            if a.diagnostics["enumerated"] == true {
                // The budget covered every coalition: the exact value, not an estimate.
                for (e, t) in errors.zip(&truth.scores[0]) {
                    assert!(e < 1e-6 * t.abs().max(1.0), "{name} on {}", case.id);
                }
            } else if let (Some(se), "permutation" | "kernel") = (&a.std_errors, name) {
                for (e, s) in errors.zip(&se[0]) {
                    intervals += 1;
                    covered += usize::from(e <= 1.96 * s + 1e-9);
                }
            }
        }
        let mean_rho = rhos.iter().sum::<f64>() / rhos.len() as f64;
        println!(
            "{name}: Spearman with exact per case {rhos:.3?}, mean {mean_rho:.3}; 95% intervals cover {covered}/{intervals}"
        );
        if matches!(name, "permutation" | "kernel") {
            assert!(mean_rho >= 0.95, "{name}: mean Spearman {mean_rho}");
            assert!(
                covered * 4 >= intervals * 3,
                "{name}: 95% intervals cover only {covered} of {intervals}"
            );
        }
    }
    // Same seed, same numbers.
    let method = Method::parse("permutation", None).unwrap();
    let (case, _) = &exact[0];
    assert_eq!(
        cite(model(), &case_request(case, method))
            .unwrap()
            .attribution
            .scores,
        cite(model(), &case_request(case, method))
            .unwrap()
            .attribution
            .scores
    );
}

#[test]
fn answer_identity_credits_the_generated_answer_and_its_alternatives() {
    let mut r = request(Method::ExactShapley);
    r.answer = None;
    r.target = CiteTarget::AnswerIdentity;
    let report = cite(model(), &r).unwrap();
    let a = &report.attribution;
    assert_eq!(a.targets[0].label, report.answer.trim());
    assert!(a.targets.len() > 1, "some coalitions answer differently");
    assert!(
        a.targets
            .iter()
            .all(|t| t.kind == "answer_identity" && t.tokens.is_none())
    );
    // The full context produces the generated answer; no alternative is produced by it.
    assert_eq!(a.value_full[0], 1.0);
    assert!(a.value_full[1..].iter().all(|&v| v == 0.0));
    for t in 0..a.targets.len() {
        let total: f64 = a.scores[t].iter().sum();
        assert!(
            (total - (a.value_full[t] - a.value_empty[t])).abs() < 1e-9,
            "efficiency {t}"
        );
    }
    // One generation per coalition, counted once (the second pass is memoized).
    assert_eq!(a.cost.evaluations, 64);
    let counts: Vec<u64> = a.diagnostics["answer_counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(counts.len(), a.targets.len());
    assert!(counts.iter().all(|&c| c >= 1) && counts.iter().sum::<u64>() <= 64);
    // The passage naming the engineer supports producing the answer that names her.
    assert!(a.scores[0][2] > 0.1, "{:?}", a.scores[0]);
}

#[test]
fn generated_answers_and_bad_input() {
    let mut r = request(Method::LeaveOneOut);
    r.answer = None;
    let report = cite(model(), &r).unwrap();
    assert!(report.answer_generated);
    assert!(
        report.answer.contains("Ottilie") || report.answer.contains("Brask"),
        "{}",
        report.answer
    );

    let refused = |f: &dyn Fn(&mut CiteRequest)| {
        let mut r = request(Method::ExactShapley);
        f(&mut r);
        cite(model(), &r).unwrap_err()
    };
    let err = refused(&|r| r.passages.clear());
    assert!(err.to_string().contains("no passages") && err.is_input_error());
    let err = refused(&|r| r.passages[3] = "   ".into());
    assert!(err.to_string().contains("passage 4 is empty"), "{err}");
    let err = refused(&|r| r.passages[4] = r.passages[1].clone());
    assert!(err.to_string().contains("identical"), "{err}");
    let err = refused(&|r| {
        r.passages = (0..15)
            .map(|i| format!("Passage number {i} about nothing."))
            .collect()
    });
    assert!(
        matches!(err, AttributionError::TooManyForExact { .. })
            && err.to_string().contains("permutation"),
        "{err}"
    );
    let err = refused(&|r| r.passages[0] = "word ".repeat(9000));
    assert!(err.to_string().contains("context window"), "{err}");
}
