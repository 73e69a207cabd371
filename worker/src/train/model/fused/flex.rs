//! The fused conv → PReLU → 2×2 max-pool block on Burn's Flex CPU backend: im2col and col2im
//! loops over plain slices, the three products on Flex's GEMM, and one pass each way for bias,
//! PReLU and pooling.
//!
//! Shapes: input `x [N, C, H, W]`, weight `[O, C, kh, kw]`, conv output `Ho = H − kh + 1`,
//! `Wo = W − kw + 1`, pooled `Hp = Ho / 2`, `Wp = Wo / 2` (floor, like `MaxPool2d`),
//! `P = Ho·Wo`, `CK = C·kh·kw`. The conv output lives channel-major, `[O, N·P]`, which is what
//! `W [O, CK] × cols [CK, N·P]` produces; the block's output is NCHW.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;
use burn::tensor::ops::FloatTensorOps;
use rayon::prelude::*;

use super::{BlockGrads, BlockState, FusedBlock};

/// Sizes of one block call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    hp: usize,
    wp: usize,
}

impl Dims {
    fn new(x: [usize; 4], weight: [usize; 4]) -> Self {
        let [n, c, h, w] = x;
        let [o, wc, kh, kw] = weight;
        assert_eq!(
            wc, c,
            "fused block: input has {c} channels, weight expects {wc}"
        );
        assert!(
            h >= kh + 1 && w >= kw + 1,
            "fused block: input {h}x{w} too small for a {kh}x{kw} kernel and 2x2 pooling"
        );
        let (ho, wo) = (h - kh + 1, w - kw + 1);
        Dims {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            ho,
            wo,
            hp: ho / 2,
            wp: wo / 2,
        }
    }
    fn ck(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn np(&self) -> usize {
        self.n * self.ho * self.wo
    }
    fn pooled(&self) -> usize {
        self.hp * self.wp
    }
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    assert_eq!(s.num_dims(), 4, "fused block: expected a 4-d tensor");
    [s[0], s[1], s[2], s[3]]
}

/// The tensor's values in row-major order (a copy only when it is a strided view).
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) if s.len() == t.layout().num_elements() => std::borrow::Cow::Borrowed(s),
        _ => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("f32").to_vec()),
    }
}

fn tensor(v: Vec<f32>, shape: impl Into<burn::tensor::Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape.into()))
}

/// `cols[(c·kh + i)·kw + j, (n·Ho + y)·Wo + x] = x[n, c, y + i, x + j]`; rows in the order of
/// the weight's `[C, kh, kw]` flattening, so `W` multiplies it without a permute.
fn im2col(x: &[f32], d: &Dims) -> Vec<f32> {
    let np = d.np();
    let mut cols = vec![0f32; d.ck() * np];
    cols.par_chunks_mut(np).enumerate().for_each(|(row, out)| {
        let (ci, ij) = (row / (d.kh * d.kw), row % (d.kh * d.kw));
        let (i, j) = (ij / d.kw, ij % d.kw);
        for b in 0..d.n {
            for y in 0..d.ho {
                let src = ((b * d.c + ci) * d.h + y + i) * d.w + j;
                let dst = (b * d.ho + y) * d.wo;
                out[dst..dst + d.wo].copy_from_slice(&x[src..src + d.wo]);
            }
        }
    });
    cols
}

/// The adjoint of [`im2col`]: sums every column entry back into its input pixel. `[N, C, H, W]`
fn col2im(cols: &[f32], d: &Dims) -> Vec<f32> {
    let np = d.np();
    let mut dx = vec![0f32; d.n * d.c * d.h * d.w];
    dx.par_chunks_mut(d.c * d.h * d.w)
        .enumerate()
        .for_each(|(b, image)| {
            for row in 0..d.ck() {
                let (ci, ij) = (row / (d.kh * d.kw), row % (d.kh * d.kw));
                let (i, j) = (ij / d.kw, ij % d.kw);
                for y in 0..d.ho {
                    let src = row * np + (b * d.ho + y) * d.wo;
                    let dst = (ci * d.h + y + i) * d.w + j;
                    for (o, s) in image[dst..dst + d.wo]
                        .iter_mut()
                        .zip(&cols[src..src + d.wo])
                    {
                        *o += s;
                    }
                }
            }
        });
    dx
}

/// Bias, PReLU and the 2×2 max over the channel-major conv output `z [O, N·P]`.
///
/// Returns the NCHW output and, per output, the pre-activation at the window's maximum and
/// the maximum's position in the window (0..4, row-major; the first maximum wins, as in
/// Flex's `max_pool2d`).
fn prelu_pool(z: &[f32], bias: &[f32], alpha: f32, d: &Dims) -> (Vec<f32>, Vec<f32>, Vec<u8>) {
    let per_image = d.o * d.pooled();
    let len = d.n * per_image;
    let (mut out, mut zmax, mut arg) = (vec![0f32; len], vec![0f32; len], vec![0u8; len]);
    out.par_chunks_mut(per_image)
        .zip(zmax.par_chunks_mut(per_image))
        .zip(arg.par_chunks_mut(per_image))
        .enumerate()
        .for_each(|(b, ((out, zmax), arg))| {
            for oc in 0..d.o {
                let plane = &z[(oc * d.n + b) * d.ho * d.wo..][..d.ho * d.wo];
                let bias = bias[oc];
                for py in 0..d.hp {
                    for px in 0..d.wp {
                        let (mut best, mut best_z, mut best_k) = (f32::NEG_INFINITY, 0.0, 0u8);
                        for k in 0..4u8 {
                            let (dy, dx) = (usize::from(k / 2), usize::from(k % 2));
                            let zz = plane[(2 * py + dy) * d.wo + 2 * px + dx] + bias;
                            let a = if zz > 0.0 { zz } else { alpha * zz };
                            if a > best || k == 0 {
                                (best, best_z, best_k) = (a, zz, k);
                            }
                        }
                        let at = oc * d.pooled() + py * d.wp + px;
                        (out[at], zmax[at], arg[at]) = (best, best_z, best_k);
                    }
                }
            }
        });
    (out, zmax, arg)
}

