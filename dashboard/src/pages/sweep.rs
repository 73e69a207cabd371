//! The sweep page: runs table (sort, filter, paginate), group-by statistics and a heatmap.

use leptos::prelude::*;
use proto::metric;
use serde_json::Value;

use super::{Query, StateBadge, run_url, sweep_url};
use std::sync::Arc;

use crate::data::{RunRow, SweepDetail};
use crate::pages::sweeps::Progress;
use crate::plot::heat_color;
use crate::stats::Summary;
use crate::table::{self, Axis, fmt_metric, value_text};

/// Runs per page of the runs table.
pub(crate) const PAGE_SIZE: usize = 100;

/// Metrics summarised in the group-by table (the full list would not fit).
const GROUP_METRICS: &[&str] = &[
    metric::KNN1_ACC,
    metric::PRECISION_AT_1,
    metric::MAP_AT_R,
    metric::ROC_AUC,
    metric::ONE_SHOT_5WAY,
];

/// Pseudo-axis for `group`: every varying axis except the seed, i.e. mean ± std over seeds.
pub(crate) const GROUP_CONFIG: &str = "config";

/// `<main>` of the sweep page.
pub fn main_html(d: Arc<SweepDetail>, q: Query) -> String {
    super::render(move || sweep_main(d, q))
}

fn sweep_main(d: Arc<SweepDetail>, q: Query) -> impl IntoView {
    let axes = table::axes(&d.runs);
    let varying: Vec<Axis> = axes.iter().filter(|a| a.varies()).cloned().collect();
    let fixed: Vec<Axis> = axes.iter().filter(|a| !a.varies()).cloned().collect();
    let metrics = table::metric_names(&d.runs);
    let filters = table::filters_from_query(&q.0, &varying);
    let mut shown = table::filter_runs(&d.runs, &filters);
    let sort = q.get("sort").unwrap_or("seq").to_owned();
    let desc = q.flag("desc");
    table::sort_runs(&mut shown, &sort, desc);
    let name = d.summary.name.clone();
    let base = sweep_url(&name);
    let c = d.summary.counts;
    let fixed_view = fixed
        .iter()
        .map(|a| {
            let v = a.values.first().map(value_text).unwrap_or_default();
            view! { <li><span class="k">{a.name.clone()}</span>" = "<span class="v">{v}</span></li> }
        })
        .collect_view();
    let eta = crate::pages::sweeps::eta_ms(&d.summary).map(super::fmt_duration_ms);
    view! {
        <p class="crumbs"><a href="/">"Sweeps"</a>" / "</p>
        <h1>{name.clone()}</h1>
        <div class="summary">
            <StateBadge state=d.summary.state.clone()/>
            <Progress counts=c/>
            <span>{format!("{} queued · {} running · {} done · {} failed · {} cancelled", c.queued, c.running, c.done, c.failed, c.cancelled)}</span>
            {eta.filter(|_| c.queued + c.running > 0).map(|e| view! { <span class="muted">{format!("ETA ≈ {e}")}</span> })}
        </div>
        <p class="tabs"><a class="current" href=base.clone()>"Runs"</a><a href=format!("{base}/latent")>"Latent spaces"</a></p>
        <details class="fixed"><summary>{format!("{} fixed parameters", fixed.len())}</summary><ul class="kv">{fixed_view}</ul></details>
        {controls(&varying, &metrics, &q)}
        {runs_table(&shown, d.runs.len(), &varying, &metrics, &q, &sort, desc)}
        {group_section(&shown, &varying, &q, &base)}
        {heatmap_section(&shown, &varying, &metrics, &q)}
        {export_section(&base, &varying, &metrics, &filters)}
    }
}

fn select(
    name: &'static str,
    label: &'static str,
    options: Vec<(String, String)>,
    current: Option<&str>,
) -> impl IntoView + use<> {
    let opts = options
        .into_iter()
        .map(|(value, text)| {
            let sel = current == Some(value.as_str());
            view! { <option value=value selected=sel>{text}</option> }
        })
        .collect_view();
    view! { <label>{label}" "<select name=name>{opts}</select></label> }
}

