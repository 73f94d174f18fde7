//! Self-explanations: ask a model to explain its own prediction, and turn its answer into an
//! attribution over the input's words.
//!
//! A model's stated reasons ("the important words are *great* and *boring*") are only worth
//! something if they agree with what actually drives its output, which attribution methods
//! measure. To compare the two, the free-text answer has to become the same kind of data as an
//! attribution: one score per input word. [`parse`] does that conversion, and says how much of
//! the answer it could read, so an unreadable answer is never mistaken for "no word matters".

pub mod parse;

pub use parse::{
    AnswerFormat, ExplanationItem, FailReason, ItemNote, ParseStatus, ParseSummary,
    ParsedExplanation, PartialReason, parse_explanation,
};
