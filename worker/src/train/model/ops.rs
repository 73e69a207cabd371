//! Convolution built from plain tensor ops (slice, cat, matmul).
//!
//! Burn's Flex CPU backend runs `conv2d` and its backward pass well below its matmul speed for
//! single-channel inputs (28×28 images, 1 → 32 channels: ~3 GFLOP/s forward, and a backward
//! pass that handles one image at a time). The functions here express the same maths as one
//! large GEMM per convolution (im2col over the whole batch), so autodiff differentiates it with
//! its generic rules and no custom backward is needed. Results equal `Conv2d::forward` up to
//! floating-point summation order; the parameters stay in `Conv2d` (same record).
//!
//! The GEMM runs on a channel-major `[C, N, H, W]` layout: there the im2col matrix is a
//! concatenation of 2-D strided slices (fast to copy and to differentiate on Flex) and the
//! product `[O, K] × [K, N·Ho·Wo]` comes out as `[O, N, Ho, Wo]`. Networks use it through
//! [`conv2d_then`], which only takes this path for single-channel inputs: for the 32 → 64
//! layer of `embedding-net`, Burn's `Conv2d` was faster (forward+backward, batch 128: ~118 ms
//! against ~157 ms), because autodiff's im2col backward (zeros + slice_assign + add per shift)
//! costs more than Flex's conv_transpose.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Whether [`conv2d_gemm_cnhw`] handles this layer itself (stride 1, dilation 1, one group, valid or
/// explicit padding); other layers fall back to `Conv2d::forward`.
pub fn gemm_supported<B: Backend>(conv: &Conv2d<B>) -> bool {
    conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && matches!(
            conv.padding,
            PaddingConfig2d::Valid | PaddingConfig2d::Explicit(..)
        )
}

/// `conv` applied to a channel-major input: `[C, N, H, W] -> [O, N, Ho, Wo]`.
///
/// Builds the im2col matrix `[kh·kw·C, N·Ho·Wo]` from the `kh·kw` shifted views of the input
/// and multiplies it by the weight reshaped to `[O, kh·kw·C]`. Panics if `conv` is not
/// [`gemm_supported`].
pub fn conv2d_gemm_cnhw<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let (cols, weight, [n, ho, wo]) = gemm_operands(conv, x);
    let [o, _] = weight.dims();
    let mut y = weight.matmul(cols); // [O, N·Ho·Wo]
    if let Some(bias) = &conv.bias {
        y = y + bias.val().reshape([o, 1]);
    }
    y.reshape([o, n, ho, wo])
}

/// Pads a channel-major input `[C, N, H, W]` as `conv` asks and builds the two operands of its
/// GEMM: the im2col matrix `[kh·kw·C, N·Ho·Wo]` (row `(i·kw + j)·C + c`) and the weight as
/// `[O, kh·kw·C]` (same column order); also returns `[N, Ho, Wo]`.
fn gemm_operands<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
) -> (Tensor<B, 2>, Tensor<B, 2>, [usize; 3]) {
    assert!(
        gemm_supported(conv),
        "conv2d_gemm_cnhw: unsupported convolution"
    );
    let x = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) if top + left + bottom + right > 0 => {
            x.pad([(top, bottom), (left, right)], 0.0)
        }
        _ => x,
    };
    let [c, n, h, w] = x.dims();
    let weight = conv.weight.val();
    let [o, wc, kh, kw] = weight.dims();
    assert_eq!(
        wc, c,
        "conv2d_gemm_cnhw: input has {c} channels, weight expects {wc}"
    );
    assert!(
        h >= kh && w >= kw,
        "conv2d_gemm_cnhw: input {h}x{w} smaller than kernel"
    );
    let cols = im2col_cnhw(x, kh, kw);
    let weight = weight.permute([0, 2, 3, 1]).reshape([o, kh * kw * c]);
    (cols, weight, [n, h - kh + 1, w - kw + 1])
}

