//! 2-D coordinates for embedding snapshots: the embedding itself when D = 2, else PCA onto the two
//! principal axes with a deterministic sign so that successive snapshots do not flip at random.

use proto::{Projection, SnapshotProjection};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Widest covariance diagonalised by full Jacobi (≈1.5·D³ flops per sweep); wider ones use
/// subspace iteration, whose cost per step is only 8 matrix-vector products.
pub(crate) const JACOBI_MAX_DIM: usize = 64;

/// Principal axes of a point cloud.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pca {
    /// Per-dimension mean that was subtracted.
    pub(crate) mean: Vec<f64>,
    /// The two unit axes, largest variance first; each axis' largest-|·| component (first on ties)
    /// is positive.
    pub(crate) axes: [Vec<f64>; 2],
    /// Variance (population, /N) along each axis.
    pub(crate) variances: [f64; 2],
}

/// 2-D coordinates of the `[N * dim]` row-major `data` and whether they are a projection.
///
/// `dim == 2`: the data itself (`false`). `dim == 1`: `(x, 0)` (`false`). `dim > 2`: coordinates
/// along [`pca_2d`]'s axes after centring (`true`). `dim == 0`: no points.
pub(crate) fn project_2d(data: &[f32], dim: usize) -> (Vec<[f32; 2]>, bool) {
    match dim {
        0 => (Vec::new(), false),
        1 => (data.iter().map(|&x| [x, 0.0]).collect(), false),
        2 => (data.chunks_exact(2).map(|r| [r[0], r[1]]).collect(), false),
        _ => {
            let pca = pca_2d(data, dim);
            let points = data
                .chunks_exact(dim)
                .map(|row| {
                    let mut xy = [0f64; 2];
                    for (d, &v) in row.iter().enumerate() {
                        let c = f64::from(v) - pca.mean[d];
                        xy[0] += c * pca.axes[0][d];
                        xy[1] += c * pca.axes[1][d];
                    }
                    [xy[0] as f32, xy[1] as f32]
                })
                .collect();
            (points, true)
        }
    }
}

/// 2-D coordinates of a snapshot subset (`[N * dim]` row-major) as the job's `projection` asks,
/// and the projection that actually drew them: the data itself when `dim <= 2`, else PCA or
/// t-SNE (seeded by `seed`; PCA when t-SNE cannot run, see `tsne::tsne_2d`).
pub(crate) fn project_snapshot(
    data: &[f32],
    dim: usize,
    projection: Projection,
    seed: u64,
) -> (Vec<[f32; 2]>, SnapshotProjection) {
    match projection {
        Projection::Tsne if dim > 2 => super::tsne::tsne_2d(data, dim, seed),
        _ => {
            let (points, projected) = project_2d(data, dim);
            (points, SnapshotProjection::from_projected(projected))
        }
    }
}

/// The top-2 principal axes of `data` (`dim >= 2`), from its covariance in `f64`.
pub(crate) fn pca_2d(data: &[f32], dim: usize) -> Pca {
    assert!(dim >= 2, "pca_2d: need at least 2 dimensions");
    let n = data.len() / dim;
    let mut mean = vec![0f64; dim];
    for row in data.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let cov = covariance(data, dim, &mean);
    let (vals, mut axes) = if dim <= JACOBI_MAX_DIM {
        let (vals, vecs) = jacobi_eigen(cov, dim);
        let top = [vecs[0].clone(), vecs[1].clone()];
        ([vals[0], vals[1]], top)
    } else {
        top2_subspace(&cov, dim)
    };
    for axis in &mut axes {
        fix_sign(axis);
    }
    Pca {
        mean,
        axes,
        variances: vals,
    }
}

/// Population covariance (`/N`), row-major `[dim * dim]`, symmetric.
fn covariance(data: &[f32], dim: usize, mean: &[f64]) -> Vec<f64> {
    let n = data.len() / dim;
    let mut cov = vec![0f64; dim * dim];
    let mut c = vec![0f64; dim];
    for row in data.chunks_exact(dim) {
        for ((ci, &v), m) in c.iter_mut().zip(row).zip(mean) {
            *ci = f64::from(v) - m;
        }
        for i in 0..dim {
            let ci = c[i];
            for (acc, &cj) in cov[i * dim + i..(i + 1) * dim].iter_mut().zip(&c[i..]) {
                *acc += ci * cj;
            }
        }
    }
    for i in 0..dim {
        for j in i..dim {
            let v = cov[i * dim + j] / n.max(1) as f64;
            cov[i * dim + j] = v;
            cov[j * dim + i] = v;
        }
    }
    cov
}

