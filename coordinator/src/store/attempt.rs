//! One attempt's rows, shared by the two write paths: the single-call path (`lease.rs`) and
//! group commit (`batch.rs`). Holds what a lease or an end returns, and the end of one attempt
//! inside the caller's transaction. It depends on neither path, so the dependency between them
//! runs one way: `lease.rs` calls into `batch.rs` (`pick`, the group's calls), never back.

use proto::{AttemptId, JobId, JobState, LeaseToken, WorkerId};
use sqlx::{Row, SqliteConnection};

use super::{StoreError, now_ms};
use crate::sched::{self, AttemptEnd, Fence, JobNext, JobView};

/// A stored checkpoint, with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    pub id: i64,
    pub job: JobId,
    pub attempt: AttemptId,
    pub epoch: i64,
    pub path: String,
    pub size: i64,
    pub sha256: String,
}

/// A job handed to a worker as a new attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedJob {
    pub job: JobId,
    pub attempt: AttemptId,
    /// This lease of the attempt; requests about the attempt must carry it.
    pub token: LeaseToken,
    pub number: u32,
    pub params_json: String,
    pub sweep_name: String,
    pub expires_at: i64,
    pub resume: Option<ArtifactInfo>,
}

/// Result of ending an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// The attempt ended now; the job moved to `job_state`.
    Applied { job: JobId, job_state: JobState },
    /// The same end was applied before (a retried request): nothing changed.
    Repeat { job: JobId, job_state: JobState },
    /// The caller may not end this attempt.
    Fenced(Fence),
}

/// A stored `attempts.token`: SQLite integers are signed, the token is the same 64 bits unsigned.
pub(super) fn token_from_row(v: i64) -> LeaseToken {
    LeaseToken(v as u64)
}
/// Releases an attempt `worker` holds but no longer listed: its lease reply never arrived.
pub(super) async fn release_orphan(
    conn: &mut SqliteConnection,
    attempt: AttemptId,
    job: JobId,
    worker: WorkerId,
) -> Result<(), StoreError> {
    tracing::info!(%attempt, %job, %worker, "releasing an attempt whose lease reply was lost");
    end_in(conn, attempt, job, &AttemptEnd::Released).await?;
    Ok(())
}

/// Applies `end` to a running attempt of a job inside the caller's transaction.
pub(super) async fn end_in(
    conn: &mut SqliteConnection,
    attempt: AttemptId,
    job: JobId,
    end: &AttemptEnd,
) -> Result<(JobNext, JobState), StoreError> {
    let row = sqlx::query(
        "SELECT state, max_attempts,
                (SELECT COUNT(*) FROM attempts WHERE job_id = ?1 AND id != ?2
                   AND state IN ('failed', 'expired')) AS failures
         FROM jobs WHERE id = ?1",
    )
    .bind(job.0)
    .bind(attempt.0)
    .fetch_one(&mut *conn)
    .await?;
    let view = job_view(&row, "state")?;
    apply_end(conn, attempt, job, view, end).await
}

/// A job's state and retry budget from a row holding the job state in column `state_col`,
/// plus `max_attempts` and `failures`.
fn job_view(row: &sqlx::sqlite::SqliteRow, state_col: &str) -> Result<JobView, StoreError> {
    Ok(JobView {
        state: row.try_get::<String, _>(state_col)?.parse()?,
        failures: u32::try_from(row.try_get::<i64, _>("failures")?).unwrap_or(u32::MAX),
        max_attempts: u32::try_from(row.try_get::<i64, _>("max_attempts")?).unwrap_or(0),
    })
}

/// Writes the end of an attempt and the job's next state given the job's current `view`.
async fn apply_end(
    conn: &mut SqliteConnection,
    attempt: AttemptId,
    job: JobId,
    view: JobView,
    end: &AttemptEnd,
) -> Result<(JobNext, JobState), StoreError> {
    let now = now_ms();
    let next = sched::after_attempt(&view, end);
    sqlx::query("UPDATE attempts SET state = ?2, ended_at = ?3, error = ?4 WHERE id = ?1")
        .bind(attempt.0)
        .bind(end.attempt_state().as_str())
        .bind(now)
        .bind(end.error_text())
        .execute(&mut *conn)
        .await?;
    let (state, last_error) = match &next {
        JobNext::Done => (JobState::Done, None),
        JobNext::Requeue { last_error } => (JobState::Queued, last_error.clone()),
        JobNext::Fail { last_error } => (JobState::Failed, Some(last_error.clone())),
        JobNext::Unchanged => return Ok((next, view.state)),
    };
    sqlx::query(
        "UPDATE jobs SET state = ?2, last_error = COALESCE(?3, last_error), updated_at = ?4 WHERE id = ?1",
    )
    .bind(job.0)
    .bind(state.as_str())
    .bind(last_error)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok((next, state))
}
