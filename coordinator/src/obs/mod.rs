//! Observability: the coordinator's Prometheus metrics. One process-wide registry holds every
//! counter and histogram; the gRPC service, the store and the lease reaper bump them where the
//! events happen (through the small functions below), the latency layers time every request,
//! and `endpoint` serves `/metrics`, filling the gauges (jobs, workers, artifact bytes) from
//! the database and the artifact directory at scrape time.
//!
//! Why the `prometheus` crate (tikv's) and not `prometheus-client`: the latter writes only the
//! OpenMetrics text format, whose counters (`# TYPE x counter` then `x_total`) the `promtool
//! check metrics` of Debian's Prometheus 2.42 reads as help-less untyped series and rejects;
//! the classic text format (0.0.4) written here is what every Prometheus version scrapes and
//! promtool checks.

pub(crate) mod endpoint;
pub(crate) mod latency;

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Names of the exported series, as a scraper (and the tests) see them.
pub mod names {
    pub const JOBS: &str = "latentsweep_jobs";
    pub const LEASE_GRANTS: &str = "latentsweep_lease_grants_total";
    pub const LEASE_EXPIRIES: &str = "latentsweep_lease_expiries_total";
    pub const FENCED: &str = "latentsweep_fenced_requests_total";
    pub const RETRIES: &str = "latentsweep_job_retries_total";
    pub const METRIC_POINTS: &str = "latentsweep_metric_points_ingested_total";
    pub const WORKERS_CONNECTED: &str = "latentsweep_workers_connected";
    pub const SLURM_ALLOCATIONS: &str = "latentsweep_slurm_allocations";
    pub const GRPC_SECONDS: &str = "latentsweep_grpc_request_duration_seconds";
    pub const HTTP_SECONDS: &str = "latentsweep_http_request_duration_seconds";
    pub const DB_WRITE_SECONDS: &str = "latentsweep_db_write_duration_seconds";
    pub const ARTIFACT_BYTES: &str = "latentsweep_artifact_bytes";
    pub const CHECKPOINTS_REMOVED: &str = "latentsweep_checkpoints_removed_total";
}

/// What a database write was, the label of [`names::DB_WRITE_SECONDS`].
#[derive(Debug, Clone, Copy)]
pub enum DbWrite {
    /// A group-commit transaction (leases, heartbeats, attempt ends of many workers).
    Group,
    Register,
    MetricBatch,
    Snapshot,
    Artifact,
    ExpireLeases,
    Retention,
}

impl DbWrite {
    fn label(self) -> &'static str {
        match self {
            DbWrite::Group => "group_commit",
            DbWrite::Register => "register",
            DbWrite::MetricBatch => "metric_batch",
            DbWrite::Snapshot => "snapshot",
            DbWrite::Artifact => "artifact",
            DbWrite::ExpireLeases => "expire_leases",
            DbWrite::Retention => "retention",
        }
    }
}

/// Which call refused a request of a stale attempt (the label of [`names::FENCED`]).
#[derive(Debug, Clone, Copy)]
pub enum FencedCall {
    End,
    Report,
    Upload,
}

/// Why a job went back to the queue for another attempt (the label of [`names::RETRIES`]).
#[derive(Debug, Clone, Copy)]
pub enum RetryCause {
    Failed,
    Expired,
}

/// Every series of the coordinator.
pub(crate) struct Metrics {
    registry: Registry,
    lease_grants: IntCounter,
    lease_expiries: IntCounter,
    fenced: IntCounterVec,
    retries: IntCounterVec,
    metric_points: IntCounter,
    checkpoints_removed: IntCounter,
    pub(crate) grpc_seconds: HistogramVec,
    pub(crate) http_seconds: HistogramVec,
    db_write_seconds: HistogramVec,
    pub(crate) jobs: IntGaugeVec,
    pub(crate) workers_connected: IntGaugeVec,
    pub(crate) slurm_allocations: IntGaugeVec,
    pub(crate) artifact_bytes: IntGauge,
}

