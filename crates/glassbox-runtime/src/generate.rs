//! Generation: greedy or seeded sampling, batched, stopping at end-of-turn/EOS or a limit.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::RuntimeError;
use crate::capture::Capture;
use crate::forward::{LogitsAt, Row};
use crate::kv::KvCache;
use crate::model::Model;
use crate::score::{argmax, log_softmax_at};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sampling {
    /// The most likely token (ties: the lowest id).
    Greedy,
    /// Sampling at `temperature` from the `top_k` most likely tokens whose cumulative
    /// probability first reaches `top_p`; the same seed gives the same text.
    Sample {
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        seed: u64,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Stop at the tokenizer's end-of-turn/EOS tokens.
    pub stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            sampling: Sampling::Greedy,
            stop_at_eos: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An end-of-turn or EOS token (not included in `tokens`).
    EndOfText,
    MaxTokens,
    /// The context window is full.
    ContextFull,
}

/// A generated continuation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    /// `ln p(token)` of each generated token under the model's (temperature-1) distribution.
    pub logprobs: Vec<f32>,
    pub stop: StopReason,
}

/// Where one generation starts: an optional cache, then prompt tokens not yet run (at least
/// one), at the given positions (default: right after the cache).
#[derive(Debug, Clone)]
pub struct Continuation {
    pub past: Option<KvCache>,
    pub tokens: Vec<u32>,
    pub positions: Option<Vec<u32>>,
}

/// Picks the next token from logits.
fn choose(logits: &[f32], sampling: Sampling, rng: &mut Option<StdRng>) -> u32 {
    match sampling {
        Sampling::Greedy => argmax(logits),
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } => {
            let t = temperature.max(1e-6) as f64;
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            if let Some(k) = top_k {
                order.truncate(k.max(1));
            }
            let max = logits[order[0]] as f64;
            let mut probs: Vec<f64> = order
                .iter()
                .map(|&i| ((logits[i] as f64 - max) / t).exp())
                .collect();
            let z: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= z);
            if let Some(p) = top_p {
                let mut cumulative = 0.0;
                let keep = probs
                    .iter()
                    .position(|&q| {
                        cumulative += q;
                        cumulative >= p as f64
                    })
                    .map_or(probs.len(), |i| i + 1);
                probs.truncate(keep);
                order.truncate(keep);
                let z: f64 = probs.iter().sum();
                probs.iter_mut().for_each(|q| *q /= z);
            }
            let rng = rng.as_mut().expect("sampling has a generator");
            let mut u: f64 = rng.r#gen();
            for (&i, &p) in order.iter().zip(&probs) {
                if u < p {
                    return i as u32;
                }
                u -= p;
            }
            *order.last().expect("at least one candidate") as u32
        }
    }
}

impl Model {
    /// Generates a continuation of `prompt` (token ids, BOS included if wanted).
    pub fn generate(
        &self,
        prompt: &[u32],
        options: &GenerateOptions,
    ) -> Result<Generation, RuntimeError> {
        Ok(self.generate_batch(&[prompt.to_vec()], options)?.remove(0))
    }

