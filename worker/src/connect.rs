//! `worker --coordinator URL`: builds the Burn devices the agent's slots train on and runs
//! the agent until SIGTERM / Ctrl-C.

use anyhow::Context;
use worker::agent::{self, cli::AgentArgs, cli::DeviceChoice};

/// Runs the agent; returns once every slot has handed its job back after a shutdown signal.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let (cfg, choice) = args.into_config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match choice {
        DeviceChoice::Cpu { slots } => {
            tracing::info!(slots, coordinator = %cfg.coordinator, "worker starting on the CPU (Burn Flex)");
            rt.block_on(agent::run_cpu(cfg, Box::pin(agent::shutdown_signal())))?;
        }
        DeviceChoice::Cuda(indices) => run_cuda(&rt, cfg, &indices)?,
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn run_cuda(
    rt: &tokio::runtime::Runtime,
    cfg: agent::AgentConfig,
    indices: &[u32],
) -> anyhow::Result<()> {
    let devices = indices
        .iter()
        .map(|&i| crate::cli::cuda_device(i).with_context(|| format!("--devices {i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tracing::info!(?indices, coordinator = %cfg.coordinator, "worker starting on CUDA");
    rt.block_on(agent::run::<burn::backend::Autodiff<burn::backend::Cuda>>(
        cfg,
        devices,
        agent::shutdown_signal(),
    ))?;
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(
    _rt: &tokio::runtime::Runtime,
    _cfg: agent::AgentConfig,
    _indices: &[u32],
) -> anyhow::Result<()> {
    anyhow::bail!(
        "--devices: this worker was built without CUDA support (rebuild with `--features cuda`, or use --cpu)"
    )
}
