//! The table over seeds: one row per configuration (every parameter but `seed`), each metric as
//! mean ± std, n and a 95% Student-t interval over the configuration's finished runs.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::Format;
use super::pivot_render::{COLLAPSE_MARK, summary_text};
use super::render::{
    LATEX_PREAMBLE, csv_line, json_text, latex_row, latex_text, md_cell, md_row, param_cell,
};
use crate::data::RunRow;
use crate::stats::Summary;
use crate::table;

/// The parameter that the table aggregates over.
pub const SEED: &str = "seed";

/// One configuration and its runs' summaries.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRow {
    /// Values of [`SeedTable::params`], in order.
    pub key: Vec<Value>,
    /// Runs of the configuration, finished or not.
    pub runs: usize,
    /// Runs whose embedding collapsed.
    pub collapsed: usize,
    /// Per metric of [`SeedTable::metrics`], `None` when no run has it.
    pub metrics: Vec<Option<Summary>>,
}

/// Configurations of a sweep, summarised over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedTable {
    pub params: Vec<String>,
    pub metrics: Vec<String>,
    pub rows: Vec<SeedRow>,
}

/// Groups runs by every parameter but the seed.
pub(crate) fn seed_table(runs: &[&RunRow]) -> SeedTable {
    let owned: Vec<RunRow> = runs.iter().map(|r| (*r).clone()).collect();
    let params: Vec<String> = table::axes(&owned)
        .into_iter()
        .map(|a| a.name)
        .filter(|n| n != SEED)
        .collect();
    // The collapse flag is the `collapsed` count column, not a mean ± std of zeros and ones.
    let metrics: Vec<String> = table::metric_names(&owned)
        .into_iter()
        .filter(|m| m != proto::metric::COLLAPSED)
        .collect();
    let by: Vec<&str> = params.iter().map(String::as_str).collect();
    let rows = table::group_runs(runs, &by)
        .into_iter()
        .map(|(key, members)| SeedRow {
            key,
            runs: members.len(),
            collapsed: members.iter().filter(|r| table::is_collapsed(r)).count(),
            metrics: metrics
                .iter()
                .map(|m| Summary::of(&table::metric_values(&members, m)))
                .collect(),
        })
        .collect();
    SeedTable {
        params,
        metrics,
        rows,
    }
}

/// Writes the table in a format.
pub(crate) fn render(t: &SeedTable, format: Format) -> String {
    match format {
        Format::Csv => csv(t),
        Format::Markdown => text_table(t, Markup::Markdown),
        Format::Latex => text_table(t, Markup::Latex),
        Format::Json => json(t),
    }
}

/// Metric column names; `final_` where a metric would clash with a parameter (`epochs`).
fn metric_headers(t: &SeedTable) -> Vec<String> {
    t.metrics
        .iter()
        .map(|m| {
            if t.params.contains(m) {
                format!("final_{m}")
            } else {
                m.clone()
            }
        })
        .collect()
}

