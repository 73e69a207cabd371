//! Training throughput on the CPU (Burn Flex): anchor samples/s per loss at batch 128, through
//! the real training loop (`train::run`), evaluation excluded. Prints one JSON line per loss in
//! the same shape as `pytorch_reference.py`, so `speed_side_by_side.sh` can put them in one
//! table. Loss names as there: `ce`, `bce`, `contrastive`, `triplet` (random triplets),
//! `triplet-batch-hard`, `triplet-semi-hard`, `triplet-batch-all` (online mining).
//!
//! `cargo bench -p latentsweep-worker --bench train_speed -- [--losses ce,bce] [--repeats 5]
//! [--batches 24] [--batch 128] [--dim 2] [--network koch-siamese]
//! [--dataset folder:/work/shared/datasets/att_faces]`

use std::time::Instant;

use proto::{Dataset, JobParams, Loss, Mining, Network, Optimizer};
use worker::train::{self, CancelToken, CpuBackend, RunSpec, TrainEvent};

/// The allocator the `worker` binary trains with (see `src/bin/worker/main.rs`), so timings match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    losses: Vec<String>,
    repeats: u32,
    batches: u64,
    batch: u32,
    dim: u32,
    network: Network,
    dataset: Dataset,
}

/// A loss name of the benchmark: the loss and, for triplets, the mining.
fn loss_and_mining(name: &str) -> (Loss, Option<Mining>) {
    match name.strip_prefix("triplet-") {
        Some(mining) => (
            Loss::Triplet,
            Some(mining.parse().expect("a mining name after triplet-")),
        ),
        None => {
            let loss: Loss = name.parse().expect("a loss name");
            (loss, loss.uses_mining().then_some(Mining::Random))
        }
    }
}

fn args() -> Args {
    let mut a = Args {
        losses: ["ce", "bce", "contrastive", "triplet"]
            .map(String::from)
            .to_vec(),
        repeats: 5,
        batches: 24,
        batch: 128,
        dim: 2,
        network: Network::EmbeddingNet,
        dataset: Dataset::FashionMnist,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut v = || it.next().cloned().unwrap_or_default();
        match k.as_str() {
            "--losses" => a.losses = v().split(',').map(String::from).collect(),
            "--repeats" => a.repeats = v().parse().expect("--repeats N"),
            "--batches" => a.batches = v().parse().expect("--batches N"),
            "--batch" => a.batch = v().parse().expect("--batch N"),
            "--dim" => a.dim = v().parse().expect("--dim N"),
            "--network" => a.network = v().parse().expect("--network NAME"),
            "--dataset" => a.dataset = v().parse().expect("--dataset NAME"),
            // `cargo bench` passes `--bench`; anything else is a mistake worth stopping on.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for name in &a.losses {
        let (loss, mining) = loss_and_mining(name);
        let params = JobParams {
            network: a.network,
            loss,
            dataset: a.dataset.clone(),
            margin: loss.uses_margin().then_some(1.0),
            lr: 1e-3,
            embedding_dim: a.dim,
            batch_size: a.batch,
            // One extra epoch: cancelling at its start skips the final evaluation.
            epochs: a.repeats + 1,
            optimizer: Optimizer::Adam,
            seed: 0,
            mining,
            train_limit: Some(a.batches * u64::from(a.batch)),
            eval_every: 10_000,
            ..JobParams::default()
        };
        let work = tempfile::tempdir().expect("temp dir");
        let spec = RunSpec {
            params,
            data_dir: None,
            work_dir: work.path().to_path_buf(),
            resume_from: None,
        };
        let cancel = CancelToken::new();
        let mut rates = Vec::new();
        let t0 = Instant::now();
        let out = train::run::<CpuBackend>(
            &Default::default(),
            &spec,
            &mut |e| {
                if let TrainEvent::Epoch {
                    samples_per_sec, ..
                } = e
                {
                    rates.push(samples_per_sec);
                    if rates.len() as u32 >= a.repeats {
                        cancel.cancel();
                    }
                }
            },
            &cancel,
        );
        assert!(out.is_ok(), "{name}: {out:?}");
        // Each epoch's rate leaves out its first batches (allocator warm-up); the first epoch
        // is a warm-up as a whole when there are enough repeats.
        let timed: Vec<f64> = if rates.len() > 2 {
            rates[1..].to_vec()
        } else {
            rates.clone()
        };
        println!(
            "{}",
            serde_json::json!({
                "impl": "latentsweep-flex", "threads": threads, "loss": name,
                "network": a.network.to_string(),
                "batch": a.batch, "dim": a.dim,
                "samples_per_sec": (median(timed) * 10.0).round() / 10.0,
                "runs": rates.iter().map(|r| (r * 10.0).round() / 10.0).collect::<Vec<_>>(),
                "wall_s": t0.elapsed().as_secs_f64(),
            })
        );
    }
}
