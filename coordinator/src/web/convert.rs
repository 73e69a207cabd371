//! Store rows to the dashboard's plain data: the coordinator's half of the boundary whose other
//! half is `dashboard/src/data.rs`. The SQL is in `store/views.rs`; this module only orders
//! parameters, picks numeric metrics, derives counts and formats devices.

use std::collections::{BTreeMap, HashMap};

use dashboard::{
    AttemptInfo, CurrentJob, JobCounts, MetricPoint, RunDetail, RunRow, Snapshot, SweepDetail,
    SweepSummary, WorkerInfo,
};
use serde_json::{Map, Value};

use proto::{JobParams, PARAM_ORDER};

use crate::store::{JobRow, Store, StoreError, SweepHead};

/// Parameters of a job in [`PARAM_ORDER`], unknown keys after them alphabetically. Fields the
/// stored JSON omits at their defaults (`split`, `normalize`, …) are shown with those values, so
/// a filter `split=samples` matches a cell stored without the key.
fn params_from_map(map: Map<String, Value>) -> Vec<(String, Value)> {
    let mut map = match serde_json::from_value::<JobParams>(Value::Object(map.clone())) {
        Ok(p) => p.full_json(),
        Err(_) => map,
    };
    let mut out: Vec<(String, Value)> = PARAM_ORDER
        .iter()
        .filter_map(|k| map.remove(*k).map(|v| ((*k).to_owned(), v)))
        .collect();
    out.extend(map);
    out
}

/// Final metrics of a result row; non-numbers (e.g. a NaN stored as null) are left out.
fn metrics_from_map(map: Map<String, Value>) -> BTreeMap<String, f64> {
    map.into_iter()
        .filter_map(|(k, v)| v.as_f64().map(|x| (k, x)))
        .collect()
}

fn run_row(j: JobRow) -> RunRow {
    RunRow {
        job_id: j.id,
        seq: j.seq,
        state: j.state,
        attempts: j.attempts,
        params: params_from_map(j.params),
        metrics: j.metrics.map(metrics_from_map).unwrap_or_default(),
        last_error: j.last_error,
    }
}

/// All sweeps, highest priority first, with job counts and mean successful attempt time.
pub(crate) async fn sweeps(store: &Store) -> Result<Vec<SweepSummary>, StoreError> {
    let all = store.status().await?;
    let mean = store.mean_job_ms(None).await?;
    Ok(all
        .into_iter()
        .map(|s| SweepSummary {
            id: s.id.0,
            counts: s.jobs,
            mean_job_ms: mean.get(&s.id.0).copied(),
            name: s.name,
            state: s.state,
            priority: s.priority,
            created_at_ms: s.created_at,
        })
        .collect())
}

/// One sweep with all its runs, or `None`; read in full, without the dashboard's cache.
pub async fn sweep(store: &Store, name: &str) -> Result<Option<SweepDetail>, StoreError> {
    let Some(head) = store.sweep_head(name).await? else {
        return Ok(None);
    };
    let runs = store.sweep_jobs(head.id, None).await?;
    Ok(Some(
        assemble(store, head, runs.into_iter().map(run_row).collect()).await?,
    ))
}

/// `old` brought up to date by re-reading only the runs whose job changed at or after
/// `since.0` (ms, `jobs.updated_at`) or whose result was stored at or after `since.1`.
pub(crate) async fn sweep_refresh(
    store: &Store,
    name: &str,
    old: &SweepDetail,
    since: (i64, i64),
) -> Result<Option<SweepDetail>, StoreError> {
    let Some(head) = store.sweep_head(name).await? else {
        return Ok(None);
    };
    if head.id != old.summary.id {
        let runs = store.sweep_jobs(head.id, None).await?;
        return Ok(Some(
            assemble(store, head, runs.into_iter().map(run_row).collect()).await?,
        ));
    }
    let changed = store.sweep_jobs(head.id, Some(since)).await?;
    let pos: HashMap<i64, usize> = old
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.job_id, i))
        .collect();
    let mut runs = old.runs.clone();
    for c in changed.into_iter().map(run_row) {
        match pos.get(&c.job_id) {
            Some(&i) => runs[i] = c,
            None => runs.push(c),
        }
    }
    Ok(Some(assemble(store, head, runs).await?))
}

