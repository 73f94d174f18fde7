//! Answers as text: lists, `word: score` lines, quoted words and sentences, read line by line
//! from a small tokenizer (words, numbers, punctuation).

use super::align::{MAX_PHRASE_WORDS, Resolution, WordIndex, word_key};
use super::{AnswerFormat, Candidate, GivenScore};

/// An answer that repeats fewer input words than this is not recognised as a copy of the
/// input: two or three words in input order are as likely to be the answer itself.
const MIN_ECHO_WORDS: usize = 4;

/// Characters that quote a word (`"great"`, `'great'`, `“great”`, `«great»`, `` `great` ``).
const QUOTES: &[char] = &['"', '\'', '“', '”', '‘', '’', '„', '«', '»', '`'];

/// Characters that separate a word from what is said about it on a list line
/// (`great: positive`, `great - positive`, `great → positive`), or an intro from the list
/// (`Important words: great, boring`).
const FIELD_SEPARATORS: &[char] = &[':', '=', '-', '–', '—', '→', '⇒'];

/// Characters that may stand between a word and its score (`great: 0.9`, `great = 0.9`,
/// `great (0.9)`, `great - 0.9`, `"great", 0.9`, `**great**: 0.9`, `| great | 0.9 |`).
/// Brackets and slashes are not among them: in `in [-1, 1]` or `0.9/1` the number is no
/// word's score.
const PAIR_SEPARATORS: &[char] = &[
    ':', '=', '-', '–', '—', '→', '>', '(', ',', '*', '|', '"', '\'', '“', '”', '‘', '’', '`',
];

/// Words that stand for a missing score after a separator (`great: N/A`).
const MISSING_SCORES: &[&str] = &["n/a", "na", "none", "null", "nan", "unknown"];

/// Words after which a sentence names the list: "The most important words *are* great, ...".
const COPULAS: &[&str] = &["are", "is", "was", "were", "include", "includes"];

/// Labels a model puts between a word and its score (`great (score: 0.9)`).
const SCORE_LABELS: &[&str] = &["score", "importance", "weight", "value"];

/// A piece of one line of an answer.
#[derive(Debug, PartialEq)]
enum Tok {
    /// Letters and digits, with inner apostrophes and hyphens (`don't`, `well-made`).
    Word(String),
    /// A decimal number, with its sign (`-0.8`, `+1`, `.5`).
    Number {
        text: String,
        value: f64,
    },
    Punct(char),
    Space,
}

/// Splits one line into tokens.
fn tokenize(line: &str) -> Vec<Tok> {
    let chars: Vec<char> = line.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let after_word = i > 0 && chars[i - 1].is_alphanumeric();
        if c.is_whitespace() {
            if toks.last() != Some(&Tok::Space) {
                toks.push(Tok::Space);
            }
            i += 1;
        } else if let Some((tok, next)) = (!after_word).then(|| number_at(&chars, i)).flatten() {
            toks.push(tok);
            i = next;
        } else if c.is_alphanumeric() {
            let (word, next) = word_at(&chars, i);
            toks.push(Tok::Word(word));
            i = next;
        } else {
            toks.push(Tok::Punct(c));
            i += 1;
        }
    }
    toks
}

/// The number starting at `chars[i]` and the index after it; none if there is no number
/// there or it runs into letters (`3rd`, `2x` are words).
fn number_at(chars: &[char], i: usize) -> Option<(Tok, usize)> {
    let at = |j: usize| chars.get(j).copied();
    let mut text = String::new();
    let mut j = i;
    match at(j) {
        Some('-' | '−') => {
            text.push('-');
            j += 1;
        }
        Some('+') => j += 1,
        _ => {}
    }
    let mut digits = 0;
    while let Some(d) = at(j).filter(char::is_ascii_digit) {
        text.push(d);
        j += 1;
        digits += 1;
    }
    if at(j) == Some('.') && at(j + 1).is_some_and(|d| d.is_ascii_digit()) {
        text.push('.');
        j += 1;
        while let Some(d) = at(j).filter(char::is_ascii_digit) {
            text.push(d);
            j += 1;
            digits += 1;
        }
    }
    if digits == 0 || at(j).is_some_and(char::is_alphabetic) {
        return None;
    }
    let value = text.parse::<f64>().ok().filter(|v| v.is_finite())?;
    Some((Tok::Number { text, value }, j))
}

