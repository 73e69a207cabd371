//! Read-only queries behind the dashboard, the monitor and the exports, over [`Store::reader`].
//!
//! They return plain rows of this module; the coordinator's `web/` turns them into the
//! dashboard's types, so the dashboard never sees SQL and this module never sees a page. Job
//! counts by state come from one query, [`Store::status`].
//!
//! Every query is keyed by an indexed column (`jobs(sweep_id, …)` via `UNIQUE(sweep_id, key)`,
//! `results` by primary key, `attempts(job_id, number)`, `snapshots(attempt_id, epoch)`,
//! `metrics_by_job`), so a page's cost grows with what the page shows, not with the database.

use std::collections::HashMap;

use proto::{AttemptState, JobState, SnapshotProjection};
use serde_json::{Map, Value};
use sqlx::Row;

use super::{SnapshotData, Store, StoreError};

/// A job's row and final result; the stored JSON is parsed, its meaning left to the caller.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobRow {
    pub id: i64,
    /// Expansion order within the sweep.
    pub seq: i64,
    pub state: JobState,
    pub attempts: i64,
    pub params: Map<String, Value>,
    /// The result's metrics; `None` until the job has a result.
    pub metrics: Option<Map<String, Value>>,
    pub last_error: Option<String>,
}

/// One job as SQLite's `json_array` in [`Store::sweep_jobs`] builds it.
type RawJob = (
    i64,
    i64,
    JobState,
    i64,
    Map<String, Value>,
    Option<String>,
    Option<Map<String, Value>>,
);

/// The `sweeps` row of a sweep page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SweepHead {
    pub id: i64,
    pub name: String,
    pub state: String,
    pub priority: i64,
    pub created_at: i64,
    pub spec_toml: String,
}

/// A job with its sweep's name and every attempt.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobDetail {
    pub sweep_name: String,
    pub job: JobRow,
    pub attempts: Vec<AttemptRow>,
}

/// One attempt of a job, with the name of the worker it was leased to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttemptRow {
    pub id: i64,
    pub number: i64,
    pub worker: Option<String>,
    pub state: AttemptState,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub error: Option<String>,
}

/// One stored metric value of a job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredMetric {
    pub attempt_id: i64,
    pub step: i64,
    pub epoch: i64,
    pub name: String,
    pub value: f64,
}

/// One stored snapshot, decoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredSnapshot {
    pub job_id: i64,
    pub attempt_id: i64,
    pub data: SnapshotData,
}

/// A registered worker and its running attempts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkerRow {
    pub id: i64,
    pub name: String,
    pub host: String,
    pub backend: String,
    /// As the worker reported it (normally a JSON array).
    pub devices_json: String,
    pub version: String,
    pub registered_at: i64,
    pub last_seen_at: i64,
    /// Oldest first.
    pub running: Vec<RunningAttempt>,
}

/// An attempt a worker is running.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunningAttempt {
    pub job_id: i64,
    pub sweep_name: String,
    pub number: i64,
    pub started_at: i64,
    pub params_json: String,
}

/// What the sweep cache's token query sees of a sweep. Any change to what a sweep page shows
/// changes it: the sweep row, any job of the sweep (state, attempts, errors all bump
/// `updated_at`), any result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SweepToken {
    pub head: String,
    pub jobs: i64,
    /// Latest `jobs.updated_at` of the sweep (ms).
    pub job_mark: i64,
    pub attempts: i64,
    pub results: i64,
    /// Latest `results.finished_at` (ms).
    pub result_mark: i64,
}

