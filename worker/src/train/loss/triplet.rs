//! Triplet loss `max(0, d(a,p) − d(a,n) + m)` (plain distances, eps inside the sqrt) with
//! random (pre-sampled) triplets or online mining on a class-balanced batch:
//!
//! * `batch-all`: every valid (a, p, n) of the batch; the loss is averaged over the
//!   *active* (loss > 0) triplets only (Hermans et al. 2017), 0 if none is active.
//! * `batch-hard`: per anchor, the farthest positive and the closest negative; mean over
//!   anchors that have a positive.
//! * `semi-hard`: per (a, p) positive pair, the closest negative farther than p
//!   (d(a,n) > d(a,p)); if there is none, the farthest negative. Mean over positive pairs.
//!   This follows FaceNet's reference implementation (TensorFlow `triplet_semihard_loss`).

use burn::config::Config;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::{LossOutput, pairwise_distance, row_distance};

/// Online mining strategy (random triplets are handled by [`TripletLossConfig::sampled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnlineMining {
    BatchAll,
    BatchHard,
    SemiHard,
}

#[derive(Config, Debug)]
pub(crate) struct TripletLossConfig {
    #[config(default = 1.0)]
    pub(crate) margin: f64,
    #[config(default = 1e-9)]
    pub(crate) eps: f64,
}

/// Stand-in for "infinitely far" when masking distances before a min.
const FAR: f32 = 1e9;

/// Float masks `[N, N]` of positive (same label, i ≠ j) and negative pairs.
fn label_masks<B: Backend>(labels: &[u32], device: &B::Device) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let n = labels.len();
    let mut pos = vec![0f32; n * n];
    let mut neg = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            if labels[i] == labels[j] {
                if i != j {
                    pos[i * n + j] = 1.0;
                }
            } else {
                neg[i * n + j] = 1.0;
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(pos, [n, n]), device),
        Tensor::from_data(TensorData::new(neg, [n, n]), device),
    )
}

/// Semi-hard mining: for every (anchor i, positive j), `d[i, k]` of the closest negative `k`
/// farther than `j` (`d[i, k] > d[i, j]`), or of the farthest negative if there is none (0 if `i`
/// has no negative at all). `[N, N]`, differentiable through the chosen `d[i, k]`; rows `j` that
/// are not positives of `i` hold an arbitrary negative's distance (the caller masks them).
///
/// Why on the host: choosing is a comparison over the detached distances, and done as tensor
/// ops it builds and differentiates six `[N, N, N]` tensors per step (≈1.7 M elements each at
/// N = 120, more than the distance GEMM by far). Here it reads the `[N, N]` distances once,
/// sorts each anchor's negatives by distance and binary-searches each positive's distance in
/// them; the loss then gathers the chosen entries, so autodiff only sees `[N, N]` tensors.
fn semi_hard_negatives<B: Backend>(d: Tensor<B, 2>, labels: &[u32]) -> Tensor<B, 2> {
    let n = labels.len();
    let device = d.device();
    let dv = d
        .clone()
        .detach()
        .into_data()
        .to_vec::<f32>()
        .expect("f32 distances");
    let mut idx = vec![0i64; n * n];
    let mut has_neg = vec![0f32; n];
    let mut negs: Vec<usize> = Vec::with_capacity(n);
    for i in 0..n {
        let row = &dv[i * n..][..n];
        negs.clear();
        negs.extend((0..n).filter(|&k| labels[k] != labels[i]));
        // Ascending distance; among equal distances the lower index first.
        negs.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
        let Some(&farthest) = negs.last() else {
            continue; // no negative: the chosen distance is 0 (masked below)
        };
        has_neg[i] = 1.0;
        for j in (0..n).filter(|&j| j != i && labels[j] == labels[i]) {
            // First negative strictly farther than the positive.
            let at = negs.partition_point(|&k| row[k] <= row[j]);
            idx[i * n + j] = negs.get(at).copied().unwrap_or(farthest) as i64;
        }
    }
    let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(idx, [n, n]), &device);
    let has_neg = Tensor::<B, 2>::from_data(TensorData::new(has_neg, [n, 1]), &device);
    d.gather(1, idx) * has_neg
}

impl TripletLossConfig {
    /// Loss of explicit triplets: `a`, `p`, `n` are `[N, D]`.
    pub(crate) fn sampled<B: Backend>(
        &self,
        a: Tensor<B, 2>,
        p: Tensor<B, 2>,
        n: Tensor<B, 2>,
    ) -> LossOutput<B> {
        let d_ap = row_distance(a.clone(), p, self.eps); // [N]
        let d_an = row_distance(a, n, self.eps); // [N]
        let per = relu(d_ap - d_an + self.margin); // [N]
        LossOutput::all_eligible(per.clone().mean(), per.detach().greater_elem(0.0).float())
    }