/// The word starting at `chars[i]` (alphanumeric) and the index after it.
fn word_at(chars: &[char], i: usize) -> (String, usize) {
    let at = |j: usize| chars.get(j).copied();
    let mut word = String::new();
    let mut j = i;
    // `N/A` is one word: the slash would otherwise split it into two made-up ones.
    if matches!(at(j), Some('n' | 'N'))
        && at(j + 1) == Some('/')
        && matches!(at(j + 2), Some('a' | 'A'))
        && !at(j + 3).is_some_and(char::is_alphanumeric)
    {
        return (chars[i..i + 3].iter().collect(), i + 3);
    }
    while let Some(c) = at(j) {
        let joins_next = at(j + 1).is_some_and(char::is_alphanumeric);
        if c.is_alphanumeric() {
            word.push(c);
        } else if matches!(c, '\'' | '’') && joins_next {
            word.push('\'');
        } else if c == '-' && at(j + 1).is_some_and(char::is_alphabetic) {
            word.push(c);
        } else {
            break;
        }
        j += 1;
    }
    (word, j)
}

/// `text` read as a whole number (`"0.9"`, `" -1 "`); none for anything else.
pub(super) fn parse_number(text: &str) -> Option<f64> {
    let chars: Vec<char> = text.trim().chars().collect();
    match number_at(&chars, 0) {
        Some((Tok::Number { value, .. }, end)) if end == chars.len() => Some(value),
        _ => None,
    }
}

/// The words and numbers of a phrase, as written (`"Not good!"` → `Not`, `good`).
pub(super) fn phrase_words(text: &str) -> Vec<String> {
    tokenize(text)
        .into_iter()
        .filter_map(|t| match t {
            Tok::Word(w) => Some(w),
            Tok::Number { text, .. } => Some(text),
            _ => None,
        })
        .collect()
}

/// `raw` without its first copy of the whole input, replaced by a line break, and whether
/// there was one. Small models often restate the question with the text in it; left in, the
/// copy would read as a list naming every input word.
pub(super) fn remove_echo(raw: &str, index: &WordIndex) -> (String, bool) {
    let input = index.keys();
    if input.len() < MIN_ECHO_WORDS {
        return (raw.to_string(), false);
    }
    let mut offset = 0;
    for line in raw.split_inclusive('\n') {
        let tokens = whitespace_tokens(line);
        let copy = tokens.windows(input.len()).find(|w| {
            w.iter()
                .zip(input)
                .all(|(&(a, b), unit)| word_key(&line[a..b]) == *unit)
        });
        if let Some(copy) = copy {
            let (start, end) = (copy[0].0, copy[copy.len() - 1].1);
            let mut out = raw[..offset + start].to_string();
            out.push('\n');
            out.push_str(&raw[offset + end..]);
            return (out, true);
        }
        offset += line.len();
    }
    (raw.to_string(), false)
}

/// Byte ranges of the whitespace-separated pieces of `line`.
fn whitespace_tokens(line: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, line.len()));
    }
    out
}

/// The words a top-k answer lists, in order. Per line: the quoted words if any are quoted;
/// otherwise the line's words split at punctuation and `and`/`or`, dropping what is in
/// parentheses and sentences that name no input word (see [`line_items`]).
pub(super) fn topk_candidates(text: &str, index: &WordIndex) -> Vec<Candidate> {
    let mut out = Vec::new();
    for line in text.lines() {
        let toks = tokenize(line);
        let quoted = quoted_phrases(&toks);
        let phrases = if quoted.is_empty() {
            line_items(&toks, index)
        } else {
            quoted
        };
        out.extend(phrases.into_iter().map(|words| Candidate {
            text: words.join(" "),
            words,
            score: GivenScore::Absent,
        }));
    }
    out
}

/// The phrases in quotes on a line; each quoted span is split at punctuation inside it.
fn quoted_phrases(toks: &[Tok]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut inside = false;
    for tok in toks {
        match tok {
            Tok::Punct(c) if QUOTES.contains(c) => {
                inside = !inside;
                out.push(std::mem::take(&mut current));
            }
            _ if !inside => {}
            Tok::Word(w) => current.push(w.clone()),
            Tok::Number { text, .. } => current.push(text.clone()),
            Tok::Punct(_) => out.push(std::mem::take(&mut current)),
            Tok::Space => {}
        }
    }
    if inside {
        out.push(current);
    }
    out.retain(|p| !p.is_empty());
    out
}

