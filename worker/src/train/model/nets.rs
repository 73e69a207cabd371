//! The three embedding networks, each sized from the data set's image height and width.
//!
//! All take `[N, 1, H, W]` normalised grey images and return `[N, D]` embeddings.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PRelu, PReluConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::backend::Backend;

use super::fused::{FusedBlock, conv_prelu_pool, conv_relu_pool};
use super::ops::conv2d_then;

/// PReLU with one shared slope: `max(x, 0) + alpha · min(x, 0)`.
///
/// Same maths as `burn::nn::PRelu::forward` (whose parameters it uses), but Flex's fused
/// prelu walks the broadcast slope with a scalar strided iterator; clamp + scalar-broadcast
/// multiply hit its SIMD paths and made evaluation ~2× faster.
pub fn prelu<B: Backend, const D: usize>(act: &PRelu<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let alpha = act.alpha.val().reshape([1; D]); // [1, .., 1]
    x.clone().clamp_min(0.0) + x.clamp_max(0.0) * alpha
}

/// Spatial size after a valid convolution with kernel `k` (None if it does not fit).
fn conv_out(size: usize, k: usize) -> Option<usize> {
    size.checked_sub(k).map(|s| s + 1).filter(|&s| s > 0)
}

fn too_small(net: &str, h: usize, w: usize) -> String {
    format!("{net}: input {h}x{w} is too small for this network")
}

/// `embedding-net`: conv 32 5×5, PReLU, maxpool 2; conv 64 5×5, PReLU, maxpool 2;
/// fc 256, PReLU; fc 256, PReLU; fc D. Needs inputs of at least 16×16.
#[derive(Config, Debug)]
pub struct EmbeddingNetConfig {
    pub height: usize,
    pub width: usize,
    pub dim: usize,
}

#[derive(Module, Debug)]
pub struct EmbeddingNet<B: Backend> {
    conv1: Conv2d<B>,
    act1: PRelu<B>,
    conv2: Conv2d<B>,
    act2: PRelu<B>,
    pool: MaxPool2d,
    fc1: Linear<B>,
    act3: PRelu<B>,
    fc2: Linear<B>,
    act4: PRelu<B>,
    fc3: Linear<B>,
}

impl EmbeddingNetConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<EmbeddingNet<B>, String> {
        let side = |s: usize| {
            conv_out(s, 5)
                .map(|s| s / 2)
                .and_then(|s| conv_out(s, 5))
                .map(|s| s / 2)
                .filter(|&s| s > 0)
        };
        let (h, w) = side(self.height)
            .zip(side(self.width))
            .ok_or_else(|| too_small("embedding-net", self.height, self.width))?;
        Ok(EmbeddingNet {
            conv1: Conv2dConfig::new([1, 32], [5, 5]).init(device),
            act1: PReluConfig::new().init(device),
            conv2: Conv2dConfig::new([32, 64], [5, 5]).init(device),
            act2: PReluConfig::new().init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(64 * h * w, 256).init(device),
            act3: PReluConfig::new().init(device),
            fc2: LinearConfig::new(256, 256).init(device),
            act4: PReluConfig::new().init(device),
            fc3: LinearConfig::new(256, self.dim).init(device),
        })
    }
}

impl<B: FusedBlock> EmbeddingNet<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let block = |conv: &Conv2d<B>, act: &PRelu<B>, x: Tensor<B, 4>| {
            conv_prelu_pool(conv, act, &x)
                .unwrap_or_else(|| self.pool.forward(prelu(act, conv.forward(x))))
        };
        let x = block(&self.conv1, &self.act1, x); // [N, 32, h1, w1]
        let x = block(&self.conv2, &self.act2, x); // [N, 64, h2, w2]
        let x = x.flatten::<2>(1, 3); // [N, 64*h2*w2]
        let x = prelu(&self.act3, self.fc1.forward(x)); // [N, 256]
        let x = prelu(&self.act4, self.fc2.forward(x)); // [N, 256]
        self.fc3.forward(x) // [N, D]
    }

    /// [`Self::forward`] computed with Burn's `Conv2d` / `MaxPool2d` modules only (the
    /// reference the fused path is tested and benchmarked against).
    pub fn forward_reference(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.pool.forward(prelu(&self.act1, self.conv1.forward(x))); // [N, 32, h1, w1]
        let x = self.pool.forward(prelu(&self.act2, self.conv2.forward(x))); // [N, 64, h2, w2]
        let x = x.flatten::<2>(1, 3); // [N, 64*h2*w2]
        let x = prelu(&self.act3, self.fc1.forward(x)); // [N, 256]
        let x = prelu(&self.act4, self.fc2.forward(x)); // [N, 256]
        self.fc3.forward(x) // [N, D]
    }
}

