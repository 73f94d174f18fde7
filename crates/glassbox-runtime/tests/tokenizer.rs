//! The tokenizers rebuilt from GGUF metadata against llama.cpp's token ids (and Hugging Face's)
//! on both models, with offsets and round trips.

mod common;

use common::*;
use glassbox_runtime::{ChatMessage, gguf_tokenizer};

fn check_fixture(model_name: &str, file: &str) {
    let (tokenizer, _) = gguf_tokenizer(&model_path(model_name)).unwrap();
    let fixture = fixture(file);
    let cases = fixture["tokenizer_cases"].as_array().unwrap();
    let mut exact = 0;
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = id_list(&case["llamacpp_ids"]);
        assert_eq!(want, id_list(&case["hf_ids"]), "the two references agree");
        let got = tokenizer.encode(text, false).unwrap();
        assert_eq!(got.ids, want, "{model_name}: {text:?}");
        exact += 1;
        // Offsets cover the text in order, and the ids decode back to it.
        let chars = text.chars().count();
        let mut last_end = 0;
        for &(s, e) in &got.offsets {
            assert!(
                s <= e && e <= chars && s + 1 >= last_end.min(s + 1),
                "{text:?}: {:?}",
                got.offsets
            );
            last_end = e;
        }
        if !want.is_empty() {
            assert_eq!(last_end, chars, "{text:?}: the last token ends the text");
        }
        assert_eq!(tokenizer.decode(&got.ids).unwrap(), text);
    }
    println!(
        "{model_name}: {exact}/{} strings tokenized exactly as llama.cpp",
        cases.len()
    );
}

#[test]
fn smollm2_ids_match_llama_cpp() {
    check_fixture(SMOLLM, "smollm2_135m_reference.json");
    // And the project's shared llama.cpp fixture.
    let (tokenizer, _) = gguf_tokenizer(&model_path(SMOLLM)).unwrap();
    for case in fixture("smollm2_llamacpp_reference.json")["cases"]
        .as_array()
        .unwrap()
    {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text, false).unwrap().ids,
            id_list(&case["ids"]),
            "{text:?}"
        );
    }
}

#[test]
fn gemma3_ids_match_llama_cpp() {
    check_fixture(GEMMA, "gemma3_270m_reference.json");
    let (tokenizer, chat) = gguf_tokenizer(&model_path(GEMMA)).unwrap();
    assert!(tokenizer.wants_bos());
    assert_eq!(tokenizer.encode("Hi", true).unwrap().ids[0], 2);
    assert!(chat.is_none(), "a base model has no chat template");
}

#[test]
fn smollm2_chat_template_renders_like_transformers() {
    let (_, chat) = gguf_tokenizer(&model_path(SMOLLM)).unwrap();
    let fixture = fixture("smollm2_135m_reference.json");
    let rendered = chat
        .unwrap()
        .render(
            &[ChatMessage {
                role: "user".into(),
                content: "What is 2+2?".into(),
            }],
            true,
        )
        .unwrap();
    assert_eq!(rendered, fixture["chat_template_render"].as_str().unwrap());
}
