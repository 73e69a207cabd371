//! Read-only tallies for `/metrics`: the job counts come from [`Store::status`]; this module
//! adds the workers heard from lately, by backend.

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// Workers seen (registered or heartbeating) at or after `since_ms`, counted by backend.
    pub async fn workers_seen_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT backend, COUNT(*) AS n FROM workers WHERE last_seen_at >= ?1
             GROUP BY backend ORDER BY backend",
        )
        .bind(since_ms)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n")?;
                Ok((r.try_get("backend")?, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}
