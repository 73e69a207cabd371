//! Serving mode: the gRPC service, the dashboard and optional local worker processes, run
//! together with the terminal's progress display until a shutdown signal (or, with
//! `exit_when_done`, until every watched sweep has finished).

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::conn::ConnLimits;
use crate::grpc::{self, GrpcConfig};
use crate::local::{LocalError, LocalWorkers, spawn_local_workers};
use crate::monitor::{self, Display, MonitorOptions};
use crate::slurm::{Allocations, SlurmOptions};
use crate::store::{Store, StoreError};

/// Everything serving needs besides the store.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub grpc: GrpcConfig,
    pub http_addr: SocketAddr,
    pub local_workers: usize,
    /// The `worker` binary local workers run (found next to this program when `None`).
    pub worker_bin: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    /// Where local workers keep checkpoints.
    pub work_root: PathBuf,
    pub exit_when_done: bool,
    /// Connection limits of the dashboard's listener (the gRPC ones are in `grpc.conn`).
    pub http_limits: ConnLimits,
    /// Sweeps whose progress is shown (and awaited with `exit_when_done`); empty: all.
    pub sweeps: Vec<String>,
    /// How progress is shown; `None`: not at all.
    pub display: Option<Display>,
    /// The generated token's file, announced to this user's workers by gRPC port while serving.
    pub token_file: Option<PathBuf>,
    /// Anonymous visitors may read the dashboard (`--public-dashboard`); actions need a login.
    pub public_dashboard: bool,
    /// Slurm auto-allocation (`--slurm-max-workers`); `None`: off.
    pub slurm: Option<SlurmOptions>,
}

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// A shutdown signal.
    Signal,
    /// `exit_when_done` and every watched sweep finished.
    Drained,
}

/// What [`run`] reports when it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub stopped: Stopped,
    /// The dashboard's address as a person opens it.
    pub dashboard_url: String,
}

/// Refuses a listen address beyond loopback without a token: workers would run whatever a
/// stranger submits, and the dashboard would show every result to the network.
pub fn check_exposure(opts: &ServeOptions) -> Result<(), ServeError> {
    if opts.grpc.token.as_deref().is_some_and(|t| !t.is_empty()) {
        return Ok(());
    }
    for (what, addr) in [
        ("--grpc-addr", opts.grpc.addr),
        ("--http-addr", opts.http_addr),
    ] {
        if !addr.ip().is_loopback() {
            return Err(ServeError::TokenRequired { what, addr });
        }
    }
    Ok(())
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {addr} ({what}) without a token: anyone who can reach it could \
         use this coordinator. Set --token or LATENTSWEEP_TOKEN, or listen on 127.0.0.1"
    )]
    TokenRequired {
        what: &'static str,
        addr: SocketAddr,
    },
    #[error(
        "--local-workers cannot be used with --client-ca: local workers have no client \
         certificate; start workers with --client-cert/--client-key instead"
    )]
    LocalWorkersWithClientCa,
    #[error(transparent)]
    Grpc(#[from] grpc::ServeError),
    #[error("cannot listen on {0} for the dashboard: {1}")]
    HttpBind(SocketAddr, #[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Local(#[from] LocalError),
}

/// Serves until `shutdown` resolves (or the watched sweeps finish, with `exit_when_done`).
/// Refuses to start, before binding anything, on an exposed address without a token.
pub async fn run(
    store: Store,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Served, ServeError> {
    check_exposure(&opts)?;
    if opts.local_workers > 0 && opts.grpc.tls.as_ref().is_some_and(|t| t.mutual()) {
        return Err(ServeError::LocalWorkersWithClientCa);
    }
    let grpc_listener = TcpListener::bind(opts.grpc.addr)
        .await
        .map_err(|e| ServeError::Grpc(grpc::ServeError::Bind(opts.grpc.addr, e)))?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|e| ServeError::Grpc(grpc::ServeError::Bind(opts.grpc.addr, e)))?;
    let http_listener = TcpListener::bind(opts.http_addr)
        .await
        .map_err(|e| ServeError::HttpBind(opts.http_addr, e))?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|e| ServeError::HttpBind(opts.http_addr, e))?;
    let mut dashboard_url = crate::progress::dashboard_url(http_addr);
    if opts.grpc.tls.is_some() {
        dashboard_url = dashboard_url.replacen("http://", "https://", 1);
    }
    tracing::info!(%grpc_addr, dashboard = %dashboard_url, "coordinator serving");
    let _announced = opts
        .token_file
        .as_deref()
        .and_then(|f| crate::token::announce(grpc_addr.port(), f));

    let (stop_tx, stop_rx) = watch::channel(false);
    // The gRPC service stops only after the local workers: they hand their jobs back through it.
    let (grpc_stop_tx, mut grpc_stop) = watch::channel(false);
    let mut grpc_task = tokio::spawn(grpc::serve_on(
        grpc_listener,
        store.clone(),
        opts.grpc.clone(),
        async move {
            let _ = grpc_stop.wait_for(|s| *s).await;
        },
    ));
    let allocations = Allocations::default();
    let access = crate::web::session::Access::new(
        opts.grpc.token.clone(),
        opts.public_dashboard,
        opts.grpc.tls.is_some(),
    );
    // The link printed at start-up logs its first visitor in (once), as Jupyter's does.
    let login_url = opts
        .grpc
        .token
        .is_some()
        .then(|| format!("{dashboard_url}login?once={}", access.one_time_code()));
    // /metrics checks the token itself (Bearer, for scrapers), outside the login's wrapper.
    let app = crate::web::protected_router(
        crate::web::router_with(store.clone(), opts.data_dir.clone(), allocations.clone()),
        access,
    )
    .merge(crate::obs::endpoint::routes(metrics_config(
        &store,
        &opts,
        &allocations,
    )))
    .layer(crate::obs::latency::LatencyLayer::http());
    let http_task = tokio::spawn(crate::web::serve_tls(
        http_listener,
        app,
        opts.http_limits,
        opts.grpc.tls.clone(),
    ));
    let workers = spawn_local_workers(
        &LocalWorkers {
            count: opts.local_workers,
            grpc_addr,
            token: opts.grpc.token.clone(),
            data_dir: opts.data_dir.clone(),
            work_root: opts.work_root.clone(),
            worker_bin: opts.worker_bin.clone(),
            pin_cert: opts.grpc.tls.as_ref().map(|t| t.files().cert.clone()),
        },
        stop_rx.clone(),
    )?;
    let slurm = opts.slurm.clone().map(|s| {
        tokio::spawn(crate::slurm::run(
            store.clone(),
            s,
            grpc_addr,
            allocations.clone(),
            stop_rx.clone(),
        ))
    });
    // Resolves only with `exit_when_done`, once the watched sweeps have finished.
    let progress = async {
        match opts.display.clone() {
            Some(display) => {
                let m = MonitorOptions {
                    display,
                    sweeps: opts.sweeps.clone(),
                    dashboard_url: dashboard_url.clone(),
                    login_url: login_url.clone(),
                    exit_when_done: opts.exit_when_done,
                };
                monitor::run(store.clone(), m).await;
            }
            None if opts.exit_when_done => drained(&store, &opts.sweeps).await,
            None => std::future::pending().await,
        }
    };

    let mut grpc_done = None;
    let stopped = tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            Stopped::Signal
        }
        () = progress => {
            tracing::info!("every job has finished");
            Stopped::Drained
        }
        r = http_task => {
            http_task_failed(r);
            Stopped::Signal
        }
        r = &mut grpc_task => {
            tracing::error!("gRPC service stopped");
            grpc_done = Some(r);
            Stopped::Signal
        }
    };
    // Workers hand their jobs back first, while the gRPC service is still there to take them.
    let _ = stop_tx.send(true);
    for w in workers {
        if let Err(e) = w.await {
            tracing::warn!(error = %e, "local worker supervisor panicked");
        }
    }
    // Slurm's workers too: every allocation is cancelled, its worker gets SIGTERM.
    if let Some(task) = slurm {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "slurm auto-allocation stopped"),
            Err(e) => tracing::warn!(error = %e, "slurm auto-allocation panicked"),
        }
    }
    let _ = grpc_stop_tx.send(true);
    let grpc_result = match grpc_done {
        Some(r) => r,
        None => grpc_task.await,
    };
    match grpc_result {
        Ok(r) => r?,
        Err(e) => tracing::warn!(error = %e, "gRPC task panicked"),
    }
    Ok(Served {
        stopped,
        dashboard_url,
    })
}

