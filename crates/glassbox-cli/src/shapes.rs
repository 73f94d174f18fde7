//! `glassbox shapes`: the known-content vision-language model (coloured shapes with known
//! masks), trained against the frozen default model.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use glassbox::shapes::{HELD_OUT_SEED, TrainOptions, caption_accuracy, scenes, train};

use crate::Output;
use crate::input::{ModelArgs, check_output};

#[derive(Subcommand)]
pub(crate) enum ShapesCommand {
    /// Write scenes as PNG files with their captions and objects (scenes.json): by default the
    /// held-out ones the evaluation uses.
    Draw {
        #[arg(long, default_value_t = HELD_OUT_SEED)]
        seed: u64,
        #[arg(long, default_value_t = 4)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Train the vision front end (patch embedding + LLaVA projector) with the text model
    /// frozen; writes vision.safetensors and training.json (recipe, losses, caption accuracy
    /// on held-out scenes).
    Train {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = TrainOptions::default().steps)]
        steps: usize,
        #[arg(long, default_value_t = TrainOptions::default().batch)]
        batch: usize,
        #[arg(long, default_value_t = TrainOptions::default().learning_rate)]
        learning_rate: f32,
        #[arg(long, default_value_t = TrainOptions::default().seed)]
        seed: u64,
        /// Held-out scenes to measure caption accuracy on.
        #[arg(long, default_value_t = 100)]
        held_out: usize,
        /// Directory to write into.
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(cmd: ShapesCommand, out: &Output) -> anyhow::Result<()> {
    if let ShapesCommand::Draw {
        seed,
        count,
        out: dir,
        force,
    } = cmd
    {
        return draw(seed, count, &dir, force, out);
    }
    let ShapesCommand::Train {
        model,
        steps,
        batch,
        learning_rate,
        seed,
        held_out,
        out: dir,
        force,
    } = cmd
    else {
        unreachable!("draw returned above")
    };
    let weights = dir.join("vision.safetensors");
    let log_path = dir.join("training.json");
    check_output(&weights, force)?;
    check_output(&log_path, force)?;
    let text = model.load()?;
    let options = TrainOptions {
        steps,
        batch,
        learning_rate,
        seed,
        ..TrainOptions::default()
    };
    let (front, log) = train(&text, &options, &mut |step, loss| {
        if step % 10 == 0 || step + 1 == steps {
            eprintln!("step {step:>4}  loss {loss:.4}");
        }
    })?;
    let held = scenes(HELD_OUT_SEED, held_out);
    let accuracy = caption_accuracy(&text, &front, &held)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    front
        .save(&weights)
        .with_context(|| format!("writing {}", weights.display()))?;
    let record = serde_json::json!({
        "recipe": format!(
            "glassbox shapes train --steps {steps} --batch {batch} --learning-rate {learning_rate} \
             --seed {seed} --held-out {held_out}"
        ),
        "text_model": text.info().name,
        "training": log,
        "held_out_seed": HELD_OUT_SEED,
        "caption_accuracy": accuracy,
    });
    std::fs::write(&log_path, serde_json::to_string_pretty(&record)?)
        .with_context(|| format!("writing {}", log_path.display()))?;
    if out.json {
        return out.print_json(&record);
    }
    println!(
        "trained {} parameters in {:.0} s; held-out captions: {}/{} exact, token accuracy {:.3}, \
         loss {:.3}",
        log.parameters,
        log.seconds,
        accuracy.exact,
        accuracy.scenes,
        accuracy.token_accuracy,
        accuracy.loss
    );
    println!("wrote {} and {}", weights.display(), log_path.display());
    Ok(())
}

fn draw(
    seed: u64,
    count: usize,
    dir: &std::path::Path,
    force: bool,
    out: &Output,
) -> anyhow::Result<()> {
    let index = dir.join("scenes.json");
    check_output(&index, force)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut listed = Vec::new();
    for (i, scene) in scenes(seed, count).iter().enumerate() {
        let name = format!("scene-{seed}-{i:03}.png");
        let path = dir.join(&name);
        check_output(&path, force)?;
        let picture = glassbox::maps::Overlay {
            width: scene.image.width as usize,
            height: scene.image.height as usize,
            data: scene.image.data.clone(),
        };
        std::fs::write(&path, picture.png())
            .with_context(|| format!("writing {}", path.display()))?;
        listed.push(serde_json::json!({
            "image": name,
            "caption": scene.caption,
            "objects": scene.objects,
        }));
    }
    std::fs::write(&index, serde_json::to_string_pretty(&listed)?)
        .with_context(|| format!("writing {}", index.display()))?;
    if out.json {
        return out.print_json(&listed);
    }
    for l in &listed {
        println!(
            "{}  {}",
            l["image"].as_str().unwrap_or(""),
            l["caption"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
