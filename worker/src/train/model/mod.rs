//! The trained model: an embedding network (backbone) plus the parameters some losses add
//! (the `ce` classifier, the `bce` siamese head).

pub mod fused;
mod init;
pub mod nets;
pub mod ops;

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use proto::{Loss, Network};

use crate::train::loss::ce::{CeHead, CeHeadConfig};
use crate::train::loss::pair::{BceHead, BceHeadConfig};
use fused::FusedBlock;
pub use nets::{
    EmbeddingNet, EmbeddingNetConfig, KochSiamese, KochSiameseConfig, LenetHadsell,
    LenetHadsellConfig,
};

/// One of the embedding networks.
// One model exists per run, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone<B: Backend> {
    Embedding(EmbeddingNet<B>),
    Koch(KochSiamese<B>),
    Lenet(LenetHadsell<B>),
}

impl<B: FusedBlock> Backbone<B> {
    /// `[N, 1, H, W] -> [N, D]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            Backbone::Embedding(m) => m.forward(x),
            Backbone::Koch(m) => m.forward(x),
            Backbone::Lenet(m) => m.forward(x),
        }
    }
}

/// Backbone plus loss-specific heads (absent for losses that do not need them).
#[derive(Module, Debug)]
pub struct MetricNet<B: Backend> {
    pub backbone: Backbone<B>,
    pub(crate) ce_head: Option<CeHead<B>>,
    pub(crate) bce_head: Option<BceHead<B>>,
    /// L2-normalise the embedding (the `normalize` setting); a constant, not a parameter.
    pub(crate) normalize: bool,
}

/// What the model is built for.
#[derive(Debug, Clone, Copy)]
pub struct ModelShape {
    pub network: Network,
    pub loss: Loss,
    pub height: usize,
    pub width: usize,
    pub dim: usize,
    /// Classes the `ce` head tells apart: the training classes.
    pub n_classes: usize,
    /// L2-normalise embeddings (FaceNet), in training and evaluation alike.
    pub normalize: bool,
}

impl<B: FusedBlock> MetricNet<B> {
    /// The model of `shape`, its random weights drawn from `seed` alone (see `model/init.rs`): the same
    /// seed gives the same weights in any process, beside any other job, and the same backbone
    /// whatever the loss.
    pub fn new(shape: &ModelShape, seed: u64, device: &B::Device) -> Result<Self, String> {
        let (h, w, d) = (shape.height, shape.width, shape.dim);
        if d == 0 {
            return Err("embedding dimension must be at least 1".into());
        }
        let backbone = match shape.network {
            Network::EmbeddingNet => {
                Backbone::Embedding(EmbeddingNetConfig::new(h, w, d).init(device)?)
            }
            Network::KochSiamese => Backbone::Koch(KochSiameseConfig::new(h, w, d).init(device)?),
            Network::LenetHadsell => {
                Backbone::Lenet(LenetHadsellConfig::new(h, w, d).init(device)?)
            }
        };
        let net = MetricNet {
            backbone,
            ce_head: (shape.loss == Loss::Ce)
                .then(|| CeHeadConfig::new(d, shape.n_classes).init(device)),
            bce_head: (shape.loss == Loss::Bce).then(|| BceHeadConfig::new(d).init(device)),
            normalize: shape.normalize,
        };
        let mut net = init::seeded(net, "model", seed, device)?;
        net.bce_head = net.bce_head.map(BceHead::with_non_positive_weights);
        Ok(net)
    }

    /// The embedding that is trained, evaluated and plotted: the backbone's output, on the unit
    /// sphere when the run normalises. `[N, 1, H, W] -> [N, D]`
    pub fn embed(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let e = self.backbone.forward(x);
        if self.normalize { l2_normalize(e) } else { e }
    }
}

/// Added to the squared norm INSIDE the square root of [`l2_normalize`]: at a zero embedding the
/// gradient is then `1/√eps` (finite) instead of a division by zero, and the output 0.
const NORMALIZE_EPS: f64 = 1e-12;

/// Each row over `√(‖row‖² + eps)`. `[N, D] -> [N, D]`
pub(crate) fn l2_normalize<B: Backend>(e: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = e
        .clone()
        .powi_scalar(2)
        .sum_dim(1)
        .add_scalar(NORMALIZE_EPS)
        .sqrt(); // [N, 1]
    e / norm
}

#[cfg(test)]
mod normalize_tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Tensor, TensorData};

    type B = Autodiff<Flex>;

    #[test]
    fn normalised_rows_have_unit_norm_and_finite_gradients_at_zero() {
        let device = Default::default();
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(vec![3.0f32, 4.0, 0.0, 0.0, 0.0, 0.0], [3, 2]),
            &device,
        )
        .require_grad();
        let y = super::l2_normalize(x.clone());
        let v = y.clone().into_data().to_vec::<f32>().unwrap();
        assert!(
            (v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6,
            "{v:?}"
        );
        assert_eq!(&v[2..], &[0.0; 4], "a zero embedding stays zero");
        // A loss that pulls the zero rows somewhere: its gradient must be finite there.
        let target = Tensor::<B, 2>::from_data(
            TensorData::new(vec![0.0f32, 0.0, 1.0, 0.0, 0.0, 1.0], [3, 2]),
            &device,
        );
        let loss = (y - target).powi_scalar(2).sum();
        let grads = loss.backward();
        let g = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        assert!(
            g[2..].iter().any(|v| *v != 0.0),
            "the zero rows get a gradient: {g:?}"
        );
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use burn::backend::Flex;
    use burn::tensor::Tensor;

    /// `a` equals `b` within 1e-4 relative to the largest magnitude in `b` (the fast paths sum
    /// in another order than Burn's modules).
    #[track_caller]
    pub fn assert_close_values(what: &str, a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{what}: lengths differ");
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            err <= 1e-4 * scale,
            "{what}: max error {err} (scale {scale})"
        );
    }

    #[track_caller]
    pub fn assert_close<const D: usize>(what: &str, a: Tensor<Flex, D>, b: Tensor<Flex, D>) {
        assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
        let a = a.into_data().to_vec::<f32>().unwrap();
        let b = b.into_data().to_vec::<f32>().unwrap();
        assert_close_values(what, &a, &b);
    }
}
