//! Throughput measurements on the Flex CPU backend (ignored by default; run with
//! `cargo test -p latentsweep-worker --test train_bench -- --ignored --nocapture`).
//! They print numbers and assert nothing about speed.

use std::time::Instant;

use burn::backend::Flex;
use burn::module::{AutodiffModule, Module};
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{LinearConfig, PReluConfig};
use burn::tensor::{Distribution, Tensor};
use proto::{Dataset, JobParams, Loss, Network, Optimizer};
use worker::train::{self, CancelToken, CpuBackend, Outcome, RunSpec, TrainEvent};

/// The allocator the `worker` binary trains with (see `src/bin/worker/main.rs`), so timings match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

type Ad = burn::backend::Autodiff<Flex>;

/// Median wall time of `reps` runs (after one warm-up), in ms.
fn median_ms<R>(reps: usize, mut f: impl FnMut() -> R) -> f64 {
    std::hint::black_box(f());
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            std::hint::black_box(f());
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

/// Forward (Flex) and forward+backward (Autodiff<Flex>, loss = sum) medians of one op.
fn fwd_bwd<const D: usize>(
    label: &str,
    shape: [usize; D],
    input_grad: bool,
    fwd: impl Fn(Tensor<Flex, D>) -> Tensor<Flex, D>,
    fwd_ad: impl Fn(Tensor<Ad, D>) -> Tensor<Ad, D>,
) {
    let d = Default::default();
    let x = Tensor::<Flex, D>::random(shape, Distribution::Default, &d);
    let xa = Tensor::<Ad, D>::from_data(x.to_data(), &d);
    let f = median_ms(11, || fwd(x.clone()).into_data());
    let fb = median_ms(11, || {
        let x = if input_grad {
            xa.clone().require_grad()
        } else {
            xa.clone()
        };
        fwd_ad(x).sum().backward()
    });
    eprintln!("{label:<44} fwd {f:>8.2} ms   fwd+bwd {fb:>8.2} ms");
}

/// 2×2 max pooling (stride 2, even sizes) as the maximum of the four strided views.
fn max_pool2x2<B: burn::tensor::backend::Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [a, b, h, w] = x.dims();
    let (h2, w2) = (h / 2 * 2, w / 2 * 2);
    let view = |i: usize, j: usize| {
        x.clone().slice([
            burn::tensor::Slice::from(0..a),
            burn::tensor::Slice::from(0..b),
            burn::tensor::Slice::new(i as isize, Some(h2 as isize), 2),
            burn::tensor::Slice::new(j as isize, Some(w2 as isize), 2),
        ])
    };
    let top = view(0, 0).max_pair(view(0, 1));
    let bottom = view(1, 0).max_pair(view(1, 1));
    top.max_pair(bottom)
}

/// 2×2 max pooling with stride 2 via reshape and two `max_dim` reductions.
fn max_pool2x2_reshape<B: burn::tensor::backend::Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [a, b, h, w] = x.dims();
    let (h2, w2) = (h / 2, w / 2);
    let x = if h % 2 != 0 || w % 2 != 0 {
        x.slice([0..a, 0..b, 0..h2 * 2, 0..w2 * 2])
    } else {
        x
    };
    x.reshape([a * b * h2, 2, w2, 2])
        .max_dim(3)
        .max_dim(1)
        .reshape([a, b, h2, w2])
}

