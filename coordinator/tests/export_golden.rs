//! Result tables of a fixture database against golden files in `tests/fixtures/`.
//!
//! Regenerate the goldens after an intended format change with
//! `UPDATE_GOLDEN=1 cargo test -p latentsweep-coordinator --test export_golden`, then review the diff.

mod support;

use support::builder;

use std::path::PathBuf;

use coordinator::export::{ExportRequest, Format, run_export};
use proto::metric;

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{name} differs from the golden file at line {}:\n  golden: {:?}\n  actual: {:?}\n(UPDATE_GOLDEN=1 regenerates)",
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

/// One golden table: (file, format, rows, cols, metric, agg).
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

const CASES: &[Case] = &[
    ("long.csv", "csv", None, None, None, None),
    ("long.md", "md", None, None, None, None),
    ("long.tex", "latex", None, None, None, None),
    ("long.json", "json", None, None, None, None),
    (
        "pivot_mean.csv",
        "csv",
        Some("loss"),
        Some("dataset"),
        Some(metric::MAP_AT_R),
        Some("mean"),
    ),
    (
        "pivot_mean.md",
        "md",
        Some("loss"),
        Some("dataset"),
        Some(metric::MAP_AT_R),
        Some("mean"),
    ),
    (
        "pivot_mean.tex",
        "latex",
        Some("loss"),
        Some("dataset"),
        Some(metric::MAP_AT_R),
        Some("mean"),
    ),
    (
        "pivot_mean.json",
        "json",
        Some("loss"),
        Some("dataset"),
        Some(metric::MAP_AT_R),
        Some("mean"),
    ),
    (
        "pivot_best.md",
        "md",
        Some("loss"),
        Some("margin"),
        Some(metric::KNN1_ACC),
        Some("best"),
    ),
    (
        "pivot_best.tex",
        "latex",
        Some("loss"),
        Some("margin"),
        Some(metric::KNN1_ACC),
        Some("best"),
    ),
];

#[tokio::test]
async fn tables_match_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sweep) = builder::build_fixture(dir.path()).await;
    for (file, format, rows, cols, metric, agg) in CASES {
        let req = ExportRequest::parse(&sweep, format, *rows, *cols, *metric, *agg).unwrap();
        let out = run_export(&store, req).await.unwrap();
        check_golden(file, &out);
    }
}

#[tokio::test]
async fn tables_over_seeds_match_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sweep) = builder::build_fixture(dir.path()).await;
    for (file, format) in [
        ("seeds.csv", "csv"),
        ("seeds.md", "md"),
        ("seeds.tex", "latex"),
        ("seeds.json", "json"),
    ] {
        let req = ExportRequest::parse(&sweep, format, None, None, None, None)
            .unwrap()
            .over_seeds(true)
            .unwrap();
        let out = run_export(&store, req).await.unwrap();
        check_golden(file, &out);
    }
    // A pivot already aggregates over seeds: asking for both is a usage error.
    let e = ExportRequest::parse(&sweep, "md", Some("loss"), Some("dataset"), None, None)
        .unwrap()
        .over_seeds(true)
        .unwrap_err();
    assert!(e.to_string().contains("--over-seeds"), "{e}");
}

#[tokio::test]
async fn csv_reads_back_with_every_value_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sweep) = builder::build_fixture(dir.path()).await;
    let (_, jobs) = builder::submit(&store, builder::FIXTURE_TOML).await; // idempotent: same cells
    let out = run_export(
        &store,
        ExportRequest::parse(&sweep, "csv", None, None, None, None).unwrap(),
    )
    .await
    .unwrap();
    let mut rd = csv::Reader::from_reader(out.as_bytes());
    let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_owned).collect();
    for col in [
        "job_id",
        "state",
        "loss",
        "dataset",
        "margin",
        "seed",
        metric::MAP_AT_R,
        metric::ONE_SHOT_20WAY,
    ] {
        assert!(
            header.contains(&col.to_owned()),
            "missing column {col} in {header:?}"
        );
    }
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let records: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), jobs.len(), "one row per run");
    for (rec, (job, params)) in records.iter().zip(&jobs) {
        assert_eq!(rec[col("job_id")].parse::<i64>().unwrap(), job.0);
        // The hostile folder path (commas, quotes, newline) survives the round trip.
        assert_eq!(&rec[col("dataset")], params.dataset.to_string());
        if rec[col("state")] == *"done" {
            let want = builder::fixture_metrics(params)[metric::MAP_AT_R];
            assert_eq!(rec[col(metric::MAP_AT_R)].parse::<f64>().unwrap(), want);
        } else {
            assert_eq!(&rec[col(metric::MAP_AT_R)], "");
        }
    }
    // The pivot's CSV has a value and a std column per data set.
    let req = ExportRequest::parse(
        &sweep,
        "csv",
        Some("loss"),
        Some("dataset"),
        None,
        Some("mean"),
    )
    .unwrap();
    let pivot = run_export(&store, req).await.unwrap();
    let mut rd = csv::Reader::from_reader(pivot.as_bytes());
    // Per data set: value, std, n, CI low and high, mark, p-value, collapsed runs.
    assert_eq!(rd.headers().unwrap().len(), 1 + 2 * 8);
    assert_eq!(rd.records().count(), 4, "one row per loss");
}

