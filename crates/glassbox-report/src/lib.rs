//! Glassbox's result schema and its renderings.
//!
//! Results are plain, versioned data ([`Attribution`], [`CiteReport`]) so they can be saved,
//! compared and re-rendered without the model. Renderings are views over that data: a
//! terminal view with 24-bit colour (or plain text) and a self-contained HTML page.

mod html;
mod schema;
mod terminal;
#[cfg(test)]
mod testing;

pub use html::render_html;
pub use schema::{
    ATTRIBUTION_SCHEMA, AnswerToken, Attribution, CITE_SCHEMA, CiteReport, Cost, MethodInfo,
    Refinement, SchemaError, Target, Unit,
};
pub use terminal::{ColorMode, render_terminal};
