//! Coalitions assembled from cached passages: each passage's keys and values are computed
//! once, and a coalition's prompt is put together from them with the rotary positions
//! re-applied ([`Model::assemble_cache`]), so a coalition costs only its tail (question,
//! template and answer) instead of everything after its first missing passage.
//!
//! The model was not trained for this: a kept passage's states are the ones it had when it
//! was cached, not the ones it would have next to the coalition's other passages. Two ways of
//! caching make two different approximations:
//!
//! - [`PassageEncoding::Independent`]: each passage computed on its own right after the
//!   shared header (position-independent caches, as in TurboRAG or FiD-style encoders);
//!   passages never see each other. Exact for the empty coalition and for one passage.
//! - [`PassageEncoding::InContext`]: the states of one forward pass over the full prompt, each
//!   passage having seen the ones before it (AttriBoT's "cached activations"); a dropped
//!   passage's influence on later passages stays. Exact for the full coalition.
//!
//! In-context caches can also be *refreshed*: the first `refresh` tokens after a coalition's
//! first missing passage are recomputed in the coalition's own context instead of taken from
//! the cache (the prefix before the gap is exact anyway). Refreshing every token after the
//! gap is the exact computation, so the parameter runs from AttriBoT's cached activations (0)
//! to exact leave-one-out, at a cost linear in it. Fidelity grows slowly with it: a missing
//! passage's influence is spread over the whole rest of the prompt, not concentrated next to
//! it (docs/rag-scale.md measures the curve).
//!
//! The tail always runs for real and sees exactly the coalition's passages.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Instant;

use glassbox_attribution::{
    Aggregate, AttributionError, Coalition, Engine, EngineStats, Game, Perturbation, TokenSegment,
    check_universe,
};
use glassbox_runtime::{Capture, KvBuffers, KvCache, LogitsAt, Model, Placed, Row};
use rayon::prelude::*;

/// How the passages' keys and values are cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassageEncoding {
    Independent,
    /// Cached from the full prompt; `refresh` tokens after a coalition's first gap are
    /// recomputed in the coalition's context.
    InContext {
        refresh: usize,
    },
}

impl PassageEncoding {
    pub fn name(&self) -> &'static str {
        match self {
            PassageEncoding::Independent => "passage_kv",
            PassageEncoding::InContext { .. } => "context_kv",
        }
    }

    pub fn description(&self) -> &'static str {
        match self {
            PassageEncoding::Independent => {
                "position-independent passage caches: each passage encoded alone after the header, \
                 assembled per coalition with rotary positions re-applied; only the tail runs"
            }
            PassageEncoding::InContext { refresh: 0 } => {
                "passages cached from one pass over the full prompt, assembled per coalition with \
                 rotary positions re-applied; only the tail runs"
            }
            PassageEncoding::InContext { .. } => {
                "passages cached from one pass over the full prompt, assembled per coalition with \
                 rotary positions re-applied; the tokens right after the coalition's first \
                 missing passage are recomputed in its context, then the tail runs"
            }
        }
    }

    /// Tokens recomputed after each coalition's first gap (0 for position-independent
    /// caches, which have no exact prefix to continue).
    pub fn refresh(&self) -> usize {
        match self {
            PassageEncoding::Independent => 0,
            PassageEncoding::InContext { refresh } => *refresh,
        }
    }
}

/// A stretch of the prompt between the header and the tail: a unit, or fixed text between
/// units (always kept).
struct Block {
    unit: Option<usize>,
    /// Which cache holds its keys and values, and where.
    cache: usize,
    tokens: Range<usize>,
    /// Its token ids (to recompute it).
    ids: Vec<u32>,
}

/// A prompt's header (fixed tokens before the first unit), the blocks between it and the
/// tail, and the tail (fixed tokens after the last unit, which predict the answer).
type Split<'p> = (Vec<u32>, Vec<(Option<usize>, &'p [u32])>, Vec<u32>);

fn split(pieces: &[TokenSegment]) -> Result<Split<'_>, AttributionError> {
    let header = match pieces.first() {
        Some(TokenSegment::Fixed(t)) if !t.is_empty() => t.clone(),
        _ => {
            return Err(AttributionError::BadInput(
                "passage caches need fixed text before the first passage".into(),
            ));
        }
    };
    let tail = match pieces.last() {
        Some(TokenSegment::Fixed(t)) if pieces.len() > 1 && !t.is_empty() => t.clone(),
        _ => {
            return Err(AttributionError::BadInput(
                "passage caches need fixed text after the last passage (the question)".into(),
            ));
        }
    };
    let middle = pieces[1..pieces.len() - 1]
        .iter()
        .map(|p| match p {
            TokenSegment::Fixed(t) => (None, t.as_slice()),
            TokenSegment::Unit { unit, kept, .. } => (Some(*unit), kept.as_slice()),
        })
        .filter(|(_, t)| !t.is_empty())
        .collect();
    Ok((header, middle, tail))
}

