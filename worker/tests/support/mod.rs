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

/// Training tests run with the allocator the `worker` binary trains with (see `src/bin/worker/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HELP: &str = "Either put the data sets in ../shared/datasets/{mnist,att_faces} beside the \
repository (or point LATENTSWEEP_SHARED_DATASETS at a directory holding mnist/ and att_faces/), \
or run the tests on a machine that reaches the public mirrors (or set LATENTSWEEP_MNIST_MIRROR / \
LATENTSWEEP_ATT_FACES_MIRROR to a mirror that serves the canonical files), so that they are \
downloaded and verified into the cache (the one `worker train` uses)";

/// Where the shared data sets would be.
fn shared_path() -> PathBuf {
    match std::env::var_os("LATENTSWEEP_SHARED_DATASETS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"),
    }
}

/// The shared data set directory, if this machine has it.
fn shared() -> Option<PathBuf> {
    Some(shared_path()).filter(|d| d.is_dir())
}

fn missing(what: &str, dir: &str, err: impl std::fmt::Display) -> String {
    let cache =
        builtin::cache_root(None).map_or_else(|e| e.to_string(), |c| c.display().to_string());
    format!(
        "{what} is not in {}/{dir} and could not be downloaded into {cache}/{dir}: {err}. {HELP}.",
        shared_path().display()
    )
}

/// A directory holding `mnist/` with the four MNIST files: usable as a worker `data_dir`.
pub fn datasets_dir() -> PathBuf {
    if let Some(d) = shared().filter(|d| d.join("mnist").is_dir()) {
        return d;
    }
    builtin::locate(builtin::Builtin::Mnist, None, None)
        .unwrap_or_else(|e| panic!("{}", missing("MNIST", "mnist", e)));
    builtin::cache_root(None).unwrap()
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
    att_faces::locate(None, None)
        .unwrap_or_else(|e| panic!("{}", missing("the AT&T faces", att_faces::DIR_NAME, e)))
}
