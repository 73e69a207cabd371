//! N-way one-shot classification accuracy (Koch et al. 2015 protocol) over seeded trials.

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

use super::EmbeddingSet;
use super::knn::sq_dist;

/// Mean accuracy of `trials` seeded N-way one-shot trials on `set`, N = min(`n_way`, classes).
///
/// A trial draws the query class uniformly among classes with at least two points, then N − 1
/// other distinct classes uniformly among the rest; one support point per class and a query point
/// of the first class different from its support, all uniformly. The trial scores 1 when the
/// query's nearest support (Euclidean) is its own class's. If k supports tie at the minimum
/// distance and the right one is among them it scores 1/k, the expectation of a random tie-break,
/// so a collapsed embedding scores exactly chance (1/N) instead of an index artefact.
///
/// NaN when fewer than two classes exist, no class has two points, or `trials` is 0.
pub(crate) fn one_shot_accuracy(
    set: &EmbeddingSet<'_>,
    n_way: usize,
    trials: usize,
    rng: &mut ChaCha8Rng,
) -> f64 {
    let mut by_class: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (i, &l) in set.labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i as u32);
    }
    let classes: Vec<&[u32]> = by_class.values().map(Vec::as_slice).collect();
    let queryable: Vec<usize> = (0..classes.len())
        .filter(|&c| classes[c].len() >= 2)
        .collect();
    let n_way = n_way.min(classes.len());
    if n_way < 2 || queryable.is_empty() || trials == 0 {
        return f64::NAN;
    }
    let dim = set.dim;
    let row = |i: u32| &set.data[i as usize * dim..(i as usize + 1) * dim];
    let mut total = 0.0f64;
    for _ in 0..trials {
        let c = queryable[rng.random_range(0..queryable.len())];
        let members = classes[c];
        let pick = index::sample(rng, members.len(), 2);
        let (support, query) = (members[pick.index(0)], members[pick.index(1)]);
        let q = row(query);
        let d_true = sq_dist(q, row(support));
        let (mut closer, mut tied) = (false, 1usize);
        // Other classes: distinct positions in 0..classes-1, shifted past `c`.
        for o in index::sample(rng, classes.len() - 1, n_way - 1) {
            let other = classes[if o >= c { o + 1 } else { o }];
            let s = other[rng.random_range(0..other.len())];
            let d = sq_dist(q, row(s));
            closer |= d < d_true;
            tied += usize::from(d == d_true);
        }
        if !closer {
            total += 1.0 / tied as f64;
        }
    }
    total / trials as f64
}
