//! The fused conv → PReLU → 2×2 max-pool block on Burn's Flex CPU backend: im2col and col2im
//! loops over plain slices, the three products on Flex's GEMM, and one pass each way for bias,
//! PReLU and pooling.
//!
//! Shapes: input `x [N, C, H, W]`, weight `[O, C, kh, kw]`, conv output `Ho = H − kh + 1`,
//! `Wo = W − kw + 1`, pooled `Hp = Ho / 2`, `Wp = Wo / 2` (floor, like `MaxPool2d`),
//! `P = Ho·Wo`, `CK = C·kh·kw`. The batch is cut into chunks of `nb` images, processed in
//! parallel; a chunk's conv output lives channel-major, `[O, nb·P]`, which is what
//! `W [O, CK] × cols [CK, nb·P]` produces; the block's output is NCHW.

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
            h > kh && w > kw,
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

/// Images per chunk: the block runs chunk by chunk so that a chunk's im2col matrix and conv
/// output (about 2 MiB each) stay in cache between the passes over them, instead of
/// streaming matrices of tens of megabytes through memory (and the allocator) several times.
fn chunk_images(d: &Dims) -> usize {
    const CHUNK_FLOATS: usize = 1 << 19;
    (CHUNK_FLOATS / (d.ck() * d.ho * d.wo)).clamp(1, d.n)
}

/// The im2col matrix of images `b0..b0 + nb`: `[CK, nb·P]`, row `(c·kh + i)·kw + j` (the
/// weight's `[C, kh, kw]` flattening, so `W` multiplies it without a permute), column
/// `(b·Ho + y)·Wo + x` holding `x[b0 + b, c, y + i, x + j]`.
fn im2col(x: &[f32], d: &Dims, b0: usize, nb: usize) -> Vec<f32> {
    // Filled in order by appending, so the matrix is never zeroed first.
    let mut cols = Vec::with_capacity(d.ck() * nb * d.ho * d.wo);
    for row in 0..d.ck() {
        let (ci, ij) = (row / (d.kh * d.kw), row % (d.kh * d.kw));
        let (i, j) = (ij / d.kw, ij % d.kw);
        for b in b0..b0 + nb {
            for y in 0..d.ho {
                let src = ((b * d.c + ci) * d.h + y + i) * d.w + j;
                cols.extend(x[src..src + d.wo].iter().copied());
            }
        }
    }
    cols
}

/// The adjoint of [`im2col`]: adds every column entry of `cols [CK, nb·P]` into its pixel of
/// `dx`, the `nb` images' `[nb, C, H, W]` gradient.
fn col2im(cols: &[f32], d: &Dims, nb: usize, dx: &mut [f32]) {
    let np = nb * d.ho * d.wo;
    for (row, col) in cols.chunks_exact(np).enumerate() {
        let (ci, ij) = (row / (d.kh * d.kw), row % (d.kh * d.kw));
        let (i, j) = (ij / d.kw, ij % d.kw);
        for b in 0..nb {
            for y in 0..d.ho {
                let src = (b * d.ho + y) * d.wo;
                let dst = ((b * d.c + ci) * d.h + y + i) * d.w + j;
                for (o, s) in dx[dst..dst + d.wo].iter_mut().zip(&col[src..src + d.wo]) {
                    *o += s;
                }
            }
        }
    }
}

/// Bias, PReLU and the 2×2 max over a chunk's conv output `z [O, nb·P]`, written to the
/// chunk's NCHW output and, per output, the pre-activation at the window's maximum and the
/// maximum's position in the window (0..4, row-major; the first maximum wins, as in Flex's
/// `max_pool2d`).
fn prelu_pool(z: &[f32], bias: &[f32], alpha: f32, d: &Dims, nb: usize, out: Outputs<'_>) {
    let plane = d.ho * d.wo;
    for b in 0..nb {
        for oc in 0..d.o {
            let z = &z[(oc * nb + b) * plane..][..plane];
            let bias = bias[oc];
            let base = (b * d.o + oc) * d.pooled();
            for py in 0..d.hp {
                for px in 0..d.wp {
                    // Branch-free: the signs and the maxima are data, not patterns a
                    // branch predictor could learn.
                    let r0 = (2 * py) * d.wo + 2 * px;
                    let zs = [z[r0], z[r0 + 1], z[r0 + d.wo], z[r0 + d.wo + 1]].map(|v| v + bias);
                    let a = zs.map(|v| v.max(0.0) + alpha * v.min(0.0));
                    // First maximum wins: a later element must be strictly greater.
                    let (k01, m01) = if a[1] > a[0] { (1, a[1]) } else { (0, a[0]) };
                    let (k23, m23) = if a[3] > a[2] { (3, a[3]) } else { (2, a[2]) };
                    let (best_k, best) = if m23 > m01 { (k23, m23) } else { (k01, m01) };
                    let best_z = zs[usize::from(best_k)];
                    let at = base + py * d.wp + px;
                    (out.y[at], out.zmax[at], out.arg[at]) = (best, best_z, best_k);
                }
            }
        }
    }
}

