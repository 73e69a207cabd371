//! The sweeps overview: progress bar, counts and ETA per sweep.

use leptos::prelude::*;

use super::{fmt_duration_ms, fmt_time, sweep_url};
use crate::data::{JobCounts, JobState, SweepSummary};

/// Estimated time to finish: remaining jobs times the mean job time, divided by the number of
/// jobs running at once. `None` when nothing runs or no job has finished yet.
pub fn eta_ms(s: &SweepSummary) -> Option<f64> {
    let remaining = s.counts.queued + s.counts.running;
    if remaining == 0 {
        return Some(0.0);
    }
    let mean = s.mean_job_ms?;
    let parallel = s.counts.running.max(1) as f64;
    // Running jobs are on average half done.
    Some((s.counts.queued as f64 + s.counts.running as f64 * 0.5) * mean / parallel)
}

fn eta_text(s: &SweepSummary) -> String {
    let remaining = s.counts.queued + s.counts.running;
    match eta_ms(s) {
        _ if remaining == 0 => "finished".to_owned(),
        Some(ms) => format!("≈ {}", fmt_duration_ms(ms)),
        None if s.counts.running == 0 => "waiting for workers".to_owned(),
        None => "estimating…".to_owned(),
    }
}

/// Stacked progress bar of job states.
#[component]
pub fn Progress(counts: JobCounts) -> impl IntoView {
    let total = counts.total().max(1) as f64;
    // Finished states first, so the bar fills from the left.
    let order = [
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Running,
        JobState::Queued,
    ];
    let segs = order
        .into_iter()
        .map(|s| (s.as_str(), counts.get(s)))
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| {
            let style = format!("width:{:.2}%", n as f64 / total * 100.0);
            let class = format!("seg state-{name}");
            let title = format!("{n} {name}");
            view! { <span class=class style=style title=title></span> }
        })
        .collect_view();
    view! { <div class="progress">{segs}</div> }
}

/// `<main>` of the sweeps page.
pub fn main_html(sweeps: Vec<SweepSummary>) -> String {
    super::render(move || {
        let empty = sweeps.is_empty();
        let rows = sweeps
            .into_iter()
            .map(|s| {
                let href = sweep_url(&s.name);
                let eta = eta_text(&s);
                let c = s.counts;
                let pct = format!(
                    "{:.0}%",
                    (c.done + c.failed + c.cancelled) as f64 / c.total().max(1) as f64 * 100.0
                );
                view! {
                    <tr>
                        <td><a href=href>{s.name.clone()}</a></td>
                        <td><super::StateBadge state=s.state.clone()/></td>
                        <td class="num">{s.priority}</td>
                        <td class="wide"><Progress counts=c/><span class="muted">{pct}</span></td>
                        <td class="num">{c.queued}</td>
                        <td class="num">{c.running}</td>
                        <td class="num">{c.done}</td>
                        <td class="num">{c.failed}</td>
                        <td class="num">{c.cancelled}</td>
                        <td>{eta}</td>
                        <td class="muted">{fmt_time(s.created_at_ms)}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            <h1>"Sweeps"</h1>
            {empty.then(|| view! { <p class="muted">"No sweeps yet: submit one with "<code>"coordinator submit FILE"</code>"."</p> })}
            <div class="scroll"><table class="data sweeps">
                <thead><tr>
                    <th>"sweep"</th><th>"state"</th><th>"priority"</th><th>"progress"</th>
                    <th>"queued"</th><th>"running"</th><th>"done"</th><th>"failed"</th><th>"cancelled"</th>
                    <th>"ETA"</th><th>"submitted (UTC)"</th>
                </tr></thead>
                <tbody>{rows}</tbody>
            </table></div>
        }
    })
}
