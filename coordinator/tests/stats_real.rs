//! Seed statistics on real training: a tiny Fashion-MNIST sweep (local workers, 300 images,
//! 1 epoch, 3 seeds) of two cells that differ negligibly (batch size 32 against 33). Their
//! difference is seed noise, so the pivot must mark a tie rather than bold a winner, and the
//! table over seeds and the comparison page must show n = 3 with confidence intervals.
//!
//! Runs the real `coordinator` and `worker` binaries; needs Debian's `dataset-fashion-mnist`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::builder;
use support::grpc::{fashion_mnist_or_panic, free_port, worker_exe};

const SWEEP: &str = r#"
name = "negligible"
[grid]
network = "embedding-net"
loss = "contrastive"
dataset = "fashion-mnist"
margin = 1.0
lr = 1e-3
batch_size = [32, 33]
embedding_dim = 8
epochs = 1
seeds = 3
[fixed]
train_limit = 300
"#;

fn coordinator(args: &[&str], log: &Path, limit: Duration) -> String {
    let out = std::fs::File::create(log.with_extension("out")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(args)
        .env("RUST_LOG", "info,sqlx=warn,h2=warn")
        .env("LATENTSWEEP_WORKER_BIN", worker_exe())
        .env_remove("LATENTSWEEP_TOKEN")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(status.success(), "coordinator {args:?} failed:\n{text}");
            return std::fs::read_to_string(log.with_extension("out")).unwrap();
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("coordinator {args:?} did not finish within {limit:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn negligible_difference_over_real_seeds_is_a_tie() {
    fashion_mnist_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("negligible.toml");
    std::fs::write(&sweep, SWEEP).unwrap();
    let db = dir.path().join("ls.db");
    let db_s = db.to_str().unwrap().to_owned();
    let grpc = format!("127.0.0.1:{}", free_port());
    coordinator(
        &[
            "--sweep",
            sweep.to_str().unwrap(),
            "--db",
            &db_s,
            "--grpc-addr",
            &grpc,
            "--http-addr",
            "127.0.0.1:0",
            "--local-workers",
            "2",
            "--exit-when-done",
        ],
        &dir.path().join("serve.log"),
        Duration::from_secs(600),
    );
    let export = |extra: &[&str], name: &str| {
        let mut args = vec!["--db", &db_s, "export", "--sweep", "negligible"];
        args.extend_from_slice(extra);
        coordinator(
            &args,
            &dir.path().join(format!("{name}.log")),
            Duration::from_secs(60),
        )
    };
    let pivot = ["--rows", "batch_size", "--cols", "dataset"];
    let json: Value = serde_json::from_str(&export(
        &[&pivot[..], &["--format", "json"]].concat(),
        "json",
    ))
    .unwrap();
    let cells = &json["cells"];
    eprintln!("pivot cells: {cells:#}");
    for r in 0..2 {
        let c = &cells[r][0];
        assert_eq!(c["n"], 3, "{c}");
        assert_eq!(c["tie"], true, "a negligible difference is a tie: {c}");
        assert_eq!(c["best"], false, "{c}");
        // Same seeds on both sides: the test pairs them.
        assert_eq!(c["test"], "paired t", "{c}");
        assert!(c["p_value"].as_f64().unwrap() >= 0.05, "{c}");
        let ci = c["ci95"].as_array().unwrap();
        let v = c["value"].as_f64().unwrap();
        assert!(
            ci[0].as_f64().unwrap() < v && v < ci[1].as_f64().unwrap(),
            "{c}"
        );
    }
    let md = export(&[&pivot[..], &["--format", "md"]].concat(), "md");
    eprintln!("{md}");
    assert!(!md.contains("**0."), "no bold winner:\n{md}");
    assert_eq!(md.matches("n=3†").count(), 2, "both cells marked:\n{md}");
    assert!(md.contains("† tie: "), "legend:\n{md}");

    let seeds = export(&["--over-seeds", "--format", "md"], "seeds");
    eprintln!("{seeds}");
    assert_eq!(
        seeds
            .lines()
            .filter(|l| l.starts_with("| embedding-net"))
            .count(),
        2
    );
    assert!(seeds.contains("] n=3 |"), "{seeds}");

    // The comparison page over the same database: the two cells seed by seed.
    let store = coordinator::store::Store::open(&db).await.unwrap();
    let app = builder::app(store, None);
    let url = "/sweeps/negligible/compare?cell=batch_size%3D32&cell=batch_size%3D33";
    let page = builder::get(&app, url).await;
    let html = page.text();
    assert_eq!(page.status, 200, "{html}");
    assert!(html.contains("id=\"seed-plot\""), "{html}");
    assert_eq!(html.matches("class=\"seed\"").count(), 6, "{html}");
    assert!(html.contains("paired t n=3"), "{html}");
}
