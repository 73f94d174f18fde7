//! `glassbox models list|fetch|info`.

use clap::Subcommand;
use glassbox::models::{self, Cache, Fetch};
use serde::Serialize;

use crate::input::ModelArgs;
use crate::progress::Bars;
use crate::{Output, UsageError};

#[derive(Subcommand)]
pub(crate) enum ModelsCommand {
    /// Built-in models and whether they are downloaded.
    List,
    /// Download built-in models into the cache and verify their checksums.
    Fetch {
        /// Models to fetch (default: the default model).
        names: Vec<String>,
        /// Download again even if a verified copy exists.
        #[arg(long)]
        force: bool,
    },
    /// Load a model and describe it: architecture, sizes, tokenizer, chat template.
    Info(ModelArgs),
    /// Write a model as a Hugging Face directory (f32 safetensors, config.json, tokenizer).
    Export {
        #[command(flatten)]
        model: ModelArgs,
        /// Directory to create (it must not exist, or be empty).
        #[arg(long)]
        to: std::path::PathBuf,
    },
}

#[derive(Serialize)]
struct ListedModel {
    name: String,
    description: String,
    architecture: String,
    format: String,
    license: String,
    default: bool,
    cached: bool,
    path: Option<String>,
}

pub(crate) fn run(cmd: ModelsCommand, out: &Output) -> anyhow::Result<()> {
    let cache = Cache::from_env();
    match cmd {
        ModelsCommand::List => {
            let listed: Vec<ListedModel> = models::builtin_manifests()
                .into_iter()
                .map(|m| {
                    let status = models::cached_status(&m, &cache);
                    ListedModel {
                        default: m.name == models::DEFAULT_MODEL,
                        cached: status.as_ref().is_some_and(|s| s.1),
                        path: status.map(|s| s.0.display().to_string()),
                        name: m.name,
                        description: m.description,
                        architecture: m.architecture,
                        format: format!("{:?}", m.format).to_lowercase(),
                        license: m.license,
                    }
                })
                .collect();
            if out.json {
                return out.print_json(&listed);
            }
            println!(
                "{:<28} {:<8} {:<12} {:<10} description",
                "name", "arch", "format", "status"
            );
            for m in &listed {
                let status = match (&m.path, m.cached) {
                    (_, true) => "cached",
                    (Some(_), false) => "missing",
                    (None, _) => "hub",
                };
                let name = if m.default {
                    format!("{} (default)", m.name)
                } else {
                    m.name.clone()
                };
                println!(
                    "{name:<28} {:<8} {:<12} {status:<10} {} [{}]",
                    m.architecture, m.format, m.description, m.license
                );
            }
            println!("\ncache: {}", cache.root().display());
            Ok(())
        }
        ModelsCommand::Fetch { names, force } => {
            let names = if names.is_empty() {
                vec![models::DEFAULT_MODEL.to_string()]
            } else {
                names
            };
            let mut fetched = Vec::new();
            for name in &names {
                let manifest = models::find_manifest(name).ok_or_else(|| {
                    UsageError(format!(
                        "unknown model `{name}`; built-in models: {}",
                        models::builtin_manifests()
                            .iter()
                            .map(|m| m.name.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                let (_, path) =
                    glassbox::fetch_model(&manifest.name, Fetch::IfMissing, force, &Bars::new())?;
                if !out.json {
                    println!("{name}: {} (verified)", path.display());
                }
                fetched.push(serde_json::json!({"name": name, "path": path}));
            }
            if out.json {
                out.print_json(&fetched)?;
            }
            Ok(())
        }
        ModelsCommand::Export { model, to } => {
            let occupied = std::fs::read_dir(&to)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if occupied {
                return Err(UsageError(format!(
                    "{} exists and is not empty; choose a new directory",
                    to.display()
                ))
                .into());
            }
            let loaded = model.load()?;
            std::fs::create_dir_all(&to)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", to.display()))?;
            loaded.export_hf(&to)?;
            if out.json {
                return out.print_json(
                    &serde_json::json!({"written": to, "files": glassbox::runtime::EXPORTED_FILES}),
                );
            }
            println!("{} written to {}", loaded.info().name, to.display());
            Ok(())
        }
        ModelsCommand::Info(args) => {
            let model = args.load()?;
            let info = model.info();
            if out.json {
                return out.print_json(&serde_json::json!({
                    "info": info,
                    "vocab_size": model.tokenizer().vocab_size(),
                    "bos": model.tokenizer().bos_id(),
                    "eos": model.tokenizer().eos_id(),
                    "stop_ids": model.tokenizer().stop_ids(),
                }));
            }
            let c = &info.config;
            println!("model        {}", info.name);
            println!("file         {} ({})", info.path.display(), info.format);
            println!("architecture {} ({:?})", c.arch_name, c.architecture);
            println!(
                "parameters   {:.1} M, weights held as {:?}",
                info.parameters as f64 / 1e6,
                info.weights
            );
            println!(
                "layers       {} (hidden {}, mlp {}, heads {} / kv {} of {})",
                c.num_layers,
                c.hidden_size,
                c.intermediate_size,
                c.num_heads,
                c.num_kv_heads,
                c.head_dim
            );
            println!("context      {} tokens", c.context_length);
            if let Some(w) = c.sliding_window {
                println!(
                    "windows      {} tokens on all but every {}th layer",
                    w.size, w.pattern
                );
            }
            println!("vocabulary   {} tokens", model.tokenizer().vocab_size());
            println!(
                "chat         {}",
                if info.has_chat_template {
                    "chat template (prompts are wrapped unless --raw)"
                } else {
                    "none: a base model, prompts are used as written"
                }
            );
            Ok(())
        }
    }
}
