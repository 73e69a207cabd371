//! `--log-format json` on both binaries: a coordinator and a worker that registers with it,
//! run as processes; every line either writes to standard error is one JSON object with a
//! `level` and a `message`.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::grpc::{free_port, worker_exe};

fn term_and_wait(child: &mut Child) {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("did not stop on SIGTERM within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every line of `log` parses as a JSON object with string `level` and `message`; returns the
/// messages.
fn json_messages(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(!text.trim().is_empty(), "{} is empty", log.display());
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n--- whole log:\n{text}"));
            let level = v["level"].as_str();
            assert!(
                matches!(level, Some("TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")),
                "level: {line}"
            );
            v["message"]
                .as_str()
                .unwrap_or_else(|| panic!("no message: {line}"))
                .to_owned()
        })
        .collect()
}

#[test]
fn both_binaries_write_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let grpc_addr = SocketAddr::from(([127, 0, 0, 1], grpc));
    let coord_log = dir.path().join("coordinator.log");
    let worker_log = dir.path().join("worker.log");
    let mut coord = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("--db")
        .arg(dir.path().join("ls.db"))
        .args(["--log-format", "json", "--http-addr", "127.0.0.1:0"])
        .args(["--grpc-addr", &grpc_addr.to_string()])
        .env_remove("LATENTSWEEP_TOKEN")
        .env_remove("LATENTSWEEP_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&coord_log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(grpc_addr).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "gRPC not up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut worker = Command::new(worker_exe())
        .args(["--log-format", "json", "--cpu", "--name", "json-worker"])
        .args(["--coordinator", &format!("http://{grpc_addr}")])
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .env_remove("LATENTSWEEP_TOKEN")
        .env_remove("LATENTSWEEP_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&worker_log).unwrap())
        .spawn()
        .unwrap();
    // Until the coordinator has logged the registration.
    let started = Instant::now();
    while !std::fs::read_to_string(&coord_log)
        .unwrap()
        .contains("worker registered")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the worker did not register: {}",
            std::fs::read_to_string(&worker_log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    term_and_wait(&mut worker);
    term_and_wait(&mut coord);

    let coord_messages = json_messages(&coord_log);
    assert!(
        coord_messages.iter().any(|m| m == "worker registered"),
        "{coord_messages:?}"
    );
    assert!(
        coord_messages.iter().any(|m| m == "shutting down"),
        "{coord_messages:?}"
    );
    let worker_messages = json_messages(&worker_log);
    assert!(worker_messages.len() >= 2, "{worker_messages:?}");
    // The fields of an event are top-level keys beside the message.
    let line = std::fs::read_to_string(&coord_log)
        .unwrap()
        .lines()
        .find(|l| l.contains("\"worker registered\""))
        .unwrap()
        .to_owned();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["name"], "json-worker", "{line}");
}

#[test]
fn an_unknown_log_format_is_refused_with_the_choices() {
    let out = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(["--log-format", "xml", "status"])
        .env_remove("LATENTSWEEP_LOG_FORMAT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("xml") && err.contains("json") && err.contains("text"),
        "{err}"
    );
}
