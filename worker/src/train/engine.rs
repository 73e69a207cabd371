//! The training loop: data preparation, optimisation with periodic events, divergence
//! detection, cooperative cancellation, per-epoch checkpoints, resume and evaluation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer, SgdConfig};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::{Int, Tensor, TensorData};
use proto::metric;
use proto::{JobParams, Loss, Mining, Optimizer as OptimizerKind};

use super::data::{self, Normalizer, Prepared};
use super::loss::pair::ContrastiveLossConfig;
use super::loss::triplet::{OnlineMining, TripletLossConfig};
use super::loss::{LossOutput, ce, mean_norm};
use super::model::{MetricNet, ModelShape};
use super::sampler::{Batch, Sampler, SamplerKind, pk_shape};
use super::select::{Evaluated, Selection};
use super::{
    CancelToken, Outcome, RunSpec, SavedCheckpoint, Snapshot, TrainBackend, TrainError, TrainEvent,
    checkpoint, eval,
};

/// A Step event is emitted every this many optimizer steps.
pub const STEP_EVENT_EVERY: u64 = 20;
/// Batches at the start of each epoch excluded from samples/s (allocation warm-up).
const WARMUP_BATCHES: usize = 2;
/// At most this many training images are embedded as the k-NN reference set.
const EVAL_TRAIN_MAX: usize = 10_000;
/// Test points per snapshot.
const SNAPSHOT_POINTS: usize = 2_000;

type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// What one batch is trained on.
#[derive(Debug, Clone)]
enum Objective {
    Ce,
    Bce,
    Contrastive(ContrastiveLossConfig),
    TripletSampled(TripletLossConfig),
    TripletOnline(TripletLossConfig, OnlineMining),
}

impl Objective {
    fn from_params(p: &JobParams) -> Result<Self, TrainError> {
        let margin = p.margin.unwrap_or(1.0);
        if !(margin.is_finite() && margin > 0.0) && p.loss.uses_margin() {
            return Err(TrainError::Config(format!(
                "margin must be > 0, got {margin}"
            )));
        }
        Ok(match p.loss {
            Loss::Ce => Objective::Ce,
            Loss::Bce => Objective::Bce,
            Loss::Contrastive => {
                Objective::Contrastive(ContrastiveLossConfig::new().with_margin(margin))
            }
            Loss::Triplet => {
                let cfg = TripletLossConfig::new().with_margin(margin);
                match p.mining.unwrap_or(Mining::Random) {
                    Mining::Random => Objective::TripletSampled(cfg),
                    Mining::BatchAll => Objective::TripletOnline(cfg, OnlineMining::BatchAll),
                    Mining::BatchHard => Objective::TripletOnline(cfg, OnlineMining::BatchHard),
                    Mining::SemiHard => Objective::TripletOnline(cfg, OnlineMining::SemiHard),
                }
            }
        })
    }

    fn sampler_kind(&self, batch_size: usize, n_classes: usize) -> SamplerKind {
        match self {
            Objective::Ce => SamplerKind::Shuffle,
            Objective::Bce | Objective::Contrastive(_) => SamplerKind::Pairs,
            Objective::TripletSampled(_) => SamplerKind::Triplets,
            Objective::TripletOnline(..) => {
                let (p, k) = pk_shape(batch_size, n_classes);
                SamplerKind::ClassBalanced { p, k }
            }
        }
    }
}

/// Everything a run needs besides the model and optimizer.
struct Ctx<'a, B: TrainBackend> {
    device: &'a B::Device,
    spec: &'a RunSpec,
    on_event: &'a mut dyn FnMut(TrainEvent),
    cancel: &'a CancelToken,
    objective: Objective,
    sampler: Sampler,
    train: Prepared,
    /// The k-NN reference (training images, data-set labels); `None` under `classes`.
    eval_train: Option<Prepared>,
    val: Option<Prepared>,
    test: Prepared,
    /// Test-embedding spread of the untrained network.
    initial_spread: f64,
    /// [`eval::protocol_seed`] of the run's data set and split.
    eval_seed: u64,
    class_names: Vec<String>,
    snapshot_indices: Vec<u32>,
    start_epoch: u32,
    step: u64,
    last_checkpoint: Option<SavedCheckpoint>,
    _b: std::marker::PhantomData<B>,
}

