//! A vision-language model: a vision tower and connector that turn images into input
//! embeddings, and the runtime's text decoder that reads them among the prompt's tokens.

use std::ops::Range;
use std::path::Path;

use glassbox_runtime::{
    Capture, ContinuationScore, EmbeddedDecoder, GenerateOptions, Generation, KvCache, LoadOptions,
    LogitsAt, Model, Row, RuntimeError,
};
use serde::Serialize;
use serde_json::Value;

use crate::error::VisionError;
use crate::image::RgbImage;
use crate::processor::{
    FixedProcessing, IMAGE_TOKEN, Idefics3Processing, ProcessedImage, Processing,
};
use crate::tensors::{Dense, Tensors};
use crate::tower::{TowerConfig, VisionTower};

/// Architectures (`config.json`'s `architectures`) this crate loads.
pub const SUPPORTED_ARCHITECTURES: [&str; 2] = [
    "Idefics3ForConditionalGeneration",
    "LlavaForConditionalGeneration",
];

/// Where a checkpoint keeps its parts. Transformers 5 writes LLaVA as `model.vision_tower.…`,
/// `model.language_model.…` or in the older `vision_tower.vision_model.…`,
/// `language_model.model.…` layout; both are read.
struct Names {
    tower: &'static str,
    connector: &'static str,
    text: &'static str,
    lm_head: &'static str,
}

impl Names {
    fn find(architecture: &str, tensors: &Tensors) -> Self {
        if architecture != "LlavaForConditionalGeneration" {
            return Self {
                tower: "model.vision_model.",
                connector: "model.connector.",
                text: "model.text_model.",
                lm_head: "lm_head.weight",
            };
        }
        let first = |candidates: &[&'static str], probe: &str| -> &'static str {
            candidates
                .iter()
                .find(|c| tensors.has(&format!("{c}{probe}")))
                .copied()
                .unwrap_or(candidates[0])
        };
        Self {
            tower: first(
                &[
                    "model.vision_tower.vision_model.",
                    "model.vision_tower.",
                    "vision_tower.vision_model.",
                    "vision_tower.",
                ],
                "embeddings.patch_embedding.weight",
            ),
            connector: first(
                &["model.multi_modal_projector.", "multi_modal_projector."],
                "linear_1.weight",
            ),
            text: first(
                &["model.language_model.", "language_model.model."],
                "embed_tokens.weight",
            ),
            lm_head: ["lm_head.weight", "language_model.lm_head.weight"]
                .into_iter()
                .find(|n| tensors.has(n))
                .unwrap_or("lm_head.weight"),
        }
    }
}

/// Whether `dir` holds a vision-language checkpoint (whose `config.json` names a multimodal
/// architecture or has a `vision_config`), so callers can pick the loader.
pub fn is_vision_checkpoint(dir: &Path) -> bool {
    glassbox_runtime::read_json(&dir.join("config.json"))
        .map(|c| c.get("vision_config").is_some_and(|v| v.is_object()))
        .unwrap_or(false)
}

/// How tower features become text-model input embeddings.
enum Connector {
    /// Idefics3: pixel shuffle (each `scale × scale` block of patches becomes one token with
    /// `scale²` times the features), then one linear projection.
    PixelShuffle { scale: usize, proj: Dense },
    /// LLaVA: a two-layer MLP with exact GELU between, per patch.
    Mlp { first: Dense, second: Dense },
}

impl Connector {
    /// `[tiles, tokens, text_hidden]` of tower features `[tiles, grid², d]`.
    fn forward(&self, features: &[f32], tiles: usize, grid: usize, d: usize) -> Vec<f32> {
        match self {
            Connector::PixelShuffle { scale, proj } => {
                let s = *scale;
                let g = grid / s;
                let width = d * s * s;
                let mut shuffled = vec![0f32; tiles * g * g * width];
                for t in 0..tiles {
                    for row in 0..grid {
                        for col in 0..grid {
                            let src = &features[((t * grid + row) * grid + col) * d..][..d];
                            let token = (t * g + row / s) * g + col / s;
                            let slot = (row % s) * s + col % s;
                            shuffled[token * width + slot * d..][..d].copy_from_slice(src);
                        }
                    }
                }
                proj.apply(&shuffled, tiles * g * g)
            }
            Connector::Mlp { first, second } => {
                let rows = tiles * grid * grid;
                let mut h = first.apply(features, rows);
                glassbox_kernels::math::gelu_erf_in_place(&mut h);
                second.apply(&h, rows)
            }
        }
    }

