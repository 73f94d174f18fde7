//! Matching what the model named to the input's word units, and giving each unit its score
//! (the rules are documented on [`super::parse_explanation`]).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use glassbox_report::Unit;

use super::{AnswerFormat, Candidate, ExplanationItem, GivenScore, ItemNote};

/// Items longer than this are sentences, not phrases: "not very good" is about the longest
/// phrase a sentiment explanation names as one item.
pub(super) const MAX_PHRASE_WORDS: usize = 3;

/// Words of conversation, of the prompt and of answer labels ("Sure!", "Top 3 words", "N/A",
/// `"prediction"`). An item
/// made only of these that names no input word is the model talking, not a word it claims
/// the input contains, so it is dropped rather than reported as unmatched.
const FILLER_WORDS: &[&str] = &[
    "a",
    "and",
    "answer",
    "are",
    "certainly",
    "confidence",
    "explanation",
    "following",
    "here",
    "important",
    "input",
    "is",
    "key",
    "label",
    "list",
    "most",
    "n/a",
    "none",
    "note",
    "ok",
    "okay",
    "output",
    "prediction",
    "reason",
    "reasoning",
    "score",
    "scores",
    "sentiment",
    "sure",
    "text",
    "the",
    "these",
    "top",
    "word",
    "words",
    "yes",
];

/// The form in which words are compared: lowercase, surrounding punctuation and quotes
/// stripped, typographic apostrophes made plain (`"Great!"` and `great` are the same word).
pub(super) fn word_key(word: &str) -> String {
    word.trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
        .replace('’', "'")
}

/// The input's word units in comparable form, with where each word starts.
pub(super) struct WordIndex {
    keys: Vec<String>,
    starts: HashMap<String, Vec<usize>>,
}

/// How a named phrase lands on the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resolution {
    /// The whole phrase matches consecutive units.
    Run,
    /// Each word matches on its own (top-k only).
    Split,
    /// Only its last `n` words match.
    Suffix(usize),
    Unmatched,
}

impl WordIndex {
    pub(super) fn new(words: &[Unit]) -> Self {
        let keys: Vec<String> = words.iter().map(|u| word_key(&u.text)).collect();
        let mut starts: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            if !key.is_empty() {
                starts.entry(key.clone()).or_default().push(i);
            }
        }
        Self { keys, starts }
    }

    /// Whether no unit can be named at all (no units, or only punctuation).
    pub(super) fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Distinct words of the input: the most a top-k answer can name.
    pub(super) fn distinct_words(&self) -> usize {
        self.starts.len()
    }

    /// Nameable units not marked in `mentioned`.
    pub(super) fn unscored(&self, mentioned: &[bool]) -> usize {
        self.keys
            .iter()
            .zip(mentioned)
            .filter(|(key, m)| !key.is_empty() && !**m)
            .count()
    }

    /// The units' keys ([`word_key`]), in input order.
    pub(super) fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Start units of every run of units whose keys are `phrase`.
    fn occurrences<'a>(&'a self, phrase: &'a [String]) -> impl Iterator<Item = usize> + 'a {
        phrase
            .first()
            .and_then(|first| self.starts.get(first))
            .into_iter()
            .flatten()
            .copied()
            .filter(move |&i| self.keys.get(i..i + phrase.len()) == Some(phrase))
    }

    fn occurs(&self, phrase: &[String]) -> bool {
        self.occurrences(phrase).next().is_some()
    }

    /// How the phrase of `words` (as written) lands on the input.
    pub(super) fn resolve(&self, words: &[String], format: &AnswerFormat) -> Resolution {
        let keys: Vec<String> = words.iter().map(|w| word_key(w)).collect();
        if keys.len() <= MAX_PHRASE_WORDS && self.occurs(&keys) {
            return Resolution::Run;
        }
        let top_k = matches!(format, AnswerFormat::TopK { .. });
        if top_k && keys.len() > 1 && keys.iter().all(|k| self.occurs(std::slice::from_ref(k))) {
            return Resolution::Split;
        }
        (1..keys.len().min(MAX_PHRASE_WORDS + 1))
            .rev()
            .find(|&n| self.occurs(&keys[keys.len() - n..]))
            .map_or(Resolution::Unmatched, Resolution::Suffix)
    }

    pub(super) fn resolves(&self, words: &[String], format: &AnswerFormat) -> bool {
        self.resolve(words, format) != Resolution::Unmatched
    }
}

