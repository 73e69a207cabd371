//! `coordinator export`: result tables of a sweep in CSV, Markdown, LaTeX or JSON.
//!
//! The tables and formats are one pipeline, [`dashboard::export::TableRequest`], which the
//! dashboard's export download uses too; this module parses the command line and loads the runs
//! from the store.
//!
//! ```text
//! coordinator export --sweep NAME --format csv|md|latex|json [--out FILE]
//! coordinator export --sweep NAME --format md --over-seeds
//! coordinator export --sweep NAME --format md --rows loss --cols dataset --metric map_at_r --agg mean
//! coordinator export --sweep NAME --format md --rows loss --cols dataset --where split=classes
//! coordinator export --run ID [--run ID ...] --format gif --out FILE   (see [`gif`])
//! ```

pub mod gif;

pub use dashboard::export::{Agg, Format, PivotSpec, ResultTable, TableError, TableRequest};

use crate::store::{Store, StoreError};
use crate::web::convert;

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    pub sweep: String,
    pub format: Format,
    pub table: TableRequest,
}

impl ExportRequest {
    /// From command-line strings: a pivot when both `rows` and `cols` are given; `metric` and
    /// `agg` default as in [`PivotSpec::new`].
    pub fn parse(
        sweep: &str,
        format: &str,
        rows: Option<&str>,
        cols: Option<&str>,
        metric: Option<&str>,
        agg: Option<&str>,
    ) -> Result<ExportRequest, ExportError> {
        let pivot = match (rows, cols) {
            (Some(r), Some(c)) => Some(PivotSpec::new(r, c, metric, agg)?),
            (None, None) => None,
            _ => return Err(ExportError::Usage("--rows and --cols go together".into())),
        };
        Ok(ExportRequest {
            sweep: sweep.to_owned(),
            format: format.parse()?,
            table: TableRequest {
                pivot,
                filters: Vec::new(),
                over_seeds: false,
            },
        })
    }

    /// With `on`, the table without a pivot has one row per configuration summarised over
    /// seeds (mean ± std, n, 95% CI) instead of one row per run. Pivots always aggregate over
    /// seeds, so asking for both is a usage error.
    pub fn over_seeds(mut self, on: bool) -> Result<ExportRequest, ExportError> {
        if on && self.table.pivot.is_some() {
            return Err(ExportError::Usage(
                "--over-seeds is for the table without --rows/--cols; a pivot already aggregates over seeds".into(),
            ));
        }
        self.table.over_seeds = on;
        Ok(self)
    }

    /// Keeps only runs matching every `PARAM=VALUE` (values of one parameter OR-ed). A name
    /// that is no job parameter is an error here, where the download would ignore it: on the
    /// command line it is a typo that would otherwise export the whole sweep.
    pub fn filtered(mut self, filters: &[String]) -> Result<ExportRequest, ExportError> {
        for f in filters {
            let (k, v) = f.split_once('=').ok_or_else(|| {
                ExportError::Usage(format!("--where `{f}`: expected PARAM=VALUE"))
            })?;
            if !proto::PARAM_ORDER.contains(&k) {
                return Err(ExportError::Usage(format!(
                    "--where `{f}`: `{k}` is not a job parameter; expected one of: {}",
                    proto::PARAM_ORDER.join(" ")
                )));
            }
            self.table.filters.push((k.to_owned(), v.to_owned()));
        }
        Ok(self)
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
    let d = convert::sweep(store, &req.sweep)
        .await?
        .ok_or_else(|| ExportError::NoSweep(req.sweep.clone()))?;
    Ok(req.table.export(&d.runs, req.format)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_filters_name_job_parameters() {
        let req = || ExportRequest::parse("s", "md", None, None, None, None).unwrap();
        let ok = req()
            .filtered(&["split=classes".into(), "loss=ce".into()])
            .unwrap();
        assert_eq!(
            ok.table.filters,
            [
                ("split".into(), "classes".into()),
                ("loss".into(), "ce".into())
            ]
        );
        for bad in ["splitt=classes", "split"] {
            let err = req().filtered(&[bad.into()]).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
