//! JSON inside an answer: finding it, recovering it when cut off, and reading items from it.
//!
//! Values are read into [`Json`], which unlike `serde_json::Value` keeps an object's entries
//! in order and keeps repeated keys: a model scoring every word in order writes
//! `{"good": 0.8, "movie": 0.1, "good": -0.5}` for an input with two *good*s.

use std::collections::VecDeque;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::text::{parse_number, phrase_words};
use super::{Candidate, GivenScore};

/// Positions in an answer where a JSON value is tried. Answers hold one JSON value, maybe
/// after a bracket or two of prose; the cap keeps a pathological answer linear.
const MAX_JSON_STARTS: usize = 32;

/// Cut points tried when recovering a truncated value, latest first. Only the last few
/// matter (the cut is near the end); the cap bounds the work to a few re-parses.
const MAX_RECOVERY_TRIES: usize = 16;

/// Keys naming the word in an object such as `{"word": "great", "score": 0.9}`.
const WORD_KEYS: &[&str] = &["word", "token", "text", "term", "phrase"];

/// Keys naming the score in such an object.
const SCORE_KEYS: &[&str] = &[
    "score",
    "importance",
    "weight",
    "value",
    "attribution",
    "rating",
];

/// A JSON value with object entries in order, repeated keys kept.
#[derive(Debug, PartialEq)]
pub(super) enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Number(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Json::Object(entries))
    }
}

/// The JSON values in `raw`, in order, each with whether it was cut off and recovered.
/// Values inside a value already found are not tried again.
pub(super) fn values(raw: &str) -> Vec<(Json, bool)> {
    let mut found = Vec::new();
    let mut resume = 0;
    let starts = raw
        .char_indices()
        .filter(|&(_, c)| c == '[' || c == '{')
        .map(|(i, _)| i)
        .take(MAX_JSON_STARTS);
    for start in starts {
        if start < resume {
            continue;
        }
        let rest = &raw[start..];
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Json>();
        match stream.next() {
            Some(Ok(value)) => {
                resume = start + stream.byte_offset();
                found.push((value, false));
            }
            Some(Err(e)) if e.is_eof() => {
                // The value runs to the end of the answer: every later start is inside it.
                if let Some(value) = recover(rest) {
                    found.push((value, true));
                }
                break;
            }
            _ => {}
        }
    }
    found
}

/// The longest prefix of a cut-off JSON value `text` that parses once its open brackets are
/// closed, ending at a complete element (the element being written at the cut is dropped).
fn recover(text: &str) -> Option<Json> {
    // (byte position, closing brackets needed there), latest last.
    let mut cuts: VecDeque<(usize, String)> = VecDeque::new();
    let mut open: Vec<char> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let closers = |open: &[char]| open.iter().rev().collect::<String>();
    for (i, c) in text.char_indices() {
        let cut = if in_string {
            match c {
                _ if escaped => {
                    escaped = false;
                    None
                }
                '\\' => {
                    escaped = true;
                    None
                }
                '"' => {
                    in_string = false;
                    Some(i + 1)
                }
                _ => None,
            }
        } else {
            match c {
                '"' => {
                    in_string = true;
                    None
                }
                '[' => {
                    open.push(']');
                    None
                }
                '{' => {
                    open.push('}');
                    None
                }
                ']' | '}' => {
                    if open.pop() != Some(c) {
                        break;
                    }
                    Some(i + 1)
                }
                ',' => Some(i),
                _ => None,
            }
        };
        if let Some(at) = cut {
            if cuts.len() == MAX_RECOVERY_TRIES {
                cuts.pop_front();
            }
            cuts.push_back((at, closers(&open)));
        }
    }
    cuts.into_iter().rev().find_map(|(at, close)| {
        let mut candidate = text[..at].to_string();
        candidate.push_str(&close);
        serde_json::from_str(&candidate).ok()
    })
}

/// The words a top-k answer lists: strings, in order. Objects give the value of a word key
/// (`{"word": "great", "rank": 1}`), or their keys when values are numbers
/// (`{"great": 0.9}`), else whatever their values list (`{"words": [...]}`, `{"1": "great"}`);
/// a string under any other key is a remark (`{"sentiment": "positive"}`), not a word.
pub(super) fn topk_candidates(value: &Json) -> Vec<Candidate> {
    let mut out = Vec::new();
    collect_topk(value, &mut out);
    out
}

fn collect_topk(value: &Json, out: &mut Vec<Candidate>) {
    match value {
        Json::String(s) => push(out, s, GivenScore::Absent),
        Json::Array(items) => items.iter().for_each(|v| collect_topk(v, out)),
        Json::Object(entries) => {
            if let Some(word) = field(entries, WORD_KEYS).and_then(as_str) {
                return push(out, word, GivenScore::Absent);
            }
            for (key, v) in entries {
                match v {
                    Json::Number(_) | Json::Bool(_) | Json::Null => {
                        push(out, key, GivenScore::Absent)
                    }
                    Json::String(_) if !lists_words(key) => {}
                    _ => collect_topk(v, out),
                }
            }
        }
        Json::Number(_) | Json::Bool(_) | Json::Null => {}
    }
}