#[tokio::test]
async fn pivot_marks_the_best_cell_of_each_column() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sweep) = builder::build_fixture(dir.path()).await;
    let req = ExportRequest::parse(
        &sweep,
        "md",
        Some("loss"),
        Some("dataset"),
        Some(metric::MAP_AT_R),
        Some("mean"),
    )
    .unwrap();
    let md = run_export(&store, req).await.unwrap();
    // Triplet has the highest fixture scores on both data sets.
    let triplet = md.lines().find(|l| l.starts_with("| triplet")).unwrap();
    assert_eq!(triplet.matches("**").count(), 4, "{md}");
    assert!(triplet.contains(" ± "), "{triplet}");
    assert!(
        !md.lines()
            .find(|l| l.starts_with("| ce"))
            .unwrap()
            .contains("**")
    );
    let tex = run_export(
        &store,
        ExportRequest::parse(
            &sweep,
            "latex",
            Some("loss"),
            Some("dataset"),
            Some(metric::MAP_AT_R),
            Some("best"),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        tex.lines()
            .find(|l| l.starts_with("triplet"))
            .unwrap()
            .matches("\\textbf{")
            .count(),
        2,
        "{tex}"
    );
}

#[tokio::test]
async fn bad_requests_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sweep) = builder::build_fixture(dir.path()).await;
    assert!(ExportRequest::parse(&sweep, "xlsx", None, None, None, None).is_err());
    assert!(ExportRequest::parse(&sweep, "csv", Some("loss"), None, None, None).is_err());
    let e = run_export(
        &store,
        ExportRequest::parse("nope", "csv", None, None, None, None).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let e = run_export(
        &store,
        ExportRequest::parse(&sweep, "csv", Some("loss"), Some("colour"), None, None).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
    let e = run_export(
        &store,
        ExportRequest::parse(
            &sweep,
            "csv",
            Some("loss"),
            Some("dataset"),
            Some("f1"),
            None,
        )
        .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("f1"), "{e}");
}

#[tokio::test]
async fn http_export_serves_the_same_tables() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sweep) = builder::build_fixture(dir.path()).await;
    let addr = builder::serve(store.clone(), None).await;
    for (file, format, rows, cols, metric, agg) in CASES {
        let mut q = vec![format!("format={format}")];
        for (k, v) in [
            ("rows", rows),
            ("cols", cols),
            ("metric", metric),
            ("agg", agg),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={v}"));
            }
        }
        let resp =
            builder::http_get(addr, &format!("/sweeps/{sweep}/export?{}", q.join("&"))).await;
        assert_eq!(resp.status, 200, "{file}: {}", resp.text());
        let want = run_export(
            &store,
            ExportRequest::parse(&sweep, format, *rows, *cols, *metric, *agg).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(resp.text(), want, "{file}");
        let ct = resp.header("content-type").unwrap();
        assert!(
            ct.starts_with(
                Format::from_str_checked(format)
                    .content_type()
                    .split(';')
                    .next()
                    .unwrap()
            ),
            "{ct}"
        );
    }
    // Filters from the dashboard narrow the export.
    let resp = builder::http_get(
        addr,
        &format!("/sweeps/{sweep}/export?format=csv&loss=triplet"),
    )
    .await;
    let mut rd = csv::Reader::from_reader(resp.body.as_slice());
    let loss = rd
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "loss")
        .unwrap();
    let rows: Vec<_> = rd.records().map(Result::unwrap).collect();
    assert!(!rows.is_empty() && rows.iter().all(|r| &r[loss] == "triplet"));
    assert_eq!(
        builder::http_get(addr, &format!("/sweeps/{sweep}/export?format=pdf"))
            .await
            .status,
        400
    );
}

trait FromStrChecked {
    fn from_str_checked(s: &str) -> Self;
}
impl FromStrChecked for Format {
    fn from_str_checked(s: &str) -> Format {
        s.parse().unwrap()
    }
}
