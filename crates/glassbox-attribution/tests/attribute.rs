//! Token- and word-level attribution on the real default model: gradients against finite
//! differences, integrated gradients' completeness, occlusion against the engine, KernelSHAP
//! against exact Shapley, attention rows, contrastive linearity, and bad input.

mod common;

use common::model;
use glassbox_attribution::attribute::{
    AnswerSpec, AttributeRequest, Baseline, GradientMethod, InputTemplate, MethodOptions,
    PromptFormat, TargetSpec, TokenMethod, UnitLevel, attribute, prepare,
};
use glassbox_attribution::{Method, Perturbation};
use glassbox_report::Aggregation;
use glassbox_runtime::{Capture, Hook, LogitsAt, Row, RowInput};

fn request(input: &str, method: TokenMethod) -> AttributeRequest {
    AttributeRequest {
        input: input.into(),
        template: InputTemplate::default(),
        answer: AnswerSpec::NextToken,
        target: TargetSpec::LogProb,
        method,
        unit: UnitLevel::Word,
        format: PromptFormat::Raw,
        system: None,
        perturbation: Perturbation::Delete,
        aggregate: Aggregation::Sum,
        seed: 0,
    }
}

const SENTENCE: &str = "The capital of France is";

/// `ln p(answer token)` at the end of the prompt with the input's embeddings scaled by `s`.
fn logprob_with_input_scaled(req: &AttributeRequest, s: f32) -> f64 {
    let m = model();
    let p = prepare(m, req).unwrap();
    let ids = p.prompt();
    let mut e = m.embed(&ids).unwrap();
    let d = e.shape[1];
    let start = p.prefix.len();
    for v in &mut e.data[start * d..(start + p.units.ids.len()) * d] {
        *v *= s;
    }
    let row = Row {
        input: RowInput::Embeddings(e.data),
        ..Row::tokens(vec![])
    }
    .with_logits(LogitsAt::Last);
    let out = m.forward(vec![row], &Capture::none()).unwrap().remove(0);
    glassbox_runtime::log_softmax_at(out.logits.unwrap().at(0), p.answer[0]) as f64
}

#[test]
fn gradient_times_input_equals_the_finite_difference_along_the_input() {
    let req = request(
        SENTENCE,
        TokenMethod::Gradient(GradientMethod::GradientXInput),
    );
    let report = attribute(model(), &req).unwrap();
    let total: f64 = report.attribution.scores[0].iter().sum();
    // d/ds f(s·x) at s = 1 is Σ_i ∇f(x)_i · x_i.
    let eps = 1e-2;
    let fd = (logprob_with_input_scaled(&req, 1.0 + eps)
        - logprob_with_input_scaled(&req, 1.0 - eps))
        / (2.0 * eps as f64);
    eprintln!("sum grad·x {total}, finite difference {fd}");
    assert!(
        (total - fd).abs() < 0.02 * fd.abs().max(0.1),
        "{total} vs {fd}"
    );
}

fn gap(req: &AttributeRequest) -> f64 {
    let r = attribute(model(), req).unwrap();
    r.attribution.diagnostics["completeness_gap"][0]
        .as_f64()
        .unwrap()
}

#[test]
fn integrated_gradients_completeness_gap_shrinks_with_steps() {
    let ig = |steps| {
        request(
            SENTENCE,
            TokenMethod::Gradient(GradientMethod::IntegratedGradients {
                steps,
                baseline: Baseline::Pad,
            }),
        )
    };
    let gaps: Vec<f64> = [8, 32, 128].map(|s| gap(&ig(s)).abs()).to_vec();
    let r = attribute(model(), &ig(8)).unwrap();
    let change = r.attribution.value_full[0]
        - r.attribution.diagnostics["value_baseline"][0]
            .as_f64()
            .unwrap();
    eprintln!("|gap| at 8/32/128 steps: {gaps:?} of a change of {change}");
    assert!(gaps[0] > gaps[1] && gaps[1] > gaps[2], "{gaps:?}");
    assert!(gaps[2] < 0.05 * change.abs(), "{gaps:?} vs {change}");
}

