//! Pivot marks and `best` selection on constructed numbers.

use std::collections::BTreeMap;

use proto::{JobState, metric};
use serde_json::{Value, json};

use super::*;
use crate::export::{
    COLLAPSE_MARK, Format, ResultTable, TEST_SELECTION_MARK, TIE_MARK, TableRequest, render,
};

/// A finished run of `loss` (the row axis) on `dataset` (the column axis) with `seed`.
fn run(job: i64, loss: &str, seed: i64, metrics: &[(&str, f64)]) -> RunRow {
    RunRow {
        job_id: job,
        seq: job,
        state: JobState::Done,
        attempts: 1,
        params: vec![
            ("loss".into(), json!(loss)),
            ("dataset".into(), json!("mnist")),
            ("seed".into(), json!(seed)),
        ],
        metrics: metrics
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect::<BTreeMap<_, _>>(),
        last_error: None,
    }
}

/// Two losses over seeds 0..n with these MAP@R values.
fn runs(a: &[f64], b: &[f64]) -> Vec<RunRow> {
    let mut out = Vec::new();
    for (i, v) in a.iter().enumerate() {
        out.push(run(i as i64, "ce", i as i64, &[(metric::MAP_AT_R, *v)]));
    }
    for (i, v) in b.iter().enumerate() {
        out.push(run(
            100 + i as i64,
            "triplet",
            i as i64,
            &[(metric::MAP_AT_R, *v)],
        ));
    }
    out
}

fn pivot(rows: &[RunRow], agg: &str) -> PivotTable {
    let refs: Vec<&RunRow> = rows.iter().collect();
    let spec = PivotSpec::new("loss", "dataset", Some(metric::MAP_AT_R), Some(agg)).unwrap();
    pivot_table(&refs, &spec).unwrap()
}

fn marks(t: &PivotTable) -> Vec<Mark> {
    t.cells
        .iter()
        .map(|r| r[0].as_ref().unwrap().mark)
        .collect()
}

#[test]
fn a_clear_win_is_bold() {
    let rows = runs(&[0.50, 0.52, 0.51], &[0.80, 0.83, 0.81]);
    let t = pivot(&rows, "mean");
    assert_eq!(marks(&t), [Mark::None, Mark::Best]);
    let md = render(&ResultTable::Pivot(t.clone()), Format::Markdown);
    assert!(md.contains("| **0.8133 ± 0.0153 ["), "{md}");
    assert!(!md.contains(TIE_MARK), "{md}");
    let test = t.cells[1][0].as_ref().unwrap().test.unwrap();
    assert_eq!(test.kind, crate::stats::TestKind::Paired);
    assert!(test.p.unwrap() < 0.05);
}

#[test]
fn overlapping_seeds_are_a_tie() {
    // Seed noise (±0.05) dwarfs the 0.002 gap, and the sign of the difference flips by seed.
    let rows = runs(&[0.50, 0.60, 0.55], &[0.56, 0.54, 0.556]);
    let t = pivot(&rows, "mean");
    assert_eq!(marks(&t), [Mark::Tie, Mark::Tie]);
    for f in [Format::Markdown, Format::Latex, Format::Csv, Format::Json] {
        let out = render(&ResultTable::Pivot(t.clone()), f);
        assert!(!out.contains("**0.") && !out.contains("\\textbf"), "{out}");
        match f {
            Format::Markdown => {
                assert!(out.contains(&format!("n=3{TIE_MARK}")), "{out}");
                assert!(out.contains(&format!("\n{TIE_MARK} tie: ")), "{out}");
            }
            Format::Latex => assert!(out.contains("$^{\\dagger}$ tie: "), "{out}"),
            Format::Csv => assert_eq!(out.matches(",tie,").count(), 2, "{out}"),
            Format::Json => {
                let v: Value = serde_json::from_str(&out).unwrap();
                assert_eq!(v["cells"][0][0]["tie"], json!(true));
                assert!(v["cells"][0][0]["p_value"].as_f64().unwrap() >= 0.05);
            }
        }
    }
}

#[test]
fn one_seed_shows_no_spread() {
    let rows = runs(&[0.4575], &[0.3]);
    let t = pivot(&rows, "mean");
    let md = render(&ResultTable::Pivot(t.clone()), Format::Markdown);
    assert!(md.contains("| ce | 0.4575 n=1"), "{md}");
    assert!(!md.contains("± 0.0000"), "{md}");
    // One run each cannot be tested: a tie, not a bold claim.
    assert_eq!(marks(&t), [Mark::Tie, Mark::Tie]);
    let refs: Vec<&RunRow> = rows.iter().collect();
    let seeds = crate::export::seeds::seed_table(&refs);
    let md = render(&ResultTable::Seeds(seeds), Format::Markdown);
    assert!(md.contains("| 0.4575 n=1 |"), "{md}");
    assert!(!md.contains('±') || !md.contains("± 0.0000"), "{md}");
}

#[test]
fn best_selects_on_validation_and_reports_test() {
    // Seed 1 has the best test value but the worse validation value: it must not be chosen.
    let rows = vec![
        run(
            1,
            "ce",
            0,
            &[(metric::MAP_AT_R, 0.70), (metric::VAL_MAP_AT_R, 0.9)],
        ),
        run(
            2,
            "ce",
            1,
            &[(metric::MAP_AT_R, 0.95), (metric::VAL_MAP_AT_R, 0.5)],
        ),
        run(3, "triplet", 0, &[(metric::MAP_AT_R, 0.60)]),
        run(4, "triplet", 1, &[(metric::MAP_AT_R, 0.65)]),
    ];
    let t = pivot(&rows, "best");
    let ce = t.cells[0][0].as_ref().unwrap();
    assert_eq!(
        ce.selected,
        Some(Selected {
            job_id: 1,
            value: 0.70,
            on: SelectedOn::Validation
        })
    );
    let tri = t.cells[1][0].as_ref().unwrap().selected.unwrap();
    assert_eq!((tri.job_id, tri.on), (4, SelectedOn::Test));
    let md = render(&ResultTable::Pivot(t.clone()), Format::Markdown);
    assert!(md.contains(&format!("0.6500{TEST_SELECTION_MARK}")), "{md}");
    assert!(md.contains("selected on test: no validation set"), "{md}");
    let csv = render(&ResultTable::Pivot(t), Format::Csv);
    assert!(
        csv.contains(",1,validation,") && csv.contains(",4,test,"),
        "{csv}"
    );
}

#[test]
fn a_collapsed_run_marks_its_cell() {
    let mut rows = runs(&[0.5, 0.52], &[0.1, 0.12]);
    rows[2].metrics.insert(metric::COLLAPSED.into(), 1.0);
    let t = pivot(&rows, "mean");
    assert_eq!(t.cells[1][0].as_ref().unwrap().collapsed, 1);
    let md = render(&ResultTable::Pivot(t), Format::Markdown);
    assert_eq!(
        md.matches(COLLAPSE_MARK).count(),
        2,
        "cell and legend: {md}"
    );
    let long = TableRequest::default()
        .export(&rows, Format::Markdown)
        .unwrap();
    assert!(
        long.contains("| collapsed |") && long.contains("| yes |"),
        "{long}"
    );
}
