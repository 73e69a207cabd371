//! The coordinator's database under the gRPC service, on real files and 127.0.0.1: requests
//! about a replaced or restored database are refused, and writes that fail (a full disk) reach
//! the client.

mod support;

use std::path::Path;
use std::time::Duration;

use proto::metric;
use proto::rpc::{self, PROTOCOL_VERSION};
use support::grpc::*;
use tonic::Code;

async fn one_value(store: &coordinator::store::Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.reader())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_of_a_replaced_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ls.db");
    let ttl = Duration::from_secs(30);

    // DB1: a worker registers and leases an attempt.
    let srv = start(dir.path(), ttl).await;
    submit(&srv.store, &tiny_sweep("before", 1, "")).await;
    let c = client(&srv.url, None);
    let reply = c
        .clone()
        .register(register_req("old"))
        .await
        .unwrap()
        .into_inner();
    let db1 = reply.database_id.clone();
    assert_eq!(db1, srv.store.database_id());
    let old = lease_one(&c, reply.worker_id, &[]).await;
    assert_eq!(old.database_id, db1, "a lease names its database");
    let store1 = srv.store.clone();
    srv.stop().await;
    store1.close().await;

    // The operator starts over: a new database at the same path, the same ids handed out again.
    for f in ["ls.db", "ls.db-wal", "ls.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    let srv = start_on(&db, None, |c| {
        c.sched = coordinator::sched::SchedConfig::with_ttl(ttl)
    })
    .await;
    let sweep = submit(&srv.store, &tiny_sweep("after", 1, "")).await;
    let c = client(&srv.url, None);
    let new_worker = register(&c, "new").await;
    let new = lease_one(&c, new_worker, &[]).await;
    assert_ne!(new.database_id, db1);
    assert_eq!(
        (new_worker, new.attempt_id),
        (reply.worker_id, old.attempt_id),
        "the test needs the new database to reuse both ids"
    );

    // The old worker, still running its attempt, reports and ends it with the old database id.
    let mut item = report(
        reply.worker_id,
        old.attempt_id,
        old.lease_token,
        1,
        points(0, 3),
    );
    item.database_id = db1.clone();
    let err = send_reports(&c, vec![item]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&format!(
            "attempt {} belongs to another database",
            old.attempt_id
        )),
        "{}",
        err.message()
    );
    let err = c
        .clone()
        .complete(rpc::CompleteRequest {
            protocol_version: PROTOCOL_VERSION,
            worker_id: reply.worker_id,
            attempt_id: old.attempt_id,
            lease_token: old.lease_token,
            metrics: [(metric::MAP_AT_R.to_owned(), 0.9)].into_iter().collect(),
            database_id: db1.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = c
        .clone()
        .fail(rpc::FailRequest {
            protocol_version: PROTOCOL_VERSION,
            worker_id: reply.worker_id,
            attempt_id: old.attempt_id,
            lease_token: old.lease_token,
            error: "stale".into(),
            retryable: false,
            database_id: db1.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // Its heartbeat must not renew (or release) the new worker's attempt: NOT_FOUND, which
    // makes a worker drop its attempts and register again.
    let mut hb = lease_req(reply.worker_id, 0, vec![old.attempt_id], 0);
    hb.database_id = db1.clone();
    let err = c.clone().lease(hb).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("another database"),
        "{}",
        err.message()
    );

    // The new database's job with that attempt id is untouched.
    assert_eq!(
        job_states(&srv.store, sweep).await,
        vec![(new.job_id, "running".to_owned())]
    );
    let q = format!(
        "SELECT (SELECT COUNT(*) FROM metric_batches) + (SELECT COUNT(*) FROM metrics)
              + (SELECT COUNT(*) FROM results)
              + (SELECT COUNT(*) FROM attempts WHERE id = {} AND state != 'running')",
        new.attempt_id
    );
    assert_eq!(one_value(&srv.store, &q).await, 0);

    // The same requests with the new database's id (or none: an older worker) are served.
    let mut item = report(new_worker, new.attempt_id, new.lease_token, 1, points(0, 3));
    item.database_id = new.database_id.clone();
    assert_eq!(send_reports(&c, vec![item]).await.unwrap().len(), 1);
    let item = report(new_worker, new.attempt_id, new.lease_token, 2, points(1, 3));
    assert_eq!(send_reports(&c, vec![item]).await.unwrap().len(), 1);
    srv.stop().await;
}

/// Copies the database files `ls.db*` of `from` into `to` (the coordinator is stopped).
fn copy_db(from: &Path, to: &Path) {
    for f in ["ls.db", "ls.db-wal", "ls.db-shm"] {
        let _ = std::fs::remove_file(to.join(f));
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
}

/// A database restored from a backup keeps its UUID, so an attempt id leased after the backup
/// is leased again after the restore. Only the lease token tells the two leases apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_of_a_restored_backup_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let db = dir.path().join("ls.db");
    let ttl = Duration::from_secs(30);

    // A worker registers; then the backup is taken with the coordinator stopped.
    let srv = start(dir.path(), ttl).await;
    let sweep = submit(&srv.store, &tiny_sweep("restored", 1, "")).await;
    let w = register(&client(&srv.url, None), "w").await;
    let store = srv.store.clone();
    srv.stop().await;
    store.close().await;
    copy_db(dir.path(), backup.path());

    // Work goes on: the job is leased (attempt A, token T1) and reports.
    let srv = start_on(&db, None, |c| {
        c.sched = coordinator::sched::SchedConfig::with_ttl(ttl)
    })
    .await;
    let c = client(&srv.url, None);
    let old = lease_one(&c, w, &[]).await;
    assert_ne!(old.lease_token, 0, "a lease carries a token");
    let item = report(w, old.attempt_id, old.lease_token, 1, points(0, 3));
    assert_eq!(send_reports(&c, vec![item]).await.unwrap().len(), 1);
    let store = srv.store.clone();
    srv.stop().await;
    store.close().await;

    // The operator restores the backup; the same job is leased again under the same ids.
    copy_db(backup.path(), dir.path());
    let srv = start_on(&db, None, |c| {
        c.sched = coordinator::sched::SchedConfig::with_ttl(ttl)
    })
    .await;
    let c = client(&srv.url, None);
    let new = lease_one(&c, w, &[]).await;
    assert_eq!(
        new.database_id, old.database_id,
        "a restore keeps the database id"
    );
    assert_eq!(
        (new.job_id, new.attempt_id),
        (old.job_id, old.attempt_id),
        "the test needs the restored database to reuse the attempt id"
    );
    assert_ne!(new.lease_token, old.lease_token);

    // The old lease's report, upload and end are refused, the way a foreign database is.
    let refused = |err: tonic::Status| {
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message().contains(&format!(
                "attempt {}'s lease token does not match: it belongs to another lease",
                old.attempt_id
            )),
            "{}",
            err.message()
        );
    };
    let mut item = report(w, old.attempt_id, old.lease_token, 1, points(0, 3));
    item.database_id = old.database_id.clone();
    refused(send_reports(&c, vec![item]).await.unwrap_err());
    let file = dir.path().join("epoch-0001.ckpt");
    std::fs::write(&file, b"stale checkpoint").unwrap();
    let up = worker::agent::client::upload(
        &c,
        w,
        &old.database_id,
        old.attempt_id,
        old.lease_token,
        1,
        &file,
    )
    .await;
    refused(up.unwrap_err());
    let complete = |token: u64| rpc::CompleteRequest {
        protocol_version: PROTOCOL_VERSION,
        worker_id: w,
        attempt_id: old.attempt_id,
        lease_token: token,
        metrics: [(metric::MAP_AT_R.to_owned(), 0.9)].into_iter().collect(),
        database_id: old.database_id.clone(),
    };
    refused(
        c.clone()
            .complete(complete(old.lease_token))
            .await
            .unwrap_err(),
    );
    let fail = rpc::FailRequest {
        protocol_version: PROTOCOL_VERSION,
        worker_id: w,
        attempt_id: old.attempt_id,
        lease_token: old.lease_token,
        error: "stale".into(),
        retryable: false,
        database_id: old.database_id.clone(),
    };
    refused(c.clone().fail(fail).await.unwrap_err());
    let release = rpc::ReleaseRequest {
        protocol_version: PROTOCOL_VERSION,
        worker_id: w,
        attempt_id: old.attempt_id,
        lease_token: old.lease_token,
        checkpoint_artifact_id: 0,
        database_id: old.database_id.clone(),
    };
    refused(c.clone().release(release).await.unwrap_err());
    // No token at all (a worker older than the field) cannot prove the lease either.
    refused(c.clone().complete(complete(0)).await.unwrap_err());

    // The new attempt's rows are untouched.
    assert_eq!(
        job_states(&srv.store, sweep).await,
        vec![(new.job_id, "running".to_owned())]
    );
    let q = format!(
        "SELECT (SELECT COUNT(*) FROM metric_batches) + (SELECT COUNT(*) FROM metrics)
              + (SELECT COUNT(*) FROM results) + (SELECT COUNT(*) FROM artifacts)
              + (SELECT COUNT(*) FROM attempts WHERE id = {} AND state != 'running')",
        new.attempt_id
    );
    assert_eq!(one_value(&srv.store, &q).await, 0);

    // The new lease works: its report is stored and its completion ends the job.
    let item = report(w, new.attempt_id, new.lease_token, 1, points(0, 3));
    assert_eq!(send_reports(&c, vec![item]).await.unwrap().len(), 1);
    c.clone().complete(complete(new.lease_token)).await.unwrap();
    assert_eq!(
        job_states(&srv.store, sweep).await,
        vec![(new.job_id, "done".to_owned())]
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_an_error_the_client_sees() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = TinyFs::mount(&dir.path().join("tiny"), 1024) else {
        return;
    };
    let srv = start(&fs.0, Duration::from_secs(30)).await;
    let sweep = submit(&srv.store, &tiny_sweep("full", 3, "")).await;
    let c = client(&srv.url, None);
    let w = register(&c, "before").await;
    let job = lease_one(&c, w, &[]).await;
    let workers_before = one_value(&srv.store, "SELECT COUNT(*) FROM workers").await;

    let filler = fs.fill();
    // Registering would hand out an id that is not stored: the worker must see an error.
    let err = c
        .clone()
        .register(register_req("after"))
        .await
        .expect_err("a registration that could not be stored");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("full"), "{}", err.message());
    // Through group commit: a lease that takes a job, and an attempt end.
    let err = c
        .clone()
        .lease(lease_req(w, 1, vec![job.attempt_id], 0))
        .await
        .expect_err("a lease that could not be stored");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let err = c
        .clone()
        .fail(rpc::FailRequest {
            protocol_version: PROTOCOL_VERSION,
            worker_id: w,
            attempt_id: job.attempt_id,
            lease_token: job.lease_token,
            error: "boom".into(),
            retryable: true,
            database_id: String::new(),
        })
        .await
        .expect_err("an end that could not be stored");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // A report stream.
    let err = send_reports(
        &c,
        vec![report(
            w,
            job.attempt_id,
            job.lease_token,
            1,
            points(0, 2000),
        )],
    )
    .await
    .expect_err("a metric batch that could not be stored");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // Nothing half-stored, and the same calls work once there is room again.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(
        one_value(&srv.store, "SELECT COUNT(*) FROM workers").await,
        workers_before
    );
    assert_eq!(
        one_value(&srv.store, "SELECT COUNT(*) FROM metric_batches").await,
        0
    );
    let states = job_states(&srv.store, sweep).await;
    assert_eq!(
        states.iter().filter(|(_, s)| s == "running").count(),
        1,
        "{states:?}"
    );
    let again = register(&c, "after").await;
    assert!(again > w);
    assert_eq!(
        send_reports(
            &c,
            vec![report(
                w,
                job.attempt_id,
                job.lease_token,
                1,
                points(0, 2000)
            )]
        )
        .await
        .unwrap()
        .len(),
        1
    );
    let store = srv.store.clone();
    srv.stop().await;
    store.close().await;
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_the_coordinator_keeps_forgetting_registers_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(3)).await;
    // The symptom, made certain: every registration gets an id that is not stored, so
    // every `Lease` answers NOT_FOUND ("register again"). Triggers count the registrations.
    for sql in [
        "CREATE TABLE test_registrations (at INTEGER NOT NULL)",
        "CREATE TRIGGER test_count AFTER INSERT ON workers BEGIN
             INSERT INTO test_registrations VALUES (NEW.registered_at); END",
        "CREATE TRIGGER test_forget AFTER INSERT ON workers BEGIN
             DELETE FROM workers WHERE id = NEW.id; END",
    ] {
        sqlx::query(sql).execute(srv.store.writer()).await.unwrap();
    }
    let cfg = worker::agent::AgentConfig::cpu(srv.url.clone(), 1, dir.path().join("work"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(worker::agent::run_cpu(
        cfg,
        Box::pin(async move {
            let _ = stop_rx.await;
        }),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    let n = one_value(&srv.store, "SELECT COUNT(*) FROM test_registrations").await;
    // Backoff from 100 ms doubling: about 5 tries in 3 s. Without it, thousands.
    assert!(n >= 2, "the agent re-registered at all: {n}");
    assert!(n <= 12, "{n} registrations in 3 s: no backoff");
    srv.stop().await;
}
