//! The Hugging Face (safetensors) loading path on real weights: a GGUF model exported to a
//! Hugging Face directory loads back to the same model, and candle-transformers' own
//! safetensors llama computes the same logits from that directory.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama;
use common::*;
use glassbox_runtime::{Capture, ChatMessage, LoadOptions, LogitsAt, Model, Row};

const TEXTS: &[&str] = &[
    "The capital of France is",
    "def f(x):\n    return x**2  # comment",
];

fn round_trip(model: &Model) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    model.export_hf(dir.path()).unwrap();
    for file in glassbox_runtime::EXPORTED_FILES {
        assert!(dir.path().join(file).is_file(), "{file} written");
    }
    let back = Model::load_hf_dir(dir.path(), "exported", LoadOptions::default()).unwrap();
    assert_eq!(back.config(), model.config());
    for text in TEXTS {
        let a = model.tokenizer().encode(text, true).unwrap();
        assert_eq!(back.tokenizer().encode(text, true).unwrap(), a);
        let logits = |m: &Model| {
            let out = m.forward(
                vec![Row::tokens(a.ids.clone()).with_logits(LogitsAt::All)],
                &Capture::none(),
            );
            out.unwrap().remove(0).logits.unwrap().values.data
        };
        assert_eq!(logits(&back), logits(model), "same weights, same numbers");
    }
    assert_eq!(back.tokenizer().wants_bos(), model.tokenizer().wants_bos());
    assert_eq!(back.tokenizer().stop_ids(), model.tokenizer().stop_ids());
    assert_eq!(back.has_chat_template(), model.has_chat_template());
    (dir, back)
}

#[test]
fn exported_llama_round_trips_and_matches_candle_transformers_safetensors_llama() {
    let model = smollm();
    let (dir, back) = round_trip(model);
    let chat = [ChatMessage {
        role: "user".into(),
        content: "Hi".into(),
    }];
    assert_eq!(
        back.render_chat(&chat, true).unwrap(),
        model.render_chat(&chat, true).unwrap()
    );

    let dev = Device::Cpu;
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let cfg: llama::LlamaConfig = serde_json::from_str(&text).unwrap();
    let cfg = cfg.into_config(false);
    let files = [dir.path().join("model.safetensors")];
    // SAFETY: the file was just written by this test and is not modified while mapped.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, &dev).unwrap()
    };
    let reference = llama::Llama::load(vb, &cfg).unwrap();
    for text in TEXTS {
        let ids = ids(model, text);
        let mut cache = llama::Cache::new(false, DType::F32, &cfg, &dev).unwrap();
        let input = Tensor::new(ids.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let theirs = reference
            .forward(&input, 0, &mut cache)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let ours = back
            .forward(vec![Row::tokens(ids)], &Capture::none())
            .unwrap()
            .remove(0)
            .logits
            .unwrap();
        let diff = max_abs_diff(ours.at(0), &theirs);
        println!("{text:?}: max |Δlogit| vs candle-transformers llama (safetensors) = {diff:.2e}");
        assert!(diff < 1e-3, "{diff}");
    }
}

#[test]
fn exported_gemma_round_trips() {
    let (_dir, back) = round_trip(gemma());
    assert!(!back.has_chat_template());
}