/// A chunk's slices of the forward's outputs, `[nb, O, Hp, Wp]` each.
struct Outputs<'a> {
    y: &'a mut [f32],
    zmax: &'a mut [f32],
    arg: &'a mut [u8],
}

/// Gradient of [`prelu_pool`] for a chunk: the conv output's gradient `dz [O, nb·P]` (zero
/// off the maxima), the bias gradient's share and the PReLU slope's.
fn prelu_pool_backward(
    g: &[f32],
    zmax: &[f32],
    arg: &[u8],
    alpha: f32,
    d: &Dims,
    nb: usize,
) -> (Vec<f32>, Vec<f32>, f32) {
    let plane = d.ho * d.wo;
    let mut dz = vec![0f32; d.o * nb * plane];
    let mut dbias = vec![0f32; d.o];
    let mut dalpha = 0f32;
    for b in 0..nb {
        for (oc, db) in dbias.iter_mut().enumerate() {
            let base = (b * d.o + oc) * d.pooled();
            let dz = &mut dz[(oc * nb + b) * plane..][..plane];
            for py in 0..d.hp {
                for px in 0..d.wp {
                    let at = base + py * d.wp + px;
                    let (gv, zz) = (g[at], zmax[at]);
                    let v = gv * if zz > 0.0 { 1.0 } else { alpha };
                    dalpha += gv * zz.min(0.0);
                    *db += v;
                    let (dy, dx) = (usize::from(arg[at] / 2), usize::from(arg[at] % 2));
                    dz[(2 * py + dy) * d.wo + 2 * px + dx] = v;
                }
            }
        }
    }
    (dz, dbias, dalpha)
}

fn scalar(t: &FlexTensor) -> f32 {
    values(t)[0]
}

fn matmul(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
    Flex::float_matmul(lhs, rhs)
}

/// The block's output, plus (as plain vectors, so that inference drops them without building
/// tensors) the per-output pre-activations and window positions the backward needs.
fn forward(
    x: &FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    alpha: FlexTensor,
) -> (FlexTensor, Vec<f32>, Vec<u8>) {
    let d = Dims::new(dims4(x), dims4(&weight));
    let nb = chunk_images(&d);
    let w2 = weight.reshape([d.o, d.ck()].into());
    let (xs, bias, alpha) = (values(x), values(&bias), scalar(&alpha));
    let per_image = d.o * d.pooled();
    let len = d.n * per_image;
    let (mut y, mut zmax, mut arg) = (vec![0f32; len], vec![0f32; len], vec![0u8; len]);
    y.par_chunks_mut(nb * per_image)
        .zip(zmax.par_chunks_mut(nb * per_image))
        .zip(arg.par_chunks_mut(nb * per_image))
        .enumerate()
        .for_each(|(chunk, ((y, zmax), arg))| {
            let (b0, nb) = (chunk * nb, y.len() / per_image);
            let cols = tensor(im2col(&xs, &d, b0, nb), [d.ck(), nb * d.ho * d.wo]);
            let z = matmul(w2.clone(), cols); // [O, nb·P]
            prelu_pool(&values(&z), &bias, alpha, &d, nb, Outputs { y, zmax, arg });
        });
    (tensor(y, [d.n, d.o, d.hp, d.wp]), zmax, arg)
}