/// Trains (or resumes) the run described by `spec`; see [`TrainEvent`] for what is reported.
pub fn run<B: TrainBackend>(
    device: &B::Device,
    spec: &RunSpec,
    on_event: &mut dyn FnMut(TrainEvent),
    cancel: &CancelToken,
) -> Result<Outcome, TrainError> {
    let p = &spec.params;
    if p.batch_size < 2 {
        return Err(TrainError::Config("batch size must be at least 2".into()));
    }
    if !(p.lr.is_finite() && p.lr > 0.0) {
        return Err(TrainError::Config(format!(
            "learning rate must be > 0, got {}",
            p.lr
        )));
    }
    let objective = Objective::from_params(p)?;

    let started = Instant::now();
    let ds = data::load(&p.dataset, spec.data_dir.as_deref())?;
    let px = ds.h * ds.w;
    let folder = matches!(p.dataset, proto::Dataset::Folder(_));
    let parts = data::split::divide(&ds, folder, p.split, p.val_fraction, p.train_limit)?;
    let n_classes = parts.train_classes.len();
    let norm = Normalizer::fit(&parts.train.pixels);
    let train = Prepared::new(&parts.train, ds.h, ds.w, &norm);
    let test = Prepared::new(&parts.test, ds.h, ds.w, &norm);
    let val = (!parts.val.is_empty()).then(|| Prepared::new(&parts.val, ds.h, ds.w, &norm));
    // The k-NN reference: training images under their data-set labels, only when the test
    // classes are training classes.
    let eval_train = parts.shared_classes.then(|| {
        let idx = data::stratified_indices(&train.labels, EVAL_TRAIN_MAX);
        let mut reference = parts.train.subset(&idx, px);
        for l in &mut reference.labels {
            *l = parts.train_classes[*l as usize];
        }
        Prepared::new(&reference, ds.h, ds.w, &norm)
    });
    let snapshot_indices = eval::snapshot_subset(&test.labels, SNAPSHOT_POINTS, p.seed);
    tracing::debug!(
        dataset = %p.dataset, split = %p.split, train = train.len(), val = val.as_ref().map_or(0, Prepared::len),
        test = test.len(), h = ds.h, w = ds.w, mean = norm.mean, std = norm.std,
        secs = started.elapsed().as_secs_f64(), "data ready"
    );

    let shape = ModelShape {
        network: p.network,
        loss: p.loss,
        height: ds.h,
        width: ds.w,
        dim: p.embedding_dim as usize,
        n_classes,
        normalize: p.normalize,
    };
    let model = MetricNet::<B>::new(&shape, p.seed, device).map_err(TrainError::Config)?;
    // The spread of the untrained network, the collapse rule's yardstick. The initial weights
    // depend on the seed alone, so a resumed run recomputes the same value here.
    let dim = p.embedding_dim as usize;
    let Some(initial_spread) = eval::embedding_spread(&model, &test, dim, device, cancel) else {
        return Ok(Outcome::Cancelled { checkpoint: None });
    };
    let kind = objective.sampler_kind(p.batch_size as usize, n_classes);
    let sampler = Sampler::new(&train.labels, kind, p.batch_size as usize)
        .map_err(|e| TrainError::Config(format!("{} loss: {e}", p.loss)))?;
    let ctx = Ctx::<B> {
        device,
        spec,
        on_event,
        cancel,
        objective,
        sampler,
        train,
        eval_train,
        val,
        test,
        initial_spread,
        eval_seed: eval::protocol_seed(&p.dataset, p.split),
        class_names: ds.class_names,
        snapshot_indices,
        start_epoch: 1,
        step: 0,
        last_checkpoint: None,
        _b: std::marker::PhantomData,
    };
    match p.optimizer {
        OptimizerKind::Adam => {
            let optim = AdamConfig::new()
                .with_epsilon(1e-8)
                .init::<B, MetricNet<B>>();
            train_with(ctx, model, optim)
        }
        OptimizerKind::Sgd => {
            let momentum = MomentumConfig::new().with_momentum(0.9).with_dampening(0.0);
            let optim = SgdConfig::new()
                .with_momentum(Some(momentum))
                .init::<B, MetricNet<B>>();
            train_with(ctx, model, optim)
        }
    }
}

