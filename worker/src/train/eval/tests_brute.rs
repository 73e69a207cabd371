//! Cross-checks of every metric against brute force (full distance matrix, full sort) on small
//! random data riddled with exact ties and duplicate points.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::knn::{Neighbours, sq_dist};
use super::verification::roc_auc;
use super::*;

/// `n` points of width `dim` with `classes` labels. Coordinates come from a 3-value grid when
/// `grid` (so exact distance ties are everywhere) and every 7th point duplicates an earlier one.
pub(super) fn random_set(
    n: usize,
    dim: usize,
    classes: u32,
    seed: u64,
    grid: bool,
) -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(n * dim);
    for i in 0..n {
        if i % 7 == 6 {
            let j = rng.random_range(0..i);
            data.extend_from_within(j * dim..(j + 1) * dim);
            continue;
        }
        for _ in 0..dim {
            data.push(if grid {
                f32::from(rng.random_range(0u8..3)) * 0.5
            } else {
                rng.random::<f32>() * 4.0 - 2.0
            });
        }
    }
    let labels = (0..n).map(|_| rng.random_range(0..classes)).collect();
    (data, labels)
}

/// Every reference of every query, sorted by (distance, index), self removed when asked.
fn brute_sorted(
    queries: &[f32],
    refs: &[f32],
    dim: usize,
    exclude_self: bool,
) -> Vec<Vec<(f32, u32)>> {
    queries
        .chunks_exact(dim)
        .enumerate()
        .map(|(qi, q)| {
            let mut row: Vec<(f32, u32)> = refs
                .chunks_exact(dim)
                .enumerate()
                .filter(|&(ri, _)| !(exclude_self && ri == qi))
                .map(|(ri, r)| (sq_dist(q, r), ri as u32))
                .collect();
            row.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            row
        })
        .collect()
}

fn assert_matches_brute(nb: &Neighbours, brute: &[Vec<(f32, u32)>], k: usize) {
    assert_eq!(nb.len(), brute.len());
    for (q, row) in brute.iter().enumerate() {
        let want: Vec<u32> = row.iter().take(k).map(|x| x.1).collect();
        let want_d: Vec<f32> = row.iter().take(k).map(|x| x.0).collect();
        assert_eq!(nb.indices(q), &want[..], "query {q}");
        assert_eq!(nb.sq_dists(q), &want_d[..], "query {q} distances");
    }
}

#[test]
fn knn_search_equals_brute_force_with_ties_and_padding() {
    for (seed, dim, grid) in [
        (1, 1, true),
        (2, 2, true),
        (3, 3, false),
        (4, 7, true),
        (5, 33, false),
    ] {
        let (q, _) = random_set(70, dim, 3, seed, grid);
        let (r, _) = random_set(211, dim, 3, seed + 100, grid); // 211 = 13 tiles + 3 (padding)
        let brute = brute_sorted(&q, &r, dim, false);
        for k in [1, 5, 40, 211, 500] {
            let nb = knn_search(&q, &r, dim, k, false);
            assert_eq!(nb.k(), k.min(211));
            assert_matches_brute(&nb, &brute, k);
        }
        let self_brute = brute_sorted(&r, &r, dim, true);
        for k in [1, 17, 209, 210, 999] {
            let nb = knn_search(&r, &r, dim, k, true);
            assert_eq!(nb.k(), k.min(210));
            assert_matches_brute(&nb, &self_brute, k);
        }
    }
}

/// Full `[Nq × Nr]` matrix of squared distances.
fn full_matrix(queries: &[f32], refs: &[f32], dim: usize) -> Vec<f32> {
    queries
        .chunks_exact(dim)
        .flat_map(|q| refs.chunks_exact(dim).map(move |r| sq_dist(q, r)))
        .collect()
}

