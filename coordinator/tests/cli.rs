//! The `coordinator` binary's submit and status commands, run as a user would.

use std::path::Path;
use std::process::Command;

fn coordinator(db: &Path, args: &[&str]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .current_dir(&root)
        .arg("--db")
        .arg(db)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "exactly one JSON object: {stdout}"
    );
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn submit_twice_then_extend() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ls.db");
    let first = coordinator(&db, &["submit", "sweeps/mnist.toml", "--json"]);
    assert_eq!(first["sweep"], "mnist-classic");
    let created = first["created"].as_u64().unwrap();
    assert_eq!(created, 48);
    assert_eq!(first["existing"], 0);
    let second = coordinator(&db, &["submit", "sweeps/mnist.toml", "--json"]);
    assert_eq!(
        second,
        serde_json::json!({"sweep": "mnist-classic", "created": 0, "existing": created})
    );

    // One more margin: 2 margin losses x 2 lrs x 3 seeds new cells, nothing else.
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps/mnist.toml"))
            .unwrap();
    let wider = dir.path().join("wider.toml");
    std::fs::write(
        &wider,
        text.replace("margin = [0.5, 1.0, 2.0]", "margin = [0.5, 1.0, 2.0, 4.0]"),
    )
    .unwrap();
    let third = coordinator(&db, &["submit", wider.to_str().unwrap(), "--json"]);
    assert_eq!(
        third,
        serde_json::json!({"sweep": "mnist-classic", "created": 12, "existing": created})
    );

    let status = coordinator(&db, &["status", "--json"]);
    assert_eq!(
        status,
        serde_json::json!({"sweeps": [{"name": "mnist-classic", "state": "active", "priority": 0,
            "jobs": {"queued": 60, "running": 0, "done": 0, "failed": 0, "cancelled": 0}}]})
    );
}

#[test]
fn malformed_sweep_names_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\ndataset = \"mnist\"\nmargin = 1.0\nlr = -1.0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("--db")
        .arg(dir.path().join("ls.db"))
        .args(["submit", bad.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:7"), "{err}");
    assert!(err.contains("`grid.lr`"), "{err}");
    assert!(out.stdout.is_empty(), "no JSON on failure");
}
