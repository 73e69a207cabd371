//! Connection guards shared by the gRPC and HTTP listeners: a cap on open connections, an idle
//! timeout and TCP keepalive, so that idle or stalled clients cannot use up file descriptors and
//! lock real workers out.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Limits applied to every accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once; further clients wait in the kernel's accept queue until one
    /// closes.
    pub max_connections: usize,
    /// A connection with no byte read or written for this long is closed. Must exceed the
    /// longest silence of a healthy connection: the dashboard's event stream writes every 15 s,
    /// gRPC pings every 10 s.
    pub idle_timeout: Duration,
    /// HTTP/1: time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// TCP keepalive probes start after this much silence (finds peers that vanished).
    pub tcp_keepalive: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(30),
            tcp_keepalive: Duration::from_secs(60),
        }
    }
}

/// A listener that holds at most `max_connections` open connections.
pub(crate) struct GuardedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    limits: ConnLimits,
    /// Consecutive accept failures, for the back-off.
    failures: u32,
}

impl GuardedListener {
    pub fn new(listener: TcpListener, limits: ConnLimits) -> Self {
        GuardedListener {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            failures: 0,
        }
    }

    /// Waits for a free slot, then for a connection. Accept errors (out of file descriptors,
    /// a connection reset before it was accepted) are logged and retried with back-off.
    pub(crate) async fn accept(&mut self) -> (Guarded<TcpStream>, std::net::SocketAddr) {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    self.failures = 0;
                    let _ = tcp.set_nodelay(true);
                    let ka = socket2::TcpKeepalive::new().with_time(self.limits.tcp_keepalive);
                    if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&ka) {
                        tracing::debug!(error = %e, %peer, "setting TCP keepalive");
                    }
                    return (Guarded::new(tcp, self.limits.idle_timeout, permit), peer);
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    let wait = backoff(self.failures);
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "accepting a connection failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The accepted connections as a stream (what tonic's `serve_with_incoming` takes).
    pub(crate) fn into_stream(
        self,
    ) -> impl futures::Stream<Item = io::Result<Guarded<TcpStream>>> + Send + 'static {
        futures::stream::unfold(self, |mut l| async move {
            let (io, _) = l.accept().await;
            Some((Ok(io), l))
        })
    }
}

/// 50 ms doubling up to 2 s, each wait scaled by a random factor in [0.5, 1.0].
fn backoff(failures: u32) -> Duration {
    let base = 50u64 << failures.min(6);
    let base = base.min(2000);
    // The clock's low bits are as good a jitter source as any for this.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.5 + 0.5 * f64::from(nanos % 1000) / 1000.0;
    Duration::from_millis((base as f64 * factor) as u64)
}

/// A connection that fails with `TimedOut` once it has been idle (no byte read or written) for
/// the idle timeout, and that frees its slot of the listener's cap when dropped.
pub(crate) struct Guarded<S> {
    inner: S,
    idle: Duration,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl<S> Guarded<S> {
    fn new(inner: S, idle: Duration, slot: OwnedSemaphorePermit) -> Self {
        let now = Instant::now();
        Guarded {
            inner,
            idle,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            _slot: slot,
        }
    }

    /// Called when the inner stream is not ready: fails once the connection has been idle long
    /// enough, else makes sure the task is woken when it would be. The timer is re-armed lazily
    /// (not on every byte) to keep busy connections cheap.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.last_activity + self.idle;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if Instant::now() >= deadline => {
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for too long",
                    ));
                }
                Poll::Ready(()) => {}
            }
        }
    }
}

impl<S> Guarded<S> {
    /// A write's outcome: bytes moved count as activity; a pending write is idle time.
    fn after_write(
        &mut self,
        r: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.poll_idle(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        <TcpStream as tonic::transport::server::Connected>::connect_info(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(max: usize, idle_ms: u64) -> ConnLimits {
        ConnLimits {
            max_connections: max,
            idle_timeout: Duration::from_millis(idle_ms),
            ..ConnLimits::default()
        }
    }

    #[tokio::test]
    async fn idle_connection_times_out_and_frees_its_slot() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut g = GuardedListener::new(l, limits(1, 300));
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let (mut s1, _) = g.accept().await;
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let e = s1.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(290));
        // The cap of one: a second connection is accepted only once the first is gone.
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(200), g.accept()).await;
        assert!(second.is_err(), "accepted beyond the cap");
        drop(s1);
        let second = tokio::time::timeout(Duration::from_secs(2), g.accept()).await;
        assert!(second.is_ok(), "slot not freed");
    }

    #[tokio::test]
    async fn traffic_keeps_a_connection_open() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut g = GuardedListener::new(l, limits(4, 300));
        let mut c = TcpStream::connect(addr).await.unwrap();
        let (mut s, _) = g.accept().await;
        let writer = tokio::spawn(async move {
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                c.write_all(b"x").await.unwrap();
            }
            c
        });
        let mut got = 0;
        let mut buf = [0u8; 8];
        while got < 8 {
            got += s.read(&mut buf).await.expect("active connection kept");
        }
        let _c = writer.await.unwrap();
        assert_eq!(got, 8);
    }
}
