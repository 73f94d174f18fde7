//! `glassbox bench`: the runtime's speed on this machine, measured the way it is used.
//!
//! Prefill (batch 1 and batched), teacher-forced scoring, and KV-cached decoding on prompts of
//! a fixed token length, each repeated and reported as the median, plus peak resident memory.
//! The thread count and CPU are recorded with the numbers, since both change them.

use std::time::Instant;

use clap::Args;
use glassbox::{Capture, LogitsAt, Model, Row, ScoreRequest};
use serde::Serialize;

use crate::input::ModelArgs;
use crate::progress::steps;
use crate::{Output, UsageError};

/// `glassbox bench` (the runtime) or `glassbox bench cite`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchCommand {
    #[command(subcommand)]
    what: Option<BenchWhat>,
    #[command(flatten)]
    runtime: BenchArgs,
}

#[derive(clap::Subcommand)]
enum BenchWhat {
    /// Passage attribution on the test RAG cases: every method, and the engine against
    /// evaluating every coalition from scratch.
    Cite(crate::bench_cite::CiteBenchArgs),
    /// Passage attribution at RAG scale on long cases (20-40 passages, 2-5k tokens): every
    /// estimate (passage caches, groups first, proxy, one pass) against exact leave-one-out
    /// and permutation Shapley, next to the time of generating the answer.
    CiteLong(crate::bench_cite_long::CiteLongBenchArgs),
    /// Token-level attribution on 20 sentences: every method's time, evaluations and passes,
    /// and integrated gradients' peak memory.
    Attribute(crate::bench_attribute::AttributeBenchArgs),
    /// The self-explanation study on VADER's polar movie snippets: accuracy per framing, parse
    /// success per protocol, faithfulness, plausibility and agreement of self-explanations and
    /// attribution methods.
    SelfExplain(crate::bench_selfexplain::SelfExplainBenchArgs),
    /// Token activation maps on the known-content shapes model: Obj-IoU, Func-IoU, pointing
    /// and interference of TAM and its baselines on held-out scenes, token pruning, cost.
    Tam(crate::bench_tam::TamBenchArgs),
}

impl BenchCommand {
    pub(crate) fn run(self, out: &Output) -> anyhow::Result<()> {
        match self.what {
            Some(BenchWhat::Cite(args)) => crate::bench_cite::run(args, out),
            Some(BenchWhat::CiteLong(args)) => crate::bench_cite_long::run(args, out),
            Some(BenchWhat::Attribute(args)) => crate::bench_attribute::run(args, out),
            Some(BenchWhat::SelfExplain(args)) => crate::bench_selfexplain::run(args, out),
            Some(BenchWhat::Tam(args)) => crate::bench_tam::run(args, out),
            None => run(self.runtime, out),
        }
    }
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 200)]
    prompt_tokens: usize,
    /// Rows of the batched measurements.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Scored continuation length (the tail of each prompt).
    #[arg(long, default_value_t = 24)]
    continuation_tokens: usize,
    /// Tokens decoded one at a time after a prompt.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Timed repetitions of each measurement (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

/// Sentences the benchmark prompts are made of; rows start at different sentences so that no
/// two rows are the same.
const TEXT: &[&str] = &[
    "The committee met on a rainy Tuesday to review the harbour expansion plans.",
    "Engineers reported that the northern breakwater had settled by four centimetres.",
    "A local bakery supplied pastries, which were gone before the second agenda item.",
    "The treasurer warned that steel prices had risen sharply since the spring.",
    "Several residents asked whether the ferry timetable would change during construction.",
    "An ecologist presented a survey of seabirds nesting near the old lighthouse.",
    "The mayor proposed a public exhibition of the designs in the town library.",
    "Questions about noise at night were referred to the transport subcommittee.",
    "By late afternoon the members agreed to commission an independent cost review.",
    "The minutes were signed, and the next meeting was set for the first week of May.",
];

#[derive(Serialize)]
struct Measurement {
    name: String,
    rows: usize,
    tokens_per_row: usize,
    median_seconds: f64,
    /// Fastest and slowest repetition: on a shared 2-core machine the spread is real.
    min_seconds: f64,
    max_seconds: f64,
    tokens_per_second: f64,
}

/// Wall times of repetitions, sorted.
struct Timing(Vec<f64>);

impl Timing {
    fn median(&self) -> f64 {
        self.0[self.0.len() / 2]
    }
}

#[derive(Serialize)]
struct Report {
    model: String,
    weights: String,
    threads: usize,
    cpu: String,
    prompt_tokens: usize,
    repeat: usize,
    measurements: Vec<Measurement>,
    peak_rss_mib: Option<f64>,
}

fn prompts(model: &Model, rows: usize, len: usize) -> anyhow::Result<Vec<Vec<u32>>> {
    (0..rows)
        .map(|r| {
            let mut text = String::new();
            let mut ids = Vec::new();
            let mut i = r;
            while ids.len() < len {
                text.push_str(TEXT[i % TEXT.len()]);
                text.push(' ');
                i += 1;
                ids = model
                    .tokenizer()
                    .encode(&text, false)
                    .map_err(glassbox::runtime::RuntimeError::from)?
                    .ids;
            }
            ids.truncate(len);
            Ok(ids)
        })
        .collect()
}