/// `koch-siamese`: the convolutional tower of Koch, Zemel & Salakhutdinov (2015), scaled to
/// the input. Channels 64, 128, 128, 256 as in the paper; conv–ReLU–maxpool 2 blocks for the
/// first three convolutions, conv–ReLU for the fourth, then a sigmoid fully-connected layer.
/// Kernels are 10, 7, 4, 4 (the paper's, for 105×105 Omniglot) when both sides are ≥ 96 px,
/// else 5, 3, 2, 2 (28×28 → 1×1×256, 56×46 → 4×3×256). The paper's 4096-unit sigmoid layer
/// *is* the embedding, so here the sigmoid fc has D units (embeddings lie in (0, 1)^D).
#[derive(Config, Debug)]
pub struct KochSiameseConfig {
    pub height: usize,
    pub width: usize,
    pub dim: usize,
}

#[derive(Module, Debug)]
pub struct KochSiamese<B: Backend> {
    convs: Vec<Conv2d<B>>,
    pool: MaxPool2d,
    fc: Linear<B>,
}

impl KochSiameseConfig {
    /// Kernel sizes used for this input size.
    pub fn kernels(&self) -> [usize; 4] {
        if self.height.min(self.width) >= 96 {
            [10, 7, 4, 4]
        } else {
            [5, 3, 2, 2]
        }
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<KochSiamese<B>, String> {
        let kernels = self.kernels();
        let side = |mut s: usize| {
            for (i, &k) in kernels.iter().enumerate() {
                s = conv_out(s, k)?;
                if i < 3 {
                    s /= 2;
                }
            }
            (s > 0).then_some(s)
        };
        let (h, w) = side(self.height)
            .zip(side(self.width))
            .ok_or_else(|| too_small("koch-siamese", self.height, self.width))?;
        let channels = [1, 64, 128, 128, 256];
        let convs = kernels
            .iter()
            .enumerate()
            .map(|(i, &k)| Conv2dConfig::new([channels[i], channels[i + 1]], [k, k]).init(device))
            .collect();
        Ok(KochSiamese {
            convs,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc: LinearConfig::new(256 * h * w, self.dim).init(device),
        })
    }
}

impl<B: FusedBlock> KochSiamese<B> {
    pub fn forward(&self, mut x: Tensor<B, 4>) -> Tensor<B, 2> {
        for (i, conv) in self.convs.iter().enumerate() {
            if i < 3
                && let Some(y) = conv_relu_pool(conv, &x)
            {
                x = y;
                continue;
            }
            x = conv2d_then(conv, x, |x| {
                let x = relu(x);
                if i < 3 { self.pool.forward(x) } else { x }
            });
        } // [N, 256, h, w]
        sigmoid(self.fc.forward(x.flatten::<2>(1, 3))) // [N, D]
    }
}

/// `lenet-hadsell`: the network of Hadsell, Chopra & LeCun (2006, DrLIM): images are
/// zero-padded by 2 (28×28 → 32×32 as in LeNet), conv 15 6×6, ReLU, average pool 3×3,
/// conv 30 9×9 (smaller if the map is smaller), ReLU, fully connected to D.
#[derive(Config, Debug)]
pub struct LenetHadsellConfig {
    pub height: usize,
    pub width: usize,
    pub dim: usize,
}

#[derive(Module, Debug)]
pub struct LenetHadsell<B: Backend> {
    conv1: Conv2d<B>,
    pool: AvgPool2d,
    conv2: Conv2d<B>,
    fc: Linear<B>,
}

impl LenetHadsellConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<LenetHadsell<B>, String> {
        let err = || too_small("lenet-hadsell", self.height, self.width);
        let pooled = |s: usize| conv_out(s + 4, 6).map(|s| s / 3).filter(|&s| s > 0);
        let (ph, pw) = pooled(self.height)
            .zip(pooled(self.width))
            .ok_or_else(err)?;
        let k = 9.min(ph).min(pw);
        let (h, w) = conv_out(ph, k).zip(conv_out(pw, k)).ok_or_else(err)?;
        Ok(LenetHadsell {
            conv1: Conv2dConfig::new([1, 15], [6, 6])
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
                .init(device),
            pool: AvgPool2dConfig::new([3, 3]).init(),
            conv2: Conv2dConfig::new([15, 30], [k, k]).init(device),
            fc: LinearConfig::new(30 * h * w, self.dim).init(device),
        })
    }
}

