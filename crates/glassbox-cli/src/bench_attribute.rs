//! `glassbox bench attribute`: every token-level method on a set of sentences (default: the
//! 20 sentences of 21-29 words in tests/fixtures/sentences.jsonl), explaining the model's next
//! token. Per method: wall time per sentence, model evaluations (distinct perturbed inputs),
//! batched forward passes, backward passes and tokens, and the peak resident memory while it
//! runs (so gradient methods' memory can be read against forward-only methods').

use std::path::PathBuf;

use clap::Args;
use glassbox::attribution::Perturbation;
use glassbox::attribution::attribute::{
    AnswerSpec, AttributeRequest, InputTemplate, MethodOptions, PromptFormat, TargetSpec,
    TokenMethod, UnitLevel, attribute, parse_point,
};
use glassbox::report::Aggregation;
use serde::{Deserialize, Serialize};

use crate::bench::{cpu_name, peak_rss_mib};
use crate::input::{ModelArgs, read_text};
use crate::{Output, UsageError};

const DEFAULT_SENTENCES: &str = include_str!("../../../tests/fixtures/sentences.jsonl");

#[derive(Args)]
pub(crate) struct AttributeBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A JSONL file of sentences ({"id", "input"}); default: the 20 test sentences.
    #[arg(long)]
    sentences: Option<PathBuf>,
    /// Methods, comma-separated.
    #[arg(
        long,
        default_value = "loo,xmutest,lime,kernel,permutation,saliency,gradxinput,ig,smoothgrad,layer_gradxact,layer_ig,attention,rollout"
    )]
    methods: String,
    /// Capture point of the layer methods.
    #[arg(long, default_value = "blocks.15.resid_pre")]
    at: String,
    /// At most this many sentences.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Deserialize)]
struct Sentence {
    id: String,
    input: String,
}

#[derive(Serialize)]
struct Run {
    sentence: String,
    method: String,
    words: usize,
    tokens_in_input: usize,
    seconds: f64,
    evaluations: usize,
    forward_passes: usize,
    backward_passes: usize,
    tokens: usize,
    /// Peak resident memory while the method ran (MiB, model weights included).
    peak_rss_mib: Option<f64>,
}

/// Resets the kernel's record of this process's peak resident memory (Linux), so `VmHWM`
/// afterwards is the peak of what runs in between.
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub(crate) fn run(args: AttributeBenchArgs, out: &Output) -> anyhow::Result<()> {
    let text = match &args.sentences {
        Some(path) => read_text(path)?,
        None => DEFAULT_SENTENCES.to_string(),
    };
    let mut sentences = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let s: Sentence = serde_json::from_str(line)
            .map_err(|e| UsageError(format!("sentences line {}: {e}", n + 1)))?;
        sentences.push(s);
    }
    sentences.truncate(args.limit.unwrap_or(usize::MAX));
    let options = MethodOptions {
        at: Some(parse_point(&args.at)?),
        ..MethodOptions::default()
    };
    let methods: Vec<(String, TokenMethod)> = args
        .methods
        .split(',')
        .map(|m| Ok((m.to_string(), TokenMethod::parse(m, &options)?)))
        .collect::<anyhow::Result<_>>()?;
    let model = args.model.load()?;
    let bar = crate::progress::steps("benchmarking", (sentences.len() * methods.len()) as u64);
    let mut runs = Vec::new();
    for s in &sentences {
        for (name, method) in &methods {
            let request = AttributeRequest {
                input: s.input.clone(),
                template: InputTemplate::default(),
                answer: AnswerSpec::NextToken,
                target: TargetSpec::LogProb,
                method: *method,
                unit: UnitLevel::Word,
                format: PromptFormat::Raw,
                system: None,
                perturbation: Perturbation::Delete,
                aggregate: Aggregation::Sum,
                seed: args.seed,
            };
            let measure_memory = reset_peak_rss();
            let report = attribute(&model, &request)?;
            let a = &report.attribution;
            runs.push(Run {
                sentence: s.id.clone(),
                method: name.clone(),
                words: report.levels["word"].len(),
                tokens_in_input: report.levels["token"].len(),
                seconds: a.cost.seconds,
                evaluations: a.cost.evaluations,
                forward_passes: a.cost.forward_passes,
                backward_passes: a.diagnostics["backward_passes"].as_u64().unwrap_or(0) as usize,
                tokens: a.cost.tokens,
                peak_rss_mib: if measure_memory { peak_rss_mib() } else { None },
            });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let threads = rayon::current_num_threads();
    if out.json {
        return out.print_json(&serde_json::json!({
            "model": model.info().name,
            "threads": threads,
            "cpu": cpu_name(),
            "runs": runs,
        }));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let words: Vec<f64> = runs
        .iter()
        .filter(|r| r.method == methods[0].0)
        .map(|r| r.words as f64)
        .collect();
    let tokens: Vec<f64> = runs
        .iter()
        .filter(|r| r.method == methods[0].0)
        .map(|r| r.tokens_in_input as f64)
        .collect();
    println!(
        "{}, {threads} threads on {}; {} sentences ({:.1} words, {:.1} tokens on average); target: log-prob of the predicted next token; perturbations delete words",
        model.info().name,
        cpu_name(),
        sentences.len(),
        mean(&words),
        mean(&tokens)
    );
    println!(
        "\n| method | s/sentence (mean) | s (max) | evaluations | forward passes | backward passes | tokens run | peak RSS (MiB) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, _) in &methods {
        let rs: Vec<&Run> = runs.iter().filter(|r| &r.method == name).collect();
        let col = |f: &dyn Fn(&Run) -> f64| mean(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
        let peak = rs
            .iter()
            .filter_map(|r| r.peak_rss_mib)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        println!(
            "| {name} | {:.3} | {:.3} | {:.1} | {:.1} | {:.1} | {:.0} | {} |",
            col(&|r| r.seconds),
            rs.iter().map(|r| r.seconds).fold(0.0, f64::max),
            col(&|r| r.evaluations as f64),
            col(&|r| r.forward_passes as f64),
            col(&|r| r.backward_passes as f64),
            col(&|r| r.tokens as f64),
            peak.map_or("-".into(), |p| format!("{p:.0}")),
        );
    }
    Ok(())
}
