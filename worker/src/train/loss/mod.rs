//! Metric-learning losses and their label conventions (pinned by the unit tests).
//!
//! * `ce` ([`ce`]): embedding → PReLU → linear classifier → softmax cross-entropy on the
//!   integer class label. The evaluated embedding is the D-dim output *before* the PReLU.
//! * `bce` ([`pair::BceHead`], Koch et al. 2015): logit = linear(|f1 − f2|) (D → 1),
//!   p = sigmoid(logit); binary cross-entropy with **same class = 1**, different = 0.
//! * `contrastive` ([`pair::ContrastiveLossConfig`], Hadsell et al. 2006): mean over pairs of
//!   `y·d² + (1 − y)·max(0, m − d)²` with **y = 1 for the same class** (note: the paper uses
//!   the opposite Y and ½ factors), `d = sqrt(Σ(f1 − f2)² + eps)`; eps sits inside the sqrt
//!   because √0 has an infinite derivative.
//! * `triplet` ([`triplet`], Schroff et al. 2015): `max(0, d(a,p) − d(a,n) + m)` with plain
//!   (not squared) distances, eps inside the sqrt; mining `random` (sampled triplets),
//!   `batch-all`, `batch-hard`, `semi-hard` (online, on P×K batches).
//!
//! Every loss returns a [`LossOutput`] whose `active` marks the items that still contribute:
//! loss > 0 for contrastive / triplet items, misclassified items for `ce` and `bce`
//! (their loss is never exactly 0).

pub(crate) mod ce;
pub(crate) mod pair;
pub(crate) mod triplet;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// A scalar loss plus per-item activity (1.0 = contributes, 0.0 = satisfied).
#[derive(Debug, Clone)]
pub(crate) struct LossOutput<B: Backend> {
    /// `[1]`
    pub(crate) loss: Tensor<B, 1>,
    /// `[M]` 0.0 / 1.0 per candidate item (pair, triplet, anchor, sample).
    pub(crate) active: Tensor<B, 1>,
    /// `[M]` 1.0 for items that really exist (e.g. valid triplets of a mined batch).
    pub(crate) eligible: Tensor<B, 1>,
}

impl<B: Backend> LossOutput<B> {
    /// Every item is eligible.
    pub(crate) fn all_eligible(loss: Tensor<B, 1>, active: Tensor<B, 1>) -> Self {
        let eligible = active.ones_like();
        LossOutput {
            loss,
            active,
            eligible,
        }
    }

    /// Fraction of eligible items that are active, `[1]` (0 if none is eligible).
    pub(crate) fn active_fraction(&self) -> Tensor<B, 1> {
        let a = (self.active.clone() * self.eligible.clone()).sum();
        a / self.eligible.clone().sum().clamp_min(1.0)
    }
}

/// Euclidean distance per row, `sqrt(Σ(x − y)² + eps)`. `[N, D], [N, D] -> [N]`.
pub(crate) fn row_distance<B: Backend>(x: Tensor<B, 2>, y: Tensor<B, 2>, eps: f64) -> Tensor<B, 1> {
    let diff = x - y; // [N, D]
    (diff.clone() * diff)
        .sum_dim(1)
        .add_scalar(eps)
        .sqrt()
        .flatten(0, 1) // [N]
}

/// All pairwise distances `sqrt(max(0, |xi|² + |xj|² − 2 xi·xj) + eps)`. `[N, D] -> [N, N]`.
pub(crate) fn pairwise_distance<B: Backend>(x: Tensor<B, 2>, eps: f64) -> Tensor<B, 2> {
    let sq = (x.clone() * x.clone()).sum_dim(1); // [N, 1]
    let gram = x.clone().matmul(x.transpose()); // [N, N]
    let d2 = sq.clone() + sq.transpose() - gram.mul_scalar(2.0); // [N, N]
    d2.clamp_min(0.0).add_scalar(eps).sqrt()
}

/// Mean L2 norm of the rows of `x` (`[N, D]`), a `[1]` tensor (health metric).
pub(crate) fn mean_norm<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 1> {
    (x.clone() * x).sum_dim(1).sqrt().mean()
}

#[cfg(test)]
pub(crate) mod test_util {
    use burn::tensor::{Tensor, TensorData};

    pub(crate) type Ad = burn::backend::Autodiff<burn::backend::Flex>;

    pub(crate) fn t2(rows: &[&[f32]]) -> Tensor<Ad, 2> {
        let d = rows[0].len();
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), d]), &Default::default())
    }

    pub(crate) fn t1(v: &[f32]) -> Tensor<Ad, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    pub(crate) fn vals<B: burn::tensor::backend::Backend, const D: usize>(
        t: Tensor<B, D>,
    ) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    pub(crate) fn scalar(t: Tensor<Ad, 1>) -> f32 {
        vals(t)[0]
    }

    pub(crate) fn close(a: f32, b: f32) {
        assert!((a - b).abs() < 1e-4, "{a} != {b}");
    }
}
