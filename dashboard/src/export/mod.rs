//! Result tables (long form and pivot) and their four text formats: CSV, Markdown, LaTeX, JSON.
//!
//! This is the single pipeline behind both `coordinator export` and the dashboard's export
//! download: a [`TableRequest`] (pivot or long table, parameter filters) is built over a
//! sweep's runs by [`TableRequest::build`] and written by [`render`] (`render.rs`). Every
//! metric we report is "higher is better", which the bolding relies on.

mod render;

use std::str::FromStr;

use serde_json::Value;

pub use render::render;

use crate::data::RunRow;
use crate::pages::Query;
use crate::table::{self, Stats};

/// Output format of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Markdown,
    Latex,
    Json,
}

impl Format {
    /// MIME type for HTTP responses.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Markdown => "text/markdown; charset=utf-8",
            Format::Latex => "application/x-tex; charset=utf-8",
            Format::Json => "application/json",
        }
    }
    /// Usual file extension.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Markdown => "md",
            Format::Latex => "tex",
            Format::Json => "json",
        }
    }
}

impl FromStr for Format {
    type Err = TableError;
    fn from_str(s: &str) -> Result<Self, TableError> {
        match s {
            "csv" => Ok(Format::Csv),
            "md" | "markdown" => Ok(Format::Markdown),
            "latex" | "tex" => Ok(Format::Latex),
            "json" => Ok(Format::Json),
            _ => Err(TableError::UnknownFormat(s.to_owned())),
        }
    }
}

/// How a pivot cell aggregates the runs that fall in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// The best (highest) value.
    Best,
    /// Mean ± sample standard deviation.
    Mean,
}

impl FromStr for Agg {
    type Err = TableError;
    fn from_str(s: &str) -> Result<Self, TableError> {
        match s {
            "best" | "max" => Ok(Agg::Best),
            "mean" => Ok(Agg::Mean),
            _ => Err(TableError::UnknownAgg(s.to_owned())),
        }
    }
}

/// What a pivot table shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PivotSpec {
    pub rows: String,
    pub cols: String,
    pub metric: String,
    pub agg: Agg,
}

impl PivotSpec {
    /// The metric shown when a request names none.
    pub const DEFAULT_METRIC: &str = proto::metric::MAP_AT_R;
    /// The aggregation used when a request names none.
    pub const DEFAULT_AGG: Agg = Agg::Mean;

    /// A pivot of `rows` by `cols`; `metric` and `agg` (parsed) default to
    /// [`Self::DEFAULT_METRIC`] and [`Self::DEFAULT_AGG`].
    pub fn new(
        rows: &str,
        cols: &str,
        metric: Option<&str>,
        agg: Option<&str>,
    ) -> Result<PivotSpec, TableError> {
        Ok(PivotSpec {
            rows: rows.to_owned(),
            cols: cols.to_owned(),
            metric: metric.unwrap_or(Self::DEFAULT_METRIC).to_owned(),
            agg: agg
                .map(str::parse)
                .transpose()?
                .unwrap_or(Self::DEFAULT_AGG),
        })
    }
}

/// Which table to build from a sweep's runs: the request both the CLI and the download make.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableRequest {
    /// `None`: the long table (one row per run, every parameter and final metric).
    pub pivot: Option<PivotSpec>,
    /// `(parameter, value)` pairs the runs must match (values of one parameter are OR-ed);
    /// pairs naming no parameter of the runs are ignored.
    pub filters: Vec<(String, String)>,
}

impl TableRequest {
    /// From a download's query string: a pivot when `rows` and `cols` are both given (`metric`
    /// and `agg` optional), otherwise the long table; every pair may filter.
    pub(crate) fn from_query(q: &[(String, String)]) -> Result<TableRequest, TableError> {
        let q = Query(q.to_vec());
        let pivot = match (q.get("rows"), q.get("cols")) {
            (Some(rows), Some(cols)) => {
                Some(PivotSpec::new(rows, cols, q.get("metric"), q.get("agg"))?)
            }
            _ => None,
        };
        Ok(TableRequest {
            pivot,
            filters: q.0,
        })
    }

