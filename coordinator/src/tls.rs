//! TLS of the coordinator's listeners (`--tls-cert`, `--tls-key`, and `--client-ca` for mutual
//! TLS): one rustls configuration (ring provider) for gRPC and the dashboard, and handshakes
//! run per connection, so a slow or hostile client cannot hold up the others.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::conn::{Guarded, GuardedListener};

/// A client has this long to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on the gRPC listener (each holds a connection slot anyway).
const CONCURRENT_HANDSHAKES: usize = 64;

/// The PEM files of the coordinator's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA whose certificates clients must present (mutual TLS); `None`: no client certificates.
    pub client_ca: Option<PathBuf>,
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] proto::secret::SecretError),
    #[error("--client-ca {0}: {1}")]
    ClientCa(PathBuf, String),
    #[error("--tls-cert {} with --tls-key {}: {source}", .cert.display(), .key.display())]
    Config {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The loaded server side of TLS, shared by the gRPC service and the dashboard.
#[derive(Clone)]
pub struct ServerTls {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    files: TlsFiles,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads and checks the files (the key must match the certificate).
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = proto::secret::certificates("--tls-cert", &files.cert)?;
        let key = proto::secret::private_key("--tls-key", &files.key)?;
        let config_err = |source| TlsError::Config {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?;
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in proto::secret::certificates("--client-ca", path)? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::ClientCa(path.clone(), e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::ClientCa(path.clone(), e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut grpc = builder.with_single_cert(chain, key).map_err(config_err)?;
        let mut http = grpc.clone();
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            grpc: Arc::new(grpc),
            http: Arc::new(http),
            files: files.clone(),
        })
    }

    /// The files it was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    pub(crate) fn http_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.http.clone())
    }

    fn grpc_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.grpc.clone())
    }
}

/// The TLS handshake of one accepted connection; `None` (logged) when it fails: a wrong CA on
/// the client, a cleartext client, a scanner.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    io: Guarded<TcpStream>,
    peer: SocketAddr,
) -> Option<TlsConn> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(s)) => Some(TlsConn(s)),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// The gRPC listener's connections after their handshakes, which run concurrently.
pub(crate) fn incoming(
    listener: GuardedListener,
    tls: &ServerTls,
) -> impl Stream<Item = io::Result<TlsConn>> + Send + 'static {
    let acceptor = tls.grpc_acceptor();
    futures::stream::unfold(listener, |mut l| async move {
        let accepted = l.accept().await;
        Some((accepted, l))
    })
    .map(move |(io, peer)| {
        let acceptor = acceptor.clone();
        async move { handshake(&acceptor, io, peer).await }
    })
    .buffer_unordered(CONCURRENT_HANDSHAKES)
    .filter_map(|c| async move { c.map(Ok) })
}

/// A server-side TLS connection over a guarded TCP connection.
pub(crate) struct TlsConn(tokio_rustls::server::TlsStream<Guarded<TcpStream>>);

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

// tonic asks each connection for its peer address (TLS itself adds nothing it reads).
impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}
