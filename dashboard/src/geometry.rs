//! Point-set geometry for the latent-space views: Procrustes alignment, downsampling, neighbours.

use std::collections::HashMap;

/// Orthogonal 2×2 matrix (rotation or reflection) applied as `p' = p · R`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Orth2 {
    pub m: [[f64; 2]; 2],
}

impl Orth2 {
    pub(crate) const IDENTITY: Orth2 = Orth2 {
        m: [[1.0, 0.0], [0.0, 1.0]],
    };

    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [
            p[0] * self.m[0][0] + p[1] * self.m[1][0],
            p[0] * self.m[0][1] + p[1] * self.m[1][1],
        ]
    }
}

/// Orthogonal Procrustes in closed form: the orthogonal `R` minimising `‖B·R − A‖` for centred
/// point sets, via the 2×2 SVD of `M = Bᵀ·A`.
///
/// For 2×2 matrices the SVD solution `R = U·Vᵀ` reduces to picking the better of the best rotation
/// and the best reflection: `tr(Rᵀ·M)` is maximised by the rotation angle `atan2(M₂₁ − M₁₂, M₁₁ + M₂₂)`
/// (value `√((M₁₁+M₂₂)² + (M₂₁−M₁₂)²)`, the sum of singular values when `det M ≥ 0`) and by the
/// reflection angle `atan2(M₁₂ + M₂₁, M₁₁ − M₂₂)` (their difference otherwise).
pub(crate) fn procrustes(b: &[[f64; 2]], a: &[[f64; 2]]) -> Orth2 {
    let mut m = [[0.0f64; 2]; 2];
    for (p, q) in b.iter().zip(a) {
        for i in 0..2 {
            for j in 0..2 {
                m[i][j] += p[i] * q[j];
            }
        }
    }
    let (rc, rs) = (m[0][0] + m[1][1], m[1][0] - m[0][1]);
    let (fc, fs) = (m[0][0] - m[1][1], m[0][1] + m[1][0]);
    let (rot, refl) = (rc.hypot(rs), fc.hypot(fs));
    if rot == 0.0 && refl == 0.0 {
        return Orth2::IDENTITY;
    }
    if rot >= refl {
        let (c, s) = (rc / rot, rs / rot);
        Orth2 {
            m: [[c, -s], [s, c]],
        }
    } else {
        let (c, s) = (fc / refl, fs / refl);
        Orth2 {
            m: [[c, s], [s, -c]],
        }
    }
}

fn centroid(p: &[[f64; 2]]) -> [f64; 2] {
    let n = p.len().max(1) as f64;
    let s = p
        .iter()
        .fold([0.0, 0.0], |acc, q| [acc[0] + q[0], acc[1] + q[1]]);
    [s[0] / n, s[1] / n]
}

/// Aligns a sequence of snapshots (each `(indices, points)`, oldest first) so that each is rotated
/// or reflected onto its aligned predecessor; points are matched by test-split index. Returns the
/// aligned points of every snapshot, centred at the origin.
pub(crate) fn align_sequence(seq: &[(&[u32], &[[f32; 2]])]) -> Vec<Vec<[f64; 2]>> {
    let mut out: Vec<Vec<[f64; 2]>> = Vec::with_capacity(seq.len());
    for (k, (idx, pts)) in seq.iter().enumerate() {
        let raw: Vec<[f64; 2]> = pts.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
        let c = centroid(&raw);
        let centred: Vec<[f64; 2]> = raw.iter().map(|p| [p[0] - c[0], p[1] - c[1]]).collect();
        if k == 0 {
            out.push(centred);
            continue;
        }
        let (prev_idx, prev) = (seq[k - 1].0, &out[k - 1]);
        let pos: HashMap<u32, usize> = prev_idx.iter().enumerate().map(|(i, &x)| (x, i)).collect();
        let (mut bs, mut as_) = (Vec::new(), Vec::new());
        for (i, &x) in idx.iter().enumerate() {
            if let (Some(&j), Some(p)) = (pos.get(&x), centred.get(i))
                && let Some(q) = prev.get(j)
            {
                bs.push(*p);
                as_.push(*q);
            }
        }
        let r = if bs.len() >= 2 {
            // Centre on the matched subsets so that unmatched points cannot bias the rotation.
            let (cb, ca) = (centroid(&bs), centroid(&as_));
            let bs: Vec<_> = bs.iter().map(|p| [p[0] - cb[0], p[1] - cb[1]]).collect();
            let as_: Vec<_> = as_.iter().map(|p| [p[0] - ca[0], p[1] - ca[1]]).collect();
            procrustes(&bs, &as_)
        } else {
            Orth2::IDENTITY
        };
        out.push(centred.iter().map(|p| r.apply(*p)).collect());
    }
    out
}

