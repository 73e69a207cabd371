//! Lease timing: how long a lease lives, how long a long-poll may wait, how often leases expire.

use std::time::Duration;

/// Lease time-to-live unless configured; every `Lease` call (the heartbeat) renews it.
pub(crate) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// Failed or expired attempts a job may use before it fails for good (the `jobs.max_attempts`
/// column holds the per-job value; this is what retries grant again).
pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Upper bound of one long-poll.
pub(crate) const MAX_LONG_POLL: Duration = Duration::from_secs(20);

/// Timing knobs of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedConfig {
    pub lease_ttl: Duration,
    pub max_long_poll: Duration,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            lease_ttl: DEFAULT_LEASE_TTL,
            max_long_poll: MAX_LONG_POLL,
        }
    }
}

impl SchedConfig {
    pub fn with_ttl(lease_ttl: Duration) -> Self {
        SchedConfig {
            lease_ttl,
            ..Self::default()
        }
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// When a lease granted or renewed at `now_ms` runs out.
    pub(crate) fn lease_expiry(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(self.ttl_ms())
    }

    /// How long a `Lease` call may block. A third of the TTL at most: the worker's next call,
    /// which renews its other leases, must come well before they run out.
    pub(crate) fn poll_wait(&self, requested_ms: u32) -> Duration {
        Duration::from_millis(u64::from(requested_ms))
            .min(self.max_long_poll)
            .min(self.lease_ttl / 3)
    }

    /// How often the coordinator looks for expired leases: a quarter of the TTL, kept between
    /// 50 ms (cheap query, but no busy loop) and 1 s (a job should not wait long to re-run).
    pub(crate) fn reaper_period(&self) -> Duration {
        (self.lease_ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// How often a worker should heartbeat when it has nothing to ask for.
    pub fn heartbeat_every(&self) -> Duration {
        self.lease_ttl / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_leave_room_for_renewal() {
        let c = SchedConfig::default();
        assert_eq!(c.poll_wait(60_000), Duration::from_secs(10));
        assert_eq!(c.poll_wait(500), Duration::from_millis(500));
        let short = SchedConfig::with_ttl(Duration::from_secs(2));
        assert!(short.poll_wait(20_000) < short.lease_ttl / 2);
        assert_eq!(short.reaper_period(), Duration::from_millis(500));
        assert_eq!(
            SchedConfig::with_ttl(Duration::from_millis(100)).reaper_period(),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn expiry_is_ttl_after_now() {
        let c = SchedConfig::with_ttl(Duration::from_secs(30));
        assert_eq!(c.lease_expiry(1_000), 31_000);
        assert_eq!(c.lease_expiry(i64::MAX - 5), i64::MAX);
    }
}
