//! A self-contained HTML report of a [`CiteReport`]: one file, no network, readable without
//! JavaScript (the whole answer's view is rendered in the page) and interactive with it (click
//! an answer token, or open the page at `#target=K`, to see which passages that token came
//! from).
//!
//! The page's script re-renders from the report embedded as JSON, so the server-side view and
//! the script must format numbers and colours the same way: scores with `toFixed`-compatible
//! decimals, shares as `100 * (score / total)`, colours from the same [`shade`] formula.

use std::fmt::Write;

use crate::schema::{Attribution, CiteReport, Refinement};
use crate::terminal::{shade, token_target};

/// Characters of passage text shown in the ranking table (the passages above show it all).
const TABLE_TEXT_WIDTH: usize = 80;

/// Escapes text for HTML content and attribute values (shared by every HTML page Glassbox
/// writes).
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The CSS colour of a score, as the page's script computes it.
fn rgb(score: f64, max_abs: f64) -> String {
    let (r, g, b) = shade(score, max_abs);
    format!("rgb({r}, {g}, {b})")
}

fn max_abs(scores: &[f64]) -> f64 {
    scores.iter().fold(0f64, |m, s| m.max(s.abs()))
}

/// `-0.0` as `0.0`: JavaScript's `toFixed` prints no sign for negative zero.
fn unsigned_zero(x: f64) -> f64 {
    x + 0.0
}

/// A score with its standard error, if any (as the script's `scoreText`).
fn score_text(a: &Attribution, t: usize, u: usize) -> String {
    let se = a
        .std_errors
        .as_ref()
        .map(|e| format!(" ± {:.3}", unsigned_zero(e[t][u])))
        .unwrap_or_default();
    format!("{:+.4}{se}", unsigned_zero(a.scores[t][u]))
}

/// The `data-score` attribute value of a score (as the script's `toFixed(6)`).
fn data_score(score: f64) -> String {
    format!("{:.6}", unsigned_zero(score))
}

