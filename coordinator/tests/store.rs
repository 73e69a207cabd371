//! The SQLite store on real files: migrations, idempotent submission, exactly-once metrics.

use std::path::Path;

use coordinator::store::{BatchOutcome, MetricPoint, SnapshotData, Store};
use proto::metric;
use proto::sweep::{DEFAULT_MAX_CELLS, parse_sweep};
use proto::{AttemptId, JobId, SnapshotProjection};

const SWEEP: &str = r#"
name = "s"
[grid]
network = "embedding-net"
loss = ["ce", "contrastive"]
dataset = "fashion-mnist"
margin = [1.0, 2.0]
lr = 1e-3
"#;

async fn store(dir: &Path) -> Store {
    Store::open(&dir.join("nested/dir/ls.db")).await.unwrap()
}

/// Inserts an attempt row for the first job, as the lease path will.
async fn first_attempt(store: &Store) -> (JobId, AttemptId) {
    let job: i64 = sqlx::query_scalar("SELECT id FROM jobs ORDER BY id LIMIT 1")
        .fetch_one(store.reader())
        .await
        .unwrap();
    let attempt: i64 = sqlx::query_scalar(
        "INSERT INTO attempts (job_id, number, lease_expires_at, started_at) VALUES (?1, 1, 0, 0) RETURNING id",
    )
    .bind(job)
    .fetch_one(store.writer())
    .await
    .unwrap();
    (JobId(job), AttemptId(attempt))
}

#[tokio::test]
async fn submission_is_idempotent_and_additive() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let sweep = parse_sweep(SWEEP, "s.toml", DEFAULT_MAX_CELLS).unwrap();
    let first = store.submit(&sweep, SWEEP, None).await.unwrap();
    assert_eq!(
        (first.created, first.existing),
        (3, 0),
        "ce once, contrastive x 2 margins"
    );
    let again = store.submit(&sweep, SWEEP, None).await.unwrap();
    assert_eq!((again.created, again.existing), (0, 3));

    // Finish a job, then extend the sweep: only the new cells appear, the result survives.
    let (job, attempt) = first_attempt(&store).await;
    let metrics = [(metric::MAP_AT_R.to_owned(), 0.5)].into_iter().collect();
    store.record_result(job, attempt, &metrics).await.unwrap();
    sqlx::query("UPDATE jobs SET state = 'done' WHERE id = ?1")
        .bind(job.0)
        .execute(store.writer())
        .await
        .unwrap();
    let wider_text = SWEEP.replace("[1.0, 2.0]", "[1.0, 2.0, 4.0]");
    let wider = parse_sweep(&wider_text, "s.toml", DEFAULT_MAX_CELLS).unwrap();
    let extended = store.submit(&wider, &wider_text, None).await.unwrap();
    assert_eq!((extended.created, extended.existing), (1, 3));
    let status = store.status().await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!((status[0].jobs.queued, status[0].jobs.done), (3, 1));
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM results")
        .fetch_one(store.reader())
        .await
        .unwrap();
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn metric_batches_are_stored_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let sweep = parse_sweep(SWEEP, "s.toml", DEFAULT_MAX_CELLS).unwrap();
    store.submit(&sweep, SWEEP, None).await.unwrap();
    let (job, attempt) = first_attempt(&store).await;
    let batch = |seq: i64| -> Vec<MetricPoint> {
        (0..10)
            .map(|i| MetricPoint {
                step: seq * 10 + i,
                epoch: 0,
                name: metric::LOSS.into(),
                value: i as f64,
                time_ms: 0,
            })
            .collect()
    };
    assert_eq!(
        store
            .record_metrics(job, attempt, 0, &batch(0))
            .await
            .unwrap(),
        BatchOutcome::Stored { gap_before: None }
    );
    assert_eq!(
        store
            .record_metrics(job, attempt, 0, &batch(0))
            .await
            .unwrap(),
        BatchOutcome::Duplicate
    );
    assert_eq!(
        store
            .record_metrics(job, attempt, 2, &batch(2))
            .await
            .unwrap(),
        BatchOutcome::Stored {
            gap_before: Some((1, 2))
        }
    );
    // The late batch fills the gap without moving the high-water mark back.
    assert_eq!(
        store
            .record_metrics(job, attempt, 1, &batch(1))
            .await
            .unwrap(),
        BatchOutcome::Stored { gap_before: None }
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM metrics")
        .fetch_one(store.reader())
        .await
        .unwrap();
    assert_eq!(n, 30);
    let last: i64 = sqlx::query_scalar("SELECT last_seq FROM attempts WHERE id = ?1")
        .bind(attempt.0)
        .fetch_one(store.reader())
        .await
        .unwrap();
    assert_eq!(last, 2);
}

