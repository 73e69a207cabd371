//! One leased attempt on one slot: fetch the resume checkpoint, train on a blocking thread,
//! stream its events to the coordinator (reconnecting as needed), then complete, fail or
//! release the attempt.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use proto::rpc::{self, PROTOCOL_VERSION};
use tokio::sync::mpsc;
use tonic::Code;

use super::client::{self, Backoff};
use super::ctx::Ctx;
use super::outbox::Outbox;
use super::reporter::{self, Reported};
use crate::train::{CancelToken, Outcome, RunSpec, SavedCheckpoint, TrainError, TrainEvent};

/// Events buffered between the training thread and the network side.
const EVENT_BUFFER: usize = 256;
/// How long an attempt end (complete / fail / release) is retried while the coordinator is
/// unreachable; past it, the lease runs out and the coordinator decides alone.
const END_RETRY_FOR: Duration = Duration::from_secs(120);

/// Why a running attempt is being stopped.
pub(crate) const STOP_NONE: u8 = 0;
/// The coordinator cancelled it (or gave it away): just stop.
pub(crate) const STOP_COORDINATOR: u8 = 1;
/// This worker is shutting down: stop at a safe point and hand the job back.
pub(crate) const STOP_SHUTDOWN: u8 = 2;
/// The coordinator refused this attempt's reports: stop, then fail the attempt.
pub(crate) const STOP_REFUSED: u8 = 3;

/// Handle of a running attempt, kept by the agent's main loop.
pub(crate) struct Running {
    pub(crate) attempt_id: i64,
    pub(crate) cancel: CancelToken,
    pub(crate) stop: Arc<AtomicU8>,
    /// The coordinator said this attempt is no longer ours (whatever stopped it first).
    pub(crate) void: AtomicBool,
}

impl Running {
    pub(crate) fn stop(&self, why: u8) {
        stop_with(&self.cancel, &self.stop, why);
    }

    /// The coordinator cancelled the attempt or gave it away.
    pub(crate) fn void(&self) {
        self.void.store(true, Ordering::SeqCst);
        self.stop(STOP_COORDINATOR);
    }

    /// The coordinator cancelled or took away this attempt (told so by a Lease reply or by its
    /// report stream): it is winding down and no longer held by this worker.
    pub(crate) fn stopped_by_coordinator(&self) -> bool {
        self.void.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst) == STOP_COORDINATOR
    }
}

/// Records why an attempt stops (the first reason wins) and cancels its training.
fn stop_with(cancel: &CancelToken, stop: &AtomicU8, why: u8) {
    let _ = stop.compare_exchange(STOP_NONE, why, Ordering::SeqCst, Ordering::SeqCst);
    cancel.cancel();
}

/// How the attempt ended, for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AttemptResult {
    Completed,
    Failed(String),
    Released,
    Stopped,
}

