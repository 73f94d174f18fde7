//! `glassbox self-explain` (the model explains its own prediction), `glassbox evaluate`
//! (faithfulness metrics of a saved explanation, re-scored on the model) and `glassbox compare`
//! (agreement of two saved explanations, no model needed).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use glassbox::attribution::attribute::UnitLevel;
use glassbox::attribution::attribute::gradient_sensitivity;
use glassbox::eval::MetricRequest;
use glassbox::eval::agreement::agreement;
use glassbox::eval::table::Table;
use glassbox::evaluate::{EvaluateOptions, Evaluation, default_target, evaluate};
use glassbox::report::{Aggregation, AttributeReport};
use glassbox::selfexplain::{Protocol, Task, elicit::DEFAULT_MAX_TOKENS, self_explain};

use crate::attribute::PerturbationArg;
use crate::input::{InputText, ModelArgs, ResultOutput, check_output, read_text};
use crate::{Output, UsageError};

/// The metrics `evaluate` computes unless told otherwise.
pub(crate) const DEFAULT_METRICS: &str = "comprehensiveness:eraser,sufficiency:eraser,comprehensiveness:cumulative,decision_flip,rankdel";

#[derive(Args)]
pub(crate) struct SelfExplainArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputText,
    /// A built-in task (sentiment) or a task file (prompts/tasks/*.toml).
    #[arg(long, default_value = "sentiment")]
    task: String,
    /// The task's framing the model classifies with (default: the task's default).
    #[arg(long)]
    framing: Option<String>,
    /// How the explanation is asked for: topk-predict-then-explain, topk-explain-then-predict,
    /// scores-predict-then-explain, scores-explain-then-predict, or a protocol file.
    #[arg(long, default_value = glassbox::selfexplain::task::DEFAULT_PROTOCOL)]
    protocol: String,
    /// Longest self-explanation generated.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    max_tokens: usize,
    /// --output writes a `glassbox.attribute/1` report, re-scorable by `evaluate`.
    #[command(flatten)]
    written: ResultOutput,
}

pub(crate) fn run_self_explain(args: SelfExplainArgs, out: &Output) -> anyhow::Result<()> {
    args.written.check()?;
    let input = args.input.text()?;
    let task = Task::load(&args.task)?;
    let (_, framing) = task.framing(args.framing.as_deref())?;
    let protocol = Protocol::load(&args.protocol)?;
    let model = args.model.load()?;
    let bar = crate::progress::spinner("asking the model to explain itself");
    let result = self_explain(&model, &task, framing, &protocol, &input, args.max_tokens)?;
    bar.finish_and_clear();
    if let Some(path) = &args.written.output {
        write(path, &serde_json::to_string_pretty(&result.report)?)?;
    }
    if !out.json {
        let c = &result.classification;
        let probs: Vec<String> = task
            .label_names
            .iter()
            .zip(&c.probs)
            .map(|(l, p)| format!("{l} {p:.3}"))
            .collect();
        println!(
            "prediction: {} ({})",
            task.label_names[c.label],
            probs.join(", ")
        );
        println!(
            "calibrated (content-free input = the prompt without the text): {} ({:.3})",
            task.label_names[c.calibrated_label], c.calibrated[c.calibrated_label]
        );
        if let Some(stated) = result.stated_label {
            println!(
                "label written after explaining: {}",
                task.label_names[stated]
            );
        }
        println!("protocol: {} v{}", protocol.name, protocol.version);
        println!("the model's answer: {:?}", result.parsed.raw);
        println!("parse: {}", serde_json::to_string(&result.parsed.status)?);
        if !result.parsed.unmatched.is_empty() {
            println!("not in the input: {}", result.parsed.unmatched.join(", "));
        }
        if !result.parsed.is_usable() {
            println!("(the answer could not be read as an explanation; its scores are not one)");
        }
        println!();
    }
    crate::attribute::show(
        &result.report,
        None,
        None,
        args.written.html.as_deref(),
        args.written.plain,
        out,
    )
}