/// Whether a string under `key` is a listed word: `"1"`, `"word_2"`, `"top"`, `"first"`...
fn lists_words(key: &str) -> bool {
    let key = key.to_lowercase();
    key.chars().any(|c| c.is_ascii_digit())
        || ["word", "token", "term", "top", "first", "second", "third"]
            .iter()
            .any(|w| key.contains(w))
}

/// The word–score pairs of a score answer: objects mapping words to scores, `[word, score]`
/// pairs, `{"word": ..., "score": ...}` objects, in order; bare strings are words without a
/// score. Objects and arrays under other keys (`{"scores": {...}}`) are searched too.
pub(super) fn score_candidates(value: &Json) -> Vec<Candidate> {
    let mut out = Vec::new();
    collect_scores(value, &mut out);
    out
}

fn collect_scores(value: &Json, out: &mut Vec<Candidate>) {
    match value {
        Json::String(s) => push(out, s, GivenScore::Absent),
        Json::Array(items) => match items.as_slice() {
            [
                Json::String(word),
                score @ (Json::Number(_) | Json::String(_) | Json::Null),
            ] => push(out, word, given_score(score)),
            _ => items.iter().for_each(|v| collect_scores(v, out)),
        },
        Json::Object(entries) => {
            if let Some(word) = field(entries, WORD_KEYS).and_then(as_str) {
                let score = field(entries, SCORE_KEYS).map_or(GivenScore::Absent, given_score);
                return push(out, word, score);
            }
            for (key, v) in entries {
                match v {
                    Json::Array(_) | Json::Object(_) => collect_scores(v, out),
                    _ => push(out, key, given_score(v)),
                }
            }
        }
        Json::Number(_) | Json::Bool(_) | Json::Null => {}
    }
}

/// A JSON score: a number, a number in a string, or something unreadable (`"N/A"`, `null`).
fn given_score(value: &Json) -> GivenScore {
    match value {
        Json::Number(v) => GivenScore::Number(*v),
        Json::String(s) => match parse_number(s.trim()) {
            Some(v) => GivenScore::FromString(v),
            None => GivenScore::Unreadable(s.clone()),
        },
        Json::Null => GivenScore::Unreadable("null".into()),
        Json::Bool(b) => GivenScore::Unreadable(b.to_string()),
        Json::Array(_) | Json::Object(_) => GivenScore::Unreadable("a list".into()),
    }
}

/// The value of the first entry whose key is one of `keys` (case-insensitive).
fn field<'a>(entries: &'a [(String, Json)], keys: &[&str]) -> Option<&'a Json> {
    entries
        .iter()
        .find(|(k, _)| keys.iter().any(|key| k.trim().eq_ignore_ascii_case(key)))
        .map(|(_, v)| v)
}

fn as_str(value: &Json) -> Option<&str> {
    match value {
        Json::String(s) => Some(s),
        _ => None,
    }
}

/// Adds the phrase `text` unless it holds no words.
fn push(out: &mut Vec<Candidate>, text: &str, score: GivenScore) {
    let words = phrase_words(text);
    if !words.is_empty() {
        out.push(Candidate {
            text: text.trim().to_string(),
            words,
            score,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_keep_order_and_repeated_keys() {
        let v: Json = serde_json::from_str(r#"{"good": 0.8, "movie": 1, "good": -0.5}"#).unwrap();
        let keys: Vec<_> = match &v {
            Json::Object(e) => e.iter().map(|(k, _)| k.as_str()).collect(),
            _ => vec![],
        };
        assert_eq!(keys, ["good", "movie", "good"]);
    }

    #[test]
    fn values_are_found_inside_prose_and_code_fences() {
        let found = values("Sure! ```json\n[\"great\", \"boring\"]\n``` Hope [this] helps {");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].0,
            Json::Array(vec![
                Json::String("great".into()),
                Json::String("boring".into())
            ])
        );
    }

    #[test]
    fn truncated_values_keep_their_complete_elements() {
        let cases = [
            (r#"{"great": 0.9, "bor"#, r#"{"great": 0.9}"#),
            (r#"{"great": 0.9, "boring": -0."#, r#"{"great": 0.9}"#),
            (r#"["great", "boring""#, r#"["great", "boring"]"#),
            (
                r#"{"scores": [{"word": "great", "score": 0.9}, {"word": "bo"#,
                r#"{"scores": [{"word": "great", "score": 0.9}]}"#,
            ),
            (r#"["a\"b", "c"#, r#"["a\"b"]"#),
        ];
        for (cut, expected) in cases {
            let expected: Json = serde_json::from_str(expected).unwrap();
            assert_eq!(values(cut), vec![(expected, true)], "{cut}");
        }
        assert_eq!(values("[{"), vec![]);
    }
}
