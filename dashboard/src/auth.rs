//! What the host tells the dashboard about a visitor. The host's access layer (the
//! coordinator's login sessions) inserts a [`Viewer`] into each request of a visitor who may
//! act (cancel, pause, retry, priority); without one the dashboard is read-only: no action
//! forms, and action requests are refused.

/// Name of the hidden form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// A visitor allowed to act, with the CSRF token of their session (every action form carries
/// it, and an action whose form does not is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub csrf: String,
}

impl Viewer {
    /// Whether a submitted CSRF token is this session's (compared without an early exit).
    pub fn csrf_matches(&self, submitted: &str) -> bool {
        let (a, b) = (self.csrf.as_bytes(), submitted.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// A change a visitor asks for from the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    PauseSweep(String),
    ResumeSweep(String),
    /// Queue the sweep's failed jobs again.
    RetrySweep(String),
    /// Cancel every unfinished job of the sweep.
    CancelSweep(String),
    SetPriority(String, i64),
    CancelJob(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let v = Viewer { csrf: "abc".into() };
        assert!(v.csrf_matches("abc"));
        assert!(!v.csrf_matches("abd"));
        assert!(!v.csrf_matches("ab"));
        assert!(!v.csrf_matches(""));
    }
}
