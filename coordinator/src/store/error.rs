//! Errors of the store.

/// What can go wrong reading or writing the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create {0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("cannot lock {path}: {source}", path = .0.display(), source = .1)]
    Lock(std::path::PathBuf, #[source] std::io::Error),
    #[error("no database at {path}", path = .0.display())]
    NoDatabase(std::path::PathBuf),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{path} already exists; refusing to overwrite it", path = .0.display())]
    Exists(std::path::PathBuf),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// A state column holding a name no state has: the database was written by something else.
impl From<proto::params::UnknownName> for StoreError {
    fn from(e: proto::params::UnknownName) -> StoreError {
        StoreError::Corrupt(e.to_string())
    }
}

/// SQLite's primary result codes that callers treat apart (`sqlite3.h`).
const SQLITE_BUSY: &str = "5";
const SQLITE_LOCKED: &str = "6";
const SQLITE_FULL: &str = "13";

impl StoreError {
    fn sqlite_code(&self) -> Option<String> {
        match self {
            StoreError::Sqlx(sqlx::Error::Database(d)) => {
                // Extended codes carry the primary code in their low byte.
                let code: i64 = d.code()?.parse().ok()?;
                Some((code & 0xff).to_string())
            }
            _ => None,
        }
    }

    /// The database or its disk is full (`SQLITE_FULL`): nothing was stored; retry later.
    pub(crate) fn is_full(&self) -> bool {
        self.sqlite_code().as_deref() == Some(SQLITE_FULL)
    }

    /// Another connection held the lock past the busy timeout: transient.
    pub(crate) fn is_busy(&self) -> bool {
        matches!(
            self.sqlite_code().as_deref(),
            Some(SQLITE_BUSY | SQLITE_LOCKED)
        )
    }
}
