//! The known-content vision-language model as Glassbox assembles it (the default model plus
//! the trained front end in `models/smollm2-135m-shapes/`): its text model is the default
//! model's, its vision path is the front end that was trained, and it captions scenes.

use std::sync::OnceLock;

use glassbox::shapes::{FrontEnd, HELD_OUT_SEED, processing, scene_prompt, scenes};
use glassbox::vision::VisionLanguageModel;
use glassbox::{
    AnyModel, Capture, Fetch, GenerateOptions, LoadOptions, LogitsAt, Model, NoProgress, Row,
    Sampling,
};

fn shapes() -> &'static VisionLanguageModel {
    static MODEL: OnceLock<Box<VisionLanguageModel>> = OnceLock::new();
    MODEL.get_or_init(|| {
        match glassbox::load_any_model(
            "smollm2-135m-shapes",
            LoadOptions::default(),
            Fetch::IfMissing,
            &NoProgress,
        )
        .unwrap()
        {
            AnyModel::Vision(m) => m,
            AnyModel::Text(_) => panic!("a vision-language model"),
        }
    })
}

fn base() -> Model {
    glassbox::load_model(
        glassbox::DEFAULT_MODEL,
        LoadOptions::default(),
        Fetch::IfMissing,
        &NoProgress,
    )
    .unwrap()
}

#[test]
fn the_text_model_is_the_default_model() {
    let vlm = shapes().text();
    let base = base();
    assert_eq!(vlm.config().vocab_size, base.config().vocab_size + 1);
    let ids = base.encode_prompt("The capital of France is").unwrap();
    let logits = |m: &Model| {
        m.forward(
            vec![Row::tokens(ids.clone()).with_logits(LogitsAt::Last)],
            &Capture::none(),
        )
        .unwrap()
        .remove(0)
        .logits
        .unwrap()
        .values
        .data
    };
    let (a, b) = (logits(vlm), logits(&base));
    // The same logits, plus 0 for `<image>`.
    assert_eq!(a.len(), b.len() + 1);
    assert_eq!(*a.last().unwrap(), 0.0);
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst < 1e-4, "logits differ by {worst}");
}

#[test]
fn the_vision_path_is_the_trained_front_end_and_it_captions_scenes() {
    let model = shapes();
    let d = model.text().config().hidden_size;
    let front = FrontEnd::load(
        std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/smollm2-135m-shapes/vision.safetensors"
        )),
        d,
    )
    .unwrap();
    let held = scenes(HELD_OUT_SEED, 5);
    let mut right = 0;
    for scene in &held {
        let tile = processing().process(&scene.image, None).unwrap().tiles;
        let (expected, _) = front.forward(&tile);
        let prompt = scene_prompt(model, scene).unwrap();
        let positions = prompt.image_positions();
        assert_eq!(positions.len(), glassbox::shapes::frontend::PATCHES);
        let got: Vec<f32> = positions
            .iter()
            .flat_map(|&p| prompt.embeddings[p * d..(p + 1) * d].iter().copied())
            .collect();
        let worst = got
            .iter()
            .zip(&expected)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst < 1e-5, "image tokens differ by {worst}");
        let options = GenerateOptions {
            max_new_tokens: 16,
            sampling: Sampling::Greedy,
            stop_at_eos: true,
        };
        let caption = model.generate(&prompt, &options).unwrap().text;
        right += (caption.trim() == scene.caption) as usize;
    }
    // The recorded held-out accuracy is in training.json; five scenes must mostly come out.
    assert!(right >= 3, "{right} of 5 captions right");
}
