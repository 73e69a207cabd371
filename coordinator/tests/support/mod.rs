//! The one support module of the coordinator's integration tests: `builder` (fixture databases
//! through the real store API, a small HTTP client), `grpc` (a real coordinator on 127.0.0.1:0,
//! real clients, database checks), `pki` (certificates made at test time), `proc` (child
//! `coordinator` / `worker` processes), `slurm` (a real one-node Slurm cluster), and here
//! the data sets and a worker's first report.
//!
//! Where the tests find their data sets: `../shared/datasets` of this workplace
//! when it is there, otherwise the worker's own checksummed download of MNIST into the cache
//! `worker train` uses. `LATENTSWEEP_SHARED_DATASETS` replaces the `../shared/datasets` path
//! (a missing directory forces the download); `LATENTSWEEP_MNIST_MIRROR` replaces the mirror.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod builder;
pub mod grpc;
pub mod pki;
pub mod proc;
pub mod slurm;

use std::path::{Path, PathBuf};

use proto::metric;
use worker::train::data::builtin::{self, Builtin};

/// A directory holding `mnist/` with the four MNIST files: usable as the dashboard's data dir.
pub fn datasets_dir() -> PathBuf {
    let shared = match std::env::var_os("LATENTSWEEP_SHARED_DATASETS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"),
    };
    if shared.join("mnist").is_dir() {
        return shared;
    }
    builtin::locate(Builtin::Mnist, None, None).unwrap_or_else(|e| {
        panic!(
            "MNIST is not in {} and could not be downloaded: {e}. Either put it in \
             ../shared/datasets/mnist beside the repository (or point LATENTSWEEP_SHARED_DATASETS \
             at a directory holding mnist/), or run the tests on a machine that reaches the \
             public mirror (or set LATENTSWEEP_MNIST_MIRROR to a mirror serving the canonical \
             files), so that it is downloaded and verified into the cache",
            shared.display()
        )
    });
    builtin::cache_root(None).unwrap()
}

/// What a worker's first report does to the running attempt: one `loss` point, so a live page
/// has a change to announce. Returns the attempt's job id.
pub async fn report_a_loss_point(store: &coordinator::store::Store) -> i64 {
    use coordinator::store::{MetricPoint, now_ms};
    let (job, attempt): (i64, i64) =
        sqlx::query_as("SELECT job_id, id FROM attempts WHERE state = 'running'")
            .fetch_one(store.reader())
            .await
            .unwrap();
    store
        .record_metrics(
            proto::JobId(job),
            proto::AttemptId(attempt),
            0,
            &[MetricPoint {
                step: 1,
                epoch: 1,
                name: metric::LOSS.into(),
                value: 0.5,
                time_ms: now_ms(),
            }],
        )
        .await
        .unwrap();
    job
}
