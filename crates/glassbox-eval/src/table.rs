//! Comparison tables: explainers (rows) by metrics (columns), each cell the mean ± standard
//! error over instances, rendered for a terminal, Markdown or a self-contained HTML page.
//! Per-instance values are kept, so a table is aggregated when it is shown (late aggregation).

use std::fmt::Write;

use glassbox_report::escape_html;

use crate::EvalError;
use crate::faithfulness::MetricResult;
use crate::request::Direction;
use crate::stats::{mean, standard_error};

/// Decimals shown in cells: metric values are mostly in [−1, 1], where three decimals separate
/// explainers without suggesting more precision than a few hundred instances give.
const CELL_DECIMALS: usize = 3;
/// What an empty cell (no defined values) shows.
const NO_VALUE: &str = "—";

/// A metric column: its name and which way is better (shown as ↑ or ↓).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub direction: Direction,
}

/// One explainer's per-instance values, one list per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub explainer: String,
    pub cells: Vec<Vec<f64>>,
}

/// The values of a cell, summarized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean: Option<f64>,
    /// Standard error of the mean (sample standard deviation / √count); `None` below two.
    pub std_error: Option<f64>,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        Summary {
            count: values.len(),
            mean: mean(values),
            std_error: standard_error(values),
        }
    }

    /// `0.512 ± 0.034`, `0.512` for a single value, `—` for none.
    fn cell(&self) -> String {
        match (self.mean, self.std_error) {
            (Some(m), Some(se)) => format!("{m:.CELL_DECIMALS$} ± {se:.CELL_DECIMALS$}"),
            (Some(m), None) => format!("{m:.CELL_DECIMALS$}"),
            _ => NO_VALUE.to_string(),
        }
    }
}

/// Explainers by metrics. Fields are private so that every row keeps one cell per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Row>,
}

