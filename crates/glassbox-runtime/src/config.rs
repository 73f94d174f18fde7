//! Model hyper-parameters, read from GGUF metadata or a Hugging Face `config.json`.
//!
//! One decoder implementation serves every supported family; what differs between families is
//! data, gathered here: norm placement, activation, QK-norm, sliding-window layers, embedding
//! scale, rotary bases. Adding a llama-like family is mostly a matter of filling this struct.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use serde::Serialize;

use crate::RuntimeError;

/// Families of decoder-only transformers the runtime can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama, SmolLM, Mistral, Qwen2 (pre-norm, SwiGLU, rotary, optional QKV bias).
    Llama,
    /// Gemma 3 (pre+post "sandwich" norms, QK-norm, GeGLU, scaled embeddings, alternating
    /// sliding-window and global layers with separate rotary bases).
    Gemma3,
}

impl Architecture {
    fn activation(self) -> Activation {
        match self {
            Architecture::Llama => Activation::Silu,
            Architecture::Gemma3 => Activation::GeluTanh,
        }
    }

    fn norm_placement(self) -> NormPlacement {
        match self {
            Architecture::Llama => NormPlacement::Pre,
            Architecture::Gemma3 => NormPlacement::Sandwich,
        }
    }

    fn qk_norm(self) -> bool {
        self == Architecture::Gemma3
    }

    /// Gemma multiplies token embeddings by √hidden.
    fn embedding_scale(self, hidden_size: usize) -> Option<f32> {
        (self == Architecture::Gemma3).then(|| (hidden_size as f32).sqrt())
    }
}

/// Architecture names accepted, as in GGUF `general.architecture`.
pub const SUPPORTED_GGUF_ARCHITECTURES: &[&str] = &["llama", "mistral", "qwen2", "gemma3"];
/// Architectures accepted in a Hugging Face `config.json`.
pub const SUPPORTED_HF_ARCHITECTURES: &[&str] = &[
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Gemma3ForCausalLM",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `silu(gate) * up`.
    Silu,
    /// `gelu_tanh(gate) * up`.
    GeluTanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NormPlacement {
    /// `x + f(norm(x))`.
    Pre,
    /// `x + norm_post(f(norm_pre(x)))` (Gemma 2/3).
    Sandwich,
}

/// Layers with a sliding attention window: all but every `pattern`-th layer (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlidingWindow {
    /// A query sees keys whose position is less than `size` behind its own.
    pub size: usize,
    pub pattern: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    /// The name the checkpoint uses (`llama`, `qwen2`, `gemma3`, ...).
    pub arch_name: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Longest sequence (prompt + generated) the model was trained for.
    pub context_length: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// Rotary base of sliding-window layers, when it differs.
    pub rope_local_theta: Option<f32>,
    /// Linear position scaling of global layers (1 = none).
    pub rope_scaling: f32,
    pub sliding_window: Option<SlidingWindow>,
    pub attention_scale: f32,
    /// Multiplier of token embeddings (Gemma: √hidden).
    pub embedding_scale: Option<f32>,
    pub activation: Activation,
    pub norm_placement: NormPlacement,
    pub qk_norm: bool,
    pub qkv_bias: bool,
    pub tied_embeddings: bool,
}

