//! Latent spaces: a grid of scatter plots (one per run) arranged by two axes, with an epoch
//! slider; successive epochs are Procrustes-aligned so the picture does not spin.

use std::collections::BTreeMap;

use leptos::prelude::*;
use proto::SnapshotProjection;
use serde_json::Value;

use super::{Query, StateBadge, run_url, sweep_url};
use crate::data::{JobState, RunRow, Snapshot, SweepDetail};
use crate::geometry::{align_sequence, stratified_sample};
use crate::plot::{Legend, Scatter};
use crate::table::{self, Axis, value_text};

/// Upper bound on points drawn per plot.
pub(crate) const MAX_POINTS: usize = 1000;
/// Upper bound on values per grid axis (8 × 8 plots).
pub(crate) const MAX_CELLS_PER_AXIS: usize = 8;

/// Which runs the grid shows.
#[derive(Debug, Clone)]
pub struct Plan {
    pub x: Option<Axis>,
    pub y: Option<Axis>,
    /// `cells[row][col]`: the chosen run (lowest expansion order among the matches) and how many
    /// other runs matched the cell.
    pub cells: Vec<Vec<Option<(RunRow, usize)>>>,
    pub varying: Vec<Axis>,
}

impl Plan {
    pub fn job_ids(&self) -> Vec<i64> {
        self.cells
            .iter()
            .flatten()
            .flatten()
            .map(|(r, _)| r.job_id)
            .collect()
    }
}

/// Picks the grid: axes from `?x=&y=` (default loss × dataset), runs filtered by the other axes.
pub fn plan(d: &SweepDetail, q: &Query) -> Plan {
    let axes = table::axes(&d.runs);
    let varying: Vec<Axis> = axes.iter().filter(|a| a.varies()).cloned().collect();
    let find = |n: &str| axes.iter().find(|a| a.name == n).cloned();
    let x = q.get("x").and_then(find).or_else(|| find("loss"));
    let y = q
        .get("y")
        .and_then(find)
        .or_else(|| find("dataset"))
        .filter(|y| Some(&y.name) != x.as_ref().map(|a| &a.name));
    let filters = table::filters_from_query(&q.0, &varying);
    let mut runs = table::filter_runs(&d.runs, &filters);
    runs.sort_by_key(|r| r.seq);
    let vals = |a: &Option<Axis>| -> Vec<Option<Value>> {
        match a {
            Some(a) => a
                .values
                .iter()
                .take(MAX_CELLS_PER_AXIS)
                .cloned()
                .map(Some)
                .collect(),
            None => vec![None],
        }
    };
    let (xs, ys) = (vals(&x), vals(&y));
    let matches = |r: &RunRow, a: &Option<Axis>, v: &Option<Value>| match (a, v) {
        (Some(a), Some(v)) => r.param(&a.name) == Some(v),
        _ => true,
    };
    let cells = ys
        .iter()
        .map(|yv| {
            xs.iter()
                .map(|xv| {
                    let mut m = runs
                        .iter()
                        .filter(|r| matches(r, &x, xv) && matches(r, &y, yv));
                    // Prefer a run that has produced a picture over an earlier one still queued.
                    let all: Vec<&&RunRow> = m.by_ref().collect();
                    let pick = all
                        .iter()
                        .find(|r| r.state == JobState::Done)
                        .or(all.first())
                        .map(|r| (**r).clone());
                    pick.map(|r| (r, all.len() - 1))
                })
                .collect()
        })
        .collect();
    Plan {
        x,
        y,
        cells,
        varying,
    }
}

/// Per run, the snapshots of its latest attempt per epoch, aligned; returns epoch → points.
pub(crate) struct Aligned {
    pub(crate) epochs: Vec<i64>,
    pub(crate) points: Vec<Vec<[f64; 2]>>,
    pub(crate) labels: Vec<u32>,
    pub(crate) class_names: Vec<String>,
    pub(crate) projection: SnapshotProjection,
}

pub(crate) fn align_run(snaps: &[&Snapshot]) -> Option<Aligned> {
    let mut by_epoch: BTreeMap<i64, &Snapshot> = BTreeMap::new();
    for s in snaps {
        // A later attempt supersedes an earlier one's picture of the same epoch.
        let e = by_epoch.entry(s.epoch).or_insert(s);
        if s.attempt_id > e.attempt_id {
            *e = s;
        }
    }
    let list: Vec<&Snapshot> = by_epoch.values().copied().collect();
    let last = list.last()?;
    let seq: Vec<(&[u32], &[[f32; 2]])> = list
        .iter()
        .map(|s| (s.indices.as_slice(), s.points.as_slice()))
        .collect();
    Some(Aligned {
        epochs: list.iter().map(|s| s.epoch).collect(),
        points: align_sequence(&seq),
        labels: last.labels.clone(),
        class_names: last.class_names.clone(),
        projection: last.projection,
    })
}

