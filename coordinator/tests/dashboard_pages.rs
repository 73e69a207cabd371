//! Dashboard pages against a fixture database: content, filters, sorting, latent grid, run page,
//! workers, images, live events and escaping of hostile names. Pages are requested from the app
//! in process (`builder::get`, no socket); the live-event stream, which is about a held
//! connection, goes over a real one.

mod support;

use support::builder;

use std::path::PathBuf;
use std::time::Duration;

use coordinator::store::lease::NewWorker;
use coordinator::store::now_ms;
use proto::metric;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn datasets() -> PathBuf {
    support::datasets_dir()
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// The HTML between `<tbody>` and `</tbody>` of the element with this id.
fn table_body<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let rest = &html[start..];
    let b = rest.find("<tbody>").unwrap();
    let e = rest.find("</tbody>").unwrap();
    &rest[b..e]
}

#[tokio::test]
async fn pages_render_filter_sort_and_group() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sweep) = builder::build_fixture(dir.path()).await;
    let (_, jobs) = builder::submit(&store, builder::FIXTURE_TOML).await;
    let app = builder::app(store.clone(), Some(datasets()));

    let home = builder::get(&app, "/").await;
    assert_eq!(home.status, 200);
    let html = home.text();
    assert!(html.contains("href=\"/sweeps/fixture\""), "{html}");
    assert!(html.contains("class=\"progress\""));
    assert!(html.contains("/assets/style.css") && html.contains("/assets/live.js"));

    let page = builder::get(&app, &format!("/sweeps/{sweep}")).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    let all_rows = count(table_body(&html, "runs-table"), "<tr");
    assert_eq!(all_rows, jobs.len());
    assert!(html.contains("ETA"), "running + queued jobs get an ETA");

    // Filters narrow the table, on any axis, several values OR-ed.
    let html = builder::get(&app, &format!("/sweeps/{sweep}?loss=triplet"))
        .await
        .text();
    let body = table_body(&html, "runs-table");
    let triplets = jobs
        .iter()
        .filter(|(_, p)| p.loss == proto::Loss::Triplet)
        .count();
    assert_eq!(count(body, "<tr"), triplets);
    assert!(html.contains(&format!("{triplets} of {} runs", jobs.len())));
    let html = builder::get(
        &app,
        &format!("/sweeps/{sweep}?loss=triplet&loss=ce&seed=1"),
    )
    .await
    .text();
    let n = jobs
        .iter()
        .filter(|(_, p)| matches!(p.loss, proto::Loss::Triplet | proto::Loss::Ce) && p.seed == 1)
        .count();
    assert_eq!(count(table_body(&html, "runs-table"), "<tr"), n);

    // Sorting by a metric, descending: the first run is the best finished one.
    let html = builder::get(&app, &format!("/sweeps/{sweep}?sort=map_at_r&desc=1"))
        .await
        .text();
    let body = table_body(&html, "runs-table");
    let first_job: i64 = body
        .split("href=\"/runs/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let done: Vec<i64> = sqlx::query_scalar("SELECT job_id FROM results")
        .fetch_all(store.reader())
        .await
        .unwrap();
    let best = jobs
        .iter()
        .filter(|(j, _)| done.contains(&j.0))
        .max_by(|a, b| {
            let (x, y) = (
                builder::fixture_metrics(&a.1)[metric::MAP_AT_R],
                builder::fixture_metrics(&b.1)[metric::MAP_AT_R],
            );
            x.total_cmp(&y).then(b.0.0.cmp(&a.0.0))
        })
        .unwrap();
    assert_eq!(first_job, best.0.0);
    let html_asc = builder::get(&app, &format!("/sweeps/{sweep}?sort=map_at_r"))
        .await
        .text();
    assert_ne!(table_body(&html_asc, "runs-table"), body);

    // Group by config: mean ± std over the two seeds.
    let html = builder::get(&app, &format!("/sweeps/{sweep}?group=config"))
        .await
        .text();
    assert!(html.contains("id=\"groups\""));
    assert!(html.contains(" ± "), "group table shows mean ± std");
    let html = builder::get(&app, &format!("/sweeps/{sweep}?group=loss"))
        .await
        .text();
    assert!(html.contains("Grouped by loss"));

    // Heatmap: margin × (the other axis) per loss by default, then a chosen metric.
    let html = builder::get(
        &app,
        &format!("/sweeps/{sweep}?hm_x=margin&hm_y=dataset&hm_metric=knn1_acc"),
    )
    .await
    .text();
    assert!(
        html.contains("loss = triplet") && html.contains("mean knn1_acc"),
        "heatmap per loss"
    );
    assert!(count(&html, "background:#") >= 4, "coloured heatmap cells");

    // The coordinator caches loaded sweeps; finishing a job must show on the next load.
    let before = builder::get(&app, &format!("/sweeps/{sweep}")).await.text();
    assert!(before.contains("1 queued · 1 running"), "summary line");
    let (job, attempt): (i64, i64) =
        sqlx::query_as("SELECT job_id, id FROM attempts WHERE state = 'running'")
            .fetch_one(store.reader())
            .await
            .unwrap();
    let params = &jobs.iter().find(|(j, _)| j.0 == job).unwrap().1;
    builder::record_synthetic_run(
        &store,
        proto::JobId(job),
        proto::AttemptId(attempt),
        params,
        1_700_000_000_000,
    )
    .await;
    builder::end_attempt(
        &store,
        proto::JobId(job),
        proto::AttemptId(attempt),
        "done",
        None,
        now_ms(),
    )
    .await;
    let after = builder::get(&app, &format!("/sweeps/{sweep}")).await.text();
    assert!(
        after.contains("1 queued · 0 running"),
        "cached sweep was refreshed"
    );

    // Unknown sweep and run: 404 pages, not errors.
    assert_eq!(builder::get(&app, "/sweeps/none-such").await.status, 404);
    assert_eq!(builder::get(&app, "/runs/999999").await.status, 404);
}

