//! Command-line arguments of the agent (`worker --coordinator URL ...`), for the `worker`
//! binary to flatten into its own parser.

use std::path::PathBuf;
use std::time::Duration;

use super::{AgentConfig, AgentError, DeviceInfo, hostname};

/// Connect to a coordinator and run leased jobs.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Coordinator URL, e.g. http://127.0.0.1:50051
    #[arg(long, value_name = "URL")]
    pub(crate) coordinator: String,
    /// Train on the CPU (the default unless --devices is given)
    #[arg(long, conflicts_with = "devices")]
    pub(crate) cpu: bool,
    /// GPU indices, one job slot each (needs a `cuda` build)
    #[arg(long, value_delimiter = ',', value_name = "0,1")]
    pub(crate) devices: Vec<u32>,
    /// Concurrent CPU jobs
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(crate) slots: usize,
    /// File holding the coordinator's shared secret (or $LATENTSWEEP_TOKEN_FILE). Without any
    /// token option: $LATENTSWEEP_TOKEN, then, for a coordinator on this machine, the token it
    /// generated in its data directory
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Shared secret on the command line: every local user sees it in `ps`; prefer --token-file
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub(crate) token: Option<String>,
    /// PEM file of the CA that signed the coordinator's certificate (an https:// URL trusts the
    /// system's roots without it)
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// This worker's certificate (PEM), for a coordinator started with --client-ca
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub(crate) client_cert: Option<PathBuf>,
    /// The key of --client-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub(crate) client_key: Option<PathBuf>,
    /// Trust exactly this certificate, whatever its names (how local workers trust their
    /// coordinator)
    #[arg(long, value_name = "FILE", hide = true, conflicts_with = "ca_cert")]
    pub(crate) pin_cert: Option<PathBuf>,
    /// Where data sets are looked up and downloaded to
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Where attempts keep their checkpoints [default: TMPDIR/latentsweep-worker-PID]
    #[arg(long, value_name = "DIR")]
    pub(crate) work_dir: Option<PathBuf>,
    /// Name shown by the coordinator [default: HOST-PID]
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Shut down when stdin reaches end of file: a coordinator's `--local-workers` children
    /// hold a pipe from it, so they stop even when the coordinator is killed with SIGKILL.
    #[arg(long, hide = true)]
    pub exit_on_stdin_close: bool,
}

/// Which backend the binary must build devices for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChoice {
    /// `slots` CPU slots.
    Cpu { slots: usize },
    /// One slot per GPU index.
    Cuda(Vec<u32>),
}

impl AgentArgs {
    /// The agent configuration and the devices the binary must create (in slot order).
    pub fn into_config(self) -> Result<(AgentConfig, DeviceChoice), AgentError> {
        let work_dir = self.work_dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("latentsweep-worker-{}", std::process::id()))
        });
        let (choice, slots) = if self.devices.is_empty() {
            if self.slots == 0 {
                return Err(AgentError::Config("--slots must be at least 1".into()));
            }
            (DeviceChoice::Cpu { slots: self.slots }, self.slots)
        } else {
            let n = self.devices.len();
            (DeviceChoice::Cuda(self.devices.clone()), n)
        };
        let mut cfg = AgentConfig::cpu(self.coordinator, slots, work_dir);
        if let DeviceChoice::Cuda(ix) = &choice {
            cfg.backend = "cuda".into();
            cfg.devices = ix
                .iter()
                .map(|&index| DeviceInfo {
                    index,
                    name: format!("cuda:{index}"),
                    memory_bytes: 0,
                })
                .collect();
        }
        let (token, given) = super::token::find(
            self.token_file.as_deref(),
            self.token.as_deref(),
            &cfg.coordinator,
        )?;
        cfg.token = token;
        // Nothing given: a local coordinator may start (or restart) later with its own token.
        cfg.discover_token = !given;
        cfg.tls = super::tls::ClientTls {
            ca_cert: self.ca_cert,
            pin_cert: self.pin_cert,
            client_cert: self.client_cert,
            client_key: self.client_key,
        };
        cfg.data_dir = self.data_dir;
        cfg.host = hostname();
        if let Some(n) = self.name {
            cfg.name = n;
        }
        cfg.max_backoff = Duration::from_secs(2);
        Ok((cfg, choice))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: AgentArgs,
    }

    #[test]
    fn parses_the_documented_forms() {
        let t = T::try_parse_from([
            "w",
            "--coordinator",
            "http://h:1",
            "--cpu",
            "--slots",
            "2",
            "--name",
            "n",
        ])
        .unwrap();
        let (cfg, choice) = t.a.into_config().unwrap();
        assert_eq!(choice, DeviceChoice::Cpu { slots: 2 });
        assert_eq!(cfg.devices.len(), 2);
        assert_eq!(cfg.name, "n");
        let t =
            T::try_parse_from(["w", "--coordinator", "http://h:1", "--devices", "0,1"]).unwrap();
        let (cfg, choice) = t.a.into_config().unwrap();
        assert_eq!(choice, DeviceChoice::Cuda(vec![0, 1]));
        assert_eq!(cfg.backend, "cuda");
        assert!(T::try_parse_from(["w", "--coordinator", "x", "--cpu", "--devices", "0"]).is_err());
    }
}
