//! The workers page: who is connected, on which devices, running what.

use leptos::prelude::*;

use super::{fmt_ago, fmt_time, now_ms, run_url, sweep_url};
use crate::data::{Allocation, WorkerInfo};

/// A worker silent for longer than this is shown as stale.
const STALE_MS: i64 = 60_000;

/// `<main>` of the workers page; `allocations` (Slurm auto-allocation) get a table of their own
/// when there are any.
pub fn main_html(workers: Vec<WorkerInfo>, allocations: Vec<Allocation>) -> String {
    super::render(move || {
        let now = now_ms();
        let empty = workers.is_empty();
        let allocs = (!allocations.is_empty()).then(|| {
            let rows = allocations
                .iter()
                .map(|a| {
                    let state = if a.busy { format!("{} (busy)", a.state) } else { a.state.clone() };
                    view! {
                        <tr>
                            <td>{a.id.clone()}</td>
                            <td><super::StateBadge state=state/></td>
                            <td>{a.worker.clone()}</td>
                            <td title=fmt_time(a.submitted_at_ms)>{fmt_ago(a.submitted_at_ms)}</td>
                        </tr>
                    }
                })
                .collect_view();
            view! {
                <h2>"Slurm allocations"</h2>
                <table class="data allocations">
                    <thead><tr><th>"job id"</th><th>"state"</th><th>"worker"</th><th>"submitted"</th></tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            }
        });
        let rows = workers
            .into_iter()
            .map(|w| {
                let stale = now - w.last_seen_at_ms > STALE_MS;
                let status = if stale { "stale" } else if w.current.is_empty() { "idle" } else { "busy" };
                let devices = w.devices.iter().map(|d| view! { <li>{d.clone()}</li> }).collect_view();
                let jobs = w
                    .current
                    .iter()
                    .map(|c| {
                        view! {
                            <div>
                                <a href=run_url(c.job_id)>{format!("#{}", c.job_id)}</a>" "
                                <a class="muted" href=sweep_url(&c.sweep_name)>{c.sweep_name.clone()}</a>" "
                                <span class="small">{c.label.clone()}</span>
                                <span class="muted small">{format!(" attempt {} · {}", c.attempt_number, fmt_ago(c.started_at_ms))}</span>
                            </div>
                        }
                    })
                    .collect_view();
                view! {
                    <tr>
                        <td>{w.name.clone()}</td>
                        <td><super::StateBadge state=status.to_owned()/></td>
                        <td>{w.host.clone()}</td>
                        <td>{w.backend.clone()}</td>
                        <td><ul class="plain">{devices}</ul></td>
                        <td>{jobs}</td>
                        <td title=fmt_time(w.last_seen_at_ms)>{fmt_ago(w.last_seen_at_ms)}</td>
                        <td class="muted">{w.version.clone()}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            <h1>"Workers"</h1>
            {empty.then(|| view! { <p class="muted">"No worker has registered yet: start one with "<code>"worker --coordinator URL"</code>"."</p> })}
            <table class="data workers">
                <thead><tr><th>"worker"</th><th>"status"</th><th>"host"</th><th>"backend"</th><th>"devices"</th><th>"current job"</th><th>"last heartbeat"</th><th>"version"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
            {allocs}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_get_their_own_table_only_when_there_are_some() {
        assert!(!main_html(Vec::new(), Vec::new()).contains("Slurm allocations"));
        let html = main_html(
            Vec::new(),
            vec![
                Allocation {
                    id: "4711".into(),
                    state: "running".into(),
                    worker: "slurm-4711_0".into(),
                    busy: true,
                    submitted_at_ms: 0,
                },
                Allocation {
                    id: "4712".into(),
                    state: "queued".into(),
                    worker: "slurm-4712_0".into(),
                    busy: false,
                    submitted_at_ms: 0,
                },
            ],
        );
        assert!(html.contains("Slurm allocations"), "{html}");
        assert!(
            html.contains("4711") && html.contains("slurm-4711_0"),
            "{html}"
        );
        assert!(html.contains("running (busy)"), "{html}");
        assert!(html.contains(">queued<"), "{html}");
    }
}
