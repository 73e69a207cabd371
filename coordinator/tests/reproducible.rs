//! Same cell, same seed, same bits, wherever it runs: one Fashion-MNIST cell trained three ways
//! with the real binaries — `worker train` alone, a `worker --slots 2` training another cell at
//! the same time, and `coordinator --local-workers 2` — must report bit-identical metrics.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proto::metric;
use support::grpc::{fashion_mnist_or_panic, free_port, worker_exe};

/// The cell under test and a neighbour that trains beside it in the shared-process runs.
const SWEEP: &str = r#"
name = "repro"
[grid]
network = "embedding-net"
loss = ["contrastive", "triplet"]
dataset = "fashion-mnist"
margin = 1.0
lr = 1e-3
batch_size = 64
epochs = 1
seed = 7
[fixed]
train_limit = 1000
"#;

/// Metrics as exact bit patterns; the throughput is the one figure allowed to differ.
fn bits(metrics: BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    metrics
        .into_iter()
        .filter(|(k, _)| k != metric::SAMPLES_PER_SEC)
        .map(|(k, v)| (k, v.to_bits()))
        .collect()
}

fn run_to_end(mut cmd: Command, log: &Path, limit: Duration) {
    let mut child = cmd
        .env("RUST_LOG", "info,sqlx=warn,h2=warn")
        .env_remove("LATENTSWEEP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(status.success(), "{cmd:?} failed:\n{text}");
            return;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{cmd:?} did not finish within {limit:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The contrastive cell's final metrics from a coordinator's database.
fn result_of(db: &Path) -> BTreeMap<String, f64> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let json: String = sqlx::query_scalar(
            "SELECT r.metrics_json FROM results r JOIN jobs j ON j.id = r.job_id \
             WHERE j.params_json LIKE '%\"loss\":\"contrastive\"%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let states: Vec<String> = sqlx::query_scalar("SELECT state FROM jobs ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(states, ["done", "done"]);
        pool.close().await;
        serde_json::from_str(&json).unwrap()
    })
}

/// A coordinator on `sweep` that exits when the sweep is done, plus `extra` arguments.
fn coordinator(dir: &Path, sweep: &Path, grpc: &str, extra: &[&str]) -> (Command, PathBuf) {
    let db = dir.join("ls.db");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordinator"));
    cmd.args([
        "--sweep",
        sweep.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ])
    .args(["--grpc-addr", grpc, "--http-addr", "127.0.0.1:0"])
    .arg("--exit-when-done")
    .args(extra);
    (cmd, db)
}

#[test]
fn one_cell_three_ways_bit_identical() {
    fashion_mnist_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("repro.toml");
    std::fs::write(&sweep, SWEEP).unwrap();
    let limit = Duration::from_secs(900);

    // 1. Alone: `worker train`.
    let out = dir.path().join("alone");
    let mut train = Command::new(worker_exe());
    train.args([
        "train",
        "--dataset",
        "fashion-mnist",
        "--network",
        "embedding-net",
    ]);
    train.args(["--loss", "contrastive", "--margin", "1.0", "--lr", "0.001"]);
    train.args(["--batch-size", "64", "--epochs", "1", "--seed", "7"]);
    train.args(["--train-limit", "1000", "--out", out.to_str().unwrap()]);
    run_to_end(train, &dir.path().join("alone.log"), limit);
    let alone: BTreeMap<String, f64> =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();

    // 2. A two-slot worker training the neighbour cell at the same time.
    let slots_dir = dir.path().join("slots");
    std::fs::create_dir_all(&slots_dir).unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let (cmd, db) = coordinator(&slots_dir, &sweep, &grpc, &[]);
    let coord_log = slots_dir.join("coordinator.log");
    let coord = std::thread::spawn(move || run_to_end(cmd, &coord_log, limit));
    let mut worker = Command::new(worker_exe());
    worker.args([
        "--coordinator",
        &format!("http://{grpc}"),
        "--cpu",
        "--slots",
        "2",
    ]);
    worker
        .args(["--name", "two-slots", "--work-dir"])
        .arg(slots_dir.join("work"));
    let mut worker = worker
        .env_remove("LATENTSWEEP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(slots_dir.join("worker.log")).unwrap())
        .spawn()
        .unwrap();
    coord.join().unwrap();
    let _ = worker.kill();
    let _ = worker.wait();
    let slots = result_of(&db);

    // 3. Two local workers of the coordinator.
    let local_dir = dir.path().join("local");
    std::fs::create_dir_all(&local_dir).unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let (cmd, db) = coordinator(&local_dir, &sweep, &grpc, &["--local-workers", "2"]);
    run_to_end(cmd, &local_dir.join("coordinator.log"), limit);
    let local = result_of(&db);

    let alone = bits(alone);
    assert!(alone.contains_key(metric::MAP_AT_R), "{alone:?}");
    assert_eq!(bits(slots), alone, "worker --slots 2 vs worker train");
    assert_eq!(
        bits(local),
        alone,
        "coordinator --local-workers 2 vs worker train"
    );
}
