//! End-to-end training runs on real data (AT&T faces, Fashion-MNIST) with the Flex backend:
//! event stream, checkpoint / resume, cancellation, divergence, and learning for every loss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use proto::metric;
use proto::{Dataset, JobParams, Loss, Mining, Network, Optimizer, Split};
use worker::train::{
    self, CancelToken, CpuBackend, Outcome, RunSpec, SavedCheckpoint, TrainError, TrainEvent,
};

mod support;

/// One run at a time: each already uses every core through rayon. (Not needed for determinism:
/// `same_seed_same_bits_beside_another_run` runs two at once on purpose.)
static RUN_LOCK: Mutex<()> = Mutex::new(());

fn faces() -> PathBuf {
    support::att_faces()
}

fn faces_params() -> JobParams {
    JobParams {
        network: Network::EmbeddingNet,
        loss: Loss::Contrastive,
        dataset: Dataset::Folder(faces()),
        margin: Some(1.0),
        lr: 1e-3,
        embedding_dim: 8,
        batch_size: 32,
        epochs: 2,
        optimizer: Optimizer::Adam,
        seed: 7,
        mining: None,
        train_limit: None,
        eval_every: 1,
        // The protocol of folder data sets: unseen subjects, two training subjects validate.
        split: Split::Classes,
        val_fraction: 0.1,
        ..JobParams::default()
    }
}

fn run(
    params: &JobParams,
    work: &Path,
    resume: Option<PathBuf>,
    cancel_after_checkpoint: bool,
) -> (Result<Outcome, TrainError>, Vec<TrainEvent>) {
    let _guard = RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    run_until(params, work, resume, &|e| {
        cancel_after_checkpoint && matches!(e, TrainEvent::Checkpoint { .. })
    })
}

/// One run that is cancelled as soon as `cancel_on` returns true for an event.
fn run_until(
    params: &JobParams,
    work: &Path,
    resume: Option<PathBuf>,
    cancel_on: &dyn Fn(&TrainEvent) -> bool,
) -> (Result<Outcome, TrainError>, Vec<TrainEvent>) {
    let spec = RunSpec {
        params: params.clone(),
        data_dir: None,
        work_dir: work.to_path_buf(),
        resume_from: resume,
    };
    let cancel = CancelToken::new();
    let c = cancel.clone();
    let mut events = Vec::new();
    let out = train::run::<CpuBackend>(
        &Default::default(),
        &spec,
        &mut |e| {
            if cancel_on(&e) {
                c.cancel();
            }
            events.push(e)
        },
        &cancel,
    );
    (out, events)
}

