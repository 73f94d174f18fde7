//! Attributing an answer to document passages (the RAG question "where did this come from?").
//!
//! A question and passages are rendered through a prompt template (`prompts/rag_qa.toml`) and
//! the model's chat template; each passage is a unit. The answer is given or generated
//! greedily; its log-probability under every coalition of passages is the game, and the chosen
//! method attributes it. On request the top passages are refined into sentences, and the top
//! sentences into words, with the rest of the context kept.

use std::time::Instant;

use glassbox_report::{
    ATTRIBUTION_SCHEMA, AnswerToken, Attribution, CITE_SCHEMA, CiteReport, Cost, MethodInfo,
    Refinement, Target, Unit,
};
use glassbox_runtime::{ChatMessage, GenerateOptions, Model, Sampling};
use serde::Deserialize;

use crate::AttributionError;
use crate::engine::{Aggregate, AnswerGame, Engine, IdentityGame};
use crate::methods::{Method, estimate};
use crate::prompt::{Perturbation, Segment, SegmentedPrompt};

/// The built-in RAG prompt template.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../../prompts/rag_qa.toml");
/// Longest generated answer, in tokens, when none is given.
pub const MAX_ANSWER_TOKENS: usize = 64;

/// A prompt template for question answering over passages.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RagTemplate {
    pub name: String,
    /// The user message, with `{passages}` and `{question}`.
    pub user: String,
    /// One passage, with `{number}` (1-based) and `{text}`; must end with a newline, where
    /// tokenizers always split, so passages tokenize independently.
    pub passage: String,
    /// A dropped passage under the placeholder perturbation, with `{number}`.
    pub placeholder: String,
}

impl RagTemplate {
    pub fn parse(text: &str) -> Result<Self, AttributionError> {
        let t: RagTemplate = toml_like(text)?;
        if t.user.matches("{passages}").count() != 1 || t.user.matches("{question}").count() != 1 {
            return Err(AttributionError::BadInput(
                "the template's `user` needs exactly one {passages} and one {question}".into(),
            ));
        }
        if !t.passage.contains("{text}")
            || !t.passage.ends_with('\n')
            || !t.placeholder.ends_with('\n')
        {
            return Err(AttributionError::BadInput(
                "the template's `passage` needs {text}, and `passage`/`placeholder` must end with a newline".into(),
            ));
        }
        Ok(t)
    }
}

/// Parses the template TOML (a flat table of strings).
fn toml_like(text: &str) -> Result<RagTemplate, AttributionError> {
    toml::from_str(text).map_err(|e| AttributionError::BadInput(format!("prompt template: {e}")))
}

/// What a coalition's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiteTarget {
    /// The answer's log-probability under teacher forcing (total or mean), plus each answer
    /// token's, from one set of evaluations.
    LogProb(Aggregate),
    /// TextGenSHAP's answer identity: 1 when the coalition's prompt makes the model generate
    /// exactly the answer (greedily), else 0; alternative answers that coalitions produce get
    /// targets of their own.
    AnswerIdentity,
}

/// Most distinct answers credited by the identity target (the given answer, then the
/// alternatives most coalitions produce).
pub const MAX_IDENTITY_ANSWERS: usize = 8;
/// Tokens generated past the answer's length under the identity target, so that an answer
/// that goes on differently is told apart (and alternatives are seen in full, up to this).
const IDENTITY_EXTRA_TOKENS: usize = 8;

/// Everything `cite` needs besides the model.
#[derive(Debug, Clone)]
pub struct CiteRequest {
    pub question: String,
    pub passages: Vec<String>,
    /// The answer to attribute; generated greedily when `None`.
    pub answer: Option<String>,
    pub system: Option<String>,
    pub template: RagTemplate,
    pub method: Method,
    pub perturbation: Perturbation,
    pub target: CiteTarget,
    pub seed: u64,
    /// Refine the top this-many passages into sentences.
    pub refine_passages: usize,
    /// Refine the top sentence of each refined passage into words.
    pub refine_words: bool,
}