#[test]
fn layer_methods_at_the_first_stream_equal_the_input_methods_and_read_any_layer() {
    let token = |m: GradientMethod| {
        let mut r = request(SENTENCE, TokenMethod::Gradient(m));
        r.unit = UnitLevel::Token;
        attribute(model(), &r).unwrap().attribution
    };
    let max_diff = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f64, f64::max)
    };
    let at = Hook::ResidPre(0);
    // blocks.0.resid_pre is the input embeddings: the layer methods are the input methods.
    let gxi = token(GradientMethod::GradientXInput);
    let layer_gxa = token(GradientMethod::LayerGradientXActivation { at });
    assert!(max_diff(&gxi.scores[0], &layer_gxa.scores[0]) < 1e-5);
    let ig = GradientMethod::IntegratedGradients {
        steps: 16,
        baseline: Baseline::Pad,
    };
    let layer_ig = |at| GradientMethod::LayerIntegratedGradients {
        at,
        steps: 16,
        baseline: Baseline::Pad,
    };
    let (a, b) = (token(ig), token(layer_ig(at)));
    let scale = a.scores[0].iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(
        max_diff(&a.scores[0], &b.scores[0]) < 1e-4 * scale,
        "{:?} vs {:?}",
        a.scores,
        b.scores
    );
    // Deeper in the stream: the completeness gap (over all positions) shrinks with steps,
    // and the scores differ from the input's.
    let deep = |steps| {
        token(GradientMethod::LayerIntegratedGradients {
            at: Hook::ResidMid(20),
            steps,
            baseline: Baseline::Pad,
        })
    };
    let runs = [deep(16), deep(64)];
    let gaps: Vec<f64> = runs
        .iter()
        .map(|r| r.diagnostics["completeness_gap"][0].as_f64().unwrap().abs())
        .collect();
    let change = runs[1].value_full[0] - runs[1].diagnostics["value_baseline"][0].as_f64().unwrap();
    eprintln!("layer IG at blocks.20.resid_mid: |gap| {gaps:?} at 16/64 steps, change {change}");
    assert!(
        gaps[1] < gaps[0] && gaps[1] < 0.05 * change.abs(),
        "{gaps:?} vs {change}"
    );
    assert!(max_diff(&runs[1].scores[0], &a.scores[0]) > 1e-3);
    let sub_block = token(GradientMethod::LayerGradientXActivation {
        at: Hook::MlpOut(20),
    });
    assert!(sub_block.scores[0].iter().any(|v| v.abs() > 0.0));
    // Layer IG moves the stream; a sub-block output is refused with the reason.
    let mut r = request(SENTENCE, TokenMethod::Gradient(layer_ig(Hook::AttnOut(3))));
    r.unit = UnitLevel::Token;
    let err = attribute(model(), &r).unwrap_err().to_string();
    assert!(err.contains("residual stream"), "{err}");
    // Attention × gradient: one score per input token, from the last layer by default.
    let attgrad = token(GradientMethod::AttentionXGradient { layer: None });
    assert_eq!(attgrad.scores[0].len(), a.scores[0].len());
    assert_eq!(attgrad.diagnostics["layer"], 29);
    assert!(attgrad.scores[0].iter().any(|v| v.abs() > 0.0));
    let mut r = request(
        SENTENCE,
        TokenMethod::Gradient(layer_ig(Hook::ResidPre(99))),
    );
    r.unit = UnitLevel::Token;
    assert!(
        attribute(model(), &r)
            .unwrap_err()
            .to_string()
            .contains("layers 0..29")
    );
}

#[test]
fn gradient_methods_report_the_full_and_empty_values_of_the_engine() {
    // The gradient methods compute these in their own runtime calls (a zero-objective row of
    // the gradient batch, or the forward at the path's ends); the engine deletes the input's
    // tokens from the prompt.
    let mut reference = request(
        "A lighthouse keeper climbed the stairs",
        TokenMethod::Perturbation(Method::LeaveOneOut),
    );
    reference.format = PromptFormat::Chat;
    let engine = attribute(model(), &reference).unwrap().attribution;
    let methods = [
        GradientMethod::Saliency,
        GradientMethod::GradientXInput,
        GradientMethod::IntegratedGradients {
            steps: 4,
            baseline: Baseline::Zero,
        },
        GradientMethod::SmoothGrad {
            samples: 2,
            noise: 0.1,
        },
        GradientMethod::LayerGradientXActivation {
            at: Hook::ResidMid(3),
        },
        GradientMethod::LayerIntegratedGradients {
            at: Hook::ResidPre(5),
            steps: 4,
            baseline: Baseline::Pad,
        },
        GradientMethod::AttentionXGradient { layer: None },
    ];
    for method in methods {
        let mut req = reference.clone();
        req.method = TokenMethod::Gradient(method);
        let got = attribute(model(), &req).unwrap().attribution;
        for (name, a, b) in [
            ("full", &got.value_full, &engine.value_full),
            ("empty", &got.value_empty, &engine.value_empty),
        ] {
            assert_eq!(a.len(), b.len(), "{}: {name}", method.name());
            for (x, y) in a.iter().zip(b.iter()) {
                assert!((x - y).abs() < 1e-4, "{}: {name} {x} vs {y}", method.name());
            }
        }
    }
}

