//! `glassbox generate`, `score` and `inspect`: asking the model directly.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use glassbox::vision::{RgbImage, VisionLanguageModel};
use glassbox::{
    AnyModel, Capture, GenerateOptions, Hook, LogitsAt, Model, Row, RowInput, Sampling,
};
use serde::Serialize;

use crate::input::{ImageArgs, ModelArgs, PromptArgs, check_output, read_text};
use crate::{Output, UsageError};

#[derive(Args)]
pub(crate) struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    images: ImageArgs,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sample at this temperature instead of greedy decoding.
    #[arg(long)]
    temperature: Option<f32>,
    /// Sample only among the K most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample only among the most likely tokens of cumulative probability P.
    #[arg(long)]
    top_p: Option<f32>,
    /// Seed of the sampler: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep going past end-of-turn/EOS tokens until --max-tokens.
    #[arg(long)]
    ignore_eos: bool,
}

/// A token with its text, for output.
#[derive(Serialize)]
struct TokenOut {
    id: u32,
    text: String,
}

fn token_out(model: &Model, id: u32) -> TokenOut {
    TokenOut {
        id,
        text: model
            .tokenizer()
            .decode(&[id])
            .unwrap_or_else(|_| format!("<{id}>")),
    }
}

pub(crate) fn generate(args: GenerateArgs, out: &Output) -> anyhow::Result<()> {
    let prompt = args.prompt.prompt()?;
    let images = args.images.decode()?;
    let any = args.model.load_any()?;
    let sampling = match (args.temperature, args.top_k, args.top_p) {
        (None, None, None) => Sampling::Greedy,
        (t, k, p) => Sampling::Sample {
            temperature: t.unwrap_or(1.0),
            top_k: k,
            top_p: p,
            seed: args.seed,
        },
    };
    let options = GenerateOptions {
        max_new_tokens: args.max_tokens,
        sampling,
        stop_at_eos: !args.ignore_eos,
    };
    let start = Instant::now();
    let (model, text, prompt_tokens, placements, generation) = match &any {
        AnyModel::Text(model) => {
            let model: &Model = model;
            args.images.check_text_model(model)?;
            let ids = prompt.tokens(model)?;
            let generation = model.generate(&ids, &options)?;
            (model, prompt.render(model)?, ids.len(), None, generation)
        }
        AnyModel::Vision(vlm) => {
            let p = vision_prompt(vlm, &prompt, &images, &args.images)?;
            let generation = vlm.generate(&p, &options)?;
            (
                vlm.text(),
                p.text.clone(),
                p.ids.len(),
                Some(p.images),
                generation,
            )
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    if out.json {
        return out.print_json(&serde_json::json!({
            "model": model.info().name,
            "prompt": text,
            "prompt_tokens": prompt_tokens,
            "images": placements,
            "sampling": sampling,
            "text": generation.text,
            "tokens": generation.tokens.iter().map(|&t| token_out(model, t)).collect::<Vec<_>>(),
            "logprobs": generation.logprobs,
            "stop": generation.stop,
            "seconds": seconds,
        }));
    }
    println!("{}", generation.text);
    eprintln!(
        "[{} prompt tokens, {} generated in {:.2} s, stop: {:?}]",
        prompt_tokens,
        generation.tokens.len(),
        seconds,
        generation.stop
    );
    Ok(())
}

#[derive(Args)]
pub(crate) struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    images: ImageArgs,
    /// The continuation to score (tokenized on its own, appended to the prompt).
    #[arg(long, required_unless_present = "continuation_file")]
    continuation: Option<String>,
    /// Read the continuation from a file.
    #[arg(long, conflicts_with = "continuation")]
    continuation_file: Option<PathBuf>,
}

pub(crate) fn score(args: ScoreArgs, out: &Output) -> anyhow::Result<()> {
    let prompt = args.prompt.prompt()?;
    let continuation = match (&args.continuation, &args.continuation_file) {
        (Some(c), _) => c.clone(),
        (None, Some(path)) => read_text(path)?,
        (None, None) => unreachable!("clap requires one"),
    };
    let images = args.images.decode()?;
    let any = args.model.load_any()?;
    let cont = any
        .text()
        .tokenizer()
        .encode(&continuation, false)
        .map_err(glassbox::runtime::RuntimeError::from)?
        .ids;
    if cont.is_empty() {
        return Err(UsageError("the continuation has no tokens".into()).into());
    }
    let start = Instant::now();
    let (model, text, prompt_tokens, placements, scored) = match &any {
        AnyModel::Text(model) => {
            let model: &Model = model;
            args.images.check_text_model(model)?;
            let context = prompt.tokens(model)?;
            let scored = model.score(&context, &cont)?;
            (model, prompt.render(model)?, context.len(), None, scored)
        }
        AnyModel::Vision(vlm) => {
            let p = vision_prompt(vlm, &prompt, &images, &args.images)?;
            let scored = vlm.score(&p, &cont)?;
            (
                vlm.text(),
                p.text.clone(),
                p.ids.len(),
                Some(p.images),
                scored,
            )
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    if out.json {
        return out.print_json(&serde_json::json!({
            "model": model.info().name,
            "prompt": text,
            "prompt_tokens": prompt_tokens,
            "images": placements,
            "continuation": continuation,
            "tokens": cont.iter().map(|&t| token_out(model, t)).collect::<Vec<_>>(),
            "logprobs": scored.logprobs,
            "argmax": scored.argmax.iter().map(|&t| token_out(model, t)).collect::<Vec<_>>(),
            "total_logprob": scored.total(),
            "mean_logprob": scored.mean(),
            "seconds": seconds,
        }));
    }
    println!(
        "{:>4}  {:<20} {:>9} {:>8}  most likely",
        "#", "token", "log p", "p"
    );
    for (i, (&t, &lp)) in cont.iter().zip(&scored.logprobs).enumerate() {
        let best = scored.argmax[i];
        let mark = if best == t {
            "=".to_string()
        } else {
            format!("{:?}", token_out(model, best).text)
        };
        println!(
            "{i:>4}  {:<20} {lp:>9.4} {:>8.4}  {mark}",
            format!("{:?}", token_out(model, t).text),
            lp.exp()
        );
    }
    println!(
        "total log p = {:.4} over {} tokens (mean {:.4}, perplexity {:.3}); {:.3} s",
        scored.total(),
        cont.len(),
        scored.mean(),
        (-scored.mean()).exp(),
        seconds
    );
    Ok(())
}

#[derive(Args)]
pub(crate) struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    images: ImageArgs,
    /// Also capture the logits at every position (`logits`, `[tokens, vocab]`).
    #[arg(long)]
    all_logits: bool,
    /// Capture points, by name or pattern: blocks.L.resid_pre, blocks.L.resid_mid,
    /// blocks.L.resid_post, blocks.L.attn.pattern, blocks.L.attn.out, blocks.L.mlp.out,
    /// final_norm; L may be `*`. Repeatable.
    #[arg(long = "capture", short = 'c')]
    captures: Vec<String>,
    /// How many next-token predictions to show.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Write the full JSON (all captured arrays) to this file.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Overwrite --output if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Serialize)]
struct CapturedArray {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
}

pub(crate) fn inspect(args: InspectArgs, out: &Output) -> anyhow::Result<()> {
    if let Some(path) = &args.output {
        check_output(path, args.force)?;
    }
    let prompt = args.prompt.prompt()?;
    let images = args.images.decode()?;
    let any = args.model.load_any()?;
    let (model, text, ids, offsets, input, placements) = match &any {
        AnyModel::Text(model) => {
            let model: &Model = model;
            args.images.check_text_model(model)?;
            let text = prompt.render(model)?;
            let templated = !prompt.raw && model.has_chat_template();
            let encoding = model
                .tokenizer()
                .encode(&text, !templated && model.tokenizer().wants_bos())
                .map_err(glassbox::runtime::RuntimeError::from)?;
            let input = RowInput::Tokens(encoding.ids.clone());
            (model, text, encoding.ids, encoding.offsets, input, None)
        }
        AnyModel::Vision(vlm) => {
            let p = vision_prompt(vlm, &prompt, &images, &args.images)?;
            let input = RowInput::Embeddings(p.embeddings);
            (vlm.text(), p.text, p.ids, p.offsets, input, Some(p.images))
        }
    };
    let capture = Capture::parse(&args.captures, model.config().num_layers)?;
    let start = Instant::now();
    let row = match input {
        RowInput::Tokens(ids) => Row::tokens(ids),
        RowInput::Embeddings(e) => Row::embeddings(e),
    };
    let logits_at = if args.all_logits {
        LogitsAt::All
    } else {
        LogitsAt::Last
    };
    let output = model
        .forward(vec![row.with_logits(logits_at)], &capture)?
        .remove(0);
    let seconds = start.elapsed().as_secs_f64();
    let logits = output.logits.as_ref().context("logits of the last token")?;
    let last = logits.at(logits.positions.len() - 1);
    let mut order: Vec<usize> = (0..last.len()).collect();
    order.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
    let top: Vec<serde_json::Value> = order
        .iter()
        .take(args.top)
        .map(|&i| {
            let t = token_out(model, i as u32);
            serde_json::json!({
                "id": t.id,
                "text": t.text,
                "logprob": glassbox::runtime::log_softmax_at(last, i as u32),
            })
        })
        .collect();
    let tokens: Vec<serde_json::Value> = ids
        .iter()
        .zip(&offsets)
        .map(|(&id, &(s, e))| {
            let t = token_out(model, id);
            serde_json::json!({"id": id, "text": t.text, "chars": [s, e]})
        })
        .collect();
    let mut captures: Vec<CapturedArray> = output
        .activations
        .iter()
        .map(|(hook, a)| CapturedArray {
            name: hook.name(),
            shape: a.shape.clone(),
            data: a.data.clone(),
        })
        .collect();
    if args.all_logits {
        captures.push(CapturedArray {
            name: "logits".into(),
            shape: logits.values.shape.clone(),
            data: logits.values.data.clone(),
        });
    }
    let report = serde_json::json!({
        "model": model.info().name,
        "prompt": text,
        "images": placements,
        "tokens": tokens,
        "next_token": top,
        "captures": captures,
        "seconds": seconds,
    });
    if let Some(path) = &args.output {
        let body = serde_json::to_string(&report)?;
        std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    if out.json {
        if args.output.is_none() {
            return out.print_json(&report);
        }
        return out.print_json(&serde_json::json!({"written": args.output}));
    }
    println!("{} tokens, forward pass {:.3} s", ids.len(), seconds);
    println!("next token:");
    for t in &top {
        println!(
            "  {:<20} log p = {:.4}",
            format!("{:?}", t["text"].as_str().unwrap_or("")),
            t["logprob"].as_f64().unwrap_or(0.0)
        );
    }
    for (hook, a) in &output.activations {
        print!("{:<26} shape {:?}", hook.name(), a.shape);
        if let Hook::AttnPattern(_) = hook {
            // Where the last token looks, averaged over heads.
            let (heads, q, k) = (a.shape[0], a.shape[1], a.shape[2]);
            let mut mean = vec![0f32; k];
            for h in 0..heads {
                let row = &a.data[(h * q + q - 1) * k..(h * q + q) * k];
                mean.iter_mut()
                    .zip(row)
                    .for_each(|(m, v)| *m += v / heads as f32);
            }
            let mut idx: Vec<usize> = (0..k).collect();
            idx.sort_by(|&x, &y| mean[y].total_cmp(&mean[x]));
            let best: Vec<String> = idx
                .iter()
                .take(3)
                .map(|&j| format!("{:?} {:.2}", token_out(model, ids[j]).text, mean[j]))
                .collect();
            print!("  last token attends to {}", best.join(", "));
        }
        println!();
    }
    if let Some(path) = &args.output {
        println!("full capture written to {}", path.display());
    } else if !captures.is_empty() {
        println!("(use --output FILE or --json for the captured values)");
    }
    Ok(())
}

/// The prompt of a vision-language model with its images: the user's text in the chat
/// template after the images, or a --raw text with `<image>` where each image goes.
pub(crate) fn vision_prompt(
    model: &VisionLanguageModel,
    prompt: &glassbox::Prompt,
    images: &[RgbImage],
    args: &ImageArgs,
) -> anyhow::Result<glassbox::vision::Prompt> {
    let text = if prompt.raw {
        prompt.user.clone()
    } else {
        model.chat_prompt_with_system(prompt.system.as_deref(), &prompt.user, images.len())?
    };
    Ok(model.prompt(&text, images, args.splitting())?.0)
}
