//! SQLite store of sweeps, jobs, attempts, metrics, snapshots, results and artifacts (sqlx).
//!
//! Two pools share one database file: `writer` holds a single connection, so every write goes
//! through one path and SQLite never has to arbitrate between our own writers; `reader` serves
//! concurrent queries, which WAL lets run beside the writer. The hot write path (leases and
//! attempt ends) is group-committed through one task ([`group`]).

mod batch;
mod error;
mod group;
mod ingest;
pub mod lease;
mod ops;
mod sweeps;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use error::StoreError;
pub use ingest::{ArtifactRow, BatchOutcome, MetricPoint, SnapshotData};
pub use sweeps::{JobCounts, SubmitOutcome, SweepStatus};

/// Migrations of the root `migrations/` folder, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
    group: group::GroupCommit,
}

/// Milliseconds since the Unix epoch, the time unit of every column.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn connect_options(path: &Path) -> Result<SqliteConnectOptions, StoreError> {
    let url = format!("sqlite://{}", path.display());
    Ok(SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable across process crashes in WAL mode; only an OS crash can lose the
        // last transactions, which the lease protocol then re-runs.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10)))
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, &MIGRATOR).await
    }

    /// Opens the database and applies the migrations of `migrator` (tests use a subset).
    pub async fn open_with(
        path: &Path,
        migrator: &sqlx::migrate::Migrator,
    ) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Io(dir.display().to_string(), e))?;
        }
        let opts = connect_options(path)?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        migrator.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        let group = group::GroupCommit::start(writer.clone());
        Ok(Store {
            writer,
            reader,
            group,
        })
    }

    /// Pool for queries.
    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// The single-connection pool every write goes through; keep its transactions short.
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Closes both pools, flushing the WAL.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}
