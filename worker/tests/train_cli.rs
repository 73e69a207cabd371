//! The `worker train` command end to end: real binary, real data, files on disk.

use std::process::Command;

use proto::metric;

mod support;

fn faces() -> String {
    let p = support::att_faces();
    format!("folder:{}", p.display())
}

#[test]
fn train_writes_metrics_snapshots_and_result() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args([
            "train",
            "--dataset",
            &faces(),
            "--network",
            "lenet-hadsell",
            "--loss",
            "triplet",
        ])
        .args([
            "--mining",
            "semi-hard",
            "--margin",
            "0.5",
            "--dim",
            "4",
            "--batch-size",
            "32",
        ])
        .args(["--epochs", "2", "--eval-every", "2", "--seed", "3", "--out"])
        .arg(out.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let lines = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "epoch").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "eval").count(), 1);
    // An epoch's checkpoint is reported after its evaluation (see `train::run`).
    assert_eq!(kinds[kinds.len() - 2..], ["snapshot", "checkpoint"]);

    let snap: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("snapshots/epoch-2.json")).unwrap())
            .unwrap();
    // A folder data set defaults to the unseen-class split: s21..s40 (10 faces each) are tested.
    assert_eq!(snap["points"].as_array().unwrap().len(), 200);
    let params: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("params.json")).unwrap()).unwrap();
    assert_eq!(params["split"], "classes");
    assert_eq!(params["val_fraction"], proto::DEFAULT_VAL_FRACTION);
    assert_eq!(snap["projection"], "pca");

    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("result.json")).unwrap()).unwrap();
    for key in [
        metric::MAP_AT_R,
        metric::ROC_AUC,
        metric::ONE_SHOT_20WAY,
        metric::ONE_SHOT_20WAY_SE,
        metric::VAL_MAP_AT_R,
        metric::BEST_EPOCH,
        metric::COLLAPSED,
        metric::SAMPLES_PER_SEC,
        metric::EPOCHS,
    ] {
        assert!(result[key].is_number(), "{key} missing in {result}");
    }
    // No training subject to classify unseen ones by: NaN, left out like the coordinator does.
    assert!(result.get(metric::KNN1_ACC).is_none(), "{result}");
    assert_eq!(result[metric::EPOCHS], 2.0);
    assert!(out.path().join("checkpoints/epoch-0002.ckpt").is_file());
}

#[test]
fn cuda_backend_without_support_fails_clearly() {
    if cfg!(feature = "cuda") {
        return; // built with CUDA: the error path below does not apply
    }
    let out = tempfile::tempdir().unwrap();
    let res = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args([
            "train",
            "--dataset",
            "mnist",
            "--network",
            "embedding-net",
            "--loss",
            "ce",
        ])
        .args(["--backend", "cuda", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("CUDA"), "{err}");
}

#[test]
fn bad_arguments_are_rejected() {
    let res = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args([
            "train",
            "--dataset",
            "cifar",
            "--network",
            "embedding-net",
            "--loss",
            "ce",
            "--out",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("cifar"));
    let res = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args([
            "train",
            "--dataset",
            "mnist",
            "--network",
            "embedding-net",
            "--loss",
            "ce",
        ])
        .args(["--margin", "1", "--out", "x"])
        .output()
        .unwrap();
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("--margin"));
    for (flag, value, said) in [
        ("--val-fraction", "1", "--val-fraction"),
        ("--split", "subjects", "subjects"),
        ("--projection", "umap", "umap"),
    ] {
        let res = Command::new(env!("CARGO_BIN_EXE_worker"))
            .args([
                "train",
                "--dataset",
                "mnist",
                "--network",
                "embedding-net",
                "--loss",
                "ce",
            ])
            .args([flag, value, "--out", "x"])
            .output()
            .unwrap();
        assert!(!res.status.success(), "{flag} {value}");
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(err.contains(said), "{flag} {value}: {err}");
    }
}
