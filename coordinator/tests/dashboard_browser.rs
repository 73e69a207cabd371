//! The dashboard in real headless Chromium (fantoccini + chromedriver) against a coordinator
//! whose database holds real completed training runs (Fashion-MNIST, four losses; and two
//! configurations over three seeds for the comparison page).
//!
//! Needs Debian's `chromium` and `chromium-driver`; fails (not skips) without them.
//! Screenshots go to `$LATENTSWEEP_ARTIFACTS/screenshots/` (default: cargo's test tmp dir).

mod support;

use support::builder;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use worker::train::{self, CancelToken, CpuBackend, Outcome, RunSpec};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

const SWEEP: &str = r#"
name = "fmnist four losses <script>window.pwned=1</script>"
[grid]
network = ["embedding-net"]
loss = ["ce", "bce", "contrastive", "triplet"]
dataset = ["fashion-mnist"]
margin = [1.0]
lr = [1e-3]
embedding_dim = [2]
batch_size = [32]
epochs = [2]
mining = ["batch-all"]
[fixed]
train_limit = 300
eval_every = 1
"#;

/// Kills chromedriver when the test ends, however it ends.
struct Driver(Child);
impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn artifacts() -> PathBuf {
    let base = std::env::var_os("LATENTSWEEP_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = base.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let path = artifacts().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

fn start_chromedriver() -> (Driver, u16) {
    for (path, pkg) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the browser test needs Debian's `{pkg}` (apt-get install chromium chromium-driver)"
        );
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    (Driver(child), port)
}

async fn connect(port: u16, profile: &Path) -> Client {
    // rustls is built with two crypto providers here; it will not pick one by itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut last = None;
    for _ in 0..100 {
        match ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("cannot start a chromium session through chromedriver: {last:?}");
}

/// Two configurations over three seeds, for the comparison page.
const SEEDS_SWEEP: &str = r#"
name = "seeds"
[grid]
network = ["embedding-net"]
loss = ["contrastive", "triplet"]
dataset = ["fashion-mnist"]
margin = [1.0]
lr = [1e-3]
embedding_dim = [2]
batch_size = [32]
epochs = [1]
mining = ["batch-all"]
seeds = 3
[fixed]
train_limit = 200
"#;

/// Trains every job of the sweep for real and stores what it reported.
async fn real_runs(dir: &Path) -> (coordinator::store::Store, String, Vec<i64>) {
    let store = builder::open(dir).await;
    let (name, ids) = train_sweep(&store, dir, SWEEP).await;
    (store, name, ids)
}

/// Trains every job of a sweep for real into `store`.
async fn train_sweep(
    store: &coordinator::store::Store,
    dir: &Path,
    toml: &str,
) -> (String, Vec<i64>) {
    let store = store.clone();
    let (name, jobs) = builder::submit(&store, toml).await;
    let mut ids = Vec::new();
    for (job, params) in jobs {
        let attempt = builder::start_attempt(&store, job, coordinator::store::now_ms()).await;
        let work = dir.join(format!("work-{}", job.0));
        let spec = RunSpec {
            params,
            data_dir: None,
            work_dir: work,
            resume_from: None,
        };
        let (out, events) = tokio::task::spawn_blocking(move || {
            let mut events = Vec::new();
            let out = train::run::<CpuBackend>(
                &Default::default(),
                &spec,
                &mut |e| events.push(e),
                &CancelToken::new(),
            );
            (out, events)
        })
        .await
        .unwrap();
        let Outcome::Finished { metrics } = out.expect(
            "training run (is Fashion-MNIST installed in /usr/share/datasets/fashion-mnist?)",
        ) else {
            panic!("run was cancelled")
        };
        builder::record_train_events(&store, job, attempt, &events, &metrics).await;
        builder::end_attempt(
            &store,
            job,
            attempt,
            "done",
            None,
            coordinator::store::now_ms(),
        )
        .await;
        ids.push(job.0);
    }
    (name, ids)
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.unwrap().len()
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_renders_filters_and_scrubs_real_runs() {
    let (_driver, port) = start_chromedriver();
    let dir = tempfile::tempdir().unwrap();
    let (store, sweep, jobs) = real_runs(dir.path()).await;
    let snap_points: Vec<i64> =
        sqlx::query_scalar("SELECT n FROM snapshots ORDER BY epoch DESC LIMIT 1")
            .fetch_all(store.reader())
            .await
            .unwrap();
    let addr = builder::serve(store.clone(), None).await;
    let base = format!("http://{addr}");
    let profile = tempfile::tempdir().unwrap();
    let c = connect(port, profile.path()).await;

    // Sweeps page.
    c.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(
        c.find(Locator::Css("main h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Sweeps"
    );
    assert_eq!(count(&c, "table.sweeps tbody tr").await, 1);
    shot(&c, "01-sweeps").await;

    // Sweep page: the hostile name shows literally and its script never ran.
    let sweep_url = format!("{base}/sweeps/{}", builder::url_encode(&sweep));
    c.goto(&sweep_url).await.unwrap();
    assert_eq!(
        c.find(Locator::Css("main h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        sweep
    );
    assert_eq!(
        c.execute("return typeof window.pwned", vec![])
            .await
            .unwrap(),
        json!("undefined")
    );
    assert_eq!(count(&c, "#runs-table tbody tr").await, 4);
    shot(&c, "02-sweep").await;

    // A filter narrows the runs table (plain form submission).
    c.find(Locator::Css("#run-filters select[name=loss]"))
        .await
        .unwrap()
        .select_by_value("triplet")
        .await
        .unwrap();
    c.find(Locator::Css("#run-filters button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until("the filtered table", || async {
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .contains("loss=triplet")
    })
    .await;
    assert_eq!(count(&c, "#runs-table tbody tr").await, 1);
    let cell = c
        .find(Locator::Css("#runs-table tbody tr"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cell.contains("triplet"), "{cell}");
    shot(&c, "03-sweep-filtered").await;

    // Group by and heatmap views.
    c.goto(&format!(
        "{sweep_url}?group=loss&hm_x=loss&hm_y=margin&hm_facet=none"
    ))
    .await
    .unwrap();
    assert_eq!(count(&c, "table.groups tbody tr").await, 4);
    assert!(count(&c, "figure.heatmap td").await >= 4);
    shot(&c, "04-sweep-groups-heatmap").await;

    // Latent spaces: CE | BCE | contrastive | triplet side by side, every snapshot point drawn.
    c.goto(&format!("{sweep_url}/latent")).await.unwrap();
    let plots = c
        .find_all(Locator::Css("#latent-grid svg.scatter"))
        .await
        .unwrap();
    assert_eq!(plots.len(), 4);
    let want = (snap_points[0] as usize).min(1000);
    for p in &plots {
        assert_eq!(
            p.find_all(Locator::Css("circle")).await.unwrap().len(),
            want,
            "points per plot"
        );
    }
    let heads: Vec<String> = {
        let mut v = Vec::new();
        for h in c
            .find_all(Locator::Css("table.latent thead th"))
            .await
            .unwrap()
        {
            v.push(h.text().await.unwrap());
        }
        v
    };
    assert_eq!(&heads[1..], ["bce", "ce", "contrastive", "triplet"]);
    shot(&c, "05-latent-last-epoch").await;

    // The epoch slider (with JS) swaps the plots without a reload.
    let before = c
        .find(Locator::Id("latent-grid"))
        .await
        .unwrap()
        .html(true)
        .await
        .unwrap();
    c.execute(
        "const s = document.getElementById('epoch-slider'); s.value = s.min; s.dispatchEvent(new Event('input', {bubbles: true}));",
        vec![],
    )
    .await
    .unwrap();
    wait_until("the slider to swap the plots", || async {
        c.find(Locator::Id("latent-grid"))
            .await
            .unwrap()
            .html(true)
            .await
            .unwrap()
            != before
    })
    .await;
    let after = c
        .find(Locator::Id("latent-grid"))
        .await
        .unwrap()
        .html(true)
        .await
        .unwrap();
    let slider = c.find(Locator::Id("epoch-slider")).await.unwrap();
    let (min, max) = (
        slider.attr("min").await.unwrap().unwrap(),
        slider.attr("max").await.unwrap().unwrap(),
    );
    assert_ne!(min, max, "several snapshots to scrub through");
    assert!(
        after.contains(&format!("epoch {min} ·")),
        "slider went to the first snapshot"
    );
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .contains(&format!("epoch={min}")),
        "URL follows the slider"
    );
    shot(&c, "06-latent-first-epoch").await;
    // Without JS the same works as links (and a reload keeps the chosen epoch).
    c.goto(&format!("{sweep_url}/latent?epoch={max}"))
        .await
        .unwrap();
    let last = c
        .find(Locator::Id("latent-grid"))
        .await
        .unwrap()
        .html(true)
        .await
        .unwrap();
    assert!(last.contains(&format!("epoch {max} ·")) && last != after);

    // Run page: curves, evaluation table, retrieval images that actually load.
    c.goto(&format!("{base}/runs/{}", jobs[3])).await.unwrap();
    assert!(count(&c, "svg.linechart polyline").await >= 4);
    let evals: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT epoch) FROM metrics WHERE job_id = ?1 AND name = 'map_at_r'",
    )
    .bind(jobs[3])
    .fetch_one(store.reader())
    .await
    .unwrap();
    assert!(evals >= 2);
    assert_eq!(
        count(&c, "#eval-table tbody tr").await,
        evals as usize,
        "one row per evaluation"
    );
    wait_until("retrieval images to load", || async {
        c.execute(
            "return [...document.querySelectorAll('.retrieval img')].every(i => i.complete && i.naturalWidth === 28)",
            vec![],
        )
        .await
        .unwrap()
            == json!(true)
    })
    .await;
    assert!(count(&c, ".retrieval img").await >= 5 * 7);
    shot(&c, "07-run").await;
    c.execute(
        "document.querySelector('.retrieval').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    shot(&c, "07b-run-latent-retrieval").await;
    c.execute(
        "document.getElementById('attempts').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    shot(&c, "07c-run-evaluation-attempts").await;

    // Workers page renders (no workers registered: the table is empty, not an error).
    c.goto(&format!("{base}/workers")).await.unwrap();
    assert_eq!(
        c.find(Locator::Css("main h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Workers"
    );
    shot(&c, "08-workers").await;

    // Comparison: tick two configurations of a real 3-seed sweep, compare them seed by seed.
    train_sweep(&store, dir.path(), SEEDS_SWEEP).await;
    c.goto(&format!("{base}/sweeps/seeds?group=config"))
        .await
        .unwrap();
    let boxes = c
        .find_all(Locator::Css("#groups-table input[name=cell]"))
        .await
        .unwrap();
    assert_eq!(boxes.len(), 2, "one checkbox per configuration");
    for b in &boxes {
        b.click().await.unwrap();
    }
    shot(&c, "09-sweep-pick-cells").await;
    c.find(Locator::Css("#compare-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until("the comparison page", || async {
        c.current_url().await.unwrap().path().ends_with("/compare")
    })
    .await;
    assert_eq!(count(&c, "#compare-cells li").await, 2);
    assert_eq!(
        count(&c, "#seed-plot circle.seed").await,
        6,
        "one point per seed and cell"
    );
    let diff = c
        .find(Locator::Css("#compare-table tr.chosen"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(diff.contains("n=3") && diff.contains(" p="), "{diff}");
    assert!(diff.contains("paired t"), "seeds pair: {diff}");
    shot(&c, "10-compare").await;

    c.close().await.unwrap();
}
