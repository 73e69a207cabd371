//! The unary calls of `latentsweep.v1.Coordinator` (registration, leases, attempt ends); the
//! streams live in `report` and `artifacts`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::Stream;
use proto::rpc::{self, PROTOCOL_VERSION};
use proto::{AttemptId, WorkerId};
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use super::convert;
use super::error::RpcError;
use crate::sched::{AttemptEnd, StopNotices};
use crate::store::StoreError;
use crate::store::lease::Ended;
use crate::store::now_ms;

/// Most attempts one worker may list in a heartbeat, and jobs it may ask for at once.
const MAX_SLOTS: usize = 256;
/// How often a waiting long-poll re-checks the database even without a wake-up (another
/// process, e.g. `coordinator submit`, may have changed it).
const POLL_RECHECK: Duration = Duration::from_millis(250);

pub(crate) struct Service {
    pub shared: Arc<Shared>,
    /// Stop notices given in the last reply to each worker.
    notices: Mutex<StopNotices>,
}

/// The attempt an end request names, as sent (validated by [`Service::end_with`]).
#[derive(Clone, Copy)]
struct Target<'a> {
    worker: i64,
    attempt: i64,
    database: &'a str,
    lease_token: u64,
}

fn unknown_worker(worker: WorkerId) -> impl FnOnce(StoreError) -> RpcError {
    move |e| match e {
        StoreError::NotFound(_) => RpcError::UnknownWorker(worker.0),
        other => RpcError::Store(other),
    }
}

impl Service {
    pub fn new(shared: Arc<Shared>) -> Self {
        Service {
            shared,
            notices: Mutex::default(),
        }
    }

