//! `coordinator` binary: parses the command line and runs the library.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

use coordinator::cli::{Cli, Command, ServeArgs};
use coordinator::export::{ExportRequest, run_export};
use coordinator::grpc::GrpcConfig;
use coordinator::serve::ServeOptions;
use coordinator::store::Store;
use proto::sweep::load_sweep;

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
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
            let store = open(&db).await?;
            let sweeps = store.status().await?;
            if json {
                println!("{}", serde_json::json!({ "sweeps": sweeps }));
            } else {
                print!("{}", coordinator::report::status_table(&sweeps));
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
        Some(Command::Export {
            sweep,
            format,
            rows,
            cols,
            metric,
            agg,
            out,
        }) => {
            let store = open(&db).await?;
            let req = ExportRequest::parse(
                &sweep,
                &format,
                rows.as_deref(),
                cols.as_deref(),
                metric.as_deref(),
                agg.as_deref(),
            )?;
            let table = run_export(&store, req).await?;
            match out {
                Some(path) => std::fs::write(&path, table)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{table}"),
            }
        }
        None => serve(db, cli.serve).await?,
    }
    Ok(())
}

/// Submits the `--sweep` files, then serves until Ctrl-C or SIGTERM.
async fn serve(db: PathBuf, args: ServeArgs) -> anyhow::Result<()> {
    let store = open(&db).await?;
    for file in &args.sweeps {
        let (sweep, text) = load_sweep(file, args.limits.max_cells)?;
        let out = store.submit(&sweep, &text, Some(file)).await?;
        tracing::info!(sweep = %out.name, created = out.created, existing = out.existing, "submitted");
    }
    let mut grpc = GrpcConfig::new(args.grpc_addr, &db);
    grpc.token = args.token.filter(|t| !t.is_empty());
    grpc.sched.lease_ttl = Duration::from_secs(args.lease_ttl.max(1));
    let opts = ServeOptions {
        grpc,
        http_addr: args.http_addr,
        local_workers: args.local_workers,
        worker_bin: args.worker_bin,
        data_dir: args.data_dir,
        work_root: db.with_extension("workers"),
        exit_when_done: args.exit_when_done,
    };
    coordinator::serve::run(store.clone(), opts, shutdown_signal()).await?;
    store.close().await;
    Ok(())
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