#[derive(Args)]
pub(crate) struct EvaluateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Results saved by `glassbox attribute` or `glassbox self-explain` (`--output`), or
    /// JSONL files of `glassbox attribute-dataset`. With more than one result, an explainer ×
    /// metric table (mean ± standard error) follows.
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// Write the explainer × metric table as a self-contained HTML page here.
    #[arg(long)]
    table_html: Option<PathBuf>,
    /// Print the table as Markdown instead of text.
    #[arg(long)]
    markdown: bool,
    /// Comma-separated metrics (see `glassbox list metrics`), e.g.
    /// comprehensiveness:ferret,sufficiency:cumulative,decision_flip:frac,topk_drop:3.
    #[arg(long, default_value = DEFAULT_METRICS)]
    metrics: String,
    /// Units removed (default: the result's view unit); finer scores are summed into them.
    #[arg(long)]
    unit: Option<String>,
    /// How a removed unit is removed.
    #[arg(long, value_enum, default_value_t = PerturbationArg::Delete)]
    perturbation: PerturbationArg,
    /// The target evaluated, by index (default: the predicted label, or the first target).
    #[arg(long)]
    target: Option<usize>,
    /// Seed of metrics with random removals (infidelity) and of --sensitivity's noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also measure max-sensitivity (gradient-method results): re-explain at this many inputs
    /// whose embeddings move by uniform noise of --radius × their range.
    #[arg(long)]
    sensitivity: Option<usize>,
    /// Radius of --sensitivity's noise, as a fraction of the input embeddings' range.
    #[arg(long, default_value_t = glassbox::attribution::attribute::SENSITIVITY_RADIUS)]
    radius: f64,
    /// Write the evaluation JSON here.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[arg(long)]
    force: bool,
}

/// Parses a comma-separated metric list.
pub(crate) fn parse_metrics(list: &str) -> anyhow::Result<Vec<MetricRequest>> {
    let metrics = list
        .split(',')
        .filter(|m| !m.trim().is_empty())
        .map(MetricRequest::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if metrics.is_empty() {
        return Err(UsageError("--metrics names no metric".into()).into());
    }
    Ok(metrics)
}

/// The reports in a result file: one saved report, or one per line of a JSONL file of
/// `attribute-dataset` (`{"id", "report"}`).
fn read_reports(path: &Path) -> anyhow::Result<Vec<AttributeReport>> {
    let text = read_text(path)?;
    let bad = |e: &dyn std::fmt::Display| UsageError(format!("{}: {e}", path.display()));
    if path.extension().is_some_and(|x| x == "jsonl") {
        let mut reports = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(&format!("line {}: {e}", n + 1)))?;
            let report = value.get("report").unwrap_or(&value).to_string();
            reports.push(
                AttributeReport::from_json(&report)
                    .map_err(|e| bad(&format!("line {}: {e}", n + 1)))?,
            );
        }
        return Ok(reports);
    }
    let schema = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("schema").and_then(|s| s.as_str().map(str::to_string)));
    if schema.as_deref() == Some(glassbox::report::CITE_SCHEMA) {
        return Err(bad(
            &"a passage-attribution (cite) result; evaluate and compare take results \
             of `glassbox attribute` and `glassbox self-explain`",
        )
        .into());
    }
    Ok(vec![
        AttributeReport::from_json(&text).map_err(|e| bad(&e))?,
    ])
}

/// The one saved report of a file (compare takes one result per file).
fn read_report(path: &Path) -> anyhow::Result<AttributeReport> {
    let mut reports = read_reports(path)?;
    match reports.len() {
        1 => Ok(reports.remove(0)),
        n => Err(UsageError(format!(
            "{} holds {n} results; compare takes one result per file",
            path.display()
        ))
        .into()),
    }
}

