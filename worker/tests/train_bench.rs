//! Throughput measurements on the Flex CPU backend (ignored by default; run with
//! `cargo test -p latentsweep-worker --test train_bench -- --ignored --nocapture`).
//! They print numbers and assert nothing about speed.

use std::time::Instant;

use burn::backend::Flex;
use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{LinearConfig, PReluConfig};
use burn::tensor::{Distribution, Tensor};
use proto::{Dataset, JobParams, Loss, Network, Optimizer};
use worker::train::{self, CancelToken, CpuBackend, Outcome, RunSpec, TrainEvent};

fn time<R>(label: &str, reps: usize, mut f: impl FnMut() -> R) {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    eprintln!(
        "{label:<40} {:>9.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
}

#[test]
#[ignore]
fn op_timings_batch_128() {
    let d = Default::default();
    let x = Tensor::<Flex, 4>::random([128, 1, 28, 28], Distribution::Default, &d);
    let conv1 = Conv2dConfig::new([1, 32], [5, 5]).init::<Flex>(&d);
    let conv2 = Conv2dConfig::new([32, 64], [5, 5]).init::<Flex>(&d);
    let pool = MaxPool2dConfig::new([2, 2]).init();
    let act = PReluConfig::new().init::<Flex>(&d);
    let fc = LinearConfig::new(1024, 256).init::<Flex>(&d);
    let h1 = conv1.forward(x.clone());
    let p1 = pool.forward(h1.clone());
    let h2 = conv2.forward(p1.clone());
    time("conv1 fwd [128,1,28,28]", 10, || {
        conv1.forward(x.clone()).into_data()
    });
    time("prelu (burn) [128,32,24,24]", 10, || {
        act.forward(h1.clone()).into_data()
    });
    time("prelu (ours) [128,32,24,24]", 10, || {
        worker::train::model::nets::prelu(&act, h1.clone()).into_data()
    });
    time("relu [128,32,24,24]", 10, || {
        burn::tensor::activation::relu(h1.clone()).into_data()
    });
    time("maxpool2 [128,32,24,24]", 10, || {
        pool.forward(h1.clone()).into_data()
    });
    time("conv2 fwd [128,32,12,12]", 10, || {
        conv2.forward(p1.clone()).into_data()
    });
    let flat = pool.forward(h2).flatten::<2>(1, 3);
    time("fc 1024->256", 10, || fc.forward(flat.clone()).into_data());
    let _ = conv1.num_params();
}

#[test]
#[ignore]
fn embedding_net_ce_samples_per_sec() {
    let params = JobParams {
        network: Network::EmbeddingNet,
        loss: Loss::Ce,
        dataset: Dataset::FashionMnist,
        margin: None,
        lr: 1e-3,
        embedding_dim: 2,
        batch_size: 128,
        epochs: 1,
        optimizer: Optimizer::Adam,
        seed: 0,
        mining: None,
        train_limit: Some(6_400),
        eval_every: 1,
    };
    let work = tempfile::tempdir().unwrap();
    let spec = RunSpec {
        params,
        data_dir: None,
        work_dir: work.path().to_path_buf(),
        resume_from: None,
    };
    let mut rate = 0.0;
    let out = train::run::<CpuBackend>(
        &Default::default(),
        &spec,
        &mut |e| {
            if let TrainEvent::Epoch {
                samples_per_sec,
                epoch_secs,
                ..
            } = e
            {
                eprintln!("epoch: {samples_per_sec:.0} samples/s, {epoch_secs:.1} s");
                rate = samples_per_sec;
            }
        },
        &CancelToken::new(),
    )
    .unwrap();
    assert!(matches!(out, Outcome::Finished { .. }));
    eprintln!("embedding-net ce batch 128 (Flex): {rate:.0} samples/s");
}