/// Shares in percent for target `t` (as the script's `share`).
fn share_percents(a: &Attribution, t: usize) -> Vec<f64> {
    a.shares(t).iter().map(|s| 100.0 * s).collect()
}

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.4rem; }
.meta, .note { color: #555; font-size: 0.9rem; }
.qa div { margin: 0.4rem 0; }
.tok { display: inline-block; border: 1px solid #bbb; border-radius: 4px; padding: 0 0.3rem; margin: 0.1rem; cursor: pointer; white-space: pre; font-family: ui-monospace, monospace; }
.tok.selected { border-color: #000; background: #ffe9a8; font-weight: bold; }
.unit { border-radius: 6px; padding: 0.5rem 0.7rem; margin: 0.5rem 0; border: 1px solid #ddd; color: #111; }
.unit .head { font-size: 0.85rem; }
.unit .label { font-weight: bold; margin-right: 0.5rem; }
.unit p { margin: 0.3rem 0 0; white-space: pre-wrap; }
.refinement { margin-top: 0.4rem; padding: 0.3rem 0.6rem; border-left: 3px solid #999; background: #fff; font-size: 0.9rem; }
.refined-title { color: #555; font-size: 0.8rem; }
.sub { border-radius: 3px; padding: 0 0.1rem; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { padding: 0.2rem 0.6rem; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
td.text { color: #555; font-size: 0.85rem; }
.legend span.swatch { display: inline-block; width: 2.2rem; height: 0.9rem; vertical-align: middle; border: 1px solid #ddd; }
"#;

/// Re-renders passages, ranking, chips and notes for the selected target from the embedded
/// data; runs on load when the URL has `#target=K`, on clicks and on hash changes.
const SCRIPT: &str = r#"
(function () {
  const data = JSON.parse(document.getElementById('glassbox-data').textContent);
  const a = data.attribution;
  function shade(s, m) {
    let t = s / m;
    t = Number.isFinite(t) ? Math.max(-1, Math.min(1, t)) : 0;
    const fade = full => Math.round(255 - (255 - full) * Math.abs(t));
    return t >= 0 ? `rgb(255, ${fade(80)}, ${fade(80)})` : `rgb(${fade(80)}, ${fade(120)}, 255)`;
  }
  function scoreText(t, u) {
    const s = a.scores[t][u];
    const se = a.std_errors ? ' ± ' + a.std_errors[t][u].toFixed(3) : '';
    return (s >= 0 ? '+' : '') + s.toFixed(4) + se;
  }
  function select(t) {
    if (!(Number.isInteger(t) && t >= 0 && t < a.targets.length)) t = 0;
    const scores = a.scores[t];
    const m = Math.max(0, ...scores.map(Math.abs));
    const total = scores.reduce((x, y) => x + Math.abs(y), 0);
    const share = u => (total > 0 ? 100 * (scores[u] / total) : 0).toFixed(1) + '%';
    document.querySelectorAll('.unit').forEach(el => {
      const u = +el.dataset.unit;
      el.dataset.score = scores[u].toFixed(6);
      el.style.background = shade(scores[u], m);
      el.querySelector('.score').textContent = scoreText(t, u);
      el.querySelector('.share').textContent = share(u);
    });
    const order = scores.map((s, i) => [s, i]).sort((x, y) => y[0] - x[0] || x[1] - y[1]).map(x => x[1]);
    const body = document.querySelector('#ranking tbody');
    order.forEach((u, rank) => {
      const row = body.querySelector(`tr[data-unit="${u}"]`);
      row.querySelector('.rank').textContent = rank + 1;
      row.querySelector('.score').textContent = scoreText(t, u);
      row.querySelector('.share').textContent = share(u);
      body.appendChild(row);
    });
    document.querySelectorAll('.tok').forEach(el => el.classList.toggle('selected', +el.dataset.target === t));
    document.getElementById('target-label').textContent =
      t === 0 ? 'the whole answer'
        : (a.targets[t].tokens ? 'answer token ' : 'the answer ') + JSON.stringify(a.targets[t].label);
    document.getElementById('target-kind').textContent = a.targets[t].kind;
    document.getElementById('scale-max').textContent = m.toFixed(4);
    document.getElementById('value-full').textContent = a.value_full[t].toFixed(3);
    document.getElementById('value-empty').textContent = a.value_empty[t].toFixed(3);
    document.getElementById('score-sum').textContent = scores.reduce((x, y) => x + y, 0).toFixed(3);
  }
  function fromHash() {
    const m = /target=(\d+)/.exec(location.hash);
    return m ? +m[1] : 0;
  }
  document.querySelectorAll('.tok').forEach(el => el.addEventListener('click', () => {
    const t = +el.dataset.target;
    select(t);
    try { history.replaceState(null, '', '#target=' + t); } catch (e) { /* some file URLs refuse */ }
  }));
  window.addEventListener('hashchange', () => select(fromHash()));
  if (/target=/.test(location.hash)) select(fromHash());
})();
"#;

/// Title and the one-line summary of model, method, perturbation and cost.
fn header(out: &mut String, report: &CiteReport) {
    let a = &report.attribution;
    let c = &a.cost;
    let _ = write!(
        out,
        "<h1>Which passages did the answer come from?</h1><p class=\"meta\">model {} · method {}{} · \
         perturbation {} · {} coalitions, {} forward passes, {} tokens ({} from scratch), {:.2} s</p>",
        escape_html(&a.model),
        escape_html(&a.method.name),
        a.method
            .seed
            .map(|s| format!(" (seed {s})"))
            .unwrap_or_default(),
        escape_html(&a.perturbation),
        c.evaluations,
        c.forward_passes,
        c.tokens,
        c.tokens_from_scratch,
        c.seconds
    );
    if let Some(x) = &report.approximation {
        let steps: Vec<String> = x
            .steps
            .iter()
            .map(|s| {
                format!(
                    "<b>{}</b>: {}",
                    escape_html(&s.name),
                    escape_html(&s.description)
                )
            })
            .collect();
        let _ = write!(
            out,
            "<p class=\"meta estimate\">Estimate of {}, made by {}.",
            escape_html(&x.estimate_of),
            steps.join("; ")
        );
        if let Some(c) = &x.check {
            let _ = write!(
                out,
                " Checked against exact leave-one-out on {} passages: Spearman {}, top passage {}.",
                c.units.len(),
                c.spearman
                    .map_or_else(|| "n/a".to_string(), |r| format!("{r:.3}")),
                if c.top1_agrees { "agrees" } else { "disagrees" }
            );
        }
        out.push_str("</p>");
    }
}

/// Question, and the answer as chips: one selecting the whole answer, one per token that has a
/// target of its own (other tokens, and an answer without tokens, are plain text).
fn question_and_answer(out: &mut String, report: &CiteReport) {
    let a = &report.attribution;
    let _ = write!(
        out,
        "<section class=\"qa\"><div><b>Question</b> {}</div><div><b>Answer</b>{} \
         <span class=\"tok selected\" data-target=\"0\">whole answer</span> ",
        escape_html(&report.question),
        if report.answer_generated {
            " (generated)"
        } else {
            ""
        }
    );
    if report.answer_tokens.is_empty() {
        out.push_str(&escape_html(&report.answer));
    }
    for (i, token) in report.answer_tokens.iter().enumerate() {
        match token_target(a, i) {
            Some(t) => {
                let _ = write!(
                    out,
                    "<span class=\"tok\" data-target=\"{t}\">{}</span>",
                    escape_html(&token.text)
                );
            }
            None => out.push_str(&escape_html(&token.text)),
        }
    }
    let others: Vec<usize> = (1..a.targets.len())
        .filter(|&t| a.targets[t].tokens.is_none())
        .collect();
    if !others.is_empty() {
        out.push_str("</div><div><b>Other answers</b> (produced by some coalitions) ");
        for t in others {
            let _ = write!(
                out,
                "<span class=\"tok\" data-target=\"{t}\">{}</span> ",
                escape_html(&a.targets[t].label)
            );
        }
    }
    out.push_str(
        "</div><div class=\"meta\">Showing attributions for <span id=\"target-label\">the whole \
         answer</span>. Click a token to see which passages it came from.</div></section>",
    );
}

/// The passages in document order, shaded and scored for target 0, with their refinements.
fn passages(out: &mut String, report: &CiteReport) {
    let a = &report.attribution;
    let scores = &a.scores[0];
    let m = max_abs(scores);
    let shares = share_percents(a, 0);
    out.push_str("<section id=\"passages\">");
    for (u, unit) in a.units.iter().enumerate() {
        let _ = write!(
            out,
            "<div class=\"unit\" data-unit=\"{u}\" data-score=\"{}\" style=\"background: {}\">\
             <div class=\"head\"><span class=\"label\">{}</span><span class=\"score\">{}</span> · \
             <span class=\"share\">{:.1}%</span></div><p>{}</p>",
            data_score(scores[u]),
            rgb(scores[u], m),
            escape_html(&unit.label),
            escape_html(&score_text(a, 0, u)),
            shares[u],
            escape_html(&unit.text)
        );
        for r in report.refinements.iter().filter(|r| r.parent_unit == u) {
            refinement(out, a, r);
        }
        out.push_str("</div>");
    }
    out.push_str("</section>");
}

/// A refined unit's parts (sentences, words) shaded on their own scale, for the whole answer.
fn refinement(out: &mut String, parent: &Attribution, r: &Refinement) {
    let a = &r.attribution;
    let m = max_abs(&a.scores[0]);
    let level = a.units.first().map_or("unit", |u| u.level.as_str());
    let parent_label = parent
        .units
        .get(r.parent_unit)
        .map_or("", |u| u.label.as_str());
    let _ = write!(
        out,
        "<div class=\"refinement\"><div class=\"refined-title\">{}s of {} ({}), for the whole \
         answer</div><p>",
        escape_html(level),
        escape_html(parent_label),
        escape_html(&a.method.name)
    );
    for (u, unit) in a.units.iter().enumerate() {
        let _ = write!(
            out,
            "<span class=\"sub\" data-score=\"{}\" style=\"background: {}\" title=\"{} {}\">{}</span> ",
            data_score(a.scores[0][u]),
            rgb(a.scores[0][u], m),
            escape_html(&unit.label),
            escape_html(&score_text(a, 0, u)),
            escape_html(&unit.text)
        );
    }
    out.push_str("</p>");
    for nested in &r.refinements {
        refinement(out, a, nested);
    }
    out.push_str("</div>");
}

/// The passages ranked for target 0; the script reorders the rows for other targets.
fn ranking_table(out: &mut String, a: &Attribution) {
    let shares = share_percents(a, 0);
    out.push_str(
        "<table id=\"ranking\"><thead><tr><th>rank</th><th>passage</th><th>score</th>\
         <th>share</th><th>text</th></tr></thead><tbody>",
    );
    for (rank, &u) in a.ranking(0).iter().enumerate() {
        let unit = &a.units[u];
        let _ = write!(
            out,
            "<tr data-unit=\"{u}\"><td class=\"rank\">{}</td><td>{}</td><td class=\"score\">{}</td>\
             <td class=\"share\">{:.1}%</td><td class=\"text\">{}</td></tr>",
            rank + 1,
            escape_html(&unit.label),
            escape_html(&score_text(a, 0, u)),
            shares[u],
            escape_html(&crate::terminal::truncated(&unit.text, TABLE_TEXT_WIDTH))
        );
    }
    out.push_str("</tbody></table>");
}

/// The colour scale, and what the numbers mean, for target 0.
fn legend_and_note(out: &mut String, a: &Attribution) {
    let swatch = |x: f64| {
        format!(
            "<span class=\"swatch\" style=\"background: {}\"></span>",
            rgb(x, 1.0)
        )
    };
    let _ = write!(
        out,
        "<p class=\"legend\">against the answer {}{}{}{}{} supports the answer; full colour at \
         ±<span id=\"scale-max\">{:.4}</span>, the largest |score| for the selected target</p>",
        swatch(-1.0),
        swatch(-0.5),
        swatch(0.0),
        swatch(0.5),
        swatch(1.0),
        max_abs(&a.scores[0])
    );
    let sum: f64 = a.scores[0].iter().sum();
    let _ = write!(
        out,
        "<p class=\"note\">A score is the change in log-probability of the answer (<span id=\"target-kind\">{}</span>) attributable \
         to the passage, with passages removed by {}. For Shapley methods the scores sum to \
         value_full − value_empty, the value with every passage minus the value with none: here \
         <span id=\"value-full\">{:.3}</span> − <span id=\"value-empty\">{:.3}</span>; the scores \
         sum to <span id=\"score-sum\">{:.3}</span>.</p>",
        escape_html(&a.targets[0].kind),
        escape_html(&a.perturbation),
        a.value_full[0],
        a.value_empty[0],
        sum
    );
}

/// The report as JSON for the script. JSON needs `<` only inside strings, where `\u003c` means
/// the same, so replacing every `<` leaves nothing in the data that could close the element.
fn embedded_data(out: &mut String, report: &CiteReport) {
    let json = serde_json::to_string(report)
        .expect("a CiteReport always serialises: plain fields, string-keyed maps")
        .replace('<', "\\u003c");
    let _ = write!(
        out,
        "<script type=\"application/json\" id=\"glassbox-data\">{json}</script>"
    );
}

/// The report as one self-contained HTML page (inline CSS and script, no network).
///
/// The report's arrays must agree in shape, as [`CiteReport::from_json`] checks.
pub fn render_html(report: &CiteReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Glassbox: {}</title><style>{STYLE}</style></head><body>",
        escape_html(&report.question)
    );
    header(&mut out, report);
    question_and_answer(&mut out, report);
    passages(&mut out, report);
    ranking_table(&mut out, &report.attribution);
    legend_and_note(&mut out, &report.attribution);
    embedded_data(&mut out, report);
    let _ = writeln!(out, "<script>{SCRIPT}</script></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::report;

    /// The `data-unit` values of the ranking table's rows, in order.
    fn ranked_units(html: &str) -> Vec<usize> {
        let body = &html[html.find("<tbody>").unwrap()..html.find("</tbody>").unwrap()];
        body.split("<tr data-unit=\"")
            .skip(1)
            .map(|row| row[..row.find('"').unwrap()].parse().unwrap())
            .collect()
    }

    fn embedded(html: &str) -> &str {
        let start = html.find("id=\"glassbox-data\">").unwrap() + "id=\"glassbox-data\">".len();
        &html[start..start + html[start..].find("</script>").unwrap()]
    }

    #[test]
    fn estimates_say_so() {
        let mut r = report();
        assert!(!render_html(&r).contains("class=\"meta estimate\""));
        r.approximation = Some(crate::testing::approximation());
        let html = render_html(&r);
        assert!(
            html.contains("Estimate of leave_one_out on test-model"),
            "{html}"
        );
        assert!(html.contains("<b>context_kv</b>"));
        assert!(html.contains("Spearman 0.800, top passage agrees"));
    }

    #[test]
    fn escapes_text_and_embeds_the_data() {
        let mut r = report();
        r.attribution.units[0].text = "</script><script>alert('x')</script> & \"more\"".into();
        r.question = "Is 1 < 2 & 3 > 2?".into();
        let html = render_html(&r);
        assert!(html.contains(
            "&lt;/script&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;"
        ));
        assert!(html.contains("<title>Glassbox: Is 1 &lt; 2 &amp; 3 &gt; 2?</title>"));
        assert!(
            !html.contains("<script>alert"),
            "no injected script element"
        );
        assert_eq!(
            html.matches("<script").count(),
            2,
            "only the data and the page script"
        );
        assert!(!embedded(&html).contains('<'));
        let back = CiteReport::from_json(embedded(&html)).unwrap();
        assert_eq!(back, r, "the embedded data round-trips");
    }

    #[test]
    fn the_static_view_ranks_shades_and_shares_target_zero() {
        let html = render_html(&report());
        // Scores [0.2, -0.5, 1.4, 0.1]: [3], [1], [4], [2].
        assert_eq!(ranked_units(&html), vec![2, 0, 3, 1]);
        assert!(html.contains(
            "data-unit=\"2\" data-score=\"1.400000\" style=\"background: rgb(255, 80, 80)\""
        ));
        let blue = rgb(-0.5, 1.4);
        assert!(html.contains(&format!(
            "data-unit=\"1\" data-score=\"-0.500000\" style=\"background: {blue}\""
        )));
        // Shares of |scores| (total 2.2): 1.4 → 63.6 %, -0.5 → -22.7 %.
        assert!(html.contains("<span class=\"share\">63.6%</span>"));
        assert!(html.contains("<td class=\"share\">-22.7%</td>"));
        assert!(html.contains("<td class=\"score\">+1.4000 ± 0.050</td>"));
        assert!(html.contains("class=\"tok selected\" data-target=\"0\""));
        assert_eq!(
            html.matches("class=\"tok").count(),
            4,
            "whole answer + 3 tokens"
        );
        assert!(html.contains("class=\"refinement\""));
        assert!(
            html.contains("data-score=\"1.200000\" style=\"background: rgb(255, 80, 80)\""),
            "refined sentence"
        );
        assert!(html.contains(
            "<span id=\"value-full\">-2.000</span> − <span id=\"value-empty\">-3.200</span>"
        ));
    }

    #[test]
    fn tokens_without_their_own_target_are_plain_text() {
        let mut r = report();
        let a = &mut r.attribution;
        a.targets.truncate(1);
        a.scores.truncate(1);
        a.value_full.truncate(1);
        a.value_empty.truncate(1);
        a.std_errors = None;
        let html = render_html(&r);
        assert_eq!(
            html.matches("class=\"tok").count(),
            1,
            "only the whole answer is selectable"
        );
        assert!(html.contains("whole answer</span> Ottilie.</div>"));
        assert!(
            html.contains("<td class=\"score\">+1.4000</td>"),
            "no ± without standard errors"
        );
    }

    #[test]
    fn alternative_answers_are_selectable_and_escaped() {
        let html = render_html(&crate::testing::identity_report());
        assert_eq!(
            html.matches("class=\"tok").count(),
            3,
            "whole answer + 2 alternatives"
        );
        assert!(html.contains("<b>Other answers</b>"));
        assert!(
            html.contains("data-target=\"2\">The lighthouse &lt;b&gt;stands&lt;/b&gt;.</span>")
        );
        // The answer's own tokens have no targets of their own here: plain text.
        assert!(html.contains("whole answer</span> Ottilie.</div>"));
    }

    #[test]
    fn negative_zero_prints_as_the_script_does() {
        assert_eq!(data_score(-0.0), "0.000000");
        assert_eq!(data_score(-1e-9), "-0.000000");
    }
}
