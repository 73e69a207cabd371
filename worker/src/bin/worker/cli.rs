//! Command-line interface of the `worker` binary: argument definitions and the `train`
//! command (the gRPC agent adds its own subcommand here).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use proto::metric;
use proto::{Dataset, JobParams, Loss, Mining, Network, Optimizer, Projection, Split};
use worker::train::{self, CancelToken, Outcome, RunSpec, TrainEvent};

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version,
    about = "latentsweep worker: trains metric-learning networks with Burn"
)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Agent mode: `worker --coordinator http://HOST:50051 [--cpu | --devices 0,1] [--slots N] \
[--token T]` registers with a coordinator and trains the jobs it leases until SIGTERM."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub agent: Option<worker::agent::cli::AgentArgs>,
    /// Log lines as plain text, or as one JSON object per line (for log collectors)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text,
          env = "LATENTSWEEP_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: LogFormat,
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with `timestamp`, `level`, `target`, `message` and the
    /// event's fields at the top level.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one network locally and write metrics, snapshots and the result to --out.
    ///
    /// Example: worker train --dataset fashion-mnist --network embedding-net --loss triplet
    /// --mining batch-hard --margin 0.5 --epochs 5 --out runs/triplet
    Train(TrainArgs),
}

/// Compute backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Pure-Rust CPU backend (Burn Flex).
    Cpu,
    /// NVIDIA GPU (requires a build with `--features cuda` and a GPU).
    Cuda,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Data set: mnist, fashion-mnist, or folder:<path> (one sub-folder per class).
    #[arg(long)]
    pub dataset: Dataset,
    /// Embedding network: embedding-net, koch-siamese, lenet-hadsell.
    #[arg(long)]
    pub network: Network,
    /// Loss: ce, bce, contrastive, triplet.
    #[arg(long)]
    pub loss: Loss,
    /// Embedding dimension.
    #[arg(long, default_value_t = 2)]
    pub dim: u32,
    /// Margin of contrastive / triplet losses [default: 1.0].
    #[arg(long)]
    pub margin: Option<f64>,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Anchors per batch (images for ce and mined triplet, pairs, or triplets).
    #[arg(long, default_value_t = 128)]
    pub batch_size: u32,
    #[arg(long, default_value_t = 2)]
    pub epochs: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Triplet mining: random, batch-all, batch-hard, semi-hard [default: random].
    #[arg(long)]
    pub mining: Option<Mining>,
    /// Optimizer: adam or sgd (momentum 0.9).
    #[arg(long, default_value = "adam")]
    pub optimizer: Optimizer,
    /// Use at most this many training images (class-stratified).
    #[arg(long)]
    pub train_limit: Option<u64>,
    /// Evaluate every N epochs (the last epoch is always evaluated).
    #[arg(long, default_value_t = 1)]
    pub eval_every: u32,
    /// Which classes train: samples (all classes train; held-out images are tested) or classes
    /// (the first half trains, the second half is only evaluated) [default: samples for mnist
    /// and fashion-mnist, classes for folder data sets].
    #[arg(long)]
    pub split: Option<Split>,
    /// L2-normalise the embedding, in training and evaluation.
    #[arg(long)]
    pub normalize: bool,
    /// Fraction of the training data held out for validation (0 <= f < 1; 0 = none): images of
    /// the training classes under `samples`, whole training classes under `classes`.
    #[arg(long, default_value_t = proto::DEFAULT_VAL_FRACTION)]
    pub val_fraction: f64,
    /// 2-D projection of snapshots when the embedding has more than two dimensions: pca or
    /// tsne.
    #[arg(long, default_value = "pca")]
    pub projection: Projection,
    /// Where data sets are looked up and downloaded to [default: the user cache dir].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// Resume from a checkpoint written by an earlier run with the same parameters.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Output directory: params.json, metrics.jsonl, snapshots/epoch-<n>.json, result.json,
    /// checkpoints/.
    #[arg(long)]
    pub out: PathBuf,
}

