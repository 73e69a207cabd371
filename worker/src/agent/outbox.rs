//! The outbox of one attempt: turns training events into numbered report items and keeps each
//! item until the coordinator acknowledges it, so a reconnect resends exactly what is missing
//! (with the same item and metric sequence numbers; the coordinator dedupes).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proto::rpc::{self, PROTOCOL_VERSION, report_request::Body};

use crate::train::TrainEvent;

/// A metric batch is sent once it holds this many points...
pub(crate) const BATCH_POINTS: usize = 512;
/// ...or its oldest point is this old.
pub(crate) const BATCH_AGE: Duration = Duration::from_millis(500);

/// Unacknowledged report items of one attempt.
#[derive(Debug)]
pub(crate) struct Outbox {
    worker_id: i64,
    attempt_id: i64,
    database_id: String,
    /// `JobLease.lease_token`, sent back with every item.
    lease_token: u64,
    items: VecDeque<rpc::ReportRequest>,
    next_item: u64,
    next_seq: i64,
    acked: u64,
    pending: Vec<rpc::MetricPoint>,
    pending_since: Option<Instant>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Outbox {
    /// `database_id` is the coordinator database the attempt was leased from, `lease_token` the
    /// lease's token.
    pub(crate) fn new(
        worker_id: i64,
        attempt_id: i64,
        database_id: String,
        lease_token: u64,
    ) -> Self {
        Outbox {
            worker_id,
            attempt_id,
            database_id,
            lease_token,
            items: VecDeque::new(),
            next_item: 1,
            next_seq: 0,
            acked: 0,
            pending: Vec::new(),
            pending_since: None,
        }
    }

    fn point(&mut self, epoch: u32, step: u64, name: &str, value: f64, time_ms: i64) {
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending.push(rpc::MetricPoint {
            step: step as i64,
            epoch: i64::from(epoch),
            name: name.to_owned(),
            value,
            time_ms,
        });
    }

    fn push(&mut self, body: Body) {
        let item = self.next_item;
        self.next_item += 1;
        self.items.push_back(rpc::ReportRequest {
            protocol_version: PROTOCOL_VERSION,
            worker_id: self.worker_id,
            attempt_id: self.attempt_id,
            item,
            database_id: self.database_id.clone(),
            lease_token: self.lease_token,
            body: Some(body),
        });
    }

    fn take_seq(&mut self) -> i64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Adds a training event. Its metric points are [`TrainEvent::metrics`]'s: a step's wait in
    /// the pending batch, an epoch's close it, an evaluation is an item of its own. Checkpoints are
    /// not report items (their file is uploaded first): they are returned for the caller to
    /// upload, then announced with [`Outbox::checkpoint`].
    pub(crate) fn event(&mut self, ev: TrainEvent) -> Option<(u32, std::path::PathBuf)> {
        match ev {
            TrainEvent::Snapshot(s) => {
                self.flush();
                self.push(Body::Snapshot(rpc::EpochSnapshot {
                    epoch: s.epoch,
                    projected: s.projection.is_projected(),
                    projection: s.projection.as_str().to_owned(),
                    xy: s.points.iter().flat_map(|p| [p[0], p[1]]).collect(),
                    labels: s.labels,
                    indices: s.indices,
                    class_names: s.class_names,
                }));
            }
            TrainEvent::Checkpoint { epoch, path } => {
                self.flush();
                return Some((epoch, path));
            }
            ref metrics => self.metrics(metrics),
        }
        None
    }

    fn metrics(&mut self, ev: &TrainEvent) {
        let Some(m) = ev.metrics() else {
            return;
        };
        let t = now_ms();
        if m.evaluation {
            self.flush();
            let seq = self.take_seq();
            self.push(Body::Eval(rpc::EvalResult {
                seq,
                epoch: m.epoch,
                step: m.step as i64,
                metrics: m
                    .points
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), *v))
                    .collect(),
                time_ms: t,
            }));
            return;
        }
        for (name, value) in m.points {
            self.point(m.epoch, m.step, name, value, t);
        }
        // An epoch's points end its batch, so its curves show as soon as the epoch ends.
        if matches!(ev, TrainEvent::Epoch { .. }) || self.pending.len() >= BATCH_POINTS {
            self.flush();
        }
    }

    /// Announces an uploaded checkpoint.
    pub(crate) fn checkpoint(&mut self, epoch: u32, artifact_id: i64) {
        self.push(Body::Checkpoint(rpc::CheckpointNotice {
            epoch,
            artifact_id,
        }));
    }

    /// Turns pending points into a numbered batch.
    pub(crate) fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let points = std::mem::take(&mut self.pending);
        self.pending_since = None;
        let seq = self.take_seq();
        self.push(Body::Metrics(rpc::MetricBatch { seq, points }));
    }

    /// Flushes pending points older than [`BATCH_AGE`].
    pub(crate) fn flush_if_old(&mut self) {
        if self.pending_since.is_some_and(|t| t.elapsed() >= BATCH_AGE) {
            self.flush();
        }
    }

    /// Drops every item up to and including `item`.
    pub(crate) fn ack(&mut self, item: u64) {
        while self.items.front().is_some_and(|i| i.item <= item) {
            self.items.pop_front();
        }
        self.acked = self.acked.max(item);
    }

    pub(crate) fn attempt_id(&self) -> i64 {
        self.attempt_id
    }

    pub(crate) fn lease_token(&self) -> u64 {
        self.lease_token
    }

    /// Highest acknowledged item.
    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// The first unacknowledged item after `after`, to send next.
    pub(crate) fn next_after(&self, after: u64) -> Option<&rpc::ReportRequest> {
        self.items.iter().find(|i| i.item > after)
    }

    /// Nothing left to deliver (pending points included).
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.pending.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::metric;
    use std::collections::BTreeMap;

    fn step(step: u64) -> TrainEvent {
        TrainEvent::Step {
            epoch: 1,
            step,
            loss: 0.5,
            lr: 1e-3,
        }
    }

    #[test]
    fn items_are_numbered_and_resent_until_acked() {
        let mut o = Outbox::new(3, 9, "db".into(), 77);
        for s in 0..BATCH_POINTS as u64 / 2 {
            o.event(step(s));
        }
        assert_eq!(o.len(), 1, "a full batch is flushed");
        o.event(step(1000));
        o.event(TrainEvent::Eval {
            epoch: 1,
            step: 1000,
            metrics: BTreeMap::from([(metric::KNN1_ACC.into(), 0.8)]),
        });
        assert_eq!(o.len(), 3);
        let seqs: Vec<i64> = o
            .items
            .iter()
            .map(|i| match &i.body {
                Some(Body::Metrics(b)) => b.seq,
                Some(Body::Eval(e)) => e.seq,
                _ => -1,
            })
            .collect();
        assert_eq!(
            seqs,
            vec![0, 1, 2],
            "metric batches and evaluations share one gap-free sequence"
        );
        assert_eq!(o.next_after(0).unwrap().item, 1);
        o.ack(2);
        assert_eq!(o.len(), 1);
        assert_eq!(o.next_after(o.acked()).unwrap().item, 3);
        // Acks are cumulative and may repeat.
        o.ack(1);
        assert_eq!(o.acked(), 2);
        o.ack(3);
        assert!(o.is_empty());
        assert!(
            o.items
                .iter()
                .all(|i| i.attempt_id == 9 && i.worker_id == 3)
        );
    }

    #[test]
    fn checkpoints_are_returned_not_queued() {
        let mut o = Outbox::new(1, 1, "db".into(), 77);
        o.event(step(0));
        let ck = o.event(TrainEvent::Checkpoint {
            epoch: 1,
            path: "/tmp/x.ckpt".into(),
        });
        assert_eq!(ck, Some((1, "/tmp/x.ckpt".into())));
        assert_eq!(o.len(), 1, "pending points flushed before the checkpoint");
        o.checkpoint(1, 42);
        assert!(matches!(
            o.items.back().unwrap().body,
            Some(Body::Checkpoint(_))
        ));
    }

    #[test]
    fn snapshots_carry_their_projection_by_name() {
        let mut o = Outbox::new(1, 1, "db".into(), 77);
        for projection in proto::SnapshotProjection::ALL {
            o.event(TrainEvent::Snapshot(crate::train::Snapshot {
                epoch: 1,
                projection: *projection,
                points: vec![[0.0, 1.0]],
                labels: vec![0],
                indices: vec![4],
                class_names: vec!["a".into()],
            }));
            let Some(Body::Snapshot(s)) = &o.items.back().unwrap().body else {
                panic!("a snapshot item");
            };
            assert_eq!(s.projection, projection.as_str());
            // Coordinators that predate the name read the flag.
            assert_eq!(s.projected, projection.is_projected());
        }
    }
}
