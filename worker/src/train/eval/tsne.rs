//! Barnes-Hut t-SNE of a snapshot subset (the `tsne` projection), made reproducible: the start
//! layout is drawn from the caller's seed (the evaluation's protocol seed) and the fit runs on one
//! thread.
//!
//! `bhtsne` draws its own start from the thread-local RNG and sums gradients with rayon, whose
//! split points (and so the order of floating-point additions) depend on work stealing. An
//! explicit start and a private one-thread pool remove both sources, so the same points and seed
//! give the same layout bit for bit, on any machine with the same float semantics.

use bhtsne::tSNE;
use proto::SnapshotProjection;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::project::project_2d;

/// Perplexity of the fit (van der Maaten's usual 30), lowered for small subsets so that every
/// point still has `3 × perplexity` neighbours.
pub(crate) const PERPLEXITY: f32 = 30.0;
/// Barnes-Hut accuracy (0.5, as in the reference implementation and scikit-learn).
pub(crate) const THETA: f32 = 0.5;
/// Gradient-descent iterations (the first 250 with early exaggeration).
pub(crate) const ITERATIONS: usize = 1000;
/// Fewest points t-SNE is run on; smaller subsets fall back to PCA (and say so).
pub(crate) const MIN_POINTS: usize = 8;
/// Mixed into the seed so the start layout is not correlated with other seeded draws.
const SEED_SALT: u64 = 0x7453_4e45_5f69_6e69;
/// Standard deviation of the Gaussian start (as in the reference implementation).
const START_SD: f64 = 1e-4;

/// 2-D t-SNE coordinates of the `[N * dim]` row-major `data`, and the projection that made them.
///
/// Falls back to [`project_2d`] (PCA, or the data itself when `dim <= 2`) when t-SNE is not
/// meaningful: fewer than [`MIN_POINTS`] points, or non-finite values (a diverged net), which the
/// vantage-point tree cannot order.
pub(crate) fn tsne_2d(data: &[f32], dim: usize, seed: u64) -> (Vec<[f32; 2]>, SnapshotProjection) {
    let n = data.len().checked_div(dim).unwrap_or(0);
    if dim <= 2 || n < MIN_POINTS || data.iter().any(|v| !v.is_finite()) {
        return pca_or_identity(data, dim);
    }
    let rows: Vec<&[f32]> = data.chunks_exact(dim).collect();
    let start = start_layout(n, seed);
    let flat = match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(pool) => pool.install(|| fit(&rows, start)),
        Err(e) => {
            // Without a private pool the fit would run on the shared one, whose sums are not
            // ordered; a PCA that says it is PCA is the honest result.
            tracing::warn!(error = %e, "no thread for t-SNE; snapshot uses PCA");
            return pca_or_identity(data, dim);
        }
    };
    let points = flat.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
    (points, SnapshotProjection::Tsne)
}

/// The start layout: a tiny Gaussian cloud drawn from `seed` (`[n * 2]` row-major).
fn start_layout(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SEED_SALT);
    let normal = Normal::new(0.0, START_SD).expect("finite standard deviation");
    (0..n * 2).map(|_| normal.sample(&mut rng) as f32).collect()
}

/// The Barnes-Hut fit from `start`, on whatever rayon pool it is called in; `[n * 2]` row-major.
fn fit(rows: &[&[f32]], start: Vec<f32>) -> Vec<f32> {
    // check_perplexity needs n − 1 ≥ 3·perplexity.
    let perplexity = PERPLEXITY.min(((rows.len() - 1) / 3) as f32);
    let mut t: tSNE<'_, f32, &[f32], 2> = tSNE::new(rows);
    t.perplexity(perplexity)
        .epochs(ITERATIONS)
        .initial_embedding(start)
        .barnes_hut(THETA, |a, b| euclidean(a, b));
    t.embedding()
}

fn pca_or_identity(data: &[f32], dim: usize) -> (Vec<[f32; 2]>, SnapshotProjection) {
    let (points, projected) = project_2d(data, dim);
    (points, SnapshotProjection::from_projected(projected))
}

