//! `glassbox bench cite-long`: passage attribution at RAG scale (20-40 passages, 2-5k
//! tokens), every estimate against the exact computation.
//!
//! Per case: the time to generate the answer (the budget to beat), exact leave-one-out (the
//! ground truth), permutation Shapley with standard errors on the first few cases (the second
//! ground truth), then each strategy's time, tokens and agreement with both: Spearman, top-1
//! and top-3 agreement, and outlier-recovery average precision. Results are written per case
//! as they come (`--output` gets the whole report at the end).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use glassbox::Model;
use glassbox::attribution::cite::{CiteRequest, cite, prepare};
use glassbox::attribution::{Method, Perturbation};
use glassbox::rag_scale::fidelity::{
    RESOLVED_Z, average_precision, outliers, ranking, resolved, spearman_on, spearman_or_none,
    top_k_agreement,
};
use glassbox::rag_scale::{
    DEFAULT_ATTENTION_LAYERS, ExpandRule, Hierarchy, OnePass, PassageEncoding, ScaleOptions,
    Strategy, cite_at_scale,
};
use glassbox::report::Attribution;
use serde::{Deserialize, Serialize};

use crate::bench::cpu_name;
use crate::bench_cite::{rag_request, read_cases};
use crate::input::{ModelArgs, check_output};
use crate::{Output, UsageError};

/// The long RAG cases (fictional facts; single-passage, near-duplicate and two-passage
/// answers), made by tools/fixtures/gen_rag_long.py.
const DEFAULT_CASES: &str = include_str!("../../../tests/fixtures/rag_long.jsonl");

/// Every strategy the benchmark knows, in the order it runs them.
const STRATEGIES: &[&str] = &[
    "hier",
    "passage-kv",
    "context-kv",
    "hier+passage-kv",
    "hier+context-kv",
    "attention",
    "gradxinput",
    "proxy+context-kv",
    "proxy+hier+context-kv",
    "passage-kv:shapley",
    "context-kv:shapley",
];

#[derive(Args)]
pub(crate) struct CiteLongBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A JSONL file of cases ({"id", "kind", "question", "passages", "answer", "gold": [..]});
    /// default: tests/fixtures/rag_long.jsonl.
    #[arg(long)]
    cases: Option<PathBuf>,
    /// At most this many cases (in file order).
    #[arg(long)]
    limit: Option<usize>,
    /// Strategies, comma-separated (see the list in `--help` of the source: hier,
    /// passage-kv, context-kv, hier+passage-kv, hier+context-kv, attention, gradxinput,
    /// proxy+context-kv, proxy+hier+context-kv, passage-kv:shapley, context-kv:shapley;
    /// context-kv+refreshN recomputes N tokens after the gap; exact-reordered is exact LOO
    /// with the passages shuffled by --seed, a reference rather than an estimate).
    #[arg(
        long,
        default_value = "hier,passage-kv,context-kv,hier+passage-kv,hier+context-kv,attention,gradxinput,passage-kv:shapley,context-kv:shapley"
    )]
    strategies: String,
    /// The proxy model of the proxy+ strategies.
    #[arg(long)]
    proxy: Option<String>,
    /// Group size of the hierarchical strategies.
    #[arg(long, default_value_t = 4)]
    group_size: usize,
    /// Expansion share of the hierarchical strategies.
    #[arg(long, default_value_t = 0.25)]
    expand_share: f64,
    /// Cases (the first ones) that also get permutation Shapley as ground truth.
    #[arg(long, default_value_t = 3)]
    shapley_cases: usize,
    /// Permutations of the Shapley runs (ground truth and estimates).
    #[arg(long, default_value_t = 8)]
    permutations: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Take the ground truth (exact leave-one-out, and Shapley where it ran) from this earlier
    /// report of the same model instead of recomputing it; the generation is timed again here.
    /// Repeatable: each case's leave-one-out comes from the first report that has the case and
    /// its Shapley from the first that has Shapley for it, so runs that each added Shapley to
    /// some cases combine. Their times are the earlier machines'.
    #[arg(long)]
    truth: Vec<PathBuf>,
    /// Write the whole report as JSON here.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[arg(long)]
    force: bool,
    /// Print the summary tables of this earlier report (`--output` of a run) and stop:
    /// nothing is loaded or run.
    #[arg(long, conflicts_with_all = ["output", "truth", "cases", "limit"])]
    summarize: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    #[serde(default)]
    kind: Option<String>,
    question: String,
    passages: Vec<String>,
    answer: String,
    gold: Vec<usize>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Truth {
    seconds: f64,
    tokens: usize,
    tokens_from_scratch: usize,
    scores: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    std_errors: Option<Vec<f64>>,
}

