//! Dashboard actions carried out on the store: the same operations as the `coordinator cancel |
//! pause | resume | retry | priority` commands.

use dashboard::Action;
use proto::JobId;

use crate::store::{Store, StoreError};

/// Carries out `action`: what it did, or `None` when its sweep or job does not exist.
pub(crate) async fn act(store: &Store, action: Action) -> Result<Option<String>, StoreError> {
    let sweep = |name: String| async move {
        match store.sweep_id(&name).await {
            Ok(id) => Ok(Some((id, name))),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let done = match action {
        Action::PauseSweep(name) => match sweep(name).await? {
            Some((id, name)) => {
                store.pause_sweep(id).await?;
                format!("sweep `{name}` paused")
            }
            None => return Ok(None),
        },
        Action::ResumeSweep(name) => match sweep(name).await? {
            Some((id, name)) => {
                store.resume_sweep(id).await?;
                format!("sweep `{name}` resumed")
            }
            None => return Ok(None),
        },
        Action::RetrySweep(name) => match sweep(name).await? {
            Some((id, name)) => {
                let n = store.retry_failed(Some(id)).await?;
                format!("sweep `{name}`: {n} failed job(s) queued again")
            }
            None => return Ok(None),
        },
        Action::CancelSweep(name) => match sweep(name).await? {
            Some((id, name)) => {
                let n = store.cancel_sweep(id).await?;
                format!("sweep `{name}`: {n} job(s) cancelled")
            }
            None => return Ok(None),
        },
        Action::SetPriority(name, p) => match sweep(name).await? {
            Some((id, name)) => {
                store.set_priority(id, p).await?;
                format!("sweep `{name}`: priority {p}")
            }
            None => return Ok(None),
        },
        Action::CancelJob(job) => match store.cancel_job(JobId(job)).await {
            Ok(true) => format!("job {job} cancelled"),
            Ok(false) => format!("job {job} had already finished"),
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    Ok(Some(done))
}