#[tokio::test]
async fn latent_grid_aligns_downsamples_and_scrubs_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sweep) = builder::build_fixture(dir.path()).await;
    let app = builder::app(store.clone(), None);
    let page = builder::get(&app, &format!("/sweeps/{sweep}/latent")).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    // Default axes loss × dataset: 4 columns × 2 rows of plots.
    assert_eq!(count(&html, "class=\"scatter\""), 8);
    assert!(html.contains("type=\"range\"") && html.contains("name=\"epoch\""));
    // Each plot holds all its points (600 MNIST, 360 folder) and a legend with class names.
    let grid = &html[html.find("id=\"latent-grid\"").unwrap()..];
    let circles = count(grid, "<circle");
    assert_eq!(circles, 4 * 600 + 4 * 360, "every point drawn");
    assert!(
        grid.contains("&lt;b&gt;s6&lt;/b&gt; &amp; co"),
        "class names escaped in legends"
    );

    let e0 = builder::get(
        &app,
        &format!("/sweeps/{sweep}/latent?epoch=0&fragment=grid"),
    )
    .await
    .text();
    let e2 = builder::get(
        &app,
        &format!("/sweeps/{sweep}/latent?epoch=2&fragment=grid"),
    )
    .await
    .text();
    assert!(
        !e0.contains("<main") && e0.contains("<svg"),
        "the grid fragment alone"
    );
    assert_ne!(e0, e2, "the epoch changes the picture");
    assert!(e0.contains("epoch 0") && e2.contains("epoch 2"));

    // Other axes as columns/rows.
    let html = builder::get(
        &app,
        &format!("/sweeps/{sweep}/latent?x=seed&y=loss&dataset=mnist"),
    )
    .await
    .text();
    // A cell whose only run failed has no picture.
    assert_eq!(
        count(&html, "class=\"scatter\"") + count(&html, "no snapshot yet"),
        2 * 4
    );
    assert!(count(&html, "class=\"scatter\"") >= 6);
}

