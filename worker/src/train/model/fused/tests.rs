//! The fused block against Burn's `Conv2d` → PReLU → `MaxPool2d` modules: outputs and every
//! gradient, on shapes of the real networks and on awkward ones.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{PRelu, PReluConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Distribution, Tensor};

use super::{conv_prelu_pool, conv_relu_pool};
use crate::train::model::nets::prelu;
use crate::train::model::test_util::assert_close;

type Ad = Autodiff<Flex>;

fn layer(c: usize, o: usize, k: [usize; 2], alpha: f32) -> (Conv2d<Ad>, PRelu<Ad>) {
    let d = Default::default();
    let mut conv = Conv2dConfig::new([c, o], k).init::<Ad>(&d);
    // A random, non-zero bias, so that its gradient and its place before the PReLU matter.
    conv.bias = Some(Param::from_tensor(Tensor::random(
        [o],
        Distribution::Uniform(-0.5, 0.5),
        &d,
    )));
    let act = PReluConfig::new().with_alpha(alpha as f64).init::<Ad>(&d);
    (conv, act)
}

fn reference(conv: &Conv2d<Ad>, act: &PRelu<Ad>, x: Tensor<Ad, 4>) -> Tensor<Ad, 4> {
    MaxPool2dConfig::new([2, 2])
        .init()
        .forward(prelu(act, conv.forward(x)))
}

/// Output and gradients (input when `input_grad`, weight, bias, slope) of the fused block
/// and of the module path, under a random weighting of the outputs.
fn check(
    name: &str,
    c: usize,
    o: usize,
    k: [usize; 2],
    shape: [usize; 4],
    alpha: f32,
    input_grad: bool,
) {
    let d = Default::default();
    let (conv, act) = layer(c, o, k, alpha);
    let x = Tensor::<Ad, 4>::random(shape, Distribution::Default, &d);
    let r = Tensor::<Ad, 4>::random(
        reference(&conv, &act, x.clone()).dims(),
        Distribution::Default,
        &d,
    );
    let run = |fused: bool| {
        let x = if input_grad {
            x.clone().require_grad()
        } else {
            x.clone()
        };
        let y = if fused {
            conv_prelu_pool(&conv, &act, &x).expect("Flex runs the block fused")
        } else {
            reference(&conv, &act, x.clone())
        };
        let grads = (y.clone() * r.clone()).sum().backward();
        (
            y.inner(),
            x.grad(&grads),
            conv.weight.grad(&grads).unwrap(),
            conv.bias.as_ref().unwrap().grad(&grads).unwrap(),
            act.alpha.grad(&grads).unwrap(),
        )
    };
    let (y, gx, gw, gb, ga) = run(true);
    let (y_ref, gx_ref, gw_ref, gb_ref, ga_ref) = run(false);
    assert_close(&format!("{name}: output"), y, y_ref);
    assert_eq!(gx.is_some(), input_grad, "{name}: input gradient presence");
    if let (Some(gx), Some(gx_ref)) = (gx, gx_ref) {
        assert_close(&format!("{name}: input grad"), gx, gx_ref);
    }
    assert_close(&format!("{name}: weight grad"), gw, gw_ref);
    assert_close(&format!("{name}: bias grad"), gb, gb_ref);
    assert_close(&format!("{name}: alpha grad"), ga, ga_ref);

    // Inference (no autodiff) gives the same output.
    let (convf, actf) = (conv.valid(), act.valid());
    let xf = x.inner();
    let fused = conv_prelu_pool(&convf, &actf, &xf).unwrap();
    let plain = MaxPool2dConfig::new([2, 2])
        .init()
        .forward(prelu(&actf, convf.forward(xf)));
    assert_close(&format!("{name}: inference output"), fused, plain);
}

#[test]
fn matches_modules_on_embedding_net_layers() {
    check(
        "conv1 1->32 5x5",
        1,
        32,
        [5, 5],
        [3, 1, 28, 28],
        0.25,
        false,
    );
    check(
        "conv2 32->64 5x5",
        32,
        64,
        [5, 5],
        [2, 32, 12, 12],
        0.25,
        true,
    );
    // AT&T faces: 92x112 input, non-square maps.
    check("faces conv1", 1, 32, [5, 5], [2, 1, 112, 92], 0.25, false);
}

#[test]
fn matches_modules_across_chunks() {
    // Batches of several chunks (36 and 10 images per chunk for these layers), the last one
    // partial: every chunk's share of the weight, bias and slope gradients must be summed.
    check(
        "conv1, 2 chunks",
        1,
        32,
        [5, 5],
        [40, 1, 28, 28],
        0.25,
        false,
    );
    check(
        "conv2, 3 chunks",
        32,
        64,
        [5, 5],
        [23, 32, 12, 12],
        0.25,
        true,
    );
}

