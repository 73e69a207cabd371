//! `folder:<path>` data sets: one sub-folder per class holding PGM / PNG / JPEG images.
//!
//! * Class names are the sub-folder names in natural order (`s1, s2, …, s10`).
//! * Images are converted to 8-bit grey. Their common size is the size of the first image,
//!   divided by the smallest integer factor that brings its longer side to at most 64 px
//!   (AT&T faces: 112×92 → 56×46); every image is resized to it (triangle filter). This keeps
//!   CPU training fast; small images (≤ 64 px) are kept as they are.
//! * Split: within each class, files are ordered by sha256 of their file name and the first
//!   70 % (rounded, at least one image on each side when a class has ≥ 2) go to training.
//!   It depends on nothing but file names, so it is stable across machines and runs.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use sha2::{Digest, Sha256};

use super::{DataError, ImageSet, LoadedDataset};

/// Longest side (pixels) an image keeps without being downscaled.
const MAX_SIDE: u32 = 64;
/// Fraction of each class used for training.
const TRAIN_FRACTION: f64 = 0.7;

/// Natural ordering: digit runs compare by numeric value (`s2 < s10`).
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let tx = trim_zeros(dx);
                let ty = trim_zeros(dy);
                let ord = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if ord != Ordering::Equal {
                    return ord;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z.min(d.len().saturating_sub(1))..]
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "pgm" | "pnm" | "png" | "jpg" | "jpeg"
            )
        })
        .unwrap_or(false)
}

fn sorted_entries(dir: &Path, want_dirs: bool) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if (want_dirs && path.is_dir()) || (!want_dirs && path.is_file() && is_image(&path)) {
            out.push((name, path));
        }
    }
    out.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    Ok(out)
}

fn decode(path: &Path) -> Result<image::GrayImage, DataError> {
    let img = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|e| DataError::corrupt(path, format!("cannot decode image: {e}")))?;
    Ok(img.to_luma8())
}

/// Loads a class-per-sub-folder data set and splits it (see module docs).
pub fn load_folder(root: &Path) -> Result<LoadedDataset, DataError> {
    let classes = sorted_entries(root, true)?;
    if classes.len() < 2 {
        return Err(DataError::corrupt(
            root,
            format!(
                "a folder data set needs at least 2 class sub-folders, found {}",
                classes.len()
            ),
        ));
    }
    let mut size: Option<(u32, u32)> = None; // (w, h)
    let mut train = ImageSet::default();
    let mut test = ImageSet::default();
    let mut class_names = Vec::with_capacity(classes.len());
    for (label, (class_name, class_dir)) in classes.iter().enumerate() {
        let mut files = sorted_entries(class_dir, false)?;
        if files.is_empty() {
            return Err(DataError::corrupt(
                class_dir,
                "class folder holds no PGM/PNG/JPEG images",
            ));
        }
        files.sort_by_cached_key(|(name, _)| Sha256::digest(name.as_bytes()));
        let n = files.len();
        let mut n_train = ((n as f64) * TRAIN_FRACTION).round() as usize;
        if n >= 2 {
            n_train = n_train.clamp(1, n - 1);
        } else {
            n_train = n;
        }
        for (i, (_, path)) in files.iter().enumerate() {
            let img = decode(path)?;
            let (w, h) = *size.get_or_insert_with(|| {
                let f = img.width().max(img.height()).div_ceil(MAX_SIDE).max(1);
                (img.width() / f, img.height() / f)
            });
            let img = if img.dimensions() == (w, h) {
                img
            } else {
                image::imageops::resize(&img, w, h, FilterType::Triangle)
            };
            let set = if i < n_train { &mut train } else { &mut test };
            set.pixels.extend_from_slice(img.as_raw());
            set.labels.push(label as u32);
        }
        class_names.push(class_name.clone());
    }
    let (w, h) = size.expect("at least one image");
    Ok(LoadedDataset {
        h: h as usize,
        w: w as usize,
        class_names,
        train,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["s10", "s2", "s1", "s02x", "a", "s20"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["a", "s1", "s2", "s02x", "s10", "s20"]);
    }
}
