//! TLS of the worker's connection: an `https://` coordinator URL means TLS (trusting `--ca-cert`,
//! else the system's roots; `--client-cert`/`--client-key` for mutual TLS), and the connector
//! checks, before handing the connection to HTTP/2, that the server speaks what the URL says, so
//! a mismatch is a clear error instead of a garbled HTTP/2 failure or silent cleartext.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, AlertDescription, ClientConfig, RootCertStore};
use tonic::codegen::http::Uri;

use super::AgentError;

mod pinned;

/// The HTTP/2 client connection preface (RFC 9113, 3.4): the first bytes hyper writes.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Certificates of the worker's side of TLS (all optional).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM file of the CA(s) that signed the coordinator's certificate; else the system roots.
    pub ca_cert: Option<PathBuf>,
    /// Trust exactly this certificate (the coordinator's own), whatever its names: how
    /// `--local-workers` children trust their parent on 127.0.0.1.
    pub pin_cert: Option<PathBuf>,
    /// This worker's certificate chain and key, for a coordinator started with `--client-ca`.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A connection failure that retrying cannot fix: the URL and the server disagree about TLS,
/// or about certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsFailure {
    #[error(
        "{url}: the coordinator speaks TLS but the URL says http://: use https:// (with \
         --ca-cert FILE if its certificate comes from a private CA)"
    )]
    ServerSpeaksTls { url: String },
    #[error(
        "{url}: TLS handshake failed, the coordinator answered in cleartext ({detail}): use \
         http://, or start the coordinator with --tls-cert and --tls-key"
    )]
    ServerSpeaksCleartext { url: String, detail: String },
    #[error(
        "{url}: TLS handshake failed, the coordinator's certificate is not trusted ({detail}): \
         pass the CA that signed it with --ca-cert FILE"
    )]
    Untrusted { url: String, detail: String },
    #[error(
        "{url}: the coordinator refused this worker's TLS client certificate ({detail}): it \
         requires mutual TLS; give --client-cert FILE and --client-key FILE signed by the CA it \
         trusts (its --client-ca)"
    )]
    ClientRefused { url: String, detail: String },
}

/// The [`TlsFailure`] somewhere in an error's source chain (tonic wraps connector errors).
pub fn failure_in(err: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(f) = e.downcast_ref::<TlsFailure>() {
            return Some(f.clone());
        }
        cur = e.source();
    }
    None
}

impl ClientTls {
    /// The rustls configuration (ring provider) for this worker.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, AgentError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| AgentError::Config(format!("TLS: {e}")))?;
        let builder = if let Some(pin) = &self.pin_cert {
            let cert = first_cert("--pin-cert", pin)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(pinned::Pinned::new(cert, provider)))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let mut cfg = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = proto::secret::certificates("--client-cert", cert).map_err(cfg_err)?;
                let key = proto::secret::private_key("--client-key", key).map_err(cfg_err)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    AgentError::Config(format!("--client-cert/--client-key do not match: {e}"))
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(AgentError::Config(
                    "--client-cert and --client-key go together".into(),
                ));
            }
        };
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    fn roots(&self) -> Result<RootCertStore, AgentError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_cert {
            Some(path) => {
                for cert in proto::secret::certificates("--ca-cert", path).map_err(cfg_err)? {
                    roots.add(cert).map_err(|e| {
                        AgentError::Config(format!("--ca-cert {}: {e}", path.display()))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "reading the system's trusted certificates");
                }
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(AgentError::Config(
                        "https:// coordinator: the system has no trusted root certificates; \
                         pass the coordinator's CA with --ca-cert FILE"
                            .into(),
                    ));
                }
            }
        }
        Ok(roots)
    }
}

fn cfg_err(e: proto::secret::SecretError) -> AgentError {
    AgentError::Config(e.to_string())
}

fn first_cert(
    flag: &'static str,
    path: &std::path::Path,
) -> Result<rustls::pki_types::CertificateDer<'static>, AgentError> {
    let mut certs = proto::secret::certificates(flag, path).map_err(cfg_err)?;
    Ok(certs.swap_remove(0))
}

/// Something a connection can be: a TCP stream, or TLS over one.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the coordinator's connections for tonic: TCP, TLS when the URL is `https://`, then the
/// HTTP/2 preface and the server's first bytes, which tell what the server really speaks.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: Option<TlsConnector>,
    url: Arc<str>,
}

