//! The head-scored metrics against brute force: the generic search and the head's one-shot and
//! verification scores are recomputed here from the full score matrix.

use super::head::{HeadScorer, head_metrics, search_by};
use super::knn::sq_dist;
use super::tests_brute::{pairwise_auc, random_set};
use super::*;

/// (precision@1, R-precision, MAP@R) from a full similarity matrix, ranked by (score desc, index).
fn brute_retrieval_by(
    data: &[f32],
    labels: &[u32],
    dim: usize,
    sim: &dyn Fn(&[f32], &[f32]) -> f64,
) -> (f64, f64, f64) {
    let n = labels.len();
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let (mut p1, mut rp, mut map, mut q) = (0.0, 0.0, 0.0, 0usize);
    for i in 0..n {
        let r = labels.iter().filter(|&&l| l == labels[i]).count() - 1;
        if r == 0 {
            continue;
        }
        let mut order: Vec<(f64, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (sim(row(i), row(j)), j))
            .collect();
        order.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
        let rel: Vec<bool> = order[..r]
            .iter()
            .map(|&(_, j)| labels[j] == labels[i])
            .collect();
        p1 += f64::from(u8::from(rel[0]));
        rp += rel.iter().filter(|&&x| x).count() as f64 / r as f64;
        let (mut hits, mut ap) = (0, 0.0);
        for (k, &x) in rel.iter().enumerate() {
            if x {
                hits += 1;
                ap += f64::from(hits) / (k + 1) as f64;
            }
        }
        map += ap / r as f64;
        q += 1;
    }
    let q = q as f64;
    (p1 / q, rp / q, map / q)
}

#[test]
fn generic_search_under_l2_equals_the_blocked_search() {
    for (dim, grid) in [(3, true), (5, false)] {
        let (data, labels) = random_set(150, dim, 6, 11, grid);
        let set = EmbeddingSet {
            data: &data,
            dim,
            labels: &labels,
        };
        let k = retrieval_k(&labels);
        let blocked = knn_search(&data, &data, dim, k, true);
        let generic = search_by(&set, k, |a, b| -f64::from(sq_dist(a, b)));
        for q in 0..labels.len() {
            assert_eq!(blocked.indices(q), generic.indices(q), "query {q}");
        }
    }
}

#[test]
fn head_metrics_equal_brute_force() {
    let dim = 4;
    let (data, labels) = random_set(240, dim, 8, 5, false);
    let set = EmbeddingSet {
        data: &data,
        dim,
        labels: &labels,
    };
    let head = HeadScorer {
        weight: vec![-1.5, -0.2, -0.7, 0.3],
        bias: 0.4,
    };
    let logit = |a: &[f32], b: &[f32]| -> f64 {
        0.4 + a
            .iter()
            .zip(b)
            .zip(&head.weight)
            .map(|((x, y), w)| f64::from(*w) * f64::from((x - y).abs()))
            .sum::<f64>()
    };
    let m = head_metrics(&set, &head, 17);
    // 240 points: under HEAD_RETRIEVAL_MAX, so retrieval ranks the whole set.
    let (p1, rp, map) = brute_retrieval_by(&data, &labels, dim, &logit);
    assert!((m[metric::HEAD_PRECISION_AT_1] - p1).abs() < 1e-12);
    assert!((m[metric::HEAD_R_PRECISION] - rp).abs() < 1e-12);
    assert!((m[metric::HEAD_MAP_AT_R] - map).abs() < 1e-12);
    // Verification: the seeded pairs, scored by the logit, AUC by counting.
    let pairs = verification::verification_pairs(
        &labels,
        VERIFICATION_PAIRS,
        VERIFICATION_PAIRS,
        &mut metric_rng(17, 1),
    );
    let row = |i: u32| &data[i as usize * dim..(i as usize + 1) * dim];
    let pos: Vec<f64> = pairs
        .same
        .iter()
        .map(|&(a, b)| logit(row(a), row(b)))
        .collect();
    let neg: Vec<f64> = pairs
        .different
        .iter()
        .map(|&(a, b)| logit(row(a), row(b)))
        .collect();
    let auc = pairwise_auc(&pos, &neg);
    assert!((m[metric::HEAD_ROC_AUC] - auc).abs() < 1e-12);
    // One-shot: 8 classes, so 5-way exists and 20-way does not.
    assert!((0.0..=1.0).contains(&m[metric::HEAD_ONE_SHOT_5WAY]));
    assert!(m[metric::HEAD_ONE_SHOT_20WAY].is_nan());
    // A head that is minus the L1 distance scores one-shot like the L1 nearest support.
    let l1 = HeadScorer {
        weight: vec![-1.0; dim],
        bias: 0.0,
    };
    let by_head = head_metrics(&set, &l1, 3)[metric::HEAD_ONE_SHOT_5WAY];
    let by_l1 = oneshot::one_shot_by(&set, 5, ONE_SHOT_TRIALS, &mut metric_rng(3, 105), |a, b| {
        a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).sum()
    })
    .accuracy;
    assert_eq!(by_head, by_l1);
}
