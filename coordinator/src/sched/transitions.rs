//! The job state machine as seen from attempts: given how an attempt ended and what the job
//! looked like, decide the job's next state.

use proto::{AttemptState, JobState};

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptEnd {
    Done,
    Failed {
        error: String,
        retryable: bool,
    },
    /// Its lease ran out: the worker died, hung or lost the network for a whole TTL.
    Expired {
        worker: Option<i64>,
    },
    /// The worker handed the job back (shutdown); not the job's fault.
    Released,
    /// Cancelled by an operator.
    Cancelled,
}

impl AttemptEnd {
    /// Value of `attempts.state` after this end.
    pub(crate) fn attempt_state(&self) -> AttemptState {
        match self {
            AttemptEnd::Done => AttemptState::Done,
            AttemptEnd::Failed { .. } => AttemptState::Failed,
            AttemptEnd::Expired { .. } => AttemptState::Expired,
            AttemptEnd::Released => AttemptState::Released,
            AttemptEnd::Cancelled => AttemptState::Cancelled,
        }
    }

    /// Whether this end uses up one of the job's attempts.
    pub(crate) fn counts_as_failure(&self) -> bool {
        matches!(self, AttemptEnd::Failed { .. } | AttemptEnd::Expired { .. })
    }

    /// Text stored in `attempts.error` and, for failures, `jobs.last_error`.
    pub(crate) fn error_text(&self) -> Option<String> {
        match self {
            AttemptEnd::Failed { error, .. } => Some(error.clone()),
            AttemptEnd::Expired { worker: Some(w) } => {
                Some(format!("lease expired: worker {w} stopped heartbeating"))
            }
            AttemptEnd::Expired { worker: None } => Some("lease expired".into()),
            _ => None,
        }
    }
}

/// The job as far as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobView {
    /// `jobs.state`.
    pub state: JobState,
    /// Failed or expired attempts BEFORE the one that is ending.
    pub failures: u32,
    pub max_attempts: u32,
}

/// What to do with the job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JobNext {
    Done,
    /// Back to the queue; `last_error` is kept (or set) when the attempt failed.
    Requeue {
        last_error: Option<String>,
    },
    Fail {
        last_error: String,
    },
    /// The job already left `running` (e.g. cancelled): only the attempt row changes.
    Unchanged,
}

/// Decides the job's next state when one of its attempts ends.
pub(crate) fn after_attempt(job: &JobView, end: &AttemptEnd) -> JobNext {
    if job.state != JobState::Running {
        return JobNext::Unchanged;
    }
    match end {
        AttemptEnd::Done => JobNext::Done,
        AttemptEnd::Released => JobNext::Requeue { last_error: None },
        // Cancelling a job moves it to `cancelled` before its attempt ends; an attempt
        // cancelled on its own (e.g. by a stale worker) just goes back to the queue.
        AttemptEnd::Cancelled => JobNext::Requeue { last_error: None },
        AttemptEnd::Failed {
            retryable: false,
            error,
        } => JobNext::Fail {
            last_error: error.clone(),
        },
        AttemptEnd::Failed {
            retryable: true, ..
        }
        | AttemptEnd::Expired { .. } => {
            let error = end.error_text().unwrap_or_default();
            if job.failures + 1 >= job.max_attempts.max(1) {
                JobNext::Fail { last_error: error }
            } else {
                JobNext::Requeue {
                    last_error: Some(error),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(failures: u32, max_attempts: u32) -> JobView {
        JobView {
            state: JobState::Running,
            failures,
            max_attempts,
        }
    }

    #[test]
    fn expiry_requeues_until_attempts_run_out() {
        let end = AttemptEnd::Expired { worker: Some(7) };
        assert!(matches!(
            after_attempt(&running(0, 3), &end),
            JobNext::Requeue {
                last_error: Some(_)
            }
        ));
        assert!(matches!(
            after_attempt(&running(1, 3), &end),
            JobNext::Requeue { .. }
        ));
        match after_attempt(&running(2, 3), &end) {
            JobNext::Fail { last_error } => {
                assert!(last_error.contains("worker 7"), "{last_error}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failures_keep_the_last_error() {
        let end = AttemptEnd::Failed {
            error: "diverged at step 3 (loss=NaN)".into(),
            retryable: true,
        };
        assert_eq!(
            after_attempt(&running(2, 3), &end),
            JobNext::Fail {
                last_error: "diverged at step 3 (loss=NaN)".into()
            }
        );
        let fatal = AttemptEnd::Failed {
            error: "bad params".into(),
            retryable: false,
        };
        assert!(matches!(
            after_attempt(&running(0, 3), &fatal),
            JobNext::Fail { .. }
        ));
    }

    #[test]
    fn release_never_counts() {
        assert!(!AttemptEnd::Released.counts_as_failure());
        assert_eq!(
            after_attempt(&running(2, 3), &AttemptEnd::Released),
            JobNext::Requeue { last_error: None }
        );
    }

    #[test]
    fn ended_jobs_stay_put() {
        let cancelled = JobView {
            state: JobState::Cancelled,
            failures: 0,
            max_attempts: 3,
        };
        assert_eq!(
            after_attempt(&cancelled, &AttemptEnd::Done),
            JobNext::Unchanged
        );
        assert_eq!(
            after_attempt(&cancelled, &AttemptEnd::Expired { worker: None }),
            JobNext::Unchanged
        );
        assert_eq!(
            after_attempt(&running(0, 3), &AttemptEnd::Done),
            JobNext::Done
        );
    }

    #[test]
    fn zero_max_attempts_still_allows_one() {
        let end = AttemptEnd::Expired { worker: None };
        assert!(matches!(
            after_attempt(&running(0, 0), &end),
            JobNext::Fail { .. }
        ));
    }
}
