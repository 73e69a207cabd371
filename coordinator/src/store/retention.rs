//! The SQL of retention: which checkpoint rows, snapshots and worker rows a policy removes, and
//! removing them. Files are the caller's (`crate::retention`): rows go first, in one
//! transaction, and the files they named are deleted after COMMIT, so a crash in between leaves
//! only unreferenced files, which `gc` finds. Nothing here reads or writes `results`,
//! `metrics` or `metric_batches`.

use proto::JobId;
use serde_json::json;
use sqlx::{Row, SqliteConnection};

use super::{Store, StoreError};

/// A stored checkpoint that a policy removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub id: i64,
    pub job: JobId,
    /// Relative to the artifact directory.
    pub path: String,
    pub size: i64,
}

/// What [`Store::gc_plan`] would remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    pub checkpoints: Vec<CheckpointRow>,
    /// Snapshot ids and their blob bytes.
    pub snapshots: Vec<(i64, i64)>,
    /// Worker ids not seen since the cutoff and running nothing.
    pub workers: Vec<i64>,
}

/// The rules a `gc` run applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcRules {
    /// Keep the final checkpoint of a done job (else none).
    pub keep_final_checkpoint: bool,
    /// Snapshots of jobs that finished before this time keep only their last epoch; `None`:
    /// keep every epoch.
    pub thin_snapshots_before_ms: Option<i64>,
    /// Workers last seen before this time, running nothing, are forgotten.
    pub workers_seen_before_ms: i64,
}