/// The items of an unquoted list line.
///
/// The line is cut into fields at separators such as `:` and ` - `, and each field into runs
/// of words at other punctuation and at `and`/`or` (numbers, such as list markers, are
/// skipped, and parentheses dropped). A run longer than a phrase is a sentence: it is kept
/// only if every word of it is an input word (a space-separated list), or cut after its last
/// copula when what follows is a phrase ("The most important words are great, boring").
/// Which field holds the list is unknown ("great: positive word" and "Words: great,
/// boring" both occur), so items naming input words are kept from every field, and items
/// naming none only from the field that names the most input words (none if the line ends in
/// a separator: it is a label).
fn line_items(toks: &[Tok], index: &WordIndex) -> Vec<Vec<String>> {
    let format = AnswerFormat::TopK { k: 1 };
    let fields = fields(toks);
    let shaped: Vec<Vec<Vec<String>>> = fields
        .iter()
        .map(|runs| {
            runs.iter()
                .enumerate()
                .filter_map(|(i, run)| shape_run(run, i + 1 < runs.len(), index))
                .collect()
        })
        .collect();
    let named = |items: &[Vec<String>]| items.iter().filter(|i| index.resolves(i, &format)).count();
    // A line ending in a separator ("Text:", "Important words:") only labels what follows.
    let label = shaped.len() > 1 && shaped.last().is_some_and(Vec::is_empty);
    let best = (0..shaped.len())
        .filter(|_| !label)
        .max_by_key(|&f| (named(&shaped[f]), shaped[f].len(), f));
    shaped
        .into_iter()
        .enumerate()
        .flat_map(|(f, items)| {
            items
                .into_iter()
                .filter(move |item| Some(f) == best || index.resolves(item, &format))
        })
        .collect()
}

/// A line's fields, each a list of runs of words.
fn fields(toks: &[Tok]) -> Vec<Vec<Vec<String>>> {
    let mut fields = vec![Vec::new()];
    let mut run: Vec<String> = Vec::new();
    let mut parens = 0usize;
    let end_run = |fields: &mut Vec<Vec<Vec<String>>>, run: &mut Vec<String>| {
        if !run.is_empty()
            && let Some(field) = fields.last_mut()
        {
            field.push(std::mem::take(run));
        }
    };
    for tok in toks {
        match tok {
            Tok::Punct('(') => {
                end_run(&mut fields, &mut run);
                parens += 1;
            }
            Tok::Punct(')') => {
                end_run(&mut fields, &mut run);
                parens = parens.saturating_sub(1);
            }
            _ if parens > 0 => {}
            Tok::Punct(c) if FIELD_SEPARATORS.contains(c) => {
                end_run(&mut fields, &mut run);
                fields.push(Vec::new());
            }
            Tok::Punct(_) => end_run(&mut fields, &mut run),
            Tok::Word(w) if w.eq_ignore_ascii_case("and") || w.eq_ignore_ascii_case("or") => {
                end_run(&mut fields, &mut run)
            }
            Tok::Word(w) => run.push(w.clone()),
            Tok::Number { .. } | Tok::Space => {}
        }
    }
    end_run(&mut fields, &mut run);
    fields
}

/// A run as an item: itself if it is a phrase or a list of input words, the phrase after its
/// last copula if that names an input word or the list goes on after it (`followed`), else
/// nothing.
fn shape_run(run: &[String], followed: bool, index: &WordIndex) -> Option<Vec<String>> {
    let format = AnswerFormat::TopK { k: 1 };
    if run.len() <= MAX_PHRASE_WORDS || index.resolve(run, &format) == Resolution::Split {
        return Some(run.to_vec());
    }
    let copula = run
        .iter()
        .rposition(|w| COPULAS.contains(&w.to_lowercase().as_str()))?;
    let tail = &run[copula + 1..];
    let phrase = (1..=MAX_PHRASE_WORDS).contains(&tail.len());
    (phrase && (followed || index.resolves(tail, &format))).then(|| tail.to_vec())
}

/// The word–score pairs of a score answer, in order: every number (or `N/A` after a
/// separator) with the words just before it, when a separator stands between them (see
/// [`PAIR_SEPARATORS`]).
pub(super) fn score_candidates(text: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    for line in text.lines() {
        let toks = tokenize(line);
        for (i, tok) in toks.iter().enumerate() {
            let score = match tok {
                Tok::Number { value, .. } => GivenScore::Number(*value),
                Tok::Word(w) if is_missing_score(&toks, i) => GivenScore::Unreadable(w.clone()),
                _ => continue,
            };
            if let Some(words) = words_before(&toks, i) {
                out.push(Candidate {
                    text: words.join(" "),
                    words,
                    score,
                });
            }
        }
    }
    out
}