/// Epochs with a snapshot in any shown run, ascending.
pub(crate) fn epochs_of(snaps: &[Snapshot]) -> Vec<i64> {
    let mut e: Vec<i64> = snaps.iter().map(|s| s.epoch).collect();
    e.sort_unstable();
    e.dedup();
    e
}

fn chosen_epoch(q: &Query, epochs: &[i64]) -> Option<i64> {
    let last = *epochs.last()?;
    Some(q.get("epoch").and_then(|e| e.parse().ok()).unwrap_or(last))
}

/// HTML of the grid alone (the slider's fragment).
pub(crate) fn grid_html(p: &Plan, snaps: &[Snapshot], q: &Query) -> String {
    let (p, snaps, q) = (p.clone(), snaps.to_vec(), q.clone());
    super::render(move || grid(&p, &snaps, &q))
}

fn grid(p: &Plan, snaps: &[Snapshot], q: &Query) -> impl IntoView + use<> {
    let epoch = chosen_epoch(q, &epochs_of(snaps));
    let head = p.x.as_ref().map(|a| {
        a.values
            .iter()
            .take(MAX_CELLS_PER_AXIS)
            .map(|v| view! { <th>{value_text(v)}</th> })
            .collect_view()
    });
    let y_vals: Vec<String> = match &p.y {
        Some(a) => a
            .values
            .iter()
            .take(MAX_CELLS_PER_AXIS)
            .map(value_text)
            .collect(),
        None => vec![String::new()],
    };
    let varying = p.varying.clone();
    let rows = p
        .cells
        .iter()
        .zip(y_vals)
        .map(|(row, yv)| {
            let tds = row
                .iter()
                .map(|cell| match cell {
                    None => view! { <td class="empty">"no run"</td> }.into_any(),
                    Some((r, more)) => {
                        let mine: Vec<&Snapshot> =
                            snaps.iter().filter(|s| s.job_id == r.job_id).collect();
                        plot_cell(r, *more, &mine, epoch, &varying).into_any()
                    }
                })
                .collect_view();
            view! { <tr><th class="rowhead">{yv}</th>{tds}</tr> }
        })
        .collect_view();
    let corner = format!(
        "{} \\ {}",
        p.y.as_ref().map(|a| a.name.as_str()).unwrap_or(""),
        p.x.as_ref().map(|a| a.name.as_str()).unwrap_or("")
    );
    view! {
        <table class="latent"><thead><tr><th class="corner">{corner}</th>{head}</tr></thead><tbody>{rows}</tbody></table>
    }
}

