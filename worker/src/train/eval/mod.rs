//! Evaluation of learned embeddings: k-NN accuracy, retrieval (precision@1, R-precision, MAP@R),
//! pair-verification ROC-AUC, N-way one-shot accuracy, plus snapshot subsets and 2-D projection
//! (PCA, or Barnes-Hut t-SNE when a job asks for it).
//!
//! Everything works on plain row-major `f32` slices, so it is independent of the training backend.
//! Distances are Euclidean; squared distances are used wherever only the order matters.
//!
//! # Definitions
//!
//! * **Neighbour order.** Neighbours are sorted by `(squared distance, index)`: exact distance ties
//!   go to the lower index, so every result is deterministic and independent of thread count
//!   (the `knn` module explains the exact blocked search and why it uses `Σ (q−x)²`).
//! * **k-NN accuracy** (`knn1_acc`, `knn5_acc`): every *test* point is classified by its k nearest
//!   *train* points; majority vote, and a tied vote goes to the tied class whose nearest member
//!   ranks first (for k = 1 this is plain 1-NN). See [`knn_accuracy`].
//! * **Retrieval** (`precision_at_1`, `r_precision`, `map_at_r`): test vs test, the query itself
//!   excluded. For a query of class c, R = (test points of class c) − 1 and its R nearest other
//!   points are ranked; R-precision = (same-class among them)/R, MAP@R = (1/R) Σ_{i=1..R} P(i)·rel(i)
//!   with P(i) the same-class fraction of the first i, precision@1 = whether the first one is
//!   same-class. Queries with R = 0 are skipped by all three; the rest are averaged uniformly
//!   (micro average). This matches pytorch-metric-learning 2.8.1 (commit `216a792c`),
//!   `src/pytorch_metric_learning/utils/accuracy_calculator.py`, `AccuracyCalculator(k="max_bin_count")`
//!   with `avg_of_avgs=False` and reference = query: `get_relevance_mask` (first `count − 1`
//!   columns relevant when `ref_includes_query`), `r_precision`, `mean_average_precision(at_r=True)`
//!   (`cumsum(eq)·eq / k`, summed over the mask, divided by `count_per_query`), `precision_at_k(k=1)`,
//!   `get_lone_query_labels` (lone queries dropped from every k-NN metric) and `inference.py`'s
//!   `return_results` (the query's own index removed from its neighbours). The only difference:
//!   pytorch-metric-learning orders equal distances as faiss returns them, we by index.
//! * **Verification ROC-AUC** (`roc_auc`): [`VERIFICATION_PAIRS`] same-class and as many
//!   different-class test pairs (seeded; all pairs when a kind has fewer), score = −distance, AUC
//!   exact from midranks (Mann–Whitney U, ties count ½). See [`verification_pairs`], [`roc_auc`].
//! * **N-way one-shot** (`one_shot_5way`, `one_shot_10way`, `one_shot_20way`): Koch et al.'s
//!   protocol on the test set (under the `classes` split: classes never trained on) over
//!   [`ONE_SHOT_TRIALS`] trials — N distinct classes, one support each, a query from the first
//!   class distinct from its support; correct when the nearest support is the query's class (a
//!   k-way distance tie with the right support scores 1/k). The trials are FIXED per data set
//!   and split (the seed is [`protocol_seed`], not the run's), so every run on one data set and
//!   split meets the same trials and runs compare paired. Each key has a standard error
//!   (`one_shot_5way_se`, …): the sample standard deviation of the trial scores over
//!   √trials, at most √(¼ / 10 000) = 0.005. When the evaluated set has fewer than N classes the
//!   key is NaN: an N-way trial does not exist (before, it silently reported min(N, classes)-way
//!   accuracy). See [`one_shot_accuracy`].
//! * **Verification pairs** are likewise drawn from [`protocol_seed`]: fixed per data set and
//!   split.
//! * **Embedding spread** (`embedding_spread`): the root mean squared distance of the test
//!   embeddings to their centroid; the collapse rule reads it (README, "Collapse").
//! * **No reference**: under the `classes` split the test classes never trained, so a k-NN
//!   classifier over training images cannot name them: `knn1_acc` and `knn5_acc` are NaN.
//!
//! * **Head scores** (`head/…`, `bce` runs only): the same retrieval, verification and one-shot
//!   protocols scored by the learned head instead of the distance; see the `head` module.
//!
//! A metric that is undefined for the data (no test points, a single class, …) is `NaN`; all nine
//! keys are always present. Non-finite embeddings (a diverged net) make every metric `NaN`.