fn csv(t: &SeedTable) -> String {
    let mut h = t.params.clone();
    h.extend(["runs", "collapsed"].map(str::to_owned));
    for m in metric_headers(t) {
        h.extend(["mean", "std", "n", "ci_low", "ci_high"].map(|x| format!("{m} {x}")));
        // The mean column keeps the bare name, so scripts reading the long table still work.
        let i = h.len() - 5;
        h[i] = m;
    }
    let mut out = csv_line(h);
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for r in &t.rows {
        let mut f: Vec<String> = r.key.iter().map(|v| param_cell(Some(v))).collect();
        f.push(r.runs.to_string());
        f.push(r.collapsed.to_string());
        for s in &r.metrics {
            match s {
                None => f.extend(std::iter::repeat_n(String::new(), 5)),
                Some(s) => f.extend([
                    s.mean.to_string(),
                    s.std.to_string(),
                    s.n.to_string(),
                    opt(s.ci.map(|c| c.0)),
                    opt(s.ci.map(|c| c.1)),
                ]),
            }
        }
        out.push_str(&csv_line(f));
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Markup {
    Markdown,
    Latex,
}

fn text_table(t: &SeedTable, mk: Markup) -> String {
    let esc = |s: &str| match mk {
        Markup::Markdown => md_cell(s),
        Markup::Latex => latex_text(s),
    };
    let row = |cells: &[String]| match mk {
        Markup::Markdown => md_row(cells),
        Markup::Latex => latex_row(cells),
    };
    let pm = if mk == Markup::Latex { "$\\pm$" } else { "±" };
    let mut header: Vec<String> = t.params.iter().map(|p| esc(p)).collect();
    header.push("runs".to_owned());
    header.extend(metric_headers(t).iter().map(|m| esc(m)));
    let mut out = String::new();
    match mk {
        Markup::Markdown => {
            out.push_str(&row(&header));
            let mut align: Vec<String> = t.params.iter().map(|_| ":---".to_owned()).collect();
            align.extend((0..=t.metrics.len()).map(|_| "---:".to_owned()));
            out.push_str(&row(&align));
        }
        Markup::Latex => {
            out.push_str(LATEX_PREAMBLE);
            let spec = format!(
                "{}r{}",
                "l".repeat(t.params.len()),
                "r".repeat(t.metrics.len())
            );
            let _ = writeln!(out, "\\begin{{tabular}}{{{spec}}}\n\\toprule");
            out.push_str(&row(&header));
            out.push_str("\\midrule\n");
        }
    }
    let collapse = match mk {
        Markup::Markdown => COLLAPSE_MARK.to_owned(),
        Markup::Latex => "$^{\\ddagger}$".to_owned(),
    };
    for r in &t.rows {
        let mut f: Vec<String> = r.key.iter().map(|v| esc(&param_cell(Some(v)))).collect();
        let mut runs = r.runs.to_string();
        if r.collapsed > 0 {
            runs.push_str(&collapse);
        }
        f.push(runs);
        f.extend(t.metrics.iter().zip(&r.metrics).map(|(m, s)| match s {
            None => String::new(),
            Some(s) => summary_text(m, s, pm),
        }));
        out.push_str(&row(&f));
    }
    let mut notes = vec![
        "Each cell: mean ± sample std [95% Student-t CI] n=finished runs, over seeds.".to_owned(),
    ];
    if t.rows.iter().any(|r| r.collapsed > 0) {
        notes.push(format!(
            "{COLLAPSE_MARK} at least one run of the configuration collapsed (README, \"Collapse\")."
        ));
    }
    match mk {
        Markup::Markdown => {
            for n in notes {
                let _ = write!(out, "\n{}\n", md_cell(&n));
            }
        }
        Markup::Latex => {
            out.push_str("\\bottomrule\n\\end{tabular}\n");
            for n in notes {
                let text = latex_text(&n).replace(COLLAPSE_MARK, &collapse);
                let _ = writeln!(out, "\\par\\noindent{{\\footnotesize {text}}}");
            }
        }
    }
    out
}

fn json(t: &SeedTable) -> String {
    let rows: Vec<Value> = t
        .rows
        .iter()
        .map(|r| {
            let params: Map<String, Value> = t
                .params
                .iter()
                .cloned()
                .zip(r.key.iter().cloned())
                .collect();
            let metrics: Map<String, Value> = t
                .metrics
                .iter()
                .zip(&r.metrics)
                .filter_map(|(m, s)| {
                    let s = s.as_ref()?;
                    Some((
                        m.clone(),
                        json!({
                            "mean": s.mean,
                            "std": s.std,
                            "n": s.n,
                            "ci95": s.ci.map(|(a, b)| [a, b]),
                        }),
                    ))
                })
                .collect();
            json!({
                "params": params,
                "runs": r.runs,
                "collapsed": r.collapsed,
                "metrics": metrics,
            })
        })
        .collect();
    json_text(&json!({
        "kind": "over_seeds",
        "params": t.params,
        "metrics": t.metrics,
        "rows": rows,
    }))
}