/// Request latencies: 1 ms to 60 s (lease long-polls wait up to their poll time).
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Database writes: 100 µs to 10 s (the busy timeout).
const DB_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// Names are constants; a failure here is a programming error caught by every test that
/// scrapes.
fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names and labels are valid and unique");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help).expect("valid counter"))
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
    )
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(r, HistogramVec::new(opts, labels).expect("valid histogram"))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"),
    )
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        use names::*;
        // Counter names end in `_total`; the `prometheus` crate takes them as given.
        Metrics {
            lease_grants: counter(&r, LEASE_GRANTS, "Jobs leased to workers (new attempts)."),
            lease_expiries: counter(
                &r,
                LEASE_EXPIRIES,
                "Attempts whose lease ran out before their worker renewed it.",
            ),
            fenced: counter_vec(
                &r,
                FENCED,
                "Requests refused because their attempt is no longer the live lease.",
                &["call"],
            ),
            retries: counter_vec(
                &r,
                RETRIES,
                "Jobs queued again after a failed or expired attempt.",
                &["cause"],
            ),
            metric_points: counter(
                &r,
                METRIC_POINTS,
                "Metric points stored from worker reports (duplicates not counted).",
            ),
            checkpoints_removed: counter(
                &r,
                CHECKPOINTS_REMOVED,
                "Checkpoint files removed by the retention policy while serving.",
            ),
            grpc_seconds: histogram_vec(
                &r,
                GRPC_SECONDS,
                "gRPC request latency until the response headers (streams: until they open).",
                &["method"],
                REQUEST_BUCKETS,
            ),
            http_seconds: histogram_vec(
                &r,
                HTTP_SECONDS,
                "Dashboard HTTP request latency until the response headers.",
                &["route", "status"],
                REQUEST_BUCKETS,
            ),
            db_write_seconds: histogram_vec(
                &r,
                DB_WRITE_SECONDS,
                "Duration of database write transactions, by kind.",
                &["op"],
                DB_BUCKETS,
            ),
            jobs: gauge_vec(&r, JOBS, "Jobs by sweep and state.", &["sweep", "state"]),
            workers_connected: gauge_vec(
                &r,
                WORKERS_CONNECTED,
                "Workers heard from within two lease TTLs, by backend.",
                &["backend"],
            ),
            slurm_allocations: gauge_vec(
                &r,
                SLURM_ALLOCATIONS,
                "Worker jobs submitted to Slurm by --slurm-max-workers, by state.",
                &["state"],
            ),
            artifact_bytes: register(
                &r,
                IntGauge::new(
                    ARTIFACT_BYTES,
                    "Bytes of checkpoint files (and uploads in progress) on disk.",
                )
                .expect("valid gauge"),
            ),
            registry: r,
        }
    }

    /// The classic Prometheus text exposition of every series.
    pub(crate) fn render(&self) -> String {
        let families = self.registry.gather();
        // Encoding into a String cannot fail for valid families.
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_default()
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub(crate) fn metrics() -> &'static Metrics {
    &METRICS
}

/// Every series as `/metrics` shows it (without refreshing the scrape-time gauges): for tests
/// and diagnostics of an in-process coordinator.
pub fn exposition() -> String {
    metrics().render()
}

/// `n` jobs were leased.
pub(crate) fn leases_granted(n: usize) {
    metrics().lease_grants.inc_by(n as u64);
}

/// `n` leases ran out.
pub(crate) fn leases_expired(n: usize) {
    metrics().lease_expiries.inc_by(n as u64);
}

/// A request of a stale attempt was refused.
pub(crate) fn fenced(call: FencedCall) {
    let label = match call {
        FencedCall::End => "end",
        FencedCall::Report => "report",
        FencedCall::Upload => "upload",
    };
    metrics().fenced.with_label_values(&[label]).inc();
}

/// A job was queued again for another attempt.
pub(crate) fn retried(cause: RetryCause) {
    let label = match cause {
        RetryCause::Failed => "failed",
        RetryCause::Expired => "expired",
    };
    metrics().retries.with_label_values(&[label]).inc();
}

/// `n` metric points were stored.
pub(crate) fn points_ingested(n: usize) {
    metrics().metric_points.inc_by(n as u64);
}

/// `n` checkpoint files were removed by retention while serving.
pub(crate) fn checkpoints_removed(n: usize) {
    metrics().checkpoints_removed.inc_by(n as u64);
}

/// Times a database write until dropped.
pub(crate) struct WriteTimer {
    histogram: Histogram,
    started: Instant,
}

impl Drop for WriteTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Starts timing a write of kind `op`; the time is recorded when the guard drops (also on an
/// error: a failing write that took long is worth seeing).
pub(crate) fn db_write(op: DbWrite) -> WriteTimer {
    WriteTimer {
        histogram: metrics().db_write_seconds.with_label_values(&[op.label()]),
        started: Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_rendered_once_touched() {
        leases_granted(2);
        retried(RetryCause::Expired);
        drop(db_write(DbWrite::Group));
        let text = metrics().render();
        assert!(text.contains(&format!("# TYPE {} counter", names::LEASE_GRANTS)));
        assert!(text.contains(&format!("{}{{cause=\"expired\"}}", names::RETRIES)));
        assert!(text.contains(&format!(
            "{}_bucket{{op=\"group_commit\",le=\"+Inf\"}}",
            names::DB_WRITE_SECONDS
        )));
    }
}
