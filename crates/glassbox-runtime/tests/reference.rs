//! The instrumented model against independent implementations on the same weights:
//! candle-transformers' llama (all tensors dequantized to f32, as ours are) and Gemma 3 models,
//! and llama.cpp's per-position argmax on the default model.

mod common;

use std::fs::File;
use std::io::Cursor;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{gemma3, quantized_llama};
use common::*;
use glassbox_runtime::{Capture, GenerateOptions, LogitsAt, Row, Sampling};

/// Logits must agree this closely (absolute, logits of magnitude ~10-30), per the project's
/// correctness bar for the instrumented model against a reference.
const REFERENCE_TOLERANCE: f32 = 1e-3;

const PROMPTS: &[&str] = &[
    "The capital of France is",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "In 1889 the Eiffel Tower was completed for the World's Fair in Paris. It was designed by \
     the company of Gustave Eiffel and became the tallest structure in the world, a title it \
     kept for more than forty years until the Chrysler Building was finished in New York.",
];

/// candle-transformers' quantized llama over an in-memory copy of the GGUF whose tensors are
/// all f32, so both sides multiply the same f32 weights (its Q4_1 path would quantize the
/// activations to 8 bits and differ by that rounding).
fn reference_llama() -> quantized_llama::ModelWeights {
    let dev = Device::Cpu;
    let path = model_path(SMOLLM);
    let mut file = File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> = names
        .iter()
        .map(|name| {
            let t = content
                .tensor(&mut file, name, &dev)
                .unwrap()
                .dequantize(&dev)
                .unwrap();
            (
                (*name).clone(),
                QTensor::quantize(&t, GgmlDType::F32).unwrap(),
            )
        })
        .collect();
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut buffer = Cursor::new(Vec::new());
    gguf_file::write(&mut buffer, &metadata, &tensor_refs).unwrap();
    buffer.set_position(0);
    let f32_content = gguf_file::Content::read(&mut buffer).unwrap();
    quantized_llama::ModelWeights::from_gguf(f32_content, &mut buffer, &dev).unwrap()
}

fn reference_logits(
    model: &mut quantized_llama::ModelWeights,
    ids: &[u32],
    index_pos: usize,
) -> Vec<f32> {
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .forward(&input, index_pos)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn llama_logits_match_candle_transformers_at_every_position() {
    let model = smollm();
    let mut reference = reference_llama();
    for prompt in PROMPTS {
        let ids = ids(model, prompt);
        let ours = logits_everywhere(model, Row::tokens(ids.clone()));
        // The reference returns the last position only: feed it token by token (its own KV
        // cache) to get every position.
        let mut worst = 0f32;
        for t in 0..ids.len() {
            let theirs = reference_logits(&mut reference, &ids[t..t + 1], t);
            worst = worst.max(max_abs_diff(ours.at(t), &theirs));
        }
        // And the whole prompt in one call, as a prefill.
        let theirs = reference_logits(&mut reference, &ids, 0);
        worst = worst.max(max_abs_diff(ours.at(ids.len() - 1), &theirs));
        println!("{:>3} tokens: max |Δlogit| = {worst:.2e}", ids.len());
        assert!(worst < REFERENCE_TOLERANCE, "{prompt:?}: {worst}");
    }
}

#[test]
fn llama_greedy_continuations_match_candle_transformers() {
    let model = smollm();
    let mut reference = reference_llama();
    for prompt in &PROMPTS[..2] {
        let ids = ids(model, prompt);
        let options = GenerateOptions {
            max_new_tokens: 24,
            sampling: Sampling::Greedy,
            stop_at_eos: false,
        };
        let ours = model.generate(&ids, &options).unwrap();
        let mut theirs = Vec::new();
        let mut logits = reference_logits(&mut reference, &ids, 0);
        for step in 0..24 {
            let next = glassbox_runtime::argmax(&logits);
            theirs.push(next);
            logits = reference_logits(&mut reference, &[next], ids.len() + step);
        }
        assert_eq!(ours.tokens, theirs, "{prompt:?}");
    }
}

#[test]
fn llama_argmax_matches_llama_cpp_reference() {
    let model = smollm();
    let fixture = fixture("smollm2_llamacpp_reference.json");
    let ids = id_list(&fixture["cases"][0]["ids"]);
    let expected = id_list(&fixture["argmax_per_position_text0"]);
    let logits = model
        .forward(
            vec![Row::tokens(ids.clone()).with_logits(LogitsAt::All)],
            &Capture::none(),
        )
        .unwrap()
        .remove(0)
        .logits
        .unwrap();
    let ours: Vec<u32> = (0..ids.len())
        .map(|t| glassbox_runtime::argmax(logits.at(t)))
        .collect();
    let agree = ours.iter().zip(&expected).filter(|(a, b)| a == b).count();
    println!(
        "argmax agrees with llama.cpp at {agree}/{} positions",
        ids.len()
    );
    // llama.cpp multiplies Q4_1 weights by 8-bit-quantized activations; we use f32
    // activations, so near-ties may flip. Demand near-total agreement.
    assert!(
        agree + 1 >= ids.len(),
        "ours {ours:?}\nllama.cpp {expected:?}"
    );
}

/// candle-transformers' (unquantized) Gemma 3 with the GGUF's tensors dequantized and renamed to
/// Hugging Face names; GGUF norm weights carry Gemma's `+1`, Hugging Face's do not.
fn reference_gemma() -> gemma3::Model {
    let dev = Device::Cpu;
    let path = model_path(GEMMA);
    let mut file = File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut tensors = std::collections::HashMap::new();
    for name in content.tensor_infos.keys() {
        let mut t = content
            .tensor(&mut file, name, &dev)
            .unwrap()
            .dequantize(&dev)
            .unwrap();
        if name.ends_with("norm.weight") {
            t = (t - 1.0).unwrap();
        }
        let hf = if name == "token_embd.weight" {
            "model.embed_tokens.weight".to_string()
        } else if name == "output_norm.weight" {
            "model.norm.weight".to_string()
        } else {
            let rest = name.strip_prefix("blk.").unwrap();
            let (layer, part) = rest.split_once('.').unwrap();
            let part = match part {
                "attn_q.weight" => "self_attn.q_proj.weight",
                "attn_k.weight" => "self_attn.k_proj.weight",
                "attn_v.weight" => "self_attn.v_proj.weight",
                "attn_output.weight" => "self_attn.o_proj.weight",
                "attn_q_norm.weight" => "self_attn.q_norm.weight",
                "attn_k_norm.weight" => "self_attn.k_norm.weight",
                "attn_norm.weight" => "input_layernorm.weight",
                "post_attention_norm.weight" => "post_attention_layernorm.weight",
                "ffn_norm.weight" => "pre_feedforward_layernorm.weight",
                "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
                "ffn_gate.weight" => "mlp.gate_proj.weight",
                "ffn_up.weight" => "mlp.up_proj.weight",
                "ffn_down.weight" => "mlp.down_proj.weight",
                other => panic!("unexpected tensor {other}"),
            };
            format!("model.layers.{layer}.{part}")
        };
        tensors.insert(hf, t);
    }
    let cfg = gemma3::Config {
        attention_bias: false,
        head_dim: 256,
        hidden_activation: candle_nn::Activation::GeluPytorchTanh,
        hidden_size: 640,
        intermediate_size: 2048,
        num_attention_heads: 4,
        num_hidden_layers: 18,
        num_key_value_heads: 1,
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        rope_local_base_freq: 10_000.0,
        vocab_size: 262_144,
        final_logit_softcapping: None,
        attn_logit_softcapping: None,
        query_pre_attn_scalar: 256,
        sliding_window: 512,
        sliding_window_pattern: 6,
        // Only sizes the reference's rotary tables; the test prompts are short.
        max_position_embeddings: 1024,
    };
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &dev);
    gemma3::Model::new(false, &cfg, vb).unwrap()
}

