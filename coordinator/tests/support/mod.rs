//! Where the coordinator's tests find their data sets: `../shared/datasets` of this workplace
//! when it is there, otherwise the worker's own checksummed download of MNIST into the cache
//! `worker train` uses. `LATENTSWEEP_SHARED_DATASETS` replaces the `../shared/datasets` path
//! (a missing directory forces the download); `LATENTSWEEP_MNIST_MIRROR` replaces the mirror.

use std::path::{Path, PathBuf};

use worker::train::data::builtin::{self, Builtin};

/// A directory holding `mnist/` with the four MNIST files: usable as the dashboard's data dir.
pub fn datasets_dir() -> PathBuf {
    let shared = match std::env::var_os("LATENTSWEEP_SHARED_DATASETS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"),
    };
    if shared.join("mnist").is_dir() {
        return shared;
    }
    builtin::locate(Builtin::Mnist, None, None).unwrap_or_else(|e| {
        panic!(
            "MNIST is not in {} and could not be downloaded: {e}. Either put it in \
             ../shared/datasets/mnist beside the repository (or point LATENTSWEEP_SHARED_DATASETS \
             at a directory holding mnist/), or run the tests on a machine that reaches the \
             public mirror (or set LATENTSWEEP_MNIST_MIRROR to a mirror serving the canonical \
             files), so that it is downloaded and verified into the cache",
            shared.display()
        )
    });
    builtin::cache_root(None).unwrap()
}
