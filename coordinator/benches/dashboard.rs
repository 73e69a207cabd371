//! Dashboard rendering benchmark: a database of 10,000 runs and 1,000,000 metric points; the
//! sweep page and run pages are fetched over HTTP from a server on 127.0.0.1:0.
//!
//! `cargo bench -p latentsweep-coordinator --bench dashboard` (see BENCHMARKS.md). Prints one
//! JSON object per measurement on stdout.

#[path = "../tests/support/builder.rs"]
mod builder;

use std::time::Instant;

use coordinator::store::{MetricPoint, Store};
use proto::metric;
use proto::{AttemptId, JobId};

const RUNS: usize = 10_000;
const POINTS: usize = 1_000_000;
/// One run carries a long curve (a run with many logged steps); the others share the rest.
const HEAVY_POINTS: usize = 20_098;
const ITERS: usize = 15;

/// 400 cells per seed: 10 lr × 2 data sets × (ce + bce + 9 margins × (contrastive + triplet)).
fn sweep_toml() -> String {
    r#"
name = "bench-10k"
max_cells = 20000
[grid]
network = ["embedding-net"]
loss = ["ce", "bce", "contrastive", "triplet"]
dataset = ["mnist", "fashion-mnist"]
margin = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0]
lr = [1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5]
embedding_dim = [2]
epochs = [10]
seeds = 25
"#
    .to_owned()
}

async fn build(store: &Store) -> (String, i64, i64) {
    let (name, jobs) = builder::submit(store, &sweep_toml()).await;
    assert_eq!(jobs.len(), RUNS, "bench sweep size");
    let t0 = 1_700_000_000_000i64;
    // Attempts in one transaction: leasing is not what is measured here.
    let mut tx = store.writer().begin().await.unwrap();
    let mut attempts = Vec::with_capacity(RUNS);
    for (i, (job, _)) in jobs.iter().enumerate() {
        let t = t0 + i as i64 * 1000;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO attempts (job_id, number, state, lease_expires_at, started_at, ended_at)
             VALUES (?1, 1, 'done', ?2, ?3, ?4) RETURNING id",
        )
        .bind(job.0)
        .bind(t + 600_000)
        .bind(t)
        .bind(t + 90_000)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        sqlx::query("UPDATE jobs SET state = 'done', attempts = 1, updated_at = ?2 WHERE id = ?1")
            .bind(job.0)
            .bind(t + 90_000)
            .execute(&mut *tx)
            .await
            .unwrap();
        attempts.push(AttemptId(id));
    }
    tx.commit().await.unwrap();
    let per_run = (POINTS - HEAVY_POINTS) / (RUNS - 1);
    for (i, ((job, p), attempt)) in jobs.iter().zip(&attempts).enumerate() {
        let n = if i == 0 { HEAVY_POINTS } else { per_run };
        let points = curve(n, i64::from(p.epochs));
        store
            .record_metrics(*job, *attempt, 0, &points)
            .await
            .unwrap();
        store
            .record_result(*job, *attempt, &builder::fixture_metrics(p))
            .await
            .unwrap();
    }
    for (job, attempt) in [
        (jobs[0].0, attempts[0]),
        (jobs[RUNS / 2].0, attempts[RUNS / 2]),
    ] {
        for e in 0..=10 {
            let names: Vec<String> = (0..10).map(|d| d.to_string()).collect();
            store
                .record_snapshot(
                    job,
                    attempt,
                    &builder::synthetic_snapshot(e, &names, 200, job.0 as u64),
                )
                .await
                .unwrap();
        }
    }
    (name, jobs[0].0.0, jobs[RUNS / 2].0.0)
}

/// `n` points: per-epoch metrics (and evaluations) and a loss curve filling the rest.
fn curve(n: usize, epochs: i64) -> Vec<MetricPoint> {
    let per_epoch = [
        metric::EPOCH_LOSS,
        metric::SAMPLES_PER_SEC,
        metric::KNN1_ACC,
        metric::MAP_AT_R,
    ];
    let mut v = Vec::with_capacity(n);
    for e in 1..=epochs {
        for name in per_epoch {
            v.push(MetricPoint {
                step: e * 1000,
                epoch: e,
                name: name.into(),
                value: 1.0 / e as f64,
                time_ms: 0,
            });
        }
    }
    let steps = n - v.len();
    for s in 0..steps {
        let epoch = 1 + (s as i64 * epochs) / steps as i64;
        v.push(MetricPoint {
            step: s as i64,
            epoch,
            name: metric::LOSS.into(),
            value: 2.0 / (1.0 + s as f64 * 0.01),
            time_ms: 0,
        });
    }
    v
}