fn plot_cell(
    r: &RunRow,
    more: usize,
    snaps: &[&Snapshot],
    epoch: Option<i64>,
    varying: &[Axis],
) -> impl IntoView + use<> {
    let label = varying
        .iter()
        .filter(|a| a.name != "loss" && a.name != "dataset")
        .map(|a| {
            format!(
                "{}={}",
                a.name,
                r.param(&a.name).map(value_text).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let more =
        (more > 0).then(|| view! { <span class="muted">{format!(" (+{more} more match)")}</span> });
    let body = match (align_run(snaps), epoch) {
        (Some(a), Some(e)) => {
            // The latest snapshot at or before the chosen epoch (the first one if none is).
            let k = a.epochs.iter().rposition(|x| *x <= e).unwrap_or(0);
            let keep = stratified_sample(&a.labels, MAX_POINTS);
            let pts: Vec<[f64; 2]> = keep
                .iter()
                .filter_map(|&i| a.points[k].get(i).copied())
                .collect();
            let labels: Vec<u32> = keep
                .iter()
                .filter(|&&i| i < a.points[k].len())
                .map(|&i| a.labels[i])
                .collect();
            let note = format!(
                "epoch {}{} · {} of {} points",
                a.epochs[k],
                match a.projection {
                    SnapshotProjection::Identity => String::new(),
                    p => format!(" · {}", p.label()),
                },
                pts.len(),
                a.labels.len()
            );
            view! {
                <Scatter points=pts labels=labels.clone()/>
                <p class="muted small">{note}</p>
                <Legend class_names=a.class_names.clone() labels=labels/>
            }
            .into_any()
        }
        _ => view! { <div class="noplot">"no snapshot yet"</div> }.into_any(),
    };
    view! {
        <td class="plot" data-job=r.job_id>
            <div class="plot-title"><a href=run_url(r.job_id)>{format!("#{}", r.job_id)}</a>" "<StateBadge state=r.state.to_string()/>" "<span class="small">{label}</span>{more}</div>
            {body}
        </td>
    }
}

/// `<main>` of the latent-space page.
pub fn main_html(d: &SweepDetail, p: &Plan, snaps: &[Snapshot], q: &Query) -> String {
    let grid = grid_html(p, snaps, q);
    let (name, p, q, snaps) = (d.summary.name.clone(), p.clone(), q.clone(), snaps.to_vec());
    let top = super::render(move || {
        let epochs = epochs_of(&snaps);
        let epoch = chosen_epoch(&q, &epochs);
        let base = sweep_url(&name);
        // The varying axes, plus the current ones even if they do not vary (one data set).
        let mut choices: Vec<&Axis> = p.varying.iter().collect();
        for a in [p.x.as_ref(), p.y.as_ref()].into_iter().flatten() {
            if !choices.iter().any(|c| c.name == a.name) {
                choices.push(a);
            }
        }
        let axis_opts = |cur: Option<&Axis>| {
            choices
                .iter()
                .map(|a| view! { <option value=a.name.clone() selected=cur.map(|c| &c.name) == Some(&a.name)>{a.name.clone()}</option> })
                .collect_view()
        };
        let others: Vec<&Axis> = p
            .varying
            .iter()
            .filter(|a| {
                Some(&a.name) != p.x.as_ref().map(|x| &x.name)
                    && Some(&a.name) != p.y.as_ref().map(|y| &y.name)
            })
            .collect();
        let filter_selects = others
            .iter()
            .map(|a| {
                let cur = q.get(&a.name).map(str::to_owned);
                let opts = a
                    .values
                    .iter()
                    .map(|v| {
                        let t = value_text(v);
                        view! { <option value=t.clone() selected=cur.as_deref() == Some(t.as_str())>{t.clone()}</option> }
                    })
                    .collect_view();
                view! { <label>{a.name.clone()}" "<select name=a.name.clone()><option value="">"first"</option>{opts}</select></label> }
            })
            .collect_view();
        let keep = q.clean().with("epoch", None);
        let hidden = keep
            .0
            .into_iter()
            .map(|(k, v)| view! { <input type="hidden" name=k value=v/> })
            .collect_view();
        let (min, max) = (
            epochs.first().copied().unwrap_or(0),
            epochs.last().copied().unwrap_or(0),
        );
        let links = epochs
            .iter()
            .map(|e| {
                let href = q.clean().with("epoch", Some(&e.to_string())).to_qs();
                let class = if Some(*e) == epoch { "current" } else { "" };
                view! { <a class=class href=href>{*e}</a> }
            })
            .collect_view();
        let ev = epoch.unwrap_or(0).to_string();
        // The grid as shown (axes and filters), every epoch.
        let gif = format!("{base}/latent.gif{}", q.clean().with("epoch", None).to_qs());
        view! {
            <p class="crumbs"><a href="/">"Sweeps"</a>" / "<a href=base.clone()>{name.clone()}</a>" /"</p>
            <h1>"Latent spaces"</h1>
            <p class="tabs"><a href=base.clone()>"Runs"</a><a class="current" href=format!("{base}/latent")>"Latent spaces"</a></p>
            <form class="controls" method="get">
                <label>"columns "<select name="x">{axis_opts(p.x.as_ref())}</select></label>
                <label>"rows "<select name="y">{axis_opts(p.y.as_ref())}</select></label>
                {filter_selects}
                <button type="submit">"Show"</button>
            </form>
            <form class="epoch-form controls" method="get">
                {hidden}
                <label>"epoch "<input type="range" id="epoch-slider" name="epoch" min=min max=max step="1" value=ev.clone()/></label>
                <output id="epoch-value">{ev}</output>
                <noscript><button type="submit">"Go"</button></noscript>
                <span class="epoch-links">" snapshots: "{links}</span>
            </form>
            <p class="muted small">"Each epoch is rotated/reflected onto the previous one (orthogonal Procrustes), so the layout stays put while training moves points. At most 1,000 points per plot, sampled per class. "<a class="gif-download" href=gif download="">"Download this grid as a GIF over the epochs"</a></p>
        }
    });
    format!("{top}<div id=\"latent-grid\">{grid}</div>")
}
