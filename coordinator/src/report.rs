//! Plain-text rendering of command output for terminals.

use crate::store::SweepStatus;

/// `coordinator status` as an aligned table.
pub fn status_table(sweeps: &[SweepStatus]) -> String {
    if sweeps.is_empty() {
        return "no sweeps\n".to_owned();
    }
    let width = sweeps
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = format!(
        "{:<width$}  {:>6}  {:>8}  {:>7}  {:>6}  {:>6}  {:>9}\n",
        "sweep", "state", "queued", "running", "done", "failed", "cancelled"
    );
    for s in sweeps {
        let j = &s.jobs;
        out.push_str(&format!(
            "{:<width$}  {:>6}  {:>8}  {:>7}  {:>6}  {:>6}  {:>9}\n",
            s.name, s.state, j.queued, j.running, j.done, j.failed, j.cancelled
        ));
    }
    out
}
