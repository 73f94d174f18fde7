//! `glassbox tam`: where in the image a vision-language model looked for each word it wrote.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use glassbox::maps::{
    ModeChoice, ReportImage, TamReport, contact_sheet, explain_answer, render_tam_html,
};
use glassbox::vision::RgbImage;
use glassbox::{AnyModel, GenerateOptions, Sampling};

use crate::input::{ImageArgs, ModelArgs, PromptArgs};
use crate::run::vision_prompt;
use crate::{Output, UsageError};

#[derive(Args)]
pub(crate) struct TamArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    images: ImageArgs,
    /// Explain this caption (teacher-forced after the prompt) instead of the model's answer.
    #[arg(long)]
    caption: Option<String>,
    /// Also map this span of the answer (its tokens' mean); repeatable.
    #[arg(long)]
    span: Vec<String>,
    /// Most tokens of the generated answer (greedy).
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// `corrected`: every token explained by its own class; `reference`: the reference
    /// code's behaviour (its first-token handling), for comparisons with it.
    #[arg(long, value_enum, default_value_t = ModeArg::Corrected)]
    mode: ModeArg,
    /// Write tam.json, index.html, contact sheets and one overlay PNG per word here.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Write into --out even if it holds files.
    #[arg(long)]
    force: bool,
}

#[derive(ValueEnum, Clone, Copy)]
enum ModeArg {
    Corrected,
    Reference,
}

pub(crate) fn run(args: TamArgs, out: &Output) -> anyhow::Result<()> {
    if let Some(dir) = &args.out {
        check_dir(dir, args.force)?;
    }
    let prompt = args.prompt.prompt()?;
    if args.images.images.is_empty() {
        return Err(UsageError("give at least one --image".into()).into());
    }
    let images = args.images.decode()?;
    let any = args.model.load_any()?;
    let AnyModel::Vision(model) = &any else {
        return Err(
            glassbox::vision::VisionError::NotMultimodal(any.text().info().name.clone()).into(),
        );
    };
    let started = std::time::Instant::now();
    let p = vision_prompt(model, &prompt, &images, &args.images)?;
    let vision_seconds = started.elapsed().as_secs_f64();
    let tokenizer = model.text().tokenizer();
    let (answer, generated) = match &args.caption {
        Some(caption) => {
            let ids = tokenizer
                .encode(caption, false)
                .map_err(glassbox::runtime::RuntimeError::from)?
                .ids;
            (ids, false)
        }
        None => {
            let options = GenerateOptions {
                max_new_tokens: args.max_tokens,
                sampling: Sampling::Greedy,
                stop_at_eos: true,
            };
            (model.generate(&p, &options)?.tokens, true)
        }
    };
    if answer.is_empty() {
        return Err(UsageError(if generated {
            "the model's answer is empty; give one with --caption".into()
        } else {
            "the caption has no tokens".into()
        })
        .into());
    }
    let mode = match args.mode {
        ModeArg::Corrected => ModeChoice::Corrected,
        ModeArg::Reference => ModeChoice::Reference,
    };
    let question = (!prompt.raw).then_some(prompt.user.as_str());
    let maps = explain_answer(model, &p, question, &answer, mode)?;
    let text = tokenizer
        .decode(&answer)
        .map_err(glassbox::runtime::RuntimeError::from)?;
    let report_images = args
        .images
        .images
        .iter()
        .zip(&p.images)
        .map(|(path, placement)| {
            ReportImage::from_placement(&path.display().to_string(), placement)
        })
        .collect();
    let mut report = TamReport::new(
        &model.text().info().name,
        &p.text,
        &text,
        generated,
        mode,
        report_images,
        &maps,
    );
    report.vision_seconds = vision_seconds;
    for span in &args.span {
        let tokens = span_tokens(model.text(), &answer, span)?;
        report.add_span(span, tokens);
    }
    if let Some(dir) = &args.out {
        write_outputs(&report, &images, dir)?;
    }
    show(&report, args.out.as_deref(), out)
}

