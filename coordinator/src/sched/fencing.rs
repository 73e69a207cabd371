//! Fencing: only the worker holding an attempt's live lease may report for it, and nobody
//! after the attempt ended. A worker that lost its lease (and was replaced) is told to stop.

use std::fmt;

use proto::{AttemptState, LeaseToken};

/// An attempt as far as fencing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttemptView {
    pub id: i64,
    pub job: i64,
    pub worker: Option<i64>,
    /// `attempts.token`; `None` for an attempt leased before tokens existed.
    pub token: Option<LeaseToken>,
    /// `attempts.state`.
    pub state: AttemptState,
}

/// Why a worker may not speak for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    Unknown {
        attempt: i64,
    },
    OtherWorker {
        attempt: i64,
    },
    /// The attempt id was leased again (a database restored from a backup, or replaced): the
    /// request comes from an older lease of the same id.
    OtherLease {
        attempt: i64,
    },
    Ended {
        attempt: i64,
        state: AttemptState,
    },
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fence::Unknown { attempt } => write!(f, "attempt {attempt} does not exist"),
            Fence::OtherWorker { attempt } => {
                write!(f, "attempt {attempt} is leased to another worker")
            }
            Fence::OtherLease { attempt } => write!(
                f,
                "attempt {attempt}'s lease token does not match: it belongs to another lease \
                 (database restored or replaced?)"
            ),
            Fence::Ended { attempt, state } => {
                write!(f, "attempt {attempt} is no longer running ({state})")
            }
        }
    }
}

/// May `worker`, holding the lease `token`, report for this attempt now?
///
/// The token must equal the attempt's exactly: `None` only passes for an attempt leased before
/// tokens existed (`None` too). A worker that sends none for an attempt that has one is refused,
/// since nothing shows it holds this lease rather than one from before a restore.
pub(crate) fn check(
    attempt_id: i64,
    attempt: Option<&AttemptView>,
    worker: i64,
    token: Option<LeaseToken>,
) -> Result<(), Fence> {
    let a = attempt.ok_or(Fence::Unknown {
        attempt: attempt_id,
    })?;
    if a.token != token {
        return Err(Fence::OtherLease {
            attempt: attempt_id,
        });
    }
    if a.worker != Some(worker) {
        return Err(Fence::OtherWorker {
            attempt: attempt_id,
        });
    }
    if a.state != AttemptState::Running {
        return Err(Fence::Ended {
            attempt: attempt_id,
            state: a.state,
        });
    }
    Ok(())
}

/// Whether an end request (complete / fail / release) is a retry of one that already took
/// effect: the answer got lost, so the worker asks again and must get the same success.
pub(crate) fn is_repeat_of(
    attempt: &AttemptView,
    worker: i64,
    token: Option<LeaseToken>,
    wanted_state: AttemptState,
) -> bool {
    attempt.worker == Some(worker) && attempt.token == token && attempt.state == wanted_state
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: LeaseToken = LeaseToken(0xfeed);

    fn view(worker: i64, state: &str) -> AttemptView {
        AttemptView {
            id: 5,
            job: 1,
            worker: Some(worker),
            token: Some(T),
            state: state.parse().unwrap(),
        }
    }

    #[test]
    fn only_the_holder_of_a_running_attempt_passes() {
        assert_eq!(check(5, Some(&view(2, "running")), 2, Some(T)), Ok(()));
        assert_eq!(
            check(5, Some(&view(2, "running")), 3, Some(T)),
            Err(Fence::OtherWorker { attempt: 5 })
        );
        assert_eq!(
            check(5, Some(&view(2, "expired")), 2, Some(T)),
            Err(Fence::Ended {
                attempt: 5,
                state: AttemptState::Expired
            })
        );
        assert_eq!(
            check(5, None, 2, Some(T)),
            Err(Fence::Unknown { attempt: 5 })
        );
        assert!(
            check(5, Some(&view(2, "done")), 2, Some(T))
                .unwrap_err()
                .to_string()
                .contains("done")
        );
    }

    #[test]
    fn only_the_lease_token_of_the_attempt_passes() {
        let other = Fence::OtherLease { attempt: 5 };
        let running = view(2, "running");
        assert_eq!(
            check(5, Some(&running), 2, Some(LeaseToken(1))),
            Err(other.clone())
        );
        // No token from the worker cannot prove it holds this lease.
        assert_eq!(check(5, Some(&running), 2, None), Err(other.clone()));
        let untokened = AttemptView {
            token: None,
            ..running
        };
        assert_eq!(check(5, Some(&untokened), 2, None), Ok(()));
        assert_eq!(check(5, Some(&untokened), 2, Some(T)), Err(other.clone()));
        assert!(
            other
                .to_string()
                .contains("attempt 5's lease token does not match")
        );
        // A stale lease's end is no repeat of the end the current lease made.
        assert!(!is_repeat_of(
            &view(2, "done"),
            2,
            Some(LeaseToken(1)),
            AttemptState::Done
        ));
    }

    #[test]
    fn repeats_are_recognised() {
        assert!(is_repeat_of(
            &view(2, "done"),
            2,
            Some(T),
            AttemptState::Done
        ));
        assert!(!is_repeat_of(
            &view(2, "done"),
            3,
            Some(T),
            AttemptState::Done
        ));
        assert!(!is_repeat_of(
            &view(2, "expired"),
            2,
            Some(T),
            AttemptState::Done
        ));
    }
}
