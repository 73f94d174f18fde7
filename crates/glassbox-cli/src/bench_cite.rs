//! `glassbox bench cite`: passage attribution on the test RAG cases, measured end to end.
//!
//! For every case: each method at its default budget (wall time, coalitions, tokens, Spearman
//! correlation with exact Shapley, whether the gold passage ranks first), and for the first
//! few cases of each size the from-scratch baseline (every coalition's whole prompt in batches
//! of 16, as a plain implementation would run it), with the largest difference between its
//! log-probabilities and the engine's as a correctness check on the numbers being timed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use glassbox::attribution::cite::{
    CiteRequest, CiteTarget, DEFAULT_TEMPLATE, RagTemplate, cite, prepare,
};
use glassbox::attribution::stats::spearman;
use glassbox::attribution::{Aggregate, Coalition, Engine, Method, Perturbation};
use glassbox::report::Attribution;
use serde::{Deserialize, Serialize};

use crate::bench::cpu_name;
use crate::input::{ModelArgs, read_text};
use crate::{Output, UsageError};

/// The RAG cases written for the tests (fictional facts, one gold passage each).
const DEFAULT_CASES: &str = include_str!("../../../tests/fixtures/rag_cases.jsonl");

#[derive(Args)]
pub(crate) struct CiteBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A JSONL file of cases ({"id", "question", "passages", "answer", "gold"}); default: the
    /// 24 test cases of tests/fixtures/rag_cases.jsonl.
    #[arg(long)]
    cases: Option<PathBuf>,
    /// Methods to run, comma-separated (exact always runs: it is the reference).
    #[arg(long, default_value = "permutation,kernel,banzhaf,loo,surrogate")]
    methods: String,
    /// Cases per passage count that also run the from-scratch baseline.
    #[arg(long, default_value_t = 2)]
    scratch_cases: usize,
    /// At most this many cases per passage count (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// Seed of the sampled methods.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    question: String,
    passages: Vec<String>,
    answer: String,
    gold: usize,
}

#[derive(Serialize)]
struct MethodRun {
    method: String,
    seconds: f64,
    evaluations: usize,
    forward_passes: usize,
    tokens: usize,
    tokens_from_scratch: usize,
    spearman_with_exact: f64,
    gold_first: bool,
}

#[derive(Serialize)]
struct Scratch {
    seconds: f64,
    tokens: usize,
    /// Largest |log p(engine) − log p(from scratch)| over coalitions and answer tokens.
    max_abs_diff: f32,
}

#[derive(Serialize)]
struct CaseRun {
    id: String,
    passages: usize,
    prompt_tokens: usize,
    answer_tokens: usize,
    runs: Vec<MethodRun>,
    scratch: Option<Scratch>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    threads: usize,
    cpu: String,
    seed: u64,
    cases: Vec<CaseRun>,
}

fn request(case: &Case, method: Method, seed: u64) -> anyhow::Result<CiteRequest> {
    rag_request(&case.question, &case.passages, &case.answer, method, seed)
}

/// A benchmark case's request: the answer scored as given (sum of log-probabilities), the
/// built-in template, passages deleted.
pub(crate) fn rag_request(
    question: &str,
    passages: &[String],
    answer: &str,
    method: Method,
    seed: u64,
) -> anyhow::Result<CiteRequest> {
    Ok(CiteRequest {
        question: question.to_string(),
        passages: passages.to_vec(),
        answer: Some(answer.to_string()),
        system: None,
        template: RagTemplate::parse(DEFAULT_TEMPLATE)?,
        method,
        perturbation: Perturbation::Delete,
        target: CiteTarget::LogProb(Aggregate::Sum),
        seed,
        refine_passages: 0,
        refine_words: false,
    })
}