#[derive(Serialize, Deserialize)]
struct StrategyRun {
    strategy: String,
    seconds: f64,
    /// Of which caching the passages (for context-kv, the prompt's own prefill, which the
    /// answer's generation computes anyway and `glassbox cite` shares when it generates).
    cache_seconds: f64,
    tokens: usize,
    evaluations: usize,
    speedup_over_exact_loo: f64,
    time_over_generation: f64,
    spearman_loo: Option<f64>,
    top1_loo: bool,
    top3_loo: f64,
    ap_loo: f64,
    spearman_shapley: Option<f64>,
    top1_shapley: Option<bool>,
    gold_first: bool,
    /// The estimate's whole-answer scores, one per passage.
    scores: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
struct CaseRun {
    id: String,
    kind: Option<String>,
    passages: usize,
    prompt_tokens: usize,
    answer_tokens: usize,
    generation_seconds: f64,
    generated_tokens: usize,
    exact_loo: Truth,
    #[serde(skip_serializing_if = "Option::is_none")]
    shapley: Option<Truth>,
    /// Shapley ran in this run (its time is this machine's) even though the leave-one-out
    /// came from the reports named by `truth_from`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    shapley_computed_here: bool,
    /// Outliers of exact leave-one-out (the relevant set of the AP).
    outliers: Vec<usize>,
    gold: Vec<usize>,
    runs: Vec<StrategyRun>,
}

/// What an earlier report gives as ground truth.
#[derive(Deserialize)]
struct EarlierReport {
    model: String,
    cases: Vec<EarlierCase>,
}

#[derive(Deserialize)]
struct EarlierCase {
    id: String,
    passages: usize,
    exact_loo: Truth,
    #[serde(default)]
    shapley: Option<Truth>,
}

/// The ground truth of `cases` from earlier reports of `model`: each case's leave-one-out from
/// the first report that has it, its Shapley from the first that has Shapley for it.
fn read_truth(
    paths: &[PathBuf],
    model: &str,
    cases: &[Case],
) -> anyhow::Result<Vec<(Truth, Option<Truth>)>> {
    let mut reports = Vec::with_capacity(paths.len());
    for path in paths {
        let text = crate::input::read_text(path)?;
        let earlier: EarlierReport = serde_json::from_str(&text).map_err(|e| {
            UsageError(format!("{} is not a cite-long report: {e}", path.display()))
        })?;
        if earlier.model != model {
            return Err(UsageError(format!(
                "{} was made with {}, not {model}",
                path.display(),
                earlier.model
            ))
            .into());
        }
        reports.push(earlier);
    }
    cases
        .iter()
        .map(|case| {
            let mut found = reports.iter().flat_map(|r| {
                r.cases
                    .iter()
                    .filter(|c| c.id == case.id && c.passages == case.passages.len())
            });
            let loo = found.clone().next().ok_or_else(|| {
                UsageError(format!(
                    "{} {} no case {} with {} passages",
                    paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if paths.len() == 1 { "has" } else { "have" },
                    case.id,
                    case.passages.len()
                ))
            })?;
            let shapley = found.find_map(|c| c.shapley.clone());
            Ok((loo.exact_loo.clone(), shapley))
        })
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Report {
    model: String,
    proxy: Option<String>,
    threads: usize,
    cpu: String,
    seed: u64,
    group_size: usize,
    expand_share: f64,
    permutations: usize,
    /// The earlier reports the ground truth came from (their times are those runs').
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    truth_from: Vec<PathBuf>,
    cases: Vec<CaseRun>,
}

/// `truth_from` as reports before repeatable `--truth` wrote it (one path) or as now (a list).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Paths {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match Paths::deserialize(d)? {
        Paths::One(p) => vec![p],
        Paths::Many(ps) => ps,
    })
}

