//! Glassbox's result schema and its renderings.
//!
//! Results are plain, versioned data ([`Attribution`], [`CiteReport`]) so they can be saved,
//! compared and re-rendered without the model. Renderings are views over that data.

mod schema;

pub use schema::{
    ATTRIBUTION_SCHEMA, AnswerToken, Attribution, CITE_SCHEMA, CiteReport, Cost, MethodInfo,
    Refinement, SchemaError, Target, Unit,
};
