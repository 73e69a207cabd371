//! Report streams: one per attempt; every item is fenced, stored exactly once and acknowledged
//! cumulatively. A stale attempt ends the stream with FAILED_PRECONDITION.

use std::sync::Arc;

use proto::rpc::{self, report_request::Body};
use proto::{AttemptId, JobId, WorkerId};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::Shared;
use super::convert;
use super::error::{RpcError, remap_codec_status};
use crate::sched::fencing;
use crate::store::BatchOutcome;

/// Acks waiting to be sent; the worker keeps its items until acknowledged, so a full channel
/// only slows it down.
const ACK_BUFFER: usize = 64;

/// Starts serving one report stream; returns the acknowledgements.
pub(super) fn spawn(
    shared: Arc<Shared>,
    inbound: Streaming<rpc::ReportRequest>,
) -> mpsc::Receiver<Result<rpc::ReportAck, Status>> {
    let (tx, rx) = mpsc::channel(ACK_BUFFER);
    tokio::spawn(async move {
        if let Err(status) = serve(&shared, inbound, &tx).await {
            let _ = tx.send(Err(status)).await;
        }
    });
    rx
}

/// The attempt a stream speaks for, fixed by its first message.
struct Pinned {
    worker: WorkerId,
    attempt: AttemptId,
}

async fn serve(
    shared: &Shared,
    mut inbound: Streaming<rpc::ReportRequest>,
    tx: &mpsc::Sender<Result<rpc::ReportAck, Status>>,
) -> Result<(), Status> {
    let mut pinned: Option<Pinned> = None;
    loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(s) => {
                let s = remap_codec_status(s);
                tracing::debug!(code = ?s.code(), "report stream ended by the client side");
                return Err(s);
            }
        };
        let ack = handle(shared, &mut pinned, msg).await?;
        if tx.send(Ok(ack)).await.is_err() {
            return Ok(()); // the worker went away; it resends unacknowledged items
        }
    }
}

async fn handle(
    shared: &Shared,
    pinned: &mut Option<Pinned>,
    m: rpc::ReportRequest,
) -> Result<rpc::ReportAck, RpcError> {
    convert::check_version(m.protocol_version)?;
    let worker = convert::worker_id(m.worker_id)?;
    let attempt = convert::attempt_id(m.attempt_id)?;
    let store = &shared.store;
    convert::attempt_database(&m.database_id, store.database_id(), attempt)?;
    // Fencing on every item: the lease may have expired (or the job been cancelled) mid-stream.
    let view = store.attempt_view(attempt).await?;
    let token = convert::lease_token(m.lease_token);
    if let Err(f) = fencing::check(attempt.0, view.as_ref(), worker.0, token) {
        crate::obs::fenced(crate::obs::FencedCall::Report);
        tracing::warn!(%worker, %attempt, reason = %f, "rejected report of a stale attempt");
        return Err(RpcError::Fenced(f));
    }
    let job = JobId(view.map(|v| v.job).unwrap_or_default());
    match pinned {
        None => *pinned = Some(Pinned { worker, attempt }),
        Some(p) if p.attempt != attempt || p.worker != worker => {
            return Err(RpcError::InvalidArgument(
                "a report stream carries one attempt".into(),
            ));
        }
        Some(_) => {}
    }
    let mut warning = String::new();
    match m.body {
        Some(Body::Metrics(b)) => {
            let points = convert::metric_points(&b)?;
            warning = store_batch(shared, job, attempt, b.seq, &points).await?;
        }
        Some(Body::Eval(e)) => {
            let points = convert::eval_points(&e)?;
            warning = store_batch(shared, job, attempt, e.seq, &points).await?;
        }
        Some(Body::Snapshot(s)) => {
            // Keyed by (attempt, epoch): a resent snapshot replaces itself.
            store
                .record_snapshot(job, attempt, &convert::snapshot(&s)?)
                .await?;
        }
        Some(Body::Checkpoint(c)) => match store.artifact(c.artifact_id).await? {
            Some(a) if a.job == job => {
                tracing::debug!(%job, %attempt, epoch = c.epoch, artifact = a.id, "checkpoint noted");
            }
            Some(_) => {
                return Err(RpcError::InvalidArgument(format!(
                    "checkpoint artifact {} belongs to another job",
                    c.artifact_id
                )));
            }
            // Retention keeps only a job's newest checkpoint, and an attempt's uploads overtake
            // its reports: a checkpoint already superseded by a later epoch is gone, and that
            // is no error. One the job has nothing as new as is unknown.
            None => match store.latest_checkpoint(job).await? {
                Some(newest) if newest.epoch >= i64::from(c.epoch) => {
                    tracing::debug!(%job, %attempt, epoch = c.epoch, newest = newest.epoch,
                        "checkpoint noted, already superseded");
                }
                _ => {
                    return Err(RpcError::InvalidArgument(format!(
                        "unknown checkpoint artifact {}",
                        c.artifact_id
                    )));
                }
            },
        },
        None => return Err(RpcError::InvalidArgument("report without a body".into())),
    }
    Ok(rpc::ReportAck {
        item: m.item,
        warning,
    })
}

/// Stores a metric batch once; a gap in the sequence is logged (by the store) and echoed.
async fn store_batch(
    shared: &Shared,
    job: JobId,
    attempt: AttemptId,
    seq: i64,
    points: &[crate::store::MetricPoint],
) -> Result<String, RpcError> {
    match shared
        .store
        .record_metrics(job, attempt, seq, points)
        .await?
    {
        BatchOutcome::Stored {
            gap_before: Some((expected, got)),
        } => {
            crate::obs::points_ingested(points.len());
            Ok(format!(
                "metric batches {expected}..{got} of attempt {attempt} are missing"
            ))
        }
        BatchOutcome::Stored { gap_before: None } => {
            crate::obs::points_ingested(points.len());
            Ok(String::new())
        }
        BatchOutcome::Duplicate => {
            tracing::debug!(%attempt, seq, "duplicate metric batch ignored");
            Ok(String::new())
        }
    }
}
