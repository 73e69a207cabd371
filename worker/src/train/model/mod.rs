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
}

/// What the model is built for.
#[derive(Debug, Clone, Copy)]
pub struct ModelShape {
    pub network: Network,
    pub loss: Loss,
    pub height: usize,
    pub width: usize,
    pub dim: usize,
    pub n_classes: usize,
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
        };
        let mut net = init::seeded(net, "model", seed, device)?;
        net.bce_head = net.bce_head.map(BceHead::with_non_positive_weights);
        Ok(net)
    }

    /// The embedding that is evaluated and plotted. `[N, 1, H, W] -> [N, D]`
    pub fn embed(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.backbone.forward(x)
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
