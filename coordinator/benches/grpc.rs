//! Benchmark of the distributed side, over real gRPC on 127.0.0.1 and a real SQLite file:
//! scheduling overhead per job with 64 simulated workers, metric ingestion rate, and the time
//! from a worker's death to its job running again. Prints one JSON object per measurement.
//!
//! `cargo bench -p latentsweep-coordinator --bench grpc` (see BENCHMARKS.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use coordinator::grpc::{self, GrpcConfig};
use coordinator::sched::SchedConfig;
use coordinator::store::Store;
use proto::metric;
use proto::rpc::{self, PROTOCOL_VERSION};
use tokio::sync::Mutex;
use worker::agent::client::{self, Client};

const WORKERS: usize = 64;
const JOBS: usize = 3_200;
const BATCHES: i64 = 400;
const POINTS_PER_BATCH: usize = 500;
const TTL: Duration = Duration::from_secs(2);
const DEATHS: usize = 8;

struct Server {
    store: Store,
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(ttl: Duration) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let store = Store::open(&db).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = GrpcConfig::new(addr, &db);
    cfg.sched = SchedConfig::with_ttl(ttl);
    let (stop, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(grpc::serve_on(listener, store.clone(), cfg, async move {
        let _ = rx.await;
    }));
    Server {
        store,
        url: format!("http://{addr}"),
        stop,
        _dir: dir,
    }
}

/// A sweep of `cells` jobs (a multiple of 4: 4 learning rates × seeds).
async fn submit(store: &Store, name: &str, cells: usize) {
    assert_eq!(cells % 4, 0);
    let seeds = cells / 4;
    let toml = format!(
        "name = \"{name}\"\nmax_cells = {cells}\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\nmargin = 1.0\n\
         dataset = \"fashion-mnist\"\nlr = [1e-3, 2e-3, 3e-3, 4e-3]\nseeds = {seeds}\nepochs = 1\n"
    );
    let sweep = proto::sweep::parse_sweep(&toml, "bench.toml", cells as u64).unwrap();
    store.submit(&sweep, &toml, None).await.unwrap();
}

async fn register(c: &Client, name: &str) -> i64 {
    let req = rpc::RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        name: name.into(),
        host: "bench".into(),
        backend: "none".into(),
        devices: vec![],
        software_version: "bench".into(),
        slots: 1,
    };
    c.clone()
        .register(req)
        .await
        .unwrap()
        .into_inner()
        .worker_id
}

async fn lease_n(c: &mut Client, worker_id: i64, free: u32, wait_ms: u32) -> Vec<rpc::JobLease> {
    let req = rpc::LeaseRequest {
        database_id: String::new(),
        protocol_version: PROTOCOL_VERSION,
        worker_id,
        free_slots: free,
        running_attempts: vec![],
        wait_ms,
    };
    c.lease(req).await.unwrap().into_inner().jobs
}

