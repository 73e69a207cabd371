//! `worker` binary: a thin clap dispatcher over the `worker` library.

mod cli;
mod connect;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = cli::Cli::parse();
    match (cli.command, cli.agent) {
        (Some(cli::Command::Train(args)), _) => cli::train(&args),
        (None, Some(agent)) => connect::run(agent),
        (None, None) => {
            use clap::CommandFactory;
            cli::Cli::command().print_help()?;
            anyhow::bail!("give a subcommand (`worker train ...`) or `--coordinator URL`")
        }
    }
}
