//! The gRPC protocol against a real coordinator on 127.0.0.1 and a real SQLite file, driven by
//! a hand-written client (no training): leases, reports, fencing, expiry, checkpoints, ops.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use proto::metric;
use proto::rpc::{self, PROTOCOL_VERSION, report_request::Body};
use proto::{AttemptId, JobId};
use sqlx::Row;
use support::grpc::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_report_complete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(30)).await;
    let sweep = submit(&srv.store, &tiny_sweep("rt", 2, "")).await;
    let c = client(&srv.url, None);
    let w = register(&c, "w1").await;

    let job = lease_one(&c, w, &[]).await;
    let first_job: i64 =
        sqlx::query_scalar("SELECT id FROM jobs WHERE sweep_id = ?1 ORDER BY seq LIMIT 1")
            .bind(sweep.0)
            .fetch_one(srv.store.reader())
            .await
            .unwrap();
    assert_eq!(job.job_id, first_job, "jobs run in expansion order");
    assert_eq!(job.attempt_number, 1);
    let params: proto::JobParams = serde_json::from_str(&job.params_json).unwrap();
    assert_eq!(params.train_limit, Some(300));
    assert!(job.resume.is_none());
    let a = job.attempt_id;

    // seq 1 twice (a resend), then seq 3: a gap the coordinator notices.
    let eval = rpc::ReportRequest {
        database_id: String::new(),
        protocol_version: PROTOCOL_VERSION,
        worker_id: w,
        attempt_id: a,
        lease_token: job.lease_token,
        item: 4,
        body: Some(Body::Eval(rpc::EvalResult {
            seq: 2,
            epoch: 1,
            step: 5,
            metrics: BTreeMap::from([(metric::KNN1_ACC.to_owned(), 0.5)]),
            time_ms: 0,
        })),
    };
    let snap = rpc::ReportRequest {
        database_id: String::new(),
        protocol_version: PROTOCOL_VERSION,
        worker_id: w,
        attempt_id: a,
        lease_token: job.lease_token,
        item: 5,
        body: Some(Body::Snapshot(rpc::EpochSnapshot {
            epoch: 1,
            projected: true,
            projection: proto::SnapshotProjection::Tsne.as_str().to_owned(),
            xy: vec![0.0, 1.0, 2.0, 3.0],
            labels: vec![0, 1],
            indices: vec![10, 11],
            class_names: vec!["a".into(), "b".into()],
        })),
    };
    let acks = send_reports(
        &c,
        vec![
            report(w, a, job.lease_token, 1, points(0, 10)),
            report(w, a, job.lease_token, 2, points(1, 10)),
            report(w, a, job.lease_token, 3, points(1, 10)),
            eval,
            snap,
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        acks.iter().map(|a| a.item).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(acks.iter().all(|a| a.warning.is_empty()), "{acks:?}");
    // The snapshot's projection is stored by name.
    let projection: String = sqlx::query_scalar("SELECT projection FROM snapshots")
        .fetch_one(srv.store.reader())
        .await
        .unwrap();
    assert_eq!(projection, "tsne");
    let acks = send_reports(&c, vec![report(w, a, job.lease_token, 6, points(4, 3))])
        .await
        .unwrap();
    assert!(
        acks[0].warning.contains("missing"),
        "gap reported: {acks:?}"
    );

    c.clone()
        .complete(rpc::CompleteRequest {
            database_id: String::new(),
            protocol_version: PROTOCOL_VERSION,
            worker_id: w,
            attempt_id: a,
            lease_token: job.lease_token,
            metrics: BTreeMap::from([(metric::KNN1_ACC.to_owned(), 0.5)]),
        })
        .await
        .unwrap();
    // A retried Complete (lost reply) succeeds again without changing anything.
    c.clone()
        .complete(rpc::CompleteRequest {
            database_id: String::new(),
            protocol_version: PROTOCOL_VERSION,
            worker_id: w,
            attempt_id: a,
            lease_token: job.lease_token,
            metrics: BTreeMap::new(),
        })
        .await
        .unwrap();
    // Reports after the end are refused.
    let late = send_reports(&c, vec![report(w, a, job.lease_token, 7, points(5, 1))])
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");

    let db = srv.store.reader();
    let seqs: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM metric_batches WHERE attempt_id = ?1 ORDER BY seq")
            .bind(a)
            .fetch_all(db)
            .await
            .unwrap();
    assert_eq!(seqs, vec![0, 1, 2, 4]);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM metrics WHERE attempt_id = ?1")
        .bind(a)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(n, 10 + 10 + 1 + 3, "the resent batch is stored once");
    let row = sqlx::query("SELECT j.state, r.metrics_json, a.state AS astate FROM jobs j JOIN results r ON r.job_id = j.id
                           JOIN attempts a ON a.id = r.attempt_id WHERE j.id = ?1")
        .bind(job.job_id)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("state"), "done");
    assert_eq!(row.get::<String, _>("astate"), "done");
    assert!(
        row.get::<String, _>("metrics_json")
            .contains(metric::KNN1_ACC)
    );
    let snaps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM snapshots WHERE attempt_id = ?1")
        .bind(a)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(snaps, 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_version_mismatch_is_failed_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(30)).await;
    let c = client(&srv.url, None);
    let err = c
        .clone()
        .register(rpc::RegisterRequest {
            protocol_version: 99,
            name: "w".into(),
            backend: "cpu".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("99"), "{}", err.message());
    let w = register(&c, "w").await;
    let mut req = lease_req(w, 0, vec![], 0);
    req.protocol_version = 0;
    assert_eq!(
        c.clone().lease(req).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // Unknown worker ids are NotFound (the agent registers again).
    assert_eq!(
        c.clone()
            .lease(lease_req(w + 100, 0, vec![], 0))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_requeue_then_fail_and_stale_attempts_are_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_millis(600)).await;
    let sweep = submit(&srv.store, &tiny_sweep("exp", 2, "max_attempts = 2")).await;
    let c = client(&srv.url, None);
    let (a, b) = (register(&c, "a").await, register(&c, "b").await);

    let first = lease_one(&c, a, &[]).await;
    // Worker b keeps its job alive with heartbeats for well over a TTL.
    let kept = lease_one(&c, b, &[]).await;
    assert_ne!(first.job_id, kept.job_id);
    let t0 = std::time::Instant::now();
    loop {
        let r = c
            .clone()
            .lease(lease_req(b, 0, vec![kept.attempt_id], 100))
            .await
            .unwrap()
            .into_inner();
        assert!(r.cancel_attempts.is_empty(), "heartbeats keep the lease");
        if t0.elapsed() > Duration::from_millis(1500) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Worker a never heartbeated: its attempt expired and the job went back to the queue.
    let state: String = sqlx::query_scalar("SELECT state FROM attempts WHERE id = ?1")
        .bind(first.attempt_id)
        .fetch_one(srv.store.reader())
        .await
        .unwrap();
    assert_eq!(state, "expired");
    let stale = send_reports(
        &c,
        vec![report(
            a,
            first.attempt_id,
            first.lease_token,
            1,
            points(0, 1),
        )],
    )
    .await
    .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    let stale = c
        .clone()
        .complete(rpc::CompleteRequest {
            database_id: String::new(),
            protocol_version: PROTOCOL_VERSION,
            worker_id: a,
            attempt_id: first.attempt_id,
            lease_token: first.lease_token,
            metrics: BTreeMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    // ...and a's heartbeat tells it to stop.
    let r = c
        .clone()
        .lease(lease_req(a, 0, vec![first.attempt_id], 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.cancel_attempts, vec![first.attempt_id]);

    // Second (last) attempt of the same job, on the other worker, also expires: the job fails.
    let again = lease_one(&c, b, &[kept.attempt_id]).await;
    assert_eq!(again.job_id, first.job_id);
    assert_eq!(again.attempt_number, 2);
    // Another worker's report for b's attempt is fenced too.
    let other = send_reports(
        &c,
        vec![report(
            a,
            again.attempt_id,
            again.lease_token,
            1,
            points(0, 1),
        )],
    )
    .await
    .unwrap_err();
    assert_eq!(other.code(), Code::FailedPrecondition);
    let t0 = std::time::Instant::now();
    loop {
        let row = sqlx::query("SELECT state, last_error FROM jobs WHERE id = ?1")
            .bind(first.job_id)
            .fetch_one(srv.store.reader())
            .await
            .unwrap();
        if row.get::<String, _>("state") == "failed" {
            let err: String = row.get("last_error");
            assert!(err.contains("lease expired"), "{err}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "job never failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // b stopped heartbeating for its first job too: it goes back to the queue (1 of 2 attempts).
    let t0 = std::time::Instant::now();
    loop {
        let states = job_states(&srv.store, sweep).await;
        if states
            .iter()
            .any(|(id, s)| *id == kept.job_id && s == "queued")
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_until_attempts_run_out_and_keep_the_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(30)).await;
    let sweep = submit(&srv.store, &tiny_sweep("fail", 1, "max_attempts = 2")).await;
    let c = client(&srv.url, None);
    let w = register(&c, "w").await;
    for (n, want) in [(1, "queued"), (2, "failed")] {
        let j = lease_one(&c, w, &[]).await;
        assert_eq!(j.attempt_number, n);
        let r = c
            .clone()
            .fail(rpc::FailRequest {
                database_id: String::new(),
                protocol_version: PROTOCOL_VERSION,
                worker_id: w,
                attempt_id: j.attempt_id,
                lease_token: j.lease_token,
                error: format!("boom {n}"),
                retryable: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.job_state, want);
    }
    let err: String = sqlx::query_scalar("SELECT last_error FROM jobs WHERE sweep_id = ?1")
        .bind(sweep.0)
        .fetch_one(srv.store.reader())
        .await
        .unwrap();
    assert_eq!(err, "boom 2");
    // Retrying failed jobs grants new attempts.
    assert_eq!(srv.store.retry_failed(Some(sweep)).await.unwrap(), 1);
    let j = lease_one(&c, w, &[]).await;
    assert_eq!(j.attempt_number, 3);
    // A release does not count as a failure.
    c.clone()
        .release(rpc::ReleaseRequest {
            database_id: String::new(),
            protocol_version: PROTOCOL_VERSION,
            worker_id: w,
            attempt_id: j.attempt_id,
            lease_token: j.lease_token,
            checkpoint_artifact_id: 0,
        })
        .await
        .unwrap();
    assert_eq!(job_states(&srv.store, sweep).await[0].1, "queued");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_order_priority_pause_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(30)).await;
    let s1 = submit(&srv.store, &tiny_sweep("first", 2, "")).await;
    let s2 = submit(&srv.store, &tiny_sweep("second", 2, "")).await;
    let c = client(&srv.url, None);
    let w = register(&c, "w").await;
    let sweep_of = |job: i64| {
        let store = srv.store.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT sweep_id FROM jobs WHERE id = ?1")
                .bind(job)
                .fetch_one(store.reader())
                .await
                .unwrap()
        }
    };
    let j = lease_one(&c, w, &[]).await;
    assert_eq!(sweep_of(j.job_id).await, s1.0, "submission order");
    srv.store.set_priority(s2, 10).await.unwrap();
    let j2 = lease_one(&c, w, &[j.attempt_id]).await;
    assert_eq!(sweep_of(j2.job_id).await, s2.0, "priority overtakes");
    srv.store.pause_sweep(s2).await.unwrap();
    let j3 = lease_one(&c, w, &[j.attempt_id, j2.attempt_id]).await;
    assert_eq!(
        sweep_of(j3.job_id).await,
        s1.0,
        "paused sweeps lend nothing"
    );
    // s1 is exhausted, s2 paused: nothing to lease.
    let r = c
        .clone()
        .lease(lease_req(
            w,
            1,
            vec![j.attempt_id, j2.attempt_id, j3.attempt_id],
            300,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.jobs.is_empty());
    srv.store.resume_sweep(s2).await.unwrap();

    // Cancelling a running job reaches its worker through the heartbeat, promptly.
    let store = srv.store.clone();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.cancel_job(JobId(j.job_id)).await.unwrap()
    });
    let t0 = std::time::Instant::now();
    let r = c
        .clone()
        .lease(lease_req(
            w,
            0,
            vec![j.attempt_id, j2.attempt_id, j3.attempt_id],
            5000,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(canceller.await.unwrap());
    assert_eq!(r.cancel_attempts, vec![j.attempt_id]);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "long-poll woke on the cancellation"
    );
    assert!(srv.store.cancel_sweep(s2).await.unwrap() >= 1);
    let states = job_states(&srv.store, s2).await;
    assert!(states.iter().all(|(_, s)| s == "cancelled"), "{states:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_lease_replies_are_released_on_the_next_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(30)).await;
    let sweep = submit(&srv.store, &tiny_sweep("orphan", 1, "")).await;
    let c = client(&srv.url, None);
    let w = register(&c, "w").await;
    let lost = lease_one(&c, w, &[]).await; // pretend this reply never arrived
    c.clone().lease(lease_req(w, 0, vec![], 0)).await.unwrap();
    let state: String = sqlx::query_scalar("SELECT state FROM attempts WHERE id = ?1")
        .bind(lost.attempt_id)
        .fetch_one(srv.store.reader())
        .await
        .unwrap();
    assert_eq!(state, "released");
    assert_eq!(job_states(&srv.store, sweep).await[0].1, "queued");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_upload_verified_and_download_for_resume() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(30)).await;
    let sweep = submit(&srv.store, &tiny_sweep("ckpt", 1, "")).await;
    let c = client(&srv.url, None);
    let w = register(&c, "w").await;
    let j = lease_one(&c, w, &[]).await;
    let file = dir.path().join("epoch-0001.ckpt");
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let id = worker::agent::client::upload(&c, w, "", j.attempt_id, j.lease_token, 1, &file)
        .await
        .unwrap();
    // Idempotent: the same upload again finds the same artifact.
    assert_eq!(
        worker::agent::client::upload(&c, w, "", j.attempt_id, j.lease_token, 1, &file)
            .await
            .unwrap(),
        id
    );
    let stored = srv.store.artifact(id).await.unwrap().unwrap();
    let on_disk = coordinator::grpc::GrpcConfig::artifact_dir_for(&srv.db).join(&stored.path);
    assert_eq!(std::fs::read(&on_disk).unwrap(), data);

    // A header that lies about the content is refused and nothing is recorded.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(rpc::UploadChunk {
        part: Some(rpc::upload_chunk::Part::Header(rpc::UploadHeader {
            database_id: String::new(),
            protocol_version: PROTOCOL_VERSION,
            worker_id: w,
            attempt_id: j.attempt_id,
            lease_token: j.lease_token,
            epoch: 2,
            size: 3,
            sha256: "0".repeat(64),
        })),
    })
    .await
    .unwrap();
    tx.send(rpc::UploadChunk {
        part: Some(rpc::upload_chunk::Part::Data(vec![1, 2, 3])),
    })
    .await
    .unwrap();
    drop(tx);
    let err = c
        .clone()
        .upload_checkpoint(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // The worker hands the job back; the next lease offers the checkpoint, which downloads intact.
    c.clone()
        .release(rpc::ReleaseRequest {
            database_id: String::new(),
            protocol_version: PROTOCOL_VERSION,
            worker_id: w,
            attempt_id: j.attempt_id,
            lease_token: j.lease_token,
            checkpoint_artifact_id: id,
        })
        .await
        .unwrap();
    let again = lease_one(&c, w, &[]).await;
    let resume = again.resume.expect("resume reference");
    assert_eq!(
        (resume.artifact_id, resume.epoch, resume.size),
        (id, 1, data.len() as u64)
    );
    let dest = dir.path().join("resume.ckpt");
    worker::agent::client::download(&c, w, "", &resume, &dest)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM artifacts a JOIN jobs j ON j.id = a.job_id WHERE j.sweep_id = ?1",
    )
    .bind(sweep.0)
    .fetch_one(srv.store.reader())
    .await
    .unwrap();
    assert_eq!(n, 1);
    let _ = AttemptId(again.attempt_id);
    srv.stop().await;
}
