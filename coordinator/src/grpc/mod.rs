//! The coordinator's gRPC service (`latentsweep.v1.Coordinator`): registration, leases,
//! report streams, checkpoint transfer, attempt ends. Scheduling decisions live in
//! [`crate::sched`], SQL in [`crate::store`], wire conversions in [`convert`].

pub mod artifacts;
pub(crate) mod auth;
pub mod convert;
pub mod error;
mod report;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proto::rpc::coordinator_server::CoordinatorServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::conn::{ConnLimits, GuardedListener};
use crate::sched::SchedConfig;
use crate::store::{Store, now_ms};

/// Largest accepted message (a report batch, a checkpoint chunk); bigger ones are refused with
/// RESOURCE_EXHAUSTED.
pub(crate) const DEFAULT_MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// HTTP/2 ping interval; must stay well below [`ConnLimits::idle_timeout`].
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How the gRPC service runs.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    pub addr: SocketAddr,
    /// Shared secret; required when `addr` is not a loopback address.
    pub token: Option<String>,
    pub sched: SchedConfig,
    /// Where uploaded checkpoints are kept: by convention `<db>.artifacts/` next to the database
    /// (see [`GrpcConfig::artifact_dir_for`]).
    pub artifact_dir: PathBuf,
    pub max_message_bytes: usize,
    /// Connection cap, idle timeout and TCP keepalive of the listener.
    pub conn: ConnLimits,
    /// Call counters, readable while the service runs (keep a clone of the `Arc`).
    pub stats: Arc<CallStats>,
    /// What a done job keeps of its checkpoints.
    pub keep_checkpoints: crate::retention::KeepCheckpoints,
    /// Serve over TLS (`--tls-cert`); the dashboard uses the same certificate.
    pub tls: Option<crate::tls::ServerTls>,
}

/// Counts of calls served, for diagnostics and tests.
#[derive(Debug, Default)]
pub struct CallStats {
    lease: AtomicU64,
}

impl CallStats {
    /// Lease calls received so far.
    pub fn lease_calls(&self) -> u64 {
        self.lease.load(Ordering::Relaxed)
    }

    pub(crate) fn count_lease(&self) {
        self.lease.fetch_add(1, Ordering::Relaxed);
    }
}

impl GrpcConfig {
    /// Defaults for a database at `db`, listening on `addr`.
    pub fn new(addr: SocketAddr, db: &std::path::Path) -> Self {
        GrpcConfig {
            addr,
            token: None,
            sched: SchedConfig::default(),
            artifact_dir: Self::artifact_dir_for(db),
            max_message_bytes: DEFAULT_MAX_MESSAGE,
            conn: ConnLimits::default(),
            stats: Arc::default(),
            keep_checkpoints: crate::retention::KeepCheckpoints::default(),
            tls: None,
        }
    }

    /// `<dir of db>/<file name of db>.artifacts`.
    pub fn artifact_dir_for(db: &std::path::Path) -> PathBuf {
        let mut name = db
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "latentsweep".into());
        name.push(".artifacts");
        db.with_file_name(name)
    }
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {0} without a token: set --token or LATENTSWEEP_TOKEN")]
    TokenRequired(SocketAddr),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("cannot create artifact directory {0}: {1}")]
    ArtifactDir(PathBuf, #[source] std::io::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// State shared by every call.
pub(crate) struct Shared {
    pub store: Store,
    pub cfg: GrpcConfig,
    /// Signalled when jobs may have become leasable or attempts stopped (long-polls wake up).
    pub changed: Notify,
}

impl Shared {
    pub(crate) fn wake(&self) {
        self.changed.notify_waiters();
    }
}

/// Serves on an already bound listener (tests bind port 0 and read the address first).
pub async fn serve_on(
    listener: TcpListener,
    store: Store,
    mut cfg: GrpcConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let local = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(cfg.addr, e))?;
    cfg.addr = local;
    if !local.ip().is_loopback() && cfg.token.as_deref().is_none_or(str::is_empty) {
        return Err(ServeError::TokenRequired(local));
    }
    std::fs::create_dir_all(&cfg.artifact_dir)
        .map_err(|e| ServeError::ArtifactDir(cfg.artifact_dir.clone(), e))?;
    crate::retention::remove_stale_parts(&cfg.artifact_dir, Duration::ZERO);
    let shared = Arc::new(Shared {
        store,
        cfg: cfg.clone(),
        changed: Notify::new(),
    });
    let reaper = tokio::spawn(reap_leases(shared.clone()));
    let svc = CoordinatorServer::new(service::Service::new(shared.clone()))
        .max_decoding_message_size(cfg.max_message_bytes)
        .max_encoding_message_size(cfg.max_message_bytes);
    let svc = tonic::service::interceptor::InterceptedService::new(
        svc,
        auth::TokenCheck::new(cfg.token.as_deref()),
    );
    tracing::info!(addr = %local, ttl_ms = cfg.sched.lease_ttl.as_millis() as u64, auth = cfg.token.is_some(),
        tls = cfg.tls.is_some(), mutual_tls = cfg.tls.as_ref().is_some_and(|t| t.mutual()), "gRPC service listening");
    // No per-request timeout: lease long-polls and report streams are long by design. Pings
    // (every 10 s, well inside the idle timeout) keep healthy connections active and find dead
    // peers; the guarded listener closes connections that never even start HTTP/2.
    let mut limits = cfg.conn;
    // A healthy idle connection is silent between pings: never time it out before three.
    limits.idle_timeout = limits.idle_timeout.max(KEEPALIVE_INTERVAL * 3);
    let listener = GuardedListener::new(listener, limits);
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(auth::CodecStatusLayer)
        .layer(crate::obs::latency::LatencyLayer::grpc())
        .add_service(svc);
    let result = match &cfg.tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(crate::tls::incoming(listener, tls), shutdown)
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(listener.into_stream(), shutdown)
                .await
        }
    };
    reaper.abort();
    Ok(result?)
}

/// Expires leases that ran out, re-queueing (or failing) their jobs. Runs for the lifetime of
/// the service; after a coordinator restart it is what returns jobs of workers that never came
/// back.
async fn reap_leases(shared: Arc<Shared>) {
    // After a restart, leases may have run out while nobody could renew them; give every worker
    // one TTL to reconnect and heartbeat before its jobs are taken away.
    if shared.store.has_running_attempts().await.unwrap_or(true) {
        tracing::info!(
            grace_ms = shared.cfg.sched.lease_ttl.as_millis() as u64,
            "running attempts found at startup; waiting one lease TTL for their workers"
        );
        tokio::time::sleep(shared.cfg.sched.lease_ttl).await;
    }
    let mut tick = tokio::time::interval(shared.cfg.sched.reaper_period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match shared.store.expire_leases(now_ms()).await {
            Ok(expired) if !expired.is_empty() => {
                crate::obs::leases_expired(expired.len());
                for e in &expired {
                    if matches!(e.next, crate::sched::JobNext::Requeue { .. }) {
                        crate::obs::retried(crate::obs::RetryCause::Expired);
                    }
                    tracing::warn!(attempt = %e.attempt, job = %e.job, next = ?e.next, "lease expired");
                }
                shared.wake();
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "expiring leases failed"),
        }
    }
}
