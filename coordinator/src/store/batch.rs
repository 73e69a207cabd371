//! Group commit, the SQL half: applies the attempt ends and `Lease` calls of many workers inside
//! one write transaction, with a fixed number of statements per group instead of per call.
//!
//! Every statement costs two thread hand-offs in sqlx's SQLite worker (the expensive part, see
//! BENCHMARKS.md), so each step reads or writes the rows of all calls at once (ids and values
//! go in as one JSON array, read back with `json_each`). The decisions stay in [`crate::sched`];
//! calls are decided one after another over an in-memory copy of the rows, so the outcome is
//! that of answering the calls one by one: all ends first, then the leases in arrival order
//! (the calls of a group are concurrent, so this is one of the orders they could have had).

use std::collections::{BTreeMap, HashMap, HashSet};

use proto::{AttemptId, AttemptState, JobId, JobState, LeaseToken, WorkerId};
use serde_json::json;
use sqlx::{Row, SqliteConnection};

use super::attempt::{Ended, LeasedJob, release_orphan, token_from_row};
use super::{StoreError, now_ms};
use crate::sched::{self, AttemptEnd, AttemptView, Candidate, Fence, JobNext, JobView};

/// A `Lease` call's heartbeat and request for work.
#[derive(Debug, Clone)]
pub(super) struct LeaseCall {
    pub worker: WorkerId,
    pub running: Vec<AttemptId>,
    pub free: usize,
    pub expires_at: i64,
}

/// What a `Lease` call gets back: the attempts to stop and the new leases.
pub(super) type LeaseOutcome = Result<(Vec<AttemptId>, Vec<LeasedJob>), StoreError>;

/// The end of an attempt, with the job's result (stored only when the end applies).
#[derive(Debug, Clone)]
pub(super) struct EndCall {
    pub attempt: AttemptId,
    pub worker: WorkerId,
    /// The lease token the worker sent (`None`: it sent none).
    pub token: Option<LeaseToken>,
    pub end: AttemptEnd,
    pub result_json: Option<String>,
}

/// An attempt and its job as fencing and [`sched::after_attempt`] need them.
struct EndRow {
    job: i64,
    worker: Option<i64>,
    token: Option<i64>,
    state: AttemptState,
    job_state: JobState,
    max_attempts: i64,
    /// Failed or expired attempts of the job other than this one.
    failures: i64,
}

fn to_json(v: &serde_json::Value) -> String {
    v.to_string()
}

