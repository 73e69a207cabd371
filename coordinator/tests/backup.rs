//! `coordinator backup` (the real binary) while a writer keeps storing metric batches: each copy
//! passes `PRAGMA integrity_check` and holds a consistent prefix of what was written (batches
//! 0..=k without a gap, exactly their points, the attempt's `last_seq` = k); an existing file
//! is never overwritten.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use coordinator::store::{MetricPoint, Store, now_ms};
use proto::{AttemptId, JobId, WorkerId};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnectOptions;
use support::grpc::{submit, tiny_sweep};

const POINTS_PER_BATCH: usize = 25;

fn backup(db: &Path, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("--db")
        .arg(db)
        .arg("backup")
        .arg("--out")
        .arg(out)
        .env_remove("LATENTSWEEP_DB")
        .output()
        .unwrap()
}

/// (integrity_check, batch seqs in order, metric rows, the attempt's last_seq) of a copy.
async fn inspect(copy: &Path, attempt: i64) -> (String, Vec<i64>, i64, i64) {
    let opts = SqliteConnectOptions::new().filename(copy).read_only(true);
    let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let seqs: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM metric_batches WHERE attempt_id = ?1 ORDER BY seq")
            .bind(attempt)
            .fetch_all(&mut c)
            .await
            .unwrap();
    let points: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM metrics WHERE attempt_id = ?1")
        .bind(attempt)
        .fetch_one(&mut c)
        .await
        .unwrap();
    let last: i64 = sqlx::query_scalar("SELECT last_seq FROM attempts WHERE id = ?1")
        .bind(attempt)
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    (check, seqs, points, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writing_is_a_consistent_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ls.db");
    let store = Store::open(&db).await.unwrap();
    submit(&store, &tiny_sweep("backup", 1, "")).await;
    let worker = store
        .register_worker(&coordinator::store::lease::NewWorker {
            name: "w".into(),
            host: "h".into(),
            backend: "none".into(),
            devices_json: "[]".into(),
            version: "t".into(),
        })
        .await
        .unwrap();
    let leased = store
        .lease_jobs(WorkerId(worker.0), 1, now_ms() + 600_000)
        .await
        .unwrap();
    let (job, attempt): (JobId, AttemptId) = (leased[0].job, leased[0].attempt);

    // The writer: one metric batch per transaction, as report streams store them.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seq = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let points: Vec<MetricPoint> = (0..POINTS_PER_BATCH)
                    .map(|i| MetricPoint {
                        step: seq * 100 + i as i64,
                        epoch: 1,
                        name: "loss".into(),
                        value: i as f64,
                        time_ms: now_ms(),
                    })
                    .collect();
                store
                    .record_metrics(job, attempt, seq, &points)
                    .await
                    .unwrap();
                seq += 1;
            }
            seq
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut copies = Vec::new();
    for i in 0..3 {
        let out = dir.path().join(format!("copy-{i}.db"));
        let db2 = db.clone();
        let out2 = out.clone();
        let o = tokio::task::spawn_blocking(move || backup(&db2, &out2))
            .await
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("bytes"),
            "says what it wrote"
        );
        copies.push(out);
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();

    let mut seen = Vec::new();
    for copy in &copies {
        let (check, seqs, points, last) = inspect(copy, attempt.0).await;
        assert_eq!(check, "ok", "{}", copy.display());
        let k = seqs.len() as i64;
        assert_eq!(seqs, (0..k).collect::<Vec<_>>(), "batches without a gap");
        assert_eq!(points, k * POINTS_PER_BATCH as i64, "every batch whole");
        assert_eq!(last, k - 1, "the attempt row agrees with its batches");
        seen.push(k);
    }
    assert!(
        seen[0] > 0,
        "the first copy holds what was written before it"
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "later copies hold more: {seen:?}"
    );
    assert!(
        *seen.last().unwrap() < written,
        "the writer went on after the last copy ({seen:?} of {written}): the copies were taken \
         while it wrote"
    );

    // An existing file is refused and left as it was.
    let before = std::fs::read(&copies[0]).unwrap();
    let o = backup(&db, &copies[0]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&copies[0]).unwrap(), before);
    // No temporary file is left beside the copies.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("partial")), "{names:?}");
    store.close().await;
}
