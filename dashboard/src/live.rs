//! Live updates: one poller of the data source's change token, shared by every connected
//! browser (a `watch` channel fans the token out), running only while someone listens.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::data::DashboardData;

/// The shared poller. Cheap to clone into handlers behind an `Arc`.
pub(crate) struct LiveHub {
    data: Arc<dyn DashboardData>,
    period: Duration,
    /// The latest token; `None` until the first successful poll.
    tx: watch::Sender<Option<String>>,
    /// Whether a poll task is running. Checked together with the receiver count under this
    /// lock, so a subscriber arriving as the poller quits always finds a poller.
    running: Mutex<bool>,
}

impl LiveHub {
    pub fn new(data: Arc<dyn DashboardData>, period: Duration) -> Arc<LiveHub> {
        Arc::new(LiveHub {
            data,
            period,
            tx: watch::channel(None).0,
            running: Mutex::new(false),
        })
    }

    /// A receiver of the token; starts the poller if it is not running. Call inside a Tokio
    /// runtime.
    pub(crate) fn subscribe(self: &Arc<Self>) -> watch::Receiver<Option<String>> {
        let rx = self.tx.subscribe();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if !*running {
            *running = true;
            tokio::spawn(self.clone().poll());
        }
        rx
    }

    async fn poll(self: Arc<Self>) {
        loop {
            match self.data.change_token().await {
                Ok(t) => {
                    self.tx.send_if_modified(|cur| {
                        let changed = cur.as_ref() != Some(&t);
                        if changed {
                            *cur = Some(t);
                        }
                        changed
                    });
                }
                Err(e) => tracing::warn!(error = %e, "live updates: change token failed"),
            }
            tokio::time::sleep(self.period).await;
            {
                let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                if self.tx.receiver_count() == 0 {
                    *running = false;
                    // The next subscriber must not take a token from before the pause as current.
                    self.tx.send_replace(None);
                    return;
                }
            }
        }
    }
}