fn method_run(a: &Attribution, exact: &Attribution, gold: usize) -> MethodRun {
    MethodRun {
        method: a.method.name.clone(),
        seconds: a.cost.seconds,
        evaluations: a.cost.evaluations,
        forward_passes: a.cost.forward_passes,
        tokens: a.cost.tokens,
        tokens_from_scratch: a.cost.tokens_from_scratch,
        spearman_with_exact: spearman(&a.scores[0], &exact.scores[0]),
        gold_first: a.ranking(0)[0] == gold,
    }
}

/// The JSONL cases of `path` (or the built-in `default` text), one per non-empty line.
pub(crate) fn read_cases<C: serde::de::DeserializeOwned>(
    path: Option<&std::path::Path>,
    default: &str,
) -> anyhow::Result<Vec<C>> {
    let text = match path {
        Some(path) => read_text(path)?,
        None => default.to_string(),
    };
    let mut cases = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        cases.push(
            serde_json::from_str(line)
                .map_err(|e| UsageError(format!("cases line {}: {e}", n + 1)))?,
        );
    }
    Ok(cases)
}

/// Every coalition from scratch, timed, and the engine's values for the same coalitions.
fn scratch(model: &glassbox::Model, case: &Case, seed: u64) -> anyhow::Result<Scratch> {
    let prepared = prepare(model, &request(case, Method::ExactShapley, seed)?)?;
    let n = prepared.units.len();
    let all: Vec<Coalition> = (0..1u64 << n).map(|m| Coalition::from_mask(n, m)).collect();
    let mut engine = Engine::new(
        model,
        prepared.prompt,
        Perturbation::Delete,
        prepared.answer,
    )?;
    let fast = engine.readouts(&all)?;
    let start = Instant::now();
    let (slow, stats) = engine.from_scratch(&all)?;
    let seconds = start.elapsed().as_secs_f64();
    let max_abs_diff = fast
        .iter()
        .zip(&slow)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0f32, f32::max);
    Ok(Scratch {
        seconds,
        tokens: stats.tokens,
        max_abs_diff,
    })
}

