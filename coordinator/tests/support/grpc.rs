//! Helpers shared by the `grpc_*` integration tests: a real coordinator on 127.0.0.1:0 over a
//! real SQLite file, real clients, sweep submission and database checks.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use coordinator::grpc::{self, GrpcConfig};
use coordinator::sched::SchedConfig;
use coordinator::store::Store;
use proto::SweepId;
use proto::metric;
use proto::rpc::{self, PROTOCOL_VERSION};
use sqlx::Row;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use worker::agent::client::{self, Client};

pub struct Server {
    pub store: Store,
    pub addr: SocketAddr,
    pub url: String,
    pub db: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), grpc::ServeError>>,
}

impl Server {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,h2=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Starts a coordinator on `listener` (or a fresh 127.0.0.1:0) over the database at `db`.
pub async fn start_on(
    db: &Path,
    listener: Option<tokio::net::TcpListener>,
    tweak: impl FnOnce(&mut GrpcConfig),
) -> Server {
    init_tracing();
    let store = Store::open(db).await.expect("open store");
    let listener = match listener {
        Some(l) => l,
        None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let addr = listener.local_addr().unwrap();
    let mut cfg = GrpcConfig::new(addr, db);
    tweak(&mut cfg);
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(grpc::serve_on(listener, store.clone(), cfg, async move {
        let _ = rx.await;
    }));
    Server {
        store,
        addr,
        url: format!("http://{addr}"),
        db: db.to_owned(),
        stop: Some(tx),
        task,
    }
}

pub async fn start(dir: &Path, ttl: Duration) -> Server {
    start_on(&dir.join("ls.db"), None, |c| {
        c.sched = SchedConfig::with_ttl(ttl)
    })
    .await
}

pub fn client(url: &str, token: Option<&str>) -> Client {
    client::connect(url, token).unwrap()
}

pub async fn submit(store: &Store, toml: &str) -> SweepId {
    let sweep = proto::sweep::parse_sweep(toml, "test.toml", 1000).expect("sweep parses");
    store
        .submit(&sweep, toml, None)
        .await
        .expect("submit")
        .sweep_id
}

/// Jobs long enough (several metric batches, a few seconds per epoch) to be killed mid-way.
pub fn slow_sweep(name: &str, seeds: usize) -> String {
    let s: Vec<String> = (0..seeds).map(|i| i.to_string()).collect();
    format!(
        "name = \"{name}\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"contrastive\"\n\
         dataset = \"fashion-mnist\"\nmargin = 1.0\nlr = 1e-3\nseed = [{}]\nepochs = 3\nbatch_size = 32\n\
         [fixed]\ntrain_limit = 1200\neval_every = 3\n",
        s.join(", ")
    )
}

/// A sweep of `n` cells (seeds 0..n) of a tiny Fashion-MNIST job.
pub fn tiny_sweep(name: &str, n: usize, extra: &str) -> String {
    let seeds: Vec<String> = (0..n).map(|s| s.to_string()).collect();
    format!(
        "name = \"{name}\"\n{extra}\n[grid]\nnetwork = \"embedding-net\"\nloss = \"contrastive\"\n\
         dataset = \"fashion-mnist\"\nmargin = 1.0\nlr = 1e-3\nseed = [{}]\nepochs = 1\nbatch_size = 64\n\
         [fixed]\ntrain_limit = 300\neval_every = 1\n",
        seeds.join(", ")
    )
}

/// A one-slot test worker's registration.
pub fn register_req(name: &str) -> rpc::RegisterRequest {
    rpc::RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        name: name.into(),
        host: "test".into(),
        backend: "none".into(),
        devices: vec![],
        software_version: "test".into(),
        slots: 1,
    }
}

pub async fn register(c: &Client, name: &str) -> i64 {
    c.clone()
        .register(register_req(name))
        .await
        .expect("register")
        .into_inner()
        .worker_id
}

pub fn lease_req(worker_id: i64, free: u32, running: Vec<i64>, wait_ms: u32) -> rpc::LeaseRequest {
    rpc::LeaseRequest {
        database_id: String::new(),
        protocol_version: PROTOCOL_VERSION,
        worker_id,
        free_slots: free,
        running_attempts: running,
        wait_ms,
    }
}

/// Leases one job; `running` must list the attempts the caller still holds (others are
/// released as orphans).
pub async fn lease_one(c: &Client, worker_id: i64, running: &[i64]) -> rpc::JobLease {
    let r = c
        .clone()
        .lease(lease_req(worker_id, 1, running.to_vec(), 2000))
        .await
        .expect("lease")
        .into_inner();
    r.jobs.into_iter().next().expect("a job")
}

pub fn points(seq: i64, n: usize) -> rpc::MetricBatch {
    rpc::MetricBatch {
        seq,
        points: (0..n)
            .map(|i| rpc::MetricPoint {
                step: seq * 1000 + i as i64,
                epoch: 1,
                name: metric::LOSS.into(),
                value: i as f64,
                time_ms: 0,
            })
            .collect(),
    }
}

pub fn report(
    worker_id: i64,
    attempt_id: i64,
    lease_token: u64,
    item: u64,
    batch: rpc::MetricBatch,
) -> rpc::ReportRequest {
    rpc::ReportRequest {
        database_id: String::new(),
        lease_token,
        protocol_version: PROTOCOL_VERSION,
        worker_id,
        attempt_id,
        item,
        body: Some(rpc::report_request::Body::Metrics(batch)),
    }
}

/// Sends `items` on one report stream and returns the acks (or the stream's error).
pub async fn send_reports(
    c: &Client,
    items: Vec<rpc::ReportRequest>,
) -> Result<Vec<rpc::ReportAck>, tonic::Status> {
    let n = items.len();
    let mut acks = c
        .clone()
        .report(tokio_stream::iter(items))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while out.len() < n {
        match acks.message().await? {
            Some(a) => out.push(a),
            None => break,
        }
    }
    Ok(out)
}

pub async fn job_states(store: &Store, sweep: SweepId) -> Vec<(i64, String)> {
    sqlx::query("SELECT id, state FROM jobs WHERE sweep_id = ?1 ORDER BY seq")
        .bind(sweep.0)
        .fetch_all(store.reader())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>("id"), r.get::<String, _>("state")))
        .collect()
}