impl<B: Backend> LenetHadsell<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = conv2d_then(&self.conv1, x, |x| self.pool.forward(relu(x))); // [N, 15, h1, w1]
        let x = conv2d_then(&self.conv2, x, relu); // [N, 30, h2, w2]
        self.fc.forward(x.flatten::<2>(1, 3)) // [N, D]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    #[test]
    fn every_network_embeds_both_input_sizes() {
        let d = Default::default();
        for (h, w) in [(28, 28), (56, 46), (105, 105)] {
            let x = Tensor::<Flex, 4>::random([2, 1, h, w], Distribution::Default, &d);
            let e = EmbeddingNetConfig::new(h, w, 3).init::<Flex>(&d).unwrap();
            assert_eq!(e.forward(x.clone()).dims(), [2, 3]);
            let k = KochSiameseConfig::new(h, w, 3).init::<Flex>(&d).unwrap();
            let out = k.forward(x.clone());
            assert_eq!(out.dims(), [2, 3]);
            let v = out.into_data().to_vec::<f32>().unwrap();
            assert!(
                v.iter().all(|&s| s > 0.0 && s < 1.0),
                "sigmoid embedding {v:?}"
            );
            let l = LenetHadsellConfig::new(h, w, 3).init::<Flex>(&d).unwrap();
            assert_eq!(l.forward(x).dims(), [2, 3]);
        }
        assert_eq!(KochSiameseConfig::new(105, 105, 2).kernels(), [10, 7, 4, 4]);
        assert!(EmbeddingNetConfig::new(8, 8, 2).init::<Flex>(&d).is_err());
    }

    /// The fast forward (GEMM first convolution) gives the outputs and parameter gradients of
    /// the plain Burn-module forward.
    #[test]
    fn embedding_net_fast_forward_matches_burn_modules() {
        use burn::backend::Autodiff;
        use burn::module::Param;

        use crate::train::model::test_util::assert_close_values;
        type Ad = Autodiff<Flex>;
        let d = Default::default();
        let close = |what: &str, a: Vec<f32>, b: Vec<f32>| assert_close_values(what, &a, &b);
        for (h, w) in [(28, 28), (56, 46)] {
            let mut net = EmbeddingNetConfig::new(h, w, 3).init::<Ad>(&d).unwrap();
            // Non-zero biases, so that the bias gradients and additions are exercised.
            net.conv1.bias = Some(Param::from_tensor(Tensor::random(
                [32],
                Distribution::Default,
                &d,
            )));
            let x = Tensor::<Ad, 4>::random([5, 1, h, w], Distribution::Default, &d);
            let r = Tensor::<Ad, 2>::random([5, 3], Distribution::Default, &d);
            let run = |fast: bool| {
                let y = if fast {
                    net.forward(x.clone())
                } else {
                    net.forward_reference(x.clone())
                };
                let g = (y.clone() * r.clone()).sum().backward();
                let v =
                    |t: Option<Tensor<Flex, 4>>| t.unwrap().into_data().to_vec::<f32>().unwrap();
                let b =
                    |t: Option<Tensor<Flex, 1>>| t.unwrap().into_data().to_vec::<f32>().unwrap();
                (
                    y.inner().into_data().to_vec::<f32>().unwrap(),
                    v(net.conv1.weight.grad(&g)),
                    b(net.conv1.bias.as_ref().unwrap().grad(&g)),
                    b(net.act1.alpha.grad(&g)),
                    v(net.conv2.weight.grad(&g)),
                )
            };
            let (fast, slow) = (run(true), run(false));
            close("output", fast.0, slow.0);
            close("conv1 weight grad", fast.1, slow.1);
            close("conv1 bias grad", fast.2, slow.2);
            close("prelu1 alpha grad", fast.3, slow.3);
            close("conv2 weight grad", fast.4, slow.4);
        }
    }
}
