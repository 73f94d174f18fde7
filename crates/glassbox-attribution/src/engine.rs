//! The evaluation engine: answers "what are the answer's token log-probabilities when only
//! these units are kept?" for many coalitions, exactly as evaluating each prompt from scratch
//! would, with far fewer tokens through the model.
//!
//! - **Memo**: a coalition is evaluated once per engine, whatever method asks.
//! - **Prefix trie**: coalitions are walked through the prompt's segments in document order.
//!   Coalitions that agree on every unit so far share one node; a node's tokens are computed
//!   (and its KV cache kept) only where coalitions diverge, and every leaf then runs just the
//!   tokens after its last divergence plus the answer. Unit text is tokenized once.
//! - **Batching**: every node flushed at the same segment, and every leaf, go through the model
//!   in one batched forward (rows continue different KV caches).
//! - **Bounded memory**: coalitions are processed in chunks sized so the live KV caches stay
//!   under a budget.
//!
//! Prompts are text cut into segments ([`Engine::new`], re-tokenized per coalition by the
//! reference path) or token ids cut into runs ([`Engine::from_tokens`], where a unit is its
//! ids). The engine reads the answer's log-probabilities, or logits of chosen tokens
//! ([`Readout`]). The from-scratch path ([`Engine::from_scratch`]) builds each coalition's
//! whole prompt and runs it alone; tests hold the two to the same values.

use std::collections::HashMap;
use std::time::Instant;

use glassbox_runtime::{
    AttentionMask, Capture, Continuation, GenerateOptions, Generation, KvCache, LogitsAt, Model,
    Row, Sampling, StopReason,
};

use crate::prompt::{Perturbation, Segment, SegmentedPrompt};
use crate::{AttributionError, Coalition};

/// Live KV caches allowed per chunk of coalitions (bytes).
const KV_BUDGET_BYTES: usize = 768 << 20;
/// Most coalitions per chunk (rows of the leaf batch).
const MAX_CHUNK: usize = 128;
/// Pending tokens a diverging trie node needs before it is run on its own forward pass.
const MIN_FLUSH_TOKENS: usize = 12;
/// Rows per batch of the from-scratch path (the batch size of the reference measurements).
const FROM_SCRATCH_BATCH: usize = 16;

/// A segment of a prompt given as tokens (a text prompt's segments are tokenized into these).
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSegment {
    Fixed(Vec<u32>),
    Unit {
        unit: usize,
        kept: Vec<u32>,
        /// Tokens standing in for a dropped unit under [`Perturbation::Placeholder`] (ignored
        /// when deleted or blocked).
        dropped: Vec<u32>,
    },
}

/// What the engine reads off the model at the answer's positions.
#[derive(Debug, Clone, PartialEq)]
pub enum Readout {
    /// `ln p(answer_j)` at each answer position `j` (only these leave the model).
    AnswerLogprobs,
    /// At each answer position `j`: the log-normaliser `ln Σ exp(logits)` followed by the
    /// logits of `queries[j]` (so log-probabilities, logits, contrasts and label
    /// probabilities of any listed token follow; `queries.len()` = answer length).
    Logits(Vec<Vec<u32>>),
}

/// Counters of the work done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// Distinct coalitions evaluated.
    pub evaluations: usize,
    pub forward_passes: usize,
    /// Tokens run through the model.
    pub tokens: usize,
    /// Tokens evaluating the same coalitions from scratch would run.
    pub tokens_from_scratch: usize,
    pub seconds: f64,
}

impl EngineStats {
    /// The counters as a report's cost, with the wall time of the whole job (which may
    /// include more than the engine's evaluations).
    pub fn cost(&self, seconds: f64) -> glassbox_report::Cost {
        glassbox_report::Cost {
            evaluations: self.evaluations,
            forward_passes: self.forward_passes,
            tokens: self.tokens,
            tokens_from_scratch: self.tokens_from_scratch,
            seconds,
        }
    }
}

