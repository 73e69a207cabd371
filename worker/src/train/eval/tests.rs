//! Hand-worked examples, limiting cases (separated clusters, random labels, collapse), snapshot
//! subsets and projections.

use std::collections::{BTreeMap, HashMap};

use proto::metric;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::project::pca_2d;
use super::tests_brute::random_set;
use super::verification::{roc_auc, verification_pairs};
use super::*;

#[test]
fn map_at_r_hand_worked() {
    // 1-D points:  x = 0(A) 1(A) 2(B) 3(A) 5(B), plus a lone class C at 100 (R = 0, skipped).
    // Query (class, R): ranked other points (ties → lower index)   rel    P@1  RP   AP@R
    //   0 (A,2): 1(A) d=1, 2(B) d=2                                 1 0    1    1/2  (1/1)/2      = 1/2
    //   1 (A,2): 0(A) d=1 ties 2(B) d=1 → 0 first, then 2(B)        1 0    1    1/2  1/2
    //   2 (B,1): 1(A) d=1 ties 3(A) d=1 → 1 first                   0      0    0    0
    //   3 (A,2): 2(B) d=1, then 1(A) ties 4(B) at d=2 → 1(A)        0 1    0    1/2  (1/2)/2      = 1/4
    //   4 (B,1): 3(A) d=2                                           0      0    0    0
    // Means over the 5 non-lone queries: P@1 = 2/5, RP = 1.5/5 = 0.3, MAP@R = 1.25/5 = 0.25.
    let data = [0.0f32, 1.0, 2.0, 3.0, 5.0, 100.0];
    let labels = [0u32, 0, 1, 0, 1, 2];
    let nb = knn_search(&data, &data, 1, retrieval_k(&labels), true);
    assert_eq!(nb.k(), 2);
    let m = retrieval_metrics(&nb, &labels);
    assert_eq!(m.queries, 5);
    assert!((m.precision_at_1 - 0.4).abs() < 1e-12);
    assert!((m.r_precision - 0.3).abs() < 1e-12);
    assert!((m.map_at_r - 0.25).abs() < 1e-12);
}

#[test]
fn knn_vote_tie_goes_to_nearest_class() {
    // Train x: 0(7) 1(3) 2(3) -1.5(7); query 0.25 → distances 0.25, 0.75, 1.75, 1.75 (index 2 first).
    let train = [0.0f32, 1.0, 2.0, -1.5];
    let train_l = [7u32, 3, 3, 7];
    let nb = knn_search(&[0.25], &train, 1, 4, false);
    assert_eq!(nb.indices(0), &[0, 1, 2, 3]);
    assert_eq!(knn_accuracy(&nb, &train_l, &[7], 1), 1.0);
    assert_eq!(knn_accuracy(&nb, &train_l, &[3], 3), 1.0); // 7,3,3 → 3
    assert_eq!(knn_accuracy(&nb, &train_l, &[7], 4), 1.0); // 2–2 tie → 7 holds the nearest
    assert_eq!(knn_accuracy(&nb, &train_l, &[3], 4), 0.0);
}

#[test]
fn roc_auc_hand_worked() {
    // pos {3,2,2} vs neg {2,1}: 3>2, 3>1, 2=2 (½), 2>1, 2=2 (½), 2>1 → 5 of 6.
    assert!((roc_auc(&[3.0, 2.0, 2.0], &[2.0, 1.0]) - 5.0 / 6.0).abs() < 1e-15);
    assert_eq!(roc_auc(&[1.0], &[1.0]), 0.5);
    assert_eq!(roc_auc(&[0.0], &[1.0]), 0.0);
    assert!(roc_auc(&[], &[1.0]).is_nan());
}