/// Waits until every job of the sweep is in a final state; panics after `limit`.
pub async fn wait_all_final(store: &Store, sweep: SweepId, limit: Duration) -> Vec<(i64, String)> {
    let t0 = std::time::Instant::now();
    loop {
        let s = job_states(store, sweep).await;
        if !s.is_empty()
            && s.iter()
                .all(|(_, st)| st == "done" || st == "failed" || st == "cancelled")
        {
            return s;
        }
        assert!(
            t0.elapsed() < limit,
            "sweep not finished after {limit:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Per attempt: stored metric batch sequence numbers are 0..=last without gaps, and no metric
/// point is stored twice. Returns the number of attempts checked.
pub async fn assert_metrics_exactly_once(store: &Store) -> usize {
    let attempts: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT attempt_id FROM metric_batches")
        .fetch_all(store.reader())
        .await
        .unwrap();
    for a in &attempts {
        let seqs: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM metric_batches WHERE attempt_id = ?1 ORDER BY seq")
                .bind(a)
                .fetch_all(store.reader())
                .await
                .unwrap();
        let want: Vec<i64> = (0..seqs.len() as i64).collect();
        assert_eq!(seqs, want, "attempt {a}: metric batches with gaps");
        let dup: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT seq, step, name, COUNT(*) c FROM metrics WHERE attempt_id = ?1
             GROUP BY seq, step, name HAVING c > 1)",
        )
        .bind(a)
        .fetch_one(store.reader())
        .await
        .unwrap();
        assert_eq!(dup, 0, "attempt {a}: duplicated metric points");
        let orphan: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM metrics m WHERE m.attempt_id = ?1
               AND NOT EXISTS (SELECT 1 FROM metric_batches b WHERE b.attempt_id = m.attempt_id AND b.seq = m.seq)",
        )
        .bind(a)
        .fetch_one(store.reader())
        .await
        .unwrap();
        assert_eq!(orphan, 0);
    }
    attempts.len()
}

/// The `worker` binary of the same target directory as `coordinator` (`cargo test --workspace`
/// builds both; `cargo test -p latentsweep-coordinator` alone does not build it).
pub fn worker_exe() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_coordinator"))
        .parent()
        .unwrap();
    let exe = dir.join(format!("worker{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.exists(),
        "{} is missing: build it first (`cargo test --workspace` or `cargo build -p latentsweep-worker`)",
        exe.display()
    );
    exe
}

/// A port on 127.0.0.1 that was free a moment ago (for a process that must be told its address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn fashion_mnist_or_panic() {
    let p = Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
    assert!(
        p.exists(),
        "Fashion-MNIST is missing at {}: install the Debian package dataset-fashion-mnist",
        p.display()
    );
}

/// A small tmpfs mounted for one test (a real size-limited file system), unmounted on drop.
pub struct TinyFs(pub PathBuf);

impl TinyFs {
    /// Mounting needs root. Elsewhere the test is skipped (`None`), except in CI (`CI` set),
    /// which runs as root: there a failure to mount fails the test.
    pub fn mount(at: &Path, kib: u32) -> Option<TinyFs> {
        let uid = std::process::Command::new("id").arg("-u").output().unwrap();
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root, and this test needs root to mount a tmpfs"
            );
            eprintln!(
                "SKIPPED: mounting a tiny tmpfs needs root; run this test as root to check \
                 that a full disk reaches the client"
            );
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "mount -t tmpfs failed although running as root"
        );
        Some(TinyFs(at.to_owned()))
    }

    /// Fills what is left of the file system; returns the filler, to delete to make room.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).and_then(|_| f.flush()).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
