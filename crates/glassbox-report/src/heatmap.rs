//! Heatmaps of an [`AttributeReport`]: the input text shaded unit by unit (red supports the
//! target, blue works against it, on a symmetric scale), in the terminal or as a
//! self-contained HTML page, with a source × target table when the output has several tokens.
//!
//! Both views regroup the stored scores to the unit asked for when viewing (tokens into words
//! or sentences, by sum, mean or signed absolute maximum), so one saved result serves every
//! level at or above the one computed.

use std::fmt::Write;

use crate::html::escape_html as escape;
use crate::schema::{Aggregation, AttributeReport, Attribution, SchemaError};
use crate::terminal::{ColorMode, shade, truncated};
use crate::verbalize::{describe_target, verbalize};

/// Columns of a source × target table printed side by side in the terminal.
const TABLE_COLUMNS: usize = 10;
/// Width of a unit's label in the terminal table.
const LABEL_WIDTH: usize = 14;

/// A report prepared for display: the regrouped attribution and what it shows.
pub struct HeatmapView<'r> {
    pub report: &'r AttributeReport,
    pub attribution: Attribution,
    pub unit: String,
    pub aggregate: Aggregation,
}

impl<'r> HeatmapView<'r> {
    /// The report regrouped to `unit` with `aggregate` (defaults: the report's view settings).
    pub fn new(
        report: &'r AttributeReport,
        unit: Option<&str>,
        aggregate: Option<Aggregation>,
    ) -> Result<Self, SchemaError> {
        let unit = unit.unwrap_or(&report.view.unit).to_string();
        let aggregate = aggregate.unwrap_or(report.view.aggregate);
        Ok(Self {
            attribution: report.regrouped(&unit, aggregate)?,
            report,
            unit,
            aggregate,
        })
    }

    /// Targets with a single answer position, i.e. the columns of a source × target table.
    fn token_targets(&self) -> Vec<usize> {
        let a = &self.attribution;
        (0..a.targets.len())
            .filter(|&t| a.targets[t].tokens.is_some_and(|(x, y)| y == x + 1))
            .collect()
    }

    /// Whether the targets are the tokens of a continuation (shown as a table).
    fn is_sequence(&self) -> bool {
        self.report.answer_tokens.len() > 1 && self.token_targets().len() > 1
    }

    fn method_line(&self) -> String {
        let a = &self.attribution;
        let seed = a
            .method
            .seed
            .map(|s| format!(", seed {s}"))
            .unwrap_or_default();
        let c = &a.cost;
        format!(
            "{} {}{seed} · perturbation {} · unit {} ({} of {} scores) · {} evaluations, {} forward passes, {} tokens, {:.2} s · model {}",
            a.method.name,
            a.method.params,
            a.perturbation,
            self.unit,
            self.aggregate.name(),
            self.report
                .attribution
                .units
                .first()
                .map_or("token", |u| u.level.as_str()),
            c.evaluations,
            c.forward_passes,
            c.tokens,
            c.seconds,
            a.model
        )
    }
}

fn max_abs(scores: &[f64]) -> f64 {
    scores.iter().fold(0f64, |m, s| m.max(s.abs()))
}

/// The input with each unit painted by its score for target `t` (plain: units carrying at
/// least 5% of the attribution are followed by their score in brackets).
fn painted_text(v: &HeatmapView<'_>, t: usize, color: ColorMode) -> String {
    let a = &v.attribution;
    let scores = &a.scores[t];
    let m = max_abs(scores);
    let shares = a.shares(t);
    let input: Vec<char> = v.report.input.chars().collect();
    let mut out = String::new();
    let mut at = 0;
    for (u, unit) in a.units.iter().enumerate() {
        let (start, end) = unit.span.unwrap_or((at, at));
        if start > at {
            out.extend(input[at..start.min(input.len())].iter());
        }
        let text: String = input[start.min(input.len())..end.min(input.len())]
            .iter()
            .map(|&c| {
                if c.is_control() && c != '\n' {
                    '\u{fffd}'
                } else {
                    c
                }
            })
            .collect();
        match color {
            ColorMode::TrueColor => {
                let (r, g, b) = shade(scores[u], m);
                let _ = write!(out, "\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{text}\x1b[0m");
            }
            ColorMode::Plain => {
                out.push_str(&text);
                if shares[u].abs() >= 0.05 {
                    let _ = write!(out, "[{:+.3}]", scores[u]);
                }
            }
        }
        at = end;
    }
    if at < input.len() {
        out.extend(input[at..].iter());
    }
    out
}