#[test]
fn verification_pairs_are_valid_and_seeded() {
    let (_, labels) = random_set(500, 1, 6, 3, false);
    let a = verification_pairs(&labels, 300, 400, &mut metric_rng(5, 1));
    assert_eq!((a.same.len(), a.different.len()), (300, 400));
    assert!(
        a.same
            .iter()
            .all(|&(i, j)| i < j && labels[i as usize] == labels[j as usize])
    );
    assert!(
        a.different
            .iter()
            .all(|&(i, j)| i < j && labels[i as usize] != labels[j as usize])
    );
    assert_eq!(
        a,
        verification_pairs(&labels, 300, 400, &mut metric_rng(5, 1))
    );
    assert_ne!(
        a,
        verification_pairs(&labels, 300, 400, &mut metric_rng(6, 1))
    );
    // Small sets use every pair exactly once: 3 classes of 2 → 3 same, 12 different.
    let all = verification_pairs(&[0, 0, 1, 1, 2, 2], 100, 100, &mut metric_rng(0, 1));
    assert_eq!(all.same, vec![(0, 1), (2, 3), (4, 5)]);
    assert_eq!(all.different.len(), 12);
}

/// `per_class` points per class in `classes` tight, far-apart clusters of width `dim`.
fn clusters(classes: u32, per_class: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut data, mut labels) = (Vec::new(), Vec::new());
    for i in 0..classes as usize * per_class {
        let c = (i % classes as usize) as u32;
        for d in 0..dim {
            let centre = if d == c as usize % dim {
                100.0 * (1 + c as usize / dim) as f32
            } else {
                0.0
            };
            data.push(centre + rng.random::<f32>());
        }
        labels.push(c);
    }
    (data, labels)
}

#[test]
fn separated_clusters_score_perfectly() {
    for dim in [2, 8] {
        let (tr, trl) = clusters(12, 20, dim, 1);
        let (te, tel) = clusters(12, 15, dim, 2);
        let m = evaluate(
            &EmbeddingSet {
                data: &tr,
                dim,
                labels: &trl,
            },
            &EmbeddingSet {
                data: &te,
                dim,
                labels: &tel,
            },
            9,
        );
        assert_eq!(
            m.keys().map(String::as_str).collect::<Vec<_>>().len(),
            metric::EVAL.len() + metric::ONE_SHOT_SE.len() + 1
        );
        for key in metric::EVAL {
            if key == metric::ONE_SHOT_20WAY {
                // 12 classes: no 20-way trial exists.
                assert!(m[key].is_nan(), "dim {dim} {key}");
            } else {
                assert_eq!(m[key], 1.0, "dim {dim} {key}");
            }
        }
        assert_eq!(m[metric::ONE_SHOT_5WAY_SE], 0.0);
    }
}

#[test]
fn random_labels_score_near_chance() {
    let (tr, _) = random_set(1000, 8, 5, 1, false);
    let (te, _) = random_set(1000, 8, 5, 2, false);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let trl: Vec<u32> = (0..1000).map(|_| rng.random_range(0..5)).collect();
    let tel: Vec<u32> = (0..1000).map(|_| rng.random_range(0..5)).collect();
    let m = evaluate(
        &EmbeddingSet {
            data: &tr,
            dim: 8,
            labels: &trl,
        },
        &EmbeddingSet {
            data: &te,
            dim: 8,
            labels: &tel,
        },
        4,
    );
    for key in [
        metric::KNN1_ACC,
        metric::KNN5_ACC,
        metric::PRECISION_AT_1,
        metric::R_PRECISION,
        metric::ONE_SHOT_5WAY,
    ] {
        assert!((m[key] - 0.2).abs() < 0.05, "{key} = {}", m[key]);
    }
    // AP@R divides by R, not by the hits: with hit rate p and R ≈ 200 its chance level is
    // (1/R) Σ_i p·(1 + (i − 1)p)/i = p² + p(1 − p)·H_R/R ≈ 0.04 + 0.16·5.9/200 ≈ 0.045.
    assert!(
        (m[metric::MAP_AT_R] - 0.045).abs() < 0.01,
        "map_at_r = {}",
        m[metric::MAP_AT_R]
    );
    assert!(
        (m[metric::ROC_AUC] - 0.5).abs() < 0.03,
        "roc_auc = {}",
        m[metric::ROC_AUC]
    );
    // Only 5 classes: there are no 10- or 20-way trials.
    for key in [
        metric::ONE_SHOT_10WAY,
        metric::ONE_SHOT_20WAY,
        metric::ONE_SHOT_10WAY_SE,
        metric::ONE_SHOT_20WAY_SE,
    ] {
        assert!(m[key].is_nan(), "{key} = {}", m[key]);
    }
    let se = m[metric::ONE_SHOT_5WAY_SE];
    assert!(se > 0.0 && se <= 0.005, "{se}");
}

