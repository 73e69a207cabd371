//! Evaluating a model: embeds the evaluation splits with the current model (no autodiff), then
//! the backend-free metrics of this module turn them into Eval metrics and a Snapshot.

use std::collections::BTreeMap;

use burn::module::AutodiffModule;
use burn::tensor::{Tensor, TensorData};
use proto::Projection;

use proto::metric;

use super::EmbeddingSet;
use crate::train::data::Prepared;
use crate::train::model::MetricNet;
use crate::train::model::fused::FusedBlock;
use crate::train::{CancelToken, Snapshot, TrainBackend};

/// Mixed into the protocol seed for the validation set's draws.
const VAL_STREAM: u64 = 0x7A1_u64 << 40;

/// Images embedded per forward pass during evaluation.
const EMBED_CHUNK: usize = 500;

/// Embeds every image of `set` (`[N, D]` row-major) without building a graph; None once
/// `cancel` is set (checked per chunk, so a cancel lands within one chunk's forward pass).
fn embed_all<B: FusedBlock>(
    model: &MetricNet<B>,
    set: &Prepared,
    device: &B::Device,
    cancel: &CancelToken,
) -> Option<Vec<f32>> {
    let px = set.pixels_per_image();
    let mut out = Vec::new();
    for start in (0..set.len()).step_by(EMBED_CHUNK) {
        if cancel.is_cancelled() {
            return None;
        }
        let n = EMBED_CHUNK.min(set.len() - start);
        let chunk = set.data[start * px..(start + n) * px].to_vec();
        let x = Tensor::<B, 4>::from_data(TensorData::new(chunk, [n, 1, set.h, set.w]), device);
        let emb = model.embed(x); // [n, D]
        out.extend(emb.into_data().to_vec::<f32>().expect("f32 embeddings"));
    }
    Some(out)
}

/// The fixed inputs of every evaluation of a run.
pub(crate) struct EvalPlan<'a> {
    /// Training images with data-set labels, the k-NN reference; `None` when the test classes
    /// never trained (the `classes` split), where k-NN accuracy has no reference.
    pub(crate) reference: Option<&'a Prepared>,
    /// The validation set, if the run has one: its metrics are reported as `val/` twins.
    pub(crate) val: Option<&'a Prepared>,
    pub(crate) test: &'a Prepared,
    pub(crate) snapshot_indices: &'a [u32],
    pub(crate) class_names: &'a [String],
    pub(crate) dim: usize,
    /// [`super::protocol_seed`]: fixed per data set and split.
    pub(crate) seed: u64,
    /// [`metric::EMBEDDING_SPREAD`] of the untrained network (epoch 0), for the spread ratio.
    pub(crate) initial_spread: f64,
    /// How snapshots of `dim > 2` are drawn in 2-D.
    pub(crate) projection: Projection,
}

/// The test embeddings' spread of `model` (see [`super::spread`]); None if cancelled.
pub(crate) fn embedding_spread<B: TrainBackend>(
    model: &MetricNet<B>,
    test: &Prepared,
    dim: usize,
    device: &B::Device,
    cancel: &CancelToken,
) -> Option<f64> {
    let emb = embed_all(&model.valid(), test, device, cancel)?;
    Some(super::spread(&emb, dim))
}

/// Evaluates `model` and builds the snapshot of `epoch`; None if `cancel` was set meanwhile.
pub(crate) fn evaluate_model<B: TrainBackend>(
    model: &MetricNet<B>,
    plan: &EvalPlan<'_>,
    epoch: u32,
    device: &B::Device,
    cancel: &CancelToken,
) -> Option<(BTreeMap<String, f64>, Snapshot)> {
    let valid = model.valid();
    // The inner backend shares the autodiff backend's device type.
    let train_emb = match plan.reference {
        Some(r) => Some(embed_all(&valid, r, device, cancel)?),
        None => None,
    };
    let test_emb = embed_all(&valid, plan.test, device, cancel)?;
    let val_emb = match plan.val {
        Some(v) => Some(embed_all(&valid, v, device, cancel)?),
        None => None,
    };
    if cancel.is_cancelled() {
        return None;
    }
    let d = plan.dim;
    let reference = plan
        .reference
        .zip(train_emb.as_deref())
        .map(|(r, data)| EmbeddingSet {
            data,
            dim: d,
            labels: &r.labels,
        });
    let test_set = EmbeddingSet {
        data: &test_emb,
        dim: d,
        labels: &plan.test.labels,
    };
    let mut metrics = super::evaluate_sets(reference.as_ref(), &test_set, plan.seed);
    if let (Some(v), Some(data)) = (plan.val, val_emb.as_deref()) {
        let val_set = EmbeddingSet {
            data,
            dim: d,
            labels: &v.labels,
        };
        // Another stream of the protocol seed: validation draws are fixed too, and differ
        // from the test's.
        let val = super::evaluate_sets(reference.as_ref(), &val_set, plan.seed ^ VAL_STREAM);
        for (name, test_name) in metric::VAL_EVAL.iter().zip(metric::EVAL) {
            metrics.insert((*name).to_owned(), val[test_name]);
        }
    }
    if let Some(head) = &valid.bce_head {
        let scorer = super::HeadScorer {
            // Linear's weight is [d_in, d_out] = [D, 1].
            weight: head
                .fc
                .weight
                .val()
                .into_data()
                .to_vec::<f32>()
                .expect("f32 weights"),
            bias: head.fc.bias.as_ref().map_or(0.0, |b| {
                b.val().into_data().to_vec::<f32>().expect("f32 bias")[0]
            }),
        };
        metrics.extend(super::head::head_metrics(&test_set, &scorer, plan.seed));
    }
    let ratio = metrics[metric::EMBEDDING_SPREAD] / plan.initial_spread;
    metrics.insert(metric::SPREAD_RATIO.to_owned(), ratio);
    metrics.insert(
        metric::COLLAPSED.to_owned(),
        f64::from(u8::from(super::collapsed(ratio))),
    );
    let mut rows = Vec::with_capacity(plan.snapshot_indices.len() * d);
    for &i in plan.snapshot_indices {
        rows.extend_from_slice(&test_emb[i as usize * d..(i as usize + 1) * d]);
    }
    let t = std::time::Instant::now();
    // The protocol seed, not the run's: every run of a data set and split starts its t-SNE from
    // the same layout, so pictures of two runs differ by what the runs learned.
    let (points, projection) = super::project_snapshot(&rows, d, plan.projection, plan.seed);
    tracing::debug!(
        epoch,
        projection = projection.as_str(),
        points = points.len(),
        secs = t.elapsed().as_secs_f64(),
        "snapshot projected"
    );
    let snapshot = Snapshot {
        epoch,
        projection,
        points,
        labels: plan
            .snapshot_indices
            .iter()
            .map(|&i| plan.test.labels[i as usize])
            .collect(),
        indices: plan.snapshot_indices.to_vec(),
        class_names: plan.class_names.to_vec(),
    };
    Some((metrics, snapshot))
}