fn controls(varying: &[Axis], metrics: &[String], q: &Query) -> impl IntoView + use<> {
    let filter_selects = varying
        .iter()
        .map(|a| {
            let mut opts = vec![(String::new(), "any".to_owned())];
            opts.extend(a.values.iter().map(|v| (value_text(v), value_text(v))));
            let current = q.get(&a.name).map(str::to_owned);
            let opts_view = opts
                .into_iter()
                .map(|(value, text)| {
                    let sel = current.as_deref() == Some(value.as_str());
                    view! { <option value=value selected=sel>{text}</option> }
                })
                .collect_view();
            view! { <label>{a.name.clone()}" "<select name=a.name.clone() class="filter">{opts_view}</select></label> }
        })
        .collect_view();
    let mut sort_opts: Vec<(String, String)> = vec![
        ("seq".into(), "expansion order".into()),
        ("state".into(), "state".into()),
    ];
    sort_opts.extend(varying.iter().map(|a| (a.name.clone(), a.name.clone())));
    sort_opts.extend(metrics.iter().map(|m| (m.clone(), m.clone())));
    let mut group_opts = vec![
        (String::new(), "none".to_owned()),
        (GROUP_CONFIG.to_owned(), "config (over seeds)".to_owned()),
    ];
    group_opts.extend(varying.iter().map(|a| (a.name.clone(), a.name.clone())));
    let keep: Vec<(String, String)> =
        q.0.iter()
            .filter(|(k, _)| k.starts_with("hm_"))
            .cloned()
            .collect();
    let hidden = keep
        .into_iter()
        .map(|(k, v)| view! { <input type="hidden" name=k value=v/> })
        .collect_view();
    view! {
        <form class="controls" method="get" id="run-filters">
            <fieldset><legend>"Filter"</legend>{filter_selects}</fieldset>
            <fieldset><legend>"Sort & group"</legend>
                {select("sort", "sort by", sort_opts, q.get("sort"))}
                <label><input type="checkbox" name="desc" value="1" checked=q.flag("desc")/>" descending"</label>
                {select("group", "group by", group_opts, q.get("group"))}
            </fieldset>
            {hidden}
            <button type="submit">"Apply"</button>
            <a class="reset" href="?">"reset"</a>
        </form>
    }
}

fn runs_table(
    shown: &[&RunRow],
    total: usize,
    varying: &[Axis],
    metrics: &[String],
    q: &Query,
    sort: &str,
    desc: bool,
) -> impl IntoView + use<> {
    let pages = shown.len().div_ceil(PAGE_SIZE).max(1);
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    let slice = &shown[(page - 1) * PAGE_SIZE..(page * PAGE_SIZE).min(shown.len())];
    let mut cols: Vec<String> = vec!["job".into(), "state".into()];
    cols.extend(varying.iter().map(|a| a.name.clone()));
    cols.extend(metrics.iter().cloned());
    let qc = q.clean().with("page", None);
    let head = cols
        .iter()
        .map(|c| {
            let active = c == sort;
            let next_desc = if active {
                !desc
            } else {
                !c.starts_with('j') && metrics.contains(c)
            };
            let href = qc
                .with("sort", Some(c))
                .with("desc", next_desc.then_some("1"))
                .to_qs();
            let arrow = if active {
                if desc { " ▼" } else { " ▲" }
            } else {
                ""
            };
            let class = if metrics.contains(c) { "num" } else { "" };
            view! { <th class=class><a href=format!("{href}#runs")>{c.clone()}{arrow}</a></th> }
        })
        .collect_view();
    let body = slice
        .iter()
        .map(|r| {
            let params = varying
                .iter()
                .map(|a| view! { <td>{r.param(&a.name).map(value_text).unwrap_or_default()}</td> })
                .collect_view();
            let ms = metrics
                .iter()
                .map(|m| view! { <td class="num">{r.metrics.get(m).map(|v| table::fmt_result(m, *v)).unwrap_or_default()}</td> })
                .collect_view();
            view! {
                <tr>
                    <td><a href=run_url(r.job_id)>{format!("#{}", r.job_id)}</a></td>
                    <td><StateBadge state=r.state.to_string()/>{table::is_collapsed(r).then(|| view! { " "<span class="badge collapsed" title="the embedding collapsed (README, Collapse)">"collapsed"</span> })}</td>
                    {params}
                    {ms}
                </tr>
            }
        })
        .collect_view();
    let pager = (pages > 1).then(|| {
        let links = (1..=pages)
            .filter(|p| *p == 1 || *p == pages || p.abs_diff(page) <= 3)
            .map(|p| {
                let href = format!("{}#runs", qc.with("page", Some(&p.to_string())).to_qs());
                let class = if p == page { "current" } else { "" };
                view! { <a class=class href=href>{p}</a> }
            })
            .collect_view();
        view! { <nav class="pager">"page "{links}</nav> }
    });
    view! {
        <h2 id="runs">"Runs"</h2>
        <p class="muted" id="run-count">{format!("{} of {} runs", shown.len(), total)}</p>
        <div class="scroll">
            <table class="data runs" id="runs-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
        </div>
        {pager}
    }
}