    /// Token-grid side of a tile.
    fn grid(&self, tower_grid: usize) -> usize {
        match self {
            Connector::PixelShuffle { scale, .. } => tower_grid / scale,
            Connector::Mlp { .. } => tower_grid,
        }
    }
}

/// Where one tile's tokens sit in a prompt.
#[derive(Debug, Clone, Serialize)]
pub struct TileTokens {
    /// `split` tiles carry their place in the split grid; `global` is the whole image.
    pub kind: TileKind,
    /// Positions of the tile's image tokens in the prompt.
    pub positions: Range<usize>,
    /// Rows × columns of the tile's token grid (row-major over `positions`).
    pub grid: (usize, usize),
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TileKind {
    Split { row: usize, col: usize },
    Global,
}

/// Where one image's tokens sit in a prompt.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlacement {
    pub width: u32,
    pub height: u32,
    /// The split grid (0 × 0 when unsplit).
    pub rows: usize,
    pub cols: usize,
    pub tiles: Vec<TileTokens>,
}

/// A prompt with its images in it, ready for the decoder.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The prompt text with each image's placeholder expanded to its tokens.
    pub text: String,
    /// Token ids, image tokens included.
    pub ids: Vec<u32>,
    /// Each token's character range in `text`.
    pub offsets: Vec<(usize, usize)>,
    /// Input embeddings `[ids, hidden]`: token embeddings with image features in place.
    pub embeddings: Vec<f32>,
    pub images: Vec<ImagePlacement>,
}

impl Prompt {
    /// Positions of the tokens inside the last occurrence of `part` in the prompt text (the
    /// user's question, say); empty when it does not occur.
    pub fn positions_of(&self, part: &str) -> Vec<usize> {
        let Some(start) = self.text.rfind(part).filter(|_| !part.is_empty()) else {
            return Vec::new();
        };
        // Offsets count characters.
        let start = self.text[..start].chars().count();
        let end = start + part.chars().count();
        (0..self.ids.len())
            .filter(|&i| {
                let (a, b) = self.offsets[i];
                a >= start && b <= end && b > a
            })
            .collect()
    }

    /// Every image-token position, in order.
    pub fn image_positions(&self) -> Vec<usize> {
        self.images
            .iter()
            .flat_map(|i| i.tiles.iter().flat_map(|t| t.positions.clone()))
            .collect()
    }
}

/// What the vision side computed for a prompt's images (for conformance checks and
/// explanations that look inside).
#[derive(Debug, Clone)]
pub struct ImageFeatures {
    /// Tiles of every image in order, channel-first.
    pub pixels: Vec<Vec<f32>>,
    /// Tower output `[tiles, patches, vision_hidden]`.
    pub tower: Vec<f32>,
    /// Connector output `[tiles, tokens, text_hidden]`.
    pub tokens: Vec<f32>,
}

/// A loaded vision-language model.
pub struct VisionLanguageModel {
    text: Model,
    tower: VisionTower,
    connector: Connector,
    processing: Processing,
    image_token: u32,
    architecture: String,
}

