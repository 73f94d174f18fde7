//! `glassbox`: explain what LLMs do, from the command line.
//!
//! A thin shell over the `glassbox` library: it parses arguments, calls the library and prints
//! either text for people or JSON (`--json`) for programs. Exit codes: 0 success, 1 a failure
//! while running, 2 a problem with what was given (arguments, files, model names, input text).

mod attribute;
mod bench;
mod bench_attribute;
mod bench_cite;
mod bench_cite_long;
mod bench_selfexplain;
mod bench_tam;
mod cite;
mod faithfulness;
mod input;
mod models;
mod progress;
mod run;
mod shapes;
mod tam;
mod view;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "glassbox",
    version,
    about = "Explain what LLMs do: instrumented runs, attributions and activation maps",
    after_help = "Models are named as built-in names (see `glassbox models list`), .gguf files, \
                  Hugging Face model directories, or hf:ORG/NAME."
)]
struct Cli {
    /// Print JSON on standard output instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Worker threads (default: one per core). Record this with any timing you report.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List, fetch and describe models.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Generate a continuation of a prompt.
    Generate(run::GenerateArgs),
    /// Per-token log-probabilities of a given continuation (teacher forcing, one pass).
    Score(run::ScoreArgs),
    /// Run the model once and capture internals (attention patterns, residual streams).
    Inspect(run::InspectArgs),
    /// Which passages did an answer come from? Shapley values and friends over passages.
    Cite(cite::CiteArgs),
    /// Which input tokens, words or sentences drove a prediction or a continuation? Occlusion,
    /// LIME, Shapley, gradients, integrated gradients, attention; heatmaps.
    Attribute(attribute::AttributeArgs),
    /// `attribute` over a JSONL file of examples, one JSON result per line.
    AttributeDataset(attribute::DatasetArgs),
    /// The model classifies a text and explains its own prediction (elicited, parsed, saved as
    /// an attribution that `evaluate`, `compare` and `view` take like any other).
    SelfExplain(faithfulness::SelfExplainArgs),
    /// Faithfulness of a saved explanation, re-scored on the model: comprehensiveness,
    /// sufficiency (AOPC modes), decision flip, RankDel, top-k drop, infidelity, contrastive.
    Evaluate(faithfulness::EvaluateArgs),
    /// Agreement of two saved explanations of one input (top-k, rank, sign, correlations).
    Compare(faithfulness::CompareArgs),
    /// Token activation maps: where in the image(s) a vision-language model looked for each
    /// word of its answer (or of a given caption); PNG overlays, an HTML page and JSON.
    Tam(tam::TamArgs),
    /// The known-content vision-language model (coloured shapes): train its vision front end.
    #[command(subcommand)]
    Shapes(shapes::ShapesCommand),
    /// Re-render a saved result (terminal or HTML).
    View(view::ViewArgs),
    /// List methods, targets, units, perturbations or capture points, with one-line
    /// descriptions.
    List {
        #[arg(value_enum)]
        what: ListWhat,
    },
    /// Measure prefill, scoring and decode speed and peak memory (`bench cite`: passage
    /// attribution on the test RAG cases).
    Bench(bench::BenchCommand),
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum ListWhat {
    Methods,
    Targets,
    Units,
    Perturbations,
    Hooks,
    Metrics,
    Protocols,
}

/// A problem with what the user gave that the CLI itself detects (exit code 2).
#[derive(Debug)]
pub(crate) struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Colours for terminal views: 24-bit unless `--plain` was given, `NO_COLOR` is set, or
/// standard output is not a terminal (pipes and files get plain text).
pub(crate) fn color_mode(plain: bool) -> glassbox::report::ColorMode {
    use std::io::IsTerminal;
    if plain || std::env::var_os("NO_COLOR").is_some() || !std::io::stdout().is_terminal() {
        glassbox::report::ColorMode::Plain
    } else {
        glassbox::report::ColorMode::TrueColor
    }
}

/// Output settings shared by the commands.
pub(crate) struct Output {
    pub json: bool,
}

impl Output {
    /// Prints `value` as pretty JSON on standard output.
    pub fn print_json(&self, value: &impl serde::Serialize) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        println!("{text}");
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // Before any thread exists: candle reads the variable, rayon gets the pool.
        // SAFETY: no other thread is running yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n as usize)
            .build_global()
        {
            eprintln!("error: could not start {n} threads: {e}");
            return ExitCode::from(1);
        }
    }
    let out = Output { json: cli.json };
    let result = match cli.command {
        Command::Models(cmd) => models::run(cmd, &out),
        Command::Generate(args) => run::generate(args, &out),
        Command::Score(args) => run::score(args, &out),
        Command::Inspect(args) => run::inspect(args, &out),
        Command::Cite(args) => cite::run(args, &out),
        Command::Attribute(args) => attribute::run(args, &out),
        Command::AttributeDataset(args) => attribute::run_dataset(args, &out),
        Command::SelfExplain(args) => faithfulness::run_self_explain(args, &out),
        Command::Evaluate(args) => faithfulness::run_evaluate(args, &out),
        Command::Compare(args) => faithfulness::run_compare(args, &out),
        Command::Tam(args) => tam::run(args, &out),
        Command::Shapes(cmd) => shapes::run(cmd, &out),
        Command::View(args) => view::view(args, &out),
        Command::List { what } => list(what, &out),
        Command::Bench(cmd) => cmd.run(&out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Prints a registry (name and description of each entry).
fn list(what: ListWhat, out: &Output) -> anyhow::Result<()> {
    use glassbox::attribution::attribute::{MODEL_METHODS, TARGET_KINDS, UNIT_LEVELS};
    let entries: Vec<(&str, &str)> = match what {
        ListWhat::Methods => glassbox::attribution::METHODS
            .iter()
            .chain(MODEL_METHODS)
            .copied()
            .collect(),
        ListWhat::Targets => TARGET_KINDS.to_vec(),
        ListWhat::Units => UNIT_LEVELS.to_vec(),
        ListWhat::Perturbations => glassbox::attribution::PERTURBATIONS.to_vec(),
        ListWhat::Hooks => glassbox::runtime::HOOK_NAMES.to_vec(),
        ListWhat::Metrics => glassbox::eval::METRICS.to_vec(),
        ListWhat::Protocols => glassbox::selfexplain::task::PROTOCOL_DESCRIPTIONS.to_vec(),
    };
    if out.json {
        let map: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        return out.print_json(&map);
    }
    for (name, description) in &entries {
        println!("{name:<24} {description}");
    }
    Ok(())
}

/// 2 for errors in the user's input, 1 for failures while running.
fn exit_code(e: &anyhow::Error) -> u8 {
    let input = e.chain().any(|cause| {
        cause.downcast_ref::<UsageError>().is_some()
            || cause
                .downcast_ref::<glassbox::Error>()
                .is_some_and(|g| g.is_input_error())
            || cause
                .downcast_ref::<glassbox::runtime::RuntimeError>()
                .is_some_and(|r| r.is_input_error())
            || cause
                .downcast_ref::<glassbox::models::ModelsError>()
                .is_some_and(|m| m.is_input_error())
            || cause
                .downcast_ref::<glassbox::attribution::AttributionError>()
                .is_some_and(|a| a.is_input_error())
            || cause
                .downcast_ref::<glassbox::selfexplain::SelfExplainError>()
                .is_some_and(|s| s.is_input_error())
            || cause
                .downcast_ref::<glassbox::evaluate::EvaluateError>()
                .is_some_and(|e| e.is_input_error())
            || cause.downcast_ref::<glassbox::eval::EvalError>().is_some()
            || cause
                .downcast_ref::<glassbox::vision::VisionError>()
                .is_some_and(|v| v.is_input_error())
            || cause
                .downcast_ref::<glassbox::maps::ExplainError>()
                .is_some_and(|m| m.is_input_error())
            || cause
                .downcast_ref::<glassbox::datasets::DatasetError>()
                .is_some_and(|d| d.is_input_error())
    });
    if input { 2 } else { 1 }
}