#[test]
fn collapsed_embedding_gives_exact_chance_one_shot() {
    let labels: Vec<u32> = (0..300).map(|i| i % 30).collect();
    let data = vec![1.5f32; 300 * 4];
    let set = EmbeddingSet {
        data: &data,
        dim: 4,
        labels: &labels,
    };
    for n in [5, 10, 20] {
        let r = one_shot_accuracy(&set, n, 200, &mut metric_rng(1, 0));
        assert!(
            (r.accuracy - 1.0 / n as f64).abs() < 1e-12,
            "{n}-way: {r:?}"
        );
        // Every trial scores exactly 1/N: no spread between trials.
        assert!(r.se.abs() < 1e-9, "{n}-way: {r:?}");
    }
    // 10 classes only: a 20-way trial does not exist, so it is NaN (not a 10-way score).
    let few: Vec<u32> = (0..300).map(|i| i % 10).collect();
    let set = EmbeddingSet {
        data: &data,
        dim: 4,
        labels: &few,
    };
    let r = one_shot_accuracy(&set, 20, 100, &mut metric_rng(1, 0));
    assert!(r.accuracy.is_nan() && r.se.is_nan(), "{r:?}");
    assert!((one_shot_accuracy(&set, 10, 100, &mut metric_rng(1, 0)).accuracy - 0.1).abs() < 1e-12);
    assert!(
        one_shot_accuracy(
            &EmbeddingSet {
                labels: &[0; 300],
                ..set
            },
            5,
            100,
            &mut metric_rng(1, 0)
        )
        .accuracy
        .is_nan()
    );
}

#[test]
fn one_shot_standard_error_is_the_trial_spread() {
    // Two well-separated classes, one of them hard: points of class 1 sit on class 0's spot
    // half of the time. 2-way trials then score 1 or 0 (or 1/2 on a tie), and the standard
    // error must be the sample standard deviation of those scores over sqrt(trials).
    let labels: Vec<u32> = (0..40).map(|i| i % 4).collect();
    let data: Vec<f32> = (0..40)
        .map(|i| {
            if i % 4 == 1 && i % 8 == 1 {
                0.0
            } else {
                (i % 4) as f32 * 10.0
            }
        })
        .collect();
    let set = EmbeddingSet {
        data: &data,
        dim: 1,
        labels: &labels,
    };
    let trials = 4000;
    let r = one_shot_accuracy(&set, 2, trials, &mut metric_rng(3, 0));
    assert!(r.accuracy > 0.5 && r.accuracy < 1.0, "{r:?}");
    // Bounded by the Bernoulli case: sqrt(p(1-p)/n), and it shrinks as 1/sqrt(trials).
    let bound = (r.accuracy * (1.0 - r.accuracy) / trials as f64).sqrt();
    assert!(r.se > 0.0 && r.se <= bound * 1.01, "{r:?} vs {bound}");
    let quarter = one_shot_accuracy(&set, 2, trials / 4, &mut metric_rng(3, 0));
    assert!(
        (quarter.se / r.se - 2.0).abs() < 0.3,
        "{quarter:?} vs {r:?}"
    );
    // The protocol's trial count meets the bound whatever the accuracy, with the sample
    // variance's n - 1 (10,000 trials would not: 0.0050002 at accuracy 1/2).
    assert!((0.25 / (super::ONE_SHOT_TRIALS - 1) as f64).sqrt() <= 0.005);
}

