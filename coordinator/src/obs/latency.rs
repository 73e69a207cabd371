//! Tower layers timing every request into the latency histograms: one on the gRPC server
//! (labelled by method), one on the dashboard's router (labelled by matched route and status).
//! Labels come from bounded sets only (known methods, route patterns), so a client sending
//! made-up paths cannot grow the registry.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http;

/// The gRPC methods of `latentsweep.v1.Coordinator`; any other path is labelled `other`.
const GRPC_METHODS: &[&str] = &[
    "Register",
    "Lease",
    "Report",
    "UploadCheckpoint",
    "DownloadCheckpoint",
    "Complete",
    "Fail",
    "Release",
];
const GRPC_SERVICE: &str = "/latentsweep.v1.Coordinator/";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Grpc,
    Http,
}

/// Times requests into the gRPC or the HTTP latency histogram.
#[derive(Clone, Copy, Debug)]
pub struct LatencyLayer(Kind);

impl LatencyLayer {
    /// For the gRPC server (`tonic::transport::Server::layer`).
    pub fn grpc() -> Self {
        LatencyLayer(Kind::Grpc)
    }

    /// For the dashboard's router (`axum::Router::layer`, which runs after routing, so the
    /// matched route pattern is known).
    pub fn http() -> Self {
        LatencyLayer(Kind::Http)
    }
}

impl<S> tower::Layer<S> for LatencyLayer {
    type Service = Latency<S>;
    fn layer(&self, inner: S) -> Latency<S> {
        Latency {
            inner,
            kind: self.0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Latency<S> {
    inner: S,
    kind: Kind,
}

fn grpc_method(path: &str) -> &'static str {
    path.strip_prefix(GRPC_SERVICE)
        .and_then(|m| GRPC_METHODS.iter().find(|&&k| k == m))
        .copied()
        .unwrap_or("other")
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for Latency<S>
where
    S: tower::Service<http::Request<ReqB>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<ResB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let started = Instant::now();
        let kind = self.kind;
        let route = match kind {
            Kind::Grpc => grpc_method(req.uri().path()).to_owned(),
            Kind::Http => req
                .extensions()
                .get::<MatchedPath>()
                .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned()),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await;
            let secs = started.elapsed().as_secs_f64();
            let m = super::metrics();
            match kind {
                Kind::Grpc => m.grpc_seconds.with_label_values(&[&route]).observe(secs),
                Kind::Http => {
                    let status = resp
                        .as_ref()
                        .map_or_else(|_| "error".to_owned(), |r| r.status().as_u16().to_string());
                    m.http_seconds
                        .with_label_values(&[&route, &status])
                        .observe(secs);
                }
            }
            resp
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_labels_are_bounded() {
        assert_eq!(grpc_method("/latentsweep.v1.Coordinator/Lease"), "Lease");
        assert_eq!(grpc_method("/latentsweep.v1.Coordinator/Lease2"), "other");
        assert_eq!(grpc_method("/x.y/Lease"), "other");
    }
}
