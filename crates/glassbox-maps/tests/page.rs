//! The TAM page in a real browser (headless Chromium, see `glassbox_report::browser`): the
//! script shows the selected word's map of the selected kind over each image.

use std::path::Path;

use base64::Engine;
use glassbox_maps::{ModeChoice, ReportImage, TamReport, explain_answer, render_tam_html};
use glassbox_report::browser::{attr, chromium, dump_dom};
use glassbox_runtime::LoadOptions;
use glassbox_vision::{RgbImage, VisionLanguageModel};

fn report() -> (TamReport, Vec<Vec<u8>>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../glassbox-vision/tests/fixtures/idefics3-tiny");
    let model =
        VisionLanguageModel::load(&dir.join("model"), "idefics3-tiny", LoadOptions::default())
            .unwrap();
    let path = dir.join("images/shapes.png");
    let image = RgbImage::open(&path).unwrap();
    let question = "What is in the image?";
    let text = model.chat_prompt(question, 1).unwrap();
    let (prompt, _) = model
        .prompt(&text, std::slice::from_ref(&image), None)
        .unwrap();
    let caption = model
        .text()
        .tokenizer()
        .encode(" a red square next to a blue circle.", false)
        .unwrap()
        .ids;
    let maps = explain_answer(
        &model,
        &prompt,
        Some(question),
        &caption,
        ModeChoice::Corrected,
    )
    .unwrap();
    let images = vec![ReportImage::from_placement(
        &path.display().to_string(),
        &prompt.images[0],
    )];
    let report = TamReport::new(
        "idefics3-tiny",
        &prompt.text,
        " a red square next to a blue circle.",
        false,
        ModeChoice::Corrected,
        images,
        &maps,
    );
    (report, vec![image.data])
}

/// The `src` of the map image and the index of the active word button.
fn shown(dom: &str) -> (String, usize) {
    let img = dom.split("<img").nth(1).unwrap();
    let src = attr(&img[..img.find('>').unwrap()], "src").to_string();
    let active = dom
        .split("<button")
        .skip(1)
        .position(|b| b[..b.find('>').unwrap()].contains("active"))
        .unwrap();
    (src, active)
}

#[test]
fn a_real_browser_shows_the_selected_word_and_kind() {
    let (report, pixels) = report();
    // Words of split tiles are stitched into one 8 × 8 grid over the image.
    assert_eq!(report.word_grid(1, "tam", 0).1, 8);
    let html = render_tam_html(&report, &pixels);
    let Some(browser) = chromium("a_real_browser_shows_the_selected_word_and_kind") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("tam.html");
    std::fs::write(&page, &html).unwrap();
    let png = |kind: &str, word: usize| {
        let o = &report.word_overlays(kind, 0, &pixels[0], 320)[word];
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(o.png())
        )
    };
    let (src, active) = shown(&dump_dom(&browser, &page, ""));
    assert_eq!((src == png("tam", 0), active), (true, 0));
    let (src, active) = shown(&dump_dom(&browser, &page, "#word=2&kind=raw"));
    assert_eq!(active, 2);
    assert!(src == png("raw", 2), "the page shows another map");
    assert!(src != png("tam", 2), "raw and TAM maps should differ here");
}
