//! SQLite store of sweeps, jobs, attempts, metrics, snapshots, results and artifacts (sqlx).
//!
//! Two pools share one database file: `writer` holds a single connection, so every write goes
//! through one path and SQLite never has to arbitrate between our own writers; `reader` serves
//! concurrent queries, which WAL lets run beside the writer. The hot write path (leases and
//! attempt ends) is group-committed through one task (`group.rs`).
//!
//! Opening is serialised across processes (`open.rs`); commands that only look use
//! [`Store::open_read_only`], which never creates a file. Each database has a random id
//! ([`Store::database_id`]) that every lease and report carries, because row ids restart at 1
//! in a new database.

mod attempt;
mod backup;
mod batch;
mod error;
mod fleet;
mod group;
mod ingest;
pub mod lease;
mod open;
mod ops;
pub mod retention;
mod stats;
mod sweeps;
mod views;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use backup::backup;
pub use error::StoreError;
pub use fleet::SeenWorker;
pub use ingest::{ArtifactRow, BatchOutcome, MetricPoint, SnapshotData};
pub use sweeps::{SubmitOutcome, SweepStatus};
pub(crate) use views::{JobRow, SweepHead, SweepToken};

/// Migrations of the root `migrations/` folder, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The id of the database (see migration 0003); `""` when the table does not exist yet, which
/// only a read-only open of an old database can see.
async fn read_database_id(pool: &SqlitePool) -> Result<Arc<str>, StoreError> {
    let has_table: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'database_meta'",
    )
    .fetch_optional(pool)
    .await?;
    if has_table.is_none() {
        return Ok(Arc::from(""));
    }
    let id: String = sqlx::query_scalar("SELECT uuid FROM database_meta WHERE id = 1")
        .fetch_one(pool)
        .await?;
    Ok(Arc::from(id))
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
    group: group::GroupCommit,
    database_id: Arc<str>,
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
    /// Concurrent opens of one path, in any processes, wait for each other (`open.rs`).
    pub async fn open_with(
        path: &Path,
        migrator: &sqlx::migrate::Migrator,
    ) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Io(dir.display().to_string(), e))?;
        }
        let lock = open::exclusive(path).await?;
        let opts = connect_options(path)?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .after_release(|conn, _| {
                Box::pin(async move {
                    if !conn.is_in_transaction() {
                        return Ok(true);
                    }
                    // A dropped transaction queued its ROLLBACK: let it run, then look again.
                    // Still inside one means a COMMIT failed and SQLite had already rolled back
                    // (it does on a full disk), so the ROLLBACK failed too and sqlx would refuse
                    // every later BEGIN on this connection: replace it with a fresh one.
                    conn.ping().await?;
                    Ok(!conn.is_in_transaction())
                })
            })
            .connect_with(opts.clone())
            .await?;
        migrator.run(&writer).await?;
        drop(lock);
        let database_id = read_database_id(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        let group = group::GroupCommit::start(writer.clone());
        Ok(Store {
            writer,
            reader,
            group,
            database_id,
        })
    }

    /// Opens an existing database for reading only (`status`, `export`): creates nothing and
    /// migrates nothing; a missing file is [`StoreError::NoDatabase`]. Writes through this
    /// handle fail with SQLite's read-only error.
    pub async fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        if !path.is_file() {
            return Err(StoreError::NoDatabase(path.to_owned()));
        }
        let lock = open::shared(path).await?;
        let opts = connect_options(path)?
            .create_if_missing(false)
            .read_only(true);
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        // An empty file (left by an older version's read-only commands) holds no database either.
        let tables: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
                .fetch_one(&reader)
                .await?;
        if tables == 0 {
            reader.close().await;
            return Err(StoreError::NoDatabase(path.to_owned()));
        }
        let database_id = read_database_id(&reader).await?;
        drop(lock);
        let group = group::GroupCommit::start(reader.clone());
        Ok(Store {
            writer: reader.clone(),
            reader,
            group,
            database_id,
        })
    }

    /// This database's random id, made by its first migration: the same database keeps it across
    /// restarts; a new database at the same path gets another. Empty for a database whose schema
    /// predates the id, opened read-only. A copy restored from a backup keeps it too, which is
    /// why each attempt also has a lease token (migration 0004, `crate::sched::fencing::check`).
    pub fn database_id(&self) -> &str {
        &self.database_id
    }

    /// Whether the database answers: one indexed read through the query pool, which also
    /// proves the file at the path is still the database this store opened (a file replaced
    /// underneath has another id). The readiness probe (`/readyz`) calls it.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let id: String = sqlx::query_scalar("SELECT uuid FROM database_meta WHERE id = 1")
            .fetch_one(&self.reader)
            .await?;
        if *id != *self.database_id {
            return Err(StoreError::Conflict(format!(
                "the database file was replaced: it has id {id}, this coordinator opened {}",
                self.database_id
            )));
        }
        Ok(())
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