/// One chunk's shares of the weight, bias and slope gradients (its input gradient is written
/// in place, into the chunk's slice of the whole batch's).
struct ChunkGrads {
    weight: Option<Vec<f32>>,
    bias: Vec<f32>,
    alpha: f32,
}

impl FusedBlock for Flex {
    const FUSED_BLOCK: bool = true;

    fn conv_prelu_pool(x: FlexTensor, w: FlexTensor, b: FlexTensor, a: FlexTensor) -> FlexTensor {
        forward(&x, w, b, a).0
    }

    fn conv_prelu_pool_train(
        x: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        a: FlexTensor,
    ) -> (FlexTensor, BlockState<Flex>) {
        let (y, zmax, arg) = forward(&x, w, b, a);
        let shape = y.layout().shape().clone();
        let state = BlockState {
            x,
            zmax: tensor(zmax, shape.clone()),
            // Kept as u8 (a quarter of an f32 tensor; 36 MB less per step for koch-siamese's
            // first block): only this backend's backward reads it.
            arg: FlexTensor::from_data(TensorData::new(arg, shape)),
        };
        (y, state)
    }

    fn conv_prelu_pool_backward(
        weight: FlexTensor,
        alpha: FlexTensor,
        state: BlockState<Flex>,
        grad: FlexTensor,
        wants: [bool; 4],
    ) -> BlockGrads<Flex> {
        let d = Dims::new(dims4(&state.x), dims4(&weight));
        let nb = chunk_images(&d);
        let (xs, g, zmax) = (values(&state.x), values(&grad), values(&state.zmax));
        let arg = state
            .arg
            .as_slice::<u8>()
            .expect("fused block: window positions are a contiguous u8 tensor");
        let alpha = scalar(&alpha);
        let w2 = weight.reshape([d.o, d.ck()].into());
        let wt = w2.clone().transpose(0, 1); // [CK, O]
        let pooled = d.o * d.pooled();
        let chunk = |ci: usize, dx: Option<&mut [f32]>| {
            let (b0, nb) = (ci * nb, nb.min(d.n - ci * nb));
            let at = b0 * pooled..(b0 + nb) * pooled;
            let (dz, bias, da) =
                prelu_pool_backward(&g[at.clone()], &zmax[at.clone()], &arg[at], alpha, &d, nb);
            let dz = tensor(dz, [d.o, nb * d.ho * d.wo]);
            let weight = wants[1].then(|| {
                let cols = tensor(im2col(&xs, &d, b0, nb), [d.ck(), nb * d.ho * d.wo]);
                values(&matmul(dz.clone(), cols.transpose(0, 1))).into_owned() // [O, CK]
            });
            if let Some(dx) = dx {
                let dcols = matmul(wt.clone(), dz); // [CK, nb·P]
                col2im(&values(&dcols), &d, nb, dx);
            }
            ChunkGrads {
                weight,
                bias,
                alpha: da,
            }
        };
        let image = d.c * d.h * d.w;
        let mut dx = wants[0].then(|| vec![0f32; d.n * image]);
        let parts: Vec<ChunkGrads> = match dx.as_mut() {
            Some(dx) => dx
                .par_chunks_mut(nb * image)
                .enumerate()
                .map(|(ci, dx)| chunk(ci, Some(dx)))
                .collect(),
            None => (0..d.n.div_ceil(nb))
                .into_par_iter()
                .map(|ci| chunk(ci, None))
                .collect(),
        };
        let sum = |a: Vec<f32>, b: &[f32]| a.into_iter().zip(b).map(|(a, b)| a + b).collect();
        let dweight = wants[1].then(|| {
            let total = parts
                .iter()
                .filter_map(|p| p.weight.as_deref())
                .fold(vec![0f32; d.o * d.ck()], sum);
            tensor(total, [d.o, d.c, d.kh, d.kw])
        });
        let dbias = parts.iter().fold(vec![0f32; d.o], |a, p| sum(a, &p.bias));
        BlockGrads {
            x: dx.map(|dx| tensor(dx, [d.n, d.c, d.h, d.w])),
            weight: dweight,
            bias: wants[2].then(|| tensor(dbias, [d.o])),
            alpha: wants[3].then(|| tensor(vec![parts.iter().map(|p| p.alpha).sum()], [1])),
        }
    }
}