impl ModelConfig {
    /// Window of layer `layer`, if it is a sliding-window layer.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        self.sliding_window
            .filter(|w| !(layer + 1).is_multiple_of(w.pattern))
            .map(|w| w.size)
    }

    /// Rotary (base, linear position scale) of layer `layer`.
    pub fn layer_rope(&self, layer: usize) -> (f32, f32) {
        match (self.layer_window(layer), self.rope_local_theta) {
            (Some(_), Some(local)) => (local, 1.0),
            _ => (self.rope_theta, self.rope_scaling),
        }
    }

    /// What Hugging Face checkpoints of this family subtract from stored norm weights
    /// (Gemma stores `w - 1`; llama.cpp's converter adds the 1 back into GGUF files). The
    /// runtime keeps norm weights with the offset folded in.
    pub(crate) fn hf_norm_offset(&self) -> f32 {
        match self.architecture {
            Architecture::Gemma3 => 1.0,
            Architecture::Llama => 0.0,
        }
    }

    pub fn q_width(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    fn validate(self, origin: &str) -> Result<Self, RuntimeError> {
        let bad = |key: &str, message: String| RuntimeError::BadConfig {
            origin: origin.to_string(),
            key: key.to_string(),
            message,
        };
        for (key, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("context_length", self.context_length),
        ] {
            if v == 0 {
                return Err(bad(key, "must be positive".into()));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(bad(
                "num_kv_heads",
                format!(
                    "{} query heads are not a multiple of {} key/value heads",
                    self.num_heads, self.num_kv_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(bad(
                "head_dim",
                "rotary embeddings need an even head size".into(),
            ));
        }
        if let Some(w) = self.sliding_window
            && (w.size == 0 || w.pattern == 0)
        {
            return Err(bad(
                "sliding_window",
                "size and pattern must be positive".into(),
            ));
        }
        Ok(self)
    }

    /// Reads the configuration from GGUF metadata.
    pub fn from_gguf(md: &HashMap<String, Value>, origin: &str) -> Result<Self, RuntimeError> {
        let arch_name = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| RuntimeError::BadConfig {
                origin: origin.into(),
                key: "general.architecture".into(),
                message: "missing".into(),
            })?;
        let g = GgufKeys {
            md,
            prefix: &arch_name,
            origin,
        };
        let architecture = match arch_name.as_str() {
            "llama" | "mistral" | "qwen2" => Architecture::Llama,
            "gemma3" => Architecture::Gemma3,
            other => {
                return Err(RuntimeError::UnsupportedArchitecture {
                    name: other.to_string(),
                    supported: SUPPORTED_GGUF_ARCHITECTURES.join(", "),
                });
            }
        };
        if g.opt_str("rope.scaling.type")
            .is_some_and(|t| t != "none" && t != "linear")
        {
            return Err(RuntimeError::Unsupported(format!(
                "{origin}: rope scaling `{}` is not implemented",
                g.opt_str("rope.scaling.type").unwrap_or_default()
            )));
        }
        let hidden_size = g.usize("embedding_length")?;
        let num_heads = g.usize("attention.head_count")?;
        let head_dim = match g.opt_usize("attention.key_length") {
            Some(k) => k,
            None => hidden_size / num_heads.max(1),
        };
        let vocab_size = match g.opt_usize("vocab_size") {
            Some(v) => v,
            None => match md.get("tokenizer.ggml.tokens").map(|v| v.to_vec()) {
                Some(Ok(tokens)) => tokens.len(),
                _ => g.usize("vocab_size")?,
            },
        };
        let gemma = architecture == Architecture::Gemma3;
        let config = ModelConfig {
            architecture,
            arch_name: arch_name.clone(),
            vocab_size,
            hidden_size,
            intermediate_size: g.usize("feed_forward_length")?,
            num_layers: g.usize("block_count")?,
            num_heads,
            num_kv_heads: g.opt_usize("attention.head_count_kv").unwrap_or(num_heads),
            head_dim,
            context_length: g.usize("context_length")?,
            rms_norm_eps: g.f32("attention.layer_norm_rms_epsilon")?,
            rope_theta: g.opt_f32("rope.freq_base").unwrap_or(10_000.0),
            rope_local_theta: gemma.then(|| {
                g.opt_f32("rope.local_freq_base")
                    .unwrap_or(GEMMA3_LOCAL_ROPE_THETA)
            }),
            rope_scaling: g
                .opt_f32("rope.scaling.factor")
                .filter(|f| *f > 0.0)
                .unwrap_or(1.0),
            sliding_window: if gemma {
                Some(SlidingWindow {
                    size: g.usize("attention.sliding_window")?,
                    pattern: g
                        .opt_usize("attention.sliding_window_pattern")
                        .unwrap_or(GEMMA3_SLIDING_PATTERN),
                })
            } else {
                None
            },
            attention_scale: 1.0 / (head_dim as f32).sqrt(),
            embedding_scale: architecture.embedding_scale(hidden_size),
            activation: architecture.activation(),
            norm_placement: architecture.norm_placement(),
            qk_norm: architecture.qk_norm(),
            qkv_bias: arch_name == "qwen2",
            tied_embeddings: true,
        };
        config.validate(origin)
    }

    /// Reads the configuration from a Hugging Face `config.json`.
    pub fn from_hf_json(json: &serde_json::Value, origin: &str) -> Result<Self, RuntimeError> {
        let arch = json["architectures"]
            .get(0)
            .and_then(|a| a.as_str())
            .unwrap_or_default()
            .to_string();
        let architecture = match arch.as_str() {
            "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM" => Architecture::Llama,
            "Gemma3ForCausalLM" => Architecture::Gemma3,
            other => {
                return Err(RuntimeError::UnsupportedArchitecture {
                    name: if other.is_empty() {
                        "(config.json has no `architectures`)".into()
                    } else {
                        other.into()
                    },
                    supported: SUPPORTED_HF_ARCHITECTURES.join(", "),
                });
            }
        };
        let j = HfKeys { json, origin };
        // Transformers 5 writes rotary settings as `rope_parameters`; older configs as
        // `rope_theta` + `rope_scaling`. (Per-layer-type parameters, as Gemma 3's, are not
        // read here: their defaults below hold.)
        let rope = json
            .get("rope_parameters")
            .filter(|v| v.get("rope_type").is_some());
        if let Some(scaling) = json.get("rope_scaling").filter(|v| !v.is_null()).or(rope) {
            let kind = scaling["rope_type"]
                .as_str()
                .or(scaling["type"].as_str())
                .unwrap_or("?");
            if kind != "linear" && kind != "default" {
                return Err(RuntimeError::Unsupported(format!(
                    "{origin}: rope scaling `{kind}` is not implemented"
                )));
            }
        }
        let gemma = architecture == Architecture::Gemma3;
        let hidden_size = j.usize("hidden_size")?;
        let num_heads = j.usize("num_attention_heads")?;
        let head_dim = j
            .opt_usize("head_dim")
            .unwrap_or(hidden_size / num_heads.max(1));
        let query_scalar = j
            .opt_f32("query_pre_attn_scalar")
            .unwrap_or(head_dim as f32);
        let config = ModelConfig {
            architecture,
            arch_name: match arch.as_str() {
                "MistralForCausalLM" => "mistral",
                "Qwen2ForCausalLM" => "qwen2",
                "Gemma3ForCausalLM" => "gemma3",
                _ => "llama",
            }
            .to_string(),
            vocab_size: j.usize("vocab_size")?,
            hidden_size,
            intermediate_size: j.usize("intermediate_size")?,
            num_layers: j.usize("num_hidden_layers")?,
            num_heads,
            num_kv_heads: j.opt_usize("num_key_value_heads").unwrap_or(num_heads),
            head_dim,
            context_length: j.usize("max_position_embeddings")?,
            rms_norm_eps: j.opt_f32("rms_norm_eps").unwrap_or(1e-6),
            rope_theta: j
                .opt_f32("rope_theta")
                .or_else(|| {
                    rope.and_then(|r| r["rope_theta"].as_f64())
                        .map(|v| v as f32)
                })
                .unwrap_or(10_000.0),
            rope_local_theta: gemma.then(|| {
                j.opt_f32("rope_local_base_freq")
                    .unwrap_or(GEMMA3_LOCAL_ROPE_THETA)
            }),
            rope_scaling: json["rope_scaling"]["factor"]
                .as_f64()
                .or(rope.and_then(|r| r["factor"].as_f64()))
                .map(|f| f as f32)
                .unwrap_or(1.0),
            sliding_window: if gemma {
                Some(SlidingWindow {
                    size: j.usize("sliding_window")?,
                    pattern: j
                        .opt_usize("sliding_window_pattern")
                        .unwrap_or(GEMMA3_SLIDING_PATTERN),
                })
            } else {
                None
            },
            attention_scale: 1.0 / query_scalar.sqrt(),
            embedding_scale: architecture.embedding_scale(hidden_size),
            activation: architecture.activation(),
            norm_placement: architecture.norm_placement(),
            qk_norm: architecture.qk_norm(),
            qkv_bias: arch == "Qwen2ForCausalLM",
            tied_embeddings: json["tie_word_embeddings"].as_bool().unwrap_or(gemma),
        };
        config.validate(origin)
    }
}

/// Gemma 3's rotary base for sliding-window layers when the checkpoint does not say.
const GEMMA3_LOCAL_ROPE_THETA: f32 = 10_000.0;
/// Gemma 3: five sliding-window layers, then one global layer.
const GEMMA3_SLIDING_PATTERN: usize = 6;

struct GgufKeys<'a> {
    md: &'a HashMap<String, Value>,
    prefix: &'a str,
    origin: &'a str,
}

impl GgufKeys<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.md.get(&format!("{}.{key}", self.prefix))
    }

    fn missing(&self, key: &str, message: &str) -> RuntimeError {
        RuntimeError::BadConfig {
            origin: self.origin.into(),
            key: format!("{}.{key}", self.prefix),
            message: message.into(),
        }
    }

    fn opt_usize(&self, key: &str) -> Option<usize> {
        let v = self.get(key)?;
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .or_else(|_| v.to_i32().map(|x| x.max(0) as usize))
            .ok()
    }

    fn usize(&self, key: &str) -> Result<usize, RuntimeError> {
        self.opt_usize(key)
            .ok_or_else(|| self.missing(key, "missing or not an integer"))
    }

    fn opt_f32(&self, key: &str) -> Option<f32> {
        self.get(key)?.to_f32().ok()
    }

    fn f32(&self, key: &str) -> Result<f32, RuntimeError> {
        self.opt_f32(key)
            .ok_or_else(|| self.missing(key, "missing or not a float"))
    }

    fn opt_str(&self, key: &str) -> Option<String> {
        self.get(key)?.to_string().ok().cloned()
    }
}