/// Runs one attempt to its end.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    slot: usize,
    job: rpc::JobLease,
    cancel: CancelToken,
    stop: Arc<AtomicU8>,
) -> AttemptResult {
    let attempt = job.attempt_id;
    let lease_token = job.lease_token;
    let params: proto::JobParams = match serde_json::from_str(&job.params_json) {
        Ok(p) => p,
        Err(e) => {
            let error = format!("cannot read job parameters: {e}");
            return fail(&ctx, (attempt, lease_token), error, false).await;
        }
    };
    tracing::info!(job = job.job_id, attempt, slot, label = %params.short_label(), "starting attempt");
    let work_dir = ctx
        .cfg
        .work_dir
        .join(format!("job-{}", job.job_id))
        .join(format!("attempt-{attempt}"));
    if let Err(e) = tokio::fs::create_dir_all(&work_dir).await {
        let error = format!("cannot create {}: {e}", work_dir.display());
        return fail(&ctx, (attempt, lease_token), error, true).await;
    }
    let resume_from = match &job.resume {
        Some(a) => fetch_resume(&ctx, a, &work_dir).await,
        None => None,
    };
    let spec = RunSpec {
        params,
        data_dir: ctx.cfg.data_dir.clone(),
        work_dir: work_dir.clone(),
        resume_from,
    };

    let (events_tx, events_rx) = mpsc::channel::<TrainEvent>(EVENT_BUFFER);
    let trainer = ctx.trainer.clone();
    let train_cancel = cancel.clone();
    let training = tokio::task::spawn_blocking(move || {
        let mut on_event = |ev: TrainEvent| {
            // Fails only once the reporter gave up on a fenced attempt; training stops soon.
            let _ = events_tx.blocking_send(ev);
        };
        let first = trainer.train(slot, &spec, &mut on_event, &train_cancel);
        match first {
            // A checkpoint that cannot be loaded must not fail the job forever: start over.
            Err(TrainError::Checkpoint { path, reason }) if spec.resume_from.is_some() => {
                tracing::warn!(path = %path.display(), %reason, "resume checkpoint unusable; training from scratch");
                let fresh = RunSpec {
                    resume_from: None,
                    ..spec.clone()
                };
                trainer.train(slot, &fresh, &mut on_event, &train_cancel)
            }
            other => other,
        }
    });

    let outbox = Outbox::new(ctx.worker_id, attempt, ctx.database_id.clone(), lease_token);
    let reported = reporter::run(&ctx, outbox, events_rx).await;
    match &reported {
        Reported::Fenced(_) => stop_with(&cancel, &stop, STOP_COORDINATOR),
        Reported::Refused(_) => stop_with(&cancel, &stop, STOP_REFUSED),
        Reported::Drained { .. } => {}
    }
    let outcome = training.await;

    let result = match (reported, outcome) {
        (Reported::Fenced(why), _) => {
            tracing::warn!(attempt, %why, "attempt taken away by the coordinator; dropped");
            AttemptResult::Stopped
        }
        (Reported::Refused(why), _) => {
            tracing::error!(attempt, %why, "coordinator refused the attempt's reports");
            let error = format!("coordinator refused the reports: {why}");
            fail(&ctx, (attempt, lease_token), error, true).await
        }
        (Reported::Drained { .. }, Err(join)) => {
            let error = format!("training panicked: {join}");
            fail(&ctx, (attempt, lease_token), error, true).await
        }
        (Reported::Drained { .. }, Ok(Ok(Outcome::Finished { metrics }))) => {
            end(&ctx, (attempt, lease_token), End::Complete(metrics)).await;
            AttemptResult::Completed
        }
        (Reported::Drained { last_checkpoint }, Ok(Ok(Outcome::Cancelled { checkpoint }))) => {
            if stop.load(Ordering::SeqCst) == STOP_SHUTDOWN {
                let artifact =
                    release_checkpoint(&ctx, (attempt, lease_token), last_checkpoint, checkpoint)
                        .await;
                end(&ctx, (attempt, lease_token), End::Release(artifact)).await;
                AttemptResult::Released
            } else {
                AttemptResult::Stopped
            }
        }
        (Reported::Drained { .. }, Ok(Err(e))) => {
            let retryable = !matches!(e, TrainError::Diverged { .. } | TrainError::Config(_));
            let error = e.to_string();
            fail(&ctx, (attempt, lease_token), error, retryable).await
        }
    };
    if result != AttemptResult::Released {
        // Checkpoints of a finished attempt live on at the coordinator.
        let _ = tokio::fs::remove_dir_all(&work_dir).await;
    }
    tracing::info!(job = job.job_id, attempt, ?result, "attempt over");
    result
}

