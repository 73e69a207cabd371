//! The coordinator's side of the dashboard: [`StoreData`] implements
//! [`dashboard::DashboardData`] over the store's read queries (`store/views.rs`, turned into
//! the dashboard's types by `convert.rs`), and [`router`] / [`serve`] mount the dashboard over
//! HTTP, beside the health endpoints ([`health`]).

mod actions;
mod cache;
pub mod convert;
pub mod health;
pub mod images;
mod listen;
pub mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashboard::{
    DashboardData, DataError, DataFuture, MetricPoint, RunDetail, Snapshot, SweepDetail,
    SweepSummary, WorkerInfo,
};
use tokio::net::TcpListener;

use crate::conn::{ConnLimits, GuardedListener};
use crate::store::{Store, StoreError};

fn data_err(e: StoreError) -> DataError {
    match e {
        StoreError::Corrupt(m) => DataError::Corrupt(m),
        other => DataError::Source(other.to_string()),
    }
}

/// Dashboard data read from the store.
pub struct StoreData {
    store: Store,
    images: Arc<images::ImageCache>,
    sweeps: cache::SweepCache,
    /// Change-token queries run so far (the live-update poll; observable in tests).
    change_polls: AtomicU64,
    /// Slurm auto-allocation's allocations (empty when it is off).
    allocations: crate::slurm::Allocations,
}

impl StoreData {
    /// `data_dir` is where test images of built-in data sets are looked up (as for workers).
    pub fn new(store: Store, data_dir: Option<PathBuf>) -> StoreData {
        StoreData {
            store,
            images: Arc::new(images::ImageCache::new(data_dir)),
            sweeps: cache::SweepCache::default(),
            change_polls: AtomicU64::new(0),
            allocations: crate::slurm::Allocations::default(),
        }
    }

    /// Also shows `allocations` (kept up to date by `crate::slurm`) on the workers page.
    pub fn with_allocations(mut self, allocations: crate::slurm::Allocations) -> StoreData {
        self.allocations = allocations;
        self
    }

    /// How many times a test-image split was loaded from disk.
    pub fn image_loads(&self) -> u64 {
        self.images.loads()
    }

    /// How many change-token queries ran.
    pub fn change_polls(&self) -> u64 {
        self.change_polls.load(Ordering::Relaxed)
    }
}

impl DashboardData for StoreData {
    fn sweeps(&self) -> DataFuture<'_, Vec<SweepSummary>> {
        Box::pin(async move { convert::sweeps(&self.store).await.map_err(data_err) })
    }

    fn sweep<'a>(&'a self, name: &'a str) -> DataFuture<'a, Option<Arc<SweepDetail>>> {
        Box::pin(async move { self.sweeps.get(&self.store, name).await.map_err(data_err) })
    }

    fn run(&self, job_id: i64) -> DataFuture<'_, Option<RunDetail>> {
        Box::pin(async move { convert::run(&self.store, job_id).await.map_err(data_err) })
    }

    fn metrics(&self, job_id: i64) -> DataFuture<'_, Vec<MetricPoint>> {
        Box::pin(async move {
            convert::metrics(&self.store, job_id)
                .await
                .map_err(data_err)
        })
    }

    fn snapshots<'a>(&'a self, job_ids: &'a [i64]) -> DataFuture<'a, Vec<Snapshot>> {
        Box::pin(async move {
            convert::snapshots(&self.store, job_ids)
                .await
                .map_err(data_err)
        })
    }

    fn allocations(&self) -> DataFuture<'_, Vec<dashboard::Allocation>> {
        let rows = self
            .allocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Box::pin(async move { Ok(rows) })
    }

    fn workers(&self) -> DataFuture<'_, Vec<WorkerInfo>> {
        Box::pin(async move { convert::workers(&self.store).await.map_err(data_err) })
    }

    fn test_image<'a>(&'a self, dataset: &'a str, index: u32) -> DataFuture<'a, Option<Vec<u8>>> {
        let (cache, dataset) = (self.images.clone(), dataset.to_owned());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || cache.png(&dataset, index))
                .await
                .map_err(|e| DataError::Source(e.to_string()))?
                .map_err(DataError::Source)
        })
    }

    fn act(&self, action: dashboard::Action) -> DataFuture<'_, Option<String>> {
        // The sweep cache needs no flush: its token query sees the change.
        Box::pin(async move { actions::act(&self.store, action).await.map_err(data_err) })
    }

    fn change_token(&self) -> DataFuture<'_, String> {
        self.change_polls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { self.store.change_token().await.map_err(data_err) })
    }
}

/// The dashboard application over this store.
pub fn router(store: Store, data_dir: Option<PathBuf>) -> axum::Router {
    app(Arc::new(StoreData::new(store, data_dir)))
}

/// `dashboard` (e.g. [`router`] or [`router_with`]) behind `access`: login sessions and
/// CSRF-checked actions.
pub fn protected_router(dashboard: axum::Router, access: Arc<session::Access>) -> axum::Router {
    session::protect(dashboard, access)
}

/// [`router`], with Slurm auto-allocation's `allocations` on the workers page.
pub fn router_with(
    store: Store,
    data_dir: Option<PathBuf>,
    allocations: crate::slurm::Allocations,
) -> axum::Router {
    app(Arc::new(
        StoreData::new(store, data_dir).with_allocations(allocations),
    ))
}

/// The dashboard application over `data` (keep a clone to read its counters), with the health
/// endpoints beside it.
pub fn app(data: Arc<StoreData>) -> axum::Router {
    let store = data.store.clone();
    dashboard::router(data).merge(health::routes(store))
}

/// Serves the dashboard on `listener` with default connection limits until the future is
/// dropped.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    data_dir: Option<PathBuf>,
) -> std::io::Result<()> {
    serve_with(listener, router(store, data_dir), ConnLimits::default()).await
}

/// Serves `app` on `listener` under `limits` until the future is dropped.
pub async fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
) -> std::io::Result<()> {
    serve_tls(listener, app, limits, None).await
}

/// [`serve_with`], over HTTPS when `tls` is given.
pub async fn serve_tls(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    tls: Option<crate::tls::ServerTls>,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::debug!(?addr, ?limits, https = tls.is_some(), "dashboard listening");
    listen::serve_app(GuardedListener::new(listener, limits), app, limits, tls).await;
    Ok(())
}
