//! Reading a model's self-explanation — the words it calls important, or a score per word —
//! into one score per input word, with an honest account of what could not be read.
//!
//! Small models (135M–270M parameters) rarely answer in the exact format they were asked for:
//! the same answer comes as a JSON array, a numbered list, `word: score` lines or a sentence,
//! with words the input does not contain, repeats, too many words or a cut-off end. The parser
//! accepts all of these, aligns what the model named to the input's word units by position,
//! and records every liberty it took ([`ItemNote`]) and why the result is incomplete
//! ([`ParseStatus`]). A failed parse keeps all-zero scores *and* says [`ParseStatus::Failed`],
//! so no caller can take an unreadable answer for an explanation in which nothing matters.
//!
//! How an answer is read:
//! 1. Every JSON value in the answer (`[...]`, `{...}`, also inside prose or a code fence) is
//!    tried; a value cut off by the end of the answer is recovered up to its last complete
//!    element and the result is marked [`PartialReason::Truncated`].
//! 2. The text is read line by line: lists, `word: score` pairs, quoted words, sentences such
//!    as "The most important words are: great, boring." An answer that repeats the whole input
//!    has that copy removed first, so an echoed question does not read as "every word matters".
//! 3. The first JSON value that names an input word wins; otherwise the text reading, if it
//!    names one; otherwise whichever reading found anything, to report what the model said.
//!
//! Alignment and scoring rules are documented on [`parse_explanation`].

mod align;
mod json;
mod text;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use glassbox_report::Unit;
use serde::{Deserialize, Serialize};

use align::WordIndex;

/// What the model was asked to answer, which decides how its answer is read and scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AnswerFormat {
    /// "List the `k` most important words": an ordered list of words.
    TopK { k: usize },
    /// "Give every word a score in [-1, 1]": word–score pairs.
    Scores,
}

/// How much of an answer could be turned into scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ParseStatus {
    /// The answer was read in full and follows the requested format.
    Complete,
    /// Scores were read, but part of the answer was lost or deviates from the format.
    Partial { reasons: Vec<PartialReason> },
    /// No input word got a score; the all-zero scores mean nothing.
    Failed { reason: FailReason },
}

/// Why a usable parse is incomplete. Counts are numbers of [`ExplanationItem`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartialReason {
    /// The answer's JSON was cut off (generation hit its token limit); what came before the
    /// cut was kept, the element being written when it stopped was dropped.
    Truncated,
    /// Items that name no word of the input (see [`ParsedExplanation::unmatched`]).
    Unmatched { count: usize },
    /// Items naming a word again when the input has no further occurrence of it; ignored.
    Repeated { count: usize },
    /// Scores outside [-1, 1], clamped into it.
    Clamped { count: usize },
    /// Items without a readable score (`"N/A"`, `"high"`, a bare word in a score answer).
    Unscored { count: usize },
    /// Fewer distinct input words than asked for (and than the input has).
    TooFew { asked: usize, given: usize },
    /// More words than asked for; those after the `asked`-th were ignored.
    TooMany { asked: usize, given: usize },
    /// Input words that got no score in a score answer (their score is 0, `mentioned` false).
    Missing { count: usize },
}

impl PartialReason {
    /// The reason's name, as in its JSON `kind` (for tallies such as [`ParseSummary`]).
    pub fn kind(&self) -> &'static str {
        match self {
            PartialReason::Truncated => "truncated",
            PartialReason::Unmatched { .. } => "unmatched",
            PartialReason::Repeated { .. } => "repeated",
            PartialReason::Clamped { .. } => "clamped",
            PartialReason::Unscored { .. } => "unscored",
            PartialReason::TooFew { .. } => "too_few",
            PartialReason::TooMany { .. } => "too_many",
            PartialReason::Missing { .. } => "missing",
        }
    }
}

/// Why no input word got a score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailReason {
    #[error("the answer is empty")]
    Empty,
    #[error("there are no input words to align the answer to; pass the input's word units")]
    NoInputWords,
    #[error("k = 0 asks for no words; ask for at least one")]
    NoWordsRequested,
    #[error("the answer only repeats the input")]
    EchoOnly,
    #[error("no words or word–score pairs could be read from the answer")]
    NoItems,
    #[error("none of the {items} items the answer names is a word of the input")]
    NothingAligned { items: usize },
    #[error("the answer names input words but gives none of them a readable score")]
    NoScores,
}