/// Conv and pool variants of `model::ops` against Burn's modules, at batch 128 and 256.
#[test]
#[ignore]
fn conv_pool_variants() {
    use worker::train::model::ops::{conv2d_gemm, conv2d_gemm_cnhw};
    let d = Default::default();
    let c1 = Conv2dConfig::new([1, 32], [5, 5]).init::<Ad>(&d);
    let c2 = Conv2dConfig::new([32, 64], [5, 5]).init::<Ad>(&d);
    let (c1f, c2f) = (c1.valid(), c2.valid());
    let pool = MaxPool2dConfig::new([2, 2]).init();
    for n in [128, 256] {
        eprintln!("--- batch {n}");
        fwd_bwd(
            "conv1 burn",
            [n, 1, 28, 28],
            false,
            |x| c1f.forward(x),
            |x| c1.forward(x),
        );
        fwd_bwd(
            "conv1 gemm (nchw)",
            [n, 1, 28, 28],
            false,
            |x| conv2d_gemm(&c1f, x),
            |x| conv2d_gemm(&c1, x),
        );
        fwd_bwd(
            "conv1 gemm (cnhw)",
            [1, n, 28, 28],
            false,
            |x| conv2d_gemm_cnhw(&c1f, x),
            |x| conv2d_gemm_cnhw(&c1, x),
        );
        fwd_bwd(
            "conv2 burn",
            [n, 32, 12, 12],
            true,
            |x| c2f.forward(x),
            |x| c2.forward(x),
        );
        fwd_bwd(
            "conv2 gemm (nchw)",
            [n, 32, 12, 12],
            true,
            |x| conv2d_gemm(&c2f, x),
            |x| conv2d_gemm(&c2, x),
        );
        fwd_bwd(
            "conv2 gemm (cnhw)",
            [32, n, 12, 12],
            true,
            |x| conv2d_gemm_cnhw(&c2f, x),
            |x| conv2d_gemm_cnhw(&c2, x),
        );
        fwd_bwd(
            "pool1 burn",
            [n, 32, 24, 24],
            true,
            |x| pool.forward(x),
            |x| pool.forward(x),
        );
        fwd_bwd(
            "pool1 max_pair",
            [n, 32, 24, 24],
            true,
            max_pool2x2,
            max_pool2x2,
        );
        fwd_bwd(
            "pool1 reshape+max_dim",
            [n, 32, 24, 24],
            true,
            max_pool2x2_reshape,
            max_pool2x2_reshape,
        );
        fwd_bwd(
            "pool2 burn",
            [n, 64, 8, 8],
            true,
            |x| pool.forward(x),
            |x| pool.forward(x),
        );
        fwd_bwd(
            "pool2 max_pair",
            [n, 64, 8, 8],
            true,
            max_pool2x2,
            max_pool2x2,
        );
        fwd_bwd(
            "pool2 reshape+max_dim",
            [n, 64, 8, 8],
            true,
            max_pool2x2_reshape,
            max_pool2x2_reshape,
        );
    }
}

/// Pieces of the GEMM convolution, timed separately (forward, Flex).
#[test]
#[ignore]
fn conv_gemm_parts() {
    let d = Default::default();
    for (c, hw, o) in [(1usize, 28usize, 32usize), (32, 12, 64)] {
        let n = 128;
        let x = Tensor::<Flex, 4>::random([c, n, hw, hw], Distribution::Default, &d);
        let w = Tensor::<Flex, 2>::random([o, 25 * c], Distribution::Default, &d);
        let ho = hw - 4;
        let cat = || {
            let s: Vec<_> = (0..25)
                .map(|s| {
                    x.clone()
                        .slice([0..c, 0..n, s / 5..s / 5 + ho, s % 5..s % 5 + ho])
                })
                .collect();
            Tensor::cat(s, 0).reshape([25 * c, n * ho * ho])
        };
        let cols = cat();
        eprintln!("c={c}: cat {:.2} ms", median_ms(11, &cat));
        let im = || worker::train::model::ops::im2col_cnhw(x.clone(), 5, 5);
        assert_eq!(im().to_data(), cols.to_data());
        eprintln!("c={c}: im2col 2-pass {:.2} ms", median_ms(11, im));
        let xa = Tensor::<Ad, 4>::from_data(x.to_data(), &d);
        eprintln!(
            "c={c}: im2col 2-pass fwd+bwd {:.2} ms",
            median_ms(11, || worker::train::model::ops::im2col_cnhw(
                xa.clone().require_grad(),
                5,
                5
            )
            .sum()
            .backward())
        );
        eprintln!(
            "c={c}: cat+into_data {:.2} ms",
            median_ms(11, || cat().into_data())
        );
        eprintln!(
            "c={c}: matmul {:.2} ms",
            median_ms(11, || w.clone().matmul(cols.clone()))
        );
        eprintln!(
            "c={c}: matmul+into_data {:.2} ms",
            median_ms(11, || w.clone().matmul(cols.clone()).into_data())
        );
        let y = w.clone().matmul(cols.clone());
        let b = Tensor::<Flex, 2>::random([o, 1], Distribution::Default, &d);
        eprintln!(
            "c={c}: bias {:.2} ms",
            median_ms(11, || y.clone() + b.clone())
        );
        let yt = y.clone().transpose();
        eprintln!(
            "c={c}: transposed matmul {:.2} ms",
            median_ms(11, || cols
                .clone()
                .transpose()
                .matmul(w.clone().transpose()))
        );
        let _ = yt;
    }
}

