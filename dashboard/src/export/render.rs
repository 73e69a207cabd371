//! The four text formats of a [`ResultTable`]: CSV (full precision, for analysis), Markdown,
//! LaTeX (booktabs) and JSON, each with its own escaping.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::{Format, LongTable, ResultTable, seeds};
use crate::data::RunRow;
use crate::table::{fmt_result, value_text};

/// Writes a table in a format.
pub fn render(table: &ResultTable, format: Format) -> String {
    match (table, format) {
        (ResultTable::Long(t), Format::Csv) => long_csv(t),
        (ResultTable::Long(t), Format::Markdown) => long_markdown(t),
        (ResultTable::Long(t), Format::Latex) => long_latex(t),
        (ResultTable::Long(t), Format::Json) => long_json(t),
        (ResultTable::Seeds(t), f) => seeds::render(t, f),
        (ResultTable::Pivot(t), f) => super::pivot_render::render(t, f),
    }
}

/// Quotes a CSV field when it holds a comma, quote, line break or edge whitespace (RFC 4180).
pub(crate) fn csv_field(s: &str) -> String {
    let needs = s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ');
    if needs {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Escapes text for a Markdown table cell: pipes, Markdown punctuation, HTML brackets and
/// line breaks (which would end the row).
pub(crate) fn md_cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' | '|' | '*' | '_' | '`' | '<' | '>' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(ch);
            }
            '\r' => {}
            '\n' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}

/// Escapes text for LaTeX (text mode): `\ { } _ % & # $ ~ ^ < > |`, `± ≥ ≤ −` as math, line
/// breaks become spaces.
pub(crate) fn latex_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\textbackslash{}"),
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            // Outside T1 encoding these three print as other glyphs.
            '<' => out.push_str("\\textless{}"),
            '>' => out.push_str("\\textgreater{}"),
            '|' => out.push_str("\\textbar{}"),
            '{' | '}' | '_' | '%' | '&' | '#' | '$' => {
                out.push('\\');
                out.push(ch);
            }
            // Math symbols our legends and cells use, which LaTeX's utf8 input does not map.
            '±' => out.push_str("$\\pm$"),
            '≥' => out.push_str("$\\geq$"),
            '≤' => out.push_str("$\\leq$"),
            '−' => out.push_str("$-$"),
            '\r' => {}
            '\n' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}

pub(crate) fn csv_line(fields: impl IntoIterator<Item = String>) -> String {
    let mut line = fields
        .into_iter()
        .map(|f| csv_field(&f))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

pub(crate) fn param_cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(v) => value_text(v),
    }
}

fn long_header(t: &LongTable) -> Vec<String> {
    let mut h = vec!["job_id".to_owned(), "state".to_owned()];
    h.extend(t.params.iter().cloned());
    // The `epochs` result would clash with the `epochs` parameter in a header.
    h.extend(t.metrics.iter().map(|m| {
        if t.params.contains(m) {
            format!("final_{m}")
        } else {
            m.clone()
        }
    }));
    h
}

fn long_csv(t: &LongTable) -> String {
    let mut out = csv_line(long_header(t));
    for r in &t.runs {
        let mut f = vec![r.job_id.to_string(), r.state.to_string()];
        f.extend(t.params.iter().map(|p| param_cell(r.param(p))));
        // Full precision: CSV is for further analysis.
        f.extend(
            t.metrics
                .iter()
                .map(|m| r.metrics.get(m).map(|v| v.to_string()).unwrap_or_default()),
        );
        out.push_str(&csv_line(f));
    }
    out
}

pub(crate) fn md_row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn long_markdown(t: &LongTable) -> String {
    let header: Vec<String> = long_header(t).iter().map(|h| md_cell(h)).collect();
    let mut out = md_row(&header);
    let mut align = vec!["---:".to_owned(), ":---".to_owned()];
    align.extend(t.params.iter().map(|_| ":---".to_owned()));
    align.extend(t.metrics.iter().map(|_| "---:".to_owned()));
    out.push_str(&md_row(&align));
    for r in &t.runs {
        out.push_str(&md_row(&long_cells(t, r, md_cell)));
    }
    out
}

/// One long-form row as text cells: id, state, parameters (escaped by `esc`), metrics.
fn long_cells(t: &LongTable, r: &RunRow, esc: impl Fn(&str) -> String) -> Vec<String> {
    let mut f = vec![r.job_id.to_string(), esc(r.state.as_str())];
    f.extend(t.params.iter().map(|p| esc(&param_cell(r.param(p)))));
    f.extend(t.metrics.iter().map(|m| {
        r.metrics
            .get(m)
            .map(|v| fmt_result(m, *v))
            .unwrap_or_default()
    }));
    f
}

pub(crate) const LATEX_PREAMBLE: &str =
    "% generated by latentsweep; needs \\usepackage{booktabs}\n";

pub(crate) fn latex_row(cells: &[String]) -> String {
    format!("{} \\\\\n", cells.join(" & "))
}

fn long_latex(t: &LongTable) -> String {
    let mut out = String::from(LATEX_PREAMBLE);
    let spec = format!(
        "rl{}{}",
        "l".repeat(t.params.len()),
        "r".repeat(t.metrics.len())
    );
    let _ = writeln!(out, "\\begin{{tabular}}{{{spec}}}\n\\toprule");
    let header: Vec<String> = long_header(t).iter().map(|h| latex_text(h)).collect();
    out.push_str(&latex_row(&header));
    out.push_str("\\midrule\n");
    for r in &t.runs {
        out.push_str(&latex_row(&long_cells(t, r, latex_text)));
    }
    out.push_str("\\bottomrule\n\\end{tabular}\n");
    out
}

fn long_json(t: &LongTable) -> String {
    let runs: Vec<Value> = t
        .runs
        .iter()
        .map(|r| {
            let params: Map<String, Value> = r.params.iter().cloned().collect();
            json!({
                "job_id": r.job_id,
                "seq": r.seq,
                "state": r.state,
                "attempts": r.attempts,
                "params": params,
                "metrics": r.metrics,
            })
        })
        .collect();
    let doc = json!({ "kind": "long", "params": t.params, "metrics": t.metrics, "runs": runs });
    let mut s = serde_json::to_string_pretty(&doc).expect("JSON values serialise");
    s.push('\n');
    s
}

/// Pretty JSON with a final newline.
pub(crate) fn json_text(doc: &Value) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("JSON values serialise");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_per_format() {
        assert_eq!(
            latex_text(r"a_b%c&d#e$f{g}h~i^j\k<l>|"),
            r"a\_b\%c\&d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k\textless{}l\textgreater{}\textbar{}"
        );
        assert_eq!(latex_text("p ≥ 0.05, ± 1"), r"p $\geq$ 0.05, $\pm$ 1");
        assert_eq!(md_cell("a|b\nc*d_e<f>"), r"a\|b c\*d\_e\<f\>");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\nbye"), "\"say \"\"hi\"\"\nbye\"");
    }
}
