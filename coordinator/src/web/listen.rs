//! The dashboard's HTTP server loop: hyper over [`GuardedListener`] connections (HTTPS when
//! TLS is configured), with a header read timeout and HTTP/2 keepalive (`axum::serve` offers
//! neither).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;

use crate::conn::{ConnLimits, GuardedListener};
use crate::tls::ServerTls;

/// How long an HTTP/2 client has to answer a keepalive ping.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `app` on every connection `listener` accepts, over TLS with `tls`; runs until dropped.
pub(crate) async fn serve_app(
    mut listener: GuardedListener,
    app: Router,
    limits: ConnLimits,
    tls: Option<ServerTls>,
) {
    let acceptor = tls.map(|t| t.http_acceptor());
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
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // The handshake runs in the connection's own task: a slow client holds up nobody.
            let done = match acceptor {
                Some(a) => match crate::tls::handshake(&a, io, peer).await {
                    Some(tls) => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                            .await
                    }
                    None => return,
                },
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(io), svc)
                        .await
                }
            };
            if let Err(e) = done {
                tracing::debug!(%peer, error = %e, "dashboard connection ended");
            }
        });
    }
}
