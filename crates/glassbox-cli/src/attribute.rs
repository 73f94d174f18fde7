//! `glassbox attribute`: which input tokens, words or sentences drove a prediction or a
//! continuation; `glassbox attribute-dataset` does the same over a JSONL file.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use glassbox::attribution::Perturbation;
use glassbox::attribution::attribute::{
    AnswerSpec, AttributeRequest, Baseline, DEFAULT_GENERATE_TOKENS, InputTemplate, MethodOptions,
    PromptFormat, TargetSpec, TokenMethod, UnitLevel, attribute, parse_point,
};
use glassbox::report::{
    Aggregation, AttributeReport, HeatmapView, render_attribute_html, render_attribute_terminal,
};
use serde::Deserialize;

use crate::input::{InputText, ModelArgs, ResultOutput, check_output};
use crate::{Output, UsageError};

/// The settings shared by `attribute` and `attribute-dataset`.
#[derive(Args)]
pub(crate) struct MethodArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Attribution method (see `glassbox list methods`): perturbation (exact, permutation,
    /// kernel, lime, loo/occlusion, ngram:N, xmutest, banzhaf, surrogate), gradient (saliency,
    /// gradxinput, ig, smoothgrad) or attention (attention, rollout).
    #[arg(long, short = 'M', default_value = "ig")]
    method: String,
    /// What is explained: prob, logprob, logit (of each output token), contrast:A,B (why A and
    /// not B, next token), label:A,B,... (verbalizer classification, next token).
    #[arg(long, short, default_value = "logprob")]
    target: String,
    /// Units: token, word, sentence or spans:A-B,C-D (character ranges). Perturbation methods
    /// perturb these units; gradient and attention methods score tokens and sum them into
    /// these units for display.
    #[arg(long, short, default_value = "word")]
    unit: String,
    /// How token scores combine into coarser units when shown.
    #[arg(long, value_enum, default_value_t = AggregateArg::Sum)]
    aggregate: AggregateArg,
    /// Seed of sampled methods (permutation, kernel, lime, surrogate, smoothgrad).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples of sampled methods (permutations, coalitions, noisy copies); method default if
    /// omitted.
    #[arg(long)]
    samples: Option<usize>,
    /// Integrated-gradients steps.
    #[arg(long, default_value_t = glassbox::attribution::attribute::DEFAULT_IG_STEPS)]
    steps: usize,
    /// Integrated-gradients baseline: pad, unk or zero embeddings (in place of the input's
    /// tokens; the prompt template stays).
    #[arg(long, default_value = "pad")]
    baseline: String,
    /// SmoothGrad noise, as a fraction of the input embeddings' range.
    #[arg(long, default_value_t = glassbox::attribution::attribute::DEFAULT_SMOOTHGRAD_NOISE)]
    noise: f64,
    /// Attention layer (default: the last).
    #[arg(long)]
    layer: Option<usize>,
    /// Attention head (default: the mean over heads).
    #[arg(long)]
    head: Option<usize>,
    /// Capture point of the layer methods (layer_gradxact, layer_ig), e.g. blocks.10.resid_pre.
    #[arg(long)]
    at: Option<String>,
    /// How perturbation methods remove a unit: delete its tokens, replace each by the unknown
    /// token (placeholder), or block attention to it.
    #[arg(long, value_enum, default_value_t = PerturbationArg::Delete)]
    perturbation: PerturbationArg,
    /// Fixed prompt text around the input, with `{input}` where the input goes (e.g.
    /// $'Review: {input}\nSentiment:'); never a unit. Inside the user turn with --chat.
    #[arg(long)]
    template: Option<String>,
    /// Wrap the input in the model's chat template (user turn); the output is the assistant's.
    #[arg(long)]
    chat: bool,
    /// A system message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Longest generation of --generate.
    #[arg(long, default_value_t = DEFAULT_GENERATE_TOKENS)]
    max_tokens: usize,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub(crate) enum PerturbationArg {
    Delete,
    Placeholder,
    AttentionBlock,
}

impl PerturbationArg {
    pub(crate) fn perturbation(self) -> Perturbation {
        match self {
            PerturbationArg::Delete => Perturbation::Delete,
            PerturbationArg::Placeholder => Perturbation::Placeholder,
            PerturbationArg::AttentionBlock => Perturbation::AttentionBlock,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum AggregateArg {
    Sum,
    Mean,
    Absmax,
}

impl AggregateArg {
    fn aggregation(self) -> Aggregation {
        match self {
            AggregateArg::Sum => Aggregation::Sum,
            AggregateArg::Mean => Aggregation::Mean,
            AggregateArg::Absmax => Aggregation::AbsMax,
        }
    }
}

impl MethodArgs {
    fn request(
        &self,
        input: String,
        answer: AnswerSpec,
        target: &str,
    ) -> anyhow::Result<AttributeRequest> {
        let options = MethodOptions {
            samples: self.samples,
            steps: self.steps,
            baseline: Baseline::parse(&self.baseline)?,
            noise: self.noise,
            layer: self.layer,
            head: self.head,
            at: self.at.as_deref().map(parse_point).transpose()?,
        };
        Ok(AttributeRequest {
            input,
            template: match &self.template {
                Some(t) => InputTemplate::parse(t)?,
                None => InputTemplate::default(),
            },
            answer,
            target: TargetSpec::parse(target)?,
            method: TokenMethod::parse(&self.method, &options)?,
            unit: UnitLevel::parse(&self.unit)?,
            format: if self.chat {
                PromptFormat::Chat
            } else {
                PromptFormat::Raw
            },
            system: self.system.clone(),
            perturbation: self.perturbation.perturbation(),
            aggregate: self.aggregate.aggregation(),
            seed: self.seed,
        })
    }
}

#[derive(Args)]
pub(crate) struct AttributeArgs {
    #[command(flatten)]
    settings: MethodArgs,
    #[command(flatten)]
    input: InputText,
    /// Explain this continuation of the input (teacher-forced, one target per token).
    #[arg(long, short, conflicts_with = "generate")]
    continuation: Option<String>,
    /// Explain the model's greedy continuation (up to --max-tokens).
    #[arg(long)]
    generate: bool,
    #[command(flatten)]
    written: ResultOutput,
}

pub(crate) fn run(args: AttributeArgs, out: &Output) -> anyhow::Result<()> {
    args.written.check()?;
    let input = args.input.text()?;
    let answer = match (&args.continuation, args.generate) {
        (Some(c), _) => AnswerSpec::Given(c.clone()),
        (None, true) => AnswerSpec::Generate(args.settings.max_tokens),
        (None, false) => AnswerSpec::NextToken,
    };
    let request = args
        .settings
        .request(input, answer, &args.settings.target)?;
    let model = args.settings.model.load()?;
    let bar = crate::progress::spinner(&format!("attributing ({})", request.method.name()));
    let report = attribute(&model, &request)?;
    bar.finish_and_clear();
    if let Some(path) = &args.written.output {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    show(
        &report,
        None,
        None,
        args.written.html.as_deref(),
        args.written.plain,
        out,
    )
}

/// Writes the HTML heatmap if asked, then prints the report as JSON or terminal text.
pub(crate) fn show(
    report: &AttributeReport,
    unit: Option<&str>,
    aggregate: Option<Aggregation>,
    html: Option<&Path>,
    plain: bool,
    out: &Output,
) -> anyhow::Result<()> {
    let view = HeatmapView::new(report, unit, aggregate).map_err(|e| UsageError(e.to_string()))?;
    if let Some(path) = html {
        std::fs::write(path, render_attribute_html(&view))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if out.json {
        return out.print_json(report);
    }
    let color = crate::color_mode(plain);
    print!("{}", render_attribute_terminal(&view, color));
    Ok(())
}

#[derive(Args)]
pub(crate) struct DatasetArgs {
    #[command(flatten)]
    settings: MethodArgs,
    /// JSONL, one example per line: {"input", "continuation"?, "target"?, "id"?}; an example
    /// without a continuation explains the next token (or, with --generate, the generation).
    data: PathBuf,
    /// Explain each example's greedy continuation when it gives none.
    #[arg(long)]
    generate: bool,
    /// Write the results here, one JSON line per example (default: standard output).
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[arg(long)]
    force: bool,
}

/// One example of a dataset file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Example {
    #[serde(default)]
    id: Option<String>,
    input: String,
    #[serde(default)]
    continuation: Option<String>,
    /// Overrides --target for this example (e.g. a per-example contrast).
    #[serde(default)]
    target: Option<String>,
}

pub(crate) fn run_dataset(args: DatasetArgs, out: &Output) -> anyhow::Result<()> {
    if let Some(path) = &args.output {
        check_output(path, args.force)?;
    }
    let file = std::fs::File::open(&args.data)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", args.data.display())))?;
    let mut requests = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| UsageError(format!("{}: {e}", args.data.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let where_ = || format!("{} line {}", args.data.display(), n + 1);
        let example: Example =
            serde_json::from_str(&line).map_err(|e| UsageError(format!("{}: {e}", where_())))?;
        let answer = match (&example.continuation, args.generate) {
            (Some(c), _) => AnswerSpec::Given(c.clone()),
            (None, true) => AnswerSpec::Generate(args.settings.max_tokens),
            (None, false) => AnswerSpec::NextToken,
        };
        let target = example.target.as_deref().unwrap_or(&args.settings.target);
        let request = args
            .settings
            .request(example.input, answer, target)
            .with_context(where_)?;
        requests.push((
            example
                .id
                .unwrap_or_else(|| (requests.len() + 1).to_string()),
            request,
        ));
    }
    if requests.is_empty() {
        return Err(UsageError(format!("{} has no examples", args.data.display())).into());
    }
    let model = args.settings.model.load()?;
    let bar = crate::progress::steps("attributing", requests.len() as u64);
    let mut sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout()),
    };
    for (id, request) in requests {
        let report = attribute(&model, &request).with_context(|| format!("example {id}"))?;
        let line = serde_json::json!({"id": id, "report": report});
        writeln!(sink, "{}", serde_json::to_string(&line)?)?;
        bar.inc(1);
    }
    sink.flush()?;
    bar.finish_and_clear();
    if !out.json
        && let Some(path) = &args.output
    {
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}
