//! What every attempt task of one registration shares: the configuration, the connection, the
//! worker's identity at the coordinator and the trainer. The attempt and its reporter both read
//! it, so it lives apart from either (neither module imports the other's internals).

use std::sync::Arc;

use super::client::Client;
use super::{AgentConfig, Trainer};

/// Everything an attempt task needs.
pub(crate) struct Ctx {
    pub(crate) cfg: Arc<AgentConfig>,
    pub(crate) client: Client,
    pub(crate) worker_id: i64,
    /// The database `worker_id` and every attempt leased through this `Ctx` belong to.
    pub(crate) database_id: String,
    pub(crate) trainer: Arc<dyn Trainer>,
}