/// Whether the word at `toks[i]` stands for a missing score: `N/A` and the like right after
/// a `:` or `=`.
fn is_missing_score(toks: &[Tok], i: usize) -> bool {
    let missing =
        matches!(&toks[i], Tok::Word(w) if MISSING_SCORES.contains(&w.to_lowercase().as_str()));
    let before = toks[..i].iter().rev().find(|t| **t != Tok::Space);
    missing && matches!(before, Some(Tok::Punct(':' | '=')))
}

/// The words a score at `toks[at]` belongs to: those just before it, past at least one pair
/// separator, back to the previous punctuation or number. A score label in between
/// (`great (score: 0.9)`) is skipped.
fn words_before(toks: &[Tok], at: usize) -> Option<Vec<String>> {
    let (start, end) = phrase_before(toks, at)?;
    let words = words_in(&toks[start..end]);
    let labelled = matches!(words.as_slice(),
        [label] if SCORE_LABELS.contains(&label.to_lowercase().as_str()));
    if labelled && let Some((s, e)) = phrase_before(toks, start) {
        return Some(words_in(&toks[s..e]));
    }
    Some(words)
}

fn words_in(toks: &[Tok]) -> Vec<String> {
    toks.iter()
        .filter_map(|t| match t {
            Tok::Word(w) => Some(w.clone()),
            _ => None,
        })
        .collect()
}

/// The token range of the words before `toks[at]`, past at least one pair separator.
fn phrase_before(toks: &[Tok], at: usize) -> Option<(usize, usize)> {
    let mut j = at;
    let mut separated = false;
    while j > 0 {
        match &toks[j - 1] {
            Tok::Space => {}
            Tok::Punct(c) if PAIR_SEPARATORS.contains(c) => separated = true,
            _ => break,
        }
        j -= 1;
    }
    let end = j;
    while j > 0 {
        match &toks[j - 1] {
            Tok::Space => {}
            Tok::Word(w) if !MISSING_SCORES.contains(&w.to_lowercase().as_str()) => {}
            _ => break,
        }
        j -= 1;
    }
    (separated && j < end).then_some((j, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(toks: &[Tok]) -> Vec<&str> {
        toks.iter()
            .filter_map(|t| match t {
                Tok::Word(w) => Some(w.as_str()),
                Tok::Number { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tokens_keep_signs_inner_apostrophes_and_hyphens() {
        let toks = tokenize("don’t: -0.8, well-made = +.5; 3rd x-1 N/A 10%");
        assert_eq!(
            words(&toks),
            [
                "don't",
                "-0.8",
                "well-made",
                ".5",
                "3rd",
                "x",
                "1",
                "N/A",
                "10"
            ]
        );
        assert!(toks.contains(&Tok::Number {
            text: "-0.8".into(),
            value: -0.8
        }));
        assert_eq!(parse_number(" −1 "), Some(-1.0));
        assert_eq!(parse_number("0.9x"), None);
        assert_eq!(parse_number("1".repeat(400).as_str()), None, "not finite");
        assert_eq!(parse_number(""), None);
    }

    #[test]
    fn dashes_are_signs_only_when_attached() {
        let pairs = score_candidates("boring - 0.8\nawful -0.5\ndull:-0.25");
        let scores: Vec<_> = pairs.iter().map(|c| (&c.text[..], &c.score)).collect();
        assert_eq!(
            scores,
            [
                ("boring", &GivenScore::Number(0.8)),
                ("dull", &GivenScore::Number(-0.25))
            ],
            "`awful -0.5` has no separator"
        );
    }

    #[test]
    fn ranges_and_fractions_are_not_scores() {
        let pairs = score_candidates("Scores in [-1, 1], from -1 to 1. great: 0.9/1");
        assert_eq!(pairs.len(), 1, "{pairs:?}");
        assert_eq!(pairs[0].text, "great");
    }

    #[test]
    fn score_labels_are_skipped() {
        let pairs = score_candidates("great (score: 0.9), not good (importance = -0.5)");
        let texts: Vec<_> = pairs.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["great", "not good"]);
    }
}
