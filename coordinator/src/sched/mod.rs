//! Scheduling policy as plain functions over plain state (no I/O), in the spirit of
//! HyperQueue's scheduler: the store and the gRPC service feed it rows and apply its decisions.
//!
//! - `policy`: lease lifetimes, long-poll waits, the reaper's period;
//! - `transitions`: what happens to a job when one of its attempts ends;
//! - [`fencing`]: whether a worker may still speak for an attempt;
//! - [`heartbeat`]: which attempts a heartbeat renews, stops or releases;
//! - [`notices`]: which stop notices a worker has already been given;
//! - [`order`]: which queued job runs next, and which caller gets it;
//! - [`autoalloc`]: how many Slurm worker jobs to submit, and which idle ones to cancel.

pub mod autoalloc;
pub mod fencing;
pub mod heartbeat;
pub mod notices;
pub mod order;
pub(crate) mod policy;
pub(crate) mod transitions;

pub(crate) use fencing::{AttemptView, Fence};
pub(crate) use heartbeat::reconcile;
pub(crate) use notices::StopNotices;
pub(crate) use order::{Candidate, JOB_ORDER_SQL, SWEEP_ORDER_SQL};
pub(crate) use policy::DEFAULT_MAX_ATTEMPTS;
pub use policy::SchedConfig;
pub use transitions::AttemptEnd;
pub(crate) use transitions::{JobNext, JobView, after_attempt};
