//! `deploy/slurm/worker.sbatch` against a real one-node Slurm (munged, slurmctld and slurmd
//! started by `deploy/slurm/one-node-cluster.sh` in a temporary directory): a sweep finishes
//! with workers started only by that script; a worker cancelled with `scancel` hands its job
//! back, one killed outright loses its lease, and both jobs finish elsewhere with nothing
//! failed. The GPU form gets one (fake) GPU per array task from Slurm's GRES.
//!
//! Needs root and the Debian packages slurm-wlm and munge (`.ci/test` installs them); without
//! them these tests fail.

#[path = "fixtures/builder.rs"]
mod builder;
mod grpc_common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use coordinator::web::health::READYZ;
use grpc_common::{fashion_mnist_or_panic, free_port, worker_exe};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

/// Both tests run Slurm daemons and training processes; on 2 cores, one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A running one-node cluster; stopped (jobs cancelled, daemons killed by PID) when dropped.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
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
    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn run(&self, tool: &str, args: &[&str]) -> String {
        let o = self.cmd(tool).args(args).output().unwrap();
        assert!(o.status.success(), "{tool} {args:?}:\n{}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    /// `JobState` of a job (`scontrol`: no accounting needed), `None` once Slurm forgot it.
    fn job_state(&self, id: &str) -> Option<String> {
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

    fn wait_job_state(&self, id: &str, want: &[&str], limit: Duration) -> String {
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

    fn queue(&self) -> String {
        self.run("squeue", &["--noheader", "--format=%i %T"])
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn pids(&self) -> Vec<i32> {
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
    fn stop(&self) -> Output {
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

fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// `sbatch` of the worker script with the environment a user sets; returns the array job id.
fn sbatch(cluster: &Cluster, env: &SweepEnv, extra: &[&str]) -> String {
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

struct SweepEnv {
    dir: PathBuf,
    url: String,
    token_file: PathBuf,
}

/// The coordinator binary as a lab runs it for Slurm workers; killed when dropped.
struct Coordinator {
    child: Child,
    http: SocketAddr,
    db: PathBuf,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TOKEN: &str = "slurm-test-token-7f3a";

fn start_coordinator(dir: &Path, sweep: &str) -> (Coordinator, SweepEnv) {
    let sweep_file = dir.join("sweep.toml");
    std::fs::write(&sweep_file, sweep).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (grpc, http) = (free_port(), free_port());
    let db = dir.join("ls.db");
    let child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
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

async fn wait_ready(c: &Coordinator, log: &Path) {
    let t0 = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(c.http).await.is_ok()
            && builder::http_get(c.http, READYZ).await.status == 200
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

async fn reader(db: &Path) -> SqlitePool {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .unwrap()
        .read_only(true);
    SqlitePool::connect_with(opts).await.unwrap()
}

/// Waits for an attempt that has streamed a few metric batches on a worker of one of `arrays`;
/// returns (attempt id, job id, the Slurm job id `ARRAY_TASK` of its worker).
async fn running_attempt(
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

async fn attempt_state(db: &SqlitePool, id: i64) -> String {
    sqlx::query_scalar("SELECT state FROM attempts WHERE id = ?1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn wait_attempt_state(db: &SqlitePool, id: i64, want: &str, limit: Duration) {
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

fn worker_logs(dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir.join("slurm")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("worker-")
        {
            all += &format!(
                "== {}\n{}",
                p.display(),
                std::fs::read_to_string(&p).unwrap()
            );
        }
    }
    all
}

/// Jobs of a few seconds per epoch (see grpc_faults.rs), so a worker can be stopped mid-job.
fn slow_sweep(name: &str, seeds: usize) -> String {
    let s: Vec<String> = (0..seeds).map(|i| i.to_string()).collect();
    format!(
        "name = \"{name}\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"contrastive\"\n\
         dataset = \"fashion-mnist\"\nmargin = 1.0\nlr = 1e-3\nseed = [{}]\nepochs = 3\nbatch_size = 32\n\
         [fixed]\ntrain_limit = 1200\neval_every = 3\n",
        s.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_finishes_on_sbatch_workers_through_scancel_and_a_killed_task() {
    let _serial = SERIAL.lock().await;
    fashion_mnist_or_panic();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cluster = Cluster::start(dir);
    let pids = cluster.pids();
    let (coord, env) = start_coordinator(dir, &slow_sweep("slurm", 4));
    wait_ready(&coord, &dir.join("coordinator.log")).await;
    let db = reader(&coord.db).await;
    let logs = || worker_logs(dir);

    // Two CPU workers (the node has 2 CPUs and no GPU for them).
    let first = sbatch(
        &cluster,
        &env,
        &["--array=0-1", "--gres=none", "--cpus-per-task=1"],
    );
    let (cancelled, cancelled_job, task) =
        running_attempt(&db, &[&first], Duration::from_secs(600), &logs).await;

    // scancel: Slurm sends SIGTERM, the worker hands its job back with a checkpoint.
    cluster.run("scancel", &[&task]);
    wait_attempt_state(&db, cancelled, "released", Duration::from_secs(60)).await;
    cluster.wait_job_state(&task, &["CANCELLED"], Duration::from_secs(60));

    // A replacement allocation, from the same script.
    let second = sbatch(
        &cluster,
        &env,
        &["--array=0", "--gres=none", "--cpus-per-task=1"],
    );
    cluster.wait_job_state(
        &format!("{second}_0"),
        &["RUNNING"],
        Duration::from_secs(60),
    );

    // A task killed outright (a node lost, an OOM kill): nothing is handed back, the lease
    // expires and the job is leased again.
    let (killed, killed_job, task) =
        running_attempt(&db, &[&first, &second], Duration::from_secs(600), &logs).await;
    // (`scancel --signal=KILL` would not do: Slurm turns it into its usual SIGTERM first.)
    // listpids wants the task's own job id, not ARRAY_TASK.
    let shown = cluster.run("scontrol", &["show", "job", &task]);
    let job_id = shown
        .split_whitespace()
        .find_map(|w| w.strip_prefix("JobId="))
        .unwrap();
    let listed = cluster.run("scontrol", &["listpids", job_id]);
    let victims: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!victims.is_empty(), "no processes for {task}");
    let o = Command::new("kill")
        .arg("-KILL")
        .args(&victims)
        .output()
        .unwrap();
    assert!(o.status.success(), "kill -KILL {victims:?}: {}", text(&o));
    wait_attempt_state(&db, killed, "expired", Duration::from_secs(60)).await;

    // Every job finishes, none failed, both interrupted jobs by a later attempt.
    let t0 = Instant::now();
    let states = loop {
        let states: Vec<(i64, String)> = sqlx::query_as("SELECT id, state FROM jobs ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap();
        if states.len() == 4 && states.iter().all(|(_, s)| s != "queued" && s != "running") {
            break states;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "{states:?}; worker logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        states.iter().all(|(_, s)| s == "done"),
        "{states:?}; worker logs:\n{}",
        logs()
    );
    for job in [cancelled_job, killed_job] {
        let done: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM attempts WHERE job_id = ?1 AND state = 'done'",
        )
        .bind(job)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(done, 1, "job {job} must finish in a later attempt");
    }
    let failed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts WHERE state = 'failed'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(failed, 0, "worker logs:\n{}", logs());
    // Only sbatch's workers ran the sweep.
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT w.name FROM attempts a JOIN workers w ON w.id = a.worker_id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(names.iter().all(|n| n.starts_with("slurm-")), "{names:?}");
    assert!(
        logs().contains("no GPU allocated: CPU worker"),
        "{}",
        logs()
    );

    // Clean-up: the remaining workers are cancelled (they hand nothing back: idle), no job is
    // left, and the daemons are gone.
    cluster.run("scancel", &[&first, &second]);
    let t0 = Instant::now();
    while !cluster.queue().trim().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "jobs left: {}",
            cluster.queue()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = cluster.stop();
    assert!(o.status.success(), "{}", text(&o));
    for pid in pids {
        assert!(!alive(pid), "daemon {pid} survived the stop");
    }
}

#[test]
fn the_gpu_form_gets_one_gres_gpu_per_array_task() {
    let _serial = SERIAL.blocking_lock();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cluster = Cluster::start(dir);
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let env = SweepEnv {
        dir: dir.to_owned(),
        // Nothing listens: the worker stops at its device set-up before connecting anyway.
        url: format!("http://127.0.0.1:{}", free_port()),
        token_file,
    };
    // The script's own resources (--gres=gpu:1) unchanged, 2 tasks for the node's 2 fake GPUs.
    let script = root().join("deploy/slurm/worker.sbatch");
    let test_only = cluster
        .cmd("sbatch")
        .arg("--test-only")
        .arg("--cpus-per-task=1")
        .arg(&script)
        .output()
        .unwrap();
    assert!(test_only.status.success(), "{}", text(&test_only));
    let id = sbatch(&cluster, &env, &["--array=0-1", "--cpus-per-task=1"]);
    for task in 0..2 {
        let state = cluster.wait_job_state(
            &format!("{id}_{task}"),
            &["COMPLETED", "FAILED"],
            Duration::from_secs(120),
        );
        let log = std::fs::read_to_string(dir.join(format!("slurm/worker-{id}_{task}.log")))
            .unwrap_or_default();
        // Slurm made one GPU visible per task (which one varies), and the script passed the
        // worker the only index the CUDA runtime then sees: 0. Without a GPU (or without a
        // CUDA build) the worker refuses --devices, so the task fails.
        assert!(log.contains(", GPU "), "task {task}: {log}");
        assert!(log.contains("--devices"), "task {task}: {log}");
        assert_eq!(state, "FAILED", "task {task}: {log}");
    }
    let gpus: Vec<String> = (0..2)
        .map(|t| {
            let log =
                std::fs::read_to_string(dir.join(format!("slurm/worker-{id}_{t}.log"))).unwrap();
            log.lines()
                .find_map(|l| l.split(", GPU ").nth(1))
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_ne!(gpus[0], gpus[1], "two tasks shared a GPU: {gpus:?}");
    // More GPUs per task than the node has: refused at submission.
    let too_many = cluster
        .cmd("sbatch")
        .args(["--test-only", "--gres=gpu:3"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(!too_many.status.success(), "{}", text(&too_many));
}

#[test]
fn the_script_refuses_to_start_without_its_environment() {
    let script = root().join("deploy/slurm/worker.sbatch");
    let o = Command::new("bash")
        .arg(&script)
        .env_remove("LATENTSWEEP_COORDINATOR")
        .env_remove("LATENTSWEEP_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("LATENTSWEEP_COORDINATOR"), "{}", text(&o));
    let o = Command::new("bash")
        .arg(&script)
        .env("LATENTSWEEP_COORDINATOR", "http://127.0.0.1:1")
        .env("LATENTSWEEP_TOKEN_FILE", "/nonexistent/token")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("cannot read the token file /nonexistent/token"),
        "{}",
        text(&o)
    );
}
