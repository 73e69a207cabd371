//! `coordinator` binary: parses the command line and runs the library.

use anyhow::Context;
use clap::Parser;
use coordinator::cli::{Cli, Command};
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
        None => {
            let store = open(&db).await?;
            for file in &cli.serve.sweeps {
                let (sweep, text) = load_sweep(file, cli.serve.limits.max_cells)?;
                let out = store.submit(&sweep, &text, Some(file)).await?;
                tracing::info!(sweep = %out.name, created = out.created, existing = out.existing, "submitted");
            }
            anyhow::bail!("serving is not built yet");
        }
    }
    Ok(())
}

async fn open(db: &std::path::Path) -> anyhow::Result<Store> {
    Store::open(db)
        .await
        .with_context(|| format!("opening database {}", db.display()))
}
