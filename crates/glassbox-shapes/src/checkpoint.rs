//! The known-content model as a Hugging Face `LlavaForConditionalGeneration` directory: the
//! text model's exported weights under `model.language_model.`, the trained front end, a
//! tokenizer with `<image>` added, and the processor settings and chat template.
//!
//! The text model gains one vocabulary row for `<image>`. Its embedding is never read (image
//! positions get the front end's vectors) and, the head being tied, its logit is 0: with
//! SmolLM2's logits of the likely tokens far above 0 it takes a negligible share of
//! probability. Everything else equals the base model.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use glassbox_runtime::{Model, RuntimeError};
use serde_json::{Value, json};

use crate::frontend::{GRID, PATCH, PATCHES, VISION_HIDDEN};
use crate::scene::SIZE;
use crate::train::CHAT_TEMPLATE;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{}: {message}", path.display())]
    Io {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("writing tensors: {0}")]
    Tensors(#[from] candle_core::Error),
    #[error("the exported text model is not as expected: {0}")]
    Unexpected(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |e| CheckpointError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn read_json(path: &Path) -> Result<Value, CheckpointError> {
    Ok(glassbox_runtime::read_json(path)?)
}

fn write_json(path: &Path, value: &Value) -> Result<(), CheckpointError> {
    std::fs::write(
        path,
        serde_json::to_string_pretty(value).expect("JSON serialises"),
    )
    .map_err(io(path))
}

/// Writes the checkpoint of `base` (the frozen text model, f32) with the front end in
/// `vision` (safetensors bytes of [`crate::FrontEnd::save`]) into `dir`, which must exist and
/// be empty.
pub fn write_checkpoint(base: &Model, vision: &[u8], dir: &Path) -> Result<(), CheckpointError> {
    base.export_hf(dir)?;
    let weights_path = dir.join("model.safetensors");
    let exported = candle_core::safetensors::load(&weights_path, &Device::Cpu)?;
    let vocab = base.config().vocab_size;
    let image_token = vocab as u32;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in exported {
        let Some(rest) = name.strip_prefix("model.") else {
            return Err(CheckpointError::Unexpected(format!("tensor {name}")));
        };
        let t = if rest == "embed_tokens.weight" {
            // One more row, for `<image>`.
            let d = t.dim(1)?;
            Tensor::cat(&[&t, &Tensor::zeros((1, d), DType::F32, &Device::Cpu)?], 0)?
        } else {
            t
        };
        tensors.insert(format!("model.language_model.{rest}"), t);
    }
    let front = candle_core::safetensors::load_buffer(vision, &Device::Cpu)?;
    tensors.extend(front);
    candle_core::safetensors::save(&tensors, &weights_path)?;

    let text_path = dir.join("config.json");
    let mut text_config = read_json(&text_path)?;
    text_config["vocab_size"] = json!(vocab + 1);
    if let Some(o) = text_config.as_object_mut() {
        o.remove("architectures");
    }
    let config = json!({
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "image_token_index": image_token,
        "image_seq_length": PATCHES,
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full",
        "projector_hidden_act": "gelu",
        "multimodal_projector_bias": true,
        "tie_word_embeddings": true,
        "text_config": text_config,
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": 4 * VISION_HIDDEN,
            "num_hidden_layers": 0,
            "num_attention_heads": 4,
            "num_channels": 3,
            "image_size": SIZE,
            "patch_size": PATCH,
            "layer_norm_eps": 1e-6,
            "hidden_act": "gelu_pytorch_tanh",
            "vision_use_head": false,
        },
        "torch_dtype": "float32",
    });
    write_json(&text_path, &config)?;

    let tokenizer_path = dir.join("tokenizer.json");
    let mut tokenizer = read_json(&tokenizer_path)?;
    let added = tokenizer["added_tokens"]
        .as_array_mut()
        .ok_or_else(|| CheckpointError::Unexpected("tokenizer.json has no added_tokens".into()))?;
    added.push(json!({
        "id": image_token, "content": "<image>", "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": true,
    }));
    write_json(&tokenizer_path, &tokenizer)?;
    let chat = dir.join("chat_template.jinja");
    std::fs::write(&chat, CHAT_TEMPLATE).map_err(io(&chat))?;
    write_json(
        &dir.join("processor_config.json"),
        &json!({
            "processor_class": "LlavaProcessor",
            "image_processor": {
                "image_processor_type": "SiglipImageProcessor",
                "do_resize": true,
                "size": {"height": SIZE, "width": SIZE},
                "resample": 3,
                "do_rescale": true,
                "rescale_factor": 1.0 / 255.0,
                "do_normalize": true,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
                "do_convert_rgb": true,
            },
            "patch_size": PATCH,
            "vision_feature_select_strategy": "full",
            "num_additional_image_tokens": 0,
            "image_token": "<image>",
        }),
    )?;
    debug_assert_eq!(GRID * GRID, PATCHES);
    Ok(())
}
