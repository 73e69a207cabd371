//! What auto-allocation (`crate::slurm`) reads about the queue and the workers: leasable jobs,
//! and each recently seen worker with whether it runs an attempt.

use super::{Store, StoreError};

/// A worker seen recently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenWorker {
    pub name: String,
    /// It runs at least one attempt.
    pub busy: bool,
}

impl Store {
    /// Queued jobs of active (not paused) sweeps: those a worker would lease now.
    pub async fn leasable_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs j JOIN sweeps s ON s.id = j.sweep_id
             WHERE j.state = 'queued' AND s.state = 'active'",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Workers seen at or after `since_ms` (a worker polls or heartbeats every few seconds), by
    /// name; a name registered twice (a restarted worker) is busy if either row is.
    pub async fn seen_workers(&self, since_ms: i64) -> Result<Vec<SeenWorker>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT w.name, MAX(EXISTS (SELECT 1 FROM attempts a
                                        WHERE a.worker_id = w.id AND a.state = 'running'))
             FROM workers w WHERE w.last_seen_at >= ?1 GROUP BY w.name ORDER BY w.name",
        )
        .bind(since_ms)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, busy)| SeenWorker {
                name,
                busy: busy != 0,
            })
            .collect())
    }
}
