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
use glassbox::datasets::{Lexicon, POLAR_MIN_ABS_RATING, Polarity, RATIONALE_MIN_ABS_VALENCE};
use glassbox::eval::table::{Column, Table};
use glassbox::eval::agreement::agreement;
use glassbox::eval::{Direction, MetricResult, plausibility};
use glassbox::evaluate::{EvaluateOptions, default_target, evaluate_with};
use glassbox::report::{Aggregation, AttributeReport};
use glassbox::selfexplain::{ParseSummary, Protocol, Task, classify, self_explain};

use crate::Output;
use crate::faithfulness::parse_metrics;
use crate::input::{ModelArgs, check_output};

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
    let bars = crate::progress::Bars::new();
    let files = glassbox::datasets::fetch_vader(&glassbox::Cache::from_env(), &bars)?;
    let lexicon = Lexicon::read(&files.lexicon)?;
    let all = glassbox::datasets::read_snippets(&files.movie_snippets)?;
    let polar = glassbox::datasets::polar(&all, POLAR_MIN_ABS_RATING);
    // Every k-th snippet of the right length, so the sample spreads over the file.
    let fitting: Vec<_> = polar
        .iter()
        .filter(|s| {
            let words = s.snippet.text.split_whitespace().count();
            (4..=args.max_words).contains(&words)
        })
        .collect();
    let stride = (fitting.len() / args.snippets.max(1)).max(1);
    let sample: Vec<_> = fitting
        .iter()
        .step_by(stride)
        .take(args.snippets)
        .copied()
        .collect();
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
        let mut right = 0;
        let mut positive = 0;
        for s in &sample {
            let request = glassbox::selfexplain::classification_request(framing, &s.snippet.text)?;
            let c = classify(&model, &prepare(&model, &request)?)?;
            right += usize::from(c.label == gold_label(s.polarity));
            positive += usize::from(c.label == 0);
        }
        accuracy.push((name.clone(), right, positive));
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
        let mut reports: Vec<(String, AttributeReport)> = Vec::new();
        for method in METHODS {
            let request = AttributeRequest {
                method: TokenMethod::parse(method, &MethodOptions::default())?,
                seed: args.seed,
                ..base.clone()
            };
            let report = attribute(&model, &request).with_context(|| format!("{method} on {text:?}"))?;
            reports.push((method.to_string(), report));
        }
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

        let unit = UnitLevel::Word;
        let mut rescorer = Rescorer::new(&model, &reports[0].1, &unit, Perturbation::Delete)?;
        let options = EvaluateOptions {
            metrics: metrics.clone(),
            unit: Some(unit.clone()),
            perturbation: Perturbation::Delete,
            target: None,
            seed: args.seed,
        };
        let t = default_target(&reports[0].1);
        let word_texts: Vec<String> = rescorer.units().iter().map(|u| u.text.clone()).collect();
        let gold = lexicon.rationale(&word_texts, RATIONALE_MIN_ABS_VALENCE);
        let mut word_scores: Vec<(String, Vec<f64>)> = Vec::new();
        for (name, report) in &reports {
            let evaluation = evaluate_with(&mut rescorer, &unit, report, &options)?;
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
                pair_feature.entry(key).or_default().push(ag.feature_agreement);
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
    md.push_str("| framing | accuracy | predicted positive |\n|---|---:|---:|\n");
    for (name, right, positive) in &accuracy {
        md.push_str(&format!(
            "| {name} | {right}/{} ({:.0}%) | {positive}/{} |\n",
            sample.len(),
            100.0 * *right as f64 / sample.len().max(1) as f64,
            sample.len()
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
    let faithfulness = Table::from_results(
        order
            .iter()
            .flat_map(|name| tallies[name].results.iter().map(move |r| (name.as_str(), r))),
    );
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
                    v.filter(|v| !v.is_empty())
                        .map_or("—".to_string(), |v| format!("{:.2}", v.iter().sum::<f64>() / v.len() as f64))
                };
                format!("{} / {}", mean(pair_spearman.get(&key)), mean(pair_feature.get(&key)))
            };
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    md.push_str(&format!(
        "\nWhole study: {:.0} s ({} threads).\n",
        started.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    ));
    if let Some(path) = &args.markdown {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{md}");
    Ok(())
}