#[tokio::test]
async fn snapshots_round_trip_through_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let sweep = parse_sweep(SWEEP, "s.toml", DEFAULT_MAX_CELLS).unwrap();
    store.submit(&sweep, SWEEP, None).await.unwrap();
    let (job, attempt) = first_attempt(&store).await;
    let snap = SnapshotData {
        epoch: 3,
        projection: SnapshotProjection::Tsne,
        points: vec![[0.5, -1.25], [f32::MIN_POSITIVE, 3.0e7]],
        labels: vec![7, 0],
        indices: vec![9_999, 1],
        class_names: (0..10).map(|d| d.to_string()).collect(),
    };
    store.record_snapshot(job, attempt, &snap).await.unwrap();
    let (projected, projection, points, labels, indices, names): (
        bool,
        String,
        Vec<u8>,
        Vec<u8>,
        Vec<u8>,
        String,
    ) = sqlx::query_as(
        "SELECT projected, projection, points, labels, indices, class_names FROM snapshots",
    )
    .fetch_one(store.reader())
    .await
    .unwrap();
    assert!(projected, "older readers still see a projection");
    assert_eq!(projection, "tsne");
    let names: Vec<String> = serde_json::from_str(&names).unwrap();
    let projection = projection.parse().unwrap();
    let back = SnapshotData::from_blobs(3, projection, &points, &labels, &indices, names).unwrap();
    assert_eq!(back, snap);
}

/// A database made by the first migration keeps its rows when upgraded to the latest schema.
#[tokio::test]
async fn upgrade_from_first_migration_keeps_rows() {
    let dir = tempfile::tempdir().unwrap();
    let first_only = dir.path().join("first");
    std::fs::create_dir(&first_only).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(names.len() >= 2, "this test needs at least two migrations");
    std::fs::copy(root.join(&names[0]), first_only.join(&names[0])).unwrap();
    let old = sqlx::migrate::Migrator::new(first_only.as_path())
        .await
        .unwrap();

    let db = dir.path().join("old.db");
    let store = Store::open_with(&db, &old).await.unwrap();
    let sweep = parse_sweep(SWEEP, "s.toml", DEFAULT_MAX_CELLS).unwrap();
    store.submit(&sweep, SWEEP, None).await.unwrap();
    let (job, attempt) = first_attempt(&store).await;
    sqlx::query(
        "INSERT INTO snapshots (job_id, attempt_id, epoch, projected, n, points, labels, indices,
                                created_at)
         VALUES (?1, ?2, 1, 0, 0, x'', x'', x'', 0), (?1, ?2, 2, 1, 0, x'', x'', x'', 0)",
    )
    .bind(job.0)
    .bind(attempt.0)
    .execute(store.writer())
    .await
    .unwrap();
    store.close().await;

    let store = Store::open(&db).await.unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
        .fetch_one(store.reader())
        .await
        .unwrap();
    assert_eq!(jobs, 3);
    let names: String = sqlx::query_scalar("SELECT class_names FROM snapshots")
        .fetch_one(store.reader())
        .await
        .unwrap();
    assert_eq!(names, "[]", "the new column gets its default on old rows");
    // Before projections were named, the flag meant PCA.
    let projections: Vec<String> =
        sqlx::query_scalar("SELECT projection FROM snapshots ORDER BY epoch")
            .fetch_all(store.reader())
            .await
            .unwrap();
    assert_eq!(projections, ["none", "pca"]);
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(store.reader())
        .await
        .unwrap();
    assert_eq!(
        applied as usize,
        coordinator::store::MIGRATOR.migrations.len()
    );
}

#[tokio::test]
async fn each_database_has_its_own_id_kept_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ls.db");
    let store = Store::open(&db).await.unwrap();
    let id = store.database_id().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(&id[14..15], "4", "version 4: {id}");
    store.close().await;
    let again = Store::open(&db).await.unwrap();
    assert_eq!(again.database_id(), id, "a restart keeps the id");
    let ro = Store::open_read_only(&db).await.unwrap();
    assert_eq!(ro.database_id(), id);
    again.close().await;
    ro.close().await;
    for f in ["ls.db", "ls.db-wal", "ls.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    let reset = Store::open(&db).await.unwrap();
    assert_ne!(
        reset.database_id(),
        id,
        "a new database at the same path is another database"
    );
}

#[tokio::test]
async fn read_only_open_creates_nothing_and_writes_fail() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("sub/typo.db");
    let err = Store::open_read_only(&missing).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no database at {}", missing.display())
    );
    assert!(!dir.path().join("sub").exists(), "no directory made");

    let db = dir.path().join("ls.db");
    let store = Store::open(&db).await.unwrap();
    let sweep = parse_sweep(SWEEP, "s.toml", DEFAULT_MAX_CELLS).unwrap();
    store.submit(&sweep, SWEEP, None).await.unwrap();
    let ro = Store::open_read_only(&db).await.unwrap();
    assert_eq!(ro.status().await.unwrap()[0].jobs.queued, 3);
    let id = ro.sweep_id("s").await.unwrap();
    assert!(
        ro.pause_sweep(id).await.is_err(),
        "a read-only handle cannot write"
    );
    assert_eq!(store.status().await.unwrap()[0].state, "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_a_new_database_in_one_process_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new.db");
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { Store::open(&db).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for o in opens {
        let store = o.await.unwrap().expect("every open succeeds");
        ids.insert(store.database_id().to_owned());
    }
    assert_eq!(ids.len(), 1, "one database, one id: {ids:?}");
}
