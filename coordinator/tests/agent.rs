//! The worker's agent on its paths through a job: lease → train → report → complete, a cancel
//! from the coordinator, a shutdown that hands the job back with its checkpoint, a resume from
//! it (twice, the second time before training anything new) and a training error. Real
//! coordinator, real gRPC on 127.0.0.1, the real agent; training is a fake `Trainer` that is
//! quick and deterministic, so the tests check the agent's decisions, not Burn.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::metric;
use proto::{JobId, SweepId};
use support::grpc::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use worker::agent::{self, AgentConfig, AgentError, Trainer};
use worker::train::{CancelToken, Outcome, RunSpec, SavedCheckpoint, TrainError, TrainEvent};

/// Step events per epoch of the fake.
const STEPS: u64 = 4;

/// Trains `params.epochs` epochs of [`STEPS`] steps in no time, reporting what the real engine
/// reports in the same order, and writes a checkpoint file per epoch whose content (not name)
/// says its epoch.
#[derive(Default)]
struct Fake {
    /// The first run waits before this epoch until it is cancelled.
    hold_before: Mutex<Option<u32>>,
    /// Set while a run is waiting.
    holding: AtomicBool,
    /// The epoch each run resumed from (`None`: from scratch), in call order.
    resumed_from: Mutex<Vec<Option<u32>>>,
    /// Every run fails with this (a non-retryable error).
    diverge: bool,
}

impl Fake {
    fn holding_before(epoch: u32) -> Arc<Self> {
        Arc::new(Fake {
            hold_before: Mutex::new(Some(epoch)),
            ..Fake::default()
        })
    }

    fn resumed_from(&self) -> Vec<Option<u32>> {
        self.resumed_from.lock().unwrap().clone()
    }
}

/// The fake's evaluation at `epoch`: every evaluation key, a function of seed and epoch only.
fn fake_eval(seed: u64, epoch: u32) -> BTreeMap<String, f64> {
    metric::EVAL
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let v = 0.3 + 0.1 * f64::from(epoch) + 0.01 * seed as f64 + 0.001 * i as f64;
            ((*k).to_owned(), v)
        })
        .collect()
}

fn fake_finals(seed: u64, epochs: u32) -> BTreeMap<String, f64> {
    let mut m = fake_eval(seed, epochs);
    m.insert(metric::SAMPLES_PER_SEC.to_owned(), 100.0);
    m.insert(metric::EPOCHS.to_owned(), f64::from(epochs));
    m
}

fn read_fake_checkpoint(path: &Path) -> Result<u32, TrainError> {
    let bad = |reason: String| TrainError::Checkpoint {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    text.strip_prefix("fake checkpoint, epoch ")
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| bad(format!("not a fake checkpoint: {text:?}")))
}