#[test]
fn evaluate_is_deterministic_and_guards_non_finite() {
    let (tr, trl) = random_set(300, 3, 6, 1, true);
    let (mut te, tel) = random_set(200, 3, 6, 2, true);
    let train = EmbeddingSet {
        data: &tr,
        dim: 3,
        labels: &trl,
    };
    let a = evaluate(
        &train,
        &EmbeddingSet {
            data: &te,
            dim: 3,
            labels: &tel,
        },
        1,
    );
    let bits = |m: &BTreeMap<String, f64>| -> Vec<(String, u64)> {
        m.iter().map(|(k, v)| (k.clone(), v.to_bits())).collect()
    };
    let again = evaluate(
        &train,
        &EmbeddingSet {
            data: &te,
            dim: 3,
            labels: &tel,
        },
        1,
    );
    assert_eq!(bits(&a), bits(&again));
    assert_ne!(
        a[metric::ROC_AUC],
        evaluate(
            &train,
            &EmbeddingSet {
                data: &te,
                dim: 3,
                labels: &tel
            },
            2
        )[metric::ROC_AUC]
    );
    te[5] = f32::NAN;
    let bad = evaluate(
        &train,
        &EmbeddingSet {
            data: &te,
            dim: 3,
            labels: &tel,
        },
        1,
    );
    assert_eq!(bad.len(), evaluation_keys().count());
    assert!(bad.values().all(|v| v.is_nan()));
}

#[test]
fn without_a_reference_knn_is_nan_and_the_rest_is_unchanged() {
    let (tr, trl) = random_set(300, 3, 6, 1, false);
    let (te, tel) = random_set(200, 3, 6, 2, false);
    let test = EmbeddingSet {
        data: &te,
        dim: 3,
        labels: &tel,
    };
    let train = EmbeddingSet {
        data: &tr,
        dim: 3,
        labels: &trl,
    };
    let with = evaluate_sets(Some(&train), &test, 5);
    let without = evaluate_sets(None, &test, 5);
    for key in evaluation_keys() {
        if key.starts_with("knn") {
            assert!(without[key].is_nan() && with[key].is_finite(), "{key}");
        } else {
            assert_eq!(with[key].to_bits(), without[key].to_bits(), "{key}");
        }
    }
}

#[test]
fn spread_is_the_rms_distance_to_the_centroid() {
    // Four corners of a 2 x 2 square around (1, 1): every point is sqrt(2) from the centre.
    let data = [0.0f32, 0.0, 2.0, 0.0, 0.0, 2.0, 2.0, 2.0];
    assert!((spread(&data, 2) - 2f64.sqrt()).abs() < 1e-12);
    assert_eq!(spread(&[3.0, 3.0, 3.0, 3.0], 2), 0.0);
    assert!(spread(&[], 2).is_nan());
    assert!(collapsed(0.05) && collapsed(f64::NAN) && !collapsed(0.5) && !collapsed(f64::INFINITY));
}

#[test]
fn degenerate_sets_give_nan_not_panics() {
    let one = [0.5f32, 1.0];
    let empty = EmbeddingSet {
        data: &[],
        dim: 2,
        labels: &[],
    };
    let single = EmbeddingSet {
        data: &one,
        dim: 2,
        labels: &[3],
    };
    for (train, test) in [
        (&empty, &single),
        (&single, &empty),
        (&single, &single),
        (&empty, &empty),
    ] {
        let m = evaluate(train, test, 0);
        assert_eq!(m.len(), evaluation_keys().count());
        for key in metric::EVAL {
            let defined =
                key.starts_with("knn") && !train.labels.is_empty() && !test.labels.is_empty();
            assert_eq!(m[key].is_nan(), !defined, "{key}");
        }
    }
    // One class: neighbours and pairs of the same class exist, different-class ones do not.
    let (data, _) = random_set(30, 2, 1, 0, false);
    let set = EmbeddingSet {
        data: &data,
        dim: 2,
        labels: &[4; 30],
    };
    let m = evaluate(&set, &set, 0);
    for key in [
        metric::KNN1_ACC,
        metric::KNN5_ACC,
        metric::PRECISION_AT_1,
        metric::R_PRECISION,
        metric::MAP_AT_R,
    ] {
        assert_eq!(m[key], 1.0, "{key}");
    }
    for key in [
        metric::ROC_AUC,
        metric::ONE_SHOT_5WAY,
        metric::ONE_SHOT_10WAY,
        metric::ONE_SHOT_20WAY,
    ] {
        assert!(m[key].is_nan(), "{key}");
    }
}