impl VisionLanguageModel {
    /// Loads a Hugging Face model directory (`config.json`, `*.safetensors`, `tokenizer.json`,
    /// processor settings, chat template).
    pub fn load(dir: &Path, name: &str, options: LoadOptions) -> Result<Self, VisionError> {
        let config_path = dir.join("config.json");
        let config = glassbox_runtime::read_json(&config_path)?;
        let architecture = config["architectures"][0]
            .as_str()
            .unwrap_or("(config.json has no `architectures`)")
            .to_string();
        if !SUPPORTED_ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(VisionError::UnsupportedArchitecture {
                name: architecture,
                supported: SUPPORTED_ARCHITECTURES.join(", "),
            });
        }
        let text_config = decoder_config(&config, &config_path)?;
        let tensors = Tensors::open(dir)?;
        let names = Names::find(&architecture, &tensors);
        let text = Model::load_hf_decoder(
            dir,
            EmbeddedDecoder {
                config: text_config,
                prefix: names.text,
                lm_head: names.lm_head,
            },
            name,
            options,
        )?;
        let mut tower_config = TowerConfig::from_json(&config["vision_config"], &config_path)?;
        let d = tower_config.hidden_size;
        let text_hidden = text.config().hidden_size;
        let llava = architecture == "LlavaForConditionalGeneration";
        let (connector, processing, post_norm) = if llava {
            // The tower's hidden state after `vision_feature_layer` layers (negative: from the
            // end), without the final layer norm; only those layers are loaded.
            let layers = tower_config.num_layers as i64;
            let feature = config["vision_feature_layer"].as_i64().unwrap_or(-2);
            let keep = if feature < 0 {
                layers + 1 + feature
            } else {
                feature
            };
            if !(0..=layers).contains(&keep) {
                return Err(VisionError::bad_config(
                    &config_path,
                    "vision_feature_layer",
                    format!("{feature} is outside the tower's {layers} layers"),
                ));
            }
            let strategy = config["vision_feature_select_strategy"]
                .as_str()
                .unwrap_or("default");
            if strategy != "full" {
                return Err(VisionError::bad_config(
                    &config_path,
                    "vision_feature_select_strategy",
                    format!(
                        "`{strategy}` drops a class token, which SigLIP towers do not have; \
                         use `full` (CLIP towers are not implemented)"
                    ),
                ));
            }
            if config["projector_hidden_act"].as_str().unwrap_or("gelu") != "gelu" {
                return Err(VisionError::bad_config(
                    &config_path,
                    "projector_hidden_act",
                    "only `gelu` is implemented",
                ));
            }
            tower_config.num_layers = keep as usize;
            let bias = config["multimodal_projector_bias"]
                .as_bool()
                .unwrap_or(true);
            let connector = Connector::Mlp {
                first: tensors.linear(
                    &format!("{}linear_1", names.connector),
                    text_hidden,
                    d,
                    bias,
                )?,
                second: tensors.linear(
                    &format!("{}linear_2", names.connector),
                    text_hidden,
                    text_hidden,
                    bias,
                )?,
            };
            let processing =
                Processing::Fixed(FixedProcessing::from_dir(dir, tower_config.patches())?);
            (connector, processing, false)
        } else {
            let scale = config["scale_factor"].as_u64().unwrap_or(2) as usize;
            let grid = tower_config.grid();
            if scale == 0 || !grid.is_multiple_of(scale) {
                return Err(VisionError::bad_config(
                    &config_path,
                    "scale_factor",
                    format!("must divide the tower's {grid}-patch grid"),
                ));
            }
            let processing = Idefics3Processing::from_dir(dir)?;
            if processing.tile as usize != tower_config.image_size {
                return Err(VisionError::bad_config(
                    &config_path,
                    "max_image_size",
                    format!(
                        "tiles of {} pixels do not fit the tower's {}",
                        processing.tile, tower_config.image_size
                    ),
                ));
            }
            let proj = tensors.linear(
                &format!("{}modality_projection.proj", names.connector),
                text_hidden,
                d * scale * scale,
                false,
            )?;
            let connector = Connector::PixelShuffle { scale, proj };
            (connector, Processing::Idefics3(processing), true)
        };
        let tokens_per_tile = connector.grid(tower_config.grid()).pow(2);
        if processing.tokens_per_tile() != tokens_per_tile {
            return Err(VisionError::bad_config(
                &config_path,
                "image_seq_len",
                format!(
                    "the processor writes {} image tokens a tile but the connector makes {tokens_per_tile}",
                    processing.tokens_per_tile()
                ),
            ));
        }
        if let Processing::Fixed(p) = &processing
            && (p.width as usize != tower_config.image_size
                || p.height as usize != tower_config.image_size)
        {
            return Err(VisionError::bad_config(
                &config_path,
                "size",
                format!(
                    "images of {}×{} do not fit the tower's {}",
                    p.width, p.height, tower_config.image_size
                ),
            ));
        }
        let image_token = text.tokenizer().token_id(IMAGE_TOKEN).ok_or_else(|| {
            VisionError::bad_config(dir, "tokenizer.json", "has no `<image>` token")
        })?;
        if let Some(id) = config["image_token_id"]
            .as_u64()
            .or(config["image_token_index"].as_u64())
            && id != image_token as u64
        {
            return Err(VisionError::bad_config(
                &config_path,
                "image_token_id",
                format!("is {id} but the tokenizer's `<image>` is {image_token}"),
            ));
        }
        let tower = VisionTower::load(&tensors, names.tower, tower_config, post_norm)?;
        Ok(Self {
            text,
            tower,
            connector,
            processing,
            image_token,
            architecture,
        })
    }

    /// The text decoder (for everything that runs on input embeddings).
    pub fn text(&self) -> &Model {
        &self.text
    }

    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    pub fn processing(&self) -> &Processing {
        &self.processing
    }

    pub fn tower(&self) -> &VisionTower {
        &self.tower
    }

    /// A chat prompt with `images` image slots before `question`, in the model's template (or
    /// the slots then the question when it has none).
    pub fn chat_prompt(&self, question: &str, images: usize) -> Result<String, VisionError> {
        self.chat_prompt_with_system(None, question, images)
    }

    /// [`VisionLanguageModel::chat_prompt`] with a system message first.
    pub fn chat_prompt_with_system(
        &self,
        system: Option<&str>,
        question: &str,
        images: usize,
    ) -> Result<String, VisionError> {
        if !self.text.has_chat_template() {
            return Ok(format!("{}{question}", IMAGE_TOKEN.repeat(images)));
        }
        let mut content: Vec<Value> = (0..images)
            .map(|_| serde_json::json!({"type": "image"}))
            .collect();
        content.push(serde_json::json!({"type": "text", "text": question}));
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(serde_json::json!({
                "role": "system",
                "content": [{"type": "text", "text": system}],
            }));
        }
        messages.push(serde_json::json!({"role": "user", "content": content}));
        Ok(self.text.render_chat(&messages, true)?)
    }

    /// Log-probabilities of `continuation` after `prompt` (teacher forcing, one pass).
    pub fn score(
        &self,
        prompt: &Prompt,
        continuation: &[u32],
    ) -> Result<ContinuationScore, VisionError> {
        if continuation.is_empty() || prompt.ids.is_empty() {
            return Err(RuntimeError::EmptyInput.into());
        }
        let n = prompt.ids.len();
        let mut embeddings = prompt.embeddings.clone();
        embeddings.extend(self.text.embed(continuation)?.data);
        let row = Row::embeddings(embeddings)
            .with_logits(LogitsAt::Range(n - 1..n - 1 + continuation.len()))
            .with_score(continuation.to_vec());
        let scores = self
            .text
            .forward(vec![row], &Capture::none())?
            .remove(0)
            .scores
            .expect("scores were asked for");
        Ok(ContinuationScore {
            tokens: continuation.to_vec(),
            logprobs: scores.iter().map(|s| s.logprob).collect(),
            argmax: scores.iter().map(|s| s.argmax).collect(),
        })
    }

    /// Processes `images` (tiles, split grid) as the model's processor does; `splitting`
    /// overrides the processor's setting.
    pub fn process(
        &self,
        images: &[RgbImage],
        splitting: Option<bool>,
    ) -> Result<Vec<ProcessedImage>, VisionError> {
        images
            .iter()
            .map(|i| self.processing.process(i, splitting))
            .collect()
    }

    /// The tiles of processed images through the tower and connector.
    pub fn image_features(&self, processed: &[ProcessedImage]) -> ImageFeatures {
        let pixels: Vec<Vec<f32>> = processed.iter().flat_map(|p| p.tiles.clone()).collect();
        let tower = self.tower.forward(&pixels);
        let c = self.tower.config();
        let tokens = self
            .connector
            .forward(&tower, pixels.len(), c.grid(), c.hidden_size);
        debug_assert_eq!(
            tokens.len(),
            pixels.len() * self.connector.grid(c.grid()).pow(2) * self.text.config().hidden_size
        );
        ImageFeatures {
            pixels,
            tower,
            tokens,
        }
    }

    /// Puts `images` into `prompt`, whose `<image>` placeholders (one per image) mark where;
    /// `splitting` overrides the processor's setting.
    pub fn prompt(
        &self,
        prompt: &str,
        images: &[RgbImage],
        splitting: Option<bool>,
    ) -> Result<(Prompt, ImageFeatures), VisionError> {
        let processed = self.process(images, splitting)?;
        let sizes: Vec<(u32, u32)> = images.iter().map(|i| (i.width, i.height)).collect();
        self.prompt_processed(prompt, &processed, &sizes)
    }

    /// [`VisionLanguageModel::prompt`] for images already processed (`sizes`: each image's
    /// width and height before processing).
    pub fn prompt_processed(
        &self,
        prompt: &str,
        processed: &[ProcessedImage],
        sizes: &[(u32, u32)],
    ) -> Result<(Prompt, ImageFeatures), VisionError> {
        let slots = prompt.matches(IMAGE_TOKEN).count();
        if slots != processed.len() {
            return Err(VisionError::ImageCount {
                slots,
                images: processed.len(),
            });
        }
        let features = self.image_features(processed);
        let mut text = String::new();
        for (i, part) in prompt.split(IMAGE_TOKEN).enumerate() {
            if i > 0 {
                text.push_str(&self.processing.image_text(&processed[i - 1]));
            }
            text.push_str(part);
        }
        let tokenizer = self.text.tokenizer();
        let encoding = tokenizer
            .encode(&text, tokenizer.wants_bos())
            .map_err(RuntimeError::from)?;
        let (ids, offsets) = (encoding.ids, encoding.offsets);
        let mut embeddings = self.text.embed(&ids)?.data;
        let d = self.text.config().hidden_size;
        let slots: Vec<usize> = (0..ids.len())
            .filter(|&i| ids[i] == self.image_token)
            .collect();
        let per_tile = self.processing.tokens_per_tile();
        if slots.len() != features.pixels.len() * per_tile {
            return Err(VisionError::Runtime(RuntimeError::InvalidRequest(format!(
                "the prompt has {} image tokens but the images make {}; write images only as \
                 `<image>` placeholders",
                slots.len(),
                features.pixels.len() * per_tile
            ))));
        }
        for (k, &pos) in slots.iter().enumerate() {
            embeddings[pos * d..(pos + 1) * d]
                .copy_from_slice(&features.tokens[k * d..(k + 1) * d]);
        }
        let side = (per_tile as f64).sqrt() as usize;
        let mut next = slots.iter();
        let images = sizes
            .iter()
            .zip(processed)
            .map(|(&(width, height), p)| {
                let kinds = (0..p.rows)
                    .flat_map(|row| (0..p.cols).map(move |col| TileKind::Split { row, col }))
                    .chain(std::iter::once(TileKind::Global));
                let tiles = kinds
                    .take(p.tiles.len())
                    .map(|kind| {
                        let first = *next.next().expect("slots counted above");
                        next.nth(per_tile - 2);
                        TileTokens {
                            kind,
                            positions: first..first + per_tile,
                            grid: (side, side),
                        }
                    })
                    .collect();
                ImagePlacement {
                    width,
                    height,
                    rows: p.rows,
                    cols: p.cols,
                    tiles,
                }
            })
            .collect();
        Ok((
            Prompt {
                text,
                ids,
                offsets,
                embeddings,
                images,
            },
            features,
        ))
    }

    /// Generates a reply to `prompt` (see [`generate_from_embeddings`]).
    pub fn generate(
        &self,
        prompt: &Prompt,
        options: &GenerateOptions,
    ) -> Result<Generation, VisionError> {
        if prompt.ids.last() == Some(&self.image_token) {
            return Err(RuntimeError::InvalidRequest(
                "the prompt ends with an image token; end it with text".into(),
            )
            .into());
        }
        Ok(generate_from_embeddings(
            &self.text,
            &prompt.ids,
            &prompt.embeddings,
            options,
        )?)
    }
}

