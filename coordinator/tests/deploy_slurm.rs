//! `deploy/slurm/worker.sbatch` against a real one-node Slurm (munged, slurmctld and slurmd
//! started by `deploy/slurm/one-node-cluster.sh` in a temporary directory): a sweep finishes
//! with workers started only by that script; a worker cancelled with `scancel` hands its job
//! back, one killed outright loses its lease, and both jobs finish elsewhere with nothing
//! failed. The GPU form gets one (fake) GPU per array task from Slurm's GRES. With
//! `--slurm-max-workers` the coordinator submits and cancels the workers itself.
//!
//! Needs root and the Debian packages slurm-wlm and munge (`.ci/test` installs them); without
//! them these tests fail.

mod support;
use support::builder;

use std::process::Command;
use std::time::{Duration, Instant};

use support::grpc::{fashion_mnist_or_panic, free_port, slow_sweep, worker_exe};
use support::slurm::*;

/// Both tests run Slurm daemons and training processes; on 2 cores, one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
        if let Some(states) = final_job_states(&db, 4).await {
            break states;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "jobs still unfinished after 900 s; worker logs:\n{}",
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

/// Squeue lines (`ID STATE`) of every job the cluster still queues or runs.
fn live_jobs(cluster: &Cluster) -> Vec<String> {
    cluster
        .queue()
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_allocates_slurm_workers_itself_and_leaves_none_behind() {
    let _serial = SERIAL.lock().await;
    fashion_mnist_or_panic();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cluster = Cluster::start(dir);
    let pids = cluster.pids();
    let alloc_dir = dir.join("allocations");
    let (mut coord, _env) = start_coordinator_with(dir, &slow_sweep("auto", 3), |c| {
        c.args(["--slurm-max-workers", "2", "--slurm-idle-timeout", "4"])
            .args(["--slurm-arg=--gres=none", "--slurm-arg=--cpus-per-task=1"])
            .args(["--slurm-time", "30"])
            .arg("--slurm-dir")
            .arg(&alloc_dir)
            .env("SLURM_CONF", &cluster.conf)
            .env("LATENTSWEEP_WORKER_BIN", worker_exe())
            // Inherited by the jobs (sbatch exports the environment): their work directories.
            .env("TMPDIR", dir);
    });
    let log = dir.join("coordinator.log");
    wait_ready(&coord, &log).await;
    let db = reader(&coord.db).await;
    let logs = || {
        format!(
            "coordinator:\n{}\nworkers:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            worker_logs_in(&alloc_dir)
        )
    };

    // Three jobs, at most two allocations: never more, and the sweep runs to the end on them.
    let (mut most, mut page_seen) = (0, false);
    let t0 = Instant::now();
    let states = loop {
        let jobs = live_jobs(&cluster);
        most = most.max(jobs.len());
        if !page_seen && jobs.iter().any(|l| l.ends_with("RUNNING")) {
            let page = builder::http_get_as(coord.http, "/workers", Some(TOKEN)).await;
            let id = jobs[0].split(['_', ' ']).next().unwrap();
            let body = String::from_utf8_lossy(&page.body);
            let scrape = builder::http_get_as(coord.http, "/metrics", Some(TOKEN)).await;
            let metrics = String::from_utf8_lossy(&scrape.body);
            page_seen = body.contains("Slurm allocations")
                && body.contains(id)
                && metrics
                    .lines()
                    .any(|l| l.starts_with("latentsweep_slurm_allocations{state=\"running\"} "));
        }
        if let Some(states) = final_job_states(&db, 3).await {
            break states;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "jobs still unfinished after 900 s; {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        states.iter().all(|(_, s)| s == "done"),
        "{states:?}; {}",
        logs()
    );
    assert!(
        (1..=2).contains(&most),
        "{most} allocations at once; {}",
        logs()
    );
    assert!(
        page_seen,
        "the workers page and /metrics never showed a running allocation"
    );
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT w.name FROM attempts a JOIN workers w ON w.id = a.worker_id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(
        !names.is_empty()
            && names
                .iter()
                .all(|n| n.starts_with("slurm-") && n.ends_with("_0")),
        "{names:?}"
    );

    // Nothing queued: the idle allocations are cancelled by the coordinator (after 4 s idle),
    // while it keeps serving.
    let t0 = Instant::now();
    while !live_jobs(&cluster).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "idle allocations left: {:?}; {}",
            live_jobs(&cluster),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(logs().contains("cancelling idle allocation"), "{}", logs());
    assert!(
        coord.child.try_wait().unwrap().is_none(),
        "the coordinator stopped"
    );

    // More work: allocations come back; the coordinator is stopped mid-job and cancels them,
    // their worker hands its job back, and nothing is left in Slurm.
    let more = dir.join("more.toml");
    std::fs::write(&more, slow_sweep("more", 2)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("submit")
        .arg(&more)
        .arg("--db")
        .arg(&coord.db)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let t0 = Instant::now();
    let (attempt, worker) = loop {
        let got: Option<(i64, String)> = sqlx::query_as(
            "SELECT a.id, w.name FROM attempts a JOIN workers w ON w.id = a.worker_id
             JOIN jobs j ON j.id = a.job_id JOIN sweeps s ON s.id = j.sweep_id
             WHERE s.name = 'more' AND a.state = 'running' AND a.last_seq >= 1",
        )
        .fetch_optional(&db)
        .await
        .unwrap();
        if let Some(got) = got {
            break got;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no new allocation got going; {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let id = worker
        .strip_prefix("slurm-")
        .and_then(|t| t.strip_suffix("_0"))
        .unwrap_or_else(|| panic!("{worker}"))
        .to_owned();
    let o = Command::new("kill")
        .args(["-TERM", &coord.child.id().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = coord.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "coordinator still running; {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success(), "{status:?}; {}", logs());
    assert!(
        logs().contains("cancelling every allocation before stopping"),
        "{}",
        logs()
    );
    assert!(
        live_jobs(&cluster).is_empty(),
        "left behind: {:?}",
        live_jobs(&cluster)
    );
    let state = cluster.job_state(&id);
    assert_eq!(state.as_deref(), Some("CANCELLED"), "{}", logs());
    assert_eq!(attempt_state(&db, attempt).await, "released", "{}", logs());
    let failed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts WHERE state = 'failed'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(failed, 0, "{}", logs());

    let o = cluster.stop();
    assert!(o.status.success(), "{}", text(&o));
    for pid in pids {
        assert!(!alive(pid), "daemon {pid} survived the stop");
    }
}
