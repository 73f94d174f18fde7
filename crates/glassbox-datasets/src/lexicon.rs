//! The VADER lexicon: context-free valence of words, emoticons and slang, rated by people.
//!
//! `vader_lexicon.txt` is tab-separated `TOKEN`, `MEAN-VALENCE`, `STANDARD-DEVIATION`,
//! `RAW-RATINGS` (ten ratings on −4..+4, as a Python list), with CRLF line ends.

use std::collections::HashMap;
use std::path::Path;

use crate::{DatasetError, RATING_SCALE_MAX, numbered_lines};

/// A word marks a rationale when its valence is at least this far from neutral. VADER
/// valence is the mean of ten ratings on −4..+4; the data's README gives "okay" 0.9 as mild,
/// and "good" 1.9, "great" 3.1, "horrible" −2.5 and "sucks" −1.5 as sentiment-bearing, and
/// 1.5 separates the two. It is the same cut as [`crate::POLAR_MIN_ABS_RATING`] on the same
/// scale, so a "strong" word and a "clearly polar" snippet mean the same. 4,202 of the
/// lexicon's 7,506 tokens pass it.
pub const RATIONALE_MIN_ABS_VALENCE: f64 = 1.5;

/// Token → mean valence, as VADER builds it (`make_lex_dict` in vaderSentiment 3.3.2).
#[derive(Debug, Clone, Default)]
pub struct Lexicon {
    valence: HashMap<String, f64>,
}

impl Lexicon {
    /// Reads `vader_lexicon.txt`. Tokens are kept as written and a token written twice keeps
    /// its later valence, as in VADER (3.3.2 has 14 such, e.g. `lol` 2.9 then 1.8). A line
    /// without the four fields, or whose valence is not a number in −4..+4, is an error
    /// naming the file and line.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, DatasetError> {
        let path = path.as_ref();
        let mut valence = HashMap::new();
        for (line, text) in numbered_lines(path)? {
            let (token, value) = parse_entry(&text).map_err(|message| DatasetError::BadLine {
                path: path.to_path_buf(),
                line,
                message,
            })?;
            valence.insert(token.to_string(), value);
        }
        Ok(Self { valence })
    }

    /// Number of distinct tokens.
    pub fn len(&self) -> usize {
        self.valence.len()
    }

    pub fn is_empty(&self) -> bool {
        self.valence.is_empty()
    }

    /// Valence of a word as it appears in text, if the lexicon rates it. Looked up lower-cased,
    /// as VADER does: an entry written in upper case counts through its lower-case twin (`:D`
    /// and `:d` are both 2.3), and the two of 3.3.2 without one (`:Þ`, `:-Þ`) never match,
    /// as in VADER. When the word itself is not there, its surrounding ASCII punctuation is stripped
    /// (`"great,"` → `great`). Trying the word first keeps emoticons such as `:)` matching;
    /// VADER instead keeps a token unstripped whenever stripping leaves two characters or
    /// fewer, which misses short words like `ok,`.
    pub fn valence(&self, word: &str) -> Option<f64> {
        // Word units keep the whitespace before them (" great,"); it is never part of a word.
        let lower = word.trim().to_lowercase();
        self.valence.get(&lower).copied().or_else(|| {
            let stripped = lower.trim_matches(|c: char| c.is_ascii_punctuation());
            self.valence.get(stripped).copied()
        })
    }

    /// For each word, whether its valence is at least `min_abs_valence` from neutral
    /// ([`RATIONALE_MIN_ABS_VALENCE`] is the project's cut); words the lexicon does not rate
    /// are `false`. Words are whitespace-separated words of the text, not sub-word tokens.
    pub fn rationale<S: AsRef<str>>(&self, words: &[S], min_abs_valence: f64) -> Vec<bool> {
        words
            .iter()
            .map(|w| {
                self.valence(w.as_ref())
                    .is_some_and(|v| v.abs() >= min_abs_valence)
            })
            .collect()
    }
}

fn parse_entry(line: &str) -> Result<(&str, f64), String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [token, mean, _sd, _ratings] = fields[..] else {
        return Err(format!(
            "expected 4 tab-separated fields (token, mean valence, standard deviation, raw \
             ratings), found {}",
            fields.len()
        ));
    };
    if token.is_empty() {
        return Err("empty token".into());
    }
    let value = mean
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.abs() <= RATING_SCALE_MAX)
        .ok_or_else(|| {
            format!(
                "valence `{mean}` of `{token}` is not a number in \
                 -{RATING_SCALE_MAX}..{RATING_SCALE_MAX}"
            )
        })?;
    Ok((token, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexicon(entries: &[(&str, f64)]) -> Lexicon {
        Lexicon {
            valence: entries.iter().map(|&(t, v)| (t.to_string(), v)).collect(),
        }
    }

    #[test]
    fn words_match_lower_cased_and_without_surrounding_punctuation() {
        let lex = lexicon(&[("great", 3.1), ("ok", 1.2), (":)", 2.0), ("can't", -0.5)]);
        assert_eq!(lex.valence("GREAT"), Some(3.1));
        assert_eq!(lex.valence("\"great,\""), Some(3.1));
        assert_eq!(lex.valence("ok,"), Some(1.2));
        assert_eq!(
            lex.valence(":)"),
            Some(2.0),
            "an emoticon is all punctuation"
        );
        assert_eq!(
            lex.valence("(can't)"),
            Some(-0.5),
            "inner punctuation stays"
        );
        assert_eq!(lex.valence("..."), None);
        assert_eq!(lex.valence(""), None);
    }

    #[test]
    fn rationale_marks_strong_words_only() {
        let lex = lexicon(&[("great", 3.1), ("okay", 0.9), ("sucks", -1.5)]);
        let words = ["It", "was", "great!", "okay", "it", "sucks."];
        assert_eq!(
            lex.rationale(&words, RATIONALE_MIN_ABS_VALENCE),
            [false, false, true, false, false, true]
        );
    }

    #[test]
    fn malformed_entries_are_refused_with_a_reason() {
        let cases = [
            ("good\t1.9", "found 2"),
            ("good\tvery\t0.9\t[]", "`very` of `good`"),
            ("good\t-4.2\t0.9\t[]", "not a number in -4..4"),
            ("\t1.0\t0.9\t[]", "empty token"),
        ];
        for (line, want) in cases {
            let err = parse_entry(line).unwrap_err();
            assert!(err.contains(want), "{line:?}: {err}");
        }
        assert_eq!(
            parse_entry("( '}{' )\t1.6\t0.66332\t[1, 2]").unwrap(),
            ("( '}{' )", 1.6)
        );
    }
}
