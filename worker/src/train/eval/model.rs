//! Evaluating a model: embeds the evaluation splits with the current model (no autodiff), then
//! the backend-free metrics of this module turn them into Eval metrics and a Snapshot.

use std::collections::BTreeMap;

use burn::module::AutodiffModule;
use burn::tensor::{Tensor, TensorData};
use proto::Projection;

use super::EmbeddingSet;
use crate::train::data::Prepared;
use crate::train::model::MetricNet;
use crate::train::model::fused::FusedBlock;
use crate::train::{CancelToken, Snapshot, TrainBackend};

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
    pub(crate) train: &'a Prepared,
    pub(crate) test: &'a Prepared,
    pub(crate) snapshot_indices: &'a [u32],
    pub(crate) class_names: &'a [String],
    pub(crate) dim: usize,
    pub(crate) seed: u64,
    /// How snapshots of `dim > 2` are drawn in 2-D.
    pub(crate) projection: Projection,
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
    let train_emb = embed_all(&valid, plan.train, device, cancel)?;
    let test_emb = embed_all(&valid, plan.test, device, cancel)?;
    if cancel.is_cancelled() {
        return None;
    }
    let d = plan.dim;
    let metrics = super::evaluate(
        &EmbeddingSet {
            data: &train_emb,
            dim: d,
            labels: &plan.train.labels,
        },
        &EmbeddingSet {
            data: &test_emb,
            dim: d,
            labels: &plan.test.labels,
        },
        plan.seed,
    );
    let mut rows = Vec::with_capacity(plan.snapshot_indices.len() * d);
    for &i in plan.snapshot_indices {
        rows.extend_from_slice(&test_emb[i as usize * d..(i as usize + 1) * d]);
    }
    let t = std::time::Instant::now();
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