/// Applies `calls` in order; an end that a previous call of the group already applied is a
/// repeat (or fenced), exactly as if it had come in a transaction of its own.
pub(super) async fn apply_ends(
    conn: &mut SqliteConnection,
    calls: &[EndCall],
) -> Result<Vec<Ended>, StoreError> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let ids = to_json(&json!(
        calls.iter().map(|c| c.attempt.0).collect::<Vec<_>>()
    ));
    let rows = sqlx::query(
        "SELECT a.id, a.job_id, a.worker_id, a.token, a.state, j.state AS job_state, j.max_attempts,
                (SELECT COUNT(*) FROM attempts f WHERE f.job_id = a.job_id AND f.id != a.id
                   AND f.state IN ('failed', 'expired')) AS failures
         FROM attempts a JOIN jobs j ON j.id = a.job_id
         WHERE a.id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut seen = HashMap::with_capacity(rows.len());
    for r in rows {
        let row = EndRow {
            job: r.try_get("job_id")?,
            worker: r.try_get("worker_id")?,
            token: r.try_get("token")?,
            state: r.try_get::<String, _>("state")?.parse()?,
            job_state: r.try_get::<String, _>("job_state")?.parse()?,
            max_attempts: r.try_get("max_attempts")?,
            failures: r.try_get("failures")?,
        };
        seen.insert(r.try_get::<i64, _>("id")?, row);
    }
    // Keyed so that a later write to the same row wins, as it would one transaction at a time.
    let mut results = BTreeMap::new();
    let mut attempt_ends = BTreeMap::new();
    let mut job_moves = BTreeMap::new();
    let mut out = Vec::with_capacity(calls.len());
    for c in calls {
        let id = c.attempt.0;
        let view = seen.get(&id).map(|r| AttemptView {
            id,
            job: r.job,
            worker: r.worker,
            token: r.token.map(token_from_row),
            state: r.state,
        });
        if let (Some(v), Some(r)) = (&view, seen.get(&id))
            && sched::fencing::is_repeat_of(v, c.worker.0, c.token, c.end.attempt_state())
        {
            out.push(Ended::Repeat {
                job: JobId(v.job),
                job_state: r.job_state,
            });
            continue;
        }
        if let Err(fence) = sched::fencing::check(id, view.as_ref(), c.worker.0, c.token) {
            out.push(Ended::Fenced(fence));
            continue;
        }
        let Some(r) = seen.get_mut(&id) else {
            // `fencing::check` rejects unknown attempts; kept total for the compiler.
            out.push(Ended::Fenced(Fence::Unknown { attempt: id }));
            continue;
        };
        let job_view = JobView {
            state: r.job_state,
            failures: u32::try_from(r.failures).unwrap_or(u32::MAX),
            max_attempts: u32::try_from(r.max_attempts).unwrap_or(0),
        };
        let next = sched::after_attempt(&job_view, &c.end);
        let job = r.job;
        if let Some(json) = &c.result_json {
            results.insert(job, json!([job, id, json]));
        }
        attempt_ends.insert(
            id,
            json!([id, c.end.attempt_state().as_str(), c.end.error_text()]),
        );
        r.state = c.end.attempt_state();
        let job_state = match &next {
            JobNext::Done => Some((JobState::Done, None)),
            JobNext::Requeue { last_error } => Some((JobState::Queued, last_error.clone())),
            JobNext::Fail { last_error } => Some((JobState::Failed, Some(last_error.clone()))),
            JobNext::Unchanged => None,
        }
        .map(|(state, last_error)| {
            job_moves.insert(job, json!([job, state.as_str(), last_error]));
            state
        })
        .unwrap_or(r.job_state);
        // Other attempts of the same job in this group see the job as it is now.
        for (&other, o) in seen.iter_mut().filter(|(_, o)| o.job == job) {
            o.job_state = job_state;
            if other != id && c.end.counts_as_failure() {
                o.failures += 1;
            }
        }
        tracing::debug!(attempt = %c.attempt, job, ?next, "attempt ended");
        out.push(Ended::Applied {
            job: JobId(job),
            job_state,
        });
    }
    write_ends(conn, results, attempt_ends, job_moves).await?;
    Ok(out)
}

