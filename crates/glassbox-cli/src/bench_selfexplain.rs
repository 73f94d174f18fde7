//! `glassbox bench self-explain`: the self-explanation study. On polar movie snippets (VADER's
//! human-rated data): how often the model's own predictions are right per framing, how often
//! its self-explanations parse per protocol, and how faithful (comprehensiveness, sufficiency,
//! decision flip, RankDel), plausible (against the VADER lexicon) and mutually agreeing its
//! self-explanations, occlusion, LIME, KernelSHAP, gradient × input and a random floor are.
//! Prints Markdown tables (for docs/) and the time taken.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use glassbox::attribution::Perturbation;
use glassbox::attribution::attribute::{
    AttributeRequest, MethodOptions, Rescorer, TokenMethod, UnitLevel, attribute, prepare,
};
use glassbox::datasets::{
    LabelledSnippet, Lexicon, POLAR_MIN_ABS_RATING, Polarity, RATIONALE_MIN_ABS_VALENCE,
};
use glassbox::eval::agreement::agreement;
use glassbox::eval::table::{Column, Table};
use glassbox::eval::{Direction, MetricResult, plausibility};
use glassbox::evaluate::{EvaluateOptions, Evaluation, default_target, evaluate_with};
use glassbox::report::{Aggregation, AttributeReport};
use glassbox::runtime::QuantFormat;
use glassbox::selfexplain::{ParseSummary, Protocol, Task, classify, self_explain};
use glassbox::{Fetch, LoadOptions, Model, WeightMode};

use crate::faithfulness::parse_metrics;
use crate::input::{ModelArgs, check_output};
use crate::{Output, UsageError};

/// The faithfulness metrics of the study.
const STUDY_METRICS: &str = "comprehensiveness:eraser,comprehensiveness:eraser_code,\
comprehensiveness:ferret,comprehensiveness:cumulative,sufficiency:eraser,sufficiency:eraser_code,\
sufficiency:ferret,sufficiency:cumulative,decision_flip,decision_flip:frac,rankdel";

/// The attribution methods compared with the self-explanations.
const METHODS: [&str; 4] = ["loo", "lime", "kernel", "gradxinput"];

#[derive(Args)]
pub(crate) struct SelfExplainBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Polar snippets to study.
    #[arg(long, default_value_t = 100)]
    snippets: usize,
    /// Longest snippet, in words (LIME and KernelSHAP cost grows with words).
    #[arg(long, default_value_t = 18)]
    max_words: usize,
    /// Comma-separated elicitation protocols.
    #[arg(
        long,
        default_value = "topk-predict-then-explain,topk-explain-then-predict,scores-predict-then-explain"
    )]
    protocols: String,
    /// Seed of the sampled methods and the random explanation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run the quantization study instead: the same explanations and metrics with the weights
    /// re-quantized to each of these formats (comma-separated; `f32` is the reference), e.g.
    /// f32,q8_0,q4_k,q4_0.
    #[arg(long)]
    quantization: Option<String>,
    /// Write the Markdown tables here too.
    #[arg(long)]
    markdown: Option<PathBuf>,
    #[arg(long)]
    force: bool,
}

