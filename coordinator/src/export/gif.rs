//! `coordinator export --run ID [--run ID ...] --format gif --out FILE`: the Procrustes-aligned
//! latent snapshots of runs over their epochs as one animated GIF, the runs side by side in the
//! order given (the dashboard's run page and latent grid offer the same, [`dashboard::anim`]).

use dashboard::anim::{self, GifError, MAX_PANELS, Panel};

use crate::store::{Store, StoreError};
use crate::web::convert;

/// The `--format` value that asks for a GIF.
pub const GIF_FORMAT: &str = "gif";

/// Why a GIF export failed.
#[derive(Debug, thiserror::Error)]
pub enum GifExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no run #{0}")]
    NoRun(i64),
    #[error("--run needs at least one run id")]
    NoRuns,
    #[error("at most {MAX_PANELS} runs side by side, got {0}")]
    TooMany(usize),
    #[error(transparent)]
    Gif(#[from] GifError),
    #[error("the GIF encoder task failed: {0}")]
    Task(String),
}

/// Loads the snapshots of `runs` and encodes them as one row of panels, one frame per epoch.
pub async fn run_gif_export(store: &Store, runs: &[i64]) -> Result<Vec<u8>, GifExportError> {
    if runs.is_empty() {
        return Err(GifExportError::NoRuns);
    }
    if runs.len() > MAX_PANELS {
        return Err(GifExportError::TooMany(runs.len()));
    }
    let mut row = Vec::with_capacity(runs.len());
    for &job in runs {
        if convert::run(store, job).await?.is_none() {
            return Err(GifExportError::NoRun(job));
        }
        row.push(Some(Panel {
            title: format!("#{job}"),
            snapshots: convert::snapshots(store, std::slice::from_ref(&job)).await?,
        }));
    }
    // Encoding a long run takes a moment of CPU: off the async threads.
    let rows = vec![row];
    tokio::task::spawn_blocking(move || anim::latent_gif(&rows))
        .await
        .map_err(|e| GifExportError::Task(e.to_string()))?
        .map_err(GifExportError::from)
}
