//! The evaluation protocol's division of a data set (README, "Evaluation protocol"): which
//! classes and images train, which validate and which are only ever tested.
//!
//! * `samples`: every class trains; the test images are the data set's test split (built-ins)
//!   or each class's held-out files (folders, see [`super::folder`]).
//! * `classes`: classes in label order (built-ins) or folder-name natural order (`s1, s2, …,
//!   s10`, the order [`super::folder`] gives its labels). The first `⌊n/2⌋` classes train and the
//!   other `⌈n/2⌉` are only evaluated: an odd count gives the extra class to the test side, where
//!   N-way one-shot needs classes most. Built-ins train on the train-split images of the training
//!   classes and test on the test-split images of the test classes; folder data sets put every
//!   image of a class on its side.
//!
//! Validation is drawn from the training side only, in the regime of the split:
//! * `samples`: a class-stratified `val_fraction` of each training class's images
//!   (`round(f · n_c)`, leaving at least two to train), chosen by a FIXED seed that does not
//!   depend on the run's, so every run of a data set shares one validation set;
//! * `classes`: the last `max(2, round(f · n_train_classes))` training classes, held out whole.
//!
//! `train_limit` then applies (class-stratified) to what trains. Training labels are remapped to
//! `0..k` in class order, because the `ce` head has one output per training class; validation and
//! test keep the data set's labels, which index its class names.

use std::collections::{BTreeMap, BTreeSet};

use proto::Split;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::{DataError, ImageSet, LoadedDataset, stratified_indices};

/// Seed of the `samples` validation draw: fixed, so runs of any seed share one validation set.
const VALIDATION_SEED: u64 = 0x5EED_0F7A;

/// A data set divided for one run.
#[derive(Debug, Clone)]
pub struct SplitData {
    /// What trains, labels remapped to `0..train_classes.len()`.
    pub train: ImageSet,
    /// Validation images (data-set labels); empty when `val_fraction` is 0.
    pub val: ImageSet,
    /// Test images (data-set labels).
    pub test: ImageSet,
    /// Data-set label of each training label (`train_classes[remapped] = original`).
    pub train_classes: Vec<u32>,
    /// Whether the training classes are also the test classes (`samples`): only then does a
    /// k-NN classifier over training images have a reference for the test labels.
    pub shared_classes: bool,
    /// Where each image came from, per side: positions in the data set's train split followed
    /// by its test split (`i < train.len()` is train-split image `i`). For [`find_leak`].
    pub origin: Origins,
}

/// Data-set positions of the images of each side of a [`SplitData`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origins {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// Divides `ds` for `split` (module docs). `folder` is whether `ds` came from a folder (its two
/// splits are then merged per class under `classes`).
pub fn divide(
    ds: &LoadedDataset,
    folder: bool,
    split: Split,
    val_fraction: f64,
    train_limit: Option<u64>,
) -> Result<SplitData, DataError> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(DataError::Other(format!(
            "val_fraction must be a fraction with 0 <= f < 1, got {val_fraction}"
        )));
    }
    let px = ds.h * ds.w;
    let n_classes = ds.class_names.len();
    let n_tr = ds.train.len();
    // Every image by its data-set position: the train split, then the test split.
    let label = |i: usize| {
        if i < n_tr {
            ds.train.labels[i]
        } else {
            ds.test.labels[i - n_tr]
        }
    };
    let train_split: Vec<usize> = (0..n_tr).collect();
    let test_split: Vec<usize> = (n_tr..n_tr + ds.test.len()).collect();
    let (mut train, test) = match split {
        Split::Samples => (train_split, test_split),
        Split::Classes => {
            if n_classes < 4 {
                return Err(DataError::Other(format!(
                    "the `classes` split needs at least 4 classes (2 to train, 2 to test), \
                     the data set has {n_classes}"
                )));
            }
            let n_train = (n_classes / 2) as u32;
            let side = |ids: &[usize], training: bool| -> Vec<usize> {
                ids.iter()
                    .copied()
                    .filter(|&i| (label(i) < n_train) == training)
                    .collect()
            };
            if folder {
                let all: Vec<usize> = (0..n_tr + ds.test.len()).collect();
                (side(&all, true), side(&all, false))
            } else {
                (side(&train_split, true), side(&test_split, false))
            }
        }
    };
    let mut val = Vec::new();
    if val_fraction > 0.0 {
        let labels: Vec<u32> = train.iter().map(|&i| label(i)).collect();
        let held = match split {
            Split::Samples => hold_out_images(&labels, val_fraction),
            Split::Classes => hold_out_classes(&labels, val_fraction)?,
        };
        let held_set: BTreeSet<usize> = held.iter().copied().collect();
        val = held.iter().map(|&p| train[p]).collect();
        train = (0..train.len())
            .filter(|p| !held_set.contains(p))
            .map(|p| train[p])
            .collect();
    }
    if let Some(limit) = train_limit {
        let labels: Vec<u32> = train.iter().map(|&i| label(i)).collect();
        let keep = stratified_indices(&labels, limit as usize);
        train = keep.into_iter().map(|p| train[p]).collect();
    }
    if train.is_empty() || test.is_empty() {
        return Err(DataError::Other(
            "the split leaves no training or no test images".into(),
        ));
    }
    let gather = |ids: &[usize]| {
        let mut out = ImageSet {
            pixels: Vec::with_capacity(ids.len() * px),
            labels: Vec::with_capacity(ids.len()),
        };
        for &i in ids {
            let (set, j) = if i < n_tr {
                (&ds.train, i)
            } else {
                (&ds.test, i - n_tr)
            };
            out.pixels
                .extend_from_slice(&set.pixels[j * px..(j + 1) * px]);
            out.labels.push(set.labels[j]);
        }
        out
    };
    let mut train_set = gather(&train);
    let train_classes: Vec<u32> = train_set
        .labels
        .iter()
        .copied()
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    let remap: BTreeMap<u32, u32> = train_classes
        .iter()
        .enumerate()
        .map(|(i, &l)| (l, i as u32))
        .collect();
    for l in &mut train_set.labels {
        *l = remap[l];
    }
    let origin = Origins { train, val, test };
    // The rules above cannot leak; checking anyway costs milliseconds and turns a future bug into
    // a failed job instead of a published number measured on classes that trained.
    if let Some(leak) = find_leak(split, &origin, label) {
        return Err(DataError::Other(format!(
            "the {split} split of this data set leaks: {leak}"
        )));
    }
    Ok(SplitData {
        train: train_set,
        val: gather(&origin.val),
        test: gather(&origin.test),
        train_classes,
        shared_classes: split == Split::Samples,
        origin,
    })
}