/// Wall times of `repeat` runs of `f` after one warm-up run.
fn time(repeat: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Timing> {
    f()?;
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(Timing(times))
}

/// Peak resident set size of this process (Linux `VmHWM`), in MiB.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub(crate) fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn run(args: BenchArgs, out: &Output) -> anyhow::Result<()> {
    if args.prompt_tokens <= args.continuation_tokens || args.batch == 0 || args.repeat == 0 {
        return Err(UsageError(
            "need prompt-tokens > continuation-tokens, and batch and repeat of at least 1".into(),
        )
        .into());
    }
    let model = args.model.load()?;
    let len = args.prompt_tokens;
    let rows = prompts(&model, args.batch, len)?;
    let bar = steps("benchmarking", 5);
    let mut measurements = Vec::new();
    let mut record = |name: &str, rows: usize, tokens: usize, t: Timing| {
        measurements.push(Measurement {
            name: name.to_string(),
            rows,
            tokens_per_row: tokens,
            median_seconds: t.median(),
            min_seconds: t.0[0],
            max_seconds: t.0[t.0.len() - 1],
            tokens_per_second: (rows * tokens) as f64 / t.median(),
        });
    };

    let prefill = |batch: &[Vec<u32>]| -> anyhow::Result<()> {
        let rows = batch
            .iter()
            .map(|ids| Row::tokens(ids.clone()).with_logits(LogitsAt::Last))
            .collect();
        model.forward(rows, &Capture::none())?;
        Ok(())
    };
    let t = time(args.repeat, || prefill(&rows[..1]))?;
    record("prefill, batch 1", 1, len, t);
    bar.inc(1);
    let t = time(args.repeat, || prefill(&rows))?;
    record(
        &format!("prefill, batch {}", args.batch),
        args.batch,
        len,
        t,
    );
    bar.inc(1);

    let cont = args.continuation_tokens;
    let score = |batch: &[Vec<u32>]| -> anyhow::Result<()> {
        let requests = batch
            .iter()
            .map(|ids| ScoreRequest {
                context: ids[..len - cont].to_vec(),
                continuation: ids[len - cont..].to_vec(),
                past: None,
            })
            .collect();
        model.score_batch(requests)?;
        Ok(())
    };
    let t = time(args.repeat, || score(&rows[..1]))?;
    record(
        &format!("teacher-forced scoring ({cont}-token answer), batch 1"),
        1,
        len,
        t,
    );
    bar.inc(1);
    let t = time(args.repeat, || score(&rows))?;
    record(
        &format!(
            "teacher-forced scoring ({cont}-token answer), batch {}",
            args.batch
        ),
        args.batch,
        len,
        t,
    );
    bar.inc(1);

    // Decoding: one token at a time after the prompt, through the KV cache; only the decode
    // steps are timed.
    let steps_n = args.decode_tokens;
    let mut decode_times = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let first = model
            .forward(vec![Row::tokens(rows[0].clone())], &Capture::kv())?
            .remove(0);
        let mut cache = first.kv.expect("asked for the cache");
        let mut next = glassbox::runtime::argmax(first.logits.expect("last logits").at(0));
        let start = Instant::now();
        for _ in 0..steps_n {
            let out = model
                .forward(
                    vec![Row::tokens(vec![next]).with_past(cache)],
                    &Capture::kv(),
                )?
                .remove(0);
            next = glassbox::runtime::argmax(out.logits.expect("last logits").at(0));
            cache = out.kv.expect("asked for the cache");
        }
        decode_times.push(start.elapsed().as_secs_f64());
    }
    decode_times.sort_by(f64::total_cmp);
    let t = Timing(decode_times);
    record(&format!("decode after {len} tokens"), 1, steps_n, t);
    bar.inc(1);
    bar.finish_and_clear();

    let report = Report {
        model: model.info().name.clone(),
        weights: format!("{:?}", model.info().weights).to_lowercase(),
        threads: rayon::current_num_threads(),
        cpu: cpu_name(),
        prompt_tokens: len,
        repeat: args.repeat,
        measurements,
        peak_rss_mib: peak_rss_mib(),
    };
    if out.json {
        return out.print_json(&report);
    }
    println!(
        "{} ({} weights), {} threads on {}, prompts of {} tokens, median of {}",
        report.model, report.weights, report.threads, report.cpu, len, report.repeat
    );
    println!("| measurement | rows | tokens/row | median s (min-max) | tokens/s (median) |");
    println!("|---|---:|---:|---:|---:|");
    for m in &report.measurements {
        println!(
            "| {} | {} | {} | {:.4} ({:.4}-{:.4}) | {:.1} |",
            m.name,
            m.rows,
            m.tokens_per_row,
            m.median_seconds,
            m.min_seconds,
            m.max_seconds,
            m.tokens_per_second
        );
    }
    if let Some(rss) = report.peak_rss_mib {
        println!("peak RSS: {rss:.0} MiB");
    }
    Ok(())
}