/// What [`print_summary`] relies on and a report written by this bench always has: every case
/// has the same strategies in the same order, and one score per passage everywhere.
fn consistent(r: &Report) -> Result<(), String> {
    let names = |c: &CaseRun| {
        c.runs
            .iter()
            .map(|r| r.strategy.clone())
            .collect::<Vec<_>>()
    };
    let first = r.cases.first().ok_or("the report has no cases")?;
    for c in &r.cases {
        if names(c) != names(first) {
            return Err(format!(
                "case {} ran other strategies than case {}",
                c.id, first.id
            ));
        }
        let lengths = std::iter::once(c.exact_loo.scores.len())
            .chain(c.shapley.iter().map(|t| t.scores.len()))
            .chain(
                c.shapley
                    .iter()
                    .filter_map(|t| t.std_errors.as_ref().map(Vec::len)),
            )
            .chain(c.runs.iter().map(|r| r.scores.len()));
        if c.passages == 0 || lengths.into_iter().any(|n| n != c.passages) {
            return Err(format!(
                "case {} does not have one score per passage ({} passages)",
                c.id, c.passages
            ));
        }
    }
    Ok(())
}

fn request(case: &Case, method: Method, seed: u64) -> anyhow::Result<CiteRequest> {
    rag_request(&case.question, &case.passages, &case.answer, method, seed)
}

fn truth(a: &Attribution) -> Truth {
    Truth {
        seconds: a.cost.seconds,
        tokens: a.cost.tokens,
        tokens_from_scratch: a.cost.tokens_from_scratch,
        scores: a.scores[0].clone(),
        std_errors: a.std_errors.as_ref().map(|e| e[0].clone()),
    }
}

/// Not an estimate: exact leave-one-out with the passages in another order (seeded), its
/// scores mapped back to the passages. Retrieval order is arbitrary, and a passage's
/// leave-one-out depends on where it sits; how much two orders' exact rankings agree is a
/// ceiling on what agreement with one order's exact ranking can mean.
const REORDERED: &str = "exact-reordered";

/// [`REORDERED`]'s scores (in the case's passage order), cost, and no caching time.
fn reordered_loo(
    model: &Model,
    case: &Case,
    seed: u64,
) -> anyhow::Result<(Vec<f64>, glassbox::report::Cost, f64)> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..case.passages.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let passages: Vec<String> = order.iter().map(|&i| case.passages[i].clone()).collect();
    let shuffled = rag_request(
        &case.question,
        &passages,
        &case.answer,
        Method::LeaveOneOut,
        seed,
    )?;
    let a = cite(model, &shuffled)?.attribution;
    let mut scores = vec![0.0; order.len()];
    for (at, &passage) in order.iter().enumerate() {
        scores[passage] = a.scores[0][at];
    }
    Ok((scores, a.cost, 0.0))
}

/// Whether every part of a strategy's name is one the benchmark knows (checked before the
/// models load; [`configure`] checks how they combine).
fn known(name: &str) -> bool {
    let body = name.strip_suffix(":shapley").unwrap_or(name);
    body.split('+').all(|part| {
        STRATEGIES.contains(&part)
            || ["proxy", "hier", REORDERED].contains(&part)
            || part
                .strip_prefix("refresh")
                .is_some_and(|n| n.parse::<usize>().is_ok())
    })
}

