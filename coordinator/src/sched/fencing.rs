//! Fencing: only the worker holding an attempt's live lease may report for it, and nobody
//! after the attempt ended. A worker that lost its lease (and was replaced) is told to stop.

use std::fmt;

/// An attempt as far as fencing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptView {
    pub id: i64,
    pub job: i64,
    pub worker: Option<i64>,
    /// `attempts.state`.
    pub state: String,
}

/// Why a worker may not speak for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    Unknown { attempt: i64 },
    OtherWorker { attempt: i64 },
    Ended { attempt: i64, state: String },
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fence::Unknown { attempt } => write!(f, "attempt {attempt} does not exist"),
            Fence::OtherWorker { attempt } => {
                write!(f, "attempt {attempt} is leased to another worker")
            }
            Fence::Ended { attempt, state } => {
                write!(f, "attempt {attempt} is no longer running ({state})")
            }
        }
    }
}

/// May `worker` report for this attempt now?
pub fn check(attempt_id: i64, attempt: Option<&AttemptView>, worker: i64) -> Result<(), Fence> {
    let a = attempt.ok_or(Fence::Unknown {
        attempt: attempt_id,
    })?;
    if a.worker != Some(worker) {
        return Err(Fence::OtherWorker {
            attempt: attempt_id,
        });
    }
    if a.state != "running" {
        return Err(Fence::Ended {
            attempt: attempt_id,
            state: a.state.clone(),
        });
    }
    Ok(())
}

/// Whether an end request (complete / fail / release) is a retry of one that already took
/// effect: the answer got lost, so the worker asks again and must get the same success.
pub fn is_repeat_of(attempt: &AttemptView, worker: i64, wanted_state: &str) -> bool {
    attempt.worker == Some(worker) && attempt.state == wanted_state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(worker: i64, state: &str) -> AttemptView {
        AttemptView {
            id: 5,
            job: 1,
            worker: Some(worker),
            state: state.into(),
        }
    }

    #[test]
    fn only_the_holder_of_a_running_attempt_passes() {
        assert_eq!(check(5, Some(&view(2, "running")), 2), Ok(()));
        assert_eq!(
            check(5, Some(&view(2, "running")), 3),
            Err(Fence::OtherWorker { attempt: 5 })
        );
        assert_eq!(
            check(5, Some(&view(2, "expired")), 2),
            Err(Fence::Ended {
                attempt: 5,
                state: "expired".into()
            })
        );
        assert_eq!(check(5, None, 2), Err(Fence::Unknown { attempt: 5 }));
        assert!(
            check(5, Some(&view(2, "done")), 2)
                .unwrap_err()
                .to_string()
                .contains("done")
        );
    }

    #[test]
    fn repeats_are_recognised() {
        assert!(is_repeat_of(&view(2, "done"), 2, "done"));
        assert!(!is_repeat_of(&view(2, "done"), 3, "done"));
        assert!(!is_repeat_of(&view(2, "expired"), 2, "done"));
    }
}
