//! Passage attribution at RAG scale: 20+ passages and thousands of tokens.
//!
//! With a causal decoder, removing passage i changes every token after it, so the exact
//! engine's prefix sharing saves little once passages are many and long, and exact
//! leave-one-out costs many times the answer's generation. This crate makes the estimates
//! that are cheaper, each an explicit choice that its report names, with its parameters:
//!
//! - [`fused`]: coalitions assembled from cached passages (position-independent, or cached
//!   from the full prompt), so a coalition costs only its tail;
//! - [`hierarchy`]: contiguous groups of passages first, then only the groups that matter;
//! - a proxy model: any of the above on a cheaper model, the units being text;
//! - [`onepass`]: attention to each passage and gradient × input per passage;
//! - [`check`]: the estimate measured against exact leave-one-out on the target model for a
//!   few passages, at the cost of those evaluations.
//!
//! [`fidelity`] has the measures the benchmark uses (Spearman, top-k agreement, AttriBoT's
//! outlier-recovery average precision).

pub mod check;
pub mod fidelity;
pub mod fused;
pub mod hierarchy;
pub mod onepass;

use std::num::NonZeroUsize;
use std::time::Instant;

use glassbox_attribution::cite::{
    CiteRequest, CiteTarget, answer_targets, package, prepare, prepare_generating, refine,
};
use glassbox_attribution::{
    AnswerGame, AttributionError, Engine, EngineStats, Estimate, Game, Method, Segment,
    SegmentedPrompt, estimate,
};
use glassbox_report::{Approximation, ApproximationStep, CITE_SCHEMA, CiteReport, MethodInfo};
use glassbox_runtime::{Capture, Continuation, GenerateOptions, KvCache, LogitsAt, Model, Row};
use serde_json::json;

pub use fused::{FusedGame, PassageEncoding};
pub use hierarchy::{ExpandRule, contiguous_groups, hierarchical};
pub use onepass::{DEFAULT_ATTENTION_LAYERS, OnePass, one_pass};

/// How coalition values (or one-pass scores) are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The exact engine (every coalition's prompt run as written).
    Exact,
    Cached(PassageEncoding),
    OnePass(OnePass),
}

/// Groups first, and which groups are expanded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hierarchy {
    pub group_size: NonZeroUsize,
    pub rule: ExpandRule,
}

/// Everything that makes a cite result an estimate.
#[derive(Clone, Copy)]
pub struct ScaleOptions<'p> {
    pub strategy: Strategy,
    pub hierarchy: Option<Hierarchy>,
    /// Attribute on this model instead, and report it as an estimate for the target.
    pub proxy: Option<&'p Model>,
    /// Measure the estimate against exact leave-one-out on the target for this many of its
    /// top passages (0: no check).
    pub check: usize,
}

impl ScaleOptions<'_> {
    /// Whether anything is approximated (otherwise the exact `cite` path applies).
    pub fn approximates(&self) -> bool {
        self.strategy != Strategy::Exact || self.hierarchy.is_some() || self.proxy.is_some()
    }

    fn validate(&self, request: &CiteRequest) -> Result<(), AttributionError> {
        let bad = |m: &str| Err(AttributionError::BadInput(m.into()));
        if !self.approximates() {
            return bad(
                "--check measures an approximation, and nothing is approximated (choose --strategy, \
                 --groups or --proxy)",
            );
        }
        if !matches!(request.target, CiteTarget::LogProb(_)) {
            return bad(
                "approximations attribute the answer's log-probability (--target sum or mean)",
            );
        }
        if matches!(self.strategy, Strategy::OnePass(_)) && self.hierarchy.is_some() {
            return bad("one-pass estimates score every passage at once; --groups does not apply");
        }
        if self.check > request.passages.len() {
            return Err(AttributionError::BadInput(format!(
                "--check {} is more than the {} passages",
                self.check,
                request.passages.len()
            )));
        }
        Ok(())
    }
}