#[tokio::test]
async fn run_page_shows_curves_attempts_and_retrieval() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = builder::build_fixture(dir.path()).await;
    let (_, jobs) = builder::submit(&store, builder::FIXTURE_TOML).await;
    let app = builder::app(store.clone(), Some(datasets()));
    // Job index 3 failed once and then finished.
    let (job, params) = &jobs[3];
    let html = builder::get(&app, &format!("/runs/{}", job.0)).await.text();
    assert_eq!(
        count(&html, "<polyline"),
        2 + 1 + 9 + 2 + 1,
        "loss (steps + epoch means), epoch loss, 9 scores, 2 health, throughput"
    );
    assert!(html.contains("worker lost"));
    assert_eq!(count(table_body(&html, "attempts"), "<tr"), 2);
    assert_eq!(
        count(table_body(&html, "eval-table"), "<tr"),
        params.epochs as usize
    );
    assert!(html.contains("class=\"retrieval-row\""));
    // A failed run shows its error escaped.
    let failed = jobs.iter().enumerate().find(|(i, _)| i % 7 == 5).unwrap().1;
    let html = builder::get(&app, &format!("/runs/{}", failed.0.0))
        .await
        .text();
    assert!(
        html.contains("diverged at step 17") && html.contains("&lt;script&gt;x&lt;/script&gt;")
    );
    assert!(!html.contains("<script>x</script>"));

    // Retrieval images are real PNGs from the test split (MNIST run).
    let mnist = jobs
        .iter()
        .find(|(j, p)| p.dataset == proto::Dataset::Mnist && j.0 != jobs[3].0.0 && *j != failed.0)
        .unwrap();
    let html = builder::get(&app, &format!("/runs/{}", mnist.0.0))
        .await
        .text();
    let src = html
        .split("src=\"/runs/")
        .nth(1)
        .expect("an image")
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let img = builder::get(&app, &format!("/runs/{src}")).await;
    assert_eq!(
        img.status,
        200,
        "{} (MNIST expected in {})",
        img.text(),
        datasets().display()
    );
    assert_eq!(img.header("content-type"), Some("image/png"));
    assert_eq!(&img.body[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(
        builder::get(&app, &format!("/runs/{}/images/99999", mnist.0.0))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn workers_page_lists_devices_and_current_job() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = builder::build_fixture(dir.path()).await;
    let w = store
        .register_worker(&NewWorker {
            name: "gpu-box-1".into(),
            host: "lab<host>".into(),
            backend: "cuda".into(),
            devices_json: r#"[{"index":0,"name":"RTX 4090","memory_bytes":25769803776}]"#.into(),
            version: "0.1.0".into(),
        })
        .await
        .unwrap();
    let running: i64 = sqlx::query_scalar("SELECT id FROM attempts WHERE state = 'running'")
        .fetch_one(store.reader())
        .await
        .unwrap();
    sqlx::query("UPDATE attempts SET worker_id = ?1 WHERE id = ?2")
        .bind(w.0)
        .bind(running)
        .execute(store.writer())
        .await
        .unwrap();
    let app = builder::app(store.clone(), None);
    let html = builder::get(&app, "/workers").await.text();
    assert!(
        html.contains("gpu-box-1")
            && html.contains("RTX 4090 (#0, 24.0 GiB)")
            && html.contains("lab&lt;host&gt;")
    );
    let job: i64 = sqlx::query_scalar("SELECT job_id FROM attempts WHERE id = ?1")
        .bind(running)
        .fetch_one(store.reader())
        .await
        .unwrap();
    assert!(
        html.contains(&format!("href=\"/runs/{job}\"")),
        "current job linked"
    );
    assert!(html.contains("busy"));
}

#[tokio::test]
async fn live_events_announce_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = builder::build_fixture(dir.path()).await;
    let addr = builder::serve(store.clone(), None).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains("event: hello") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("hello event")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("text/event-stream"));
    // A worker reports a metric point: the stream says something changed.
    let job = support::report_a_loss_point(&store).await;
    while !seen.contains("event: change") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("change event")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // The fragment the script then fetches is the page's <main> content only.
    let frag = builder::http_get(addr, &format!("/runs/{job}?fragment=1"))
        .await
        .text();
    assert!(frag.starts_with("<p class=\"crumbs\">") && !frag.contains("<html"));
}

#[tokio::test]
async fn hostile_names_and_parameters_show_literally() {
    let dir = tempfile::tempdir().unwrap();
    let store = builder::open(dir.path()).await;
    let (name, jobs) = builder::submit(&store, builder::HOSTILE_TOML).await;
    for (job, p) in &jobs {
        let a = builder::start_attempt(&store, *job, 1_700_000_000_000).await;
        builder::record_synthetic_run(&store, *job, a, p, 1_700_000_000_000).await;
        builder::end_attempt(&store, *job, a, "done", None, 1_700_000_030_000).await;
    }
    let app = builder::app(store.clone(), None);
    let enc: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let pages = [
        "/".to_owned(),
        format!("/sweeps/{enc}"),
        format!("/sweeps/{enc}/latent"),
        format!("/sweeps/{enc}?group=loss"),
        format!("/runs/{}", jobs[0].0.0),
        format!("/sweeps/{enc}/export?format=md"),
    ];
    for p in &pages {
        let r = builder::get(&app, p).await;
        assert_eq!(r.status, 200, "{p}: {}", r.text());
        let html = r.text();
        assert!(
            !html.contains("<script>window.pwned"),
            "{p} leaks the script tag"
        );
        if p.contains("export") {
            // Markdown escapes the bracket itself: `\<img …` renders as text.
            assert!(
                html.match_indices('<')
                    .all(|(i, _)| html[..i].ends_with('\\')),
                "{p}: unescaped <"
            );
        } else {
            assert!(!html.contains("<img src=x"), "{p} leaks the img tag");
        }
        assert!(!html.contains("<b>bold"), "{p} leaks markup");
        if !p.contains("export") {
            assert!(
                html.contains(
                    "&lt;script&gt;window.pwned=1&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;"
                ),
                "{p} shows the name"
            );
        }
    }
    let run = builder::get(&app, &format!("/runs/{}", jobs[0].0.0))
        .await
        .text();
    assert!(
        run.contains("folder:/data/&lt;img src=x onerror=alert(1)&gt;"),
        "parameter shown literally"
    );
    // The page title too (hand-written layout escaping).
    assert!(run.contains("<title>run #"), "{run}");
    assert!(!run.contains("<title>run #1 · <script>"));
}