impl FailReason {
    /// The reason's name, as in its JSON `kind` (for tallies such as [`ParseSummary`]).
    pub fn kind(&self) -> &'static str {
        match self {
            FailReason::Empty => "empty",
            FailReason::NoInputWords => "no_input_words",
            FailReason::NoWordsRequested => "no_words_requested",
            FailReason::EchoOnly => "echo_only",
            FailReason::NoItems => "no_items",
            FailReason::NothingAligned { .. } => "nothing_aligned",
            FailReason::NoScores => "no_scores",
        }
    }
}

/// A liberty the parser took with one item, or a way the item deviates from the format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ItemNote {
    /// No input word (or run of consecutive words) matches the item.
    Unmatched,
    /// The input has no further occurrence of a word named before; the item was ignored.
    Repeated,
    /// Listed after the k-th word of a top-k answer; ignored.
    BeyondK,
    /// The score was outside [-1, 1] and was clamped into it.
    Clamped { given: f64 },
    /// The score came as a string (`"0.9"`) and was read as a number.
    ScoreFromString,
    /// No readable score; `given` is what stood in its place, if anything.
    NoScore { given: Option<String> },
    /// The item is one word of `phrase`, words that are not consecutive in the input but each
    /// occur in it (a space-separated list on one line).
    SplitFrom { phrase: String },
    /// Only the last words of `phrase` match the input ("score for great: 0.9"); they are
    /// the words the score stood next to.
    TrimmedFrom { phrase: String },
    /// The word occurs more often in the input than the model named it; the score also went
    /// to the `count` occurrences no mention claimed.
    AppliedToRepeats { count: usize },
}

/// One thing the model named: a word or phrase, with its score and where it landed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanationItem {
    /// The item as the model wrote it (without quotes, list markers or the score).
    pub text: String,
    /// Score answers: the score given (after clamping). Top-k answers: the rank score its
    /// word units received. `None` when it had none or was ignored.
    pub score: Option<f64>,
    /// Indices of the word units that received `score`.
    pub units: Vec<usize>,
    pub notes: Vec<ItemNote>,
}

/// A self-explanation read into one score per input word unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParsedExplanation {
    /// The model's answer, verbatim, so the parse can be checked or redone.
    pub raw: String,
    pub format: AnswerFormat,
    pub status: ParseStatus,
    /// One score per word unit, in input order; 0 for words the answer does not score.
    pub scores: Vec<f64>,
    /// Whether the answer scored each word unit, telling a stated 0 from a missing one.
    pub mentioned: Vec<bool>,
    /// Everything read from the answer, in answer order.
    pub items: Vec<ExplanationItem>,
    /// Items naming no input word: words the model made up, misspelt or inflected.
    pub unmatched: Vec<String>,
}

impl ParsedExplanation {
    /// Whether the scores are an explanation at all (the parse did not fail). Partial parses
    /// are usable; check [`ParseStatus::Partial`]'s reasons for how far to trust them.
    pub fn is_usable(&self) -> bool {
        !matches!(self.status, ParseStatus::Failed { .. })
    }
}

