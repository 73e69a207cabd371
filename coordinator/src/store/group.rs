//! Group commit, the queueing half: one task owns the hot write path (`Lease` heartbeats and
//! attempt ends). Callers queue their call and wait; the task takes every call queued so far,
//! applies them all in one write transaction ([`super::batch`]) and answers each after COMMIT,
//! so a reply still means "durably stored".
//!
//! With many workers, calls pile up while a transaction runs, so the next one carries many of
//! them for the price of one: the cost of a transaction is its statements (thread hand-offs in
//! sqlx), not its rows. Nothing waits on purpose; a lone call is applied at once.

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::attempt::Ended;
use super::batch::{self, EndCall, LeaseCall, LeaseOutcome};

/// Most calls in one transaction: bounds the size of its statements and of a rollback.
const MAX_GROUP: usize = 512;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Call {
    Lease(LeaseCall, oneshot::Sender<LeaseOutcome>),
    End(EndCall, Reply<Ended>),
}

/// Handle to the group-commit task; cheap to clone. The task ends when the last handle is
/// dropped.
#[derive(Clone, Debug)]
pub(super) struct GroupCommit {
    calls: mpsc::UnboundedSender<Call>,
}

fn unanswered() -> StoreError {
    StoreError::Corrupt("a call of a group commit got no answer".into())
}

fn gone() -> StoreError {
    StoreError::Sqlx(sqlx::Error::PoolClosed)
}

impl GroupCommit {
    /// Spawns the task on the current Tokio runtime; it writes through `writer`.
    pub fn start(writer: SqlitePool) -> GroupCommit {
        let (calls, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(writer, rx));
        GroupCommit { calls }
    }

    pub async fn lease(&self, call: LeaseCall) -> LeaseOutcome {
        let (tx, rx) = oneshot::channel();
        self.calls.send(Call::Lease(call, tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub async fn end(&self, call: EndCall) -> Result<Ended, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.calls.send(Call::End(call, tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

async fn run(writer: SqlitePool, mut rx: mpsc::UnboundedReceiver<Call>) {
    let mut queued = Vec::new();
    while rx.recv_many(&mut queued, MAX_GROUP).await > 0 {
        apply(&writer, std::mem::take(&mut queued)).await;
    }
}

/// Applies a group and answers every call. When the transaction fails, each call is retried
/// in a transaction of its own, so one bad call cannot fail the others.
async fn apply(writer: &SqlitePool, calls: Vec<Call>) {
    let (mut ends, mut end_replies) = (Vec::new(), Vec::new());
    let (mut leases, mut lease_replies) = (Vec::new(), Vec::new());
    for c in calls {
        match c {
            Call::End(call, reply) => {
                ends.push(call);
                end_replies.push(reply);
            }
            Call::Lease(call, reply) => {
                leases.push(call);
                lease_replies.push(reply);
            }
        }
    }
    let answered = transaction(writer, &ends, &leases)
        .await
        .and_then(|(ended, leased)| {
            // One answer per call, or none: a waiter left without one would read a closed
            // channel as a vague "pool closed" instead of the failure.
            if ended.len() == ends.len() && leased.len() == leases.len() {
                Ok((ended, leased))
            } else {
                Err(StoreError::Corrupt(format!(
                    "group commit answered {} of {} ends and {} of {} leases",
                    ended.len(),
                    ends.len(),
                    leased.len(),
                    leases.len()
                )))
            }
        });
    match answered {
        Ok((ended, leased)) => {
            // A caller that went away (its RPC was cancelled) finds out nothing; a lease it
            // never received is released on its worker's next heartbeat.
            for (reply, e) in end_replies.into_iter().zip(ended) {
                let _ = reply.send(Ok(e));
            }
            for (reply, l) in lease_replies.into_iter().zip(leased) {
                let _ = reply.send(l);
            }
        }
        Err(e) if ends.len() + leases.len() == 1 => {
            if let Some(reply) = end_replies.pop() {
                let _ = reply.send(Err(e));
            } else if let Some(reply) = lease_replies.pop() {
                let _ = reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, calls = ends.len() + leases.len(),
                "group transaction failed; applying its calls one by one");
            for (call, reply) in ends.iter().zip(end_replies) {
                let r = transaction(writer, std::slice::from_ref(call), &[]).await;
                let _ =
                    reply.send(r.and_then(|(e, _)| e.into_iter().next().ok_or_else(unanswered)));
            }
            for (call, reply) in leases.iter().zip(lease_replies) {
                let r = transaction(writer, &[], std::slice::from_ref(call)).await;
                let _ =
                    reply.send(r.and_then(|(_, l)| l.into_iter().next().ok_or_else(unanswered)?));
            }
        }
    }
}

/// Ends first, then leases, in one `BEGIN IMMEDIATE` transaction.
async fn transaction(
    writer: &SqlitePool,
    ends: &[EndCall],
    leases: &[LeaseCall],
) -> Result<(Vec<Ended>, Vec<LeaseOutcome>), StoreError> {
    let _timer = crate::obs::db_write(crate::obs::DbWrite::Group);
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let ended = batch::apply_ends(&mut tx, ends).await?;
    let leased = batch::apply_leases(&mut tx, leases).await?;
    tx.commit().await?;
    Ok((ended, leased))
}