/// A deterministic generator for the random explanation (SplitMix64), so the floor is
/// reproducible without another dependency.
fn splitmix(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// One explainer's per-snippet record.
#[derive(Default)]
struct Tally {
    results: Vec<MetricResult>,
    seconds: Vec<f64>,
    evaluations: Vec<f64>,
    token_f1: Vec<f64>,
    auprc: Vec<f64>,
}

pub(crate) fn run(args: SelfExplainBenchArgs, _out: &Output) -> anyhow::Result<()> {
    if let Some(path) = &args.markdown {
        check_output(path, args.force)?;
    }
    let started = Instant::now();
    if let Some(formats) = &args.quantization {
        return run_quantization(&args, formats, started);
    }
    let (sample, lexicon) = sample_snippets(&args)?;
    let task = Task::load("sentiment")?;
    let protocols = args
        .protocols
        .split(',')
        .map(|p| Protocol::load(p.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let model = args.model.load()?;
    let metrics = parse_metrics(STUDY_METRICS)?;
    let gold_label = |p: Polarity| match p {
        Polarity::Positive => 0,
        Polarity::Negative => 1,
    };

    // Accuracy of the model's own predictions, per framing.
    let mut accuracy = Vec::new();
    for (name, framing) in &task.framings {
        if framing.chat && !model.has_chat_template() {
            continue;
        }
        let (mut right, mut positive, mut calibrated_right) = (0, 0, 0);
        for s in &sample {
            let request = glassbox::selfexplain::classification_request(framing, &s.snippet.text)?;
            let c = classify(&model, &prepare(&model, &request)?)?;
            right += usize::from(c.label == gold_label(s.polarity));
            positive += usize::from(c.label == 0);
            calibrated_right += usize::from(c.calibrated_label == gold_label(s.polarity));
        }
        accuracy.push((name.clone(), right, positive, calibrated_right));
    }

    let (_, framing) = task.framing(None)?;
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut parse: BTreeMap<String, ParseSummary> = BTreeMap::new();
    let mut stated_agrees: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut pair_spearman: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut pair_feature: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut random_state = args.seed ^ 0x5EED;
    let bar = crate::progress::steps("snippets", sample.len() as u64);
    for s in &sample {
        let text = &s.snippet.text;
        let base = glassbox::selfexplain::classification_request(framing, text)?;
        let mut reports = method_reports(&model, &base, &METHODS, args.seed)?;
        // The floor: uniform random word scores in [-1, 1].
        let mut random = reports[0].1.clone();
        random.attribution.method.name = "random".into();
        for row in &mut random.attribution.scores {
            for v in row.iter_mut() {
                *v = splitmix(&mut random_state);
            }
        }
        random.attribution.cost = Default::default();
        reports.push(("random".into(), random));
        for protocol in &protocols {
            let result = self_explain(&model, &task, framing, protocol, text, 96)?;
            parse
                .entry(protocol.name.clone())
                .or_default()
                .add(&result.parsed);
            if let Some(stated) = result.stated_label {
                let e = stated_agrees.entry(protocol.name.clone()).or_default();
                e.0 += usize::from(stated == result.classification.label);
                e.1 += 1;
            }
            // Unreadable answers are counted above, not scored as explanations.
            if result.parsed.is_usable() {
                reports.push((format!("self:{}", protocol.name), result.report));
            }
        }

        let t = default_target(&reports[0].1);
        let word_texts: Vec<String> = reports[0].1.levels["word"]
            .iter()
            .map(|u| u.text.clone())
            .collect();
        let gold = lexicon.rationale(&word_texts, RATIONALE_MIN_ABS_VALENCE);
        let evaluations = evaluate_all(&model, &reports, &metrics, args.seed)?;
        let mut word_scores: Vec<(String, Vec<f64>)> = Vec::new();
        for ((name, report), evaluation) in reports.iter().zip(evaluations) {
            if !order.contains(name) {
                order.push(name.clone());
            }
            let tally = tallies.entry(name.clone()).or_default();
            tally.results.extend(evaluation.results);
            tally.seconds.push(report.attribution.cost.seconds);
            tally
                .evaluations
                .push(report.attribution.cost.evaluations as f64);
            let scores = report
                .regrouped("word", Aggregation::Sum)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .scores[t]
                .clone();
            if gold.iter().any(|&g| g) {
                if let Some(f1) = plausibility::token_prf(&scores, &gold, None)?.f1 {
                    tally.token_f1.push(f1);
                }
                if let Some(ap) = plausibility::average_precision(&scores, &gold)? {
                    tally.auprc.push(ap);
                }
            }
            word_scores.push((name.clone(), scores));
        }
        for (i, (a, sa)) in word_scores.iter().enumerate() {
            for (b, sb) in &word_scores[i + 1..] {
                let ag = agreement(sa, sb, None)?;
                let key = (a.clone(), b.clone());
                if let Some(rho) = ag.spearman {
                    pair_spearman.entry(key.clone()).or_default().push(rho);
                }
                pair_feature
                    .entry(key)
                    .or_default()
                    .push(ag.feature_agreement);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut md = String::new();
    md.push_str(&format!(
        "Model `{}`, {} polar snippets (|rating| ≥ {POLAR_MIN_ABS_RATING}, {}-{} words) of VADER's movie reviews; \
         framing `{}` for the study; delete perturbation, word units; seed {}.\n\n",
        model.info().name,
        sample.len(),
        4,
        args.max_words,
        task.framing(None)?.0,
        args.seed
    ));
    md.push_str("| framing | accuracy | predicted positive | accuracy, contextually calibrated |\n|---|---:|---:|---:|\n");
    let n = sample.len();
    let percent = |k: usize| 100.0 * k as f64 / n.max(1) as f64;
    for (name, right, positive, calibrated) in &accuracy {
        md.push_str(&format!(
            "| {name} | {right}/{n} ({:.0}%) | {positive}/{n} | {calibrated}/{n} ({:.0}%) |\n",
            percent(*right),
            percent(*calibrated)
        ));
    }
    md.push_str("\n| protocol | complete | partial | failed | usable | written label = predicted |\n|---|---:|---:|---:|---:|---:|\n");
    for p in &protocols {
        let s = parse.get(&p.name).cloned().unwrap_or_default();
        let stated = stated_agrees
            .get(&p.name)
            .map_or("—".to_string(), |(a, n)| format!("{a}/{n}"));
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.0}% | {stated} |\n",
            p.name,
            s.complete,
            s.partial,
            s.failed,
            100.0 * s.usable_rate().unwrap_or(0.0)
        ));
    }
    let faithfulness = Table::from_results(order.iter().flat_map(|name| {
        tallies[name]
            .results
            .iter()
            .map(move |r| (name.as_str(), r))
    }));
    md.push_str("\nFaithfulness (mean ± standard error over snippets):\n\n");
    md.push_str(&faithfulness.render_markdown());
    let mut other = Table::new(vec![
        Column {
            name: format!("token F1 vs lexicon (|valence| ≥ {RATIONALE_MIN_ABS_VALENCE})"),
            direction: Direction::HigherIsBetter,
        },
        Column {
            name: "AUPRC vs lexicon".into(),
            direction: Direction::HigherIsBetter,
        },
        Column {
            name: "seconds per explanation".into(),
            direction: Direction::LowerIsBetter,
        },
        Column {
            name: "model evaluations".into(),
            direction: Direction::LowerIsBetter,
        },
    ]);
    for name in &order {
        let t = &tallies[name];
        other.push_row(
            name.clone(),
            vec![
                t.token_f1.clone(),
                t.auprc.clone(),
                t.seconds.clone(),
                t.evaluations.clone(),
            ],
        )?;
    }
    md.push_str("\nPlausibility and cost:\n\n");
    md.push_str(&other.render_markdown());
    md.push_str("\nAgreement (mean Spearman of |scores| / mean feature agreement at k = 20% of words):\n\n|  | ");
    md.push_str(&order.join(" | "));
    md.push_str(" |\n|---|");
    md.push_str(&"---:|".repeat(order.len()));
    md.push('\n');
    for a in &order {
        md.push_str(&format!("| {a} |"));
        for b in &order {
            let key = if order.iter().position(|x| x == a) < order.iter().position(|x| x == b) {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            let cell = if a == b {
                "—".to_string()
            } else {
                let mean = |v: Option<&Vec<f64>>| {
                    v.filter(|v| !v.is_empty()).map_or("—".to_string(), |v| {
                        format!("{:.2}", v.iter().sum::<f64>() / v.len() as f64)
                    })
                };
                format!(
                    "{} / {}",
                    mean(pair_spearman.get(&key)),
                    mean(pair_feature.get(&key))
                )
            };
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    finish(md, started, args.markdown.as_deref())
}

/// Each method's explanation of the classification request `base` (seeded).
fn method_reports(
    model: &Model,
    base: &AttributeRequest,
    methods: &[&str],
    seed: u64,
) -> anyhow::Result<Vec<(String, AttributeReport)>> {
    methods
        .iter()
        .map(|method| {
            let request = AttributeRequest {
                method: TokenMethod::parse(method, &MethodOptions::default())?,
                seed,
                ..base.clone()
            };
            let report = attribute(model, &request)
                .with_context(|| format!("{method} on {:?}", base.input))?;
            Ok((method.to_string(), report))
        })
        .collect()
}

/// Every explanation of one input evaluated on one rescorer over its words, deleting units,
/// so removals that several explanations share are run once.
fn evaluate_all(
    model: &Model,
    reports: &[(String, AttributeReport)],
    metrics: &[glassbox::eval::MetricRequest],
    seed: u64,
) -> anyhow::Result<Vec<Evaluation>> {
    let unit = UnitLevel::Word;
    let mut rescorer = Rescorer::new(model, &reports[0].1, &unit, Perturbation::Delete)?;
    let options = EvaluateOptions {
        metrics: metrics.to_vec(),
        unit: Some(unit.clone()),
        perturbation: Perturbation::Delete,
        target: None,
        seed,
    };
    reports
        .iter()
        .map(|(_, report)| Ok(evaluate_with(&mut rescorer, &unit, report, &options)?))
        .collect()
}

/// The study's snippets (every k-th polar snippet of 4..=max_words words, so the sample
/// spreads over the file) and the VADER lexicon, fetched if needed.
fn sample_snippets(args: &SelfExplainBenchArgs) -> anyhow::Result<(Vec<LabelledSnippet>, Lexicon)> {
    let bars = crate::progress::Bars::new();
    let files = glassbox::datasets::fetch_vader(&glassbox::Cache::from_env(), &bars)?;
    let lexicon = Lexicon::read(&files.lexicon)?;
    let all = glassbox::datasets::read_snippets(&files.movie_snippets)?;
    let polar = glassbox::datasets::polar(&all, POLAR_MIN_ABS_RATING);
    let fitting: Vec<_> = polar
        .into_iter()
        .filter(|s| (4..=args.max_words).contains(&s.snippet.text.split_whitespace().count()))
        .collect();
    let stride = (fitting.len() / args.snippets.max(1)).max(1);
    let sample = fitting
        .into_iter()
        .step_by(stride)
        .take(args.snippets)
        .collect();
    Ok((sample, lexicon))
}

/// The explainers of the quantization study.
const QUANT_METHODS: [&str; 3] = ["loo", "kernel", "gradxinput"];
const QUANT_METRICS: &str =
    "comprehensiveness:cumulative,sufficiency:cumulative,decision_flip:frac";

/// What one model (one weight format) made of one snippet.
struct QuantRun {
    label: usize,
    /// Per explainer: word scores for the first label, and the metric values.
    explanations: BTreeMap<String, (Vec<f64>, Vec<Option<f64>>)>,
    self_text: String,
}

/// The quantization study: the same snippets explained and evaluated on each weight format;
/// how far predictions, explanations, their faithfulness and self-explanations move from f32.
fn run_quantization(
    args: &SelfExplainBenchArgs,
    formats: &str,
    started: Instant,
) -> anyhow::Result<()> {
    let (sample, _) = sample_snippets(args)?;
    let task = Task::load("sentiment")?;
    let (_, framing) = task.framing(None)?;
    let protocol = Protocol::load(glassbox::selfexplain::task::DEFAULT_PROTOCOL)?;
    let metrics = parse_metrics(QUANT_METRICS)?;
    let mut names = Vec::new();
    let mut runs: Vec<Vec<QuantRun>> = Vec::new();
    let mut seconds = Vec::new();
    for format in formats.split(',').map(str::trim) {
        let weights = match format {
            "f32" => WeightMode::F32,
            other => WeightMode::Requantized(QuantFormat::parse(other).ok_or_else(|| {
                UsageError(format!(
                    "unknown format `{other}`; use f32, q8_0, q4_k or q4_0"
                ))
            })?),
        };
        let t0 = Instant::now();
        let model = glassbox::load_model(
            &args.model.model,
            LoadOptions { weights },
            Fetch::IfMissing,
            &glassbox::NoProgress,
        )?;
        let bar = crate::progress::steps(format, sample.len() as u64);
        let mut per_snippet = Vec::new();
        for s in &sample {
            let text = &s.snippet.text;
            let base = glassbox::selfexplain::classification_request(framing, text)?;
            let mut reports = method_reports(&model, &base, &QUANT_METHODS, args.seed)?;
            let own = self_explain(&model, &task, framing, &protocol, text, 96)?;
            let self_text = own.parsed.raw.clone();
            let label = own.classification.label;
            if own.parsed.is_usable() {
                reports.push(("self-explanation".into(), own.report));
            }
            let evaluations = evaluate_all(&model, &reports, &metrics, args.seed)?;
            let mut explanations = BTreeMap::new();
            for ((name, report), e) in reports.iter().zip(evaluations) {
                let scores = report
                    .regrouped("word", Aggregation::Sum)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .scores[0]
                    .clone();
                explanations.insert(
                    name.clone(),
                    (scores, e.results.iter().map(|r| r.value).collect()),
                );
            }
            per_snippet.push(QuantRun {
                label,
                explanations,
                self_text,
            });
            bar.inc(1);
        }
        bar.finish_and_clear();
        seconds.push(t0.elapsed().as_secs_f64());
        names.push(format.to_string());
        runs.push(per_snippet);
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            "—".to_string()
        } else {
            format!("{:.3}", v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    let mut md = format!(
        "Model `{}`, {} polar snippets, framing `{}`, explainers {} and self-explanation \
         (`{}`), word units, delete perturbation. Each format's weights are quantized and \
         dequantized back, so every run uses the same f32 code. Reference: `{}`.\n\n",
        args.model.model,
        sample.len(),
        task.framing(None)?.0,
        QUANT_METHODS.join(", "),
        protocol.name,
        names[0]
    );
    md.push_str("| format | same prediction as reference | accuracy | same self-explanation text | seconds |\n|---|---:|---:|---:|---:|\n");
    for (f, run) in runs.iter().enumerate() {
        let same = run
            .iter()
            .zip(&runs[0])
            .filter(|(a, b)| a.label == b.label)
            .count();
        let right = run
            .iter()
            .zip(&sample)
            .filter(|(r, s)| r.label == usize::from(s.polarity == Polarity::Negative))
            .count();
        let same_text = run
            .iter()
            .zip(&runs[0])
            .filter(|(a, b)| a.self_text == b.self_text)
            .count();
        md.push_str(&format!(
            "| {} | {same}/{n} | {right}/{n} | {same_text}/{n} | {:.0} |\n",
            names[f],
            seconds[f],
            n = sample.len()
        ));
    }
    md.push_str("\nPer explainer: mean Spearman (|scores|) and top-20% feature agreement with the reference's explanation of the same snippet, and mean metric values (comprehensiveness ↑, sufficiency ↓, decision-flip fraction ↓):\n\n");
    md.push_str("| explainer | format | Spearman vs ref | feature agr. vs ref | comprehensiveness:cumulative | sufficiency:cumulative | decision_flip:frac |\n|---|---|---:|---:|---:|---:|---:|\n");
    let mut explainers: Vec<String> = QUANT_METHODS.iter().map(|m| m.to_string()).collect();
    explainers.push("self-explanation".into());
    for name in &explainers {
        for (f, run) in runs.iter().enumerate() {
            let (mut rho, mut feat) = (Vec::new(), Vec::new());
            let mut values: Vec<Vec<f64>> = vec![Vec::new(); 3];
            for (r, reference) in run.iter().zip(&runs[0]) {
                let Some((scores, metrics)) = r.explanations.get(name) else {
                    continue;
                };
                for (m, v) in metrics.iter().enumerate() {
                    values[m].extend(*v);
                }
                if let Some((ref_scores, _)) = reference.explanations.get(name) {
                    let ag = agreement(scores, ref_scores, None)?;
                    rho.extend(ag.spearman);
                    feat.push(ag.feature_agreement);
                }
            }
            md.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} |\n",
                names[f],
                mean(&rho),
                mean(&feat),
                mean(&values[0]),
                mean(&values[1]),
                mean(&values[2])
            ));
        }
    }
    finish(md, started, args.markdown.as_deref())
}

/// Ends a study's Markdown with its time and thread count, writes it where asked, prints it.
fn finish(
    mut md: String,
    started: Instant,
    markdown: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    md.push_str(&format!(
        "\nWhole study: {:.0} s ({} threads).\n",
        started.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    ));
    if let Some(path) = markdown {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{md}");
    Ok(())
}
