//! Operator actions on the queue: cancel a job or a sweep, pause and resume a sweep, retry
//! failed jobs, change a sweep's priority. Workers learn of cancellations through their next
//! heartbeat (the `Lease` reply lists attempts to stop).

use proto::{JobId, SweepId};

use super::{Store, StoreError, now_ms};
use crate::sched::DEFAULT_MAX_ATTEMPTS;

impl Store {
    /// The id of a sweep by name.
    pub async fn sweep_id(&self, name: &str) -> Result<SweepId, StoreError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM sweeps WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        id.map(SweepId)
            .ok_or_else(|| StoreError::NotFound(format!("sweep `{name}`")))
    }

    /// Cancels a queued or running job (its running attempt is told to stop). Returns whether
    /// it changed anything; finished jobs are left alone.
    pub async fn cancel_job(&self, job: JobId) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = ?1")
            .bind(job.0)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("job {job}")));
        }
        let changed = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', updated_at = ?2
             WHERE id = ?1 AND state IN ('queued', 'running')",
        )
        .bind(job.0)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE attempts SET state = 'cancelled', ended_at = ?2 WHERE job_id = ?1 AND state = 'running'",
        )
        .bind(job.0)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    /// Cancels every queued or running job of a sweep; returns how many.
    pub async fn cancel_sweep(&self, sweep: SweepId) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE attempts SET state = 'cancelled', ended_at = ?2
             WHERE state = 'running' AND job_id IN (SELECT id FROM jobs WHERE sweep_id = ?1)",
        )
        .bind(sweep.0)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', updated_at = ?2
             WHERE sweep_id = ?1 AND state IN ('queued', 'running')",
        )
        .bind(sweep.0)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Stops leasing the sweep's jobs; running ones finish.
    pub async fn pause_sweep(&self, sweep: SweepId) -> Result<(), StoreError> {
        self.set_sweep_state(sweep, "paused").await
    }

    /// Leases the sweep's jobs again.
    pub async fn resume_sweep(&self, sweep: SweepId) -> Result<(), StoreError> {
        self.set_sweep_state(sweep, "active").await
    }

    async fn set_sweep_state(&self, sweep: SweepId, state: &str) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE sweeps SET state = ?2, updated_at = ?3 WHERE id = ?1")
            .bind(sweep.0)
            .bind(state)
            .bind(now_ms());
        self.update_one_sweep(sweep, q).await
    }

    /// Runs an `UPDATE sweeps … WHERE id = ?1`; a sweep that does not exist is `NotFound`.
    async fn update_one_sweep<'q>(
        &self,
        sweep: SweepId,
        q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> Result<(), StoreError> {
        if q.execute(&self.writer).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("sweep {sweep}")));
        }
        Ok(())
    }

    /// Re-queues failed jobs (of one sweep, or all), granting each
    /// `DEFAULT_MAX_ATTEMPTS` more attempts; their `last_error` stays until they run again.
    /// Returns how many.
    pub async fn retry_failed(&self, sweep: Option<SweepId>) -> Result<u64, StoreError> {
        let n = sqlx::query(
            "UPDATE jobs SET state = 'queued', updated_at = ?2,
                 max_attempts = ?3 + (SELECT COUNT(*) FROM attempts a
                                      WHERE a.job_id = jobs.id AND a.state IN ('failed', 'expired'))
             WHERE state = 'failed' AND (?1 IS NULL OR sweep_id = ?1)",
        )
        .bind(sweep.map(|s| s.0))
        .bind(now_ms())
        .bind(i64::from(DEFAULT_MAX_ATTEMPTS))
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Changes a sweep's priority (higher runs first; ties in submission order).
    pub async fn set_priority(&self, sweep: SweepId, priority: i64) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE sweeps SET priority = ?2, updated_at = ?3 WHERE id = ?1")
            .bind(sweep.0)
            .bind(priority)
            .bind(now_ms());
        self.update_one_sweep(sweep, q).await
    }
}
