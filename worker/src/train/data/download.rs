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
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
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
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let url = format!("{}/{}", base_url.trim_end_matches('/'), file.name);
    std::fs::create_dir_all(dest_dir).map_err(|e| DataError::io(dest_dir, e))?;
    let dest = dest_dir.join(file.name);
    let tmp = dest_dir.join(format!(
        ".{}.part-{}-{}",
        file.name,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut guard = TempGuard(Some(tmp.clone()));
    tracing::info!(%url, dest = %dest.display(), "downloading data set file");

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let download_err = |reason: String| DataError::Download {
        url: url.clone(),
        reason,
    };
    let response = agent
        .get(&url)
        .call()
        .map_err(|e| download_err(e.to_string()))?;
    let mut reader = response.into_body().into_reader();
    {
        let mut out = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        io::copy(&mut reader, &mut out)
            .map_err(|e| download_err(format!("connection failed while reading the body: {e}")))?;
        out.flush().map_err(|e| DataError::io(&tmp, e))?;
        out.sync_all().map_err(|e| DataError::io(&tmp, e))?;
    }
    let bytes = std::fs::read(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let actual =
        content_sha256(&bytes, Path::new(&url)).map_err(|e| download_err(e.to_string()))?;
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