fn epochs_of(events: &[TrainEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Epoch { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect()
}

fn final_metrics(out: Result<Outcome, TrainError>) -> BTreeMap<String, f64> {
    match out.expect("run succeeds") {
        Outcome::Finished { metrics } => metrics,
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[test]
fn faces_end_to_end_event_stream() {
    let work = tempfile::tempdir().unwrap();
    let (out, events) = run(&faces_params(), work.path(), None, false);
    let metrics = final_metrics(out);
    for key in [
        metric::KNN1_ACC,
        metric::KNN5_ACC,
        metric::PRECISION_AT_1,
        metric::R_PRECISION,
        metric::MAP_AT_R,
        metric::ROC_AUC,
        metric::ONE_SHOT_5WAY,
        metric::ONE_SHOT_10WAY,
        metric::ONE_SHOT_20WAY,
        metric::SAMPLES_PER_SEC,
        metric::EPOCHS,
        metric::BEST_EPOCH,
        metric::COLLAPSED,
        metric::SPREAD_RATIO,
        metric::EMBEDDING_SPREAD,
    ]
    .into_iter()
    .chain(metric::VAL_EVAL)
    .chain(metric::ONE_SHOT_SE)
    {
        assert!(metrics.contains_key(key), "missing {key}: {metrics:?}");
    }
    assert_eq!(metrics[metric::EPOCHS], 2.0);
    // Unseen subjects: no training subject to classify them by.
    assert!(metrics[metric::KNN1_ACC].is_nan());
    // 20 test subjects: 20-way one-shot exists, with its standard error.
    assert!((0.0..=1.0).contains(&metrics[metric::ONE_SHOT_20WAY]));
    assert!(
        metrics[metric::ONE_SHOT_20WAY_SE] > 0.0 && metrics[metric::ONE_SHOT_20WAY_SE] <= 0.005
    );
    // The result is the evaluation of the best validation epoch.
    let best = metrics[metric::BEST_EPOCH] as u32;
    let selected = events
        .iter()
        .find_map(|e| match e {
            TrainEvent::Eval { epoch, metrics, .. } if *epoch == best => Some(metrics.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        metrics[metric::MAP_AT_R].to_bits(),
        selected[metric::MAP_AT_R].to_bits()
    );
    for e in &events {
        if let TrainEvent::Eval { metrics: m, .. } = e {
            assert!(m[metric::SELECTION] <= metrics[metric::SELECTION]);
        }
    }
    assert!(metrics[metric::SAMPLES_PER_SEC] > 0.0);
    assert_eq!(epochs_of(&events), vec![1, 2]);
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step { .. } => None,
            TrainEvent::Epoch { .. } => Some("epoch"),
            TrainEvent::Checkpoint { .. } => Some("checkpoint"),
            TrainEvent::Eval { .. } => Some("eval"),
            TrainEvent::Snapshot(_) => Some("snapshot"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "epoch",
            "eval",
            "snapshot",
            "checkpoint",
            "epoch",
            "eval",
            "snapshot",
            "checkpoint"
        ]
    );
    let snapshots: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Snapshot(s) => Some(s),
            _ => None,
        })
        .collect();
    // 200 test faces (every image of s21..s40): all of them, PCA-projected from 8-D, same subset
    // per epoch.
    assert_eq!(snapshots[0].points.len(), 200);
    assert_eq!(snapshots[0].projection, proto::SnapshotProjection::Pca);
    assert_eq!(snapshots[0].indices, snapshots[1].indices);
    assert_eq!(snapshots[0].class_names[9], "s10");
    for e in &events {
        if let TrainEvent::Epoch { health, loss, .. } = e {
            assert!(loss.is_finite());
            assert!(health[metric::MEAN_EMBEDDING_NORM] > 0.0);
            assert!((0.0..=1.0).contains(&health[metric::ACTIVE_FRACTION]));
        }
    }
    // 180 training faces (s1..s18) = 180 pairs / 32 per batch = 6 steps per epoch.
    let last_step = events.iter().rev().find_map(|e| match e {
        TrainEvent::Epoch { step, .. } => Some(*step),
        _ => None,
    });
    assert_eq!(last_step, Some(12));
}

#[test]
fn tsne_snapshots_are_reproducible_across_runs() {
    // projection = tsne: the worker draws snapshots with t-SNE, the same layout for the same job.
    let params = JobParams {
        projection: proto::Projection::Tsne,
        epochs: 1,
        ..faces_params()
    };
    let snapshot = || {
        let work = tempfile::tempdir().unwrap();
        let (out, events) = run(&params, work.path(), None, false);
        final_metrics(out);
        events
            .into_iter()
            .find_map(|e| match e {
                TrainEvent::Snapshot(s) => Some(s),
                _ => None,
            })
            .expect("a snapshot")
    };
    let (a, b) = (snapshot(), snapshot());
    assert_eq!(a.projection, proto::SnapshotProjection::Tsne);
    // Every test face of the unseen subjects s21..s40.
    assert_eq!(a.points.len(), 200);
    assert!(a.points.iter().flatten().all(|v| v.is_finite()));
    assert_eq!(a.points, b.points, "same job, same t-SNE layout");
}

#[test]
fn resume_runs_only_the_remaining_epoch_and_matches_an_uninterrupted_run() {
    let mut p = faces_params();
    p.network = Network::LenetHadsell;
    p.loss = Loss::Triplet;
    p.mining = Some(Mining::BatchHard);
    p.optimizer = Optimizer::Sgd;
    p.lr = 0.01;
    let work = tempfile::tempdir().unwrap();

    p.epochs = 1;
    let (out, events) = run(&p, work.path(), None, false);
    final_metrics(out);
    let ckpt = events
        .iter()
        .find_map(|e| match e {
            TrainEvent::Checkpoint { epoch: 1, path } => Some(path.clone()),
            _ => None,
        })
        .expect("checkpoint of epoch 1");
    assert!(ckpt.starts_with(work.path()) && ckpt.is_file());

    p.epochs = 2;
    let (resumed, resumed_events) = run(&p, work.path(), Some(ckpt), false);
    let resumed = final_metrics(resumed);
    assert_eq!(epochs_of(&resumed_events), vec![2]);

    let fresh_dir = tempfile::tempdir().unwrap();
    let (fresh, fresh_events) = run(&p, fresh_dir.path(), None, false);
    let fresh = final_metrics(fresh);
    assert_eq!(epochs_of(&fresh_events), vec![1, 2]);
    let loss_of = |ev: &[TrainEvent]| {
        ev.iter()
            .find_map(|e| match e {
                TrainEvent::Epoch {
                    epoch: 2,
                    loss,
                    step,
                    ..
                } => Some((*loss, *step)),
                _ => None,
            })
            .unwrap()
    };
    let (a, b) = (loss_of(&resumed_events), loss_of(&fresh_events));
    assert_eq!(a.1, b.1, "step counter continues across resume");
    assert!(
        (a.0 - b.0).abs() <= 1e-3 * b.0.abs().max(1.0),
        "epoch-2 loss {a:?} vs {b:?}"
    );
    assert!((resumed[metric::MAP_AT_R] - fresh[metric::MAP_AT_R]).abs() < 1e-3);
}

#[test]
fn cancellation_returns_the_last_checkpoint() {
    let mut p = faces_params();
    p.network = Network::LenetHadsell;
    p.epochs = 3;
    let work = tempfile::tempdir().unwrap();
    let (out, events) = run(&p, work.path(), None, true);
    match out.unwrap() {
        Outcome::Cancelled {
            checkpoint: Some(SavedCheckpoint { epoch, path }),
        } => {
            assert_eq!(epoch, 1);
            assert!(path.is_file());
            assert!(path.to_string_lossy().contains("epoch-0001"));
        }
        other => panic!("expected cancellation, got {other:?}"),
    }
    assert_eq!(epochs_of(&events), vec![1]);
}

fn evals_of(events: &[TrainEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Eval { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect()
}

/// A cancel (or crash) while epoch 2 is being evaluated: the run stops inside the evaluation,
/// epoch 2 is reported by nobody yet, and the resume from epoch 1's checkpoint reports it once.
/// (When the checkpoint was written before the evaluation, a resume skipped epoch 2's metrics.)
#[test]
fn cancel_during_evaluation_then_resume_reports_each_epoch_once() {
    let _guard = RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut p = faces_params();
    p.network = Network::LenetHadsell;
    let work = tempfile::tempdir().unwrap();
    // The last Step of epoch 2 is sent after its last optimizer step, just before evaluating.
    let (out, first) = run_until(&p, work.path(), None, &|e| {
        matches!(e, TrainEvent::Step { epoch: 2, .. })
    });
    let ckpt = match out.unwrap() {
        Outcome::Cancelled {
            checkpoint: Some(SavedCheckpoint { epoch: 1, path }),
        } => path,
        other => panic!("expected a cancel inside the evaluation, got {other:?}"),
    };
    assert!(ckpt.to_string_lossy().contains("epoch-0001"), "{ckpt:?}");
    assert_eq!(epochs_of(&first), vec![1]);
    assert_eq!(evals_of(&first), vec![1]);

    let (out, second) = run_until(&p, work.path(), Some(ckpt), &|_| false);
    final_metrics(out);
    assert_eq!(epochs_of(&second), vec![2]);
    assert_eq!(evals_of(&second), vec![2]);
}

/// The same job gives the same bits alone and beside another job in the same process (as under
/// `worker --slots 2`): nothing it draws comes from state the other job shares.
#[test]
fn same_seed_same_bits_beside_another_run() {
    let _guard = RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut p = faces_params();
    p.network = Network::LenetHadsell;
    p.epochs = 1;
    let mut other = p.clone();
    other.loss = Loss::Triplet;
    other.seed = 99;
    let bits = |out: Result<Outcome, TrainError>| -> Vec<(String, u64)> {
        final_metrics(out)
            .into_iter()
            .filter(|(k, _)| k != metric::SAMPLES_PER_SEC)
            .map(|(k, v)| (k, v.to_bits()))
            .collect()
    };
    let alone_dir = tempfile::tempdir().unwrap();
    let alone = bits(run_until(&p, alone_dir.path(), None, &|_| false).0);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (beside, _) = std::thread::scope(|s| {
        let a = s.spawn(|| run_until(&p, dir_a.path(), None, &|_| false).0);
        let b = s.spawn(|| run_until(&other, dir_b.path(), None, &|_| false).0);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(alone, bits(beside));
}

#[test]
fn divergence_is_reported_with_its_step() {
    let mut p = faces_params();
    p.optimizer = Optimizer::Sgd;
    p.lr = 1e30;
    let work = tempfile::tempdir().unwrap();
    let (out, _) = run(&p, work.path(), None, false);
    match out {
        Err(e @ TrainError::Diverged { step, .. }) => {
            assert!(step <= 5, "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("diverged at step {step} (loss="))
            );
        }
        other => panic!("expected divergence, got {other:?}"),
    }
}

/// For every loss, one epoch on 2,000 Fashion-MNIST images must lift MAP@R clearly above
/// the same seed's untrained network (epochs = 0 evaluates the initialisation).
#[test]
fn every_loss_learns_on_fashion_mnist() {
    let base = JobParams {
        network: Network::EmbeddingNet,
        loss: Loss::Ce,
        dataset: Dataset::FashionMnist,
        margin: None,
        lr: 1e-3,
        embedding_dim: 2,
        batch_size: 64,
        epochs: 1,
        optimizer: Optimizer::Adam,
        seed: 1,
        mining: None,
        train_limit: Some(2_000),
        eval_every: 1,
        // The training images this test was calibrated on: no validation set taken out first.
        val_fraction: 0.0,
        ..JobParams::default()
    };
    let work = tempfile::tempdir().unwrap();
    let mut untrained = base.clone();
    untrained.epochs = 0;
    let before = final_metrics(run(&untrained, work.path(), None, false).0)[metric::MAP_AT_R];
    let cases = [
        (Loss::Ce, None, None),
        (Loss::Bce, None, None),
        (Loss::Contrastive, Some(1.0), None),
        (Loss::Triplet, Some(0.5), Some(Mining::SemiHard)),
    ];
    let mut report = Vec::new();
    for (loss, margin, mining) in cases {
        let mut p = base.clone();
        p.loss = loss;
        p.margin = margin;
        p.mining = mining;
        // The untrained backbone is the same for every loss (model::init keys weights by path).
        let after = final_metrics(run(&p, work.path(), None, false).0)[metric::MAP_AT_R];
        report.push((loss, after));
    }
    eprintln!("untrained map@r {before:.4}; trained: {report:?}");
    for (loss, after) in report {
        assert!(
            after > before + 0.1,
            "{loss}: map@r {after:.4} vs untrained {before:.4}"
        );
    }
}
