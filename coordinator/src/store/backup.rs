//! Online backup: a consistent copy of a database that a coordinator may be writing to.
//!
//! `VACUUM INTO` reads the whole database inside one read transaction, so the copy is the
//! database as of one commit (WAL lets the writer go on meanwhile), and it comes out compact
//! and self-contained (no `-wal` file beside it). The copy is written under a temporary name
//! next to the target and then hard-linked to it, which fails if the target appeared
//! meanwhile: an existing file is never overwritten, and a crash never leaves a half-written
//! file under the target's name.

use std::path::{Path, PathBuf};

use sqlx::{ConnectOptions, Connection};

use super::{StoreError, connect_options};

/// Copies the database at `db` to `out`, which must not exist; returns the copy's size in
/// bytes.
pub async fn backup(db: &Path, out: &Path) -> Result<u64, StoreError> {
    if !db.is_file() {
        return Err(StoreError::NoDatabase(db.to_owned()));
    }
    if out.symlink_metadata().is_ok() {
        return Err(StoreError::Exists(out.to_owned()));
    }
    let tmp = temp_name(out);
    // Left over by a backup that was killed: ours by name (pid), so nobody else's.
    let _ = std::fs::remove_file(&tmp);
    let mut conn = connect_options(db)?
        .create_if_missing(false)
        .read_only(true)
        .connect()
        .await?;
    let copied = sqlx::query("VACUUM INTO ?1")
        .bind(tmp.to_string_lossy().into_owned())
        .execute(&mut conn)
        .await;
    conn.close().await?;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    let io = |e| StoreError::Io(out.display().to_string(), e);
    let finish = || -> Result<u64, StoreError> {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        match std::fs::hard_link(&tmp, out) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Exists(out.to_owned()));
            }
            Err(e) => return Err(io(e)),
        }
        Ok(out.metadata().map_err(io)?.len())
    };
    let result = finish();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// `.<name>.partial-<pid>` in the target's directory (a hard link cannot cross file systems).
fn temp_name(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}