/// `mean ± std [CI] n=…`, or the value and `n=1` alone (no zero spread that reads as certainty).
fn stats_cell(s: Option<Summary>, metric: &str) -> String {
    match s {
        None => "–".into(),
        Some(s) => crate::export::summary_text(metric, &s, "±"),
    }
}

fn group_section(
    shown: &[&RunRow],
    varying: &[Axis],
    q: &Query,
    base: &str,
) -> Option<impl IntoView + use<>> {
    let group = q.get("group")?;
    let by: Vec<String> = if group == GROUP_CONFIG {
        varying
            .iter()
            .filter(|a| a.name != "seed")
            .map(|a| a.name.clone())
            .collect()
    } else if varying.iter().any(|a| a.name == group) {
        vec![group.to_owned()]
    } else {
        return None;
    };
    let by_ref: Vec<&str> = by.iter().map(String::as_str).collect();
    let groups = table::group_runs(shown, &by_ref);
    // Configurations (every axis but the seed) can be compared; other groupings mix them.
    let pick = group == GROUP_CONFIG;
    let head_axes = by
        .iter()
        .map(|a| view! { <th>{a.clone()}</th> })
        .collect_view();
    let head_metrics = GROUP_METRICS
        .iter()
        .map(|m| view! { <th class="num">{*m}</th> })
        .collect_view();
    let rows = groups
        .into_iter()
        .map(|(key, members)| {
            let id = super::compare::cell_id(by.iter().cloned().zip(key.iter().cloned()));
            let check = pick.then(|| view! { <td><input type="checkbox" name=super::compare::CELL_KEY value=id form="compare-form"/></td> });
            let collapsed = members.iter().filter(|r| table::is_collapsed(r)).count();
            let keys = key.iter().map(|v| view! { <td>{value_text(v)}</td> }).collect_view();
            let n_done = members.iter().filter(|r| !r.metrics.is_empty()).count();
            let cells = GROUP_METRICS
                .iter()
                .map(|m| view! { <td class="num">{stats_cell(Summary::of(&table::metric_values(&members, m)), m)}</td> })
                .collect_view();
            let flag = (collapsed > 0).then(|| view! { " "<span class="badge collapsed" title="runs whose embedding collapsed">{format!("{collapsed} collapsed")}</span> });
            view! { <tr>{check}{keys}<td class="num">{format!("{n_done}/{}", members.len())}{flag}</td>{cells}</tr> }
        })
        .collect_view();
    let action = format!("{base}/compare");
    let compare = pick.then(|| view! {
        <form id="compare-form" class="controls" method="get" action=action>
            <button type="submit">"Compare selected"</button>
            <span class="muted">" tick two or more configurations: their metrics side by side, seed by seed, with the difference, its 95% CI and p-value"</span>
        </form>
    });
    let head_pick = pick.then(|| view! { <th>"compare"</th> });
    Some(view! {
        <h2 id="groups">{format!("Grouped by {}", by.join(", "))}</h2>
        <p class="muted">"mean ± sample standard deviation [95% Student-t confidence interval] n = finished runs of each group (seeds and any other axes); a single run shows its value and n=1, without ±"</p>
        {compare}
        <div class="scroll"><table class="data groups" id="groups-table"><thead><tr>{head_pick}{head_axes}<th class="num">"finished"</th>{head_metrics}</tr></thead><tbody>{rows}</tbody></table></div>
    })
}

/// Default heatmap axes: margin × lr faceted by loss when they vary, else the first varying axes.
fn heatmap_axes(varying: &[Axis], q: &Query) -> (Option<String>, Option<String>, Option<String>) {
    let has = |n: &str| varying.iter().any(|a| a.name == n);
    let pick = |k: &str| q.get(k).filter(|v| has(v)).map(str::to_owned);
    let cand: Vec<&str> = varying
        .iter()
        .map(|a| a.name.as_str())
        .filter(|n| *n != "seed" && *n != "loss")
        .collect();
    let x = pick("hm_x").or_else(|| cand.first().map(|s| s.to_string()));
    let y = pick("hm_y").or_else(|| {
        cand.iter()
            .find(|n| Some(**n) != x.as_deref())
            .map(|s| s.to_string())
    });
    let facet = match q.get("hm_facet") {
        Some("none") => None,
        Some(f) if has(f) => Some(f.to_owned()),
        _ => has("loss").then(|| "loss".to_owned()),
    }
    .filter(|f| Some(f) != x.as_ref() && Some(f) != y.as_ref());
    (x, y, facet)
}

