//! Queue order: higher sweep priority first, then sweeps in submission order, then jobs in
//! expansion order. The store runs the same order in SQL, sweeps first (`SWEEP_ORDER_SQL`)
//! then jobs within a sweep (`JOB_ORDER_SQL`) so each step walks an index; the store test
//! `grpc_lease` checks both agree.

use std::cmp::Ordering;

/// `ORDER BY` over `sweeps`: the first two keys of [`queue_cmp`].
pub(crate) const SWEEP_ORDER_SQL: &str = "priority DESC, id ASC";
/// `ORDER BY` over the `jobs` of one sweep: the last two keys of [`queue_cmp`].
pub(crate) const JOB_ORDER_SQL: &str = "seq ASC, id ASC";

/// A queued job of an active sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub sweep_priority: i64,
    pub sweep_id: i64,
    pub job_seq: i64,
    pub job_id: i64,
}

/// Total order of the queue: `Less` runs first.
pub(crate) fn queue_cmp(a: &Candidate, b: &Candidate) -> Ordering {
    b.sweep_priority
        .cmp(&a.sweep_priority)
        .then(a.sweep_id.cmp(&b.sweep_id))
        .then(a.job_seq.cmp(&b.job_seq))
        .then(a.job_id.cmp(&b.job_id))
}

/// How many of `available` jobs (already in queue order) each caller gets when several ask at
/// once: first come, first served, so the result equals answering them one after another.
pub(crate) fn share_out(wants: &[usize], available: usize) -> Vec<usize> {
    let mut left = available;
    wants
        .iter()
        .map(|&w| {
            let n = w.min(left);
            left -= n;
            n
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `n` candidates that run next, in order.
    fn next_jobs(mut candidates: Vec<Candidate>, n: usize) -> Vec<Candidate> {
        candidates.sort_by(queue_cmp);
        candidates.truncate(n);
        candidates
    }

    fn c(sweep_priority: i64, sweep_id: i64, job_seq: i64) -> Candidate {
        Candidate {
            sweep_priority,
            sweep_id,
            job_seq,
            job_id: sweep_id * 100 + job_seq,
        }
    }

    #[test]
    fn submission_order_then_priority() {
        let q = vec![c(0, 2, 0), c(0, 1, 1), c(0, 1, 0)];
        assert_eq!(
            next_jobs(q.clone(), 3),
            vec![c(0, 1, 0), c(0, 1, 1), c(0, 2, 0)]
        );
        // Raising the later sweep's priority lets it overtake.
        let q = vec![c(5, 2, 0), c(0, 1, 1), c(0, 1, 0)];
        assert_eq!(next_jobs(q, 2), vec![c(5, 2, 0), c(0, 1, 0)]);
        assert!(next_jobs(vec![], 4).is_empty());
    }

    #[test]
    fn earlier_callers_are_served_first() {
        assert_eq!(share_out(&[1, 2, 1], 10), vec![1, 2, 1]);
        assert_eq!(share_out(&[1, 2, 1], 2), vec![1, 1, 0]);
        assert_eq!(share_out(&[0, 3], 2), vec![0, 2]);
        assert!(share_out(&[], 5).is_empty());
    }
}
