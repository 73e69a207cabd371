//! Training library of the worker: data sets, samplers, networks, losses and the training
//! loop, generic over any Burn autodiff backend. It knows nothing of gRPC: callers get
//! [`TrainEvent`]s through a callback and stop a run with a [`CancelToken`].

pub(crate) mod checkpoint;
pub mod data;
mod engine;
pub(crate) mod eval;
mod event_metrics;
pub(crate) mod loss;
pub mod model;
pub(crate) mod sampler;
mod select;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proto::SnapshotProjection;
use serde::{Deserialize, Serialize};

pub use data::DataError;
pub use engine::{STEP_EVENT_EVERY, run};
pub use event_metrics::EventMetrics;

/// The CPU backend used by `worker train` and the tests.
pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;

/// A backend the training loop runs on: autodiff, with the fused kernels of
/// [`model::fused`] (where it has them) both under autodiff and for evaluation.
pub trait TrainBackend:
    burn::tensor::backend::AutodiffBackend<InnerBackend: model::fused::FusedBlock>
    + model::fused::FusedBlock
{
}

impl<B> TrainBackend for B where
    B: burn::tensor::backend::AutodiffBackend<InnerBackend: model::fused::FusedBlock>
        + model::fused::FusedBlock
{
}

/// One training run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub params: proto::JobParams,
    /// Where data sets are looked up and downloaded to (see [`data::builtin`]).
    pub data_dir: Option<PathBuf>,
    /// Checkpoints are written under `work_dir/checkpoints/`.
    pub work_dir: PathBuf,
    /// A checkpoint file (as announced by [`TrainEvent::Checkpoint`]) to resume from.
    pub resume_from: Option<PathBuf>,
}

/// Progress reported by [`run`], in order. Epochs are 1-based; epoch 0 is the untrained net.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    /// Every [`STEP_EVENT_EVERY`] steps; `loss` is the mean since the previous Step event.
    Step {
        epoch: u32,
        step: u64,
        loss: f64,
        lr: f64,
    },
    /// End of an epoch; `loss` is the epoch's mean, `samples_per_sec` counts training anchors
    /// (images, pairs or triplets) and excludes evaluation and the first batches.
    Epoch {
        epoch: u32,
        step: u64,
        loss: f64,
        lr: f64,
        samples_per_sec: f64,
        epoch_secs: f64,
        /// `mean_embedding_norm`, `active_fraction` (see `train::loss` for "active").
        health: BTreeMap<String, f64>,
    },
    /// Metrics of `eval::evaluate` on the test split.
    Eval {
        epoch: u32,
        step: u64,
        metrics: BTreeMap<String, f64>,
    },
    Snapshot(Snapshot),
    /// A self-contained checkpoint (model + optimizer + epoch) was written.
    Checkpoint {
        epoch: u32,
        path: PathBuf,
    },
}

/// 2-D view of a fixed, class-stratified subset of the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub epoch: u32,
    /// Which projection drew the points (`Identity` when the embedding has at most 2 dimensions).
    pub projection: SnapshotProjection,
    pub points: Vec<[f32; 2]>,
    pub labels: Vec<u32>,
    /// Positions in the test split.
    pub indices: Vec<u32>,
    pub class_names: Vec<String>,
}

/// Cooperative cancellation, checked once per training step.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How a run ended (errors are [`TrainError`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Final metrics: the selected evaluation's keys (see `train::select`: the best epoch on
    /// validation, else the last), plus `best_epoch` when selected on validation,
    /// `samples_per_sec`, `epochs` and the last evaluation's `collapsed`.
    Finished { metrics: BTreeMap<String, f64> },
    /// Stopped by the [`CancelToken`]; `checkpoint` is the last finished epoch's (or the one the
    /// run resumed from), if any.
    Cancelled { checkpoint: Option<SavedCheckpoint> },
}

/// A checkpoint file training wrote (or resumed from): self-contained (see `train::checkpoint`).
#[derive(Debug, Clone, PartialEq)]
pub struct SavedCheckpoint {
    /// The last epoch it has trained; a resume starts at the next one.
    pub epoch: u32,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("diverged at step {step} (loss={loss})")]
    Diverged { step: u64, loss: f64 },
    #[error("data set: {0}")]
    Data(#[from] DataError),
    #[error("invalid job: {0}")]
    Config(String),
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
