//! A [`PivotTable`] in the four formats: cells with their seed statistics, the significance
//! marks (bold, tie), the collapse marker and the `best` selection note, each with a legend.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::render::{LATEX_PREAMBLE, csv_line, json_text, latex_row, latex_text, md_cell, md_row};
use super::{Agg, Format, Mark, PivotCell, PivotTable, SelectedOn};
use crate::stats::{ALPHA, Summary};
use crate::table::{fmt_metric, value_text};

/// Marker of a tie for the best value of a column.
pub const TIE_MARK: &str = "†";
/// Marker of a cell with at least one collapsed run.
pub const COLLAPSE_MARK: &str = "‡";
/// Marker of a `best` cell selected on test values (no validation set).
pub const TEST_SELECTION_MARK: &str = "§";

/// Writes a pivot table in a format.
pub(crate) fn render(t: &PivotTable, format: Format) -> String {
    match format {
        Format::Csv => pivot_csv(t),
        Format::Markdown => pivot_markdown(t),
        Format::Latex => pivot_latex(t),
        Format::Json => pivot_json(t),
    }
}

/// `mean ± std [lo, hi] n=3`; a single run shows its value and `n=1` only, so no one reads a
/// zero spread as certainty.
pub(crate) fn summary_text(m: &str, s: &Summary, pm: &str) -> String {
    match s.ci {
        Some((lo, hi)) if s.n > 1 => format!(
            "{} {pm} {} [{}, {}] n={}",
            fmt_metric(m, s.mean),
            fmt_metric(m, s.std),
            fmt_metric(m, lo),
            fmt_metric(m, hi),
            s.n
        ),
        _ => format!("{} n={}", fmt_metric(m, s.mean), s.n),
    }
}

/// Cell text without emphasis, with its markers in the format's spelling.
fn cell_text(t: &PivotTable, cell: &PivotCell, pm: &str, mark: impl Fn(&str) -> String) -> String {
    let m = &t.spec.metric;
    let mut s = match (t.spec.agg, cell.selected) {
        (Agg::Best, Some(sel)) => fmt_metric(m, sel.value),
        _ => summary_text(m, &cell.summary, pm),
    };
    if cell.selected.is_some_and(|s| s.on == SelectedOn::Test) {
        s.push_str(&mark(TEST_SELECTION_MARK));
    }
    if cell.mark == Mark::Tie {
        s.push_str(&mark(TIE_MARK));
    }
    if cell.collapsed > 0 {
        s.push_str(&mark(COLLAPSE_MARK));
    }
    s
}

/// The legend lines a table needs, without markup; `marks` spells the markers.
fn legend(t: &PivotTable, mark: impl Fn(&str) -> String) -> Vec<String> {
    let m = &t.spec.metric;
    let mut out = vec![match t.spec.agg {
        Agg::Mean => format!(
            "Cells: mean {m} ± sample std [95% Student-t CI] n=runs, over seeds and the other axes."
        ),
        Agg::Best => {
            format!("Cells: test {m} of the run with the highest val/{m} (selected on validation).")
        }
    }];
    out.push(format!(
        "Bold: best of its column and significantly better than the runner-up (two-sided p < {ALPHA}; paired t-test over runs equal in every other parameter, else Welch's t-test)."
    ));
    if t.has(|c| c.mark == Mark::Tie) {
        out.push(format!(
            "{} tie: the column's top two do not differ significantly (p ≥ {ALPHA}), or have too few runs to test.",
            mark(TIE_MARK)
        ));
    }
    if t.has(|c| c.selected.is_some_and(|s| s.on == SelectedOn::Test)) {
        out.push(format!(
            "{} = {} (no run of the cell has val/{m}, so the run was chosen on its test value).",
            mark(TEST_SELECTION_MARK),
            SelectedOn::Test.note()
        ));
    }
    if t.has(|c| c.collapsed > 0) {
        out.push(format!(
            "{} at least one run of the cell collapsed (README, \"Collapse\").",
            mark(COLLAPSE_MARK)
        ));
    }
    out
}

fn corner(t: &PivotTable) -> String {
    format!("{} / {}", t.spec.rows, t.spec.cols)
}

fn mark_name(cell: &PivotCell) -> &'static str {
    match cell.mark {
        Mark::Best => "best",
        Mark::Tie => "tie",
        Mark::None => "",
    }
}

fn pivot_csv(t: &PivotTable) -> String {
    let mut header = vec![t.spec.rows.clone()];
    for c in &t.col_values {
        let c = value_text(c);
        header.push(c.clone());
        let extra: &[&str] = match t.spec.agg {
            Agg::Mean => &["std", "n", "ci_low", "ci_high"],
            Agg::Best => &["n", "job_id", "selected_on"],
        };
        header.extend(extra.iter().map(|e| format!("{c} {e}")));
        header.extend(["mark", "p", "collapsed"].map(|e| format!("{c} {e}")));
    }
    let mut out = csv_line(header);
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for (r, rv) in t.row_values.iter().enumerate() {
        let mut f = vec![value_text(rv)];
        for cell in &t.cells[r] {
            let width = if t.spec.agg == Agg::Mean { 8 } else { 7 };
            let Some(cell) = cell else {
                f.extend(std::iter::repeat_n(String::new(), width));
                continue;
            };
            // Full precision: CSV is for further analysis.
            f.push(cell.shown().to_string());
            let s = &cell.summary;
            match (t.spec.agg, cell.selected) {
                (Agg::Best, sel) => {
                    f.push(s.n.to_string());
                    f.push(sel.map(|s| s.job_id.to_string()).unwrap_or_default());
                    f.push(sel.map(|s| on_name(s.on).to_owned()).unwrap_or_default());
                }
                (Agg::Mean, _) => {
                    f.push(s.std.to_string());
                    f.push(s.n.to_string());
                    f.push(opt(s.ci.map(|c| c.0)));
                    f.push(opt(s.ci.map(|c| c.1)));
                }
            }
            f.push(mark_name(cell).to_owned());
            f.push(opt(cell.test.and_then(|c| c.p)));
            f.push(cell.collapsed.to_string());
        }
        out.push_str(&csv_line(f));
    }
    out
}

