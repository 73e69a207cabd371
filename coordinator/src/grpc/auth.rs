//! Connection-level guards: the shared-token interceptor and the layer that gives codec
//! errors the status codes clients should see.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::error::remap_codec_status;

/// Checks `authorization: Bearer <token>` when a token is configured.
#[derive(Clone)]
pub(crate) struct TokenCheck {
    expected: Option<Vec<u8>>,
}

impl TokenCheck {
    pub fn new(token: Option<&str>) -> Self {
        TokenCheck {
            expected: token.map(|t| format!("Bearer {t}").into_bytes()),
        }
    }
}

/// Compares without an early exit, so timing does not reveal a matching prefix.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(req);
        };
        match req.metadata().get(proto::rpc::AUTH_HEADER) {
            Some(v) if same_bytes(v.as_bytes(), expected) => Ok(req),
            Some(_) => Err(Status::unauthenticated("wrong token")),
            None => Err(Status::unauthenticated(
                "missing token (authorization: Bearer ...)",
            )),
        }
    }
}

/// Tower layer applying [`remap_codec_status`] to trailers-only error responses, which is how
/// tonic answers a unary request it could not decode before any handler ran.
#[derive(Clone, Copy, Default)]
pub(crate) struct CodecStatusLayer;

impl<S> tower::Layer<S> for CodecStatusLayer {
    type Service = CodecStatus<S>;
    fn layer(&self, inner: S) -> CodecStatus<S> {
        CodecStatus { inner }
    }
}

#[derive(Clone)]
pub(crate) struct CodecStatus<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for CodecStatus<S>
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
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            if let Some(status) = Status::from_header_map(resp.headers()) {
                let mapped = remap_codec_status(status.clone());
                if mapped.code() != status.code() {
                    let headers = resp.headers_mut();
                    headers.remove("grpc-status");
                    headers.remove("grpc-message");
                    headers.remove("grpc-status-details-bin");
                    // Only fails for statuses that cannot be encoded; ours always can.
                    let _ = mapped.add_header(headers);
                }
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check() {
        let mut open = TokenCheck::new(None);
        assert!(open.call(Request::new(())).is_ok());
        let mut guarded = TokenCheck::new(Some("s3cret"));
        assert_eq!(
            guarded.call(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(guarded.call(req).is_ok());
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer s3cre".parse().unwrap());
        assert!(guarded.call(req).is_err());
    }
}
