//! Pivot tables: a metric over a grid of two axes, each cell aggregating the other axes and the
//! seeds; the best cell of each column is marked only when a t-test says it beats the runner-up.

use proto::metric;
use serde_json::Value;

use super::{Agg, PivotSpec, TableError};
use crate::data::RunRow;
use crate::stats::{self, Comparison, Summary};
use crate::table;

/// On what the `best` aggregation chose its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectedOn {
    /// The highest validation twin (`val/<metric>`): the honest protocol.
    Validation,
    /// The highest test value itself, because no run of the cell has a validation set.
    Test,
}

impl SelectedOn {
    /// Short text used in every format and on the pages.
    pub fn note(self) -> &'static str {
        match self {
            SelectedOn::Validation => "selected on validation",
            SelectedOn::Test => "selected on test: no validation set",
        }
    }
}

/// The run `--agg best` chose for a cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selected {
    pub job_id: i64,
    /// Its test metric (the number the cell reports).
    pub value: f64,
    pub on: SelectedOn,
}

/// How a cell stands in its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    None,
    /// The best value, significantly better than the runner-up (bold).
    Best,
    /// One of the top two, which do not differ significantly (or cannot be tested).
    Tie,
}

/// One cell of a pivot.
#[derive(Debug, Clone, PartialEq)]
pub struct PivotCell {
    /// The metric over every run of the cell.
    pub summary: Summary,
    /// The `best` aggregation's choice (`None` under `mean`).
    pub selected: Option<Selected>,
    /// Runs of the cell whose embedding collapsed.
    pub collapsed: usize,
    pub mark: Mark,
    /// The test of the column's top cell against its runner-up, on both of them.
    pub test: Option<Comparison>,
    /// Parameters and value of each run, for the test's pairing.
    pub(crate) points: Vec<(Vec<(String, Value)>, f64)>,
}

impl PivotCell {
    /// The number the cell shows: the selected run's value or the mean.
    pub fn shown(&self) -> f64 {
        self.selected.map_or(self.summary.mean, |s| s.value)
    }
}

/// Metric aggregated over a grid of two axes.
#[derive(Debug, Clone, PartialEq)]
pub struct PivotTable {
    pub spec: PivotSpec,
    pub row_values: Vec<Value>,
    pub col_values: Vec<Value>,
    /// `cells[row][col]`; `None` where no finished run has the metric.
    pub cells: Vec<Vec<Option<PivotCell>>>,
}

impl PivotTable {
    /// Which marks and notes occur, so that formats print only the legends they need.
    pub(crate) fn has(&self, f: impl Fn(&PivotCell) -> bool) -> bool {
        self.cells.iter().flatten().flatten().any(f)
    }
}

/// The validation twin of a metric: itself when it is already a validation metric.
fn selection_metric(m: &str) -> String {
    if m.starts_with(metric::VAL_PREFIX) {
        m.to_owned()
    } else {
        format!("{}{m}", metric::VAL_PREFIX)
    }
}

/// The run a `best` cell reports: the highest validation twin among runs that have one (ties:
/// the earliest run), else the highest test value.
fn select(runs: &[&RunRow], m: &str) -> Option<Selected> {
    let twin = selection_metric(m);
    let pick = |key: &str| {
        runs.iter()
            .filter_map(|r| Some((r, *r.metrics.get(key)?, *r.metrics.get(m)?)))
            .filter(|(_, k, v)| k.is_finite() && v.is_finite())
            .fold(None::<(&&RunRow, f64, f64)>, |best, c| match best {
                Some(b) if b.1 >= c.1 => Some(b),
                _ => Some(c),
            })
    };
    if let Some((r, _, v)) = pick(&twin) {
        return Some(Selected {
            job_id: r.job_id,
            value: v,
            on: SelectedOn::Validation,
        });
    }
    pick(m).map(|(r, _, v)| Selected {
        job_id: r.job_id,
        value: v,
        on: SelectedOn::Test,
    })
}