/// An unmatched phrase that is prose or filler rather than a named word.
fn is_noise(words: &[String]) -> bool {
    words.len() > MAX_PHRASE_WORDS
        || words
            .iter()
            .all(|w| FILLER_WORDS.contains(&word_key(w).as_str()))
}

/// Scores per unit and the items that gave them.
pub(super) struct Assignment {
    pub(super) items: Vec<ExplanationItem>,
    pub(super) scores: Vec<f64>,
    pub(super) mentioned: Vec<bool>,
    pub(super) unmatched: Vec<String>,
}

/// A score answer's score for an item (clamped into [-1, 1]) and the notes on how it was
/// read; top-k answers carry no scores of their own.
fn item_score(given: &GivenScore, format: &AnswerFormat) -> (Option<f64>, Vec<ItemNote>) {
    if matches!(format, AnswerFormat::TopK { .. }) {
        return (None, Vec::new());
    }
    let clamp = |v: f64, mut notes: Vec<ItemNote>| {
        let clamped = v.clamp(-1.0, 1.0);
        if clamped != v {
            notes.push(ItemNote::Clamped { given: v });
        }
        (Some(clamped), notes)
    };
    match given {
        GivenScore::Number(v) => clamp(*v, Vec::new()),
        GivenScore::FromString(v) => clamp(*v, vec![ItemNote::ScoreFromString]),
        GivenScore::Unreadable(s) => (
            None,
            vec![ItemNote::NoScore {
                given: Some(s.clone()),
            }],
        ),
        GivenScore::Absent => (None, vec![ItemNote::NoScore { given: None }]),
    }
}

/// Units claimed so far, and by which item.
struct Claims {
    owner: Vec<Option<usize>>,
    scores: Vec<f64>,
}

impl Claims {
    fn free(&self, units: Range<usize>) -> bool {
        self.owner
            .get(units)
            .is_some_and(|o| o.iter().all(Option::is_none))
    }

    fn claim(&mut self, units: Range<usize>, item: usize, score: f64) {
        for u in units {
            self.owner[u] = Some(item);
            self.scores[u] = score;
        }
    }
}

/// Aligns the candidates, in answer order, to the input and scores the units they claim.
pub(super) fn assign(
    candidates: &[Candidate],
    format: &AnswerFormat,
    index: &WordIndex,
) -> Assignment {
    let n = index.keys.len();
    let mut claims = Claims {
        owner: vec![None; n],
        scores: vec![0.0; n],
    };
    let mut items: Vec<ExplanationItem> = Vec::new();
    // The keys of the phrase each item claimed units with, if it did.
    let mut claimed: Vec<Option<Vec<String>>> = Vec::new();
    let mut unmatched = Vec::new();
    let mut ranked = 0;
    for cand in candidates {
        let (score, score_notes) = item_score(&cand.score, format);
        let len = cand.words.len();
        let parts: Vec<(Range<usize>, Option<ItemNote>)> = match index.resolve(&cand.words, format)
        {
            Resolution::Unmatched => {
                if !is_noise(&cand.words) {
                    unmatched.push(cand.text.clone());
                    let mut notes = vec![ItemNote::Unmatched];
                    notes.extend(score_notes);
                    items.push(ExplanationItem {
                        text: cand.text.clone(),
                        score,
                        units: Vec::new(),
                        notes,
                    });
                    claimed.push(None);
                }
                continue;
            }
            Resolution::Run => vec![(0..len, None)],
            Resolution::Split => (0..len)
                .map(|i| {
                    let note = ItemNote::SplitFrom {
                        phrase: cand.text.clone(),
                    };
                    (i..i + 1, Some(note))
                })
                .collect(),
            Resolution::Suffix(n) => {
                let note = ItemNote::TrimmedFrom {
                    phrase: cand.text.clone(),
                };
                vec![(len - n..len, Some(note))]
            }
        };
        for (range, note) in parts {
            let words = &cand.words[range];
            let keys: Vec<String> = words.iter().map(|w| word_key(w)).collect();
            let text = if note.is_some() {
                words.join(" ")
            } else {
                cand.text.clone()
            };
            let mut notes: Vec<ItemNote> = note.into_iter().chain(score_notes.clone()).collect();
            let free = index
                .occurrences(&keys)
                .find(|&start| claims.free(start..start + keys.len()));
            let unit_score = match (free, *format) {
                (None, _) => {
                    notes.push(ItemNote::Repeated);
                    None
                }
                (Some(_), AnswerFormat::TopK { k }) if ranked < k => {
                    ranked += 1;
                    Some((k - (ranked - 1)) as f64 / k as f64)
                }
                (Some(_), AnswerFormat::TopK { .. }) => {
                    notes.push(ItemNote::BeyondK);
                    None
                }
                (Some(_), AnswerFormat::Scores) => score,
            };
            let (Some(start), Some(s)) = (free, unit_score) else {
                let shown = if matches!(format, AnswerFormat::Scores) {
                    score
                } else {
                    None
                };
                items.push(ExplanationItem {
                    text,
                    score: shown,
                    units: Vec::new(),
                    notes,
                });
                claimed.push(None);
                continue;
            };
            let units = start..start + keys.len();
            claims.claim(units.clone(), items.len(), s);
            items.push(ExplanationItem {
                text,
                score: Some(s),
                units: units.collect(),
                notes,
            });
            claimed.push(Some(keys));
        }
    }
    apply_to_repeats(&mut items, &claimed, &mut claims, index);
    Assignment {
        items,
        mentioned: claims.owner.iter().map(Option::is_some).collect(),
        scores: claims.scores,
        unmatched,
    }
}

