//! SQL behind the dashboard: read-only queries over `Store::reader()`, mapped to the plain
//! structs of the `dashboard` crate.
//!
//! Every query is keyed by an indexed column (`jobs(sweep_id, …)` via `UNIQUE(sweep_id, key)`,
//! `results` by primary key, `attempts(job_id, number)`, `snapshots(attempt_id, epoch)`,
//! `metrics_by_job`), so page cost grows with what a page shows, not with the database.

use std::collections::{BTreeMap, HashMap};

use dashboard::{
    AttemptInfo, CurrentJob, JobCounts, MetricPoint, RunDetail, RunRow, Snapshot, SweepDetail,
    SweepSummary, WorkerInfo,
};
use serde_json::{Map, Value};
use sqlx::{Row, SqlitePool};

use crate::store::{SnapshotData, StoreError};

/// JobParams fields in struct order: the column order of tables and exports.
pub const PARAM_ORDER: &[&str] = &[
    "network",
    "loss",
    "dataset",
    "margin",
    "lr",
    "embedding_dim",
    "batch_size",
    "epochs",
    "optimizer",
    "seed",
    "mining",
    "train_limit",
    "eval_every",
];

/// Parameters of a job in [`PARAM_ORDER`], unknown keys after them alphabetically.
pub fn params_from_json(text: &str) -> Result<Vec<(String, Value)>, StoreError> {
    let map: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("params_json: {e}")))?;
    Ok(params_from_map(map))
}

fn params_from_map(mut map: Map<String, Value>) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = PARAM_ORDER
        .iter()
        .filter_map(|k| map.remove(*k).map(|v| ((*k).to_owned(), v)))
        .collect();
    out.extend(map);
    out
}

/// Final metrics of a result row; non-numbers (e.g. a NaN stored as null) are left out.
pub fn metrics_from_json(text: Option<&str>) -> Result<BTreeMap<String, f64>, StoreError> {
    let Some(text) = text else {
        return Ok(BTreeMap::new());
    };
    let map: Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("metrics_json: {e}")))?;
    Ok(metrics_from_map(map))
}

fn metrics_from_map(map: Map<String, Value>) -> BTreeMap<String, f64> {
    map.into_iter()
        .filter_map(|(k, v)| v.as_f64().map(|x| (k, x)))
        .collect()
}

/// One job as SQLite's `json_array` in [`sweep`] builds it.
type RawRun = (
    i64,
    i64,
    String,
    i64,
    Map<String, Value>,
    Option<String>,
    Option<Map<String, Value>>,
);

fn run_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<RunRow, StoreError> {
    let params: String = r.try_get("params_json")?;
    let metrics: Option<String> = r.try_get("metrics_json")?;
    Ok(RunRow {
        job_id: r.try_get("id")?,
        seq: r.try_get("seq")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        params: params_from_json(&params)?,
        metrics: metrics_from_json(metrics.as_deref())?,
        last_error: r.try_get("last_error")?,
    })
}

fn add_count(c: &mut JobCounts, state: &str, n: u64) {
    match state {
        "queued" => c.queued += n,
        "running" => c.running += n,
        "done" => c.done += n,
        "failed" => c.failed += n,
        "cancelled" => c.cancelled += n,
        _ => {}
    }
}

