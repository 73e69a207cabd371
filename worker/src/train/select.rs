//! Result selection (README, "Evaluation protocol"): a run's result is the evaluation of its
//! best epoch on validation, not its last, so that no choice is made on the test set.
//!
//! The best epoch is the evaluated epoch with the highest [`metric::SELECTION`]
//! (`val/map_at_r`); ties go to the earliest. Its metrics (test and validation) become the run's
//! final metrics, with [`metric::BEST_EPOCH`]. Without a validation set (`val_fraction = 0`), or
//! when no evaluation has a finite selection metric, the result is the last evaluation and has
//! no `best_epoch`. [`metric::COLLAPSED`] in the result is always the LAST evaluation's: a run
//! that collapsed after its best epoch is still flagged.

use std::collections::BTreeMap;

use proto::metric;
use serde::{Deserialize, Serialize};

/// One evaluation, as kept for selection (and in checkpoints, so a resumed run still knows its
/// best epoch). NaN metrics are stored as `None`: JSON has no NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Evaluated {
    pub(crate) epoch: u32,
    pub(crate) metrics: BTreeMap<String, Option<f64>>,
}

impl Evaluated {
    pub(crate) fn new(epoch: u32, metrics: &BTreeMap<String, f64>) -> Self {
        Evaluated {
            epoch,
            metrics: metrics
                .iter()
                .map(|(k, v)| (k.clone(), Some(*v).filter(|v| !v.is_nan())))
                .collect(),
        }
    }

    pub(crate) fn metrics(&self) -> BTreeMap<String, f64> {
        self.metrics
            .iter()
            .map(|(k, v)| (k.clone(), v.unwrap_or(f64::NAN)))
            .collect()
    }

    /// The selection metric, when finite.
    fn selection(&self) -> Option<f64> {
        self.metrics
            .get(metric::SELECTION)
            .copied()
            .flatten()
            .filter(|v| v.is_finite())
    }
}

/// The best evaluation so far and the last one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Selection {
    pub(crate) best: Option<Evaluated>,
    pub(crate) last: Option<Evaluated>,
}

impl Selection {
    /// Records an evaluation, in epoch order.
    pub(crate) fn observe(&mut self, e: Evaluated) {
        if let Some(s) = e.selection() {
            // Strictly greater: a tie keeps the earlier epoch.
            if self
                .best
                .as_ref()
                .and_then(Evaluated::selection)
                .is_none_or(|b| s > b)
            {
                self.best = Some(e.clone());
            }
        }
        self.last = Some(e);
    }

    /// The run's final evaluation metrics (module docs); `None` before any evaluation.
    pub(crate) fn result(&self) -> Option<BTreeMap<String, f64>> {
        let last = self.last.as_ref()?;
        let mut out = match &self.best {
            Some(best) => {
                let mut m = best.metrics();
                m.insert(metric::BEST_EPOCH.into(), f64::from(best.epoch));
                m
            }
            None => last.metrics(),
        };
        let collapsed = last.metrics().get(metric::COLLAPSED).copied();
        if let Some(c) = collapsed {
            out.insert(metric::COLLAPSED.into(), c);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(epoch: u32, val: f64, test: f64, collapsed: f64) -> Evaluated {
        Evaluated::new(
            epoch,
            &BTreeMap::from([
                (metric::SELECTION.to_owned(), val),
                (metric::MAP_AT_R.to_owned(), test),
                (metric::COLLAPSED.to_owned(), collapsed),
            ]),
        )
    }

    #[test]
    fn best_validation_epoch_wins_ties_go_early_collapse_is_the_last() {
        let mut s = Selection::default();
        for e in [
            eval(1, 0.2, 0.9, 0.0),
            eval(2, 0.5, 0.1, 0.0),
            eval(3, 0.5, 0.3, 0.0),
            eval(4, f64::NAN, 0.8, 1.0),
        ] {
            s.observe(e);
        }
        let r = s.result().unwrap();
        assert_eq!(r[metric::BEST_EPOCH], 2.0, "ties go to the earliest");
        assert_eq!(
            r[metric::MAP_AT_R],
            0.1,
            "the test metric of the selected epoch"
        );
        assert_eq!(
            r[metric::COLLAPSED],
            1.0,
            "collapse is the last evaluation's"
        );
        // Survives the checkpoint header's JSON.
        let back: Selection = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn without_validation_the_last_evaluation_is_the_result() {
        let mut s = Selection::default();
        assert!(s.result().is_none());
        for epoch in 1..=3 {
            let m = BTreeMap::from([(metric::MAP_AT_R.to_owned(), f64::from(epoch))]);
            s.observe(Evaluated::new(epoch, &m));
        }
        let r = s.result().unwrap();
        assert_eq!(r[metric::MAP_AT_R], 3.0);
        assert!(!r.contains_key(metric::BEST_EPOCH));
    }
}