/// One statement each for the results, the attempt rows and the job rows of a group.
async fn write_ends(
    conn: &mut SqliteConnection,
    results: BTreeMap<i64, serde_json::Value>,
    attempt_ends: BTreeMap<i64, serde_json::Value>,
    job_moves: BTreeMap<i64, serde_json::Value>,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let all = |m: BTreeMap<i64, serde_json::Value>| to_json(&m.into_values().collect());
    if !results.is_empty() {
        // `WHERE true` tells SQLite's parser that ON CONFLICT belongs to the INSERT.
        sqlx::query(
            "INSERT INTO results (job_id, attempt_id, metrics_json, finished_at)
             SELECT value->>0, value->>1, value->>2, ?2 FROM json_each(?1) WHERE true
             ON CONFLICT(job_id) DO UPDATE SET attempt_id = excluded.attempt_id,
                 metrics_json = excluded.metrics_json, finished_at = excluded.finished_at",
        )
        .bind(all(results))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    if !attempt_ends.is_empty() {
        sqlx::query(
            "UPDATE attempts SET state = e.value->>1, ended_at = ?2, error = e.value->>2
             FROM json_each(?1) AS e WHERE attempts.id = e.value->>0",
        )
        .bind(all(attempt_ends))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    if !job_moves.is_empty() {
        sqlx::query(
            "UPDATE jobs SET state = m.value->>1, last_error = COALESCE(m.value->>2, jobs.last_error),
                 updated_at = ?2
             FROM json_each(?1) AS m WHERE jobs.id = m.value->>0",
        )
        .bind(all(job_moves))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Heartbeats, releases orphans and leases work for `calls`, in order. A worker's second call
/// in the same group (an abandoned call and its retry) runs after the first, in its own round,
/// so it sees the first one's leases as orphans just as it would one transaction at a time.
pub(super) async fn apply_leases(
    conn: &mut SqliteConnection,
    calls: &[LeaseCall],
) -> Result<Vec<LeaseOutcome>, StoreError> {
    let mut out: Vec<Option<LeaseOutcome>> = (0..calls.len()).map(|_| None).collect();
    let mut rest: Vec<usize> = (0..calls.len()).collect();
    while !rest.is_empty() {
        let mut workers = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = rest
            .into_iter()
            .partition(|&i| workers.insert(calls[i].worker));
        let round_calls: Vec<&LeaseCall> = round.iter().map(|&i| &calls[i]).collect();
        for (i, o) in round
            .into_iter()
            .zip(lease_round(conn, &round_calls).await?)
        {
            out[i] = Some(o);
        }
        rest = later;
    }
    Ok(out.into_iter().flatten().collect())
}

/// [`apply_leases`] for calls of distinct workers.
async fn lease_round(
    conn: &mut SqliteConnection,
    calls: &[&LeaseCall],
) -> Result<Vec<LeaseOutcome>, StoreError> {
    let workers = to_json(&json!(calls.iter().map(|c| c.worker.0).collect::<Vec<_>>()));
    let known: HashSet<i64> = sqlx::query_scalar(
        "UPDATE workers SET last_seen_at = ?2 WHERE id IN (SELECT value FROM json_each(?1))
         RETURNING id",
    )
    .bind(&workers)
    .bind(now_ms())
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let mut holds: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    for r in sqlx::query(
        "SELECT id, job_id, worker_id FROM attempts
         WHERE state = 'running' AND worker_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&workers)
    .fetch_all(&mut *conn)
    .await?
    {
        let (id, job, worker): (i64, i64, i64) = (
            r.try_get("id")?,
            r.try_get("job_id")?,
            r.try_get("worker_id")?,
        );
        holds.entry(worker).or_default().push((id, job));
    }
    let mut renew = Vec::new();
    let mut stops = Vec::with_capacity(calls.len());
    for c in calls.iter().filter(|c| known.contains(&c.worker.0)) {
        let held = holds
            .get(&c.worker.0)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let ids: Vec<i64> = held.iter().map(|&(id, _)| id).collect();
        let listed: Vec<i64> = c.running.iter().map(|a| a.0).collect();
        let plan = sched::reconcile(&listed, &ids);
        renew.extend(plan.renew.iter().map(|&id| json!([id, c.expires_at])));
        for orphan in plan.orphans {
            let job = held.iter().find(|&&(id, _)| id == orphan).map(|&(_, j)| j);
            if let Some(job) = job {
                release_orphan(conn, AttemptId(orphan), JobId(job), c.worker).await?;
            }
        }
        stops.push(plan.stop.into_iter().map(AttemptId).collect::<Vec<_>>());
    }
    if !renew.is_empty() {
        sqlx::query(
            "UPDATE attempts SET lease_expires_at = r.value->>1
             FROM json_each(?1) AS r WHERE attempts.id = r.value->>0",
        )
        .bind(to_json(&json!(renew)))
        .execute(&mut *conn)
        .await?;
    }
    let wants: Vec<(WorkerId, usize, i64)> = calls
        .iter()
        .filter(|c| known.contains(&c.worker.0))
        .map(|c| (c.worker, c.free, c.expires_at))
        .collect();
    let mut leases = pick(conn, &wants).await?.into_iter();
    let mut stops = stops.into_iter();
    Ok(calls
        .iter()
        .map(|c| match known.contains(&c.worker.0) {
            true => Ok((
                stops.next().unwrap_or_default(),
                leases.next().unwrap_or_default(),
            )),
            false => Err(StoreError::NotFound(format!("worker {}", c.worker))),
        })
        .collect())
}

/// A queued job taken off the queue by [`pick`], before its attempt exists.
struct Taken {
    at: Candidate,
    number: i64,
    params_json: String,
    sweep_name: String,
}

/// Leases queued jobs in queue order (see [`sched::order`]) to callers `(worker, how many,
/// lease expiry)`, earlier callers first: one `UPDATE … RETURNING` per active sweep visited and
/// one `INSERT` for all new attempts.
pub(super) async fn pick(
    conn: &mut SqliteConnection,
    wants: &[(WorkerId, usize, i64)],
) -> Result<Vec<Vec<LeasedJob>>, StoreError> {
    let total: usize = wants.iter().map(|w| w.1).sum();
    if total == 0 {
        return Ok(wants.iter().map(|_| Vec::new()).collect());
    }
    let now = now_ms();
    let sweeps = sqlx::query(&format!(
        "SELECT id, name, priority FROM sweeps WHERE state = 'active' ORDER BY {}",
        sched::SWEEP_ORDER_SQL
    ))
    .fetch_all(&mut *conn)
    .await?;
    let mut taken = Vec::new();
    for s in sweeps {
        let (sweep_id, priority): (i64, i64) = (s.try_get("id")?, s.try_get("priority")?);
        let sweep_name: String = s.try_get("name")?;
        let rows = sqlx::query(&format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = ?3
             WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND sweep_id = ?1
                          ORDER BY {} LIMIT ?2)
             RETURNING id, seq, attempts, params_json",
            sched::JOB_ORDER_SQL
        ))
        .bind(sweep_id)
        .bind((total - taken.len()) as i64)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
        for j in rows {
            taken.push(Taken {
                at: Candidate {
                    sweep_priority: priority,
                    sweep_id,
                    job_seq: j.try_get("seq")?,
                    job_id: j.try_get("id")?,
                },
                number: j.try_get("attempts")?,
                params_json: j.try_get("params_json")?,
                sweep_name: sweep_name.clone(),
            });
        }
        if taken.len() >= total {
            break;
        }
    }
    // RETURNING gives rows in no particular order; the queue order decides who gets what.
    taken.sort_by(|a, b| sched::order::queue_cmp(&a.at, &b.at));
    let shares =
        sched::order::share_out(&wants.iter().map(|w| w.1).collect::<Vec<_>>(), taken.len());
    let mut owner = Vec::with_capacity(taken.len());
    for (w, &n) in wants.iter().zip(&shares) {
        owner.extend(std::iter::repeat_n(w, n));
    }
    // job -> (attempt id, lease token)
    let attempts: HashMap<i64, (i64, i64)> = if taken.is_empty() {
        HashMap::new()
    } else {
        let rows: Vec<serde_json::Value> = taken
            .iter()
            .zip(&owner)
            .map(|(t, (worker, _, expires_at))| {
                json!([t.at.job_id, t.number, worker.0, expires_at])
            })
            .collect();
        // `random() | 1`: 63 random bits from SQLite's generator (seeded from the OS), never 0,
        // which the wire reserves for "no token".
        sqlx::query_as::<_, (i64, i64, i64)>(
            "INSERT INTO attempts (job_id, number, worker_id, state, lease_expires_at, started_at, token)
             SELECT value->>0, value->>1, value->>2, 'running', value->>3, ?2, random() | 1
             FROM json_each(?1)
             RETURNING job_id, id, token",
        )
        .bind(to_json(&json!(rows)))
        .bind(now)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(job, id, token)| (job, (id, token)))
        .collect()
    };
    let mut taken = taken.into_iter().zip(owner);
    let mut out = Vec::with_capacity(wants.len());
    for &n in &shares {
        let mut mine = Vec::with_capacity(n);
        for (t, (_, _, expires_at)) in taken.by_ref().take(n) {
            let (attempt, token) = attempts.get(&t.at.job_id).copied().ok_or_else(|| {
                StoreError::Corrupt(format!("no attempt inserted for job {}", t.at.job_id))
            })?;
            mine.push(LeasedJob {
                job: JobId(t.at.job_id),
                attempt: AttemptId(attempt),
                token: token_from_row(token),
                number: u32::try_from(t.number).unwrap_or(u32::MAX),
                params_json: t.params_json,
                sweep_name: t.sweep_name,
                expires_at,
                resume: None,
            });
        }
        out.push(mine);
    }
    Ok(out)
}