/// A trie node: a KV cache shared by coalitions that agree so far, plus tokens not yet run.
struct Node {
    cache: Option<KvCache>,
    pending: Vec<u32>,
    positions: Vec<u32>,
    next_position: u32,
    /// Indices (into the chunk) of the coalitions passing through this node.
    members: Vec<usize>,
}

impl Node {
    fn extend(&mut self, tokens: &[u32]) {
        for &t in tokens {
            self.pending.push(t);
            self.positions.push(self.next_position);
            self.next_position += 1;
        }
    }

    fn split(&self, members: Vec<usize>) -> Node {
        Node {
            cache: self.cache.clone(),
            pending: self.pending.clone(),
            positions: self.positions.clone(),
            next_position: self.next_position,
            members,
        }
    }
}

/// Evaluates coalitions of a segmented prompt on a model.
pub struct Engine<'m> {
    model: &'m Model,
    /// The text prompt, re-rendered and re-tokenized by the from-scratch path; `None` for
    /// prompts given as tokens, whose units are token ids (deleting a unit drops its ids).
    prompt: Option<SegmentedPrompt>,
    perturbation: Perturbation,
    pieces: Vec<TokenSegment>,
    answer: Vec<u32>,
    readout: Readout,
    units: usize,
    memo: HashMap<Coalition, Vec<f32>>,
    /// Greedy generations, for the limit in `generation_limit`.
    generated: HashMap<Coalition, Vec<u32>>,
    generation_limit: Option<usize>,
    /// The fixed text before the first unit but its last token, computed once and shared by
    /// every chunk.
    root: Option<KvCache>,
    stats: EngineStats,
}

impl<'m> Engine<'m> {
    /// Prepares a text prompt: tokenizes every segment on its own and checks that, for the
    /// coalitions tested, the pieces concatenate to exactly the tokens of the whole text (so the
    /// engine's inputs are what the from-scratch path would feed the model).
    pub fn new(
        model: &'m Model,
        prompt: SegmentedPrompt,
        perturbation: Perturbation,
        answer: Vec<u32>,
    ) -> Result<Self, AttributionError> {
        let tok = model.tokenizer();
        let encode = |text: &str, bos: bool| -> Result<Vec<u32>, AttributionError> {
            Ok(tok
                .encode(text, bos)
                .map_err(glassbox_runtime::RuntimeError::from)?
                .ids)
        };
        let mut pieces = Vec::with_capacity(prompt.segments.len());
        for (k, segment) in prompt.segments.iter().enumerate() {
            let bos = k == 0 && prompt.bos;
            pieces.push(match segment {
                Segment::Fixed(t) => TokenSegment::Fixed(encode(t, bos)?),
                Segment::Unit {
                    unit,
                    kept,
                    placeholder,
                } => {
                    if bos {
                        return Err(AttributionError::BadInput(
                            "the prompt must start with fixed text".into(),
                        ));
                    }
                    TokenSegment::Unit {
                        unit: *unit,
                        kept: encode(kept, false)?,
                        dropped: match perturbation {
                            Perturbation::Placeholder => encode(placeholder, false)?,
                            Perturbation::Delete | Perturbation::AttentionBlock => Vec::new(),
                        },
                    }
                }
            });
        }
        let units = prompt.units();
        let engine = Self::build(model, Some(prompt), pieces, units, perturbation, answer)?;
        engine.check_separable()?;
        Ok(engine)
    }

    /// An engine over a prompt given as tokens: units are runs of token ids, deleted by dropping
    /// the ids, replaced by their `dropped` ids, or blocked. Units are numbered `0..n` by their
    /// `unit` fields.
    pub fn from_tokens(
        model: &'m Model,
        pieces: Vec<TokenSegment>,
        perturbation: Perturbation,
        answer: Vec<u32>,
    ) -> Result<Self, AttributionError> {
        let units = pieces
            .iter()
            .filter_map(|p| match p {
                TokenSegment::Unit { unit, .. } => Some(unit + 1),
                TokenSegment::Fixed(_) => None,
            })
            .max()
            .unwrap_or(0);
        Self::build(model, None, pieces, units, perturbation, answer)
    }

