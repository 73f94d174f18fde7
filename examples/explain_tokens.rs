//! Token- and word-level attribution from the library on the default model: which words made
//! the model predict " Paris", by three method families, and why " Paris" rather than
//! " London". Run with `cargo run --release -p glassbox --example explain_tokens`.

use glassbox::report::{ColorMode, HeatmapView, render_attribute_terminal, verbalize};
use glassbox::{Explainer, Fetch, LoadOptions, NoProgress, load_model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = load_model(
        glassbox::DEFAULT_MODEL,
        LoadOptions::default(),
        Fetch::IfMissing,
        &NoProgress,
    )?;
    let input = "The capital of France is";
    for method in ["loo", "kernel", "ig", "rollout"] {
        let report = Explainer::new(&model)
            .method(method)?
            .seed(1)
            .explain(input)?;
        let a = &report.attribution;
        println!(
            "{method:>8}: {} ({} evaluations, {:.2} s)",
            verbalize(a, 0),
            a.cost.evaluations,
            a.cost.seconds
        );
    }
    // Why " Paris" and not " London": log p(Paris) - log p(London), per word.
    let contrast = Explainer::new(&model)
        .method("gradxinput")?
        .target("contrast: Paris, London")?
        .explain(input)?;
    let view = HeatmapView::new(&contrast, Some("word"), None)?;
    print!("\n{}", render_attribute_terminal(&view, ColorMode::Plain));
    Ok(())
}