/// Brute-force certificate over the full distance matrix without a full sort (too slow
/// unoptimised at 2,000²): the list is strictly ascending in (distance, index), its distances are
/// exact, and a reference has a key ≤ the k-th key exactly when it is in the list. That pins the
/// list down uniquely, so it is equivalent to comparing with a sorted brute-force ranking.
fn assert_exact_top_k(matrix: &[f32], k: usize, exclude_self: bool, nb: &Neighbours) {
    let key = |d: f32, i: u32| (u64::from(d.to_bits()) << 32) | u64::from(i); // d ≥ 0: bits are monotone
    let nr = matrix.len() / nb.len();
    let mut listed = vec![false; nr];
    for (qi, row) in matrix.chunks_exact(nr).enumerate() {
        let (idx, dist) = (nb.indices(qi), nb.sq_dists(qi));
        assert_eq!(idx.len(), k);
        listed.iter_mut().for_each(|b| *b = false);
        for (j, (&i, &d)) in idx.iter().zip(dist).enumerate() {
            assert_eq!(d, row[i as usize]);
            assert!(
                j == 0 || key(dist[j - 1], idx[j - 1]) < key(d, i),
                "query {qi} not ascending"
            );
            listed[i as usize] = true;
        }
        let kth = key(dist[k - 1], idx[k - 1]);
        for (ri, &d) in row.iter().enumerate() {
            if exclude_self && ri == qi {
                assert!(!listed[ri], "query {qi} lists itself");
                continue;
            }
            assert_eq!(key(d, ri as u32) <= kth, listed[ri], "query {qi} ref {ri}");
        }
    }
}

#[test]
fn knn_search_equals_brute_force_2000x2000() {
    let (x, _) = random_set(2000, 4, 2, 42, true);
    let matrix = full_matrix(&x, &x, 4);
    // k = 300 makes every query prune many times; the grid makes thousands of exact ties.
    for k in [5, 300] {
        assert_exact_top_k(&matrix, k, true, &knn_search(&x, &x, 4, k, true));
    }
}

#[test]
fn certificate_agrees_with_sorted_brute_force() {
    // Guards the certificate itself: on small data it accepts exactly the sorted ranking.
    let (x, _) = random_set(150, 2, 2, 44, true);
    let nb = knn_search(&x, &x, 2, 20, true);
    assert_matches_brute(&nb, &brute_sorted(&x, &x, 2, true), 20);
    assert_exact_top_k(&full_matrix(&x, &x, 2), 20, true, &nb);
    let (y, _) = random_set(60, 2, 2, 45, true);
    let cross = knn_search(&y, &x, 2, 7, false);
    assert_matches_brute(&cross, &brute_sorted(&y, &x, 2, false), 7);
    assert_exact_top_k(&full_matrix(&y, &x, 2), 7, false, &cross);
}

#[test]
fn knn_accuracy_equals_brute_force() {
    for seed in 0..4 {
        let grid = seed % 2 == 0;
        let (tr, trl) = random_set(150, 3, 4, seed, grid);
        let (te, tel) = random_set(60, 3, 4, seed + 50, grid);
        let brute = brute_sorted(&te, &tr, 3, false);
        let nb = knn_search(&te, &tr, 3, 5, false);
        for k in [1, 3, 5] {
            let mut correct = 0;
            for (q, row) in brute.iter().enumerate() {
                let mut votes: BTreeMap<u32, usize> = BTreeMap::new();
                for &(_, r) in &row[..k] {
                    *votes.entry(trl[r as usize]).or_default() += 1;
                }
                let top = *votes.values().max().unwrap();
                // Tie: the tied class appearing first in the ranked list wins.
                let winner = row[..k]
                    .iter()
                    .map(|&(_, r)| trl[r as usize])
                    .find(|l| votes[l] == top)
                    .unwrap();
                correct += usize::from(winner == tel[q]);
            }
            let want = correct as f64 / tel.len() as f64;
            assert_eq!(knn_accuracy(&nb, &trl, &tel, k), want, "seed {seed} k {k}");
        }
    }
}

