//! Child processes of the tests (`coordinator` and `worker` binaries) whose stderr goes to a log
//! file, killed when dropped; and the wait for a child coordinator's database to be usable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::grpc::worker_exe;

/// A child process whose stderr goes to `<dir>/<name>.log`; killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with the tests' log filter (unless `cmd` sets `RUST_LOG`), without any token
    /// from the environment, stdout discarded.
    pub fn start(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info,sqlx=warn,h2=warn");
        }
        let child = cmd
            .env_remove("LATENTSWEEP_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", cmd.get_program().display()));
        Proc {
            name: name.into(),
            child,
            log,
        }
    }

    /// `exe args…`, as [`Proc::start`].
    pub fn spawn(name: &str, exe: &Path, args: &[&str], dir: &Path) -> Proc {
        let mut cmd = Command::new(exe);
        cmd.args(args);
        Proc::start(name, cmd, dir)
    }

    /// A one-slot CPU `worker` of the coordinator at `url`, working in `<dir>/<name>`.
    pub fn worker(name: &str, url: &str, dir: &Path) -> Proc {
        let work = dir.join(name);
        let args = [
            "--coordinator",
            url,
            "--cpu",
            "--slots",
            "1",
            "--name",
            name,
            "--work-dir",
            work.to_str().unwrap(),
        ];
        Proc::spawn(name, &worker_exe(), &args, dir)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to hand anything back.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status within `limit`.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.wait(limit)
    }

    /// The exit status within `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t0.elapsed() < limit,
                "{} did not exit within {limit:?}; log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A read-only view of the database a child coordinator creates at `path`, once its migrations
/// have made the tables (the file exists before they do). Panics after 60 s with `log()`.
pub async fn migrated_db(path: &Path, log: impl Fn() -> String) -> sqlx::SqlitePool {
    let t0 = Instant::now();
    let waited = || {
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", log());
    };
    while !path.exists() {
        waited();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let tables = "SELECT COUNT(*) FROM sqlite_master WHERE name = 'attempts'";
    while sqlx::query_scalar::<_, i64>(tables)
        .fetch_one(&pool)
        .await
        .unwrap()
        == 0
    {
        waited();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool
}