/// The terminal view: header, one shaded input per target (up to the first few), the
/// source × target table for continuations, the top units and a verbalization.
pub fn render_attribute_terminal(v: &HeatmapView<'_>, color: ColorMode) -> String {
    let a = &v.attribution;
    let r = v.report;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "input ({}): {}",
        r.prompt_format,
        truncated(&r.input, 200)
    );
    let _ = writeln!(out, "output ({}): {:?}\n", r.answer_source, r.answer);
    let shown: Vec<usize> = if v.is_sequence() {
        vec![0]
    } else {
        (0..a.targets.len()).collect()
    };
    for &t in &shown {
        let _ = writeln!(
            out,
            "target: {} = {:.4} (input removed: {:.4})",
            describe_target(&a.targets[t]),
            a.value_full[t],
            a.value_empty[t]
        );
        let _ = writeln!(out, "  {}", painted_text(v, t, color).replace('\n', "\n  "));
        let top: Vec<String> = a
            .ranking(t)
            .iter()
            .take(5)
            .map(|&u| {
                let se = a
                    .std_errors
                    .as_ref()
                    .map(|e| format!(" ± {:.3}", e[t][u]))
                    .unwrap_or_default();
                format!("{:?} {:+.4}{se}", a.units[u].label, a.scores[t][u])
            })
            .collect();
        let _ = writeln!(out, "  top: {}", top.join(", "));
        let _ = writeln!(out, "  {}\n", verbalize(a, t));
    }
    if v.is_sequence() {
        table_terminal(&mut out, v, color);
    }
    let _ = writeln!(out, "method: {}", v.method_line());
    if !a.diagnostics.is_null() && a.diagnostics != serde_json::json!({}) {
        let _ = writeln!(out, "diagnostics: {}", a.diagnostics);
    }
    out
}