/// The im2col matrix of a contiguous channel-major input `[C, N, H, W]` for a `kh×kw` valid
/// convolution: `[kh·kw·C, N·Ho·Wo]`, row `(i·kw + j)·C + c`, column `(n·Ho + y)·Wo + x`
/// holding `input[c, n, y + i, x + j]`.
///
/// Built in two passes so that every slice is a 2-D strided view (which Flex copies at
/// memcpy speed and whose backward is a 2-D `slice_assign`): first the `kw` column shifts
/// of `[C·N·H, W]`, then the `kh` row shifts of the result seen as `[kw·C·N, H·Wo]`.
pub fn im2col_cnhw<B: Backend>(x: Tensor<B, 4>, kh: usize, kw: usize) -> Tensor<B, 2> {
    let [c, n, h, w] = x.dims();
    let (ho, wo) = (h - kh + 1, w - kw + 1);
    let rows = c * n * h;
    let x = x.reshape([rows, w]);
    let cols = if kw == 1 {
        x
    } else {
        let shifted = (0..kw)
            .map(|j| x.clone().slice([0..rows, j..j + wo]))
            .collect();
        Tensor::cat(shifted, 0) // [kw·C·N·H, Wo]
    };
    let planes = kw * c * n;
    let cols = cols.reshape([planes, h * wo]);
    let cols = if kh == 1 {
        cols
    } else {
        let shifted = (0..kh)
            .map(|i| cols.clone().slice([0..planes, i * wo..(i + ho) * wo]))
            .collect();
        Tensor::cat(shifted, 0) // [kh·kw·C·N, Ho·Wo]
    };
    cols.reshape([kh * kw * c, n * ho * wo])
}

/// Drop-in replacement for `conv.forward(x)`: `[N, C, H, W] -> [N, O, Ho, Wo]`, contiguous.
///
/// Largest im2col matrix (in elements, 64 MiB of f32) [`conv2d_then`] builds; bigger layers
/// (e.g. 10×10 kernels on 105×105 images) use `Conv2d::forward`, which tiles it.
pub const IM2COL_MAX_ELEMENTS: usize = 1 << 24;

