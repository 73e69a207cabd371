//! `--local-workers N`: CPU workers inside the coordinator process, connected to it over real
//! gRPC on 127.0.0.1 exactly like remote ones.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use worker::agent::{self, AgentConfig, AgentError};

/// Options of the local workers.
#[derive(Debug, Clone)]
pub struct LocalWorkers {
    pub count: usize,
    /// The coordinator's gRPC address (a loopback one).
    pub grpc_addr: SocketAddr,
    pub token: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Each worker gets `work_root/local-<i>/`.
    pub work_root: PathBuf,
}

/// Starts `count` single-slot CPU agents; they stop (handing their jobs back) when `shutdown`
/// becomes true. Join the handles to wait for them.
pub fn spawn_local_workers(
    opts: &LocalWorkers,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<Result<(), AgentError>>> {
    // A wildcard listen address is reachable on loopback.
    let ip = if opts.grpc_addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        opts.grpc_addr.ip()
    };
    let url = format!("http://{}", SocketAddr::new(ip, opts.grpc_addr.port()));
    (0..opts.count)
        .map(|i| {
            let mut cfg =
                AgentConfig::cpu(url.clone(), 1, opts.work_root.join(format!("local-{i}")));
            cfg.name = format!("local-{i}");
            cfg.token = opts.token.clone();
            cfg.data_dir = opts.data_dir.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let signal = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                agent::run_cpu(cfg, Box::pin(signal)).await
            })
        })
        .collect()
}