    fn build(
        model: &'m Model,
        prompt: Option<SegmentedPrompt>,
        pieces: Vec<TokenSegment>,
        units: usize,
        perturbation: Perturbation,
        answer: Vec<u32>,
    ) -> Result<Self, AttributionError> {
        if answer.is_empty() {
            return Err(AttributionError::BadInput(
                "the answer has no tokens".into(),
            ));
        }
        // Every coalition's prompt, even the empty one, needs a position that predicts the
        // answer's first token.
        if !matches!(pieces.first(), Some(TokenSegment::Fixed(t)) if !t.is_empty()) {
            return Err(AttributionError::BadInput(
                "the prompt must start with fixed tokens (e.g. BOS or a chat header), so that \
                 removing every unit leaves a position that predicts the answer"
                    .into(),
            ));
        }
        // Under attention blocking a dropped unit's tokens still run; if one ended the prompt
        // it would itself predict the answer, and nothing would be blocked.
        if perturbation == Perturbation::AttentionBlock
            && matches!(pieces.last(), Some(TokenSegment::Unit { .. }))
        {
            return Err(AttributionError::BadInput(
                "attention blocking needs fixed text after the last unit (the position that predicts \
                 the answer must not be a unit's); use the delete or placeholder perturbation, or a \
                 chat prompt"
                    .into(),
            ));
        }
        Ok(Self {
            model,
            prompt,
            perturbation,
            pieces,
            answer,
            readout: Readout::AnswerLogprobs,
            units,
            memo: HashMap::new(),
            generated: HashMap::new(),
            generation_limit: None,
            root: None,
            stats: EngineStats::default(),
        })
    }

    /// Reads `readout` instead of the answer's log-probabilities (set before evaluating).
    pub fn with_readout(mut self, readout: Readout) -> Result<Self, AttributionError> {
        if let Readout::Logits(queries) = &readout
            && queries.len() != self.answer.len()
        {
            return Err(AttributionError::BadInput(format!(
                "{} query lists for an answer of {} tokens",
                queries.len(),
                self.answer.len()
            )));
        }
        self.memo.clear();
        self.readout = readout;
        Ok(self)
    }

