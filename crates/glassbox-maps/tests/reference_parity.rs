//! TAM's `reference` mode against the reference code (xmed-lab/TAM `tam.py`), run by
//! `tools/fixtures/gen_tam_reference.py` on the tiny Idefics3 checkpoint of the vision crate's
//! conformance fixture; and the corrected mode's documented differences from it.

use std::path::{Path, PathBuf};

use glassbox_maps::{ModeChoice, explain_answer, to_u8};
use glassbox_runtime::LoadOptions;
use glassbox_vision::{ProcessedImage, RgbImage, VisionLanguageModel};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../glassbox-vision/tests/fixtures/idefics3-tiny")
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn reference_mode_reproduces_the_reference_code() {
    let dir = fixture();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let model =
        VisionLanguageModel::load(&dir.join("model"), "idefics3-tiny", LoadOptions::default())
            .unwrap();
    let pixel_values = candle_core::safetensors::load(
        dir.join("reference.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let (mut cells, mut off_by_one, mut worst) = (0usize, 0usize, 0u8);
    for (case, expected) in reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .zip(reference["tam_reference"]["cases"].as_array().unwrap())
    {
        assert_eq!(case["key"], expected["key"]);
        let images: Vec<RgbImage> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| RgbImage::open(&dir.join("images").join(n.as_str().unwrap())).unwrap())
            .collect();
        let question = case["question"].as_str().unwrap();
        let prompt_text = model.chat_prompt(question, images.len()).unwrap();
        // The reference's own pixel values (the JPEG decodes a few levels apart; the processor
        // is checked on its own in the vision crate).
        let layout = model
            .process(&images, case["image_splitting"].as_bool())
            .unwrap();
        let key = case["key"].as_str().unwrap();
        let pixels: Vec<f32> = pixel_values[&format!("{key}.pixel_values")]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut tiles = pixels.chunks(3 * 32 * 32).map(<[f32]>::to_vec);
        let processed: Vec<ProcessedImage> = layout
            .into_iter()
            .map(|p| ProcessedImage {
                tiles: (0..p.tiles.len()).map(|_| tiles.next().unwrap()).collect(),
                rows: p.rows,
                cols: p.cols,
            })
            .collect();
        let sizes: Vec<(u32, u32)> = images.iter().map(|i| (i.width, i.height)).collect();
        let (prompt, _) = model
            .prompt_processed(&prompt_text, &processed, &sizes)
            .unwrap();
        let answer = u32s(&expected["answer"]);
        assert_eq!(
            prompt.positions_of(question),
            u32s(&expected["question_positions"])
                .iter()
                .map(|&p| p as usize)
                .collect::<Vec<_>>(),
            "the question's tokens"
        );
        let result = explain_answer(
            &model,
            &prompt,
            Some(question),
            &answer,
            ModeChoice::Reference,
        )
        .unwrap();
        for (t, (map, want)) in result
            .maps
            .iter()
            .zip(expected["maps"].as_array().unwrap())
            .enumerate()
        {
            for (grid, want) in map.maps.tam.iter().zip(want.as_array().unwrap()) {
                let want: Vec<u8> = u32s(want).iter().map(|&v| v as u8).collect();
                for (a, b) in to_u8(grid).iter().zip(&want) {
                    let diff = a.abs_diff(*b);
                    cells += 1;
                    off_by_one += (diff == 1) as usize;
                    worst = worst.max(diff);
                    assert!(
                        diff <= 1,
                        "{} token {t}: {a} vs the reference's {b}",
                        case["key"]
                    );
                }
            }
        }
    }
    // f32 differences between the runtimes only move a map across an 8-bit step now and then.
    assert!(
        off_by_one * 50 <= cells,
        "{off_by_one} of {cells} cells off by one (worst {worst})"
    );
}

#[test]
fn corrected_mode_differs_from_the_reference_only_where_documented() {
    let dir = fixture();
    let model =
        VisionLanguageModel::load(&dir.join("model"), "idefics3-tiny", LoadOptions::default())
            .unwrap();
    let image = RgbImage::open(&dir.join("images/shapes.png")).unwrap();
    let question = "What is in the image?";
    let text = model.chat_prompt(question, 1).unwrap();
    let (prompt, _) = model.prompt(&text, &[image], None).unwrap();
    let answer = [306, 24, 118, 57];
    let corrected = explain_answer(
        &model,
        &prompt,
        Some(question),
        &answer,
        ModeChoice::Corrected,
    )
    .unwrap();
    let reference = explain_answer(
        &model,
        &prompt,
        Some(question),
        &answer,
        ModeChoice::Reference,
    )
    .unwrap();
    // The first token: its own class in the corrected mode, another token's in the reference.
    assert_eq!(corrected.maps[0].class, 306);
    assert_ne!(reference.maps[0].class, 306);
    assert_ne!(corrected.maps[0].maps.tam, reference.maps[0].maps.tam);
    // Later tokens use their own class in both; their maps differ only through the first
    // token's interference map.
    for t in 1..answer.len() {
        assert_eq!(corrected.maps[t].class, reference.maps[t].class);
    }
    // Baselines from the same pass: attention and raw maps are over the same grids.
    assert_eq!(corrected.attention.len(), answer.len());
    assert_eq!(corrected.attention[0].len(), corrected.grids.len());
    for a in &corrected.answer {
        assert!(a.logprob < 0.0 && a.logprob.is_finite());
    }
}
