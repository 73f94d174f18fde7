//! Prompts cut into fixed text and units, and how a coalition becomes model input.
//!
//! A unit (passage, sentence, word) is a segment of the prompt text. A coalition keeps some
//! units; what happens to the others is the [`Perturbation`], recorded with every result
//! because it changes the numbers.

use serde::Serialize;

use crate::Coalition;

/// Perturbations by name, with what they do (for `glassbox list perturbations`).
pub const PERTURBATIONS: &[(&str, &str)] = &[
    (
        "delete",
        "remove the unit's text and re-tokenize (default): the prompt without it",
    ),
    (
        "placeholder",
        "replace the unit with a placeholder such as \"[3] (removed)\"",
    ),
    (
        "attention_block",
        "keep the text and positions, but no later token may attend to the unit",
    ),
];

/// How a dropped unit is removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Perturbation {
    /// The unit's text is deleted and the rest re-tokenized: "the prompt without this passage".
    Delete,
    /// The unit's text is replaced by a placeholder (its `dropped` text).
    Placeholder,
    /// The unit stays in place but no later token may attend to it; positions are kept.
    AttentionBlock,
}

impl Perturbation {
    pub fn name(&self) -> &'static str {
        match self {
            Perturbation::Delete => "delete",
            Perturbation::Placeholder => "placeholder",
            Perturbation::AttentionBlock => "attention_block",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "delete" => Some(Perturbation::Delete),
            "placeholder" => Some(Perturbation::Placeholder),
            "attention_block" | "block" => Some(Perturbation::AttentionBlock),
            _ => None,
        }
    }
}

/// One piece of a prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Fixed(String),
    Unit {
        unit: usize,
        /// Text when kept.
        kept: String,
        /// Text when dropped under [`Perturbation::Placeholder`].
        placeholder: String,
    },
}

/// The prompt a coalition game is played on: segments in order, ending with fixed text (the
/// position that predicts the answer's first token must always be present).
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentedPrompt {
    pub segments: Vec<Segment>,
    /// Prepend the model's BOS token (raw prompts of models that want it).
    pub bos: bool,
}

impl SegmentedPrompt {
    /// Number of units (units are numbered `0..units()`).
    pub fn units(&self) -> usize {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Unit { unit, .. } => Some(unit + 1),
                Segment::Fixed(_) => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The prompt text for a coalition. Under attention blocking the text is the full prompt
    /// (blocking happens inside the model).
    pub fn render(&self, coalition: &Coalition, perturbation: &Perturbation) -> String {
        let mut text = String::new();
        for s in &self.segments {
            match s {
                Segment::Fixed(t) => text.push_str(t),
                Segment::Unit {
                    unit,
                    kept,
                    placeholder,
                } => {
                    if coalition.contains(*unit) || *perturbation == Perturbation::AttentionBlock {
                        text.push_str(kept);
                    } else if *perturbation == Perturbation::Placeholder {
                        text.push_str(placeholder);
                    }
                }
            }
        }
        text
    }
}
