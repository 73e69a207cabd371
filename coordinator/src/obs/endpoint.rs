//! `GET /metrics` on the dashboard's address: fills the scrape-time gauges (jobs by sweep and
//! state, connected workers by backend, artifact bytes on disk), then renders every series.
//!
//! Access: with a coordinator token configured, a scrape must send it as
//! `Authorization: Bearer <token>` (what Prometheus's `authorization` scrape setting sends); the
//! dashboard's login cookie is not needed, so a scraper never has to log in. Without a token
//! (loopback only, see `serve::check_exposure`) it is open like the rest of the dashboard.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use proto::state::JobState;

use crate::store::{Store, now_ms};

/// The path scrapers use.
pub const METRICS_PATH: &str = "/metrics";

/// What `/metrics` reads besides the registry.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub store: Store,
    /// The coordinator's token; `None`: no authorization asked.
    pub token: Option<String>,
    /// Where checkpoints are stored (its bytes are the artifact gauge).
    pub artifact_dir: PathBuf,
    /// Workers seen within this long count as connected.
    pub connected_within: Duration,
    /// The Slurm auto-allocator's allocations, when it runs.
    pub allocations: Option<crate::slurm::Allocations>,
}

struct Shared {
    cfg: MetricsConfig,
    expected: Option<Vec<u8>>,
    /// One scrape refreshes the gauges at a time, so two cannot interleave reset and set.
    refresh: tokio::sync::Mutex<()>,
}

/// The `/metrics` route, to merge into the dashboard's router.
pub fn routes(cfg: MetricsConfig) -> axum::Router {
    let expected = cfg
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| format!("Bearer {t}").into_bytes());
    let shared = Arc::new(Shared {
        cfg,
        expected,
        refresh: tokio::sync::Mutex::new(()),
    });
    axum::Router::new()
        .route(METRICS_PATH, get(scrape))
        .with_state(shared)
}

async fn scrape(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(expected) = &s.expected {
        let sent = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !crate::grpc::auth::same_bytes(sent, expected) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "send the coordinator's token as `Authorization: Bearer <token>`\n",
            )
                .into_response();
        }
    }
    if let Err(e) = refresh(&s).await {
        tracing::error!(error = %e, "reading the database for /metrics");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the coordinator's database could not be read (see its log)\n",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        super::metrics().render(),
    )
        .into_response()
}

async fn refresh(s: &Shared) -> Result<(), crate::store::StoreError> {
    let _one = s.refresh.lock().await;
    let m = super::metrics();
    let sweeps = s.cfg.store.status().await?;
    let since = now_ms() - i64::try_from(s.cfg.connected_within.as_millis()).unwrap_or(i64::MAX);
    let workers = s.cfg.store.workers_seen_since(since).await?;
    let dir = s.cfg.artifact_dir.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        crate::retention::files_under(&dir)
            .iter()
            .map(|(_, meta)| meta.len())
            .sum::<u64>()
    })
    .await
    .unwrap_or(0);
    // Reset first: a sweep or backend that is gone must not keep its last value.
    m.jobs.reset();
    for sw in &sweeps {
        for &state in JobState::ALL {
            m.jobs
                .with_label_values(&[sw.name.as_str(), state.as_str()])
                .set(i64::try_from(sw.jobs.get(state)).unwrap_or(i64::MAX));
        }
    }
    m.slurm_allocations.reset();
    if let Some(allocations) = &s.cfg.allocations {
        let shown = allocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for a in &shown {
            m.slurm_allocations
                .with_label_values(&[a.state.as_str()])
                .inc();
        }
    }
    m.workers_connected.reset();
    for (backend, n) in workers {
        m.workers_connected
            .with_label_values(&[backend.as_str()])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    m.artifact_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    Ok(())
}