impl Table {
    pub fn new(columns: Vec<Column>) -> Self {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    /// Adds an explainer's row; `cells[c]` are its per-instance values for column c, which
    /// must be finite (leave undefined values out).
    pub fn push_row(
        &mut self,
        explainer: impl Into<String>,
        cells: Vec<Vec<f64>>,
    ) -> Result<(), EvalError> {
        let explainer = explainer.into();
        if cells.len() != self.columns.len() {
            return Err(EvalError::TableShape {
                row: explainer,
                expected: self.columns.len(),
                found: cells.len(),
            });
        }
        for (c, values) in cells.iter().enumerate() {
            if let Some(index) = values.iter().position(|v| !v.is_finite()) {
                return Err(EvalError::NonFinite {
                    what: "table cell",
                    index: c,
                    value: values[index],
                });
            }
        }
        self.rows.push(Row { explainer, cells });
        Ok(())
    }

    /// A table from (explainer, one instance's result) pairs: a column per distinct metric
    /// spec and a row per explainer, both in first-seen order. Undefined values are left out
    /// of the cells, so a cell's count says how many instances had one.
    pub fn from_results<'a>(
        results: impl IntoIterator<Item = (&'a str, &'a MetricResult)>,
    ) -> Self {
        let mut table = Table::new(Vec::new());
        for (explainer, result) in results {
            let c = match table.columns.iter().position(|col| col.name == result.spec) {
                Some(c) => c,
                None => {
                    table.columns.push(Column {
                        name: result.spec.clone(),
                        direction: result.direction,
                    });
                    for row in &mut table.rows {
                        row.cells.push(Vec::new());
                    }
                    table.columns.len() - 1
                }
            };
            let r = match table.rows.iter().position(|row| row.explainer == explainer) {
                Some(r) => r,
                None => {
                    table.rows.push(Row {
                        explainer: explainer.to_string(),
                        cells: vec![Vec::new(); table.columns.len()],
                    });
                    table.rows.len() - 1
                }
            };
            table.rows[r].cells[c].extend(result.value);
        }
        table
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The header cells: `explainer`, then each column with its arrow.
    fn header(&self) -> Vec<String> {
        std::iter::once("explainer".to_string())
            .chain(
                self.columns
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.direction.arrow())),
            )
            .collect()
    }

    /// Every row's cells as text, explainer first.
    fn body(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|row| {
                std::iter::once(row.explainer.clone())
                    .chain(row.cells.iter().map(|v| Summary::of(v).cell()))
                    .collect()
            })
            .collect()
    }

    /// Aligned plain text: names left-aligned, numbers right-aligned.
    pub fn render_text(&self) -> String {
        let header = self.header();
        let body = self.body();
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                std::iter::once(&header)
                    .chain(&body)
                    .map(|line| line[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (text, &w))| {
                    let pad = " ".repeat(w - text.chars().count());
                    if c == 0 {
                        format!("{text}{pad}")
                    } else {
                        format!("{pad}{text}")
                    }
                })
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
        let mut out = String::new();
        for cells in [header, rule].iter().chain(&body) {
            out.push_str(&line(cells));
            out.push('\n');
        }
        out
    }

    /// A Markdown (GFM) table, `|` in names escaped.
    pub fn render_markdown(&self) -> String {
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(&self.header());
        out.push_str("|:--");
        out.push_str(&"|--:".repeat(self.columns.len()));
        out.push_str("|\n");
        for cells in self.body() {
            out.push_str(&line(&cells));
        }
        out
    }

    /// A self-contained HTML page (inline style, no scripts or external resources) holding the
    /// table, with every name escaped.
    pub fn render_html(&self) -> String {
        let mut out = String::from(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>Glassbox evaluation</title>\n<style>\
             body{font-family:system-ui,sans-serif;margin:2em}\
             table{border-collapse:collapse}\
             th,td{padding:.3em .8em;border-bottom:1px solid #ccc}\
             td.num{text-align:right;font-variant-numeric:tabular-nums}\
             </style>\n</head>\n<body>\n<table>\n\
             <caption>mean ± standard error over instances; ↑ higher is better, ↓ lower is \
             better</caption>\n<thead><tr>",
        );
        for cell in self.header() {
            let _ = write!(out, "<th>{}</th>", escape_html(&cell));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for cells in self.body() {
            out.push_str("<tr>");
            for (c, cell) in cells.iter().enumerate() {
                let class = if c == 0 { "" } else { " class=\"num\"" };
                let _ = write!(out, "<td{class}>{}</td>", escape_html(cell));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody>\n</table>\n</body>\n</html>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faithfulness::{FaithfulnessPlan, TargetView};
    use crate::request::MetricRequest;

    fn table() -> Table {
        let mut t = Table::new(vec![
            Column {
                name: "comprehensiveness".into(),
                direction: Direction::HigherIsBetter,
            },
            Column {
                name: "infidelity".into(),
                direction: Direction::LowerIsBetter,
            },
        ]);
        // Mean of 0.1 and 0.3 = 0.2; deviations ±0.1, sample variance 0.02 / 1, SD √0.02,
        // SE √0.02 / √2 = 0.1.
        t.push_row("shapley", vec![vec![0.1, 0.3], vec![0.5]])
            .unwrap();
        t.push_row("<attention>", vec![vec![], vec![1.0, 2.0, 3.0]])
            .unwrap();
        t
    }

    #[test]
    fn summaries_by_hand() {
        let s = Summary::of(&[0.1, 0.3]);
        assert_eq!(s.count, 2);
        assert!((s.mean.unwrap() - 0.2).abs() < 1e-12);
        assert!((s.std_error.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(s.cell(), "0.200 ± 0.100");
        assert_eq!(Summary::of(&[0.5]).cell(), "0.500");
        assert_eq!(Summary::of(&[]).cell(), "—");
        // 1, 2, 3: mean 2, sample variance (1 + 0 + 1) / 2 = 1, SE 1 / √3 = 0.577.
        assert_eq!(Summary::of(&[1.0, 2.0, 3.0]).cell(), "2.000 ± 0.577");
    }

    #[test]
    fn renders_text() {
        let expected = "\
explainer    comprehensiveness ↑   infidelity ↓
-----------  -------------------  -------------
shapley            0.200 ± 0.100          0.500
<attention>                    —  2.000 ± 0.577
";
        assert_eq!(table().render_text(), expected);
    }

    #[test]
    fn renders_markdown_and_html() {
        let md = table().render_markdown();
        assert_eq!(
            md,
            "| explainer | comprehensiveness ↑ | infidelity ↓ |\n\
             |:--|--:|--:|\n\
             | shapley | 0.200 ± 0.100 | 0.500 |\n\
             | <attention> | — | 2.000 ± 0.577 |\n"
        );
        let mut piped = Table::new(vec![]);
        piped.push_row("a|b", vec![]).unwrap();
        assert!(piped.render_markdown().contains("| a\\|b |"));
        let html = table().render_html();
        assert!(html.contains("<td>&lt;attention&gt;</td>"));
        assert!(!html.contains("<attention>"));
        assert!(html.contains("<th>infidelity ↓</th>"));
        assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
    }

    #[test]
    fn bad_rows_are_rejected() {
        let mut t = table();
        assert!(matches!(
            t.push_row("short", vec![vec![]]),
            Err(EvalError::TableShape { .. })
        ));
        assert!(matches!(
            t.push_row("nan", vec![vec![f64::NAN], vec![]]),
            Err(EvalError::NonFinite { .. })
        ));
        assert_eq!(t.rows().len(), 2);
    }

    #[test]
    fn from_results_groups_by_explainer_and_spec() {
        let requests = [MetricRequest::TopKDrop { k: 1 }, MetricRequest::RankDel];
        let result = |scores: &[f64]| {
            let plan = FaithfulnessPlan::new(scores, &requests, 0).unwrap();
            // f = units kept / 2 over two units.
            let values: Vec<Vec<f64>> = plan
                .coalitions()
                .iter()
                .map(|k| vec![k.iter().filter(|k| **k).count() as f64 / 2.0])
                .collect();
            plan.finish(&values, &TargetView::new(0)).unwrap()
        };
        // Removing any one unit drops f by 1/2; the drops are constant, so rankdel is
        // undefined and left out.
        let (a, b) = (result(&[0.9, 0.1]), result(&[0.2, 0.3]));
        let pairs = [("x", &a[0]), ("x", &a[1]), ("x", &b[0]), ("y", &b[1])];
        let t = Table::from_results(pairs);
        let names: Vec<&str> = t.columns().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["topk_drop:1", "rankdel"]);
        assert_eq!(t.rows()[0].cells, vec![vec![0.5, 0.5], vec![]]);
        assert_eq!(t.rows()[1].explainer, "y");
        assert_eq!(t.rows()[1].cells, vec![Vec::<f64>::new(); 2]);
        assert!(t.render_text().contains("0.500 ± 0.000"));
    }
}
