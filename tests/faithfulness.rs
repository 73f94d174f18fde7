//! Faithfulness metrics on the real default model: every metric's removals evaluated by the
//! engine equal re-scoring each perturbed input from scratch; leave-one-out is perfectly
//! rank-faithful to itself; a self-explanation is an attribution every metric and comparison
//! takes; bad input is refused with a clear error.

use std::sync::OnceLock;

use glassbox::attribution::attribute::{
    AttributeRequest, MethodOptions, Rescorer, TokenMethod, UnitLevel, attribute,
};
use glassbox::attribution::{Coalition, Perturbation};
use glassbox::eval::{FaithfulnessPlan, MetricRequest, TargetView};
use glassbox::evaluate::{
    EvaluateError, EvaluateOptions, default_target, evaluate, plan_coalitions,
};
use glassbox::report::AttributeReport;
use glassbox::selfexplain::{Protocol, Task, classification_request, self_explain};
use glassbox::{Fetch, LoadOptions, Model, NoProgress, load_model};

const REVIEW: &str = "A tedious, overlong film with a few good jokes.";

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        load_model(
            "smollm2-135m-instruct",
            LoadOptions::default(),
            Fetch::IfMissing,
            &NoProgress,
        )
        .unwrap()
    })
}

fn explained(method: &str, perturbation: Perturbation) -> AttributeReport {
    let task = Task::load("sentiment").unwrap();
    let (_, framing) = task.framing(None).unwrap();
    let request = AttributeRequest {
        method: TokenMethod::parse(method, &MethodOptions::default()).unwrap(),
        perturbation,
        seed: 3,
        ..classification_request(framing, REVIEW).unwrap()
    };
    attribute(model(), &request).unwrap()
}

fn all_metrics() -> Vec<MetricRequest> {
    [
        "comprehensiveness:eraser",
        "comprehensiveness:eraser_code",
        "comprehensiveness:ferret",
        "comprehensiveness:cumulative",
        "sufficiency:eraser",
        "sufficiency:cumulative",
        "decision_flip",
        "decision_flip:frac",
        "rankdel",
        "tau_loo",
        "topk_drop:2",
        "infidelity:16",
        "contrastive",
    ]
    .iter()
    .map(|m| MetricRequest::parse(m).unwrap())
    .collect()
}

