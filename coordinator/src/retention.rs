//! Retention of checkpoints and other bulky data, and the `gc` command.
//!
//! While serving: a job keeps only the newest checkpoint its live attempt uploaded (resuming
//! always takes the newest), a done job keeps that final checkpoint or none
//! ([`KeepCheckpoints`]), and upload leftovers (`.part` files) are removed at start-up.
//! `coordinator gc` applies the same rules to what already exists, plus superseded or old
//! embedding snapshots, long-gone workers and files no row refers to. Results and metrics are
//! never touched. The SQL is in `store/retention.rs`.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use proto::JobId;

use crate::store::retention::{CheckpointRow, GcRules};
use crate::store::{Store, StoreError};

/// Extension of an upload in progress (renamed to `.ckpt` once verified).
const PART_EXTENSION: &str = "part";

/// What a done job keeps of its checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeepCheckpoints {
    /// Its final checkpoint (the trained weights).
    #[default]
    Final,
    /// None: the results and metrics are all that is kept.
    None,
}

/// Files removed, and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freed {
    pub files: u64,
    pub bytes: u64,
}

impl Freed {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

/// Deletes the files of checkpoint rows already removed from the database. A file that is
/// already gone counts as removed; other failures are logged (gc finds the file later).
fn remove_checkpoint_files(artifact_dir: &Path, rows: &[CheckpointRow]) -> Freed {
    let mut freed = Freed::default();
    for r in rows {
        let path = artifact_dir.join(&r.path);
        match std::fs::remove_file(&path) {
            Ok(()) => freed.add(u64::try_from(r.size).unwrap_or(0)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a checkpoint")
            }
        }
    }
    freed
}

/// After `job`'s live attempt stored a checkpoint: removes all but the job's newest.
pub(crate) async fn after_checkpoint(store: &Store, artifact_dir: &Path, job: JobId) {
    match store.keep_newest_checkpoint(job).await {
        Ok(rows) if !rows.is_empty() => {
            let freed = remove_checkpoint_files(artifact_dir, &rows);
            crate::obs::checkpoints_removed(freed.files as usize);
            tracing::debug!(%job, files = freed.files, bytes = freed.bytes, "older checkpoints removed");
        }
        Ok(_) => {}
        // The checkpoint is stored; an old one left behind is gc's to find.
        Err(e) => tracing::warn!(%job, error = %e, "removing older checkpoints"),
    }
}

/// After `job` finished as done: with [`KeepCheckpoints::None`], removes its checkpoints.
pub(crate) async fn after_done(
    store: &Store,
    artifact_dir: &Path,
    job: JobId,
    keep: KeepCheckpoints,
) {
    if keep == KeepCheckpoints::Final {
        return;
    }
    match store.drop_done_job_checkpoints(job).await {
        Ok(rows) => {
            let freed = remove_checkpoint_files(artifact_dir, &rows);
            crate::obs::checkpoints_removed(freed.files as usize);
        }
        Err(e) => tracing::warn!(%job, error = %e, "removing the checkpoints of a done job"),
    }
}

/// Every regular file under `dir`, recursively, with its path relative to `dir` (none when
/// `dir` does not exist).
pub(crate) fn files_under(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file()
                && let Ok(rel) = e.path().strip_prefix(dir)
            {
                out.push((rel.to_owned(), meta));
            }
        }
    }
    out
}

fn older_than(meta: &std::fs::Metadata, age: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|a| a >= age)
}

/// Removes `.part` files under `dir` last written at least `age` ago. At start-up (age zero)
/// every one is a leftover: uploads do not survive a restart.
pub fn remove_stale_parts(dir: &Path, age: Duration) -> Freed {
    let mut freed = Freed::default();
    for (rel, meta) in files_under(dir) {
        if rel.extension().is_some_and(|e| e == PART_EXTENSION)
            && older_than(&meta, age)
            && std::fs::remove_file(dir.join(&rel)).is_ok()
        {
            freed.add(meta.len());
        }
    }
    if freed.files > 0 {
        tracing::info!(
            files = freed.files,
            bytes = freed.bytes,
            "removed unfinished uploads"
        );
    }
    freed
}

