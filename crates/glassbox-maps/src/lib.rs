//! Token Activation Maps: where in an image a multimodal LLM "looked" for each token it wrote.
//!
//! The method (Li et al., "Token Activation Map to Visually Explain Multimodal LLMs", ICCV 2025)
//! reads one forward pass: a token's class activation map is its LM-head row against the
//! final-norm hidden state of every vision token; estimated causal inference subtracts the
//! part of that map explained by earlier context tokens; maps and text scores are normalised
//! together; and a rank Gaussian filter removes isolated spikes. This crate computes maps
//! from plain arrays (hidden states, head rows, token positions), so it serves any
//! architecture that can hand those over, and renders and scores them.

mod caption;
mod filter;
mod grid;
mod html;
mod metrics;
mod prune;
mod render;
mod report;
mod tam;

pub use caption::{AnswerMaps, AnswerToken, ExplainError, ModeChoice, explain_answer};
pub use filter::rank_gaussian_filter;
pub use grid::{Grid, upsample_bilinear};
pub use html::render_tam_html;
pub use metrics::{
    MapScores, ObjectShares, object_shares, otsu_threshold, pointing_hit, score_map, to_u8,
};
pub use prune::{PruneBy, PruneOutcome, prune_study};
pub use render::{Overlay, contact_sheet, jet, overlay};
pub use report::{
    MAP_KINDS, ReportImage, ReportTile, ReportToken, ReportWord, TAM_SCHEMA, TamReport, TilePlace,
    words,
};
pub use tam::{
    ContextToken, Mode, Reduce, ReferenceQuirks, TamError, TamInput, TokenMap, Variant,
    VariantMaps, merge_maps, tam,
};
