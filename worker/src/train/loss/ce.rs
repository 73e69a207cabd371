//! `ce` loss: PReLU + linear classifier on top of the embedding, softmax cross-entropy.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, PRelu, PReluConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::LossOutput;

#[derive(Config, Debug)]
pub(crate) struct CeHeadConfig {
    pub(crate) dim: usize,
    pub(crate) n_classes: usize,
}

/// Classifier head: embedding `[N, D]` → PReLU → linear → logits `[N, C]`.
#[derive(Module, Debug)]
pub(crate) struct CeHead<B: Backend> {
    act: PRelu<B>,
    classifier: Linear<B>,
}

impl CeHeadConfig {
    pub(crate) fn init<B: Backend>(&self, device: &B::Device) -> CeHead<B> {
        CeHead {
            act: PReluConfig::new().init(device),
            classifier: LinearConfig::new(self.dim, self.n_classes).init(device),
        }
    }
}

impl<B: Backend> CeHead<B> {
    pub(crate) fn forward(&self, emb: Tensor<B, 2>) -> Tensor<B, 2> {
        self.classifier
            .forward(crate::train::model::nets::prelu(&self.act, emb)) // [N, C]
    }
}

/// Mean softmax cross-entropy of `logits` `[N, C]` against `targets` `[N]`; active =
/// misclassified (arg-max ≠ target).
pub(crate) fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> LossOutput<B> {
    let n = targets.dims()[0];
    let targets = targets.reshape([n, 1]); // [N, 1]
    let logp = log_softmax(logits.clone(), 1); // [N, C]
    let picked = logp.gather(1, targets.clone()); // [N, 1]
    let loss = picked.mean().neg();
    let predicted = logits.detach().argmax(1); // [N, 1]
    let active = predicted.not_equal(targets).float().reshape([n]);
    LossOutput::all_eligible(loss, active)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn matches_hand_computed_values() {
        // logits [0, ln 3]: softmax = [1/4, 3/4].
        let logits = t2(&[&[0.0, 3f32.ln()], &[0.0, 3f32.ln()]]);
        let targets =
            Tensor::<Ad, 1, Int>::from_data(TensorData::from([1i32, 0]), &Default::default());
        let out = cross_entropy(logits, targets);
        close(scalar(out.loss), (-(0.75f32).ln() + 4f32.ln()) / 2.0);
        assert_eq!(vals(out.active), vec![0.0, 1.0]);
    }
}