/// A strategy's name made concrete: its options and its method.
fn configure<'p>(
    name: &str,
    args: &CiteLongBenchArgs,
    proxy: Option<&'p Model>,
) -> anyhow::Result<(ScaleOptions<'p>, Method)> {
    let (body, method) = match name.split_once(':') {
        Some((b, "shapley")) => (
            b,
            Method::PermutationShapley {
                permutations: args.permutations,
            },
        ),
        Some(_) => return Err(UsageError(format!("unknown strategy {name}")).into()),
        None => (name, Method::LeaveOneOut),
    };
    let mut options = ScaleOptions {
        strategy: Strategy::Exact,
        hierarchy: None,
        proxy: None,
        check: 0,
    };
    for part in body.split('+') {
        match part {
            "proxy" => {
                options.proxy =
                    Some(proxy.ok_or_else(|| {
                        UsageError(format!("strategy {name} needs --proxy MODEL"))
                    })?)
            }
            "hier" => {
                options.hierarchy = Some(Hierarchy {
                    group_size: NonZeroUsize::new(args.group_size)
                        .ok_or_else(|| UsageError("--group-size must be at least 1".into()))?,
                    rule: ExpandRule::new(args.expand_share, None)?,
                })
            }
            "passage-kv" => options.strategy = Strategy::Cached(PassageEncoding::Independent),
            "context-kv" => {
                options.strategy = Strategy::Cached(PassageEncoding::InContext { refresh: 0 })
            }
            refresh if refresh.starts_with("refresh") => {
                let tokens: usize = refresh["refresh".len()..].parse().map_err(|_| {
                    UsageError(format!(
                        "{name}: refresh takes a token count, e.g. refresh64"
                    ))
                })?;
                match &mut options.strategy {
                    Strategy::Cached(PassageEncoding::InContext { refresh }) => *refresh = tokens,
                    _ => {
                        return Err(UsageError(format!(
                            "{name}: refresh follows context-kv (e.g. context-kv+refresh64)"
                        ))
                        .into());
                    }
                }
            }
            "attention" => {
                options.strategy = Strategy::OnePass(OnePass::Attention {
                    layers: DEFAULT_ATTENTION_LAYERS,
                })
            }
            "gradxinput" => options.strategy = Strategy::OnePass(OnePass::GradientTimesInput),
            _ => {
                return Err(UsageError(format!(
                    "unknown strategy {name}; known: {}",
                    STRATEGIES.join(", ")
                ))
                .into());
            }
        }
    }
    Ok((options, method))
}

