//! What the terminal says about the sweeps being served, as plain decisions without I/O: the
//! progress text of a sweep, when a plain (non-terminal) progress line is due, which sweeps are
//! watched, and how `--exit-when-done` exits. [`crate::monitor`] draws them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dashboard::SweepSummary;
use dashboard::pages::fmt_duration_ms;
use dashboard::pages::sweeps::eta_ms;
use proto::JobCounts;

/// Whether a sweep has nothing left to run (every job done, failed or cancelled).
pub(crate) fn is_finished(c: &JobCounts) -> bool {
    c.queued + c.running == 0
}

/// `3/8 done · 2 running · 3 queued · 0 failed` (cancelled only when there are some).
pub(crate) fn counts_text(c: &JobCounts) -> String {
    let mut t = format!(
        "{}/{} done · {} running · {} queued · {} failed",
        c.done,
        c.total(),
        c.running,
        c.queued,
        c.failed
    );
    if c.cancelled > 0 {
        t.push_str(&format!(" · {} cancelled", c.cancelled));
    }
    t
}

/// `ETA 4 min`, or why there is none yet.
pub(crate) fn eta_text(s: &SweepSummary) -> String {
    if is_finished(&s.counts) {
        return "finished".to_owned();
    }
    match eta_ms(s) {
        Some(ms) => format!("ETA {}", fmt_duration_ms(ms)),
        None if s.counts.running == 0 => "waiting for a worker".to_owned(),
        None => "ETA after the first job".to_owned(),
    }
}

/// The message next to a sweep's progress bar.
pub(crate) fn bar_message(s: &SweepSummary) -> String {
    format!("{} · {}", counts_text(&s.counts), eta_text(s))
}

/// One line of plain progress output (log files, pipes).
pub(crate) fn plain_line(s: &SweepSummary) -> String {
    format!("sweep {}: {}", s.name, bar_message(s))
}

/// The address a person opens: a wildcard listen address is reachable as `localhost`.
pub fn dashboard_url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "localhost".to_owned(),
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    format!("http://{host}:{}/", addr.port())
}

/// The sweeps shown: those named (submitted with `--sweep`), or every sweep when none was.
pub(crate) fn watched<'a>(all: &'a [SweepSummary], names: &[String]) -> Vec<&'a SweepSummary> {
    all.iter()
        .filter(|s| names.is_empty() || names.contains(&s.name))
        .collect()
}

/// Decides when a plain progress line is due: at once for a sweep first seen or just
/// finished, else on a change but at most once per `interval`, and once per `heartbeat`
/// without a change (so a log shows the coordinator is alive).
#[derive(Debug)]
pub(crate) struct LineThrottle {
    interval: Duration,
    heartbeat: Duration,
    last: HashMap<String, (JobCounts, Duration)>,
}

impl LineThrottle {
    pub fn new(interval: Duration, heartbeat: Duration) -> Self {
        LineThrottle {
            interval,
            heartbeat,
            last: HashMap::new(),
        }
    }

    /// Whether to print a line for sweep `name` at `now` (time since start); records it if so.
    pub(crate) fn due(&mut self, name: &str, counts: JobCounts, now: Duration) -> bool {
        let due = match self.last.get(name) {
            None => true,
            Some((c, at)) => {
                let since = now.saturating_sub(*at);
                if *c == counts {
                    since >= self.heartbeat && !is_finished(&counts)
                } else {
                    since >= self.interval || is_finished(&counts)
                }
            }
        };
        if due {
            self.last.insert(name.to_owned(), (counts, now));
        }
        due
    }
}

/// How a `--exit-when-done` run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every watched sweep finished without a failed job.
    Succeeded,
    /// Every watched sweep finished, some with failed jobs.
    Failed,
    /// Stopped (a signal) while jobs were still queued or running.
    Unfinished,
}