/// All sweeps, highest priority first, with job counts and mean successful attempt time.
pub async fn sweeps(db: &SqlitePool) -> Result<Vec<SweepSummary>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, name, state, priority, created_at FROM sweeps ORDER BY priority DESC, id",
    )
    .fetch_all(db)
    .await?;
    let counts =
        sqlx::query("SELECT sweep_id, state, COUNT(*) AS n FROM jobs GROUP BY sweep_id, state")
            .fetch_all(db)
            .await?;
    let means = sqlx::query(
        "SELECT j.sweep_id, AVG(a.ended_at - a.started_at) AS ms FROM attempts a JOIN jobs j ON j.id = a.job_id
         WHERE a.state = 'done' AND a.ended_at IS NOT NULL GROUP BY j.sweep_id",
    )
    .fetch_all(db)
    .await?;
    let mut by_sweep: HashMap<i64, JobCounts> = HashMap::new();
    for r in &counts {
        let state: String = r.try_get("state")?;
        add_count(
            by_sweep.entry(r.try_get("sweep_id")?).or_default(),
            &state,
            r.try_get::<i64, _>("n")? as u64,
        );
    }
    let mut mean: HashMap<i64, f64> = HashMap::new();
    for r in &means {
        if let Some(ms) = r.try_get::<Option<f64>, _>("ms")? {
            mean.insert(r.try_get("sweep_id")?, ms);
        }
    }
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get("id")?;
            Ok(SweepSummary {
                id,
                name: r.try_get("name")?,
                state: r.try_get("state")?,
                priority: r.try_get("priority")?,
                created_at_ms: r.try_get("created_at")?,
                counts: by_sweep.get(&id).copied().unwrap_or_default(),
                mean_job_ms: mean.get(&id).copied(),
            })
        })
        .collect()
}

/// One sweep with all its runs, or `None`.
pub async fn sweep(db: &SqlitePool, name: &str) -> Result<Option<SweepDetail>, StoreError> {
    let Some(head) = sweep_head(db, name).await? else {
        return Ok(None);
    };
    let runs = sweep_runs(db, head.id, None).await?;
    Ok(Some(assemble(db, head, runs).await?))
}

/// `old` brought up to date by re-reading only the runs whose job changed at or after
/// `since.0` (ms, `jobs.updated_at`) or whose result was stored at or after `since.1`.
pub async fn sweep_refresh(
    db: &SqlitePool,
    name: &str,
    old: &SweepDetail,
    since: (i64, i64),
) -> Result<Option<SweepDetail>, StoreError> {
    let Some(head) = sweep_head(db, name).await? else {
        return Ok(None);
    };
    if head.id != old.summary.id {
        let runs = sweep_runs(db, head.id, None).await?;
        return Ok(Some(assemble(db, head, runs).await?));
    }
    let changed = sweep_runs(db, head.id, Some(since)).await?;
    let pos: HashMap<i64, usize> = old
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.job_id, i))
        .collect();
    let mut runs = old.runs.clone();
    for c in changed {
        match pos.get(&c.job_id) {
            Some(&i) => runs[i] = c,
            None => runs.push(c),
        }
    }
    Ok(Some(assemble(db, head, runs).await?))
}

/// The `sweeps` row of a sweep page.
struct SweepHead {
    id: i64,
    name: String,
    state: String,
    priority: i64,
    created_at: i64,
    spec_toml: String,
}

async fn sweep_head(db: &SqlitePool, name: &str) -> Result<Option<SweepHead>, StoreError> {
    let Some(s) = sqlx::query(
        "SELECT id, name, state, priority, created_at, spec_toml FROM sweeps WHERE name = ?1",
    )
    .bind(name)
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(SweepHead {
        id: s.try_get("id")?,
        name: s.try_get("name")?,
        state: s.try_get("state")?,
        priority: s.try_get("priority")?,
        created_at: s.try_get("created_at")?,
        spec_toml: s.try_get("spec_toml")?,
    }))
}