impl Trainer for Fake {
    fn train(
        &self,
        _slot: usize,
        spec: &RunSpec,
        on_event: &mut dyn FnMut(TrainEvent),
        cancel: &CancelToken,
    ) -> Result<Outcome, TrainError> {
        let p = &spec.params;
        if self.diverge {
            return Err(TrainError::Diverged {
                step: 3,
                loss: f64::NAN,
            });
        }
        let mut last = match &spec.resume_from {
            Some(path) => Some(SavedCheckpoint {
                epoch: read_fake_checkpoint(path)?,
                path: path.clone(),
            }),
            None => None,
        };
        let start = last.as_ref().map_or(1, |c| c.epoch + 1);
        self.resumed_from
            .lock()
            .unwrap()
            .push(last.as_ref().map(|c| c.epoch));
        let hold = self.hold_before.lock().unwrap().take();
        let mut step = u64::from(start - 1) * STEPS;
        for epoch in start..=p.epochs {
            if hold == Some(epoch) {
                self.holding.store(true, Ordering::SeqCst);
                while !cancel.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                self.holding.store(false, Ordering::SeqCst);
            }
            if cancel.is_cancelled() {
                return Ok(Outcome::Cancelled { checkpoint: last });
            }
            for _ in 0..STEPS {
                step += 1;
                on_event(TrainEvent::Step {
                    epoch,
                    step,
                    loss: 1.0 / step as f64,
                    lr: p.lr,
                });
            }
            on_event(TrainEvent::Epoch {
                epoch,
                step,
                loss: 1.0 / f64::from(epoch),
                lr: p.lr,
                samples_per_sec: 100.0,
                epoch_secs: 0.01,
                health: BTreeMap::from([
                    (metric::MEAN_EMBEDDING_NORM.to_owned(), 1.0),
                    (metric::ACTIVE_FRACTION.to_owned(), 0.5),
                ]),
            });
            on_event(TrainEvent::Eval {
                epoch,
                step,
                metrics: fake_eval(p.seed, epoch),
            });
            let path = spec.work_dir.join(format!("fake-{epoch}.ckpt"));
            std::fs::write(&path, format!("fake checkpoint, epoch {epoch}\n")).map_err(
                |source| TrainError::Io {
                    path: path.clone(),
                    source,
                },
            )?;
            on_event(TrainEvent::Checkpoint {
                epoch,
                path: path.clone(),
            });
            last = Some(SavedCheckpoint { epoch, path });
        }
        Ok(Outcome::Finished {
            metrics: fake_finals(p.seed, p.epochs),
        })
    }
}

fn sweep_toml(name: &str, seeds: usize, epochs: u32) -> String {
    let seeds: Vec<String> = (0..seeds).map(|s| s.to_string()).collect();
    format!(
        "name = \"{name}\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"contrastive\"\n\
         dataset = \"fashion-mnist\"\nmargin = 1.0\nlr = 1e-3\nseed = [{}]\nepochs = {epochs}\n",
        seeds.join(", ")
    )
}

/// A running agent and the means to shut it down.
struct Agent {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), AgentError>>,
}

impl Agent {
    fn start(url: &str, slots: usize, work: &Path, trainer: Arc<Fake>) -> Agent {
        let mut cfg = AgentConfig::cpu(url.to_owned(), slots, work.to_owned());
        cfg.max_backoff = Duration::from_millis(300);
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(agent::run_with(cfg, trainer, async move {
            let _ = rx.await;
        }));
        Agent { stop, task }
    }

    /// Shuts the agent down and waits until it has handed its jobs back and exited.
    async fn shut_down(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the agent exits")
            .unwrap()
            .expect("the agent ends without error");
    }
}

async fn wait_until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !ok().await {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scalar(srv: &Server, sql: &str, bind: i64) -> i64 {
    sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(srv.store.reader())
        .await
        .unwrap()
}

/// `(attempt state, checkpoint epochs uploaded by it)` of each attempt of `job`, in order.
async fn attempts(srv: &Server, job: i64) -> Vec<(String, Vec<i64>)> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, state FROM attempts WHERE job_id = ?1 ORDER BY number")
            .bind(job)
            .fetch_all(srv.store.reader())
            .await
            .unwrap();
    let mut out = Vec::new();
    for (id, state) in rows {
        let epochs: Vec<i64> =
            sqlx::query_scalar("SELECT epoch FROM artifacts WHERE attempt_id = ?1 ORDER BY epoch")
                .bind(id)
                .fetch_all(srv.store.reader())
                .await
                .unwrap();
        out.push((state, epochs));
    }
    out
}

/// Epochs at which `name` was stored for `job`, in step order.
async fn metric_epochs(srv: &Server, job: i64, name: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT epoch FROM metrics WHERE job_id = ?1 AND name = ?2 ORDER BY step")
        .bind(job)
        .bind(name)
        .fetch_all(srv.store.reader())
        .await
        .unwrap()
}

