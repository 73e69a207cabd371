//! The terminal side of serving: a live progress bar per watched sweep on a terminal, plain
//! periodic lines otherwise, a summary table when a sweep finishes, and the dashboard's address
//! (in the bars' header and after each summary). Decisions live in [`crate::progress`].

use std::io::Write;
use std::time::Duration;

use dashboard::SweepSummary;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::progress::{self, LineThrottle, Outcome};
use crate::store::{Store, StoreError};
use crate::web::convert;

/// How often the store is read for progress.
const TICK: Duration = Duration::from_secs(1);
/// Plain lines: at most one per sweep this often while it changes...
const LINE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and one this often while it does not.
const LINE_HEARTBEAT: Duration = Duration::from_secs(120);

/// How progress is shown.
#[derive(Debug, Clone)]
pub enum Display {
    /// Progress bars (standard error is a terminal); logs are printed above them.
    Bars(MultiProgress),
    /// Plain lines on standard error, no colour or cursor movement.
    Lines,
}

impl Display {
    /// Prints `text` on standard output without tearing the bars.
    pub fn println(&self, text: &str) {
        let print = || {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        };
        match self {
            Display::Bars(mp) => mp.suspend(print),
            Display::Lines => print(),
        }
    }
}

/// What the monitor watches and where it reports.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub display: Display,
    /// Sweeps submitted with `--sweep`; empty: every sweep.
    pub sweeps: Vec<String>,
    pub dashboard_url: String,
    /// The dashboard link with a one-time login, shown once at start-up.
    pub login_url: Option<String>,
    /// Return once every watched sweep has finished, leaving the summaries to the caller.
    pub exit_when_done: bool,
}

/// Shows progress until every watched sweep has finished (with `exit_when_done`; never returns
/// otherwise). Store errors are logged and retried on the next tick.
pub async fn run(store: Store, opts: MonitorOptions) {
    let started = Instant::now();
    let mut throttle = LineThrottle::new(LINE_INTERVAL, LINE_HEARTBEAT);
    let mut bars: Vec<(String, ProgressBar)> = Vec::new();
    // Sweeps whose summary is due when they finish: those seen unfinished, and the submitted
    // ones (a re-run of a finished sweep shows its results at once).
    let mut unfinished: Vec<String> = opts.sweeps.clone();
    let header = match &opts.display {
        Display::Bars(mp) => {
            let h = mp.add(ProgressBar::new_spinner());
            h.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
            h.set_message(format!(
                "dashboard {} · Ctrl-C stops (jobs are handed back)",
                opts.login_url.as_deref().unwrap_or(&opts.dashboard_url)
            ));
            h.enable_steady_tick(Duration::from_millis(250));
            Some(h)
        }
        Display::Lines => {
            eprintln!(
                "dashboard: {}",
                opts.login_url.as_deref().unwrap_or(&opts.dashboard_url)
            );
            None
        }
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let all = match convert::sweeps(&store).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "reading progress");
                continue;
            }
        };
        let watched = progress::watched(&all, &opts.sweeps);
        for s in &watched {
            match &opts.display {
                Display::Bars(mp) => update_bar(mp, &mut bars, s),
                Display::Lines => {
                    if throttle.due(&s.name, s.counts, started.elapsed()) {
                        eprintln!("{}", progress::plain_line(s));
                    }
                }
            }
            let done = progress::is_finished(&s.counts);
            let was_unfinished = unfinished.contains(&s.name);
            if !done && !was_unfinished {
                unfinished.push(s.name.clone());
            } else if done && was_unfinished && !opts.exit_when_done {
                unfinished.retain(|n| n != &s.name);
                match summaries(&store, std::slice::from_ref(&s.name)).await {
                    Ok(text) => opts
                        .display
                        .println(&format!("\n{text}dashboard: {}\n", opts.dashboard_url)),
                    Err(e) => tracing::warn!(error = %e, "reading the sweep summary"),
                }
            }
        }
        if opts.exit_when_done && watched.iter().all(|s| progress::is_finished(&s.counts)) {
            for (_, b) in &bars {
                b.finish();
            }
            if let Some(h) = &header {
                h.finish_and_clear();
            }
            return;
        }
    }
}

fn update_bar(mp: &MultiProgress, bars: &mut Vec<(String, ProgressBar)>, s: &SweepSummary) {
    let bar = match bars.iter().find(|(n, _)| n == &s.name) {
        Some((_, b)) => b.clone(),
        None => {
            let b = mp.add(ProgressBar::new(s.counts.total()));
            b.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(s.name.clone());
            bars.push((s.name.clone(), b.clone()));
            b
        }
    };
    let c = &s.counts;
    bar.set_length(c.total());
    bar.set_position(c.done + c.failed + c.cancelled);
    bar.set_message(progress::bar_message(s));
}

/// The summary tables of these sweeps (see `tables::summary_table`).
pub async fn summaries(store: &Store, names: &[String]) -> Result<String, StoreError> {
    let mut out = String::new();
    for name in names {
        if let Some(d) = convert::sweep(store, name).await? {
            out.push_str(&crate::tables::summary_table(&d));
            out.push('\n');
        }
    }
    Ok(out)
}

/// After serving stopped: the watched sweeps' outcome and, if they all finished, their summary
/// tables followed by the dashboard's address.
pub async fn final_report(
    store: &Store,
    names: &[String],
    dashboard_url: &str,
) -> Result<(Outcome, String), StoreError> {
    let all = convert::sweeps(store).await?;
    let watched = progress::watched(&all, names);
    let outcome = Outcome::of(&watched);
    let text = match outcome {
        Outcome::Unfinished => {
            let left: u64 = watched
                .iter()
                .map(|s| s.counts.queued + s.counts.running)
                .sum();
            format!("stopped with {left} job(s) unfinished\ndashboard: {dashboard_url}\n")
        }
        _ => {
            let names: Vec<String> = watched.iter().map(|s| s.name.clone()).collect();
            let tables = summaries(store, &names).await?;
            format!("{tables}dashboard: {dashboard_url}\n")
        }
    };
    Ok((outcome, text))
}