/// Parses the model's `raw` answer to a self-explanation prompt asked in `format`, against the
/// input's word units `words` (text and character span, in input order).
///
/// Alignment: a named item matches a unit when both, lowercased with surrounding punctuation
/// and quotes stripped, are equal; an item of up to three words ("not good") matches that many
/// consecutive units. An item matching no run is read as separate words when each occurs
/// (top-k: "great boring awful"), else as its longest matching ending ("score for great";
/// score answers try only this, since the score belongs to the words next to it).
///
/// Occurrences: the i-th mention of a word goes to its i-th unclaimed occurrence, so a model
/// that scores every word in order ("good: 0.5, ..., good: -0.2") gives each occurrence its own
/// score. A mention with no occurrence left is [`ItemNote::Repeated`] and ignored. When a word
/// is named fewer times than it occurs, the occurrences left over get the score of its last
/// mention ([`ItemNote::AppliedToRepeats`]): a model names words, not positions, so "*great*
/// matters" is a claim about every *great* — scoring only the first would make a deletion test
/// leave the word in the text and judge the model on a claim it did not make.
///
/// Scores: a top-k answer's i-th distinct input word (0-based, counting only items that
/// landed on input words) scores `(k - i) / k`, so the first scores 1, the k-th 1/k and
/// unlisted words 0 — the order the model gave survives into rankings and deletion curves, and
/// scores stay comparable across answers with different list lengths. Words after the k-th are
/// ignored ([`ItemNote::BeyondK`]). A score answer's scores are used as given, clamped into
/// [-1, 1]; unscored words are 0 with `mentioned` false.
pub fn parse_explanation(raw: &str, format: &AnswerFormat, words: &[Unit]) -> ParsedExplanation {
    let index = WordIndex::new(words);
    let early = if index.is_empty() {
        Some(FailReason::NoInputWords)
    } else if raw.trim().is_empty() {
        Some(FailReason::Empty)
    } else if *format == (AnswerFormat::TopK { k: 0 }) {
        Some(FailReason::NoWordsRequested)
    } else {
        None
    };
    if let Some(reason) = early {
        return ParsedExplanation {
            raw: raw.to_string(),
            format: *format,
            status: ParseStatus::Failed { reason },
            scores: vec![0.0; words.len()],
            mentioned: vec![false; words.len()],
            items: Vec::new(),
            unmatched: Vec::new(),
        };
    }
    let reading = read_answer(raw, format, &index);
    let assigned = align::assign(&reading.candidates, format, &index);
    let status = judge(&reading, &assigned, format, &index);
    ParsedExplanation {
        raw: raw.to_string(),
        format: *format,
        status,
        scores: assigned.scores,
        mentioned: assigned.mentioned,
        items: assigned.items,
        unmatched: assigned.unmatched,
    }
}

/// What an answer says, before alignment: named phrases with the score given to each.
struct Reading {
    candidates: Vec<Candidate>,
    /// The JSON it came from was cut off.
    truncated: bool,
    /// A copy of the whole input was removed from the text first.
    echoed: bool,
}

/// One phrase the model named.
#[derive(Debug)]
struct Candidate {
    /// As written, for display.
    text: String,
    /// Its words as written (aligned after lowercasing).
    words: Vec<String>,
    /// Ignored for top-k answers.
    score: GivenScore,
}

/// The score that came with a phrase.
#[derive(Debug, Clone, PartialEq)]
enum GivenScore {
    Absent,
    Number(f64),
    FromString(f64),
    Unreadable(String),
}

/// Reads `raw` both as JSON and as text and keeps the reading to align (see the module docs).
fn read_answer(raw: &str, format: &AnswerFormat, index: &WordIndex) -> Reading {
    let names_input = |cands: &[Candidate]| cands.iter().any(|c| index.resolves(&c.words, format));
    let mut json: Vec<Reading> = json::values(raw)
        .into_iter()
        .map(|(value, truncated)| Reading {
            candidates: match format {
                AnswerFormat::TopK { .. } => json::topk_candidates(&value),
                AnswerFormat::Scores => json::score_candidates(&value),
            },
            truncated,
            echoed: false,
        })
        .filter(|r| !r.candidates.is_empty())
        .collect();
    let (text, echoed) = text::remove_echo(raw, index);
    let text = Reading {
        candidates: match format {
            AnswerFormat::TopK { .. } => text::topk_candidates(&text, index),
            AnswerFormat::Scores => text::score_candidates(&text),
        },
        truncated: false,
        echoed,
    };
    if let Some(first) = json.iter().position(|r| names_input(&r.candidates)) {
        return json.swap_remove(first);
    }
    if names_input(&text.candidates) {
        return text;
    }
    json.into_iter().next().unwrap_or(text)
}

