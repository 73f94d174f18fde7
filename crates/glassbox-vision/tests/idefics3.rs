//! Conformance of the Idefics3 (SmolVLM) path with Hugging Face transformers, on the tiny
//! random-weight checkpoint made by `tools/fixtures/gen_idefics3.py` (reference outputs in
//! `tests/fixtures/idefics3-tiny/reference.*`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::{Reference, ids, max_abs, relative_error};
use glassbox_runtime::{Capture, GenerateOptions, Hook, LoadOptions, LogitsAt, Row, Sampling};
use glassbox_vision::{ProcessedImage, RgbImage, TileKind, VisionError, VisionLanguageModel};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/idefics3-tiny")
}

fn model() -> VisionLanguageModel {
    VisionLanguageModel::load(
        &fixture().join("model"),
        "idefics3-tiny",
        LoadOptions::default(),
    )
    .unwrap()
}

fn image(name: &str) -> RgbImage {
    RgbImage::open(&fixture().join("images").join(name)).unwrap()
}

#[test]
fn images_decode_as_pillow_does() {
    let r = Reference::load(&fixture());
    for (name, tolerance) in [
        ("shapes.png", 0u8),
        ("triangle_rgba.png", 0),
        // JPEG decoders differ in their IDCT and chroma upsampling: zune-jpeg against Pillow's
        // libjpeg-turbo is off by up to 5 levels on this 4:2:0 gradient (under 1 on average).
        ("gradient.jpg", 6),
    ] {
        let img = image(name);
        let expect = r.tensors[&format!("decoded.{name}")]
            .flatten_all()
            .unwrap()
            .to_vec1::<u8>()
            .unwrap();
        assert_eq!((img.width, img.height), {
            let d = &r.json["decoded"][name];
            (
                d["width"].as_u64().unwrap() as u32,
                d["height"].as_u64().unwrap() as u32,
            )
        });
        let worst = img
            .data
            .iter()
            .zip(&expect)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        let mean = img
            .data
            .iter()
            .zip(&expect)
            .map(|(a, b)| a.abs_diff(*b) as f64)
            .sum::<f64>()
            / expect.len() as f64;
        assert!(
            worst <= tolerance && mean <= 1.0,
            "{name}: off by {worst} levels (mean {mean})"
        );
    }
}

#[test]
fn processor_matches_transformers() {
    let r = Reference::load(&fixture());
    let m = model();
    for key in ["split", "nosplit", "two_images"] {
        let case = r.case(key);
        let images: Vec<RgbImage> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| image(n.as_str().unwrap()))
            .collect();
        let splitting = case["image_splitting"].as_bool().unwrap();
        let processed = m.process(&images, Some(splitting)).unwrap();
        let pixels: Vec<f32> = processed.iter().flat_map(|p| p.tiles.concat()).collect();
        let expect = r.floats(&format!("{key}.pixel_values"));
        let tolerance = if key == "two_images" {
            // The JPEG's decoding differences, through three resizes (2/255 in [-1, 1] units
            // is 0.0157).
            0.05
        } else {
            // Pillow-exact resampling: only f64→f32 rounding remains.
            1e-6
        };
        let worst = max_abs(&pixels, &expect);
        assert!(worst <= tolerance, "{key}: pixel values off by {worst}");
        // The prompt layout and its ids.
        let question = case["question"].as_str().unwrap();
        let prompt = m.chat_prompt(question, images.len()).unwrap();
        assert_eq!(prompt, case["prompt"].as_str().unwrap());
        let (p, _) = m.prompt(&prompt, &images, Some(splitting)).unwrap();
        assert_eq!(p.ids, ids(case, "ids"), "{key}: ids");
        assert_eq!(
            p.image_positions(),
            ids(case, "image_positions")
                .iter()
                .map(|&i| i as usize)
                .collect::<Vec<_>>()
        );
    }
}