impl TrainArgs {
    pub fn job_params(&self) -> anyhow::Result<JobParams> {
        if self.margin.is_some() && !self.loss.uses_margin() {
            bail!("--margin applies to contrastive and triplet losses only");
        }
        if self.mining.is_some() && !self.loss.uses_mining() {
            bail!("--mining applies to the triplet loss only");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            bail!(
                "--val-fraction must be a fraction with 0 <= f < 1 (0 = no validation set), got {}",
                self.val_fraction
            );
        }
        Ok(JobParams {
            network: self.network,
            loss: self.loss,
            dataset: self.dataset.clone(),
            margin: self.loss.uses_margin().then(|| self.margin.unwrap_or(1.0)),
            lr: self.lr,
            embedding_dim: self.dim,
            batch_size: self.batch_size,
            epochs: self.epochs,
            optimizer: self.optimizer,
            seed: self.seed,
            mining: self
                .loss
                .uses_mining()
                .then(|| self.mining.unwrap_or(Mining::Random)),
            train_limit: self.train_limit,
            eval_every: self.eval_every,
            split: self
                .split
                .unwrap_or_else(|| Split::default_for(&self.dataset)),
            normalize: self.normalize,
            val_fraction: self.val_fraction,
            projection: self.projection,
        })
    }
}

/// `worker train`: picks the backend, then trains.
pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    match args.backend {
        BackendKind::Cpu => train_on::<train::CpuBackend>(&Default::default(), args),
        BackendKind::Cuda => train_cuda(args),
    }
}

#[cfg(feature = "cuda")]
fn train_cuda(args: &TrainArgs) -> anyhow::Result<()> {
    let device = cuda_device(0).context("--backend cuda")?;
    train_on::<burn::backend::Autodiff<burn::backend::Cuda>>(&device, args)
}

/// GPU `index`, checked by a tiny allocation: Burn panics when no driver or GPU is present,
/// and that must become an error message rather than a crash.
#[cfg(feature = "cuda")]
pub fn cuda_device(index: u32) -> anyhow::Result<burn::backend::cuda::CudaDevice> {
    use burn::tensor::Tensor;
    let device = burn::backend::cuda::CudaDevice::new(index as usize);
    let probe = std::panic::catch_unwind(|| {
        Tensor::<burn::backend::Cuda, 1>::zeros([1], &device).into_data();
    });
    if probe.is_err() {
        bail!("no usable CUDA GPU {index} / driver found");
    }
    Ok(device)
}

#[cfg(not(feature = "cuda"))]
fn train_cuda(_args: &TrainArgs) -> anyhow::Result<()> {
    bail!(
        "--backend cuda: this worker was built without CUDA support (rebuild with `--features cuda`)"
    )
}

/// Writes events as they come and drives the per-epoch progress bar.
struct Reporter {
    out: PathBuf,
    jsonl: BufWriter<File>,
    bar: Option<ProgressBar>,
    steps_per_epoch: Option<u64>,
    epoch_first_step: u64,
    current_epoch: u32,
    error: Option<anyhow::Error>,
}

impl Reporter {
    fn bar_for(&mut self, epoch: u32) -> &ProgressBar {
        if self.current_epoch != epoch || self.bar.is_none() {
            self.current_epoch = epoch;
            let bar = match self.steps_per_epoch {
                Some(n) => ProgressBar::new(n).with_style(
                    ProgressStyle::with_template("epoch {prefix:>3} [{bar:30}] {pos}/{len} steps  {msg}  ({elapsed}, eta {eta})")
                        .expect("valid template")
                        .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("epoch {prefix:>3} {spinner} {pos} steps  {msg}  ({elapsed})")
                        .expect("valid template"),
                ),
            };
            bar.set_prefix(epoch.to_string());
            self.bar = Some(bar);
        }
        self.bar.as_ref().expect("bar set")
    }

