//! Deterministic batch samplers: shuffled single images (ce), balanced siamese pairs,
//! random triplets and class-balanced P×K batches for online triplet mining.
//!
//! An epoch's batches depend only on (seed, epoch, labels), so a run resumed from a
//! checkpoint sees exactly the batches it would have seen without the interruption.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How training examples are grouped into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SamplerKind {
    /// Every training image once per epoch, shuffled; `batch_size` images per batch.
    Shuffle,
    /// One pair per training image (the anchor); pairs alternate same / different class.
    Pairs,
    /// One random triplet (anchor, positive, negative) per training image.
    Triplets,
    /// `p` classes × `k` images each per batch, for online mining.
    ClassBalanced { p: usize, k: usize },
}

/// One batch: the images to embed, in order, and how they are grouped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    /// Training-set positions of all images to embed: `[a.., b..]` for pairs,
    /// `[a.., p.., n..]` for triplets.
    pub(crate) indices: Vec<usize>,
    /// Labels of `indices`.
    pub(crate) labels: Vec<u32>,
    /// Number of anchors (pairs, triplets or single images) in the batch.
    pub(crate) anchors: usize,
    /// Pairs only: 1.0 if the pair's two images share their class, else 0.0.
    pub(crate) same: Vec<f32>,
}

/// Produces an epoch's batches.
#[derive(Debug, Clone)]
pub(crate) struct Sampler {
    labels: Vec<u32>,
    by_class: Vec<Vec<usize>>,
    kind: SamplerKind,
    batch_size: usize,
}

/// Classes per batch and images per class for a P×K batch of about `batch_size` images.
pub(crate) fn pk_shape(batch_size: usize, n_classes: usize) -> (usize, usize) {
    let p = n_classes.min((batch_size / 4).max(2)).max(1);
    let k = (batch_size / p).max(2);
    (p, k)
}

impl Sampler {
    /// A sampler over `labels`, or why it cannot draw its batches from them: pairs and triplets
    /// need a positive for every anchor (at least 2 images in every class) and a negative (at
    /// least 2 classes). Checked here, before training starts, rather than failing mid-epoch.
    pub(crate) fn new(
        labels: &[u32],
        kind: SamplerKind,
        batch_size: usize,
    ) -> Result<Self, String> {
        let n_classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
        let mut by_class = vec![Vec::new(); n_classes];
        for (i, &l) in labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        if labels.is_empty() {
            return Err("no training images".into());
        }
        if kind != SamplerKind::Shuffle {
            let what = match kind {
                SamplerKind::Pairs => "pairs",
                SamplerKind::Triplets => "triplets",
                _ => "class-balanced batches for triplet mining",
            };
            let present = by_class.iter().filter(|c| !c.is_empty()).count();
            if present < 2 {
                return Err(format!(
                    "{what} need images of at least 2 classes for negatives; the training \
                     images ({}) are all of one class (raise train_limit)",
                    labels.len()
                ));
            }
            if let Some(class) = by_class.iter().position(|c| c.len() == 1) {
                return Err(format!(
                    "{what} need at least 2 images of every class for positives; class {class} \
                     has 1 of the {} training images (raise train_limit)",
                    labels.len()
                ));
            }
        }
        by_class.retain(|c: &Vec<usize>| !c.is_empty());
        Ok(Sampler {
            labels: labels.to_vec(),
            by_class,
            kind,
            batch_size: batch_size.max(1),
        })
    }

    /// Class index (into `by_class`) of each label value.
    fn class_slot(&self, label: u32) -> usize {
        self.by_class
            .iter()
            .position(|c| self.labels[c[0]] == label)
            .expect("label has a class")
    }

    fn positive(&self, rng: &mut ChaCha8Rng, anchor: usize) -> usize {
        let class = &self.by_class[self.class_slot(self.labels[anchor])];
        if class.len() == 1 {
            return anchor;
        }
        loop {
            let c = class[rng.random_range(0..class.len())];
            if c != anchor {
                return c;
            }
        }
    }

    fn negative(&self, rng: &mut ChaCha8Rng, anchor: usize) -> usize {
        let own = self.class_slot(self.labels[anchor]);
        let mut slot = rng.random_range(0..self.by_class.len() - 1);
        if slot >= own {
            slot += 1;
        }
        let class = &self.by_class[slot];
        class[rng.random_range(0..class.len())]
    }

