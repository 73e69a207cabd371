//! `/healthz` and `/readyz` over a real socket on 127.0.0.1: both answer without a token;
//! `/readyz` turns 503 when the database does not answer in time (and 200 again once it does),
//! or once the store is closed, as at shutdown; `/healthz` stays 200 meanwhile.

mod support;
use support::builder;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordinator::conn::ConnLimits;
use coordinator::store::Store;
use coordinator::web::StoreData;
use coordinator::web::health::{HEALTHZ, READY_TIMEOUT, READYZ};

async fn serve(store: Store) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = coordinator::web::app(Arc::new(StoreData::new(store, None)));
    tokio::spawn(coordinator::web::serve_with(
        listener,
        app,
        ConnLimits::default(),
    ));
    addr
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder::open(dir.path()).await;
    let addr = serve(store).await;
    let live = builder::http_get(addr, HEALTHZ).await;
    assert_eq!(live.status, 200, "{}", live.text());
    assert_eq!(live.text(), "ok\n");
    assert_eq!(live.header("cache-control"), Some("no-store"));
    let ready = builder::http_get(addr, READYZ).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.text(), "ready\n");
    assert!(
        ready
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        ready.headers
    );
}

#[tokio::test]
async fn readyz_is_503_while_the_database_does_not_answer_and_200_once_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder::open(dir.path()).await;
    let addr = serve(store.clone()).await;
    assert_eq!(builder::http_get(addr, READYZ).await.status, 200);

    // Every connection of the query pool busy (as under long dashboard queries): the probe's
    // query cannot run. (A lock taken by another process cannot do this in WAL mode, where
    // readers never wait for writers.)
    let mut held = Vec::new();
    for _ in 0..store.reader().options().get_max_connections() {
        held.push(store.reader().acquire().await.unwrap());
    }
    let t0 = Instant::now();
    let r = builder::http_get(addr, READYZ).await;
    let waited = t0.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.text(),
        format!(
            "not ready: the database did not answer within {} s\n",
            READY_TIMEOUT.as_secs()
        )
    );
    // The probe gives up after its own timeout, not the pool's (30 s) or SQLite's (10 s).
    assert!(
        waited >= READY_TIMEOUT && waited < READY_TIMEOUT + Duration::from_secs(2),
        "{waited:?}"
    );
    // Liveness is not readiness: the process still serves.
    assert_eq!(builder::http_get(addr, HEALTHZ).await.status, 200);

    drop(held);
    let r = builder::http_get(addr, READYZ).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn readyz_is_503_once_the_store_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder::open(dir.path()).await;
    let addr = serve(store.clone()).await;
    assert_eq!(builder::http_get(addr, READYZ).await.status, 200);
    // Shutting down closes the pools before the HTTP listener goes away.
    store.close().await;
    let r = builder::http_get(addr, READYZ).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("not ready: database error"),
        "{}",
        r.text()
    );
    assert_eq!(builder::http_get(addr, HEALTHZ).await.status, 200);
}