/// `samples` validation: per class, `round(f · n_c)` images (at most `n_c − 2`), drawn with
/// [`VALIDATION_SEED`] and the class label. Returns positions in `labels`, ascending.
fn hold_out_images(labels: &[u32], f: f64) -> Vec<usize> {
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut held = Vec::new();
    for (&label, members) in &by_class {
        let n_val =
            ((members.len() as f64 * f).round() as usize).min(members.len().saturating_sub(2));
        let mut rng = ChaCha8Rng::seed_from_u64(VALIDATION_SEED ^ u64::from(label));
        let mut shuffled = members.clone();
        shuffled.shuffle(&mut rng);
        held.extend_from_slice(&shuffled[..n_val]);
    }
    held.sort_unstable();
    held
}

/// `classes` validation: the last `max(2, round(f · k))` of the `k` training classes. Returns
/// positions in `labels`, ascending.
fn hold_out_classes(labels: &[u32], f: f64) -> Result<Vec<usize>, DataError> {
    let classes: Vec<u32> = labels
        .iter()
        .copied()
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    let k = classes.len();
    let n_val = ((f * k as f64).round() as usize).max(2);
    if n_val + 2 > k {
        return Err(DataError::Other(format!(
            "validation under the `classes` split holds out {n_val} whole classes, which leaves \
             fewer than 2 of the {k} training classes to train; use val_fraction 0 (no \
             validation) or a data set with more classes"
        )));
    }
    let first_val = classes[k - n_val];
    Ok((0..labels.len())
        .filter(|&i| labels[i] >= first_val)
        .collect())
}

/// Finds a way a division leaks, `None` when it is clean: under `classes`, a test or validation
/// class among the training classes; under any split, an image (by data-set position) on two
/// sides. `labels` are the data-set labels of the positions in `origin`. [`divide`] refuses a
/// division it flags; tests call it on real divisions and on deliberately leaking ones.
pub fn find_leak(split: Split, origin: &Origins, labels: impl Fn(usize) -> u32) -> Option<String> {
    let train_classes: BTreeSet<u32> = origin.train.iter().map(|&i| labels(i)).collect();
    if split == Split::Classes {
        for (what, ids) in [("test", &origin.test), ("validation", &origin.val)] {
            if let Some(&i) = ids.iter().find(|&&i| train_classes.contains(&labels(i))) {
                return Some(format!("{what} class {} also trains", labels(i)));
            }
        }
    }
    let train: BTreeSet<usize> = origin.train.iter().copied().collect();
    let val: BTreeSet<usize> = origin.val.iter().copied().collect();
    for (what, ids) in [("validation", &origin.val), ("test", &origin.test)] {
        if let Some(i) = ids.iter().find(|i| train.contains(i)) {
            return Some(format!("{what} image {i} also trains"));
        }
    }
    if let Some(i) = origin.test.iter().find(|i| val.contains(i)) {
        return Some(format!("test image {i} is also a validation image"));
    }
    None
}