#[test]
fn occlusion_equals_deleting_each_word_and_rescoring_from_scratch() {
    let m = model();
    let req = request(SENTENCE, TokenMethod::Perturbation(Method::LeaveOneOut));
    let report = attribute(m, &req).unwrap();
    let p = prepare(m, &req).unwrap();
    let (_, owner) = p.units.at(&UnitLevel::Word, SENTENCE).unwrap();
    let logprob = |ids: Vec<u32>| -> f64 {
        let out = m
            .forward(vec![Row::tokens(ids)], &Capture::none())
            .unwrap()
            .remove(0);
        glassbox_runtime::log_softmax_at(out.logits.unwrap().at(0), p.answer[0]) as f64
    };
    let full = logprob(p.prompt());
    let words = report.attribution.units.len();
    assert_eq!(words, 5);
    for w in 0..words {
        let kept: Vec<u32> = p
            .units
            .ids
            .iter()
            .zip(&owner)
            .filter(|(_, o)| **o != Some(w))
            .map(|(&id, _)| id)
            .collect();
        let naive = full - logprob([&p.prefix[..], &kept].concat());
        let engine = report.attribution.scores[0][w];
        assert!(
            (naive - engine).abs() < 1e-4,
            "word {w}: {naive} vs {engine}"
        );
    }
    assert!(
        report.attribution.scores[0].iter().any(|s| *s < 0.0)
            || report.attribution.scores[0].iter().all(|s| *s > 0.0),
        "signed scores are kept as they are"
    );
}

#[test]
fn token_engine_equals_from_scratch_for_every_perturbation_and_a_logit_readout() {
    let m = model();
    let unk = m.tokenizer().token_id("<|endoftext|>").unwrap();
    for format in [PromptFormat::Raw, PromptFormat::Chat] {
        let mut req = request(
            "Tom gave Anna the red book",
            TokenMethod::Perturbation(Method::ExactShapley),
        );
        req.format = format;
        req.target = TargetSpec::Contrast(" to".into(), " and".into());
        let p = prepare(m, &req).unwrap();
        let (units, owner) = p.units.at(&UnitLevel::Word, &req.input).unwrap();
        let n = units.len();
        let all: Vec<_> = (0..1u64 << n)
            .map(|mask| glassbox_attribution::Coalition::from_mask(n, mask))
            .collect();
        for perturbation in [
            Perturbation::Delete,
            Perturbation::Placeholder,
            Perturbation::AttentionBlock,
        ] {
            let engine = p.engine(m, &owner, perturbation.clone(), unk);
            if format == PromptFormat::Raw && perturbation == Perturbation::AttentionBlock {
                // The last word would predict the answer itself.
                let e = engine.err().unwrap().to_string();
                assert!(e.contains("fixed text after the last unit"), "{e}");
                continue;
            }
            let mut engine = engine.unwrap();
            let fast = engine.readouts(&all).unwrap();
            let (slow, _) = engine.from_scratch(&all).unwrap();
            let worst = fast
                .iter()
                .zip(&slow)
                .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
                .fold(0f32, f32::max);
            eprintln!("{format:?} {perturbation:?}: max |engine - scratch| = {worst}");
            assert!(worst < 1e-3, "{format:?} {perturbation:?}: {worst}");
            // Raw prompts this short share nothing worth a pass of its own; the chat header is
            // run once for all coalitions.
            let (run, scratch) = (engine.stats().tokens, engine.stats().tokens_from_scratch);
            match format {
                PromptFormat::Raw => assert!(run <= scratch, "{run} vs {scratch}"),
                PromptFormat::Chat => assert!(run < scratch, "{run} vs {scratch}"),
            }
        }
    }
}

