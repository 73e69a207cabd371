//! Lease and attempt queries: registering workers, leasing queued jobs, renewing and expiring
//! leases, ending attempts. The decisions come from [`crate::sched`]; this module reads the
//! rows those functions need and applies their answers in short write transactions. The hot
//! calls (`Lease` heartbeats and attempt ends) go through group commit (`group.rs`).

use std::collections::BTreeMap;

use proto::{AttemptId, JobId, LeaseToken, WorkerId};
use sqlx::{Row, SqliteConnection};

pub use super::attempt::{ArtifactInfo, Ended, LeasedJob};
use super::attempt::{end_in, token_from_row};
use super::batch::{self, EndCall, LeaseCall};
use super::{Store, StoreError, now_ms};
use crate::sched::{AttemptEnd, AttemptView, JobNext};

/// A worker announcing itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorker {
    pub name: String,
    pub host: String,
    pub backend: String,
    pub devices_json: String,
    pub version: String,
}

/// An attempt whose lease ran out, and what happened to its job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expired {
    pub attempt: AttemptId,
    pub job: JobId,
    pub next: JobNext,
}

fn ids_json(ids: &[AttemptId]) -> String {
    serde_json::to_string(&ids.iter().map(|a| a.0).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

fn artifact_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ArtifactInfo, sqlx::Error> {
    Ok(ArtifactInfo {
        id: r.try_get("id")?,
        job: JobId(r.try_get("job_id")?),
        attempt: AttemptId(r.try_get("attempt_id")?),
        epoch: r.try_get("epoch")?,
        path: r.try_get("path")?,
        size: r.try_get("size")?,
        sha256: r.try_get("sha256")?,
    })
}

const ARTIFACT_COLUMNS: &str = "id, job_id, attempt_id, epoch, path, size, sha256";

impl Store {
    /// Adds a worker; returns its id.
    pub async fn register_worker(&self, w: &NewWorker) -> Result<WorkerId, StoreError> {
        let now = now_ms();
        // An explicit transaction: in autocommit, `INSERT … RETURNING` commits only when the
        // statement is stepped past its last row, which `fetch_one` never does; a failed
        // commit (disk full) then vanished and the worker got an id that was never stored.
        let _timer = crate::obs::db_write(crate::obs::DbWrite::Register);
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO workers (name, host, backend, devices_json, version, registered_at, last_seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING id",
        )
        .bind(&w.name)
        .bind(&w.host)
        .bind(&w.backend)
        .bind(&w.devices_json)
        .bind(&w.version)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(WorkerId(id))
    }

    /// The heartbeat: marks the worker seen and renews the leases of its `running` attempts
    /// until `expires_at`. Returns the listed attempts it must stop (ended, someone else's or
    /// unknown). `NotFound` when the worker is not registered (e.g. a fresh database).
    ///
    /// `running` must be complete: a worker makes one `Lease` call at a time, so an attempt
    /// leased to it earlier that it does not list is one whose lease reply it never received
    /// (the call was abandoned or the connection dropped). Such orphans are released at once
    /// (not counted as failures) instead of blocking their job for a whole TTL.
    ///
    /// In the same write transaction, leases up to `free` queued jobs as `Store::lease_jobs`
    /// does: a `Lease` call that finds work at once costs one commit instead of two. That
    /// transaction is shared with the concurrent calls of other workers (group commit); the
    /// reply comes after COMMIT.
    pub async fn heartbeat_and_lease(
        &self,
        worker: WorkerId,
        running: &[AttemptId],
        free: usize,
        expires_at: i64,
    ) -> Result<(Vec<AttemptId>, Vec<LeasedJob>), StoreError> {
        let call = LeaseCall {
            worker,
            running: running.to_vec(),
            free,
            expires_at,
        };
        let (stop, mut leased) = self.group.lease(call).await?;
        self.attach_checkpoints(&mut leased).await?;
        Ok((stop, leased))
    }

    /// Read-only part of [`Store::heartbeat_and_lease`]: which of `running` must stop.
    pub(crate) async fn stopped_attempts(
        &self,
        worker: WorkerId,
        running: &[AttemptId],
    ) -> Result<Vec<AttemptId>, StoreError> {
        if running.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.reader.acquire().await?;
        Ok(stopped_in(&mut conn, worker, &ids_json(running)).await?)
    }

    /// Whether any attempt is running (at startup: left over from a previous coordinator).
    pub(crate) async fn has_running_attempts(&self) -> Result<bool, StoreError> {
        let any: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM attempts WHERE state = 'running' LIMIT 1")
                .fetch_optional(&self.reader)
                .await?;
        Ok(any.is_some())
    }

    /// Whether any job could be leased now (cheap check for long-polls).
    pub(crate) async fn has_queued(&self) -> Result<bool, StoreError> {
        let any: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM jobs j JOIN sweeps s ON s.id = j.sweep_id
             WHERE j.state = 'queued' AND s.state = 'active' LIMIT 1",
        )
        .fetch_optional(&self.reader)
        .await?;
        Ok(any.is_some())
    }

    /// Leases up to `n` queued jobs to `worker` in queue order (see [`crate::sched::order`]), each as a
    /// new attempt whose lease runs until `expires_at`.
    pub async fn lease_jobs(
        &self,
        worker: WorkerId,
        n: usize,
        expires_at: i64,
    ) -> Result<Vec<LeasedJob>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut leased = batch::pick(&mut tx, &[(worker, n, expires_at)])
            .await?
            .pop()
            .unwrap_or_default();
        tx.commit().await?;
        self.attach_checkpoints(&mut leased).await?;
        Ok(leased)
    }

    /// The checkpoint each newly leased job resumes from, if any.
    async fn attach_checkpoints(&self, leased: &mut [LeasedJob]) -> Result<(), StoreError> {
        // A first attempt cannot have left a checkpoint behind.
        for l in leased.iter_mut().filter(|l| l.number > 1) {
            l.resume = self.latest_checkpoint(l.job).await?;
        }
        Ok(())
    }

    /// The attempt as fencing sees it.
    pub(crate) async fn attempt_view(
        &self,
        attempt: AttemptId,
    ) -> Result<Option<AttemptView>, StoreError> {
        let row =
            sqlx::query("SELECT id, job_id, worker_id, token, state FROM attempts WHERE id = ?1")
                .bind(attempt.0)
                .fetch_optional(&self.reader)
                .await?;
        row.map(|r| -> Result<AttemptView, StoreError> {
            Ok(AttemptView {
                id: r.try_get("id")?,
                job: r.try_get("job_id")?,
                worker: r.try_get("worker_id")?,
                token: r.try_get::<Option<i64>, _>("token")?.map(token_from_row),
                state: r.try_get::<String, _>("state")?.parse()?,
            })
        })
        .transpose()
    }

    /// Ends a running attempt held by `worker` under the lease `token` (see
    /// `crate::sched::fencing::check`) and moves its job on as `crate::sched::after_attempt`
    /// decides. A repeat of an end that already happened reports [`Ended::Repeat`].
    pub async fn end_attempt(
        &self,
        attempt: AttemptId,
        token: Option<LeaseToken>,
        worker: WorkerId,
        end: &AttemptEnd,
    ) -> Result<Ended, StoreError> {
        self.end_attempt_with(attempt, token, worker, end, None)
            .await
    }

    /// [`Store::end_attempt`], also storing the job's final `result` in the same transaction
    /// when the end is applied (a repeated or fenced request stores nothing). Goes through
    /// group commit like [`Store::heartbeat_and_lease`].
    pub async fn end_attempt_with(
        &self,
        attempt: AttemptId,
        token: Option<LeaseToken>,
        worker: WorkerId,
        end: &AttemptEnd,
        result: Option<&BTreeMap<String, f64>>,
    ) -> Result<Ended, StoreError> {
        let result_json = result
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let call = EndCall {
            attempt,
            worker,
            token,
            end: end.clone(),
            result_json,
        };
        self.group.end(call).await
    }

    /// Expires every running attempt whose lease ran out before `now`; their jobs go back to the
    /// queue as new attempts later, or fail when out of attempts.
    pub(crate) async fn expire_leases(&self, now: i64) -> Result<Vec<Expired>, StoreError> {
        // Cheap read first: the reaper runs several times a second and usually finds nothing.
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM attempts WHERE state = 'running' AND lease_expires_at < ?1 LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.reader)
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let _timer = crate::obs::db_write(crate::obs::DbWrite::ExpireLeases);
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "SELECT id, job_id, worker_id FROM attempts WHERE state = 'running' AND lease_expires_at < ?1",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let attempt = AttemptId(r.try_get("id")?);
            let job = JobId(r.try_get("job_id")?);
            let end = AttemptEnd::Expired {
                worker: r.try_get("worker_id")?,
            };
            let (next, _) = end_in(&mut tx, attempt, job, &end).await?;
            out.push(Expired { attempt, job, next });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The newest checkpoint of a job, from any attempt.
    pub(crate) async fn latest_checkpoint(
        &self,
        job: JobId,
    ) -> Result<Option<ArtifactInfo>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE job_id = ?1 AND kind = 'checkpoint'
             ORDER BY epoch DESC, id DESC LIMIT 1"
        ))
        .bind(job.0)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.as_ref().map(artifact_from_row).transpose()?)
    }

    /// One artifact by id.
    pub async fn artifact(&self, id: i64) -> Result<Option<ArtifactInfo>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.as_ref().map(artifact_from_row).transpose()?)
    }

    /// The artifact an attempt stored for an epoch with this content, if any (uploads are
    /// idempotent: a resent upload finds the first one). Reads through the writer so that an
    /// artifact recorded a moment ago is seen.
    pub(crate) async fn find_artifact(
        &self,
        attempt: AttemptId,
        epoch: i64,
        sha256: &str,
    ) -> Result<Option<ArtifactInfo>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE attempt_id = ?1 AND epoch = ?2 AND sha256 = ?3
             ORDER BY id LIMIT 1"
        ))
        .bind(attempt.0)
        .bind(epoch)
        .bind(sha256)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.as_ref().map(artifact_from_row).transpose()?)
    }
}

async fn stopped_in(
    conn: &mut SqliteConnection,
    worker: WorkerId,
    ids_json: &str,
) -> Result<Vec<AttemptId>, sqlx::Error> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT value FROM json_each(?2)
         WHERE value NOT IN (SELECT id FROM attempts WHERE worker_id = ?1 AND state = 'running')",
    )
    .bind(worker.0)
    .bind(ids_json)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ids.into_iter().map(AttemptId).collect())
}
