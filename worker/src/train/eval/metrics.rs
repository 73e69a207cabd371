//! Neighbour-based metrics: k-NN classification accuracy and pytorch-metric-learning's retrieval
//! metrics (precision@1, R-precision, MAP@R), computed from a [`Neighbours`] list.

use std::collections::HashMap;

use super::knn::Neighbours;

/// Number of points per class label.
pub(crate) fn class_counts(labels: &[u32]) -> HashMap<u32, usize> {
    let mut counts = HashMap::new();
    for &l in labels {
        *counts.entry(l).or_insert(0) += 1;
    }
    counts
}

/// The neighbour count [`retrieval_metrics`] needs on a test-vs-test search that excludes self:
/// the largest class size minus one (the largest R).
pub(crate) fn retrieval_k(labels: &[u32]) -> usize {
    class_counts(labels).values().max().map_or(0, |&m| m - 1)
}

/// k-NN classification accuracy: each query is assigned the majority label of its first `k`
/// neighbours; a tied vote goes to the tied class whose nearest member ranks first. `k` is capped
/// at [`Neighbours::k`]. NaN when there are no queries or no neighbours.
pub(crate) fn knn_accuracy(
    neighbours: &Neighbours,
    ref_labels: &[u32],
    query_labels: &[u32],
    k: usize,
) -> f64 {
    let k = k.min(neighbours.k());
    assert_eq!(
        neighbours.len(),
        query_labels.len(),
        "knn_accuracy: one label per query"
    );
    if k == 0 || query_labels.is_empty() {
        return f64::NAN;
    }
    // (label, votes); pushed in rank order, so position = rank of the class's nearest member.
    let mut votes: Vec<(u32, usize)> = Vec::with_capacity(k);
    let mut correct = 0usize;
    for (q, &truth) in query_labels.iter().enumerate() {
        votes.clear();
        for &r in &neighbours.indices(q)[..k] {
            let l = ref_labels[r as usize];
            match votes.iter_mut().find(|(c, _)| *c == l) {
                Some((_, n)) => *n += 1,
                None => votes.push((l, 1)),
            }
        }
        // Strictly-greater scan keeps the earliest (nearest) class among equal vote counts.
        let mut best = votes[0];
        for &v in &votes[1..] {
            if v.1 > best.1 {
                best = v;
            }
        }
        correct += usize::from(best.0 == truth);
    }
    correct as f64 / query_labels.len() as f64
}

/// Retrieval metrics of a set searched against itself, averaged over queries with R ≥ 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RetrievalMetrics {
    /// Fraction of queries whose nearest other point shares their class.
    pub(crate) precision_at_1: f64,
    /// Mean over queries of (same-class points among the R nearest) / R.
    pub(crate) r_precision: f64,
    /// Mean over queries of (1/R) Σ_{i≤R} P(i)·rel(i).
    pub(crate) map_at_r: f64,
    /// Queries averaged over (those whose class has at least one other member).
    pub(crate) queries: usize,
}

/// precision@1, R-precision and MAP@R for `labels` given its self-excluding self-search.
///
/// For a query of class c, R = (number of points of class c) − 1. Queries with R = 0 are skipped
/// (pytorch-metric-learning's "lone" queries), for all three metrics. Panics if `neighbours`
/// holds fewer than R neighbours for some query (search with `k = retrieval_k(labels)`).
/// All fields are NaN when no query has R ≥ 1.
pub(crate) fn retrieval_metrics(neighbours: &Neighbours, labels: &[u32]) -> RetrievalMetrics {
    assert_eq!(
        neighbours.len(),
        labels.len(),
        "retrieval_metrics: one label per query"
    );
    let counts = class_counts(labels);
    let (mut p1, mut rp, mut map, mut n) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for (q, &c) in labels.iter().enumerate() {
        let r = counts[&c] - 1;
        if r == 0 {
            continue;
        }
        assert!(
            neighbours.k() >= r,
            "retrieval_metrics: need {r} neighbours per query, have {}",
            neighbours.k()
        );
        let nb = &neighbours.indices(q)[..r];
        let (mut hits, mut ap) = (0usize, 0.0f64);
        for (i, &j) in nb.iter().enumerate() {
            if labels[j as usize] == c {
                hits += 1;
                ap += hits as f64 / (i + 1) as f64;
            }
        }
        p1 += f64::from(u8::from(labels[nb[0] as usize] == c));
        rp += hits as f64 / r as f64;
        map += ap / r as f64;
        n += 1;
    }
    if n == 0 {
        return RetrievalMetrics {
            precision_at_1: f64::NAN,
            r_precision: f64::NAN,
            map_at_r: f64::NAN,
            queries: 0,
        };
    }
    let n_f = n as f64;
    RetrievalMetrics {
        precision_at_1: p1 / n_f,
        r_precision: rp / n_f,
        map_at_r: map / n_f,
        queries: n,
    }
}
