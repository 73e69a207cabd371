//! Typed row ids shared by the coordinator, the worker and the wire protocol.

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { self.0.fmt(f) }
        }
    };
}

id!(
    /// A submitted sweep.
    SweepId
);
id!(
    /// One cell of a sweep.
    JobId
);
id!(
    /// One try at running a job; fences stale reports.
    AttemptId
);
id!(
    /// A registered worker process.
    WorkerId
);