#[test]
fn matches_modules_on_odd_sizes_and_slopes() {
    // Odd conv outputs (the pool drops the last row / column), non-square kernel.
    check("odd 3->5 3x2", 3, 5, [3, 2], [2, 3, 10, 9], 0.25, true);
    // A negative slope makes PReLU non-monotonic: the max must be taken after it.
    check("negative slope", 2, 4, [3, 3], [2, 2, 9, 9], -0.7, true);
    check("zero slope", 2, 4, [3, 3], [1, 2, 8, 8], 0.0, true);
    check("batch of one", 1, 3, [5, 5], [1, 1, 16, 16], 0.1, true);
}

#[test]
fn unsupported_layers_fall_back() {
    let d = Default::default();
    let x = Tensor::<Ad, 4>::random([1, 2, 9, 9], Distribution::Default, &d);
    let act = PReluConfig::new().init::<Ad>(&d);
    let strided = Conv2dConfig::new([2, 3], [3, 3])
        .with_stride([2, 2])
        .init::<Ad>(&d);
    assert!(conv_prelu_pool(&strided, &act, &x).is_none());
    let no_bias = Conv2dConfig::new([2, 3], [3, 3])
        .with_bias(false)
        .init::<Ad>(&d);
    assert!(conv_prelu_pool(&no_bias, &act, &x).is_none());
    let per_channel = PReluConfig::new().with_num_parameters(3).init::<Ad>(&d);
    let conv = Conv2dConfig::new([2, 3], [3, 3]).init::<Ad>(&d);
    assert!(conv_prelu_pool(&conv, &per_channel, &x).is_none());
    let big_kernel = Conv2dConfig::new([2, 3], [9, 9]).init::<Ad>(&d);
    assert!(conv_prelu_pool(&big_kernel, &act, &x).is_none());
}

/// Koch's conv → ReLU → pool through [`conv_relu_pool`] against `Conv2d` → `relu` →
/// `MaxPool2d`: output, input, weight and bias gradients, and the inference output.
fn check_relu(name: &str, c: usize, o: usize, k: usize, shape: [usize; 4]) {
    let d = Default::default();
    let (conv, _) = layer(c, o, [k, k], 0.0);
    let pool = MaxPool2dConfig::new([2, 2]).init();
    let reference = |conv: &Conv2d<Ad>, x: Tensor<Ad, 4>| pool.forward(relu(conv.forward(x)));
    let x = Tensor::<Ad, 4>::random(shape, Distribution::Default, &d);
    let r = Tensor::<Ad, 4>::random(
        reference(&conv, x.clone()).dims(),
        Distribution::Default,
        &d,
    );
    let run = |fused: bool| {
        let x = x.clone().require_grad();
        let y = if fused {
            conv_relu_pool(&conv, &x).expect("Flex runs the block fused")
        } else {
            reference(&conv, x.clone())
        };
        let grads = (y.clone() * r.clone()).sum().backward();
        (
            y.inner(),
            x.grad(&grads).unwrap(),
            conv.weight.grad(&grads).unwrap(),
            conv.bias.as_ref().unwrap().grad(&grads).unwrap(),
        )
    };
    let (y, gx, gw, gb) = run(true);
    let (y_ref, gx_ref, gw_ref, gb_ref) = run(false);
    assert_close(&format!("{name}: output"), y, y_ref);
    assert_close(&format!("{name}: input grad"), gx, gx_ref);
    assert_close(&format!("{name}: weight grad"), gw, gw_ref);
    assert_close(&format!("{name}: bias grad"), gb, gb_ref);
    let convf = conv.valid();
    let xf = x.inner();
    let fused = conv_relu_pool(&convf, &xf).unwrap();
    let plain = MaxPool2dConfig::new([2, 2])
        .init()
        .forward(relu(convf.forward(xf)));
    assert_close(&format!("{name}: inference output"), fused, plain);
}

#[test]
fn relu_block_matches_modules_on_koch_layers() {
    // AT&T faces as the worker loads them (56x46): kernels 5, 3, 2.
    check_relu("koch 56x46 conv1", 1, 64, 5, [3, 1, 56, 46]);
    check_relu("koch 56x46 conv2", 64, 128, 3, [2, 64, 26, 21]);
    check_relu("koch 56x46 conv3", 128, 128, 2, [2, 128, 12, 9]);
    // 105x105 inputs: kernels 10, 7, 4 (fewer channels, same spatial regime).
    check_relu("koch 105 conv1", 1, 8, 10, [2, 1, 105, 105]);
    check_relu("koch 105 conv2", 8, 16, 7, [2, 8, 48, 48]);
    check_relu("koch 105 conv3", 16, 16, 4, [2, 16, 21, 21]);
}