/// How one coalition's prompt cache is made (see [`FusedGame::plan`]).
struct Plan {
    before: Vec<(usize, Range<usize>)>,
    fresh: Vec<u32>,
    after: Vec<(usize, Range<usize>)>,
}

/// Live assembled caches allowed per batch of coalitions (bytes). Small on purpose: a
/// coalition's tail costs its attention over the whole assembled past, which more rows per
/// batch do not share, while every batch after the first fills the buffers of the one before
/// (see `KvBuffers`), so the fewer bytes a batch holds, the fewer fresh pages the run touches.
/// On L01 of the long cases (3.3k tokens, 25 coalitions, Xeon, 2 threads) 1.5 GB → 320 MB
/// took the coalitions from 5.1-6.3 s to 3.9-4.3 s and the peak RSS from 1.96 to 1.13 GB.
const ASSEMBLED_BUDGET_BYTES: usize = 320 << 20;
/// Most coalitions per batch.
const MAX_BATCH: usize = 32;

/// The answer game of a cite prompt, evaluated on cached passages.
pub struct FusedGame<'m> {
    model: &'m Model,
    encoding: PassageEncoding,
    aggregate: Aggregate,
    header: KvCache,
    header_ids: Vec<u32>,
    caches: Vec<KvCache>,
    blocks: Vec<Block>,
    tail: Vec<u32>,
    answer: Vec<u32>,
    units: usize,
    memo: HashMap<Coalition, Vec<f32>>,
    stats: EngineStats,
    /// Time and tokens spent caching the passages (part of `stats`).
    cache_seconds: f64,
    cache_tokens: usize,
    /// Buffers of the last batch's assembled caches, for the next batch's.
    buffers: KvBuffers,
}

impl<'m> FusedGame<'m> {
    /// Caches the passages of `engine`'s prompt (its tokenization, already checked to match
    /// the whole text's) in the chosen way.
    pub fn new(
        engine: &Engine<'m>,
        encoding: PassageEncoding,
        aggregate: Aggregate,
    ) -> Result<Self, AttributionError> {
        if *engine.perturbation() != Perturbation::Delete {
            return Err(AttributionError::BadInput(
                "passage caches support the delete perturbation only".into(),
            ));
        }
        let model = engine.model();
        let pieces = engine.pieces();
        let (header, middle, tail) = split(pieces)?;
        let started = Instant::now();
        let mut stats = EngineStats::default();
        let kv =
            |rows: Vec<Row>, stats: &mut EngineStats| -> Result<Vec<KvCache>, AttributionError> {
                let outs = model.forward(rows, &Capture::kv())?;
                stats.forward_passes += 1;
                Ok(outs
                    .into_iter()
                    .map(|o| o.kv.expect("asked for the cache"))
                    .collect())
            };
        let h = header.len();
        stats.tokens += h;
        let header_cache = kv(
            vec![Row::tokens(header.clone()).with_logits(LogitsAt::None)],
            &mut stats,
        )?
        .remove(0);
        let (caches, blocks) = match encoding {
            PassageEncoding::Independent => {
                let rows = middle
                    .iter()
                    .map(|(_, t)| {
                        stats.tokens += t.len();
                        Row::tokens(t.to_vec())
                            .with_past(header_cache.clone())
                            .with_logits(LogitsAt::None)
                    })
                    .collect();
                let caches = kv(rows, &mut stats)?;
                let blocks = middle
                    .iter()
                    .enumerate()
                    .map(|(i, (unit, t))| Block {
                        unit: *unit,
                        cache: i,
                        tokens: h..h + t.len(),
                        ids: t.to_vec(),
                    })
                    .collect();
                (caches, blocks)
            }
            PassageEncoding::InContext { refresh } => {
                let body: Vec<u32> = middle.iter().flat_map(|(_, t)| t.iter().copied()).collect();
                stats.tokens += body.len();
                let cache = kv(
                    vec![
                        Row::tokens(body)
                            .with_past(header_cache.clone())
                            .with_logits(LogitsAt::None),
                    ],
                    &mut stats,
                )?
                .remove(0);
                let mut game = Self::in_context(engine, &cache, refresh, aggregate)?;
                stats.seconds = started.elapsed().as_secs_f64();
                (game.cache_seconds, game.cache_tokens) = (stats.seconds, stats.tokens);
                game.stats = stats;
                return Ok(game);
            }
        };
        stats.seconds = started.elapsed().as_secs_f64();
        let mut game = Self::from_parts(
            engine,
            encoding,
            aggregate,
            (header_cache, header),
            caches,
            blocks,
            tail,
        );
        (game.cache_seconds, game.cache_tokens) = (stats.seconds, stats.tokens);
        game.stats = stats;
        Ok(game)
    }