fn stats(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[(ms.len() * 9) / 10], ms[0])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // LATENTSWEEP_BENCH_DIR keeps the database for inspection (rebuilt on every run).
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("LATENTSWEEP_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    let _ = std::fs::remove_file(dir.join("latentsweep.db"));
    let started = Instant::now();
    let store = builder::open(&dir).await;
    let (name, heavy, typical) = build(&store).await;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM metrics")
        .fetch_one(store.reader())
        .await
        .unwrap();
    eprintln!(
        "built {RUNS} runs / {total} metric points in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Where the sweep page's time goes: loading the runs vs rendering them.
    let mut load = Vec::new();
    let mut render = Vec::new();
    for _ in 0..ITERS {
        let t = Instant::now();
        let d = coordinator::web::convert::sweep(&store, &name)
            .await
            .unwrap()
            .unwrap();
        load.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let html = dashboard::pages::sweep::main_html(
            std::sync::Arc::new(d),
            dashboard::pages::Query::default(),
        );
        render.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(html.len() > 1000);
    }
    for (bench, ms) in [("sweep_load_uncached", load), ("sweep_render_only", render)] {
        let (median, p90, min) = stats(ms);
        println!(
            "{}",
            serde_json::json!({ "bench": bench, "runs": RUNS, "iters": ITERS, "median_ms": (median * 10.0).round() / 10.0, "p90_ms": (p90 * 10.0).round() / 10.0, "min_ms": (min * 10.0).round() / 10.0 })
        );
    }
    let addr = builder::serve(store.clone(), None).await;
    let cases = [
        // Cold: a fresh coordinator (empty cache) for every request: all runs are loaded.
        ("sweep_page_cold", format!("/sweeps/{name}")),
        // Changed: one job moved before every request (the live view while a sweep runs).
        ("sweep_page_changed", format!("/sweeps/{name}")),
        ("sweep_page", format!("/sweeps/{name}")),
        (
            "sweep_page_sorted_filtered",
            format!("/sweeps/{name}?sort=map_at_r&desc=1&loss=triplet"),
        ),
        (
            "sweep_page_grouped_heatmap",
            format!("/sweeps/{name}?group=config&hm_x=margin&hm_y=lr"),
        ),
        ("run_page_heavy", format!("/runs/{heavy}")),
        ("run_page_typical", format!("/runs/{typical}")),
        ("sweeps_page", "/".to_owned()),
        (
            "export_long_csv",
            format!("/sweeps/{name}/export?format=csv"),
        ),
    ];
    for (bench, path) in cases {
        let mut ms = Vec::with_capacity(ITERS);
        let mut bytes = 0;
        for i in 0..ITERS + 3 {
            let target = if bench.ends_with("_cold") {
                builder::serve(store.clone(), None).await
            } else {
                addr
            };
            if bench.ends_with("_changed") {
                sqlx::query(
                    "UPDATE jobs SET updated_at = ?2, attempts = attempts + 1
                     WHERE id = (SELECT MIN(j.id) + ?3 FROM jobs j JOIN sweeps s ON s.id = j.sweep_id
                                 WHERE s.name = ?1)",
                )
                .bind(&name)
                .bind(coordinator::store::now_ms())
                .bind(i as i64)
                .execute(store.writer())
                .await
                .unwrap();
            }
            let t = Instant::now();
            let r = builder::http_get(target, &path).await;
            let dt = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(r.status, 200, "{path}");
            bytes = r.body.len();
            if i >= 3 {
                ms.push(dt);
            }
        }
        let (median, p90, min) = stats(ms);
        println!(
            "{}",
            serde_json::json!({
                "bench": bench, "path": path, "runs": RUNS, "metric_points": total,
                "iters": ITERS, "median_ms": (median * 10.0).round() / 10.0, "p90_ms": (p90 * 10.0).round() / 10.0,
                "min_ms": (min * 10.0).round() / 10.0, "bytes": bytes,
            })
        );
    }
    let _ = JobId(0);
}
