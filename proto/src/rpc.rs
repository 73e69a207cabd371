//! Generated gRPC code of the `latentsweep.v1` protocol (see `proto/latentsweep/v1/`).

/// The protocol version this build speaks; carried by every request.
pub const PROTOCOL_VERSION: u32 = 1;

/// Metadata key of the shared token (`authorization: Bearer <token>`).
pub const AUTH_HEADER: &str = "authorization";

#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("latentsweep.v1");
}

pub use v1::*;
