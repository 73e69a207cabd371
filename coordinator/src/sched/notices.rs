//! Stop notices already given. A worker keeps listing an attempt until it learns it must stop;
//! one that lists it again after being told (an older worker still winding the attempt down)
//! gets the notice again at the long-poll's pace, not at once, so it cannot spin on Lease.

use std::collections::{BTreeSet, HashMap};

use proto::{AttemptId, WorkerId};

/// Beyond this many workers with outstanding notices, the memory starts over (at worst a
/// worker gets one notice again immediately).
const MAX_TRACKED: usize = 4096;

/// Per worker, the attempts its last Lease reply told it to stop.
#[derive(Debug, Default)]
pub(crate) struct StopNotices {
    told: HashMap<WorkerId, BTreeSet<AttemptId>>,
}

impl StopNotices {
    /// The attempts of `stop` this worker was not told about in its previous reply.
    pub fn fresh(&self, worker: WorkerId, stop: &[AttemptId]) -> Vec<AttemptId> {
        let told = self.told.get(&worker);
        stop.iter()
            .copied()
            .filter(|a| told.is_none_or(|t| !t.contains(a)))
            .collect()
    }

    /// Remembers what the reply being sent tells `worker` to stop (nothing forgets it).
    pub(crate) fn record(&mut self, worker: WorkerId, stop: &[AttemptId]) {
        if stop.is_empty() {
            self.told.remove(&worker);
            return;
        }
        if self.told.len() >= MAX_TRACKED && !self.told.contains_key(&worker) {
            self.told.clear();
        }
        self.told.insert(worker, stop.iter().copied().collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: WorkerId = WorkerId(1);

    #[test]
    fn a_notice_is_news_once_until_the_worker_stops_listing_it() {
        let mut n = StopNotices::default();
        assert_eq!(n.fresh(W, &[AttemptId(5)]), vec![AttemptId(5)]);
        n.record(W, &[AttemptId(5)]);
        assert!(n.fresh(W, &[AttemptId(5)]).is_empty(), "told already");
        assert_eq!(
            n.fresh(W, &[AttemptId(5), AttemptId(6)]),
            vec![AttemptId(6)],
            "a new stop is news"
        );
        assert_eq!(n.fresh(WorkerId(2), &[AttemptId(5)]), vec![AttemptId(5)]);
        n.record(W, &[]);
        assert_eq!(
            n.fresh(W, &[AttemptId(5)]),
            vec![AttemptId(5)],
            "forgotten once a reply had nothing to stop"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut n = StopNotices::default();
        for w in 0..(MAX_TRACKED as i64 + 10) {
            n.record(WorkerId(w), &[AttemptId(w)]);
        }
        assert!(n.told.len() <= MAX_TRACKED);
    }
}
