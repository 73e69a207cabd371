//! A full disk under a live coordinator, for real: its database and checkpoints on a small
//! tmpfs, a real `worker` process training on it, and the file system filled while a job
//! runs. The worker sees why its writes fail (in its log), backs off instead of spinning, and
//! once there is room the sweep finishes with nothing lost; the database stays consistent.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::grpc::*;

async fn integrity(store: &coordinator::store::Store) -> String {
    sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(store.reader())
        .await
        .unwrap()
}

async fn wait_for(store: &coordinator::store::Store, sql: &str, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(store.reader())
            .await
            .unwrap();
        if n > 0 {
            return;
        }
        assert!(t0.elapsed() < limit, "not after {limit:?}: {sql}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_filling_the_disk_sees_why_backs_off_and_loses_nothing() {
    fashion_mnist_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = TinyFs::mount(&dir.path().join("tiny"), 64 * 1024) else {
        return;
    };
    let srv = start(&fs.0, Duration::from_secs(30)).await;
    let first = submit(&srv.store, &tiny_sweep("first", 1, "")).await;
    let second = submit(&srv.store, &tiny_sweep("second", 1, "")).await;
    srv.store.pause_sweep(second).await.unwrap();
    let log = dir.path().join("worker.log");
    let mut worker = Command::new(worker_exe())
        .args(["--cpu", "--slots", "1", "--name", "filler"])
        .args(["--coordinator", &srv.url])
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .env("RUST_LOG", "info")
        .env_remove("LATENTSWEEP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    // A finished job whose result must survive what follows.
    wait_all_final(&srv.store, first, Duration::from_secs(300)).await;
    let result_before: String = sqlx::query_scalar(
        "SELECT r.metrics_json FROM results r JOIN jobs j ON j.id = r.job_id WHERE j.sweep_id = ?1",
    )
    .bind(first.0)
    .fetch_one(srv.store.reader())
    .await
    .unwrap();

    // The second job starts; the disk fills up under it.
    srv.store.resume_sweep(second).await.unwrap();
    wait_for(
        &srv.store,
        &format!(
            "SELECT COUNT(*) FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE j.sweep_id = {}",
            second.0
        ),
        Duration::from_secs(60),
    )
    .await;
    let filler = fs.fill();
    let calls_before = grpc_calls();
    let full_for = Duration::from_secs(8);
    tokio::time::sleep(full_for).await;
    let calls = grpc_calls() - calls_before;
    // Every failing call (heartbeat, report stream, upload) is retried with a backoff that
    // starts at 100-200 ms and doubles: a few dozen calls at most. A loop retrying at once
    // would make thousands.
    assert!(
        calls <= 60,
        "{calls} gRPC calls in {full_for:?} with a full disk: something does not back off"
    );
    let seen = std::fs::read_to_string(&log).unwrap();
    assert!(
        seen.contains("disk is full") || seen.contains("database or disk is full"),
        "the worker's log says why its writes fail:\n{seen}"
    );
    assert_eq!(integrity(&srv.store).await, "ok");

    // Room again: the sweep finishes, with every result and metric batch exactly once.
    std::fs::remove_file(filler).unwrap();
    let states = wait_all_final(&srv.store, second, Duration::from_secs(300)).await;
    assert!(states.iter().all(|(_, s)| s == "done"), "{states:?}");
    let result_after: String = sqlx::query_scalar(
        "SELECT r.metrics_json FROM results r JOIN jobs j ON j.id = r.job_id WHERE j.sweep_id = ?1",
    )
    .bind(first.0)
    .fetch_one(srv.store.reader())
    .await
    .unwrap();
    assert_eq!(result_after, result_before);
    let results: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM results")
        .fetch_one(srv.store.reader())
        .await
        .unwrap();
    assert_eq!(results, 2);
    assert!(assert_metrics_exactly_once(&srv.store).await >= 2);
    assert_eq!(integrity(&srv.store).await, "ok");

    Command::new("kill")
        .arg("-TERM")
        .arg(worker.id().to_string())
        .status()
        .unwrap();
    let _ = worker.wait();
    let store = srv.store.clone();
    srv.stop().await;
    store.close().await;
    drop(fs);
}

/// gRPC calls answered so far, of every method (from the latency histogram's counts).
fn grpc_calls() -> u64 {
    let prefix = format!("{}_count{{", coordinator::obs::names::GRPC_SECONDS);
    coordinator::obs::exposition()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}
