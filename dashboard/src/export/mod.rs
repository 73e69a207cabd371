//! Result tables (long, over seeds, pivot) in four text formats: CSV, Markdown, LaTeX, JSON.
//!
//! This is the single pipeline behind both `coordinator export` and the dashboard's export
//! download: a [`TableRequest`] (pivot or long table, parameter filters) is built over a
//! sweep's runs by [`TableRequest::build`] and written by [`render`] (`render.rs`). Every
//! metric we report is "higher is better", which the bolding relies on. Cells over seeds follow
//! the rules of [`crate::stats`]; `pivot.rs` builds pivots and marks significance, `seeds.rs`
//! builds the table over seeds.

mod pivot;
mod pivot_render;
mod render;
mod seeds;

use std::str::FromStr;

pub use pivot::{Mark, PivotCell, PivotTable, Selected, SelectedOn};
pub(crate) use pivot_render::summary_text;
pub use pivot_render::{COLLAPSE_MARK, TEST_SELECTION_MARK, TIE_MARK};
pub use render::render;
pub use seeds::{SeedRow, SeedTable};

use crate::data::RunRow;
use crate::pages::Query;
use crate::table;

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
    /// The run selected on validation (the highest `val/<metric>`), reporting its test
    /// `<metric>`; on the test value itself when no run of the cell has a validation twin.
    Best,
    /// Mean ± sample standard deviation, n and a 95% Student-t interval.
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
    /// Without a pivot: one row per configuration (every parameter but `seed`) with each
    /// metric's summary over seeds, instead of one row per run.
    pub over_seeds: bool,
}

/// Query key (and value `1`) of [`TableRequest::over_seeds`] in a download's query string.
pub const OVER_SEEDS_KEY: &str = "over_seeds";

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
        let over_seeds = q.flag(OVER_SEEDS_KEY);
        Ok(TableRequest {
            pivot,
            filters: q.0,
            over_seeds,
        })
    }

    /// Filters `runs` and builds the requested table.
    pub fn build(&self, runs: &[RunRow]) -> Result<ResultTable, TableError> {
        let axes = table::axes(runs);
        let filters = table::filters_from_query(&self.filters, &axes);
        let shown = table::filter_runs(runs, &filters);
        Ok(match &self.pivot {
            Some(spec) => ResultTable::Pivot(pivot::pivot_table(&shown, spec)?),
            None if self.over_seeds => ResultTable::Seeds(seeds::seed_table(&shown)),
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

/// A table ready to be written in any [`Format`].
#[derive(Debug, Clone, PartialEq)]
pub enum ResultTable {
    Long(LongTable),
    /// One row per configuration, summarised over seeds.
    Seeds(SeedTable),
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
