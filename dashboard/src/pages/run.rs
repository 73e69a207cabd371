//! The run page: parameters, curves, per-epoch evaluation, latest latent space, retrieval view
//! and the history of attempts.

use std::collections::{BTreeMap, BTreeSet};

use leptos::prelude::*;
use proto::{SnapshotProjection, metric};

use super::{StateBadge, fmt_time, sweep_url};
use crate::data::{MetricPoint, RunDetail, Snapshot};
use crate::geometry::{nearest, stratified_sample};
use crate::plot::{Legend, LineChart, Scatter, Series};
use crate::table::{METRICS, fmt_result, value_text};

/// Evaluation metrics drawn on the 0..1 chart.
const SCORE_METRICS: &[&str] = &metric::EVAL;
/// Query images shown in the retrieval view.
const QUERIES: usize = 5;
/// Neighbours per query.
const NEIGHBOURS: usize = 6;

/// Per metric name, `(step, epoch, value)` with later attempts replacing earlier ones' points of
/// the same step (a resumed run re-reports steps after its checkpoint).
pub(crate) fn series_by_name(points: &[MetricPoint]) -> BTreeMap<String, Vec<(i64, i64, f64)>> {
    let mut latest: BTreeMap<(&str, i64), (i64, i64, f64)> = BTreeMap::new();
    for p in points {
        let e = latest
            .entry((p.name.as_str(), p.step))
            .or_insert((p.attempt_id, p.epoch, p.value));
        if p.attempt_id >= e.0 {
            *e = (p.attempt_id, p.epoch, p.value);
        }
    }
    let mut out: BTreeMap<String, Vec<(i64, i64, f64)>> = BTreeMap::new();
    for ((name, step), (_, epoch, value)) in latest {
        out.entry(name.to_owned())
            .or_default()
            .push((step, epoch, value));
    }
    out
}

/// Per-epoch values of a metric (the last point of each epoch).
fn by_epoch(series: &[(i64, i64, f64)]) -> Vec<(f64, f64)> {
    let mut m: BTreeMap<i64, f64> = BTreeMap::new();
    for (_, e, v) in series {
        m.insert(*e, *v);
    }
    m.into_iter().map(|(e, v)| (e as f64, v)).collect()
}

/// `<main>` of the run page. `snap` is the run's latest snapshot, if any.
pub fn main_html(d: RunDetail, metrics: Vec<MetricPoint>, snap: Option<Snapshot>) -> String {
    super::render(move || run_main(d, metrics, snap))
}

fn run_main(d: RunDetail, metrics: Vec<MetricPoint>, snap: Option<Snapshot>) -> impl IntoView {
    let r = d.run.clone();
    let series = series_by_name(&metrics);
    let get = |n: &str| series.get(n).cloned().unwrap_or_default();
    let params = r
        .params
        .iter()
        .map(|(k, v)| view! { <tr><th>{k.clone()}</th><td>{value_text(v)}</td></tr> })
        .collect_view();
    // The usual metrics in table order, then the rest (validation twins, head scores, ...).
    let finals = METRICS
        .iter()
        .filter_map(|m| r.metrics.get(*m).map(|v| ((*m).to_owned(), *v)))
        .chain(
            r.metrics
                .iter()
                .filter(|(k, _)| !METRICS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), *v)),
        )
        .map(|(m, v)| view! { <tr><th>{m.clone()}</th><td class="num">{fmt_result(&m, v)}</td></tr> })
        .collect_view();
    let loss: Vec<(f64, f64)> = get(metric::LOSS)
        .iter()
        .map(|(s, _, v)| (*s as f64, *v))
        .collect();
    // Epoch means by step too: short runs log fewer steps than one step-event interval.
    let epoch_loss_by_step: Vec<(f64, f64)> = get(metric::EPOCH_LOSS)
        .iter()
        .map(|(s, _, v)| (*s as f64, *v))
        .collect();
    let epoch_loss = by_epoch(&get(metric::EPOCH_LOSS));
    let scores: Vec<Series> = SCORE_METRICS
        .iter()
        .filter(|m| series.contains_key(**m))
        .map(|m| Series {
            name: (*m).to_owned(),
            points: by_epoch(&get(m)),
        })
        .collect();
    let health: Vec<Series> = [metric::MEAN_EMBEDDING_NORM, metric::ACTIVE_FRACTION]
        .iter()
        .filter(|m| series.contains_key(**m))
        .map(|m| Series {
            name: (*m).to_owned(),
            points: by_epoch(&get(m)),
        })
        .collect();
    let speed = by_epoch(&get(metric::SAMPLES_PER_SEC));
    let eval_table = eval_table(&series);
    let label = format!("Run #{}", r.job_id);
    let collapsed_badge = crate::table::is_collapsed(&r).then(|| view! {
        " "<span class="badge collapsed" id="collapsed-flag" title="README, Collapse">"collapsed"</span>
    });
    let protocol = protocol(&r);
    let sweep = d.sweep_name.clone();
    view! {
        <p class="crumbs"><a href="/">"Sweeps"</a>" / "<a href=sweep_url(&sweep)>{sweep.clone()}</a>" /"</p>
        <h1>{label}" "<StateBadge state=r.state.to_string()/>{collapsed_badge}</h1>
        <div class="cols">
            <section><h2>"Parameters"</h2><table class="kv">{params}</table></section>
            {protocol}
            <section><h2>"Final metrics"</h2>
                {if r.metrics.is_empty() { view! { <p class="muted">"not finished"</p> }.into_any() } else { view! { <table class="kv">{finals}</table> }.into_any() }}
            </section>
        </div>
        <h2>"Curves"</h2>
        <div class="charts">
            <LineChart title="training loss".to_owned() x_label="step".to_owned() series=vec![Series { name: metric::LOSS.into(), points: loss }, Series { name: "epoch mean".into(), points: epoch_loss_by_step }]/>
            <LineChart title="epoch loss".to_owned() x_label="epoch".to_owned() series=vec![Series { name: metric::EPOCH_LOSS.into(), points: epoch_loss }]/>
            <LineChart title="evaluation".to_owned() x_label="epoch".to_owned() series=scores y_range=(0.0, 1.0)/>
            <LineChart title="embedding health".to_owned() x_label="epoch".to_owned() series=health/>
            <LineChart title="throughput (samples/s)".to_owned() x_label="epoch".to_owned() series=vec![Series { name: metric::SAMPLES_PER_SEC.into(), points: speed }]/>
        </div>
        {eval_table}
        {latent_and_retrieval(r.job_id, snap)}
        {attempts(&d)}
    }
}