pub(crate) fn run(args: CiteLongBenchArgs, out: &Output) -> anyhow::Result<()> {
    if let Some(path) = &args.summarize {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read the report {}: {e}", path.display())))?;
        let report: Report = serde_json::from_str(&text).map_err(|e| {
            UsageError(format!(
                "{} cannot be summarized: not a `glassbox bench cite-long` report, or one from an older glassbox ({e})",
                path.display()
            ))
        })?;
        consistent(&report)
            .map_err(|e| UsageError(format!("{} cannot be summarized: {e}", path.display())))?;
        print_summary(&report);
        return Ok(());
    }
    if let Some(path) = &args.output {
        check_output(path, args.force)?;
    }
    let mut cases: Vec<Case> = read_cases(args.cases.as_deref(), DEFAULT_CASES)?;
    cases.truncate(args.limit.unwrap_or(usize::MAX));
    if cases.is_empty() {
        return Err(UsageError("no cases to run".into()).into());
    }
    let names: Vec<String> = args
        .strategies
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for name in &names {
        if !known(name) {
            return Err(UsageError(format!(
                "unknown strategy {name}; known: {}",
                STRATEGIES.join(", ")
            ))
            .into());
        }
    }
    let model = args.model.load()?;
    let proxy = match &args.proxy {
        Some(name) => Some(
            ModelArgs {
                model: name.clone(),
                ..args.model.clone()
            }
            .load()?,
        ),
        None => None,
    };
    for name in names.iter().filter(|n| *n != REORDERED) {
        configure(name, &args, proxy.as_ref())?;
    }
    let earlier = match args.truth.as_slice() {
        [] => None,
        paths => Some(read_truth(paths, &model.info().name, &cases)?),
    };
    let mut report = Report {
        model: model.info().name.clone(),
        proxy: proxy.as_ref().map(|p| p.info().name.clone()),
        threads: rayon::current_num_threads(),
        cpu: cpu_name(),
        seed: args.seed,
        group_size: args.group_size,
        expand_share: args.expand_share,
        permutations: args.permutations,
        truth_from: args.truth.clone(),
        cases: Vec::with_capacity(cases.len()),
    };
    for (k, case) in cases.iter().enumerate() {
        // The budget to beat: generating the answer greedily from the full prompt.
        let mut generate = request(case, Method::LeaveOneOut, args.seed)?;
        generate.answer = None;
        let started = Instant::now();
        let generated = prepare(&model, &generate)?;
        let generation_seconds = started.elapsed().as_secs_f64();
        let (loo, earlier_shapley) = match &earlier {
            Some(truths) => truths[k].clone(),
            None => (
                truth(&cite(&model, &request(case, Method::LeaveOneOut, args.seed)?)?.attribution),
                None,
            ),
        };
        // Shapley is the costliest truth, so an earlier report's is kept, and the cases it
        // lacks there can be added by a later run (`--truth` with more `--shapley-cases`).
        let compute_shapley = earlier_shapley.is_none() && k < args.shapley_cases;
        let shapley = if compute_shapley {
            let m = Method::PermutationShapley {
                permutations: args.permutations,
            };
            Some(truth(
                &cite(&model, &request(case, m, args.seed)?)?.attribution,
            ))
        } else {
            earlier_shapley
        };
        let relevant = outliers(&loo.scores);
        let mut strategy_runs = Vec::new();
        for name in &names {
            let (s, cost, cache_seconds) = if name == REORDERED {
                reordered_loo(&model, case, args.seed)?
            } else {
                let (options, method) = configure(name, &args, proxy.as_ref())?;
                let report = cite_at_scale(&model, &request(case, method, args.seed)?, &options)?;
                let cache_seconds = report
                    .approximation
                    .iter()
                    .flat_map(|x| x.steps.iter())
                    .find_map(|step| step.params["cache_seconds"].as_f64())
                    .unwrap_or(0.0);
                let a = report.attribution;
                (a.scores[0].clone(), a.cost, cache_seconds)
            };
            strategy_runs.push(StrategyRun {
                strategy: name.clone(),
                seconds: cost.seconds,
                cache_seconds,
                tokens: cost.tokens,
                evaluations: cost.evaluations,
                speedup_over_exact_loo: loo.seconds / cost.seconds,
                time_over_generation: cost.seconds / generation_seconds,
                spearman_loo: spearman_or_none(&s, &loo.scores),
                top1_loo: top_k_agreement(&s, &loo.scores, 1) == 1.0,
                top3_loo: top_k_agreement(&s, &loo.scores, 3),
                ap_loo: average_precision(&s, &relevant),
                spearman_shapley: shapley
                    .as_ref()
                    .and_then(|t| spearman_or_none(&s, &t.scores)),
                top1_shapley: shapley
                    .as_ref()
                    .map(|t| top_k_agreement(&s, &t.scores, 1) == 1.0),
                gold_first: case.gold.contains(&ranking(&s)[0]),
                scores: s,
            });
        }
        let prepared = prepare(&model, &request(case, Method::LeaveOneOut, args.seed)?)?;
        let full = prepared.prompt.render(
            &glassbox::attribution::Coalition::full(case.passages.len()),
            &Perturbation::Delete,
        );
        let prompt_tokens = model
            .tokenizer()
            .encode(&full, prepared.prompt.bos)
            .map_err(glassbox::runtime::RuntimeError::from)?
            .ids
            .len();
        let run = CaseRun {
            id: case.id.clone(),
            kind: case.kind.clone(),
            passages: case.passages.len(),
            prompt_tokens,
            answer_tokens: prepared.answer.len(),
            generation_seconds,
            generated_tokens: generated.answer.len(),
            exact_loo: loo,
            shapley,
            shapley_computed_here: earlier.is_some() && compute_shapley,
            outliers: relevant,
            gold: case.gold.clone(),
            runs: strategy_runs,
        };
        if !out.json {
            eprintln!("{}", case_line(&run));
        }
        report.cases.push(run);
        // Written after every case: a run of hours that is stopped keeps what it finished.
        if let Some(path) = &args.output {
            std::fs::write(path, serde_json::to_string_pretty(&report)?)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        }
    }
    if out.json {
        return out.print_json(&report);
    }
    print_summary(&report);
    Ok(())
}