fn train_with<B, O>(
    mut ctx: Ctx<'_, B>,
    mut model: MetricNet<B>,
    mut optim: O,
) -> Result<Outcome, TrainError>
where
    B: TrainBackend,
    O: Optimizer<MetricNet<B>, B>,
{
    let p = ctx.spec.params.clone();
    let mut selection = Selection::default();
    if let Some(path) = ctx.spec.resume_from.clone() {
        let ck = checkpoint::read(&path)?;
        checkpoint::compatible(&ck.header.params, &p).map_err(|reason| TrainError::Checkpoint {
            path: path.clone(),
            reason,
        })?;
        let bad = |e: burn::record::RecorderError| TrainError::Checkpoint {
            path: path.clone(),
            reason: e.to_string(),
        };
        model = model.load_record(Rec::default().load(ck.model, ctx.device).map_err(bad)?);
        optim = optim.load_record(Rec::default().load(ck.optim, ctx.device).map_err(bad)?);
        ctx.start_epoch = ck.header.epoch + 1;
        selection = ck.header.selection.clone();
        ctx.step = ck.header.step;
        ctx.last_checkpoint = Some(SavedCheckpoint {
            epoch: ck.header.epoch,
            path: path.clone(),
        });
        tracing::info!(path = %path.display(), epoch = ck.header.epoch, "resumed from checkpoint");
    }

    let plan_seed = p.seed;
    let (mut timed_samples, mut timed_secs) = (0u64, 0f64);
    let mut own_checkpoint: Option<PathBuf> = None;
    for epoch in ctx.start_epoch..=p.epochs {
        let t0 = Instant::now();
        let batches = ctx.sampler.epoch(plan_seed, epoch);
        let stats = match run_epoch(&mut ctx, &mut model, &mut optim, &batches, epoch)? {
            Some(s) => s,
            None => {
                return Ok(Outcome::Cancelled {
                    checkpoint: ctx.last_checkpoint.clone(),
                });
            }
        };
        timed_samples += stats.timed_samples;
        timed_secs += stats.timed.as_secs_f64();
        let epoch_event = TrainEvent::Epoch {
            epoch,
            step: ctx.step,
            loss: stats.loss_sum / stats.batches.max(1) as f64,
            lr: p.lr,
            samples_per_sec: stats.rate(),
            epoch_secs: t0.elapsed().as_secs_f64(),
            health: stats.health(),
        };

        // Evaluate, then checkpoint, then report: an epoch's events go out only once its
        // checkpoint exists, so a run that dies (or is cancelled) before then resumes from the
        // previous checkpoint and reports the epoch once, and one that dies after resumes past it
        // with its metrics already sent. (Checkpointing before evaluating lost them.)
        let due = epoch % p.eval_every.max(1) == 0 || epoch == p.epochs;
        let evaluated = if due {
            match evaluate(&ctx, &model, epoch) {
                Some(e) => Some(e),
                None => return Ok(cancelled(&ctx, epoch)),
            }
        } else {
            None
        };
        let path = checkpoint_path(&ctx.spec.work_dir, epoch);
        let model_bytes = Rec::default()
            .record(model.clone().into_record(), ())
            .map_err(|e| ckpt_err(&path, e))?;
        let optim_bytes = Rec::default()
            .record(optim.to_record(), ())
            .map_err(|e| ckpt_err(&path, e))?;
        if let Some((metrics, _)) = &evaluated {
            selection.observe(Evaluated::new(epoch, metrics));
        }
        checkpoint::write(
            &path,
            epoch,
            ctx.step,
            &p,
            &selection,
            &model_bytes,
            &optim_bytes,
        )?;
        if let Some(old) = own_checkpoint.replace(path.clone()) {
            let _ = std::fs::remove_file(old);
        }
        ctx.last_checkpoint = Some(SavedCheckpoint {
            epoch,
            path: path.clone(),
        });

        (ctx.on_event)(epoch_event);
        if let Some(e) = evaluated {
            emit_eval(&mut ctx, e, epoch);
        }
        (ctx.on_event)(TrainEvent::Checkpoint { epoch, path });
    }
    if selection.last.is_none() {
        // Nothing was evaluated (epochs = 0): evaluate as is.
        let epoch = p.epochs.max(ctx.start_epoch.saturating_sub(1));
        match evaluate(&ctx, &model, epoch) {
            Some(e) => selection.observe(Evaluated::new(epoch, &emit_eval(&mut ctx, e, epoch))),
            None => return Ok(cancelled(&ctx, epoch)),
        }
    }
    let mut metrics = selection.result().expect("at least one evaluation");
    let rate = if timed_secs > 0.0 {
        timed_samples as f64 / timed_secs
    } else {
        0.0
    };
    metrics.insert(metric::SAMPLES_PER_SEC.into(), rate);
    metrics.insert(metric::EPOCHS.into(), f64::from(p.epochs));
    Ok(Outcome::Finished { metrics })
}

