//! Where the tests find their data sets: `../shared/datasets` of this workplace when it is
//! there, otherwise the worker's own checksummed downloads in the cache `worker train` uses.
//!
//! `LATENTSWEEP_SHARED_DATASETS` replaces the `../shared/datasets` path (a missing directory
//! forces the download path); `LATENTSWEEP_MNIST_MIRROR` and `LATENTSWEEP_ATT_FACES_MIRROR`
//! replace the public mirrors.

// Each test file uses only some of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use worker::train::data::{att_faces, builtin};

const HELP: &str = "Either put the data sets in ../shared/datasets/{mnist,att_faces} beside the \
repository (or point LATENTSWEEP_SHARED_DATASETS at a directory holding mnist/ and att_faces/), \
or run the tests on a machine that reaches the public mirrors (or set LATENTSWEEP_MNIST_MIRROR / \
LATENTSWEEP_ATT_FACES_MIRROR to a mirror that serves the canonical files), so that they are \
downloaded and verified into the cache";

/// The shared data set directory, if this machine has it.
fn shared() -> Option<PathBuf> {
    let dir = match std::env::var_os("LATENTSWEEP_SHARED_DATASETS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"),
    };
    dir.is_dir().then_some(dir)
}

/// A directory holding `mnist/` with the four MNIST files: usable as a worker `data_dir`.
pub fn datasets_dir() -> PathBuf {
    if let Some(d) = shared().filter(|d| d.join("mnist").is_dir()) {
        return d;
    }
    let files = builtin::locate(builtin::Builtin::Mnist, None, None).unwrap_or_else(|e| {
        panic!("MNIST is not in ../shared/datasets/mnist and could not be downloaded: {e}. {HELP}.")
    });
    // `<cache root>/mnist/<file>`
    files
        .train_images
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The directory holding the four MNIST `.gz` files.
pub fn mnist_dir() -> PathBuf {
    datasets_dir().join("mnist")
}

/// The AT&T faces folder data set (`s1` .. `s40`).
pub fn att_faces() -> PathBuf {
    if let Some(d) = shared()
        .map(|d| d.join(att_faces::DIR_NAME))
        .filter(|d| d.is_dir())
    {
        return d;
    }
    att_faces::locate(None, None).unwrap_or_else(|e| {
        panic!(
            "the AT&T faces are not in ../shared/datasets/att_faces and could not be downloaded: \
             {e}. {HELP}."
        )
    })
}