    /// Filters `runs` and builds the requested table.
    pub fn build(&self, runs: &[RunRow]) -> Result<ResultTable, TableError> {
        let axes = table::axes(runs);
        let filters = table::filters_from_query(&self.filters, &axes);
        let shown = table::filter_runs(runs, &filters);
        Ok(match &self.pivot {
            Some(spec) => ResultTable::Pivot(pivot_table(&shown, spec)?),
            None => ResultTable::Long(long_table(&shown)),
        })
    }

    /// [`Self::build`], then [`render`] in `format`.
    pub fn export(&self, runs: &[RunRow], format: Format) -> Result<String, TableError> {
        Ok(render(&self.build(runs)?, format))
    }
}

/// Invalid table request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("unknown format `{0}`; expected csv, md, latex or json")]
    UnknownFormat(String),
    #[error("unknown aggregation `{0}`; expected best or mean")]
    UnknownAgg(String),
    #[error("unknown axis `{0}`; the runs have: {1}")]
    UnknownAxis(String, String),
    #[error("unknown metric `{0}`; expected one of: {1}")]
    UnknownMetric(String, String),
    #[error("rows and cols must be different axes (both are `{0}`)")]
    SameAxis(String),
}

/// One row per run: every parameter and every final metric.
#[derive(Debug, Clone, PartialEq)]
pub struct LongTable {
    pub params: Vec<String>,
    pub metrics: Vec<String>,
    pub runs: Vec<RunRow>,
}

/// Metric aggregated over a grid of two axes.
#[derive(Debug, Clone, PartialEq)]
pub struct PivotTable {
    pub spec: PivotSpec,
    pub row_values: Vec<Value>,
    pub col_values: Vec<Value>,
    /// `cells[row][col]`; `None` where no finished run has the metric.
    pub cells: Vec<Vec<Option<Stats>>>,
}

impl PivotTable {
    /// The number a cell shows: the maximum or the mean.
    pub fn shown(&self, s: &Stats) -> f64 {
        match self.spec.agg {
            Agg::Best => s.max,
            Agg::Mean => s.mean,
        }
    }
    /// Whether cell (r, c) holds the best value of its column.
    pub(crate) fn is_best(&self, r: usize, c: usize) -> bool {
        let Some(me) = self.cells[r][c].as_ref().map(|s| self.shown(s)) else {
            return false;
        };
        self.cells
            .iter()
            .filter_map(|row| row[c].as_ref())
            .all(|s| self.shown(s) <= me)
    }
}

/// A table ready to be written in any [`Format`].
#[derive(Debug, Clone, PartialEq)]
pub enum ResultTable {
    Long(LongTable),
    Pivot(PivotTable),
}

/// Builds the long table of these runs.
pub(crate) fn long_table(runs: &[&RunRow]) -> LongTable {
    let owned: Vec<RunRow> = runs.iter().map(|r| (*r).clone()).collect();
    let params = table::axes(&owned).into_iter().map(|a| a.name).collect();
    let metrics = table::metric_names(&owned);
    LongTable {
        params,
        metrics,
        runs: owned,
    }
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
    let cells = rows
        .values
        .iter()
        .map(|rv| {
            cols.values
                .iter()
                .map(|cv| {
                    let vals: Vec<f64> = runs
                        .iter()
                        .filter(|r| {
                            r.param(&spec.rows) == Some(rv) && r.param(&spec.cols) == Some(cv)
                        })
                        .filter_map(|r| r.metrics.get(&spec.metric).copied())
                        .collect();
                    Stats::of(&vals)
                })
                .collect()
        })
        .collect();
    Ok(PivotTable {
        spec: spec.clone(),
        row_values: rows.values,
        col_values: cols.values,
        cells,
    })
}
