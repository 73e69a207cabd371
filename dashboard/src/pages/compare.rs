//! The comparison page: two or more configurations of a sweep (each every parameter but the
//! seed) side by side, their seed-level points, and each one's difference to the first with
//! its 95% CI and p-value (paired t-test on shared seeds, else Welch; see [`crate::stats`]).
//!
//! A cell is named in the URL as `cell=loss=ce;lr=0.001`, keys and values percent-encoded
//! inside, so values holding `;` or `=` survive; the sweep page's checkboxes build these links.

use std::sync::Arc;

use leptos::prelude::*;
use percent_encoding::percent_decode_str;
use proto::metric;
use serde_json::Value;

use super::{Query, enc, run_url, sweep_url};
use crate::data::{RunRow, SweepDetail};
use crate::export::summary_text;
use crate::plot::series_color;
use crate::stats::{self, ALPHA, Summary};
use crate::table::{self, fmt_metric, value_text};

/// Query key naming one cell; repeated for each.
pub const CELL_KEY: &str = "cell";

/// The URL form of a cell: `k=v;k=v` with `k` and `v` percent-encoded.
pub(crate) fn cell_id(pairs: impl IntoIterator<Item = (String, Value)>) -> String {
    pairs
        .into_iter()
        .map(|(k, v)| format!("{}={}", enc(&k), enc(&value_text(&v))))
        .collect::<Vec<_>>()
        .join(";")
}

/// A cell of the URL: its `(parameter, value text)` pairs, or why it is not one.
fn parse_cell(id: &str) -> Result<Vec<(String, String)>, String> {
    let dec = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| format!("cell `{id}`: `{s}` is not UTF-8 once decoded"))
    };
    id.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((dec(k)?, dec(v)?)),
            None => Err(format!("cell `{id}`: `{p}` is not parameter=value")),
        })
        .collect()
}

/// One configuration and its runs.
struct Cell {
    label: String,
    pairs: Vec<(String, String)>,
    runs: Vec<RunRow>,
}

/// `<main>` of the comparison page, or a message for a bad request (unknown parameter, a cell
/// without runs, fewer than two cells).
pub fn main_html(d: Arc<SweepDetail>, q: Query) -> Result<String, String> {
    let ids: Vec<&str> =
        q.0.iter()
            .filter(|(k, v)| k == CELL_KEY && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect();
    if ids.len() < 2 {
        return Err(format!(
            "pick two or more cells to compare (got {}): tick them in the sweep page's table grouped by config",
            ids.len()
        ));
    }
    let axes = table::axes(&d.runs);
    let mut cells = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let pairs = parse_cell(id)?;
        if let Some((k, _)) = pairs
            .iter()
            .find(|(k, _)| !axes.iter().any(|a| &a.name == k))
        {
            return Err(format!("cell `{id}`: the sweep has no parameter `{k}`"));
        }
        let runs: Vec<RunRow> = d
            .runs
            .iter()
            .filter(|r| {
                pairs
                    .iter()
                    .all(|(k, v)| r.param(k).map(value_text).unwrap_or_else(|| "none".into()) == *v)
            })
            .cloned()
            .collect();
        if runs.is_empty() {
            return Err(format!("cell `{id}` matches no run of this sweep"));
        }
        cells.push(Cell {
            label: char::from(b'A' + (i % 26) as u8).to_string(),
            pairs,
            runs,
        });
    }
    let name = d.summary.name.clone();
    Ok(super::render(move || compare_main(name, cells, q)))
}

