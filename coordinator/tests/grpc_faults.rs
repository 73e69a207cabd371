//! Fault tolerance with real processes: `worker` binaries connected over real gRPC on
//! 127.0.0.1, killed with SIGKILL mid-job; a `coordinator` binary killed mid-sweep and
//! restarted on the same database; a worker started before any coordinator exists.
//!
//! The `worker` binary is taken from the same target directory as `coordinator`
//! (`cargo test --workspace` builds both).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Row;
use support::grpc::*;
use support::proc::Proc;

/// The tests each run two or three training processes; on a 2-core machine they must not
/// also run at the same time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn scalar(db: &sqlx::SqlitePool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_finishes_on_the_other_worker() {
    let _serial = SERIAL.lock().await;
    fashion_mnist_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(3)).await;
    let sweep = submit(&srv.store, &slow_sweep("kill-worker", 2)).await;
    let mut a = Proc::worker("worker-a", &srv.url, dir.path());
    let mut b = Proc::worker("worker-b", &srv.url, dir.path());
    let db = srv.store.reader().clone();

    // Wait until worker-a's attempt has streamed a few metric batches, then SIGKILL it.
    let t0 = Instant::now();
    let (victim_attempt, victim_job) = loop {
        let row = sqlx::query(
            "SELECT a.id, a.job_id FROM attempts a JOIN workers w ON w.id = a.worker_id
             WHERE w.name = 'worker-a' AND a.state = 'running' AND a.last_seq >= 2",
        )
        .fetch_optional(&db)
        .await
        .unwrap();
        if let Some(r) = row {
            break (r.get::<i64, _>(0), r.get::<i64, _>(1));
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "worker-a never reported; its log:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    a.kill9();
    let killed_at = Instant::now();

    let states = wait_all_final(&srv.store, sweep, Duration::from_secs(900)).await;
    assert!(
        states.iter().all(|(_, s)| s == "done"),
        "{states:?}\nworker-b log:\n{}",
        b.log_text()
    );
    let expired: String = sqlx::query_scalar("SELECT state FROM attempts WHERE id = ?1")
        .bind(victim_attempt)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(expired, "expired", "the killed attempt's lease must expire");
    let rerun = sqlx::query(
        "SELECT a.number, w.name FROM results r JOIN attempts a ON a.id = r.attempt_id
         JOIN workers w ON w.id = a.worker_id WHERE r.job_id = ?1",
    )
    .bind(victim_job)
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(
        rerun.get::<i64, _>(0) >= 2,
        "the result comes from a new attempt"
    );
    assert_eq!(rerun.get::<String, _>(1), "worker-b");
    assert!(assert_metrics_exactly_once(&srv.store).await >= 3);
    tracing::info!(
        secs = killed_at.elapsed().as_secs_f64(),
        "sweep done after the kill"
    );

    // SIGTERM on an idle worker: a clean exit.
    assert!(
        b.terminate(Duration::from_secs(30)).success(),
        "{}",
        b.log_text()
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_sweep_continues_after_a_restart() {
    let _serial = SERIAL.lock().await;
    fashion_mnist_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let sweep_file = dir.path().join("sweep.toml");
    std::fs::write(&sweep_file, slow_sweep("kill-coordinator", 3)).unwrap();
    let db_path = dir.path().join("ls.db");
    let port = free_port();
    let grpc = format!("127.0.0.1:{port}");
    let args = [
        "--sweep",
        sweep_file.to_str().unwrap(),
        "--db",
        db_path.to_str().unwrap(),
        "--grpc-addr",
        &grpc,
        "--http-addr",
        "127.0.0.1:0",
        "--lease-ttl",
        "5",
        "--exit-when-done",
    ];
    let exe = Path::new(env!("CARGO_BIN_EXE_coordinator"));
    let mut coord = Proc::spawn("coordinator-1", exe, &args, dir.path());
    let url = format!("http://{grpc}");
    let mut w1 = Proc::worker("worker-1", &url, dir.path());
    let mut w2 = Proc::worker("worker-2", &url, dir.path());

    // A read-only view of the coordinator's database.
    let t0 = Instant::now();
    let db = support::proc::migrated_db(&db_path, || coord.log_text()).await;

    // Kill it once metrics are flowing and work is still left.
    loop {
        let streamed = scalar(&db, "SELECT COALESCE(MAX(last_seq), -1) FROM attempts").await;
        if streamed >= 2 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no metrics; coordinator log:\n{}\nworker-1 log:\n{}",
            coord.log_text(),
            w1.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    coord.kill9();
    let left = scalar(&db, "SELECT COUNT(*) FROM jobs WHERE state != 'done'").await;
    assert!(left > 0, "the sweep finished before the kill");

    // Down for a moment: the workers keep training and buffer their reports.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut coord2 = Proc::spawn("coordinator-2", exe, &args, dir.path());
    let status = coord2.wait(Duration::from_secs(900));
    assert!(
        status.success(),
        "restarted coordinator:\n{}",
        coord2.log_text()
    );

    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM jobs ORDER BY seq")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(states, ["done", "done", "done"], "{}", coord2.log_text());
    // No job was resubmitted: the restart's `--sweep` found every cell.
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM jobs").await, 3);
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM results").await, 3);
    let store = coordinator::store::Store::open(&db_path).await.unwrap();
    assert!(assert_metrics_exactly_once(&store).await >= 3);

    for w in [&mut w1, &mut w2] {
        let s = w.terminate(Duration::from_secs(30));
        assert!(s.success(), "{}", w.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_the_coordinator_connects_when_it_appears() {
    let _serial = SERIAL.lock().await;
    fashion_mnist_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut w = Proc::worker("early-worker", &url, dir.path());
    // Long enough for several failed connection attempts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the worker gave up:\n{}",
        w.log_text()
    );

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let srv = start_on(&dir.path().join("ls.db"), Some(listener), |_| {}).await;
    let sweep = submit(&srv.store, &tiny_sweep("late-coordinator", 1, "")).await;
    let states = wait_all_final(&srv.store, sweep, Duration::from_secs(600)).await;
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].1, "done", "{}", w.log_text());
    let name: String =
        sqlx::query_scalar("SELECT w.name FROM attempts a JOIN workers w ON w.id = a.worker_id")
            .fetch_one(srv.store.reader())
            .await
            .unwrap();
    assert_eq!(name, "early-worker");
    assert!(
        w.terminate(Duration::from_secs(30)).success(),
        "{}",
        w.log_text()
    );
    srv.stop().await;
}
