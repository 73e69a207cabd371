//! Metric names: the string contract between the worker, which reports them (`MetricPoint.name`,
//! the keys of `EvalResult.metrics` and `CompleteRequest.metrics`), the coordinator, which stores
//! and exports them, and the dashboard, which plots and tabulates them.
//!
//! A stored name is data: renaming a constant here orphans the curves of every existing database
//! and changes every export's column, so names only ever get added.

/// Per step report: the mean training loss since the previous step report.
pub const LOSS: &str = "loss";
/// Per step report: the learning rate the optimizer applied at that step.
pub const LR: &str = "lr";

/// Per epoch: the epoch's mean training loss.
pub const EPOCH_LOSS: &str = "epoch_loss";
/// Per epoch and final: training anchors (images, pairs or triplets) per second, evaluation and
/// the first batches excluded; the final value is over the whole run.
pub const SAMPLES_PER_SEC: &str = "samples_per_sec";
/// Per epoch: wall time of the epoch's training steps, in seconds.
pub const EPOCH_SECS: &str = "epoch_secs";
/// Per epoch (embedding health): mean L2 norm of the training embeddings.
pub const MEAN_EMBEDDING_NORM: &str = "mean_embedding_norm";
/// Per epoch (embedding health): fraction of pairs or triplets with a non-zero loss.
pub const ACTIVE_FRACTION: &str = "active_fraction";
/// The embedding-health metrics, in the order the run page draws them.
pub const HEALTH: [&str; 2] = [MEAN_EMBEDDING_NORM, ACTIVE_FRACTION];

/// Evaluation: accuracy of the nearest training neighbour's label.
pub const KNN1_ACC: &str = "knn1_acc";
/// Evaluation: accuracy of the majority label of the 5 nearest training neighbours.
pub const KNN5_ACC: &str = "knn5_acc";
/// Evaluation: test-split retrieval, precision of the first hit.
pub const PRECISION_AT_1: &str = "precision_at_1";
/// Evaluation: test-split retrieval, precision within the first R hits (R = class size - 1).
pub const R_PRECISION: &str = "r_precision";
/// Evaluation: test-split retrieval, mean average precision within the first R hits.
pub const MAP_AT_R: &str = "map_at_r";
/// Evaluation: area under the ROC curve of same-class versus different-class pair distances.
pub const ROC_AUC: &str = "roc_auc";
/// Evaluation: 5-way one-shot classification accuracy.
pub const ONE_SHOT_5WAY: &str = "one_shot_5way";
/// Evaluation: 10-way one-shot classification accuracy.
pub const ONE_SHOT_10WAY: &str = "one_shot_10way";
/// Evaluation: 20-way one-shot classification accuracy.
pub const ONE_SHOT_20WAY: &str = "one_shot_20way";
/// The one-shot metrics with their N, in key order.
pub const ONE_SHOT: [(usize, &str); 3] = [
    (5, ONE_SHOT_5WAY),
    (10, ONE_SHOT_10WAY),
    (20, ONE_SHOT_20WAY),
];

/// Every evaluation metric, in the order tables show them. Each evaluation reports all of them.
pub const EVAL: [&str; 9] = [
    KNN1_ACC,
    KNN5_ACC,
    PRECISION_AT_1,
    R_PRECISION,
    MAP_AT_R,
    ROC_AUC,
    ONE_SHOT_5WAY,
    ONE_SHOT_10WAY,
    ONE_SHOT_20WAY,
];

/// Final only: the number of epochs the run trained.
pub const EPOCHS: &str = "epochs";

/// A finished run's result metrics, in the order tables show them: the last evaluation, then
/// [`SAMPLES_PER_SEC`] and [`EPOCHS`].
pub const FINAL: [&str; 11] = [
    KNN1_ACC,
    KNN5_ACC,
    PRECISION_AT_1,
    R_PRECISION,
    MAP_AT_R,
    ROC_AUC,
    ONE_SHOT_5WAY,
    ONE_SHOT_10WAY,
    ONE_SHOT_20WAY,
    SAMPLES_PER_SEC,
    EPOCHS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_is_eval_then_throughput_and_epochs() {
        assert_eq!(FINAL[..EVAL.len()], EVAL);
        assert_eq!(FINAL[EVAL.len()..], [SAMPLES_PER_SEC, EPOCHS]);
    }

    #[test]
    fn one_shot_names_match_their_n() {
        for (n, name) in ONE_SHOT {
            assert_eq!(name, format!("one_shot_{n}way"));
        }
    }

    #[test]
    fn names_are_unique() {
        let mut all = vec![
            LOSS,
            LR,
            EPOCH_LOSS,
            EPOCH_SECS,
            MEAN_EMBEDDING_NORM,
            ACTIVE_FRACTION,
        ];
        all.extend(FINAL);
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