fn heatmap_section(
    shown: &[&RunRow],
    varying: &[Axis],
    metrics: &[String],
    q: &Query,
) -> impl IntoView + use<> {
    let (x, y, facet) = heatmap_axes(varying, q);
    let metric = q
        .get("hm_metric")
        .filter(|m| metrics.iter().any(|x| x == m))
        .unwrap_or(metric::MAP_AT_R)
        .to_owned();
    let axis_opts = |cur: Option<&String>, none: bool| {
        let mut o: Vec<(String, String, bool)> = varying
            .iter()
            .map(|a| (a.name.clone(), a.name.clone(), cur == Some(&a.name)))
            .collect();
        if none {
            o.insert(0, ("none".into(), "none".into(), cur.is_none()));
        }
        o.into_iter()
            .map(|(v, t, s)| view! { <option value=v selected=s>{t}</option> })
            .collect_view()
    };
    let metric_opts = metrics
        .iter()
        .map(|m| view! { <option value=m.clone() selected=*m == metric>{m.clone()}</option> })
        .collect_view();
    let keep =
        q.0.iter()
            .filter(|(k, v)| !k.starts_with("hm_") && k != "fragment" && !v.is_empty())
            .cloned();
    let hidden = keep
        .map(|(k, v)| view! { <input type="hidden" name=k value=v/> })
        .collect_view();
    let form = view! {
        <form class="controls" method="get" action="#heatmap">
            <label>"metric "<select name="hm_metric">{metric_opts}</select></label>
            <label>"x "<select name="hm_x">{axis_opts(x.as_ref(), false)}</select></label>
            <label>"y "<select name="hm_y">{axis_opts(y.as_ref(), false)}</select></label>
            <label>"one map per "<select name="hm_facet">{axis_opts(facet.as_ref(), true)}</select></label>
            {hidden}
            <button type="submit">"Show"</button>
        </form>
    };
    let maps = match (x, y) {
        (Some(x), Some(y)) if x != y => {
            let facets: Vec<Option<Value>> = match &facet {
                Some(f) => varying
                    .iter()
                    .find(|a| &a.name == f)
                    .map(|a| a.values.iter().cloned().map(Some).collect())
                    .unwrap_or_default(),
                None => vec![None],
            };
            facets
                .into_iter()
                .map(|fv| {
                    let members: Vec<&RunRow> = shown
                        .iter()
                        .copied()
                        .filter(|r| match (&facet, &fv) {
                            (Some(f), Some(v)) => r.param(f) == Some(v),
                            _ => true,
                        })
                        .collect();
                    let title = match (&facet, &fv) {
                        (Some(f), Some(v)) => format!("{f} = {}", value_text(v)),
                        _ => "all runs".to_owned(),
                    };
                    heatmap(&members, &x, &y, &metric, title)
                })
                .collect_view()
                .into_any()
        }
        _ => view! { <p class="muted">"A heatmap needs two varying axes."</p> }.into_any(),
    };
    view! {
        <h2 id="heatmap">"Heatmap"</h2>
        {form}
        <div class="heatmaps">{maps}</div>
    }
}

