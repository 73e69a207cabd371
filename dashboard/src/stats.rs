//! Seed statistics: a metric's summary over runs (mean, std, n, Student-t 95% CI) and the
//! two-sample test that decides whether one cell beats another (paired t-test on shared seeds,
//! else Welch's t-test). Distributions come from `statrs`, not hand-written code.
//!
//! README, "Seeds and significance", documents the rules; the tests pin them against R's
//! `t.test` output on R's own `sleep` data.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Two-sided significance threshold: a difference is significant when `p < ALPHA`.
pub const ALPHA: f64 = 0.05;
/// Coverage of every confidence interval shown.
pub const CONFIDENCE: f64 = 0.95;

/// Summary of a metric over a group of runs (the seeds of a cell, or a whole pivot cell).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator); 0 for a single run.
    pub std: f64,
    /// The 95% Student-t confidence interval of the mean; `None` for a single run.
    pub ci: Option<(f64, f64)>,
    pub max: f64,
}

impl Summary {
    /// Summary of the finite values; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = sample_std(&v, mean);
        let ci = (n > 1).then(|| {
            let h = t_quantile(n as f64 - 1.0) * std / (n as f64).sqrt();
            (mean - h, mean + h)
        });
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Summary {
            n,
            mean,
            std,
            ci,
            max,
        })
    }
}

fn sample_std(v: &[f64], mean: f64) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let ss: f64 = v.iter().map(|x| (x - mean).powi(2)).sum();
    (ss / (v.len() - 1) as f64).sqrt()
}

/// The two-sided `CONFIDENCE` quantile of Student's t with `df` degrees of freedom.
fn t_quantile(df: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, df) {
        Ok(t) => t.inverse_cdf(0.5 + CONFIDENCE / 2.0),
        // df is at least 1 wherever this is called; a NaN df (from NaN input) gives no interval.
        Err(_) => f64::NAN,
    }
}

/// Two-sided p-value of a t statistic.
fn two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_infinite() {
        return 0.0;
    }
    match StudentsT::new(0.0, 1.0, df) {
        Ok(d) => (2.0 * d.sf(t.abs())).min(1.0),
        Err(_) => f64::NAN,
    }
}

/// Which test compared two cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKind {
    /// Paired t-test on the per-seed (per-pair) differences.
    Paired,
    /// Welch's unequal-variance t-test.
    Welch,
}

impl TestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TestKind::Paired => "paired t",
            TestKind::Welch => "Welch t",
        }
    }
}

/// The difference `a - b` of two cells' means with its 95% CI and two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub kind: TestKind,
    /// Pairs (paired) or `n_a + n_b` runs (Welch) that entered the test.
    pub n: usize,
    pub diff: f64,
    /// `None` when there are too few runs to test (fewer than 2 pairs, or fewer than 2 runs on
    /// a side), and then `p` is `None` as well.
    pub ci: Option<(f64, f64)>,
    pub p: Option<f64>,
}

impl Comparison {
    /// Whether `a` is significantly better (higher) than `b`.
    pub fn a_significantly_better(&self) -> bool {
        self.diff > 0.0 && self.p.is_some_and(|p| p < ALPHA)
    }
}

/// Compares two groups of `(pair key, value)`: paired on the keys both share when there are at
/// least two such pairs, Welch's test on all values otherwise. A key names everything a run
/// shares with its partner (its seed, and any other axis not being compared); when a key occurs
/// twice on one side the runs do not pair one to one, and Welch's test is used.
pub fn compare(a: &[(String, f64)], b: &[(String, f64)]) -> Comparison {
    let a: Vec<&(String, f64)> = a.iter().filter(|(_, v)| v.is_finite()).collect();
    let b: Vec<&(String, f64)> = b.iter().filter(|(_, v)| v.is_finite()).collect();
    let unique = |side: &[&(String, f64)]| {
        let mut keys: Vec<&str> = side.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        keys.windows(2).all(|w| w[0] != w[1])
    };
    let diffs: Vec<f64> = if unique(&a) && unique(&b) {
        a.iter()
            .filter_map(|(k, va)| b.iter().find(|(kb, _)| kb == k).map(|(_, vb)| va - vb))
            .collect()
    } else {
        Vec::new()
    };
    if diffs.len() >= 2 {
        return paired(&diffs);
    }
    let va: Vec<f64> = a.iter().map(|(_, v)| *v).collect();
    let vb: Vec<f64> = b.iter().map(|(_, v)| *v).collect();
    welch(&va, &vb)
}

/// Paired t-test on differences (R: `t.test(a, b, paired = TRUE)`).
pub fn paired(diffs: &[f64]) -> Comparison {
    let n = diffs.len();
    let mean = diffs.iter().sum::<f64>() / n.max(1) as f64;
    let mut c = Comparison {
        kind: TestKind::Paired,
        n,
        diff: mean,
        ci: None,
        p: None,
    };
    if n < 2 {
        return c;
    }
    let df = n as f64 - 1.0;
    let se = sample_std(diffs, mean) / (n as f64).sqrt();
    c.ci = Some(interval(mean, se, df));
    c.p = Some(p_of(mean, se, df));
    c
}

