//! `worker` binary: a thin clap dispatcher over the `worker` library.

mod cli;
mod connect;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc for the process that trains. Declared here, in the binary, not in the library: the
/// allocator is the program's choice (the training tests and benchmarks declare the same one).
///
/// A training step allocates and frees tens of megabytes of activations and gradients. glibc's
/// malloc serves blocks that large with fresh `mmap`s and unmaps them on free, so every step
/// page-faults its buffers in again, which cost about a quarter of a CPU step (BENCHMARKS.md).
/// mimalloc reuses freed pages. (jemalloc was tried and measured no faster: it returns blocks
/// over 8 MiB to the system at once by default.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_tracing(format: cli::LogFormat) {
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Fields at the top level (`message`, `level`, …): what log collectors index.
        cli::LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    init_tracing(cli.log_format);
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
