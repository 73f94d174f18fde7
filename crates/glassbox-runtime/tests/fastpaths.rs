//! Every fast path against the plain full forward pass: KV-cache continuation, forks, batches
//! of different lengths, captures, masks and custom positions, the differentiable path.

mod common;

use common::*;
use glassbox_runtime::{
    AttentionMask, Capture, Hook, LogitsAt, Model, Row, RowInput, ScoreRequest,
};

/// The project's bar for fast paths against the naive path (absolute, on logits).
const FAST_PATH_TOLERANCE: f32 = 1e-4;

const TEXT: &str = "The committee met on a rainy Tuesday to review the harbour expansion plans. \
                    Engineers reported that the northern breakwater had settled by four centimetres.";

fn all_logits(model: &Model, row: Row) -> Vec<Vec<f32>> {
    let logits = logits_everywhere(model, row);
    (0..logits.positions.len())
        .map(|i| logits.at(i).to_vec())
        .collect()
}

fn check_cache_paths(model: &Model, ids: &[u32]) {
    let full = all_logits(model, Row::tokens(ids.to_vec()));
    let split = ids.len() / 2;

    // Prefix once, then the suffix on its cache.
    let prefix = model
        .forward(
            vec![Row::tokens(ids[..split].to_vec()).with_logits(LogitsAt::All)],
            &Capture::kv(),
        )
        .unwrap()
        .remove(0);
    let cache = prefix.kv.unwrap();
    assert_eq!(cache.len(), split);
    let suffix = all_logits(
        model,
        Row::tokens(ids[split..].to_vec()).with_past(cache.clone()),
    );
    for (i, row) in suffix.iter().enumerate() {
        let d = max_abs_diff(row, &full[split + i]);
        assert!(
            d < FAST_PATH_TOLERANCE,
            "cached continuation, token {}: {d}",
            split + i
        );
    }
    let p = prefix.logits.unwrap();
    for (i, want) in full.iter().enumerate().take(split) {
        assert!(max_abs_diff(p.at(i), want) < FAST_PATH_TOLERANCE);
    }

    // Two forks of the same (shared) cache with different suffixes, in one batch; the cache
    // itself must be left as it was.
    let other: Vec<u32> = ids[split..].iter().rev().copied().collect();
    let outs = model
        .forward(
            vec![
                Row::tokens(ids[split..].to_vec())
                    .with_past(cache.clone())
                    .with_logits(LogitsAt::All),
                Row::tokens(other.clone())
                    .with_past(cache.clone())
                    .with_logits(LogitsAt::All),
            ],
            &Capture::none(),
        )
        .unwrap();
    let mut reference_other = ids[..split].to_vec();
    reference_other.extend(&other);
    let full_other = all_logits(model, Row::tokens(reference_other));
    for i in 0..other.len() {
        assert!(
            max_abs_diff(outs[0].logits.as_ref().unwrap().at(i), &full[split + i])
                < FAST_PATH_TOLERANCE
        );
        assert!(
            max_abs_diff(
                outs[1].logits.as_ref().unwrap().at(i),
                &full_other[split + i]
            ) < FAST_PATH_TOLERANCE
        );
    }
    assert_eq!(
        cache.len(),
        split,
        "forking left the shared cache untouched"
    );

    // A cache truncated back to a shorter prefix continues like that prefix.
    let short = cache.truncated(split - 2);
    let cont = all_logits(
        model,
        Row::tokens(ids[split - 2..].to_vec()).with_past(short),
    );
    assert!(max_abs_diff(&cont[0], &full[split - 2]) < FAST_PATH_TOLERANCE);
}

#[test]
fn kv_cache_continuations_and_forks_equal_the_full_pass() {
    let model = smollm();
    check_cache_paths(model, &ids(model, TEXT));
}

#[test]
fn kv_cache_paths_hold_for_gemma_too() {
    let model = gemma();
    let ids = model.tokenizer().encode(TEXT, true).unwrap().ids;
    check_cache_paths(model, &ids);
}

