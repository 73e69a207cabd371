//! Scores of a `bce` network's learned head (Koch et al.'s weighted L1 similarity) in place of
//! the Euclidean distance: retrieval, verification ROC-AUC and one-shot accuracy under the head's
//! logit `b + Σ_i w_i |a_i − b_i|`, reported as [`metric::HEAD_EVAL`].
//!
//! The head's similarity is not a metric, so the blocked Euclidean search does not apply: the
//! generic search here scores every pair. To keep each evaluation fast it ranks within a fixed,
//! class-stratified subset of at most [`HEAD_RETRIEVAL_MAX`] test points (drawn from the protocol
//! seed, so the same points for every run on a data set and split); verification pairs and
//! one-shot trials are the same fixed draws as the Euclidean metrics', on the whole test set.

use std::collections::BTreeMap;

use proto::metric;

use super::knn::Neighbours;
use super::{
    EmbeddingSet, ONE_SHOT_TRIALS, VERIFICATION_PAIRS, metric_rng, oneshot, retrieval_k,
    retrieval_metrics, snapshot_subset, verification,
};

/// Most test points the head's retrieval ranks (each against all the others).
pub(crate) const HEAD_RETRIEVAL_MAX: usize = 2_000;

/// Koch's head: `logit(a, b) = bias + Σ_i weight_i · |a_i − b_i|`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeadScorer {
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: f32,
}

impl HeadScorer {
    /// The logit of "same class" (higher = more similar), summed sequentially in f64.
    pub(crate) fn logit(&self, a: &[f32], b: &[f32]) -> f64 {
        let mut s = f64::from(self.bias);
        for ((w, x), y) in self.weight.iter().zip(a).zip(b) {
            s += f64::from(*w) * f64::from((x - y).abs());
        }
        s
    }
}

/// The `k` most similar other points of every point of `set` under `similarity` (higher =
/// closer), ordered by (similarity descending, index ascending): the generic, exhaustive
/// counterpart of the blocked Euclidean search.
pub(crate) fn search_by(
    set: &EmbeddingSet<'_>,
    k: usize,
    similarity: impl Fn(&[f32], &[f32]) -> f64,
) -> Neighbours {
    let n = set.labels.len();
    let dim = set.dim;
    let k = k.min(n.saturating_sub(1));
    let row = |i: usize| &set.data[i * dim..(i + 1) * dim];
    let mut indices = Vec::with_capacity(n * k);
    let mut scored: Vec<(f64, u32)> = Vec::with_capacity(n);
    for q in 0..n {
        scored.clear();
        scored.extend(
            (0..n)
                .filter(|&j| j != q)
                .map(|j| (similarity(row(q), row(j)), j as u32)),
        );
        scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        indices.extend(scored[..k].iter().map(|&(_, j)| j));
    }
    Neighbours::from_indices(n, k, indices)
}

/// [`metric::HEAD_EVAL`] of `test` under `head`, drawn from `seed` (the protocol seed).
pub(crate) fn head_metrics(
    test: &EmbeddingSet<'_>,
    head: &HeadScorer,
    seed: u64,
) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = metric::HEAD_EVAL
        .iter()
        .map(|k| ((*k).to_owned(), f64::NAN))
        .collect();
    if !test.data.iter().all(|v| v.is_finite()) {
        return out;
    }
    let logit = |a: &[f32], b: &[f32]| head.logit(a, b);
    let subset = snapshot_subset(test.labels, HEAD_RETRIEVAL_MAX, seed);
    let (mut data, mut labels) = (Vec::new(), Vec::new());
    for &i in &subset {
        let i = i as usize;
        data.extend_from_slice(&test.data[i * test.dim..(i + 1) * test.dim]);
        labels.push(test.labels[i]);
    }
    let sub = EmbeddingSet {
        data: &data,
        dim: test.dim,
        labels: &labels,
    };
    let r = retrieval_metrics(&search_by(&sub, retrieval_k(&labels), logit), &labels);
    out.insert(metric::HEAD_PRECISION_AT_1.into(), r.precision_at_1);
    out.insert(metric::HEAD_R_PRECISION.into(), r.r_precision);
    out.insert(metric::HEAD_MAP_AT_R.into(), r.map_at_r);
    // The streams of the Euclidean metrics: the same pairs and trials, scored by the head.
    let mut rng = metric_rng(seed, 1);
    out.insert(
        metric::HEAD_ROC_AUC.into(),
        verification::verification_auc_by(
            test,
            VERIFICATION_PAIRS,
            VERIFICATION_PAIRS,
            &mut rng,
            logit,
        ),
    );
    for (n_way, key) in [
        (5, metric::HEAD_ONE_SHOT_5WAY),
        (20, metric::HEAD_ONE_SHOT_20WAY),
    ] {
        let mut rng = metric_rng(seed, 100 + n_way as u64);
        let r = oneshot::one_shot_by(test, n_way, ONE_SHOT_TRIALS, &mut rng, |a, b| -logit(a, b));
        out.insert(key.into(), r.accuracy);
    }
    out
}