/// Picks at most `max` positions, class-stratified: each label keeps its share (at least one
/// point) and points are taken evenly spaced within the class. Deterministic, so the same
/// subset is shown at every epoch.
pub(crate) fn stratified_sample(labels: &[u32], max: usize) -> Vec<usize> {
    if labels.len() <= max {
        return (0..labels.len()).collect();
    }
    let mut by_class: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let n = labels.len() as f64;
    let mut out = Vec::with_capacity(max);
    for members in by_class.values() {
        let quota =
            ((members.len() as f64 * max as f64 / n).floor() as usize).clamp(1, members.len());
        for k in 0..quota {
            out.push(members[k * members.len() / quota]);
        }
    }
    out.truncate(max);
    out.sort_unstable();
    out
}

/// The `k` nearest other points of point `q` (Euclidean), closest first.
pub(crate) fn nearest(points: &[[f32; 2]], q: usize, k: usize) -> Vec<usize> {
    let p = points[q];
    let mut d: Vec<(f32, usize)> = points
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != q)
        .map(|(i, x)| ((x[0] - p[0]).powi(2) + (x[1] - p[1]).powi(2), i))
        .collect();
    let k = k.min(d.len());
    if k == 0 {
        return Vec::new();
    }
    d.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
    d.truncate(k);
    d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    d.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotate(p: &[[f64; 2]], deg: f64, flip: bool) -> Vec<[f64; 2]> {
        let (s, c) = deg.to_radians().sin_cos();
        p.iter()
            .map(|q| {
                let y = if flip { -q[1] } else { q[1] };
                [c * q[0] - s * y, s * q[0] + c * y]
            })
            .collect()
    }

    #[test]
    fn procrustes_undoes_rotation_and_reflection() {
        let a: Vec<[f64; 2]> = vec![[1.0, 0.0], [0.0, 2.0], [-1.5, -0.5], [0.5, -1.5]];
        let a = {
            let c = centroid(&a);
            a.iter()
                .map(|p| [p[0] - c[0], p[1] - c[1]])
                .collect::<Vec<_>>()
        };
        for (deg, flip) in [(37.0, false), (-120.0, false), (75.0, true), (180.0, true)] {
            let b = rotate(&a, deg, flip);
            let r = procrustes(&b, &a);
            for (p, q) in b.iter().zip(&a) {
                let back = r.apply(*p);
                assert!(
                    (back[0] - q[0]).abs() < 1e-9 && (back[1] - q[1]).abs() < 1e-9,
                    "{deg} {flip}"
                );
            }
        }
    }

    #[test]
    fn stratified_sample_is_bounded_and_keeps_every_class() {
        let labels: Vec<u32> = (0..5000)
            .map(|i| if i % 50 == 0 { 9 } else { (i % 3) as u32 })
            .collect();
        let s = stratified_sample(&labels, 1000);
        assert!(s.len() <= 1000 && s.len() > 900, "{}", s.len());
        for class in [0, 1, 2, 9] {
            assert!(s.iter().any(|&i| labels[i] == class));
        }
    }

    #[test]
    fn nearest_orders_by_distance() {
        let pts = [[0.0, 0.0], [5.0, 0.0], [1.0, 0.0], [2.0, 0.0]];
        assert_eq!(nearest(&pts, 0, 2), vec![2, 3]);
    }
}