/// `/metrics` reads the store and the artifact directory, and asks for the gRPC token.
fn metrics_config(
    store: &Store,
    opts: &ServeOptions,
    allocations: &Allocations,
) -> crate::obs::endpoint::MetricsConfig {
    crate::obs::endpoint::MetricsConfig {
        store: store.clone(),
        token: opts.grpc.token.clone(),
        artifact_dir: opts.grpc.artifact_dir.clone(),
        connected_within: opts.grpc.sched.lease_ttl * 2,
        allocations: opts.slurm.is_some().then(|| allocations.clone()),
    }
}

fn http_task_failed(r: Result<std::io::Result<()>, tokio::task::JoinError>) {
    match r {
        Ok(Err(e)) => tracing::error!(error = %e, "dashboard server failed"),
        _ => tracing::error!("dashboard server stopped"),
    }
}

/// Resolves once no watched sweep has a job queued or running.
async fn drained(store: &Store, sweeps: &[String]) {
    loop {
        match crate::web::convert::sweeps(store).await {
            Ok(all)
                if crate::progress::watched(&all, sweeps)
                    .iter()
                    .all(|s| crate::progress::is_finished(&s.counts)) =>
            {
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading status"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(grpc: &str, http: &str, token: Option<&str>) -> ServeOptions {
        let mut g = GrpcConfig::new(grpc.parse().unwrap(), std::path::Path::new("/tmp/x.db"));
        g.token = token.map(str::to_owned);
        ServeOptions {
            grpc: g,
            http_addr: http.parse().unwrap(),
            local_workers: 0,
            data_dir: None,
            work_root: PathBuf::from("/tmp/x.workers"),
            worker_bin: None,
            exit_when_done: false,
            http_limits: ConnLimits::default(),
            sweeps: Vec::new(),
            display: None,
            token_file: None,
            public_dashboard: false,
            slurm: None,
        }
    }

    #[test]
    fn exposed_addresses_need_a_token() {
        assert!(check_exposure(&opts("127.0.0.1:1", "127.0.0.1:2", None)).is_ok());
        assert!(check_exposure(&opts("[::1]:1", "127.0.0.1:2", None)).is_ok());
        let err = check_exposure(&opts("0.0.0.0:1", "127.0.0.1:2", None)).unwrap_err();
        assert!(matches!(
            err,
            ServeError::TokenRequired {
                what: "--grpc-addr",
                ..
            }
        ));
        let err = check_exposure(&opts("127.0.0.1:1", "192.0.2.7:2", Some(""))).unwrap_err();
        assert!(err.to_string().contains("--http-addr"), "{err}");
        assert!(check_exposure(&opts("0.0.0.0:1", "0.0.0.0:2", Some("s3cret"))).is_ok());
    }
}
