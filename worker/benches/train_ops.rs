//! Per-op timings on the Flex CPU backend: the first layers of `embedding-net` (Burn's modules
//! and the GEMM convolution of `model::ops`), pooling variants, the GEMM convolution's pieces,
//! the whole network forward and forward+backward (fused path against Burn's modules) and one
//! training epoch. Prints one JSON line per measurement (median milliseconds unless named
//! otherwise); asserts nothing about speed.
//!
//! `cargo bench -p latentsweep-worker --bench train_ops -- [GROUP ...]` with GROUP one of
//! `op_timings`, `embedding_net_ce`, `conv_pool_variants`, `conv_gemm_parts`,
//! `embedding_net_fwd_bwd` (default: all of them) or `profile_loop` (one op in a loop for
//! `perf record`, chosen by `OP=conv1|conv2|pool1|bconv1|bconv2|bpool1|net|net_reference`).

use std::time::Instant;

use burn::backend::Flex;
use burn::module::{AutodiffModule, Module};
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{LinearConfig, PReluConfig};
use burn::tensor::{Distribution, Tensor};
use proto::{Dataset, JobParams, Loss, Network, Optimizer};
use serde_json::json;
use worker::train::{self, CancelToken, CpuBackend, Outcome, RunSpec, TrainEvent};

/// The allocator the `worker` binary trains with (see `src/bin/worker/main.rs`), so timings match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The groups run when none is named (`profile_loop` only on request: it is for `perf`).
const GROUPS: [(&str, fn()); 5] = [
    ("op_timings", op_timings_batch_128),
    ("embedding_net_ce", embedding_net_ce_samples_per_sec),
    ("conv_pool_variants", conv_pool_variants),
    ("conv_gemm_parts", conv_gemm_parts),
    ("embedding_net_fwd_bwd", embedding_net_fwd_bwd),
];

fn main() {
    // `cargo bench` passes `--bench`; other flags are not ours either.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if named.is_empty() {
        for (_, run) in GROUPS {
            run();
        }
        return;
    }
    for name in &named {
        match GROUPS.iter().find(|(n, _)| n == name) {
            Some((_, run)) => run(),
            None if name == "profile_loop" => profile_loop(),
            None => panic!(
                "unknown group {name}; groups: {}, profile_loop",
                GROUPS.map(|g| g.0).join(", ")
            ),
        }
    }
}

/// One measurement as a JSON line on stdout.
fn report(group: &str, name: &str, fields: serde_json::Value) {
    let mut line = json!({ "group": group, "name": name });
    if let (Some(l), serde_json::Value::Object(f)) = (line.as_object_mut(), fields) {
        l.extend(f);
    }
    println!("{line}");
}

fn time<R>(label: &str, reps: usize, mut f: impl FnMut() -> R) {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
    report("op_timings", label, json!({ "mean_ms": ms }));
}

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
        ..JobParams::default()
    };
    let work = tempfile::tempdir().unwrap();
    let spec = RunSpec {
        params,
        data_dir: None,
        work_dir: work.path().to_path_buf(),
        resume_from: None,
    };
    let (mut rate, mut secs) = (0.0, 0.0);
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
                rate = samples_per_sec;
                secs = epoch_secs;
            }
        },
        &CancelToken::new(),
    )
    .unwrap();
    assert!(matches!(out, Outcome::Finished { .. }));
    report(
        "embedding_net_ce",
        "embedding-net ce batch 128",
        json!({ "samples_per_sec": rate, "epoch_secs": secs }),
    );
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
    report(
        "conv_pool_variants",
        label,
        json!({ "shape": shape.to_vec(), "fwd_ms": f, "fwd_bwd_ms": fb }),
    );
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
fn conv_pool_variants() {
    use worker::train::model::ops::conv2d_gemm_cnhw;
    let d = Default::default();
    let c1 = Conv2dConfig::new([1, 32], [5, 5]).init::<Ad>(&d);
    let c2 = Conv2dConfig::new([32, 64], [5, 5]).init::<Ad>(&d);
    let (c1f, c2f) = (c1.valid(), c2.valid());
    let pool = MaxPool2dConfig::new([2, 2]).init();
    for n in [128, 256] {
        fwd_bwd(
            "conv1 burn",
            [n, 1, 28, 28],
            false,
            |x| c1f.forward(x),
            |x| c1.forward(x),
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
fn conv_gemm_parts() {
    let part = |c: usize, name: &str, ms: f64| {
        report(
            "conv_gemm_parts",
            &format!("{name} c={c}"),
            json!({ "median_ms": ms }),
        );
    };
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
        part(c, "cat", median_ms(11, &cat));
        let im = || worker::train::model::ops::im2col_cnhw(x.clone(), 5, 5);
        assert_eq!(im().to_data(), cols.to_data());
        part(c, "im2col 2-pass", median_ms(11, im));
        let xa = Tensor::<Ad, 4>::from_data(x.to_data(), &d);
        part(
            c,
            "im2col 2-pass fwd+bwd",
            median_ms(11, || {
                worker::train::model::ops::im2col_cnhw(xa.clone().require_grad(), 5, 5)
                    .sum()
                    .backward()
            }),
        );
        part(c, "cat+into_data", median_ms(11, || cat().into_data()));
        part(
            c,
            "matmul",
            median_ms(11, || w.clone().matmul(cols.clone())),
        );
        part(
            c,
            "matmul+into_data",
            median_ms(11, || w.clone().matmul(cols.clone()).into_data()),
        );
        let y = w.clone().matmul(cols.clone());
        let b = Tensor::<Flex, 2>::random([o, 1], Distribution::Default, &d);
        part(c, "bias", median_ms(11, || y.clone() + b.clone()));
        let yt = y.clone().transpose();
        part(
            c,
            "transposed matmul",
            median_ms(11, || {
                cols.clone().transpose().matmul(w.clone().transpose())
            }),
        );
        let _ = yt;
    }
}

/// One op's (or the network's) forward+backward in a loop, for `perf record`; `OP` picks it.
fn profile_loop() {
    use worker::train::model::ops::conv2d_gemm_cnhw;
    let d = Default::default();
    let op = std::env::var("OP").unwrap_or_else(|_| "conv2".into());
    let c1 = Conv2dConfig::new([1, 32], [5, 5]).init::<Ad>(&d);
    let c2 = Conv2dConfig::new([32, 64], [5, 5]).init::<Ad>(&d);
    let shape = match op.as_str() {
        "conv1" | "bconv1" => [1, 128, 28, 28],
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
        report("profile_loop", &op, json!({ "median_ms": ms }));
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
    report("profile_loop", &op, json!({ "median_ms": ms }));
}

/// EmbeddingNet forward and forward+backward (loss = sum), fast path vs Burn's modules,
/// interleaved so both see the same machine load.
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
        report(
            "embedding_net_fwd_bwd",
            &format!("embedding-net batch {n}"),
            json!({
                "fwd_burn_ms": med(0),
                "fwd_fast_ms": med(1),
                "fwd_bwd_burn_ms": med(2),
                "fwd_bwd_fast_ms": med(3),
            }),
        );
    }
}
