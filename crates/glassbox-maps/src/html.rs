//! The TAM page: the answer's words as buttons; clicking one shows its map over each image,
//! for the chosen kind of map (TAM, raw CAM, CAM + filter, CAM + ECI, attention). One
//! self-contained file: overlays are embedded PNGs, the script only swaps them.

use base64::Engine;
use glassbox_report::escape_html;

use crate::report::{MAP_KINDS, TamReport};

/// Longest side of the embedded overlays, in pixels.
const OVERLAY_SIDE: usize = 320;

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "tam" => "TAM",
        "raw" => "raw CAM",
        "raw_filtered" => "CAM + filter",
        "eci" => "CAM + ECI",
        _ => "attention (last layer)",
    }
}

/// The page of `report`; `pixels` holds each image's RGB data (as the report lists them).
pub fn render_tam_html(report: &TamReport, pixels: &[Vec<u8>]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    // uris[kind][image][word]
    let uris: Vec<Vec<Vec<String>>> = MAP_KINDS
        .iter()
        .map(|kind| {
            (0..report.images.len())
                .map(|i| {
                    report
                        .word_overlays(kind, i, &pixels[i], OVERLAY_SIDE)
                        .iter()
                        .map(|o| format!("data:image/png;base64,{}", b64.encode(o.png())))
                        .collect()
                })
                .collect()
        })
        .collect();
    let mut h = String::new();
    h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str(&format!(
        "<title>Token activation maps — {}</title>",
        escape_html(&report.answer)
    ));
    h.push_str(
        "<style>body{font:15px/1.5 system-ui,sans-serif;margin:2em;max-width:70em;color:#222}\
         .meta{color:#666}.answer button{font:inherit;border:1px solid #ccc;background:#fafafa;\
         margin:2px;padding:1px 6px;border-radius:4px;cursor:pointer}\
         .answer button.active{background:#222;color:#fff}figure{display:inline-block;\
         margin:0 1em 1em 0}figcaption{color:#666;font-size:13px}\
         table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right}\
         td:first-child,th:first-child{text-align:left}</style></head><body>\n",
    );
    h.push_str("<h1>Token activation maps</h1>\n");
    h.push_str(&format!(
        "<p class=\"meta\">{} · {} · {} answer · forward {:.3} s, maps {:.3} s</p>\n",
        escape_html(&report.model),
        match report.mode {
            crate::caption::ModeChoice::Corrected => "corrected TAM",
            crate::caption::ModeChoice::Reference => "reference-code TAM",
        },
        if report.answer_generated {
            "generated"
        } else {
            "given"
        },
        report.forward_seconds,
        report.maps_seconds
    ));
    h.push_str(&format!(
        "<details><summary>Prompt</summary><pre>{}</pre></details>\n",
        escape_html(&report.prompt)
    ));
    h.push_str("<p class=\"kinds\">");
    for (k, kind) in MAP_KINDS.iter().enumerate() {
        h.push_str(&format!(
            "<label><input type=\"radio\" name=\"kind\" value=\"{kind}\"{}> {}</label> ",
            if k == 0 { " checked" } else { "" },
            kind_label(kind)
        ));
    }
    h.push_str("</p>\n<p class=\"answer\">");
    for (w, word) in report.words.iter().enumerate() {
        h.push_str(&format!(
            "{}<button class=\"word{}{}\" data-word=\"{w}\">{}</button>",
            if word.span && w > 0 && !report.words[w - 1].span {
                " · spans: "
            } else {
                ""
            },
            if w == 0 { " active" } else { "" },
            if word.span { " span" } else { "" },
            escape_html(&word.text)
        ));
    }
    h.push_str("</p>\n<div class=\"images\">");
    for (i, image) in report.images.iter().enumerate() {
        let first = uris[0][i].first().cloned().unwrap_or_default();
        h.push_str(&format!(
            "<figure><img id=\"map-{i}\" alt=\"map over image {}\" src=\"{first}\">\
             <figcaption>{} ({}×{})</figcaption></figure>",
            i + 1,
            escape_html(&image.path),
            image.width,
            image.height
        ));
    }
    h.push_str(
        "</div>\n<table><tr><th>token</th><th>log p</th><th>ECI α</th><th>removed</th></tr>",
    );
    for t in &report.tokens {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.0}%</td></tr>",
            escape_html(&format!("{:?}", t.text)),
            t.logprob,
            t.alpha,
            100.0 * t.removed
        ));
    }
    h.push_str("</table>\n<script>\nconst KINDS = ");
    h.push_str(&serde_json::to_string(&MAP_KINDS).expect("strings serialise"));
    h.push_str(";\nconst MAPS = ");
    h.push_str(&serde_json::to_string(&uris).expect("strings serialise"));
    h.push_str(
        ";\nlet state = {word: 0, kind: 0};\n\
         function show() {\n\
           document.querySelectorAll('.answer button').forEach(b =>\n\
             b.classList.toggle('active', Number(b.dataset.word) === state.word));\n\
           MAPS[state.kind].forEach((perWord, i) => {\n\
             document.getElementById('map-' + i).src = perWord[state.word]; });\n\
           document.querySelectorAll('input[name=kind]').forEach(r =>\n\
             r.checked = r.value === KINDS[state.kind]);\n\
         }\n\
         document.querySelectorAll('.answer button').forEach(b => b.addEventListener('click',\n\
           () => { state.word = Number(b.dataset.word); show(); }));\n\
         document.querySelectorAll('input[name=kind]').forEach(r => r.addEventListener('change',\n\
           () => { state.kind = KINDS.indexOf(r.value); show(); }));\n\
         const hash = new URLSearchParams(location.hash.slice(1));\n\
         if (hash.has('word')) state.word = Number(hash.get('word'));\n\
         if (hash.has('kind')) state.kind = Math.max(0, KINDS.indexOf(hash.get('kind')));\n\
         show();\n</script>\n</body></html>\n",
    );
    h
}