fn compare_main(name: String, cells: Vec<Cell>, q: Query) -> impl IntoView {
    let all: Vec<RunRow> = cells.iter().flat_map(|c| c.runs.clone()).collect();
    let metrics: Vec<String> = table::metric_names(&all)
        .into_iter()
        .filter(|m| all.iter().any(|r| r.metrics.contains_key(m)))
        // Shown as the count of collapsed runs per cell, not as a mean of flags.
        .filter(|m| m != metric::COLLAPSED)
        .collect();
    let chosen = q
        .get("metric")
        .filter(|m| metrics.iter().any(|x| x == m))
        .unwrap_or(metric::MAP_AT_R)
        .to_owned();
    // Runs pair when they differ only in the compared parameters: by seed, in practice.
    let skip: Vec<String> = cells
        .iter()
        .flat_map(|c| c.pairs.iter().map(|(k, _)| k.clone()))
        .collect();
    let skip: Vec<&str> = skip.iter().map(String::as_str).collect();
    let legend = cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let text = c
                .pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let style = format!("background:{}", series_color(i));
            let collapsed = c.runs.iter().filter(|r| table::is_collapsed(r)).count();
            view! {
                <li><span class="swatch" style=style></span><b>{c.label.clone()}</b>" "{text}
                    {format!(" · {} runs", c.runs.len())}
                    {(collapsed > 0).then(|| view! { " "<span class="badge collapsed">{format!("{collapsed} collapsed")}</span> })}
                </li>
            }
        })
        .collect_view();
    let metric_opts = metrics
        .iter()
        .map(|m| view! { <option value=m.clone() selected=*m == chosen>{m.clone()}</option> })
        .collect_view();
    let hidden =
        q.0.iter()
            .filter(|(k, _)| k == CELL_KEY)
            .map(|(k, v)| view! { <input type="hidden" name=k.clone() value=v.clone()/> })
            .collect_view();
    let head = cells
        .iter()
        .map(|c| view! { <th class="num">{c.label.clone()}</th> })
        .collect_view();
    let diff_head = cells
        .iter()
        .skip(1)
        .map(|c| view! { <th class="num">{format!("{} − {}", c.label, cells[0].label)}</th> })
        .collect_view();
    let refs: Vec<Vec<&RunRow>> = cells.iter().map(|c| c.runs.iter().collect()).collect();
    let rows = metrics
        .iter()
        .map(|m| {
            let side = refs
                .iter()
                .map(|runs| {
                    let s = Summary::of(&table::metric_values(runs, m));
                    view! { <td class="num">{s.map(|s| summary_text(m, &s, "±")).unwrap_or_else(|| "–".into())}</td> }
                })
                .collect_view();
            let base = table::keyed_values(&refs[0], m, &skip);
            let diffs = refs
                .iter()
                .skip(1)
                .map(|runs| {
                    let other = table::keyed_values(runs, m, &skip);
                    if base.is_empty() || other.is_empty() {
                        return view! { <td class="num">"–"</td> }.into_any();
                    }
                    let c = stats::compare(&other, &base);
                    let sig = c.p.is_some_and(|p| p < ALPHA);
                    let ci = c
                        .ci
                        .map(|(lo, hi)| format!(" [{}, {}]", signed(m, lo), signed(m, hi)))
                        .unwrap_or_default();
                    let p = c.p.map(|p| format!(" p={}", fmt_p(p))).unwrap_or_else(|| " (too few runs to test)".into());
                    let text = format!("{}{ci}{p} · {} n={}", signed(m, c.diff), c.kind.as_str(), c.n);
                    let class = if sig { "num significant" } else { "num" };
                    view! { <td class=class>{text}</td> }.into_any()
                })
                .collect_view();
            let class = if *m == chosen { "chosen" } else { "" };
            view! { <tr class=class><th>{m.clone()}</th>{side}{diffs}</tr> }
        })
        .collect_view();
    let back = sweep_url(&name);
    view! {
        <p class="crumbs"><a href="/">"Sweeps"</a>" / "<a href=back.clone()>{name.clone()}</a>" / "</p>
        <h1>"Compare configurations"</h1>
        <ul class="legend cells" id="compare-cells">{legend}</ul>
        <form class="controls" method="get">
            <label>"metric "<select name="metric">{metric_opts}</select></label>
            {hidden}
            <button type="submit">"Show"</button>
        </form>
        <h2>{format!("{chosen}, seed by seed")}</h2>
        {seed_plot(&cells, &chosen)}
        <h2>"Side by side"</h2>
        <p class="muted">{format!(
            "mean ± std [95% Student-t CI] n per configuration; differences to {} with their 95% CI and two-sided p-value: paired t-test over runs that share a seed (and every other parameter), else Welch's t-test; highlighted when p < {ALPHA}",
            cells[0].label
        )}</p>
        <div class="scroll"><table class="data compare" id="compare-table"><thead><tr><th>"metric"</th>{head}{diff_head}</tr></thead><tbody>{rows}</tbody></table></div>
    }
}

fn signed(m: &str, v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", fmt_metric(m, v))
    } else {
        fmt_metric(m, v)
    }
}

fn fmt_p(p: f64) -> String {
    if p < 1e-4 {
        "<0.0001".into()
    } else {
        format!("{p:.4}")
    }
}

