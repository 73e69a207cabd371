//! Files both binaries read for transport security: PEM certificates and keys (`--tls-cert`,
//! `--ca-cert`, ...) and the shared token (`--token-file`, the generated token file), with
//! errors that name the file and the flag it came from.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Environment variable holding the shared token (both binaries read it).
pub const TOKEN_ENV: &str = "LATENTSWEEP_TOKEN";
/// Environment variable naming a file that holds the shared token.
pub const TOKEN_FILE_ENV: &str = "LATENTSWEEP_TOKEN_FILE";
/// Name of the token file the coordinator writes next to its database when no token is given.
pub const TOKEN_FILE_NAME: &str = "token";

/// Why a certificate, key or token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{flag} {}: cannot read it: {source}", .path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag} {}: not valid PEM: {detail}", .path.display())]
    Pem {
        flag: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{flag} {}: no {what} in it (expected a PEM block `-----BEGIN {what}-----`)", .path.display())]
    Missing {
        flag: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{flag} {}: the file is empty", .path.display())]
    EmptyToken { flag: &'static str, path: PathBuf },
    #[error("{flag} {}: the token must be printable ASCII without spaces", .path.display())]
    BadToken { flag: &'static str, path: PathBuf },
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, SecretError> {
    std::fs::read(path).map_err(|source| SecretError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

fn pem_err(flag: &'static str, path: &Path, e: rustls_pki_types::pem::Error) -> SecretError {
    SecretError::Pem {
        flag,
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

/// Every certificate of a PEM file, in file order (a chain: leaf first), at least one.
pub fn certificates(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SecretError> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(flag, path, e))?;
    if certs.is_empty() {
        return Err(SecretError::Missing {
            flag,
            path: path.to_owned(),
            what: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, SecretError> {
    let pem = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => SecretError::Missing {
            flag,
            path: path.to_owned(),
            what: "PRIVATE KEY",
        },
        e => pem_err(flag, path, e),
    })
}

/// The token in a file: surrounding whitespace and newlines trimmed; empty or non-printable
/// content is refused rather than silently disabling authentication.
pub fn read_token(flag: &'static str, path: &Path) -> Result<String, SecretError> {
    let raw = read(flag, path)?;
    let text = String::from_utf8(raw).map_err(|_| SecretError::BadToken {
        flag,
        path: path.to_owned(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(SecretError::EmptyToken {
            flag,
            path: path.to_owned(),
        });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SecretError::BadToken {
            flag,
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// Where a token came from (so that a token on the command line can be warned about).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token-file FILE`.
    FileFlag(PathBuf),
    /// `--token T`: visible to every local user in `ps`.
    Flag,
    /// The file named by `LATENTSWEEP_TOKEN_FILE`.
    FileEnv(PathBuf),
    /// `LATENTSWEEP_TOKEN`.
    Env,
}

/// The token given to a binary, looked up in this order: `--token-file FILE`, `--token T`, the
/// file named by `LATENTSWEEP_TOKEN_FILE`, `LATENTSWEEP_TOKEN`. `None` when none is set (an
/// empty `--token` or variable counts as unset).
pub fn given_token(
    file_flag: Option<&Path>,
    flag: Option<&str>,
) -> Result<Option<(String, TokenSource)>, SecretError> {
    if let Some(path) = file_flag {
        let t = read_token("--token-file", path)?;
        return Ok(Some((t, TokenSource::FileFlag(path.to_owned()))));
    }
    if let Some(t) = flag.filter(|t| !t.is_empty()) {
        return Ok(Some((t.to_owned(), TokenSource::Flag)));
    }
    if let Some(path) = std::env::var_os(TOKEN_FILE_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let t = read_token(TOKEN_FILE_ENV, &path)?;
        return Ok(Some((t, TokenSource::FileEnv(path))));
    }
    match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.trim().is_empty() => Ok(Some((t.trim().to_owned(), TokenSource::Env))),
        _ => Ok(None),
    }
}

/// The token file of a coordinator whose database is `db`: `token` in the database's directory.
pub fn token_file_for(db: &Path) -> PathBuf {
    db.with_file_name(TOKEN_FILE_NAME)
}

/// Where a coordinator with a generated token announces that token file to the same user's
/// workers: `$XDG_RUNTIME_DIR/latentsweep/`, else `DATA_DIR/latentsweep/run/`.
pub fn announce_dir() -> Option<PathBuf> {
    dirs::runtime_dir()
        .map(|d| d.join("latentsweep"))
        .or_else(|| dirs::data_dir().map(|d| d.join("latentsweep").join("run")))
}

/// The announcement file, in [`announce_dir`], of the coordinator serving gRPC on `port`: it
/// holds the path of that coordinator's token file.
pub fn announce_file_name(port: u16) -> String {
    format!("grpc-{port}.token-path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  s3cret\n").unwrap();
        assert_eq!(read_token("--token-file", &p).unwrap(), "s3cret");
        std::fs::write(&p, "\n \n").unwrap();
        let e = read_token("--token-file", &p).unwrap_err().to_string();
        assert!(e.contains("--token-file") && e.contains("empty"), "{e}");
        std::fs::write(&p, "two words").unwrap();
        assert!(matches!(
            read_token("--token-file", &p),
            Err(SecretError::BadToken { .. })
        ));
        let e = read_token("--token-file", &dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn pem_files_without_the_expected_block_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.pem");
        std::fs::write(&p, "not pem at all\n").unwrap();
        let e = certificates("--tls-cert", &p).unwrap_err().to_string();
        assert!(e.contains("--tls-cert") && e.contains("CERTIFICATE"), "{e}");
        let e = private_key("--tls-key", &p).unwrap_err().to_string();
        assert!(e.contains("PRIVATE KEY"), "{e}");
    }
}
