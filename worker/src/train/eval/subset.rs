//! Class-stratified, seeded choice of the test points shown in embedding snapshots.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

/// A fixed class-stratified subset of `n` indices into `labels` (all of them if `n >= len`),
/// sorted ascending; the same `labels`, `n` and `seed` always give the same subset, so successive
/// snapshots of a run show the same points.
///
/// Each class gets `n · count / total` points rounded by the largest-remainder method (exact
/// integer arithmetic; equal remainders favour the smaller label), so the subset's class mix
/// matches the full set's to within one point per class. Within a class the points are a uniform
/// sample without replacement.
pub(crate) fn snapshot_subset(labels: &[u32], n: usize, seed: u64) -> Vec<u32> {
    let total = labels.len();
    if n >= total {
        return (0..total as u32).collect();
    }
    let mut by_class: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i as u32);
    }
    let classes: Vec<&Vec<u32>> = by_class.values().collect();
    let (n128, total128) = (n as u128, total as u128);
    let mut quota: Vec<usize> = classes
        .iter()
        .map(|m| (n128 * m.len() as u128 / total128) as usize)
        .collect();
    let remainder = n - quota.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..classes.len()).collect();
    // Stable sort: equal remainders keep ascending label order.
    order.sort_by_key(|&c| std::cmp::Reverse(n128 * classes[c].len() as u128 % total128));
    for &c in &order[..remainder] {
        quota[c] += 1;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    for (members, &q) in classes.iter().zip(&quota) {
        out.extend(
            index::sample(&mut rng, members.len(), q)
                .into_iter()
                .map(|i| members[i]),
        );
    }
    out.sort_unstable();
    out
}
