//! The HTML report in a real browser: headless Chromium loads the page, runs its script and
//! dumps the DOM, once for the whole answer and once at `#target=K` for a token whose top
//! passage differs. This checks what unit tests of the server-side HTML cannot: that the
//! script re-ranks, re-scores and re-shades for the selected target.
//!
//! The token heatmap page is static; the browser checks that what it shows is what the data
//! says: one shaded span per word (regrouped from tokens) and a source × token table.
//!
//! Needs Chromium (Debian's `chromium` package, or `$CHROMIUM`). Without one the tests say so
//! on standard error and pass, so the README's test command passes on a machine without a
//! browser; with `GLASSBOX_REQUIRE_BROWSER=1` (set by `.ci/run`, which installs Chromium) a
//! missing browser fails them, so a green CI never hides a skipped browser test.

use glassbox_report::browser::{attr, chromium, dump_dom};

use glassbox_report::{
    ATTRIBUTE_SCHEMA, ATTRIBUTION_SCHEMA, Aggregation, AnswerToken, AttributeReport, Attribution,
    CITE_SCHEMA, CiteReport, Cost, HeatmapView, MethodInfo, Target, Unit, ViewSettings,
    render_attribute_html, render_html,
};

/// Passage scores for the whole answer (row 0) and each of its five tokens (rows 1..=5).
/// The whole answer and "Ott" come mostly from passage 2; " Br" (target 3) from passage 4.
const SCORES: [[f64; 5]; 6] = [
    [0.3, -0.4, 1.5, 0.0, 0.6],
    [0.1, -0.1, 0.8, 0.0, 0.1],
    [0.1, -0.1, 0.5, 0.0, 0.1],
    [0.05, -0.25, 0.1, 0.0, 0.7],
    [0.0, 0.05, 0.1, 0.0, 0.2],
    [0.05, 0.0, 0.0, 0.0, -0.5],
];
const TOKENS: [&str; 5] = ["Ott", "ilie", " Br", "ask", "."];

fn report() -> CiteReport {
    let passages = [
        "The lighthouse stands on the cape.",
        "Ferries leave twice a day; the <b>old</b> pier & café closed.",
        "It was rebuilt by Ottilie after the storm.",
        "The lamp was electrified in 1931.",
        "Her surname was Brask, from the island's \"north\" village.",
    ];
    let units = passages
        .iter()
        .enumerate()
        .map(|(i, text)| Unit {
            label: format!("[{}]", i + 1),
            text: text.to_string(),
            level: "passage".into(),
            span: None,
        })
        .collect();
    let mut targets = vec![Target {
        label: "answer".into(),
        kind: "sum_logprob".into(),
        tokens: Some((0, TOKENS.len())),
    }];
    targets.extend(TOKENS.iter().enumerate().map(|(i, t)| Target {
        label: t.to_string(),
        kind: "token_logprob".into(),
        tokens: Some((i, i + 1)),
    }));
    let attribution = Attribution {
        schema: ATTRIBUTION_SCHEMA.into(),
        model: "test-model".into(),
        method: MethodInfo {
            name: "exact_shapley".into(),
            params: serde_json::json!({}),
            seed: None,
        },
        perturbation: "delete".into(),
        units,
        targets,
        scores: SCORES.iter().map(|row| row.to_vec()).collect(),
        std_errors: None,
        value_full: vec![-1.0; SCORES.len()],
        value_empty: vec![-3.0; SCORES.len()],
        cost: Cost {
            evaluations: 32,
            forward_passes: 4,
            tokens: 1000,
            tokens_from_scratch: 4000,
            seconds: 0.5,
        },
        diagnostics: serde_json::Value::Null,
    };
    CiteReport {
        schema: CITE_SCHEMA.into(),
        question: "Who rebuilt the lighthouse?".into(),
        answer: TOKENS.concat(),
        answer_tokens: TOKENS
            .iter()
            .enumerate()
            .map(|(i, t)| AnswerToken {
                id: i as u32,
                text: t.to_string(),
            })
            .collect(),
        answer_generated: true,
        attribution,
        refinements: Vec::new(),
        approximation: None,
    }
}