/// The reference's own pixel values, as processed images of the case's layout.
fn reference_tiles(r: &Reference, m: &VisionLanguageModel, key: &str) -> Vec<ProcessedImage> {
    let case = r.case(key);
    let names: Vec<&str> = case["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let images: Vec<RgbImage> = names.iter().map(|n| image(n)).collect();
    let layout = m
        .process(&images, case["image_splitting"].as_bool())
        .unwrap();
    let pixels = r.floats(&format!("{key}.pixel_values"));
    let tile = 3 * 32 * 32;
    let mut chunks = pixels.chunks(tile).map(<[f32]>::to_vec);
    layout
        .into_iter()
        .map(|p| ProcessedImage {
            tiles: (0..p.tiles.len()).map(|_| chunks.next().unwrap()).collect(),
            rows: p.rows,
            cols: p.cols,
        })
        .collect()
}

#[test]
fn tower_connector_and_decoder_match_transformers() {
    let r = Reference::load(&fixture());
    let m = model();
    for key in ["split", "nosplit", "two_images"] {
        let case = r.case(key);
        let processed = reference_tiles(&r, &m, key);
        let sizes = vec![(0, 0); processed.len()];
        let features = m.image_features(&processed);
        let tower = relative_error(&features.tower, &r.floats(&format!("{key}.tower")));
        let connector = relative_error(&features.tokens, &r.floats(&format!("{key}.connector")));
        assert!(tower < 1e-5, "{key}: tower off by {tower:e}");
        assert!(connector < 1e-5, "{key}: connector off by {connector:e}");

        let prompt = case["prompt"].as_str().unwrap();
        let (p, _) = m.prompt_processed(prompt, &processed, &sizes).unwrap();
        assert_eq!(p.ids, ids(case, "ids"));
        let row = Row::embeddings(p.embeddings.clone()).with_logits(LogitsAt::All);
        let capture = Capture::none().with(Hook::FinalNorm);
        let out = m.text().forward(vec![row], &capture).unwrap().remove(0);
        let logits = out.logits.unwrap().values.data;
        let error = max_abs(&logits, &r.floats(&format!("{key}.logits")));
        assert!(error < 1e-4, "{key}: logits off by {error:e}");
        let hidden = &out.activations[&Hook::FinalNorm];
        let d = m.text().config().hidden_size;
        let at_images: Vec<f32> = p
            .image_positions()
            .iter()
            .flat_map(|&i| hidden.data[i * d..(i + 1) * d].to_vec())
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
        let generated = m.generate(&p, &options).unwrap();
        assert_eq!(generated.tokens, ids(case, "greedy"), "{key}: greedy ids");
    }
}

#[test]
fn placements_name_tiles_and_grids() {
    let m = model();
    let prompt = m.chat_prompt("What is in the image?", 1).unwrap();
    let (p, _) = m.prompt(&prompt, &[image("shapes.png")], None).unwrap();
    let placement = &p.images[0];
    assert_eq!((placement.width, placement.height), (50, 37));
    assert_eq!((placement.rows, placement.cols), (2, 2));
    let kinds: Vec<TileKind> = placement.tiles.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        vec![
            TileKind::Split { row: 0, col: 0 },
            TileKind::Split { row: 0, col: 1 },
            TileKind::Split { row: 1, col: 0 },
            TileKind::Split { row: 1, col: 1 },
            TileKind::Global
        ]
    );
    for t in &placement.tiles {
        assert_eq!(t.grid, (4, 4));
        assert_eq!(t.positions.len(), 16);
        assert!(t.positions.clone().all(|i| p.ids[i] == 4));
    }
}

#[test]
fn bad_inputs_get_clear_errors() {
    let m = model();
    let prompt = m.chat_prompt("Two?", 2).unwrap();
    let err = m.prompt(&prompt, &[image("shapes.png")], None).unwrap_err();
    assert!(
        matches!(
            err,
            VisionError::ImageCount {
                slots: 2,
                images: 1
            }
        ),
        "{err}"
    );
    let err = m
        .prompt("no slot here", &[image("shapes.png")], None)
        .unwrap_err();
    assert!(matches!(
        err,
        VisionError::ImageCount {
            slots: 0,
            images: 1
        }
    ));

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.png");
    assert!(matches!(
        RgbImage::open(&missing),
        Err(VisionError::Io { .. })
    ));
    let png = std::fs::read(fixture().join("images/shapes.png")).unwrap();
    let truncated = RgbImage::decode(&png[..png.len() / 2], Path::new("cut.png")).unwrap_err();
    assert!(
        matches!(truncated, VisionError::BadImage { .. }),
        "{truncated}"
    );
    let garbage = RgbImage::decode(b"not an image at all", Path::new("x.png")).unwrap_err();
    assert!(matches!(garbage, VisionError::BadImage { .. }), "{garbage}");
    // GIF magic: a real format, not one Glassbox reads.
    let gif =
        RgbImage::decode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", Path::new("x.gif")).unwrap_err();
    assert!(gif.to_string().contains("not supported") || gif.to_string().contains("unknown"));
    assert!(err_is_input(&gif));

    // A checkpoint with a tensor removed names it.
    let broken = dir.path().join("broken");
    copy_dir(&fixture().join("model"), &broken);
    let weights =
        candle_core::safetensors::load(broken.join("model.safetensors"), &Device::Cpu).unwrap();
    let kept: HashMap<String, Tensor> = weights
        .into_iter()
        .filter(|(k, _)| k != "model.vision_model.encoder.layers.1.mlp.fc2.bias")
        .collect();
    candle_core::safetensors::save(&kept, broken.join("model.safetensors")).unwrap();
    let err = VisionLanguageModel::load(&broken, "broken", LoadOptions::default())
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("model.vision_model.encoder.layers.1.mlp.fc2.bias"),
        "{err}"
    );
    assert!(err.is_input_error());
}

fn err_is_input(e: &VisionError) -> bool {
    e.is_input_error()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
