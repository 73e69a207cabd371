//! Every sweep file shipped in `sweeps/` parses and expands.

use std::path::Path;

use proto::sweep::{DEFAULT_MAX_CELLS, load_sweep};
use proto::{Dataset, Loss};

#[test]
fn every_shipped_sweep_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (sweep, _) = load_sweep(&path, DEFAULT_MAX_CELLS).unwrap_or_else(|e| panic!("{e}"));
            assert!(!sweep.cells.is_empty(), "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 4, "expected the four shipped sweeps, found {seen}");
}

#[test]
fn mnist_sweep_is_the_classic_grid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps/mnist.toml");
    let (sweep, _) = load_sweep(&path, DEFAULT_MAX_CELLS).unwrap();
    // (ce + bce) x 2 lrs + (contrastive + triplet) x 3 margins x 2 lrs, times 3 seeds.
    assert_eq!(sweep.cells.len(), (2 * 2 + 2 * 3 * 2) * 3);
    assert!(
        sweep
            .cells
            .iter()
            .all(|c| c.dataset == Dataset::Mnist && c.embedding_dim == 2)
    );
    assert_eq!(
        sweep.cells.iter().filter(|c| c.loss == Loss::Ce).count(),
        2 * 3
    );
}

#[test]
fn folder_paths_resolve_against_the_sweep_file() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps/att-faces.toml");
    let (sweep, _) = load_sweep(&path, DEFAULT_MAX_CELLS).unwrap();
    let Dataset::Folder(dir) = &sweep.cells[0].dataset else {
        panic!("not a folder dataset")
    };
    assert!(dir.is_absolute(), "{}", dir.display());
    assert!(
        dir.ends_with("shared/datasets/att_faces"),
        "{}",
        dir.display()
    );
}
