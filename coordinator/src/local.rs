//! `--local-workers N`: CPU `worker` child processes, connected to this coordinator over
//! loopback gRPC exactly like remote ones. A child that panics, runs out of memory or is killed
//! takes nothing else down: its job goes back through the normal lease rules and the child is
//! restarted (with backoff). The children stop when the coordinator does, even when it is
//! killed with SIGKILL: each holds a pipe to it on stdin and exits when that pipe closes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Names the `worker` binary to run (the `--worker-bin` option reads it too).
pub(crate) const WORKER_BIN_ENV: &str = "LATENTSWEEP_WORKER_BIN";
/// How children get the shared secret: environment, never the command line (`ps` shows that).
const TOKEN_ENV: &str = proto::secret::TOKEN_ENV;
/// How long children get to hand their jobs back on shutdown before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// First and longest wait before restarting a child that died.
const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(60);
/// A child that ran this long before dying counts as healthy: the next restart is quick again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Children that die this many times in a row without a healthy run are given up on.
const MAX_QUICK_DEATHS: u32 = 10;

/// Options of the local workers.
#[derive(Debug, Clone)]
pub struct LocalWorkers {
    pub count: usize,
    /// The coordinator's gRPC address (a loopback one).
    pub grpc_addr: SocketAddr,
    pub token: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Each worker gets `work_root/local-<i>/`.
    pub work_root: PathBuf,
    /// The `worker` binary; found by `find_worker_bin` when `None`.
    pub worker_bin: Option<PathBuf>,
    /// With TLS: the coordinator's certificate, which children trust exactly (`https://`).
    pub pin_cert: Option<PathBuf>,
}

/// Why local workers cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("--worker-bin / {WORKER_BIN_ENV}: {0} is not a file")]
    NotAFile(PathBuf),
    #[error(
        "--local-workers needs the `worker` binary, and it is not in {searched}: build it \
         (`cargo build -p latentsweep-worker`) or name it with --worker-bin / {WORKER_BIN_ENV}"
    )]
    NotFound { searched: String },
}

/// The `worker` binary: `explicit` if given, else `worker` next to this executable or in its
/// parent directory (test binaries live in `target/<profile>/deps/`).
pub(crate) fn find_worker_bin(explicit: Option<&Path>) -> Result<PathBuf, LocalError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_owned())
        } else {
            Err(LocalError::NotAFile(p.to_owned()))
        };
    }
    let name = format!("worker{}", std::env::consts::EXE_SUFFIX);
    let exe = std::env::current_exe().ok();
    let dirs: Vec<&Path> = exe
        .as_deref()
        .and_then(Path::parent)
        .map(|d| {
            std::iter::successors(Some(d), |d| d.parent())
                .take(2)
                .collect()
        })
        .unwrap_or_default();
    let candidates: Vec<PathBuf> = dirs.iter().map(|d| d.join(&name)).collect();
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or_else(|| LocalError::NotFound {
            searched: if candidates.is_empty() {
                "(the coordinator's own path is unknown)".into()
            } else {
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// Starts `count` supervised single-slot CPU worker processes. When `shutdown` becomes true,
/// each child is asked to stop (SIGTERM: it hands its job back) and killed if it has not exited
/// within `STOP_GRACE` (30 s); the handles finish then.
pub fn spawn_local_workers(
    opts: &LocalWorkers,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, LocalError> {
    if opts.count == 0 {
        return Ok(Vec::new());
    }
    let bin = find_worker_bin(opts.worker_bin.as_deref())?;
    tracing::info!(count = opts.count, worker = %bin.display(), "starting local worker processes");
    // A wildcard listen address is reachable on loopback.
    let ip = if opts.grpc_addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        opts.grpc_addr.ip()
    };
    let scheme = if opts.pin_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}", SocketAddr::new(ip, opts.grpc_addr.port()));
    Ok((0..opts.count)
        .map(|i| {
            let child = ChildSpec {
                name: format!("local-{i}"),
                bin: bin.clone(),
                url: url.clone(),
                token: opts.token.clone(),
                data_dir: opts.data_dir.clone(),
                work_dir: opts.work_root.join(format!("local-{i}")),
                pin_cert: opts.pin_cert.clone(),
            };
            tokio::spawn(supervise(child, shutdown.clone()))
        })
        .collect())
}

/// How to start one child.
struct ChildSpec {
    name: String,
    bin: PathBuf,
    url: String,
    token: Option<String>,
    data_dir: Option<PathBuf>,
    work_dir: PathBuf,
    pin_cert: Option<PathBuf>,
}

impl ChildSpec {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--coordinator")
            .arg(&self.url)
            .args(["--cpu", "--slots", "1", "--name", &self.name])
            .arg("--work-dir")
            .arg(&self.work_dir)
            .arg("--exit-on-stdin-close");
        if let Some(d) = &self.data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        if let Some(c) = &self.pin_cert {
            cmd.arg("--pin-cert").arg(c);
        }
        // Exactly the coordinator's token, not one another variable would point to.
        cmd.env_remove(proto::secret::TOKEN_FILE_ENV);
        match self.token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => cmd.env(TOKEN_ENV, t),
            None => cmd.env_remove(TOKEN_ENV),
        };
        // A quiet child unless the user asked for detail: its lines come out among the progress
        // bars, where only warnings (and the wait of a data-set download) belong.
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn,worker::train::data::download=info");
        }
        // Its lines are forwarded through this process's log, which adds its own styling.
        // Forwarded lines become messages of this process's log, in its format: the child
        // writes plain text whatever this process was asked for.
        cmd.env_remove("LATENTSWEEP_LOG_FORMAT");
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }
}

