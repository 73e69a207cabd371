//! Latent snapshots as animated GIFs, decoded with the `gif` crate: the dashboard's downloads
//! (run page and latent grid, behind the login like every page) and `coordinator export --run
//! ... --format gif`; and the snapshot's projection name from the store to the pages.

mod support;

use std::path::Path;
use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use coordinator::store::Store;
use coordinator::web::session::Access;
use proto::SnapshotProjection;
use proto::{AttemptId, JobId};
use support::builder;
use tower::ServiceExt;

const TOKEN: &str = "gif-token";
const SWEEP: &str = "name = \"anim\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\n\
                     dataset = \"mnist\"\nmargin = 1.0\nlr = 1e-3\nseed = [0, 1]\n";
/// Snapshots recorded for the first run (epochs 0..=3); the second run has none.
const EPOCHS: i64 = 4;

struct Decoded {
    width: u16,
    height: u16,
    frames: Vec<Vec<u8>>,
}

fn decode(bytes: &[u8]) -> Decoded {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    let mut d = opts.read_info(bytes).expect("a GIF");
    let (width, height) = (d.width(), d.height());
    let mut frames = Vec::new();
    while let Some(f) = d.read_next_frame().unwrap() {
        frames.push(f.buffer.to_vec());
    }
    Decoded {
        width,
        height,
        frames,
    }
}

/// A store with the two-run sweep; the first run has `EPOCHS` t-SNE snapshots.
async fn fixture(dir: &Path) -> (Store, JobId, JobId) {
    let store = builder::open(dir).await;
    let (_, jobs) = builder::submit(&store, SWEEP).await;
    let (a, b) = (jobs[0].0, jobs[1].0);
    let attempt: AttemptId = builder::start_attempt(&store, a, 1_700_000_000_000).await;
    let names: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    for epoch in 0..EPOCHS {
        let mut snap = builder::synthetic_snapshot(epoch, &names, 20, 5);
        snap.projection = SnapshotProjection::Tsne;
        store.record_snapshot(a, attempt, &snap).await.unwrap();
    }
    (store, a, b)
}

fn get(path: &str, bearer: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path).header(header::HOST, "localhost");
    if let Some(t) = bearer {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn downloads_need_the_login_and_hold_one_frame_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (store, a, b) = fixture(dir.path()).await;
    let app = coordinator::web::protected_router(
        coordinator::web::router(store.clone(), None),
        Access::new(Some(TOKEN.into()), false, false),
    );
    let send = |req| app.clone().oneshot(req);
    let run_gif = format!("/runs/{}/latent.gif", a.0);
    let grid_gif = "/sweeps/anim/latent.gif?x=seed";
    for path in [run_gif.as_str(), grid_gif] {
        let r = send(get(path, None)).await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "{path} without a session"
        );
    }

    let r = send(get(&run_gif, Some(TOKEN))).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/gif");
    let disposition = r.headers()[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment") && disposition.contains(".gif"),
        "{disposition}"
    );
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    let one = decode(&bytes);
    assert_eq!(one.frames.len(), EPOCHS as usize);
    assert!(
        one.frames
            .iter()
            .all(|f| f.len() == usize::from(one.width) * usize::from(one.height))
    );

    // The grid with seeds as columns: both runs side by side, the second one without pictures.
    let r = send(get(grid_gif, Some(TOKEN))).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    let grid = decode(&bytes);
    assert_eq!(grid.frames.len(), EPOCHS as usize);
    assert_eq!(grid.width, 2 * one.width, "two panels side by side");

    // A run without snapshots has nothing to animate; an unknown run is not found either.
    for path in [
        format!("/runs/{}/latent.gif", b.0),
        "/runs/999/latent.gif".into(),
    ] {
        let r = send(get(&path, Some(TOKEN))).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn pages_name_the_projection_and_link_the_gifs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, a, _) = fixture(dir.path()).await;
    let app = builder::app(store, None);
    let run = builder::get(&app, &format!("/runs/{}", a.0)).await.text();
    assert!(
        run.contains("(t-SNE of the embedding)"),
        "run page names t-SNE"
    );
    assert!(run.contains(&format!("href=\"/runs/{}/latent.gif\"", a.0)));
    let grid = builder::get(&app, "/sweeps/anim/latent?x=seed")
        .await
        .text();
    assert!(grid.contains("· t-SNE"), "latent grid names t-SNE");
    assert!(
        grid.contains("href=\"/sweeps/anim/latent.gif?x=seed\""),
        "the grid's GIF keeps its axes"
    );
}

fn export(db: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("--db")
        .arg(db)
        .arg("export")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn export_writes_a_row_of_runs_and_explains_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (store, a, b) = fixture(dir.path()).await;
    store.close().await;
    let db = dir.path().join("latentsweep.db");
    let (ra, rb) = (a.0.to_string(), b.0.to_string());

    let one = dir.path().join("one.gif");
    let (ok, err) = export(
        &db,
        &[
            "--run",
            &ra,
            "--format",
            "gif",
            "--out",
            one.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let one = decode(&std::fs::read(one).unwrap());
    assert_eq!(one.frames.len(), EPOCHS as usize);

    let row = dir.path().join("row.gif");
    let (ok, err) = export(
        &db,
        &[
            "--run",
            &ra,
            "--run",
            &rb,
            "--run",
            &ra,
            "--format",
            "gif",
            "--out",
            row.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let row = decode(&std::fs::read(row).unwrap());
    assert_eq!(row.frames.len(), EPOCHS as usize);
    assert_eq!((row.width, row.height), (3 * one.width, one.height));

    let out = dir.path().join("x.gif");
    let out = out.to_str().unwrap();
    for (args, says) in [
        (
            vec!["--run", "999", "--format", "gif", "--out", out],
            "no run #999",
        ),
        (
            vec!["--run", &rb, "--format", "gif", "--out", out],
            "no snapshots",
        ),
        (
            vec!["--run", &ra, "--format", "csv", "--out", out],
            "--format gif",
        ),
        (vec!["--run", &ra, "--format", "gif"], "--out FILE"),
        (vec!["--sweep", "anim", "--format", "gif"], "--run ID"),
    ] {
        let (ok, err) = export(&db, &args);
        assert!(!ok, "{args:?} must fail");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!Path::new(out).exists(), "a failed export writes no file");
}
