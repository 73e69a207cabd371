//! The worker's gRPC agent: registers with a coordinator, leases one job per device slot,
//! trains each on a blocking thread, streams its reports and hands jobs back on shutdown.
//!
//! Training is behind the [`Trainer`] trait so the agent stays generic over the Burn backend
//! (chosen by the binary: [`run`] with e.g. `worker::train::CpuBackend`).

mod attempt;
pub mod cli;
pub mod client;
mod ctx;
pub(crate) mod fault;
mod outbox;
mod reporter;
pub mod tls;
mod token;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::time::Duration;

use proto::rpc::{self, PROTOCOL_VERSION};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Code;

use crate::train::{self, CancelToken, Outcome, RunSpec, TrainBackend, TrainError, TrainEvent};
use attempt::AttemptResult;
use attempt::{Running, STOP_SHUTDOWN};
use client::{Backoff, Client};
use ctx::Ctx;

/// Shortest time between two Lease calls when a reply brings nothing new (the coordinator
/// normally holds a call for a third of the lease TTL; this only guards against a reply that
/// keeps coming back at once).
const MIN_LEASE_GAP: Duration = Duration::from_millis(100);

/// A compute device offered as one job slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub index: u32,
    pub name: String,
    pub memory_bytes: u64,
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// e.g. `http://127.0.0.1:50051`
    pub coordinator: String,
    pub token: Option<String>,
    pub name: String,
    pub host: String,
    /// `cpu` or `cuda`.
    pub backend: String,
    /// One job slot per entry.
    pub devices: Vec<DeviceInfo>,
    pub data_dir: Option<PathBuf>,
    /// Per-attempt work directories (checkpoints) go under here.
    pub work_dir: PathBuf,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Certificates for an `https://` coordinator.
    pub tls: tls::ClientTls,
    /// No token was given: look for the token of a coordinator of this user on this machine
    /// when it answers Unauthenticated (it may start after this worker).
    pub discover_token: bool,
}

impl AgentConfig {
    /// A CPU agent with `slots` slots and defaults for the rest.
    pub fn cpu(coordinator: impl Into<String>, slots: usize, work_dir: PathBuf) -> Self {
        let host = hostname();
        AgentConfig {
            coordinator: coordinator.into(),
            token: None,
            name: format!("{host}-{}", std::process::id()),
            host,
            backend: "cpu".into(),
            devices: (0..slots.max(1) as u32)
                .map(|index| DeviceInfo {
                    index,
                    name: format!("cpu slot {index}"),
                    memory_bytes: 0,
                })
                .collect(),
            data_dir: None,
            work_dir,
            max_backoff: Duration::from_secs(2),
            tls: tls::ClientTls::default(),
            discover_token: false,
        }
    }
}

/// This machine's name, for registration.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid agent configuration: {0}")]
    Config(String),
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsFailure),
}

/// Runs one training job; implemented for Burn backends by `BurnTrainer`. `slot` indexes
/// [`AgentConfig::devices`].
pub trait Trainer: Send + Sync + 'static {
    fn train(
        &self,
        slot: usize,
        spec: &RunSpec,
        on_event: &mut dyn FnMut(TrainEvent),
        cancel: &CancelToken,
    ) -> Result<Outcome, TrainError>;
}

/// [`train::run`] on one Burn device per slot.
pub(crate) struct BurnTrainer<B: TrainBackend> {
    pub(crate) devices: Vec<B::Device>,
}

impl<B: TrainBackend> Trainer for BurnTrainer<B> {
    fn train(
        &self,
        slot: usize,
        spec: &RunSpec,
        on_event: &mut dyn FnMut(TrainEvent),
        cancel: &CancelToken,
    ) -> Result<Outcome, TrainError> {
        let device = &self.devices[slot % self.devices.len().max(1)];
        train::run::<B>(device, spec, on_event, cancel)
    }
}

/// Runs the agent on Burn backend `B` with one slot per device (`devices[i]` serves
/// `cfg.devices[i]`) until `shutdown` resolves and every slot has handed its job back.
pub async fn run<B: TrainBackend>(
    cfg: AgentConfig,
    devices: Vec<B::Device>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    if devices.len() != cfg.devices.len() || devices.is_empty() {
        return Err(AgentError::Config(format!(
            "{} device handles for {} slots",
            devices.len(),
            cfg.devices.len()
        )));
    }
    let trainer = fault::wrap(Arc::new(BurnTrainer::<B> { devices }));
    run_with(cfg, trainer, shutdown).await
}

/// [`run`] on the CPU backend (Burn Flex), one slot per `cfg.devices` entry. It is not generic,
/// so the training code is compiled here, at this crate's optimisation level, whatever the
/// caller's.
pub async fn run_cpu(
    cfg: AgentConfig,
    shutdown: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Result<(), AgentError> {
    let devices = vec![Default::default(); cfg.devices.len()];
    run::<train::CpuBackend>(cfg, devices, shutdown).await
}

/// Resolves on SIGTERM or Ctrl-C: the agent's usual shutdown signal.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested: stopping jobs at the next safe point");
}

