//! A real sweep end to end: a coordinator and two CPU workers (`--local-workers 2`, i.e. `worker`
//! processes connected over real gRPC on 127.0.0.1) train the four losses on a slice of
//! Fashion-MNIST.
//! Every result, metric, snapshot and checkpoint must land in SQLite exactly once.

mod support;

use std::time::Duration;

use coordinator::local::{LocalWorkers, spawn_local_workers};
use proto::metric;
use sqlx::Row;
use support::grpc::*;

const FOUR_LOSSES: &str = r#"
name = "four-losses"
[grid]
network = "embedding-net"
loss = ["ce", "bce", "contrastive", "triplet"]
dataset = "fashion-mnist"
margin = 1.0
lr = 1e-3
embedding_dim = 2
batch_size = 64
epochs = 1
mining = "batch-all"
[fixed]
train_limit = 320
eval_every = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_local_workers_run_the_four_losses_to_completion() {
    fashion_mnist_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(10)).await;
    let sweep = submit(&srv.store, FOUR_LOSSES).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = spawn_local_workers(
        &LocalWorkers {
            count: 2,
            grpc_addr: srv.addr,
            token: None,
            data_dir: None,
            work_root: dir.path().join("work"),
            worker_bin: Some(worker_exe()),
            pin_cert: None,
        },
        stop_rx,
    )
    .expect("local workers start");
    let states = wait_all_final(&srv.store, sweep, Duration::from_secs(900)).await;
    assert!(states.iter().all(|(_, s)| s == "done"), "{states:?}");
    stop_tx.send(true).unwrap();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("worker exits")
            .expect("supervisor ok");
    }

    let db = srv.store.reader();
    let per_job = sqlx::query(
        "SELECT j.id, json_extract(j.params_json, '$.loss') AS loss, r.metrics_json,
                (SELECT COUNT(DISTINCT a.worker_id) FROM attempts a WHERE a.job_id = j.id) AS workers,
                (SELECT COUNT(*) FROM metrics m WHERE m.job_id = j.id AND m.name = 'loss') AS loss_points,
                (SELECT COUNT(*) FROM metrics m WHERE m.job_id = j.id AND m.name = 'epoch_loss') AS epoch_points,
                (SELECT COUNT(*) FROM metrics m WHERE m.job_id = j.id AND m.name = 'knn1_acc') AS eval_points,
                (SELECT COUNT(*) FROM snapshots s WHERE s.job_id = j.id) AS snapshots,
                (SELECT COUNT(*) FROM artifacts f WHERE f.job_id = j.id) AS checkpoints
         FROM jobs j JOIN results r ON r.job_id = j.id WHERE j.sweep_id = ?1",
    )
    .bind(sweep.0)
    .fetch_all(db)
    .await
    .unwrap();
    assert_eq!(per_job.len(), 4, "one result per loss");
    let mut losses: Vec<String> = per_job.iter().map(|r| r.get("loss")).collect();
    losses.sort();
    assert_eq!(losses, ["bce", "ce", "contrastive", "triplet"]);
    for r in &per_job {
        let loss: String = r.get("loss");
        let metrics: serde_json::Value =
            serde_json::from_str(&r.get::<String, _>("metrics_json")).unwrap();
        let knn = metrics[metric::KNN1_ACC].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&knn), "{loss}: knn1_acc {knn}");
        assert!(r.get::<i64, _>("loss_points") >= 1, "{loss}: step losses");
        assert_eq!(r.get::<i64, _>("epoch_points"), 1, "{loss}: one epoch");
        assert!(r.get::<i64, _>("eval_points") >= 1, "{loss}: evaluation");
        assert!(r.get::<i64, _>("snapshots") >= 1, "{loss}: snapshots");
        assert_eq!(
            r.get::<i64, _>("checkpoints"),
            1,
            "{loss}: the epoch's checkpoint"
        );
    }
    let workers_used: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT a.worker_id) FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE j.sweep_id = ?1",
    )
    .bind(sweep.0)
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(workers_used, 2, "both workers trained");
    assert_eq!(assert_metrics_exactly_once(&srv.store).await, 4);
    srv.stop().await;
}