#[test]
fn gemma_logits_match_candle_transformers() {
    let model = gemma();
    let mut reference = reference_gemma();
    for prompt in [PROMPTS[0], PROMPTS[2], PROMPTS[3]] {
        let ids = model.tokenizer().encode(prompt, true).unwrap().ids;
        let ours = model
            .forward(vec![Row::tokens(ids.clone())], &Capture::none())
            .unwrap()
            .remove(0)
            .logits
            .unwrap();
        reference.clear_kv_cache();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let theirs = reference
            .forward(&input, 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let diff = max_abs_diff(ours.at(0), &theirs);
        println!("gemma, {:>3} tokens: max |Δlogit| = {diff:.2e}", ids.len());
        assert!(diff < REFERENCE_TOLERANCE, "{prompt:?}: {diff}");
        assert_eq!(
            glassbox_runtime::argmax(ours.at(0)),
            glassbox_runtime::argmax(&theirs)
        );
    }
}

/// Hugging Face transformers (PyTorch, f32, GGUF dequantized by transformers' own loader)
/// recorded top-10 logits and the log-sum-exp at every position of three texts per model.
/// llama.cpp on all-f32 weights agreed with those within 0.05 (tools/fixtures).
const HF_TOLERANCE: f32 = 0.05;

fn check_against_hf(model: &glassbox_runtime::Model, file: &str) {
    let fixture = fixture(file);
    for case in fixture["forward_cases"].as_array().unwrap() {
        let ids = id_list(&case["ids"]);
        let hf = &case["hf_f32"];
        let logits = logits_everywhere(model, Row::tokens(ids.clone()));
        let mut worst = 0f32;
        for t in 0..ids.len() {
            let row = logits.at(t);
            let lse = hf["logsumexp"][t].as_f64().unwrap() as f32;
            worst = worst.max((log_sum_exp(row) - lse).abs());
            for pair in hf["top10"][t].as_array().unwrap() {
                let id = pair[0].as_u64().unwrap() as usize;
                let value = pair[1].as_f64().unwrap() as f32;
                worst = worst.max((row[id] - value).abs());
            }
            assert_eq!(
                glassbox_runtime::argmax(row),
                hf["argmax"][t].as_u64().unwrap() as u32,
                "{file} case {} position {t}",
                case["key"]
            );
        }
        println!(
            "{file} case {}: max deviation from HF f32 = {worst:.4}",
            case["key"]
        );
        assert!(worst < HF_TOLERANCE, "{file} case {}: {worst}", case["key"]);
    }
}

/// `ln Σ exp` of a logit row through the public scoring helper.
fn log_sum_exp(row: &[f32]) -> f32 {
    row[0] - glassbox_runtime::log_softmax_at(row, 0)
}

#[test]
fn llama_logits_match_huggingface_f32_fixture() {
    check_against_hf(smollm(), "smollm2_135m_reference.json");
}

#[test]
fn gemma_logits_match_huggingface_f32_fixture() {
    check_against_hf(gemma(), "gemma3_270m_reference.json");
}