    fn from_parts(
        engine: &Engine<'m>,
        encoding: PassageEncoding,
        aggregate: Aggregate,
        header: (KvCache, Vec<u32>),
        caches: Vec<KvCache>,
        blocks: Vec<Block>,
        tail: Vec<u32>,
    ) -> Self {
        Self {
            model: engine.model(),
            encoding,
            aggregate,
            header: header.0,
            header_ids: header.1,
            caches,
            blocks,
            tail,
            answer: engine.answer().to_vec(),
            units: engine.units(),
            memo: HashMap::new(),
            stats: EngineStats::default(),
            cache_seconds: 0.0,
            cache_tokens: 0,
            buffers: KvBuffers::default(),
        }
    }

    /// In-context caches from `prompt`: the cache of everything before the tail (header and
    /// passages, in order), e.g. the one the answer was generated from, so the caching costs
    /// nothing more. Its work is not counted in [`FusedGame::stats`].
    pub fn in_context(
        engine: &Engine<'m>,
        prompt: &KvCache,
        refresh: usize,
        aggregate: Aggregate,
    ) -> Result<Self, AttributionError> {
        let model = engine.model();
        let pieces = engine.pieces();
        let (header, middle, tail) = split(pieces)?;
        let h = header.len();
        let body: usize = middle.iter().map(|(_, t)| t.len()).sum();
        if prompt.len() != h + body {
            return Err(AttributionError::BadInput(format!(
                "a prompt cache of {} tokens for a prompt of {} before its tail",
                prompt.len(),
                h + body
            )));
        }
        let header_cache = prompt.truncated(h);
        // Each passage's stretch as a cache of its own (header shared), so that coalitions
        // which leave it in place share it instead of copying it.
        let mut at = h;
        let mut caches = Vec::with_capacity(middle.len());
        let mut blocks = Vec::with_capacity(middle.len());
        for (i, (unit, t)) in middle.iter().enumerate() {
            let part = Placed {
                cache: prompt,
                tokens: at..at + t.len(),
                at: prompt.positions()[at],
            };
            caches.push(model.assemble_cache(Some(&header_cache), &[part])?);
            blocks.push(Block {
                unit: *unit,
                cache: i,
                tokens: h..h + t.len(),
                ids: t.to_vec(),
            });
            at += t.len();
        }
        Ok(Self::from_parts(
            engine,
            PassageEncoding::InContext { refresh },
            aggregate,
            (header_cache, header),
            caches,
            blocks,
            tail,
        ))
    }

