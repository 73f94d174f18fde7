//! A loaded model: weights, tokenizer and chat template, and the questions it answers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use glassbox_tokenizer::{ChatTemplate, GgufVocab, Tokenizer};
use serde::Serialize;

use crate::capture::{Array, Capture};
use crate::config::ModelConfig;
use crate::forward::{Row, RowOutput};
use crate::linear::Linear;
use crate::weights::{Embedding, GgufSource, SafetensorsSource, WeightMode, Weights, load_weights};
use crate::{RuntimeError, candle_message};

/// Options for loading a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    pub weights: WeightMode,
}

/// What was loaded, for reports and `models info`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub path: PathBuf,
    /// `gguf` or `safetensors`.
    pub format: &'static str,
    pub weights: WeightMode,
    pub parameters: usize,
    pub has_chat_template: bool,
    pub config: ModelConfig,
}

/// Where a decoder sits in a Hugging Face checkpoint.
#[derive(Debug, Clone)]
pub struct EmbeddedDecoder<'a> {
    /// The decoder's configuration, as a `config.json` of its own would hold it (for a
    /// vision-language model: its `text_config`, with `architectures` filled in).
    pub config: serde_json::Value,
    /// What stands for `model.` in the decoder's tensor names (`model.text_model.` in
    /// Idefics3, `model.language_model.` in LLaVA as Transformers 5 saves it).
    pub prefix: &'a str,
    /// The LM head's tensor name (tied to the embedding when absent).
    pub lm_head: &'a str,
}

/// A transformer LLM ready to run.
pub struct Model {
    config: ModelConfig,
    weights: Weights,
    tokenizer: Tokenizer,
    chat: Option<ChatTemplate>,
    info: ModelInfo,
}

impl Model {
    /// Loads a GGUF file (weights, tokenizer and chat template all come from it).
    pub fn load_gguf(path: &Path, name: &str, options: LoadOptions) -> Result<Self, RuntimeError> {
        let mut src = GgufSource::open(path)?;
        let origin = path.display().to_string();
        let config = ModelConfig::from_gguf(src.metadata(), &origin)?;
        let vocab = gguf_vocab(src.metadata(), &origin)?;
        let tokenizer = Tokenizer::from_gguf(&vocab)?;
        let chat = gguf_chat_template(src.metadata(), &origin, &tokenizer)?;
        let weights = load_weights(&mut src, &config, options.weights)?;
        Self::assemble(
            config, weights, tokenizer, chat, name, path, "gguf", options,
        )
    }

    /// Loads a Hugging Face model directory: `config.json`, `tokenizer.json`, optional
    /// `tokenizer_config.json` (special tokens, chat template) and `*.safetensors`.
    pub fn load_hf_dir(dir: &Path, name: &str, options: LoadOptions) -> Result<Self, RuntimeError> {
        let config_path = dir.join("config.json");
        let json = read_json(&config_path)?;
        let decoder = EmbeddedDecoder {
            config: json,
            prefix: "model.",
            lm_head: "lm_head.weight",
        };
        Self::load_hf_decoder(dir, decoder, name, options)
    }

