//! Slurm auto-allocation decisions, in the manner of HyperQueue's autoallocator: given the
//! queue, the workers and the allocations already made, how many worker jobs to submit and
//! which idle ones to cancel. No I/O: `crate::slurm` observes Slurm and the store, calls
//! [`decide`] and carries out what it returns.
//!
//! One allocation runs one worker that takes one job at a time (`deploy/slurm/worker.sbatch`
//! with one array task), so capacity is counted in allocations.

/// Where an allocation is in its life, as Slurm reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocState {
    /// Submitted, waiting for resources (PENDING, CONFIGURING...).
    Queued,
    /// Running, its worker not yet connected.
    Starting,
    /// Running with a connected worker.
    Running,
    /// Asked to stop (scancel sent), not yet gone from Slurm.
    Cancelling,
}

impl AllocState {
    /// The name shown on the dashboard.
    pub fn as_str(self) -> &'static str {
        match self {
            AllocState::Queued => "queued",
            AllocState::Starting => "starting",
            AllocState::Running => "running",
            AllocState::Cancelling => "cancelling",
        }
    }
}

/// One allocation still known to Slurm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocView {
    /// Slurm's job id.
    pub id: String,
    pub state: AllocState,
    /// Its worker runs an attempt now.
    pub busy: bool,
    /// Since when (ms) it has run no attempt: when it last did, or when it started running.
    pub idle_since_ms: i64,
}

/// The limits given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocLimits {
    /// Allocations alive at once (`--slurm-max-workers`).
    pub max_workers: usize,
    /// An allocation whose worker leases nothing for this long is cancelled.
    pub idle_timeout_ms: i64,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllocActions {
    /// Worker jobs to submit.
    pub submit: usize,
    /// Allocations to cancel, in the order given.
    pub cancel: Vec<String>,
}