fn ckpt_err(path: &Path, e: burn::record::RecorderError) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn checkpoint_path(work_dir: &Path, epoch: u32) -> PathBuf {
    work_dir
        .join("checkpoints")
        .join(format!("epoch-{epoch:04}.ckpt"))
}

fn cancelled<B: TrainBackend>(ctx: &Ctx<'_, B>, epoch: u32) -> Outcome {
    tracing::debug!(epoch, step = ctx.step, "cancelled during evaluation");
    Outcome::Cancelled {
        checkpoint: ctx.last_checkpoint.clone(),
    }
}

/// Evaluates `model` at `epoch`; None if the run was cancelled meanwhile.
fn evaluate<B: TrainBackend>(
    ctx: &Ctx<'_, B>,
    model: &MetricNet<B>,
    epoch: u32,
) -> Option<(BTreeMap<String, f64>, Snapshot)> {
    let t = Instant::now();
    let plan = eval::EvalPlan {
        reference: ctx.eval_train.as_ref(),
        val: ctx.val.as_ref(),
        test: &ctx.test,
        snapshot_indices: &ctx.snapshot_indices,
        class_names: &ctx.class_names,
        dim: ctx.spec.params.embedding_dim as usize,
        seed: ctx.eval_seed,
        initial_spread: ctx.initial_spread,
        projection: ctx.spec.params.projection,
    };
    let out = eval::evaluate_model(model, &plan, epoch, ctx.device, ctx.cancel)?;
    tracing::debug!(
        epoch,
        secs = t.elapsed().as_secs_f64(),
        map_at_r = out.0.get(metric::MAP_AT_R),
        "evaluated"
    );
    Some(out)
}

/// Reports an evaluation; returns its metrics.
fn emit_eval<B: TrainBackend>(
    ctx: &mut Ctx<'_, B>,
    (metrics, snapshot): (BTreeMap<String, f64>, Snapshot),
    epoch: u32,
) -> BTreeMap<String, f64> {
    (ctx.on_event)(TrainEvent::Eval {
        epoch,
        step: ctx.step,
        metrics: metrics.clone(),
    });
    (ctx.on_event)(TrainEvent::Snapshot(snapshot));
    metrics
}

#[derive(Debug, Default)]
struct EpochStats {
    batches: usize,
    loss_sum: f64,
    norm_sum: f64,
    active_sum: f64,
    timed_samples: u64,
    timed: Duration,
    all_samples: u64,
    all: Duration,
}

impl EpochStats {
    /// `mean_embedding_norm` and `active_fraction` (see [`super::loss`] for "active").
    fn health(&self) -> BTreeMap<String, f64> {
        let n = self.batches.max(1) as f64;
        BTreeMap::from([
            (metric::MEAN_EMBEDDING_NORM.to_owned(), self.norm_sum / n),
            (metric::ACTIVE_FRACTION.to_owned(), self.active_sum / n),
        ])
    }

    fn rate(&self) -> f64 {
        let (n, t) = if self.timed > Duration::ZERO {
            (self.timed_samples, self.timed)
        } else {
            (self.all_samples, self.all)
        };
        if t > Duration::ZERO {
            n as f64 / t.as_secs_f64()
        } else {
            0.0
        }
    }
}

/// Gathers a batch's images (`[n, 1, H, W]` flattened) from the normalised buffer.
fn gather(set: &Prepared, batch: &Batch) -> Vec<f32> {
    let px = set.pixels_per_image();
    let mut buf = Vec::with_capacity(batch.indices.len() * px);
    for &i in &batch.indices {
        buf.extend_from_slice(&set.data[i * px..(i + 1) * px]);
    }
    buf
}

