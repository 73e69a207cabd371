//! `coordinator --local-workers N` with real processes: the local workers are child `worker`
//! processes, so killing one with SIGKILL mid-job or panicking inside its training leaves the
//! coordinator serving, and the job goes through the normal lease rules (expiry, retry) to
//! completion. Killing the coordinator with SIGKILL takes its children down too.
//!
//! The `worker` binary is taken from the same target directory as `coordinator`
//! (`cargo test --workspace` builds both).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::Row;
use support::grpc::*;
use support::proc::{Proc, migrated_db};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Each test trains in two processes at times; on a 2-core machine they must not overlap.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A `coordinator --local-workers 1` process; killed when dropped.
struct Coordinator {
    proc: Proc,
    db: PathBuf,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Coordinator {
    fn spawn(dir: &Path, sweep: &str, env: &[(&str, &str)]) -> Coordinator {
        let file = dir.join("sweep.toml");
        std::fs::write(&file, sweep).unwrap();
        let db = dir.join("ls.db");
        let (grpc, http) = (free_addr(), free_addr());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordinator"));
        cmd.arg("--sweep")
            .arg(&file)
            .arg("--db")
            .arg(&db)
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--http-addr", &http.to_string()])
            .args(["--lease-ttl", "3", "--local-workers", "1"])
            .env("LATENTSWEEP_WORKER_BIN", worker_exe())
            .env("RUST_LOG", "info,sqlx=warn,h2=warn")
            .envs(env.iter().copied());
        Coordinator {
            proc: Proc::start("coordinator", cmd, dir),
            db,
            grpc,
            http,
        }
    }

    fn log_text(&self) -> String {
        self.proc.log_text()
    }

    fn assert_running(&mut self) {
        assert!(
            self.proc.child.try_wait().unwrap().is_none(),
            "the coordinator exited:\n{}",
            self.log_text()
        );
    }

    /// A read-only view of its database, once it exists.
    async fn db(&self) -> sqlx::SqlitePool {
        migrated_db(&self.db, || self.log_text()).await
    }

    /// Both front doors answer: the dashboard over HTTP and the gRPC service, each with the
    /// token the coordinator generated next to its database (none was given).
    async fn assert_serving(&mut self) {
        self.assert_running();
        let token = proto::secret::read_token("token", &proto::secret::token_file_for(&self.db))
            .expect("the coordinator generated a token");
        let mut s = tokio::net::TcpStream::connect(self.http).await.unwrap();
        let get = format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(get.as_bytes()).await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "dashboard: {}",
            reply.lines().next().unwrap_or("")
        );
        let c = client(&format!("http://{}", self.grpc), Some(&token));
        assert!(register(&c, "probe").await > 0);
    }

    /// The pids of its `worker` children.
    fn workers(&self) -> Vec<u32> {
        let me = self.proc.child.id();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Some((comm, state, ppid)) = proc_stat(pid) else {
                continue;
            };
            if ppid == me && comm == "worker" && state != 'Z' {
                out.push(pid);
            }
        }
        out
    }

    fn kill9(&mut self) {
        self.proc.kill9();
    }
}

/// Command name, state and parent pid of a process.
fn proc_stat(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat[open + 1..close].to_owned();
    let mut rest = stat[close + 2..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, state, _)| state != 'Z')
}

async fn wait_until<T>(
    what: &str,
    limit: Duration,
    log: impl Fn() -> String,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}; coordinator log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One job long enough (a few seconds per epoch) to be killed mid-way.
