//! The evaluation engine (memo + prefix trie + KV forks + batching) against evaluating every
//! coalition's prompt from scratch, on the real default model, for every perturbation.

mod common;

use common::model;
use glassbox_attribution::cite::{DEFAULT_TEMPLATE, RagTemplate};
use glassbox_attribution::{Coalition, Engine, Perturbation, Segment, SegmentedPrompt};
use glassbox_runtime::ChatMessage;

/// The project's bar for fast paths against the naive path (log-probabilities).
const FAST_PATH_TOLERANCE: f32 = 1e-4;

const PASSAGES: &[&str] = &[
    "The Vellmora lighthouse stands on the northern cape of Saltreach Island.",
    "It was rebuilt in 1874 by the engineer Ottilie Brask after a storm.",
    "Its lamp was converted to electricity in 1931.",
    "The keeper's cottage now houses a small museum of shipwrecks.",
    "Ferries to Saltreach leave twice a day from Port Anvell.",
    "A second lighthouse, at Corran Point, was built in 1902.",
];

/// The cite prompt, built by hand as the `cite` module does: chat frame, numbered lines.
fn prompt() -> SegmentedPrompt {
    let m = model();
    let t = RagTemplate::parse(DEFAULT_TEMPLATE).unwrap();
    let marker = "\u{1}M\u{1}";
    let chat = m
        .render_chat(
            &[ChatMessage {
                role: "user".into(),
                content: marker.into(),
            }],
            true,
        )
        .unwrap();
    let (before, after) = chat.split_once(marker).unwrap();
    let (user_before, user_after) = t.user.split_once("{passages}").unwrap();
    let q = "Who rebuilt the Vellmora lighthouse?";
    let mut segments = vec![Segment::Fixed(format!(
        "{before}{}",
        user_before.replace("{question}", q)
    ))];
    for (i, p) in PASSAGES.iter().enumerate() {
        segments.push(Segment::Unit {
            unit: i,
            kept: t
                .passage
                .replace("{number}", &(i + 1).to_string())
                .replace("{text}", p),
            placeholder: t.placeholder.replace("{number}", &(i + 1).to_string()),
        });
    }
    segments.push(Segment::Fixed(format!(
        "{}{after}",
        user_after.replace("{question}", q)
    )));
    SegmentedPrompt {
        segments,
        bos: false,
    }
}

fn answer() -> Vec<u32> {
    model()
        .tokenizer()
        .encode("It was rebuilt by Ottilie Brask in 1874.", false)
        .unwrap()
        .ids
}

fn all_coalitions(n: usize) -> Vec<Coalition> {
    (0..1u64 << n).map(|m| Coalition::from_mask(n, m)).collect()
}

#[test]
fn engine_equals_from_scratch_for_every_perturbation() {
    let n = PASSAGES.len();
    for perturbation in [
        Perturbation::Delete,
        Perturbation::Placeholder,
        Perturbation::AttentionBlock,
    ] {
        let mut engine = Engine::new(model(), prompt(), perturbation.clone(), answer()).unwrap();
        let coalitions = all_coalitions(n);
        let fast = engine.readouts(&coalitions).unwrap();
        let (slow, scratch) = engine.from_scratch(&coalitions).unwrap();
        let mut worst = 0f32;
        for (a, b) in fast.iter().zip(&slow) {
            for (x, y) in a.iter().zip(b) {
                worst = worst.max((x - y).abs());
            }
        }
        let stats = engine.stats();
        println!(
            "{perturbation:?}: max |Δ log p| = {worst:.2e}; engine {} tokens in {} passes ({:.2} s), \
             from scratch {} tokens ({:.2} s): {:.1}x fewer tokens",
            stats.tokens,
            stats.forward_passes,
            stats.seconds,
            scratch.tokens,
            scratch.seconds,
            scratch.tokens as f64 / stats.tokens as f64
        );
        assert!(worst < FAST_PATH_TOLERANCE, "{perturbation:?}: {worst}");
        assert_eq!(stats.evaluations, 1 << n);
        assert_eq!(stats.tokens_from_scratch, scratch.tokens);
        assert!(stats.tokens * 2 < scratch.tokens, "the trie saves tokens");
        // Removing passages changes the answer's probability (the test is not vacuous).
        let spread = fast
            .iter()
            .map(|v| v.iter().sum::<f32>())
            .fold(f32::NEG_INFINITY, f32::max)
            - fast
                .iter()
                .map(|v| v.iter().sum::<f32>())
                .fold(f32::INFINITY, f32::min);
        assert!(spread > 1.0, "{perturbation:?}: spread {spread}");
        // Memoized: asking again costs nothing.
        let before = engine.stats().tokens;
        assert_eq!(
            engine.readouts(&coalitions[..5]).unwrap(),
            fast[..5].to_vec()
        );
        assert_eq!(engine.stats().tokens, before);
    }
}

#[test]
fn engine_generations_equal_generating_each_prompt_from_scratch() {
    let n = PASSAGES.len();
    for (perturbation, coalitions) in [
        (Perturbation::Delete, all_coalitions(n)),
        (Perturbation::Placeholder, all_coalitions(n)[..16].to_vec()),
    ] {
        let mut engine = Engine::new(model(), prompt(), perturbation.clone(), answer()).unwrap();
        let fast = engine.generations(&coalitions, 12).unwrap();
        let slow = engine.generations_from_scratch(&coalitions, 12).unwrap();
        let same = fast.iter().zip(&slow).filter(|(a, b)| a == b).count();
        let mut distinct = fast.clone();
        distinct.sort();
        distinct.dedup();
        println!(
            "{perturbation:?}: {same}/{} generations identical, {} distinct answers, {} tokens in {} passes",
            fast.len(),
            distinct.len(),
            engine.stats().tokens,
            engine.stats().forward_passes
        );
        assert_eq!(same, fast.len(), "{perturbation:?}");
        assert!(distinct.len() > 1, "coalitions change the answer");
        assert!(fast.iter().all(|g| !g.is_empty() && g.len() <= 12));
        // Memoized.
        let before = engine.stats().tokens;
        assert_eq!(engine.generations(&coalitions[..3], 12).unwrap(), fast[..3]);
        assert_eq!(engine.stats().tokens, before);
    }
    let engine = Engine::new(model(), prompt(), Perturbation::AttentionBlock, answer()).unwrap();
    assert!(
        engine
            .generations_from_scratch(&all_coalitions(n)[..2], 4)
            .is_err()
    );
}

#[test]
fn engine_rejects_prompts_that_do_not_tokenize_by_segment() {
    // A unit boundary inside a word: "light" + "house" tokenizes differently from "lighthouse".
    let prompt = SegmentedPrompt {
        segments: vec![
            Segment::Fixed("The light".into()),
            Segment::Unit {
                unit: 0,
                kept: "house".into(),
                placeholder: String::new(),
            },
            Segment::Fixed(" is tall.".into()),
        ],
        bos: false,
    };
    let err = Engine::new(model(), prompt, Perturbation::Delete, answer())
        .err()
        .unwrap();
    assert!(err.to_string().contains("tokenize independently"), "{err}");
}