#[test]
fn kernel_shap_approaches_exact_shapley_on_a_short_input() {
    let input = "Review: The movie was long but the ending was wonderful\nSentiment:";
    // The review's nine words are the units; "Review:" and "Sentiment:" stay.
    let words = glassbox_attribution::attribute::InputUnits::new(model(), input)
        .unwrap()
        .words;
    let spans: Vec<_> = words[1..words.len() - 1]
        .iter()
        .map(|w| w.span.unwrap())
        .collect();
    let run = |method| {
        let mut req = request(input, TokenMethod::Perturbation(method));
        req.target = TargetSpec::Label(vec![" positive".into(), " negative".into()]);
        req.unit = UnitLevel::Spans(spans.clone());
        attribute(model(), &req).unwrap().attribution
    };
    let exact = run(Method::ExactShapley);
    assert_eq!(exact.units.len(), 9);
    let kernel = run(Method::KernelShap { samples: 400 });
    let scale = exact.scores[0].iter().fold(0f64, |m, s| m.max(s.abs()));
    let worst = exact.scores[0]
        .iter()
        .zip(&kernel.scores[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0f64, f64::max);
    eprintln!("exact {:?}\nkernel {:?}", exact.scores[0], kernel.scores[0]);
    assert!(
        worst < 0.1 * scale,
        "max |kernel - exact| {worst} of scale {scale}"
    );
    // Efficiency: the label probability's change is fully distributed.
    let sum: f64 = exact.scores[0].iter().sum();
    assert!((sum - (exact.value_full[0] - exact.value_empty[0])).abs() < 1e-6);
}

#[test]
fn attention_rows_sum_to_one_raw_and_rolled_out() {
    use glassbox_attribution::attribute::{AttentionMethod, attention_rows};
    let m = model();
    let p = prepare(
        m,
        &request(SENTENCE, TokenMethod::Perturbation(Method::LeaveOneOut)),
    )
    .unwrap();
    let ids = p.prompt();
    let queries: Vec<usize> = (0..ids.len()).collect();
    for method in [
        AttentionMethod::Raw {
            layer: None,
            head: None,
        },
        AttentionMethod::Raw {
            layer: Some(3),
            head: Some(2),
        },
        AttentionMethod::Rollout,
    ] {
        let (rows, _) = attention_rows(m, &ids, &queries, method).unwrap();
        for (q, row) in rows.iter().enumerate() {
            assert!(
                (row.iter().sum::<f64>() - 1.0).abs() < 1e-4,
                "{method:?} row {q}"
            );
            assert!(row[q + 1..].iter().all(|&v| v == 0.0), "causal");
        }
    }
    let err = attention_rows(
        m,
        &ids,
        &queries,
        AttentionMethod::Raw {
            layer: Some(99),
            head: None,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("layers 0.."), "{err}");
}

#[test]
fn contrastive_scores_are_differences_of_single_target_scores_for_linear_methods() {
    let m = model();
    for method in [
        TokenMethod::Gradient(GradientMethod::GradientXInput),
        TokenMethod::Perturbation(Method::LeaveOneOut),
    ] {
        let mut contrast = request(SENTENCE, method);
        contrast.target = TargetSpec::Contrast(" Paris".into(), " London".into());
        let c = attribute(m, &contrast).unwrap().attribution;
        let single = |answer: &str| {
            let mut r = request(SENTENCE, method);
            r.answer = AnswerSpec::Given(answer.into());
            r.target = TargetSpec::Logit;
            attribute(m, &r).unwrap().attribution
        };
        let (a, b) = (single(" Paris"), single(" London"));
        for u in 0..c.units.len() {
            let diff = a.scores[0][u] - b.scores[0][u];
            assert!(
                (c.scores[0][u] - diff).abs() < 1e-3 * diff.abs().max(1.0),
                "{method:?} unit {u}: {} vs {diff}",
                c.scores[0][u]
            );
        }
        assert!((c.value_full[0] - (a.value_full[0] - b.value_full[0])).abs() < 1e-3);
    }
}

#[test]
fn continuations_get_one_target_per_token_and_generation_works() {
    let m = model();
    let mut req = request(
        SENTENCE,
        TokenMethod::Attention(glassbox_attribution::attribute::AttentionMethod::Rollout),
    );
    req.answer = AnswerSpec::Given(" Paris, the city of light".into());
    let r = attribute(m, &req).unwrap();
    let n = r.answer_tokens.len();
    assert!(n > 3);
    assert_eq!(
        r.attribution.targets.len(),
        n + 1,
        "the sum, then each token"
    );
    assert_eq!(r.attribution.targets[0].kind, "sum_logprob");
    assert_eq!(
        r.attribution.units.len(),
        prepare(m, &req).unwrap().units.ids.len()
    );
    req.answer = AnswerSpec::Generate(6);
    req.method = TokenMethod::Perturbation(Method::LeaveOneOut);
    let g = attribute(m, &req).unwrap();
    assert_eq!(g.answer_source, "generated");
    assert!(!g.answer_tokens.is_empty() && g.answer_tokens.len() <= 6);
    // Per-token log-probabilities add up to the whole continuation's, so do their scores.
    let a = &g.attribution;
    if a.targets.len() > 1 {
        for u in 0..a.units.len() {
            let parts: f64 = (1..a.targets.len()).map(|t| a.scores[t][u]).sum();
            assert!((parts - a.scores[0][u]).abs() < 1e-6);
        }
    }
}

#[test]
fn sampled_methods_repeat_with_the_same_seed() {
    let m = model();
    for method in [
        TokenMethod::Perturbation(Method::Lime { samples: 32 }),
        TokenMethod::Gradient(GradientMethod::SmoothGrad {
            samples: 3,
            noise: 0.1,
        }),
    ] {
        let mut req = request(SENTENCE, method);
        req.seed = 7;
        let a = attribute(m, &req).unwrap().attribution.scores;
        assert_eq!(
            a,
            attribute(m, &req).unwrap().attribution.scores,
            "{method:?}"
        );
        req.seed = 8;
        assert_ne!(
            a,
            attribute(m, &req).unwrap().attribution.scores,
            "{method:?}"
        );
    }
}

#[test]
fn bad_input_gets_clear_errors() {
    let m = model();
    let loo = TokenMethod::Perturbation(Method::LeaveOneOut);
    let err = |req: AttributeRequest| attribute(m, &req).unwrap_err();

    let e = err(request("   ", loo));
    assert!(
        e.to_string().contains("input text is empty") && e.is_input_error(),
        "{e}"
    );

    let mut r = request(SENTENCE, loo);
    r.answer = AnswerSpec::Given(String::new());
    assert!(err(r).to_string().contains("tokenizes to nothing"));

    let e = TokenMethod::parse("shapely", &MethodOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("exact") && e.to_string().contains("ig"),
        "{e}"
    );
    let e = TargetSpec::parse("probability").unwrap_err();
    assert!(e.to_string().contains("contrast:A,B"), "{e}");

    let mut r = request(SENTENCE, loo);
    r.target = TargetSpec::Contrast(" Parisians".into(), " London".into());
    let e = err(r);
    assert!(
        e.to_string().contains("single token") && e.is_input_error(),
        "{e}"
    );

    let mut r = request(SENTENCE, loo);
    r.target = TargetSpec::Contrast(" Paris".into(), " London".into());
    r.answer = AnswerSpec::Given(" Paris".into());
    assert!(err(r).to_string().contains("next token"));

    let e = err(request(&"word ".repeat(9000), loo));
    assert!(
        e.to_string().contains("context window") && e.is_input_error(),
        "{e}"
    );

    let mut r = request(
        SENTENCE,
        TokenMethod::Attention(glassbox_attribution::attribute::AttentionMethod::Rollout),
    );
    r.target = TargetSpec::Label(vec![" yes".into(), " no".into()]);
    assert!(err(r).to_string().contains("does not depend on the target"));

    let mut r = request(SENTENCE, loo);
    r.unit = UnitLevel::Spans(vec![(0, 3), (40, 50)]);
    assert!(err(r).to_string().contains("ends past"));

    let mut r = request(
        &"w ".repeat(20),
        TokenMethod::Perturbation(Method::ExactShapley),
    );
    r.unit = UnitLevel::Token;
    assert!(err(r).to_string().contains("sampled method"));
}