    fn notices(&self) -> std::sync::MutexGuard<'_, StopNotices> {
        // The notices are a hint: one left half-updated by a panic is still usable.
        self.notices.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn do_lease(&self, r: rpc::LeaseRequest) -> Result<rpc::LeaseReply, RpcError> {
        convert::check_version(r.protocol_version)?;
        let worker = convert::worker_id(r.worker_id)?;
        let store = &self.shared.store;
        convert::worker_database(&r.database_id, store.database_id(), worker)?;
        if r.running_attempts.len() > MAX_SLOTS {
            return Err(RpcError::InvalidArgument(format!(
                "more than {MAX_SLOTS} running attempts"
            )));
        }
        let running = r
            .running_attempts
            .iter()
            .map(|&a| convert::attempt_id(a))
            .collect::<Result<Vec<AttemptId>, _>>()?;
        let free = (r.free_slots as usize).min(MAX_SLOTS);
        let sched = self.shared.cfg.sched;
        // The first look shares the heartbeat's transaction; later looks (long-poll) lease alone.
        let (mut stop, mut jobs) = store
            .heartbeat_and_lease(worker, &running, free, sched.lease_expiry(now_ms()))
            .await
            .map_err(unknown_worker(worker))?;
        let deadline = tokio::time::Instant::now() + sched.poll_wait(r.wait_ms);
        // A stop notice the worker already had is no reason to answer at once: it is still
        // winding the attempt down, and would only call straight back.
        while jobs.is_empty() && self.notices().fresh(worker, &stop).is_empty() {
            // Subscribe before looking, so a wake-up between the look and the wait is not lost.
            let woken = self.shared.changed.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if free > 0 && store.has_queued().await? {
                jobs = store
                    .lease_jobs(worker, free, sched.lease_expiry(now_ms()))
                    .await?;
            }
            let now = tokio::time::Instant::now();
            if !jobs.is_empty() || now >= deadline {
                break;
            }
            let nap = (deadline - now).min(POLL_RECHECK);
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(nap) => {}
            }
            stop = store.stopped_attempts(worker, &running).await?;
        }
        let fresh = {
            let mut notices = self.notices();
            let fresh = notices.fresh(worker, &stop);
            notices.record(worker, &stop);
            fresh
        };
        if !fresh.is_empty() {
            // Mostly attempts that just ended normally, still listed by the worker until its
            // slot winds down; cancellations are logged where they are made.
            tracing::debug!(%worker, attempts = ?fresh, "worker lists attempts that are over here; telling it to stop them");
        }
        crate::obs::leases_granted(jobs.len());
        for j in &jobs {
            tracing::info!(%worker, job = %j.job, attempt = %j.attempt, number = j.number,
                resume = j.resume.as_ref().map(|a| a.epoch), "leased");
        }
        Ok(rpc::LeaseReply {
            protocol_version: PROTOCOL_VERSION,
            jobs: jobs
                .iter()
                .map(|j| convert::job_lease(j, store.database_id()))
                .collect(),
            cancel_attempts: stop.iter().map(|a| a.0).collect(),
            lease_ttl_ms: sched.lease_ttl.as_millis() as u64,
        })
    }

    /// Ends an attempt; `Ended::Repeat` (a retried request) counts as success.
    async fn end(&self, at: Target<'_>, end: AttemptEnd) -> Result<String, RpcError> {
        self.end_with(at, end, None).await
    }

    /// Ends an attempt, storing `result` with it when the end applies.
    async fn end_with(
        &self,
        at: Target<'_>,
        end: AttemptEnd,
        result: Option<&BTreeMap<String, f64>>,
    ) -> Result<String, RpcError> {
        let worker = convert::worker_id(at.worker)?;
        let attempt = convert::attempt_id(at.attempt)?;
        let store = &self.shared.store;
        convert::attempt_database(at.database, store.database_id(), attempt)?;
        match store
            .end_attempt_with(
                attempt,
                convert::lease_token(at.lease_token),
                worker,
                &end,
                result,
            )
            .await?
        {
            Ended::Applied { job, job_state } => {
                tracing::info!(%worker, %attempt, %job, end = end.attempt_state().as_str(), %job_state,
                    error = end.error_text().as_deref().unwrap_or(""), "attempt ended");
                if matches!(end, AttemptEnd::Failed { .. }) && job_state == "queued" {
                    crate::obs::retried(crate::obs::RetryCause::Failed);
                }
                if job_state == "done" {
                    let cfg = &self.shared.cfg;
                    crate::retention::after_done(
                        store,
                        &cfg.artifact_dir,
                        job,
                        cfg.keep_checkpoints,
                    )
                    .await;
                }
                self.shared.wake();
                Ok(convert::job_state(job_state))
            }
            Ended::Repeat { job_state, .. } => Ok(convert::job_state(job_state)),
            Ended::Fenced(f) => {
                crate::obs::fenced(crate::obs::FencedCall::End);
                tracing::warn!(%worker, %attempt, reason = %f, "rejected end of a stale attempt");
                Err(RpcError::Fenced(f))
            }
        }
    }

    /// Stores the result and ends the attempt as done, in one transaction.
    async fn do_complete(&self, r: rpc::CompleteRequest) -> Result<(), RpcError> {
        convert::check_version(r.protocol_version)?;
        let metrics: BTreeMap<String, f64> = r
            .metrics
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .collect();
        let at = Target {
            worker: r.worker_id,
            attempt: r.attempt_id,
            database: &r.database_id,
            lease_token: r.lease_token,
        };
        self.end_with(at, AttemptEnd::Done, Some(&metrics))
            .await
            .map(|_| ())
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl rpc::coordinator_server::Coordinator for Service {
    async fn register(
        &self,
        request: Request<rpc::RegisterRequest>,
    ) -> Result<Response<rpc::RegisterReply>, Status> {
        let r = request.into_inner();
        convert::check_version(r.protocol_version)?;
        let w = convert::new_worker(&r)?;
        let id = self
            .shared
            .store
            .register_worker(&w)
            .await
            .map_err(RpcError::from)?;
        tracing::info!(worker = %id, name = %w.name, host = %w.host, backend = %w.backend,
            slots = r.slots, version = %w.version, "worker registered");
        Ok(Response::new(rpc::RegisterReply {
            protocol_version: PROTOCOL_VERSION,
            worker_id: id.0,
            lease_ttl_ms: self.shared.cfg.sched.lease_ttl.as_millis() as u64,
            max_message_bytes: self.shared.cfg.max_message_bytes as u64,
            database_id: self.shared.store.database_id().to_owned(),
        }))
    }

    async fn lease(
        &self,
        request: Request<rpc::LeaseRequest>,
    ) -> Result<Response<rpc::LeaseReply>, Status> {
        self.shared.cfg.stats.count_lease();
        Ok(Response::new(self.do_lease(request.into_inner()).await?))
    }

    type ReportStream = BoxStream<rpc::ReportAck>;

    async fn report(
        &self,
        request: Request<Streaming<rpc::ReportRequest>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let rx = super::report::spawn(self.shared.clone(), request.into_inner());
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn upload_checkpoint(
        &self,
        request: Request<Streaming<rpc::UploadChunk>>,
    ) -> Result<Response<rpc::UploadReply>, Status> {
        let id = super::artifacts::upload(&self.shared, request.into_inner()).await?;
        Ok(Response::new(rpc::UploadReply { artifact_id: id }))
    }

    type DownloadCheckpointStream = BoxStream<rpc::DownloadChunk>;

    async fn download_checkpoint(
        &self,
        request: Request<rpc::DownloadRequest>,
    ) -> Result<Response<Self::DownloadCheckpointStream>, Status> {
        let rx = super::artifacts::download(&self.shared, request.into_inner()).await?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn complete(
        &self,
        request: Request<rpc::CompleteRequest>,
    ) -> Result<Response<rpc::CompleteReply>, Status> {
        self.do_complete(request.into_inner()).await?;
        Ok(Response::new(rpc::CompleteReply {}))
    }

    async fn fail(
        &self,
        request: Request<rpc::FailRequest>,
    ) -> Result<Response<rpc::FailReply>, Status> {
        let r = request.into_inner();
        convert::check_version(r.protocol_version)?;
        let at = Target {
            worker: r.worker_id,
            attempt: r.attempt_id,
            database: &r.database_id,
            lease_token: r.lease_token,
        };
        let job_state = self.end(at, convert::failure(&r)).await?;
        Ok(Response::new(rpc::FailReply { job_state }))
    }

    async fn release(
        &self,
        request: Request<rpc::ReleaseRequest>,
    ) -> Result<Response<rpc::ReleaseReply>, Status> {
        let r = request.into_inner();
        convert::check_version(r.protocol_version)?;
        if r.checkpoint_artifact_id > 0 {
            tracing::info!(
                attempt = r.attempt_id,
                artifact = r.checkpoint_artifact_id,
                "released with a checkpoint"
            );
        }
        let at = Target {
            worker: r.worker_id,
            attempt: r.attempt_id,
            database: &r.database_id,
            lease_token: r.lease_token,
        };
        self.end(at, AttemptEnd::Released).await?;
        Ok(Response::new(rpc::ReleaseReply {}))
    }
}
