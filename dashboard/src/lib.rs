//! Server-rendered Leptos dashboard of latentsweep: sweeps, runs, latent spaces, workers and
//! result tables, served by axum. It reads everything through the [`DashboardData`] trait, so it
//! knows nothing of the database or the RPC layer.
//!
//! ```ignore
//! let app = dashboard::router(Arc::new(my_data));
//! axum::serve(tokio::net::TcpListener::bind("127.0.0.1:0").await?, app).await?;
//! ```

pub mod act;
pub mod anim;
pub mod auth;
pub mod data;
pub mod export;
pub(crate) mod geometry;
pub mod live;
pub mod pages;
pub mod plot;
pub mod server;
pub mod stats;
pub mod table;

pub use auth::{Action, Viewer};
pub use data::{
    Allocation, AttemptInfo, AttemptState, CurrentJob, DashboardData, DataError, DataFuture,
    JobCounts, JobState, MetricPoint, RunDetail, RunRow, Snapshot, SweepDetail, SweepSummary,
    WorkerInfo,
};
pub use server::router;