/// Source units × answer tokens, each cell shaded on its column's scale.
fn table_terminal(out: &mut String, v: &HeatmapView<'_>, color: ColorMode) {
    let a = &v.attribution;
    let columns = v.token_targets();
    let _ = writeln!(
        out,
        "source {} × output token ({}):",
        v.unit, a.targets[columns[0]].kind
    );
    for block in columns.chunks(TABLE_COLUMNS) {
        let mut header = format!("  {:<LABEL_WIDTH$}", "");
        for &t in block {
            let _ = write!(
                header,
                " {:>7}",
                truncated(&format!("{:?}", a.targets[t].label), 7)
            );
        }
        let _ = writeln!(out, "{header}");
        for (u, unit) in a.units.iter().enumerate() {
            let mut line = format!("  {:<LABEL_WIDTH$}", truncated(&unit.label, LABEL_WIDTH));
            for &t in block {
                let cell = format!("{:>+7.3}", a.scores[t][u]);
                match color {
                    ColorMode::Plain => {
                        let _ = write!(line, " {cell}");
                    }
                    ColorMode::TrueColor => {
                        let (r, g, b) = shade(a.scores[t][u], max_abs(&a.scores[t]));
                        let _ =
                            write!(line, " \x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{cell}\x1b[0m");
                    }
                }
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out);
    }
}

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
.meta, .note { color: #555; font-size: 0.9rem; }
.text { white-space: pre-wrap; line-height: 1.9; font-size: 1.05rem; border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 0.8rem; }
.u { border-radius: 3px; padding: 0.05rem 0; }
.verbal { font-style: italic; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.85rem; }
td, th { padding: 0.15rem 0.4rem; border: 1px solid #eee; text-align: right; }
th { font-family: ui-monospace, monospace; white-space: pre; }
td.src { text-align: left; font-family: ui-monospace, monospace; white-space: pre; }
.legend span.swatch { display: inline-block; width: 2.2rem; height: 0.9rem; vertical-align: middle; border: 1px solid #ddd; }
"#;

fn rgb(score: f64, max_abs: f64) -> String {
    let (r, g, b) = shade(score, max_abs);
    format!("rgb({r}, {g}, {b})")
}

/// The shaded input text for target `t`, one `<span class="u">` per unit with its score.
fn text_html(v: &HeatmapView<'_>, t: usize) -> String {
    let a = &v.attribution;
    let scores = &a.scores[t];
    let m = max_abs(scores);
    let input: Vec<char> = v.report.input.chars().collect();
    let slice = |x: usize, y: usize| -> String {
        escape(
            &input[x.min(input.len())..y.min(input.len())]
                .iter()
                .collect::<String>(),
        )
    };
    let mut out = String::from("<div class=\"text\">");
    let mut at = 0;
    for (u, unit) in a.units.iter().enumerate() {
        let (start, end) = unit.span.unwrap_or((at, at));
        if start > at {
            out.push_str(&slice(at, start));
        }
        let _ = write!(
            out,
            "<span class=\"u\" data-unit=\"{u}\" data-score=\"{:.6}\" title=\"{:+.4}\" style=\"background: {}\">{}</span>",
            scores[u] + 0.0,
            scores[u] + 0.0,
            rgb(scores[u], m),
            slice(start, end)
        );
        at = end;
    }
    out.push_str(&slice(at, input.len()));
    out.push_str("</div>");
    out
}

/// The self-contained HTML page: header, the shaded text per target (the whole continuation
/// first), the source × target table for continuations, and the data as embedded JSON.
pub fn render_attribute_html(v: &HeatmapView<'_>) -> String {
    let a = &v.attribution;
    let r = v.report;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Glassbox attribution</title><style>{STYLE}</style></head><body>\n"
    );
    let _ = write!(
        out,
        "<h1>Which input drove the output?</h1>\n<p class=\"meta\">{}</p>\n<p><b>Output</b> ({}): <code>{}</code></p>\n",
        escape(&v.method_line()),
        escape(&r.answer_source),
        escape(&r.answer)
    );
    let shown: Vec<usize> = if v.is_sequence() {
        vec![0]
    } else {
        (0..a.targets.len()).collect()
    };
    for t in shown {
        let _ = write!(
            out,
            "<h2 class=\"target\" data-target=\"{t}\">{} = {:.4} <span class=\"note\">(input removed: {:.4})</span></h2>\n{}\n<p class=\"verbal\">{}</p>\n",
            escape(&describe_target(&a.targets[t])),
            a.value_full[t],
            a.value_empty[t],
            text_html(v, t),
            escape(&verbalize(a, t))
        );
    }
    if v.is_sequence() {
        let columns = v.token_targets();
        out.push_str("<h2>Source × output token</h2>\n<table id=\"matrix\"><thead><tr><th></th>");
        for &t in &columns {
            let _ = write!(out, "<th>{}</th>", escape(&a.targets[t].label));
        }
        out.push_str("</tr></thead><tbody>\n");
        for (u, unit) in a.units.iter().enumerate() {
            let _ = write!(out, "<tr><td class=\"src\">{}</td>", escape(&unit.label));
            for &t in &columns {
                let s = a.scores[t][u];
                let _ = write!(
                    out,
                    "<td data-score=\"{:.6}\" style=\"background: {}\">{:+.3}</td>",
                    s + 0.0,
                    rgb(s, max_abs(&a.scores[t])),
                    s + 0.0
                );
            }
            out.push_str("</tr>\n");
        }
        out.push_str(
            "</tbody></table>\n<p class=\"note\">Each column is shaded on its own scale.</p>\n",
        );
    }
    let _ = writeln!(
        out,
        "<p class=\"legend note\"><span class=\"swatch\" style=\"background: {}\"></span> works against the target · <span class=\"swatch\" style=\"background: {}\"></span> no effect · <span class=\"swatch\" style=\"background: {}\"></span> supports the target</p>",
        rgb(-1.0, 1.0),
        rgb(0.0, 1.0),
        rgb(1.0, 1.0)
    );
    let data = serde_json::to_string(r)
        .unwrap_or_default()
        .replace("</", "<\\/");
    let _ = write!(
        out,
        "<script type=\"application/json\" id=\"glassbox-data\">{data}</script>\n</body></html>\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::attribute_report;

    #[test]
    fn tokens_regroup_into_words_and_sentences_by_each_aggregation() {
        let r = attribute_report();
        let words = r.regrouped("word", Aggregation::Sum).unwrap();
        assert_eq!(words.units.len(), 4);
        // Tokens 0.5 ("Gre"), 0.25 ("at") form the word "Great".
        assert!((words.scores[0][0] - 0.75).abs() < 1e-12);
        let mean = r.regrouped("word", Aggregation::Mean).unwrap();
        assert!((mean.scores[0][0] - 0.375).abs() < 1e-12);
        let absmax = r.regrouped("sentence", Aggregation::AbsMax).unwrap();
        assert_eq!(absmax.units.len(), 2);
        assert!(
            (absmax.scores[0][1] - -0.8).abs() < 1e-12,
            "{:?}",
            absmax.scores
        );
        let total: f64 = r.attribution.scores[0].iter().sum();
        let sentences = r.regrouped("sentence", Aggregation::Sum).unwrap();
        assert!((sentences.scores[0].iter().sum::<f64>() - total).abs() < 1e-12);
        assert!(r.regrouped("paragraph", Aggregation::Sum).is_err());
        let w = HeatmapView::new(&r, Some("word"), None).unwrap();
        assert!(w.attribution.check_shape().is_ok());
    }

    #[test]
    fn views_paint_every_unit_and_escape_text() {
        let r = attribute_report();
        let v = HeatmapView::new(&r, None, None).unwrap();
        let plain = render_attribute_terminal(&v, ColorMode::Plain);
        assert!(plain.contains("Great[+0.750]"), "{plain}");
        assert!(!plain.contains('\x1b'));
        let color = render_attribute_terminal(&v, ColorMode::TrueColor);
        assert!(color.contains("\x1b[48;2;"));
        let html = render_attribute_html(&v);
        assert_eq!(html.matches("class=\"u\"").count(), 4);
        let visible = &html[..html.find("<script").unwrap()];
        assert!(
            visible.contains("&lt;b&gt;") && !visible.contains("<b>film"),
            "escaped"
        );
        assert!(html.contains("carr"), "verbalized");
    }
}
