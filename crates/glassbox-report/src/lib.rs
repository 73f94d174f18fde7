//! Glassbox's result schema and its renderings.
//!
//! Results are plain, versioned data ([`Attribution`], [`CiteReport`], [`AttributeReport`]) so
//! they can be saved,
//! compared and re-rendered without the model. Renderings are views over that data: a
//! terminal view with 24-bit colour (or plain text) and a self-contained HTML page.

pub mod browser;
mod heatmap;
mod html;
mod schema;
mod terminal;
#[cfg(test)]
mod testing;
mod verbalize;

pub use heatmap::{HeatmapView, render_attribute_html, render_attribute_terminal};
pub use html::{escape_html, render_html};
pub use schema::{
    ATTRIBUTE_SCHEMA, ATTRIBUTION_SCHEMA, Aggregation, AnswerToken, Approximation,
    ApproximationStep, AttributeReport, Attribution, CITE_SCHEMA, CiteReport, Cost, FidelityCheck,
    MethodInfo, Refinement, RequestRecord, SchemaError, Target, Unit, ViewSettings,
};
pub use terminal::{ColorMode, render_terminal};
pub use verbalize::{describe_target, verbalize};
