//! Command-line interface of the `coordinator` binary (parsed here, run from `main.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::retention::KeepCheckpoints;

/// latentsweep coordinator: expands sweeps into jobs, stores everything in SQLite, leases jobs
/// to workers over gRPC and serves the dashboard.
///
/// With no subcommand it submits the given `--sweep` files, then serves.
#[derive(Debug, Parser)]
#[command(name = "coordinator", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub serve: ServeArgs,

    /// Log lines as plain text, or as one JSON object per line (for log collectors; progress
    /// bars and lines are then left out)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text,
          env = "LATENTSWEEP_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with `timestamp`, `level`, `target`, `message` and the
    /// event's fields at the top level.
    Json,
}

/// Where the database lives.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// SQLite database file [default: $LATENTSWEEP_DB, else DATA_DIR/latentsweep/latentsweep.db]
    #[arg(long, global = true, env = "LATENTSWEEP_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,
}

impl DbArgs {
    /// The database path, defaulting to the user's data directory rather than the current folder.
    pub fn path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(std::env::temp_dir)
                .join("latentsweep")
                .join("latentsweep.db")
        })
    }
}

/// Options of the serving mode.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Sweep file(s) to submit before serving (repeatable)
    #[arg(long = "sweep", value_name = "FILE")]
    pub sweeps: Vec<PathBuf>,

    /// Address of the gRPC service workers connect to
    #[arg(long, default_value = "127.0.0.1:50051", value_name = "ADDR")]
    pub grpc_addr: SocketAddr,

    /// Address of the dashboard
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub http_addr: SocketAddr,

    /// Also start N CPU worker processes, connected over gRPC on 127.0.0.1
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub local_workers: usize,

    /// The `worker` binary --local-workers runs [default: `worker` next to this program]
    #[arg(long, env = "LATENTSWEEP_WORKER_BIN", value_name = "PATH")]
    pub worker_bin: Option<PathBuf>,

    /// File holding the shared secret workers (and dashboard users) must present (or
    /// $LATENTSWEEP_TOKEN_FILE, or the token itself in $LATENTSWEEP_TOKEN). Required when
    /// listening beyond loopback; without one, a token is generated into DB_DIR/token (0600)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// The shared secret on the command line: every local user sees it in `ps`, so only for
    /// loopback demos; prefer --token-file
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,

    /// What a done job keeps of its checkpoints (while a job runs, only its newest is kept)
    #[arg(long, value_enum, default_value_t = KeepCheckpoints::Final, value_name = "WHAT")]
    pub keep_checkpoints: KeepCheckpoints,
    /// Serve gRPC and the dashboard over TLS with this certificate chain (PEM, leaf first)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: workers must present a certificate signed by this CA (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,

    /// Let anyone who reaches the dashboard read it without logging in (actions still need a
    /// login)
    #[arg(long)]
    pub public_dashboard: bool,

    /// Lease time-to-live in seconds; heartbeats renew it
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub lease_ttl: u64,

    /// Data directory for local workers' datasets
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Stop once every job of the submitted sweeps (of all sweeps, if none was submitted) has
    /// finished, print their summaries and exit: 0 if no job failed, 1 if some did, 2 if
    /// stopped before the end
    #[arg(long)]
    pub exit_when_done: bool,

    /// Close connections (gRPC and dashboard) idle for this long
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,

    /// Connections open at once per listener; more clients wait until one closes
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub slurm: SlurmArgs,
}

/// Slurm auto-allocation: worker jobs submitted and cancelled by the coordinator itself.
#[derive(Debug, Clone, Args)]
pub struct SlurmArgs {
    /// Submit up to N Slurm worker jobs (deploy/slurm/worker.sbatch, one worker each) while
    /// queued jobs outnumber idle workers; cancel them when idle, and all of them on exit
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub slurm_max_workers: Option<u64>,

    /// Partition of the worker jobs
    #[arg(long, value_name = "P", requires = "slurm_max_workers")]
    pub slurm_partition: Option<String>,

    /// Time limit of each worker job, as sbatch's --time takes it
    #[arg(long, value_name = "T", requires = "slurm_max_workers")]
    pub slurm_time: Option<String>,

    /// Another sbatch option for the worker jobs, e.g. --slurm-arg=--gres=none (repeatable)
    #[arg(
        long,
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "slurm_max_workers"
    )]
    pub slurm_arg: Vec<String>,

    /// Cancel a worker job whose worker has leased nothing for this long
    #[arg(
        long,
        default_value_t = 300,
        value_name = "SECS",
        requires = "slurm_max_workers"
    )]
    pub slurm_idle_timeout: u64,

    /// gRPC URL the worker jobs connect to [default: from --grpc-addr, this host's name for
    /// 0.0.0.0]
    #[arg(long, value_name = "URL", requires = "slurm_max_workers")]
    pub slurm_coordinator_url: Option<String>,

    /// Directory for the worker jobs' logs and token file, on a file system the compute nodes
    /// share [default: next to the database, DB.slurm]
    #[arg(long, value_name = "DIR", requires = "slurm_max_workers")]
    pub slurm_dir: Option<PathBuf>,
}

