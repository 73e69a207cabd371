//! `embedding-net`'s conv → PReLU → 2×2 max-pool block (and `koch-siamese`'s conv → ReLU → 2×2
//! max-pool, the same block with a zero slope) as one fused op with its own backward.
//!
//! Why: on Burn's Flex backend the module-by-module block spends most of a training step
//! outside the arithmetic. The generic conv backward runs the input gradient through
//! `conv_transpose2d` (a scalar loop) and the weight gradient as a convolution shaped like no
//! convolution anyone tunes for, and each of bias, PReLU and pooling is a full pass (forward,
//! then backward) over the largest activations in the net. The fused op does the block as
//! three GEMMs plus one pass each way; see `flex.rs`.
//!
//! Backends opt in through [`FusedBlock`]. Flex does; others (CUDA) keep Burn's modules, so
//! their numbers do not change. `Autodiff<B>` runs the fused forward of `B` and registers the
//! fused backward, computing only the gradients its parents need (no input gradient for the
//! first layer). Results equal the module path up to floating-point summation order; the
//! tests below compare outputs and every gradient.

mod flex;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::conv::Conv2d;
use burn::nn::{PRelu, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// What the fused backward needs from the forward.
pub struct BlockState<B: Backend> {
    /// The input `[N, C, H, W]` (the weight gradient needs its im2col matrix, rebuilt chunk by
    /// chunk where it is used rather than kept whole).
    pub x: FloatTensor<B>,
    /// Pre-activation at each pooling window's maximum, `[N, O, Hp, Wp]`.
    pub zmax: FloatTensor<B>,
    /// Position of the maximum within its 2×2 window (0..4, row-major), `[N, O, Hp, Wp]`; a
    /// backend may store it in another element type than its floats (Flex: u8).
    pub arg: FloatTensor<B>,
}

impl<B: Backend> Clone for BlockState<B> {
    fn clone(&self) -> Self {
        BlockState {
            x: self.x.clone(),
            zmax: self.zmax.clone(),
            arg: self.arg.clone(),
        }
    }
}

impl<B: Backend> std::fmt::Debug for BlockState<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockState").finish_non_exhaustive()
    }
}

/// Gradients of the block's four inputs, each present when asked for.
pub struct BlockGrads<B: Backend> {
    pub x: Option<FloatTensor<B>>,
    pub weight: Option<FloatTensor<B>>,
    pub bias: Option<FloatTensor<B>>,
    pub alpha: Option<FloatTensor<B>>,
}

/// A backend that may run the block fused. Inputs: `x [N, C, H, W]`, `weight [O, C, kh, kw]`
/// (stride 1, no padding), `bias [O]`, PReLU slope `alpha [1]`; output `[N, O, Hp, Wp]` with
/// `Hp = (H − kh + 1) / 2`, `Wp = (W − kw + 1) / 2`.
///
/// The methods are called only when [`FusedBlock::FUSED_BLOCK`] is true; the defaults of a
/// backend without a fused kernel say so and stop.
pub trait FusedBlock: Backend {
    const FUSED_BLOCK: bool = false;

    /// Forward only (inference, or a tensor that needs no gradient).
    fn conv_prelu_pool(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let _ = (x, weight, bias, alpha);
        unimplemented!("this backend has no fused conv block (FUSED_BLOCK is false)")
    }

    /// Forward plus what [`FusedBlock::conv_prelu_pool_backward`] needs.
    fn conv_prelu_pool_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, BlockState<Self>) {
        let _ = (x, weight, bias, alpha);
        unimplemented!("this backend has no fused conv block (FUSED_BLOCK is false)")
    }

    /// Gradients of `x`, `weight`, `bias`, `alpha` (in that order in `wants`) from the output's.
    fn conv_prelu_pool_backward(
        weight: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
        state: BlockState<Self>,
        grad: FloatTensor<Self>,
        wants: [bool; 4],
    ) -> BlockGrads<Self> {
        let _ = (weight, alpha, state, grad, wants);
        unimplemented!("this backend has no fused conv block (FUSED_BLOCK is false)")
    }
}

#[cfg(feature = "cuda")]
impl FusedBlock for burn::backend::Cuda {}

#[derive(Debug)]
struct BlockBackward;

impl<B: FusedBlock> Backward<B, 4> for BlockBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, BlockState<B>);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (weight, alpha, state) = ops.state;
        let wants = ops.parents.each_ref().map(Option::is_some);
        let g = B::conv_prelu_pool_backward(weight, alpha, state, grad, wants);
        for (parent, grad) in ops
            .parents
            .into_iter()
            .zip([g.x, g.weight, g.bias, g.alpha])
        {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: FusedBlock, C: CheckpointStrategy> FusedBlock for Autodiff<B, C> {
    const FUSED_BLOCK: bool = B::FUSED_BLOCK;

    fn conv_prelu_pool(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [&x, &weight, &bias, &alpha].map(|t| t.node.clone());
        let prep = <BlockBackward as Backward<B, 4>>::prepare::<C>(BlockBackward, nodes);
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, state) = B::conv_prelu_pool_train(
                    x.primitive,
                    weight.primitive.clone(),
                    bias.primitive,
                    alpha.primitive.clone(),
                );
                prep.finish((weight.primitive, alpha.primitive, state), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv_prelu_pool(
                x.primitive,
                weight.primitive,
                bias.primitive,
                alpha.primitive,
            )),
        }
    }
}

fn float<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// `pool(prelu(conv(x)))` for a 2×2, stride-2 max pool, fused when the backend and the layer
/// allow it (stride 1, dilation 1, one group, no padding, a bias, one shared slope, an input
/// large enough); otherwise `None`, and the caller runs Burn's modules.
pub fn conv_prelu_pool<B: FusedBlock>(
    conv: &Conv2d<B>,
    act: &PRelu<B>,
    x: &Tensor<B, 4>,
) -> Option<Tensor<B, 4>> {
    if act.alpha.dims() != [1] {
        return None;
    }
    fused_block(conv, act.alpha.val(), x)
}

/// `pool(relu(conv(x)))` (`koch-siamese`'s conv–ReLU–pool blocks): the fused block with a
/// constant zero slope, which needs no gradient, so the backward computes none for it. `None`
/// under the same conditions as [`conv_prelu_pool`].
pub fn conv_relu_pool<B: FusedBlock>(conv: &Conv2d<B>, x: &Tensor<B, 4>) -> Option<Tensor<B, 4>> {
    fused_block(conv, Tensor::zeros([1], &x.device()), x)
}

fn fused_block<B: FusedBlock>(
    conv: &Conv2d<B>,
    alpha: Tensor<B, 1>,
    x: &Tensor<B, 4>,
) -> Option<Tensor<B, 4>> {
    let [_, c, h, w] = x.dims();
    let [_, wc, kh, kw] = conv.weight.dims();
    let fits = B::FUSED_BLOCK
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && matches!(conv.padding, PaddingConfig2d::Valid)
        && wc == c
        && h > kh
        && w > kw;
    let bias = conv.bias.as_ref().filter(|_| fits)?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(
        B::conv_prelu_pool(
            float(x.clone()),
            float(conv.weight.val()),
            float(bias.val()),
            float(alpha),
        ),
    )))
}

#[cfg(test)]
mod tests;