/// Options of `coordinator gc`.
#[derive(Debug, Clone)]
pub struct GcOptions {
    pub dry_run: bool,
    pub keep: KeepCheckpoints,
    /// Done jobs finished longer ago keep only their last snapshot; `None`: all epochs.
    pub thin_snapshots_after: Option<Duration>,
    /// Workers not seen for this long (and running nothing) are forgotten.
    pub forget_workers_after: Duration,
    /// Files no row refers to (and `.part` uploads) are removed once this old: younger ones may
    /// be an upload about to be recorded by a running coordinator.
    pub stray_file_age: Duration,
    pub artifact_dir: PathBuf,
}

/// What a `gc` run freed (or, with `--dry-run`, would free).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    pub checkpoints: Freed,
    pub snapshots: u64,
    pub snapshot_bytes: u64,
    pub workers: u64,
    pub stray_files: Freed,
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run { "would free" } else { "freed" };
        writeln!(
            f,
            "checkpoints: {verb} {} file(s), {} bytes",
            self.checkpoints.files, self.checkpoints.bytes
        )?;
        writeln!(
            f,
            "snapshots:   {verb} {} row(s), {} bytes",
            self.snapshots, self.snapshot_bytes
        )?;
        writeln!(f, "workers:     {verb} {} row(s)", self.workers)?;
        writeln!(
            f,
            "stray files: {verb} {} file(s), {} bytes",
            self.stray_files.files, self.stray_files.bytes
        )?;
        if !self.dry_run {
            writeln!(
                f,
                "(rows free pages inside the database file, which SQLite reuses; results and metrics were not touched)"
            )?;
        }
        Ok(())
    }
}

fn ms_before(now_ms: i64, d: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Applies the retention policy to the database and the artifact directory.
pub async fn gc(store: &Store, opts: &GcOptions) -> Result<GcReport, StoreError> {
    let now = crate::store::now_ms();
    let rules = GcRules {
        keep_final_checkpoint: opts.keep == KeepCheckpoints::Final,
        thin_snapshots_before_ms: opts.thin_snapshots_after.map(|d| ms_before(now, d)),
        workers_seen_before_ms: ms_before(now, opts.forget_workers_after),
    };
    let plan = if opts.dry_run {
        store.gc_plan(&rules).await?
    } else {
        store.gc_apply(&rules).await?
    };
    let mut report = GcReport {
        dry_run: opts.dry_run,
        snapshots: plan.snapshots.len() as u64,
        snapshot_bytes: plan.snapshots.iter().map(|s| s.1.max(0) as u64).sum(),
        workers: plan.workers.len() as u64,
        ..GcReport::default()
    };
    report.checkpoints = if opts.dry_run {
        let mut f = Freed::default();
        for c in &plan.checkpoints {
            if opts.artifact_dir.join(&c.path).is_file() {
                f.add(u64::try_from(c.size).unwrap_or(0));
            }
        }
        f
    } else {
        remove_checkpoint_files(&opts.artifact_dir, &plan.checkpoints)
    };
    // Files that no row names: removed checkpoints whose deletion was interrupted, uploads
    // that never finished.
    let known: HashSet<PathBuf> = store
        .artifact_paths()
        .await?
        .into_iter()
        .map(PathBuf::from)
        .collect();
    for (rel, meta) in files_under(&opts.artifact_dir) {
        if known.contains(&rel) || !older_than(&meta, opts.stray_file_age) {
            continue;
        }
        if opts.dry_run || std::fs::remove_file(opts.artifact_dir.join(&rel)).is_ok() {
            report.stray_files.add(meta.len());
        }
    }
    Ok(report)
}