/// Trains one epoch; `Ok(None)` if cancelled.
fn run_epoch<B, O>(
    ctx: &mut Ctx<'_, B>,
    model: &mut MetricNet<B>,
    optim: &mut O,
    batches: &[Batch],
    epoch: u32,
) -> Result<Option<EpochStats>, TrainError>
where
    B: TrainBackend,
    O: Optimizer<MetricNet<B>, B>,
{
    let lr = ctx.spec.params.lr;
    let (h, w) = (ctx.train.h, ctx.train.w);
    let mut stats = EpochStats::default();
    let (mut window_loss, mut window_n) = (0f64, 0u64);
    let train = &ctx.train;
    std::thread::scope(|scope| {
        // Gathering the next batches overlaps with the current step.
        let (tx, rx) = mpsc::sync_channel::<Vec<f32>>(2);
        scope.spawn(move || {
            for b in batches {
                if tx.send(gather(train, b)).is_err() {
                    break;
                }
            }
        });
        let epoch_start = Instant::now();
        let mut timed_start: Option<Instant> = None;
        for (bi, batch) in batches.iter().enumerate() {
            if ctx.cancel.is_cancelled() {
                tracing::info!(epoch, step = ctx.step, "cancelled");
                return Ok(None);
            }
            if bi == WARMUP_BATCHES && batches.len() > 2 * WARMUP_BATCHES {
                timed_start = Some(Instant::now());
            }
            let buf = rx.recv().expect("batch producer alive");
            let n = batch.indices.len();
            let x = Tensor::<B, 4>::from_data(TensorData::new(buf, [n, 1, h, w]), ctx.device);
            let emb = model.embed(x); // [n, D]
            let out = batch_loss(&ctx.objective, model, emb.clone(), batch, ctx.device);
            let norm = mean_norm(emb.detach());
            let summary = Tensor::cat(
                vec![out.loss.clone().detach(), out.active_fraction(), norm],
                0,
            );
            let v = summary.into_data().to_vec::<f32>().expect("f32 summary");
            ctx.step += 1;
            let loss = f64::from(v[0]);
            if !loss.is_finite() {
                return Err(TrainError::Diverged {
                    step: ctx.step,
                    loss,
                });
            }
            let grads = GradientsParams::from_grads(out.loss.backward(), &*model);
            *model = optim.step(lr, model.clone(), grads);

            stats.batches += 1;
            stats.loss_sum += loss;
            stats.active_sum += f64::from(v[1]);
            stats.norm_sum += f64::from(v[2]);
            stats.all_samples += batch.anchors as u64;
            if timed_start.is_some() {
                stats.timed_samples += batch.anchors as u64;
            }
            window_loss += loss;
            window_n += 1;
            if ctx.step.is_multiple_of(STEP_EVENT_EVERY) {
                (ctx.on_event)(TrainEvent::Step {
                    epoch,
                    step: ctx.step,
                    loss: window_loss / window_n as f64,
                    lr,
                });
                window_loss = 0.0;
                window_n = 0;
            }
        }
        // Flush the epoch's tail so short epochs (fewer than STEP_EVENT_EVERY steps) still
        // draw a loss curve.
        if window_n > 0 {
            (ctx.on_event)(TrainEvent::Step {
                epoch,
                step: ctx.step,
                loss: window_loss / window_n as f64,
                lr,
            });
        }
        stats.all = epoch_start.elapsed();
        stats.timed = timed_start.map(|t| t.elapsed()).unwrap_or_default();
        Ok(Some(stats))
    })
}

/// The loss of one batch for the run's objective.
fn batch_loss<B: TrainBackend>(
    objective: &Objective,
    model: &MetricNet<B>,
    emb: Tensor<B, 2>,
    batch: &Batch,
    device: &B::Device,
) -> LossOutput<B> {
    let a = batch.anchors;
    let part = |k: usize| emb.clone().narrow(0, k * a, a); // [a, D]
    let same = || Tensor::<B, 1>::from_data(TensorData::new(batch.same.clone(), [a]), device);
    match objective {
        Objective::Ce => {
            let labels: Vec<i64> = batch.labels.iter().map(|&l| i64::from(l)).collect();
            let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [a]), device);
            let head = model
                .ce_head
                .as_ref()
                .expect("ce head exists for the ce loss");
            ce::cross_entropy(head.forward(emb), targets)
        }
        Objective::Bce => {
            let head = model
                .bce_head
                .as_ref()
                .expect("bce head exists for the bce loss");
            head.loss(part(0), part(1), same())
        }
        Objective::Contrastive(cfg) => cfg.forward(part(0), part(1), same()),
        Objective::TripletSampled(cfg) => cfg.sampled(part(0), part(1), part(2)),
        Objective::TripletOnline(cfg, mining) => cfg.online(emb, &batch.labels, *mining),
    }
}