/// Welch's two-sample t-test (R: `t.test(a, b)`).
pub fn welch(a: &[f64], b: &[f64]) -> Comparison {
    let (na, nb) = (a.len(), b.len());
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (ma, mb) = (mean(a), mean(b));
    let mut c = Comparison {
        kind: TestKind::Welch,
        n: na + nb,
        diff: ma - mb,
        ci: None,
        p: None,
    };
    if na < 2 || nb < 2 {
        return c;
    }
    let (qa, qb) = (
        sample_std(a, ma).powi(2) / na as f64,
        sample_std(b, mb).powi(2) / nb as f64,
    );
    let se = (qa + qb).sqrt();
    // Welch–Satterthwaite; with both variances 0 the df is undefined, and any df gives the
    // same degenerate answer below.
    let df = if se > 0.0 {
        (qa + qb).powi(2) / (qa.powi(2) / (na - 1) as f64 + qb.powi(2) / (nb - 1) as f64)
    } else {
        (na + nb - 2) as f64
    };
    c.ci = Some(interval(c.diff, se, df));
    c.p = Some(p_of(c.diff, se, df));
    c
}

fn interval(mean: f64, se: f64, df: f64) -> (f64, f64) {
    let h = t_quantile(df) * se;
    (mean - h, mean + h)
}

/// p-value of `mean / se`; without any spread, a non-zero difference is certain and a zero
/// one is not a difference at all.
fn p_of(mean: f64, se: f64, df: f64) -> f64 {
    if se == 0.0 {
        return if mean == 0.0 { 1.0 } else { 0.0 };
    }
    two_sided_p(mean / se, df)
}

#[cfg(test)]
mod tests {
    use super::*;

    // R's `sleep` data set: extra hours of sleep under two drugs, ten patients.
    const DRUG1: [f64; 10] = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0];
    const DRUG2: [f64; 10] = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4];

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() < tol, "{a} vs {b}");
    }

    fn keyed(v: &[f64]) -> Vec<(String, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, x)| (format!("seed={i}"), *x))
            .collect()
    }

    #[test]
    fn summary_ci_matches_r() {
        // R: t.test(c(0.7, -1.6, ...))$conf.int -> -0.5297804 2.0297804 (mean 0.75)
        let s = Summary::of(&DRUG1).unwrap();
        assert_eq!(s.n, 10);
        close(s.mean, 0.75, 1e-12);
        close(s.std, 1.789010, 1e-6);
        let (lo, hi) = s.ci.unwrap();
        close(lo, -0.5297804, 1e-6);
        close(hi, 2.0297804, 1e-6);
        // qt(0.975, 2) = 4.302653: three seeds give a wide interval.
        let s = Summary::of(&[1.0, 2.0, 3.0]).unwrap();
        close(s.ci.unwrap().1 - 2.0, 4.302653 / 3f64.sqrt(), 1e-6);
    }

    #[test]
    fn one_run_has_no_spread_and_no_interval() {
        let s = Summary::of(&[0.4575]).unwrap();
        assert_eq!((s.n, s.std, s.ci), (1, 0.0, None));
        assert_eq!(Summary::of(&[f64::NAN]), None);
    }

    #[test]
    fn paired_matches_r() {
        // R: t.test(sleep$extra[1:10], sleep$extra[11:20], paired = TRUE)
        //    t = -4.0621, df = 9, p-value = 0.002833, CI -2.4598858 -0.7001142
        let c = compare(&keyed(&DRUG1), &keyed(&DRUG2));
        assert_eq!(c.kind, TestKind::Paired);
        assert_eq!(c.n, 10);
        close(c.diff, -1.58, 1e-12);
        close(c.p.unwrap(), 0.002833, 1e-6);
        let (lo, hi) = c.ci.unwrap();
        close(lo, -2.4598858, 1e-6);
        close(hi, -0.7001142, 1e-6);
        assert!(!c.a_significantly_better());
        assert!(compare(&keyed(&DRUG2), &keyed(&DRUG1)).a_significantly_better());
    }

    #[test]
    fn welch_matches_r_when_nothing_pairs() {
        // R: t.test(sleep$extra[1:10], sleep$extra[11:20])
        //    t = -1.8608, df = 17.776, p-value = 0.07939, CI -3.3654832 0.2054832
        let b: Vec<(String, f64)> = DRUG2
            .iter()
            .enumerate()
            .map(|(i, x)| (format!("seed={}", i + 100), *x))
            .collect();
        let c = compare(&keyed(&DRUG1), &b);
        assert_eq!(c.kind, TestKind::Welch);
        close(c.p.unwrap(), 0.07939, 1e-5);
        let (lo, hi) = c.ci.unwrap();
        close(lo, -3.3654832, 1e-6);
        close(hi, 0.2054832, 1e-6);
    }

    #[test]
    fn pairing_decides_significance() {
        // Seeds move both cells together: unpaired the gap drowns in seed noise, paired it is
        // a consistent +0.01.
        let a = [0.50, 0.60, 0.70];
        let b = [0.49, 0.59, 0.69];
        let paired = compare(&keyed(&a), &keyed(&b));
        assert_eq!(paired.kind, TestKind::Paired);
        assert_eq!(paired.p, Some(0.0));
        assert!(paired.a_significantly_better());
        let w = welch(&a, &b);
        assert!(w.p.unwrap() > 0.8, "{w:?}");
    }

    #[test]
    fn runs_that_do_not_pair_one_to_one_use_welch() {
        // Two runs of `a` share seed 0 (they differ in an axis the key leaves out).
        let a = vec![
            ("seed=0".to_owned(), 0.5),
            ("seed=0".to_owned(), 0.7),
            ("seed=1".to_owned(), 0.6),
        ];
        let c = compare(&a, &keyed(&[0.4, 0.5]));
        assert_eq!((c.kind, c.n), (TestKind::Welch, 5));
    }

    #[test]
    fn too_few_runs_cannot_be_tested() {
        let c = compare(&keyed(&[0.9]), &keyed(&[0.1]));
        assert_eq!((c.ci, c.p), (None, None));
        assert!(!c.a_significantly_better());
        let same = paired(&[0.0, 0.0, 0.0]);
        assert_eq!(same.p, Some(1.0));
    }
}
