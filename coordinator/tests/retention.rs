//! Retention with a real database and real files: a running job keeps only its newest
//! checkpoint, a done job its final one (or none), unfinished uploads go at start-up, and
//! `coordinator gc` (the binary) removes what the policy does not keep, prints it, and never
//! touches results or metrics.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use coordinator::retention::KeepCheckpoints;
use coordinator::store::{Store, now_ms};
use proto::rpc::{self, PROTOCOL_VERSION};
use support::grpc::*;
use worker::agent::client as agent_client;

/// Files under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}

async fn checkpoint_rows(store: &Store, job: i64) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT epoch, path FROM artifacts WHERE job_id = ?1 ORDER BY epoch")
        .bind(job)
        .fetch_all(store.reader())
        .await
        .unwrap()
}

/// Leases one job and uploads checkpoints of epochs 1, 3 and 2 (an attempt's uploads run
/// concurrently, so they may land out of order), checking after each that only the newest
/// epoch's is kept; then completes the job. Returns the job id.
async fn run_one_job(srv: &Server, dir: &Path) -> i64 {
    let c = client(&srv.url, None);
    let w = register(&c, "w").await;
    let job = lease_one(&c, w, &[]).await;
    let mut newest = 0;
    for epoch in [1u32, 3, 2] {
        newest = newest.max(epoch);
        let file = dir.join(format!("ckpt-{epoch}"));
        std::fs::write(&file, vec![epoch as u8; 1000 * epoch as usize]).unwrap();
        agent_client::upload(&c, w, "", job.attempt_id, job.lease_token, epoch, &file)
            .await
            .unwrap();
        let rows = checkpoint_rows(&srv.store, job.job_id).await;
        assert_eq!(rows.len(), 1, "epoch {epoch}: {rows:?}");
        assert_eq!(rows[0].0, i64::from(newest), "after epoch {epoch}");
        let on_disk = files(&srv.db.with_extension("db.artifacts"));
        assert_eq!(on_disk, vec![PathBuf::from(&rows[0].1)], "epoch {epoch}");
    }
    c.clone()
        .complete(rpc::CompleteRequest {
            protocol_version: PROTOCOL_VERSION,
            worker_id: w,
            attempt_id: job.attempt_id,
            lease_token: job.lease_token,
            metrics: [(proto::metric::MAP_AT_R.to_owned(), 0.5)].into(),
            database_id: String::new(),
        })
        .await
        .unwrap();
    job.job_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_keeps_its_newest_checkpoint_and_a_done_job_its_final_one() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(30)).await;
    submit(&srv.store, &tiny_sweep("keep", 1, "")).await;
    let job = run_one_job(&srv, dir.path()).await;
    let rows = checkpoint_rows(&srv.store, job).await;
    assert_eq!(rows.len(), 1, "the final checkpoint stays: {rows:?}");
    assert_eq!(rows[0].0, 3);
    assert_eq!(files(&srv.db.with_extension("db.artifacts")).len(), 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_checkpoints_none_removes_a_done_jobs_checkpoints_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_on(&dir.path().join("ls.db"), None, |c| {
        c.keep_checkpoints = KeepCheckpoints::None
    })
    .await;
    submit(&srv.store, &tiny_sweep("none", 1, "")).await;
    let job = run_one_job(&srv, dir.path()).await;
    assert!(checkpoint_rows(&srv.store, job).await.is_empty());
    assert!(files(&srv.db.with_extension("db.artifacts")).is_empty());
    let result: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM results WHERE job_id = ?1")
        .bind(job)
        .fetch_one(srv.store.reader())
        .await
        .unwrap();
    assert_eq!(result, 1, "the result stays");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_uploads_are_removed_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("ls.db.artifacts");
    std::fs::create_dir_all(artifacts.join("job-1")).unwrap();
    std::fs::write(
        artifacts.join("job-1/attempt-1-epoch-0001-abc.part"),
        b"half",
    )
    .unwrap();
    std::fs::write(artifacts.join("job-1/keep.ckpt"), b"whole").unwrap();
    let srv = start(dir.path(), Duration::from_secs(30)).await;
    // Serving has begun once a call is answered.
    register(&client(&srv.url, None), "w").await;
    assert_eq!(files(&artifacts), vec![PathBuf::from("job-1/keep.ckpt")]);
    srv.stop().await;
}