mod head;
mod knn;
mod metrics;
mod model;
mod oneshot;
mod project;
mod subset;
mod tsne;
mod verification;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_brute;
#[cfg(test)]
mod tests_head;

use std::collections::BTreeMap;

use proto::metric;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub(crate) use head::HeadScorer;
pub(crate) use knn::knn_search;
pub(crate) use metrics::{knn_accuracy, retrieval_k, retrieval_metrics};
pub(crate) use model::{EvalPlan, embedding_spread, evaluate_model};
pub(crate) use oneshot::one_shot_accuracy;
#[cfg(test)]
pub(crate) use project::project_2d;
pub(crate) use project::project_snapshot;
pub(crate) use subset::snapshot_subset;
pub(crate) use verification::verification_auc;

/// Same-class pairs (and, separately, different-class pairs) drawn for `roc_auc`.
pub(crate) const VERIFICATION_PAIRS: usize = 5_000;
/// Trials per N-way one-shot metric. The reported standard error is the sample standard
/// deviation of the trial scores (scores in [0, 1], so a variance of at most ¼ · n / (n − 1))
/// over √n: at most √(¼ / (n − 1)) = 0.004975 here. 10,000 trials would give 0.0050002 at an
/// accuracy of ½, just over the protocol's bound of 0.005 (measured in the paper sweep).
pub(crate) const ONE_SHOT_TRIALS: usize = 10_100;

/// Labelled embeddings: `data` is `[N * dim]` row-major, one label per row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EmbeddingSet<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) dim: usize,
    pub(crate) labels: &'a [u32],
}

impl EmbeddingSet<'_> {
    fn check(&self, what: &str) {
        assert!(self.dim > 0, "{what}: embedding dim must be positive");
        assert_eq!(
            self.data.len(),
            self.labels.len() * self.dim,
            "{what}: data length must be labels × dim"
        );
    }
}

/// Below this [`metric::SPREAD_RATIO`] an embedding has collapsed (README, "Collapse", where the
/// measurements that chose it are). A non-finite ratio (a diverged net) counts as collapsed.
pub(crate) const COLLAPSE_RATIO: f64 = 0.25;

/// The collapse rule: the test embeddings' spread fell below [`COLLAPSE_RATIO`] of the untrained
/// network's.
pub(crate) fn collapsed(spread_ratio: f64) -> bool {
    spread_ratio.is_nan() || spread_ratio < COLLAPSE_RATIO
}