/// Makes the largest-magnitude component positive (first such component on ties).
fn fix_sign(axis: &mut [f64]) {
    let mut best = 0;
    for (i, v) in axis.iter().enumerate() {
        if v.abs() > axis[best].abs() {
            best = i;
        }
    }
    if axis[best] < 0.0 {
        axis.iter_mut().for_each(|v| *v = -*v);
    }
}

/// Cyclic Jacobi eigen-decomposition of the symmetric row-major `a` (`n × n`).
/// Returns eigenvalues sorted descending (stable on ties) and the matching unit eigenvectors.
pub(crate) fn jacobi_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let (mut off, mut diag) = (0f64, 0f64);
        for p in 0..n {
            diag += a[p * n + p] * a[p * n + p];
            for q in p + 1..n {
                off += a[p * n + q] * a[p * n + q];
            }
        }
        if off <= 1e-32 * diag || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // Rotation zeroing a[p][q] (Numerical Recipes §11.1 conventions), smaller angle.
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = if theta.abs() > 1e150 {
                    0.5 / theta
                } else {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                a[p * n + q] = 0.0;
                a[q * n + p] = 0.0;
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let vals = order.iter().map(|&i| a[i * n + i]).collect();
    let vecs = order
        .iter()
        .map(|&j| (0..n).map(|k| v[k * n + j]).collect())
        .collect();
    (vals, vecs)
}

fn mat_vec(m: &[f64], x: &[f64]) -> Vec<f64> {
    m.chunks_exact(x.len())
        .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Modified Gram–Schmidt (two passes); a vector that vanishes is replaced by the first unit basis
/// vector that is not in the span so far, which keeps rank-deficient covariances well defined.
fn orthonormalise(vs: &mut [Vec<f64>]) {
    let dim = vs[0].len();
    let mut basis = 0;
    for j in 0..vs.len() {
        loop {
            for _ in 0..2 {
                for i in 0..j {
                    let (done, cur) = vs.split_at_mut(j);
                    let proj = dot(&done[i], &cur[0]);
                    cur[0]
                        .iter_mut()
                        .zip(&done[i])
                        .for_each(|(x, b)| *x -= proj * b);
                }
            }
            let norm = dot(&vs[j], &vs[j]).sqrt();
            if norm > 1e-150 && norm.is_finite() {
                vs[j].iter_mut().for_each(|x| *x /= norm);
                break;
            }
            vs[j] = (0..dim).map(|k| f64::from(u8::from(k == basis))).collect();
            basis += 1;
        }
    }
}

/// Top-2 eigenpairs of the symmetric `cov` by subspace iteration on 8 vectors with Rayleigh–Ritz
/// (convergence rate λ₉/λ₂), from a fixed pseudo-random start.
fn top2_subspace(cov: &[f64], dim: usize) -> ([f64; 2], [Vec<f64>; 2]) {
    let p = 8.min(dim);
    let mut rng = ChaCha8Rng::seed_from_u64(0x05ee_d9ca);
    let mut vs: Vec<Vec<f64>> = (0..p)
        .map(|_| (0..dim).map(|_| rng.random::<f64>() - 0.5).collect())
        .collect();
    orthonormalise(&mut vs);
    let mut best = ([0.0; 2], [vs[0].clone(), vs[1].clone()]);
    for _ in 0..2000 {
        let ws: Vec<Vec<f64>> = vs.iter().map(|v| mat_vec(cov, v)).collect(); // C·V
        let mut h = vec![0f64; p * p];
        for i in 0..p {
            for j in 0..p {
                h[i * p + j] = 0.5 * (dot(&vs[i], &ws[j]) + dot(&vs[j], &ws[i]));
            }
        }
        let (theta, ys) = jacobi_eigen(h, p);
        let combine = |src: &[Vec<f64>], y: &[f64]| {
            let mut out = vec![0f64; dim];
            for (s, &c) in src.iter().zip(y) {
                out.iter_mut().zip(s).for_each(|(o, x)| *o += c * x);
            }
            out
        };
        let us: Vec<Vec<f64>> = ys.iter().map(|y| combine(&vs, y)).collect(); // Ritz vectors
        let cus: Vec<Vec<f64>> = ys.iter().map(|y| combine(&ws, y)).collect(); // C·U
        let scale = theta[0].abs().max(f64::MIN_POSITIVE);
        let converged = (0..2).all(|j| {
            let r: f64 = cus[j]
                .iter()
                .zip(&us[j])
                .map(|(cu, u)| (cu - theta[j] * u).powi(2))
                .sum();
            r.sqrt() <= 1e-11 * scale
        });
        best = ([theta[0], theta[1]], [us[0].clone(), us[1].clone()]);
        if converged {
            break;
        }
        vs = cus;
        orthonormalise(&mut vs);
    }
    best
}
