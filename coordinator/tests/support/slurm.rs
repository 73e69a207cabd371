//! Helpers of the tests that run a real one-node Slurm (`deploy/slurm/one-node-cluster.sh`):
//! the cluster, `sbatch` of the worker script, the coordinator binary as a lab runs it, and
//! reads of its database.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use coordinator::web::health::READYZ;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use super::grpc::{free_port, worker_exe};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A running one-node cluster; stopped (jobs cancelled, daemons killed by PID) when dropped.
pub struct Cluster {
    pub dir: PathBuf,
    pub conf: PathBuf,
}

impl Cluster {
    pub fn start(dir: &Path) -> Cluster {
        let dir = dir.join("slurm");
        let o = Command::new(root().join("deploy/slurm/one-node-cluster.sh"))
            .arg("start")
            .arg(&dir)
            .env("CPUS", "2")
            .env("GPUS", "2")
            .env("SLURMCTLD_PORT", free_port().to_string())
            .env("SLURMD_PORT", free_port().to_string())
            .output()
            .expect("running deploy/slurm/one-node-cluster.sh");
        assert!(
            o.status.success(),
            "the one-node Slurm did not start (it needs root and the Debian packages slurm-wlm \
             and munge; .ci/test installs them):\n{}",
            text(&o)
        );
        let conf = dir.join("slurm.conf");
        assert!(text(&o).contains(&format!("SLURM_CONF={}", conf.display())));
        Cluster { dir, conf }
    }