/// Generates after a prompt given as input embeddings (`[ids, hidden]`; `ids` are the tokens,
/// whose last one must be a real token): all but the last position are prefilled from the
/// embeddings, and decoding continues from that cache with the runtime's generator.
pub fn generate_from_embeddings(
    text: &Model,
    ids: &[u32],
    embeddings: &[f32],
    options: &GenerateOptions,
) -> Result<Generation, RuntimeError> {
    let d = text.config().hidden_size;
    let n = ids.len();
    let last = *ids.last().ok_or(RuntimeError::EmptyInput)?;
    let past: Option<KvCache> = if n > 1 {
        let row = Row::embeddings(embeddings[..(n - 1) * d].to_vec()).with_logits(LogitsAt::None);
        text.forward(vec![row], &Capture::kv())?.remove(0).kv
    } else {
        None
    };
    let start = glassbox_runtime::Continuation {
        past,
        tokens: vec![last],
        positions: None,
    };
    Ok(text.generate_continuations(vec![start], options)?.remove(0))
}

/// The decoder's own `config.json` made from a multimodal config's `text_config`.
fn decoder_config(config: &Value, origin: &Path) -> Result<Value, VisionError> {
    let mut text = config["text_config"].clone();
    let object = text.as_object_mut().ok_or_else(|| {
        VisionError::bad_config(origin, "text_config", "missing or not an object")
    })?;
    if !object.contains_key("architectures") {
        let model_type = object
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("llama");
        let arch = match model_type {
            "llama" => "LlamaForCausalLM",
            "qwen2" => "Qwen2ForCausalLM",
            "mistral" => "MistralForCausalLM",
            other => {
                return Err(VisionError::bad_config(
                    origin,
                    "text_config.model_type",
                    format!("text model `{other}` is not supported (llama, qwen2, mistral are)"),
                ));
            }
        };
        object.insert("architectures".into(), serde_json::json!([arch]));
    }
    // Idefics3 sets the text model's norm epsilon to 1e-5 when its config leaves it out.
    object
        .entry("rms_norm_eps")
        .or_insert(serde_json::json!(1e-5));
    if let Some(tied) = config.get("tie_word_embeddings") {
        object.entry("tie_word_embeddings").or_insert(tied.clone());
    }
    Ok(text)
}