    pub fn units(&self) -> usize {
        self.units
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// The prompt as the engine runs it: fixed token runs and units.
    pub fn pieces(&self) -> &[TokenSegment] {
        &self.pieces
    }

    pub fn answer(&self) -> &[u32] {
        &self.answer
    }

    pub fn perturbation(&self) -> &Perturbation {
        &self.perturbation
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Tokens of the prompt for a coalition, as the engine assembles them.
    fn assembled(&self, c: &Coalition) -> Vec<u32> {
        let mut out = Vec::new();
        for p in &self.pieces {
            match p {
                TokenSegment::Fixed(t) => out.extend_from_slice(t),
                TokenSegment::Unit {
                    unit,
                    kept,
                    dropped,
                } => {
                    if c.contains(*unit) || self.perturbation == Perturbation::AttentionBlock {
                        out.extend_from_slice(kept);
                    } else if self.perturbation == Perturbation::Placeholder {
                        out.extend_from_slice(dropped);
                    }
                }
            }
        }
        out
    }

    /// Whole-text tokens of a coalition's prompt (token prompts: the assembled tokens).
    fn whole(&self, c: &Coalition) -> Result<Vec<u32>, AttributionError> {
        let Some(prompt) = &self.prompt else {
            return Ok(self.assembled(c));
        };
        let text = prompt.render(c, &self.perturbation);
        Ok(self
            .model
            .tokenizer()
            .encode(&text, prompt.bos)
            .map_err(glassbox_runtime::RuntimeError::from)?
            .ids)
    }

    fn check_separable(&self) -> Result<(), AttributionError> {
        let n = self.units;
        let mut probes = vec![Coalition::full(n), Coalition::empty(n)];
        probes.extend((0..n).map(|i| Coalition::full(n).without(i)));
        for c in &probes {
            let (whole, assembled) = (self.whole(c)?, self.assembled(c));
            if whole != assembled {
                let at = whole
                    .iter()
                    .zip(&assembled)
                    .position(|(a, b)| a != b)
                    .unwrap_or(whole.len().min(assembled.len()));
                return Err(AttributionError::BadInput(format!(
                    "the prompt's units do not tokenize independently (coalition {c:?}, first difference at token {at}); \
                     units must end where the tokenizer always splits, e.g. at a newline"
                )));
            }
        }
        Ok(())
    }

    /// What the [`Readout`] asks for, for each coalition (memoized): by default the answer's
    /// per-token log-probabilities.
    pub fn readouts(
        &mut self,
        coalitions: &[Coalition],
    ) -> Result<Vec<Vec<f32>>, AttributionError> {
        let todo = self.todo(coalitions, |e, c| e.memo.contains_key(c))?;
        let extra = self.answer.len();
        self.run_chunks(&todo, extra, |e, part| {
            let values = e.evaluate_chunk(part)?;
            for (c, v) in part.iter().zip(values) {
                e.stats.tokens_from_scratch += e.assembled(c).len() + e.answer.len() - 1;
                e.memo.insert(c.clone(), v);
            }
            Ok(())
        })?;
        Ok(coalitions.iter().map(|c| self.memo[c].clone()).collect())
    }

    /// The greedy answer (up to `max_tokens` tokens, stopping at end of turn) each coalition's
    /// prompt makes the model generate (memoized per `max_tokens`), decoded from the trie's
    /// forked caches in batches.
    pub fn generations(
        &mut self,
        coalitions: &[Coalition],
        max_tokens: usize,
    ) -> Result<Vec<Vec<u32>>, AttributionError> {
        if self.generation_limit != Some(max_tokens) {
            self.generated.clear();
            self.generation_limit = Some(max_tokens);
        }
        let todo = self.todo(coalitions, |e, c| e.generated.contains_key(c))?;
        self.run_chunks(&todo, max_tokens, |e, part| {
            let leaves = e.leaves(part)?;
            let starts = leaves
                .iter()
                .map(|n| {
                    e.stats.tokens += n.pending.len();
                    Continuation {
                        past: n.cache.clone(),
                        tokens: n.pending.clone(),
                        positions: Some(n.positions.clone()),
                    }
                })
                .collect();
            let options = GenerateOptions {
                max_new_tokens: max_tokens,
                sampling: Sampling::Greedy,
                stop_at_eos: true,
            };
            let outputs = e.model.generate_continuations(starts, &options)?;
            // Tokens fed back: all generated ones but the last, unless an end of turn followed.
            let fed = |g: &Generation| match g.stop {
                StopReason::EndOfText => g.tokens.len(),
                StopReason::MaxTokens | StopReason::ContextFull => g.tokens.len().saturating_sub(1),
            };
            e.stats.forward_passes += 1 + outputs.iter().map(fed).max().unwrap_or(0);
            for (node, g) in leaves.iter().zip(outputs) {
                let c = &part[node.members[0]];
                e.stats.tokens += fed(&g);
                e.stats.tokens_from_scratch += e.assembled(c).len() + fed(&g);
                e.generated.insert(c.clone(), g.tokens);
            }
            Ok(())
        })?;
        Ok(coalitions
            .iter()
            .map(|c| self.generated[c].clone())
            .collect())
    }

    /// Every greedy answer generated so far (one per coalition, in no particular order).
    pub fn generated_answers(&self) -> impl Iterator<Item = &Vec<u32>> {
        self.generated.values()
    }

    /// The coalitions not yet done, checked, deduplicated and sorted in trie order.
    fn todo(
        &self,
        coalitions: &[Coalition],
        done: impl Fn(&Self, &Coalition) -> bool,
    ) -> Result<Vec<Coalition>, AttributionError> {
        check_universe(coalitions, self.units)?;
        let mut todo: Vec<Coalition> = coalitions
            .iter()
            .filter(|c| !done(self, c))
            .cloned()
            .collect();
        todo.sort_by_key(|c| {
            (0..self.units)
                .map(|i| !c.contains(i))
                .collect::<Vec<bool>>()
        });
        todo.dedup();
        Ok(todo)
    }

    /// Runs `work` over chunks of `todo` sized for the KV budget (each coalition's cache
    /// growing by `extra` tokens past the prompt), counting evaluations and time.
    fn run_chunks(
        &mut self,
        todo: &[Coalition],
        extra: usize,
        mut work: impl FnMut(&mut Self, &[Coalition]) -> Result<(), AttributionError>,
    ) -> Result<(), AttributionError> {
        if todo.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        for part in todo.chunks(self.chunk_size(extra)) {
            work(self, part)?;
            self.stats.evaluations += part.len();
        }
        self.stats.seconds += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Coalitions per chunk so the caches of a chunk (and the logits a [`Readout::Logits`]
    /// holds) fit [`KV_BUDGET_BYTES`] (a power of two, so chunks of a sorted enumeration align
    /// with the trie's top branches).
    fn chunk_size(&self, extra: usize) -> usize {
        let cfg = self.model.config();
        let per_token = cfg.num_layers * 2 * cfg.kv_width() * 4;
        let prompt = self.assembled(&Coalition::full(self.units)).len() + extra;
        let logits = match self.readout {
            Readout::AnswerLogprobs => 0,
            Readout::Logits(_) => self.answer.len() * cfg.vocab_size * 4,
        };
        let fit = (KV_BUDGET_BYTES / (per_token * prompt + logits).max(1)).clamp(1, MAX_CHUNK);
        1 << fit.ilog2()
    }

    /// The trie's root: the fixed tokens before the first unit, all but the last run once per
    /// engine (the last stays pending, see [`Engine::flush`]).
    fn root(&mut self) -> Result<(Node, usize), AttributionError> {
        let fixed = self
            .pieces
            .iter()
            .take_while(|p| matches!(p, TokenSegment::Fixed(_)))
            .count();
        let head: Vec<u32> = self.pieces[..fixed]
            .iter()
            .flat_map(|p| match p {
                TokenSegment::Fixed(t) => t.clone(),
                TokenSegment::Unit { .. } => Vec::new(),
            })
            .collect();
        let (run, last) = head.split_at(head.len() - 1);
        if self.root.is_none() && !run.is_empty() {
            let out = self
                .model
                .forward(
                    vec![Row::tokens(run.to_vec()).with_logits(LogitsAt::None)],
                    &Capture::kv(),
                )?
                .remove(0);
            self.stats.forward_passes += 1;
            self.stats.tokens += run.len();
            self.root = Some(out.kv.expect("asked for the cache"));
        }
        let mut node = Node {
            cache: self.root.clone(),
            pending: Vec::new(),
            positions: Vec::new(),
            next_position: run.len() as u32,
            members: Vec::new(),
        };
        node.extend(last);
        Ok((node, fixed))
    }

    /// Walks a chunk of coalitions down the prefix trie, running shared prefixes once, and
    /// returns the leaves: one per coalition, each holding its cache and the tokens after its
    /// last divergence (not yet run).
    fn leaves(&mut self, coalitions: &[Coalition]) -> Result<Vec<Node>, AttributionError> {
        let (mut root, skip) = self.root()?;
        root.members = (0..coalitions.len()).collect();
        let mut frontier = vec![root];
        let pieces = self.pieces[skip..].to_vec();
        for piece in &pieces {
            match piece {
                TokenSegment::Fixed(tokens) => frontier.iter_mut().for_each(|n| n.extend(tokens)),
                TokenSegment::Unit {
                    unit,
                    kept,
                    dropped,
                } => {
                    // Nodes whose coalitions disagree on this unit run their pending tokens now,
                    // so both branches continue one shared cache — once enough are pending to
                    // be worth a sequential forward pass (short units such as words would
                    // otherwise cost a pass each; the few tokens carried instead are run once
                    // per branch).
                    let diverging: Vec<usize> = frontier
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| {
                            let inside = n
                                .members
                                .iter()
                                .filter(|&&m| coalitions[m].contains(*unit))
                                .count();
                            inside > 0
                                && inside < n.members.len()
                                && n.pending.len() > MIN_FLUSH_TOKENS
                        })
                        .map(|(i, _)| i)
                        .collect();
                    self.flush(&mut frontier, &diverging)?;
                    let mut next = Vec::with_capacity(frontier.len() * 2);
                    for node in frontier {
                        let (keep, drop): (Vec<usize>, Vec<usize>) = node
                            .members
                            .iter()
                            .partition(|&&m| coalitions[m].contains(*unit));
                        if !keep.is_empty() {
                            let mut child = node.split(keep);
                            child.extend(kept);
                            next.push(child);
                        }
                        if !drop.is_empty() {
                            let mut child = node.split(drop);
                            match self.perturbation {
                                Perturbation::AttentionBlock => {
                                    child.next_position += kept.len() as u32
                                }
                                Perturbation::Delete => {}
                                Perturbation::Placeholder => child.extend(dropped),
                            }
                            next.push(child);
                        }
                    }
                    frontier = next;
                }
            }
        }
        debug_assert!(
            frontier.iter().all(|n| n.members.len() == 1),
            "coalitions are distinct"
        );
        Ok(frontier)
    }

    /// Scores the answer after each coalition's prompt.
    fn evaluate_chunk(
        &mut self,
        coalitions: &[Coalition],
    ) -> Result<Vec<Vec<f32>>, AttributionError> {
        let frontier = self.leaves(coalitions)?;
        // Leaves: one coalition each; pending tokens plus the answer, read in one batch.
        let m = self.answer.len();
        let mut rows = Vec::with_capacity(frontier.len());
        for node in &frontier {
            let mut positions = node.positions.clone();
            positions.extend(node.next_position..node.next_position + m as u32 - 1);
            let (tokens, row) = self.answer_row(node.pending.clone());
            self.stats.tokens += tokens;
            let mut row = row.with_positions(positions);
            if let Some(cache) = &node.cache {
                row = row.with_past(cache.clone());
            }
            rows.push(row);
        }
        let outputs = self.model.forward(rows, &Capture::none())?;
        self.stats.forward_passes += 1;
        let mut values = vec![Vec::new(); coalitions.len()];
        for (node, out) in frontier.iter().zip(outputs) {
            values[node.members[0]] = self.read(out);
        }
        Ok(values)
    }

    /// A row running `context` (at least one token) then the answer, asking for what the
    /// readout needs at the answer's positions; also returns the row's length.
    fn answer_row(&self, context: Vec<u32>) -> (usize, Row) {
        let m = self.answer.len();
        let first = context.len() - 1;
        let mut tokens = context;
        tokens.extend_from_slice(&self.answer[..m - 1]);
        let len = tokens.len();
        let row = Row::tokens(tokens).with_logits(LogitsAt::Range(first..first + m));
        let row = match self.readout {
            Readout::AnswerLogprobs => row.with_score(self.answer.clone()),
            Readout::Logits(_) => row,
        };
        (len, row)
    }

    /// The readout of an answer row's output (see [`Readout`]).
    fn read(&self, out: glassbox_runtime::RowOutput) -> Vec<f32> {
        match &self.readout {
            Readout::AnswerLogprobs => out
                .scores
                .expect("rows asked for scores")
                .iter()
                .map(|s| s.logprob)
                .collect(),
            Readout::Logits(queries) => {
                let logits = out.logits.expect("rows asked for logits");
                let mut values = Vec::new();
                for (j, q) in queries.iter().enumerate() {
                    let row = logits.at(j);
                    values.push(log_sum_exp(row));
                    values.extend(q.iter().map(|&t| row[t as usize]));
                }
                values
            }
        }
    }

    /// Runs the pending tokens of the given frontier nodes in one batched forward, all but the
    /// last: a node always keeps one token pending, so every leaf (even one whose coalition
    /// adds nothing after its last divergence) has a position that predicts the answer.
    fn flush(&mut self, frontier: &mut [Node], which: &[usize]) -> Result<(), AttributionError> {
        if which.is_empty() {
            return Ok(());
        }
        let rows = which
            .iter()
            .map(|&i| {
                let n = &frontier[i];
                let run = n.pending.len() - 1;
                self.stats.tokens += run;
                let mut row = Row::tokens(n.pending[..run].to_vec())
                    .with_positions(n.positions[..run].to_vec())
                    .with_logits(LogitsAt::None);
                if let Some(c) = &n.cache {
                    row = row.with_past(c.clone());
                }
                row
            })
            .collect();
        let outputs = self.model.forward(rows, &Capture::kv())?;
        self.stats.forward_passes += 1;
        for (&i, out) in which.iter().zip(outputs) {
            let node = &mut frontier[i];
            node.cache = out.kv;
            let run = node.pending.len() - 1;
            node.pending.drain(..run);
            node.positions.drain(..run);
        }
        Ok(())
    }

    /// The reference path: each coalition's prompt re-rendered, tokenized whole and scored from
    /// scratch (attention blocking by masking the dropped units' tokens), in batches of 16.
    /// Not memoized; counts its own work.
    pub fn from_scratch(
        &self,
        coalitions: &[Coalition],
    ) -> Result<(Vec<Vec<f32>>, EngineStats), AttributionError> {
        let start = Instant::now();
        let mut stats = EngineStats::default();
        let mut values = Vec::with_capacity(coalitions.len());
        for batch in coalitions.chunks(FROM_SCRATCH_BATCH) {
            let mut rows = Vec::with_capacity(batch.len());
            for c in batch {
                let (tokens, mut row) = self.answer_row(self.whole(c)?);
                stats.tokens += tokens;
                if self.perturbation == Perturbation::AttentionBlock {
                    row = row.with_mask(self.blocking_mask(c));
                }
                rows.push(row);
            }
            let outputs = self.model.forward(rows, &Capture::none())?;
            stats.forward_passes += 1;
            values.extend(outputs.into_iter().map(|out| self.read(out)));
        }
        stats.evaluations = coalitions.len();
        stats.tokens_from_scratch = stats.tokens;
        stats.seconds = start.elapsed().as_secs_f64();
        Ok((values, stats))
    }

    /// The reference for [`Engine::generations`]: each coalition's whole prompt re-rendered,
    /// tokenized and decoded greedily from scratch, in batches of 16. Attention blocking needs
    /// masks during decoding, which whole-prompt generation does not take, so it is refused.
    pub fn generations_from_scratch(
        &self,
        coalitions: &[Coalition],
        max_tokens: usize,
    ) -> Result<Vec<Vec<u32>>, AttributionError> {
        if self.perturbation == Perturbation::AttentionBlock {
            return Err(AttributionError::BadInput(
                "the from-scratch generation reference supports the delete and placeholder perturbations".into(),
            ));
        }
        let options = GenerateOptions {
            max_new_tokens: max_tokens,
            sampling: Sampling::Greedy,
            stop_at_eos: true,
        };
        let mut out = Vec::with_capacity(coalitions.len());
        for batch in coalitions.chunks(FROM_SCRATCH_BATCH) {
            let prompts = batch
                .iter()
                .map(|c| self.whole(c))
                .collect::<Result<Vec<_>, _>>()?;
            out.extend(
                self.model
                    .generate_batch(&prompts, &options)?
                    .into_iter()
                    .map(|g| g.tokens),
            );
        }
        Ok(out)
    }

    /// Hides the dropped units' tokens from everything after them.
    fn blocking_mask(&self, c: &Coalition) -> AttentionMask {
        let mut mask = AttentionMask::new();
        let mut at = 0;
        for p in &self.pieces {
            match p {
                TokenSegment::Fixed(t) => at += t.len(),
                TokenSegment::Unit { unit, kept, .. } => {
                    if !c.contains(*unit) {
                        mask = mask.hide(at..at + kept.len());
                    }
                    at += kept.len();
                }
            }
        }
        mask
    }
}

/// Refuses coalitions that are not over a prompt's `units` units.
pub fn check_universe(coalitions: &[Coalition], units: usize) -> Result<(), AttributionError> {
    match coalitions.iter().find(|c| c.universe() != units) {
        Some(c) => Err(AttributionError::BadInput(format!(
            "coalition over {} units for a prompt of {units}",
            c.universe()
        ))),
        None => Ok(()),
    }
}

/// `ln Σ exp(x)`, stably, in f64.
fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = x.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (max as f64 + sum.ln()) as f32
}

/// How the answer's token log-probabilities become the headline value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// `ln p(answer)`: the sum of token log-probabilities (default).
    Sum,
    /// Mean token log-probability (length-normalised).
    Mean,
}

impl Aggregate {
    pub fn name(&self) -> &'static str {
        match self {
            Aggregate::Sum => "sum_logprob",
            Aggregate::Mean => "mean_logprob",
        }
    }

