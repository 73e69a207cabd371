//! The coordinator's shared token. Given with `--token-file FILE`, `--token T` (a warning: `ps`
//! shows it), `$LATENTSWEEP_TOKEN_FILE` or `$LATENTSWEEP_TOKEN`, in that order; with none, it is
//! generated at start-up in the manner of Jupyter, so that loopback is not open to every local
//! user: written to `token` (mode 0600) next to the database, kept across restarts (workers
//! that reconnect still hold it), and announced to the same user's workers under
//! `$XDG_RUNTIME_DIR/latentsweep/` (else `DATA_DIR/latentsweep/run/`) by gRPC port.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use proto::secret::{self, SecretError, TokenSource};
use rand::RngCore;

/// Where the token in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Given(TokenSource),
    /// Generated now, or by an earlier run, into this file.
    Generated(PathBuf),
}

/// The token in force.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub origin: Origin,
}

// Never print the secret itself.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Why no token could be set up.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Given(#[from] SecretError),
    #[error("writing the generated token to {0}: {1}")]
    Write(PathBuf, #[source] std::io::Error),
}

/// The token given on the command line or in the environment, if any.
pub fn given(file_flag: Option<&Path>, flag: Option<&str>) -> Result<Option<Token>, TokenError> {
    Ok(
        secret::given_token(file_flag, flag)?.map(|(value, source)| {
            if source == TokenSource::Flag {
                tracing::warn!(
                    "--token on the command line is visible to every user of this machine (ps); \
                 use --token-file FILE or LATENTSWEEP_TOKEN"
                );
            }
            Token {
                value,
                origin: Origin::Given(source),
            }
        }),
    )
}

/// The token of the database at `db` when none was given: the one in its token file, else a
/// new random one written there (0600).
pub fn generated(db: &Path) -> Result<Token, TokenError> {
    let file = secret::token_file_for(db);
    if file.exists() {
        // Readable by others means it may have leaked: replace it.
        let private = std::fs::metadata(&file)
            .map(|m| m.permissions().mode() & 0o077 == 0)
            .unwrap_or(false);
        match secret::read_token("token file", &file) {
            Ok(value) if private => {
                return Ok(Token {
                    value,
                    origin: Origin::Generated(file),
                });
            }
            Ok(_) => {
                tracing::warn!(file = %file.display(), "token file readable by other users; replacing the token")
            }
            Err(e) => tracing::warn!(error = %e, "replacing an unusable token file"),
        }
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let value = hex::encode(bytes);
    write_private(&file, &value).map_err(|e| TokenError::Write(file.clone(), e))?;
    tracing::info!(file = %file.display(), "generated a token (no --token-file or LATENTSWEEP_TOKEN given)");
    Ok(Token {
        value,
        origin: Origin::Generated(file),
    })
}

/// Writes `text` to `path`, readable and writable by this user only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Removed first: `mode` applies only to a file being created.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// An announcement of a generated token file for workers of this user dialling `port` on
/// loopback; removed when dropped.
#[derive(Debug)]
pub struct Announcement(PathBuf);

impl Drop for Announcement {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Announces `token_file` for gRPC `port`. Failure only costs the automatic lookup: logged.
pub fn announce(port: u16, token_file: &Path) -> Option<Announcement> {
    let dir = secret::announce_dir()?;
    let path = dir.join(secret::announce_file_name(port));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let abs = std::path::absolute(token_file)?;
        write_private(&path, &abs.to_string_lossy())
    };
    match write() {
        Ok(()) => Some(Announcement(path)),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot announce the token file to local workers");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_private_and_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ls.db");
        let first = generated(&db).unwrap();
        assert_eq!(first.value.len(), 64);
        let file = secret::token_file_for(&db);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(generated(&db).unwrap().value, first.value);
        // Readable by others: replaced, and private again.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let second = generated(&db).unwrap();
        assert_ne!(second.value, first.value);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{second:?}").contains(&second.value));
    }
}
