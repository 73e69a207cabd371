//! Pair verification: seeded same/different pairs from one labelled set and the exact ROC-AUC of
//! the score −distance (Mann–Whitney U with midranks, i.e. ties count one half).

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::EmbeddingSet;
use super::knn::sq_dist;

/// Same-class and different-class index pairs (`a < b` within a pair).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct VerificationPairs {
    pub(crate) same: Vec<(u32, u32)>,
    pub(crate) different: Vec<(u32, u32)>,
}

/// Draws up to `n_same` same-class and `n_diff` different-class pairs from `labels`.
///
/// When a kind has at most the requested number of distinct unordered pairs, all of them are
/// used (exact for small sets such as AT&T faces). Otherwise pairs are drawn independently, with
/// replacement: same pairs pick a first point uniformly among points with a classmate, then a
/// classmate uniformly; different pairs pick a first point uniformly, then a point of another
/// class uniformly. Deterministic for a given `rng` state.
pub(crate) fn verification_pairs(
    labels: &[u32],
    n_same: usize,
    n_diff: usize,
    rng: &mut ChaCha8Rng,
) -> VerificationPairs {
    let mut by_class: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i as u32);
    }
    // Points grouped by class; `span[c]` is each class's range in `grouped`.
    let grouped: Vec<u32> = by_class.values().flatten().copied().collect();
    let mut span = BTreeMap::new();
    let mut start = 0usize;
    for (&l, members) in &by_class {
        span.insert(l, (start, members.len()));
        start += members.len();
    }
    let n = labels.len() as u128;
    let total_same: u128 = by_class
        .values()
        .map(|m| (m.len() as u128).pow(2) - m.len() as u128)
        .sum::<u128>()
        / 2;
    let total_diff = (n * n.saturating_sub(1)) / 2 - total_same;
    let ordered = |a: u32, b: u32| (a.min(b), a.max(b));

    let mut pairs = VerificationPairs::default();
    if total_same <= n_same as u128 {
        for members in by_class.values() {
            for (x, &a) in members.iter().enumerate() {
                pairs.same.extend(members[x + 1..].iter().map(|&b| (a, b)));
            }
        }
    } else {
        // Positions in `grouped` of points that have a classmate.
        let eligible: Vec<usize> = span
            .values()
            .filter(|&&(_, len)| len > 1)
            .flat_map(|&(s, len)| s..s + len)
            .collect();
        for _ in 0..n_same {
            let a_pos = eligible[rng.random_range(0..eligible.len())];
            let a = grouped[a_pos];
            let (s, len) = span[&labels[a as usize]];
            let mut o = rng.random_range(0..len - 1);
            if o >= a_pos - s {
                o += 1;
            }
            pairs.same.push(ordered(a, grouped[s + o]));
        }
    }
    if total_diff <= n_diff as u128 {
        for (i, &la) in labels.iter().enumerate() {
            for (j, &lb) in labels.iter().enumerate().skip(i + 1) {
                if la != lb {
                    pairs.different.push((i as u32, j as u32));
                }
            }
        }
    } else {
        for _ in 0..n_diff {
            let a = rng.random_range(0..labels.len());
            let (s, len) = span[&labels[a]];
            let mut o = rng.random_range(0..labels.len() - len);
            if o >= s {
                o += len;
            }
            pairs.different.push(ordered(a as u32, grouped[o]));
        }
    }
    pairs
}

/// Exact ROC-AUC of `positive` vs `negative` scores (higher = more likely positive): the
/// probability that a random positive outscores a random negative, ties counting ½, computed as
/// the Mann–Whitney U statistic from midranks in O(n log n). NaN if either side is empty.
pub(crate) fn roc_auc(positive: &[f64], negative: &[f64]) -> f64 {
    if positive.is_empty() || negative.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> = positive
        .iter()
        .map(|&s| (s, true))
        .chain(negative.iter().map(|&s| (s, false)))
        .collect();
    all.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    // Ranks are 1-based; a tie group spanning ranks lo..=hi gets rank (lo + hi) / 2 for everyone.
    // Doubled ranks keep the sum an exact integer.
    let mut pos_rank_sum_x2: u128 = 0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j].0.total_cmp(&all[i].0).is_eq() {
            j += 1;
        }
        let pos_in_group = all[i..j].iter().filter(|x| x.1).count() as u128;
        pos_rank_sum_x2 += pos_in_group * ((i + 1) + j) as u128;
        i = j;
    }
    let (np, nn) = (positive.len() as u128, negative.len() as u128);
    let u_x2 = pos_rank_sum_x2 - np * (np + 1);
    u_x2 as f64 / (2 * np * nn) as f64
}

/// Verification ROC-AUC on `set` with score −(squared distance) (same ranking as −distance).
pub(crate) fn verification_auc(
    set: &EmbeddingSet<'_>,
    n_same: usize,
    n_diff: usize,
    rng: &mut ChaCha8Rng,
) -> f64 {
    verification_auc_by(set, n_same, n_diff, rng, |a, b| -f64::from(sq_dist(a, b)))
}

/// [`verification_auc`] with any similarity score (higher = more likely the same class): the
/// same pairs for the same `rng` state, whatever scores them.
pub(crate) fn verification_auc_by(
    set: &EmbeddingSet<'_>,
    n_same: usize,
    n_diff: usize,
    rng: &mut ChaCha8Rng,
    similarity: impl Fn(&[f32], &[f32]) -> f64,
) -> f64 {
    let pairs = verification_pairs(set.labels, n_same, n_diff, rng);
    let dim = set.dim;
    let row = |i: u32| &set.data[i as usize * dim..(i as usize + 1) * dim];
    let score = |&(a, b): &(u32, u32)| similarity(row(a), row(b));
    let pos: Vec<f64> = pairs.same.iter().map(score).collect();
    let neg: Vec<f64> = pairs.different.iter().map(score).collect();
    roc_auc(&pos, &neg)
}
