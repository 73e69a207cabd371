//! Slurm auto-allocation (`--slurm-max-workers`): submits `deploy/slurm/worker.sbatch` (built
//! in) with `sbatch` while queued jobs outnumber the workers that would take them, watches the
//! allocations with `squeue`, cancels idle ones with `scancel`, and cancels every one it made
//! when the coordinator stops. The decisions are [`crate::sched::autoalloc`]'s; this module only
//! observes and acts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::watch;

use crate::sched::autoalloc::{self, AllocLimits, AllocState, AllocView};
use crate::store::{Store, now_ms};

/// The worker script, passed to `sbatch` on its standard input so that the coordinator needs
/// no copy of the repository beside it.
const WORKER_SCRIPT: &str = include_str!("../../deploy/slurm/worker.sbatch");
/// Longest a Slurm command may take; slurmctld answers in milliseconds when it is well.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// First and longest delay between failed submissions (doubling, with jitter).
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How long shutdown waits for cancelled allocations to leave Slurm's queue.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Auto-allocation settings (from the command line).
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub max_workers: usize,
    pub partition: Option<String>,
    /// `--time` of each allocation, in any form sbatch takes.
    pub time: Option<String>,
    /// More sbatch options, passed as given (e.g. `--gres=none`, `--account=lab`).
    pub args: Vec<String>,
    /// An allocation whose worker leases nothing for this long is cancelled.
    pub idle_timeout: Duration,
    /// How often Slurm and the queue are looked at.
    pub poll: Duration,
    /// The gRPC URL workers connect to [default: from the gRPC address, this host's name in
    /// place of an unspecified IP].
    pub coordinator_url: Option<String>,
    pub token: Option<String>,
    /// The `worker` binary, on a path the compute nodes share [default: as `--local-workers`].
    pub worker_bin: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    /// Holds the token file the jobs read and the workers' logs; must be on a file system the
    /// compute nodes share.
    pub dir: PathBuf,
    /// Workers not seen for this long are not counted as connected.
    pub seen_within: Duration,
}

/// The allocations alive now, shared with the dashboard.
pub type Allocations = Arc<Mutex<Vec<dashboard::Allocation>>>;

