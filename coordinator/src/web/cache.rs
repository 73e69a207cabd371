//! A small cache of loaded sweeps, validated on every request by a cheap token query, so that
//! the live view (which re-renders a sweep page on every change) does not re-read and re-parse
//! thousands of jobs when nothing in that sweep moved, and re-reads only the changed runs
//! when something did.

use std::sync::{Arc, Mutex};

use dashboard::SweepDetail;
use sqlx::{Row, SqlitePool};

use super::queries;
use crate::store::StoreError;

/// Sweeps kept; a dashboard rarely has more open at once.
const CAPACITY: usize = 8;

/// What the token query sees of a sweep. Any change to what a [`SweepDetail`] shows changes
/// it: the sweep row, any job of the sweep (state, attempts, errors all bump `updated_at`),
/// any result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepToken {
    head: String,
    jobs: i64,
    job_mark: i64,
    attempts: i64,
    results: i64,
    result_mark: i64,
}

struct Entry {
    name: String,
    token: SweepToken,
    sweep: Arc<SweepDetail>,
}

#[derive(Default)]
pub struct SweepCache {
    /// Most recently used last.
    entries: Mutex<Vec<Entry>>,
}

/// The sweep's token, or `None` if there is no such sweep. Costs one index range scan over
/// the sweep's jobs.
pub async fn sweep_token(db: &SqlitePool, name: &str) -> Result<Option<SweepToken>, StoreError> {
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
    .fetch_optional(db)
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

impl SweepCache {
    /// The sweep: from the cache when its token still matches; refreshed from the runs that
    /// changed since the cached copy's token; else loaded in full.
    pub async fn get(
        &self,
        db: &SqlitePool,
        name: &str,
    ) -> Result<Option<Arc<SweepDetail>>, StoreError> {
        let Some(token) = sweep_token(db, name).await? else {
            return Ok(None);
        };
        let stale = {
            let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match e.iter().position(|x| x.name == name) {
                Some(i) if e[i].token == token => {
                    let hit = e.remove(i);
                    let d = hit.sweep.clone();
                    e.push(hit);
                    return Ok(Some(d));
                }
                Some(i) => Some(e.remove(i)),
                None => None,
            }
        };
        // The marks of the old token were read before the old data, so every change the old
        // copy may have missed is at or after them. Removed jobs (never done today) would
        // need a full load, hence the count check.
        let fresh = match stale {
            Some(old) if old.token.jobs <= token.jobs => {
                let since = (old.token.job_mark, old.token.result_mark);
                queries::sweep_refresh(db, name, &old.sweep, since).await?
            }
            _ => queries::sweep(db, name).await?,
        };
        let Some(d) = fresh else {
            return Ok(None);
        };
        let d = Arc::new(d);
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|x| x.name != name);
        if e.len() >= CAPACITY {
            e.remove(0);
        }
        // The token was read before the data: a change in between only causes one extra
        // refresh.
        e.push(Entry {
            name: name.to_owned(),
            token,
            sweep: d.clone(),
        });
        Ok(Some(d))
    }
}