    /// The same caches cut finer: the game of `engine`'s prompt, which is this game's text
    /// with a unit cut into smaller ones (a passage's sentences, a sentence's words) and the
    /// other units fixed. Its blocks are stretches of this game's, so a refinement costs its
    /// coalitions' tails and nothing is cached again.
    pub fn refine(&self, engine: &Engine<'m>) -> Result<FusedGame<'m>, AttributionError> {
        let mismatch = || {
            AttributionError::BadInput(
                "a refined prompt must be this game's prompt text cut at its token boundaries \
                 (each finer unit within one passage), with the same answer"
                    .into(),
            )
        };
        let (header, middle, tail) = split(engine.pieces())?;
        if engine.answer() != self.answer {
            return Err(mismatch());
        }
        let h = self.header_ids.len();
        let body: usize = self.blocks.iter().map(|b| b.ids.len()).sum();
        let pieces = std::iter::once((None, header.as_slice()))
            .chain(middle)
            .chain(std::iter::once((None, tail.as_slice())));
        // Walk both tokenizations together: the refined pieces' tokens must be this game's
        // header, blocks and tail in order; a refined unit must lie within one block, while
        // fixed text may span several (it is cut at their edges).
        let mut blocks = Vec::new();
        let (mut at, mut k, mut block_start) = (0usize, 0usize, h);
        for (unit, ids) in pieces {
            let mut rest = ids;
            while !rest.is_empty() {
                let (expected, take) = if at < h {
                    let take = (h - at).min(rest.len());
                    (&self.header_ids[at..at + take], take)
                } else if at >= h + body {
                    let from = at - h - body;
                    let take = (self.tail.len().saturating_sub(from)).min(rest.len());
                    (self.tail.get(from..from + take).ok_or_else(mismatch)?, take)
                } else {
                    while at >= block_start + self.blocks[k].ids.len() {
                        block_start += self.blocks[k].ids.len();
                        k += 1;
                    }
                    let b = &self.blocks[k];
                    let within = at - block_start;
                    let take = (b.ids.len() - within).min(rest.len());
                    if take > 0 {
                        blocks.push(Block {
                            unit,
                            cache: b.cache,
                            tokens: b.tokens.start + within..b.tokens.start + within + take,
                            ids: rest[..take].to_vec(),
                        });
                    }
                    (&b.ids[within..within + take], take)
                };
                let outside_blocks = at < h || at >= h + body;
                if take == 0
                    || rest[..take] != *expected
                    || (unit.is_some() && (outside_blocks || take < rest.len()))
                {
                    return Err(mismatch());
                }
                at += take;
                rest = &rest[take..];
            }
        }
        if at != h + body + self.tail.len() {
            return Err(mismatch());
        }
        Ok(Self {
            model: self.model,
            encoding: self.encoding,
            aggregate: self.aggregate,
            header: self.header.clone(),
            header_ids: self.header_ids.clone(),
            caches: self.caches.clone(),
            blocks,
            tail: self.tail.clone(),
            answer: self.answer.clone(),
            units: engine.units(),
            memo: HashMap::new(),
            stats: EngineStats::default(),
            cache_seconds: 0.0,
            cache_tokens: 0,
            buffers: KvBuffers::default(),
        })
    }

    pub fn encoding(&self) -> PassageEncoding {
        self.encoding
    }

    /// Seconds and tokens the passage caches took (0 when given a prompt cache).
    pub fn cache_cost(&self) -> (f64, usize) {
        (self.cache_seconds, self.cache_tokens)
    }

    /// Work done so far, caching included (`tokens_from_scratch`: what the same coalitions
    /// would cost evaluated whole).
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// A coalition's kept blocks as cache pieces (which cache, which tokens): those before
    /// its first gap, which stay where they were; the ids recomputed after the gap (up to
    /// `refresh` tokens); and the pieces after those. Without a refresh, everything kept is
    /// in the first list.
    fn plan(&self, c: &Coalition) -> Plan {
        let kept = |b: &&Block| b.unit.is_none_or(|u| c.contains(u));
        let refresh = self.encoding.refresh();
        let gap = match refresh {
            0 => None,
            _ => self.blocks.iter().position(|b| !kept(&b)),
        };
        let (before, after) = self.blocks.split_at(gap.unwrap_or(self.blocks.len()));
        let mut plan = Plan {
            before: before
                .iter()
                .filter(kept)
                .map(|b| (b.cache, b.tokens.clone()))
                .collect(),
            fresh: Vec::new(),
            after: Vec::new(),
        };
        for b in after.iter().filter(kept) {
            let take = (refresh - plan.fresh.len()).min(b.ids.len());
            plan.fresh.extend_from_slice(&b.ids[..take]);
            if take < b.ids.len() {
                plan.after
                    .push((b.cache, b.tokens.start + take..b.tokens.end));
            }
        }
        plan
    }

    /// `base` continued by cache pieces at consecutive positions.
    fn assemble_after(
        &self,
        base: &KvCache,
        pieces: &[(usize, Range<usize>)],
    ) -> Result<KvCache, AttributionError> {
        let mut at = base.next_position();
        let parts: Vec<Placed<'_>> = pieces
            .iter()
            .map(|(cache, tokens)| {
                let part = Placed {
                    cache: &self.caches[*cache],
                    tokens: tokens.clone(),
                    at,
                };
                at += tokens.len() as u32;
                part
            })
            .collect();
        Ok(self
            .model
            .assemble_cache_in(Some(base), &parts, &self.buffers)?)
    }

    /// The prompt caches of `coalitions` (header and kept blocks), refreshed after their
    /// first gap where asked.
    fn pasts(&mut self, coalitions: &[Coalition]) -> Result<Vec<KvCache>, AttributionError> {
        let plans: Vec<Plan> = coalitions.iter().map(|c| self.plan(c)).collect();
        // Assembling copies and re-rotates most of the prompt's keys: one coalition per
        // thread.
        let mut prefixes = plans
            .par_iter()
            .map(|p| self.assemble_after(&self.header, &p.before).map(Some))
            .collect::<Result<Vec<_>, _>>()?;
        let refreshed: Vec<usize> = (0..plans.len())
            .filter(|&i| !plans[i].fresh.is_empty())
            .collect();
        if !refreshed.is_empty() {
            let rows = refreshed
                .iter()
                .map(|&i| {
                    self.stats.tokens += plans[i].fresh.len();
                    Row::tokens(plans[i].fresh.clone())
                        .with_past(prefixes[i].take().expect("assembled above"))
                        .with_logits(LogitsAt::None)
                })
                .collect();
            let outs = self.model.forward(rows, &Capture::kv())?;
            self.stats.forward_passes += 1;
            for (&i, out) in refreshed.iter().zip(outs) {
                prefixes[i] = out.kv;
            }
        }
        plans
            .par_iter()
            .zip(prefixes)
            .map(|(p, prefix)| {
                let prefix = prefix.expect("asked for the cache");
                match p.after.is_empty() {
                    true => Ok(prefix),
                    false => self.assemble_after(&prefix, &p.after),
                }
            })
            .collect()
    }

    /// The answer's token log-probabilities after each coalition's prompt (memoized).
    pub fn logprobs(
        &mut self,
        coalitions: &[Coalition],
    ) -> Result<Vec<Vec<f32>>, AttributionError> {
        check_universe(coalitions, self.units)?;
        let mut todo: Vec<Coalition> = Vec::new();
        for c in coalitions {
            if !self.memo.contains_key(c) && !todo.contains(c) {
                todo.push(c.clone());
            }
        }
        let started = Instant::now();
        let cfg = self.model.config();
        let per_token = cfg.num_layers * 2 * cfg.kv_width() * 4;
        let full = self.header.len() + self.blocks.iter().map(|b| b.tokens.len()).sum::<usize>();
        // At least one coalition per thread: they are assembled one per thread.
        let batch = (ASSEMBLED_BUDGET_BYTES / (per_token * full).max(1))
            .max(rayon::current_num_threads())
            .clamp(1, MAX_BATCH);
        let m = self.answer.len();
        for part in todo.chunks(batch) {
            let pasts = self.pasts(part)?;
            // Held past the forward pass, which drops its own copies, so that their buffers
            // come back here.
            let assembled = pasts.clone();
            let mut rows = Vec::with_capacity(part.len());
            for past in pasts {
                let mut tokens = self.tail.clone();
                tokens.extend_from_slice(&self.answer[..m - 1]);
                let first = self.tail.len() - 1;
                self.stats.tokens += tokens.len();
                self.stats.tokens_from_scratch += past.len() + tokens.len();
                rows.push(
                    Row::tokens(tokens)
                        .with_past(past)
                        .with_logits(LogitsAt::Range(first..first + m))
                        .with_score(self.answer.clone()),
                );
            }
            let outs = self.model.forward(rows, &Capture::none())?;
            self.stats.forward_passes += 1;
            for past in assembled {
                self.buffers.reclaim(past);
            }
            for (c, out) in part.iter().zip(outs) {
                let lp = out
                    .scores
                    .expect("rows asked for scores")
                    .iter()
                    .map(|s| s.logprob)
                    .collect();
                self.memo.insert(c.clone(), lp);
            }
            self.stats.evaluations += part.len();
        }
        self.stats.seconds += started.elapsed().as_secs_f64();
        Ok(coalitions.iter().map(|c| self.memo[c].clone()).collect())
    }
}

impl Game for FusedGame<'_> {
    fn players(&self) -> usize {
        self.units
    }

    fn dims(&self) -> usize {
        1 + self.answer.len()
    }

    fn values(&mut self, coalitions: &[Coalition]) -> Result<Vec<Vec<f64>>, AttributionError> {
        let aggregate = self.aggregate;
        Ok(self
            .logprobs(coalitions)?
            .iter()
            .map(|lp| aggregate.values(lp))
            .collect())
    }
}
