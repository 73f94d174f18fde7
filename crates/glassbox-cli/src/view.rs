//! `glassbox view`: re-render a saved result (of `cite` or `attribute`) without the model.

use std::path::PathBuf;

use clap::Args;
use glassbox::report::{ATTRIBUTE_SCHEMA, Aggregation, AttributeReport, CiteReport};

use crate::input::{check_output, read_text};
use crate::{Output, UsageError};

#[derive(Args)]
pub(crate) struct ViewArgs {
    /// A result saved with `--output` by `glassbox cite` or `glassbox attribute`, or the
    /// tam.json of `glassbox tam`.
    result: PathBuf,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Attribute results: show per token, word or sentence (at least as coarse as computed).
    #[arg(long)]
    unit: Option<String>,
    /// Attribute results: combine finer scores by sum, mean or absmax (signed).
    #[arg(long)]
    aggregate: Option<String>,
    #[arg(long)]
    force: bool,
    #[arg(long)]
    plain: bool,
}

pub(crate) fn view(args: ViewArgs, out: &Output) -> anyhow::Result<()> {
    if let Some(path) = &args.html {
        check_output(path, args.force)?;
    }
    let text = read_text(&args.result)?;
    let bad = |e: &dyn std::fmt::Display| UsageError(format!("{}: {e}", args.result.display()));
    let schema = serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| bad(&e))?
        .get("schema")
        .and_then(|s| s.as_str().map(str::to_string));
    if schema.as_deref() == Some(glassbox::maps::TAM_SCHEMA) {
        let report = glassbox::maps::TamReport::from_json(&text).map_err(|e| bad(&e))?;
        if let Some(path) = &args.html {
            // Overlays are drawn again over the images, read from where the report says.
            let pixels: Vec<Vec<u8>> = report
                .images
                .iter()
                .map(|i| {
                    glassbox::vision::RgbImage::open(std::path::Path::new(&i.path)).map(|r| r.data)
                })
                .collect::<Result<_, _>>()?;
            std::fs::write(path, glassbox::maps::render_tam_html(&report, &pixels))
                .map_err(|e| UsageError(format!("writing {}: {e}", path.display())))?;
        }
        return crate::tam::show(&report, None, out);
    }
    if schema.as_deref() == Some(ATTRIBUTE_SCHEMA) {
        let report = AttributeReport::from_json(&text).map_err(|e| bad(&e))?;
        let aggregate = match args.aggregate.as_deref() {
            None => None,
            Some(name) => Some(Aggregation::parse(name).ok_or_else(|| {
                UsageError(format!(
                    "unknown aggregation `{name}`; use sum, mean or absmax"
                ))
            })?),
        };
        return crate::attribute::show(
            &report,
            args.unit.as_deref(),
            aggregate,
            args.html.as_deref(),
            args.plain,
            out,
        );
    }
    if args.unit.is_some() || args.aggregate.is_some() {
        return Err(UsageError("--unit and --aggregate apply to attribute results".into()).into());
    }
    let report = CiteReport::from_json(&text).map_err(|e| bad(&e))?;
    crate::cite::show(&report, args.html.as_deref(), args.plain, out)
}
