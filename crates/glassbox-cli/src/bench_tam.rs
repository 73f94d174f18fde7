//! `glassbox bench tam`: token activation maps on the known-content model — how well each
//! kind of map finds the objects a caption names (held-out scenes), what explanation-guided
//! token pruning keeps, and what maps cost next to the forward pass.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use glassbox::AnyModel;
use glassbox::maps::{ModeChoice, PruneBy, explain_answer, prune_study};
use glassbox::shapes::{
    HELD_OUT_SEED, MapEvaluation, QUESTION, evaluate_maps, scene_prompt, scenes,
};
use glassbox::{GenerateOptions, Sampling};

use crate::bench::{cpu_name, peak_rss_mib};
use crate::bench_attribute::reset_peak_rss;
use crate::input::{ModelArgs, WeightsArg, check_output};
use crate::{Output, UsageError};

#[derive(Args)]
pub(crate) struct TamBenchArgs {
    /// The model (a vision-language model; default: the known-content shapes model).
    #[arg(long, short, default_value = "smollm2-135m-shapes")]
    model: String,
    /// Held-out scenes for the map evaluation.
    #[arg(long, default_value_t = 100)]
    scenes: usize,
    /// Scenes for the pruning study (the first of the held-out ones).
    #[arg(long, default_value_t = 40)]
    prune_scenes: usize,
    /// Timed repetitions of the cost measurement (median reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Seed of the random pruning order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the full results as JSON here.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[arg(long)]
    force: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn table(e: &MapEvaluation) {
    println!(
        "\n{} captions, {} scenes{}, {} shape / {} colour / {} function words, {} \
         words of second objects",
        e.captions,
        e.scenes,
        e.exact_captions
            .map(|n| format!(" ({n} exact)"))
            .unwrap_or_default(),
        e.shape_words,
        e.colour_words,
        e.function_words,
        e.second_object_words
    );
    println!(
        "| map | Obj-IoU | colour IoU | Func-IoU | F1-IoU | pointing | energy in mask | \
         interference | confusion |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for k in &e.kinds {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            k.kind,
            k.obj_iou,
            k.colour_iou,
            k.func_iou,
            k.f1_iou,
            k.pointing,
            k.energy_in_mask,
            k.interference,
            k.confusion
        );
    }
}

