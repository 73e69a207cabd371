//! The dashboard's HTTP server loop: hyper over [`GuardedListener`] connections, with a header
//! read timeout and HTTP/2 keepalive (`axum::serve` offers neither).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;

use crate::conn::{ConnLimits, GuardedListener};

/// How long an HTTP/2 client has to answer a keepalive ping.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `app` on every connection `listener` accepts; runs until dropped.
pub(crate) async fn serve_app(mut listener: GuardedListener, app: Router, limits: ConnLimits) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.idle_timeout / 2))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    loop {
        let (io, peer) = listener.accept().await;
        // The router takes hyper's body as it is.
        let svc = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "dashboard connection ended");
            }
        });
    }
}
