//! Single-file checkpoints: model record + optimizer record + progress, written atomically.
//!
//! Layout: the 8-byte magic `LSWCKPT1`, a little-endian u64 header length, the JSON
//! [`CheckpointHeader`], then the model bytes and the optimizer bytes (Burn's named
//! MessagePack records at full precision), whose lengths the header states. Any size
//! mismatch is an error: a truncated checkpoint is never half-loaded.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::select::Selection;

const MAGIC: &[u8; 8] = b"LSWCKPT1";

/// Everything in a checkpoint besides the two records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CheckpointHeader {
    /// Last finished epoch (1-based); training resumes at `epoch + 1`.
    pub(crate) epoch: u32,
    /// Optimizer steps taken so far.
    pub(crate) step: u64,
    pub(crate) params: proto::JobParams,
    /// The run's evaluations so far, for result selection after a resume. Absent in
    /// checkpoints written before selection existed.
    #[serde(default)]
    pub(crate) selection: Selection,
    pub(crate) model_len: u64,
    pub(crate) optim_len: u64,
}

/// A checkpoint read back from disk.
#[derive(Debug, Clone)]
pub(crate) struct Checkpoint {
    pub(crate) header: CheckpointHeader,
    pub(crate) model: Vec<u8>,
    pub(crate) optim: Vec<u8>,
}

fn err(path: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes a checkpoint to `path` via a temporary file and a rename.
pub(crate) fn write(
    path: &Path,
    epoch: u32,
    step: u64,
    params: &proto::JobParams,
    selection: &Selection,
    model: &[u8],
    optim: &[u8],
) -> Result<(), TrainError> {
    let header = CheckpointHeader {
        epoch,
        step,
        params: params.clone(),
        selection: selection.clone(),
        model_len: model.len() as u64,
        optim_len: optim.len() as u64,
    };
    let json = serde_json::to_vec(&header).map_err(|e| err(path, e.to_string()))?;
    let io = |e: std::io::Error| TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&(json.len() as u64).to_le_bytes())?;
        f.write_all(&json)?;
        f.write_all(model)?;
        f.write_all(optim)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Reads and validates a checkpoint.
pub(crate) fn read(path: &Path) -> Result<Checkpoint, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(err(path, "not a latentsweep checkpoint (bad magic)"));
    }
    let hlen = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
    let rest = &bytes[16..];
    if rest.len() < hlen {
        return Err(err(path, "truncated header"));
    }
    let header: CheckpointHeader =
        serde_json::from_slice(&rest[..hlen]).map_err(|e| err(path, format!("bad header: {e}")))?;
    let body = &rest[hlen..];
    let (m, o) = (header.model_len as usize, header.optim_len as usize);
    if body.len() != m.saturating_add(o) {
        return Err(err(
            path,
            format!(
                "expected {} record bytes, found {} (truncated?)",
                m + o,
                body.len()
            ),
        ));
    }
    Ok(Checkpoint {
        model: body[..m].to_vec(),
        optim: body[m..].to_vec(),
        header,
    })
}

/// Whether a checkpoint made for `saved` can continue as `wanted` (only `epochs` and
/// `eval_every` may differ). Returns the first differing field otherwise.
pub(crate) fn compatible(
    saved: &proto::JobParams,
    wanted: &proto::JobParams,
) -> Result<(), String> {
    let mut a = saved.clone();
    a.epochs = wanted.epochs;
    a.eval_every = wanted.eval_every;
    if &a == wanted {
        Ok(())
    } else {
        Err(format!(
            "checkpoint was made for `{}`, not `{}`",
            saved.short_label(),
            wanted.short_label()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let dir = std::env::temp_dir().join(format!("ckpt-test-{}", std::process::id()));
        let path = dir.join("a.ckpt");
        let p = proto::JobParams::default();
        write(&path, 3, 42, &p, &Selection::default(), b"model", b"opt").unwrap();
        let c = read(&path).unwrap();
        assert_eq!((c.header.epoch, c.header.step), (3, 42));
        assert_eq!(
            (c.model.as_slice(), c.optim.as_slice()),
            (&b"model"[..], &b"opt"[..])
        );
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("a.ckpt") && e.contains("truncated"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
