//! Errors of the gRPC service and the ONE mapping to `tonic::Status`: what the client did wrong
//! is said plainly; what went wrong inside (SQL, disk) is logged and answered generically.

use tonic::{Code, Status};

use crate::sched::Fence;
use crate::store::StoreError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RpcError {
    #[error("protocol version {got} is not supported; this coordinator speaks {want}")]
    ProtocolVersion { got: u32, want: u32 },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Fenced(Fence),
    #[error("unknown worker {0}; register again")]
    UnknownWorker(i64),
    #[error(
        "worker {0} belongs to another database (the coordinator's was replaced); register again"
    )]
    WorkerOfOtherDatabase(i64),
    #[error("{0} belongs to another database (the coordinator's was replaced); drop its work")]
    OtherDatabase(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("artifact storage: {0}")]
    Io(#[from] std::io::Error),
}

impl From<RpcError> for Status {
    fn from(e: RpcError) -> Status {
        match e {
            RpcError::ProtocolVersion { .. } => Status::failed_precondition(e.to_string()),
            RpcError::InvalidArgument(m) => Status::invalid_argument(m),
            RpcError::Fenced(f) => Status::failed_precondition(f.to_string()),
            // NOT_FOUND is what makes a worker register again, as for an unknown worker.
            RpcError::UnknownWorker(_) | RpcError::WorkerOfOtherDatabase(_) => {
                Status::not_found(e.to_string())
            }
            RpcError::OtherDatabase(_) => Status::failed_precondition(e.to_string()),
            RpcError::NotFound(m) => Status::not_found(m),
            RpcError::TooLarge(m) => Status::resource_exhausted(m),
            RpcError::Store(inner) => {
                // Busy databases and full disks are transient: nothing was stored, and the
                // worker retries with backoff once the operator makes room.
                tracing::error!(error = %inner, "store error while serving a worker");
                if inner.is_full() {
                    Status::unavailable(
                        "the coordinator's database or disk is full; nothing was stored, retry later",
                    )
                } else if inner.is_busy() {
                    Status::unavailable("coordinator busy, retry")
                } else {
                    Status::internal("internal error in the coordinator (see its log)")
                }
            }
            RpcError::Io(inner) => {
                tracing::error!(error = %inner, "artifact storage error while serving a worker");
                if inner.kind() == std::io::ErrorKind::StorageFull {
                    Status::unavailable(
                        "the coordinator's disk is full; nothing was stored, retry later",
                    )
                } else {
                    Status::internal("internal error in the coordinator (see its log)")
                }
            }
        }
    }
}

/// Tonic reports an oversized message as OUT_OF_RANGE and undecodable protobuf as INTERNAL
/// (with decoder text). Clients should see RESOURCE_EXHAUSTED and INVALID_ARGUMENT: the fault
/// is theirs, and INTERNAL would read as ours.
pub(crate) fn remap_codec_status(s: Status) -> Status {
    match s.code() {
        Code::OutOfRange if s.message().contains("message length too large") => {
            Status::resource_exhausted("message larger than the coordinator's limit")
        }
        Code::Internal if s.message().starts_with("failed to decode Protobuf message") => {
            Status::invalid_argument("malformed protobuf message")
        }
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internals_do_not_leak() {
        let e = RpcError::Store(StoreError::Corrupt("SELECT secret FROM attempts".into()));
        let s = Status::from(e);
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("SELECT"), "{}", s.message());
        let s = Status::from(RpcError::ProtocolVersion { got: 9, want: 1 });
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains('9'));
    }

    #[test]
    fn a_full_disk_is_transient() {
        let e = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let s = Status::from(RpcError::Io(e));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("full"), "{}", s.message());
    }

    #[test]
    fn codec_statuses_are_remapped() {
        let big = Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
        );
        assert_eq!(remap_codec_status(big).code(), Code::ResourceExhausted);
        let bad = Status::internal("failed to decode Protobuf message: invalid wire type");
        assert_eq!(remap_codec_status(bad).code(), Code::InvalidArgument);
        assert_eq!(
            remap_codec_status(Status::internal("x")).code(),
            Code::Internal
        );
    }
}
