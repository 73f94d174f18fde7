//! The units of an input text — tokens, words, sentences or given character spans — and the
//! token ids each covers.
//!
//! Everything is cut from one tokenization of the input, so units at every level are unions of
//! the same tokens: a word-level result and a token-level one describe the same model input,
//! and token scores can be summed into word or sentence scores later (at view time).

use glassbox_report::Unit;
use glassbox_runtime::Model;

use crate::AttributionError;
use crate::cite::{sentences, words};

/// Unit levels by name, with what they are (for `glassbox list units`).
pub const UNIT_LEVELS: &[(&str, &str)] = &[
    ("token", "the model's tokens (subwords)"),
    (
        "word",
        "whitespace-separated words (subword tokens merged, punctuation stays with its word)",
    ),
    ("sentence", "sentences, split after . ! or ? and whitespace"),
    (
        "spans:A-B,C-D",
        "custom character spans of the input (half-open, 0-based); the rest stays fixed",
    ),
];

/// What the input is cut into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitLevel {
    Token,
    Word,
    Sentence,
    /// Half-open character ranges of the input, in order and not overlapping.
    Spans(Vec<(usize, usize)>),
}

impl UnitLevel {
    pub fn parse(spec: &str) -> Result<Self, AttributionError> {
        let bad = |why: &str| {
            AttributionError::BadInput(format!(
                "unit `{spec}`: {why}; units: {}",
                UNIT_LEVELS
                    .iter()
                    .map(|u| u.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        match spec {
            "token" | "tokens" => Ok(UnitLevel::Token),
            "word" | "words" => Ok(UnitLevel::Word),
            "sentence" | "sentences" => Ok(UnitLevel::Sentence),
            s if s.starts_with("spans:") => {
                let mut spans = Vec::new();
                for part in s["spans:".len()..].split(',') {
                    let (a, b) = part
                        .split_once('-')
                        .ok_or_else(|| bad("spans are written START-END"))?;
                    let parse =
                        |x: &str| x.trim().parse::<usize>().map_err(|_| bad("not a number"));
                    let (a, b) = (parse(a)?, parse(b)?);
                    if a >= b {
                        return Err(bad("a span must end after it starts"));
                    }
                    if spans.last().is_some_and(|&(_, end)| a < end) {
                        return Err(bad("spans must be in order and must not overlap"));
                    }
                    spans.push((a, b));
                }
                Ok(UnitLevel::Spans(spans))
            }
            _ => Err(bad("unknown unit")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            UnitLevel::Token => "token",
            UnitLevel::Word => "word",
            UnitLevel::Sentence => "sentence",
            UnitLevel::Spans(_) => "span",
        }
    }
}

/// An input text tokenized once, with its units at every standard level.
#[derive(Debug, Clone)]
pub struct InputUnits {
    pub ids: Vec<u32>,
    /// Character span of each token in the input.
    pub offsets: Vec<(usize, usize)>,
    pub tokens: Vec<Unit>,
    pub words: Vec<Unit>,
    pub sentences: Vec<Unit>,
}

impl InputUnits {
    /// Tokenizes `input` (no BOS) and cuts it into words and sentences.
    pub fn new(model: &Model, input: &str) -> Result<Self, AttributionError> {
        if input.trim().is_empty() {
            return Err(AttributionError::BadInput("the input text is empty".into()));
        }
        let encoding = model
            .tokenizer()
            .encode(input, false)
            .map_err(glassbox_runtime::RuntimeError::from)?;
        let tokens = encoding
            .ids
            .iter()
            .zip(&encoding.offsets)
            .map(|(&id, &(a, b))| Unit {
                label: model.tokenizer().decode(&[id]).unwrap_or_default(),
                text: input.chars().skip(a).take(b - a).collect(),
                level: "token".into(),
                span: Some((a, b)),
            })
            .collect();
        Ok(Self {
            ids: encoding.ids,
            offsets: encoding.offsets,
            tokens,
            words: pieces(&words(input), "word"),
            sentences: pieces(&sentences(input), "sentence"),
        })
    }

    /// The units of `level` and, for each token, the unit it belongs to (`None`: fixed text
    /// outside every custom span).
    pub fn at(
        &self,
        level: &UnitLevel,
        input: &str,
    ) -> Result<(Vec<Unit>, Vec<Option<usize>>), AttributionError> {
        let units = match level {
            UnitLevel::Token => {
                return Ok((self.tokens.clone(), (0..self.ids.len()).map(Some).collect()));
            }
            UnitLevel::Word => self.words.clone(),
            UnitLevel::Sentence => self.sentences.clone(),
            UnitLevel::Spans(spans) => {
                let chars = input.chars().count();
                let mut units = Vec::with_capacity(spans.len());
                for &(a, b) in spans {
                    if b > chars {
                        return Err(AttributionError::BadInput(format!(
                            "span {a}-{b} ends past the input's {chars} characters"
                        )));
                    }
                    let text: String = input.chars().skip(a).take(b - a).collect();
                    units.push(Unit {
                        label: text.trim().to_string(),
                        text,
                        level: "span".into(),
                        span: Some((a, b)),
                    });
                }
                units
            }
        };
        let owner = self
            .offsets
            .iter()
            .map(|&(start, _)| {
                units.iter().position(|u| {
                    let (a, b) = u.span.expect("input units have spans");
                    a <= start && start < b
                })
            })
            .collect::<Vec<_>>();
        if let Some(empty) = (0..units.len()).find(|u| !owner.contains(&Some(*u))) {
            return Err(AttributionError::BadInput(format!(
                "unit `{}` covers no token start; widen the span to a whole token",
                units[empty].text
            )));
        }
        if owner
            .windows(2)
            .any(|w| w[0].is_some() && w[1].is_some() && w[0] > w[1])
        {
            return Err(AttributionError::BadInput(
                "units must follow the text's order".into(),
            ));
        }
        Ok((units, owner))
    }
}

/// Units from consecutive pieces of a text (their concatenation), with character spans.
fn pieces(parts: &[String], level: &str) -> Vec<Unit> {
    let mut at = 0;
    parts
        .iter()
        .map(|p| {
            let len = p.chars().count();
            let unit = Unit {
                label: p.trim().to_string(),
                text: p.clone(),
                level: level.into(),
                span: Some((at, at + len)),
            };
            at += len;
            unit
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_specs_parse_with_clear_errors() {
        assert_eq!(UnitLevel::parse("word").unwrap(), UnitLevel::Word);
        assert_eq!(
            UnitLevel::parse("spans:0-4,6-9").unwrap(),
            UnitLevel::Spans(vec![(0, 4), (6, 9)])
        );
        for bad in ["paragraph", "spans:4-2", "spans:0-5,3-8", "spans:x-2"] {
            let err = UnitLevel::parse(bad).unwrap_err().to_string();
            assert!(err.contains("token, word, sentence"), "{err}");
        }
    }

    #[test]
    fn pieces_get_consecutive_character_spans() {
        let units = pieces(&words("Naïve café, nice."), "word");
        let spans: Vec<_> = units.iter().map(|u| u.span.unwrap()).collect();
        assert_eq!(spans, vec![(0, 5), (5, 11), (11, 17)]);
        assert_eq!(units[1].label, "café,");
    }
}
