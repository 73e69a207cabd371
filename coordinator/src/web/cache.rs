//! A small cache of loaded sweeps, validated on every request by a cheap token query, so that
//! the live view (which re-renders a sweep page on every change) does not re-read and re-parse
//! thousands of jobs when nothing in that sweep moved.

use std::sync::{Arc, Mutex};

use dashboard::SweepDetail;
use sqlx::SqlitePool;

use super::queries;
use crate::store::StoreError;

/// Sweeps kept; a dashboard rarely has more open at once.
const CAPACITY: usize = 8;

#[derive(Default)]
pub struct SweepCache {
    /// `(name, token, sweep)`, most recently used last.
    entries: Mutex<Vec<(String, String, Arc<SweepDetail>)>>,
}

/// Changes whenever anything a [`SweepDetail`] shows may have changed: the sweep row, any job
/// of the sweep (state, attempts, errors all bump `updated_at`), any result. `None` if there is
/// no such sweep. Costs one index range scan over the sweep's jobs.
pub async fn sweep_token(db: &SqlitePool, name: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT s.id || ':' || s.state || ':' || s.priority || ':' || s.updated_at || ':' ||
                (SELECT COUNT(*) || '.' || COALESCE(MAX(updated_at), 0) || '.' || TOTAL(attempts)
                 FROM jobs WHERE sweep_id = s.id) || ':' ||
                (SELECT COUNT(*) || '.' || COALESCE(MAX(finished_at), 0) FROM results)
         FROM sweeps s WHERE s.name = ?1",
    )
    .bind(name)
    .fetch_optional(db)
    .await?)
}

impl SweepCache {
    /// The sweep, from the cache when its token still matches, else loaded and cached.
    pub async fn get(
        &self,
        db: &SqlitePool,
        name: &str,
    ) -> Result<Option<Arc<SweepDetail>>, StoreError> {
        let Some(token) = sweep_token(db, name).await? else {
            return Ok(None);
        };
        {
            let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = e.iter().position(|(n, t, _)| n == name && *t == token) {
                let hit = e.remove(i);
                let d = hit.2.clone();
                e.push(hit);
                return Ok(Some(d));
            }
        }
        let Some(d) = queries::sweep(db, name).await? else {
            return Ok(None);
        };
        let d = Arc::new(d);
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|(n, _, _)| n != name);
        if e.len() >= CAPACITY {
            e.remove(0);
        }
        // The token was read before the data: a change in between only causes one extra reload.
        e.push((name.to_owned(), token, d.clone()));
        Ok(Some(d))
    }
}