async fn job_ids(srv: &Server, sweep: SweepId) -> Vec<i64> {
    job_states(&srv.store, sweep)
        .await
        .into_iter()
        .map(|j| j.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_leased_trained_reported_and_completed() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(3)).await;
    let sweep = submit(&srv.store, &sweep_toml("agent-complete", 3, 2)).await;
    let work = dir.path().join("work");
    let fake = Arc::new(Fake::default());
    let agent = Agent::start(&srv.url, 2, &work, fake.clone());

    let states = wait_all_final(&srv.store, sweep, Duration::from_secs(30)).await;
    assert!(states.iter().all(|s| s.1 == "done"), "{states:?}");
    // Each job trained from scratch. Under load a fourth run can happen: an attempt the
    // coordinator took back (released) after the agent had started it; its reports are refused,
    // which the exactly-once checks below would catch if they were not.
    let runs = fake.resumed_from();
    assert!(
        runs.len() >= 3 && runs.iter().all(Option::is_none),
        "{runs:?}"
    );
    for (seed, job) in job_ids(&srv, sweep).await.into_iter().enumerate() {
        let text: String = sqlx::query_scalar("SELECT metrics_json FROM results WHERE job_id = ?1")
            .bind(job)
            .fetch_one(srv.store.reader())
            .await
            .unwrap();
        let stored: BTreeMap<String, f64> = serde_json::from_str(&text).unwrap();
        assert_eq!(stored, fake_finals(seed as u64, 2), "job {job}");
        // Per step: loss and lr; per epoch: its curves, health and every evaluation key.
        let per_step = vec![1, 1, 1, 1, 2, 2, 2, 2];
        assert_eq!(metric_epochs(&srv, job, metric::LOSS).await, per_step);
        assert_eq!(metric_epochs(&srv, job, metric::LR).await, per_step);
        for name in [
            metric::EPOCH_LOSS,
            metric::SAMPLES_PER_SEC,
            metric::EPOCH_SECS,
        ]
        .into_iter()
        .chain(metric::HEALTH)
        .chain(metric::EVAL)
        {
            assert_eq!(metric_epochs(&srv, job, name).await, vec![1, 2], "{name}");
        }
        // A lease whose reply the agent abandoned (a slot freed up during the long-poll) is
        // released by the coordinator before anything ran: only the last attempt trained.
        let mut tries = attempts(&srv, job).await;
        let last = tries.pop().unwrap();
        // Retention keeps a job's newest checkpoint only (README, Operations).
        assert_eq!(
            last,
            ("done".to_owned(), vec![2]),
            "the last epoch's checkpoint, the only one kept"
        );
        assert!(
            tries.iter().all(|t| t.0 == "released" && t.1.is_empty()),
            "{tries:?}"
        );
    }
    assert_eq!(assert_metrics_exactly_once(&srv.store).await, 3);
    agent.shut_down().await;
    let left: Vec<PathBuf> = walk(&work);
    assert!(
        left.is_empty(),
        "finished attempts leave no files: {left:?}"
    );
    srv.stop().await;
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_at_the_coordinator_stops_training_and_frees_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(3)).await;
    let first = submit(&srv.store, &sweep_toml("agent-cancel", 1, 3)).await;
    let fake = Fake::holding_before(2);
    let agent = Agent::start(&srv.url, 1, &dir.path().join("work"), fake.clone());
    wait_until("training waits before epoch 2", async || {
        fake.holding.load(Ordering::SeqCst)
    })
    .await;
    let job = job_ids(&srv, first).await[0];
    wait_until("epoch 1 is reported", async || {
        metric_epochs(&srv, job, metric::EPOCH_LOSS).await == [1]
    })
    .await;
    assert!(srv.store.cancel_job(JobId(job)).await.unwrap());
    wait_until("training stops", async || {
        !fake.holding.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(job_states(&srv.store, first).await[0].1, "cancelled");
    assert_eq!(metric_epochs(&srv, job, metric::EPOCH_LOSS).await, vec![1]);

    // The slot is free again: the next job is leased and finished by the same agent.
    let second = submit(&srv.store, &sweep_toml("agent-after-cancel", 1, 1)).await;
    let states = wait_all_final(&srv.store, second, Duration::from_secs(30)).await;
    assert_eq!(states[0].1, "done");
    assert_eq!(job_states(&srv.store, first).await[0].1, "cancelled");
    agent.shut_down().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_hands_the_job_back_with_its_checkpoint_and_the_next_worker_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(3)).await;
    let sweep = submit(&srv.store, &sweep_toml("agent-resume", 1, 3)).await;
    let job = job_ids(&srv, sweep).await[0];

    // A trains epoch 1, then is shut down while waiting before epoch 2.
    let a = Fake::holding_before(2);
    let agent = Agent::start(&srv.url, 1, &dir.path().join("work-a"), a.clone());
    wait_until("A waits before epoch 2", async || {
        a.holding.load(Ordering::SeqCst)
    })
    .await;
    agent.shut_down().await;
    assert_eq!(job_states(&srv.store, sweep).await[0].1, "queued");

    // B resumes from epoch 1 and is shut down before training anything: it hands back the
    // checkpoint it resumed from, uploaded again under its epoch.
    let b = Fake::holding_before(2);
    let agent = Agent::start(&srv.url, 1, &dir.path().join("work-b"), b.clone());
    wait_until("B waits before epoch 2", async || {
        b.holding.load(Ordering::SeqCst)
    })
    .await;
    agent.shut_down().await;
    assert_eq!(b.resumed_from(), vec![Some(1)]);

    // C resumes from epoch 1 and finishes.
    let c = Arc::new(Fake::default());
    let agent = Agent::start(&srv.url, 1, &dir.path().join("work-c"), c.clone());
    let states = wait_all_final(&srv.store, sweep, Duration::from_secs(30)).await;
    assert_eq!(states[0].1, "done");
    assert_eq!(c.resumed_from(), vec![Some(1)]);
    agent.shut_down().await;

    let tries = attempts(&srv, job).await;
    let states: Vec<&str> = tries.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(states, ["released", "released", "done"], "{tries:?}");
    // Retention keeps the job's newest checkpoint only: A's epoch 1 was superseded by the
    // copy B handed back (the resumes above show both existed), and that by C's epochs.
    assert!(tries[0].1.is_empty() && tries[1].1.is_empty(), "{tries:?}");
    assert_eq!(tries[2].1, [3]);
    // Every epoch's evaluation is stored once, by the attempt that trained it.
    for name in metric::EVAL {
        assert_eq!(
            metric_epochs(&srv, job, name).await,
            vec![1, 2, 3],
            "{name}"
        );
    }
    assert_eq!(
        scalar(&srv, "SELECT COUNT(*) FROM results WHERE job_id = ?1", job).await,
        1
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_run_fails_its_job_without_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(3)).await;
    let sweep = submit(&srv.store, &sweep_toml("agent-diverge", 1, 2)).await;
    let fake = Arc::new(Fake {
        diverge: true,
        ..Fake::default()
    });
    let agent = Agent::start(&srv.url, 1, &dir.path().join("work"), fake.clone());
    let states = wait_all_final(&srv.store, sweep, Duration::from_secs(30)).await;
    assert_eq!(states[0].1, "failed");
    let job = states[0].0;
    let error: String = sqlx::query_scalar("SELECT error FROM attempts WHERE job_id = ?1")
        .bind(job)
        .fetch_one(srv.store.reader())
        .await
        .unwrap();
    assert!(error.contains("diverged at step 3"), "{error}");
    assert_eq!(
        scalar(&srv, "SELECT COUNT(*) FROM attempts WHERE job_id = ?1", job).await,
        1,
        "divergence is not retried"
    );
    agent.shut_down().await;
    srv.stop().await;
}