#[test]
fn batch_rows_do_not_depend_on_their_batch_mates() {
    let model = smollm();
    let texts = [
        TEXT,
        "Short one.",
        "A medium-length row about seabirds nesting near the lighthouse.",
    ];
    let rows: Vec<Vec<u32>> = texts.iter().map(|t| ids(model, t)).collect();
    let batched = model
        .forward(
            rows.iter()
                .map(|r| Row::tokens(r.clone()).with_logits(LogitsAt::All))
                .collect(),
            &Capture::none(),
        )
        .unwrap();
    for (r, out) in rows.iter().zip(&batched) {
        let alone = all_logits(model, Row::tokens(r.clone()));
        let logits = out.logits.as_ref().unwrap();
        for (i, want) in alone.iter().enumerate() {
            let d = max_abs_diff(logits.at(i), want);
            assert!(
                d < FAST_PATH_TOLERANCE,
                "row of {} tokens, position {i}: {d}",
                r.len()
            );
        }
    }
    // Batched scoring equals scoring alone.
    let requests: Vec<ScoreRequest> = rows
        .iter()
        .map(|r| ScoreRequest {
            context: r[..2].to_vec(),
            continuation: r[2..].to_vec(),
            past: None,
        })
        .collect();
    let together = model.score_batch(requests.clone()).unwrap();
    for (req, score) in requests.iter().zip(&together) {
        let alone = model.score(&req.context, &req.continuation).unwrap();
        assert!(max_abs_diff(&alone.logprobs, &score.logprobs) < FAST_PATH_TOLERANCE);
    }
}

#[test]
fn captured_activations_fit_together() {
    let model = smollm();
    let ids = ids(model, TEXT);
    let layers = model.config().num_layers;
    let capture = Capture::parse(
        &[
            "blocks.*.resid_pre",
            "blocks.3.resid_mid",
            "blocks.3.attn.out",
            "blocks.3.mlp.out",
            "blocks.3.resid_post",
            "blocks.0.attn.pattern",
            "blocks.29.attn.pattern",
            "final_norm",
        ],
        layers,
    )
    .unwrap();
    let out = model
        .forward(vec![Row::tokens(ids.clone())], &capture)
        .unwrap()
        .remove(0);
    let a = &out.activations;
    // The embeddings enter block 0.
    assert_eq!(a[&Hook::ResidPre(0)].data, model.embed(&ids).unwrap().data);
    // resid_mid = resid_pre + attn_out; resid_post = resid_mid + mlp_out = next resid_pre.
    let add = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| a + b).collect::<Vec<f32>>();
    assert!(
        max_abs_diff(
            &a[&Hook::ResidMid(3)].data,
            &add(&a[&Hook::ResidPre(3)].data, &a[&Hook::AttnOut(3)].data)
        ) < 1e-5
    );
    assert!(
        max_abs_diff(
            &a[&Hook::ResidPost(3)].data,
            &add(&a[&Hook::ResidMid(3)].data, &a[&Hook::MlpOut(3)].data)
        ) < 1e-5
    );
    assert_eq!(a[&Hook::ResidPost(3)].data, a[&Hook::ResidPre(4)].data);
    // Attention rows are distributions over the visible (earlier) keys.
    for layer in [0, 29] {
        let p = &a[&Hook::AttnPattern(layer)];
        let (heads, q, k) = (p.shape[0], p.shape[1], p.shape[2]);
        assert_eq!(
            (heads, q, k),
            (model.config().num_heads, ids.len(), ids.len())
        );
        for h in 0..heads {
            for i in 0..q {
                let row = &p.data[(h * q + i) * k..(h * q + i + 1) * k];
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                assert!(
                    row[i + 1..].iter().all(|&v| v == 0.0),
                    "no attention to the future"
                );
            }
        }
    }
    // The logit of the predicted token is the final-norm state times its LM-head row.
    let logits = out.logits.unwrap();
    let best = glassbox_runtime::argmax(logits.at(0));
    let h = a[&Hook::FinalNorm].row(ids.len() - 1);
    let row = model.lm_head_row(best).unwrap();
    let dot: f32 = h.iter().zip(&row).map(|(x, y)| x * y).sum();
    assert!((dot - logits.at(0)[best as usize]).abs() < 1e-3);
}