/// pytorch-metric-learning's vectorised formulation over the full ranking, row by row.
fn brute_retrieval(data: &[f32], labels: &[u32], dim: usize) -> (f64, f64, f64, usize) {
    let ranked = brute_sorted(data, data, dim, true);
    let (mut p1, mut rp, mut map, mut n) = (0.0, 0.0, 0.0, 0);
    for (q, row) in ranked.iter().enumerate() {
        let r = labels.iter().filter(|&&l| l == labels[q]).count() - 1;
        if r == 0 {
            continue;
        }
        let eq: Vec<f64> = row
            .iter()
            .map(|&(_, j)| f64::from(u8::from(labels[j as usize] == labels[q])))
            .collect();
        let mask: Vec<f64> = (0..eq.len()).map(|i| f64::from(u8::from(i < r))).collect();
        let eq_masked: Vec<f64> = eq.iter().zip(&mask).map(|(a, b)| a * b).collect();
        let mut cum = 0.0;
        let mut ap = 0.0;
        for (i, &e) in eq_masked.iter().enumerate() {
            cum += e;
            ap += cum * e / (i + 1) as f64 * mask[i];
        }
        p1 += eq[0];
        rp += eq_masked.iter().sum::<f64>() / r as f64;
        map += ap / r as f64;
        n += 1;
    }
    (p1 / n as f64, rp / n as f64, map / n as f64, n)
}

#[test]
fn retrieval_metrics_equal_brute_force() {
    for seed in 0..5 {
        let grid = seed % 2 == 1;
        let dim = [1, 2, 5, 2, 8][seed as usize];
        // Label 9 appears once (a lone query that must be skipped).
        let (data, mut labels) = random_set(180, dim, 4, seed, grid);
        labels[17] = 9;
        let nb = knn_search(&data, &data, dim, retrieval_k(&labels), true);
        let got = retrieval_metrics(&nb, &labels);
        let (p1, rp, map, n) = brute_retrieval(&data, &labels, dim);
        assert_eq!(got.queries, n);
        assert_eq!(n, 179);
        for (g, w) in [
            (got.precision_at_1, p1),
            (got.r_precision, rp),
            (got.map_at_r, map),
        ] {
            assert!((g - w).abs() < 1e-12, "seed {seed}: {g} vs {w}");
        }
    }
}

/// ROC-AUC by counting every (positive, negative) pair: 1 when the positive scores higher, ½ on
/// a tie. The reference the midrank computations are checked against.
pub(super) fn pairwise_auc(pos: &[f64], neg: &[f64]) -> f64 {
    let mut wins = 0.0;
    for p in pos {
        for n in neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

#[test]
fn roc_auc_equals_pairwise_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for trial in 0..20 {
        let np = 1 + rng.random_range(0..80);
        let nn = 1 + rng.random_range(0..80);
        // Few distinct values → many ties across and within the two groups.
        let levels = if trial % 2 == 0 { 5 } else { 1000 };
        let pos: Vec<f64> = (0..np)
            .map(|_| f64::from(rng.random_range(0..levels) + 1))
            .collect();
        let neg: Vec<f64> = (0..nn)
            .map(|_| f64::from(rng.random_range(0..levels)))
            .collect();
        let want = pairwise_auc(&pos, &neg);
        assert!((roc_auc(&pos, &neg) - want).abs() < 1e-12, "trial {trial}");
    }
}

#[test]
fn verification_auc_equals_brute_force_over_all_pairs() {
    let (data, labels) = random_set(60, 3, 3, 11, true);
    let set = EmbeddingSet {
        data: &data,
        dim: 3,
        labels: &labels,
    };
    // Budgets above the pair counts → every pair is used, so brute force over all pairs is exact.
    let got = verification_auc(&set, 10_000, 10_000, &mut metric_rng(0, 1));
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for i in 0..60 {
        for j in i + 1..60 {
            let s = -f64::from(sq_dist(&data[i * 3..i * 3 + 3], &data[j * 3..j * 3 + 3]));
            if labels[i] == labels[j] {
                pos.push(s)
            } else {
                neg.push(s)
            }
        }
    }
    assert!((got - pairwise_auc(&pos, &neg)).abs() < 1e-12);
}