/// The opening tags containing `marker`, in document order.
fn tags_with<'a>(dom: &'a str, marker: &str) -> Vec<&'a str> {
    dom.match_indices(marker)
        .map(|(at, _)| {
            let start = dom[..at].rfind('<').unwrap();
            &dom[start..at + dom[at..].find('>').unwrap()]
        })
        .collect()
}

/// The `rgb(r, g, b)` background of a tag's inline style.
fn background(tag: &str) -> (u8, u8, u8) {
    let style = attr(tag, "style");
    let inner = &style[style.find("rgb(").unwrap() + 4..style.find(')').unwrap()];
    let c: Vec<u8> = inner
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    (c[0], c[1], c[2])
}

/// Checks the dumped page shows target `t`: ranking, scores, colours and the selected chip.
fn assert_shows(dom: &str, t: usize, top: usize) {
    let rows = tags_with(dom, "<tr data-unit=");
    assert_eq!(rows.len(), 5, "{dom}");
    assert_eq!(
        attr(rows[0], "data-unit"),
        top.to_string(),
        "top passage for target {t}"
    );

    let units = tags_with(dom, "class=\"unit\"");
    assert_eq!(units.len(), 5);
    for tag in units {
        let u: usize = attr(tag, "data-unit").parse().unwrap();
        let score = SCORES[t][u];
        assert_eq!(
            attr(tag, "data-score"),
            format!("{score:.6}"),
            "passage {u}, target {t}"
        );
        let (r, g, b) = background(tag);
        if score > 0.0 {
            assert!(
                r == 255 && g < 255 && b < 255,
                "passage {u} (+{score}) is reddish: {tag}"
            );
        } else if score < 0.0 {
            assert!(
                b == 255 && r < 255 && g < 255,
                "passage {u} ({score}) is bluish: {tag}"
            );
        } else {
            assert_eq!((r, g, b), (255, 255, 255), "passage {u} (0) is white");
        }
    }

    let selected = tags_with(dom, "tok selected");
    assert_eq!(selected.len(), 1, "one chip selected");
    assert_eq!(attr(selected[0], "data-target"), t.to_string());
}

