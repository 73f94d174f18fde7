//! The ground-truth snippet files: one rated sentence per line.
//!
//! Each `*_GroundTruth.txt` of the VADER data is tab-separated `ID`, `MEAN-SENTIMENT-RATING`,
//! `TEXT` (its `_README_.txt`), with CRLF line ends. The rating is the mean over at least 20
//! human raters on VADER's scale from −4 (extremely negative) to +4 (extremely positive).

use std::path::Path;

use crate::{DatasetError, numbered_lines};

/// The end of VADER's rating scale, −4..+4 ("\[–4\] Extremely Negative" to "\[4\]
/// Extremely Positive", `_README_.txt` of the ICWSM-14 data); a mean outside it is a malformed line.
pub const RATING_SCALE_MAX: f64 = 4.0;

/// Snippets at least this far from neutral count as clearly polar: the issue asked to "keep
/// the clearly polar ones (|rating| ≥ 1.5)", a bit over a third of the way to either end of
/// the −4..+4 scale. Of the 10,605 movie snippets, 7,079 pass it.
pub const POLAR_MIN_ABS_RATING: f64 = 1.5;

/// One human-rated text.
#[derive(Debug, Clone, PartialEq)]
pub struct Snippet {
    /// As in the file: `"17"` for movie snippets, `"12_3"` (document_sentence) for others.
    pub id: String,
    /// Mean human rating, −4..+4.
    pub rating: f64,
    pub text: String,
}

/// Which way a clearly polar snippet leans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Polarity {
    Positive,
    Negative,
}

/// A snippet with the polarity its human rating gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledSnippet {
    pub snippet: Snippet,
    pub polarity: Polarity,
}

/// Reads a ground-truth file (`id<TAB>mean rating<TAB>text` a line). A line with another
/// number of fields (an `*_anonDataRatings.txt` file has four), a rating that is not a number
/// in −4..+4, or an empty id or text is an error naming the file and line.
pub fn read_snippets(path: impl AsRef<Path>) -> Result<Vec<Snippet>, DatasetError> {
    let path = path.as_ref();
    numbered_lines(path)?
        .into_iter()
        .map(|(line, text)| {
            parse_snippet(&text).map_err(|message| DatasetError::BadLine {
                path: path.to_path_buf(),
                line,
                message,
            })
        })
        .collect()
}

fn parse_snippet(line: &str) -> Result<Snippet, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [id, rating, text] = fields[..] else {
        return Err(format!(
            "expected 3 tab-separated fields (id, mean rating, text), found {}",
            fields.len()
        ));
    };
    let id = id.trim();
    if id.is_empty() {
        return Err("empty id".into());
    }
    let rating = rating
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|r| r.abs() <= RATING_SCALE_MAX)
        .ok_or_else(|| {
            format!(
                "rating `{rating}` of snippet {id} is not a number in \
                 -{RATING_SCALE_MAX}..{RATING_SCALE_MAX}"
            )
        })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("snippet {id} has no text"));
    }
    Ok(Snippet {
        id: id.to_string(),
        rating,
        text: text.to_string(),
    })
}

/// The snippets whose rating is at least `min_abs_rating` from neutral (inclusive), labelled
/// by its sign, in their original order; a rating of exactly 0 leans neither way and is left
/// out. [`POLAR_MIN_ABS_RATING`] is the project's cut.
pub fn polar(snippets: &[Snippet], min_abs_rating: f64) -> Vec<LabelledSnippet> {
    snippets
        .iter()
        .filter(|s| s.rating != 0.0 && s.rating.abs() >= min_abs_rating)
        .map(|s| LabelledSnippet {
            snippet: s.clone(),
            polarity: if s.rating > 0.0 {
                Polarity::Positive
            } else {
                Polarity::Negative
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snippet(id: &str, rating: f64) -> Snippet {
        Snippet {
            id: id.into(),
            rating,
            text: "t".into(),
        }
    }

    #[test]
    fn polar_keeps_the_cut_itself_and_drops_neutral() {
        let all = [
            snippet("a", 1.5),
            snippet("b", 1.49),
            snippet("c", -1.5),
            snippet("d", 0.0),
            snippet("e", -3.9),
        ];
        let kept: Vec<(String, Polarity)> = polar(&all, POLAR_MIN_ABS_RATING)
            .into_iter()
            .map(|l| (l.snippet.id, l.polarity))
            .collect();
        assert_eq!(
            kept,
            [
                ("a".to_string(), Polarity::Positive),
                ("c".to_string(), Polarity::Negative),
                ("e".to_string(), Polarity::Negative)
            ]
        );
        assert_eq!(polar(&all, 0.0).len(), 4, "0 leans neither way");
        assert!(polar(&all, f64::NAN).is_empty(), "no cut keeps nothing");
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        let cases = [
            ("1\t2.0", "found 2"),
            ("1\t2.0\t0.5\t[1, 2]", "found 4"),
            ("1\tgood\ttext", "`good`"),
            ("1\t4.5\ttext", "not a number in -4..4"),
            ("1\tNaN\ttext", "not a number"),
            ("\t1.0\ttext", "empty id"),
            ("7\t1.0\t  ", "snippet 7 has no text"),
        ];
        for (line, want) in cases {
            let err = parse_snippet(line).unwrap_err();
            assert!(err.contains(want), "{line:?}: {err}");
        }
        let ok = parse_snippet("12_3\t-0.15\tA line.").unwrap();
        assert_eq!(
            ok,
            Snippet {
                id: "12_3".into(),
                rating: -0.15,
                text: "A line.".into()
            }
        );
    }
}
