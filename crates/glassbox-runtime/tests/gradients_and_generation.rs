//! Input-embedding gradients against central finite differences, and generation behaviour.

mod common;

use candle_core::{Device, Tensor, Var};
use common::*;
use glassbox_runtime::{
    AttentionMask, Capture, Continuation, GenerateOptions, LogitsAt, Model, Row, RowInput,
    Sampling, StopReason,
};

/// `ln p(target | embeddings)` at the last position, through the fast path.
fn objective_fast(model: &Model, embeddings: Vec<f32>, target: u32) -> f64 {
    let row = Row {
        input: RowInput::Embeddings(embeddings),
        ..Row::tokens(vec![])
    };
    let out = model
        .forward(vec![row], &Capture::none())
        .unwrap()
        .remove(0);
    glassbox_runtime::log_softmax_at(out.logits.unwrap().at(0), target) as f64
}

/// `eps` is the finite-difference step: small enough for the curvature not to show, large
/// enough for f32 rounding in 30 layers not to (Gemma's embeddings are scaled by √640, so its
/// step is larger); with these steps central differences agree to ~0.1-1%.
fn check_gradient(model: &Model, text: &str, target_text: &str, eps: f32) {
    let ids = model
        .tokenizer()
        .encode(text, model.tokenizer().wants_bos())
        .unwrap()
        .ids;
    let target = model.tokenizer().encode(target_text, false).unwrap().ids[0];
    let e = model.embed(&ids).unwrap();
    let (n, d) = (e.shape[0], e.shape[1]);
    let x =
        Var::from_tensor(&Tensor::from_vec(e.data.clone(), (n, d), &Device::Cpu).unwrap()).unwrap();
    let logits = model
        .forward_differentiable(x.as_tensor(), &AttentionMask::new(), n - 1..n)
        .unwrap();
    let last = logits.get(0).unwrap();
    let logp = (last.get(target as usize).unwrap()
        - last.exp().unwrap().sum_all().unwrap().log().unwrap())
    .unwrap();
    let grads = logp.backward().unwrap();
    let g = grads
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        g.iter().any(|v| v.abs() > 0.0),
        "gradients reached the input"
    );

    // Directional derivatives along a few fixed directions, by central differences in f64
    // arithmetic on top of f32 forwards. Direction entries are ±1 on a sparse set of
    // coordinates, spread over several tokens.
    for seed in 0..3u64 {
        let mut u = vec![0f32; n * d];
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        for slot in u.iter_mut() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (state >> 33) % 7 == 0 {
                *slot = if (state >> 40) % 2 == 0 { 1.0 } else { -1.0 };
            }
        }
        let shifted = |sign: f32| {
            e.data
                .iter()
                .zip(&u)
                .map(|(x, du)| x + sign * eps * du)
                .collect::<Vec<f32>>()
        };
        let numeric = (objective_fast(model, shifted(1.0), target)
            - objective_fast(model, shifted(-1.0), target))
            / (2.0 * eps as f64);
        let analytic: f64 = g
            .iter()
            .zip(&u)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        let rel = (numeric - analytic).abs() / analytic.abs().max(1e-3);
        println!(
            "{}: direction {seed}: analytic {analytic:.5}, numeric {numeric:.5}, rel err {rel:.2e}",
            model.info().name
        );
        assert!(rel < 1e-2, "analytic {analytic} vs numeric {numeric}");
    }
}

#[test]
fn input_gradients_match_finite_differences() {
    check_gradient(smollm(), "The capital of France is", " Paris", 3e-3);
    check_gradient(gemma(), "The capital of France is", " Paris", 1e-2);
}

#[test]
fn seeded_sampling_is_reproducible_and_greedy_agrees_with_scoring() {
    let model = smollm();
    let prompt = ids(
        model,
        "<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n",
    );
    let sample = |seed| {
        let options = GenerateOptions {
            max_new_tokens: 16,
            sampling: Sampling::Sample {
                temperature: 1.0,
                top_k: Some(50),
                top_p: Some(0.95),
                seed,
            },
            stop_at_eos: true,
        };
        model.generate(&prompt, &options).unwrap().tokens
    };
    assert_eq!(sample(7), sample(7));
    assert_ne!(sample(7), sample(8));

    let greedy = model
        .generate(
            &prompt,
            &GenerateOptions {
                max_new_tokens: 12,
                sampling: Sampling::Greedy,
                stop_at_eos: false,
            },
        )
        .unwrap();
    assert_eq!(greedy.stop, StopReason::MaxTokens);
    // Teacher-forcing the greedy text: every token is the argmax, with the same log-probs.
    let scored = model.score(&prompt, &greedy.tokens).unwrap();
    assert_eq!(scored.argmax, greedy.tokens);
    assert!(max_abs_diff(&scored.logprobs, &greedy.logprobs) < 1e-4);

    // Batched generation equals one-by-one generation.
    let prompts = vec![
        prompt.clone(),
        ids(model, "The capital of France is"),
        ids(model, "1, 2, 3,"),
    ];
    let options = GenerateOptions {
        max_new_tokens: 8,
        sampling: Sampling::Greedy,
        stop_at_eos: true,
    };
    let batch = model.generate_batch(&prompts, &options).unwrap();
    for (p, g) in prompts.iter().zip(&batch) {
        assert_eq!(model.generate(p, &options).unwrap().tokens, g.tokens);
    }

    // Generating from a shared prefix's cache equals generating from the whole prompt.
    let split = prompt.len() - 4;
    let prefix = model
        .forward(
            vec![Row::tokens(prompt[..split].to_vec()).with_logits(LogitsAt::None)],
            &Capture::kv(),
        )
        .unwrap()
        .remove(0)
        .kv
        .unwrap();
    let starts = vec![
        Continuation {
            past: Some(prefix.clone()),
            tokens: prompt[split..].to_vec(),
            positions: None,
        },
        Continuation {
            past: Some(prefix),
            tokens: prompt[split..].to_vec(),
            positions: Some((split as u32..prompt.len() as u32).collect()),
        },
    ];
    let forked = model.generate_continuations(starts, &options).unwrap();
    let whole = model.generate(&prompt, &options).unwrap();
    for g in &forked {
        assert_eq!(g.tokens, whole.tokens);
        assert!(max_abs_diff(&g.logprobs, &whole.logprobs) < 1e-4);
    }
    let empty = Continuation {
        past: None,
        tokens: Vec::new(),
        positions: None,
    };
    assert!(model.generate_continuations(vec![empty], &options).is_err());
}

#[test]
fn chat_models_stop_at_the_end_of_their_turn() {
    let model = smollm();
    let text = model
        .render_chat(
            &[glassbox_runtime::ChatMessage {
                role: "user".into(),
                content: "What is the capital of France?".into(),
            }],
            true,
        )
        .unwrap();
    let prompt = ids(model, &text);
    let g = model
        .generate(
            &prompt,
            &GenerateOptions {
                max_new_tokens: 64,
                sampling: Sampling::Greedy,
                stop_at_eos: true,
            },
        )
        .unwrap();
    assert_eq!(g.stop, StopReason::EndOfText, "{:?}", g.text);
    assert!(!g.text.is_empty());
}
