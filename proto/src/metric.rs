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

/// Evaluation: accuracy of the nearest training neighbour's label. NaN under the `classes`
/// split, where no test class has training images to be classified by.
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
/// Evaluation: 5-way one-shot classification accuracy, over fixed trials on the test classes
/// (README, "Evaluation protocol"). Each N-way key is NaN when the evaluated set has fewer than
/// N classes.
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

/// Prefix of the validation twin of every [`EVAL`] metric: the same metric on the validation set
/// (README, "Evaluation protocol"). Unprefixed evaluation metrics are always the test set's.
pub const VAL_PREFIX: &str = "val/";
/// Validation: k-NN accuracy, as [`KNN1_ACC`] on the validation set.
pub const VAL_KNN1_ACC: &str = "val/knn1_acc";
/// Validation: as [`KNN5_ACC`].
pub const VAL_KNN5_ACC: &str = "val/knn5_acc";
/// Validation: as [`PRECISION_AT_1`].
pub const VAL_PRECISION_AT_1: &str = "val/precision_at_1";
/// Validation: as [`R_PRECISION`].
pub const VAL_R_PRECISION: &str = "val/r_precision";
/// Validation: as [`MAP_AT_R`]. The metric that selects epochs and cells (see [`SELECTION`]).
pub const VAL_MAP_AT_R: &str = "val/map_at_r";
/// Validation: as [`ROC_AUC`].
pub const VAL_ROC_AUC: &str = "val/roc_auc";
/// Validation: as [`ONE_SHOT_5WAY`].
pub const VAL_ONE_SHOT_5WAY: &str = "val/one_shot_5way";
/// Validation: as [`ONE_SHOT_10WAY`].
pub const VAL_ONE_SHOT_10WAY: &str = "val/one_shot_10way";
/// Validation: as [`ONE_SHOT_20WAY`].
pub const VAL_ONE_SHOT_20WAY: &str = "val/one_shot_20way";
/// The validation twins of [`EVAL`], in the same order. Reported by every evaluation of a run
/// with a validation set (`val_fraction > 0`).
pub const VAL_EVAL: [&str; 9] = [
    VAL_KNN1_ACC,
    VAL_KNN5_ACC,
    VAL_PRECISION_AT_1,
    VAL_R_PRECISION,
    VAL_MAP_AT_R,
    VAL_ROC_AUC,
    VAL_ONE_SHOT_5WAY,
    VAL_ONE_SHOT_10WAY,
    VAL_ONE_SHOT_20WAY,
];
/// The validation metric that model selection maximises: the best epoch of a run and
/// `export --agg best` choose by it, and report the test metrics of what they chose.
pub const SELECTION: &str = VAL_MAP_AT_R;

/// Evaluation: standard error of [`ONE_SHOT_5WAY`] over its fixed trials.
pub const ONE_SHOT_5WAY_SE: &str = "one_shot_5way_se";
/// Evaluation: standard error of [`ONE_SHOT_10WAY`].
pub const ONE_SHOT_10WAY_SE: &str = "one_shot_10way_se";
/// Evaluation: standard error of [`ONE_SHOT_20WAY`].
pub const ONE_SHOT_20WAY_SE: &str = "one_shot_20way_se";
/// The one-shot standard errors, in the order of [`ONE_SHOT`].
pub const ONE_SHOT_SE: [&str; 3] = [ONE_SHOT_5WAY_SE, ONE_SHOT_10WAY_SE, ONE_SHOT_20WAY_SE];

/// Prefix of metrics scored with a BCE network's learned head (Koch's weighted L1 similarity)
/// instead of the Euclidean distance. Only `bce` runs report them.
pub const HEAD_PREFIX: &str = "head/";
/// Head similarity: as [`PRECISION_AT_1`].
pub const HEAD_PRECISION_AT_1: &str = "head/precision_at_1";
/// Head similarity: as [`R_PRECISION`].
pub const HEAD_R_PRECISION: &str = "head/r_precision";
/// Head similarity: as [`MAP_AT_R`].
pub const HEAD_MAP_AT_R: &str = "head/map_at_r";
/// Head similarity: as [`ROC_AUC`].
pub const HEAD_ROC_AUC: &str = "head/roc_auc";
/// Head similarity: as [`ONE_SHOT_5WAY`] (Koch et al.'s own scoring).
pub const HEAD_ONE_SHOT_5WAY: &str = "head/one_shot_5way";
/// Head similarity: as [`ONE_SHOT_20WAY`].
pub const HEAD_ONE_SHOT_20WAY: &str = "head/one_shot_20way";
/// The head-scored metrics a `bce` evaluation adds, in table order.
pub const HEAD_EVAL: [&str; 6] = [
    HEAD_PRECISION_AT_1,
    HEAD_R_PRECISION,
    HEAD_MAP_AT_R,
    HEAD_ROC_AUC,
    HEAD_ONE_SHOT_5WAY,
    HEAD_ONE_SHOT_20WAY,
];

/// Evaluation (embedding health): spread of the test embeddings, the root mean squared distance
/// to their centroid.
pub const EMBEDDING_SPREAD: &str = "embedding_spread";
/// Evaluation (embedding health): [`EMBEDDING_SPREAD`] over its value at epoch 0 (the
/// untrained network); the collapse rule reads it.
pub const SPREAD_RATIO: &str = "spread_ratio";
/// Evaluation and final: 1 when the embedding has collapsed (rule in README, "Collapse"),
/// else 0. The final value is the last evaluation's.
pub const COLLAPSED: &str = "collapsed";
/// Final only: the evaluated epoch with the highest [`SELECTION`] metric (ties: the earliest),
/// whose evaluation the final metrics are. Absent without a validation set (`val_fraction = 0`)
/// or when no evaluation had a finite [`SELECTION`]: the final metrics are then the last
/// evaluation's.
pub const BEST_EPOCH: &str = "best_epoch";

/// Final only: the number of epochs the run trained.
pub const EPOCHS: &str = "epochs";

/// A finished run's result metrics, in the order tables show them: the evaluation of
/// [`BEST_EPOCH`] (the best epoch on validation; the last evaluation without a validation set),
/// then [`SAMPLES_PER_SEC`] and [`EPOCHS`]. A result also carries the selected evaluation's other
/// keys ([`VAL_EVAL`], [`ONE_SHOT_SE`], [`EMBEDDING_SPREAD`], [`SPREAD_RATIO`], [`HEAD_EVAL`] for
/// `bce`), [`BEST_EPOCH`], and the LAST evaluation's [`COLLAPSED`].
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
    fn validation_and_head_names_are_prefixed_twins() {
        for (v, t) in VAL_EVAL.iter().zip(EVAL) {
            assert_eq!(*v, format!("{VAL_PREFIX}{t}"));
        }
        for h in HEAD_EVAL {
            let bare = h.strip_prefix(HEAD_PREFIX).unwrap();
            assert!(EVAL.contains(&bare), "{h}");
        }
        for ((n, name), se) in ONE_SHOT.iter().zip(ONE_SHOT_SE) {
            assert_eq!(se, format!("{name}_se"), "{n}");
        }
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
        all.extend(VAL_EVAL);
        all.extend(HEAD_EVAL);
        all.extend(ONE_SHOT_SE);
        all.extend([EMBEDDING_SPREAD, SPREAD_RATIO, COLLAPSED, BEST_EPOCH]);
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
