//! N-way one-shot classification accuracy (Koch et al. 2015 protocol) over seeded trials, with
//! the standard error of the mean over those trials.

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

use super::EmbeddingSet;
use super::knn::sq_dist;

/// Accuracy of N-way one-shot trials and its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OneShot {
    /// Mean trial score.
    pub(crate) accuracy: f64,
    /// Sample standard deviation of the trial scores over √trials.
    pub(crate) se: f64,
}

/// Mean accuracy of `trials` seeded N-way one-shot trials on `set`.
///
/// A trial draws the query class uniformly among classes with at least two points, then N − 1
/// other distinct classes uniformly among the rest; one support point per class and a query point
/// of the first class different from its support, all uniformly. The trial scores 1 when the
/// query's nearest support (Euclidean) is its own class's. If k supports tie at the minimum
/// distance and the right one is among them it scores 1/k, the expectation of a random tie-break,
/// so a collapsed embedding scores exactly chance (1/N) instead of an index artefact.
///
/// NaN (both fields) when the set has fewer than N classes (an N-way trial does not exist: it
/// is not silently made a fewer-way one), no class has two points, or `trials` is 0.
pub(crate) fn one_shot_accuracy(
    set: &EmbeddingSet<'_>,
    n_way: usize,
    trials: usize,
    rng: &mut ChaCha8Rng,
) -> OneShot {
    one_shot_by(set, n_way, trials, rng, |a, b| f64::from(sq_dist(a, b)))
}

/// [`one_shot_accuracy`] with any dissimilarity (smaller = closer) in place of the squared
/// Euclidean distance: the same trials for the same `rng` state, whatever scores them.
pub(crate) fn one_shot_by(
    set: &EmbeddingSet<'_>,
    n_way: usize,
    trials: usize,
    rng: &mut ChaCha8Rng,
    dist: impl Fn(&[f32], &[f32]) -> f64,
) -> OneShot {
    let nan = OneShot {
        accuracy: f64::NAN,
        se: f64::NAN,
    };
    let mut by_class: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (i, &l) in set.labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i as u32);
    }
    let classes: Vec<&[u32]> = by_class.values().map(Vec::as_slice).collect();
    let queryable: Vec<usize> = (0..classes.len())
        .filter(|&c| classes[c].len() >= 2)
        .collect();
    if n_way < 2 || n_way > classes.len() || queryable.is_empty() || trials == 0 {
        return nan;
    }
    let dim = set.dim;
    let row = |i: u32| &set.data[i as usize * dim..(i as usize + 1) * dim];
    let (mut total, mut total_sq) = (0.0f64, 0.0f64);
    for _ in 0..trials {
        let c = queryable[rng.random_range(0..queryable.len())];
        let members = classes[c];
        let pick = index::sample(rng, members.len(), 2);
        let (support, query) = (members[pick.index(0)], members[pick.index(1)]);
        let q = row(query);
        let d_true = dist(q, row(support));
        let (mut closer, mut tied) = (false, 1usize);
        // Other classes: distinct positions in 0..classes-1, shifted past `c`.
        for o in index::sample(rng, classes.len() - 1, n_way - 1) {
            let other = classes[if o >= c { o + 1 } else { o }];
            let s = other[rng.random_range(0..other.len())];
            let d = dist(q, row(s));
            closer |= d < d_true;
            tied += usize::from(d == d_true);
        }
        if !closer {
            let score = 1.0 / tied as f64;
            total += score;
            total_sq += score * score;
        }
    }
    let n = trials as f64;
    let mean = total / n;
    let var = if trials > 1 {
        ((total_sq - n * mean * mean) / (n - 1.0)).max(0.0)
    } else {
        f64::NAN
    };
    OneShot {
        accuracy: mean,
        se: (var / n).sqrt(),
    }
}