pub(crate) fn run(args: TamBenchArgs, out: &Output) -> anyhow::Result<()> {
    if let Some(path) = &args.output {
        check_output(path, args.force)?;
    }
    if args.scenes == 0 || args.repeat == 0 {
        return Err(UsageError("--scenes and --repeat must be at least 1".into()).into());
    }
    let any = ModelArgs {
        model: args.model.clone(),
        weights: WeightsArg::F32,
        offline: false,
    }
    .load_any()?;
    let AnyModel::Vision(model) = &any else {
        return Err(glassbox::vision::VisionError::NotMultimodal(args.model.clone()).into());
    };
    let held = scenes(HELD_OUT_SEED, args.scenes);
    let started = Instant::now();
    let teacher = evaluate_maps(model, &held, false)?;
    let generated = evaluate_maps(model, &held, true)?;
    let evaluation_seconds = started.elapsed().as_secs_f64();
    if !out.json {
        table(&teacher);
        table(&generated);
    }

    // Pruning, on the model's own greedy captions.
    let fractions = [0.25f32, 0.5, 0.75];
    let options = GenerateOptions {
        max_new_tokens: 16,
        sampling: Sampling::Greedy,
        stop_at_eos: true,
    };
    let mut outcomes = Vec::new();
    for (i, scene) in held.iter().take(args.prune_scenes).enumerate() {
        let prompt = scene_prompt(model, scene)?;
        let answer = model.generate(&prompt, &options)?.tokens;
        if answer.is_empty() {
            continue;
        }
        let maps = explain_answer(
            model,
            &prompt,
            Some(QUESTION),
            &answer,
            ModeChoice::Corrected,
        )?;
        outcomes.extend(prune_study(
            model,
            &prompt,
            &answer,
            &maps,
            &fractions,
            args.seed + i as u64,
        )?);
    }
    let mut pruning = Vec::new();
    for by in [PruneBy::Tam, PruneBy::FirstLayerAttention, PruneBy::Random] {
        for &f in &fractions {
            let these: Vec<_> = outcomes
                .iter()
                .filter(|o| o.by == by && o.fraction == f)
                .collect();
            let n = these.len().max(1) as f32;
            pruning.push(serde_json::json!({
                "by": by,
                "fraction": f,
                "answers": these.len(),
                "mean_logprob_change": these.iter().map(|o| o.logprob_change).sum::<f32>() / n,
                "same_answer": these.iter().filter(|o| o.same_answer).count() as f32 / n,
            }));
        }
    }
    if !out.json {
        println!(
            "\npruning ({} greedy answers): vision tokens dropped by each ranking",
            outcomes.len() / 9
        );
        println!("| ranking | dropped | mean Δ ln p(answer) | same greedy answer |");
        println!("|---|---:|---:|---:|");
        for p in &pruning {
            println!(
                "| {} | {:.0}% | {:.3} | {:.1}% |",
                p["by"].as_str().unwrap_or(""),
                100.0 * p["fraction"].as_f64().unwrap_or(0.0),
                p["mean_logprob_change"].as_f64().unwrap_or(0.0),
                100.0 * p["same_answer"].as_f64().unwrap_or(0.0)
            );
        }
    }

    // Cost: one image, a 30-token caption; vision + prefill, the forward pass, the maps.
    let scene = &held[0];
    let tokenizer = model.text().tokenizer();
    let mut caption = Vec::new();
    while caption.len() < 30 {
        caption.extend(
            tokenizer
                .encode(&format!("{} ", scene.caption), false)
                .map_err(glassbox::runtime::RuntimeError::from)?
                .ids,
        );
    }
    caption.truncate(30);
    reset_peak_rss();
    let (mut prepare, mut forward, mut maps) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.repeat + 1 {
        let t = Instant::now();
        let prompt = scene_prompt(model, scene)?;
        prepare.push(t.elapsed().as_secs_f64());
        let r = explain_answer(
            model,
            &prompt,
            Some(QUESTION),
            &caption,
            ModeChoice::Corrected,
        )?;
        forward.push(r.forward_seconds);
        maps.push(r.maps_seconds);
    }
    // The first run warms up.
    let (prepare, forward, maps) = (
        median(prepare[1..].to_vec()),
        median(forward[1..].to_vec()),
        median(maps[1..].to_vec()),
    );
    let threads = rayon::current_num_threads();
    if !out.json {
        println!(
            "\ncost (one {}×{} image, a 30-token caption; median of {}, {threads} threads, {}): \
             image processing + vision + prompt {:.1} ms, forward over prompt + caption {:.1} ms, \
             maps {:.1} ms ({:.1}% of the forward); peak RSS {:.0} MiB",
            scene.image.width,
            scene.image.height,
            args.repeat,
            cpu_name(),
            1e3 * prepare,
            1e3 * forward,
            1e3 * maps,
            100.0 * maps / forward,
            peak_rss_mib().unwrap_or(f64::NAN)
        );
    }
    let report = serde_json::json!({
        "model": model.text().info().name,
        "cpu": cpu_name(),
        "threads": threads,
        "held_out_seed": HELD_OUT_SEED,
        "evaluation_seconds": evaluation_seconds,
        "teacher_forced": teacher,
        "generated": generated,
        "pruning": pruning,
        "cost": {
            "prepare_seconds": prepare,
            "forward_seconds": forward,
            "maps_seconds": maps,
            "maps_share_of_forward": maps / forward,
            "caption_tokens": caption.len(),
            "peak_rss_mib": peak_rss_mib(),
        },
    });
    if let Some(path) = &args.output {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if out.json {
        out.print_json(&report)?;
    }
    Ok(())
}