    /// Loads the decoder of a Hugging Face checkpoint that may hold more than a decoder (the
    /// text model of a vision-language model): its configuration and tensor names are given,
    /// the tokenizer and chat template come from the directory as for [`Model::load_hf_dir`].
    pub fn load_hf_decoder(
        dir: &Path,
        decoder: EmbeddedDecoder<'_>,
        name: &str,
        options: LoadOptions,
    ) -> Result<Self, RuntimeError> {
        if options.weights == WeightMode::Quantized {
            return Err(RuntimeError::Unsupported(
                "quantized weights are read from GGUF files; use `--weights f32` for a \
                 safetensors directory"
                    .into(),
            ));
        }
        let config_path = dir.join("config.json");
        let config =
            ModelConfig::from_hf_json(&decoder.config, &config_path.display().to_string())?;
        let tok_config = dir.join("tokenizer_config.json");
        let tok_config = tok_config.is_file().then_some(tok_config);
        let tokenizer =
            Tokenizer::from_hf_files(&dir.join("tokenizer.json"), tok_config.as_deref())?;
        let chat = hf_chat_template(dir, tok_config.as_deref())?
            .map(|t| chat_template(&t, &tokenizer))
            .transpose()?;
        let mut src = SafetensorsSource::open(dir, decoder.prefix, decoder.lm_head)?;
        let weights = load_weights(&mut src, &config, options.weights)?;
        Self::assemble(
            config,
            weights,
            tokenizer,
            chat,
            name,
            dir,
            "safetensors",
            options,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: ModelConfig,
        weights: Weights,
        tokenizer: Tokenizer,
        chat: Option<ChatTemplate>,
        name: &str,
        path: &Path,
        format: &'static str,
        options: LoadOptions,
    ) -> Result<Self, RuntimeError> {
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(RuntimeError::BadConfig {
                origin: path.display().to_string(),
                key: "vocab_size".into(),
                message: format!(
                    "the tokenizer has {} tokens but the model only {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        // A re-quantized model is another model: its results say so in their model name.
        let name = match options.weights {
            WeightMode::Requantized(format) => format!("{name}@{}", format.name()),
            WeightMode::F32 | WeightMode::Quantized => name.to_string(),
        };
        let info = ModelInfo {
            name,
            path: path.to_path_buf(),
            format,
            weights: options.weights,
            parameters: weights.parameters,
            has_chat_template: chat.is_some(),
            config: config.clone(),
        };
        Ok(Self {
            config,
            weights,
            tokenizer,
            chat,
            info,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub(crate) fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The instrumented forward pass over a batch (see [`Row`] and [`Capture`]).
    pub fn forward(
        &self,
        rows: Vec<Row>,
        capture: &Capture,
    ) -> Result<Vec<RowOutput>, RuntimeError> {
        crate::forward::forward(self, rows, capture)
    }

    /// Input embeddings of `ids` as the first block sees them (scaled where the architecture
    /// scales them), `[tokens, hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Array, RuntimeError> {
        let d = self.config.hidden_size;
        if let Some(&bad) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(RuntimeError::BadTokenId {
                id: bad,
                vocab: self.config.vocab_size,
            });
        }
        let mut data = vec![0f32; ids.len() * d];
        self.weights.embed_into(ids, d, &mut data);
        if let Some(scale) = self.config.embedding_scale {
            data.iter_mut().for_each(|v| *v *= scale);
        }
        Ok(Array::new(vec![ids.len(), d], data))
    }

    /// Row `token` of the LM head (`logit = hidden · row`), e.g. for token activation maps.
    pub fn lm_head_row(&self, token: u32) -> Result<Vec<f32>, RuntimeError> {
        if token as usize >= self.config.vocab_size {
            return Err(RuntimeError::BadTokenId {
                id: token,
                vocab: self.config.vocab_size,
            });
        }
        let mut row = vec![0f32; self.config.hidden_size];
        match (&self.weights.lm_head, &self.weights.embedding) {
            (Linear::Packed(m), _) => m.copy_row(token as usize, &mut row),
            (Linear::Quantized(..), Embedding::Dense(_)) if self.config.tied_embeddings => self
                .weights
                .embed_into(&[token], self.config.hidden_size, &mut row),
            _ => {
                return Err(RuntimeError::Unsupported(
                    "LM-head rows of an untied quantized head: load with `--weights f32`".into(),
                ));
            }
        }
        Ok(row)
    }

    /// Token ids of a prompt, with BOS when the model wants one.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        if text.is_empty() {
            return Err(RuntimeError::EmptyInput);
        }
        Ok(self.tokenizer.encode(text, self.tokenizer.wants_bos())?.ids)
    }

    /// Renders a conversation with the model's own chat template (messages are
    /// [`crate::ChatMessage`]s or whatever shape the template reads).
    pub fn render_chat<M: Serialize>(
        &self,
        messages: &[M],
        add_generation_prompt: bool,
    ) -> Result<String, RuntimeError> {
        let template = self
            .chat
            .as_ref()
            .ok_or_else(|| RuntimeError::NoChatTemplate(self.info.name.clone()))?;
        Ok(template.render(messages, add_generation_prompt)?)
    }

    pub(crate) fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// Whether the model has a chat template (instruction-tuned) or is a base model.
    pub fn has_chat_template(&self) -> bool {
        self.chat.is_some()
    }
}

/// The tokenizer and chat template of a GGUF file, without loading its weights.
pub fn gguf_tokenizer(path: &Path) -> Result<(Tokenizer, Option<ChatTemplate>), RuntimeError> {
    let src = GgufSource::open(path)?;
    let origin = path.display().to_string();
    let tokenizer = Tokenizer::from_gguf(&gguf_vocab(src.metadata(), &origin)?)?;
    let chat = gguf_chat_template(src.metadata(), &origin, &tokenizer)?;
    Ok((tokenizer, chat))
}

fn gguf_chat_template(
    md: &HashMap<String, Value>,
    origin: &str,
    tokenizer: &Tokenizer,
) -> Result<Option<ChatTemplate>, RuntimeError> {
    match md.get("tokenizer.chat_template") {
        Some(v) => {
            let template = v.to_string().map_err(|e| RuntimeError::BadConfig {
                origin: origin.to_string(),
                key: "tokenizer.chat_template".into(),
                message: candle_message(e),
            })?;
            Ok(Some(chat_template(template, tokenizer)?))
        }
        None => Ok(None),
    }
}

fn chat_template(source: &str, tokenizer: &Tokenizer) -> Result<ChatTemplate, RuntimeError> {
    let token = |id: Option<u32>| id.and_then(|i| tokenizer.token_str(i));
    Ok(ChatTemplate::new(
        source,
        token(tokenizer.bos_id()),
        token(tokenizer.eos_id()),
    )?)
}

/// A model directory's chat template, wherever Transformers put it: `chat_template.jinja`
/// (Transformers 5), `chat_template.json` (processors of multimodal models), or the
/// `chat_template` of `tokenizer_config.json` (a string, or named templates of which `default`
/// is used).
fn hf_chat_template(dir: &Path, tok_config: Option<&Path>) -> Result<Option<String>, RuntimeError> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| RuntimeError::io(&jinja, e));
    }
    let processor = dir.join("chat_template.json");
    let json = if processor.is_file() {
        read_json(&processor)?
    } else if let Some(path) = tok_config {
        read_json(path)?
    } else {
        return Ok(None);
    };
    Ok(match &json["chat_template"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(String::from),
        _ => None,
    })
}