fn gc(db: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("--db")
        .arg(db)
        .arg("gc")
        .args(args)
        .env_remove("LATENTSWEEP_DB")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.reader())
        .await
        .unwrap()
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sql).execute(store.writer()).await.unwrap();
}

/// Records a checkpoint row and writes its file.
async fn checkpoint(
    store: &Store,
    artifacts: &Path,
    job: i64,
    attempt: i64,
    epoch: i64,
    size: usize,
) {
    let rel = format!("job-{job}/attempt-{attempt}-epoch-{epoch:04}.ckpt");
    std::fs::create_dir_all(artifacts.join(format!("job-{job}"))).unwrap();
    std::fs::write(artifacts.join(&rel), vec![0u8; size]).unwrap();
    store
        .record_artifact(&coordinator::store::ArtifactRow {
            job: proto::JobId(job),
            attempt: proto::AttemptId(attempt),
            kind: "checkpoint".into(),
            epoch,
            path: rel,
            size: size as i64,
            sha256: "0".repeat(64),
        })
        .await
        .unwrap();
}

fn age(path: &Path, by: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_what_the_policy_does_not_keep_and_never_results_or_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ls.db");
    let artifacts = dir.path().join("ls.db.artifacts");
    let store = Store::open(&db).await.unwrap();
    submit(&store, &tiny_sweep("gc", 2, "")).await;
    // Two jobs, attempts made the way leases make them; then states set directly (the
    // transitions themselves are tested elsewhere).
    let w = store
        .register_worker(&coordinator::store::lease::NewWorker {
            name: "old".into(),
            host: "h".into(),
            backend: "cpu".into(),
            devices_json: "[]".into(),
            version: "t".into(),
        })
        .await
        .unwrap();
    let leased = store.lease_jobs(w, 2, now_ms() + 600_000).await.unwrap();
    let (done, running) = (leased[0].job.0, leased[1].job.0);
    let (done_att, running_att) = (leased[0].attempt.0, leased[1].attempt.0);
    for e in 1..=3 {
        checkpoint(&store, &artifacts, done, done_att, e, 1000).await;
    }
    for e in 1..=2 {
        checkpoint(&store, &artifacts, running, running_att, e, 700).await;
    }
    for (job, att) in [(done, done_att), (running, running_att)] {
        store
            .record_metrics(
                proto::JobId(job),
                proto::AttemptId(att),
                0,
                &[coordinator::store::MetricPoint {
                    step: 1,
                    epoch: 1,
                    name: "loss".into(),
                    value: 1.0,
                    time_ms: 0,
                }],
            )
            .await
            .unwrap();
    }
    // The done job ran a second attempt that re-ran epoch 1: its first snapshot of epoch 1 is
    // superseded.
    exec(
        &store,
        &format!(
            "INSERT INTO attempts (job_id, number, worker_id, state, lease_expires_at, started_at)
         VALUES ({done}, 2, {}, 'done', 0, 0)",
            w.0
        ),
    )
    .await;
    let second: i64 = count(
        &store,
        &format!("SELECT id FROM attempts WHERE job_id = {done} AND number = 2"),
    )
    .await;
    for (att, epoch) in [(done_att, 1), (second, 1), (second, 2)] {
        exec(&store, &format!(
            "INSERT INTO snapshots (job_id, attempt_id, epoch, n, points, labels, indices, created_at)
             VALUES ({done}, {att}, {epoch}, 1, zeroblob(8), zeroblob(4), zeroblob(4), 0)")).await;
    }
    exec(
        &store,
        &format!("UPDATE attempts SET state = 'done' WHERE id = {done_att}"),
    )
    .await;
    exec(
        &store,
        &format!("UPDATE jobs SET state = 'done' WHERE id = {done}"),
    )
    .await;
    exec(
        &store,
        &format!(
            "INSERT INTO results (job_id, attempt_id, metrics_json, finished_at)
         VALUES ({done}, {second}, '{{\"map_at_r\": 0.5}}', 0)"
        ),
    )
    .await;
    // A second worker, gone for 30 days and running nothing; the first still runs a job.
    let gone = store
        .register_worker(&coordinator::store::lease::NewWorker {
            name: "gone".into(),
            host: "h".into(),
            backend: "cpu".into(),
            devices_json: "[]".into(),
            version: "t".into(),
        })
        .await
        .unwrap();
    let month_ago = now_ms() - 30 * 24 * 3600 * 1000;
    exec(
        &store,
        &format!("UPDATE workers SET last_seen_at = {month_ago}"),
    )
    .await;
    exec(
        &store,
        &format!(
            "UPDATE attempts SET worker_id = {} WHERE id = {second}",
            gone.0
        ),
    )
    .await;
    // Stray files: an old unreferenced checkpoint and an old `.part`; a fresh `.part` may be an
    // upload in progress and stays.
    std::fs::create_dir_all(artifacts.join("job-1")).unwrap();
    std::fs::write(artifacts.join("job-1/stray.ckpt"), vec![0u8; 300]).unwrap();
    age(
        &artifacts.join("job-1/stray.ckpt"),
        Duration::from_secs(7200),
    );
    std::fs::write(artifacts.join("job-1/old.part"), vec![0u8; 50]).unwrap();
    age(&artifacts.join("job-1/old.part"), Duration::from_secs(7200));
    std::fs::write(artifacts.join("job-1/fresh.part"), vec![0u8; 20]).unwrap();
    let files_before = files(&artifacts);
    let metrics_before = count(&store, "SELECT COUNT(*) FROM metrics").await;

    let dry = gc(&db, &["--dry-run"]);
    assert!(
        dry.contains("checkpoints: would free 3 file(s), 2700 bytes"),
        "{dry}"
    );
    assert!(
        dry.contains("snapshots:   would free 1 row(s), 16 bytes"),
        "{dry}"
    );
    assert!(dry.contains("workers:     would free 1 row(s)"), "{dry}");
    assert!(
        dry.contains("stray files: would free 2 file(s), 350 bytes"),
        "{dry}"
    );
    assert_eq!(files(&artifacts), files_before, "a dry run removes nothing");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM artifacts").await, 5);

    let out = gc(&db, &[]);
    assert!(
        out.contains("checkpoints: freed 3 file(s), 2700 bytes"),
        "{out}"
    );
    let kept: Vec<(i64, String)> =
        sqlx::query_as("SELECT job_id, path FROM artifacts ORDER BY job_id")
            .fetch_all(store.reader())
            .await
            .unwrap();
    assert_eq!(
        kept,
        vec![
            (
                done,
                format!("job-{done}/attempt-{done_att}-epoch-0003.ckpt")
            ),
            (
                running,
                format!("job-{running}/attempt-{running_att}-epoch-0002.ckpt")
            ),
        ]
    );
    let mut want: Vec<PathBuf> = kept.iter().map(|k| PathBuf::from(&k.1)).collect();
    want.push(PathBuf::from("job-1/fresh.part"));
    want.sort();
    assert_eq!(files(&artifacts), want);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM snapshots").await, 2);
    assert_eq!(
        count(
            &store,
            &format!("SELECT COUNT(*) FROM snapshots WHERE attempt_id = {done_att}")
        )
        .await,
        0
    );
    // The gone worker is forgotten (its attempt keeps its row); the busy one stays.
    assert_eq!(count(&store, "SELECT COUNT(*) FROM workers").await, 1);
    assert_eq!(
        count(
            &store,
            &format!("SELECT COUNT(*) FROM attempts WHERE id = {second} AND worker_id IS NULL")
        )
        .await,
        1
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM metrics").await,
        metrics_before
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM results").await, 1);

    // Nothing left to free; then `none` takes the done job's final checkpoint too.
    let again = gc(&db, &[]);
    assert!(
        again.contains("checkpoints: freed 0 file(s), 0 bytes"),
        "{again}"
    );
    let none = gc(&db, &["--keep-checkpoints", "none"]);
    assert!(
        none.contains("checkpoints: freed 1 file(s), 1000 bytes"),
        "{none}"
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM artifacts").await, 1);
    // Thinning: the done job finished long ago and keeps only its last epoch's snapshot.
    let thin = gc(&db, &["--thin-snapshots-after", "1"]);
    assert!(
        thin.contains("snapshots:   freed 1 row(s), 16 bytes"),
        "{thin}"
    );
    assert_eq!(count(&store, "SELECT MIN(epoch) FROM snapshots").await, 2);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM results").await, 1);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM metrics").await,
        metrics_before
    );
    store.close().await;
}