async fn lease(c: &mut Client, worker_id: i64, wait_ms: u32) -> Option<rpc::JobLease> {
    lease_n(c, worker_id, 1, wait_ms).await.into_iter().next()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// `workers` workers each lease a no-op job and complete it at once, until the queue of `jobs`
/// is empty. Per job: one Lease plus one Complete round trip. With many workers the round trip
/// mostly waits for the single SQLite writer, so the overhead per job is wall time / jobs; the
/// round-trip latency is reported too.
async fn scheduling(workers: usize, jobs: usize) {
    let srv = start(Duration::from_secs(30)).await;
    submit(&srv.store, "noop", jobs).await;
    let c = client::connect(&srv.url, None).unwrap();
    let samples = Arc::new(Mutex::new(Vec::with_capacity(jobs)));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..workers {
        let (mut c, samples) = (c.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let id = register(&c, &format!("sim-{i}")).await;
            loop {
                let t = Instant::now();
                let Some(job) = lease(&mut c, id, 0).await else {
                    break;
                };
                c.complete(rpc::CompleteRequest {
                    database_id: String::new(),
                    protocol_version: PROTOCOL_VERSION,
                    worker_id: id,
                    attempt_id: job.attempt_id,
                    lease_token: job.lease_token,
                    metrics: Default::default(),
                })
                .await
                .unwrap();
                samples.lock().await.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let wall = t0.elapsed().as_secs_f64();
    let mut s = samples.lock().await.clone();
    assert_eq!(s.len(), jobs, "every job leased exactly once");
    let med = median(&mut s);
    println!(
        "{}",
        serde_json::json!({
            "bench": "scheduling", "workers": workers, "jobs": jobs,
            "overhead_ms_per_job": wall * 1e3 / jobs as f64, "jobs_per_s": jobs as f64 / wall,
            "round_trip_median_ms": med, "round_trip_p90_ms": pct(&s, 0.9), "wall_s": wall,
        })
    );
    let _ = srv.stop.send(());
}

/// One attempt streams `BATCHES` batches of `POINTS_PER_BATCH` points on one Report stream;
/// the rate counts only acknowledged (durably stored) batches.
async fn ingestion() {
    let srv = start(Duration::from_secs(30)).await;
    submit(&srv.store, "ingest", 4).await;
    let mut c = client::connect(&srv.url, None).unwrap();
    let mut rates = Vec::new();
    for round in 0..4 {
        let id = register(&c, &format!("ingest-{round}")).await;
        let job = lease(&mut c, id, 0).await.expect("a job");
        let items: Vec<rpc::ReportRequest> = (0..BATCHES)
            .map(|seq| rpc::ReportRequest {
                database_id: String::new(),
                protocol_version: PROTOCOL_VERSION,
                worker_id: id,
                attempt_id: job.attempt_id,
                lease_token: job.lease_token,
                item: seq as u64,
                body: Some(rpc::report_request::Body::Metrics(rpc::MetricBatch {
                    seq,
                    points: (0..POINTS_PER_BATCH)
                        .map(|i| rpc::MetricPoint {
                            step: seq * POINTS_PER_BATCH as i64 + i as i64,
                            epoch: 1,
                            name: [metric::LOSS, metric::LR, metric::SAMPLES_PER_SEC][i % 3].into(),
                            value: i as f64 * 0.5,
                            time_ms: 0,
                        })
                        .collect(),
                })),
            })
            .collect();
        let t = Instant::now();
        let mut acks = c
            .report(tokio_stream::iter(items))
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(a) = acks.message().await.unwrap() {
            assert!(a.warning.is_empty(), "{}", a.warning);
            n += 1;
            if n == BATCHES {
                break;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        rates.push((BATCHES as usize * POINTS_PER_BATCH) as f64 / secs);
    }
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM metrics")
        .fetch_one(srv.store.reader())
        .await
        .unwrap();
    assert_eq!(stored, 4 * BATCHES * POINTS_PER_BATCH as i64);
    println!(
        "{}",
        serde_json::json!({
            "bench": "ingestion", "points_per_run": BATCHES as usize * POINTS_PER_BATCH,
            "batch_points": POINTS_PER_BATCH, "runs": rates.len(),
            "median_points_per_s": median(&mut rates), "min_points_per_s": rates[0],
        })
    );
    let _ = srv.stop.send(());
}

/// A worker leases jobs and goes silent (as after SIGKILL); a second worker long-polls. The
/// time from the victim's last heartbeat to its job reaching the second worker must stay
/// within the TTL + 1 s. Each round uses a fresh sweep of 4 jobs, all leased by the victim,
/// so the queue holds nothing else the rescuer could be given.
async fn death_to_rerun() {
    let srv = start(TTL).await;
    let mut c = client::connect(&srv.url, None).unwrap();
    let rescuer = register(&c, "rescuer").await;
    let mut delays = Vec::new();
    for i in 0..DEATHS {
        submit(&srv.store, &format!("deaths-{i}"), 4).await;
        let victim = register(&c, &format!("victim-{i}")).await;
        let mut held = Vec::new();
        while held.len() < 4 {
            held.extend(lease_n(&mut c, victim, 4 - held.len() as u32, 0).await);
        }
        let died = Instant::now();
        let mut rerun = 0;
        while rerun < 4 {
            for again in lease_n(&mut c, rescuer, 1, 1_000).await {
                assert!(held.iter().any(|j| j.job_id == again.job_id));
                if rerun == 0 {
                    delays.push(died.elapsed().as_secs_f64());
                }
                rerun += 1;
                c.complete(rpc::CompleteRequest {
                    database_id: String::new(),
                    protocol_version: PROTOCOL_VERSION,
                    worker_id: rescuer,
                    attempt_id: again.attempt_id,
                    lease_token: again.lease_token,
                    metrics: Default::default(),
                })
                .await
                .unwrap();
            }
        }
    }
    let med = median(&mut delays);
    println!(
        "{}",
        serde_json::json!({
            "bench": "death_to_rerun", "ttl_s": TTL.as_secs_f64(), "deaths": DEATHS,
            "median_s": med, "max_s": delays[delays.len() - 1],
            "median_over_ttl_s": med - TTL.as_secs_f64(),
        })
    );
    let _ = srv.stop.send(());
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| which.is_empty() || which.iter().any(|w| name.contains(w.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if run("scheduling") {
            scheduling(1, 400).await;
            scheduling(WORKERS, JOBS).await;
        }
        if run("ingestion") {
            ingestion().await;
        }
        if run("death_to_rerun") {
            death_to_rerun().await;
        }
    });
}