/// Runs one child until shutdown, restarting it whenever it dies.
async fn supervise(spec: ChildSpec, mut shutdown: watch::Receiver<bool>) {
    let mut restarts = Restarts::new(spec.name.len() as u64);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = Instant::now();
        let outcome = match spec.command().spawn() {
            Ok(child) => run_child(&spec.name, child, &mut shutdown).await,
            Err(e) => {
                tracing::error!(worker = %spec.name, bin = %spec.bin.display(), error = %e,
                    "cannot start local worker");
                Ran::Died(None)
            }
        };
        let Ran::Died(status) = outcome else {
            return;
        };
        let Some(wait) = restarts.after_death(started.elapsed()) else {
            tracing::error!(worker = %spec.name, deaths = MAX_QUICK_DEATHS,
                "local worker keeps dying; not restarting it again");
            return;
        };
        tracing::warn!(worker = %spec.name, status = ?status, restart_in_ms = wait.as_millis() as u64,
            "local worker process died; its job returns through the lease rules");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = stopping(&mut shutdown) => return,
        }
    }
}

/// How a child's run ended.
enum Ran {
    /// On its own (crash, kill, refusal); the status if known.
    Died(Option<ExitStatus>),
    /// Stopped because the coordinator shuts down.
    Stopped,
}

async fn run_child(name: &str, mut child: Child, shutdown: &mut watch::Receiver<bool>) -> Ran {
    let pid = child.id();
    tracing::info!(worker = %name, pid, "local worker process started");
    // Held, never written: the child exits when this closes, i.e. when this process is gone.
    let stdin = child.stdin.take();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(name.to_owned(), out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(name.to_owned(), err));
    }
    tokio::select! {
        status = child.wait() => {
            drop(stdin);
            Ran::Died(status.ok())
        }
        () = stopping(shutdown) => {
            stop_child(name, &mut child).await;
            drop(stdin);
            Ran::Stopped
        }
    }
}

/// Resolves once the coordinator shuts down (or nobody can tell it to any more).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// SIGTERM (the child hands its job back), then SIGKILL after [`STOP_GRACE`].
async fn stop_child(name: &str, child: &mut Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        && let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM)
    {
        tracing::warn!(worker = %name, error = %e, "cannot signal local worker");
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::info!(worker = %name, "local worker stopped");
        }
        Ok(Ok(status)) => tracing::warn!(worker = %name, %status, "local worker stopped"),
        Ok(Err(e)) => tracing::warn!(worker = %name, error = %e, "waiting for local worker"),
        Err(_) => {
            tracing::warn!(worker = %name, grace_secs = STOP_GRACE.as_secs(),
                "local worker did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
}

/// Re-logs each line a child writes, tagged with its name.
async fn forward(name: String, stream: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "local_worker", worker = %name, "{line}");
    }
}

/// Restart delays: doubling from [`RESTART_MIN`] to [`RESTART_MAX`] with +-20 % jitter, reset
/// by a healthy run; `None` once [`MAX_QUICK_DEATHS`] quick deaths came in a row.
#[derive(Debug)]
struct Restarts {
    quick_deaths: u32,
    jitter: u64,
}

impl Restarts {
    fn new(salt: u64) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(1);
        Restarts {
            quick_deaths: 0,
            jitter: (seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
        }
    }

    fn after_death(&mut self, ran: Duration) -> Option<Duration> {
        if ran >= HEALTHY_RUN {
            self.quick_deaths = 0;
        }
        self.quick_deaths += 1;
        if self.quick_deaths > MAX_QUICK_DEATHS {
            return None;
        }
        let base = RESTART_MIN
            .saturating_mul(1 << (self.quick_deaths - 1).min(16))
            .min(RESTART_MAX);
        // xorshift: jitter only needs to keep children that died together apart.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let frac = (self.jitter % 401) as f64 / 1000.0 + 0.8;
        Some(base.mul_f64(frac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_with_jitter_reset_when_healthy_and_give_up() {
        let mut r = Restarts::new(7);
        let quick = Duration::from_secs(1);
        let d: Vec<Duration> = (0..4).map(|_| r.after_death(quick).unwrap()).collect();
        for (i, w) in d.iter().enumerate() {
            let base = RESTART_MIN * (1 << i);
            assert!(
                *w >= base.mul_f64(0.8) && *w <= base.mul_f64(1.2),
                "{i}: {w:?}"
            );
        }
        assert!(r.after_death(HEALTHY_RUN).unwrap() <= RESTART_MIN.mul_f64(1.2));
        for _ in 1..MAX_QUICK_DEATHS {
            assert!(r.after_death(quick).unwrap() <= RESTART_MAX.mul_f64(1.2));
        }
        assert_eq!(r.after_death(quick), None);
    }

    #[test]
    fn a_missing_worker_binary_names_what_was_searched() {
        let e = find_worker_bin(Some(Path::new("/nonexistent/worker"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/worker"), "{e}");
        // This test binary lives in target/<profile>/deps/: both it and its parent are searched.
        match find_worker_bin(None) {
            Ok(p) => assert!(p.is_file()),
            Err(e) => {
                let msg = e.to_string();
                let exe = std::env::current_exe().unwrap();
                let dir = exe.parent().unwrap();
                assert!(msg.contains(&dir.display().to_string()), "{msg}");
                assert!(
                    msg.contains(&dir.parent().unwrap().display().to_string()),
                    "{msg}"
                );
            }
        }
    }
}
