//! Heartbeat reconciliation: what a worker says it runs against what the store says it holds.
//!
//! A worker makes one `Lease` call at a time and lists every attempt it runs, so the two sets
//! decide everything: listed attempts it still holds are renewed, listed ones it no longer holds
//! must stop, and held ones it does not list are orphans (leased by a call whose reply it never
//! received), released at once instead of blocking their job for a whole TTL.

use std::collections::HashSet;

/// What to do after one heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reconciled {
    /// Listed and held: renew their leases.
    pub renew: Vec<i64>,
    /// Listed but not held (ended, someone else's or unknown), in the order listed: the worker
    /// must stop them.
    pub stop: Vec<i64>,
    /// Held but not listed, ascending: release them.
    pub orphans: Vec<i64>,
}

/// Compares the attempts a worker `listed` with the running attempts it `holds`.
pub(crate) fn reconcile(listed: &[i64], holds: &[i64]) -> Reconciled {
    let held: HashSet<i64> = holds.iter().copied().collect();
    let named: HashSet<i64> = listed.iter().copied().collect();
    let (mut renew, mut stop) = (Vec::new(), Vec::new());
    for &a in listed {
        if held.contains(&a) {
            // A worker listing an attempt twice renews it once.
            if !renew.contains(&a) {
                renew.push(a);
            }
        } else {
            stop.push(a);
        }
    }
    let mut orphans: Vec<i64> = holds
        .iter()
        .copied()
        .filter(|a| !named.contains(a))
        .collect();
    orphans.sort_unstable();
    orphans.dedup();
    Reconciled {
        renew,
        stop,
        orphans,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_and_held_attempts_split_three_ways() {
        let r = reconcile(&[7, 3, 9], &[9, 4, 3, 2]);
        assert_eq!(r.renew, vec![3, 9]);
        assert_eq!(r.stop, vec![7]);
        assert_eq!(r.orphans, vec![2, 4]);
    }

    #[test]
    fn an_idle_worker_holding_nothing_changes_nothing() {
        assert_eq!(reconcile(&[], &[]), Reconciled::default());
        assert_eq!(reconcile(&[5], &[]).stop, vec![5]);
        assert_eq!(reconcile(&[], &[5]).orphans, vec![5]);
    }

    #[test]
    fn repeated_ids_keep_the_listed_order() {
        let r = reconcile(&[4, 1, 4, 8, 1], &[1]);
        assert_eq!(r.renew, vec![1]);
        assert_eq!(r.stop, vec![4, 4, 8]);
        assert!(r.orphans.is_empty());
    }
}