    fn rng(seed: u64, epoch: u32) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed ^ u64::from(epoch).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// All batches of `epoch` (1-based) under `seed`.
    pub(crate) fn epoch(&self, seed: u64, epoch: u32) -> Vec<Batch> {
        let mut rng = Self::rng(seed, epoch);
        let n = self.labels.len();
        let label = |i: usize| self.labels[i];
        if let SamplerKind::ClassBalanced { p, k } = self.kind {
            let per_batch = p * k;
            let batches = (n / per_batch).max(1);
            let mut slots: Vec<usize> = (0..self.by_class.len()).collect();
            return (0..batches)
                .map(|_| {
                    slots.shuffle(&mut rng);
                    let mut indices = Vec::with_capacity(per_batch);
                    for &s in slots.iter().take(p) {
                        let class = &self.by_class[s];
                        if class.len() >= k {
                            let picked = rand::seq::index::sample(&mut rng, class.len(), k);
                            indices.extend(picked.iter().map(|j| class[j]));
                        } else {
                            // Too few images: sample with replacement so every class gives k.
                            indices.extend((0..k).map(|_| class[rng.random_range(0..class.len())]));
                        }
                    }
                    Batch {
                        labels: indices.iter().map(|&i| label(i)).collect(),
                        anchors: indices.len(),
                        indices,
                        same: Vec::new(),
                    }
                })
                .collect();
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut out = Vec::with_capacity(n.div_ceil(self.batch_size));
        let mut pos = 0usize;
        for chunk in order.chunks(self.batch_size) {
            let mut batch = Batch {
                indices: Vec::new(),
                labels: Vec::new(),
                anchors: chunk.len(),
                same: Vec::new(),
            };
            match self.kind {
                SamplerKind::Shuffle => batch.indices = chunk.to_vec(),
                SamplerKind::Pairs => {
                    let mut b = Vec::with_capacity(chunk.len());
                    for &a in chunk {
                        // Alternating over a random order gives exactly half same-class pairs.
                        let same = pos.is_multiple_of(2) || self.by_class.len() < 2;
                        pos += 1;
                        b.push(if same {
                            self.positive(&mut rng, a)
                        } else {
                            self.negative(&mut rng, a)
                        });
                        batch.same.push(if same { 1.0 } else { 0.0 });
                    }
                    batch.indices = chunk.iter().copied().chain(b).collect();
                }
                SamplerKind::Triplets => {
                    let ps: Vec<usize> =
                        chunk.iter().map(|&a| self.positive(&mut rng, a)).collect();
                    let ns: Vec<usize> =
                        chunk.iter().map(|&a| self.negative(&mut rng, a)).collect();
                    batch.indices = chunk.iter().copied().chain(ps).chain(ns).collect();
                }
                SamplerKind::ClassBalanced { .. } => unreachable!("handled above"),
            }
            batch.labels = batch.indices.iter().map(|&i| label(i)).collect();
            out.push(batch);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<u32> {
        (0..200).map(|i| (i * 7 % 10) as u32).collect()
    }

    #[test]
    fn deterministic_under_seed_and_epoch() {
        for kind in [
            SamplerKind::Shuffle,
            SamplerKind::Pairs,
            SamplerKind::Triplets,
            SamplerKind::ClassBalanced { p: 5, k: 4 },
        ] {
            let s = Sampler::new(&labels(), kind, 32).unwrap();
            assert_eq!(s.epoch(3, 1), s.epoch(3, 1), "{kind:?}");
            assert_ne!(s.epoch(3, 1), s.epoch(4, 1), "{kind:?}");
            assert_ne!(s.epoch(3, 1), s.epoch(3, 2), "{kind:?}");
        }
    }

    #[test]
    fn pairs_are_balanced_and_correct() {
        let l = labels();
        let s = Sampler::new(&l, SamplerKind::Pairs, 32).unwrap();
        let batches = s.epoch(0, 1);
        let (mut same, mut total) = (0, 0);
        let mut seen = 0;
        for b in &batches {
            seen += b.anchors;
            for i in 0..b.anchors {
                let equal = b.labels[i] == b.labels[b.anchors + i];
                assert_eq!(equal, b.same[i] == 1.0);
                same += equal as usize;
                total += 1;
            }
        }
        assert_eq!(seen, l.len());
        assert_eq!(same, total / 2);
    }

    #[test]
    fn triplets_have_valid_roles() {
        let s = Sampler::new(&labels(), SamplerKind::Triplets, 50).unwrap();
        for b in s.epoch(1, 1) {
            let n = b.anchors;
            for i in 0..n {
                assert_eq!(b.labels[i], b.labels[n + i]);
                assert_ne!(b.indices[i], b.indices[n + i]);
                assert_ne!(b.labels[i], b.labels[2 * n + i]);
            }
        }
    }

    #[test]
    fn class_balanced_batches_have_p_classes_of_k() {
        let (p, k) = pk_shape(32, 10);
        assert_eq!((p, k), (8, 4));
        let s = Sampler::new(&labels(), SamplerKind::ClassBalanced { p, k }, 32).unwrap();
        for b in s.epoch(0, 1) {
            let mut classes = b.labels.clone();
            classes.dedup();
            assert_eq!(classes.len(), p);
            assert_eq!(b.indices.len(), p * k);
        }
        assert_eq!(pk_shape(128, 10), (10, 12));
        assert_eq!(pk_shape(32, 40), (8, 4));
    }

    #[test]
    fn impossible_sampling_is_an_error_not_a_panic() {
        // One image: no positive and no negative (what `--train-limit 1` gave).
        for kind in [
            SamplerKind::Pairs,
            SamplerKind::Triplets,
            SamplerKind::ClassBalanced { p: 2, k: 2 },
        ] {
            let e = Sampler::new(&[3], kind, 32).unwrap_err();
            assert!(e.contains("at least 2 classes"), "{kind:?}: {e}");
            // Two classes, one of them a single image: no positive for that anchor.
            let e = Sampler::new(&[0, 0, 1], kind, 32).unwrap_err();
            assert!(e.contains("class 1 has 1"), "{kind:?}: {e}");
            assert!(Sampler::new(&[0, 0, 1, 1], kind, 32).is_ok(), "{kind:?}");
        }
        // ce draws single images: one is enough.
        assert!(Sampler::new(&[3], SamplerKind::Shuffle, 32).is_ok());
        assert!(Sampler::new(&[], SamplerKind::Shuffle, 32).is_err());
    }
}