    /// A Slurm client command against this cluster.
    pub fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    pub fn run(&self, tool: &str, args: &[&str]) -> String {
        let o = self.cmd(tool).args(args).output().unwrap();
        assert!(o.status.success(), "{tool} {args:?}:\n{}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    /// `JobState` of a job (`scontrol`: no accounting needed), `None` once Slurm forgot it.
    pub fn job_state(&self, id: &str) -> Option<String> {
        let o = self
            .cmd("scontrol")
            .args(["show", "job", id])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.split_whitespace()
            .find_map(|w| w.strip_prefix("JobState="))
            .map(str::to_owned)
    }

    pub fn wait_job_state(&self, id: &str, want: &[&str], limit: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.job_state(id);
            if let Some(s) = s.as_deref().filter(|s| want.contains(s)) {
                return s.to_owned();
            }
            assert!(
                t0.elapsed() < limit,
                "job {id} is {s:?}, not {want:?}, after {limit:?}; slurmd log:\n{}",
                self.log("slurmd.log")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn queue(&self) -> String {
        self.run("squeue", &["--noheader", "--format=%i %T"])
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn pids(&self) -> Vec<i32> {
        ["munged.pid", "slurmctld.pid", "slurmd.pid"]
            .iter()
            .map(|f| {
                std::fs::read_to_string(self.dir.join(f))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    /// Stops the cluster: cancels its jobs, then kills the daemons by their PIDs.
    pub fn stop(&self) -> Output {
        Command::new(root().join("deploy/slurm/one-node-cluster.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

pub fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// `sbatch` of the worker script with the environment a user sets; returns the array job id.
pub fn sbatch(cluster: &Cluster, env: &SweepEnv, extra: &[&str]) -> String {
    let script = root().join("deploy/slurm/worker.sbatch");
    let out = cluster.dir.join("worker-%A_%a.log");
    let mut c = cluster.cmd("sbatch");
    c.arg("--parsable")
        .arg(format!("--output={}", out.display()))
        .args(extra)
        .arg(&script)
        .current_dir(&env.dir)
        .env("LATENTSWEEP_COORDINATOR", &env.url)
        .env("LATENTSWEEP_TOKEN_FILE", &env.token_file)
        .env("LATENTSWEEP_WORKER_BIN", worker_exe())
        .env("TMPDIR", &env.dir)
        .env("RUST_LOG", "info,h2=warn")
        // The script reads the token from the file, never from the submitting shell.
        .env_remove("LATENTSWEEP_TOKEN");
    let o = c.output().unwrap();
    assert!(o.status.success(), "sbatch:\n{}", text(&o));
    let id = String::from_utf8(o.stdout).unwrap();
    id.trim().split(';').next().unwrap().to_owned()
}

pub struct SweepEnv {
    pub dir: PathBuf,
    pub url: String,
    pub token_file: PathBuf,
}

/// The coordinator binary as a lab runs it for Slurm workers; killed when dropped.
pub struct Coordinator {
    pub child: Child,
    pub http: SocketAddr,
    pub db: PathBuf,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const TOKEN: &str = "slurm-test-token-7f3a";

pub fn start_coordinator(dir: &Path, sweep: &str) -> (Coordinator, SweepEnv) {
    start_coordinator_with(dir, sweep, |_| {})
}

/// [`start_coordinator`], with more arguments or environment set by `customize`.
pub fn start_coordinator_with(
    dir: &Path,
    sweep: &str,
    customize: impl FnOnce(&mut Command),
) -> (Coordinator, SweepEnv) {
    let sweep_file = dir.join("sweep.toml");
    std::fs::write(&sweep_file, sweep).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (grpc, http) = (free_port(), free_port());
    let db = dir.join("ls.db");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordinator"));
    customize(&mut cmd);
    let child = cmd
        .arg("--sweep")
        .arg(&sweep_file)
        .arg("--db")
        .arg(&db)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--lease-ttl", "3"])
        .env("LATENTSWEEP_TOKEN", TOKEN)
        .env("RUST_LOG", "info,sqlx=warn,h2=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("coordinator.log")).unwrap())
        .spawn()
        .unwrap();
    let c = Coordinator {
        child,
        http: SocketAddr::from(([127, 0, 0, 1], http)),
        db,
    };
    let env = SweepEnv {
        dir: dir.to_owned(),
        url: format!("http://127.0.0.1:{grpc}"),
        token_file,
    };
    (c, env)
}

pub async fn wait_ready(c: &Coordinator, log: &Path) {
    let t0 = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(c.http).await.is_ok()
            && super::builder::http_get(c.http, READYZ).await.status == 200
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "coordinator never ready:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn reader(db: &Path) -> SqlitePool {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .unwrap()
        .read_only(true);
    SqlitePool::connect_with(opts).await.unwrap()
}

/// Waits for an attempt that has streamed a few metric batches on a worker of one of `arrays`;
/// returns (attempt id, job id, the Slurm job id `ARRAY_TASK` of its worker).
pub async fn running_attempt(
    db: &SqlitePool,
    arrays: &[&str],
    limit: Duration,
    logs: &dyn Fn() -> String,
) -> (i64, i64, String) {
    let t0 = Instant::now();
    loop {
        let rows = sqlx::query(
            "SELECT a.id, a.job_id, w.name FROM attempts a JOIN workers w ON w.id = a.worker_id
             WHERE a.state = 'running' AND a.last_seq >= 2 ORDER BY a.id",
        )
        .fetch_all(db)
        .await
        .unwrap();
        for r in rows {
            let name: String = r.get(2);
            let task = name.strip_prefix("slurm-").unwrap_or("").to_owned();
            if arrays.iter().any(|a| task.starts_with(&format!("{a}_"))) {
                return (r.get(0), r.get(1), task);
            }
        }
        assert!(
            t0.elapsed() < limit,
            "no Slurm worker of {arrays:?} got going; logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn attempt_state(db: &SqlitePool, id: i64) -> String {
    sqlx::query_scalar("SELECT state FROM attempts WHERE id = ?1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

/// Every job's (id, state), in id order, once `n` jobs exist and none is queued or running;
/// `None` before that.
pub async fn final_job_states(db: &SqlitePool, n: usize) -> Option<Vec<(i64, String)>> {
    let states: Vec<(i64, String)> = sqlx::query_as("SELECT id, state FROM jobs ORDER BY id")
        .fetch_all(db)
        .await
        .unwrap();
    let over = states.len() == n && states.iter().all(|(_, s)| s != "queued" && s != "running");
    over.then_some(states)
}

pub async fn wait_attempt_state(db: &SqlitePool, id: i64, want: &str, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let s = attempt_state(db, id).await;
        if s == want {
            return;
        }
        assert!(t0.elapsed() < limit, "attempt {id} is {s}, not {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn worker_logs(dir: &Path) -> String {
    worker_logs_in(&dir.join("slurm"))
}

/// Every worker log (`*worker-*.log`) in `dir`, each under its path.
pub fn worker_logs_in(dir: &Path) -> String {
    let mut all = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return all;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().contains("worker-") {
            all += &format!(
                "== {}\n{}",
                p.display(),
                std::fs::read_to_string(&p).unwrap()
            );
        }
    }
    all
}
