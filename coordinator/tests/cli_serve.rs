//! The `coordinator` binary's serving mode run as a user or a batch script would: refusing an
//! exposed address without a token, and `--exit-when-done` with its summary and exit code.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::grpc::free_port;

fn coordinator(dir: &Path, args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .current_dir(dir)
        .arg("--db")
        .arg(dir.join("ls.db"))
        .args(args)
        .env_remove("LATENTSWEEP_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the process to exit, killing it after `limit`; returns its output.
fn wait(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    // Drain the pipes meanwhile, so a chatty process cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).unwrap();
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        err.read_to_end(&mut v).unwrap();
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            let s = child.wait().unwrap();
            let stderr = err_t.join().unwrap();
            panic!(
                "still running after {limit:?} ({s}); stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

fn refused_before_listening(grpc: &str, http: &str, flag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (g, h) = (free_port(), free_port());
    let args = vec![
        "--grpc-addr".to_owned(),
        format!("{grpc}:{g}"),
        "--http-addr".to_owned(),
        format!("{http}:{h}"),
    ];
    let mut child = coordinator(dir.path(), &args);
    let started = Instant::now();
    let mut listened = Vec::new();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        for port in [g, h] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok()
                && !listened.contains(&port)
            {
                listened.push(port);
            }
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("still running after 20 s; ports that answered: {listened:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "exit status {status}");
    assert!(
        stderr.contains("without a token") && stderr.contains(flag),
        "{stderr}"
    );
    assert!(
        stderr.contains("--token"),
        "the message says what to do: {stderr}"
    );
    assert!(listened.is_empty(), "ports {listened:?} answered");
    assert!(
        !dir.path().join("ls.db").exists(),
        "refused before opening the database"
    );
}

#[test]
fn open_grpc_address_without_token_is_refused_at_start() {
    refused_before_listening("0.0.0.0", "127.0.0.1", "--grpc-addr");
}

#[test]
fn open_http_address_without_token_is_refused_at_start() {
    refused_before_listening("127.0.0.1", "0.0.0.0", "--http-addr");
}

fn serve_args(sweep: &Path) -> Vec<String> {
    [
        "--sweep",
        sweep.to_str().unwrap(),
        "--local-workers",
        "2",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--exit-when-done",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Lines of the summary table: from the header (the line with both metric headings) to the
/// first blank line.
fn table_rows(stdout: &str) -> Vec<&str> {
    let mut lines = stdout.lines();
    lines
        .by_ref()
        .find(|l| l.contains("kNN@5") && l.contains("MAP@R"))
        .unwrap_or_else(|| panic!("no summary table: {stdout}"));
    lines.take_while(|l| !l.trim().is_empty()).collect()
}

#[test]
fn exit_when_done_summarises_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("tiny.toml");
    std::fs::write(
        &sweep,
        r#"name = "tiny"
[grid]
network = "embedding-net"
loss = ["ce", "contrastive"]
dataset = "fashion-mnist"
margin = 1.0
lr = 1e-3
embedding_dim = 2
batch_size = 32
epochs = 1
[fixed]
train_limit = 200
eval_every = 1
"#,
    )
    .unwrap();
    let out = wait(
        coordinator(dir.path(), &serve_args(&sweep)),
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    assert!(
        !stdout.contains('\x1b') && !stderr.contains('\x1b'),
        "colour codes in piped output:\n{stderr}"
    );
    let rows = table_rows(&stdout);
    assert_eq!(rows.len(), 2, "one row per run: {stdout}");
    for (row, loss) in rows.iter().zip(["ce", "contrastive"]) {
        // run, the parameters that vary (loss, margin), state, kNN@5, MAP@R.
        let cells: Vec<&str> = row.split_whitespace().collect();
        let n = cells.len();
        assert_eq!(cells[1], loss, "{row}");
        assert_eq!(cells[n - 3], "done", "{row}");
        for metric in &cells[n - 2..] {
            let v: f64 = metric.parse().unwrap_or_else(|_| panic!("{row}"));
            assert!((0.0..=1.0).contains(&v), "{row}");
        }
    }
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    assert!(
        last.starts_with("dashboard: http://127.0.0.1:") && !last.ends_with(":0/"),
        "the dashboard's address comes last: {stdout}"
    );
    // The log tells what happened, without per-checkpoint noise.
    for wrong in [
        "cancelled the attempt",
        "checkpoint stored",
        "checkpoint noted",
    ] {
        assert!(!stderr.contains(wrong), "`{wrong}` in the log:\n{stderr}");
    }
    assert!(stderr.contains("attempt ended"), "{stderr}");
    assert!(
        stderr.contains("sweep tiny: 2/2 done"),
        "a plain progress line: {stderr}"
    );
}

#[test]
fn exit_when_done_exits_nonzero_when_a_job_fails() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("broken.toml");
    std::fs::write(
        &sweep,
        r#"name = "broken"
max_attempts = 1
[grid]
network = "embedding-net"
loss = "ce"
dataset = "folder:no-such-folder"
margin = 1.0
lr = 1e-3
epochs = 1
"#,
    )
    .unwrap();
    let out = wait(
        coordinator(dir.path(), &serve_args(&sweep)),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed job: exit 1\n{stdout}\n{stderr}"
    );
    let rows = table_rows(&stdout);
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(rows[0].contains("failed"), "{stdout}");
    assert!(
        stdout.contains("no-such-folder"),
        "the error is shown: {stdout}"
    );
}

/// Minimal HTTP/1.1 GET of the login page (open to all) over a fresh connection; returns the
/// whole response.
fn http_get(addr: SocketAddr) -> String {
    use std::io::Write;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn idle_timeout_and_connection_cap_flags_apply_to_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let args = [
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        &addr.to_string(),
        "--idle-timeout",
        "1",
        "--max-connections",
        "8",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut child = coordinator(dir.path(), &args);
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "dashboard not up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut idle: Vec<TcpStream> = (0..24).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let page = http_get(addr);
    // Closed: end of stream or a reset; still open: the read timed out.
    let closed = idle.iter_mut().all(|s| {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(closed, "idle connections were closed");
}
