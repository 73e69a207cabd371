//! Health endpoints on the dashboard's address, for process supervisors and Kubernetes probes:
//! `/healthz` (the process serves HTTP) and `/readyz` (the database answers a query).
//!
//! Both are unauthenticated and cheap: no page rendering, one indexed read at most, and no
//! detail beyond the error's text, which names no secret.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::store::Store;

/// Liveness: answers 200 while the HTTP server runs.
pub const HEALTHZ: &str = "/healthz";
/// Readiness: 200 when the database answers within [`READY_TIMEOUT`], else 503.
pub const READYZ: &str = "/readyz";

/// How long `/readyz` waits for the database. Shorter than SQLite's busy timeout (10 s), so a
/// probe reports a locked or stuck database instead of hanging past its own deadline.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The health routes over `store`, to merge beside the dashboard.
pub(crate) fn routes(store: Store) -> Router {
    Router::new()
        .route(
            HEALTHZ,
            get(|| async { plain(StatusCode::OK, "ok\n".into()) }),
        )
        .route(READYZ, get(readyz))
        .with_state(store)
}

async fn readyz(State(store): State<Store>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => plain(StatusCode::OK, "ready\n".into()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            plain(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n"))
        }
        Err(_) => {
            tracing::warn!(timeout = ?READY_TIMEOUT, "readiness check timed out");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not ready: the database did not answer within {} s\n",
                    READY_TIMEOUT.as_secs()
                ),
            )
        }
    }
}

fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            // A cached answer would hide the state a probe asks about.
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
