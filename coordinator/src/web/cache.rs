//! A small cache of loaded sweeps, validated on every request by a cheap token query, so that
//! the live view (which re-renders a sweep page on every change) does not re-read and re-parse
//! thousands of jobs when nothing in that sweep moved, and re-reads only the changed runs
//! when something did.

use std::sync::{Arc, Mutex};

use dashboard::SweepDetail;

use super::convert;
use crate::store::{Store, StoreError, SweepToken};

/// Sweeps kept; a dashboard rarely has more open at once.
const CAPACITY: usize = 8;

struct Entry {
    name: String,
    token: SweepToken,
    sweep: Arc<SweepDetail>,
}

#[derive(Default)]
pub(crate) struct SweepCache {
    /// Most recently used last.
    entries: Mutex<Vec<Entry>>,
}

impl SweepCache {
    /// The sweep: from the cache when its token still matches; refreshed from the runs that
    /// changed since the cached copy's token; else loaded in full.
    pub(crate) async fn get(
        &self,
        store: &Store,
        name: &str,
    ) -> Result<Option<Arc<SweepDetail>>, StoreError> {
        let Some(token) = store.sweep_token(name).await? else {
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
                convert::sweep_refresh(store, name, &old.sweep, since).await?
            }
            _ => convert::sweep(store, name).await?,
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
