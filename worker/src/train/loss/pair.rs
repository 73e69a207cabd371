//! Pair losses: Hadsell's contrastive loss and Koch's siamese binary cross-entropy.
//! Convention for both: the pair label is 1.0 for the same class, 0.0 for different classes.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

use super::{LossOutput, row_distance};

/// Contrastive loss `mean(y·d² + (1 − y)·max(0, m − d)²)`, y = 1 for the same class.
#[derive(Config, Debug)]
pub(crate) struct ContrastiveLossConfig {
    #[config(default = 1.0)]
    pub(crate) margin: f64,
    /// Added under the square root of the distance.
    #[config(default = 1e-9)]
    pub(crate) eps: f64,
}

impl ContrastiveLossConfig {
    /// `e1`, `e2`: `[N, D]` embeddings of the two sides; `same`: `[N]` 1.0 / 0.0.
    pub(crate) fn forward<B: Backend>(
        &self,
        e1: Tensor<B, 2>,
        e2: Tensor<B, 2>,
        same: Tensor<B, 1>,
    ) -> LossOutput<B> {
        let d = row_distance(e1, e2, self.eps); // [N]
        let pull = d.clone().powi_scalar(2); // [N]
        let push = relu(d.neg().add_scalar(self.margin)).powi_scalar(2); // [N]
        let per_pair = same.clone() * pull + same.neg().add_scalar(1.0) * push; // [N]
        let active = per_pair.clone().detach().greater_elem(0.0).float();
        LossOutput::all_eligible(per_pair.mean(), active)
    }
}

#[derive(Config, Debug)]
pub(crate) struct BceHeadConfig {
    pub(crate) dim: usize,
}

/// Koch's siamese head: `logit = linear(|f1 − f2|)`, `p(same) = sigmoid(logit)`.
#[derive(Module, Debug)]
pub(crate) struct BceHead<B: Backend> {
    pub(crate) fc: Linear<B>,
}

impl BceHeadConfig {
    /// The usual uniform init, with the weights made non-positive: a larger distance must start
    /// out meaning "less likely the same". With a positive weight, different-class pairs pull
    /// their distance down just like same-class pairs, and the embedding can collapse to one
    /// point before the sign flips; at that point `|f1 − f2| = 0` passes no gradient and training
    /// never recovers (seen on full Fashion-MNIST with D = 2: MAP@R 0.017 after an epoch).
    pub(crate) fn init<B: Backend>(&self, device: &B::Device) -> BceHead<B> {
        BceHead {
            fc: LinearConfig::new(self.dim, 1).init(device),
        }
        .with_non_positive_weights()
    }
}

impl<B: Backend> BceHead<B> {
    /// The same head with `−|w|` for its weights (see [`BceHeadConfig::init`]); applied again
    /// after the model's seeded re-initialisation, which draws signs at random.
    pub(crate) fn with_non_positive_weights(mut self) -> Self {
        self.fc.weight = self.fc.weight.map(|w| w.abs().neg());
        self
    }

    /// `[N, D], [N, D] -> [N]` logits of "same class".
    pub(crate) fn forward(&self, e1: Tensor<B, 2>, e2: Tensor<B, 2>) -> Tensor<B, 1> {
        let n = e1.dims()[0];
        self.fc.forward((e1 - e2).abs()).reshape([n])
    }

    /// Binary cross-entropy with logits; `same` is 1.0 for the same class. Active = the
    /// pair is misclassified at p = 0.5.
    pub(crate) fn loss(
        &self,
        e1: Tensor<B, 2>,
        e2: Tensor<B, 2>,
        same: Tensor<B, 1>,
    ) -> LossOutput<B> {
        bce_with_logits(self.forward(e1, e2), same)
    }
}

