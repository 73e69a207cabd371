//! The network side of one attempt: drains training events into the [`Outbox`], keeps a report
//! stream open (reopening it with backoff while the coordinator is away), resends what was not
//! acknowledged, and uploads checkpoints as they appear.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use proto::rpc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::{Code, Status, Streaming};

use super::client::{self, Backoff};
use super::ctx::Ctx;
use super::outbox::Outbox;
use crate::train::TrainEvent;

/// Report items in flight on one stream before waiting for acknowledgements.
const IN_FLIGHT: usize = 64;
/// Tries of one checkpoint upload.
const UPLOAD_TRIES: u32 = 8;

/// How reporting ended.
#[derive(Debug)]
pub(crate) enum Reported {
    /// Training finished and every item was acknowledged. `last_checkpoint` is the newest
    /// uploaded checkpoint: its path as training named it, and its artifact id.
    Drained {
        last_checkpoint: Option<(PathBuf, i64)>,
    },
    /// The coordinator no longer accepts reports for this attempt.
    Fenced(String),
    /// The coordinator rejected the reports themselves (token, version, a malformed or
    /// oversized item): resending them cannot succeed.
    Refused(String),
}

type Opening = Pin<
    Box<dyn Future<Output = Result<tonic::Response<Streaming<rpc::ReportAck>>, Status>> + Send>,
>;

fn fenced(s: &Status) -> bool {
    s.code() == Code::FailedPrecondition
}

/// An error no retry can fix (the stream is reopened only for transient ones).
fn refused(s: &Status) -> Option<Reported> {
    (!client::is_transient(s))
        .then(|| Reported::Refused(format!("{:?}: {}", s.code(), s.message())))
}

