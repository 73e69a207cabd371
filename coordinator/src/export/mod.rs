//! `coordinator export`: result tables of a sweep in CSV, Markdown, LaTeX or JSON.
//!
//! The tables and formats are implemented once in [`dashboard::export`] (the dashboard's export
//! buttons use the same code); this module loads the runs from the store.
//!
//! ```text
//! coordinator export --sweep NAME --format csv|md|latex|json [--out FILE]
//! coordinator export --sweep NAME --format md --rows loss --cols dataset --metric map_at_r --agg mean
//! ```

pub use dashboard::export::{Agg, Format, PivotSpec, ResultTable, TableError};

use proto::metric;

use crate::store::{Store, StoreError};
use crate::web::queries;

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    pub sweep: String,
    pub format: Format,
    /// `None`: the long table (one row per run, every parameter and final metric).
    pub pivot: Option<PivotSpec>,
    /// `(parameter, value)` pairs the runs must match (values of one parameter are OR-ed).
    pub filters: Vec<(String, String)>,
}

impl ExportRequest {
    /// From command-line strings: a pivot when both `rows` and `cols` are given; `metric`
    /// defaults to `map_at_r` and `agg` to `mean`.
    pub fn parse(
        sweep: &str,
        format: &str,
        rows: Option<&str>,
        cols: Option<&str>,
        metric: Option<&str>,
        agg: Option<&str>,
    ) -> Result<ExportRequest, ExportError> {
        let pivot = match (rows, cols) {
            (Some(r), Some(c)) => Some(PivotSpec {
                rows: r.to_owned(),
                cols: c.to_owned(),
                metric: metric.unwrap_or(metric::MAP_AT_R).to_owned(),
                agg: agg.unwrap_or("mean").parse()?,
            }),
            (None, None) => None,
            _ => return Err(ExportError::Usage("--rows and --cols go together".into())),
        };
        Ok(ExportRequest {
            sweep: sweep.to_owned(),
            format: format.parse()?,
            pivot,
            filters: Vec::new(),
        })
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no sweep named `{0}`")]
    NoSweep(String),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{0}")]
    Usage(String),
}

/// Builds the requested table of a sweep and writes it in the requested format.
pub async fn run_export(store: &Store, req: ExportRequest) -> Result<String, ExportError> {
    let d = queries::sweep(store.reader(), &req.sweep)
        .await?
        .ok_or_else(|| ExportError::NoSweep(req.sweep.clone()))?;
    let axes = dashboard::table::axes(&d.runs);
    let filters = dashboard::table::filters_from_query(&req.filters, &axes);
    let runs = dashboard::table::filter_runs(&d.runs, &filters);
    let table = match &req.pivot {
        Some(spec) => ResultTable::Pivot(dashboard::export::pivot_table(&runs, spec)?),
        None => ResultTable::Long(dashboard::export::long_table(&runs)),
    };
    Ok(dashboard::export::render(&table, req.format))
}
