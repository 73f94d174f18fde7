//! Conformance of the LLaVA-style path (SigLIP tower, GELU MLP projector, Llama decoder) with
//! Hugging Face transformers, on the tiny random-weight checkpoint made by
//! `tools/fixtures/gen_llava.py` (reference outputs in `tests/fixtures/llava-tiny/`).

mod common;

use std::path::{Path, PathBuf};

use common::{Reference, ids, max_abs, relative_error};
use glassbox_runtime::{Capture, GenerateOptions, Hook, LoadOptions, LogitsAt, Row, Sampling};
use glassbox_vision::{ProcessedImage, RgbImage, TileKind, VisionLanguageModel};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llava-tiny")
}

fn model() -> VisionLanguageModel {
    VisionLanguageModel::load(
        &fixture().join("model"),
        "llava-tiny",
        LoadOptions::default(),
    )
    .unwrap()
}

fn images(case: &serde_json::Value) -> Vec<RgbImage> {
    case["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| RgbImage::open(&fixture().join("images").join(n.as_str().unwrap())).unwrap())
        .collect()
}

#[test]
fn processor_and_prompt_match_transformers() {
    let r = Reference::load(&fixture());
    let m = model();
    for key in ["one_image", "two_images"] {
        let case = r.case(key);
        let imgs = images(case);
        let processed = m.process(&imgs, None).unwrap();
        let pixels: Vec<f32> = processed.iter().flat_map(|p| p.tiles.concat()).collect();
        // Pillow-exact BICUBIC resizing; the JPEG decodes a few levels apart.
        let tolerance = if key == "two_images" { 0.05 } else { 1e-6 };
        let worst = max_abs(&pixels, &r.floats(&format!("{key}.pixel_values")));
        assert!(worst <= tolerance, "{key}: pixel values off by {worst}");
        let prompt = m
            .chat_prompt(case["question"].as_str().unwrap(), imgs.len())
            .unwrap();
        assert_eq!(prompt, case["prompt"].as_str().unwrap());
        let (p, _) = m.prompt(&prompt, &imgs, None).unwrap();
        assert_eq!(p.ids, ids(case, "ids"));
        for placement in &p.images {
            assert_eq!(placement.tiles.len(), 1);
            assert_eq!(placement.tiles[0].kind, TileKind::Global);
            assert_eq!(placement.tiles[0].grid, (8, 8));
        }
    }
    // A fixed-size processor does not split.
    let case = r.case("one_image");
    assert!(m.prompt("<image>x", &images(case), Some(true)).is_err());
}

#[test]
fn tower_projector_and_decoder_match_transformers() {
    let r = Reference::load(&fixture());
    let m = model();
    for key in ["one_image", "two_images"] {
        let case = r.case(key);
        let pixels = r.floats(&format!("{key}.pixel_values"));
        let processed: Vec<ProcessedImage> = pixels
            .chunks(3 * 32 * 32)
            .map(|t| ProcessedImage {
                tiles: vec![t.to_vec()],
                rows: 0,
                cols: 0,
            })
            .collect();
        let features = m.image_features(&processed);
        let tower = relative_error(&features.tower, &r.floats(&format!("{key}.tower")));
        let projector = relative_error(&features.tokens, &r.floats(&format!("{key}.connector")));
        assert!(tower < 1e-5, "{key}: tower off by {tower:e}");
        assert!(projector < 1e-5, "{key}: projector off by {projector:e}");

        let sizes = vec![(0, 0); processed.len()];
        let (p, _) = m
            .prompt_processed(case["prompt"].as_str().unwrap(), &processed, &sizes)
            .unwrap();
        let row = Row::embeddings(p.embeddings.clone()).with_logits(LogitsAt::All);
        let out = m
            .text()
            .forward(vec![row], &Capture::none().with(Hook::FinalNorm))
            .unwrap()
            .remove(0);
        let logits = out.logits.unwrap().values.data;
        let error = max_abs(&logits, &r.floats(&format!("{key}.logits")));
        assert!(error < 1e-4, "{key}: logits off by {error:e}");
        let d = m.text().config().hidden_size;
        let hidden = &out.activations[&Hook::FinalNorm].data;
        let at_images: Vec<f32> = p
            .image_positions()
            .iter()
            .flat_map(|&i| hidden[i * d..(i + 1) * d].to_vec())
            .collect();
        let error = max_abs(
            &at_images,
            &r.floats(&format!("{key}.final_norm_at_images")),
        );
        assert!(error < 1e-4, "{key}: final-norm states off by {error:e}");
        let options = GenerateOptions {
            max_new_tokens: 6,
            sampling: Sampling::Greedy,
            stop_at_eos: false,
        };
        assert_eq!(
            m.generate(&p, &options).unwrap().tokens,
            ids(case, "greedy")
        );
    }
}
