//! The hand-written backward ([`Model::gradients`]) against candle autograd on the
//! differentiable reference path and against finite differences, on both architectures; batched
//! rows against one-at-a-time; capture-point gradients; bad requests.

mod common;

use candle_core::{Device, Tensor, Var};
use common::*;
use glassbox_runtime::{
    Array, AttentionMask, Capture, GradientRow, Hook, LoadOptions, LogitsAt, Model, Row,
    RuntimeError, WeightMode,
};

/// A fixed pseudo-random weighting of the logits at `n` positions: the objective
/// `Σ c ⊙ logits` has gradient `c`, and reaches every logit.
fn weights(n: usize, vocab: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n * vocab)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
        })
        .collect()
}

fn embed(model: &Model, text: &str) -> Vec<f32> {
    let ids = model
        .tokenizer()
        .encode(text, model.tokenizer().wants_bos())
        .unwrap()
        .ids;
    model.embed(&ids).unwrap().data
}

/// `∂(Σ c ⊙ logits[positions])/∂embeddings` by candle autograd on the reference path.
fn autograd(
    model: &Model,
    e: &[f32],
    mask: &AttentionMask,
    positions: std::ops::Range<usize>,
    c: &[f32],
) -> Vec<f32> {
    let d = model.config().hidden_size;
    let n = e.len() / d;
    let x = Var::from_tensor(&Tensor::from_vec(e.to_vec(), (n, d), &Device::Cpu).unwrap()).unwrap();
    let logits = model
        .forward_differentiable(x.as_tensor(), mask, positions.clone())
        .unwrap();
    let vocab = logits.dim(1).unwrap();
    let c = Tensor::from_vec(c.to_vec(), (positions.len(), vocab), &Device::Cpu).unwrap();
    let grads = (logits * c).unwrap().sum_all().unwrap().backward().unwrap();
    grads
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Logits `[positions, vocab]` of the fast forward from embeddings `x`.
fn fast_logits(
    model: &Model,
    x: &[f32],
    mask: &AttentionMask,
    positions: std::ops::Range<usize>,
) -> Vec<f32> {
    let row = Row::embeddings(x.to_vec())
        .with_mask(mask.clone())
        .with_logits(LogitsAt::Range(positions));
    let out = model
        .forward(vec![row], &Capture::none())
        .unwrap()
        .remove(0);
    out.logits.unwrap().values.data
}

fn relative(a: &[f32], b: &[f32]) -> f32 {
    max_abs_diff(a, b) / b.iter().fold(0f32, |m, v| m.max(v.abs()))
}

#[test]
fn backward_equals_autograd_and_finite_differences_on_both_architectures() {
    for model in [smollm(), gemma()] {
        let vocab = model.config().vocab_size;
        let d = model.config().hidden_size;
        let e = embed(
            model,
            "The capital of France is Paris, and the capital of Italy is",
        );
        let n = e.len() / d;
        // Logits at the last three positions (a continuation's rows), with a blocked span.
        let positions = n - 3..n;
        let mask = AttentionMask::new().block(6..n, 2..4);
        let c = weights(3, vocab, 1);
        let row = GradientRow {
            embeddings: e.clone(),
            mask: mask.clone(),
            logits_at: positions.clone().collect(),
            patch: None,
        };
        let got = model
            .gradients(vec![row], &[], &|_, logits: &Array| {
                assert_eq!(logits.shape, vec![3, vocab]);
                c.clone()
            })
            .unwrap()
            .remove(0);
        let want = autograd(model, &e, &mask, positions.clone(), &c);
        let rel = relative(&got.input.data, &want);
        println!(
            "{}: hand-written vs autograd, max |Δ| / max |g| = {rel:.2e}",
            model.info().name
        );
        assert!(rel < 1e-3, "{rel}");

        // The logits the objective saw are the fast forward's.
        let fast = fast_logits(model, &e, &mask, positions.clone());
        assert!(max_abs_diff(&got.logits.data, &fast) < 1e-4);

        // A directional derivative by central differences on the fast forward.
        let objective = |x: &[f32]| -> f64 {
            let l = fast_logits(model, x, &mask, positions.clone());
            l.iter().zip(&c).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let u: Vec<f32> = weights(n, d, 7).iter().map(|v| v.signum()).collect();
        let h = if model.config().embedding_scale.is_some() {
            2e-2
        } else {
            3e-3
        };
        let shifted = |s: f32| {
            e.iter()
                .zip(&u)
                .map(|(x, du)| x + s * h * du)
                .collect::<Vec<f32>>()
        };
        let numeric = (objective(&shifted(1.0)) - objective(&shifted(-1.0))) / (2.0 * h as f64);
        let analytic: f64 = got
            .input
            .data
            .iter()
            .zip(&u)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        let err = (numeric - analytic).abs() / analytic.abs().max(1e-3);
        println!(
            "{}: directional derivative {analytic:.5} vs central difference {numeric:.5}",
            model.info().name
        );
        assert!(err < 2e-2, "{analytic} vs {numeric}");
    }
}

#[test]
fn batched_rows_equal_rows_one_at_a_time_and_batches_split_by_memory() {
    for model in [smollm(), gemma()] {
        let (d, vocab) = (model.config().hidden_size, model.config().vocab_size);
        let texts = [
            "A short one.",
            "Gradients of several rows of different lengths, packed into one batch,",
            "must not depend on their batch-mates at all, whatever the split.",
        ];
        // Enough rows to pass the bound on saved activations (48 MiB) even when only the
        // residual streams are saved (~300 tokens of SmolLM2), so they go as several batches
        // that rebuild each block's record on the way back (on Gemma 3 the rebuild also runs
        // the attention and both output projections, for the post-norms) — while a row alone
        // saves every block's record: the test holds the two paths, and the batch split, to
        // each other. Every fifth row patches the stream of a middle layer, which a rebuilt
        // record must see too.
        let point = Hook::ResidMid(model.config().num_layers / 2);
        let rows: Vec<GradientRow> = (0..60)
            .map(|i| {
                let e = embed(model, texts[i % 3]);
                let n = e.len() / d;
                let mut row = GradientRow::new(
                    e.iter().map(|v| v * (1.0 + i as f32 * 0.01)).collect(),
                    vec![n - 1],
                );
                if i % 5 == 0 {
                    row.patch = Some((point, e.iter().map(|v| v * 0.3).collect()));
                }
                row
            })
            .collect();
        let tokens: usize = rows.iter().map(|r| r.embeddings.len() / d).sum();
        assert!(tokens > 600, "{tokens} tokens: several batches");
        let c = |i: usize| weights(1, vocab, i as u64 + 3);
        // The gradient at the patched point itself comes from the MLP backward of a record
        // rebuilt from the patched stream.
        let together = model
            .gradients(rows.clone(), &[point], &|i, _| c(i))
            .unwrap();
        for (i, row) in rows.into_iter().enumerate() {
            let alone = model
                .gradients(vec![row], &[point], &|_, _| c(i))
                .unwrap()
                .remove(0);
            let name = &model.info().name;
            assert!(
                max_abs_diff(&together[i].logits.data, &alone.logits.data) < 1e-5,
                "{name}, row {i}"
            );
            let at = relative(&together[i].at[&point].1.data, &alone.at[&point].1.data);
            assert!(at < 1e-4, "{name}, row {i}, at {}: {at}", point.name());
            if i % 5 == 0 {
                // Nothing before the patch reaches the objective, in a batch or alone.
                assert!(
                    together[i].input.data.iter().all(|&v| v == 0.0),
                    "{name}, row {i}"
                );
                assert!(
                    alone.input.data.iter().all(|&v| v == 0.0),
                    "{name}, row {i}"
                );
            } else {
                // Not bit-identical: the backward GEMM picks its kernel (so its summation
                // order) by the batch's row count.
                let rel = relative(&together[i].input.data, &alone.input.data);
                assert!(rel < 1e-4, "{name}, row {i}: {rel}");
            }
        }
    }
}

#[test]
fn capture_point_gradients_are_the_residual_streams() {
    let model = smollm();
    let vocab = model.config().vocab_size;
    let e = embed(model, "Layer attribution reads the residual stream");
    let n = e.len() / model.config().hidden_size;
    let hooks = [
        Hook::ResidPre(0),
        Hook::ResidPre(12),
        Hook::AttnOut(12),
        Hook::ResidMid(12),
        Hook::MlpOut(29),
        Hook::ResidPost(29),
    ];
    let c = weights(1, vocab, 9);
    let got = model
        .gradients(
            vec![GradientRow::new(e.clone(), vec![n - 1])],
            &hooks,
            &|_, _| c.clone(),
        )
        .unwrap()
        .remove(0);
    // resid_pre of layer 0 is the input itself.
    let (act0, grad0) = &got.at[&Hook::ResidPre(0)];
    assert_eq!(act0.data, e);
    assert_eq!(grad0.data, got.input.data);
    // Sub-block outputs are added to the stream: their gradient is the stream's after them.
    assert_eq!(got.at[&Hook::AttnOut(12)].1, got.at[&Hook::ResidMid(12)].1);
    assert_eq!(got.at[&Hook::MlpOut(29)].1, got.at[&Hook::ResidPost(29)].1);
    // Activations equal the fast forward's captures.
    let captured = model
        .forward(
            vec![Row::embeddings(e)],
            &Capture::parse(&["blocks.12.resid_pre", "blocks.29.mlp.out"], 30).unwrap(),
        )
        .unwrap()
        .remove(0)
        .activations;
    assert!(
        max_abs_diff(
            &got.at[&Hook::ResidPre(12)].0.data,
            &captured[&Hook::ResidPre(12)].data
        ) < 1e-5
    );
    assert!(
        max_abs_diff(
            &got.at[&Hook::MlpOut(29)].0.data,
            &captured[&Hook::MlpOut(29)].data
        ) < 1e-5
    );
    // Only positions up to the target's row matter; a later-layer gradient differs from the input's.
    assert_ne!(got.at[&Hook::ResidPre(12)].1.data, got.input.data);
}

#[test]
fn a_patch_replaces_the_stream_and_cuts_the_gradient_above_it() {
    let model = smollm();
    let vocab = model.config().vocab_size;
    let e = embed(model, "Patching the residual stream of layer twelve");
    let n = e.len() / model.config().hidden_size;
    let c = weights(1, vocab, 5);
    let hook = Hook::ResidPre(12);
    let plain = model
        .gradients(
            vec![GradientRow::new(e.clone(), vec![n - 1])],
            &[hook],
            &|_, _| c.clone(),
        )
        .unwrap()
        .remove(0);
    let own = plain.at[&hook].0.data.clone();
    // Patching a point with its own activation changes nothing after it...
    let mut row = GradientRow::new(e.clone(), vec![n - 1]);
    row.patch = Some((hook, own.clone()));
    let patched = model
        .gradients(vec![row], &[hook], &|_, _| c.clone())
        .unwrap()
        .remove(0);
    assert!(max_abs_diff(&patched.logits.data, &plain.logits.data) < 1e-5);
    assert!(relative(&patched.at[&hook].1.data, &plain.at[&hook].1.data) < 1e-5);
    // ...and nothing before it reaches the objective.
    assert!(patched.input.data.iter().all(|&v| v == 0.0));
    // Another stream there gives other logits, whatever the input.
    let mut row = GradientRow::new(vec![0.5; e.len()], vec![n - 1]);
    row.patch = Some((hook, own.iter().map(|v| v * 0.5).collect()));
    let other = model
        .gradients(vec![row], &[], &|_, _| c.clone())
        .unwrap()
        .remove(0);
    assert!(max_abs_diff(&other.logits.data, &plain.logits.data) > 1e-2);
    let mut bad = GradientRow::new(e.clone(), vec![n - 1]);
    bad.patch = Some((Hook::AttnOut(3), own));
    let msg = model
        .gradients(vec![bad], &[], &|_, _| c.clone())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("residual stream"), "{msg}");
}

#[test]
fn attention_times_gradient_adds_up_to_the_attention_outputs_gradient_times_activation() {
    // Per query, Σ_k P[k]·∂L/∂P[k] = ⟨∂L/∂o, o⟩ for the head output o = Σ_k P[k]·v[k], and the
    // output projection is linear: over a layer, the edges sum to attn.out's gradient ×
    // activation (SmolLM2 has no post-attention norm).
    let model = smollm();
    let vocab = model.config().vocab_size;
    let e = embed(
        model,
        "Attention edges carry the gradient back to the tokens they read",
    );
    let n = e.len() / model.config().hidden_size;
    let c = weights(1, vocab, 11);
    let hooks = [Hook::AttnPattern(12), Hook::AttnOut(12)];
    let got = model
        .gradients(vec![GradientRow::new(e, vec![n - 1])], &hooks, &|_, _| {
            c.clone()
        })
        .unwrap()
        .remove(0);
    let edges = &got.edges[&Hook::AttnPattern(12)];
    let heads = model.config().num_heads;
    assert_eq!(edges.shape, vec![heads, n, n]);
    // Causal: no edge to a later token.
    for h in 0..heads {
        for q in 0..n {
            assert!(
                edges.data[(h * n + q) * n + q + 1..(h * n + q + 1) * n]
                    .iter()
                    .all(|&v| v == 0.0)
            );
        }
    }
    let total: f64 = edges.data.iter().map(|&v| v as f64).sum();
    let (act, grad) = &got.at[&Hook::AttnOut(12)];
    let want: f64 = act
        .data
        .iter()
        .zip(&grad.data)
        .map(|(&a, &g)| a as f64 * g as f64)
        .sum();
    println!("Σ edges {total:.6e} vs ⟨∂L/∂attn.out, attn.out⟩ {want:.6e}");
    assert!(
        (total - want).abs() < 1e-3 * want.abs().max(1e-6),
        "{total} vs {want}"
    );
}

#[test]
fn bad_gradient_requests_are_clear_errors() {
    let model = smollm();
    let vocab = model.config().vocab_size;
    let e = embed(model, "Bad requests");
    let n = e.len() / model.config().hidden_size;
    let row = |logits_at: Vec<usize>| GradientRow::new(e.clone(), logits_at);
    let ok = |_: usize, _: &Array| vec![0f32; vocab];
    let err = |r: Result<_, RuntimeError>| r.map(|_: Vec<_>| ()).unwrap_err().to_string();
    assert!(
        err(model.gradients(vec![row(vec![n - 1])], &[Hook::FinalNorm], &ok))
            .contains("residual stream")
    );
    assert!(
        err(model.gradients(vec![row(vec![n - 1])], &[Hook::ResidPre(30)], &ok))
            .contains("layers 0..29")
    );
    assert!(err(model.gradients(vec![row(vec![])], &[], &ok)).contains("one position"));
    assert!(err(model.gradients(vec![row(vec![n])], &[], &ok)).contains("logits requested"));
    assert!(
        err(model.gradients(vec![row(vec![n - 1])], &[], &|_, _| vec![0f32; 3]))
            .contains("gradient has 3 values")
    );
    let quantized = Model::load_gguf(
        &model_path(SMOLLM),
        SMOLLM,
        LoadOptions {
            weights: WeightMode::Quantized,
        },
    )
    .unwrap();
    let msg = err(quantized.gradients(vec![row(vec![n - 1])], &[], &ok));
    assert!(msg.contains("f32"), "{msg}");
}
