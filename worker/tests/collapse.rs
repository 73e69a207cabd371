//! Collapse detection on a real collapse: batch-hard triplet mining without normalisation on
//! Fashion-MNIST shrinks the embedding to a point (README, "Collapse"), and the run's result says
//! so; a healthy run on the same data does not.

use std::collections::BTreeMap;

use proto::metric;
use proto::{Dataset, JobParams, Loss, Mining, Network, Split};
use worker::train::{self, CancelToken, CpuBackend, Outcome, RunSpec, TrainEvent};

mod support;

fn fashion(loss: Loss, mining: Option<Mining>, train_limit: u64) -> JobParams {
    JobParams {
        network: Network::EmbeddingNet,
        loss,
        dataset: Dataset::FashionMnist,
        margin: loss.uses_margin().then_some(1.0),
        lr: 1e-3,
        embedding_dim: 2,
        batch_size: 128,
        epochs: 1,
        seed: 0,
        mining,
        train_limit: Some(train_limit),
        eval_every: 1,
        split: Split::Samples,
        // No validation set: one evaluation of the test set is all this needs.
        val_fraction: 0.0,
        ..JobParams::default()
    }
}

fn result(params: &JobParams) -> (BTreeMap<String, f64>, Vec<f64>) {
    let work = tempfile::tempdir().unwrap();
    let spec = RunSpec {
        params: params.clone(),
        data_dir: None,
        work_dir: work.path().to_path_buf(),
        resume_from: None,
    };
    let mut ratios = Vec::new();
    let out = train::run::<CpuBackend>(
        &Default::default(),
        &spec,
        &mut |e| {
            if let TrainEvent::Eval { metrics, .. } = e {
                ratios.push(metrics[metric::SPREAD_RATIO]);
            }
        },
        &CancelToken::new(),
    )
    .expect("run succeeds");
    match out {
        Outcome::Finished { metrics } => (metrics, ratios),
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[test]
fn batch_hard_collapse_is_flagged_and_a_healthy_run_is_not() {
    // One epoch on 10,000 images: measured spread ratio 0.018 (README, "Collapse").
    let (collapsed, ratios) = result(&fashion(Loss::Triplet, Some(Mining::BatchHard), 10_000));
    eprintln!("batch-hard: {collapsed:?}");
    assert_eq!(collapsed[metric::COLLAPSED], 1.0, "{collapsed:?}");
    assert!(collapsed[metric::SPREAD_RATIO] < 0.25, "{ratios:?}");
    // A collapsed embedding is a poor one: the metrics agree with the flag.
    assert!(collapsed[metric::MAP_AT_R] < 0.2, "{collapsed:?}");

    let (healthy, ratios) = result(&fashion(Loss::Contrastive, None, 3_000));
    eprintln!("contrastive: {healthy:?}");
    assert_eq!(healthy[metric::COLLAPSED], 0.0, "{healthy:?}");
    assert!(healthy[metric::SPREAD_RATIO] > 1.0, "{ratios:?}");
    assert!(healthy[metric::MAP_AT_R] > collapsed[metric::MAP_AT_R] + 0.1);
}
