//! How often workers call the coordinator: a cancelled attempt that takes a while to wind down
//! (an evaluation that does not look at the cancel token) must not turn the agent's Lease loop
//! into a busy loop, the coordinator must not answer a stop notice the worker already had at
//! once, and an idle `worker` process must use almost no CPU. Real coordinator, real gRPC on
//! 127.0.0.1, the real agent (with a fake trainer where the test needs control over timing).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coordinator::grpc::CallStats;
use coordinator::sched::SchedConfig;
use proto::JobId;
use proto::metric;
use support::grpc::*;
use worker::agent::{self, AgentConfig, Trainer};
use worker::train::{CancelToken, Outcome, RunSpec, TrainError, TrainEvent};

/// Reports a step every 50 ms until cancelled, then stays busy for `linger` before returning,
/// like a long evaluation that only checks the token at its end.
struct SlowToStop {
    linger: Duration,
    started: Mutex<Option<Instant>>,
    cancel_seen: Mutex<Option<Instant>>,
    returned: Mutex<Option<Instant>>,
}

impl Trainer for SlowToStop {
    fn train(
        &self,
        _slot: usize,
        _spec: &RunSpec,
        on_event: &mut dyn FnMut(TrainEvent),
        cancel: &CancelToken,
    ) -> Result<Outcome, TrainError> {
        *self.started.lock().unwrap() = Some(Instant::now());
        let mut step = 0;
        while !cancel.is_cancelled() {
            on_event(TrainEvent::Step {
                epoch: 1,
                step,
                loss: 1.0,
                lr: 1e-3,
            });
            step += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        *self.cancel_seen.lock().unwrap() = Some(Instant::now());
        std::thread::sleep(self.linger);
        *self.returned.lock().unwrap() = Some(Instant::now());
        Ok(Outcome::Cancelled { checkpoint: None })
    }
}

async fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_a_long_evaluation_costs_one_lease_per_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(3);
    let heartbeat = SchedConfig::with_ttl(ttl).heartbeat_every();
    let stats = Arc::new(CallStats::default());
    let srv = start_on(&dir.path().join("ls.db"), None, |c| {
        c.sched = SchedConfig::with_ttl(ttl);
        c.stats = stats.clone();
    })
    .await;
    let sweep = submit(&srv.store, &tiny_sweep("cancel-pace", 1, "")).await;
    let trainer = Arc::new(SlowToStop {
        linger: Duration::from_secs(4),
        started: Mutex::default(),
        cancel_seen: Mutex::default(),
        returned: Mutex::default(),
    });
    let mut cfg = AgentConfig::cpu(srv.url.clone(), 1, dir.path().join("work"));
    cfg.name = "pace".into();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agent::run_with(cfg, trainer.clone(), async move {
        let _ = stop_rx.await;
    }));

    wait_for("training starts", Duration::from_secs(30), || {
        *trainer.started.lock().unwrap()
    })
    .await;
    // Let a few heartbeats pass with the job running normally.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = job_states(&srv.store, sweep).await[0].0;
    let (calls_before, cancelled_at) = (stats.lease_calls(), Instant::now());
    assert!(srv.store.cancel_job(JobId(job)).await.unwrap());

    let seen = wait_for(
        "the trainer sees the cancel",
        Duration::from_secs(10),
        || *trainer.cancel_seen.lock().unwrap(),
    )
    .await;
    assert!(
        seen - cancelled_at <= heartbeat,
        "the cancel reached training after {:?}; one heartbeat is {heartbeat:?}",
        seen - cancelled_at
    );
    let returned = wait_for("the trainer returns", Duration::from_secs(20), || {
        *trainer.returned.lock().unwrap()
    })
    .await;
    let elapsed = returned - cancelled_at;
    let calls = stats.lease_calls() - calls_before;
    // One long-poll per heartbeat, plus the call the cancel cut short and the one answering it.
    let bound = (elapsed.as_secs_f64() / heartbeat.as_secs_f64()).ceil() as u64 + 3;
    assert!(
        calls <= bound,
        "{calls} Lease calls in the {elapsed:?} the cancelled attempt took to wind down \
         (heartbeat {heartbeat:?}, at most {bound} expected)"
    );

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("agent exits")
        .unwrap()
        .expect("agent ok");
    assert_eq!(job_states(&srv.store, sweep).await[0].1, "cancelled");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_notice_the_worker_already_had_is_repeated_at_the_long_poll_pace() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(3)).await;
    let sweep = submit(&srv.store, &tiny_sweep("notice-pace", 1, "")).await;
    let c = client(&srv.url, None);
    let w = register(&c, "old-worker").await;
    let job = lease_one(&c, w, &[]).await;
    let job_id = job_states(&srv.store, sweep).await[0].0;
    assert!(srv.store.cancel_job(JobId(job_id)).await.unwrap());

    let wait = Duration::from_millis(900);
    let lease = |running: Vec<i64>| {
        let mut c = c.clone();
        async move {
            let t0 = Instant::now();
            let r = c
                .lease(lease_req(w, 0, running, wait.as_millis() as u32))
                .await
                .expect("lease")
                .into_inner();
            (t0.elapsed(), r.cancel_attempts)
        }
    };
    // The news goes out at once...
    let (took, stop) = lease(vec![job.attempt_id]).await;
    assert_eq!(stop, vec![job.attempt_id]);
    assert!(
        took < Duration::from_millis(500),
        "first notice took {took:?}"
    );
    // ...a worker that lists the attempt again (still winding it down) hears it again, but only
    // after the long-poll: it cannot spin.
    for _ in 0..2 {
        let (took, stop) = lease(vec![job.attempt_id]).await;
        assert_eq!(stop, vec![job.attempt_id], "the notice is repeated");
        assert!(
            took >= wait - Duration::from_millis(50),
            "a repeated notice came back after {took:?}, before the {wait:?} long-poll"
        );
    }
    // Once it stops listing the attempt, a new stop is news again.
    let (_, stop) = lease(vec![]).await;
    assert!(stop.is_empty());
    let (took, stop) = lease(vec![job.attempt_id]).await;
    assert_eq!(stop, vec![job.attempt_id]);
    assert!(took < Duration::from_millis(500), "{took:?}");
    srv.stop().await;
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_sec() -> u64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_process_uses_under_two_percent_of_a_core() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Duration::from_secs(3)).await;
    let mut child = std::process::Command::new(worker_exe())
        .args(["--coordinator", &srv.url, "--cpu", "--slots", "1"])
        .args(["--name", "idle", "--work-dir"])
        .arg(dir.path().join("work"))
        .env("RUST_LOG", "info")
        .env_remove("LATENTSWEEP_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("idle.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let log = || std::fs::read_to_string(dir.path().join("idle.log")).unwrap_or_default();
    let t0 = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workers WHERE name = 'idle'")
            .fetch_one(srv.store.reader())
            .await
            .unwrap();
        if n > 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "never registered:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past start-up, then a few long-polls with nothing to do.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ticks0, t0) = (cpu_ticks(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let used = (cpu_ticks(pid) - ticks0) as f64 / clock_ticks_per_sec() as f64;
    let share = used / t0.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        share < 0.02,
        "an idle worker used {:.1} % of a core ({used:.3} s CPU); log:\n{}",
        share * 100.0,
        log()
    );
    srv.stop().await;
}