#[test]
fn snapshot_subset_is_stratified_sorted_and_stable() {
    let labels: Vec<u32> = (0..1000u32)
        .map(|i| {
            if i < 600 {
                0
            } else if i < 900 {
                1
            } else {
                2 + i % 2
            }
        })
        .collect();
    let s = snapshot_subset(&labels, 101, 7);
    assert_eq!(s.len(), 101);
    assert!(s.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(s, snapshot_subset(&labels, 101, 7));
    assert_ne!(s, snapshot_subset(&labels, 101, 8));
    let mut per: HashMap<u32, usize> = HashMap::new();
    for &i in &s {
        *per.entry(labels[i as usize]).or_default() += 1;
    }
    // Exact shares 60.6 / 30.3 / 5.05 / 5.05 → floors 60/30/5/5 and the one leftover to 0 (0.6).
    assert_eq!((per[&0], per[&1], per[&2], per[&3]), (61, 30, 5, 5));
    assert_eq!(
        snapshot_subset(&labels[..10], 50, 1),
        (0..10).collect::<Vec<u32>>()
    );
}

#[test]
fn project_2d_passes_through_low_dims() {
    let d2 = [1.0f32, 2.0, 3.0, 4.0];
    assert_eq!(project_2d(&d2, 2), (vec![[1.0, 2.0], [3.0, 4.0]], false));
    assert_eq!(
        project_2d(&[5.0, 6.0], 1),
        (vec![[5.0, 0.0], [6.0, 0.0]], false)
    );
}

/// Points `3a·u + b·v + 0.001·noise + 7` in `dim ≥ 4` dims for orthonormal u, v (`n` multiple of 20).
fn plane_data(dim: usize, n: usize) -> (Vec<f32>, Vec<f64>, Vec<f64>) {
    let (mut u, mut v) = (vec![0.0; dim], vec![0.0; dim]);
    (u[1], u[dim - 1]) = (-0.8, 0.6); // largest |·| is negative, so PCA must return −u
    (v[0], v[2]) = (0.8, -0.6);
    let mut rng = ChaCha8Rng::seed_from_u64(dim as u64);
    let mut data = Vec::new();
    for i in 0..n {
        // A full 20 × (n/20) grid of (a, b): exactly uncorrelated in-sample, so the sample's
        // principal axes are u and v themselves up to the tiny noise.
        let (a, b) = (
            (i % 20) as f64 / 20.0 - 0.475,
            (i / 20) as f64 / (n / 20) as f64 - 0.5,
        );
        for d in 0..dim {
            let noise = 0.001 * (rng.random::<f64>() - 0.5);
            data.push((3.0 * a * u[d] + b * v[d] + noise + 7.0) as f32);
        }
    }
    (data, u, v)
}

#[test]
fn pca_recovers_known_axes_with_fixed_signs() {
    // dim 100 exercises the subspace-iteration path, the others Jacobi.
    for dim in [4, 10, 100] {
        let (data, u, v) = plane_data(dim, 600);
        let pca = pca_2d(&data, dim);
        let neg_u: Vec<f64> = u.iter().map(|x| -x).collect();
        for (got, want) in [(&pca.axes[0], &neg_u), (&pca.axes[1], &v)] {
            let err: f64 = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(err < 1e-3, "dim {dim}: axis error {err}");
        }
        // Grid variances: Var(3a) = 9·(20² − 1)/(12·20²), Var(b) = (30² − 1)/(12·30²).
        let (va, vb) = (9.0 * 399.0 / 4800.0, 899.0 / 10800.0);
        assert!(
            (pca.variances[0] / va - 1.0).abs() < 1e-3
                && (pca.variances[1] / vb - 1.0).abs() < 1e-3
        );
        let (pts, projected) = project_2d(&data, dim);
        assert!(projected);
        let var0: f64 = pts.iter().map(|p| f64::from(p[0]).powi(2)).sum::<f64>() / 600.0;
        assert!((var0 / pca.variances[0] - 1.0).abs() < 1e-4);
    }
}

#[test]
fn subspace_iteration_matches_jacobi() {
    // Just above the Jacobi cut-off, so pca_2d takes the subspace path.
    const D: usize = 72;
    const N: usize = 300;
    const { assert!(D > project::JACOBI_MAX_DIM) };
    // A spread spectrum: D random directions with weights 1/(1+j).
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let w: Vec<f64> = (0..D * D).map(|_| rng.random::<f64>() - 0.5).collect();
    let mut data = vec![0f32; N * D];
    for row in data.chunks_exact_mut(D) {
        for j in 0..D {
            let a = (rng.random::<f64>() - 0.5) / (1 + j) as f64;
            row.iter_mut()
                .zip(&w[j * D..(j + 1) * D])
                .for_each(|(x, wd)| *x += (a * wd) as f32);
        }
    }
    let pca = pca_2d(&data, D);
    let mut mean = vec![0f64; D];
    for row in data.chunks_exact(D) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, &x)| *m += f64::from(x) / N as f64);
    }
    let mut cov = vec![0f64; D * D];
    for row in data.chunks_exact(D) {
        for i in 0..D {
            for j in 0..D {
                cov[i * D + j] +=
                    (f64::from(row[i]) - mean[i]) * (f64::from(row[j]) - mean[j]) / N as f64;
            }
        }
    }
    let (vals, vecs) = project::jacobi_eigen(cov.clone(), D);
    for j in 0..2 {
        assert!((vals[j] - pca.variances[j]).abs() < 1e-9 * vals[0]);
        let cos: f64 = vecs[j].iter().zip(&pca.axes[j]).map(|(a, b)| a * b).sum();
        assert!(cos.abs() > 1.0 - 1e-8, "axis {j}: |cos| = {}", cos.abs());
        // A·v = λ·v for the Jacobi vectors themselves.
        for i in 0..D {
            let av: f64 = (0..D).map(|k| cov[i * D + k] * vecs[j][k]).sum();
            assert!((av - vals[j] * vecs[j][i]).abs() < 1e-10);
        }
    }
}

/// 10,000 × 10,000 at D = 2 and D = 32 (all metrics); slow unoptimised, so opt-in:
/// `cargo test -p latentsweep-worker --release --lib eval_10k -- --ignored --nocapture`.
#[test]
#[ignore = "large; run in release"]
fn eval_10k_completes() {
    for dim in [2, 32] {
        let (tr, _) = random_set(10_000, dim, 10, 1, false);
        let (te, _) = random_set(10_000, dim, 10, 2, false);
        // Labels follow the first coordinate so the metrics are informative, not chance.
        let lab = |x: &[f32]| {
            x.chunks_exact(dim)
                .map(|r| ((r[0] + 2.0) * 2.5) as u32)
                .collect::<Vec<u32>>()
        };
        let (trl, tel) = (lab(&tr), lab(&te));
        let t = std::time::Instant::now();
        let m = evaluate(
            &EmbeddingSet {
                data: &tr,
                dim,
                labels: &trl,
            },
            &EmbeddingSet {
                data: &te,
                dim,
                labels: &tel,
            },
            0,
        );
        println!("D={dim}: evaluate 10k x 10k in {:.2?}: {m:?}", t.elapsed());
        assert!(m.values().all(|v| v.is_finite()));
    }
}