/// Numerically stable `mean(−y·log σ(z) − (1 − y)·log(1 − σ(z)))`. `[N], [N]`.
pub(crate) fn bce_with_logits<B: Backend>(z: Tensor<B, 1>, y: Tensor<B, 1>) -> LossOutput<B> {
    // max(z, 0) − z·y + log(1 + exp(−|z|)) never overflows.
    let softplus = z.clone().abs().neg().exp().add_scalar(1.0).log();
    let per_pair = relu(z.clone()) - z.clone() * y.clone() + softplus;
    let predicted_same = z.detach().greater_elem(0.0).float();
    let active = predicted_same.not_equal(y.detach()).float();
    LossOutput::all_eligible(per_pair.mean(), active)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use burn::module::Param;
    use burn::tensor::TensorData;

    #[test]
    fn contrastive_matches_hand_computed_values() {
        let cfg = ContrastiveLossConfig::new().with_margin(1.0);
        // Same pair at distance 5 → 25; different pair at 0.5 → (1 − 0.5)² = 0.25;
        // different pair at 2 (beyond the margin) → 0 and inactive.
        let e1 = t2(&[&[0.0, 0.0], &[0.0, 0.0], &[0.0, 0.0]]);
        let e2 = t2(&[&[3.0, 4.0], &[0.5, 0.0], &[2.0, 0.0]]);
        let out = cfg.forward(e1, e2, t1(&[1.0, 0.0, 0.0]));
        close(scalar(out.loss), (25.0 + 0.25 + 0.0) / 3.0);
        assert_eq!(vals(out.active), vec![1.0, 1.0, 0.0]);
    }

    #[test]
    fn contrastive_gradients_pull_similar_and_push_dissimilar() {
        let cfg = ContrastiveLossConfig::new().with_margin(2.0);
        let e1 = t2(&[&[0.0, 0.0], &[0.0, 0.0]]).require_grad();
        let e2 = t2(&[&[1.0, 0.0], &[1.0, 0.0]]).require_grad();
        let out = cfg.forward(e1.clone(), e2.clone(), t1(&[1.0, 0.0]));
        let grads = out.loss.backward();
        let g1 = vals(e1.grad(&grads).unwrap());
        let g2 = vals(e2.grad(&grads).unwrap());
        // Similar pair: descending moves e1 towards +x and e2 towards −x (together).
        assert!(g1[0] < 0.0 && g2[0] > 0.0, "{g1:?} {g2:?}");
        // Dissimilar pair inside the margin: descent moves them apart.
        assert!(g1[2] > 0.0 && g2[2] < 0.0, "{g1:?} {g2:?}");
    }

    #[test]
    fn contrastive_gradient_is_finite_for_identical_points() {
        let cfg = ContrastiveLossConfig::new();
        let e1 = t2(&[&[0.5, 0.5]]).require_grad();
        let e2 = t2(&[&[0.5, 0.5]]).require_grad();
        let out = cfg.forward(e1.clone(), e2, t1(&[0.0]));
        let grads = out.loss.backward();
        assert!(vals(e1.grad(&grads).unwrap()).iter().all(|g| g.is_finite()));
    }

    #[test]
    fn bce_head_starts_with_distance_meaning_different() {
        for _ in 0..8 {
            let head = BceHeadConfig::new(2).init::<Ad>(&Default::default());
            let w = head.fc.weight.val().into_data().to_vec::<f32>().unwrap();
            assert!(w.iter().all(|&x| x <= 0.0), "{w:?}");
            assert!(w.iter().any(|&x| x < 0.0), "{w:?}");
        }
    }

    #[test]
    fn bce_matches_hand_computed_values_and_same_is_one() {
        let device = Default::default();
        let mut head = BceHeadConfig::new(2).init::<Ad>(&device);
        head.fc.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![1.0f32, 1.0], [2, 1]),
            &device,
        ));
        head.fc.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![-1.0f32], [1]),
            &device,
        )));
        // |f1 − f2| = [1, 2] → logit 2: p(same) = σ(2).
        let e1 = t2(&[&[0.0, 0.0], &[0.0, 0.0]]);
        let e2 = t2(&[&[1.0, -2.0], &[1.0, 2.0]]);
        let out = head.loss(e1, e2, t1(&[1.0, 0.0]));
        let same = (1.0 + (-2f32).exp()).ln();
        let diff = (1.0 + 2f32.exp()).ln();
        close(scalar(out.loss), (same + diff) / 2.0);
        assert_eq!(vals(out.active), vec![0.0, 1.0]);
    }
}
