//! Bad input gets a clear error, never a panic.

mod common;

use std::io::{Read, Write};

use candle_core::quantized::gguf_file;
use common::*;
use glassbox_runtime::{
    AttentionMask, Capture, LoadOptions, Model, Row, RuntimeError, ScoreRequest,
};

fn load(path: &std::path::Path) -> Result<Model, RuntimeError> {
    Model::load_gguf(path, "test", LoadOptions::default())
}

#[test]
fn truncated_corrupt_and_missing_model_files() {
    let dir = tempfile::tempdir().unwrap();
    // The first 20 MB of the real model: the header parses, the tensors do not fit.
    let mut head = vec![0u8; 20 << 20];
    std::fs::File::open(model_path(SMOLLM))
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &head).unwrap();
    let err = load(&truncated).err().expect("truncated file refused");
    assert!(matches!(err, RuntimeError::Truncated { .. }), "{err}");
    assert!(err.is_input_error());
    assert!(err.to_string().contains("truncated"), "{err}");

    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"this is not a model").unwrap();
    let err = load(&garbage).err().expect("garbage refused");
    assert!(matches!(err, RuntimeError::BadGguf { .. }), "{err}");

    let err = load(&dir.path().join("missing.gguf"))
        .err()
        .expect("missing file refused");
    assert!(err.is_input_error(), "{err}");
}

#[test]
fn unknown_architectures_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bert.gguf");
    let arch = gguf_file::Value::String("bert".into());
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut file, &[("general.architecture", &arch)], &[]).unwrap();
    file.flush().unwrap();
    let err = load(&path).err().expect("bert refused");
    let text = err.to_string();
    assert!(
        text.contains("bert") && text.contains("llama") && text.contains("gemma3"),
        "{text}"
    );
}

#[test]
fn inputs_outside_the_model_are_refused() {
    let model = smollm();
    let window = model.config().context_length as u32;
    let run = |row: Row| {
        model
            .forward(vec![row], &Capture::none())
            .expect_err("refused")
    };

    let err = run(Row::tokens(vec![]));
    assert!(
        err.is_input_error() && err.to_string().contains("empty"),
        "{err}"
    );

    let err = run(Row::tokens(vec![1, 2]).with_positions(vec![window - 1, window]));
    assert!(err.to_string().contains("context window"), "{err}");
    // A prompt longer than the window, as a user would write it.
    let err = run(Row::tokens(vec![504; window as usize + 1]));
    assert!(
        matches!(err, RuntimeError::InRow { .. }) && err.to_string().contains("context window"),
        "{err}"
    );

    let err = run(Row::tokens(vec![u32::MAX]));
    assert!(err.to_string().contains("vocabulary"), "{err}");

    let err = run(Row::tokens(vec![1, 2, 3]).with_positions(vec![0, 2, 1]));
    assert!(err.to_string().contains("increase"), "{err}");

    let err = run(Row::tokens(vec![1, 2, 3]).with_mask(AttentionMask::new().block(0..3, 1..2)));
    assert!(err.to_string().contains("hidden from itself"), "{err}");

    // A cache from another model.
    let other = gemma()
        .forward(vec![Row::tokens(vec![2, 818])], &Capture::kv())
        .unwrap()
        .remove(0)
        .kv
        .unwrap();
    let err = run(Row::tokens(vec![1]).with_past(other));
    assert!(err.to_string().contains("different model"), "{err}");

    let err = model
        .score_batch(vec![ScoreRequest {
            context: vec![],
            continuation: vec![5],
            past: None,
        }])
        .expect_err("no context refused");
    assert!(err.to_string().contains("context token"), "{err}");

    let err = model
        .forward(
            vec![Row::tokens(vec![1])],
            &Capture::none().with(glassbox_runtime::Hook::ResidPre(99)),
        )
        .err()
        .unwrap();
    assert!(err.to_string().contains("layers 0..29"), "{err}");
}