async fn fetch_resume(
    ctx: &Ctx,
    a: &rpc::ArtifactRef,
    work_dir: &std::path::Path,
) -> Option<PathBuf> {
    let dest = work_dir.join(format!("resume-epoch-{:04}.ckpt", a.epoch));
    let mut backoff = Backoff::new(Duration::from_millis(200), ctx.cfg.max_backoff);
    for _ in 0..6 {
        match client::download(&ctx.client, ctx.worker_id, &ctx.database_id, a, &dest).await {
            Ok(()) => {
                tracing::info!(
                    artifact = a.artifact_id,
                    epoch = a.epoch,
                    "resuming from checkpoint"
                );
                return Some(dest);
            }
            Err(s) if client::is_transient(&s) || s.code() == Code::DataLoss => {
                tracing::warn!(artifact = a.artifact_id, status = %s.message(), "checkpoint download failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(s) => {
                tracing::warn!(artifact = a.artifact_id, status = %s.message(), "checkpoint unavailable");
                break;
            }
        }
    }
    tracing::warn!("starting from scratch instead of resuming");
    None
}

/// The checkpoint to hand back with a release: the one just written on cancellation, which may
/// be the last one already uploaded.
async fn release_checkpoint(
    ctx: &Ctx,
    (attempt, lease_token): (i64, u64),
    uploaded: Option<(PathBuf, i64)>,
    cancelled_at: Option<SavedCheckpoint>,
) -> i64 {
    let Some(SavedCheckpoint { epoch, path }) = cancelled_at else {
        return uploaded.map(|u| u.1).unwrap_or(0);
    };
    if let Some((p, id)) = &uploaded
        && *p == path
    {
        return *id;
    }
    reporter::upload_with_retry(ctx, attempt, lease_token, epoch, &path)
        .await
        .unwrap_or(0)
}

enum End {
    Complete(std::collections::BTreeMap<String, f64>),
    Fail { error: String, retryable: bool },
    Release(i64),
}

/// Ends the attempt as failed at the coordinator, and tells the slot why.
async fn fail(ctx: &Ctx, target: (i64, u64), error: String, retryable: bool) -> AttemptResult {
    end(
        ctx,
        target,
        End::Fail {
            error: error.clone(),
            retryable,
        },
    )
    .await;
    AttemptResult::Failed(error)
}

/// Sends the attempt's end, retrying while the coordinator is unreachable.
async fn end(ctx: &Ctx, (attempt, lease_token): (i64, u64), e: End) {
    let mut backoff = Backoff::new(Duration::from_millis(100), ctx.cfg.max_backoff);
    let deadline = tokio::time::Instant::now() + END_RETRY_FOR;
    loop {
        let mut c = ctx.client.clone();
        let worker_id = ctx.worker_id;
        let r = match &e {
            End::Complete(metrics) => c
                .complete(rpc::CompleteRequest {
                    protocol_version: PROTOCOL_VERSION,
                    worker_id,
                    attempt_id: attempt,
                    metrics: metrics.clone(),
                    database_id: ctx.database_id.clone(),
                    lease_token,
                })
                .await
                .map(|_| ()),
            End::Fail { error, retryable } => c
                .fail(rpc::FailRequest {
                    protocol_version: PROTOCOL_VERSION,
                    worker_id,
                    attempt_id: attempt,
                    error: error.clone(),
                    retryable: *retryable,
                    database_id: ctx.database_id.clone(),
                    lease_token,
                })
                .await
                .map(|_| ()),
            End::Release(artifact) => c
                .release(rpc::ReleaseRequest {
                    protocol_version: PROTOCOL_VERSION,
                    worker_id,
                    attempt_id: attempt,
                    checkpoint_artifact_id: *artifact,
                    database_id: ctx.database_id.clone(),
                    lease_token,
                })
                .await
                .map(|_| ()),
        };
        match r {
            Ok(()) => return,
            Err(s) if client::is_transient(&s) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(attempt, status = %s.message(), "ending attempt failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(s) => {
                tracing::warn!(attempt, code = ?s.code(), status = %s.message(), "coordinator refused the attempt's end");
                return;
            }
        }
    }
}
