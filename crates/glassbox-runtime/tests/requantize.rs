//! Re-quantized weights (`WeightMode::Requantized`): the f32 path runs the values a quantized
//! model would hold. They must change the logits, by more for coarser formats (q8_0 keeps the
//! prediction; q4_0 may not), and name the model as the quantized one.

mod common;

use common::{SMOLLM, ids, max_abs_diff, model_path, smollm};
use glassbox_runtime::{
    Capture, LoadOptions, LogitsAt, Model, QuantFormat, Row, WeightMode, argmax,
};

fn last_logits(model: &Model, tokens: Vec<u32>) -> Vec<f32> {
    let out = model
        .forward(
            vec![Row::tokens(tokens).with_logits(LogitsAt::Last)],
            &Capture::none(),
        )
        .unwrap()
        .remove(0);
    out.logits.unwrap().at(0).to_vec()
}

#[test]
fn coarser_formats_move_the_logits_further_and_are_named_as_such() {
    let reference = smollm();
    let prompt = ids(reference, "The capital of France is");
    let base = last_logits(reference, prompt.clone());
    let mut moved = Vec::new();
    for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
        let model = Model::load_gguf(
            &model_path(SMOLLM),
            SMOLLM,
            LoadOptions {
                weights: WeightMode::Requantized(format),
            },
        )
        .unwrap();
        assert_eq!(model.info().name, format!("{SMOLLM}@{}", format.name()));
        let logits = last_logits(&model, prompt.clone());
        if format == QuantFormat::Q8_0 {
            assert_eq!(argmax(&logits), argmax(&base), "q8_0 keeps the prediction");
        }
        moved.push(max_abs_diff(&logits, &base));
    }
    // The default model is stored as Q4_1, so q8_0 of its values is close but not exact
    // (measured: the largest logit change 0.63, on logits of about ±20).
    assert!(
        moved[0] > 0.0 && moved[0] < 1.5,
        "q8_0 moved the logits by {}",
        moved[0]
    );
    assert!(
        moved[1] > 2.0 * moved[0],
        "q4_0 {} vs q8_0 {}",
        moved[1],
        moved[0]
    );
}

#[test]
fn formats_parse_by_their_llama_cpp_names() {
    for format in QuantFormat::ALL {
        assert_eq!(QuantFormat::parse(format.name()), Some(format));
    }
    assert_eq!(QuantFormat::parse("q4_1"), None);
}