pub(crate) fn run_evaluate(args: EvaluateArgs, out: &Output) -> anyhow::Result<()> {
    for path in [&args.output, &args.table_html].into_iter().flatten() {
        check_output(path, args.force)?;
    }
    let mut reports = Vec::new();
    for path in &args.results {
        reports.extend(read_reports(path)?);
    }
    if reports.is_empty() {
        return Err(UsageError("the result files hold no results".into()).into());
    }
    let options = EvaluateOptions {
        metrics: parse_metrics(&args.metrics)?,
        unit: args.unit.as_deref().map(UnitLevel::parse).transpose()?,
        perturbation: args.perturbation.perturbation(),
        target: args.target,
        seed: args.seed,
    };
    let model = args.model.load()?;
    let bar = crate::progress::steps("re-scoring", reports.len() as u64);
    let mut evaluations = Vec::new();
    for report in &reports {
        let mut evaluation = evaluate(&model, report, &options)?;
        if let Some(samples) = args.sensitivity {
            let target = args.target.unwrap_or_else(|| default_target(report));
            evaluation.sensitivity = Some(gradient_sensitivity(
                &model,
                report,
                target,
                samples,
                args.radius,
                args.seed,
            )?);
        }
        evaluations.push(evaluation);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(path) = &args.output {
        let json = match evaluations.as_slice() {
            [one] => serde_json::to_string_pretty(one)?,
            many => serde_json::to_string_pretty(many)?,
        };
        write(path, &json)?;
    }
    let table = Table::from_results(
        evaluations
            .iter()
            .flat_map(|e| e.results.iter().map(move |r| (e.explainer.as_str(), r))),
    );
    if let Some(path) = &args.table_html {
        write(path, &table.render_html())?;
    }
    if out.json {
        return match evaluations.as_slice() {
            [one] => out.print_json(one),
            many => out.print_json(&many),
        };
    }
    if let [one] = evaluations.as_slice() {
        print!("{}", render_evaluation(one));
    } else if args.markdown {
        print!("{}", table.render_markdown());
    } else {
        print!("{}", table.render_text());
    }
    Ok(())
}

/// One line per metric: value, direction, what it cost.
fn render_evaluation(e: &Evaluation) -> String {
    let mut s = format!(
        "{} on {:?}\n{} {} units, removed by {}; target {}\n\n",
        e.explainer, e.input, e.n_units, e.unit, e.perturbation, e.target
    );
    for r in &e.results {
        let value = match (r.value, &r.undefined) {
            (Some(v), _) => format!("{v:>9.4}"),
            (None, Some(why)) => format!("undefined ({why})"),
            (None, None) => "undefined".into(),
        };
        s.push_str(&format!(
            "{:<32} {} {}  ({} evaluations)\n",
            r.spec,
            r.direction.arrow(),
            value,
            r.evaluations
        ));
    }
    if let Some(sens) = &e.sensitivity {
        s.push_str(&format!(
            "{:<32} ↓ {:>9.4}  ({} re-explanations, noise ±{:.4} = {} × the embeddings' range)\n",
            "sensitivity_max", sens.value, sens.samples, sens.epsilon, sens.radius
        ));
    }
    s.push_str(&format!(
        "\n{} distinct inputs in {} batched passes, {} tokens ({} from scratch), {:.2} s\n",
        e.cost.evaluations,
        e.cost.forward_passes,
        e.cost.tokens,
        e.cost.tokens_from_scratch,
        e.cost.seconds
    ));
    s
}

#[derive(Args)]
pub(crate) struct CompareArgs {
    /// Two results of the same input (`glassbox attribute`/`self-explain` `--output`, or any
    /// file in the `glassbox.attribute/1` schema).
    a: PathBuf,
    b: PathBuf,
    /// Compare per token, word or sentence (default: word); finer scores are summed.
    #[arg(long, default_value = "word")]
    unit: String,
    /// The target compared, by index (default 0 in each).
    #[arg(long, default_value_t = 0)]
    target: usize,
    /// Top-k size of the set-based measures (default: 20% of the units, at least 1).
    #[arg(long)]
    k: Option<usize>,
}

pub(crate) fn run_compare(args: CompareArgs, out: &Output) -> anyhow::Result<()> {
    let (a, b) = (read_report(&args.a)?, read_report(&args.b)?);
    if a.input != b.input {
        return Err(UsageError("the two results explain different inputs".into()).into());
    }
    let regroup = |r: &AttributeReport| {
        r.regrouped(&args.unit, Aggregation::Sum)
            .map_err(|e| UsageError(e.to_string()))
    };
    let (ra, rb) = (regroup(&a)?, regroup(&b)?);
    if ra.units != rb.units {
        return Err(UsageError(format!(
            "the results cut the input into different {} units (different tokenizers?)",
            args.unit
        ))
        .into());
    }
    for (r, path) in [(&ra, &args.a), (&rb, &args.b)] {
        if args.target >= r.targets.len() {
            return Err(UsageError(format!(
                "{} has {} targets; --target {} does not exist",
                path.display(),
                r.targets.len(),
                args.target
            ))
            .into());
        }
    }
    let result = agreement(&ra.scores[args.target], &rb.scores[args.target], args.k)?;
    if out.json {
        return out.print_json(&serde_json::json!({
            "a": a.attribution.method.name,
            "b": b.attribution.method.name,
            "unit": args.unit,
            "target": args.target,
            "agreement": result,
        }));
    }
    println!(
        "{} vs {} on {} {} units (k = {})",
        a.attribution.method.name, b.attribution.method.name, result.n_units, args.unit, result.k
    );
    let opt = |v: Option<f64>| v.map_or("undefined".to_string(), |v| format!("{v:.3}"));
    for (name, value) in [
        (
            "feature agreement@k",
            format!("{:.3}", result.feature_agreement),
        ),
        ("rank agreement@k", format!("{:.3}", result.rank_agreement)),
        ("sign agreement@k", format!("{:.3}", result.sign_agreement)),
        (
            "signed-rank agreement@k",
            format!("{:.3}", result.signed_rank_agreement),
        ),
        ("IOU@k", format!("{:.3}", result.iou)),
        ("Spearman", opt(result.spearman)),
        ("Kendall tau-b", opt(result.kendall_tau_b)),
        (
            "pairwise rank agreement",
            opt(result.pairwise_rank_agreement),
        ),
        ("Pearson", opt(result.pearson)),
    ] {
        println!("{name:<26} {value}");
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
