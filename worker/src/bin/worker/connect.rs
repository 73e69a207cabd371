//! `worker --coordinator URL`: builds the Burn devices the agent's slots train on and runs
//! the agent until SIGTERM / Ctrl-C (or, with `--exit-on-stdin-close`, until stdin closes).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use worker::agent::{self, cli::AgentArgs, cli::DeviceChoice};

/// After stdin closed (the parent coordinator is gone), how long the agent may try to hand its
/// jobs back before the process exits anyway: nobody may be left to answer.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs the agent; returns once every slot has handed its job back after a shutdown signal.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let watch_stdin = args.exit_on_stdin_close;
    let (cfg, choice) = args.into_config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let shutdown: Shutdown = if watch_stdin {
        let closed = stdin_closed();
        Box::pin(async move {
            tokio::select! {
                () = agent::shutdown_signal() => {}
                () = closed => {}
            }
        })
    } else {
        Box::pin(agent::shutdown_signal())
    };
    match choice {
        DeviceChoice::Cpu { slots } => {
            tracing::info!(slots, coordinator = %cfg.coordinator, "worker starting on the CPU (Burn Flex)");
            rt.block_on(agent::run_cpu(cfg, shutdown))?;
        }
        DeviceChoice::Cuda(indices) => run_cuda(&rt, cfg, &indices, shutdown)?,
    }
    Ok(())
}

/// Resolves once stdin reaches end of file (or fails), and from then on makes sure the process
/// ends within [`ORPHAN_GRACE`]. A plain thread reads stdin: tokio's stdin would keep the
/// runtime from shutting down while a read is pending.
fn stdin_closed() -> impl Future<Output = ()> + Send {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot watch stdin; --exit-on-stdin-close is inactive");
    }
    async move {
        if rx.await.is_err() {
            // The watcher could not start: never resolve rather than stop at once.
            std::future::pending::<()>().await;
        }
        tracing::warn!(
            grace_secs = ORPHAN_GRACE.as_secs(),
            "stdin closed: the coordinator that started this worker is gone; shutting down"
        );
        std::thread::spawn(|| {
            std::thread::sleep(ORPHAN_GRACE);
            tracing::error!("jobs not handed back in time; exiting");
            std::process::exit(1);
        });
    }
}

#[cfg(feature = "cuda")]
fn run_cuda(
    rt: &tokio::runtime::Runtime,
    cfg: agent::AgentConfig,
    indices: &[u32],
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let devices = indices
        .iter()
        .map(|&i| crate::cli::cuda_device(i).with_context(|| format!("--devices {i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tracing::info!(?indices, coordinator = %cfg.coordinator, "worker starting on CUDA");
    rt.block_on(agent::run::<burn::backend::Autodiff<burn::backend::Cuda>>(
        cfg, devices, shutdown,
    ))?;
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(
    _rt: &tokio::runtime::Runtime,
    _cfg: agent::AgentConfig,
    _indices: &[u32],
    _shutdown: Shutdown,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "--devices: this worker was built without CUDA support (rebuild with `--features cuda`, or use --cpu)"
    )
}
