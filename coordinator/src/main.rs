//! `coordinator` binary: parses the command line and runs the library.

use anyhow::Context;
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use coordinator::cli::{Cli, Command, LogFormat, ServeArgs};
use coordinator::conn::ConnLimits;
use coordinator::export::gif::{GIF_FORMAT, run_gif_export};
use coordinator::export::{ExportRequest, run_export};
use coordinator::grpc::GrpcConfig;
use coordinator::monitor::Display;
use coordinator::serve::ServeOptions;
use coordinator::slurm::SlurmOptions;
use coordinator::store::Store;
use proto::sweep::load_sweep;

/// Lifecycle events only: the coordinator's own info lines; per-step and per-checkpoint detail
/// is at debug, and in-process workers say only what goes wrong (the coordinator logs their
/// leases and attempt ends) and when they download a data set (a silent wait otherwise).
/// `RUST_LOG` overrides it.
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,worker=warn,worker::train::data::download=info";

/// Log lines go to standard error, printed above the progress bars when there are some.
#[derive(Clone)]
struct LogWriter(Option<indicatif::MultiProgress>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The fmt layer writes each event with one call, so a line is never split by a redraw.
        let write = || std::io::stderr().lock().write_all(buf);
        match &self.0 {
            Some(mp) => mp.suspend(write)?,
            None => write()?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_tracing(progress: Option<indicatif::MultiProgress>, format: LogFormat) {
    let writer = LogWriter(progress);
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(move || writer.clone());
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        // Fields at the top level (`message`, `level`, …): what log collectors index.
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // Progress bars only when serving to a terminal; pipes and files get plain lines, and
    // JSON logs get neither (every line on standard error is then one JSON object).
    let json = cli.log_format == LogFormat::Json;
    let bars = (cli.command.is_none() && std::io::stderr().is_terminal() && !json)
        .then(indicatif::MultiProgress::new);
    init_tracing(bars.clone(), cli.log_format);
    let db = cli.db.path();
    match cli.command {
        Some(Command::Submit { file, json, limits }) => {
            let (sweep, text) = load_sweep(&file, limits.max_cells)?;
            let store = open(&db).await?;
            let out = store.submit(&sweep, &text, Some(&file)).await?;
            if json {
                println!("{}", serde_json::to_string(&out)?);
            } else {
                println!(
                    "sweep `{}`: {} new job(s), {} already present ({})",
                    out.name,
                    out.created,
                    out.existing,
                    db.display()
                );
            }
            store.close().await;
        }
        Some(Command::Status { json }) => {
            let store = open_read_only(&db).await?;
            let sweeps = store.status().await?;
            if json {
                println!("{}", serde_json::json!({ "sweeps": sweeps }));
            } else {
                print!("{}", coordinator::tables::status_table(&sweeps));
            }
            store.close().await;
        }
        Some(Command::Cancel(target)) => {
            let store = open(&db).await?;
            match (target.job, target.sweep) {
                (Some(job), _) => {
                    let changed = store.cancel_job(proto::JobId(job)).await?;
                    println!(
                        "job {job}: {}",
                        if changed {
                            "cancelled"
                        } else {
                            "already finished"
                        }
                    );
                }
                (None, Some(name)) => {
                    let n = store.cancel_sweep(store.sweep_id(&name).await?).await?;
                    println!("sweep `{name}`: {n} job(s) cancelled");
                }
                (None, None) => unreachable!("clap requires --job or --sweep"),
            }
        }
        Some(Command::Pause { sweep }) => {
            let store = open(&db).await?;
            store.pause_sweep(store.sweep_id(&sweep).await?).await?;
            println!("sweep `{sweep}` paused");
        }
        Some(Command::Resume { sweep }) => {
            let store = open(&db).await?;
            store.resume_sweep(store.sweep_id(&sweep).await?).await?;
            println!("sweep `{sweep}` resumed");
        }
        Some(Command::Retry { sweep }) => {
            let store = open(&db).await?;
            let id = match &sweep {
                Some(name) => Some(store.sweep_id(name).await?),
                None => None,
            };
            let n = store.retry_failed(id).await?;
            println!("{n} failed job(s) queued again");
        }
        Some(Command::Priority { sweep, priority }) => {
            let store = open(&db).await?;
            store
                .set_priority(store.sweep_id(&sweep).await?, priority)
                .await?;
            println!("sweep `{sweep}`: priority {priority}");
        }
        Some(Command::Backup { out }) => {
            let bytes = coordinator::store::backup(&db, &out).await?;
            println!(
                "backed up {} to {} ({bytes} bytes)",
                db.display(),
                out.display()
            );
        }
        Some(Command::Gc {
            dry_run,
            keep_checkpoints,
            thin_snapshots_after,
            forget_workers_after,
        }) => {
            let days = |d: u64| Duration::from_secs(d.saturating_mul(24 * 3600));
            // A wrong path must not leave an empty database behind.
            if !db.is_file() {
                return Err(coordinator::store::StoreError::NoDatabase(db).into());
            }
            let store = open(&db).await?;
            let opts = coordinator::retention::GcOptions {
                dry_run,
                keep: keep_checkpoints,
                thin_snapshots_after: thin_snapshots_after.map(days),
                forget_workers_after: days(forget_workers_after),
                stray_file_age: Duration::from_secs(3600),
                artifact_dir: GrpcConfig::artifact_dir_for(&db),
            };
            let report = coordinator::retention::gc(&store, &opts).await?;
            print!("{report}");
            store.close().await;
        }
        Some(Command::Export {
            sweep,
            run,
            format,
            rows,
            cols,
            metric,
            agg,
            over_seeds,
            filters,
            out,
        }) => {
            let Some(sweep) = sweep else {
                return export_gif(&db, &run, &format, out.as_deref()).await;
            };
            if format == GIF_FORMAT {
                anyhow::bail!(
                    "--format gif animates runs: pass --run ID (repeat it for runs side by side)"
                );
            }
            let store = open_read_only(&db).await?;
            let req = ExportRequest::parse(
                &sweep,
                &format,
                rows.as_deref(),
                cols.as_deref(),
                metric.as_deref(),
                agg.as_deref(),
            )?
            .over_seeds(over_seeds)?
            .filtered(&filters)?;
            let table = run_export(&store, req).await?;
            match out {
                Some(path) => std::fs::write(&path, table)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{table}"),
            }
        }
        None => return serve(db, cli.serve, bars, json).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// Submits the `--sweep` files, then serves until Ctrl-C or SIGTERM (or, with
/// `--exit-when-done`, until they have finished: then prints their summaries and exits 0 only
/// if no job failed).
async fn serve(
    db: PathBuf,
    args: ServeArgs,
    bars: Option<indicatif::MultiProgress>,
    json_logs: bool,
) -> anyhow::Result<ExitCode> {
    let mut grpc = GrpcConfig::new(args.grpc_addr, &db);
    let given = coordinator::token::given(args.token_file.as_deref(), args.token.as_deref())?;
    grpc.token = given.map(|t| t.value);
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        let files = coordinator::tls::TlsFiles {
            cert,
            key,
            client_ca: args.client_ca,
        };
        grpc.tls = Some(coordinator::tls::ServerTls::load(&files)?);
    }
    grpc.sched.lease_ttl = Duration::from_secs(args.lease_ttl.max(1));
    grpc.keep_checkpoints = args.keep_checkpoints;
    let limits = ConnLimits {
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        ..ConnLimits::default()
    };
    grpc.conn = limits;
    let mut opts = ServeOptions {
        grpc,
        http_addr: args.http_addr,
        local_workers: args.local_workers,
        worker_bin: args.worker_bin,
        data_dir: args.data_dir,
        work_root: db.with_extension("workers"),
        exit_when_done: args.exit_when_done,
        http_limits: limits,
        sweeps: Vec::new(),
        display: (!json_logs).then(|| bars.map_or(Display::Lines, Display::Bars)),
        token_file: None,
        public_dashboard: args.public_dashboard,
        slurm: None,
    };
    if let Some(max) = args.slurm.slurm_max_workers {
        opts.slurm = Some(SlurmOptions {
            max_workers: usize::try_from(max).unwrap_or(usize::MAX),
            partition: args.slurm.slurm_partition,
            time: args.slurm.slurm_time,
            args: args.slurm.slurm_arg,
            idle_timeout: Duration::from_secs(args.slurm.slurm_idle_timeout),
            poll: Duration::from_secs(2),
            coordinator_url: args.slurm.slurm_coordinator_url,
            token: opts.grpc.token.clone(),
            worker_bin: opts.worker_bin.clone(),
            data_dir: opts.data_dir.clone(),
            dir: args
                .slurm
                .slurm_dir
                .unwrap_or_else(|| db.with_extension("slurm")),
            // A connected worker calls at least once per lease TTL.
            seen_within: opts.grpc.sched.lease_ttl * 2,
        });
    }
    // Before touching the database or any port.
    coordinator::serve::check_exposure(&opts)?;
    let store = open(&db).await?;
    // Loopback without a token is still open to every local user: generate one.
    if opts.grpc.token.is_none() {
        let t = coordinator::token::generated(&db)?;
        opts.grpc.token = Some(t.value);
        if let coordinator::token::Origin::Generated(file) = t.origin {
            opts.token_file = Some(file);
        }
    }
    for file in &args.sweeps {
        let (sweep, text) = load_sweep(file, args.limits.max_cells)?;
        let out = store.submit(&sweep, &text, Some(file)).await?;
        tracing::info!(sweep = %out.name, created = out.created, existing = out.existing, "submitted");
        if !opts.sweeps.contains(&out.name) {
            opts.sweeps.push(out.name);
        }
    }
    let (sweeps, exit_when_done) = (opts.sweeps.clone(), opts.exit_when_done);
    let display = opts.display.clone();
    let served = coordinator::serve::run(store.clone(), opts, shutdown_signal()).await?;
    let mut code = ExitCode::SUCCESS;
    if exit_when_done {
        let (outcome, text) =
            coordinator::monitor::final_report(&store, &sweeps, &served.dashboard_url).await?;
        match display {
            Some(d) => d.println(&text),
            None => print!("{text}"),
        }
        code = ExitCode::from(outcome.exit_code());
    }
    store.close().await;
    Ok(code)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn open(db: &std::path::Path) -> anyhow::Result<Store> {
    Store::open(db)
        .await
        .with_context(|| format!("opening database {}", db.display()))
}

/// For commands that only look: a wrong path must not leave an empty database behind.
async fn open_read_only(db: &std::path::Path) -> anyhow::Result<Store> {
    match Store::open_read_only(db).await {
        Ok(store) => Ok(store),
        // Already names the path; "opening database …" around it would say it twice.
        Err(e @ coordinator::store::StoreError::NoDatabase(_)) => Err(e.into()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("opening database {}", db.display()))),
    }
}

/// `export --run ...`: the runs' latent snapshots as one GIF, written to `--out` (a GIF is
/// binary, so it never goes to standard output).
async fn export_gif(
    db: &std::path::Path,
    runs: &[i64],
    format: &str,
    out: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    if format != GIF_FORMAT {
        anyhow::bail!("--run exports a GIF: pass --format gif (tables are exported per --sweep)");
    }
    let Some(out) = out else {
        anyhow::bail!("--format gif writes a binary file: pass --out FILE");
    };
    let store = open_read_only(db).await?;
    let gif = run_gif_export(&store, runs).await;
    store.close().await;
    std::fs::write(out, gif?).with_context(|| format!("writing {}", out.display()))?;
    Ok(ExitCode::SUCCESS)
}