/// The evaluation protocol of a run: split, validation fraction, normalisation, and the epoch
/// its results come from. Parameters a run predates read as their old meaning.
fn protocol(r: &crate::data::RunRow) -> impl IntoView + use<> {
    let text = |k: &str, old: &str| {
        r.param(k)
            .filter(|v| !v.is_null())
            .map(value_text)
            .unwrap_or_else(|| old.to_owned())
    };
    let val = r
        .param("val_fraction")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let val_text = if val > 0.0 {
        format!("{val} of the training data")
    } else {
        "0 (no validation set)".to_owned()
    };
    let selected = match r.metrics.get(metric::BEST_EPOCH) {
        Some(e) => format!("epoch {e:.0}, the highest {}", metric::SELECTION),
        None if r.metrics.is_empty() => "not finished".to_owned(),
        None => "the last evaluation (no validation set to select on)".to_owned(),
    };
    let collapsed = match r.metrics.get(metric::COLLAPSED) {
        Some(v) if *v >= 0.5 => "yes: the embedding collapsed (README, Collapse)",
        Some(_) => "no",
        None => "not measured",
    };
    view! {
        <section id="protocol"><h2>"Protocol"</h2><table class="kv">
            <tr><th>"split"</th><td>{text("split", "samples")}</td></tr>
            <tr><th>"val_fraction"</th><td>{val_text}</td></tr>
            <tr><th>"normalize"</th><td>{text("normalize", "false")}</td></tr>
            <tr><th>"selected epoch"</th><td id="selected-epoch">{selected}</td></tr>
            <tr><th>"collapsed"</th><td>{collapsed}</td></tr>
        </table></section>
    }
}

fn eval_table(series: &BTreeMap<String, Vec<(i64, i64, f64)>>) -> impl IntoView + use<> {
    let present: Vec<&str> = METRICS
        .iter()
        .copied()
        .filter(|m| series.contains_key(*m) && *m != metric::EPOCHS)
        .collect();
    let per: BTreeMap<&str, BTreeMap<i64, f64>> = present
        .iter()
        .map(|m| {
            (
                *m,
                by_epoch(&series[*m])
                    .into_iter()
                    .map(|(e, v)| (e as i64, v))
                    .collect(),
            )
        })
        .collect();
    let epochs: BTreeSet<i64> = per.values().flat_map(|m| m.keys().copied()).collect();
    let head = present
        .iter()
        .map(|m| view! { <th class="num">{*m}</th> })
        .collect_view();
    let rows = epochs
        .into_iter()
        .map(|e| {
            let cells = present
                .iter()
                .map(|m| view! { <td class="num">{per[m].get(&e).map(|v| fmt_result(m, *v)).unwrap_or_default()}</td> })
                .collect_view();
            view! { <tr><td class="num">{e}</td>{cells}</tr> }
        })
        .collect_view();
    view! {
        <h2>"Evaluation per epoch"</h2>
        <div class="scroll"><table class="data" id="eval-table"><thead><tr><th class="num">"epoch"</th>{head}</tr></thead><tbody>{rows}</tbody></table></div>
    }
}

