//! The AT&T (ORL) faces as a downloadable data set: the public archive, its checksum and a
//! verified, atomic install into the download cache, where it is an ordinary folder data set.
//!
//! The archive's own bytes are not pinned: a mirror may re-pack it. What is pinned is a *tree
//! digest* of its content, the sha256 of the manifest of its 400 images, one line
//! `<relative path> <sha256 of the file>\n` per `s<N>/<M>.pgm`, sorted by path. Any copy of
//! the images (the unpacked archive, `../shared/datasets/att_faces`) has the same digest; the
//! pinned value was computed from the latter. The archive is unpacked into a hidden temporary
//! directory next to its destination and renamed into place only if the digest matches, so a
//! corrupted or truncated download leaves nothing behind.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::DataError;
use super::builtin::cache_root;
use super::download::{TempGuard, fetch_to, temp_name};

/// Directory name of the unpacked set under the cache root (and under `../shared/datasets`).
pub const DIR_NAME: &str = "att_faces";
/// File name of the archive on the mirror.
pub const ARCHIVE: &str = "att_faces.zip";
/// Cambridge's public archive of the data set.
pub const DEFAULT_MIRROR: &str = "https://www.cl.cam.ac.uk/Research/DTG/attarchive/pub/data/";
/// Environment variable that overrides the mirror's base URL.
pub const MIRROR_ENV: &str = "LATENTSWEEP_ATT_FACES_MIRROR";
/// Tree digest (see module docs) of the 400 images of the canonical release.
pub const TREE_SHA256: &str = "792ac116afb36ddf9a315e239563d65e020f3a1841061ce554f26cc558581974";

/// Mirror to download from: the environment override, else Cambridge's.
pub fn mirror() -> String {
    std::env::var(MIRROR_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_MIRROR.to_owned())
}

/// The images of a faces tree: `s<N>/<M>.pgm` paths relative to `root`, sorted.
fn image_paths(root: &Path) -> Result<Vec<String>, DataError> {
    let mut out = Vec::new();
    for class in std::fs::read_dir(root).map_err(|e| DataError::io(root, e))? {
        let class = class.map_err(|e| DataError::io(root, e))?;
        let class_name = class.file_name().to_string_lossy().into_owned();
        if !class_name.starts_with('s') || !class.path().is_dir() {
            continue;
        }
        let dir = class.path();
        for img in std::fs::read_dir(&dir).map_err(|e| DataError::io(&dir, e))? {
            let img = img.map_err(|e| DataError::io(&dir, e))?;
            let name = img.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pgm") {
                out.push(format!("{class_name}/{name}"));
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Tree digest of the faces under `root` (see module docs).
pub fn tree_digest(root: &Path) -> Result<String, DataError> {
    let mut manifest = Sha256::new();
    for rel in image_paths(root)? {
        let path = root.join(&rel);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        manifest.update(format!("{rel} {}\n", hex::encode(Sha256::digest(&bytes))));
    }
    Ok(hex::encode(manifest.finalize()))
}

/// The faces in the download cache (`cache_root/att_faces`), downloaded from `mirror` (else
/// [`mirror()`]) first if they are not there yet.
pub fn locate(cache_root_dir: Option<&Path>, mirror: Option<&str>) -> Result<PathBuf, DataError> {
    let root = cache_root(cache_root_dir)?;
    let dest = root.join(DIR_NAME);
    // Only a verified tree is ever renamed to this name.
    if dest.is_dir() {
        return Ok(dest);
    }
    let base = mirror.map(str::to_owned).unwrap_or_else(self::mirror);
    download_verified(&base, &root)
}

/// Downloads `base_url/att_faces.zip`, unpacks it and installs the images as
/// `dest_root/att_faces` if their tree digest is [`TREE_SHA256`].
///
/// Returns the installed directory. Nothing is left in `dest_root` if this fails.
pub fn download_verified(base_url: &str, dest_root: &Path) -> Result<PathBuf, DataError> {
    let url = format!("{}/{ARCHIVE}", base_url.trim_end_matches('/'));
    std::fs::create_dir_all(dest_root).map_err(|e| DataError::io(dest_root, e))?;
    let dest = dest_root.join(DIR_NAME);
    let zip_path = temp_name(dest_root, ARCHIVE);
    let _zip_guard = TempGuard(Some(zip_path.clone()));
    let unpacked = temp_name(dest_root, DIR_NAME);
    let mut dir_guard = TempGuard(Some(unpacked.clone()));
    tracing::info!(%url, dest = %dest.display(), "downloading the AT&T faces");

    fetch_to(&url, &zip_path)?;
    let bad_archive = |reason: String| DataError::Download {
        url: url.clone(),
        reason: format!("not a usable zip archive: {reason}"),
    };
    let file = std::fs::File::open(&zip_path).map_err(|e| DataError::io(&zip_path, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad_archive(e.to_string()))?;
    // The images may sit at the top of the archive or inside one folder (e.g. `att_faces/`).
    archive
        .extract_unwrapped_root_dir(&unpacked, zip::read::root_dir_common_filter)
        .map_err(|e| bad_archive(e.to_string()))?;
    let actual = tree_digest(&unpacked)?;
    if actual != TREE_SHA256 {
        return Err(DataError::TreeChecksum {
            url,
            expected: TREE_SHA256.to_owned(),
            actual,
        });
    }
    match std::fs::rename(&unpacked, &dest) {
        Ok(()) => dir_guard.0 = None,
        // Another process installed it meanwhile; it, too, was verified before its rename.
        Err(_) if dest.is_dir() => {}
        Err(e) => return Err(DataError::io(&dest, e)),
    }
    Ok(dest)
}
