//! The states of jobs and attempts, as stored in `jobs.state` and `attempts.state` and shown on
//! every page, and the count of a sweep's jobs by state. One spelling for the store, the
//! scheduler, the dashboard and the CLI.

use serde::Serialize;

named_enum!(
    /// Where a job is in its life: `queued` → `running` → `done` / `failed` (or back to
    /// `queued` for a retry); `cancelled` by an operator from any state but `done`.
    JobState, "job state" {
    Queued => "queued",
    Running => "running",
    Done => "done",
    Failed => "failed",
    Cancelled => "cancelled",
});

named_enum!(
    /// How an attempt stands: `running` while leased, then how it ended; `expired` when its
    /// lease ran out, `released` when its worker handed it back.
    AttemptState, "attempt state" {
    Running => "running",
    Done => "done",
    Failed => "failed",
    Expired => "expired",
    Released => "released",
    Cancelled => "cancelled",
});

/// Jobs of a sweep by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    pub queued: u64,
    pub running: u64,
    pub done: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl JobCounts {
    pub fn total(&self) -> u64 {
        self.queued + self.running + self.done + self.failed + self.cancelled
    }

    /// The count of one state.
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Queued => self.queued,
            JobState::Running => self.running,
            JobState::Done => self.done,
            JobState::Failed => self.failed,
            JobState::Cancelled => self.cancelled,
        }
    }

    /// Adds `n` jobs in `state`.
    pub fn add(&mut self, state: JobState, n: u64) {
        let slot = match state {
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::Done => &mut self.done,
            JobState::Failed => &mut self.failed,
            JobState::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(*s));
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        for s in AttemptState::ALL {
            assert_eq!(s.as_str().parse::<AttemptState>(), Ok(*s));
        }
        let e = "paused".parse::<JobState>().unwrap_err().to_string();
        assert!(e.contains("job state") && e.contains("cancelled"), "{e}");
    }

    #[test]
    fn counts_add_up_by_state() {
        let mut c = JobCounts::default();
        for (i, s) in JobState::ALL.iter().enumerate() {
            c.add(*s, i as u64 + 1);
        }
        assert_eq!(c.total(), 15);
        assert_eq!(c.get(JobState::Cancelled), 5);
        assert_eq!(c.queued, 1);
    }
}