/// The answer's tokens that overlap the first occurrence of `span` in its text.
fn span_tokens(model: &glassbox::Model, answer: &[u32], span: &str) -> anyhow::Result<Vec<usize>> {
    let tokenizer = model.tokenizer();
    let decode = |ids: &[u32]| -> anyhow::Result<String> {
        Ok(tokenizer
            .decode(ids)
            .map_err(glassbox::runtime::RuntimeError::from)?)
    };
    let text = decode(answer)?;
    let start = text
        .find(span)
        .filter(|_| !span.trim().is_empty())
        .ok_or_else(|| UsageError(format!("the answer {text:?} does not contain {span:?}")))?;
    let (start, end) = (
        text[..start].chars().count(),
        text[..start].chars().count() + span.chars().count(),
    );
    let mut tokens = Vec::new();
    let mut before = 0;
    for i in 0..answer.len() {
        let after = decode(&answer[..=i])?.chars().count();
        if after > start && before < end {
            tokens.push(i);
        }
        before = after;
    }
    Ok(tokens)
}

/// An output directory may be new or empty; one with files needs --force.
fn check_dir(dir: &Path, force: bool) -> anyhow::Result<()> {
    let has_files = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if dir.exists() && !dir.is_dir() {
        return Err(UsageError(format!("{} exists and is not a directory", dir.display())).into());
    }
    if has_files && !force {
        return Err(UsageError(format!(
            "{} holds files; pass --force to write into it",
            dir.display()
        ))
        .into());
    }
    Ok(())
}

/// A file name for a word's overlay.
fn slug(index: usize, word: &str) -> String {
    let clean: String = word
        .chars()
        .filter(|c| c.is_alphanumeric())
        .take(24)
        .collect();
    format!("{index:03}-{clean}.png")
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn write_outputs(
    report: &TamReport,
    images: &[RgbImage],
    dir: &Path,
) -> anyhow::Result<()> {
    let words_dir = dir.join("words");
    std::fs::create_dir_all(&words_dir)
        .with_context(|| format!("creating {}", words_dir.display()))?;
    write(
        &dir.join("tam.json"),
        serde_json::to_string(report)?.as_bytes(),
    )?;
    let pixels: Vec<Vec<u8>> = images.iter().map(|i| i.data.clone()).collect();
    write(
        &dir.join("index.html"),
        render_tam_html(report, &pixels).as_bytes(),
    )?;
    for (i, image) in images.iter().enumerate() {
        let full = report.word_overlays("tam", i, &image.data, usize::MAX);
        let suffix = if images.len() > 1 {
            format!("-image{}", i + 1)
        } else {
            String::new()
        };
        for (w, overlay) in full.iter().enumerate() {
            let name = slug(w, &report.words[w].text).replace(".png", &format!("{suffix}.png"));
            write(&words_dir.join(name), &overlay.png())?;
        }
        let small = report.word_overlays("tam", i, &image.data, 160);
        write(
            &dir.join(format!("contact_sheet{suffix}.png")),
            &contact_sheet(&small, 6).png(),
        )?;
    }
    Ok(())
}

/// The terminal summary: each word and where its map peaks.
pub(crate) fn show(report: &TamReport, dir: Option<&Path>, out: &Output) -> anyhow::Result<()> {
    if out.json {
        return match dir {
            Some(d) => out.print_json(&serde_json::json!({"written": d})),
            None => out.print_json(report),
        };
    }
    println!(
        "{} answer: {}",
        if report.answer_generated {
            "generated"
        } else {
            "given"
        },
        report.answer.trim()
    );
    println!(
        "images {:.3} s, forward pass {:.3} s, maps {:.3} s ({} tokens, {} words)",
        report.vision_seconds,
        report.forward_seconds,
        report.maps_seconds,
        report.tokens.len(),
        report.words.len()
    );
    println!(
        "{:<16} where the TAM peaks (image: row, col of its grid, value)",
        "word"
    );
    for (w, word) in report.words.iter().enumerate() {
        let peaks: Vec<String> = (0..report.images.len())
            .map(|i| {
                let (grid, _, cols) = report.word_grid(w, "tam", i);
                let (at, v) = grid
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (j, &v)| if v > b.1 { (j, v) } else { b },
                    );
                format!("{}: ({}, {}) {:.2}", i + 1, at / cols, at % cols, v)
            })
            .collect();
        println!("{:<16} {}", format!("{:?}", word.text), peaks.join("; "));
    }
    if let Some(d) = dir {
        println!(
            "wrote {0}/tam.json, {0}/index.html, contact sheets and {0}/words/*.png",
            d.display()
        );
    }
    Ok(())
}