/// Gives occurrences that no mention claimed the score of their word's last mention.
fn apply_to_repeats(
    items: &mut [ExplanationItem],
    claimed: &[Option<Vec<String>>],
    claims: &mut Claims,
    index: &WordIndex,
) {
    let mut last: BTreeMap<&[String], usize> = BTreeMap::new();
    for (item, keys) in claimed.iter().enumerate() {
        if let Some(keys) = keys {
            last.insert(keys.as_slice(), item);
        }
    }
    let mut lasts: Vec<(usize, &[String])> = last.into_iter().map(|(k, i)| (i, k)).collect();
    lasts.sort_unstable();
    for (item, keys) in lasts {
        let Some(score) = items[item].score else {
            continue;
        };
        let mut count = 0;
        for start in index.occurrences(keys) {
            let units = start..start + keys.len();
            if claims.free(units.clone()) {
                claims.claim(units.clone(), item, score);
                items[item].units.extend(units);
                count += 1;
            }
        }
        if count > 0 {
            items[item].units.sort_unstable();
            items[item].notes.push(ItemNote::AppliedToRepeats { count });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(words: &[&str]) -> Vec<Unit> {
        words
            .iter()
            .map(|w| Unit {
                label: w.to_string(),
                text: w.to_string(),
                level: "word".into(),
                span: None,
            })
            .collect()
    }

    fn owned(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn keys_ignore_case_punctuation_and_quotes() {
        assert_eq!(word_key("“Great!”"), "great");
        assert_eq!(word_key(" (don’t) "), "don't");
        assert_eq!(word_key("well-made,"), "well-made");
        assert_eq!(word_key("—"), "");
    }

    #[test]
    fn phrases_resolve_to_runs_splits_or_suffixes() {
        let index = WordIndex::new(&units(&["Not", "good,", "really", "boring."]));
        let topk = AnswerFormat::TopK { k: 3 };
        let resolve = |w: &[&str], f| index.resolve(&owned(w), f);
        assert_eq!(resolve(&["not", "good"], &topk), Resolution::Run);
        assert_eq!(resolve(&["good", "boring"], &topk), Resolution::Split);
        assert_eq!(
            resolve(&["good", "boring"], &AnswerFormat::Scores),
            Resolution::Suffix(1)
        );
        assert_eq!(
            resolve(&["score", "for", "boring"], &topk),
            Resolution::Suffix(1)
        );
        assert_eq!(resolve(&["awful"], &topk), Resolution::Unmatched);
        assert_eq!(resolve(&[], &topk), Resolution::Unmatched);
    }

    #[test]
    fn prose_and_filler_are_noise_but_made_up_words_are_not() {
        assert!(is_noise(&owned(&["Sure"])));
        assert!(is_noise(&owned(&["the", "most", "important", "words"])));
        assert!(!is_noise(&owned(&["awful"])));
    }
}
