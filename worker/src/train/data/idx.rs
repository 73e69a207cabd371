//! Reader for the IDX file format (MNIST / Fashion-MNIST), gzip-compressed or raw.
//!
//! Every structural problem (bad magic, unsupported element type, dimensions that do not
//! match the byte count, truncated gzip stream) is reported as a [`DataError`] naming the
//! file: a short read must never silently produce a smaller data set.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use super::DataError;

/// An unsigned-byte IDX array: its dimensions and row-major data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// The two magic bytes that open every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// IDX element type code for unsigned bytes, the only one the image data sets use.
const IDX_U8: u8 = 0x08;

/// Reads and validates an IDX file (gzip detected by its magic bytes).
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bytes = decompress_if_gzip(&raw, path)?;
    parse_idx(&bytes, path)
}

/// Returns the decompressed content if `raw` is a gzip stream, else `raw` itself.
pub fn decompress_if_gzip(raw: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    if raw.len() >= 2 && raw[..2] == GZIP_MAGIC {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(raw)
            .read_to_end(&mut out)
            .map_err(|e| DataError::corrupt(path, format!("invalid gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw.to_vec())
    }
}

/// Parses an in-memory IDX file; `path` is only used in error messages.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    if bytes.len() < 4 {
        return Err(DataError::corrupt(
            path,
            format!("{} bytes is too short for an IDX header", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::corrupt(
            path,
            format!(
                "bad IDX magic number {:02x}{:02x}{:02x}{:02x} (expected 0000 08 <ndim>)",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != IDX_U8 {
        return Err(DataError::corrupt(
            path,
            format!(
                "unsupported IDX element type 0x{:02x} (only unsigned byte 0x08)",
                bytes[2]
            ),
        ));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 || ndim > 4 {
        return Err(DataError::corrupt(
            path,
            format!("IDX rank {ndim} is not 1..=4"),
        ));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(DataError::corrupt(
            path,
            format!("truncated IDX header ({} of {header} bytes)", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::corrupt(path, format!("IDX dimensions {dims:?} overflow")))?;
    let body = bytes.len() - header;
    if body != expected {
        let what = if body < expected {
            "truncated"
        } else {
            "trailing bytes in"
        };
        return Err(DataError::corrupt(
            path,
            format!("{what} IDX data: dimensions {dims:?} need {expected} bytes, file has {body}"),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Checks that an images file (`[N, H, W]`) and a labels file (`[N]`) belong together.
pub fn check_pair(
    images: &IdxArray,
    labels: &IdxArray,
    images_path: &Path,
    labels_path: &Path,
) -> Result<(), DataError> {
    if images.dims.len() != 3 {
        return Err(DataError::corrupt(
            images_path,
            format!(
                "expected a rank-3 image array, got dimensions {:?}",
                images.dims
            ),
        ));
    }
    if labels.dims.len() != 1 {
        return Err(DataError::corrupt(
            labels_path,
            format!(
                "expected a rank-1 label array, got dimensions {:?}",
                labels.dims
            ),
        ));
    }
    if images.dims[0] != labels.dims[0] {
        return Err(DataError::corrupt(
            labels_path,
            format!(
                "{} labels for {} images in {}",
                labels.dims[0],
                images.dims[0],
                images_path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn parses_valid_file() {
        let a = parse_idx(&idx(&[2, 3], &[1, 2, 3, 4, 5, 6]), Path::new("x")).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rejects_short_and_long_bodies() {
        let p = Path::new("/data/short-file");
        let e = parse_idx(&idx(&[2, 3], &[1, 2, 3]), p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/data/short-file") && e.contains("truncated"),
            "{e}"
        );
        let e = parse_idx(&idx(&[1], &[1, 2]), p).unwrap_err().to_string();
        assert!(e.contains("trailing"), "{e}");
    }

    #[test]
    fn rejects_bad_magic_and_type() {
        let p = Path::new("bad-magic.idx");
        let e = parse_idx(&[1, 2, 8, 1, 0, 0, 0, 0], p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad-magic.idx") && e.contains("magic"), "{e}");
        let e = parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 0], p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("element type"), "{e}");
    }
}