pub(crate) fn run(args: CiteBenchArgs, out: &Output) -> anyhow::Result<()> {
    let mut cases: Vec<Case> = read_cases(args.cases.as_deref(), DEFAULT_CASES)?;
    if let Some(limit) = args.limit {
        let mut seen: HashMap<usize, usize> = HashMap::new();
        cases.retain(|c| {
            let k = seen.entry(c.passages.len()).or_default();
            *k += 1;
            *k <= limit
        });
    }
    if cases.is_empty() {
        return Err(UsageError("no cases to run".into()).into());
    }
    let methods = args
        .methods
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && *m != "exact")
        .map(|m| Method::parse(m, None))
        .collect::<Result<Vec<_>, _>>()?;
    let model = args.model.load()?;
    let bar = crate::progress::steps("benchmarking cite", cases.len() as u64);
    let mut runs = Vec::with_capacity(cases.len());
    let mut scratch_done: HashMap<usize, usize> = HashMap::new();
    for case in &cases {
        let exact = cite(&model, &request(case, Method::ExactShapley, args.seed)?)?;
        let e = &exact.attribution;
        let mut case_runs = vec![method_run(e, e, case.gold)];
        for &m in &methods {
            let a = cite(&model, &request(case, m, args.seed)?)?.attribution;
            case_runs.push(method_run(&a, e, case.gold));
        }
        let n = case.passages.len();
        let done = scratch_done.entry(n).or_default();
        let scratch = if *done < args.scratch_cases {
            *done += 1;
            Some(scratch(&model, case, args.seed)?)
        } else {
            None
        };
        let prepared = prepare(&model, &request(case, Method::ExactShapley, args.seed)?)?;
        let full = prepared
            .prompt
            .render(&Coalition::full(n), &Perturbation::Delete);
        let prompt_tokens = model
            .tokenizer()
            .encode(&full, prepared.prompt.bos)
            .map_err(glassbox::runtime::RuntimeError::from)?
            .ids
            .len();
        runs.push(CaseRun {
            id: case.id.clone(),
            passages: n,
            prompt_tokens,
            answer_tokens: exact.answer_tokens.len(),
            runs: case_runs,
            scratch,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = Report {
        model: model.info().name.clone(),
        threads: rayon::current_num_threads(),
        cpu: cpu_name(),
        seed: args.seed,
        cases: runs,
    };
    if out.json {
        return out.print_json(&report);
    }
    print_summary(&report);
    Ok(())
}

/// The exact-Shapley run of a case (always the first).
fn exact(c: &CaseRun) -> &MethodRun {
    &c.runs[0]
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Markdown tables: the engine against from scratch, then every method, per passage count.
fn print_summary(r: &Report) {
    println!(
        "{}, {} threads on {}, seed {}; answers scored as given (sum of log-probs), delete perturbation",
        r.model, r.threads, r.cpu, r.seed
    );
    let mut sizes: Vec<usize> = r.cases.iter().map(|c| c.passages).collect();
    sizes.sort();
    sizes.dedup();
    println!(
        "\n| passages | cases | prompt tokens (mean) | answer tokens | exact: s/case | exact: tokens | from scratch: tokens | token ratio | from scratch: s/case (measured cases) | speed-up | max abs diff |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let cs: Vec<&CaseRun> = r.cases.iter().filter(|c| c.passages == n).collect();
        let measured: Vec<&&CaseRun> = cs.iter().filter(|c| c.scratch.is_some()).collect();
        let scratch_s = mean(
            measured
                .iter()
                .map(|c| c.scratch.as_ref().expect("filtered").seconds),
        );
        let exact_s_measured = mean(measured.iter().map(|c| exact(c).seconds));
        let diff = measured
            .iter()
            .map(|c| c.scratch.as_ref().expect("filtered").max_abs_diff)
            .fold(0f32, f32::max);
        let tokens = mean(cs.iter().map(|c| exact(c).tokens as f64));
        let scratch_tokens = mean(cs.iter().map(|c| exact(c).tokens_from_scratch as f64));
        let (amin, amax) = cs.iter().fold((usize::MAX, 0), |(lo, hi), c| {
            (lo.min(c.answer_tokens), hi.max(c.answer_tokens))
        });
        println!(
            "| {n} | {} | {:.0} | {amin}-{amax} | {:.2} | {:.0} | {:.0} | {:.1}x | {} | {} | {} |",
            cs.len(),
            mean(cs.iter().map(|c| c.prompt_tokens as f64)),
            mean(cs.iter().map(|c| exact(c).seconds)),
            tokens,
            scratch_tokens,
            scratch_tokens / tokens,
            if measured.is_empty() {
                "-".to_string()
            } else {
                format!("{scratch_s:.2} ({})", measured.len())
            },
            if measured.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}x", scratch_s / exact_s_measured)
            },
            if measured.is_empty() {
                "-".to_string()
            } else {
                format!("{diff:.1e}")
            },
        );
    }
    println!(
        "\n| passages | method | s/case (mean) | coalitions | tokens | Spearman with exact (mean, min) | gold passage first |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let cs: Vec<&CaseRun> = r.cases.iter().filter(|c| c.passages == n).collect();
        for k in 0..cs[0].runs.len() {
            let runs: Vec<&MethodRun> = cs.iter().map(|c| &c.runs[k]).collect();
            let min_rho = runs
                .iter()
                .map(|m| m.spearman_with_exact)
                .fold(f64::INFINITY, f64::min);
            println!(
                "| {n} | {} | {:.2} | {:.0} | {:.0} | {:.3}, {:.3} | {}/{} |",
                runs[0].method,
                mean(runs.iter().map(|m| m.seconds)),
                mean(runs.iter().map(|m| m.evaluations as f64)),
                mean(runs.iter().map(|m| m.tokens as f64)),
                mean(runs.iter().map(|m| m.spearman_with_exact)),
                min_rho,
                runs.iter().filter(|m| m.gold_first).count(),
                runs.len()
            );
        }
    }
}