fn checkpoint_rows(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<CheckpointRow>, StoreError> {
    rows.iter()
        .map(|r| {
            Ok(CheckpointRow {
                id: r.try_get("id")?,
                job: JobId(r.try_get("job_id")?),
                path: r.try_get("path")?,
                size: r.try_get("size")?,
            })
        })
        .collect()
}

/// Removes the rows of `ids` from `artifacts` (the caller deletes their files).
async fn delete_artifacts(conn: &mut SqliteConnection, ids: &[i64]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM artifacts WHERE id IN (SELECT value FROM json_each(?1))")
        .bind(json!(ids).to_string())
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// Keeps only the newest checkpoint of `job` (highest epoch, then latest stored): the older
    /// ones can no longer be resumed from, since resuming takes the newest. Uploads of one
    /// attempt run concurrently and may land out of epoch order, so the one kept is decided
    /// here, not by which upload called: two calls never remove each other's newest. Returns
    /// the rows removed.
    pub async fn keep_newest_checkpoint(
        &self,
        job: JobId,
    ) -> Result<Vec<CheckpointRow>, StoreError> {
        self.remove_checkpoints(
            job,
            "SELECT id, job_id, path, size FROM artifacts
             WHERE job_id = ?1 AND kind = 'checkpoint' AND id != (
                 SELECT id FROM artifacts WHERE job_id = ?1 AND kind = 'checkpoint'
                 ORDER BY epoch DESC, id DESC LIMIT 1)",
        )
        .await
    }

    /// Removes every checkpoint of `job` if it is done (`--keep-checkpoints none`); a job that
    /// is not done (retried, say) keeps them. Returns the rows removed.
    pub async fn drop_done_job_checkpoints(
        &self,
        job: JobId,
    ) -> Result<Vec<CheckpointRow>, StoreError> {
        self.remove_checkpoints(
            job,
            "SELECT a.id, a.job_id, a.path, a.size FROM artifacts a JOIN jobs j ON j.id = a.job_id
             WHERE a.job_id = ?1 AND a.kind = 'checkpoint' AND j.state = 'done'",
        )
        .await
    }

    /// Removes the checkpoint rows of `job` that `select` (bound to the job as `?1`) names,
    /// deciding and deleting in one write transaction. Returns the rows removed.
    async fn remove_checkpoints(
        &self,
        job: JobId,
        select: &'static str,
    ) -> Result<Vec<CheckpointRow>, StoreError> {
        let _timer = crate::obs::db_write(crate::obs::DbWrite::Retention);
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(select).bind(job.0).fetch_all(&mut *tx).await?;
        let removed = checkpoint_rows(&rows)?;
        let ids: Vec<i64> = removed.iter().map(|r| r.id).collect();
        if !ids.is_empty() {
            delete_artifacts(&mut tx, &ids).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// What `rules` would remove from the database as it is now.
    pub async fn gc_plan(&self, rules: &GcRules) -> Result<GcPlan, StoreError> {
        let mut conn = self.reader.acquire().await?;
        gc_plan_in(&mut conn, rules).await
    }

    /// Applies `rules`: decides and deletes in one write transaction (so a job that finished
    /// meanwhile is judged as it is at COMMIT). Returns what was removed.
    pub async fn gc_apply(&self, rules: &GcRules) -> Result<GcPlan, StoreError> {
        let _timer = crate::obs::db_write(crate::obs::DbWrite::Retention);
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let plan = gc_plan_in(&mut tx, rules).await?;
        let ids: Vec<i64> = plan.checkpoints.iter().map(|c| c.id).collect();
        if !ids.is_empty() {
            delete_artifacts(&mut tx, &ids).await?;
        }
        if !plan.snapshots.is_empty() {
            let ids: Vec<i64> = plan.snapshots.iter().map(|s| s.0).collect();
            sqlx::query("DELETE FROM snapshots WHERE id IN (SELECT value FROM json_each(?1))")
                .bind(json!(ids).to_string())
                .execute(&mut *tx)
                .await?;
        }
        if !plan.workers.is_empty() {
            let ids = json!(plan.workers).to_string();
            // Ended attempts keep their history but no longer name the forgotten worker.
            sqlx::query(
                "UPDATE attempts SET worker_id = NULL
                 WHERE worker_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM workers WHERE id IN (SELECT value FROM json_each(?1))")
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(plan)
    }

    /// Paths (relative to the artifact directory) of every recorded artifact.
    pub async fn artifact_paths(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT path FROM artifacts")
            .fetch_all(&self.reader)
            .await?)
    }
}

async fn gc_plan_in(conn: &mut SqliteConnection, rules: &GcRules) -> Result<GcPlan, StoreError> {
    // Every checkpoint but its job's newest; and the newest too for a done job when no final
    // checkpoint is kept.
    let rows = sqlx::query(
        "SELECT a.id, a.job_id, a.path, a.size FROM artifacts a JOIN jobs j ON j.id = a.job_id
         WHERE a.kind = 'checkpoint' AND (
             (j.state = 'done' AND ?1 = 0)
             OR a.id != (SELECT b.id FROM artifacts b
                         WHERE b.job_id = a.job_id AND b.kind = 'checkpoint'
                         ORDER BY b.epoch DESC, b.id DESC LIMIT 1))
         ORDER BY a.id",
    )
    .bind(rules.keep_final_checkpoint)
    .fetch_all(&mut *conn)
    .await?;
    let checkpoints = checkpoint_rows(&rows)?;
    // A snapshot is superseded when a later attempt of its job stored the same epoch (a re-run
    // after a restart from an older checkpoint); the dashboard shows the later one. Old done
    // jobs keep only their last epoch when thinning is asked for.
    let rows = sqlx::query(
        "SELECT s.id, length(s.points) + length(s.labels) + length(s.indices) AS bytes
         FROM snapshots s
         WHERE EXISTS (SELECT 1 FROM snapshots t
                       WHERE t.job_id = s.job_id AND t.epoch = s.epoch AND t.attempt_id > s.attempt_id)
            OR (?1 IS NOT NULL
                AND EXISTS (SELECT 1 FROM results r JOIN jobs j ON j.id = r.job_id
                            WHERE r.job_id = s.job_id AND j.state = 'done' AND r.finished_at < ?1)
                AND s.epoch < (SELECT MAX(t.epoch) FROM snapshots t WHERE t.job_id = s.job_id))
         ORDER BY s.id",
    )
    .bind(rules.thin_snapshots_before_ms)
    .fetch_all(&mut *conn)
    .await?;
    let snapshots = rows
        .iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("bytes")?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let workers = sqlx::query_scalar(
        "SELECT w.id FROM workers w WHERE w.last_seen_at < ?1
           AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.worker_id = w.id AND a.state = 'running')
         ORDER BY w.id",
    )
    .bind(rules.workers_seen_before_ms)
    .fetch_all(&mut *conn)
    .await?;
    Ok(GcPlan {
        checkpoints,
        snapshots,
        workers,
    })
}