/// Decides from `queued` leasable jobs, `idle_workers` connected workers that run nothing
/// (including workers not started by us: they take queued jobs too), and the allocations.
///
/// Submits while queued jobs outnumber the workers that will take them (idle ones, and
/// allocations still queued or starting), up to `max_workers` alive; cancels running
/// allocations idle for `idle_timeout_ms` or more, but never while jobs wait that an idle
/// worker is about to lease, unless the idle worker is one of more than there are jobs.
pub fn decide(
    queued: u64,
    idle_workers: usize,
    allocs: &[AllocView],
    limits: AllocLimits,
    now_ms: i64,
) -> AllocActions {
    let queued = usize::try_from(queued).unwrap_or(usize::MAX);
    let alive = allocs
        .iter()
        .filter(|a| a.state != AllocState::Cancelling)
        .count();
    let coming = allocs
        .iter()
        .filter(|a| matches!(a.state, AllocState::Queued | AllocState::Starting))
        .count();

    // Idle allocations, longest idle first: those beyond what the queue needs go.
    let mut idle: Vec<&AllocView> = allocs
        .iter()
        .filter(|a| {
            a.state == AllocState::Running
                && !a.busy
                && now_ms.saturating_sub(a.idle_since_ms) >= limits.idle_timeout_ms
        })
        .collect();
    idle.sort_by_key(|a| (a.idle_since_ms, a.id.clone()));
    // Jobs that waiting idle workers (all of them, ours or not) will take.
    let spare = idle_workers.saturating_sub(queued);
    let cancel: Vec<String> = idle.iter().take(spare).map(|a| a.id.clone()).collect();

    let takers = idle_workers.saturating_sub(cancel.len()) + coming;
    let wanted = queued.saturating_sub(takers);
    let room = limits.max_workers.saturating_sub(alive - cancel.len());
    AllocActions {
        // Never submit and cancel in one step: a cancelled worker was idle, so none is wanted.
        submit: if cancel.is_empty() {
            wanted.min(room)
        } else {
            0
        },
        cancel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: AllocLimits = AllocLimits {
        max_workers: 3,
        idle_timeout_ms: 10_000,
    };

    fn alloc(id: &str, state: AllocState, busy: bool, idle_since_ms: i64) -> AllocView {
        AllocView {
            id: id.to_owned(),
            state,
            busy,
            idle_since_ms,
        }
    }

    #[test]
    fn queued_jobs_without_workers_get_allocations_up_to_the_limit() {
        assert_eq!(decide(2, 0, &[], LIMITS, 0).submit, 2);
        assert_eq!(decide(10, 0, &[], LIMITS, 0).submit, 3);
        assert_eq!(decide(0, 0, &[], LIMITS, 0), AllocActions::default());
    }

    #[test]
    fn idle_workers_and_coming_allocations_count_as_takers() {
        // Two idle workers (e.g. started by hand) take two of five jobs.
        assert_eq!(decide(5, 2, &[], LIMITS, 0).submit, 3);
        assert_eq!(decide(2, 2, &[], LIMITS, 0).submit, 0);
        // One allocation waits in Slurm's queue, one has started: two takers already.
        let a = [
            alloc("1", AllocState::Queued, false, 0),
            alloc("2", AllocState::Starting, false, 0),
        ];
        assert_eq!(decide(3, 0, &a, LIMITS, 0).submit, 1);
        assert_eq!(decide(2, 0, &a, LIMITS, 0).submit, 0);
    }

    #[test]
    fn busy_allocations_use_up_the_limit() {
        let a = [
            alloc("1", AllocState::Running, true, 0),
            alloc("2", AllocState::Running, true, 0),
        ];
        assert_eq!(decide(9, 0, &a, LIMITS, 0).submit, 1);
        let a = [
            alloc("1", AllocState::Running, true, 0),
            alloc("2", AllocState::Running, true, 0),
            alloc("3", AllocState::Running, true, 0),
        ];
        assert_eq!(decide(9, 0, &a, LIMITS, 0).submit, 0);
    }

    #[test]
    fn allocations_being_cancelled_free_their_place() {
        let a = [
            alloc("1", AllocState::Cancelling, false, 0),
            alloc("2", AllocState::Cancelling, false, 0),
            alloc("3", AllocState::Running, true, 0),
        ];
        assert_eq!(decide(9, 0, &a, LIMITS, 0).submit, 2);
    }

    #[test]
    fn idle_allocations_are_cancelled_after_the_timeout_only() {
        let a = [
            alloc("1", AllocState::Running, false, 5_000),
            alloc("2", AllocState::Running, true, 0),
        ];
        assert!(decide(0, 1, &a, LIMITS, 14_999).cancel.is_empty());
        assert_eq!(decide(0, 1, &a, LIMITS, 15_000).cancel, vec!["1"]);
        // Queued or starting allocations are not idle: their worker has not had a chance.
        let a = [
            alloc("1", AllocState::Queued, false, 0),
            alloc("2", AllocState::Starting, false, 0),
        ];
        assert!(decide(0, 0, &a, LIMITS, 1_000_000).cancel.is_empty());
    }

    #[test]
    fn idle_workers_that_queued_jobs_need_are_kept() {
        let a = [
            alloc("1", AllocState::Running, false, 0),
            alloc("2", AllocState::Running, false, 100),
            alloc("3", AllocState::Running, false, 200),
        ];
        // One job waits (a paused sweep resumed, say): the longest idle two go.
        let act = decide(1, 3, &a, LIMITS, 60_000);
        assert_eq!(act.cancel, vec!["1", "2"]);
        assert_eq!(act.submit, 0);
        // A worker not of ours is idle too: it takes the job, all three of ours go.
        assert_eq!(decide(1, 4, &a, LIMITS, 60_000).cancel, vec!["1", "2", "3"]);
        assert!(decide(3, 3, &a, LIMITS, 60_000).cancel.is_empty());
    }
}