/// Builds a pivot table; each cell aggregates over the other axes and the seeds.
pub(crate) fn pivot_table(runs: &[&RunRow], spec: &PivotSpec) -> Result<PivotTable, TableError> {
    let owned: Vec<RunRow> = runs.iter().map(|r| (*r).clone()).collect();
    let axes = table::axes(&owned);
    let names = axes
        .iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let find = |n: &str| {
        axes.iter()
            .find(|a| a.name == n)
            .cloned()
            .ok_or_else(|| TableError::UnknownAxis(n.to_owned(), names.clone()))
    };
    if spec.rows == spec.cols {
        return Err(TableError::SameAxis(spec.rows.clone()));
    }
    let (rows, cols) = (find(&spec.rows)?, find(&spec.cols)?);
    let metrics = table::metric_names(&owned);
    if !metrics.contains(&spec.metric) {
        return Err(TableError::UnknownMetric(
            spec.metric.clone(),
            metrics.join(", "),
        ));
    }
    let m = spec.metric.as_str();
    let mut cells: Vec<Vec<Option<PivotCell>>> = rows
        .values
        .iter()
        .map(|rv| {
            cols.values
                .iter()
                .map(|cv| {
                    let members: Vec<&RunRow> = runs
                        .iter()
                        .copied()
                        .filter(|r| {
                            r.param(&spec.rows) == Some(rv) && r.param(&spec.cols) == Some(cv)
                        })
                        .filter(|r| r.metrics.get(m).is_some_and(|v| v.is_finite()))
                        .collect();
                    let summary = Summary::of(&table::metric_values(&members, m))?;
                    Some(PivotCell {
                        summary,
                        selected: (spec.agg == Agg::Best)
                            .then(|| select(&members, m))
                            .flatten(),
                        collapsed: members.iter().filter(|r| table::is_collapsed(r)).count(),
                        mark: Mark::None,
                        test: None,
                        points: members
                            .iter()
                            .filter_map(|r| Some((r.params.clone(), *r.metrics.get(m)?)))
                            .collect(),
                    })
                })
                .collect()
        })
        .collect();
    for c in 0..cols.values.len() {
        mark_column(&mut cells, c, &spec.rows);
    }
    Ok(PivotTable {
        spec: spec.clone(),
        row_values: rows.values,
        col_values: cols.values,
        cells,
    })
}

/// Marks column `c`: its top cell is bold when significantly better than the runner-up (the
/// next highest shown value), else both are marked as a tie. A lone cell is simply the best.
fn mark_column(cells: &mut [Vec<Option<PivotCell>>], c: usize, row_axis: &str) {
    let mut ranked: Vec<(usize, f64)> = cells
        .iter()
        .enumerate()
        .filter_map(|(r, row)| row[c].as_ref().map(|cell| (r, cell.shown())))
        .collect();
    // Stable sort, highest first: equal values keep row order.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (top, second) = match ranked.as_slice() {
        [] => return,
        [(r, _)] => {
            if let Some(cell) = cells[*r][c].as_mut() {
                cell.mark = Mark::Best;
            }
            return;
        }
        [(a, _), (b, _), ..] => (*a, *b),
    };
    let (Some(t), Some(s)) = (&cells[top][c], &cells[second][c]) else {
        return;
    };
    let test = stats::compare(&pair_points(t, s, row_axis), &pair_points(s, t, row_axis));
    let (top_mark, second_mark) = if test.a_significantly_better() {
        (Mark::Best, Mark::None)
    } else {
        (Mark::Tie, Mark::Tie)
    };
    for (r, mark) in [(top, top_mark), (second, second_mark)] {
        if let Some(cell) = cells[r][c].as_mut() {
            cell.mark = mark;
            cell.test = Some(test);
        }
    }
}

/// `(pair key, value)` of `a`'s runs for a test against `b`. Runs pair when they agree on every
/// parameter but the row axis and those that apply to only some of the runs (`mining` is null
/// for every loss but triplet): those follow from the row's value, not from the run.
fn pair_points(a: &PivotCell, b: &PivotCell, row_axis: &str) -> Vec<(String, f64)> {
    let mut skip: Vec<&str> = vec![row_axis];
    for (params, _) in a.points.iter().chain(&b.points) {
        for (k, v) in params {
            if v.is_null() && !skip.contains(&k.as_str()) {
                skip.push(k);
            }
        }
    }
    a.points
        .iter()
        .map(|(params, v)| (table::pair_key(params, &skip), *v))
        .collect()
}

#[cfg(test)]
mod tests;
