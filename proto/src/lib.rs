//! Shared contract of latentsweep: sweep files, job parameters, ids and the gRPC protocol.

pub mod ids;
pub mod metric;
pub mod params;
pub mod rpc;
pub mod sweep;

pub use ids::{AttemptId, JobId, LeaseToken, SweepId, WorkerId};
pub use params::{Dataset, JobKey, JobParams, Loss, Mining, Network, Optimizer};
