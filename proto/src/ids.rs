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

/// One lease of an attempt: a random 64-bit value made when the attempt is leased and sent back
/// with every request about it. Attempt ids repeat after a database is restored from a backup;
/// the token does not, so a worker holding the old lease is refused. Never 0: 0 on the wire
/// means "no token" (a worker older than the field, or an attempt leased before tokens existed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(pub u64);

impl LeaseToken {
    /// The token as sent on the wire: `None` for 0.
    pub fn from_wire(v: u64) -> Option<LeaseToken> {
        (v != 0).then_some(LeaseToken(v))
    }

    /// The wire value of an optional token: 0 for none.
    pub fn to_wire(t: Option<LeaseToken>) -> u64 {
        t.map_or(0, |t| t.0)
    }
}

impl std::fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