fn heatmap(
    runs: &[&RunRow],
    x: &str,
    y: &str,
    metric: &str,
    title: String,
) -> impl IntoView + use<> {
    // One pass over the runs: a sweep page may hold 10,000 of them.
    let (mut xs, mut ys): (Vec<Value>, Vec<Value>) = (Vec::new(), Vec::new());
    let mut buckets: Vec<(usize, usize, f64)> = Vec::new();
    for r in runs {
        let (Some(xv), Some(yv)) = (r.param(x), r.param(y)) else {
            continue;
        };
        let xi = xs.iter().position(|v| v == xv).unwrap_or_else(|| {
            xs.push(xv.clone());
            xs.len() - 1
        });
        let yi = ys.iter().position(|v| v == yv).unwrap_or_else(|| {
            ys.push(yv.clone());
            ys.len() - 1
        });
        if let Some(m) = r.metrics.get(metric) {
            buckets.push((xi, yi, *m));
        }
    }
    let mut vals: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); xs.len()]; ys.len()];
    for (xi, yi, m) in buckets {
        vals[yi][xi].push(m);
    }
    // Display order: sorted values, cells permuted to match.
    let order = |v: &[Value]| {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|a, b| table::cmp_values(&v[*a], &v[*b]));
        idx
    };
    let (xo, yo) = (order(&xs), order(&ys));
    let cells: Vec<Vec<Option<Summary>>> = yo
        .iter()
        .map(|&yi| xo.iter().map(|&xi| Summary::of(&vals[yi][xi])).collect())
        .collect();
    let xs: Vec<Value> = xo.iter().map(|&i| xs[i].clone()).collect();
    let ys: Vec<Value> = yo.iter().map(|&i| ys[i].clone()).collect();
    let all: Vec<f64> = cells.iter().flatten().flatten().map(|s| s.mean).collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let metric = metric.to_owned();
    let head = xs
        .iter()
        .map(|v| view! { <th>{value_text(v)}</th> })
        .collect_view();
    let rows = ys
        .iter()
        .zip(cells)
        .map(|(yv, row)| {
            let tds = row
                .into_iter()
                .map(|c| match c {
                    None => view! { <td class="empty">"–"</td> }.into_any(),
                    Some(s) => {
                        let t = if hi > lo {
                            (s.mean - lo) / (hi - lo)
                        } else {
                            1.0
                        };
                        let fg = if t > 0.6 { "#111" } else { "#fff" };
                        let style = format!("background:{};color:{fg}", heat_color(t));
                        let tip = format!("n={} std={}", s.n, fmt_metric(&metric, s.std));
                        view! { <td style=style title=tip>{fmt_metric(&metric, s.mean)}</td> }
                            .into_any()
                    }
                })
                .collect_view();
            view! { <tr><th>{value_text(yv)}</th>{tds}</tr> }
        })
        .collect_view();
    view! {
        <figure class="heatmap">
            <figcaption>{format!("{title} · mean {metric}")}</figcaption>
            <table><thead><tr><th class="corner">{format!("{y} \\ {x}")}</th>{head}</tr></thead><tbody>{rows}</tbody></table>
        </figure>
    }
}

fn export_section(
    base: &str,
    varying: &[Axis],
    metrics: &[String],
    filters: &[(String, String)],
) -> impl IntoView + use<> {
    let fq = Query(filters.to_vec());
    let long = ["csv", "md", "latex", "json"]
        .into_iter()
        .map(|f| {
            let href = format!("{base}/export{}", fq.with("format", Some(f)).to_qs());
            view! { <a class="button" href=href>{f}</a> }
        })
        .collect_view();
    let over_seeds = ["csv", "md", "latex", "json"]
        .into_iter()
        .map(|f| {
            let q = fq
                .with("format", Some(f))
                .with(crate::export::OVER_SEEDS_KEY, Some("1"));
            let href = format!("{base}/export{}", q.to_qs());
            view! { <a class="button" href=href>{f}</a> }
        })
        .collect_view();
    let axis_opts = |default: &str| {
        varying
            .iter()
            .map(|a| view! { <option value=a.name.clone() selected=a.name == default>{a.name.clone()}</option> })
            .collect_view()
    };
    let metric_opts = metrics
        .iter()
        .map(|m| view! { <option value=m.clone() selected=m == metric::MAP_AT_R>{m.clone()}</option> })
        .collect_view();
    let hidden = filters
        .iter()
        .map(|(k, v)| view! { <input type="hidden" name=k.clone() value=v.clone()/> })
        .collect_view();
    let action = format!("{base}/export");
    view! {
        <h2 id="export">"Export"</h2>
        <p>"Long table (one row per run, current filters): "{long}</p>
        <p>"Over seeds (one row per configuration: mean ± std, n, 95% CI): "{over_seeds}</p>
        <p class="muted">"Pivot cells aggregate over seeds and the other axes. The best value of a column is bold only when a t-test (paired on shared seeds, else Welch) finds it better than the runner-up at p < 0.05; otherwise both carry † (tie). “best” reports the test value of the run with the highest validation value, and says “selected on test: no validation set” when the runs have none."</p>
        <form class="controls" method="get" action=action>
            <label>"rows "<select name="rows">{axis_opts("loss")}</select></label>
            <label>"cols "<select name="cols">{axis_opts("dataset")}</select></label>
            <label>"metric "<select name="metric">{metric_opts}</select></label>
            <label>"cell "<select name="agg"><option value="mean">"mean ± std, n, 95% CI"</option><option value="best">"best (selected on val/<metric>)"</option></select></label>
            <label>"format "<select name="format"><option>"csv"</option><option>"md"</option><option>"latex"</option><option>"json"</option></select></label>
            {hidden}
            <button type="submit">"Pivot table"</button>
        </form>
    }
}
