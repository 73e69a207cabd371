//! Group commit of leases and attempt ends: many concurrent calls share write transactions,
//! and the outcome must be that of answering them one at a time (queue order, one lease per
//! job, one applied end per attempt, orphans of a repeated `Lease` call released).

use std::collections::BTreeMap;
use std::path::Path;

use coordinator::sched::AttemptEnd;
use coordinator::store::lease::{Ended, NewWorker};
use coordinator::store::{Store, now_ms};
use futures::future::join_all;
use proto::WorkerId;
use proto::metric;
use proto::sweep::parse_sweep;

/// A sweep of 4 learning rates × `seeds` jobs.
async fn submit(store: &Store, name: &str, seeds: usize, priority: i64) {
    let toml = format!(
        "name = \"{name}\"\npriority = {priority}\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\n\
         margin = 1.0\ndataset = \"fashion-mnist\"\nlr = [1e-3, 2e-3, 3e-3, 4e-3]\nseeds = {seeds}\n"
    );
    let sweep = parse_sweep(&toml, "t.toml", 10_000).unwrap();
    store.submit(&sweep, &toml, None).await.unwrap();
}

async fn workers(store: &Store, n: usize) -> Vec<WorkerId> {
    let mut out = Vec::new();
    for i in 0..n {
        let w = NewWorker {
            name: format!("w{i}"),
            host: "test".into(),
            backend: "none".into(),
            devices_json: "[]".into(),
            version: "test".into(),
        };
        out.push(store.register_worker(&w).await.unwrap());
    }
    out
}

async fn open(dir: &Path) -> Store {
    Store::open(&dir.join("group.db")).await.unwrap()
}

async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.reader())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_leases_and_ends_behave_as_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    submit(&store, "first", 10, 0).await;
    submit(&store, "urgent", 1, 5).await;
    let expected: Vec<i64> = sqlx::query_scalar(
        "SELECT j.id FROM jobs j JOIN sweeps s ON s.id = j.sweep_id
         ORDER BY s.priority DESC, s.id, j.seq, j.id LIMIT 32",
    )
    .fetch_all(store.reader())
    .await
    .unwrap();
    let ws = workers(&store, 32).await;
    let expiry = now_ms() + 30_000;
    let leased = join_all(
        ws.iter()
            .map(|&w| store.heartbeat_and_lease(w, &[], 1, expiry)),
    )
    .await;
    let mut got = Vec::new();
    for (w, r) in ws.iter().zip(leased) {
        let (stop, jobs) = r.unwrap();
        assert!(stop.is_empty());
        assert_eq!(jobs.len(), 1, "worker {w} got one job");
        got.push((*w, jobs[0].clone()));
    }
    let mut ids: Vec<i64> = got.iter().map(|(_, j)| j.job.0).collect();
    ids.sort_unstable();
    let mut want = expected.clone();
    want.sort_unstable();
    assert_eq!(ids, want, "the 32 first jobs in queue order, each once");
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM attempts WHERE state = 'running'"
        )
        .await,
        32
    );

    // All complete at once, one of them twice (a retried request), and a stranger tries too.
    let metrics: BTreeMap<String, f64> = [(metric::MAP_AT_R.to_owned(), 0.5)].into_iter().collect();
    let (w0, j0) = got[0].clone();
    let mut calls = Vec::new();
    for (w, j) in &got {
        calls.push((j.attempt, j.token, *w));
    }
    calls.push((j0.attempt, j0.token, w0));
    calls.push((got[1].1.attempt, got[1].1.token, w0));
    let ended = join_all(calls.iter().map(|&(a, t, w)| {
        let metrics = &metrics;
        let store = &store;
        async move {
            store
                .end_attempt_with(a, Some(t), w, &AttemptEnd::Done, Some(metrics))
                .await
        }
    }))
    .await;
    let ended: Vec<Ended> = ended.into_iter().map(Result::unwrap).collect();
    let applied = ended
        .iter()
        .filter(|e| matches!(e, Ended::Applied { .. }))
        .count();
    let repeats = ended
        .iter()
        .filter(|e| matches!(e, Ended::Repeat { .. }))
        .count();
    assert_eq!((applied, repeats), (32, 1));
    assert!(matches!(ended[33], Ended::Fenced(_)), "{:?}", ended[33]);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM results").await, 32);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM jobs WHERE state = 'done'").await,
        32
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM attempts WHERE state = 'done' AND ended_at IS NOT NULL"
        )
        .await,
        32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_lease_call_releases_what_the_first_one_leased() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    submit(&store, "s", 2, 0).await;
    let w = workers(&store, 1).await[0];
    let expiry = now_ms() + 30_000;
    let (a, b) = tokio::join!(
        store.heartbeat_and_lease(w, &[], 1, expiry),
        store.heartbeat_and_lease(w, &[], 1, expiry)
    );
    assert_eq!(a.unwrap().1.len() + b.unwrap().1.len(), 2);
    // Whichever call came second saw the first one's lease as an orphan.
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM attempts WHERE state = 'running'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM attempts WHERE state = 'released'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM jobs WHERE state = 'running'").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_in_one_group_use_up_attempts_and_requeue() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    submit(&store, "s", 2, 0).await;
    let ws = workers(&store, 8).await;
    let unknown = WorkerId(9_999);
    let expiry = now_ms() + 30_000;
    let mut leases = join_all(
        ws.iter()
            .chain([&unknown])
            .map(|&w| store.heartbeat_and_lease(w, &[], 1, expiry)),
    )
    .await;
    assert!(
        leases.pop().unwrap().is_err(),
        "an unknown worker is refused"
    );
    let fail = AttemptEnd::Failed {
        error: "diverged".into(),
        retryable: true,
    };
    let held: Vec<_> = leases
        .into_iter()
        .zip(&ws)
        .map(|(r, &w)| (w, r.unwrap().1.remove(0)))
        .collect();
    let ended = join_all(
        held.iter()
            .map(|(w, j)| store.end_attempt(j.attempt, Some(j.token), *w, &fail)),
    )
    .await;
    for e in ended {
        assert!(
            matches!(e.unwrap(), Ended::Applied { ref job_state, .. } if job_state == "queued")
        );
    }
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND last_error = 'diverged'"
        )
        .await,
        8
    );
    // The heartbeat lists the failed attempt: it is no longer running, so the worker is told
    // to stop it, and it gets the job again as attempt 2.
    let (w, j) = &held[0];
    let (stop, again) = store
        .heartbeat_and_lease(*w, &[j.attempt], 1, expiry)
        .await
        .unwrap();
    assert_eq!(stop, vec![j.attempt]);
    assert_eq!(again[0].number, 2);
}