    /// Online-mined loss over a batch `emb` `[N, D]` with `labels` `[N]`.
    pub(crate) fn online<B: Backend>(
        &self,
        emb: Tensor<B, 2>,
        labels: &[u32],
        mining: OnlineMining,
    ) -> LossOutput<B> {
        let device = emb.device();
        let n = labels.len();
        let (pos, neg) = label_masks::<B>(labels, &device); // [N, N] each
        let d = pairwise_distance(emb, self.eps); // [N, N]
        match mining {
            OnlineMining::BatchAll => {
                // l[i, j, k] = d[i, j] − d[i, k] + m over valid (j positive, k negative).
                let l = d.clone().reshape([n, n, 1]) - d.reshape([n, 1, n]) + self.margin; // [N, N, N]
                let valid = pos.reshape([n, n, 1]) * neg.reshape([n, 1, n]); // [N, N, N]
                let per = relu(l) * valid.clone(); // [N, N, N]
                let is_active = per.clone().detach().greater_elem(0.0).float(); // [N, N, N]
                let count = is_active.clone().sum().clamp_min(1.0); // [1]
                let loss = per.sum() / count;
                LossOutput {
                    loss,
                    active: is_active.reshape([n * n * n]),
                    eligible: valid.reshape([n * n * n]),
                }
            }
            OnlineMining::BatchHard => {
                let hardest_pos = (d.clone() * pos.clone()).max_dim(1); // [N, 1]
                let hardest_neg = (d.clone() + neg.neg().add_scalar(1.0) * FAR).min_dim(1); // [N, 1]
                let has_pos = pos.sum_dim(1).greater_elem(0.5).float(); // [N, 1]
                let per = relu(hardest_pos - hardest_neg + self.margin) * has_pos.clone(); // [N, 1]
                let loss = per.clone().sum() / has_pos.clone().sum().clamp_min(1.0);
                LossOutput {
                    loss,
                    active: per.detach().greater_elem(0.0).float().reshape([n]),
                    eligible: has_pos.reshape([n]),
                }
            }
            OnlineMining::SemiHard => {
                let chosen = semi_hard_negatives(d.clone(), labels); // [N, N]
                let per = relu(d - chosen + self.margin) * pos.clone(); // [N, N]
                let loss = per.clone().sum() / pos.clone().sum().clamp_min(1.0);
                LossOutput {
                    loss,
                    active: per.detach().greater_elem(0.0).float().reshape([n * n]),
                    eligible: pos.reshape([n * n]),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    /// Points on the x axis at 0, 1, 1.5, 4 with labels 0, 0, 1, 1. Distances:
    /// d01 = 1, d02 = 1.5, d03 = 4, d12 = 0.5, d13 = 3, d23 = 2.5.
    fn line() -> (Tensor<Ad, 2>, Vec<u32>) {
        (
            t2(&[&[0.0, 0.0], &[1.0, 0.0], &[1.5, 0.0], &[4.0, 0.0]]),
            vec![0, 0, 1, 1],
        )
    }

    #[test]
    fn sampled_matches_hand_computed_values() {
        let cfg = TripletLossConfig::new().with_margin(0.5);
        let a = t2(&[&[0.0, 0.0], &[0.0, 0.0]]);
        let p = t2(&[&[1.0, 0.0], &[0.0, 3.0]]);
        let n = t2(&[&[0.0, 2.0], &[1.0, 0.0]]);
        // relu(1 − 2 + 0.5) = 0; relu(3 − 1 + 0.5) = 2.5.
        let out = cfg.sampled(a, p, n);
        close(scalar(out.loss.clone()), 1.25);
        assert_eq!(vals(out.active), vec![0.0, 1.0]);
    }

    #[test]
    fn batch_hard_matches_hand_computed_values() {
        let (e, l) = line();
        // Anchors: (hp, hn) = (1, 1.5), (1, 0.5), (2.5, 0.5), (2.5, 3); m = 1.
        let out = TripletLossConfig::new().online(e, &l, OnlineMining::BatchHard);
        close(scalar(out.loss.clone()), (0.5 + 1.5 + 3.0 + 0.5) / 4.0);
        close(scalar(out.active_fraction()), 1.0);
    }

    #[test]
    fn batch_all_averages_over_active_triplets() {
        let (e, l) = line();
        // Active: 0.5 (0,1,2), 1.5 (1,0,2), 2 (2,3,0), 3 (2,3,1), 0.5 (3,2,1); 3 of 8 are 0.
        let out = TripletLossConfig::new().online(e, &l, OnlineMining::BatchAll);
        close(scalar(out.loss.clone()), 7.5 / 5.0);
        close(scalar(out.active_fraction()), 5.0 / 8.0);
    }

    #[test]
    fn semi_hard_matches_hand_computed_values() {
        let (e, l) = line();
        // (0,1): closest negative beyond 1 is 1.5 → 0.5; (1,0): 3 → 0;
        // (2,3): none beyond 2.5 → farthest 1.5 → 2; (3,2): 3 → 0.5.
        let out = TripletLossConfig::new().online(e, &l, OnlineMining::SemiHard);
        close(scalar(out.loss.clone()), (0.5 + 0.0 + 2.0 + 0.5) / 4.0);
        close(scalar(out.active_fraction()), 3.0 / 4.0);
    }

    /// The tensor formulation of semi-hard mining that [`semi_hard_negatives`] replaced
    /// (`[N, N, N]` masks and a masked min), kept as the reference it must match.
    fn semi_hard_reference(
        cfg: &TripletLossConfig,
        emb: Tensor<Ad, 2>,
        labels: &[u32],
    ) -> Tensor<Ad, 1> {
        let n = labels.len();
        let (pos, neg) = label_masks::<Ad>(labels, &emb.device());
        let d = pairwise_distance(emb, cfg.eps);
        let d_ap = d.clone().reshape([n, n, 1]);
        let d_an = d.clone().reshape([n, 1, n]);
        let farther = d_an.clone().detach().greater(d_ap.detach());
        let neg3 = neg.clone().reshape([n, 1, n]).greater_elem(0.5);
        let candidate = farther.bool_and(neg3.expand([n, n, n]));
        let outside = d_an
            .expand([n, n, n])
            .mask_fill(candidate.clone().bool_not(), FAR)
            .min_dim(2)
            .reshape([n, n]);
        let inside = (d.clone() * neg).max_dim(1).expand([n, n]);
        let has = candidate.any_dim(2).reshape([n, n]);
        let chosen = inside.mask_where(has, outside);
        let per = relu(d - chosen + cfg.margin) * pos.clone();
        per.sum() / pos.sum().clamp_min(1.0)
    }

    #[test]
    fn semi_hard_matches_the_tensor_formulation_in_value_and_gradient() {
        use burn::tensor::Distribution;
        let cfg = TripletLossConfig::new().with_margin(0.3);
        // A P x K batch (6 classes x 5), a batch with a single class (no negatives at all),
        // and a small dimension where many negatives fall inside the margin.
        let pk: Vec<u32> = (0..30).map(|i| i / 5).collect();
        for (labels, dim) in [(pk.clone(), 2), (pk, 16), (vec![3; 6], 4)] {
            let emb = Tensor::<Ad, 2>::random(
                [labels.len(), dim],
                Distribution::Default,
                &Default::default(),
            );
            let run = |reference: bool| {
                let e = emb.clone().require_grad();
                let loss = if reference {
                    semi_hard_reference(&cfg, e.clone(), &labels)
                } else {
                    cfg.online(e.clone(), &labels, OnlineMining::SemiHard).loss
                };
                let g = loss.backward();
                (vals(loss), vals(e.grad(&g).unwrap()))
            };
            let ((l, g), (l_ref, g_ref)) = (run(false), run(true));
            close(l[0], l_ref[0]);
            assert!(l_ref[0] > 0.0, "the case must have active triplets");
            for (a, b) in g.iter().zip(&g_ref) {
                assert!((a - b).abs() < 1e-5, "gradient {g:?} != {g_ref:?}");
            }
        }
    }

    #[test]
    fn gradients_pull_positive_and_push_negative() {
        let cfg = TripletLossConfig::new();
        let a = t2(&[&[0.0, 0.0]]).require_grad();
        let p = t2(&[&[1.0, 0.0]]).require_grad();
        let n = t2(&[&[0.0, 1.0]]).require_grad();
        let out = cfg.sampled(a.clone(), p.clone(), n.clone());
        let grads = out.loss.backward();
        let gp = vals(p.grad(&grads).unwrap());
        let gn = vals(n.grad(&grads).unwrap());
        // Descent moves p towards the anchor (−x) and n away from it (+y).
        assert!(gp[0] > 0.0 && gn[1] < 0.0, "{gp:?} {gn:?}");
        assert!(vals(a.grad(&grads).unwrap()).iter().all(|g| g.is_finite()));
    }
}
