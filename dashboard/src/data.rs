//! The data the dashboard needs, declared as a trait its host (the coordinator) implements.
//!
//! Everything here is plain data: the dashboard knows nothing of SQL or gRPC. Futures are boxed
//! so that the trait stays usable as `Arc<dyn DashboardData>`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use proto::{AttemptState, JobCounts, JobState};
use serde::Serialize;

/// A boxed, sendable future returned by every [`DashboardData`] method.
pub type DataFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DataError>> + Send + 'a>>;

/// Failure of the data source: logged with this text; visitors get a 500 page with a generic
/// message.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data source: {0}")]
    Source(String),
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// Data source of the dashboard.
pub trait DashboardData: Send + Sync + 'static {
    /// Every sweep with its progress, in display order.
    fn sweeps(&self) -> DataFuture<'_, Vec<SweepSummary>>;
    /// One sweep with all of its runs, or `None` if no sweep has this name. Shared, so that a
    /// source may cache it between requests (the live view re-renders it often).
    fn sweep<'a>(&'a self, name: &'a str) -> DataFuture<'a, Option<Arc<SweepDetail>>>;
    /// One run with its attempts, or `None` if no job has this id.
    fn run(&self, job_id: i64) -> DataFuture<'_, Option<RunDetail>>;
    /// Every metric point of a run (all attempts), in no particular order.
    fn metrics(&self, job_id: i64) -> DataFuture<'_, Vec<MetricPoint>>;
    /// Every embedding snapshot of these runs (all epochs), in no particular order.
    fn snapshots<'a>(&'a self, job_ids: &'a [i64]) -> DataFuture<'a, Vec<Snapshot>>;
    /// Registered workers with the jobs they are running.
    fn workers(&self) -> DataFuture<'_, Vec<WorkerInfo>>;
    /// Test-split image `index` of `dataset` (as named in the run parameters) encoded as PNG, or
    /// `None` when the index is out of range.
    fn test_image<'a>(&'a self, dataset: &'a str, index: u32) -> DataFuture<'a, Option<Vec<u8>>>;
    /// A cheap value that changes whenever anything shown by the dashboard may have changed;
    /// drives the live-update event stream.
    fn change_token(&self) -> DataFuture<'_, String>;
    /// Carries out a visitor's action: what it did, or `None` when the sweep or job does not
    /// exist. A read-only source keeps this default, which refuses.
    fn act(&self, action: crate::auth::Action) -> DataFuture<'_, Option<String>> {
        Box::pin(async move {
            Err(DataError::Source(format!(
                "this dashboard is read-only ({action:?})"
            )))
        })
    }
    /// Worker jobs the host submitted to a batch system (Slurm auto-allocation) and still
    /// tracks; none when it submits none.
    fn allocations(&self) -> DataFuture<'_, Vec<Allocation>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// A sweep and its progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepSummary {
    pub id: i64,
    pub name: String,
    /// `active` or `paused`.
    pub state: String,
    pub priority: i64,
    pub created_at_ms: i64,
    pub counts: JobCounts,
    /// Mean wall time of the successful attempts so far (for the ETA).
    pub mean_job_ms: Option<f64>,
}

/// A sweep with its runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepDetail {
    pub summary: SweepSummary,
    /// Text of the last submitted sweep file.
    pub spec_text: String,
    /// Every run (job) of the sweep, in expansion order.
    pub runs: Vec<RunRow>,
}

/// One run (a job of a sweep) with its parameters and final metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub job_id: i64,
    /// Expansion order within the sweep.
    pub seq: i64,
    pub state: JobState,
    pub attempts: i64,
    /// Parameters in canonical order; values are JSON scalars (`null` when not applicable).
    pub params: Vec<(String, serde_json::Value)>,
    /// Final metrics (empty until the run is done).
    pub metrics: BTreeMap<String, f64>,
    pub last_error: Option<String>,
}

impl RunRow {
    /// The value of a parameter, if the run has it.
    pub fn param(&self, name: &str) -> Option<&serde_json::Value> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// A run with its history.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDetail {
    pub sweep_name: String,
    pub run: RunRow,
    pub attempts: Vec<AttemptInfo>,
}

/// One attempt at a run.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptInfo {
    pub id: i64,
    pub number: i64,
    /// Worker name, if the attempt was leased by a registered worker.
    pub worker: Option<String>,
    pub state: AttemptState,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub error: Option<String>,
}

/// One stored metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub attempt_id: i64,
    pub step: i64,
    pub epoch: i64,
    pub name: String,
    pub value: f64,
}

/// A 2-D embedding snapshot of a fixed test subset.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub job_id: i64,
    pub attempt_id: i64,
    pub epoch: i64,
    /// Which projection drew the points (`Identity` when the embedding is 2-D).
    pub projection: proto::SnapshotProjection,
    pub points: Vec<[f32; 2]>,
    pub labels: Vec<u32>,
    /// Positions of the points in the test split.
    pub indices: Vec<u32>,
    /// Class names; index = label.
    pub class_names: Vec<String>,
}

/// A worker job submitted to a batch system (one worker each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The batch system's job id.
    pub id: String,
    /// queued | starting | running | cancelling.
    pub state: String,
    /// The name its worker registers under.
    pub worker: String,
    /// Its worker runs a job now.
    pub busy: bool,
    pub submitted_at_ms: i64,
}

/// A registered worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    pub id: i64,
    pub name: String,
    pub host: String,
    pub backend: String,
    /// Devices as reported (one display string each).
    pub devices: Vec<String>,
    pub version: String,
    pub registered_at_ms: i64,
    pub last_seen_at_ms: i64,
    /// Running attempts leased by this worker.
    pub current: Vec<CurrentJob>,
}

/// A job a worker is running.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentJob {
    pub job_id: i64,
    pub sweep_name: String,
    pub attempt_number: i64,
    pub started_at_ms: i64,
    /// Short parameter label of the run.
    pub label: String,
}