struct HfKeys<'a> {
    json: &'a serde_json::Value,
    origin: &'a str,
}

impl HfKeys<'_> {
    fn opt_usize(&self, key: &str) -> Option<usize> {
        self.json[key].as_u64().map(|v| v as usize)
    }

    fn usize(&self, key: &str) -> Result<usize, RuntimeError> {
        self.opt_usize(key).ok_or_else(|| RuntimeError::BadConfig {
            origin: self.origin.into(),
            key: key.into(),
            message: "missing or not an integer".into(),
        })
    }

    fn opt_f32(&self, key: &str) -> Option<f32> {
        self.json[key].as_f64().map(|v| v as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemma_json() -> serde_json::Value {
        serde_json::json!({
            "architectures": ["Gemma3ForCausalLM"],
            "vocab_size": 262144, "hidden_size": 640, "intermediate_size": 2048,
            "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1,
            "head_dim": 256, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 512,
            "query_pre_attn_scalar": 256
        })
    }

    #[test]
    fn gemma_layers_alternate_windows_and_rotary_bases() {
        let c = ModelConfig::from_hf_json(&gemma_json(), "config.json").unwrap();
        assert_eq!(c.architecture, Architecture::Gemma3);
        assert_eq!(c.layer_window(0), Some(512));
        assert_eq!(c.layer_window(5), None, "every sixth layer is global");
        assert_eq!(c.layer_rope(0), (10_000.0, 1.0));
        assert_eq!(c.layer_rope(5), (1_000_000.0, 1.0));
        assert_eq!(c.hf_norm_offset(), 1.0);
        assert!((c.attention_scale - 1.0 / 16.0).abs() < 1e-7);
        assert!(c.tied_embeddings);
    }

    #[test]
    fn unknown_and_inconsistent_configs_are_refused() {
        let mut j = gemma_json();
        j["architectures"] = serde_json::json!(["BertModel"]);
        let err = ModelConfig::from_hf_json(&j, "c.json").unwrap_err();
        assert!(err.to_string().contains("BertModel"), "{err}");
        assert!(
            err.to_string().contains("LlamaForCausalLM"),
            "lists what works: {err}"
        );

        let mut j = gemma_json();
        j["num_key_value_heads"] = serde_json::json!(3);
        let err = ModelConfig::from_hf_json(&j, "c.json").unwrap_err();
        assert!(err.to_string().contains("multiple"), "{err}");

        let mut j = gemma_json();
        j.as_object_mut().unwrap().remove("hidden_size");
        let err = ModelConfig::from_hf_json(&j, "c.json").unwrap_err();
        assert!(err.to_string().contains("hidden_size"), "{err}");
    }
}