/// A sweep page's data from its row and runs: counts and the mean job time are derived here.
async fn assemble(
    store: &Store,
    head: SweepHead,
    mut runs: Vec<RunRow>,
) -> Result<SweepDetail, StoreError> {
    let mean = store
        .mean_job_ms(Some(head.id))
        .await?
        .get(&head.id)
        .copied();
    runs.sort_by_key(|r| r.seq);
    let mut counts = JobCounts::default();
    for r in &runs {
        counts.add(r.state, 1);
    }
    Ok(SweepDetail {
        summary: SweepSummary {
            id: head.id,
            name: head.name,
            state: head.state,
            priority: head.priority,
            created_at_ms: head.created_at,
            counts,
            mean_job_ms: mean,
        },
        spec_text: head.spec_toml,
        runs,
    })
}

/// One run with its sweep name and attempts, or `None`.
pub(crate) async fn run(store: &Store, job: i64) -> Result<Option<RunDetail>, StoreError> {
    let Some(d) = store.job_detail(job).await? else {
        return Ok(None);
    };
    Ok(Some(RunDetail {
        sweep_name: d.sweep_name,
        run: run_row(d.job),
        attempts: d
            .attempts
            .into_iter()
            .map(|a| AttemptInfo {
                id: a.id,
                number: a.number,
                worker: a.worker,
                state: a.state,
                started_at_ms: a.started_at,
                ended_at_ms: a.ended_at,
                error: a.error,
            })
            .collect(),
    }))
}

/// Every metric point of a job.
pub(crate) async fn metrics(store: &Store, job: i64) -> Result<Vec<MetricPoint>, StoreError> {
    Ok(store
        .job_metrics(job)
        .await?
        .into_iter()
        .map(|m| MetricPoint {
            attempt_id: m.attempt_id,
            step: m.step,
            epoch: m.epoch,
            name: m.name,
            value: m.value,
        })
        .collect())
}

/// Every snapshot of these jobs.
pub(crate) async fn snapshots(store: &Store, jobs: &[i64]) -> Result<Vec<Snapshot>, StoreError> {
    Ok(store
        .job_snapshots(jobs)
        .await?
        .into_iter()
        .map(|s| Snapshot {
            job_id: s.job_id,
            attempt_id: s.attempt_id,
            epoch: s.data.epoch,
            projection: s.data.projection,
            points: s.data.points,
            labels: s.data.labels,
            indices: s.data.indices,
            class_names: s.data.class_names,
        })
        .collect())
}

/// A device as a display string: `name (index i, 8.0 GiB)` for the objects workers report.
fn device_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let name = o.get("name").and_then(Value::as_str).unwrap_or("device");
            let mut extra = Vec::new();
            if let Some(i) = o.get("index").and_then(Value::as_i64) {
                extra.push(format!("#{i}"));
            }
            if let Some(b) = o
                .get("memory_bytes")
                .and_then(Value::as_f64)
                .filter(|b| *b > 0.0)
            {
                extra.push(format!("{:.1} GiB", b / (1u64 << 30) as f64));
            }
            if extra.is_empty() {
                name.to_owned()
            } else {
                format!("{name} ({})", extra.join(", "))
            }
        }
        other => other.to_string(),
    }
}

/// Workers, most recently seen first, with their running attempts.
pub(crate) async fn workers(store: &Store) -> Result<Vec<WorkerInfo>, StoreError> {
    Ok(store
        .workers()
        .await?
        .into_iter()
        .map(|w| {
            let devices = match serde_json::from_str::<Value>(&w.devices_json) {
                Ok(Value::Array(a)) => a.iter().map(device_text).collect(),
                _ => vec![w.devices_json],
            };
            let current = w
                .running
                .into_iter()
                .map(|r| CurrentJob {
                    label: serde_json::from_str::<proto::JobParams>(&r.params_json)
                        .map(|p| p.short_label())
                        .unwrap_or(r.params_json),
                    job_id: r.job_id,
                    sweep_name: r.sweep_name,
                    attempt_number: r.number,
                    started_at_ms: r.started_at,
                })
                .collect();
            WorkerInfo {
                id: w.id,
                name: w.name,
                host: w.host,
                backend: w.backend,
                devices,
                version: w.version,
                registered_at_ms: w.registered_at,
                last_seen_at_ms: w.last_seen_at,
                current,
            }
        })
        .collect())
}