#[test]
fn engine_evaluated_metrics_equal_rescoring_every_perturbed_input_from_scratch() {
    for perturbation in [Perturbation::Delete, Perturbation::Placeholder] {
        let report = explained("kernel", perturbation.clone());
        let mut rescorer =
            Rescorer::new(model(), &report, &UnitLevel::Word, perturbation.clone()).unwrap();
        let t = default_target(&report);
        let plan = FaithfulnessPlan::new(&report.attribution.scores[t], &all_metrics(), 5).unwrap();
        let n = plan.n_units();
        let coalitions = plan_coalitions(&plan);
        let engine = rescorer.values(&coalitions).unwrap();
        let scratch = rescorer.values_from_scratch(&coalitions).unwrap();
        let max = engine
            .iter()
            .flatten()
            .zip(scratch.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(max < 1e-4, "{}: max |Δ| {max}", perturbation.name());
        let stats = rescorer.stats();
        assert!(
            stats.tokens < stats.tokens_from_scratch,
            "prefix sharing saves tokens: {stats:?}"
        );
        let view = TargetView::new(t).with_labels(vec![0, 1]).with_foil(1 - t);
        let (a, b) = (
            plan.finish(&engine, &view).unwrap(),
            plan.finish(&scratch, &view).unwrap(),
        );
        for (x, y) in a.iter().zip(&b) {
            let (vx, vy) = (x.value.unwrap_or(0.0), y.value.unwrap_or(0.0));
            assert!((vx - vy).abs() < 1e-4, "{}: {vx} vs {vy}", x.spec);
        }
        // The cumulative curve's first step is f(x) − f(x \ top-1), read off the scratch values.
        let cumulative = &b[3];
        let top = report.attribution.ranking(t)[0];
        let without_top = Coalition::full(n).without(top);
        let direct = rescorer
            .values_from_scratch(&[Coalition::full(n), without_top])
            .unwrap();
        let by_hand = direct[0][t] - direct[1][t];
        assert!(
            (cumulative.curve[1].value - by_hand).abs() < 1e-6,
            "{} vs {by_hand}",
            cumulative.curve[1].value
        );
    }
}

#[test]
fn leave_one_out_is_perfectly_rank_faithful_to_itself() {
    let report = explained("loo", Perturbation::Delete);
    let options = EvaluateOptions {
        metrics: vec![
            MetricRequest::parse("rankdel").unwrap(),
            MetricRequest::parse("tau_loo").unwrap(),
        ],
        unit: None,
        perturbation: Perturbation::Delete,
        target: None,
        seed: 0,
    };
    let e = evaluate(model(), &report, &options).unwrap();
    let t = default_target(&report);
    let deltas = e.results[0].per_unit.as_ref().unwrap();
    for (d, s) in deltas.iter().zip(&report.attribution.scores[t]) {
        assert!((d - s).abs() < 1e-5, "Δ {d} vs LOO score {s}");
    }
    assert!((e.results[0].value.unwrap() - 1.0).abs() < 1e-9);
    assert!((e.results[1].value.unwrap() - 1.0).abs() < 1e-9);
    assert!(e.target.contains(report.answer.trim()), "{}", e.target);
}

#[test]
fn a_self_explanation_is_an_attribution_every_metric_takes() {
    let task = Task::load("sentiment").unwrap();
    let (_, framing) = task.framing(None).unwrap();
    let protocol = Protocol::load("topk-predict-then-explain").unwrap();
    let result = self_explain(model(), &task, framing, &protocol, REVIEW, 48).unwrap();
    // What the model wrote is kept, whatever it was.
    assert_eq!(
        result.report.attribution.diagnostics["raw"],
        result.parsed.raw
    );
    assert!(
        result.parsed.raw.starts_with(" ["),
        "{:?}",
        result.parsed.raw
    );
    assert_eq!(result.report.attribution.method.name, "self_explanation");
    let loo = explained("loo", Perturbation::Delete);
    assert_eq!(result.report.attribution.targets, loo.attribution.targets);
    assert_eq!(
        result.classification.label,
        default_target(&loo),
        "the prediction explained is the label target's argmax"
    );
    assert_eq!(result.report.answer, loo.answer);
    // Saved and read back, it is re-scored like any other result.
    let saved = serde_json::to_string(&result.report).unwrap();
    let back = AttributeReport::from_json(&saved).unwrap();
    let options = EvaluateOptions {
        metrics: vec![MetricRequest::parse("comprehensiveness:cumulative").unwrap()],
        unit: None,
        perturbation: Perturbation::Delete,
        target: None,
        seed: 0,
    };
    let e = evaluate(model(), &back, &options).unwrap();
    assert_eq!(e.explainer, "self_explanation");
    assert_eq!(e.n_units, 9);
    assert!(e.results[0].value.is_some());
}

#[test]
fn seeded_metrics_repeat_with_their_seed() {
    let report = explained("loo", Perturbation::Delete);
    let run = |seed| {
        let options = EvaluateOptions {
            metrics: vec![MetricRequest::parse("infidelity:8").unwrap()],
            unit: None,
            perturbation: Perturbation::Delete,
            target: None,
            seed,
        };
        evaluate(model(), &report, &options).unwrap().results[0]
            .value
            .unwrap()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let report = explained("loo", Perturbation::Delete);
    let options = |metric: &str, target: Option<usize>| EvaluateOptions {
        metrics: vec![MetricRequest::parse(metric).unwrap()],
        unit: None,
        perturbation: Perturbation::Delete,
        target,
        seed: 0,
    };
    let err = |r: &AttributeReport, o: &EvaluateOptions| -> EvaluateError {
        evaluate(model(), r, o).unwrap_err()
    };
    let e = err(&report, &options("topk_drop:40", None));
    assert!(e.is_input_error() && e.to_string().contains("40"), "{e}");
    let e = err(&report, &options("rankdel", Some(7)));
    assert!(e.to_string().contains("target 7"), "{e}");
    let mut other_model = report.clone();
    other_model.attribution.model = "gemma3-270m".into();
    let e = err(&other_model, &options("rankdel", None));
    assert!(e.to_string().contains("--model gemma3-270m"), "{e}");
    let mut foreign = report.clone();
    foreign.request = None;
    let e = err(&foreign, &options("rankdel", None));
    assert!(e.to_string().contains("request record"), "{e}");
    assert!(
        MetricRequest::parse("comprehensivness")
            .unwrap_err()
            .to_string()
            .contains("comprehensiveness")
    );
    assert!(
        AttributeReport::from_json(
            &serde_json::to_string(&report)
                .unwrap()
                .replace("glassbox.attribute/1", "glassbox.attribute/9")
        )
        .is_err()
    );

    let task = Task::load("sentiment").unwrap();
    let (_, framing) = task.framing(None).unwrap();
    let protocol = Protocol::load("topk-predict-then-explain").unwrap();
    let e = self_explain(model(), &task, framing, &protocol, "   ", 8).unwrap_err();
    assert!(e.is_input_error(), "{e}");
    let mut multi = framing.clone();
    multi.labels = vec![" very positive".into(), " negative".into()];
    let e = self_explain(model(), &task, &multi, &protocol, REVIEW, 8).unwrap_err();
    assert!(e.to_string().contains("single token"), "{e}");
    assert!(
        task.framing(Some("no-such"))
            .unwrap_err()
            .to_string()
            .contains("raw")
    );
}

#[test]
fn sensitivity_re_explains_gradient_results_under_small_embedding_noise() {
    use glassbox::attribution::attribute::gradient_sensitivity;
    let report = explained("gradxinput", Perturbation::Delete);
    let t = default_target(&report);
    let run = |radius, seed| {
        gradient_sensitivity(model(), &report, t, 4, radius, seed)
            .unwrap()
            .value
    };
    let (a, b) = (run(0.02, 1), run(0.02, 1));
    assert_eq!(a, b, "seeded");
    assert!(a.is_finite() && a > 0.0, "{a}");
    assert_ne!(run(0.02, 2), a);
    // Noise a thousand times smaller moves the scores far less (the explanation is smooth
    // at that scale).
    let tiny = run(0.00002, 1);
    assert!(tiny < a / 10.0, "tiny noise {tiny} vs {a}");
    let loo = explained("loo", Perturbation::Delete);
    let e = gradient_sensitivity(model(), &loo, t, 4, 0.02, 1).unwrap_err();
    assert!(
        e.is_input_error() && e.to_string().contains("leave_one_out"),
        "{e}"
    );
}
