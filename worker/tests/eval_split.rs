//! The evaluation protocol's splits on real data (Fashion-MNIST, which CI installs, and the AT&T
//! faces): no test class trains under `classes`, no validation or test image trains under any
//! split, validation is fixed per data set, and the leak check itself catches a leaking split.

use std::collections::BTreeSet;

use proto::{Dataset, Split};
use worker::train::data::split::{Origins, divide, find_leak};
use worker::train::data::{self, LoadedDataset};

mod support;

/// The data-set label of a position in `Origins` (train split, then test split).
fn labeller(ds: &LoadedDataset) -> impl Fn(usize) -> u32 + '_ {
    let n = ds.train.len();
    move |i| {
        if i < n {
            ds.train.labels[i]
        } else {
            ds.test.labels[i - n]
        }
    }
}

fn classes_of(ids: &[usize], label: &impl Fn(usize) -> u32) -> BTreeSet<u32> {
    ids.iter().map(|&i| label(i)).collect()
}

#[test]
fn fashion_mnist_splits_do_not_leak_and_a_leaking_one_is_caught() {
    // Found at /usr/share/datasets/fashion-mnist (installed by .ci/test), else downloaded.
    let ds = data::load(&Dataset::FashionMnist, None).expect("Fashion-MNIST");
    let label = labeller(&ds);
    let n_train_split = ds.train.len();
    for split in [Split::Samples, Split::Classes] {
        for f in [0.0, 0.1] {
            let d = divide(&ds, false, split, f, None).unwrap();
            let o = &d.origin;
            assert_eq!(find_leak(split, o, &label), None, "{split} f={f}");
            assert_eq!(d.train.len(), o.train.len());
            assert_eq!((d.val.len(), d.test.len()), (o.val.len(), o.test.len()));
            // Built-ins: training and validation from the train split, tests from the test split.
            assert!(o.train.iter().chain(&o.val).all(|&i| i < n_train_split));
            assert!(o.test.iter().all(|&i| i >= n_train_split));
            let (tr, va, te) = (
                classes_of(&o.train, &label),
                classes_of(&o.val, &label),
                classes_of(&o.test, &label),
            );
            match (split, f > 0.0) {
                (Split::Samples, false) => {
                    assert_eq!(d.train.len(), 60_000);
                    assert!(d.val.is_empty());
                }
                (Split::Samples, true) => {
                    // Class-stratified 10 %: 600 of each class's 6,000.
                    assert_eq!(d.val.len(), 6_000);
                    for c in 0..10 {
                        assert_eq!(d.val.labels.iter().filter(|&&l| l == c).count(), 600);
                    }
                    assert_eq!(tr, va);
                }
                (Split::Classes, false) => {
                    assert_eq!(tr, (0..5).collect());
                    assert_eq!(te, (5..10).collect());
                }
                (Split::Classes, true) => {
                    // max(2, round(0.1 * 5)) = 2 training classes held out whole: the last two.
                    assert_eq!(tr, (0..3).collect());
                    assert_eq!(va, (3..5).collect());
                    assert_eq!(te, (5..10).collect());
                    assert_eq!(d.test.len(), 5_000);
                }
            }
            // The `ce` head sees contiguous labels.
            let remapped: BTreeSet<u32> = d.train.labels.iter().copied().collect();
            assert_eq!(remapped, (0..tr.len() as u32).collect());
            assert_eq!(d.train_classes, tr.iter().copied().collect::<Vec<_>>());
        }
    }

    // Validation is fixed: the same images whatever the run (there is no seed to pass), and
    // `train_limit` only thins what trains.
    let a = divide(&ds, false, Split::Samples, 0.1, None).unwrap();
    let b = divide(&ds, false, Split::Samples, 0.1, Some(1_000)).unwrap();
    assert_eq!(a.origin.val, b.origin.val);
    assert_eq!(a.origin.test, b.origin.test);
    assert_eq!(b.train.len(), 1_000);
    assert!(b.origin.train.iter().all(|i| a.origin.train.contains(i)));

    // Leaks the check must catch: a test image that trains, a validation image that trains,
    // and (under `classes`) a test class that trains through another of its images.
    let d = divide(&ds, false, Split::Classes, 0.1, None).unwrap();
    let leak = |o: Origins| find_leak(Split::Classes, &o, &label);
    let mut o = d.origin.clone();
    o.train.push(o.test[0]);
    assert!(leak(o).is_some());
    let mut o = d.origin.clone();
    o.train.push(o.val[0]);
    assert!(leak(o).is_some());
    let mut o = d.origin.clone();
    let test_class_train_image = (0..n_train_split).find(|&i| label(i) == 7).unwrap();
    o.train.push(test_class_train_image);
    let why = leak(o).expect("a test class that trains is a leak");
    assert!(why.contains("class 7"), "{why}");
    // The same image moved between sides under `samples` too.
    let d = divide(&ds, false, Split::Samples, 0.1, None).unwrap();
    let mut o = d.origin.clone();
    o.test.push(o.val[3]);
    assert!(find_leak(Split::Samples, &o, &label).is_some());
}

#[test]
fn att_faces_split_by_subject_in_natural_order() {
    let root = support::att_faces();
    let ds = data::load(&Dataset::Folder(root), None).unwrap();
    // Natural order: s1, s2, ..., s9, s10, ... (not s1, s10, s11, ...).
    assert_eq!(ds.class_names.len(), 40);
    assert_eq!(ds.class_names[1], "s2");
    assert_eq!(ds.class_names[9], "s10");
    assert_eq!(ds.class_names[39], "s40");
    let label = labeller(&ds);
    let d = divide(&ds, true, Split::Classes, 0.1, None).unwrap();
    assert_eq!(find_leak(Split::Classes, &d.origin, &label), None);
    // s1..s18 train, s19 and s20 validate (max(2, round(0.1 * 20)) = 2), s21..s40 test; every
    // image of a subject is on its side: 10 each.
    assert_eq!(classes_of(&d.origin.train, &label), (0..18).collect());
    assert_eq!(classes_of(&d.origin.val, &label), (18..20).collect());
    assert_eq!(classes_of(&d.origin.test, &label), (20..40).collect());
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (180, 20, 200));
    // Too many validation classes for the training side is a clear error.
    let e = divide(&ds, true, Split::Classes, 0.95, None).unwrap_err();
    assert!(e.to_string().contains("whole classes"), "{e}");
}
