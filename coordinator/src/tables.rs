//! Plain-text tables for the terminal: `coordinator status` and the summary of a finished sweep.

use proto::metric;

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

/// Columns of the end-of-sweep summary besides the parameters: (metric key, heading).
const SUMMARY_METRICS: [(&str, &str); 2] =
    [(metric::KNN5_ACC, "kNN@5"), (metric::MAP_AT_R, "MAP@R")];

/// The summary printed when a sweep finishes: one row per run with the parameters that vary
/// across the sweep (loss and dataset when none do), its state, kNN@5 and MAP@R; then the
/// error of each failed run.
pub(crate) fn summary_table(sweep: &dashboard::SweepDetail) -> String {
    use dashboard::table::{axes, fmt_metric, value_text};
    let runs = &sweep.runs;
    let mut params: Vec<String> = axes(runs)
        .into_iter()
        .filter(|a| a.varies())
        .map(|a| a.name)
        .collect();
    if params.is_empty() {
        params = vec!["loss".to_owned(), "dataset".to_owned()];
    }
    let mut header: Vec<String> = vec!["run".to_owned()];
    header.extend(params.iter().cloned());
    header.push("state".to_owned());
    header.extend(SUMMARY_METRICS.iter().map(|(_, h)| (*h).to_owned()));
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let mut row = vec![r.job_id.to_string()];
            row.extend(
                params
                    .iter()
                    .map(|p| r.param(p).map(value_text).unwrap_or_default()),
            );
            row.push(r.state.to_string());
            row.extend(SUMMARY_METRICS.iter().map(|(k, _)| {
                r.metrics
                    .get(*k)
                    .map(|v| fmt_metric(k, *v))
                    .unwrap_or_else(|| "-".to_owned())
            }));
            row
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Numbers read best right-aligned: the run id and the metrics.
    let right = |i: usize| i == 0 || i + SUMMARY_METRICS.len() >= header.len();
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = w.saturating_sub(c.chars().count());
            if right(i) {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let c = &sweep.summary.counts;
    let mut out = format!(
        "sweep `{}` finished: {} run(s), {} done, {} failed, {} cancelled\n\n",
        sweep.summary.name,
        runs.len(),
        c.done,
        c.failed,
        c.cancelled
    );
    out.push_str(&line(&header));
    for r in &rows {
        out.push_str(&line(r));
    }
    for r in runs.iter().filter(|r| r.state == proto::JobState::Failed) {
        let err = r.last_error.as_deref().unwrap_or("no error recorded");
        let first = err.lines().next().unwrap_or(err);
        out.push_str(&format!("\nrun {} failed: {first}", r.job_id));
    }
    if runs.iter().any(|r| r.state == proto::JobState::Failed) {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dashboard::{JobCounts, RunRow, SweepDetail, SweepSummary};
    use serde_json::json;

    fn run(id: i64, loss: &str, state: &str, metrics: &[(&str, f64)]) -> RunRow {
        RunRow {
            job_id: id,
            seq: id,
            state: state.parse().unwrap(),
            attempts: 1,
            params: vec![
                ("loss".into(), json!(loss)),
                ("dataset".into(), json!("fashion-mnist")),
                ("lr".into(), json!(0.001)),
            ],
            metrics: metrics.iter().map(|(k, v)| ((*k).into(), *v)).collect(),
            last_error: (state == "failed").then(|| "no such folder: /x\nmore".into()),
        }
    }

    #[test]
    fn summary_has_one_row_per_run_with_varying_params_and_metrics() {
        let d = SweepDetail {
            summary: SweepSummary {
                id: 1,
                name: "qs".into(),
                state: "active".into(),
                priority: 0,
                created_at_ms: 0,
                counts: JobCounts {
                    done: 1,
                    failed: 1,
                    ..JobCounts::default()
                },
                mean_job_ms: None,
            },
            spec_text: String::new(),
            runs: vec![
                run(
                    7,
                    "ce",
                    "done",
                    &[(metric::KNN5_ACC, 0.81234), (metric::MAP_AT_R, 0.5)],
                ),
                run(12, "triplet", "failed", &[]),
            ],
        };
        let t = summary_table(&d);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "sweep `qs` finished: 2 run(s), 1 done, 1 failed, 0 cancelled"
        );
        assert_eq!(lines[2], "run  loss     state    kNN@5   MAP@R");
        assert_eq!(lines[3], "  7  ce       done    0.8123  0.5000");
        assert_eq!(lines[4], " 12  triplet  failed       -       -");
        assert_eq!(lines[6], "run 12 failed: no such folder: /x");
        assert!(!t.contains("dataset"), "constant parameters are left out");
    }
}