/// Runs one op's forward+backward in a loop, for `perf record` (OP = conv1|conv2|pool1).
#[test]
#[ignore]
fn profile_loop() {
    use worker::train::model::ops::conv2d_gemm_cnhw;
    let d = Default::default();
    let op = std::env::var("OP").unwrap_or_else(|_| "conv2".into());
    let c1 = Conv2dConfig::new([1, 32], [5, 5]).init::<Ad>(&d);
    let c2 = Conv2dConfig::new([32, 64], [5, 5]).init::<Ad>(&d);
    let shape = match op.as_str() {
        "conv1" | "bconv1" | "gconv1" => [1, 128, 28, 28],
        "conv2" | "bconv2" => [32, 128, 12, 12],
        _ => [32, 128, 24, 24],
    };
    if op.starts_with("net") {
        let net = worker::train::model::EmbeddingNetConfig::new(28, 28, 2)
            .init::<Ad>(&d)
            .unwrap();
        let x = Tensor::<Ad, 4>::random([128, 1, 28, 28], Distribution::Default, &d);
        let ms = median_ms(20, || {
            if op == "net" {
                net.forward(x.clone()).sum().backward()
            } else {
                net.forward_reference(x.clone()).sum().backward()
            }
        });
        eprintln!("{op}: {ms:.2} ms");
        return;
    }
    let x = Tensor::<Ad, 4>::random(shape, Distribution::Default, &d);
    let ms = median_ms(30, || {
        let x = if op.ends_with("conv1") {
            x.clone()
        } else {
            x.clone().require_grad()
        };
        match op.as_str() {
            "bconv1" => c1.forward(x.swap_dims(0, 1)).sum().backward(),
            "bconv2" => c2.forward(x.swap_dims(0, 1)).sum().backward(),
            "gconv1" => worker::train::model::ops::conv2d_gemm(&c1, x.swap_dims(0, 1))
                .sum()
                .backward(),
            "bpool1" => MaxPool2dConfig::new([2, 2])
                .init()
                .forward(x)
                .sum()
                .backward(),
            "conv1" => conv2d_gemm_cnhw(&c1, x).sum().backward(),
            "conv2" => conv2d_gemm_cnhw(&c2, x).sum().backward(),
            _ => max_pool2x2(x).sum().backward(),
        }
    });
    eprintln!("{op}: {ms:.2} ms");
}

/// EmbeddingNet forward and forward+backward (loss = sum), fast path vs Burn's modules,
/// interleaved so both see the same machine load.
#[test]
#[ignore]
fn embedding_net_fwd_bwd() {
    use worker::train::model::EmbeddingNetConfig;
    let d = Default::default();
    let net = EmbeddingNetConfig::new(28, 28, 2).init::<Ad>(&d).unwrap();
    let netf = net.valid();
    for n in [128, 256] {
        let x = Tensor::<Flex, 4>::random([n, 1, 28, 28], Distribution::Default, &d);
        let xa = Tensor::<Ad, 4>::from_data(x.to_data(), &d);
        let mut rows = [[0.0; 4]; 3];
        for row in &mut rows {
            *row = [
                median_ms(5, || netf.forward_reference(x.clone()).into_data()),
                median_ms(5, || netf.forward(x.clone()).into_data()),
                median_ms(5, || net.forward_reference(xa.clone()).sum().backward()),
                median_ms(5, || net.forward(xa.clone()).sum().backward()),
            ];
        }
        let med = |i: usize| {
            let mut v: Vec<f64> = rows.iter().map(|r| r[i]).collect();
            v.sort_by(f64::total_cmp);
            v[1]
        };
        eprintln!(
            "embedding-net batch {n}: fwd burn {:.1} ms, fast {:.1} ms; fwd+bwd burn {:.1} ms, fast {:.1} ms",
            med(0),
            med(1),
            med(2),
            med(3)
        );
    }
}