fn on_name(on: SelectedOn) -> &'static str {
    match on {
        SelectedOn::Validation => "validation",
        SelectedOn::Test => "test",
    }
}

fn pivot_markdown(t: &PivotTable) -> String {
    let mut header = vec![md_cell(&corner(t))];
    header.extend(t.col_values.iter().map(|c| md_cell(&value_text(c))));
    let mut out = md_row(&header);
    let mut align = vec![":---".to_owned()];
    align.extend(t.col_values.iter().map(|_| "---:".to_owned()));
    out.push_str(&md_row(&align));
    for (r, rv) in t.row_values.iter().enumerate() {
        let mut f = vec![md_cell(&value_text(rv))];
        for cell in &t.cells[r] {
            f.push(match cell {
                None => "–".to_owned(),
                Some(c) => {
                    let text = cell_text(t, c, "±", str::to_owned);
                    if c.mark == Mark::Best {
                        format!("**{text}**")
                    } else {
                        text
                    }
                }
            });
        }
        out.push_str(&md_row(&f));
    }
    for line in legend(t, str::to_owned) {
        let _ = write!(out, "\n{}\n", md_cell(&line));
    }
    out
}

fn latex_mark(m: &str) -> String {
    let cmd = match m {
        TIE_MARK => "\\dagger",
        COLLAPSE_MARK => "\\ddagger",
        _ => "\\S",
    };
    format!("$^{{{cmd}}}$")
}

fn pivot_latex(t: &PivotTable) -> String {
    let mut out = String::from(LATEX_PREAMBLE);
    let _ = writeln!(
        out,
        "\\begin{{tabular}}{{l{}}}\n\\toprule",
        "r".repeat(t.col_values.len())
    );
    let mut header = vec![latex_text(&corner(t))];
    header.extend(t.col_values.iter().map(|c| latex_text(&value_text(c))));
    out.push_str(&latex_row(&header));
    out.push_str("\\midrule\n");
    for (r, rv) in t.row_values.iter().enumerate() {
        let mut f = vec![latex_text(&value_text(rv))];
        for cell in &t.cells[r] {
            f.push(match cell {
                None => "--".to_owned(),
                Some(c) => {
                    let text = cell_text(t, c, "$\\pm$", latex_mark);
                    if c.mark == Mark::Best {
                        format!("\\textbf{{{text}}}")
                    } else {
                        text
                    }
                }
            });
        }
        out.push_str(&latex_row(&f));
    }
    out.push_str("\\bottomrule\n\\end{tabular}\n");
    // The legend's markers are spelled as in the table; the rest is escaped text.
    for line in legend(t, |m| format!("\u{0}{m}\u{0}")) {
        let escaped: Vec<String> = line
            .split('\u{0}')
            .enumerate()
            .map(|(i, part)| {
                if i % 2 == 1 {
                    latex_mark(part)
                } else {
                    latex_text(part)
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "\\par\\noindent{{\\footnotesize {}}}",
            escaped.concat()
        );
    }
    out
}

fn pivot_json(t: &PivotTable) -> String {
    let cells: Vec<Vec<Value>> = t
        .cells
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| match cell {
                    None => Value::Null,
                    Some(c) => {
                        let s = &c.summary;
                        let mut o = json!({
                            "value": c.shown(),
                            "n": s.n,
                            "best": c.mark == Mark::Best,
                            "tie": c.mark == Mark::Tie,
                            "collapsed": c.collapsed,
                        });
                        if let Some(test) = c.test {
                            o["test"] = json!(test.kind.as_str());
                            o["p_value"] = json!(test.p);
                        }
                        match (t.spec.agg, c.selected) {
                            (Agg::Mean, _) => {
                                o["std"] = json!(s.std);
                                o["ci95"] = json!(s.ci.map(|(a, b)| [a, b]));
                            }
                            (Agg::Best, Some(sel)) => {
                                o["job_id"] = json!(sel.job_id);
                                o["selected_on"] = json!(on_name(sel.on));
                            }
                            (Agg::Best, None) => {}
                        }
                        o
                    }
                })
                .collect()
        })
        .collect();
    let doc = json!({
        "kind": "pivot",
        "rows": t.spec.rows,
        "cols": t.spec.cols,
        "metric": t.spec.metric,
        "agg": match t.spec.agg { Agg::Best => "best", Agg::Mean => "mean" },
        "alpha": ALPHA,
        "legend": legend(t, str::to_owned),
        "row_values": t.row_values,
        "col_values": t.col_values,
        "cells": cells,
    });
    json_text(&doc)
}
