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

/// Runs the binary in `cwd`; returns (success, stdout, stderr).
fn run_in(cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .current_dir(cwd)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn eight_processes_opening_one_new_database_all_succeed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Several rounds: the race lasts milliseconds, and one round may miss it by luck.
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(format!("new-{round}.db"));
        let children: Vec<_> = (0..8)
            .map(|i| {
                let mut c = Command::new(env!("CARGO_BIN_EXE_coordinator"));
                c.current_dir(&root)
                    .arg("--db")
                    .arg(&db)
                    .env("RUST_LOG", "warn");
                // Mostly writers, plus one reader racing them (it may find no database yet).
                if i == 7 {
                    c.args(["status", "--json"]);
                } else {
                    c.args(["submit", "sweeps/quickstart.toml", "--json"]);
                }
                c.stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut created = 0;
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if i == 7 && !out.status.success() {
                assert!(
                    err.contains("no database at"),
                    "round {round}, status: {err}"
                );
                continue;
            }
            assert!(out.status.success(), "round {round}, process {i}: {err}");
            if i < 7 {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                created += v["created"].as_u64().unwrap();
                assert_eq!(
                    v["created"].as_u64().unwrap() + v["existing"].as_u64().unwrap(),
                    4
                );
            }
        }
        assert_eq!(
            created, 4,
            "round {round}: each of the 4 cells created exactly once"
        );
        let status = coordinator(&db, &["status", "--json"]);
        assert_eq!(status["sweeps"][0]["jobs"]["queued"], 4, "{status}");
    }
}

#[test]
fn read_only_commands_refuse_a_missing_database_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("typo.db");
    let db_arg = db.to_str().unwrap();
    for args in [
        vec!["--db", db_arg, "status"],
        vec!["--db", db_arg, "status", "--json"],
        vec!["--db", db_arg, "export", "--sweep", "quickstart"],
    ] {
        let (ok, stdout, stderr) = run_in(dir.path(), &args);
        assert!(!ok, "{args:?} succeeded: {stdout}");
        assert!(
            stderr.contains(&format!("no database at {}", db.display())),
            "{args:?}: {stderr}"
        );
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "read-only commands created {left:?}");
}

#[test]
fn bare_and_dotted_sweep_paths_name_one_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::create_dir_all(cwd.join("faces/s1")).unwrap();
    std::fs::write(
        cwd.join("x.toml"),
        "name = \"faces\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\n\
         dataset = \"folder:faces\"\nmargin = 1.0\nlr = 1e-3\n",
    )
    .unwrap();
    let db = cwd.join("ls.db");
    let db_arg = db.to_str().unwrap();
    let submit = |file: &str| -> serde_json::Value {
        let (ok, stdout, stderr) = run_in(cwd, &["--db", db_arg, "submit", file, "--json"]);
        assert!(ok, "submit {file}: {stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    assert_eq!(submit("x.toml")["created"], 1);
    let again = submit("./x.toml");
    assert_eq!(
        (again["created"].as_u64(), again["existing"].as_u64()),
        (Some(0), Some(1))
    );
    let abs = cwd.join("x.toml");
    assert_eq!(submit(abs.to_str().unwrap())["created"], 0);

    // The stored folder is absolute, so a worker in another directory finds it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let params: Vec<String> = rt.block_on(async {
        let store = coordinator::store::Store::open_read_only(&db)
            .await
            .unwrap();
        sqlx::query_scalar("SELECT params_json FROM jobs")
            .fetch_all(store.reader())
            .await
            .unwrap()
    });
    assert_eq!(params.len(), 1);
    let p: proto::JobParams = serde_json::from_str(&params[0]).unwrap();
    let want = std::fs::canonicalize(cwd.join("faces")).unwrap();
    assert_eq!(p.dataset, proto::Dataset::Folder(want));
}
