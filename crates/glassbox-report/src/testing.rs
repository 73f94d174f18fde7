//! A small report for the renderers' tests.

use crate::schema::*;

fn unit(label: &str, text: &str, level: &str) -> Unit {
    Unit {
        label: label.into(),
        text: text.into(),
        level: level.into(),
        span: None,
    }
}

/// Four passages, an answer of three tokens with per-token targets, standard errors and a
/// sentence refinement of the top passage.
pub(crate) fn report() -> CiteReport {
    let targets = vec![
        Target {
            label: "answer".into(),
            kind: "sum_logprob".into(),
            tokens: Some((0, 3)),
        },
        Target {
            label: "Ott".into(),
            kind: "token_logprob".into(),
            tokens: Some((0, 1)),
        },
        Target {
            label: "ilie".into(),
            kind: "token_logprob".into(),
            tokens: Some((1, 2)),
        },
        Target {
            label: ".".into(),
            kind: "token_logprob".into(),
            tokens: Some((2, 3)),
        },
    ];
    let attribution = Attribution {
        schema: ATTRIBUTION_SCHEMA.into(),
        model: "test-model".into(),
        method: MethodInfo {
            name: "permutation_shapley".into(),
            params: serde_json::json!({"permutations": 8}),
            seed: Some(3),
        },
        perturbation: "delete".into(),
        units: vec![
            unit("[1]", "The lighthouse stands on the cape.", "passage"),
            unit("[2]", "Ferries leave twice a day.", "passage"),
            unit(
                "[3]",
                "It was rebuilt by Ottilie Brask. She used granite.",
                "passage",
            ),
            unit("[4]", "The lamp was electrified in 1931.", "passage"),
        ],
        targets,
        scores: vec![
            vec![0.2, -0.5, 1.4, 0.1],
            vec![0.1, -0.2, 1.0, 0.0],
            vec![0.05, -0.3, 0.4, 0.05],
            vec![0.9, 0.0, 0.0, 0.05],
        ],
        std_errors: Some(vec![vec![0.05; 4]; 4]),
        value_full: vec![-2.0, -0.5, -0.7, -0.8],
        value_empty: vec![-3.2, -1.4, -0.9, -1.8],
        cost: Cost {
            evaluations: 20,
            forward_passes: 7,
            tokens: 900,
            tokens_from_scratch: 2400,
            seconds: 0.8,
        },
        diagnostics: serde_json::Value::Null,
    };
    let mut refined = attribution.clone();
    refined.units = vec![
        unit("[3.1]", "It was rebuilt by Ottilie Brask.", "sentence"),
        unit("[3.2]", "She used granite.", "sentence"),
    ];
    refined.scores = vec![vec![1.2, 0.2]; 4];
    refined.std_errors = None;
    CiteReport {
        schema: CITE_SCHEMA.into(),
        question: "Who rebuilt the lighthouse?".into(),
        answer: "Ottilie.".into(),
        answer_tokens: vec![
            AnswerToken {
                id: 10,
                text: "Ott".into(),
            },
            AnswerToken {
                id: 11,
                text: "ilie".into(),
            },
            AnswerToken {
                id: 12,
                text: ".".into(),
            },
        ],
        answer_generated: false,
        attribution,
        refinements: vec![Refinement {
            parent_unit: 2,
            attribution: refined,
            refinements: Vec::new(),
        }],
        approximation: None,
    }
}

/// The report under the answer-identity target: the answer and two alternative answers.
pub(crate) fn identity_report() -> CiteReport {
    let mut r = report();
    let a = &mut r.attribution;
    a.targets = ["Ottilie.", "Edwin Marr.", "The lighthouse <b>stands</b>."]
        .iter()
        .map(|label| Target {
            label: label.to_string(),
            kind: "answer_identity".into(),
            tokens: None,
        })
        .collect();
    a.scores = vec![
        vec![0.1, 0.0, 0.8, 0.1],
        vec![0.0, 0.0, -0.4, 0.0],
        vec![0.5, 0.0, -0.2, 0.0],
    ];
    a.std_errors = None;
    a.value_full = vec![1.0, 0.0, 0.0];
    a.value_empty = vec![0.0, 0.0, 0.0];
    r.refinements.clear();
    r
}

/// "Great <b>film. Not bad" (4 words, 2 sentences) scored per token for one target.
pub(crate) fn attribute_report() -> AttributeReport {
    let input = "Great <b>film. Not bad";
    let span_unit = |text: &str, level: &str, a: usize, b: usize| Unit {
        label: text.trim().into(),
        text: text.into(),
        level: level.into(),
        span: Some((a, b)),
    };
    let tokens = vec![
        span_unit("Gre", "token", 0, 3),
        span_unit("at", "token", 3, 5),
        span_unit(" <b>film", "token", 5, 13),
        span_unit(".", "token", 13, 14),
        span_unit(" Not", "token", 14, 18),
        span_unit(" bad", "token", 18, 22),
    ];
    let words = vec![
        span_unit("Great", "word", 0, 5),
        span_unit(" <b>film.", "word", 5, 14),
        span_unit(" Not", "word", 14, 18),
        span_unit(" bad", "word", 18, 22),
    ];
    let sentences = vec![
        span_unit("Great <b>film.", "sentence", 0, 14),
        span_unit(" Not bad", "sentence", 14, 22),
    ];
    let mut base = report().attribution;
    base.units = tokens.clone();
    base.targets = vec![Target {
        label: " positive".into(),
        kind: "label_prob".into(),
        tokens: Some((0, 1)),
    }];
    base.scores = vec![vec![0.5, 0.25, 0.1, 0.0, -0.8, 0.3]];
    base.std_errors = None;
    base.value_full = vec![0.9];
    base.value_empty = vec![0.5];
    AttributeReport {
        schema: ATTRIBUTE_SCHEMA.into(),
        input: input.into(),
        prompt_format: "raw".into(),
        answer: " positive".into(),
        answer_tokens: vec![AnswerToken {
            id: 7,
            text: " positive".into(),
        }],
        answer_source: "predicted".into(),
        levels: [
            ("token".to_string(), tokens),
            ("word".to_string(), words),
            ("sentence".to_string(), sentences),
        ]
        .into_iter()
        .collect(),
        attribution: base,
        view: ViewSettings {
            unit: "word".into(),
            aggregate: Aggregation::Sum,
        },
        request: None,
    }
}

/// An approximation record with a check, for the renderers' tests.
pub(crate) fn approximation() -> crate::Approximation {
    crate::Approximation {
        estimate_of: "leave_one_out on test-model".into(),
        steps: vec![crate::ApproximationStep {
            name: "context_kv".into(),
            description: "passages cached from the full prompt".into(),
            params: serde_json::json!({}),
        }],
        check: Some(crate::FidelityCheck {
            units: vec![2, 0, 1],
            estimate: vec![3.0, 0.5, 0.1],
            exact_loo: vec![3.2, 0.4, 0.2],
            spearman: Some(0.8),
            top1_agrees: true,
            cost: Cost {
                evaluations: 4,
                forward_passes: 2,
                tokens: 100,
                tokens_from_scratch: 200,
                seconds: 0.5,
            },
        }),
    }
}
