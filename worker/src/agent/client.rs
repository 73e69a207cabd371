//! The worker's connection to the coordinator: a lazily (re)connecting channel with the shared
//! token, retry backoff, and the checkpoint transfer calls.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use proto::rpc::coordinator_client::CoordinatorClient;
use proto::rpc::{self, PROTOCOL_VERSION, download_chunk, upload_chunk};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::AgentError;
use super::tls::{ClientTls, Connector};

/// Bytes per upload chunk (well under the coordinator's message limit).
const CHUNK: usize = 256 * 1024;

/// Adds `authorization: Bearer <token>` to every call. Shared by the clones of a client, so
/// that a token found later (a local coordinator that started after this worker) applies to
/// all of them.
#[derive(Clone, Default)]
pub struct Auth(Arc<RwLock<Option<MetadataValue<Ascii>>>>);

impl Auth {
    pub fn new(token: Option<&str>) -> Result<Auth, AgentError> {
        let auth = Auth::default();
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            auth.set(t)?;
        }
        Ok(auth)
    }

    /// Presents `token` from now on.
    pub fn set(&self, token: &str) -> Result<(), AgentError> {
        let v = format!("Bearer {token}")
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| AgentError::Config("the token must be printable ASCII".into()))?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(v);
        Ok(())
    }

    /// Whether `token` is the one presented.
    pub fn is(&self, token: &str) -> bool {
        let cur = self.0.read().unwrap_or_else(|p| p.into_inner());
        cur.as_ref()
            .is_some_and(|v| v.as_bytes() == format!("Bearer {token}").as_bytes())
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let cur = self.0.read().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = &*cur {
            req.metadata_mut()
                .insert(proto::rpc::AUTH_HEADER, v.clone());
        }
        Ok(req)
    }
}

pub type Client = CoordinatorClient<InterceptedService<Channel, Auth>>;

/// A client that connects on first use and reconnects after failures, so a worker may start
/// before its coordinator. An `https://` URL trusts the system's roots; see [`connect_with`].
pub fn connect(url: &str, token: Option<&str>) -> Result<Client, AgentError> {
    connect_with(url, token, &ClientTls::default())
}

/// [`connect`] with the worker's TLS settings (`--ca-cert`, client certificate).
pub fn connect_with(url: &str, token: Option<&str>, tls: &ClientTls) -> Result<Client, AgentError> {
    connect_auth(url, Auth::new(token)?, tls)
}

/// [`connect_with`], presenting whatever token `auth` holds at each call.
pub fn connect_auth(url: &str, auth: Auth, tls: &ClientTls) -> Result<Client, AgentError> {
    let connector = Connector::new(url, tls)?;
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| AgentError::Config(format!("coordinator URL `{url}`: {e}")))?
        // Bounds the connector's whole work: TCP, the TLS handshake and the first answer.
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    Ok(
        CoordinatorClient::with_interceptor(endpoint.connect_with_connector_lazy(connector), auth)
            .max_decoding_message_size(16 * 1024 * 1024),
    )
}

/// Exponential backoff with jitter, for reconnects and retried calls.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
    jitter_state: u64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(1);
        Backoff {
            next: min,
            min,
            max,
            jitter_state: seed | 1,
        }
    }

    /// The wait before the next try: doubles up to `max`, then +-20 % jitter so that workers
    /// cut off together do not reconnect in lockstep.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // xorshift: cheap, good enough for jitter.
        self.jitter_state ^= self.jitter_state << 13;
        self.jitter_state ^= self.jitter_state >> 7;
        self.jitter_state ^= self.jitter_state << 17;
        let frac = (self.jitter_state % 401) as f64 / 1000.0 + 0.8; // 0.8 ..= 1.2
        base.mul_f64(frac).min(self.max)
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Errors worth retrying: the coordinator is away, busy or restarting.
pub(crate) fn is_transient(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Aborted
            | Code::Cancelled
    )
}

/// sha256 and size of a file, computed off the async threads.
async fn digest(path: &Path) -> std::io::Result<(String, u64)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        let mut h = Sha256::new();
        let n = std::io::copy(&mut f, &mut h)?;
        Ok((hex::encode(h.finalize()), n))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Uploads a checkpoint file; returns its artifact id. `database_id` is the coordinator
/// database the attempt was leased from.
pub async fn upload(
    client: &Client,
    worker_id: i64,
    database_id: &str,
    attempt_id: i64,
    lease_token: u64,
    epoch: u32,
    path: &Path,
) -> Result<i64, Status> {
    let (sha256, size) = digest(path)
        .await
        .map_err(|e| Status::internal(format!("reading {}: {e}", path.display())))?;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Status::internal(format!("opening {}: {e}", path.display())))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let header = rpc::UploadChunk {
        part: Some(upload_chunk::Part::Header(rpc::UploadHeader {
            protocol_version: PROTOCOL_VERSION,
            worker_id,
            attempt_id,
            epoch,
            size,
            sha256,
            database_id: database_id.to_owned(),
            lease_token,
        })),
    };
    tokio::spawn(async move {
        if tx.send(header).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            match file.read(&mut buf).await {
                Ok(0) | Err(_) => return, // a short file fails the coordinator's size check
                Ok(n) => {
                    let c = rpc::UploadChunk {
                        part: Some(upload_chunk::Part::Data(buf[..n].to_vec())),
                    };
                    if tx.send(c).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let reply = client
        .clone()
        .upload_checkpoint(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    Ok(reply.into_inner().artifact_id)
}

/// Downloads a checkpoint to `dest`, verifying size and sha256.
pub async fn download(
    client: &Client,
    worker_id: i64,
    database_id: &str,
    artifact: &rpc::ArtifactRef,
    dest: &Path,
) -> Result<(), Status> {
    let io = |e: std::io::Error| Status::internal(format!("writing {}: {e}", dest.display()));
    let mut stream = client
        .clone()
        .download_checkpoint(rpc::DownloadRequest {
            protocol_version: PROTOCOL_VERSION,
            worker_id,
            artifact_id: artifact.artifact_id,
            database_id: database_id.to_owned(),
        })
        .await?
        .into_inner();
    let part = dest.with_extension("part");
    let mut file = tokio::fs::File::create(&part).await.map_err(io)?;
    let mut h = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.message().await? {
        match chunk.part {
            Some(download_chunk::Part::Data(d)) => {
                size += d.len() as u64;
                h.update(&d);
                file.write_all(&d).await.map_err(io)?;
            }
            Some(download_chunk::Part::Header(_)) | None => {}
        }
    }
    file.sync_all().await.map_err(io)?;
    let sha = hex::encode(h.finalize());
    if size != artifact.size || sha != artifact.sha256 {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(Status::data_loss(format!(
            "checkpoint {} arrived corrupted",
            artifact.artifact_id
        )));
    }
    tokio::fs::rename(&part, dest).await.map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(
            d[0] >= Duration::from_millis(80) && d[0] <= Duration::from_millis(120),
            "{d:?}"
        );
        assert!(d[3] >= Duration::from_millis(640), "{d:?}");
        assert!(d.iter().all(|x| *x <= Duration::from_secs(2)));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn bad_urls_are_config_errors() {
        assert!(matches!(
            connect("not a url", None),
            Err(AgentError::Config(_))
        ));
    }
}
