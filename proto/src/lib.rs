//! Shared contract of latentsweep: sweep files, job parameters, job and attempt states, ids and
//! the gRPC protocol.

#[macro_use]
mod named;

pub mod ids;
pub mod metric;
pub mod params;
pub mod rpc;
pub mod secret;
pub mod snapshot;
pub mod state;
pub mod sweep;

pub use ids::{AttemptId, JobId, LeaseToken, SweepId, WorkerId};
pub use params::{
    DEFAULT_VAL_FRACTION, Dataset, JobKey, JobParams, Loss, Mining, Network, Optimizer,
    PARAM_ORDER, Projection, Split,
};
pub use snapshot::SnapshotProjection;
pub use state::{AttemptState, JobCounts, JobState};
