//! The dashboard under hostile or heavy use, over real sockets on 127.0.0.1: idle connections
//! are closed and capped, test images are loaded once for concurrent requests, live updates
//! poll the database once for every browser, and a database error stays out of the page.

mod support;

use support::builder;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordinator::conn::ConnLimits;
use coordinator::store::Store;
use coordinator::web::StoreData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

fn datasets() -> PathBuf {
    support::datasets_dir()
}

async fn serve(data: Arc<StoreData>, limits: ConnLimits) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(coordinator::web::serve_with(
        listener,
        coordinator::web::app(data),
        limits,
    ));
    addr
}

#[tokio::test]
async fn idle_connections_are_closed_and_capped_while_requests_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder::open(dir.path()).await;
    let limits = ConnLimits {
        max_connections: 16,
        idle_timeout: Duration::from_millis(800),
        ..ConnLimits::default()
    };
    let addr = serve(Arc::new(StoreData::new(store, None)), limits).await;

    // Three times the cap of silent clients, as a file-descriptor exhaustion attempt would.
    let mut idle = Vec::new();
    for _ in 0..48 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    let page = tokio::time::timeout(Duration::from_secs(20), builder::http_get(addr, "/"))
        .await
        .expect("a real request is served while idle clients hold connections");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<html"));

    // Every idle client is disconnected: the first batch after the idle timeout, the ones
    // waiting beyond the cap after theirs.
    for (i, s) in idle.iter_mut().enumerate() {
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("idle connection {i} still open after 15 s"));
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "connection {i} got data instead of being closed: {r:?}"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "closed before the idle timeout"
    );

    // A connection that talks is not idle: a slow but steady client gets its page.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    for chunk in req.as_bytes().chunks(req.len() / 4 + 1) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(chunk).await.unwrap();
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test]
async fn concurrent_image_requests_load_the_dataset_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = builder::build_fixture(dir.path()).await;
    let (_, jobs) = builder::submit(&store, builder::FIXTURE_TOML).await;
    let mnist = jobs
        .iter()
        .find(|(_, p)| p.dataset == proto::Dataset::Mnist)
        .unwrap()
        .0;
    let data = Arc::new(StoreData::new(store, Some(datasets())));
    let addr = serve(data.clone(), ConnLimits::default()).await;
    let requests = (0..16u32).map(|i| {
        let path = format!("/runs/{}/images/{i}", mnist.0);
        tokio::spawn(async move { builder::http_get(addr, &path).await })
    });
    for r in futures::future::join_all(requests).await {
        let r = r.unwrap();
        assert_eq!(
            r.status,
            200,
            "{} (MNIST expected in {})",
            r.text(),
            datasets().display()
        );
        assert_eq!(&r.body[..8], b"\x89PNG\r\n\x1a\n");
    }
    assert_eq!(data.image_loads(), 1, "16 concurrent requests, one load");
    builder::http_get(addr, &format!("/runs/{}/images/99", mnist.0)).await;
    assert_eq!(data.image_loads(), 1, "later requests hit the cache");
}

/// Reads from an event stream until `needle` arrives.
async fn read_until(s: &mut TcpStream, seen: &mut String, needle: &str) {
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no `{needle}` in 20 s: {seen}"))
            .unwrap();
        assert!(n > 0, "stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test]
async fn live_events_share_one_poller() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = builder::build_fixture(dir.path()).await;
    let data = Arc::new(StoreData::new(store.clone(), None));
    let addr = serve(data.clone(), ConnLimits::default()).await;
    let started = Instant::now();
    let mut browsers = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut seen = String::new();
        read_until(&mut s, &mut seen, "event: hello").await;
        browsers.push((s, seen));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    support::report_a_loss_point(&store).await;
    for (s, seen) in &mut browsers {
        read_until(s, seen, "event: change").await;
    }
    // One poll per period for everyone; a poller per browser would make 8 per period.
    let periods = started.elapsed().as_secs_f64() / dashboard::server::POLL.as_secs_f64();
    let polls = data.change_polls();
    assert!(
        polls as f64 <= periods + 2.0,
        "{polls} change-token queries in {periods:.1} poll periods for 8 browsers"
    );
    assert!(polls >= 2);
}

#[tokio::test]
async fn database_errors_are_logged_not_shown() {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = builder::open(dir.path()).await;
    builder::submit(&store, builder::FIXTURE_TOML).await;
    let app = coordinator::web::router(store.clone(), None);
    let ok = app
        .clone()
        .oneshot(
            axum::http::Request::get("/")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    sqlx::query("ALTER TABLE sweeps RENAME TO sweeps_gone")
        .execute(store.writer())
        .await
        .unwrap();
    let r = app
        .oneshot(
            axum::http::Request::get("/")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    let body = String::from_utf8_lossy(&body);
    for leak in [
        "no such table",
        "sweeps_gone",
        "returned from database",
        "code: 1",
    ] {
        assert!(!body.contains(leak), "500 page shows `{leak}`: {body}");
    }
    assert!(
        body.contains(dashboard::server::INTERNAL_ERROR_TEXT),
        "{body}"
    );
}
