//! Verified, atomic download of data set files from a public mirror into a cache directory.
//!
//! A file is streamed into a hidden temporary file next to its destination, checked against
//! the pinned sha256 of its *decompressed* content (so any re-gzip of the same data passes,
//! and a mirror serving raw IDX passes too) and only then renamed into place. A failed,
//! truncated or corrupted download therefore never leaves anything under the final name,
//! and the temporary file is removed on every error path.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::DataError;
use super::idx::decompress_if_gzip;

/// A file of a data set as published by its mirror.
#[derive(Debug, Clone, Copy)]
pub struct RemoteFile {
    /// File name on the mirror and in the cache, e.g. `train-images-idx3-ubyte.gz`.
    pub name: &'static str,
    /// Lower-case hex sha256 of the decompressed (raw IDX) content.
    pub sha256_decompressed: &'static str,
}

/// Removes the temporary file unless it was renamed into place.
pub(crate) struct TempGuard(pub(crate) Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // A file or, for unpacked archives, a whole directory.
            let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
        }
    }
}

/// Hex sha256 of the decompressed content of `bytes` (gzip detected by magic).
pub fn content_sha256(bytes: &[u8], path: &Path) -> Result<String, DataError> {
    let raw = decompress_if_gzip(bytes, path)?;
    Ok(hex::encode(Sha256::digest(&raw)))
}

/// Downloads `base_url/<file.name>` into `dest_dir/<file.name>`, verifying its checksum.
///
/// Returns the final path. Nothing is left in `dest_dir` under any name if this fails.
pub fn download_verified(
    base_url: &str,
    file: &RemoteFile,
    dest_dir: &Path,
) -> Result<PathBuf, DataError> {
    let url = format!("{}/{}", base_url.trim_end_matches('/'), file.name);
    std::fs::create_dir_all(dest_dir).map_err(|e| DataError::io(dest_dir, e))?;
    let dest = dest_dir.join(file.name);
    let tmp = temp_name(dest_dir, file.name);
    let mut guard = TempGuard(Some(tmp.clone()));
    tracing::info!(%url, dest = %dest.display(), "downloading data set file");

    fetch_to(&url, &tmp)?;
    let bytes = std::fs::read(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let actual = content_sha256(&bytes, Path::new(&url)).map_err(|e| DataError::Download {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    if actual != file.sha256_decompressed {
        return Err(DataError::Checksum {
            url: url.clone(),
            expected: file.sha256_decompressed.to_owned(),
            actual,
        });
    }
    std::fs::rename(&tmp, &dest).map_err(|e| DataError::io(&dest, e))?;
    guard.0 = None;
    Ok(dest)
}

/// A hidden temporary name in `dir` for `name`, unique within this machine.
pub(crate) fn temp_name(dir: &Path, name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(
        ".{name}.part-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Streams `url` into the file `out` (created or truncated) and syncs it to disk.
pub(crate) fn fetch_to(url: &str, out: &Path) -> Result<(), DataError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let download_err = |reason: String| DataError::Download {
        url: url.to_owned(),
        reason,
    };
    let response = agent
        .get(url)
        .call()
        .map_err(|e| download_err(e.to_string()))?;
    let mut reader = response.into_body().into_reader();
    let mut file = File::create(out).map_err(|e| DataError::io(out, e))?;
    io::copy(&mut reader, &mut file)
        .map_err(|e| download_err(format!("connection failed while reading the body: {e}")))?;
    file.flush().map_err(|e| DataError::io(out, e))?;
    file.sync_all().map_err(|e| DataError::io(out, e))
}