fn latent_and_retrieval(job: i64, snap: Option<Snapshot>) -> impl IntoView + use<> {
    let Some(s) = snap else {
        return view! { <h2>"Latent space"</h2><p class="muted">"no snapshot yet"</p> }.into_any();
    };
    let keep = stratified_sample(&s.labels, super::latent::MAX_POINTS);
    let pts: Vec<[f64; 2]> = keep
        .iter()
        .map(|&i| [s.points[i][0] as f64, s.points[i][1] as f64])
        .collect();
    let labels: Vec<u32> = keep.iter().map(|&i| s.labels[i]).collect();
    // One query per class for the first classes, each the first point of its class: stable
    // across reloads and easy to compare between runs.
    let mut queries: Vec<usize> = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, l) in s.labels.iter().enumerate() {
        if queries.len() >= QUERIES {
            break;
        }
        if seen.insert(*l) {
            queries.push(i);
        }
    }
    let name = |l: u32| {
        s.class_names
            .get(l as usize)
            .cloned()
            .unwrap_or_else(|| format!("class {l}"))
    };
    let rows = queries
        .iter()
        .map(|&qi| {
            let ql = s.labels[qi];
            let nn = nearest(&s.points, qi, NEIGHBOURS)
                .into_iter()
                .map(|j| {
                    let ok = s.labels[j] == ql;
                    let class = if ok { "thumb hit" } else { "thumb miss" };
                    let src = format!("/runs/{job}/images/{}", s.indices[j]);
                    let alt = name(s.labels[j]);
                    view! { <figure class=class><img src=src alt=alt.clone() width="56" height="56" loading="lazy"/><figcaption>{alt}</figcaption></figure> }
                })
                .collect_view();
            let src = format!("/runs/{job}/images/{}", s.indices[qi]);
            let alt = name(ql);
            view! {
                <div class="retrieval-row">
                    <figure class="thumb query"><img src=src alt=alt.clone() width="56" height="56"/><figcaption>{alt}</figcaption></figure>
                    <span class="arrow">"→"</span>
                    {nn}
                </div>
            }
        })
        .collect_view();
    let note = format!(
        "epoch {}{} · {} points",
        s.epoch,
        match s.projection {
            SnapshotProjection::Identity => String::new(),
            p => format!(" ({} of the embedding)", p.label()),
        },
        s.labels.len()
    );
    view! {
        <div class="cols">
            <section>
                <h2>"Latent space"</h2>
                <Scatter points=pts labels=labels.clone() size=340/>
                <p class="muted small">{note}" · "<a class="gif-download" href=format!("/runs/{job}/latent.gif") download="">"GIF over all epochs"</a></p>
                <Legend class_names=s.class_names.clone() labels=labels/>
            </section>
            <section>
                <h2>"Retrieval"</h2>
                <p class="muted small">"Query test images (left) and their nearest neighbours in this run's latest snapshot; green = same class."</p>
                <div class="retrieval">{rows}</div>
            </section>
        </div>
    }
    .into_any()
}

fn attempts(d: &RunDetail) -> impl IntoView + use<> {
    let rows = d
        .attempts
        .iter()
        .map(|a| {
            let dur = a
                .ended_at_ms
                .map(|e| super::fmt_duration_ms((e - a.started_at_ms) as f64))
                .unwrap_or_else(|| "–".into());
            view! {
                <tr>
                    <td class="num">{a.number}</td>
                    <td><StateBadge state=a.state.to_string()/></td>
                    <td>{a.worker.clone().unwrap_or_else(|| "–".into())}</td>
                    <td>{fmt_time(a.started_at_ms)}</td>
                    <td>{dur}</td>
                    <td><pre class="error">{a.error.clone().unwrap_or_default()}</pre></td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <h2>"Attempts"</h2>
        <table class="data" id="attempts"><thead><tr><th>"#"</th><th>"state"</th><th>"worker"</th><th>"started (UTC)"</th><th>"took"</th><th>"error"</th></tr></thead><tbody>{rows}</tbody></table>
    }
}