impl CiteRequest {
    fn validate(&self) -> Result<(), AttributionError> {
        if self.question.trim().is_empty() {
            return Err(AttributionError::BadInput("the question is empty".into()));
        }
        if self.passages.is_empty() {
            return Err(AttributionError::BadInput("no passages given".into()));
        }
        for (i, p) in self.passages.iter().enumerate() {
            if p.trim().is_empty() {
                return Err(AttributionError::BadInput(format!(
                    "passage {} is empty",
                    i + 1
                )));
            }
        }
        for i in 0..self.passages.len() {
            for j in 0..i {
                if self.passages[i].trim() == self.passages[j].trim() {
                    return Err(AttributionError::BadInput(format!(
                        "passages {} and {} are identical; remove duplicates (their credit would be split arbitrarily)",
                        j + 1,
                        i + 1
                    )));
                }
            }
        }
        if let Some(a) = &self.answer
            && a.trim().is_empty()
        {
            return Err(AttributionError::BadInput(
                "the given answer is empty".into(),
            ));
        }
        Ok(())
    }
}

/// The chat text around the user message: `(before, after)`.
pub(crate) fn chat_frame(
    model: &Model,
    system: Option<&str>,
) -> Result<(String, String, bool), AttributionError> {
    if !model.has_chat_template() {
        // A base model reads the user text as written, after BOS if it wants one.
        return Ok((String::new(), String::new(), model.tokenizer().wants_bos()));
    }
    const MARK: &str = "\u{1}GLASSBOX-USER-MESSAGE\u{1}";
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(ChatMessage {
            role: "system".into(),
            content: s.to_string(),
        });
    }
    messages.push(ChatMessage {
        role: "user".into(),
        content: MARK.to_string(),
    });
    let text = model.render_chat(&messages, true)?;
    let (before, after) = text.split_once(MARK).ok_or_else(|| {
        AttributionError::BadInput(
            "the chat template transforms the user message; passages cannot be segmented".into(),
        )
    })?;
    Ok((before.to_string(), after.to_string(), false))
}

fn fill(template: &str, number: usize, text: &str) -> String {
    template
        .replace("{number}", &number.to_string())
        .replace("{text}", text)
}

/// What is refined: nothing (passages are the units), a passage into sentences, or a sentence
/// of a passage into words.
#[derive(Debug, Clone, PartialEq)]
enum Level {
    Passages,
    Sentences { passage: usize },
    Words { passage: usize, sentence: usize },
}

/// Splits text into sentences after `.`, `!` or `?` followed by whitespace; every piece but the
/// first starts with its separating whitespace (tokenizers split before a space).
pub fn sentences(text: &str) -> Vec<String> {
    split_keeping_leading_space(text, |prev, _| matches!(prev, '.' | '!' | '?'))
}

/// Splits text into words, each but the first with its leading whitespace.
pub fn words(text: &str) -> Vec<String> {
    split_keeping_leading_space(text, |_, _| true)
}

