//! Explanation-guided visual token pruning: drop the vision tokens an explanation scores
//! lowest and see how much of the answer survives (after "Generic Token Compression in
//! Multimodal LLMs from an Explainability Perspective"). Tokens are removed from the input;
//! the rest keep their order.

use glassbox_runtime::{Capture, GenerateOptions, Hook, LogitsAt, Row, RuntimeError, Sampling};
use glassbox_vision::{Prompt, VisionLanguageModel, generate_from_embeddings};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::caption::AnswerMaps;

/// What ranks the vision tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneBy {
    /// Each token's largest TAM value over the answer's tokens.
    Tam,
    /// Layer-0 attention from the prompt's last position (mean over heads).
    FirstLayerAttention,
    /// A seeded random order (the floor).
    Random,
}

/// The answer after pruning a fraction of the vision tokens.
#[derive(Debug, Clone, Serialize)]
pub struct PruneOutcome {
    pub by: PruneBy,
    /// Share of the vision tokens dropped.
    pub fraction: f32,
    /// `ln p(answer)` with the pruned prompt minus with the full one.
    pub logprob_change: f32,
    /// Whether greedy decoding from the pruned prompt gives the same answer.
    pub same_answer: bool,
}

fn answer_logprob(
    model: &VisionLanguageModel,
    ids: &[u32],
    embeddings: &[f32],
    answer: &[u32],
) -> Result<f32, RuntimeError> {
    let text = model.text();
    let n = ids.len();
    let mut e = embeddings.to_vec();
    e.extend(text.embed(answer)?.data);
    let row = Row::embeddings(e)
        .with_logits(LogitsAt::Range(n - 1..n - 1 + answer.len()))
        .with_score(answer.to_vec());
    let scores = text
        .forward(vec![row], &Capture::none())?
        .remove(0)
        .scores
        .expect("scores were asked for");
    Ok(scores.iter().map(|s| s.logprob).sum())
}

/// Prunes `fractions` of `prompt`'s vision tokens by each ranking and measures the answer
/// (`maps`: TAM of `answer`, the model's greedy answer to the full prompt).
pub fn prune_study(
    model: &VisionLanguageModel,
    prompt: &Prompt,
    answer: &[u32],
    maps: &AnswerMaps,
    fractions: &[f32],
    seed: u64,
) -> Result<Vec<PruneOutcome>, RuntimeError> {
    let text = model.text();
    let d = text.config().hidden_size;
    let vision = prompt.image_positions();
    let full = answer_logprob(model, &prompt.ids, &prompt.embeddings, answer)?;
    // Rankings: a score per vision token (higher is kept longer).
    let tam: Vec<f32> = (0..vision.len())
        .map(|i| {
            maps.maps
                .iter()
                .map(|m| m.maps.tam.iter().flatten().nth(i).copied().unwrap_or(0.0))
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect();
    let out = text
        .forward(
            vec![Row::embeddings(prompt.embeddings.clone()).with_logits(LogitsAt::None)],
            &Capture::none().with(Hook::AttnPattern(0)),
        )?
        .remove(0);
    let pattern = &out.activations[&Hook::AttnPattern(0)];
    let (heads, lq, lk) = (pattern.shape[0], pattern.shape[1], pattern.shape[2]);
    let attention: Vec<f32> = vision
        .iter()
        .map(|&k| {
            (0..heads)
                .map(|h| pattern.data[(h * lq + lq - 1) * lk + k])
                .sum::<f32>()
                / heads as f32
        })
        .collect();
    let mut random: Vec<usize> = (0..vision.len()).collect();
    random.shuffle(&mut StdRng::seed_from_u64(seed));
    let order = |scores: &[f32]| -> Vec<usize> {
        let mut o: Vec<usize> = (0..scores.len()).collect();
        o.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        o
    };
    let rankings = [
        (PruneBy::Tam, order(&tam)),
        (PruneBy::FirstLayerAttention, order(&attention)),
        (PruneBy::Random, random),
    ];
    let options = GenerateOptions {
        max_new_tokens: answer.len() + 4,
        sampling: Sampling::Greedy,
        stop_at_eos: true,
    };
    let mut outcomes = Vec::new();
    for (by, lowest_first) in &rankings {
        for &fraction in fractions {
            let drop = ((vision.len() as f32) * fraction).round() as usize;
            let mut dropped = vec![false; prompt.ids.len()];
            for &i in &lowest_first[..drop] {
                dropped[vision[i]] = true;
            }
            let keep: Vec<usize> = (0..prompt.ids.len()).filter(|&p| !dropped[p]).collect();
            let ids: Vec<u32> = keep.iter().map(|&p| prompt.ids[p]).collect();
            let embeddings: Vec<f32> = keep
                .iter()
                .flat_map(|&p| prompt.embeddings[p * d..(p + 1) * d].iter().copied())
                .collect();
            let pruned = answer_logprob(model, &ids, &embeddings, answer)?;
            let generated = generate_from_embeddings(text, &ids, &embeddings, &options)?;
            outcomes.push(PruneOutcome {
                by: *by,
                fraction,
                logprob_change: pruned - full,
                same_answer: generated.tokens == answer,
            });
        }
    }
    Ok(outcomes)
}