fn euclidean(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `classes` Gaussian blobs of `per` points in `dim` dimensions, centres 10 apart on distinct
    /// axes, unit noise: separable by construction.
    fn blobs(classes: usize, per: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        let (mut data, mut labels) = (Vec::new(), Vec::new());
        for c in 0..classes {
            for _ in 0..per {
                for d in 0..dim {
                    let centre = if d == c % dim { 10.0 } else { 0.0 };
                    data.push(centre + noise.sample(&mut rng));
                }
                labels.push(c as u32);
            }
        }
        (data, labels)
    }

    #[test]
    fn same_seed_same_points_other_seed_other_points() {
        let (data, _) = blobs(4, 40, 16, 1);
        let (a, pa) = tsne_2d(&data, 16, 7);
        let (b, pb) = tsne_2d(&data, 16, 7);
        let (c, _) = tsne_2d(&data, 16, 8);
        assert_eq!(
            (pa, pb),
            (SnapshotProjection::Tsne, SnapshotProjection::Tsne)
        );
        assert_eq!(a, b, "same points and seed must give the same layout");
        assert_ne!(a, c, "the seed must reach the start layout");
        assert!(a.iter().flatten().all(|v| v.is_finite()));
    }

    #[test]
    fn separable_clusters_stay_separated() {
        let (data, labels) = blobs(5, 60, 32, 2);
        let (pts, proj) = tsne_2d(&data, 32, 3);
        assert_eq!(proj, SnapshotProjection::Tsne);
        // Every point's nearest other point in the layout belongs to its own class.
        let d2 = |a: [f32; 2], b: [f32; 2]| (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2);
        let wrong = (0..pts.len())
            .filter(|&i| {
                let nn = (0..pts.len())
                    .filter(|&j| j != i)
                    .min_by(|&j, &k| d2(pts[i], pts[j]).total_cmp(&d2(pts[i], pts[k])))
                    .unwrap();
                labels[nn] != labels[i]
            })
            .count();
        assert_eq!(wrong, 0, "{wrong} points sit nearest another class");
        // And the class centroids are farther apart than each class is wide.
        let centroid = |c: u32| {
            let own: Vec<[f32; 2]> = (0..pts.len())
                .filter(|&i| labels[i] == c)
                .map(|i| pts[i])
                .collect();
            let n = own.len() as f32;
            let m = own
                .iter()
                .fold([0.0, 0.0], |s, p| [s[0] + p[0] / n, s[1] + p[1] / n]);
            let spread = own.iter().map(|p| d2(*p, m).sqrt()).fold(0.0, f32::max);
            (m, spread)
        };
        let cs: Vec<([f32; 2], f32)> = (0..5).map(centroid).collect();
        for i in 0..5 {
            for j in i + 1..5 {
                let gap = d2(cs[i].0, cs[j].0).sqrt();
                assert!(
                    gap > cs[i].1.max(cs[j].1),
                    "classes {i} and {j}: centroids {gap} apart, radii {} and {}",
                    cs[i].1,
                    cs[j].1
                );
            }
        }
    }

    #[test]
    fn the_jobs_projection_picks_the_method() {
        use proto::Projection;
        let project = super::super::project_snapshot;
        let (data, _) = blobs(3, 10, 4, 5);
        assert_eq!(
            project(&data, 4, Projection::Tsne, 1),
            tsne_2d(&data, 4, 1),
            "tsne: the seeded t-SNE"
        );
        assert_eq!(
            project(&data, 4, Projection::Pca, 1).1,
            SnapshotProjection::Pca
        );
        assert_eq!(
            project(&[1.0, 2.0], 2, Projection::Tsne, 1).1,
            SnapshotProjection::Identity,
            "a 2-D embedding is drawn as it is"
        );
    }

    #[test]
    fn falls_back_to_pca_when_tsne_cannot_run() {
        let (data, _) = blobs(2, 3, 8, 4);
        assert_eq!(tsne_2d(&data, 8, 1).1, SnapshotProjection::Pca);
        let (mut data, _) = blobs(2, 20, 8, 4);
        data[5] = f32::NAN;
        assert_eq!(tsne_2d(&data, 8, 1).1, SnapshotProjection::Pca);
        assert_eq!(
            tsne_2d(&[1.0, 2.0, 3.0, 4.0], 2, 1),
            (vec![[1.0, 2.0], [3.0, 4.0]], SnapshotProjection::Identity)
        );
    }
}

/// Seconds per snapshot at the sizes the README quotes: `cargo test -p latentsweep-worker --lib
/// tsne_timing -- --ignored --nocapture` (ignored: it measures, the machine decides).
#[cfg(test)]
mod timing {
    use super::*;

    #[test]
    #[ignore]
    fn tsne_timing() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        let (n, dim) = (2000, 32);
        let data: Vec<f32> = (0..n * dim)
            .map(|i| noise.sample(&mut rng) + if (i / dim) % 10 == i % dim { 6.0 } else { 0.0 })
            .collect();
        let t = std::time::Instant::now();
        let (_, p) = tsne_2d(&data, dim, 1);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(p, SnapshotProjection::Tsne);
        println!("t-SNE of {n} points at D = {dim}: {secs:.2} s (one thread)");
        // For comparison only: the same fit on the global pool, as the crate runs by default.
        let rows: Vec<&[f32]> = data.chunks_exact(dim).collect();
        let t = std::time::Instant::now();
        let x = fit(&rows, start_layout(n, 1));
        let secs = t.elapsed().as_secs_f64();
        let same = (0..3).all(|_| fit(&rows, start_layout(n, 1)) == x);
        println!(
            "parallel fit: {secs:.2} s on {} threads; bit-identical over 4 runs: {same}",
            rayon::current_num_threads()
        );
    }
}