/// Gradient of [`prelu_pool`]: the conv output's gradient `dz [O, N·P]` (zero off the maxima),
/// and the bias and PReLU-slope gradients.
fn prelu_pool_backward(
    g: &[f32],
    zmax: &[f32],
    arg: &[u8],
    alpha: f32,
    d: &Dims,
) -> (Vec<f32>, Vec<f32>, f32) {
    let plane = d.ho * d.wo;
    let mut dz = vec![0f32; d.o * d.n * plane];
    let per_channel: Vec<(f32, f32)> = dz
        .par_chunks_mut(d.n * plane)
        .enumerate()
        .map(|(oc, dz)| {
            let (mut db, mut da) = (0f32, 0f32);
            for b in 0..d.n {
                let base = (b * d.o + oc) * d.pooled();
                for py in 0..d.hp {
                    for px in 0..d.wp {
                        let at = base + py * d.wp + px;
                        let (gv, zz) = (g[at], zmax[at]);
                        let v = if zz > 0.0 {
                            gv
                        } else {
                            da += gv * zz;
                            gv * alpha
                        };
                        db += v;
                        let (dy, dx) = (usize::from(arg[at] / 2), usize::from(arg[at] % 2));
                        dz[b * plane + (2 * py + dy) * d.wo + 2 * px + dx] = v;
                    }
                }
            }
            (db, da)
        })
        .collect();
    let dbias = per_channel.iter().map(|p| p.0).collect();
    let dalpha = per_channel.iter().map(|p| p.1).sum();
    (dz, dbias, dalpha)
}

fn scalar(t: &FlexTensor) -> f32 {
    values(t)[0]
}

fn forward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    alpha: FlexTensor,
) -> (FlexTensor, BlockState<Flex>) {
    let d = Dims::new(dims4(&x), dims4(&weight));
    let cols = tensor(im2col(&values(&x), &d), [d.ck(), d.np()]);
    let w2 = weight.reshape([d.o, d.ck()].into());
    let z = Flex::float_matmul(w2, cols.clone()); // [O, N·P]
    let (out, zmax, arg) = prelu_pool(&values(&z), &values(&bias), scalar(&alpha), &d);
    let shape = [d.n, d.o, d.hp, d.wp];
    let state = BlockState {
        cols,
        zmax: tensor(zmax, shape),
        arg: tensor(arg.into_iter().map(f32::from).collect(), shape),
        x_shape: [d.n, d.c, d.h, d.w],
    };
    (tensor(out, shape), state)
}

impl FusedBlock for Flex {
    const FUSED_BLOCK: bool = true;

    fn conv_prelu_pool(x: FlexTensor, w: FlexTensor, b: FlexTensor, a: FlexTensor) -> FlexTensor {
        forward(x, w, b, a).0
    }

    fn conv_prelu_pool_train(
        x: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        a: FlexTensor,
    ) -> (FlexTensor, BlockState<Flex>) {
        forward(x, w, b, a)
    }

    fn conv_prelu_pool_backward(
        weight: FlexTensor,
        alpha: FlexTensor,
        state: BlockState<Flex>,
        grad: FlexTensor,
        wants: [bool; 4],
    ) -> BlockGrads<Flex> {
        let d = Dims::new(state.x_shape, dims4(&weight));
        let arg: Vec<u8> = values(&state.arg).iter().map(|&v| v as u8).collect();
        let (dz, dbias, dalpha) = prelu_pool_backward(
            &values(&grad),
            &values(&state.zmax),
            &arg,
            scalar(&alpha),
            &d,
        );
        let dz = tensor(dz, [d.o, d.np()]);
        let x = wants[0].then(|| {
            let w2 = weight.reshape([d.o, d.ck()].into()).transpose(0, 1); // [CK, O]
            let dcols = Flex::float_matmul(w2, dz.clone()); // [CK, N·P]
            tensor(col2im(&values(&dcols), &d), state.x_shape)
        });
        let weight = wants[1].then(|| {
            let dw = Flex::float_matmul(dz, state.cols.transpose(0, 1)); // [O, CK]
            dw.reshape([d.o, d.c, d.kh, d.kw].into())
        });
        BlockGrads {
            x,
            weight,
            bias: wants[2].then(|| tensor(dbias, [d.o])),
            alpha: wants[3].then(|| tensor(vec![dalpha], [1])),
        }
    }
}
