//! A second host for real: a network namespace joined to this one by a veth pair stands in for
//! another machine. The `coordinator` binary listens on the host end's address with TLS and a
//! token file; `worker` processes started inside the namespace reach it only over the veth
//! link. A wrong token is refused (Unauthenticated), a wrong CA is a clear TLS error, and a
//! worker with both right finishes the sweep. Needs root (CI runs as root) and `ip` (iproute2).

mod support;
use support::pki;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pki::Pki;
use support::grpc::{fashion_mnist_or_panic, tiny_sweep, worker_exe};

const TOKEN: &str = "second-host-token";

/// Runs `ip ARGS`, failing the test with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running `ip` (iproute2; .ci/test installs it): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a veth pair to this one; removed when dropped, even after a
/// failed assertion.
struct Netns {
    name: String,
    host_if: String,
    host_ip: Ipv4Addr,
}

impl Netns {
    fn create() -> Netns {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test creates a network namespace and must run as root (CI does)"
        );
        let id = std::process::id();
        // Interface names are at most 15 bytes; the /24 is picked per process to let runs
        // overlap.
        let ns = Netns {
            name: format!("ls-sec-{id}"),
            host_if: format!("lsh{}", id % 100_000),
            host_ip: Ipv4Addr::new(10, 213, (id % 250) as u8 + 1, 1),
        };
        let peer_if = format!("lsn{}", id % 100_000);
        let peer_ip = Ipv4Addr::new(10, 213, (id % 250) as u8 + 1, 2);
        ip(&["netns", "add", &ns.name]);
        // From here on, Drop cleans up whatever was made.
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{peer_ip}/24"), "dev", &peer_if]);
        inside(&["link", "set", &peer_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// A `worker` command run inside the namespace.
    fn worker(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(worker_exe())
            .args(args)
            .env_remove("LATENTSWEEP_TOKEN")
            .env_remove("LATENTSWEEP_TOKEN_FILE")
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the host end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a command that must end within `limit`.
fn run(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("still running after {limit:?}");
        }
    }
}

fn free_port_on(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(ip: Ipv4Addr, port: u16, coordinator: &mut std::process::Child, log: &Path) {
    let started = Instant::now();
    while std::net::TcpStream::connect((ip, port)).is_err() {
        if let Some(s) = coordinator.try_wait().unwrap() {
            panic!(
                "coordinator exited ({s}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "coordinator not listening"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_worker_in_another_network_namespace_joins_over_tls_and_finishes_a_sweep() {
    fashion_mnist_or_panic();
    let netns = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    let host = netns.host_ip.to_string();
    let pki = Pki::new(dir.path(), &[&host]);
    let token_file = dir.path().join("token-file");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let sweep = dir.path().join("second-host.toml");
    std::fs::write(&sweep, tiny_sweep("second-host", 1, "")).unwrap();
    let (grpc_port, http_port) = (free_port_on(netns.host_ip), free_port_on(netns.host_ip));
    let log = dir.path().join("coordinator.log");
    let mut coordinator = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("--sweep")
        .arg(&sweep)
        .arg("--db")
        .arg(dir.path().join("ls.db"))
        .args(["--grpc-addr", &format!("{host}:{grpc_port}")])
        .args(["--http-addr", &format!("{host}:{http_port}")])
        .arg("--tls-cert")
        .arg(&pki.server_cert)
        .arg("--tls-key")
        .arg(&pki.server_key)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--exit-when-done")
        .env_remove("LATENTSWEEP_TOKEN")
        .env_remove("LATENTSWEEP_TOKEN_FILE")
        .env("RUST_LOG", "info,sqlx=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(netns.host_ip, grpc_port, &mut coordinator, &log);
    let url = format!("https://{host}:{grpc_port}");
    let work = dir.path().join("work");
    let base = |extra: &[&str]| {
        let mut args = vec![
            "--coordinator",
            url.as_str(),
            "--cpu",
            "--work-dir",
            work.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let as_strs = |v: &[String]| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
    let ca = pki.ca.to_str().unwrap();

    // A wrong token: refused by the coordinator.
    let wrong_token = dir.path().join("wrong-token");
    std::fs::write(&wrong_token, "not-the-token").unwrap();
    let args = base(&[
        "--ca-cert",
        ca,
        "--token-file",
        wrong_token.to_str().unwrap(),
    ]);
    let out = run(
        netns.worker(&args.iter().map(String::as_str).collect::<Vec<_>>()),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}: {stderr}", as_strs(&args));
    assert!(stderr.contains("Unauthenticated"), "{stderr}");

    // A CA that did not sign the coordinator's certificate: a TLS error saying so.
    let args = base(&[
        "--ca-cert",
        pki.other_ca.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    let out = run(
        netns.worker(&args.iter().map(String::as_str).collect::<Vec<_>>()),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("certificate is not trusted") && stderr.contains("--ca-cert"),
        "{stderr}"
    );

    // The right CA and token: the worker joins from the namespace and the sweep finishes
    // (the coordinator exits 0 once every job is done).
    let args = base(&[
        "--ca-cert",
        ca,
        "--token-file",
        token_file.to_str().unwrap(),
        "--name",
        "netns-worker",
    ]);
    let mut worker = netns
        .worker(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("worker.log")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = coordinator.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(600) {
            let _ = coordinator.kill();
            break coordinator.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = worker.kill();
    let _ = worker.wait();
    let coord_log = std::fs::read_to_string(&log).unwrap_or_default();
    let worker_log = std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
    assert!(
        status.success(),
        "coordinator {status}:\n{coord_log}\nworker:\n{worker_log}"
    );
    // The finished job's attempt is the namespace worker's: it came over the veth link.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ran_by: Vec<(String, String)> = rt.block_on(async {
        let store = coordinator::store::Store::open(&dir.path().join("ls.db"))
            .await
            .unwrap();
        sqlx::query_as(
            "SELECT w.name, j.state FROM attempts a JOIN workers w ON w.id = a.worker_id
             JOIN jobs j ON j.id = a.job_id",
        )
        .fetch_all(store.reader())
        .await
        .unwrap()
    });
    assert_eq!(
        ran_by,
        [("netns-worker".to_owned(), "done".to_owned())],
        "{coord_log}"
    );
}