/// A finished slot: its index and the attempt's result.
type SlotDone = (usize, i64, AttemptResult);

/// Runs the agent with any [`Trainer`].
pub async fn run_with(
    cfg: AgentConfig,
    trainer: Arc<dyn Trainer>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    if cfg.devices.is_empty() {
        return Err(AgentError::Config("no device slots".into()));
    }
    let auth = client::Auth::new(cfg.token.as_deref())?;
    let client = client::connect_auth(&cfg.coordinator, auth.clone(), &cfg.tls)?;
    let cfg = Arc::new(cfg);
    tokio::pin!(shutdown);
    let Some((worker_id, mut ttl, database_id)) =
        register(&cfg, &client, &auth, &mut shutdown).await?
    else {
        return Ok(());
    };
    let mut ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        client: client.clone(),
        worker_id,
        database_id,
        trainer: trainer.clone(),
    });
    let mut slots: Vec<Option<Running>> = (0..cfg.devices.len()).map(|_| None).collect();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<SlotDone>();
    let mut backoff = Backoff::new(Duration::from_millis(100), cfg.max_backoff);
    let mut stopping = false;
    // Set after a Lease reply that came back at once with nothing new: the next call waits
    // until then, so no coordinator reply pattern can make this loop spin.
    let mut pace: Option<Instant> = None;
    loop {
        if stopping && slots.iter().all(Option::is_none) {
            tracing::info!("all jobs handed back; agent exits");
            return Ok(());
        }
        if let Some(t) = pace.take() {
            tokio::select! {
                _ = tokio::time::sleep_until(t) => {}
                Some(d) = done_rx.recv() => finish(&mut slots, d),
                _ = &mut shutdown, if !stopping => { stopping = true; stop_all(&slots); }
            }
            continue;
        }
        let free = if stopping {
            0
        } else {
            slots.iter().filter(|s| s.is_none()).count()
        };
        // An attempt the coordinator stopped is no longer its to renew: listing it while it winds
        // down would only earn the same stop notice again, at once, in a loop.
        let running: Vec<i64> = slots
            .iter()
            .flatten()
            .filter(|r| !r.stopped_by_coordinator())
            .map(|r| r.attempt_id)
            .collect();
        let req = rpc::LeaseRequest {
            protocol_version: PROTOCOL_VERSION,
            worker_id: ctx.worker_id,
            free_slots: free as u32,
            running_attempts: running,
            wait_ms: (ttl / 3).as_millis() as u32,
            database_id: ctx.database_id.clone(),
        };
        let mut c = client.clone();
        let call = async move { c.lease(req).await };
        let called_at = Instant::now();
        tokio::select! {
            r = call => match r {
                Ok(reply) => {
                    backoff.reset();
                    let reply = reply.into_inner();
                    if reply.lease_ttl_ms > 0 {
                        ttl = Duration::from_millis(reply.lease_ttl_ms);
                    }
                    let mut news = !reply.jobs.is_empty();
                    for a in &reply.cancel_attempts {
                        if let Some(r) = slots.iter().flatten().find(|r| r.attempt_id == *a)
                            && !r.stopped_by_coordinator()
                        {
                            tracing::debug!(attempt = a, "coordinator says the attempt is over (finished, cancelled or expired); stopping its slot");
                            r.void();
                            news = true;
                        }
                    }
                    if !news && called_at.elapsed() < MIN_LEASE_GAP {
                        pace = Some(called_at + MIN_LEASE_GAP);
                    }
                    for job in reply.jobs {
                        let Some(slot) = slots.iter().position(Option::is_none) else {
                            // More jobs than free slots cannot happen with a sane coordinator; the
                            // next heartbeat omits the attempt, so the coordinator releases it.
                            tracing::warn!(attempt = job.attempt_id, "no free slot for a leased job");
                            continue;
                        };
                        slots[slot] = Some(start(&ctx, slot, job, &done_tx));
                    }
                }
                Err(s) if s.code() == Code::NotFound => {
                    // The coordinator does not know us (new database): our attempts are void.
                    tracing::warn!(status = %s.message(), "coordinator forgot this worker; registering again");
                    for r in slots.iter().flatten() {
                        r.void();
                    }
                    if stopping {
                        // Shutting down anyway: wait for the slots to wind down.
                        if let Some(d) = done_rx.recv().await {
                            finish(&mut slots, d);
                        }
                        continue;
                    }
                    // A coordinator that forgets us again right after registering must not
                    // turn this into a register/lease loop.
                    let wait = backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut shutdown => { stopping = true; stop_all(&slots); continue; }
                    }
                    match register(&cfg, &client, &auth, &mut shutdown).await? {
                        Some((id, t, database_id)) => {
                            ttl = t;
                            ctx = Arc::new(Ctx { cfg: cfg.clone(), client: client.clone(), worker_id: id, database_id, trainer: trainer.clone() });
                        }
                        None => stopping = true,
                    }
                }
                Err(s) if !client::is_transient(&s) => {
                    // Wrong token, protocol version or request: asking again cannot help.
                    stop_all(&slots);
                    return Err(AgentError::Refused(format!("{:?}: {}", s.code(), s.message())));
                }
                Err(s) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(code = ?s.code(), status = %s.message(), retry_in_ms = wait.as_millis() as u64,
                        "coordinator unreachable");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut shutdown, if !stopping => { stopping = true; stop_all(&slots); }
                        Some(d) = done_rx.recv() => finish(&mut slots, d),
                    }
                }
            },
            // A slot freed up: abandon the long-poll and ask again with the new count (a job
            // leased by the abandoned call is released by the coordinator on the next call).
            Some(d) = done_rx.recv() => finish(&mut slots, d),
            _ = &mut shutdown, if !stopping => {
                stopping = true;
                stop_all(&slots);
            }
        }
    }
}