/// Attributes the answer to the passages the cheaper way `options` describes; the report
/// carries an [`Approximation`] record (and, with `check`, its measured fidelity).
pub fn cite_at_scale(
    target: &Model,
    request: &CiteRequest,
    options: &ScaleOptions<'_>,
) -> Result<CiteReport, AttributionError> {
    options.validate(request)?;
    let CiteTarget::LogProb(aggregate) = request.target else {
        unreachable!("validated")
    };
    // Exact enumeration may be affordable over groups though not over passages: preparing
    // (which refuses it over too many passages) checks the prompt only.
    let mut probe = request.clone();
    probe.method = Method::LeaveOneOut;
    // In-context caches are the prompt's own: when the answer is generated here, it is
    // generated from them, so caching costs nothing beyond the generation.
    let mut prompt_cache: Option<KvCache> = None;
    let share = matches!(
        options.strategy,
        Strategy::Cached(PassageEncoding::InContext { .. })
    ) && options.proxy.is_none();
    let on_target = if share {
        prepare_generating(target, &probe, &mut |prompt, ids, generate| {
            let (cache, answer) = generate_keeping_cache(target, prompt, ids, generate)?;
            prompt_cache = Some(cache);
            Ok(answer)
        })?
    } else {
        prepare(target, &probe)?
    };
    let estimator = options.proxy.unwrap_or(target);
    let on_estimator = match options.proxy {
        Some(proxy) => {
            probe.answer = Some(on_target.answer_text.trim().to_string());
            Some(prepare(proxy, &probe)?)
        }
        None => None,
    };
    let prepared = on_estimator.as_ref().unwrap_or(&on_target);
    let mut engine = Engine::new(
        estimator,
        prepared.prompt.clone(),
        request.perturbation.clone(),
        prepared.answer.clone(),
    )?;

    let started = Instant::now();
    let mut steps = Vec::new();
    if let Some(proxy) = options.proxy {
        steps.push(ApproximationStep {
            name: "proxy".into(),
            description: "attributed on a proxy model (its own tokenizer; the units are text); \
                          only the whole-answer target is transferred"
                .into(),
            params: json!({ "model": proxy.info().name }),
        });
    }
    // The passages' game stays, when it holds caches, so that refinements cut it finer
    // instead of caching again.
    let (method, passage_estimate, stats, passages_game) = match options.strategy {
        Strategy::OnePass(how) => {
            steps.push(ApproximationStep {
                name: how.name().into(),
                description: how.description().into(),
                params: how.params(),
            });
            let (estimate, tokens) = one_pass(&engine, how, aggregate)?;
            let info = method_info(options.strategy, request.method, request.seed, &estimate);
            (info, estimate, one_pass_stats(tokens, started), None)
        }
        Strategy::Cached(encoding) => {
            let mut game = match &prompt_cache {
                Some(cache) => {
                    FusedGame::in_context(&engine, cache, encoding.refresh(), aggregate)?
                }
                None => FusedGame::new(&engine, encoding, aggregate)?,
            };
            let (cache_seconds, cache_tokens) = game.cache_cost();
            steps.push(ApproximationStep {
                name: encoding.name().into(),
                description: encoding.description().into(),
                params: json!({
                    "prompt_cache": if prompt_cache.is_some() {
                        "shared with the answer's generation"
                    } else {
                        "computed"
                    },
                    "cache_seconds": cache_seconds,
                    "cache_tokens": cache_tokens,
                    "refresh_tokens": encoding.refresh(),
                }),
            });
            let estimate = run(&mut game, request, options, &mut steps)?;
            let info = method_info(options.strategy, request.method, request.seed, &estimate);
            let stats = game.stats().clone();
            (info, estimate, stats, Some(game))
        }
        Strategy::Exact => {
            let mut game = AnswerGame {
                engine: &mut engine,
                aggregate,
            };
            let estimate = run(&mut game, request, options, &mut steps)?;
            let info = method_info(options.strategy, request.method, request.seed, &estimate);
            (info, estimate, engine.stats().clone(), None)
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let cost = stats.cost(seconds);
    let check = match options.check {
        0 => None,
        k => Some(check::check(
            target,
            request,
            &on_target,
            &passage_estimate.scores[0],
            k,
        )?),
    };
    let estimate_of = format!("{} on {}", method.name, target.info().name);
    let package_on_target = |method: MethodInfo, units, mut estimate: Estimate, cost| {
        let mut targets = answer_targets(aggregate, &on_target.answer_tokens);
        if options.proxy.is_some() || estimate.scores.len() == 1 {
            // Per-token targets are the estimator's tokens; only the whole answer transfers.
            targets.truncate(1);
            truncate_to_headline(&mut estimate);
        }
        let mut attribution = package(estimator, request, method, units, targets, estimate, cost);
        attribution.model = target.info().name.clone();
        attribution
    };
    let attribution = package_on_target(method, on_target.units.clone(), passage_estimate, cost);
    let refinements = refine(
        request,
        prepared,
        &attribution.ranking(0),
        &mut |prompt, units, method| {
            let mut engine = Engine::new(
                estimator,
                prompt,
                request.perturbation.clone(),
                prepared.answer.clone(),
            )?;
            let started = Instant::now();
            let (estimate, stats) = match (&passages_game, options.strategy) {
                (Some(game), _) => {
                    let mut level = game.refine(&engine)?;
                    let estimate = estimate(method, &mut level, request.seed)?;
                    (estimate, level.stats().clone())
                }
                (None, Strategy::OnePass(how)) => {
                    let (estimate, tokens) = one_pass(&engine, how, aggregate)?;
                    (estimate, one_pass_stats(tokens, started))
                }
                (None, _) => {
                    let mut game = AnswerGame {
                        engine: &mut engine,
                        aggregate,
                    };
                    let estimate = estimate(method, &mut game, request.seed)?;
                    (estimate, engine.stats().clone())
                }
            };
            let info = method_info(options.strategy, method, request.seed, &estimate);
            let cost = stats.cost(started.elapsed().as_secs_f64());
            Ok(package_on_target(info, units, estimate, cost))
        },
    )?;
    if !refinements.is_empty() {
        steps.push(ApproximationStep {
            name: "refined".into(),
            description: "the top passages cut into sentences (and their top sentence into \
                          words), each level estimated the same way, on the same caches"
                .into(),
            params: json!({
                "passages": request.refine_passages,
                "words": request.refine_words,
            }),
        });
    }
    Ok(CiteReport {
        schema: CITE_SCHEMA.into(),
        question: request.question.trim().to_string(),
        answer: on_target.answer_text.clone(),
        answer_tokens: on_target.answer_tokens.clone(),
        answer_generated: on_target.generated,
        attribution,
        refinements,
        approximation: Some(Approximation {
            estimate_of,
            steps,
            check,
        }),
    })
}

/// The work of a one-pass estimate (one forward, and a backward for gradients).
fn one_pass_stats(tokens: usize, started: Instant) -> EngineStats {
    EngineStats {
        evaluations: 1,
        forward_passes: 1,
        tokens,
        tokens_from_scratch: tokens,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Generates the answer as `prepare` would, but from a cache of the prompt before its tail,
/// which it returns (the in-context passage caches).
fn generate_keeping_cache(
    model: &Model,
    prompt: &SegmentedPrompt,
    ids: &[u32],
    options: &GenerateOptions,
) -> Result<(KvCache, Vec<u32>), AttributionError> {
    let tail = match prompt.segments.last() {
        Some(Segment::Fixed(text)) => {
            model
                .tokenizer()
                .encode(text, false)
                .map_err(glassbox_runtime::RuntimeError::from)?
                .ids
        }
        _ => Vec::new(),
    };
    let cut = ids.len().saturating_sub(tail.len());
    if tail.is_empty() || cut == 0 || ids[cut..] != tail[..] {
        return Err(AttributionError::BadInput(
            "passage caches need fixed text after the last passage (the question)".into(),
        ));
    }
    let cache = model
        .forward(
            vec![Row::tokens(ids[..cut].to_vec()).with_logits(LogitsAt::None)],
            &Capture::kv(),
        )?
        .remove(0)
        .kv
        .expect("asked for the cache");
    let start = Continuation {
        past: Some(cache.clone()),
        tokens: tail,
        positions: None,
    };
    let answer = model
        .generate_continuations(vec![start], options)?
        .remove(0)
        .tokens;
    Ok((cache, answer))
}

/// The request's method on `game`, through the hierarchy when asked.
fn run(
    game: &mut dyn Game,
    request: &CiteRequest,
    options: &ScaleOptions<'_>,
    steps: &mut Vec<ApproximationStep>,
) -> Result<Estimate, AttributionError> {
    match options.hierarchy {
        None => estimate(request.method, game, request.seed),
        Some(h) => {
            let groups = contiguous_groups(game.players(), h.group_size);
            steps.insert(
                0,
                ApproximationStep {
                    name: "hierarchical".into(),
                    description: "the method over contiguous groups of passages, then within the \
                                  groups that clear the rule; passages of other groups share their \
                                  group's score"
                        .into(),
                    params: json!({
                        "group_size": h.group_size.get(),
                        "expand_share": h.rule.share,
                        "expand_max": h.rule.max_groups.map(NonZeroUsize::get),
                    }),
                },
            );
            hierarchical(game, &groups, h.rule, request.method, request.seed)
        }
    }
}

/// What made an estimate: the one-pass method itself, or `method` on the coalition game.
fn method_info(strategy: Strategy, method: Method, seed: u64, estimate: &Estimate) -> MethodInfo {
    match strategy {
        Strategy::OnePass(how) => MethodInfo {
            name: how.name().into(),
            params: how.params(),
            seed: None,
        },
        _ => MethodInfo {
            name: method.name().into(),
            params: estimate.params.clone(),
            seed: method.is_sampled().then_some(seed),
        },
    }
}

/// Keeps only the whole-answer target of an estimate.
fn truncate_to_headline(e: &mut Estimate) {
    e.scores.truncate(1);
    if let Some(se) = e.std_errors.as_mut() {
        se.truncate(1);
    }
    e.value_full.truncate(1);
    e.value_empty.truncate(1);
}