    fn handle(&mut self, event: &TrainEvent) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.jsonl, event)?;
        self.jsonl.write_all(b"\n")?;
        match event {
            TrainEvent::Step {
                epoch, step, loss, ..
            } => {
                let first = self.epoch_first_step;
                let bar = self.bar_for(*epoch);
                bar.set_position(step.saturating_sub(first));
                bar.set_message(format!("loss {loss:.4}"));
            }
            TrainEvent::Epoch {
                epoch,
                step,
                loss,
                samples_per_sec,
                health,
                ..
            } => {
                let first = self.epoch_first_step;
                let bar = self.bar_for(*epoch).clone();
                bar.set_position(step - first);
                let active = health
                    .get(metric::ACTIVE_FRACTION)
                    .copied()
                    .unwrap_or(f64::NAN);
                bar.finish_with_message(format!(
                    "loss {loss:.4}  active {active:.2}  {samples_per_sec:.0} samples/s"
                ));
                self.steps_per_epoch.get_or_insert(step - first);
                self.epoch_first_step = *step;
                self.bar = None;
                self.jsonl.flush()?;
            }
            TrainEvent::Eval { epoch, metrics, .. } => {
                let pick = |k: &str| metrics.get(k).copied().unwrap_or(f64::NAN);
                let val = metrics
                    .get(metric::SELECTION)
                    .map(|v| format!("  val map@r {v:.4}"))
                    .unwrap_or_default();
                eprintln!(
                    "epoch {epoch:>3} eval: map@r {:.4}  knn1 {:.4}  p@1 {:.4}  auc {:.4}  spread {:.3}{val}",
                    pick(metric::MAP_AT_R),
                    pick(metric::KNN1_ACC),
                    pick(metric::PRECISION_AT_1),
                    pick(metric::ROC_AUC),
                    pick(metric::SPREAD_RATIO)
                );
            }
            TrainEvent::Snapshot(s) => {
                let dir = self.out.join("snapshots");
                std::fs::create_dir_all(&dir)?;
                let path = dir.join(format!("epoch-{}.json", s.epoch));
                write_json(&path, s)?;
            }
            TrainEvent::Checkpoint { .. } => {}
        }
        Ok(())
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn train_on<B: train::TrainBackend>(device: &B::Device, args: &TrainArgs) -> anyhow::Result<()> {
    let params = args.job_params()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let metrics_path = args.out.join("metrics.jsonl");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(args.resume.is_some())
        .write(true)
        .truncate(args.resume.is_none())
        .open(&metrics_path)
        .with_context(|| format!("opening {}", metrics_path.display()))?;
    let spec = RunSpec {
        params: params.clone(),
        data_dir: args.data_dir.clone(),
        work_dir: args.out.clone(),
        resume_from: args.resume.clone(),
    };
    tracing::info!(job = %params.short_label(), key = %params.key(), "training");
    write_json(&args.out.join("params.json"), &params)?;
    let mut reporter = Reporter {
        out: args.out.clone(),
        jsonl: BufWriter::new(file),
        bar: None,
        steps_per_epoch: None,
        epoch_first_step: 0,
        current_epoch: 0,
        error: None,
    };
    let cancel = CancelToken::new();
    let outcome = train::run::<B>(
        device,
        &spec,
        &mut |event| {
            if reporter.error.is_none()
                && let Err(e) = reporter.handle(&event)
            {
                reporter.error = Some(e);
            }
        },
        &cancel,
    );
    reporter.jsonl.flush()?;
    if let Some(e) = reporter.error.take() {
        return Err(e.context("writing run outputs"));
    }
    match outcome.context("training failed")? {
        Outcome::Finished { metrics } => {
            // Undefined metrics (NaN: e.g. 20-way one-shot on ten classes) are left out, as the
            // coordinator leaves them out of a stored result; JSON has no NaN.
            let defined: std::collections::BTreeMap<&String, &f64> =
                metrics.iter().filter(|(_, v)| v.is_finite()).collect();
            write_json(&args.out.join("result.json"), &defined)?;
            let pick = |k: &str| metrics.get(k).copied().unwrap_or(f64::NAN);
            eprintln!(
                "done: map@r {:.4}, knn1 {:.4}, {:.0} samples/s; results in {}",
                pick(metric::MAP_AT_R),
                pick(metric::KNN1_ACC),
                pick(metric::SAMPLES_PER_SEC),
                args.out.display()
            );
            Ok(())
        }
        Outcome::Cancelled {
            checkpoint: Some(c),
        } => bail!(
            "cancelled (last checkpoint: epoch {}, {})",
            c.epoch,
            c.path.display()
        ),
        Outcome::Cancelled { checkpoint: None } => bail!("cancelled (no checkpoint yet)"),
    }
}