/// Guards on sweep expansion.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Refuse sweeps that expand to more cells than this (a file's `max_cells` overrides it)
    #[arg(long, default_value_t = proto::sweep::DEFAULT_MAX_CELLS, value_name = "N")]
    pub max_cells: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit or extend a sweep, then exit. Existing cells are left untouched.
    Submit {
        /// Sweep file (TOML)
        file: PathBuf,
        /// Print exactly one JSON object: {"sweep": NAME, "created": N, "existing": M}
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Show each sweep's jobs by state.
    Status {
        /// Print {"sweeps": [{"name": …, "jobs": {"queued": n, …}}]}
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job or every unfinished job of a sweep; running attempts are told to stop.
    Cancel(Target),
    /// Stop leasing a sweep's jobs (running ones finish).
    Pause {
        /// Sweep name
        sweep: String,
    },
    /// Lease a paused sweep's jobs again.
    Resume {
        /// Sweep name
        sweep: String,
    },
    /// Queue failed jobs again with a fresh attempt budget (all sweeps, or one).
    Retry {
        /// Sweep name (default: every sweep)
        sweep: Option<String>,
    },
    /// Change a sweep's priority: higher runs first, ties in submission order.
    Priority {
        /// Sweep name
        sweep: String,
        /// New priority
        #[arg(allow_negative_numbers = true)]
        priority: i64,
    },
    /// Copy the database to FILE while the coordinator may be running (a consistent snapshot;
    /// FILE must not exist). Restore by stopping the coordinator and putting FILE in place.
    Backup {
        /// Where the copy goes
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Remove what the retention policy does not keep: checkpoints (all but each job's newest;
    /// a done job's final one per --keep-checkpoints), superseded embedding snapshots (and old
    /// ones with --thin-snapshots-after), long-gone workers and files no row refers to. Prints
    /// what it frees. Never touches results or metrics. Safe while the coordinator runs.
    Gc {
        /// Only print what would be freed
        #[arg(long)]
        dry_run: bool,
        /// What a done job keeps of its checkpoints
        #[arg(long, value_enum, default_value_t = KeepCheckpoints::Final, value_name = "WHAT")]
        keep_checkpoints: KeepCheckpoints,
        /// Done jobs finished more than DAYS ago keep only their last epoch's snapshot
        #[arg(long, value_name = "DAYS")]
        thin_snapshots_after: Option<u64>,
        /// Forget workers not seen for DAYS that run nothing
        #[arg(long, default_value_t = 7, value_name = "DAYS")]
        forget_workers_after: u64,
    },
    /// Export a sweep's results as a table: one row per run, or a pivot with --rows and --cols;
    /// or runs' latent snapshots over their epochs as an animated GIF (--run ... --format gif).
    Export {
        /// Sweep name
        #[arg(long, required_unless_present = "run", conflicts_with = "run")]
        sweep: Option<String>,
        /// Run (job) id whose latent snapshots to animate; repeat for runs side by side
        #[arg(long = "run", value_name = "ID", conflicts_with_all = ["rows", "cols", "metric", "agg"])]
        run: Vec<i64>,
        /// csv | md | latex | json; gif with --run
        #[arg(long, default_value = "csv")]
        format: String,
        /// Pivot rows: an axis such as loss
        #[arg(long, requires = "cols")]
        rows: Option<String>,
        /// Pivot columns: an axis such as dataset
        #[arg(long, requires = "rows")]
        cols: Option<String>,
        /// Pivot metric [default: map_at_r]
        #[arg(long)]
        metric: Option<String>,
        /// Pivot aggregation over the other axes and seeds: mean (± std, n, 95% CI) | best (the
        /// run with the highest val/METRIC, reporting its test METRIC)
        #[arg(long)]
        agg: Option<String>,
        /// Without a pivot: one row per configuration (every parameter but seed), each metric
        /// as mean ± std, n and 95% CI over seeds
        #[arg(long, conflicts_with_all = ["rows", "cols"])]
        over_seeds: bool,
        /// Only runs whose PARAM equals VALUE, e.g. `--where split=classes`; repeat it (values
        /// of one parameter are OR-ed, different parameters AND-ed)
        #[arg(long = "where", value_name = "PARAM=VALUE", conflicts_with = "run")]
        filters: Vec<String>,
        /// Write here instead of standard output
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// A job or a sweep.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// Job id (see the dashboard or `status`)
    #[arg(long)]
    pub job: Option<i64>,
    /// Sweep name
    #[arg(long)]
    pub sweep: Option<String>,
}
