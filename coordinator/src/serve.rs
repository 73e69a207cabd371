//! Serving mode: the gRPC service, the dashboard and optional local worker processes, run
//! together until a shutdown signal (or, with `exit_when_done`, until the queue drains).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::grpc::{self, GrpcConfig};
use crate::local::{LocalError, LocalWorkers, spawn_local_workers};
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
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Grpc(#[from] grpc::ServeError),
    #[error("cannot listen on {0} for the dashboard: {1}")]
    HttpBind(SocketAddr, #[source] std::io::Error),
    #[error("dashboard server: {0}")]
    Http(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Local(#[from] LocalError),
}

/// Serves until `shutdown` resolves (or the queue drains, with `exit_when_done`).
pub async fn run(
    store: Store,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let grpc_listener = TcpListener::bind(opts.grpc.addr)
        .await
        .map_err(|e| ServeError::Grpc(grpc::ServeError::Bind(opts.grpc.addr, e)))?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|e| ServeError::HttpBind(opts.grpc.addr, e))?;
    let http_listener = TcpListener::bind(opts.http_addr)
        .await
        .map_err(|e| ServeError::HttpBind(opts.http_addr, e))?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|e| ServeError::HttpBind(opts.http_addr, e))?;
    tracing::info!(%grpc_addr, dashboard = %format!("http://{http_addr}/"), "coordinator serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    // The gRPC service stops only after the local workers: they hand their jobs back through it.
    let (grpc_stop_tx, mut grpc_stop) = watch::channel(false);
    let grpc_task = tokio::spawn(grpc::serve_on(
        grpc_listener,
        store.clone(),
        opts.grpc.clone(),
        async move {
            let _ = grpc_stop.wait_for(|s| *s).await;
        },
    ));
    let http_task = tokio::spawn(crate::web::serve(
        http_listener,
        store.clone(),
        opts.data_dir.clone(),
    ));
    let workers = spawn_local_workers(
        &LocalWorkers {
            count: opts.local_workers,
            grpc_addr,
            token: opts.grpc.token.clone(),
            data_dir: opts.data_dir.clone(),
            work_root: opts.work_root.clone(),
            worker_bin: opts.worker_bin.clone(),
        },
        stop_rx.clone(),
    )?;

    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        () = drained(&store), if opts.exit_when_done => tracing::info!("every job has finished"),
        r = http_task => match r {
            Ok(Err(e)) => return Err(ServeError::Http(e)),
            _ => tracing::error!("dashboard server stopped"),
        },
    }
    // Workers hand their jobs back first, while the gRPC service is still there to take them.
    let _ = stop_tx.send(true);
    for w in workers {
        if let Err(e) = w.await {
            tracing::warn!(error = %e, "local worker supervisor panicked");
        }
    }
    let _ = grpc_stop_tx.send(true);
    match grpc_task.await {
        Ok(r) => r?,
        Err(e) => tracing::warn!(error = %e, "gRPC task panicked"),
    }
    Ok(())
}

/// Resolves once no job is queued or running.
async fn drained(store: &Store) {
    loop {
        match store.status().await {
            Ok(sweeps) if sweeps.iter().all(|s| s.jobs.queued + s.jobs.running == 0) => return,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading status"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
