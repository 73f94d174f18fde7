//! `glassbox cite`: which passages did the answer come from?

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use glassbox::attribution::cite::{CiteRequest, CiteTarget, DEFAULT_TEMPLATE, RagTemplate, cite};
use glassbox::attribution::{Aggregate, Method};
use glassbox::report::{CiteReport, render_html, render_terminal};
use serde::Deserialize;

use crate::attribute::PerturbationArg;
use crate::input::{ModelArgs, ResultOutput, read_text};
use crate::{Output, UsageError};

#[derive(Args)]
pub(crate) struct CiteArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The question.
    #[arg(long, short, required_unless_present = "batch")]
    question: Option<String>,
    /// The passages: a JSON file holding an array of strings.
    #[arg(long, short, required_unless_present = "batch")]
    passages: Option<PathBuf>,
    /// The answer to attribute, scored exactly as given (default: the model's greedy answer).
    #[arg(long, short)]
    answer: Option<String>,
    /// Batch mode: a JSONL file with one case per line ({"question", "passages", "answer"?, "id"?}).
    #[arg(long, conflicts_with_all = ["question", "passages", "answer"])]
    batch: Option<PathBuf>,
    /// Attribution method (see `glassbox list methods`).
    #[arg(long, short = 'M', default_value = "exact")]
    method: String,
    /// Budget of sampled methods (permutations, or coalitions); method default if omitted.
    #[arg(long)]
    samples: Option<usize>,
    /// Seed of sampled methods: the same seed gives the same numbers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How a passage is removed.
    #[arg(long, value_enum, default_value_t = PerturbationArg::Delete)]
    perturbation: PerturbationArg,
    /// The value attributed: the answer's total log-probability (sum), its mean per token
    /// (mean), or whether the coalition makes the model generate exactly this answer
    /// (identity, TextGenSHAP's game; alternative answers are credited too).
    #[arg(long, value_enum, default_value_t = TargetArg::Sum)]
    target: TargetArg,
    /// Refine the top N passages into sentences.
    #[arg(long, default_value_t = 0)]
    refine: usize,
    /// Also refine the top sentence of each refined passage into words.
    #[arg(long, requires = "refine")]
    refine_words: bool,
    /// A system message for chat models.
    #[arg(long)]
    system: Option<String>,
    /// A prompt template (TOML like prompts/rag_qa.toml) instead of the built-in one.
    #[arg(long)]
    template: Option<PathBuf>,
    #[command(flatten)]
    written: ResultOutput,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum TargetArg {
    Sum,
    Mean,
    Identity,
}

/// One case of a batch file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    id: Option<String>,
    question: String,
    passages: Vec<String>,
    #[serde(default)]
    answer: Option<String>,
    /// Gold passage index, if the file is annotated (carried through, not used).
    #[serde(default)]
    gold: Option<usize>,
}

fn read_passages(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = read_text(path)?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{} is not valid JSON: {e}", path.display())))?;
    let items = value.as_array().ok_or_else(|| {
        UsageError(format!(
            "{}: expected a JSON array of passages (strings)",
            path.display()
        ))
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Object(o) if o.get("text").is_some_and(|t| t.is_string()) => {
                Ok(o["text"].as_str().expect("checked").to_string())
            }
            _ => Err(UsageError(format!(
                "{}: passage {} is not a string (or an object with a \"text\" string)",
                path.display(),
                i + 1
            ))
            .into()),
        })
        .collect()
}

impl CiteArgs {
    fn request(
        &self,
        question: String,
        passages: Vec<String>,
        answer: Option<String>,
    ) -> anyhow::Result<CiteRequest> {
        let template = match &self.template {
            Some(path) => RagTemplate::parse(&read_text(path)?)?,
            None => RagTemplate::parse(DEFAULT_TEMPLATE)?,
        };
        Ok(CiteRequest {
            question,
            passages,
            answer,
            system: self.system.clone(),
            template,
            method: Method::parse(&self.method, self.samples)?,
            perturbation: self.perturbation.perturbation(),
            target: match self.target {
                TargetArg::Sum => CiteTarget::LogProb(Aggregate::Sum),
                TargetArg::Mean => CiteTarget::LogProb(Aggregate::Mean),
                TargetArg::Identity => CiteTarget::AnswerIdentity,
            },
            seed: self.seed,
            refine_passages: self.refine,
            refine_words: self.refine_words,
        })
    }
}

pub(crate) fn run(args: CiteArgs, out: &Output) -> anyhow::Result<()> {
    args.written.check()?;
    Method::parse(&args.method, args.samples)?;
    if let Some(batch) = &args.batch {
        return run_batch(&args, batch, out);
    }
    let passages = read_passages(args.passages.as_deref().expect("clap requires it"))?;
    let request = args.request(
        args.question.clone().expect("clap requires it"),
        passages,
        args.answer.clone(),
    )?;
    let model = args.model.load()?;
    let bar = crate::progress::spinner(&format!("attributing ({})", request.method.name()));
    let report = cite(&model, &request)?;
    bar.finish_and_clear();
    if let Some(path) = &args.written.output {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    show(
        &report,
        args.written.html.as_deref(),
        args.written.plain,
        out,
    )
}

fn run_batch(args: &CiteArgs, batch: &Path, out: &Output) -> anyhow::Result<()> {
    let file = std::fs::File::open(batch)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", batch.display())))?;
    let mut cases = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| UsageError(format!("{}: {e}", batch.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(&line)
            .map_err(|e| UsageError(format!("{} line {}: {e}", batch.display(), n + 1)))?;
        cases.push(case);
    }
    if cases.is_empty() {
        return Err(UsageError(format!("{} has no cases", batch.display())).into());
    }
    let model = args.model.load()?;
    let bar = crate::progress::steps("citing", cases.len() as u64);
    let mut sink: Box<dyn Write> = match &args.written.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout()),
    };
    for (k, case) in cases.into_iter().enumerate() {
        let id = case.id.clone().unwrap_or_else(|| format!("{}", k + 1));
        let request = args.request(case.question, case.passages, case.answer)?;
        let report = cite(&model, &request).with_context(|| format!("case {id}"))?;
        let line = serde_json::json!({"id": id, "gold": case.gold, "report": report});
        writeln!(sink, "{}", serde_json::to_string(&line)?)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !out.json
        && let Some(path) = &args.written.output
    {
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

/// Writes the HTML report if asked, then prints the report as JSON or terminal text.
pub(crate) fn show(
    report: &CiteReport,
    html: Option<&Path>,
    plain: bool,
    out: &Output,
) -> anyhow::Result<()> {
    if let Some(path) = html {
        std::fs::write(path, render_html(report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if out.json {
        return out.print_json(report);
    }
    let color = crate::color_mode(plain);
    print!("{}", render_terminal(report, color));
    Ok(())
}