/// Seed-level points of one metric: a column per cell, a dot per run (labelled with its seed,
/// linking to the run), the mean as a bar and the 95% CI as a whisker.
fn seed_plot(cells: &[Cell], m: &str) -> impl IntoView + use<> {
    const H: f64 = 240.0;
    const T: f64 = 12.0;
    const B: f64 = 28.0;
    const L: f64 = 56.0;
    const COL: f64 = 120.0;
    let w = L + COL * cells.len() as f64 + 12.0;
    let points: Vec<Vec<(f64, String, i64)>> = cells
        .iter()
        .map(|c| {
            c.runs
                .iter()
                .filter_map(|r| {
                    let v = *r.metrics.get(m)?;
                    let seed = r.param("seed").map(value_text).unwrap_or_default();
                    v.is_finite().then_some((v, seed, r.job_id))
                })
                .collect()
        })
        .collect();
    let vals = points.iter().flatten().map(|p| p.0);
    let (mut lo, mut hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let summaries: Vec<Option<Summary>> = points
        .iter()
        .map(|p| Summary::of(&p.iter().map(|x| x.0).collect::<Vec<_>>()))
        .collect();
    for (a, b) in summaries.iter().flatten().filter_map(|s| s.ci) {
        lo = lo.min(a);
        hi = hi.max(b);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let (lo, hi) = (lo - pad, hi + pad);
    let sy = move |v: f64| H - B - (v - lo) / (hi - lo) * (H - T - B);
    let cols = cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let cx = L + COL * (i as f64 + 0.5);
            let colour = series_color(i);
            let n = points[i].len().max(1) as f64;
            let dots = points[i]
                .iter()
                .enumerate()
                .map(|(j, (v, seed, job))| {
                    // Spread the seeds sideways so equal values stay visible.
                    let x = cx - 24.0 + 48.0 * (j as f64 + 0.5) / n;
                    let title = format!("seed {seed}: {} (run #{job})", fmt_metric(m, *v));
                    view! {
                        <a href=run_url(*job)><circle class="seed" cx=format!("{x:.1}") cy=format!("{:.1}", sy(*v)) r="4" fill=colour.clone()><title>{title}</title></circle></a>
                        <text class="tick" x=format!("{:.1}", x + 5.0) y=format!("{:.1}", sy(*v) - 5.0)>{seed.clone()}</text>
                    }
                })
                .collect_view();
            let summary = summaries[i].map(|s| {
                let ci = s.ci.map(|(a, b)| view! { <line class="ci" x1=cx x2=cx y1=format!("{:.1}", sy(a)) y2=format!("{:.1}", sy(b))></line> });
                view! {
                    {ci}
                    <line class="mean" x1=cx - 34.0 x2=cx + 34.0 y1=format!("{:.1}", sy(s.mean)) y2=format!("{:.1}", sy(s.mean))></line>
                }
            });
            view! {
                {summary}
                {dots}
                <text class="axis-label" x=cx y=H - 8.0 text-anchor="middle">{c.label.clone()}</text>
            }
        })
        .collect_view();
    let ticks = (0..=4)
        .map(|k| {
            let v = lo + (hi - lo) * k as f64 / 4.0;
            let y = format!("{:.1}", sy(v));
            view! {
                <line class="grid" x1=L x2=w - 12.0 y1=y.clone() y2=y.clone()></line>
                <text class="tick" x=L - 6.0 y=y text-anchor="end" dominant-baseline="middle">{fmt_metric(m, v)}</text>
            }
        })
        .collect_view();
    let view_box = format!("0 0 {w} {H}");
    view! {
        <figure class="chart seeds">
            <svg class="seedplot" id="seed-plot" viewBox=view_box width=w height=H role="img">
                {ticks}
                <line class="axis" x1=L x2=L y1=T y2=H - B></line>
                {cols}
            </svg>
            <figcaption>"dots: runs (labelled with their seed); bar: mean; whisker: 95% CI of the mean"</figcaption>
        </figure>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cell_ids_round_trip_hostile_values() {
        let pairs = vec![
            ("loss".to_owned(), json!("ce")),
            ("dataset".to_owned(), json!("folder:/a;b=c%d")),
            ("margin".to_owned(), Value::Null),
        ];
        let id = cell_id(pairs);
        assert_eq!(
            parse_cell(&id).unwrap(),
            [
                ("loss".to_owned(), "ce".to_owned()),
                ("dataset".to_owned(), "folder:/a;b=c%d".to_owned()),
                ("margin".to_owned(), "none".to_owned()),
            ]
        );
        assert!(parse_cell("loss").unwrap_err().contains("parameter=value"));
    }
}