impl Connector {
    /// For `url` (`http://` or `https://`).
    pub(crate) fn new(url: &str, tls: &ClientTls) -> Result<Self, AgentError> {
        let tls = if url.starts_with("https://") {
            Some(TlsConnector::from(tls.client_config()?))
        } else if url.starts_with("http://") {
            None
        } else {
            return Err(AgentError::Config(format!(
                "coordinator URL `{url}`: must start with http:// or https://"
            )));
        };
        Ok(Connector {
            tls,
            url: url.into(),
        })
    }

    async fn open(self, uri: Uri) -> Result<TokioIo<Prefaced>, BoxError> {
        let url = self.url.to_string();
        let host = uri
            .host()
            .ok_or_else(|| format!("{url}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        let (mut io, plain): (Box<dyn Io>, bool) = match &self.tls {
            None => (Box::new(tcp), true),
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("{url}: `{host}` is not a TLS server name: {e}"))?;
                match connector.connect(name, tcp).await {
                    Ok(s) => (Box::new(s), false),
                    Err(e) => return Err(handshake_failure(&url, e)),
                }
            }
        };
        io.write_all(PREFACE).await?;
        io.flush().await?;
        let mut first = vec![0u8; 256];
        // No timeout here: the endpoint's connect timeout bounds the whole of `open`.
        let n = match io.read(&mut first).await {
            Err(e) => return Err(handshake_failure(&url, e)),
            Ok(n) => n,
        };
        first.truncate(n);
        // A TLS record starts with its content type (0x15 alert, 0x16 handshake) and major
        // version 3; an HTTP/2 frame starting so would be over a megabyte, beyond any SETTINGS.
        if plain && n >= 2 && matches!(first[0], 0x15 | 0x16) && first[1] == 0x03 {
            return Err(TlsFailure::ServerSpeaksTls { url }.into());
        }
        Ok(TokioIo::new(Prefaced {
            inner: io,
            unsent_preface: PREFACE.len(),
            replay: first,
        }))
    }
}

impl tonic::codegen::Service<Uri> for Connector {
    type Response = TokioIo<Prefaced>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().open(uri))
    }
}

/// Sorts a TLS error into a [`TlsFailure`] when it is one; anything else (a reset, a timeout)
/// stays an ordinary, retryable connection error.
fn handshake_failure(url: &str, e: io::Error) -> BoxError {
    let url = url.to_owned();
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return Box::new(e);
    };
    let detail = tls.to_string();
    match tls {
        rustls::Error::InvalidCertificate(_) => TlsFailure::Untrusted { url, detail }.into(),
        rustls::Error::InvalidMessage(_) => {
            TlsFailure::ServerSpeaksCleartext { url, detail }.into()
        }
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied,
        ) => TlsFailure::ClientRefused { url, detail }.into(),
        _ => Box::new(e),
    }
}

/// A connection on which the preface was already sent and the server's first bytes read:
/// swallows hyper's own copy of the preface and replays those bytes, so hyper sees an
/// untouched HTTP/2 connection.
pub(crate) struct Prefaced {
    inner: Box<dyn Io>,
    /// Bytes of the preface hyper has yet to write (and that must not be sent twice).
    unsent_preface: usize,
    replay: Vec<u8>,
}

impl AsyncRead for Prefaced {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay[..n]);
            self.replay.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefaced {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.unsent_preface > 0 {
            let done = PREFACE.len() - self.unsent_preface;
            let n = self.unsent_preface.min(buf.len());
            if buf[..n] != PREFACE[done..done + n] {
                return Poll::Ready(Err(io::Error::other(
                    "the HTTP/2 client did not start with the connection preface",
                )));
            }
            self.unsent_preface -= n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn prefaced_swallows_the_preface_and_replays_the_first_bytes() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut p = Prefaced {
            inner: Box::new(a),
            unsent_preface: PREFACE.len(),
            replay: b"hello".to_vec(),
        };
        let mut out = PREFACE.to_vec();
        out.extend_from_slice(b"frames");
        p.write_all(&out).await.unwrap();
        p.flush().await.unwrap();
        let mut got = [0u8; 6];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"frames");
        let mut first = [0u8; 5];
        p.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"hello");
        // Anything but the preface first is refused, not forwarded.
        let (a, _b) = tokio::io::duplex(64);
        let mut p = Prefaced {
            inner: Box::new(a),
            unsent_preface: PREFACE.len(),
            replay: Vec::new(),
        };
        assert!(p.write_all(b"GET / HTTP/1.1\r\n").await.is_err());
    }

    #[test]
    fn urls_need_a_known_scheme() {
        let e = Connector::new("grpc://h:1", &ClientTls::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("http:// or https://"), "{e}");
    }
}
