//! `/metrics` of a live coordinator (the real binary, with a token and a local worker) that ran
//! a tiny sweep: the real `promtool check metrics` accepts the exposition, the values count what
//! happened, and a scrape without the token is refused.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coordinator::obs::names;
use support::grpc::{fashion_mnist_or_panic, free_port, worker_exe};

const TOKEN: &str = "metrics-test-token";

/// One HTTP/1.1 GET; returns (status, body).
fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {out}"));
    (status, body.to_owned())
}

/// The value of the sample `name{labels}` (labels exactly as rendered, or "" for none).
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Sum of every sample of `name` whose labels contain `filter`.
fn sum_where(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(filter))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is missing ({e}): install the Debian package `prometheus` (.ci/test does)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}\n--- exposition:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn files_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        files_bytes(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_live_coordinator_exposes_metrics_that_promtool_accepts() {
    fashion_mnist_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("tiny.toml");
    std::fs::write(
        &sweep,
        "name = \"tiny\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\n\
         dataset = \"fashion-mnist\"\nmargin = 1.0\nlr = 1e-3\nbatch_size = 32\nepochs = 1\n\
         [fixed]\ntrain_limit = 200\neval_every = 1\n",
    )
    .unwrap();
    let (grpc, http) = (free_port(), free_port());
    let http_addr = SocketAddr::from(([127, 0, 0, 1], http));
    let db = dir.path().join("ls.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("--db")
        .arg(&db)
        .arg("--sweep")
        .arg(&sweep)
        .args(["--local-workers", "1", "--token", TOKEN])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &http_addr.to_string()])
        .env("LATENTSWEEP_WORKER_BIN", worker_exe())
        .env_remove("LATENTSWEEP_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("coordinator.log")).unwrap())
        .spawn()
        .unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let started = Instant::now();
    let text = loop {
        if let Ok(s) = TcpStream::connect(http_addr) {
            drop(s);
            let (status, body) = get(http_addr, "/metrics", Some(&bearer));
            assert_eq!(status, 200, "{body}");
            if sample(&body, names::JOBS, "state=\"done\",sweep=\"tiny\"") == Some(1.0) {
                break body;
            }
        }
        if started.elapsed() > Duration::from_secs(600) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap();
            panic!("the job did not finish (or the coordinator exited):\n{log}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // One more scrape, so the HTTP histogram holds the scrapes before it.
    let (_, text2) = get(http_addr, "/metrics", Some(&bearer));
    let (no_token, _) = get(http_addr, "/metrics", None);
    let (wrong_token, _) = get(http_addr, "/metrics", Some("Bearer nope"));
    let artifacts_on_disk = files_bytes(&dir.path().join("ls.db.artifacts"));
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let _ = child.wait();

    assert_eq!(no_token, 401);
    assert_eq!(wrong_token, 401);
    promtool_check(&text);
    promtool_check(&text2);
    let t = &text2;
    assert_eq!(
        sample(t, names::JOBS, "state=\"queued\",sweep=\"tiny\""),
        Some(0.0)
    );
    let grants = sample(t, names::LEASE_GRANTS, "").unwrap();
    assert!(grants >= 1.0, "lease grants {grants}\n{t}");
    let points = sample(t, names::METRIC_POINTS, "").unwrap();
    assert!(points > 0.0, "metric points {points}");
    assert_eq!(sample(t, names::LEASE_EXPIRIES, ""), Some(0.0));
    assert!(
        sum_where(t, names::WORKERS_CONNECTED, "backend=") >= 1.0,
        "{t}"
    );
    let lease_calls = sample(
        t,
        &format!("{}_count", names::GRPC_SECONDS),
        "method=\"Lease\"",
    )
    .unwrap();
    assert!(lease_calls >= grants, "{lease_calls} Lease calls timed");
    assert!(
        sample(
            t,
            &format!("{}_count", names::HTTP_SECONDS),
            "route=\"/metrics\",status=\"200\""
        )
        .unwrap()
            >= 1.0,
        "{t}"
    );
    assert!(
        sample(
            t,
            &format!("{}_count", names::DB_WRITE_SECONDS),
            "op=\"group_commit\""
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            t,
            &format!("{}_count", names::DB_WRITE_SECONDS),
            "op=\"metric_batch\""
        )
        .unwrap()
            >= 1.0
    );
    // The done job kept its final checkpoint (the default), and the gauge counts its bytes.
    let bytes = sample(t, names::ARTIFACT_BYTES, "").unwrap();
    assert!(bytes > 0.0, "{t}");
    assert_eq!(bytes as u64, artifacts_on_disk);
}