/// The sweep's runs; with `since`, only those changed since then (see [`sweep_refresh`]).
async fn sweep_runs(
    db: &SqlitePool,
    id: i64,
    since: Option<(i64, i64)>,
) -> Result<Vec<RunRow>, StoreError> {
    // One JSON document instead of one row per job: decoding 10,000 rows one by one through
    // the driver costs several times more. Plain concatenation, because the stored JSON
    // columns are valid JSON already and re-parsing them in SQLite (`json()`) is the slow part.
    let doc: String = sqlx::query_scalar(
        "SELECT '[' || COALESCE(group_concat(
                    '[' || id || ',' || seq || ',' || json_quote(state) || ',' || attempts || ',' ||
                    params_json || ',' || json_quote(last_error) || ',' || COALESCE(metrics_json, 'null') || ']',
                    ','), '') || ']'
         FROM (SELECT j.id, j.seq, j.state, j.attempts, j.params_json, j.last_error, r.metrics_json
               FROM jobs j LEFT JOIN results r ON r.job_id = j.id
               WHERE j.sweep_id = ?1
                 AND (?2 IS NULL OR j.updated_at >= ?2 OR r.finished_at >= ?3)
               ORDER BY j.seq)",
    )
    .bind(id)
    .bind(since.map(|s| s.0))
    .bind(since.map(|s| s.1))
    .fetch_one(db)
    .await?;
    let raw: Vec<RawRun> = serde_json::from_str(&doc)
        .map_err(|e| StoreError::Corrupt(format!("jobs of sweep {id}: {e}")))?;
    Ok(raw
        .into_iter()
        .map(
            |(job_id, seq, state, attempts, params, last_error, metrics)| RunRow {
                job_id,
                seq,
                state,
                attempts,
                params: params_from_map(params),
                metrics: metrics.map(metrics_from_map).unwrap_or_default(),
                last_error,
            },
        )
        .collect())
}