/// Why a Slurm command failed.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("cannot run {0}: {1} (is Slurm installed, and SLURM_CONF set if needed?)")]
    Spawn(&'static str, #[source] std::io::Error),
    #[error("{0} did not answer within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{0} printed {1:?}, not a job id")]
    NoJobId(&'static str, String),
    #[error("slurm auto-allocation: {0}")]
    WorkerBin(#[from] crate::local::LocalError),
    #[error("cannot write the workers' token file {0}: {1}")]
    TokenFile(PathBuf, #[source] std::io::Error),
}

/// The name `worker.sbatch` gives the worker of allocation `id` (one array task, number 0).
pub fn worker_name(id: &str) -> String {
    format!("slurm-{id}_0")
}

#[derive(Debug)]
struct Alloc {
    state: AllocState,
    busy: bool,
    idle_since_ms: i64,
    submitted_at_ms: i64,
}

/// Runs auto-allocation until `stop` turns true, then cancels every allocation it made and
/// waits (up to a minute) for them to leave Slurm's queue. Their workers get SIGTERM and hand
/// their jobs back, so the gRPC service must still run while this finishes.
pub async fn run(
    store: Store,
    mut opts: SlurmOptions,
    grpc_addr: SocketAddr,
    shown: Allocations,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SlurmError> {
    let bin = crate::local::find_worker_bin(opts.worker_bin.as_deref())?;
    opts.worker_bin = Some(std::path::absolute(&bin).unwrap_or(bin));
    if opts.coordinator_url.is_none() {
        opts.coordinator_url = Some(default_url(grpc_addr));
    }
    let token_file = opts.dir.join("token");
    write_token(&opts.dir, &token_file, opts.token.as_deref())?;
    let limits = AllocLimits {
        max_workers: opts.max_workers,
        idle_timeout_ms: i64::try_from(opts.idle_timeout.as_millis()).unwrap_or(i64::MAX),
    };
    let mut allocs: BTreeMap<String, Alloc> = BTreeMap::new();
    let mut failures = 0u32;
    let mut next_submit = tokio::time::Instant::now();
    tracing::info!(max_workers = opts.max_workers, "slurm auto-allocation on");
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(opts.poll) => {}
        }
        match observe(&store, &opts, &mut allocs).await {
            Ok((queued, idle_workers)) => {
                let now = now_ms();
                let views: Vec<AllocView> = allocs
                    .iter()
                    .map(|(id, a)| AllocView {
                        id: id.clone(),
                        state: a.state,
                        busy: a.busy,
                        idle_since_ms: a.idle_since_ms,
                    })
                    .collect();
                let act = autoalloc::decide(queued, idle_workers, &views, limits, now);
                for id in act.cancel {
                    tracing::info!(allocation = %id, "cancelling idle allocation");
                    match scancel(std::slice::from_ref(&id)).await {
                        Ok(()) => {
                            if let Some(a) = allocs.get_mut(&id) {
                                a.state = AllocState::Cancelling;
                            }
                        }
                        Err(e) => tracing::warn!(allocation = %id, error = %e, "scancel failed"),
                    }
                }
                if act.submit > 0 && tokio::time::Instant::now() >= next_submit {
                    for _ in 0..act.submit {
                        match sbatch(&opts, &token_file).await {
                            Ok(id) => {
                                failures = 0;
                                tracing::info!(allocation = %id, queued, "submitted a worker allocation");
                                allocs.insert(
                                    id,
                                    Alloc {
                                        state: AllocState::Queued,
                                        busy: false,
                                        idle_since_ms: now,
                                        submitted_at_ms: now,
                                    },
                                );
                            }
                            Err(e) => {
                                failures += 1;
                                let wait = backoff(failures);
                                tracing::warn!(error = %e, retry_in = ?wait, "sbatch failed");
                                next_submit = tokio::time::Instant::now() + wait;
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot observe Slurm or the queue"),
        }
        publish(&shown, &allocs);
    }
    let ids: Vec<String> = allocs.keys().cloned().collect();
    if !ids.is_empty() {
        tracing::info!(allocations = ?ids, "cancelling every allocation before stopping");
        if let Err(e) = scancel(&ids).await {
            tracing::warn!(error = %e, "scancel at shutdown failed");
        }
        drain(&ids).await;
    }
    shown.lock().unwrap_or_else(|p| p.into_inner()).clear();
    Ok(())
}

/// Reads Slurm's view of our allocations and the store's of the workers; updates `allocs` and
/// returns (leasable jobs, idle connected workers).
async fn observe(
    store: &Store,
    opts: &SlurmOptions,
    allocs: &mut BTreeMap<String, Alloc>,
) -> Result<(u64, usize), String> {
    let ids: Vec<String> = allocs.keys().cloned().collect();
    let states = squeue(&ids).await.map_err(|e| e.to_string())?;
    let seen_since = now_ms() - i64::try_from(opts.seen_within.as_millis()).unwrap_or(0);
    let seen = store
        .seen_workers(seen_since)
        .await
        .map_err(|e| e.to_string())?;
    let queued = store.leasable_count().await.map_err(|e| e.to_string())?;
    let now = now_ms();
    allocs.retain(|id, _| {
        let alive = states.contains_key(id);
        if !alive {
            tracing::info!(allocation = %id, "allocation ended");
        }
        alive
    });
    for (id, a) in allocs.iter_mut() {
        let name = worker_name(id);
        let worker = seen.iter().find(|w| w.name == name);
        let running = states.get(id).is_some_and(|s| is_running(s));
        let next = match (a.state, running, worker) {
            (AllocState::Cancelling, _, _) => AllocState::Cancelling,
            (_, false, _) => AllocState::Queued,
            (_, true, None) => AllocState::Starting,
            (_, true, Some(_)) => AllocState::Running,
        };
        if next == AllocState::Running && a.state != AllocState::Running {
            // Idle time counts from the moment its worker could first lease.
            a.idle_since_ms = now;
        }
        a.state = next;
        a.busy = worker.is_some_and(|w| w.busy);
        if a.busy {
            a.idle_since_ms = now;
        }
    }
    let idle_workers = seen.iter().filter(|w| !w.busy).count();
    Ok((queued, idle_workers))
}

fn is_running(state: &str) -> bool {
    matches!(state, "RUNNING" | "COMPLETING")
}

fn publish(shown: &Allocations, allocs: &BTreeMap<String, Alloc>) {
    let rows = allocs
        .iter()
        .map(|(id, a)| dashboard::Allocation {
            id: id.clone(),
            state: a.state.as_str().to_owned(),
            worker: worker_name(id),
            busy: a.busy,
            submitted_at_ms: a.submitted_at_ms,
        })
        .collect();
    *shown.lock().unwrap_or_else(|p| p.into_inner()) = rows;
}

/// Doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], each delay scaled by a random 50-100 % so
/// that coordinators failing together do not retry together.
fn backoff(failures: u32) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    base.mul_f64(rand::random_range(0.5..=1.0))
}

fn write_token(dir: &Path, file: &Path, token: Option<&str>) -> Result<(), SlurmError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e| SlurmError::TokenFile(file.to_owned(), e);
    std::fs::create_dir_all(dir).map_err(err)?;
    // Created 0600 before anything is written, so the token is never readable by others.
    let _ = std::fs::remove_file(file);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(err)?;
    f.write_all(token.unwrap_or("").as_bytes()).map_err(err)
}

/// Runs a Slurm client with a time limit; returns its standard output.
async fn slurm(
    tool: &'static str,
    args: &[String],
    stdin: Option<&str>,
    cmd: Option<Command>,
) -> Result<String, SlurmError> {
    let mut c = cmd.unwrap_or_else(|| Command::new(tool));
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().map_err(|e| SlurmError::Spawn(tool, e))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| SlurmError::Spawn(tool, e))?;
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| SlurmError::Timeout(tool, COMMAND_TIMEOUT))?
        .map_err(|e| SlurmError::Spawn(tool, e))?;
    if !out.status.success() {
        return Err(SlurmError::Failed {
            tool,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits one worker allocation; returns its job id.
async fn sbatch(opts: &SlurmOptions, token_file: &Path) -> Result<String, SlurmError> {
    let mut args = vec![
        "--parsable".to_owned(),
        // One worker per allocation: decisions count allocations as workers.
        "--array=0".to_owned(),
        format!(
            "--output={}",
            opts.dir.join("latentsweep-worker-%A_%a.log").display()
        ),
    ];
    if let Some(p) = &opts.partition {
        args.push(format!("--partition={p}"));
    }
    if let Some(t) = &opts.time {
        args.push(format!("--time={t}"));
    }
    args.extend(opts.args.iter().cloned());
    let mut c = Command::new("sbatch");
    c.current_dir(&opts.dir)
        .env(
            "LATENTSWEEP_COORDINATOR",
            opts.coordinator_url.as_deref().unwrap_or_default(),
        )
        .env("LATENTSWEEP_TOKEN_FILE", token_file)
        .env(
            "LATENTSWEEP_WORKER_BIN",
            opts.worker_bin.as_deref().unwrap_or(Path::new("worker")),
        )
        // The job reads the token from its file; it never travels in the job's environment.
        .env_remove("LATENTSWEEP_TOKEN");
    if let Some(d) = &opts.data_dir {
        c.env("LATENTSWEEP_DATA_DIR", d);
    }
    let out = slurm("sbatch", &args, Some(WORKER_SCRIPT), Some(c)).await?;
    parse_job_id(&out).ok_or(SlurmError::NoJobId("sbatch", out))
}

/// `http://ADDR`, with this host's name for an unspecified IP (compute nodes cannot dial 0.0.0.0).
fn default_url(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned());
        format!("http://{host}:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// `sbatch --parsable` prints `ID` or `ID;CLUSTER`.
fn parse_job_id(out: &str) -> Option<String> {
    let id = out.trim().split(';').next()?.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_owned())
}

/// The Slurm state of each of `ids` still in the queue (absent: ended and gone).
async fn squeue(ids: &[String]) -> Result<BTreeMap<String, String>, SlurmError> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    // All states, by array job id (%F): an unknown id would make `--jobs` fail outright.
    let out = slurm(
        "squeue",
        &[
            "--noheader".to_owned(),
            "--states=all".to_owned(),
            "--format=%F %T".to_owned(),
        ],
        None,
        None,
    )
    .await?;
    Ok(parse_squeue(&out, ids))
}

fn parse_squeue(out: &str, ids: &[String]) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.to_owned()))
        })
        .filter(|(id, state)| ids.contains(id) && !is_finished(state))
        .collect()
}

/// States after which a job runs no more (squeue --states=all keeps them for MinJobAge).
fn is_finished(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "CANCELLED"
            | "FAILED"
            | "TIMEOUT"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "OUT_OF_MEMORY"
            | "SPECIAL_EXIT"
            | "REVOKED"
    )
}

