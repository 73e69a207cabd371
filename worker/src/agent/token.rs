//! Which token the worker presents. Lookup order: `--token-file FILE`, `--token T` (warned
//! about: `ps` shows it), the file in `$LATENTSWEEP_TOKEN_FILE`, `$LATENTSWEEP_TOKEN`, and last,
//! only for a coordinator on this machine (a loopback URL), the token a coordinator started
//! without one generated: the token file it announced for the URL's port (see
//! [`proto::secret::announce_dir`]), else the one next to the default database
//! (`$LATENTSWEEP_DB`'s directory, else `~/.local/share/latentsweep/token`). A remote
//! coordinator never gets a local token.

use std::path::{Path, PathBuf};

use proto::secret::{self, TokenSource};

use super::AgentError;

/// The token to present to the coordinator at `url`, if any, and whether it was given (rather
/// than found on this machine).
pub(crate) fn find(
    file_flag: Option<&Path>,
    flag: Option<&str>,
    url: &str,
) -> Result<(Option<String>, bool), AgentError> {
    let given =
        secret::given_token(file_flag, flag).map_err(|e| AgentError::Config(e.to_string()))?;
    if let Some((token, source)) = given {
        if source == TokenSource::Flag {
            tracing::warn!(
                "--token on the command line is visible to every user of this machine (ps); \
                 use --token-file FILE or LATENTSWEEP_TOKEN"
            );
        }
        return Ok((Some(token), true));
    }
    Ok((discover(url)?, false))
}

/// The token of the coordinator of this user serving `url` on this machine, if one is found.
pub(crate) fn discover(url: &str) -> Result<Option<String>, AgentError> {
    let Some(port) = loopback_port(url) else {
        return Ok(None);
    };
    Ok(local_token([announced(port), generated_token_file()]))
}

/// The token in the first of `candidates` that exists. An announcement outlives a coordinator
/// killed with SIGKILL, and its port may now belong to another one: a note naming a file that
/// is gone is stale, not an error. A token found (not given) that cannot be read is worth a
/// warning, not a refusal to start: a coordinator that needs one answers Unauthenticated.
fn local_token(candidates: [Option<PathBuf>; 2]) -> Option<String> {
    let path = candidates.into_iter().flatten().find(|p| p.exists())?;
    match secret::read_token("the coordinator's token file", &path) {
        Ok(token) => {
            tracing::info!(file = %path.display(), "using the local coordinator's token");
            Some(token)
        }
        Err(e) => {
            tracing::warn!(error = %e, "ignoring a local coordinator's token file");
            None
        }
    }
}

/// Where a coordinator run by this user with the default database writes its generated token.
pub fn generated_token_file() -> Option<PathBuf> {
    match std::env::var_os("LATENTSWEEP_DB").filter(|p| !p.is_empty()) {
        Some(db) => Some(secret::token_file_for(Path::new(&db))),
        None => dirs::data_dir().map(|d| d.join("latentsweep").join(secret::TOKEN_FILE_NAME)),
    }
}

/// The token file announced by the coordinator of this user serving gRPC on `port`.
fn announced(port: u16) -> Option<PathBuf> {
    let note = secret::announce_dir()?.join(secret::announce_file_name(port));
    let path = std::fs::read_to_string(note).ok()?;
    Some(PathBuf::from(path.trim()))
}

/// The port of an `http(s)://` URL naming this machine (a loopback address or `localhost`).
fn loopback_port(url: &str) -> Option<u16> {
    let uri = url.parse::<tonic::codegen::http::Uri>().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    local.then(|| uri.port_u16()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_coordinators_get_the_generated_token() {
        assert_eq!(loopback_port("http://127.0.0.1:50051"), Some(50051));
        assert_eq!(loopback_port("https://localhost:1"), Some(1));
        assert_eq!(loopback_port("http://[::1]:2"), Some(2));
        assert_eq!(loopback_port("http://10.0.0.2:50051"), None);
        assert_eq!(loopback_port("https://coordinator.lab:443"), None);
    }

    #[test]
    fn stale_or_unreadable_local_tokens_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        // The note of a coordinator killed with SIGKILL names a file in a removed directory.
        let gone = Some(dir.path().join("gone/token"));
        let generated = dir.path().join("token");
        assert_eq!(local_token([gone.clone(), Some(generated.clone())]), None);
        std::fs::write(&generated, "").unwrap();
        assert_eq!(local_token([gone.clone(), Some(generated.clone())]), None);
        std::fs::write(&generated, "s3cret\n").unwrap();
        assert_eq!(
            local_token([gone, Some(generated.clone())]).as_deref(),
            Some("s3cret")
        );
        let announced = dir.path().join("announced");
        std::fs::write(&announced, "other").unwrap();
        assert_eq!(
            local_token([Some(announced), Some(generated)]).as_deref(),
            Some("other")
        );
    }

    #[test]
    fn a_token_file_flag_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "abc\n").unwrap();
        let (t, given) = find(Some(&f), None, "http://10.0.0.2:1").unwrap();
        assert_eq!(t.as_deref(), Some("abc"));
        assert!(given);
        std::fs::write(&f, "").unwrap();
        let e = find(Some(&f), None, "http://10.0.0.2:1").unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }
}
