//! The one mapping from training events to metric points (names from [`proto::metric`]): the
//! agent's outbox reports what it returns, and tests that store a run without a worker use it too,
//! so the two cannot disagree on what a run reports.

use proto::metric;

use super::TrainEvent;

/// The metric points one [`TrainEvent`] reports, all at the event's epoch and step.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMetrics<'a> {
    pub epoch: u32,
    pub step: u64,
    /// `(name, value)`; values are as trained (a non-finite one is the receiver's to drop).
    pub points: Vec<(&'a str, f64)>,
    /// From an evaluation, which is reported as one unit (all its keys at once).
    pub evaluation: bool,
}

impl TrainEvent {
    /// The event's metric points; `None` for events that are not metrics (snapshots and
    /// checkpoints).
    ///
    /// `lr` is a per-step curve: it is reported with every [`TrainEvent::Step`] (the rate the
    /// optimizer applied at that step), not with [`TrainEvent::Epoch`], whose `lr` is the rate of
    /// the epoch's last step, which that epoch's last Step event already reported at the same step.
    pub fn metrics(&self) -> Option<EventMetrics<'_>> {
        let (epoch, step, points, evaluation) = match self {
            TrainEvent::Step {
                epoch,
                step,
                loss,
                lr,
            } => (
                *epoch,
                *step,
                vec![(metric::LOSS, *loss), (metric::LR, *lr)],
                false,
            ),
            TrainEvent::Epoch {
                epoch,
                step,
                loss,
                lr: _,
                samples_per_sec,
                epoch_secs,
                health,
            } => {
                let mut points = vec![
                    (metric::EPOCH_LOSS, *loss),
                    (metric::SAMPLES_PER_SEC, *samples_per_sec),
                    (metric::EPOCH_SECS, *epoch_secs),
                ];
                points.extend(health.iter().map(|(k, v)| (k.as_str(), *v)));
                (*epoch, *step, points, false)
            }
            TrainEvent::Eval {
                epoch,
                step,
                metrics,
            } => {
                let points = metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                (*epoch, *step, points, true)
            }
            TrainEvent::Snapshot(_) | TrainEvent::Checkpoint { .. } => return None,
        };
        Some(EventMetrics {
            epoch,
            step,
            points,
            evaluation,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn lr_is_a_step_curve_only() {
        let step = TrainEvent::Step {
            epoch: 1,
            step: 7,
            loss: 0.5,
            lr: 1e-3,
        };
        let m = step.metrics().unwrap();
        assert_eq!((m.epoch, m.step, m.evaluation), (1, 7, false));
        assert_eq!(m.points, [(metric::LOSS, 0.5), (metric::LR, 1e-3)]);

        let epoch = TrainEvent::Epoch {
            epoch: 1,
            step: 7,
            loss: 0.4,
            lr: 1e-3,
            samples_per_sec: 900.0,
            epoch_secs: 2.0,
            health: BTreeMap::from([(metric::ACTIVE_FRACTION.to_owned(), 0.25)]),
        };
        let m = epoch.metrics().unwrap();
        assert_eq!(
            m.points,
            [
                (metric::EPOCH_LOSS, 0.4),
                (metric::SAMPLES_PER_SEC, 900.0),
                (metric::EPOCH_SECS, 2.0),
                (metric::ACTIVE_FRACTION, 0.25),
            ]
        );
    }

    #[test]
    fn evaluations_keep_every_key_and_value() {
        let ev = TrainEvent::Eval {
            epoch: 2,
            step: 40,
            metrics: BTreeMap::from([
                (metric::KNN1_ACC.to_owned(), 0.8),
                (metric::ROC_AUC.to_owned(), f64::NAN),
            ]),
        };
        let m = ev.metrics().unwrap();
        assert!(m.evaluation);
        assert_eq!((m.epoch, m.step), (2, 40));
        assert_eq!(m.points.len(), 2);
        assert_eq!(m.points[0], (metric::KNN1_ACC, 0.8));
        assert!(
            m.points[1].1.is_nan(),
            "the receiver drops non-finite values"
        );
        let ck = TrainEvent::Checkpoint {
            epoch: 2,
            path: "/tmp/x".into(),
        };
        assert_eq!(ck.metrics(), None);
    }
}
