//! Checkpoint transfer: uploads are streamed to the artifact directory, verified (size and
//! sha256) and recorded; downloads stream a stored checkpoint to any worker that resumes.

use std::path::{Path, PathBuf};

use proto::rpc::{self, download_chunk, upload_chunk};
use proto::{AttemptId, JobId};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::Shared;
use super::convert;
use super::error::{RpcError, remap_codec_status};
use crate::sched::fencing;
use crate::store::ArtifactRow;

/// Bytes per download chunk (well under the message limit).
pub(crate) const CHUNK: usize = 256 * 1024;
/// Largest accepted checkpoint.
pub(crate) const MAX_CHECKPOINT: u64 = 4 * 1024 * 1024 * 1024;

async fn next_chunk(
    inbound: &mut Streaming<rpc::UploadChunk>,
) -> Result<Option<upload_chunk::Part>, RpcError> {
    match inbound.message().await {
        Ok(Some(c)) => Ok(c.part),
        Ok(None) => Ok(None),
        Err(s) => {
            let s = remap_codec_status(s);
            match s.code() {
                tonic::Code::ResourceExhausted => Err(RpcError::TooLarge("upload chunk".into())),
                _ => Err(RpcError::InvalidArgument(format!(
                    "upload stream broke: {}",
                    s.message()
                ))),
            }
        }
    }
}

/// Receives one upload; returns the artifact id (the same id again for a repeated upload).
pub(super) async fn upload(
    shared: &Shared,
    mut inbound: Streaming<rpc::UploadChunk>,
) -> Result<i64, RpcError> {
    let Some(upload_chunk::Part::Header(h)) = next_chunk(&mut inbound).await? else {
        return Err(RpcError::InvalidArgument(
            "an upload starts with its header".into(),
        ));
    };
    convert::check_version(h.protocol_version)?;
    let worker = convert::worker_id(h.worker_id)?;
    let attempt = convert::attempt_id(h.attempt_id)?;
    convert::attempt_database(&h.database_id, shared.store.database_id(), attempt)?;
    let sha = convert::sha256_hex(&h.sha256)?;
    if h.size > MAX_CHECKPOINT {
        return Err(RpcError::TooLarge(format!(
            "checkpoint of {} bytes",
            h.size
        )));
    }
    let store = &shared.store;
    let view = store.attempt_view(attempt).await?;
    let token = convert::lease_token(h.lease_token);
    fencing::check(attempt.0, view.as_ref(), worker.0, token).map_err(|f| {
        crate::obs::fenced(crate::obs::FencedCall::Upload);
        RpcError::Fenced(f)
    })?;
    let job = JobId(view.map(|v| v.job).unwrap_or_default());
    if let Some(a) = store
        .find_artifact(attempt, i64::from(h.epoch), &sha)
        .await?
    {
        return Ok(a.id);
    }
    let rel = PathBuf::from(format!("job-{job}")).join(format!(
        "attempt-{attempt}-epoch-{:04}-{}.ckpt",
        h.epoch,
        &sha[..12]
    ));
    let path = shared.cfg.artifact_dir.join(&rel);
    let part = path.with_extension("part");
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let received = receive(&mut inbound, &part, h.size).await;
    let (size, digest) = match received {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    if size != h.size || digest != sha {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(RpcError::InvalidArgument(format!(
            "checkpoint does not match its header (size {size} vs {}, sha256 {} vs {sha})",
            h.size, digest
        )));
    }
    tokio::fs::rename(&part, &path).await?;
    // The id from the insert itself: another upload's retention may already have removed
    // this row when it is not the job's newest, so it cannot be looked up again.
    let id = store
        .record_artifact(&ArtifactRow {
            job,
            attempt,
            kind: "checkpoint".into(),
            epoch: i64::from(h.epoch),
            path: rel.to_string_lossy().into_owned(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            sha256: sha.clone(),
        })
        .await?;
    tracing::debug!(%job, %attempt, epoch = h.epoch, size, artifact = id, "checkpoint stored");
    crate::retention::after_checkpoint(store, &shared.cfg.artifact_dir, job).await;
    Ok(id)
}

async fn receive(
    inbound: &mut Streaming<rpc::UploadChunk>,
    part: &Path,
    declared: u64,
) -> Result<(u64, String), RpcError> {
    let mut file = tokio::fs::File::create(part).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(p) = next_chunk(inbound).await? {
        let upload_chunk::Part::Data(bytes) = p else {
            return Err(RpcError::InvalidArgument("a second upload header".into()));
        };
        size += bytes.len() as u64;
        if size > declared {
            return Err(RpcError::InvalidArgument(
                "more bytes than the header announced".into(),
            ));
        }
        hasher.update(&bytes);
        file.write_all(&bytes).await?;
    }
    file.sync_all().await?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Streams a stored checkpoint: header first, then data.
pub(super) async fn download(
    shared: &Shared,
    r: rpc::DownloadRequest,
) -> Result<mpsc::Receiver<Result<rpc::DownloadChunk, Status>>, RpcError> {
    convert::check_version(r.protocol_version)?;
    let worker = convert::worker_id(r.worker_id)?;
    convert::worker_database(&r.database_id, shared.store.database_id(), worker)?;
    let id = convert::id("artifact_id", r.artifact_id)?;
    let a = shared
        .store
        .artifact(id)
        .await?
        .ok_or_else(|| RpcError::NotFound(format!("artifact {id}")))?;
    let path = shared.cfg.artifact_dir.join(&a.path);
    let mut file = tokio::fs::File::open(&path).await?;
    let (tx, rx) = mpsc::channel(4);
    let header = convert::artifact_ref(&a);
    let attempt: AttemptId = a.attempt;
    tokio::spawn(async move {
        let chunk = |part| Ok(rpc::DownloadChunk { part: Some(part) });
        if tx
            .send(chunk(download_chunk::Part::Header(header)))
            .await
            .is_err()
        {
            return;
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    if tx
                        .send(chunk(download_chunk::Part::Data(buf[..n].to_vec())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let e = RpcError::Io(e);
                    tracing::warn!(%attempt, error = %e, "checkpoint download broke");
                    let _ = tx.send(Err(Status::from(e))).await;
                    return;
                }
            }
        }
    });
    Ok(rx)
}