/// A JSON file, with errors that name it.
pub fn read_json(path: &Path) -> Result<serde_json::Value, RuntimeError> {
    let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| RuntimeError::BadConfig {
        origin: path.display().to_string(),
        key: "(file)".into(),
        message: format!("not valid JSON: {e}"),
    })
}

/// The tokenizer description in GGUF metadata, as plain data for the tokenizer crate.
fn gguf_vocab(md: &HashMap<String, Value>, origin: &str) -> Result<GgufVocab, RuntimeError> {
    let bad = |key: &str, message: String| RuntimeError::BadConfig {
        origin: origin.to_string(),
        key: key.to_string(),
        message,
    };
    let get = |key: &str| md.get(key);
    let string = |key: &str| get(key).and_then(|v| v.to_string().ok()).cloned();
    let id = |key: &str| get(key).and_then(|v| v.to_u32().ok());
    let flag = |key: &str| get(key).and_then(|v| v.to_bool().ok());
    let array = |key: &str| -> Result<Option<&Vec<Value>>, RuntimeError> {
        match get(key) {
            None => Ok(None),
            Some(v) => v
                .to_vec()
                .map(Some)
                .map_err(|e| bad(key, candle_message(e))),
        }
    };
    let strings = |key: &str| -> Result<Option<Vec<String>>, RuntimeError> {
        array(key)?
            .map(|a| {
                a.iter()
                    .map(|v| {
                        v.to_string()
                            .cloned()
                            .map_err(|e| bad(key, candle_message(e)))
                    })
                    .collect()
            })
            .transpose()
    };
    let model = string("tokenizer.ggml.model").ok_or_else(|| {
        bad(
            "tokenizer.ggml.model",
            "missing: the GGUF has no tokenizer".into(),
        )
    })?;
    let tokens = strings("tokenizer.ggml.tokens")?
        .ok_or_else(|| bad("tokenizer.ggml.tokens", "missing".into()))?;
    let scores = array("tokenizer.ggml.scores")?
        .map(|a| {
            a.iter()
                .map(|v| {
                    v.to_f32()
                        .map_err(|e| bad("tokenizer.ggml.scores", candle_message(e)))
                })
                .collect::<Result<Vec<f32>, _>>()
        })
        .transpose()?;
    let token_types = array("tokenizer.ggml.token_type")?
        .map(|a| {
            a.iter()
                .map(|v| {
                    v.to_i32()
                        .map_err(|e| bad("tokenizer.ggml.token_type", candle_message(e)))
                })
                .collect::<Result<Vec<i32>, _>>()
        })
        .transpose()?;
    Ok(GgufVocab {
        model,
        pre: string("tokenizer.ggml.pre"),
        tokens,
        scores,
        token_types,
        merges: strings("tokenizer.ggml.merges")?,
        bos_id: id("tokenizer.ggml.bos_token_id"),
        eos_id: id("tokenizer.ggml.eos_token_id"),
        unk_id: id("tokenizer.ggml.unknown_token_id"),
        pad_id: id("tokenizer.ggml.padding_token_id"),
        add_bos: flag("tokenizer.ggml.add_bos_token"),
        add_eos: flag("tokenizer.ggml.add_eos_token"),
        add_space_prefix: flag("tokenizer.ggml.add_space_prefix"),
    })
}
