//! The terminal view of a [`CiteReport`]: ranked passages with scores, shares and bars, each
//! shaded red (supports the answer) or blue (works against it) on a symmetric scale.

use std::fmt::Write;

use crate::schema::{Attribution, CiteReport, Refinement};

/// How text is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    /// 24-bit ANSI backgrounds.
    TrueColor,
    /// No escape codes (pipes, logs, dumb terminals).
    Plain,
}

/// Characters of passage text shown per unit in the ranked list.
const TEXT_WIDTH: usize = 96;
/// Width of the share bar.
const BAR_WIDTH: usize = 20;

/// Background colour of a score on a symmetric scale: white at 0, red for +max, blue for −max.
/// A score that is not a number (a failed estimate) is shown white, as "no evidence".
pub(crate) fn shade(score: f64, max_abs: f64) -> (u8, u8, u8) {
    let t = score / max_abs;
    let t = if t.is_finite() {
        t.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let fade = |full: f64| (255.0 - (255.0 - full) * t.abs()).round() as u8;
    if t >= 0.0 {
        (255, fade(80.0), fade(80.0))
    } else {
        (fade(80.0), fade(120.0), 255)
    }
}

fn painted(text: &str, score: f64, max_abs: f64, color: ColorMode) -> String {
    match color {
        ColorMode::Plain => text.to_string(),
        ColorMode::TrueColor => {
            let (r, g, b) = shade(score, max_abs);
            format!("\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{text}\x1b[0m")
        }
    }
}

/// The text on one line with control characters replaced, so that text from documents can
/// neither break the layout nor send escape codes to the terminal.
fn printable(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// [`printable`] text cut to `width` characters, marking the cut with `…`.
pub(crate) fn truncated(text: &str, width: usize) -> String {
    let line = printable(text);
    if line.chars().count() <= width {
        line
    } else {
        format!(
            "{}…",
            line.chars()
                .take(width.saturating_sub(1))
                .collect::<String>()
        )
    }
}

/// Ranked units of target 0 of an attribution, indented by `indent`.
fn ranked(out: &mut String, a: &Attribution, indent: &str, color: ColorMode) {
    let scores = &a.scores[0];
    let max_abs = scores.iter().fold(0f64, |m, s| m.max(s.abs()));
    let shares = a.shares(0);
    for (rank, &u) in a.ranking(0).iter().enumerate() {
        let se = a
            .std_errors
            .as_ref()
            .map(|e| format!(" ± {:.3}", e[0][u]))
            .unwrap_or_default();
        let filled = ((shares[u].abs() * BAR_WIDTH as f64).round() as usize).min(BAR_WIDTH);
        let bar: String = "█".repeat(filled) + &" ".repeat(BAR_WIDTH - filled);
        let unit = &a.units[u];
        let text = match color {
            ColorMode::Plain => printable(&unit.text),
            ColorMode::TrueColor => truncated(&unit.text, TEXT_WIDTH),
        };
        let _ = writeln!(
            out,
            "{indent}{:>2}. {:<8} {:>+9.4}{se:<9} {:>6.1}% {bar}  {}",
            rank + 1,
            printable(&unit.label),
            scores[u],
            100.0 * shares[u],
            painted(&text, scores[u], max_abs, color)
        );
    }
}

/// One line naming each answer token's top passage, when per-token targets are present: where
/// the whole answer and single tokens disagree is often the interesting part.
fn top_per_token(out: &mut String, report: &CiteReport) {
    let a = &report.attribution;
    let parts: Vec<String> = (0..report.answer_tokens.len())
        .filter_map(|i| {
            let t = token_target(a, i)?;
            let &u = a.ranking(t).first()?;
            Some(format!(
                "{:?} {} {:+.3}",
                report.answer_tokens[i].text,
                printable(&a.units[u].label),
                a.scores[t][u]
            ))
        })
        .collect();
    if !parts.is_empty() {
        let _ = writeln!(out, "\ntop passage per answer token: {}", parts.join(", "));
    }
}

/// Targets that are neither the answer nor one of its tokens (the alternative answers of the
/// answer-identity game), each with the unit that most supports it.
fn other_targets(out: &mut String, a: &Attribution) {
    let others: Vec<usize> = (1..a.targets.len())
        .filter(|&t| a.targets[t].tokens.is_none())
        .collect();
    if others.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nother targets ({}):", a.targets[others[0]].kind);
    for t in others {
        if let Some(&u) = a.ranking(t).first() {
            let _ = writeln!(
                out,
                "  {:?}: top {} {:+.3}",
                printable(&a.targets[t].label),
                printable(&a.units[u].label),
                a.scores[t][u]
            );
        }
    }
}

/// The target of answer token `i` alone, if the attribution has per-token targets.
pub(crate) fn token_target(a: &Attribution, i: usize) -> Option<usize> {
    (1..a.targets.len()).find(|&t| a.targets[t].tokens == Some((i, i + 1)))
}

fn refinements(
    out: &mut String,
    parent: &Attribution,
    list: &[Refinement],
    depth: usize,
    color: ColorMode,
) {
    let indent = "    ".repeat(depth);
    for r in list {
        let unit = parent
            .units
            .get(r.parent_unit)
            .map_or("?".to_string(), |u| printable(&u.label));
        let _ = writeln!(
            out,
            "\n{indent}inside {unit} ({} {}s, {}):",
            r.attribution.units.len(),
            r.attribution
                .units
                .first()
                .map_or("unit", |u| u.level.as_str()),
            r.attribution.method.name
        );
        ranked(out, &r.attribution, &format!("{indent}  "), color);
        refinements(out, &r.attribution, &r.refinements, depth + 1, color);
    }
}

/// The report as terminal text: question and answer, the passages ranked for the whole
/// answer, each token's top passage, refinements, then cost and method.
///
/// The report's arrays must agree in shape, as [`CiteReport::from_json`] checks.
pub fn render_terminal(report: &CiteReport, color: ColorMode) -> String {
    let a = &report.attribution;
    let mut out = String::new();
    let _ = writeln!(out, "question: {}", printable(&report.question));
    let _ = writeln!(
        out,
        "answer:   {}{}",
        printable(&report.answer),
        if report.answer_generated {
            "   (generated)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "\npassages by {} ({} perturbation); target: {} of the answer ({:.3} with every passage, {:.3} with none)\n",
        a.method.name,
        a.perturbation,
        a.targets.first().map_or("value", |t| t.kind.as_str()),
        a.value_full.first().copied().unwrap_or(0.0),
        a.value_empty.first().copied().unwrap_or(0.0),
    );
    ranked(&mut out, a, "", color);
    top_per_token(&mut out, report);
    other_targets(&mut out, a);
    refinements(&mut out, a, &report.refinements, 1, color);
    let c = &a.cost;
    let _ = writeln!(
        out,
        "\ncost: {} coalitions, {} forward passes, {} tokens ({} from scratch, {:.1}x fewer), {:.2} s; model {}",
        c.evaluations,
        c.forward_passes,
        c.tokens,
        c.tokens_from_scratch,
        if c.tokens > 0 {
            c.tokens_from_scratch as f64 / c.tokens as f64
        } else {
            0.0
        },
        c.seconds,
        a.model
    );
    let seed = a
        .method
        .seed
        .map(|s| format!(", seed {s}"))
        .unwrap_or_default();
    let params = if a.method.params.is_null() {
        String::new()
    } else {
        format!(" {}", a.method.params)
    };
    let _ = writeln!(out, "method: {}{params}{seed}", a.method.name);
    if !a.diagnostics.is_null() {
        let _ = writeln!(out, "diagnostics: {}", a.diagnostics);
    }
    if let Some(approx) = &report.approximation {
        approximation(&mut out, approx);
    }
    out
}

/// Says that the scores are an estimate, of what, how they were made, and how well they held
/// up where they were checked.
fn approximation(out: &mut String, approx: &crate::Approximation) {
    let _ = writeln!(out, "\nESTIMATE of {}, made by:", approx.estimate_of);
    for step in &approx.steps {
        let _ = writeln!(out, "  {}: {} {}", step.name, step.description, step.params);
    }
    if let Some(c) = &approx.check {
        let labels: Vec<String> = c.units.iter().map(|u| format!("[{}]", u + 1)).collect();
        let rho = c
            .spearman
            .map_or_else(|| "n/a".to_string(), |r| format!("{r:.3}"));
        let _ = writeln!(
            out,
            "check against exact leave-one-out on {}: Spearman {rho}, top passage {} ({} tokens, {:.2} s)",
            labels.join(" "),
            if c.top1_agrees { "agrees" } else { "DISAGREES" },
            c.cost.tokens,
            c.cost.seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::report;

    /// The ranked line of passage `label` (first occurrence).
    fn line_of<'a>(text: &'a str, label: &str) -> &'a str {
        text.lines().find(|l| l.contains(label)).unwrap()
    }

    #[test]
    fn estimates_say_so_with_their_check() {
        let mut r = report();
        assert!(!render_terminal(&r, ColorMode::Plain).contains("ESTIMATE"));
        r.approximation = Some(crate::testing::approximation());
        let text = render_terminal(&r, ColorMode::Plain);
        assert!(
            text.contains("ESTIMATE of leave_one_out on test-model"),
            "{text}"
        );
        assert!(text.contains("  context_kv: passages cached"));
        assert!(text.contains("on [3] [1] [2]: Spearman 0.800, top passage agrees"));
    }

    #[test]
    fn ranks_passages_with_scores_errors_and_shares() {
        let plain = render_terminal(&report(), ColorMode::Plain);
        assert!(!plain.contains('\x1b'), "plain mode has no escapes");
        let ranked: Vec<&str> = plain
            .lines()
            .filter(|l| l.contains(". ["))
            .take(4)
            .collect();
        assert!(
            ranked[0].contains(" 1. [3]") && ranked[3].contains(" 4. [2]"),
            "{plain}"
        );
        // Shares of |scores| (total 2.2): 1.4 → 63.6 %, -0.5 → -22.7 %.
        let top = line_of(&plain, "1. [3]");
        assert!(
            top.contains("+1.4000 ± 0.050") && top.contains(" 63.6% "),
            "{top}"
        );
        assert!(line_of(&plain, "4. [2]").contains("-22.7%"));
        assert!(
            plain.contains("It was rebuilt by Ottilie Brask. She used granite."),
            "full text"
        );
        assert!(
            plain.contains("inside [3] (2 sentences"),
            "refinements shown"
        );
        assert!(plain.contains("top passage per answer token: \"Ott\" [3] +1.000, \"ilie\" [3] +0.400, \".\" [1] +0.900"));
        assert!(plain.contains("20 coalitions, 7 forward passes, 900 tokens (2400 from scratch"));
        assert!(plain.contains("method: permutation_shapley {\"permutations\":8}, seed 3"));
    }

    #[test]
    fn colours_by_sign_in_truecolor() {
        let color = render_terminal(&report(), ColorMode::TrueColor);
        let red = line_of(&color, "1. [3]");
        assert!(
            red.contains("\x1b[48;2;255;80;80m"),
            "the top passage is full red"
        );
        let (r, g, b) = shade(-0.5, 1.4);
        assert!(b == 255 && r < 255 && g < 255);
        let blue = line_of(&color, "4. [2]");
        assert!(
            blue.contains(&format!("\x1b[48;2;{r};{g};{b}m")),
            "a negative passage is blue"
        );
    }

    #[test]
    fn document_text_cannot_send_escapes() {
        let mut r = report();
        r.attribution.units[0].text = "evil\x1b[2J text\nover lines".into();
        r.question = "why\x07?".into();
        let plain = render_terminal(&r, ColorMode::Plain);
        assert!(!plain.contains('\x1b') && !plain.contains('\x07'));
        assert!(plain.contains("evil\u{fffd}[2J text over lines"));
        let color = render_terminal(&r, ColorMode::TrueColor);
        assert!(!color.contains("\x1b[2J"));
    }

    #[test]
    fn long_passages_are_cut_in_color_mode() {
        let mut r = report();
        r.attribution.units[0].text = "word ".repeat(100);
        let color = render_terminal(&r, ColorMode::TrueColor);
        let cut = format!("{}…", "word ".repeat(19));
        assert!(color.contains(&cut), "{color}");
        let plain = render_terminal(&r, ColorMode::Plain);
        assert!(
            plain.contains(&"word ".repeat(99)),
            "plain mode shows everything"
        );
    }

    #[test]
    fn alternative_answers_are_listed_with_their_top_passage() {
        let text = render_terminal(&crate::testing::identity_report(), ColorMode::Plain);
        assert!(text.contains("other targets (answer_identity):"), "{text}");
        assert!(text.contains("  \"Edwin Marr.\": top [1] +0.000"), "{text}");
        assert!(
            text.contains("  \"The lighthouse <b>stands</b>.\": top [1] +0.500"),
            "{text}"
        );
        assert!(!text.contains("top passage per answer token"));
    }

    #[test]
    fn shade_is_symmetric() {
        assert_eq!(shade(0.0, 1.0), (255, 255, 255));
        assert_eq!(shade(1.0, 1.0), (255, 80, 80));
        assert_eq!(shade(-1.0, 1.0), (80, 120, 255));
        assert_eq!(shade(2.0, 1.0), shade(1.0, 1.0), "clamped");
        assert_eq!(shade(0.5, 0.0), (255, 255, 255));
        assert_eq!(shade(f64::NAN, 1.0), (255, 255, 255));
    }
}