#[test]
fn hiding_a_span_equals_deleting_it_with_positions_kept() {
    // If no later token can see span S at any layer, the later tokens compute exactly what
    // they would without S at their original positions.
    let model = smollm();
    let ids = ids(model, TEXT);
    let (s0, s1) = (5, 12);
    let masked = all_logits(
        model,
        Row::tokens(ids.clone()).with_mask(AttentionMask::new().hide(s0..s1)),
    );
    let mut kept = ids[..s0].to_vec();
    kept.extend(&ids[s1..]);
    let mut positions: Vec<u32> = (0..s0 as u32).collect();
    positions.extend(s1 as u32..ids.len() as u32);
    let deleted = all_logits(model, Row::tokens(kept).with_positions(positions));
    for i in s1..ids.len() {
        let d = max_abs_diff(&masked[i], &deleted[i - (s1 - s0)]);
        assert!(d < FAST_PATH_TOLERANCE, "token {i}: {d}");
    }
    // And hiding changes the answer (the test would pass vacuously otherwise).
    let plain = all_logits(model, Row::tokens(ids.clone()));
    assert!(max_abs_diff(&plain[ids.len() - 1], &masked[ids.len() - 1]) > 0.1);
}

#[test]
fn embeddings_input_equals_token_input() {
    let model = gemma();
    let ids = model.tokenizer().encode(TEXT, true).unwrap().ids;
    let by_ids = all_logits(model, Row::tokens(ids.clone()));
    let by_embeddings = all_logits(
        model,
        Row {
            input: RowInput::Embeddings(model.embed(&ids).unwrap().data),
            ..Row::tokens(vec![])
        },
    );
    for (a, b) in by_ids.iter().zip(&by_embeddings) {
        assert_eq!(a, b);
    }
}

#[test]
fn differentiable_path_gives_the_fast_path_logits() {
    for model in [smollm(), gemma()] {
        let ids = model
            .tokenizer()
            .encode(
                "Why is the sky blue? Because",
                model.tokenizer().wants_bos(),
            )
            .unwrap()
            .ids;
        let fast = all_logits(model, Row::tokens(ids.clone()));
        let e = model.embed(&ids).unwrap();
        let x = candle_core::Tensor::from_vec(
            e.data,
            (ids.len(), e.shape[1]),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let slow = model
            .forward_differentiable(&x, &AttentionMask::new(), 0..ids.len())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let worst = fast
            .iter()
            .zip(&slow)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0f32, f32::max);
        println!(
            "{}: differentiable vs fast path, max |Δlogit| = {worst:.2e}",
            model.info().name
        );
        assert!(worst < 1e-3, "{worst}");
    }
}

#[test]
fn caches_share_prefixes_and_grow_in_place() {
    let model = smollm();
    let ids = ids(model, TEXT);
    let run = |row: Row| {
        model
            .forward(vec![row], &Capture::kv())
            .unwrap()
            .remove(0)
            .kv
            .unwrap()
    };
    let prefix = run(Row::tokens(ids[..10].to_vec()));
    // A fork adds a segment on top of the shared prefix; the prefix is not copied.
    let child = run(Row::tokens(ids[10..12].to_vec()).with_past(prefix.clone()));
    assert!(
        format!("{child:?}").contains("12 tokens in 2 segments"),
        "{child:?}"
    );
    assert_eq!(child.size_bytes(), prefix.size_bytes() * 12 / 10);
    // Continuing a long segment nobody else holds starts one new segment (the long one is
    // not reallocated), which then grows in place: decoding 4 tokens after a prefill leaves
    // the prefill's segment and one more, not one per token.
    let mut solo = run(Row::tokens(ids[..10].to_vec()));
    for &t in &ids[10..14] {
        solo = run(Row::tokens(vec![t]).with_past(solo));
    }
    assert!(
        format!("{solo:?}").contains("14 tokens in 2 segments"),
        "{solo:?}"
    );
    // And both agree with a plain pass.
    let full = all_logits(model, Row::tokens(ids[..15].to_vec()));
    let next = all_logits(model, Row::tokens(vec![ids[14]]).with_past(solo));
    assert!(max_abs_diff(&next[0], &full[14]) < FAST_PATH_TOLERANCE);
}

