//! Writing a loaded model as a Hugging Face directory (f32 safetensors + config + tokenizer).
//!
//! GGUF files are what ships on small machines; Python tools and other runtimes want the
//! Hugging Face layout. Exporting also lets the safetensors loading path be tested on real
//! weights, against candle-transformers' own safetensors models.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::json;

use crate::RuntimeError;
use crate::config::{Activation, Architecture};
use crate::linear::Linear;
use crate::model::Model;
use crate::weights::{Part, tensor_name};

/// Files written by [`Model::export_hf`].
pub const EXPORTED_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors",
];

impl Model {
    /// Writes the model into `dir` (which must exist) as a Hugging Face directory; needs f32
    /// weights. Weight layout follows Hugging Face conventions (half-split rotary rows; Gemma
    /// norms stored as `w - 1`).
    pub fn export_hf(&self, dir: &Path) -> Result<(), RuntimeError> {
        let cfg = self.config();
        let w = self.weights();
        let dev = Device::Cpu;
        let arch = cfg.architecture;
        let name = |part: Part, layer: usize| tensor_name(false, arch, part, layer);
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        let vector = |v: &[f32], offset: f32| -> Result<Tensor, RuntimeError> {
            let data: Vec<f32> = v.iter().map(|x| x - offset).collect();
            Ok(Tensor::from_vec(data, v.len(), &dev)?)
        };
        // Splits a fused matrix back into its parts, row blocks of the given heights.
        let split = |lin: &Linear,
                     parts: &[(Part, usize)],
                     layer: usize,
                     tensors: &mut HashMap<String, Tensor>|
         -> Result<(), RuntimeError> {
            let Linear::Packed(m) = lin else {
                return Err(RuntimeError::Unsupported(
                    "exporting needs f32 weights: load the model with `--weights f32`".into(),
                ));
            };
            let rows = m.to_rows();
            let k = m.k();
            let mut start = 0;
            for &(part, n) in parts {
                let data = rows[start * k..(start + n) * k].to_vec();
                tensors.insert(name(part, layer), Tensor::from_vec(data, (n, k), &dev)?);
                start += n;
            }
            Ok(())
        };
        let offset = cfg.hf_norm_offset();
        split(
            &w.lm_head,
            &[(Part::Embed, cfg.vocab_size)],
            0,
            &mut tensors,
        )?;
        tensors.insert(name(Part::FinalNorm, 0), vector(&w.final_norm, offset)?);
        for (l, lw) in w.layers.iter().enumerate() {
            tensors.insert(name(Part::AttnNorm, l), vector(&lw.attn_norm, offset)?);
            tensors.insert(name(Part::FfnNorm, l), vector(&lw.ffn_norm, offset)?);
            for (part, v) in [
                (Part::PostAttnNorm, &lw.post_attn_norm),
                (Part::PostFfnNorm, &lw.post_ffn_norm),
                (Part::QNorm, &lw.q_norm),
                (Part::KNorm, &lw.k_norm),
            ] {
                if let Some(v) = v {
                    tensors.insert(name(part, l), vector(v, offset)?);
                }
            }
            if let Some(b) = &lw.qkv_bias {
                let (q, kv) = (cfg.q_width(), cfg.kv_width());
                tensors.insert(name(Part::QBias, l), vector(&b[..q], 0.0)?);
                tensors.insert(name(Part::KBias, l), vector(&b[q..q + kv], 0.0)?);
                tensors.insert(name(Part::VBias, l), vector(&b[q + kv..], 0.0)?);
            }
            split(
                &lw.qkv,
                &[
                    (Part::Q, cfg.q_width()),
                    (Part::K, cfg.kv_width()),
                    (Part::V, cfg.kv_width()),
                ],
                l,
                &mut tensors,
            )?;
            split(&lw.o, &[(Part::O, cfg.hidden_size)], l, &mut tensors)?;
            split(
                &lw.gate_up,
                &[
                    (Part::Gate, cfg.intermediate_size),
                    (Part::Up, cfg.intermediate_size),
                ],
                l,
                &mut tensors,
            )?;
            split(&lw.down, &[(Part::Down, cfg.hidden_size)], l, &mut tensors)?;
        }
        let weights_path = dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &weights_path)?;

        let tok = self.tokenizer();
        let mut config = json!({
            "architectures": [match (arch, cfg.arch_name.as_str()) {
                (Architecture::Gemma3, _) => "Gemma3ForCausalLM",
                (_, "qwen2") => "Qwen2ForCausalLM",
                (_, "mistral") => "MistralForCausalLM",
                _ => "LlamaForCausalLM",
            }],
            "model_type": match arch { Architecture::Gemma3 => "gemma3_text", Architecture::Llama => cfg.arch_name.as_str() },
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads,
            "num_key_value_heads": cfg.num_kv_heads,
            "head_dim": cfg.head_dim,
            "max_position_embeddings": cfg.context_length,
            "rms_norm_eps": cfg.rms_norm_eps,
            "rope_theta": cfg.rope_theta,
            "vocab_size": cfg.vocab_size,
            "tie_word_embeddings": true,
            "bos_token_id": tok.bos_id(),
            "eos_token_id": tok.eos_id(),
            "torch_dtype": "float32",
            "hidden_act": match cfg.activation { Activation::Silu => "silu", Activation::GeluTanh => "gelu_pytorch_tanh" },
        });
        if cfg.rope_scaling != 1.0 {
            config["rope_scaling"] = json!({"rope_type": "linear", "factor": cfg.rope_scaling});
        }
        if let (Architecture::Gemma3, Some(window)) = (arch, cfg.sliding_window) {
            config["hidden_activation"] = json!("gelu_pytorch_tanh");
            config["query_pre_attn_scalar"] =
                json!((1.0 / (cfg.attention_scale * cfg.attention_scale)).round());
            config["sliding_window"] = json!(window.size);
            config["sliding_window_pattern"] = json!(window.pattern);
            config["rope_local_base_freq"] = json!(cfg.rope_local_theta);
        }
        write_json(&dir.join("config.json"), &config)?;
        tok.save_json(&dir.join("tokenizer.json"))?;
        let token_text = |id: Option<u32>| id.and_then(|i| tok.token_str(i));
        write_json(
            &dir.join("tokenizer_config.json"),
            &json!({
                "bos_token": token_text(tok.bos_id()),
                "eos_token": token_text(tok.eos_id()),
                "add_bos_token": tok.wants_bos(),
                "chat_template": self.chat_template().map(|c| c.source()),
            }),
        )
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), RuntimeError> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    std::fs::write(path, text).map_err(|e| RuntimeError::io(path, e))
}