    /// A coalition's values from the answer's token log-probabilities: the aggregate, then
    /// each token's.
    pub fn values(&self, logprobs: &[f32]) -> Vec<f64> {
        let total: f64 = logprobs.iter().map(|&x| x as f64).sum();
        let head = match self {
            Aggregate::Sum => total,
            Aggregate::Mean => total / logprobs.len() as f64,
        };
        std::iter::once(head)
            .chain(logprobs.iter().map(|&x| x as f64))
            .collect()
    }
}

/// The game of a fixed answer: values are `[aggregate, ln p(token_0), ..., ln p(token_m-1)]`,
/// so one set of evaluations attributes the whole answer and each of its tokens (any span of
/// tokens is then a sum of token attributions, since the methods are linear in the value).
pub struct AnswerGame<'e, 'm> {
    pub engine: &'e mut Engine<'m>,
    pub aggregate: Aggregate,
}

impl crate::Game for AnswerGame<'_, '_> {
    fn players(&self) -> usize {
        self.engine.units()
    }

    fn dims(&self) -> usize {
        1 + self.engine.answer().len()
    }

    fn values(&mut self, coalitions: &[Coalition]) -> Result<Vec<Vec<f64>>, AttributionError> {
        let aggregate = self.aggregate;
        Ok(self
            .engine
            .readouts(coalitions)?
            .iter()
            .map(|lp| aggregate.values(lp))
            .collect())
    }
}

/// TextGenSHAP's answer-identity game: which greedy answer does each coalition's prompt make
/// the model produce? Values are one-hot over `answers` (all zero for an answer not listed), so
/// a unit's credit for dimension k is its contribution to producing answer k exactly.
pub struct IdentityGame<'e, 'm> {
    pub engine: &'e mut Engine<'m>,
    /// The answers credited, as token ids.
    pub answers: Vec<Vec<u32>>,
    /// Longest generation; answers are compared on these tokens.
    pub max_tokens: usize,
}

impl crate::Game for IdentityGame<'_, '_> {
    fn players(&self) -> usize {
        self.engine.units()
    }

    fn dims(&self) -> usize {
        self.answers.len()
    }

    fn values(&mut self, coalitions: &[Coalition]) -> Result<Vec<Vec<f64>>, AttributionError> {
        let answers = &self.answers;
        Ok(self
            .engine
            .generations(coalitions, self.max_tokens)?
            .into_iter()
            .map(|g| {
                answers
                    .iter()
                    .map(|a| f64::from(u8::from(*a == g)))
                    .collect()
            })
            .collect())
    }
}