impl Outcome {
    pub fn of(watched: &[&SweepSummary]) -> Outcome {
        if watched.iter().any(|s| !is_finished(&s.counts)) {
            Outcome::Unfinished
        } else if watched.iter().any(|s| s.counts.failed > 0) {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        }
    }

    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Succeeded => 0,
            Outcome::Failed => 1,
            Outcome::Unfinished => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str, q: u64, r: u64, d: u64, f: u64, mean: Option<f64>) -> SweepSummary {
        SweepSummary {
            id: 1,
            name: name.into(),
            state: "active".into(),
            priority: 0,
            created_at_ms: 0,
            counts: JobCounts {
                queued: q,
                running: r,
                done: d,
                failed: f,
                cancelled: 0,
            },
            mean_job_ms: mean,
        }
    }

    #[test]
    fn lines_say_counts_and_eta() {
        let s = summary("qs", 3, 2, 3, 0, Some(60_000.0));
        // (3 queued + 2 running / 2) * 60 s / 2 running = 120 s.
        assert_eq!(
            plain_line(&s),
            "sweep qs: 3/8 done · 2 running · 3 queued · 0 failed · ETA 2 min"
        );
        assert_eq!(
            eta_text(&summary("qs", 4, 0, 0, 0, None)),
            "waiting for a worker"
        );
        assert_eq!(
            eta_text(&summary("qs", 2, 2, 0, 0, None)),
            "ETA after the first job"
        );
        assert_eq!(eta_text(&summary("qs", 0, 0, 3, 1, None)), "finished");
        let mut c = summary("qs", 0, 0, 3, 1, None).counts;
        c.cancelled = 2;
        assert!(counts_text(&c).ends_with("1 failed · 2 cancelled"));
    }

    #[test]
    fn throttle_prints_changes_at_most_once_per_interval() {
        let mut t = LineThrottle::new(Duration::from_secs(10), Duration::from_secs(60));
        let c = |d| summary("a", 4 - d, 0, d, 0, None).counts;
        let s = Duration::from_secs;
        assert!(t.due("a", c(0), s(0)), "first sight");
        assert!(!t.due("a", c(1), s(5)), "changed, but too soon");
        assert!(t.due("a", c(1), s(10)), "changed, interval passed");
        assert!(!t.due("a", c(1), s(30)), "unchanged");
        assert!(t.due("a", c(1), s(70)), "heartbeat");
        assert!(t.due("a", c(4), s(71)), "finished: at once");
        assert!(!t.due("a", c(4), s(500)), "finished and unchanged: quiet");
        assert!(t.due("b", c(0), s(71)), "sweeps are throttled separately");
    }

    #[test]
    fn outcome_and_exit_code() {
        let ok = summary("a", 0, 0, 4, 0, None);
        let failed = summary("b", 0, 0, 3, 1, None);
        let running = summary("c", 1, 1, 0, 0, None);
        assert_eq!(Outcome::of(&[&ok]).exit_code(), 0);
        assert_eq!(Outcome::of(&[]).exit_code(), 0);
        assert_eq!(Outcome::of(&[&ok, &failed]), Outcome::Failed);
        assert_ne!(Outcome::of(&[&ok, &failed]).exit_code(), 0);
        assert_eq!(Outcome::of(&[&failed, &running]), Outcome::Unfinished);
        assert_ne!(Outcome::Unfinished.exit_code(), 0);
    }

    #[test]
    fn watched_sweeps_and_urls() {
        let all = [
            summary("a", 0, 0, 1, 0, None),
            summary("b", 1, 0, 0, 0, None),
        ];
        assert_eq!(watched(&all, &[]).len(), 2);
        let w = watched(&all, &["b".to_owned()]);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].name, "b");
        assert_eq!(
            dashboard_url("127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            dashboard_url("0.0.0.0:8080".parse().unwrap()),
            "http://localhost:8080/"
        );
        assert_eq!(
            dashboard_url("[::1]:80".parse().unwrap()),
            "http://[::1]:80/"
        );
    }
}
