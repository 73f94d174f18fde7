//! `glassbox cite`: which passages did the answer come from?

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use glassbox::Model;
use glassbox::attribution::cite::{CiteRequest, CiteTarget, DEFAULT_TEMPLATE, RagTemplate, cite};
use glassbox::attribution::{Aggregate, Method};
use glassbox::rag_scale::{ExpandRule, Hierarchy, ScaleOptions, cite_at_scale};
use glassbox::report::{CiteReport, render_html, render_terminal};
use serde::Deserialize;
use std::num::NonZeroUsize;

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
    scale: ScaleArgs,
    #[command(flatten)]
    written: ResultOutput,
}

/// Cheaper estimates for many, long passages; each makes the result an estimate, which the
/// report says.
#[derive(Args, Debug, Clone)]
pub(crate) struct ScaleArgs {
    /// How coalitions are evaluated: exact (each prompt run as written), passage-kv
    /// (position-independent passage caches: each passage encoded once after the header,
    /// only the question and answer run per coalition), context-kv (passages cached from one
    /// pass over the full prompt); or a one-pass estimate, attention or gradxinput.
    #[arg(long, value_enum, default_value_t = StrategyArg::Exact)]
    pub strategy: StrategyArg,
    /// With context-kv: recompute this many tokens after each coalition's first missing
    /// passage in the coalition's own context (the rest stays cached). 0 is AttriBoT's
    /// cached activations; the whole prompt after the gap is exact leave-one-out.
    #[arg(long, default_value_t = 0)]
    pub refresh: usize,
    /// Groups first: attribute contiguous groups of this many passages, then expand the
    /// groups that matter into their passages.
    #[arg(long)]
    pub groups: Option<usize>,
    /// Expand every group whose |score| is at least this share of the largest.
    #[arg(long, default_value_t = 0.25, requires = "groups")]
    pub expand_share: f64,
    /// Expand at most this many groups.
    #[arg(long, requires = "groups")]
    pub expand_max: Option<usize>,
    /// Attribute on this (cheaper) model and report it as an estimate for --model.
    #[arg(long)]
    pub proxy: Option<String>,
    /// Measure the estimate against exact leave-one-out on --model for its top K passages
    /// (K + 1 exact evaluations).
    #[arg(long, default_value_t = 0)]
    pub check: usize,
    /// Last layers the attention estimate averages.
    #[arg(long, default_value_t = glassbox::rag_scale::DEFAULT_ATTENTION_LAYERS)]
    pub attention_layers: usize,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrategyArg {
    Exact,
    PassageKv,
    ContextKv,
    Attention,
    Gradxinput,
}

impl ScaleArgs {
    /// Whether any option asks for an estimate (otherwise `cite` runs the exact path).
    pub fn wanted(&self) -> bool {
        self.strategy != StrategyArg::Exact
            || self.groups.is_some()
            || self.proxy.is_some()
            || self.check > 0
            || self.refresh > 0
    }

    /// The options, with the proxy model (if any) already loaded.
    pub fn options<'p>(&self, proxy: Option<&'p Model>) -> anyhow::Result<ScaleOptions<'p>> {
        use glassbox::rag_scale::{OnePass, PassageEncoding, Strategy};
        if self.refresh > 0 && self.strategy != StrategyArg::ContextKv {
            return Err(UsageError(
                "--refresh recomputes in-context caches; it needs --strategy context-kv".into(),
            )
            .into());
        }
        let strategy = match self.strategy {
            StrategyArg::Exact => Strategy::Exact,
            StrategyArg::PassageKv => Strategy::Cached(PassageEncoding::Independent),
            StrategyArg::ContextKv => Strategy::Cached(PassageEncoding::InContext {
                refresh: self.refresh,
            }),
            StrategyArg::Attention => Strategy::OnePass(OnePass::Attention {
                layers: self.attention_layers,
            }),
            StrategyArg::Gradxinput => Strategy::OnePass(OnePass::GradientTimesInput),
        };
        let hierarchy = match self.groups {
            None => None,
            Some(size) => Some(Hierarchy {
                group_size: NonZeroUsize::new(size)
                    .ok_or_else(|| UsageError("--groups must be at least 1".into()))?,
                rule: ExpandRule::new(self.expand_share, self.expand_max)?,
            }),
        };
        Ok(ScaleOptions {
            strategy,
            hierarchy,
            proxy,
            check: self.check,
        })
    }

    /// Loads the proxy model, if one is named.
    pub fn load_proxy(&self, like: &ModelArgs) -> anyhow::Result<Option<Model>> {
        let Some(name) = &self.proxy else {
            return Ok(None);
        };
        let args = ModelArgs {
            model: name.clone(),
            ..like.clone()
        };
        Ok(Some(args.load().with_context(|| {
            format!("loading the proxy model {name}")
        })?))
    }
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
    args.scale.options(None)?;
    let model = args.model.load()?;
    let proxy = args.scale.load_proxy(&args.model)?;
    let bar = crate::progress::spinner(&format!("attributing ({})", request.method.name()));
    let report = attribute(&model, &request, &args.scale, proxy.as_ref())?;
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
    args.scale.options(None)?;
    let model = args.model.load()?;
    let proxy = args.scale.load_proxy(&args.model)?;
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
        let report = attribute(&model, &request, &args.scale, proxy.as_ref())
            .with_context(|| format!("case {id}"))?;
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

/// The exact path, or the estimate the scale options ask for.
fn attribute(
    model: &Model,
    request: &CiteRequest,
    scale: &ScaleArgs,
    proxy: Option<&Model>,
) -> anyhow::Result<CiteReport> {
    Ok(if scale.wanted() {
        cite_at_scale(model, request, &scale.options(proxy)?)?
    } else {
        cite(model, request)?
    })
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
