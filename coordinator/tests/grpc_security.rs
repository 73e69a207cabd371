//! Hostile or broken clients against a real coordinator on 127.0.0.1: wrong tokens, oversized
//! and malformed messages, raw garbage on the socket. Each gets the right status (or a closed
//! connection) and the service keeps serving everybody else.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use prost::bytes::{Buf, BufMut};
use proto::rpc::{self, PROTOCOL_VERSION};
use support::grpc::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_when_configured_and_required_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_on(&dir.path().join("ls.db"), None, |c| {
        c.token = Some("s3cret".into())
    })
    .await;
    for token in [None, Some("wrong")] {
        let err = client(&srv.url, token)
            .register(rpc::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                name: "w".into(),
                backend: "cpu".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "token {token:?}");
    }
    let ok = client(&srv.url, Some("s3cret"));
    let w = register(&ok, "w").await;
    assert!(w > 0);

    // Listening on every interface without a token is refused before binding anything useful.
    let open = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let store = coordinator::store::Store::open(&dir.path().join("other.db"))
        .await
        .unwrap();
    let cfg = coordinator::grpc::GrpcConfig::new(
        open.local_addr().unwrap(),
        &dir.path().join("other.db"),
    );
    let err = coordinator::grpc::serve_on(open, store, cfg, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(err, coordinator::grpc::ServeError::TokenRequired(_)),
        "{err}"
    );
    srv.stop().await;
}

/// Sends raw bytes as a gRPC message, to produce undecodable protobuf.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_call(url: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_malformed_and_garbage_input_is_refused_and_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_on(&dir.path().join("ls.db"), None, |c| {
        c.max_message_bytes = 64 * 1024
    })
    .await;
    let sweep = submit(&srv.store, &tiny_sweep("sec", 2, "")).await;
    let c = client(&srv.url, None);
    let w = register(&c, "good").await;
    let job = lease_one(&c, w, &[]).await;

    // Oversized unary message.
    let err = c
        .clone()
        .fail(rpc::FailRequest {
            database_id: String::new(),
            protocol_version: PROTOCOL_VERSION,
            worker_id: w,
            attempt_id: job.attempt_id,
            lease_token: job.lease_token,
            error: "x".repeat(200 * 1024),
            retryable: true,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Oversized message inside a report stream.
    let err = send_reports(
        &c,
        vec![report(
            w,
            job.attempt_id,
            job.lease_token,
            1,
            points(0, 5_000),
        )],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // Undecodable protobuf (field 0 / wire type 7 does not exist).
    let err = raw_call(
        &srv.url,
        "/latentsweep.v1.Coordinator/Lease",
        vec![0xff, 0xff, 0xff, 0xff, 0x0f],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Decodable but meaningless values.
    let err = c
        .clone()
        .lease(lease_req(-5, 1, vec![], 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .clone()
        .lease(lease_req(w, 1, vec![0], 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let bad_snapshot = rpc::ReportRequest {
        database_id: String::new(),
        protocol_version: PROTOCOL_VERSION,
        worker_id: w,
        attempt_id: job.attempt_id,
        lease_token: job.lease_token,
        item: 1,
        body: Some(rpc::report_request::Body::Snapshot(rpc::EpochSnapshot {
            epoch: 1,
            xy: vec![1.0],
            ..Default::default()
        })),
    };
    assert_eq!(
        send_reports(&c, vec![bad_snapshot])
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // Unknown methods.
    let err = raw_call(&srv.url, "/latentsweep.v1.Coordinator/Nope", vec![])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // Raw garbage on the socket: the connection is dropped, nothing else is affected.
    for garbage in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        (0..4096u32).map(|i| (i * 7919 % 256) as u8).collect(),
    ] {
        let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(&garbage).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "server must close a connection that speaks garbage"
        );
    }
    // HTTP/2 preface followed by a broken frame.
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\xff\x00\x00\x00\x00\x01garbage")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;

    // The good worker carries on: its attempt is intact and completes; the next job leases.
    let acks = send_reports(
        &c,
        vec![report(w, job.attempt_id, job.lease_token, 1, points(0, 10))],
    )
    .await
    .unwrap();
    assert_eq!(acks.len(), 1);
    c.clone()
        .complete(rpc::CompleteRequest {
            database_id: String::new(),
            protocol_version: PROTOCOL_VERSION,
            worker_id: w,
            attempt_id: job.attempt_id,
            lease_token: job.lease_token,
            metrics: BTreeMap::new(),
        })
        .await
        .unwrap();
    let next = lease_one(&c, w, &[]).await;
    assert_ne!(next.job_id, job.job_id);
    let states = job_states(&srv.store, sweep).await;
    assert!(
        states
            .iter()
            .any(|(id, s)| *id == job.job_id && s == "done"),
        "{states:?}"
    );
    srv.stop().await;
}
