//! Opening the database file safely when several processes start at once.
//!
//! Two processes that open a new database together would both see migration 1 unapplied and
//! both run it; the second fails (`table sweeps already exists`). sqlx's migration lock is a
//! no-op on SQLite, so we serialise opening ourselves with an exclusive `flock` on a sidecar
//! file `<db>.lock`, held while the database is created, switched to WAL and migrated.
//!
//! Why a lock file rather than `BEGIN EXCLUSIVE` with retries: sqlx runs each migration in a
//! transaction of its own and reads `_sqlx_migrations` outside them, so no one transaction of
//! ours can cover the whole run; and a retry loop would have to guess which errors mean
//! "someone else migrated". The lock makes the second process wait for the first and then find
//! nothing to do. The kernel drops the lock when its holder exits, even on `kill -9`, so a
//! crash cannot leave the database locked. The lock file is left in place: removing it would
//! race with a process that just opened it.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::StoreError;

/// `<dir>/<db file name>.lock`.
pub(super) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "latentsweep.db".into());
    name.push(".lock");
    db.with_file_name(name)
}

/// Held while a process creates or migrates the database; unlocks on drop.
pub(super) struct OpenLock(#[allow(dead_code)] Option<File>);

/// Waits for the exclusive lock (creating the lock file): for processes that may create or
/// migrate the database.
pub(super) async fn exclusive(db: &Path) -> Result<OpenLock, StoreError> {
    let path = lock_path(db);
    blocking(move || {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::Io(path.display().to_string(), e))?;
        f.lock().map_err(|e| StoreError::Lock(path.clone(), e))?;
        Ok(OpenLock(Some(f)))
    })
    .await
}

/// Waits for a shared lock, so a reader never sees a half-migrated database. Takes no lock when
/// the lock file does not exist: the database was then made by a version without it (or is
/// being made by none), and a reader must not create files.
pub(super) async fn shared(db: &Path) -> Result<OpenLock, StoreError> {
    let path = lock_path(db);
    blocking(move || match File::open(&path) {
        Ok(f) => {
            f.lock_shared()
                .map_err(|e| StoreError::Lock(path.clone(), e))?;
            Ok(OpenLock(Some(f)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OpenLock(None)),
        Err(e) => Err(StoreError::Lock(path.clone(), e)),
    })
    .await
}

async fn blocking(
    f: impl FnOnce() -> Result<OpenLock, StoreError> + Send + 'static,
) -> Result<OpenLock, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        StoreError::Lock(
            PathBuf::from("<lock task>"),
            std::io::Error::other(e.to_string()),
        )
    })?
}
