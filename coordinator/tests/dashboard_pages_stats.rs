//! Seed statistics on the dashboard, over stored results: the table grouped by configuration
//! (CIs, collapse flags, checkboxes), the comparison page and its bad requests, the run page's
//! protocol and selected epoch, and the `best` download selecting on validation.

mod support;

use std::collections::BTreeMap;

use proto::metric;
use support::builder;

const SWEEP: &str = r#"
name = "stats"
[grid]
network = ["embedding-net"]
loss = ["contrastive", "triplet"]
dataset = ["mnist"]
margin = [1.0]
lr = [1e-3]
embedding_dim = [2]
epochs = [3]
seeds = 3
"#;

/// Stores the sweep with results: triplet beats contrastive by 0.10 on every seed; the
/// triplet run of seed 0 collapsed; validation twins rank the seeds the other way round from
/// the test values, so selecting on test would pick a different run.
async fn stats_store(dir: &std::path::Path) -> (coordinator::store::Store, Vec<i64>) {
    let store = builder::open(dir).await;
    let (_, jobs) = builder::submit(&store, SWEEP).await;
    let mut ids = Vec::new();
    for (i, (job, p)) in jobs.iter().enumerate() {
        let t = 1_700_000_000_000 + i as i64 * 60_000;
        let attempt = builder::start_attempt(&store, *job, t).await;
        let base = if p.loss == proto::Loss::Triplet {
            0.6
        } else {
            0.5
        };
        let test = base + 0.02 * p.seed as f64;
        let m: BTreeMap<String, f64> = [
            (metric::MAP_AT_R, test),
            (metric::VAL_MAP_AT_R, 0.9 - 0.01 * p.seed as f64),
            (metric::BEST_EPOCH, 2.0),
            (metric::EPOCHS, 3.0),
            (
                metric::COLLAPSED,
                f64::from(u8::from(p.loss == proto::Loss::Triplet && p.seed == 0)),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        store.record_result(*job, attempt, &m).await.unwrap();
        builder::end_attempt(&store, *job, attempt, "done", None, t + 1_000).await;
        ids.push(job.0);
    }
    (store, ids)
}

/// The `value` of every checkbox named `cell`, HTML entities of `&` undone.
fn cell_values(html: &str) -> Vec<String> {
    html.split("name=\"cell\"")
        .skip(1)
        .filter_map(|rest| {
            let v = rest.split("value=\"").nth(1)?;
            Some(v[..v.find('"')?].replace("&amp;", "&"))
        })
        .collect()
}

#[tokio::test]
async fn groups_compare_and_run_page_show_seed_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = stats_store(dir.path()).await;
    let app = builder::app(store.clone(), None);

    let html = builder::get(&app, "/sweeps/stats?group=config")
        .await
        .text();
    assert_eq!(
        html.matches(">collapsed</span>").count(),
        1,
        "one run flagged in the runs table"
    );
    assert!(html.contains(">1 collapsed</span>"), "and its group");
    assert!(html.contains("id=\"compare-form\""), "{html}");
    assert!(
        html.contains("0.5200 ± 0.0200 [0.4703, 0.5697] n=3"),
        "mean ± std [CI] n: {html}"
    );
    let cells = cell_values(&html);
    assert_eq!(cells.len(), 2, "{cells:?}");

    let url = format!(
        "/sweeps/stats/compare?cell={}&cell={}",
        builder::url_encode(&cells[0]),
        builder::url_encode(&cells[1])
    );
    let page = builder::get(&app, &url).await;
    let html = page.text();
    assert_eq!(page.status, 200, "{html}");
    assert_eq!(html.matches("class=\"seed\"").count(), 6, "{html}");
    // Triplet - contrastive = +0.1000 on every seed: paired, certain, highlighted.
    assert!(
        html.contains("+0.1000 [+0.1000, +0.1000] p=&lt;0.0001 · paired t n=3"),
        "{html}"
    );
    assert!(html.contains("class=\"num significant\""), "{html}");
    assert!(html.contains(">1 collapsed</span>"), "{html}");

    for (url, why) in [
        (
            format!(
                "/sweeps/stats/compare?cell={}",
                builder::url_encode(&cells[0])
            ),
            "two or more",
        ),
        (
            format!(
                "/sweeps/stats/compare?cell={}&cell=colour%3Dred",
                builder::url_encode(&cells[0])
            ),
            "no parameter `colour`",
        ),
        (
            format!(
                "/sweeps/stats/compare?cell={}&cell=loss%3Dce",
                builder::url_encode(&cells[0])
            ),
            "matches no run",
        ),
    ] {
        let r = builder::get(&app, &url).await;
        assert_eq!(r.status, 400, "{url}");
        assert!(r.text().contains(why), "{url}: {}", r.text());
    }
    assert_eq!(builder::get(&app, "/sweeps/nope/compare").await.status, 404);

    // The collapsed run's page: the flag, the protocol and the selected epoch.
    let triplet0 = ids[3];
    let html = builder::get(&app, &format!("/runs/{triplet0}"))
        .await
        .text();
    assert!(html.contains("id=\"collapsed-flag\""), "{html}");
    assert!(html.contains("id=\"protocol\""), "{html}");
    assert!(html.contains("epoch 2, the highest val/map_at_r"), "{html}");
    let other = builder::get(&app, &format!("/runs/{}", ids[0]))
        .await
        .text();
    assert!(!other.contains("id=\"collapsed-flag\""));

    // `best` selects on validation: seed 0 (highest val/), not seed 2 (highest test).
    let r = builder::get(
        &app,
        "/sweeps/stats/export?format=json&rows=loss&cols=dataset&agg=best",
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let c = &v["cells"][1][0];
    assert_eq!(c["selected_on"], "validation", "{v:#}");
    assert_eq!(c["job_id"], triplet0, "{v:#}");
    assert_eq!(c["value"], 0.6, "{v:#}");
    assert_eq!(c["collapsed"], 1, "{v:#}");
    let md = builder::get(
        &app,
        "/sweeps/stats/export?format=md&rows=loss&cols=dataset&agg=best",
    )
    .await
    .text();
    assert!(md.contains("(selected on validation)"), "{md}");
    assert!(!md.contains("selected on test"), "{md}");
    assert!(md.contains("0.6000‡"), "collapse marker: {md}");

    // Over seeds: the collapse is a count on the configuration, not a mean of flags; the long
    // table reads the flag per run.
    let seeds = builder::get(&app, "/sweeps/stats/export?format=md&over_seeds=1")
        .await
        .text();
    assert_eq!(seeds.matches("| 3‡ |").count(), 1, "{seeds}");
    assert!(!seeds.contains("| collapsed"), "{seeds}");
    let csv = builder::get(&app, "/sweeps/stats/export?format=csv&over_seeds=1")
        .await
        .text();
    assert!(
        csv.lines().next().unwrap().contains(",runs,collapsed,"),
        "{csv}"
    );
    let long = builder::get(&app, "/sweeps/stats/export?format=md")
        .await
        .text();
    assert_eq!(long.matches(" | yes |").count(), 1, "{long}");
    assert_eq!(long.matches(" | no |").count(), 5, "{long}");
}