async fn scancel(ids: &[String]) -> Result<(), SlurmError> {
    slurm("scancel", ids, None, None).await.map(drop)
}

/// Waits until none of `ids` is queued or running any more, or [`DRAIN_LIMIT`] has passed.
async fn drain(ids: &[String]) {
    let t0 = tokio::time::Instant::now();
    loop {
        match squeue(ids).await {
            Ok(left) if left.is_empty() => return,
            Ok(left) if t0.elapsed() >= DRAIN_LIMIT => {
                tracing::warn!(allocations = ?left.keys().collect::<Vec<_>>(), "allocations still in Slurm after cancelling");
                return;
            }
            Err(e) if t0.elapsed() >= DRAIN_LIMIT => {
                tracing::warn!(error = %e, "cannot see whether the allocations are gone");
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_come_from_parsable_output() {
        assert_eq!(parse_job_id("42\n").as_deref(), Some("42"));
        assert_eq!(parse_job_id("42;lab\n").as_deref(), Some("42"));
        assert_eq!(parse_job_id("Submitted batch job 42"), None);
        assert_eq!(parse_job_id(""), None);
    }

    #[test]
    fn squeue_lines_give_the_states_of_ours_still_alive() {
        let ids = vec!["7".to_owned(), "8".to_owned(), "9".to_owned()];
        let out = "7 RUNNING\n8 CANCELLED\n10 PENDING\n9 PENDING\n";
        let s = parse_squeue(out, &ids);
        assert_eq!(s.len(), 2);
        assert_eq!(s["7"], "RUNNING");
        assert_eq!(s["9"], "PENDING");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        for n in 1..30 {
            let d = backoff(n);
            let base = BACKOFF_MIN
                .saturating_mul(1 << (n - 1).min(16))
                .min(BACKOFF_MAX);
            assert!(d >= base / 2 && d <= base, "{n}: {d:?} vs {base:?}");
        }
    }
}