#[test]
fn a_real_browser_shows_the_selected_target() {
    let Some(browser) = chromium("a_real_browser_shows_the_selected_target") else {
        return;
    };
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, render_html(&report())).unwrap();

    let whole = dump_dom(&browser, &page, "");
    assert_shows(&whole, 0, 2);

    let token = dump_dom(&browser, &page, "#target=3");
    assert_shows(&token, 3, 4);
    assert!(
        token.contains("answer token \" Br\""),
        "the label names the token"
    );
    assert!(
        token.contains("<span id=\"scale-max\">0.7000</span>"),
        "the scale follows the target"
    );
    assert!(
        token.contains("<span id=\"target-kind\">token_logprob</span>"),
        "the note follows the target"
    );

    eprintln!(
        "two Chromium runs took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Token scores of "Not <b>bad</b> at all" for a three-token continuation: the sum, then
/// each token (token scores per row: "Not", " <b>", "bad</b>", " at", " all").
const TOKEN_SCORES: [[f64; 5]; 4] = [
    [0.6, 0.1, 0.9, -0.3, 0.0],
    [0.4, 0.0, 0.5, -0.2, 0.0],
    [0.1, 0.1, 0.3, 0.0, 0.0],
    [0.1, 0.0, 0.1, -0.1, 0.0],
];

fn attribute_report() -> AttributeReport {
    let input = "Not <b>bad</b> at all";
    let unit = |text: &str, level: &str, a: usize, b: usize| Unit {
        label: text.trim().into(),
        text: text.into(),
        level: level.into(),
        span: Some((a, b)),
    };
    let tokens = vec![
        unit("Not", "token", 0, 3),
        unit(" <b>", "token", 3, 7),
        unit("bad</b>", "token", 7, 14),
        unit(" at", "token", 14, 17),
        unit(" all", "token", 17, 21),
    ];
    let words = vec![
        unit("Not", "word", 0, 3),
        unit(" <b>bad</b>", "word", 3, 14),
        unit(" at", "word", 14, 17),
        unit(" all", "word", 17, 21),
    ];
    let answer = [" It", " was", " fine"];
    let mut targets = vec![Target {
        label: "continuation".into(),
        kind: "sum_logprob".into(),
        tokens: Some((0, 3)),
    }];
    targets.extend(answer.iter().enumerate().map(|(i, t)| Target {
        label: t.to_string(),
        kind: "token_logprob".into(),
        tokens: Some((i, i + 1)),
    }));
    AttributeReport {
        schema: ATTRIBUTE_SCHEMA.into(),
        input: input.into(),
        prompt_format: "raw".into(),
        answer: answer.concat(),
        answer_tokens: answer
            .iter()
            .enumerate()
            .map(|(i, t)| AnswerToken {
                id: i as u32,
                text: t.to_string(),
            })
            .collect(),
        answer_source: "given".into(),
        levels: [
            ("token".to_string(), tokens.clone()),
            ("word".to_string(), words),
        ]
        .into_iter()
        .collect(),
        attribution: Attribution {
            schema: ATTRIBUTION_SCHEMA.into(),
            model: "test-model".into(),
            method: MethodInfo {
                name: "gradient_x_input".into(),
                params: serde_json::json!({}),
                seed: None,
            },
            perturbation: "none (gradients)".into(),
            units: tokens,
            targets,
            scores: TOKEN_SCORES.iter().map(|r| r.to_vec()).collect(),
            std_errors: None,
            value_full: vec![-2.0, -0.5, -0.7, -0.8],
            value_empty: vec![-6.0, -2.0, -2.0, -2.0],
            cost: Cost::default(),
            diagnostics: serde_json::json!({}),
        },
        view: ViewSettings {
            unit: "word".into(),
            aggregate: Aggregation::Sum,
        },
        request: None,
    }
}

#[test]
fn a_real_browser_shows_the_word_heatmap_and_the_source_by_token_table() {
    let Some(browser) =
        chromium("a_real_browser_shows_the_word_heatmap_and_the_source_by_token_table")
    else {
        return;
    };
    let report = attribute_report();
    let view = HeatmapView::new(&report, None, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("heatmap.html");
    std::fs::write(&page, render_attribute_html(&view)).unwrap();
    let dom = dump_dom(&browser, &page, "");

    // Words are sums of their tokens: "Not" 0.6, " <b>bad</b>" 1.0, " at" -0.3, " all" 0.
    let spans = tags_with(&dom, "class=\"u\"");
    assert_eq!(spans.len(), 4, "{dom}");
    for (tag, want) in spans.iter().zip([0.6, 1.0, -0.3, 0.0]) {
        assert_eq!(attr(tag, "data-score"), format!("{want:.6}"));
        let (r, g, b) = background(tag);
        match want {
            w if w > 0.0 => assert!(r == 255 && g < 255 && b < 255, "{tag}"),
            w if w < 0.0 => assert!(b == 255 && r < 255 && g < 255, "{tag}"),
            _ => assert_eq!((r, g, b), (255, 255, 255)),
        }
    }
    assert!(
        dom.contains("&lt;b&gt;bad&lt;/b&gt;"),
        "the input's markup is shown as text"
    );
    // One row per word, one column per output token, shaded on each column's scale.
    let table = &dom[dom.find("<table id=\"matrix\"").expect("a matrix")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(
        table.matches("<tr>").count(),
        1 + 4,
        "header and four words"
    );
    let cells = tags_with(table, "<td data-score=");
    assert_eq!(cells.len(), 4 * 3);
    // Row " <b>bad</b>", column " It": 0.0 + 0.5.
    assert_eq!(attr(cells[3], "data-score"), "0.500000");
    assert_eq!(background(cells[3]).0, 255);
    assert!(dom.contains("carr"), "the verbalization is on the page");
}