/// Independent random stream `stream` of `seed`, so adding a metric never shifts another's draws.
pub(crate) fn metric_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The seed of an evaluation's random draws (one-shot trials, verification pairs): a function
/// of the data set and the split only, so every run on them is scored on the same draws.
pub(crate) fn protocol_seed(dataset: &proto::Dataset, split: proto::Split) -> u64 {
    use sha2::{Digest, Sha256};
    // The folder's name, not its path: the same data set on another machine is the same draw.
    let digest = Sha256::digest(format!("{}|{split}", dataset.label()).as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// [`evaluate_sets`] with `train` as the k-NN reference.
#[cfg(test)]
pub(crate) fn evaluate(
    train: &EmbeddingSet<'_>,
    test: &EmbeddingSet<'_>,
    seed: u64,
) -> BTreeMap<String, f64> {
    evaluate_sets(Some(train), test, seed)
}

/// The keys [`evaluate_sets`] reports: [`metric::EVAL`], [`metric::ONE_SHOT_SE`] and
/// [`metric::EMBEDDING_SPREAD`].
pub(crate) fn evaluation_keys() -> impl Iterator<Item = &'static str> {
    metric::EVAL
        .into_iter()
        .chain(metric::ONE_SHOT_SE)
        .chain([metric::EMBEDDING_SPREAD])
}

/// All evaluation metrics of `test` embeddings ([`evaluation_keys`]), with `reference` (training
/// images) as the k-NN reference; without one (the `classes` split) the k-NN accuracies are NaN.
/// Deterministic under `seed`. Panics if the two sets' dims differ or a set is malformed.
pub(crate) fn evaluate_sets(
    reference: Option<&EmbeddingSet<'_>>,
    test: &EmbeddingSet<'_>,
    seed: u64,
) -> BTreeMap<String, f64> {
    test.check("evaluate(test)");
    let mut out: BTreeMap<String, f64> = evaluation_keys()
        .map(|k| (k.to_string(), f64::NAN))
        .collect();
    let ref_data: &[f32] = reference.map_or(&[], |r| r.data);
    if let Some(r) = reference {
        r.check("evaluate(train)");
        assert_eq!(r.dim, test.dim, "evaluate: train and test dims differ");
    }
    if !ref_data.iter().chain(test.data).all(|v| v.is_finite()) {
        tracing::warn!("evaluate: non-finite embeddings, every metric is NaN");
        return out;
    }
    let mut put = |k: &str, v: f64| {
        out.insert(k.to_string(), v);
    };
    put(metric::EMBEDDING_SPREAD, spread(test.data, test.dim));

    if let Some(train) = reference {
        let nn = knn_search(test.data, train.data, test.dim, 5, false);
        put(
            metric::KNN1_ACC,
            knn_accuracy(&nn, train.labels, test.labels, 1),
        );
        put(
            metric::KNN5_ACC,
            knn_accuracy(&nn, train.labels, test.labels, 5),
        );
    }

    let self_nn = knn_search(
        test.data,
        test.data,
        test.dim,
        retrieval_k(test.labels),
        true,
    );
    let r = retrieval_metrics(&self_nn, test.labels);
    put(metric::PRECISION_AT_1, r.precision_at_1);
    put(metric::R_PRECISION, r.r_precision);
    put(metric::MAP_AT_R, r.map_at_r);

    let mut rng = metric_rng(seed, 1);
    put(
        metric::ROC_AUC,
        verification_auc(test, VERIFICATION_PAIRS, VERIFICATION_PAIRS, &mut rng),
    );

    for ((n_way, key), se_key) in metric::ONE_SHOT.into_iter().zip(metric::ONE_SHOT_SE) {
        let mut rng = metric_rng(seed, 100 + n_way as u64);
        let r = one_shot_accuracy(test, n_way, ONE_SHOT_TRIALS, &mut rng);
        put(key, r.accuracy);
        put(se_key, r.se);
    }
    out
}

/// Root mean squared distance of the rows of `data` (`[N, dim]`) to their centroid; NaN when
/// empty.
pub(crate) fn spread(data: &[f32], dim: usize) -> f64 {
    let n = data.len() / dim.max(1);
    if n == 0 {
        return f64::NAN;
    }
    let mut centroid = vec![0f64; dim];
    for row in data.chunks_exact(dim) {
        for (c, &v) in centroid.iter_mut().zip(row) {
            *c += f64::from(v);
        }
    }
    centroid.iter_mut().for_each(|c| *c /= n as f64);
    let ss: f64 = data
        .chunks_exact(dim)
        .map(|row| {
            row.iter()
                .zip(&centroid)
                .map(|(&v, c)| (f64::from(v) - c).powi(2))
                .sum::<f64>()
        })
        .sum();
    (ss / n as f64).sqrt()
}