    /// Generates continuations of several prompts, decoding them together: each step is one
    /// batched forward over the sequences still running. Sampling uses one generator per
    /// prompt (seeded `seed + index`), so a prompt's text does not depend on its batch-mates.
    pub fn generate_batch(
        &self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Vec<Generation>, RuntimeError> {
        let starts = prompts
            .iter()
            .map(|p| Continuation {
                past: None,
                tokens: p.clone(),
                positions: None,
            })
            .collect();
        self.generate_continuations(starts, options)
    }

    /// Generates from prompts that continue KV caches (e.g. prefixes shared between many
    /// prompts and computed once), decoding them together as [`Model::generate_batch`] does.
    pub fn generate_continuations(
        &self,
        starts: Vec<Continuation>,
        options: &GenerateOptions,
    ) -> Result<Vec<Generation>, RuntimeError> {
        if let Sampling::Sample {
            temperature, top_p, ..
        } = options.sampling
            && (temperature.is_nan()
                || temperature <= 0.0
                || top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)))
        {
            return Err(RuntimeError::InvalidRequest(
                "temperature must be > 0 and top-p in (0, 1]".into(),
            ));
        }
        let stop_ids = if options.stop_at_eos {
            self.tokenizer().stop_ids()
        } else {
            Vec::new()
        };
        let window = self.config().context_length;
        let n = starts.len();
        let mut rngs: Vec<Option<StdRng>> = (0..n)
            .map(|i| match options.sampling {
                Sampling::Sample { seed, .. } => {
                    Some(StdRng::seed_from_u64(seed.wrapping_add(i as u64)))
                }
                Sampling::Greedy => None,
            })
            .collect();
        let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut logprobs: Vec<Vec<f32>> = vec![Vec::new(); n];
        let mut stops: Vec<Option<StopReason>> = vec![None; n];
        // Each step feeds, per running sequence, its pending tokens (first the prompt).
        let mut caches: Vec<Option<KvCache>> = Vec::with_capacity(n);
        let mut pending: Vec<Vec<u32>> = Vec::with_capacity(n);
        let mut positions: Vec<Option<Vec<u32>>> = Vec::with_capacity(n);
        for start in starts {
            if start.tokens.is_empty() {
                return Err(RuntimeError::InvalidRequest(
                    "a generation needs at least one prompt token after its cache".into(),
                ));
            }
            caches.push(start.past);
            pending.push(start.tokens);
            positions.push(start.positions);
        }
        if options.max_new_tokens == 0 {
            stops
                .iter_mut()
                .for_each(|s| *s = Some(StopReason::MaxTokens));
        }
        loop {
            let running: Vec<usize> = (0..n).filter(|&i| stops[i].is_none()).collect();
            if running.is_empty() {
                break;
            }
            let rows = running
                .iter()
                .map(|&i| {
                    let mut row =
                        Row::tokens(std::mem::take(&mut pending[i])).with_logits(LogitsAt::Last);
                    if let Some(p) = positions[i].take() {
                        row = row.with_positions(p);
                    }
                    if let Some(c) = caches[i].take() {
                        row = row.with_past(c);
                    }
                    row
                })
                .collect();
            let outputs = self.forward(rows, &Capture::kv())?;
            for (&i, out) in running.iter().zip(outputs) {
                let logits = out.logits.expect("asked for the last logits");
                let next = choose(logits.at(0), options.sampling, &mut rngs[i]);
                let cache = out.kv.expect("asked for the cache");
                if stop_ids.contains(&next) {
                    stops[i] = Some(StopReason::EndOfText);
                    continue;
                }
                tokens[i].push(next);
                logprobs[i].push(log_softmax_at(logits.at(0), next));
                if tokens[i].len() >= options.max_new_tokens {
                    stops[i] = Some(StopReason::MaxTokens);
                } else if cache.next_position() as usize >= window {
                    stops[i] = Some(StopReason::ContextFull);
                } else {
                    pending[i] = vec![next];
                    caches[i] = Some(cache);
                }
            }
        }
        tokens
            .into_iter()
            .zip(logprobs)
            .zip(stops)
            .map(|((tokens, logprobs), stop)| {
                Ok(Generation {
                    text: self.tokenizer().decode(&tokens)?,
                    tokens,
                    logprobs,
                    stop: stop.expect("every sequence stopped"),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum_and_sampling_is_seeded() {
        let logits = [0.5f32, 2.0, 2.0, -1.0];
        assert_eq!(choose(&logits, Sampling::Greedy, &mut None), 1);
        let sampling = Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 3,
        };
        let draw = |seed| {
            let mut rng = Some(StdRng::seed_from_u64(seed));
            (0..50)
                .map(|_| choose(&logits, sampling, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        // top-k 1 is greedy whatever the seed.
        let top1 = Sampling::Sample {
            temperature: 5.0,
            top_k: Some(1),
            top_p: None,
            seed: 0,
        };
        let mut rng = Some(StdRng::seed_from_u64(9));
        assert!((0..20).all(|_| choose(&logits, top1, &mut rng) == 1));
        // A tiny top-p keeps only the most likely token.
        let nucleus = Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.01),
            seed: 0,
        };
        assert!((0..20).all(|_| choose(&logits, nucleus, &mut rng) == 1));
    }
}