fn stop_all(slots: &[Option<Running>]) {
    for r in slots.iter().flatten() {
        r.stop(STOP_SHUTDOWN);
    }
}

fn finish(slots: &mut [Option<Running>], (slot, attempt, result): SlotDone) {
    if slots[slot]
        .as_ref()
        .is_some_and(|r| r.attempt_id == attempt)
    {
        slots[slot] = None;
    }
    tracing::debug!(slot, attempt, ?result, "slot free");
}

fn start(
    ctx: &Arc<Ctx>,
    slot: usize,
    job: rpc::JobLease,
    done: &mpsc::UnboundedSender<SlotDone>,
) -> Running {
    let cancel = CancelToken::new();
    let stop = Arc::new(AtomicU8::new(0));
    let running = Running {
        attempt_id: job.attempt_id,
        cancel: cancel.clone(),
        stop: stop.clone(),
        void: AtomicBool::new(false),
    };
    let (ctx, done) = (ctx.clone(), done.clone());
    tokio::spawn(async move {
        let attempt = job.attempt_id;
        let result = attempt::run(ctx, slot, job, cancel, stop).await;
        let _ = done.send((slot, attempt, result));
    });
    running
}

/// Registers, retrying with backoff until the coordinator answers; `None` if shutdown came
/// first. Returns the worker id, lease TTL and the id of the coordinator's database.
async fn register(
    cfg: &AgentConfig,
    client: &Client,
    auth: &client::Auth,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<(i64, Duration, String)>, AgentError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), cfg.max_backoff);
    let req = rpc::RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        name: cfg.name.clone(),
        host: cfg.host.clone(),
        backend: cfg.backend.clone(),
        devices: cfg
            .devices
            .iter()
            .map(|d| rpc::Device {
                index: d.index,
                name: d.name.clone(),
                memory_bytes: d.memory_bytes,
            })
            .collect(),
        software_version: env!("CARGO_PKG_VERSION").into(),
        slots: cfg.devices.len() as u32,
    };
    let mut warned = false;
    loop {
        match client.clone().register(req.clone()).await {
            Ok(r) => {
                let r = r.into_inner();
                tracing::info!(worker = r.worker_id, coordinator = %cfg.coordinator, slots = cfg.devices.len(),
                    "registered with the coordinator");
                return Ok(Some((
                    r.worker_id,
                    Duration::from_millis(r.lease_ttl_ms.max(300)),
                    r.database_id,
                )));
            }
            Err(s) if s.code() == tonic::Code::Unauthenticated && cfg.discover_token => {
                match token::discover(&cfg.coordinator)? {
                    Some(t) if !auth.is(&t) => {
                        tracing::info!("using the token of the coordinator on this machine");
                        auth.set(&t)?;
                    }
                    _ => {
                        return Err(AgentError::Refused(format!(
                            "{:?}: {} (no token given: use --token-file FILE or LATENTSWEEP_TOKEN)",
                            s.code(),
                            s.message()
                        )));
                    }
                }
            }
            Err(s) if !client::is_transient(&s) => {
                return Err(AgentError::Refused(format!(
                    "{:?}: {}",
                    s.code(),
                    s.message()
                )));
            }
            Err(s) => {
                // A TLS mismatch or an untrusted certificate will not go away by waiting.
                if let Some(f) = tls::failure_in(&s) {
                    return Err(f.into());
                }
                if !warned {
                    tracing::warn!(coordinator = %cfg.coordinator, status = %s.message(),
                        "coordinator not reachable yet; retrying");
                    warned = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.as_mut() => return Ok(None),
                }
            }
        }
    }
}