/// A sweep page's data from its row and runs: counts and the mean job time are derived here.
async fn assemble(
    db: &SqlitePool,
    head: SweepHead,
    mut runs: Vec<RunRow>,
) -> Result<SweepDetail, StoreError> {
    let mean: Option<f64> = sqlx::query_scalar(
        "SELECT AVG(a.ended_at - a.started_at) FROM jobs j JOIN attempts a ON a.job_id = j.id
         WHERE j.sweep_id = ?1 AND a.state = 'done' AND a.ended_at IS NOT NULL",
    )
    .bind(head.id)
    .fetch_one(db)
    .await?;
    runs.sort_by_key(|r| r.seq);
    let mut counts = JobCounts::default();
    for r in &runs {
        add_count(&mut counts, &r.state, 1);
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
pub async fn run(db: &SqlitePool, job: i64) -> Result<Option<RunDetail>, StoreError> {
    let Some(r) = sqlx::query(
        "SELECT j.id, j.seq, j.state, j.attempts, j.params_json, j.last_error, r.metrics_json, s.name AS sweep_name
         FROM jobs j JOIN sweeps s ON s.id = j.sweep_id LEFT JOIN results r ON r.job_id = j.id WHERE j.id = ?1",
    )
    .bind(job)
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    let attempts = sqlx::query(
        "SELECT a.id, a.number, w.name AS worker, a.state, a.started_at, a.ended_at, a.error
         FROM attempts a LEFT JOIN workers w ON w.id = a.worker_id WHERE a.job_id = ?1 ORDER BY a.number",
    )
    .bind(job)
    .fetch_all(db)
    .await?
    .iter()
    .map(|a| {
        Ok(AttemptInfo {
            id: a.try_get("id")?,
            number: a.try_get("number")?,
            worker: a.try_get("worker")?,
            state: a.try_get("state")?,
            started_at_ms: a.try_get("started_at")?,
            ended_at_ms: a.try_get("ended_at")?,
            error: a.try_get("error")?,
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some(RunDetail {
        sweep_name: r.try_get("sweep_name")?,
        run: run_from_row(&r)?,
        attempts,
    }))
}

/// Every metric point of a job.
pub async fn metrics(db: &SqlitePool, job: i64) -> Result<Vec<MetricPoint>, StoreError> {
    let rows =
        sqlx::query("SELECT attempt_id, step, epoch, name, value FROM metrics WHERE job_id = ?1")
            .bind(job)
            .fetch_all(db)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(MetricPoint {
                attempt_id: r.try_get("attempt_id")?,
                step: r.try_get("step")?,
                epoch: r.try_get("epoch")?,
                name: r.try_get("name")?,
                value: r.try_get("value")?,
            })
        })
        .collect()
}

/// Every snapshot of these jobs, decoded.
pub async fn snapshots(db: &SqlitePool, jobs: &[i64]) -> Result<Vec<Snapshot>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(jobs).unwrap_or_else(|_| "[]".into());
    // Through attempts: `snapshots` is indexed by (attempt_id, epoch), `attempts` by job.
    let rows = sqlx::query(
        "SELECT s.job_id, s.attempt_id, s.epoch, s.projected, s.points, s.labels, s.indices, s.class_names
         FROM attempts a JOIN snapshots s ON s.attempt_id = a.id
         WHERE a.job_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(ids)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            let names: String = r.try_get("class_names")?;
            let class_names: Vec<String> = serde_json::from_str(&names)
                .map_err(|e| StoreError::Corrupt(format!("snapshot class_names: {e}")))?;
            let d = SnapshotData::from_blobs(
                r.try_get("epoch")?,
                r.try_get::<i64, _>("projected")? != 0,
                &r.try_get::<Vec<u8>, _>("points")?,
                &r.try_get::<Vec<u8>, _>("labels")?,
                &r.try_get::<Vec<u8>, _>("indices")?,
                class_names,
            )?;
            Ok(Snapshot {
                job_id: r.try_get("job_id")?,
                attempt_id: r.try_get("attempt_id")?,
                epoch: d.epoch,
                projected: d.projected,
                points: d.points,
                labels: d.labels,
                indices: d.indices,
                class_names: d.class_names,
            })
        })
        .collect()
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
pub async fn workers(db: &SqlitePool) -> Result<Vec<WorkerInfo>, StoreError> {
    let running = sqlx::query(
        "SELECT a.worker_id, a.job_id, a.number, a.started_at, j.params_json, s.name AS sweep_name
         FROM attempts a JOIN jobs j ON j.id = a.job_id JOIN sweeps s ON s.id = j.sweep_id
         WHERE a.state = 'running' AND a.worker_id IS NOT NULL ORDER BY a.started_at",
    )
    .fetch_all(db)
    .await?;
    let mut current: HashMap<i64, Vec<CurrentJob>> = HashMap::new();
    for r in &running {
        let params: String = r.try_get("params_json")?;
        let label = serde_json::from_str::<proto::JobParams>(&params)
            .map(|p| p.short_label())
            .unwrap_or(params);
        current
            .entry(r.try_get("worker_id")?)
            .or_default()
            .push(CurrentJob {
                job_id: r.try_get("job_id")?,
                sweep_name: r.try_get("sweep_name")?,
                attempt_number: r.try_get("number")?,
                started_at_ms: r.try_get("started_at")?,
                label,
            });
    }
    let rows = sqlx::query(
        "SELECT id, name, host, backend, devices_json, version, registered_at, last_seen_at
         FROM workers ORDER BY last_seen_at DESC, id",
    )
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get("id")?;
            let devices: String = r.try_get("devices_json")?;
            let devices = match serde_json::from_str::<Value>(&devices) {
                Ok(Value::Array(a)) => a.iter().map(device_text).collect(),
                _ => vec![devices],
            };
            Ok(WorkerInfo {
                id,
                name: r.try_get("name")?,
                host: r.try_get("host")?,
                backend: r.try_get("backend")?,
                devices,
                version: r.try_get("version")?,
                registered_at_ms: r.try_get("registered_at")?,
                last_seen_at_ms: r.try_get("last_seen_at")?,
                current: current.remove(&id).unwrap_or_default(),
            })
        })
        .collect()
}

/// Changes whenever a job, metric, snapshot, sweep or worker row changes; each part is a max
/// over an index or a small table.
pub async fn change_token(db: &SqlitePool) -> Result<String, StoreError> {
    let t: String = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) || '.' || COALESCE(MAX(updated_at), 0) FROM sweeps) || ':' ||
                (SELECT COALESCE(MAX(updated_at), 0) FROM jobs) || ':' ||
                (SELECT COALESCE(MAX(rowid), 0) FROM metrics) || ':' ||
                (SELECT COALESCE(MAX(id), 0) FROM snapshots) || ':' ||
                (SELECT COALESCE(MAX(id), 0) FROM attempts) || ':' ||
                (SELECT COUNT(*) || '.' || COALESCE(MAX(last_seen_at), 0) FROM workers)",
    )
    .fetch_one(db)
    .await?;
    Ok(t)
}