fn split_keeping_leading_space(text: &str, boundary: impl Fn(char, char) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev: Option<char> = None;
    let mut prev_non_space: Option<char> = None;
    for ch in text.chars() {
        if ch.is_whitespace()
            && prev.is_some_and(|p| !p.is_whitespace())
            && prev_non_space.is_some_and(|p| boundary(p, ch))
            && !current.trim().is_empty()
        {
            out.push(std::mem::take(&mut current));
        }
        current.push(ch);
        prev = Some(ch);
        if !ch.is_whitespace() {
            prev_non_space = Some(ch);
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    } else if let Some(last) = out.last_mut() {
        last.push_str(&current);
    }
    out
}

/// Cuts a refined passage line `prefix + text + suffix` into the fixed text before its units,
/// the units, and the fixed text after. Units carry their leading whitespace: tokenizers split
/// before a space, so the pieces tokenize as the whole line does.
fn cut(prefix: &str, text: &str, suffix: &str, level: &Level) -> (String, Vec<String>, String) {
    let (stem, lead) = match prefix.strip_suffix(' ') {
        Some(p) => (p, " "),
        None => (prefix, ""),
    };
    let mut sents = sentences(text);
    match *level {
        Level::Words { sentence, .. } => {
            let target = sents[sentence].clone();
            let body = target.trim_start();
            let space = if sentence == 0 {
                lead.to_string()
            } else {
                target[..target.len() - body.len()].to_string()
            };
            let mut units = words(body);
            units[0] = format!("{space}{}", units[0]);
            let before = if sentence == 0 {
                String::new()
            } else {
                format!("{lead}{}", sents[..sentence].concat())
            };
            let after: String = sents[sentence + 1..].concat();
            (format!("{stem}{before}"), units, format!("{after}{suffix}"))
        }
        _ => {
            sents[0] = format!("{lead}{}", sents[0]);
            (stem.to_string(), sents, suffix.to_string())
        }
    }
}

/// Builds the segmented prompt of a level, and describes its units.
fn segmented(
    request: &CiteRequest,
    frame: &(String, String, bool),
    level: &Level,
) -> (SegmentedPrompt, Vec<Unit>) {
    let t = &request.template;
    let (before_passages, after_passages) =
        t.user.split_once("{passages}").expect("validated template");
    let question = |s: &str| s.replace("{question}", request.question.trim());
    let mut segments = vec![Segment::Fixed(format!(
        "{}{}",
        frame.0,
        question(before_passages)
    ))];
    let mut units = Vec::new();
    for i in 0..request.passages.len() {
        let text = request.passages[i].trim();
        let line = fill(&t.passage, i + 1, text);
        let refined = match level {
            Level::Passages => None,
            Level::Sentences { passage } | Level::Words { passage, .. } => {
                (*passage == i).then_some(())
            }
        };
        if *level == Level::Passages {
            segments.push(Segment::Unit {
                unit: i,
                kept: line,
                placeholder: fill(&t.placeholder, i + 1, ""),
            });
            units.push(Unit {
                label: format!("[{}]", i + 1),
                text: text.to_string(),
                level: "passage".into(),
                span: None,
            });
        } else if refined.is_some() {
            let (prefix, suffix) = t.passage.split_once("{text}").expect("validated template");
            let number = (i + 1).to_string();
            let (before, pieces, after) = cut(
                &prefix.replace("{number}", &number),
                text,
                &suffix.replace("{number}", &number),
                level,
            );
            segments.push(Segment::Fixed(before));
            let kind = if matches!(level, Level::Words { .. }) {
                "word"
            } else {
                "sentence"
            };
            for (k, piece) in pieces.into_iter().enumerate() {
                units.push(Unit {
                    label: if kind == "word" {
                        piece.trim().to_string()
                    } else {
                        format!("[{}.{}]", i + 1, k + 1)
                    },
                    text: piece.trim().to_string(),
                    level: kind.into(),
                    span: None,
                });
                segments.push(Segment::Unit {
                    unit: k,
                    kept: piece,
                    placeholder: String::new(),
                });
            }
            segments.push(Segment::Fixed(after));
        } else {
            segments.push(Segment::Fixed(line));
        }
    }
    segments.push(Segment::Fixed(format!(
        "{}{}",
        question(after_passages),
        frame.1
    )));
    let prompt = SegmentedPrompt {
        segments: merge_fixed(segments)
            .into_iter()
            .filter(|s| !matches!(s, Segment::Fixed(t) if t.is_empty()))
            .collect(),
        bos: frame.2,
    };
    (prompt, units)
}

/// Joins adjacent fixed segments (tokenizing them together, as the whole text would).
fn merge_fixed(segments: Vec<Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(segments.len());
    for s in segments {
        match (out.last_mut(), s) {
            (Some(Segment::Fixed(prev)), Segment::Fixed(next)) => prev.push_str(&next),
            (_, s) => out.push(s),
        }
    }
    out
}

/// Token ids of `text` (no BOS).
fn encode(model: &Model, text: &str) -> Result<Vec<u32>, AttributionError> {
    Ok(model
        .tokenizer()
        .encode(text, false)
        .map_err(glassbox_runtime::RuntimeError::from)?
        .ids)
}

/// Runs the request's method on one level's game and packages the result.
fn attribute(
    model: &Model,
    request: &CiteRequest,
    prompt: SegmentedPrompt,
    units: Vec<Unit>,
    answer: &[u32],
    answer_tokens: &[AnswerToken],
    method: Method,
) -> Result<Attribution, AttributionError> {
    let mut engine = Engine::new(model, prompt, request.perturbation.clone(), answer.to_vec())?;
    let started = Instant::now();
    let (estimate, targets) = match request.target {
        CiteTarget::LogProb(aggregate) => {
            let mut game = AnswerGame {
                engine: &mut engine,
                aggregate,
            };
            let estimate = estimate(method, &mut game, request.seed)?;
            (estimate, answer_targets(aggregate, answer_tokens))
        }
        CiteTarget::AnswerIdentity => identity(model, &mut engine, answer, method, request.seed)?,
    };
    let stats = engine.stats().clone();
    let cost = stats.cost(started.elapsed().as_secs_f64());
    let info = MethodInfo {
        name: method.name().into(),
        params: estimate.params.clone(),
        seed: method.is_sampled().then_some(request.seed),
    };
    Ok(package(
        model, request, info, units, targets, estimate, cost,
    ))
}

/// The targets of the log-probability game: the whole answer (by `aggregate`), then each of
/// its tokens.
pub fn answer_targets(aggregate: Aggregate, answer_tokens: &[AnswerToken]) -> Vec<Target> {
    let mut targets = vec![Target {
        label: "answer".into(),
        kind: aggregate.name().into(),
        tokens: Some((0, answer_tokens.len())),
    }];
    targets.extend(answer_tokens.iter().enumerate().map(|(i, t)| Target {
        label: t.text.clone(),
        kind: "token_logprob".into(),
        tokens: Some((i, i + 1)),
    }));
    targets
}

/// An estimate made on `model` by `method`, as the report's attribution.
pub fn package(
    model: &Model,
    request: &CiteRequest,
    method: MethodInfo,
    units: Vec<Unit>,
    targets: Vec<Target>,
    estimate: crate::methods::Estimate,
    cost: Cost,
) -> Attribution {
    Attribution {
        schema: ATTRIBUTION_SCHEMA.into(),
        model: model.info().name.clone(),
        method,
        perturbation: request.perturbation.name().into(),
        units,
        targets,
        scores: estimate.scores,
        std_errors: estimate.std_errors,
        value_full: estimate.value_full,
        value_empty: estimate.value_empty,
        cost,
        diagnostics: estimate.diagnostics,
    }
}

/// The answer-identity game in two passes over the same coalitions: the first (crediting only
/// the given answer) generates every coalition's answer; the second credits the given answer
/// and the most frequent alternatives, from the memo, with no further model calls. The
/// estimators draw their coalitions from the seed alone, so both passes ask for the same ones.
fn identity(
    model: &Model,
    engine: &mut Engine<'_>,
    answer: &[u32],
    method: Method,
    seed: u64,
) -> Result<(crate::methods::Estimate, Vec<Target>), AttributionError> {
    let max_tokens = (answer.len() + IDENTITY_EXTRA_TOKENS)
        .min(MAX_ANSWER_TOKENS)
        .max(answer.len() + 1);
    let mut game = IdentityGame {
        engine,
        answers: vec![answer.to_vec()],
        max_tokens,
    };
    estimate(method, &mut game, seed)?;
    let mut counts: Vec<(Vec<u32>, usize)> = Vec::new();
    for generated in game.engine.generated_answers() {
        match counts.iter_mut().find(|(a, _)| a == generated) {
            Some((_, n)) => *n += 1,
            None => counts.push((generated.clone(), 1)),
        }
    }
    // Most frequent first; ties in token order, so the list does not depend on hashing.
    counts.sort_by(|(a, x), (b, y)| y.cmp(x).then_with(|| a.cmp(b)));
    let mut answers = vec![answer.to_vec()];
    answers.extend(
        counts
            .iter()
            .filter(|(a, _)| a != answer)
            .map(|(a, _)| a.clone())
            .take(MAX_IDENTITY_ANSWERS - 1),
    );
    game.answers = answers;
    let before = game.engine.stats().evaluations;
    let mut estimate = estimate(method, &mut game, seed)?;
    debug_assert_eq!(
        game.engine.stats().evaluations,
        before,
        "the second pass is memoized"
    );
    let count_of = |a: &Vec<u32>| counts.iter().find(|(b, _)| b == a).map_or(0, |(_, n)| *n);
    let mut targets = Vec::with_capacity(game.answers.len());
    for a in &game.answers {
        let text = model
            .tokenizer()
            .decode(a)
            .map_err(glassbox_runtime::RuntimeError::from)?;
        targets.push(Target {
            label: if a.len() >= max_tokens {
                format!("{}…", text.trim())
            } else {
                text.trim().to_string()
            },
            kind: "answer_identity".into(),
            tokens: None,
        });
    }
    if !estimate.diagnostics.is_object() {
        estimate.diagnostics = serde_json::json!({});
    }
    if let serde_json::Value::Object(d) = &mut estimate.diagnostics {
        d.insert(
            "answer_counts".into(),
            game.answers.iter().map(count_of).collect::<Vec<_>>().into(),
        );
        d.insert("distinct_answers".into(), counts.len().into());
        d.insert("max_answer_tokens".into(), max_tokens.into());
    }
    Ok((estimate, targets))
}

/// Most units a refined level (a passage's sentences, a sentence's words) enumerates exactly.
/// Lower than the passage-level limit because refined units are short: every leaf of the trie
/// still runs the rest of the prompt, so 2^n leaves cost about 2^n × (prompt tail) tokens, and
/// 2^14 of them take about 20 minutes on two cores, 2^10 about 90 s and 2^8 about 20 s.
pub const MAX_EXACT_REFINED_UNITS: usize = 8;

/// The method used on a refined level: exact enumeration becomes permutation sampling when a
/// passage has too many sentences (or a sentence too many words) to enumerate cheaply.
fn method_for(method: Method, units: usize) -> Method {
    match method {
        Method::ExactShapley if units > MAX_EXACT_REFINED_UNITS => Method::PermutationShapley {
            permutations: crate::methods::DEFAULT_PERMUTATIONS,
        },
        m => m,
    }
}

/// A cite request made concrete: the passage-level prompt, its units, and the answer's tokens.
pub struct Prepared {
    pub prompt: SegmentedPrompt,
    pub units: Vec<Unit>,
    pub answer: Vec<u32>,
    pub answer_tokens: Vec<AnswerToken>,
    pub answer_text: String,
    pub generated: bool,
    frame: (String, String, bool),
}

/// Validates a request, builds its prompt and fixes the answer (generating it if needed).
pub fn prepare(model: &Model, request: &CiteRequest) -> Result<Prepared, AttributionError> {
    prepare_generating(model, request, &mut |_, ids, options| {
        Ok(model.generate(ids, options)?.tokens)
    })
}

/// How the answer is generated when none is given: from the segmented prompt and its full
/// tokens, with these options (a caller that caches the prompt's keys and values anyway can
/// generate from that cache and keep it).
pub type Generator<'g> = dyn FnMut(&SegmentedPrompt, &[u32], &GenerateOptions) -> Result<Vec<u32>, AttributionError>
    + 'g;

/// [`prepare`], with the answer (when none is given) generated by `generate`.
pub fn prepare_generating(
    model: &Model,
    request: &CiteRequest,
    generate: &mut Generator<'_>,
) -> Result<Prepared, AttributionError> {
    request.validate()?;
    let frame = chat_frame(model, request.system.as_deref())?;
    let (prompt, units) = segmented(request, &frame, &Level::Passages);
    if let Method::ExactShapley = request.method
        && units.len() > crate::methods::MAX_EXACT_UNITS
    {
        return Err(AttributionError::TooManyForExact {
            units: units.len(),
            max: crate::methods::MAX_EXACT_UNITS,
        });
    }
    let full_text = prompt.render(&crate::Coalition::full(units.len()), &Perturbation::Delete);
    let full_ids = model
        .tokenizer()
        .encode(&full_text, prompt.bos)
        .map_err(glassbox_runtime::RuntimeError::from)?
        .ids;
    let window = model.config().context_length;
    let overflow = |tokens: usize| -> AttributionError {
        glassbox_runtime::RuntimeError::ContextOverflow { tokens, window }.into()
    };
    let (answer, generated) = match &request.answer {
        Some(a) => (encode(model, a.trim())?, false),
        None => {
            if full_ids.len() >= window {
                return Err(overflow(full_ids.len()));
            }
            let options = GenerateOptions {
                max_new_tokens: MAX_ANSWER_TOKENS,
                sampling: Sampling::Greedy,
                stop_at_eos: true,
            };
            (generate(&prompt, &full_ids, &options)?, true)
        }
    };
    if answer.is_empty() {
        return Err(AttributionError::BadInput(
            "the answer has no tokens (an empty generation?); give the answer to attribute with --answer".into(),
        ));
    }
    if full_ids.len() + answer.len() > window {
        return Err(overflow(full_ids.len() + answer.len()));
    }
    let answer_tokens: Vec<AnswerToken> = answer
        .iter()
        .map(|&id| AnswerToken {
            id,
            text: model.tokenizer().decode(&[id]).unwrap_or_default(),
        })
        .collect();
    let answer_text = model
        .tokenizer()
        .decode(&answer)
        .map_err(glassbox_runtime::RuntimeError::from)?;
    Ok(Prepared {
        prompt,
        units,
        answer,
        answer_tokens,
        answer_text,
        generated,
        frame,
    })
}

/// One refined level attributed: its prompt (the passages' prompt text, cut into finer
/// units), its units, and the method to use on it.
pub type LevelAttribution<'a> =
    dyn FnMut(SegmentedPrompt, Vec<Unit>, Method) -> Result<Attribution, AttributionError> + 'a;

/// Refines the first `request.refine_passages` passages of `ranking` into sentences (and, with
/// `refine_words`, each one's top sentence into words), every level attributed by
/// `attribute_level`. The exact path and the estimates at scale share this walk and differ
/// only in how a level is attributed.
pub fn refine(
    request: &CiteRequest,
    prepared: &Prepared,
    ranking: &[usize],
    attribute_level: &mut LevelAttribution<'_>,
) -> Result<Vec<Refinement>, AttributionError> {
    let mut level_of = |level: Level| {
        let (prompt, units) = segmented(request, &prepared.frame, &level);
        let method = method_for(request.method, units.len());
        attribute_level(prompt, units, method)
    };
    let mut refinements = Vec::new();
    for &p in ranking.iter().take(request.refine_passages) {
        let sentence_level = level_of(Level::Sentences { passage: p })?;
        let mut nested = Vec::new();
        if request.refine_words {
            let top = sentence_level.ranking(0)[0];
            nested.push(Refinement {
                parent_unit: top,
                attribution: level_of(Level::Words {
                    passage: p,
                    sentence: top,
                })?,
                refinements: Vec::new(),
            });
        }
        refinements.push(Refinement {
            parent_unit: p,
            attribution: sentence_level,
            refinements: nested,
        });
    }
    Ok(refinements)
}

/// Attributes the answer to the passages (and, on request, refines the top ones).
pub fn cite(model: &Model, request: &CiteRequest) -> Result<CiteReport, AttributionError> {
    let prepared = prepare(model, request)?;
    let level = |prompt, units, method| {
        attribute(
            model,
            request,
            prompt,
            units,
            &prepared.answer,
            &prepared.answer_tokens,
            method,
        )
    };
    let attribution = level(
        prepared.prompt.clone(),
        prepared.units.clone(),
        request.method,
    )?;
    let refinements = refine(
        request,
        &prepared,
        &attribution.ranking(0),
        &mut |p, u, m| level(p, u, m),
    )?;
    Ok(CiteReport {
        schema: CITE_SCHEMA.into(),
        question: request.question.trim().to_string(),
        answer: prepared.answer_text,
        answer_tokens: prepared.answer_tokens,
        answer_generated: prepared.generated,
        attribution,
        refinements,
        approximation: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_and_words_keep_their_separating_spaces() {
        let s = sentences("The tower is red. It was built in 1874!  Why? Nobody knows.");
        assert_eq!(
            s,
            vec![
                "The tower is red.",
                " It was built in 1874!",
                "  Why?",
                " Nobody knows."
            ]
        );
        assert_eq!(
            s.concat(),
            "The tower is red. It was built in 1874!  Why? Nobody knows."
        );
        assert_eq!(sentences("No full stop"), vec!["No full stop"]);
        assert_eq!(
            sentences("Dr.Smith came. Then left."),
            vec!["Dr.Smith came.", " Then left."]
        );
        let w = words("Rebuilt in 1874, by Ottilie.");
        assert_eq!(w, vec!["Rebuilt", " in", " 1874,", " by", " Ottilie."]);
    }

    #[test]
    fn refined_lines_reassemble_to_the_passage_line() {
        let text = "The tower is red. It was built in 1874 by Ottilie Brask.";
        for level in [
            Level::Sentences { passage: 0 },
            Level::Words {
                passage: 0,
                sentence: 1,
            },
            Level::Words {
                passage: 0,
                sentence: 0,
            },
        ] {
            let (before, units, after) = cut("[3] ", text, "\n", &level);
            assert_eq!(
                format!("{before}{}{after}", units.concat()),
                format!("[3] {text}\n"),
                "{level:?}"
            );
            assert!(!before.ends_with(' '), "units carry the space: {before:?}");
            assert!(units.iter().skip(1).all(|u| u.starts_with(' ')));
        }
    }

    #[test]
    fn templates_are_checked() {
        let t = RagTemplate::parse(DEFAULT_TEMPLATE).unwrap();
        assert_eq!(t.name, "rag_qa");
        let bad = DEFAULT_TEMPLATE.replace("{passages}", "");
        assert!(RagTemplate::parse(&bad).is_err());
        assert!(RagTemplate::parse("name = 1").is_err());
    }
}