/// Reports until training ends (the event channel closes) and the outbox is empty.
pub(crate) async fn run(
    ctx: &Arc<Ctx>,
    mut outbox: Outbox,
    mut events: mpsc::Receiver<TrainEvent>,
) -> Reported {
    let attempt = outbox_attempt(&outbox);
    let lease_token = outbox.lease_token();
    let mut events_open = true;
    let mut uploads: JoinSet<(u32, PathBuf, Option<i64>)> = JoinSet::new();
    let mut last_checkpoint = None;
    let mut backoff = Backoff::new(Duration::from_millis(100), ctx.cfg.max_backoff);
    let mut flush_tick = tokio::time::interval(Duration::from_millis(200));
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut retry_at = Some(Instant::now());
    let mut tx: Option<mpsc::Sender<rpc::ReportRequest>> = None;
    let mut opening: Option<Opening> = None;
    let mut acks: Option<Streaming<rpc::ReportAck>> = None;
    let mut sent_upto = 0u64;
    let mut connected_once = false;

    loop {
        if !events_open && uploads.is_empty() {
            outbox.flush();
            if outbox.is_empty() {
                return Reported::Drained { last_checkpoint };
            }
        }
        let has_items = !outbox.is_empty();
        if tx.is_none() && has_items && retry_at.is_some_and(|t| t <= Instant::now()) {
            let (t, rx) = mpsc::channel(IN_FLIGHT);
            let mut c = ctx.client.clone();
            opening = Some(Box::pin(async move {
                c.report(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
            }));
            tx = Some(t);
            // Everything unacknowledged goes again: the coordinator dedupes.
            sent_upto = outbox.acked();
            retry_at = None;
        }
        if let Some(t) = &tx {
            while let Some(item) = outbox.next_after(sent_upto) {
                match t.try_reserve() {
                    Ok(permit) => {
                        sent_upto = item.item;
                        permit.send(item.clone());
                    }
                    Err(_) => break,
                }
            }
        }
        let sleep_until = retry_at.filter(|_| tx.is_none() && has_items);

        tokio::select! {
            ev = events.recv(), if events_open => match ev {
                Some(ev) => {
                    if let Some((epoch, path)) = outbox.event(ev) {
                        spawn_upload(ctx, &mut uploads, (attempt, lease_token), epoch, path);
                    }
                }
                None => {
                    events_open = false;
                    outbox.flush();
                }
            },
            _ = flush_tick.tick() => outbox.flush_if_old(),
            Some(done) = uploads.join_next(), if !uploads.is_empty() => {
                if let Ok((epoch, path, Some(id))) = done {
                    outbox.checkpoint(epoch, id);
                    last_checkpoint = Some((path, id));
                }
            }
            r = async { opening.as_mut().expect("guarded").await }, if opening.is_some() => {
                opening = None;
                match r {
                    Ok(resp) => {
                        acks = Some(resp.into_inner());
                        if connected_once {
                            tracing::info!(attempt, unacked = outbox.len(), "report stream reopened");
                        }
                        connected_once = true;
                    }
                    Err(s) if fenced(&s) => return Reported::Fenced(s.message().to_owned()),
                    Err(s) if refused(&s).is_some() => return refused(&s).expect("checked"),
                    Err(s) => {
                        tracing::debug!(attempt, status = %s.message(), "report stream could not open");
                        tx = None;
                        retry_at = Some(Instant::now() + backoff.next_delay());
                    }
                }
            }
            m = async { acks.as_mut().expect("guarded").message().await }, if acks.is_some() => match m {
                Ok(Some(ack)) => {
                    outbox.ack(ack.item);
                    backoff.reset();
                    if !ack.warning.is_empty() {
                        tracing::warn!(attempt, warning = %ack.warning, "coordinator");
                    }
                }
                Ok(None) => {
                    acks = None;
                    tx = None;
                    retry_at = Some(Instant::now() + backoff.next_delay());
                }
                Err(s) if fenced(&s) => return Reported::Fenced(s.message().to_owned()),
                Err(s) if refused(&s).is_some() => return refused(&s).expect("checked"),
                Err(s) => {
                    tracing::warn!(attempt, code = ?s.code(), status = %s.message(), unacked = outbox.len(),
                        "report stream broke; reconnecting");
                    acks = None;
                    tx = None;
                    retry_at = Some(Instant::now() + backoff.next_delay());
                }
            },
            _ = async { tokio::time::sleep_until(sleep_until.expect("guarded")).await }, if sleep_until.is_some() => {}
        }
    }
}

fn outbox_attempt(o: &Outbox) -> i64 {
    o.attempt_id()
}

/// Starts uploading a checkpoint. The training engine deletes a checkpoint once the next one is
/// written, so the upload reads a hard link made right now.
fn spawn_upload(
    ctx: &Arc<Ctx>,
    uploads: &mut JoinSet<(u32, PathBuf, Option<i64>)>,
    (attempt, lease_token): (i64, u64),
    epoch: u32,
    path: PathBuf,
) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let link = path.with_file_name(format!("upload-{name}"));
    let _ = std::fs::remove_file(&link);
    let source = match std::fs::hard_link(&path, &link)
        .or_else(|_| std::fs::copy(&path, &link).map(|_| ()))
    {
        Ok(()) => link.clone(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot pin checkpoint for upload");
            path.clone()
        }
    };
    let ctx = ctx.clone();
    uploads.spawn(async move {
        let id = upload_with_retry(&ctx, attempt, lease_token, epoch, &source).await;
        if source != path {
            let _ = tokio::fs::remove_file(&source).await;
        }
        (epoch, path, id)
    });
}

/// Uploads a checkpoint, retrying transient failures; `None` if it could not be stored.
pub(crate) async fn upload_with_retry(
    ctx: &Ctx,
    attempt: i64,
    lease_token: u64,
    epoch: u32,
    path: &Path,
) -> Option<i64> {
    let mut backoff = Backoff::new(Duration::from_millis(200), ctx.cfg.max_backoff);
    for _ in 0..UPLOAD_TRIES {
        match client::upload(
            &ctx.client,
            ctx.worker_id,
            &ctx.database_id,
            attempt,
            lease_token,
            epoch,
            path,
        )
        .await
        {
            Ok(id) => {
                tracing::info!(attempt, epoch, artifact = id, "checkpoint uploaded");
                return Some(id);
            }
            Err(s) if client::is_transient(&s) => {
                tracing::debug!(attempt, status = %s.message(), "checkpoint upload failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(s) => {
                tracing::warn!(attempt, code = ?s.code(), status = %s.message(), "checkpoint upload refused");
                return None;
            }
        }
    }
    tracing::warn!(
        attempt,
        epoch,
        "checkpoint upload gave up; a resume would start earlier"
    );
    None
}
