//! Arguments shared by commands: which model, and which prompt.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use glassbox::runtime::QuantFormat;
use glassbox::{AnyModel, DEFAULT_MODEL, Fetch, LoadOptions, Model, Prompt, WeightMode};

use crate::UsageError;
use crate::progress::Bars;

#[derive(Args, Debug, Clone)]
pub(crate) struct ModelArgs {
    /// Model: a built-in name (`glassbox models list`), a .gguf file, a Hugging Face
    /// directory, or hf:ORG/NAME. Built-in models are downloaded on first use.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// How weights are held: f32 (fast, needed for gradients), quantized (GGUF blocks as
    /// stored: less memory, slower), or q8_0/q4_k/q4_0 (f32 values after quantizing to that
    /// format and back, to see what quantization does to explanations).
    #[arg(long, value_enum, default_value_t = WeightsArg::F32)]
    pub weights: WeightsArg,
    /// Never download; fail if the model is not cached.
    #[arg(long)]
    pub offline: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightsArg {
    F32,
    Quantized,
    /// f32, after quantizing every matrix to q8_0 and back (what a q8_0 model computes).
    #[value(name = "q8_0")]
    Q8_0,
    /// f32 after q4_k (rows narrower than 256 fall back to q5_0, as in llama.cpp).
    #[value(name = "q4_k")]
    Q4K,
    /// f32 after q4_0.
    #[value(name = "q4_0")]
    Q4_0,
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<Model> {
        self.load_with(glassbox::load_model)
    }

    /// Loads a text or a vision-language model.
    pub fn load_any(&self) -> anyhow::Result<AnyModel> {
        self.load_with(glassbox::load_any_model)
    }

    fn load_with<M>(
        &self,
        load: impl Fn(&str, LoadOptions, Fetch, &dyn glassbox::Progress) -> Result<M, glassbox::Error>,
    ) -> anyhow::Result<M> {
        let options = LoadOptions {
            weights: match self.weights {
                WeightsArg::F32 => WeightMode::F32,
                WeightsArg::Quantized => WeightMode::Quantized,
                WeightsArg::Q8_0 => WeightMode::Requantized(QuantFormat::Q8_0),
                WeightsArg::Q4K => WeightMode::Requantized(QuantFormat::Q4K),
                WeightsArg::Q4_0 => WeightMode::Requantized(QuantFormat::Q4_0),
            },
        };
        let fetch = if self.offline {
            Fetch::Never
        } else {
            Fetch::IfMissing
        };
        let bars = Bars::new();
        bars_spinner(&bars, &format!("loading {}", self.model));
        let model = load(&self.model, options, fetch, &bars);
        glassbox::Progress::end(&bars);
        Ok(model?)
    }
}

fn bars_spinner(bars: &Bars, label: &str) {
    glassbox::Progress::begin(bars, label, None);
}

#[derive(Args, Debug, Clone)]
pub(crate) struct PromptArgs {
    /// The prompt (or use --prompt-file).
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, conflicts_with = "prompt")]
    pub prompt_file: Option<PathBuf>,
    /// A system message (chat models).
    #[arg(long)]
    pub system: Option<String>,
    /// Use the prompt as written, without the model's chat template.
    #[arg(long)]
    pub raw: bool,
}

impl PromptArgs {
    pub fn prompt(&self) -> anyhow::Result<Prompt> {
        let user = match (&self.prompt, &self.prompt_file) {
            (Some(p), None) => p.clone(),
            (None, Some(path)) => read_text(path)?,
            (None, None) => {
                return Err(UsageError("give a prompt, or --prompt-file FILE".into()).into());
            }
            (Some(_), Some(_)) => unreachable!("clap rejects both"),
        };
        if user.trim().is_empty() {
            return Err(UsageError("the prompt is empty".into()).into());
        }
        Ok(Prompt {
            system: self.system.clone(),
            user,
            raw: self.raw,
        })
    }
}

/// Reads a UTF-8 text file given by the user.
pub(crate) fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))
        .context("reading input")
}

/// Refuses to overwrite a file unless asked: output never replaces what the user has.
pub(crate) fn check_output(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        return Err(UsageError(format!(
            "{} exists; pass --force to overwrite it",
            path.display()
        ))
        .into());
    }
    Ok(())
}

/// The text to explain: given inline or read from a file.
#[derive(Args, Debug, Clone)]
pub(crate) struct InputText {
    /// The input text (or --input-file).
    #[arg(long, short, required_unless_present = "input_file")]
    input: Option<String>,
    /// Read the input text from a file.
    #[arg(long, conflicts_with = "input")]
    input_file: Option<PathBuf>,
}

impl InputText {
    pub fn text(&self) -> anyhow::Result<String> {
        match (&self.input, &self.input_file) {
            (Some(text), None) => Ok(text.clone()),
            (None, Some(path)) => read_text(path),
            _ => unreachable!("clap requires exactly one"),
        }
    }
}

/// Where a command writes its result, shared by `attribute`, `cite` and `self-explain`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ResultOutput {
    /// Write the JSON result here (cite --batch: one result per line).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Overwrite --output/--html if they exist.
    #[arg(long)]
    pub force: bool,
    /// Terminal output without colours (also when NO_COLOR is set or output is not a terminal).
    #[arg(long)]
    pub plain: bool,
}

impl ResultOutput {
    /// Refuses to start when a file would be overwritten without --force.
    pub fn check(&self) -> anyhow::Result<()> {
        for path in [&self.output, &self.html].into_iter().flatten() {
            check_output(path, self.force)?;
        }
        Ok(())
    }
}

/// Images for a vision-language model.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct ImageArgs {
    /// An image (PNG or JPEG) for a vision-language model; repeat for several. A chat prompt
    /// gets them before the text; a --raw prompt marks each one's place with `<image>`.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// Split large images into tiles plus a global image (default: as the model's processor
    /// is configured).
    #[arg(long, value_enum)]
    pub image_splitting: Option<OnOff>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnOff {
    On,
    Off,
}

impl ImageArgs {
    pub fn splitting(&self) -> Option<bool> {
        self.image_splitting.map(|s| s == OnOff::On)
    }

    /// Refuses images for a text-only model.
    pub fn check_text_model(&self, model: &Model) -> anyhow::Result<()> {
        if !self.images.is_empty() || self.image_splitting.is_some() {
            return Err(
                glassbox::vision::VisionError::NotMultimodal(model.info().name.clone()).into(),
            );
        }
        Ok(())
    }

    /// Decodes the images (before the model loads, so a bad file fails fast).
    pub fn decode(&self) -> anyhow::Result<Vec<glassbox::vision::RgbImage>> {
        Ok(self
            .images
            .iter()
            .map(|p| glassbox::vision::RgbImage::open(p))
            .collect::<Result<_, _>>()?)
    }
}