/// The status of an assignment: failed when no unit got a score, else every way it deviates.
fn judge(
    reading: &Reading,
    assigned: &align::Assignment,
    format: &AnswerFormat,
    index: &WordIndex,
) -> ParseStatus {
    let items = &assigned.items;
    let with =
        |f: fn(&ItemNote) -> bool| items.iter().filter(|item| item.notes.iter().any(f)).count();
    if !assigned.mentioned.contains(&true) {
        let named_unscored = |item: &ExplanationItem| !item.notes.contains(&ItemNote::Unmatched);
        let reason = if items.is_empty() && reading.echoed {
            FailReason::EchoOnly
        } else if items.is_empty() {
            FailReason::NoItems
        } else if *format == AnswerFormat::Scores && items.iter().any(named_unscored) {
            FailReason::NoScores
        } else {
            FailReason::NothingAligned { items: items.len() }
        };
        return ParseStatus::Failed { reason };
    }
    let mut reasons = Vec::new();
    if reading.truncated {
        reasons.push(PartialReason::Truncated);
    }
    let unmatched = with(|n| *n == ItemNote::Unmatched);
    if unmatched > 0 {
        reasons.push(PartialReason::Unmatched { count: unmatched });
    }
    let repeated = with(|n| *n == ItemNote::Repeated);
    if repeated > 0 {
        reasons.push(PartialReason::Repeated { count: repeated });
    }
    let clamped = with(|n| matches!(n, ItemNote::Clamped { .. }));
    if clamped > 0 {
        reasons.push(PartialReason::Clamped { count: clamped });
    }
    let unscored = with(|n| matches!(n, ItemNote::NoScore { .. }));
    if unscored > 0 {
        reasons.push(PartialReason::Unscored { count: unscored });
    }
    match *format {
        AnswerFormat::TopK { k } => {
            let ranked = items.iter().filter(|item| item.score.is_some()).count();
            let given = ranked + with(|n| *n == ItemNote::BeyondK);
            if given > k {
                reasons.push(PartialReason::TooMany { asked: k, given });
            } else if ranked < k.min(index.distinct_words()) {
                reasons.push(PartialReason::TooFew {
                    asked: k,
                    given: ranked,
                });
            }
        }
        AnswerFormat::Scores => {
            let missing = index.unscored(&assigned.mentioned);
            if missing > 0 {
                reasons.push(PartialReason::Missing { count: missing });
            }
        }
    }
    if reasons.is_empty() {
        ParseStatus::Complete
    } else {
        ParseStatus::Partial { reasons }
    }
}

/// How well a model's answers parsed over many prompts: how often the self-explanation
/// protocol produced something usable, and what went wrong when it did not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseSummary {
    pub complete: usize,
    pub partial: usize,
    pub failed: usize,
    /// Answers with each [`PartialReason`], by [`PartialReason::kind`] (an answer can have
    /// several).
    pub partial_reasons: BTreeMap<String, usize>,
    /// Failed answers by [`FailReason::kind`].
    pub failure_reasons: BTreeMap<String, usize>,
}

impl ParseSummary {
    /// Counts one parsed answer.
    pub fn add(&mut self, parsed: &ParsedExplanation) {
        match &parsed.status {
            ParseStatus::Complete => self.complete += 1,
            ParseStatus::Partial { reasons } => {
                self.partial += 1;
                for reason in reasons {
                    *self
                        .partial_reasons
                        .entry(reason.kind().to_string())
                        .or_default() += 1;
                }
            }
            ParseStatus::Failed { reason } => {
                self.failed += 1;
                *self
                    .failure_reasons
                    .entry(reason.kind().to_string())
                    .or_default() += 1;
            }
        }
    }

    /// Answers counted.
    pub fn total(&self) -> usize {
        self.complete + self.partial + self.failed
    }

    /// The share of answers that are usable (complete or partial); `None` before any answer.
    pub fn usable_rate(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| (self.complete + self.partial) as f64 / total as f64)
    }
}

impl<'a> Extend<&'a ParsedExplanation> for ParseSummary {
    fn extend<I: IntoIterator<Item = &'a ParsedExplanation>>(&mut self, parsed: I) {
        for p in parsed {
            self.add(p);
        }
    }
}
