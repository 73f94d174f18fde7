//! `cite` end to end on the default model: the game's axioms hold on real values, sampled
//! estimators agree with exact Shapley, refinement works, bad input is refused.

use std::sync::OnceLock;

use glassbox_attribution::cite::{CiteRequest, DEFAULT_TEMPLATE, RagTemplate, cite};
use glassbox_attribution::stats::spearman;
use glassbox_attribution::{Aggregate, AttributionError, Method, Perturbation};
use glassbox_models::{Cache, Fetch, ModelFiles, NoProgress, ensure, find_manifest};
use glassbox_runtime::{LoadOptions, Model};

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let manifest = find_manifest("smollm2-135m-instruct").unwrap();
        let ModelFiles::Gguf(path) = ensure(
            &manifest,
            &Cache::from_env(),
            Fetch::IfMissing,
            false,
            &NoProgress,
        )
        .unwrap() else {
            panic!("a GGUF model")
        };
        Model::load_gguf(&path, "smollm2-135m-instruct", LoadOptions::default()).unwrap()
    })
}

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
        aggregate: Aggregate::Sum,
        seed: 0,
        refine_passages: 0,
        refine_words: false,
    }
}

#[test]
fn exact_shapley_on_a_real_case_is_efficient_and_finds_the_gold_passage() {
    let mut r = request(Method::ExactShapley);
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
        ["The", "lighthouse", "was", "rebuilt"]
    );
    let top_word = &words.units[words.ranking(0)[0]].text;
    assert!(
        ["Ottilie", "Brask", "engineer"]
            .iter()
            .any(|w| top_word.contains(w)),
        "top word {top_word}"
    );
    // The JSON round-trips.
    let text = serde_json::to_string(&report).unwrap();
    assert_eq!(
        glassbox_report::CiteReport::from_json(&text).unwrap(),
        report
    );
}

#[test]
fn sampled_estimators_agree_with_exact_shapley_at_their_default_budget() {
    let exact = cite(model(), &request(Method::ExactShapley))
        .unwrap()
        .attribution;
    for name in ["permutation", "kernel", "surrogate", "banzhaf", "loo"] {
        let method = Method::parse(name, None).unwrap();
        let a = cite(model(), &request(method)).unwrap().attribution;
        let rho = spearman(&a.scores[0], &exact.scores[0]);
        println!(
            "{name}: Spearman with exact = {rho:.3}, {} evaluations",
            a.cost.evaluations
        );
        if matches!(name, "permutation" | "kernel") {
            assert!(rho >= 0.95, "{name}: {rho}");
        }
        assert_eq!(
            a.ranking(0)[0],
            exact.ranking(0)[0],
            "{name} finds the same top passage"
        );
        // Same seed, same numbers.
        assert_eq!(
            cite(model(), &request(method)).unwrap().attribution.scores,
            a.scores
        );
    }
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