fn parse_map(text: &str, what: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl Store {
    /// Mean wall time of the successful attempts per sweep (ms): of one sweep, or of all.
    pub(crate) async fn mean_job_ms(
        &self,
        sweep: Option<i64>,
    ) -> Result<HashMap<i64, f64>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.sweep_id, AVG(a.ended_at - a.started_at) AS ms
             FROM attempts a JOIN jobs j ON j.id = a.job_id
             WHERE a.state = 'done' AND a.ended_at IS NOT NULL
               AND (?1 IS NULL OR j.sweep_id = ?1)
             GROUP BY j.sweep_id",
        )
        .bind(sweep)
        .fetch_all(&self.reader)
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in &rows {
            if let Some(ms) = r.try_get::<Option<f64>, _>("ms")? {
                out.insert(r.try_get("sweep_id")?, ms);
            }
        }
        Ok(out)
    }

    /// The `sweeps` row of the sweep called `name`, or `None`.
    pub(crate) async fn sweep_head(&self, name: &str) -> Result<Option<SweepHead>, StoreError> {
        let Some(s) = sqlx::query(
            "SELECT id, name, state, priority, created_at, spec_toml FROM sweeps WHERE name = ?1",
        )
        .bind(name)
        .fetch_optional(&self.reader)
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

    /// The jobs of sweep `id` in expansion order; with `since` = (job mark, result mark) (ms),
    /// only those whose job changed or whose result was stored at or after the marks.
    pub(crate) async fn sweep_jobs(
        &self,
        id: i64,
        since: Option<(i64, i64)>,
    ) -> Result<Vec<JobRow>, StoreError> {
        // One JSON document instead of one row per job: decoding 10,000 rows one by one through
        // the driver costs several times more. Plain concatenation, because the stored JSON
        // columns are valid JSON already and re-parsing them in SQLite (`json()`) is the slow
        // part.
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
        .fetch_one(&self.reader)
        .await?;
        let raw: Vec<RawJob> = serde_json::from_str(&doc)
            .map_err(|e| StoreError::Corrupt(format!("jobs of sweep {id}: {e}")))?;
        Ok(raw
            .into_iter()
            .map(
                |(id, seq, state, attempts, params, last_error, metrics)| JobRow {
                    id,
                    seq,
                    state,
                    attempts,
                    params,
                    metrics,
                    last_error,
                },
            )
            .collect())
    }

    /// One job with its sweep's name and its attempts, or `None`.
    pub(crate) async fn job_detail(&self, job: i64) -> Result<Option<JobDetail>, StoreError> {
        let Some(r) = sqlx::query(
            "SELECT j.id, j.seq, j.state, j.attempts, j.params_json, j.last_error, r.metrics_json, s.name AS sweep_name
             FROM jobs j JOIN sweeps s ON s.id = j.sweep_id LEFT JOIN results r ON r.job_id = j.id WHERE j.id = ?1",
        )
        .bind(job)
        .fetch_optional(&self.reader)
        .await?
        else {
            return Ok(None);
        };
        let attempts = sqlx::query(
            "SELECT a.id, a.number, w.name AS worker, a.state, a.started_at, a.ended_at, a.error
             FROM attempts a LEFT JOIN workers w ON w.id = a.worker_id WHERE a.job_id = ?1 ORDER BY a.number",
        )
        .bind(job)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|a| {
            Ok(AttemptRow {
                id: a.try_get("id")?,
                number: a.try_get("number")?,
                worker: a.try_get("worker")?,
                state: a.try_get::<String, _>("state")?.parse()?,
                started_at: a.try_get("started_at")?,
                ended_at: a.try_get("ended_at")?,
                error: a.try_get("error")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let params: String = r.try_get("params_json")?;
        let metrics: Option<String> = r.try_get("metrics_json")?;
        Ok(Some(JobDetail {
            sweep_name: r.try_get("sweep_name")?,
            job: JobRow {
                id: r.try_get("id")?,
                seq: r.try_get("seq")?,
                state: r.try_get::<String, _>("state")?.parse()?,
                attempts: r.try_get("attempts")?,
                params: parse_map(&params, "params_json")?,
                metrics: metrics.map(|m| parse_map(&m, "metrics_json")).transpose()?,
                last_error: r.try_get("last_error")?,
            },
            attempts,
        }))
    }

    /// Every metric point of a job, in no particular order.
    pub(crate) async fn job_metrics(&self, job: i64) -> Result<Vec<StoredMetric>, StoreError> {
        let rows = sqlx::query(
            "SELECT attempt_id, step, epoch, name, value FROM metrics WHERE job_id = ?1",
        )
        .bind(job)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredMetric {
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
    pub(crate) async fn job_snapshots(
        &self,
        jobs: &[i64],
    ) -> Result<Vec<StoredSnapshot>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(jobs).unwrap_or_else(|_| "[]".into());
        // Through attempts: `snapshots` is indexed by (attempt_id, epoch), `attempts` by job.
        let rows = sqlx::query(
            "SELECT s.job_id, s.attempt_id, s.epoch, s.projected, s.projection, s.points, s.labels, s.indices, s.class_names
             FROM attempts a JOIN snapshots s ON s.attempt_id = a.id
             WHERE a.job_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(ids)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let names: String = r.try_get("class_names")?;
                let class_names: Vec<String> = serde_json::from_str(&names)
                    .map_err(|e| StoreError::Corrupt(format!("snapshot class_names: {e}")))?;
                // Migration 0005 fills the column; a NULL can only come from a row written by
                // an older binary after it, whose flag then meant PCA.
                let projection = match r.try_get::<Option<String>, _>("projection")? {
                    Some(name) => name
                        .parse::<SnapshotProjection>()
                        .map_err(|e| StoreError::Corrupt(format!("snapshot projection: {e}")))?,
                    None => {
                        SnapshotProjection::from_projected(r.try_get::<i64, _>("projected")? != 0)
                    }
                };
                Ok(StoredSnapshot {
                    job_id: r.try_get("job_id")?,
                    attempt_id: r.try_get("attempt_id")?,
                    data: SnapshotData::from_blobs(
                        r.try_get("epoch")?,
                        projection,
                        &r.try_get::<Vec<u8>, _>("points")?,
                        &r.try_get::<Vec<u8>, _>("labels")?,
                        &r.try_get::<Vec<u8>, _>("indices")?,
                        class_names,
                    )?,
                })
            })
            .collect()
    }

    /// Workers, most recently seen first, with their running attempts.
    pub(crate) async fn workers(&self) -> Result<Vec<WorkerRow>, StoreError> {
        let running = sqlx::query(
            "SELECT a.worker_id, a.job_id, a.number, a.started_at, j.params_json, s.name AS sweep_name
             FROM attempts a JOIN jobs j ON j.id = a.job_id JOIN sweeps s ON s.id = j.sweep_id
             WHERE a.state = 'running' AND a.worker_id IS NOT NULL ORDER BY a.started_at",
        )
        .fetch_all(&self.reader)
        .await?;
        let mut current: HashMap<i64, Vec<RunningAttempt>> = HashMap::new();
        for r in &running {
            current
                .entry(r.try_get("worker_id")?)
                .or_default()
                .push(RunningAttempt {
                    job_id: r.try_get("job_id")?,
                    sweep_name: r.try_get("sweep_name")?,
                    number: r.try_get("number")?,
                    started_at: r.try_get("started_at")?,
                    params_json: r.try_get("params_json")?,
                });
        }
        let rows = sqlx::query(
            "SELECT id, name, host, backend, devices_json, version, registered_at, last_seen_at
             FROM workers ORDER BY last_seen_at DESC, id",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                Ok(WorkerRow {
                    id,
                    name: r.try_get("name")?,
                    host: r.try_get("host")?,
                    backend: r.try_get("backend")?,
                    devices_json: r.try_get("devices_json")?,
                    version: r.try_get("version")?,
                    registered_at: r.try_get("registered_at")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                    running: current.remove(&id).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Changes whenever a job, metric, snapshot, sweep or worker row changes; each part is a max
    /// over an index or a small table.
    pub(crate) async fn change_token(&self) -> Result<String, StoreError> {
        let t: String = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) || '.' || COALESCE(MAX(updated_at), 0) FROM sweeps) || ':' ||
                    (SELECT COALESCE(MAX(updated_at), 0) FROM jobs) || ':' ||
                    (SELECT COALESCE(MAX(rowid), 0) FROM metrics) || ':' ||
                    (SELECT COALESCE(MAX(id), 0) FROM snapshots) || ':' ||
                    (SELECT COALESCE(MAX(id), 0) FROM attempts) || ':' ||
                    (SELECT COUNT(*) || '.' || COALESCE(MAX(last_seen_at), 0) FROM workers)",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(t)
    }

    /// The sweep's cache token, or `None` if there is no such sweep. Costs one index range scan
    /// over the sweep's jobs.
    pub(crate) async fn sweep_token(&self, name: &str) -> Result<Option<SweepToken>, StoreError> {
        let Some(r) = sqlx::query(
            "SELECT s.id || ':' || s.state || ':' || s.priority || ':' || s.updated_at AS head,
                    j.n AS jobs, j.mark AS job_mark, j.attempts, r.n AS results, r.mark AS result_mark
             FROM sweeps s,
                  (SELECT COUNT(*) AS n, COALESCE(MAX(updated_at), 0) AS mark,
                          CAST(TOTAL(attempts) AS INTEGER) AS attempts
                   FROM jobs WHERE sweep_id = (SELECT id FROM sweeps WHERE name = ?1)) j,
                  (SELECT COUNT(*) AS n, COALESCE(MAX(finished_at), 0) AS mark FROM results) r
             WHERE s.name = ?1",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(SweepToken {
            head: r.try_get("head")?,
            jobs: r.try_get("jobs")?,
            job_mark: r.try_get("job_mark")?,
            attempts: r.try_get("attempts")?,
            results: r.try_get("results")?,
            result_mark: r.try_get("result_mark")?,
        }))
    }
}