/// Reports `steps` steps at once, then finishes.
struct Chatty {
    steps: u64,
}

impl Trainer for Chatty {
    fn train(
        &self,
        _slot: usize,
        _spec: &RunSpec,
        on_event: &mut dyn FnMut(TrainEvent),
        _cancel: &CancelToken,
    ) -> Result<Outcome, TrainError> {
        for step in 0..self.steps {
            on_event(TrainEvent::Step {
                epoch: 1,
                step,
                loss: 1.0,
                lr: 1e-3,
            });
        }
        Ok(Outcome::Finished {
            metrics: [(metric::KNN1_ACC.to_owned(), 0.5)].into(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_coordinator_refuses_fail_the_attempt_instead_of_being_resent_forever() {
    let dir = tempfile::tempdir().unwrap();
    // A metric batch (512 points) is far bigger than this: every report stream is refused with
    // RESOURCE_EXHAUSTED, which no resend can cure.
    let srv = start_on(&dir.path().join("ls.db"), None, |c| {
        c.sched = SchedConfig::with_ttl(Duration::from_secs(3));
        c.max_message_bytes = 4096;
    })
    .await;
    let sweep = submit(&srv.store, &tiny_sweep("refused", 1, "")).await;
    let job = job_states(&srv.store, sweep).await[0].0;
    let cfg = AgentConfig::cpu(srv.url.clone(), 1, dir.path().join("work"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agent::run_with(
        cfg,
        Arc::new(Chatty { steps: 300 }),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let t0 = Instant::now();
    let error = loop {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT state, error FROM attempts WHERE job_id = ?1 AND number = 1")
                .bind(job)
                .fetch_optional(srv.store.reader())
                .await
                .unwrap();
        if let Some((state, error)) = row
            && state != "running"
        {
            assert_eq!(state, "failed", "{error:?}");
            break error.unwrap_or_default();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the refused attempt is still being retried after {:?}",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        error.contains("refused") && error.contains("ResourceExhausted"),
        "{error}"
    );
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .expect("agent exits")
        .unwrap()
        .expect("agent ok");
    srv.stop().await;
}