/// One line per finished case (progress, and numbers if the run is cut short).
fn case_line(c: &CaseRun) -> String {
    let runs: Vec<String> = c
        .runs
        .iter()
        .map(|r| {
            format!(
                "{} {:.1}s rho={} top1={}",
                r.strategy,
                r.seconds,
                r.spearman_loo.map_or("-".into(), |x| format!("{x:.2}")),
                u8::from(r.top1_loo)
            )
        })
        .collect();
    let shapley = match &c.shapley {
        Some(t) if c.shapley_computed_here => format!(", Shapley {:.1}s (this run)", t.seconds),
        Some(t) => format!(", Shapley {:.1}s", t.seconds),
        None => String::new(),
    };
    format!(
        "{} ({} passages, {} tokens): generate {:.1}s, exact LOO {:.1}s{shapley}; {}",
        c.id,
        c.passages,
        c.prompt_tokens,
        c.generation_seconds,
        c.exact_loo.seconds,
        runs.join("; ")
    )
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Markdown tables: the ground truth's cost, then every strategy against it.
fn print_summary(r: &Report) {
    let cs = &r.cases;
    println!(
        "{} ({} threads, {}), seed {}; {} cases; groups of {} expanded at share {}; Shapley: {} permutations",
        r.model,
        r.threads,
        r.cpu,
        r.seed,
        cs.len(),
        r.group_size,
        r.expand_share,
        r.permutations
    );
    if !r.truth_from.is_empty() {
        let from: Vec<_> = r
            .truth_from
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        println!(
            "Ground truth from {}: exact LOO and Shapley times, and the speed-ups over exact LOO, are those runs' (Shapley marked \"this run\" excepted).",
            from.join(", ")
        );
    }
    println!(
        "\n| passages | prompt tokens | generate the answer: s | exact LOO: s | exact LOO: tokens (from scratch) | exact LOO / generation |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {:.1} | {:.0} | {:.2} | {:.1} | {:.0} ({:.0}) | {:.1}x |",
        mean(cs.iter().map(|c| c.passages as f64)),
        mean(cs.iter().map(|c| c.prompt_tokens as f64)),
        mean(cs.iter().map(|c| c.generation_seconds)),
        mean(cs.iter().map(|c| c.exact_loo.seconds)),
        mean(cs.iter().map(|c| c.exact_loo.tokens as f64)),
        mean(cs.iter().map(|c| c.exact_loo.tokens_from_scratch as f64)),
        mean(
            cs.iter()
                .map(|c| c.exact_loo.seconds / c.generation_seconds)
        ),
    );
    let with_shapley: Vec<&CaseRun> = cs.iter().filter(|c| c.shapley.is_some()).collect();
    if !with_shapley.is_empty() {
        println!(
            "\nShapley ground truth on {} cases: {:.1} s per case; mean standard error {:.3} nats (largest score {:.2})",
            with_shapley.len(),
            mean(
                with_shapley
                    .iter()
                    .map(|c| c.shapley.as_ref().expect("filtered").seconds)
            ),
            mean(with_shapley.iter().flat_map(|c| {
                c.shapley
                    .as_ref()
                    .expect("filtered")
                    .std_errors
                    .clone()
                    .unwrap_or_default()
            })),
            mean(with_shapley.iter().map(|c| {
                c.shapley
                    .as_ref()
                    .expect("filtered")
                    .scores
                    .iter()
                    .copied()
                    .fold(f64::MIN, f64::max)
            })),
        );
    }
    println!(
        "\n| strategy | s/case | tokens | speed-up over exact LOO (median) | time / generation (median) | Spearman vs LOO (mean, min) | top-1 vs LOO | top-3 vs LOO | mAP (LOO outliers) | gold first | Spearman vs Shapley | top-1 vs Shapley |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let exact_gold = cs
        .iter()
        .filter(|c| c.gold.contains(&ranking(&c.exact_loo.scores)[0]))
        .count();
    // The ground truths against each other: how far LOO-quality is from Shapley-quality.
    let (loo_vs_shapley, loo_top1_shapley) = if with_shapley.is_empty() {
        (String::new(), String::new())
    } else {
        let pairs = || {
            with_shapley.iter().map(|c| {
                (
                    &c.exact_loo.scores,
                    &c.shapley.as_ref().expect("filtered").scores,
                )
            })
        };
        (
            format!(
                "{:.3}",
                mean(pairs().filter_map(|(l, s)| spearman_or_none(l, s)))
            ),
            format!(
                "{}/{}",
                pairs()
                    .filter(|(l, s)| top_k_agreement(l, s, 1) == 1.0)
                    .count(),
                with_shapley.len()
            ),
        )
    };
    println!(
        "| exact LOO | {:.1} | {:.0} | 1.0x | {:.1}x | 1 | {}/{n} | 1 | 1 | {exact_gold}/{n} | {loo_vs_shapley} | {loo_top1_shapley} |",
        mean(cs.iter().map(|c| c.exact_loo.seconds)),
        mean(cs.iter().map(|c| c.exact_loo.tokens as f64)),
        median(
            cs.iter()
                .map(|c| c.exact_loo.seconds / c.generation_seconds)
        ),
        cs.len(),
        n = cs.len()
    );
    let Some(first) = cs.first() else { return };
    for k in 0..first.runs.len() {
        let runs: Vec<&StrategyRun> = cs.iter().map(|c| &c.runs[k]).collect();
        let rhos: Vec<f64> = runs.iter().filter_map(|r| r.spearman_loo).collect();
        let sh: Vec<&StrategyRun> = runs
            .iter()
            .copied()
            .filter(|r| r.top1_shapley.is_some())
            .collect();
        let n = runs.len();
        println!(
            "| {} | {:.2} | {:.0} | {:.1}x | {:.2}x | {:.3}, {:.3} | {}/{n} | {:.2} | {:.3} | {}/{n} | {} | {} |",
            runs[0].strategy,
            mean(runs.iter().map(|r| r.seconds)),
            mean(runs.iter().map(|r| r.tokens as f64)),
            median(runs.iter().map(|r| r.speedup_over_exact_loo)),
            median(runs.iter().map(|r| r.time_over_generation)),
            mean(rhos.iter().copied()),
            rhos.iter().copied().fold(f64::INFINITY, f64::min),
            runs.iter().filter(|r| r.top1_loo).count(),
            mean(runs.iter().map(|r| r.top3_loo)),
            mean(runs.iter().map(|r| r.ap_loo)),
            runs.iter().filter(|r| r.gold_first).count(),
            if sh.is_empty() {
                "-".to_string()
            } else {
                format!("{:.3}", mean(sh.iter().filter_map(|r| r.spearman_shapley)))
            },
            if sh.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{}/{}",
                    sh.iter().filter(|r| r.top1_shapley == Some(true)).count(),
                    sh.len()
                )
            },
        );
    }
    print_resolved(&with_shapley);
    // In-context caches are the prompt's prefill: generating the answer computes them, and
    // `glassbox cite` reuses them when it generates the answer itself.
    println!(
        "\n| strategy, prompt cache shared with the generation | s/case | time / generation (median) |"
    );
    println!("|---|---:|---:|");
    for k in 0..first.runs.len() {
        if !first.runs[k].strategy.contains("context-kv")
            || first.runs[k].strategy.contains("proxy")
        {
            continue;
        }
        println!(
            "| {} | {:.2} | {:.2}x |",
            first.runs[k].strategy,
            mean(
                cs.iter()
                    .map(|c| c.runs[k].seconds - c.runs[k].cache_seconds)
            ),
            median(
                cs.iter()
                    .map(|c| (c.runs[k].seconds - c.runs[k].cache_seconds) / c.generation_seconds)
            ),
        );
    }
    // Where each strategy fails: top-1 agreement per kind of case.
    let mut kinds: Vec<String> = cs.iter().filter_map(|c| c.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    if kinds.is_empty() {
        return;
    }
    println!("\n| strategy | {} |", kinds.join(" top-1 | ") + " top-1");
    println!("|---|{}", "---:|".repeat(kinds.len()));
    for k in 0..first.runs.len() {
        let cells: Vec<String> = kinds
            .iter()
            .map(|kind| {
                let of: Vec<&CaseRun> = cs
                    .iter()
                    .filter(|c| c.kind.as_ref() == Some(kind))
                    .collect();
                format!(
                    "{}/{}",
                    of.iter().filter(|c| c.runs[k].top1_loo).count(),
                    of.len()
                )
            })
            .collect();
        println!("| {} | {} |", first.runs[k].strategy, cells.join(" | "));
    }
}

/// Spearman over the passages the Shapley truth resolves: with a few permutations most
/// passages are within noise of zero, and an all-passages Spearman ranks that noise.
fn print_resolved(with_shapley: &[&CaseRun]) {
    let resolved_of = |c: &CaseRun| {
        let t = c.shapley.as_ref().expect("filtered");
        t.std_errors.as_ref().map(|se| resolved(&t.scores, se))
    };
    let cases: Vec<(&CaseRun, Vec<usize>)> = with_shapley
        .iter()
        .filter_map(|c| resolved_of(c).map(|on| (*c, on)))
        .collect();
    let Some((first, _)) = cases.first() else {
        return;
    };
    println!(
        "\nOn the passages the Shapley truth resolves (more than {RESOLVED_Z} standard errors from zero): {:.1} of {:.1} per case, {} cases",
        mean(cases.iter().map(|(_, on)| on.len() as f64)),
        mean(cases.iter().map(|(c, _)| c.passages as f64)),
        cases.len()
    );
    println!(
        "\n| ranking | Spearman vs LOO, resolved passages | Spearman vs Shapley, resolved passages |"
    );
    println!("|---|---:|---:|");
    let row = |name: &str, scores: &dyn Fn(&CaseRun) -> &[f64]| {
        let against = |truth: &dyn Fn(&CaseRun) -> &[f64]| {
            mean(
                cases
                    .iter()
                    .filter_map(|(c, on)| spearman_on(scores(c), truth(c), on)),
            )
        };
        println!(
            "| {name} | {:.3} | {:.3} |",
            against(&|c| &c.exact_loo.scores),
            against(&|c| &c.shapley.as_ref().expect("filtered").scores)
        );
    };
    row("exact LOO", &|c| &c.exact_loo.scores);
    for k in 0..first.runs.len() {
        row(&first.runs[k].strategy, &|c| &c.runs[k].scores);
    }
}