/// `then(conv.forward(x))` for an NCHW input `x`, where `then` must treat the first two
/// dimensions alike (element-wise activations, pooling): `[N, C, H, W] -> then([N, O, Ho, Wo])`.
///
/// Single-channel inputs (the first layer of every network here) run channel-major through
/// [`conv2d_gemm_cnhw`], with `then` applied before the result is transposed back, so the
/// transpose touches the smaller pooled map. Measured on Flex this is 2–3× faster than
/// `Conv2d` forward+backward for the first layer; with more input channels `Conv2d` won (the
/// im2col backward costs more than it saves), so those layers use it.
pub fn conv2d_then<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    then: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let [_, _, kh, kw] = conv.weight.dims();
    let (ph, pw) = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => (top + bottom, left + right),
        _ => (0, 0),
    };
    let fits = h + ph >= kh
        && w + pw >= kw
        && kh * kw * n * (h + ph - kh + 1) * (w + pw - kw + 1) <= IM2COL_MAX_ELEMENTS;
    if gemm_supported(conv) && (ph, pw) == (0, 0) && (h, w) == (kh, kw) {
        // A kernel as large as the input (`lenet-hadsell`'s second convolution, 9×9 on 9×9)
        // is a fully connected layer: one GEMM over the flattened images, where Burn's conv
        // backward would run its generic transposed convolution.
        let [o, ..] = conv.weight.dims();
        let weight = conv.weight.val().reshape([o, c * kh * kw]); // [O, C·kh·kw]
        let mut y = x.reshape([n, c * kh * kw]).matmul(weight.transpose()); // [N, O]
        if let Some(bias) = &conv.bias {
            y = y + bias.val().reshape([1, o]);
        }
        return then(y.reshape([n, o, 1, 1]));
    }
    if c == 1 && gemm_supported(conv) && fits {
        then(conv2d_gemm_cnhw(conv, x.swap_dims(0, 1))).swap_dims(0, 1)
    } else {
        then(conv.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Param;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    use crate::train::model::test_util::assert_close;

    type Ad = Autodiff<Flex>;

    /// Random conv with a random (non-zero) bias.
    fn conv(config: Conv2dConfig) -> Conv2d<Ad> {
        let d = Default::default();
        let mut conv = config.init::<Ad>(&d);
        let [o, ..] = conv.weight.dims();
        conv.bias = Some(Param::from_tensor(Tensor::random(
            [o],
            Distribution::Default,
            &d,
        )));
        conv
    }

    /// Forward output and input/weight/bias gradients of `ours` equal those of
    /// `Conv2d::forward` on a random NCHW input of `shape`.
    fn check(
        name: &str,
        conv: &Conv2d<Ad>,
        shape: [usize; 4],
        ours: impl Fn(&Conv2d<Ad>, Tensor<Ad, 4>) -> Tensor<Ad, 4>,
    ) {
        let d = Default::default();
        let x = Tensor::<Ad, 4>::random(shape, Distribution::Default, &d);
        // A random weighting of the outputs, so that every output element has its own gradient.
        let r = Tensor::<Ad, 4>::random(conv.forward(x.clone()).dims(), Distribution::Default, &d);
        let run = |f: &dyn Fn(Tensor<Ad, 4>) -> Tensor<Ad, 4>| {
            let x = x.clone().require_grad();
            let y = f(x.clone());
            let grads = (y.clone() * r.clone()).sum().backward();
            (
                y.inner(),
                x.grad(&grads).unwrap(),
                conv.weight.grad(&grads).unwrap(),
                conv.bias.as_ref().unwrap().grad(&grads).unwrap(),
            )
        };
        let (y, gx, gw, gb) = run(&|x| ours(conv, x));
        let (y_ref, gx_ref, gw_ref, gb_ref) = run(&|x| conv.forward(x));
        assert_close(&format!("{name}: output"), y, y_ref);
        assert_close(&format!("{name}: input grad"), gx, gx_ref);
        assert_close(&format!("{name}: weight grad"), gw, gw_ref);
        assert_close(&format!("{name}: bias grad"), gb, gb_ref);
    }

    fn cnhw(conv: &Conv2d<Ad>, x: Tensor<Ad, 4>) -> Tensor<Ad, 4> {
        conv2d_gemm_cnhw(conv, x.swap_dims(0, 1)).swap_dims(0, 1)
    }

    #[test]
    fn gemm_conv_matches_burn_conv2d() {
        let cases = [
            // embedding-net's two layers (small batch)
            (
                "1->32 5x5",
                Conv2dConfig::new([1, 32], [5, 5]),
                [4, 1, 28, 28],
            ),
            (
                "32->64 5x5",
                Conv2dConfig::new([32, 64], [5, 5]),
                [3, 32, 12, 12],
            ),
            ("3->5 3x2", Conv2dConfig::new([3, 5], [3, 2]), [2, 3, 7, 9]),
            ("2->4 1x1", Conv2dConfig::new([2, 4], [1, 1]), [2, 2, 5, 6]),
            (
                "1->15 6x6 padded",
                Conv2dConfig::new([1, 15], [6, 6])
                    .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2)),
                [2, 1, 28, 28],
            ),
            (
                "2->3 3x3 asymmetric padding",
                Conv2dConfig::new([2, 3], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 0, 2, 1)),
                [2, 2, 6, 5],
            ),
        ];
        for (name, config, shape) in cases {
            let conv = conv(config);
            assert!(gemm_supported(&conv), "{name}");
            check(&format!("{name} cnhw"), &conv, shape, cnhw);
        }
    }

    #[test]
    fn kernel_as_large_as_the_input_is_one_gemm() {
        // lenet-hadsell's second convolution on Fashion-MNIST, and a non-square one.
        for (name, config, shape) in [
            (
                "15->30 9x9",
                Conv2dConfig::new([15, 30], [9, 9]),
                [4, 15, 9, 9],
            ),
            ("3->5 4x3", Conv2dConfig::new([3, 5], [4, 3]), [2, 3, 4, 3]),
        ] {
            check(name, &conv(config), shape, |c, x| conv2d_then(c, x, |y| y));
        }
    }

    #[test]
    fn unsupported_convs_fall_back_to_burn() {
        let conv = conv(Conv2dConfig::new([2, 3], [3, 3]).with_stride([2, 2]));
        assert!(!gemm_supported(&conv));
        check("stride 2", &conv, [2, 2, 9, 9], |c, x| {
            conv2d_then(c, x, |y| y)
        });
    }

    #[test]
    fn im2col_layout() {
        let d = Default::default();
        // x[c, n, y, x] = 1000 c + 100 n + 10 y + x
        let (c, n, h, w) = (2, 2, 4, 5);
        let data: Vec<f32> = (0..c * n * h * w)
            .map(|i| {
                let (xx, r) = (i % w, i / w);
                let (yy, r) = (r % h, r / h);
                let (nn, cc) = (r % n, r / n);
                (1000 * cc + 100 * nn + 10 * yy + xx) as f32
            })
            .collect();
        let x = Tensor::<Flex, 1>::from_floats(data.as_slice(), &d).reshape([c, n, h, w]);
        let (kh, kw) = (2, 3);
        let (ho, wo) = (h - kh + 1, w - kw + 1);
        let cols = im2col_cnhw(x, kh, kw);
        assert_eq!(cols.dims(), [kh * kw * c, n * ho * wo]);
        let v = cols.into_data().to_vec::<f32>().unwrap();
        for i in 0..kh {
            for j in 0..kw {
                for cc in 0..c {
                    for nn in 0..n {
                        for yy in 0..ho {
                            for xx in 0..wo {
                                let row = (i * kw + j) * c + cc;
                                let col = (nn * ho + yy) * wo + xx;
                                let want = 1000 * cc + 100 * nn + 10 * (yy + i) + xx + j;
                                assert_eq!(v[row * n * ho * wo + col], want as f32);
                            }
                        }
                    }
                }
            }
        }
    }
}