const SLOW_JOB: &str = "name = \"local\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"contrastive\"\n\
    dataset = \"fashion-mnist\"\nmargin = 1.0\nlr = 1e-3\nseed = 0\nepochs = 3\nbatch_size = 32\n\
    [fixed]\ntrain_limit = 1200\neval_every = 3\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_local_worker_costs_its_lease_not_the_coordinator() {
    let _serial = SERIAL.lock().await;
    fashion_mnist_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let mut coord = Coordinator::spawn(dir.path(), SLOW_JOB, &[]);
    let db = coord.db().await;
    let log = || std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap_or_default();

    // Once the local worker's attempt streams metrics, SIGKILL the worker process.
    let (attempt, job) = wait_until("metrics", Duration::from_secs(600), log, async || {
        sqlx::query("SELECT id, job_id FROM attempts WHERE state = 'running' AND last_seq >= 1")
            .fetch_optional(&db)
            .await
            .unwrap()
            .map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1)))
    })
    .await;
    let victims = coord.workers();
    assert_eq!(victims.len(), 1, "one local worker process: {victims:?}");
    let victim = victims[0];
    assert!(
        Command::new("kill")
            .args(["-KILL", &victim.to_string()])
            .status()
            .unwrap()
            .success()
    );

    // The coordinator keeps serving, and starts a new worker process.
    tokio::time::sleep(Duration::from_millis(300)).await;
    coord.assert_serving().await;
    let replacement = wait_until("a new worker", Duration::from_secs(30), log, async || {
        coord.workers().into_iter().find(|p| *p != victim)
    })
    .await;
    assert!(!alive(victim));

    // The killed attempt's lease runs out; the job runs again and finishes.
    wait_until(
        "the job finishes",
        Duration::from_secs(900),
        log,
        async || {
            let s: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = ?1")
                .bind(job)
                .fetch_one(&db)
                .await
                .unwrap();
            (s == "done" || s == "failed").then_some(())
        },
    )
    .await;
    let rows =
        sqlx::query("SELECT id, number, state FROM attempts WHERE job_id = ?1 ORDER BY number")
            .bind(job)
            .fetch_all(&db)
            .await
            .unwrap();
    let attempts: Vec<(i64, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        attempts[0],
        (attempt, 1, "expired".to_owned()),
        "{attempts:?}"
    );
    assert_eq!(
        attempts.last().unwrap().2,
        "done",
        "{attempts:?}\n{}",
        coord.log_text()
    );
    coord.assert_serving().await;

    // SIGKILL the coordinator: its worker notices (its stdin pipe closes) and exits.
    coord.kill9();
    let t0 = Instant::now();
    while alive(replacement) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "worker {replacement} outlived its coordinator:\n{}",
            coord.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_local_training_fails_one_attempt_and_the_retry_finishes() {
    let _serial = SERIAL.lock().await;
    fashion_mnist_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let sweep = tiny_sweep("panic", 1, "");
    // Inherited by the worker child: its first attempt panics at its first step report.
    let mut coord = Coordinator::spawn(
        dir.path(),
        &sweep,
        &[("LATENTSWEEP_TEST_PANIC_AT_STEP", "0")],
    );
    let db = coord.db().await;
    let log = || std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap_or_default();
    let worker = wait_until(
        "a worker process",
        Duration::from_secs(30),
        log,
        async || coord.workers().first().copied(),
    )
    .await;
    wait_until(
        "the job finishes",
        Duration::from_secs(600),
        log,
        async || {
            let s: Option<String> = sqlx::query_scalar("SELECT state FROM jobs")
                .fetch_optional(&db)
                .await
                .unwrap();
            s.filter(|s| s == "done" || s == "failed").map(|_| ())
        },
    )
    .await;
    coord.assert_serving().await;
    let rows =
        sqlx::query("SELECT number, state, COALESCE(error, '') FROM attempts ORDER BY number")
            .fetch_all(&db)
            .await
            .unwrap();
    let attempts: Vec<(i64, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}\n{}", coord.log_text());
    assert_eq!(attempts[0].1, "failed", "{attempts:?}");
    assert!(
        attempts[0].2.contains("panicked"),
        "the first attempt's error names the panic: {attempts:?}"
    );
    assert_eq!(attempts[1].1, "done", "{attempts:?}\n{}", coord.log_text());
    let job: String = sqlx::query_scalar("SELECT state FROM jobs")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(job, "done");
    // The worker process contained the panic: it is the same one, still running.
    assert!(alive(worker));
    assert_eq!(coord.workers(), vec![worker]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_local_workers_jobs_back_and_stops_them() {
    let _serial = SERIAL.lock().await;
    fashion_mnist_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let mut coord = Coordinator::spawn(dir.path(), SLOW_JOB, &[]);
    let db = coord.db().await;
    let log = || std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap_or_default();
    let attempt = wait_until("metrics", Duration::from_secs(600), log, async || {
        sqlx::query_scalar::<_, i64>(
            "SELECT id FROM attempts WHERE state = 'running' AND last_seq >= 1",
        )
        .fetch_optional(&db)
        .await
        .unwrap()
    })
    .await;
    let workers = coord.workers();
    assert_eq!(workers.len(), 1, "{workers:?}");

    let status = coord.proc.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", coord.log_text());
    assert!(!alive(workers[0]), "the worker outlived the coordinator");
    let state: String = sqlx::query_scalar("SELECT state FROM attempts WHERE id = ?1")
        .bind(attempt)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        state,
        "released",
        "the worker hands its job back\n{}",
        coord.log_text()
    );
    let job: String = sqlx::query_scalar("SELECT state FROM jobs")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(job, "queued");
}