/// The logits of `tail` continuing `cache` (at the positions after it).
fn continued(model: &Model, cache: &glassbox_runtime::KvCache, tail: &[u32]) -> Vec<Vec<f32>> {
    all_logits(model, Row::tokens(tail.to_vec()).with_past(cache.clone()))
}

fn check_moved_caches(model: &Model) {
    let ids = ids(model, TEXT);
    let (head, tail) = ids.split_at(7);
    let kv = |row: Row| {
        model
            .forward(vec![row.with_logits(LogitsAt::None)], &Capture::kv())
            .unwrap()
            .remove(0)
            .kv
            .unwrap()
    };
    // The same tokens computed at positions 0.. and at 40..: moving the first by 40 gives the
    // second (a block that attends only within itself depends on relative positions alone).
    let at_zero = kv(Row::tokens(head.to_vec()));
    let at_forty = kv(Row::tokens(head.to_vec()).with_positions((40..47).collect()));
    let moved = model
        .assemble_cache(
            None,
            &[glassbox_runtime::Placed {
                cache: &at_zero,
                tokens: 0..7,
                at: 40,
            }],
        )
        .unwrap();
    assert_eq!(moved.positions(), at_forty.positions());
    let (a, b) = (
        continued(model, &moved, tail),
        continued(model, &at_forty, tail),
    );
    // Relative to the logits' scale: composing two rotations rounds differently from one
    // (Gemma's logits run to the tens, where f32 rounding alone is ~1e-5 absolute).
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let scale = y.iter().fold(1f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(x, y) / scale;
        assert!(d < 1e-5, "tail token {i}: {d} relative");
    }
    // Unmoved, the rotation would matter: the same cache left at 0..7 continues differently.
    let stale = model
        .forward(
            vec![
                Row::tokens(tail.to_vec())
                    .with_past(at_zero.clone())
                    .with_positions((47..47 + tail.len() as u32).collect())
                    .with_logits(LogitsAt::All),
            ],
            &Capture::none(),
        )
        .unwrap()
        .remove(0)
        .logits
        .unwrap();
    assert!(max_abs_diff(stale.at(tail.len() - 1), &b[tail.len() - 1]) > 1e-2);

    // A zero shift copies: a cache rebuilt from its own prefix and rest continues identically.
    let whole = kv(Row::tokens(ids[..ids.len() - 1].to_vec()));
    let rebuilt = model
        .assemble_cache(
            Some(&whole.truncated(3)),
            &[glassbox_runtime::Placed {
                cache: &whole,
                tokens: 3..whole.len(),
                at: 3,
            }],
        )
        .unwrap();
    let last = &ids[ids.len() - 1..];
    let whole_continued = continued(model, &whole, last);
    assert_eq!(continued(model, &rebuilt, last), whole_continued);

    // Assembled into the buffers of caches given back: the same cache, bit for bit. Only
    // `rebuilt`'s copied segment is taken back; `whole`, still held here, keeps its own.
    let buffers = glassbox_runtime::KvBuffers::default();
    buffers.reclaim(rebuilt);
    buffers.reclaim(whole.clone());
    let reused = model
        .assemble_cache_in(
            None,
            &[glassbox_runtime::Placed {
                cache: &at_zero,
                tokens: 0..7,
                at: 40,
            }],
            &buffers,
        )
        .unwrap();
    assert_eq!(continued(model, &reused, tail), a);
    assert_eq!(continued(model, &whole, last), whole_continued);

    // Positions that go backwards are refused.
    let err = model
        .assemble_cache(
            Some(&at_forty),
            &[glassbox_runtime::Placed {
                cache: &at_zero,
                tokens: 0..7,
                at: 10,
            }],
        )
        .unwrap_err();
    assert!(err.to_string().contains("increase"), "{err}");
}

#[test]
fn moved_caches_equal_caches_computed_at_the_new_positions() {
    check_moved_caches(smollm());
}

#[test]
fn moved_caches_hold_for_gemma_local_and_global_rotary_settings() {
    check_moved_caches(gemma());
}
