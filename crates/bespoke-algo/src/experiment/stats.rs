//! Comparing two arms on a user-level metric.
//!
//! Data flow: each arm accumulates its users' values in [`Moments`]; [`means`], [`cuped`] or
//! [`ratio`] turn two of them into an [`Estimate`] of the treatment's effect and its variance;
//! the estimate is then tested at a fixed horizon ([`Estimate::welch`]) or at any time
//! ([`Estimate::sequential`]). Across arms, [`srm`] checks the split and [`holm`] corrects a
//! family of p-values.
//!
//! The unit of analysis is the user: one value per user (their revenue, clicks, conversions in
//! the experiment), because users, not events, are what was randomised. Arm 0 of a comparison
//! is the control, so a positive effect means the treatment is higher.

use serde::{Deserialize, Serialize};

use super::Error;
use super::assign::normalise;
use super::dist::{chi2_sf, student_t_quantile, student_t_sf};

/// The sample-ratio-mismatch alarm fires below this p-value: strict, because the check runs
/// on every experiment every day and a false alarm stops a healthy experiment (Fabijan et al.
/// 2019 use the same threshold).
pub const SRM_ALPHA: f64 = 0.001;

/// Running moments of one arm's user-level values `y`, with an optional paired value `x` per
/// user: the pre-experiment value for [`cuped`], or the denominator for [`ratio`].
///
/// Welford's updates keep the sums of squares centred, so variances stay exact for large means
/// where raw sums of squares would cancel; [`Moments::merge`] (Chan et al. 1979) combines
/// accumulators from several shards or days.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    n: u64,
    mean_y: f64,
    mean_x: f64,
    /// `Σ (y − ȳ)²`.
    m2_y: f64,
    /// `Σ (x − x̄)²`.
    m2_x: f64,
    /// `Σ (x − x̄)(y − ȳ)`.
    c_xy: f64,
}

impl Moments {
    /// No users yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a user with value `y` and no paired value (taken as 0).
    pub fn push(&mut self, y: f64) {
        self.push_pair(y, 0.0);
    }

    /// Adds a user with value `y` and paired value `x`: the pre-period value of the same metric
    /// (0 for a user who was not there), or a ratio metric's denominator.
    pub fn push_pair(&mut self, y: f64, x: f64) {
        self.n += 1;
        let n = self.n as f64;
        let dx = x - self.mean_x;
        let dy = y - self.mean_y;
        self.mean_x += dx / n;
        self.mean_y += dy / n;
        self.m2_x += dx * (x - self.mean_x);
        self.m2_y += dy * (y - self.mean_y);
        self.c_xy += dx * (y - self.mean_y);
    }

    /// Adds every user of `other`.
    pub fn merge(&mut self, other: &Moments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let dx = other.mean_x - self.mean_x;
        let dy = other.mean_y - self.mean_y;
        let w = na * nb / n;
        self.m2_x += other.m2_x + dx * dx * w;
        self.m2_y += other.m2_y + dy * dy * w;
        self.c_xy += other.c_xy + dx * dy * w;
        self.mean_x += dx * nb / n;
        self.mean_y += dy * nb / n;
        self.n += other.n;
    }

    /// Number of users.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Mean of `y` (0 with no users).
    pub fn mean(&self) -> f64 {
        self.mean_y
    }

    /// Sample variance of `y` (divisor `n − 1`; 0 below two users).
    pub fn variance(&self) -> f64 {
        self.per_user(self.m2_y)
    }

    /// Mean of the paired value `x`.
    pub fn mean_x(&self) -> f64 {
        self.mean_x
    }

    /// Sample variance of `x`.
    pub fn variance_x(&self) -> f64 {
        self.per_user(self.m2_x)
    }

    /// Sample covariance of `x` and `y`.
    pub fn covariance(&self) -> f64 {
        self.per_user(self.c_xy)
    }

    fn per_user(&self, sum: f64) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            sum / (self.n - 1) as f64
        }
    }
}

/// An estimate of the treatment's effect: each arm's estimate of the metric and its variance.
///
/// `var_*` is the variance of the arm's *estimate* (the squared standard error), not of the
/// users' values. `df` is the Welch–Satterthwaite degrees of freedom,
/// `V² / (v_c²/(n_c − 1) + v_t²/(n_t − 1))` with `V = v_c + v_t`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// The control arm's mean (or ratio).
    pub control: f64,
    /// The treatment arm's mean (or ratio).
    pub treatment: f64,
    /// Variance of `control`.
    pub var_control: f64,
    /// Variance of `treatment`.
    pub var_treatment: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
}

/// A fixed-horizon test of one metric: the effect, its confidence interval and p-value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TestResult {
    /// The control arm's mean (or ratio).
    pub control: f64,
    /// The treatment arm's mean (or ratio).
    pub treatment: f64,
    /// `treatment − control`.
    pub effect: f64,
    /// `effect / control`, the relative lift; `None` when the control is 0.
    pub relative: Option<f64>,
    /// Standard error of `effect`.
    pub se: f64,
    /// Lower end of the two-sided `1 − α` confidence interval of `effect`.
    pub ci_low: f64,
    /// Upper end of that interval.
    pub ci_high: f64,
    /// Two-sided p-value of "no effect".
    pub p_value: f64,
    /// Degrees of freedom of the t distribution used.
    pub df: f64,
}

/// An always-valid test of one metric at one look (see [`Estimate::sequential`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SequentialResult {
    /// `treatment − control` at this look.
    pub effect: f64,
    /// A p-value that stays valid however often it is looked at: the chance that it ever drops
    /// below `α` under no effect is at most `α`.
    pub always_valid_p: f64,
    /// Lower end of the `1 − α` confidence sequence: with probability `1 − α` the true effect
    /// lies inside the intervals of every look at once.
    pub cs_low: f64,
    /// Upper end of the confidence sequence.
    pub cs_high: f64,
}

impl SequentialResult {
    /// The result after a `later` look, carrying forward what earlier looks established: the
    /// running minimum of the p-value and the running intersection of the intervals are as
    /// valid as each look's own, and never move backwards.
    pub fn carry(&self, later: &SequentialResult) -> SequentialResult {
        SequentialResult {
            effect: later.effect,
            always_valid_p: self.always_valid_p.min(later.always_valid_p),
            cs_low: self.cs_low.max(later.cs_low),
            cs_high: self.cs_high.min(later.cs_high),
        }
    }
}

/// A CUPED estimate and what the adjustment bought.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Cuped {
    /// The estimate on the adjusted values.
    pub estimate: Estimate,
    /// `θ = cov(x, y) / var(x)`, pooled within arms.
    pub theta: f64,
    /// `1 − Var(adjusted effect) / Var(unadjusted effect)`: the share of variance removed
    /// (about `ρ²` for a pre-period correlated at `ρ`).
    pub variance_reduction: f64,
}

/// A sample-ratio-mismatch check.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = SampleRatioMismatch))]
pub struct Srm {
    /// Pearson's `χ² = Σ (O − E)² / E`.
    pub chi2: f64,
    /// Degrees of freedom, arms − 1.
    pub df: usize,
    /// `P(χ²_df > chi2)`.
    pub p_value: f64,
    /// `p_value < SRM_ALPHA`: the split is broken and the results should not be trusted.
    pub alarm: bool,
}

fn check_alpha(alpha: f64) -> Result<(), Error> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidAlpha { alpha })
    }
}

fn check_sizes(control: &Moments, treatment: &Moments) -> Result<(), Error> {
    if control.n < 2 || treatment.n < 2 {
        return Err(Error::TooFewUsers {
            control: control.n,
            treatment: treatment.n,
        });
    }
    Ok(())
}

impl Estimate {
    /// From each arm's estimate, per-user variance of the (linearised) values and size.
    fn new(control: f64, treatment: f64, per_user: [f64; 2], n: [u64; 2]) -> Self {
        let vc = per_user[0] / n[0] as f64;
        let vt = per_user[1] / n[1] as f64;
        let v = vc + vt;
        let denominator = vc * vc / (n[0] - 1) as f64 + vt * vt / (n[1] - 1) as f64;
        let df = if denominator > 0.0 {
            v * v / denominator
        } else {
            (n[0] + n[1] - 2) as f64
        };
        Self {
            control,
            treatment,
            var_control: vc,
            var_treatment: vt,
            df,
        }
    }

    /// `treatment − control`.
    pub fn effect(&self) -> f64 {
        self.treatment - self.control
    }

    /// Standard error of the effect.
    pub fn se(&self) -> f64 {
        (self.var_control + self.var_treatment).sqrt()
    }

    /// Welch's t-test (Welch 1947) at the fixed horizon: `t = effect / se` against Student's t
    /// with `df` degrees of freedom, and the interval `effect ± t_{1−α/2, df} · se`.
    ///
    /// Valid only if the decision is taken once, at a horizon fixed in advance: checking it every
    /// day and stopping at the first `p < α` inflates false positives (see
    /// [`Estimate::sequential`]). With zero variance in both arms the p-value is 1 for a zero
    /// effect and 0 otherwise.
    pub fn welch(&self, alpha: f64) -> Result<TestResult, Error> {
        check_alpha(alpha)?;
        let effect = self.effect();
        let se = self.se();
        let (p_value, half) = if se > 0.0 {
            let p = 2.0 * student_t_sf((effect / se).abs(), self.df);
            (
                p.min(1.0),
                student_t_quantile(1.0 - alpha / 2.0, self.df) * se,
            )
        } else {
            (if effect == 0.0 { 1.0 } else { 0.0 }, 0.0)
        };
        Ok(TestResult {
            control: self.control,
            treatment: self.treatment,
            effect,
            relative: (self.control != 0.0).then(|| effect / self.control),
            se,
            ci_low: effect - half,
            ci_high: effect + half,
            p_value,
            df: self.df,
        })
    }

    /// An always-valid test of the effect: the normal-mixture sequential probability ratio test
    /// (mSPRT) of Johari, Koomen, Pekelis and Walsh (2017), and its dual confidence sequence
    /// (Howard, Ramdas, McAuliffe and Sekhon 2021, normal mixture boundary).
    ///
    /// With `d` the effect, `V` its variance and the effect under the alternative mixed over
    /// `N(0, τ²)`, the likelihood ratio against "no effect" is
    /// `Λ = √(V / (V + τ²)) · exp(τ² d² / (2 V (V + τ²)))`; the p-value is `min(1, 1/Λ)` and the
    /// confidence sequence is `d ± √(V (V + τ²)/τ² · (2 ln(1/α) + ln((V + τ²)/V)))`.
    /// By Ville's inequality the chance that `Λ` ever exceeds `1/α` under no effect is at most
    /// `α`, so the experiment may be checked after every user and stopped at the first
    /// `p ≤ α`. Exact for normal data with known variance; with the variance estimated, as here,
    /// it holds asymptotically (Waudby-Smith et al. 2024, time-uniform central limit theory).
    ///
    /// `tau2` (`τ²`, in squared units of the metric) is the scale of effects the test is tuned
    /// to detect fastest: take it near the square of the smallest effect worth finding. Any
    /// positive value keeps the error guarantee; a poor one only costs power.
    pub fn sequential(&self, alpha: f64, tau2: f64) -> Result<SequentialResult, Error> {
        check_alpha(alpha)?;
        if !(tau2 > 0.0 && tau2.is_finite()) {
            return Err(Error::InvalidTau2 { tau2 });
        }
        let d = self.effect();
        let v = self.var_control + self.var_treatment;
        if v <= 0.0 {
            let p = if d == 0.0 { 1.0 } else { 0.0 };
            return Ok(SequentialResult {
                effect: d,
                always_valid_p: p,
                cs_low: d,
                cs_high: d,
            });
        }
        let ln_ratio = 0.5 * (v / (v + tau2)).ln() + tau2 * d * d / (2.0 * v * (v + tau2));
        let half =
            (v * (v + tau2) / tau2 * (2.0 * (1.0 / alpha).ln() + ((v + tau2) / v).ln())).sqrt();
        Ok(SequentialResult {
            effect: d,
            always_valid_p: (-ln_ratio).exp().min(1.0),
            cs_low: d - half,
            cs_high: d + half,
        })
    }
}

/// Compares the arms' means of `y`.
///
/// Fails with fewer than two users in an arm.
pub fn means(control: &Moments, treatment: &Moments) -> Result<Estimate, Error> {
    check_sizes(control, treatment)?;
    Ok(Estimate::new(
        control.mean(),
        treatment.mean(),
        [control.variance(), treatment.variance()],
        [control.n, treatment.n],
    ))
}

/// Compares the arms' means of `y` adjusted by each user's pre-experiment value `x`: CUPED
/// (Deng, Xu, Kohavi and Walker 2013).
///
/// Each value becomes `y − θ (x − x̄)`, with `θ = Σ_arms Σ (x − x̄_arm)(y − ȳ_arm) / Σ_arms Σ
/// (x − x̄_arm)²` pooled within arms and `x̄` the mean of `x` over both arms. Because `x` was
/// fixed before assignment, the adjustment has mean zero in both arms and leaves the effect
/// unbiased, while removing the part of `y`'s variance that `x` explains (`ρ²` of it). With no
/// variance in `x`, `θ = 0` and nothing changes.
pub fn cuped(control: &Moments, treatment: &Moments) -> Result<Cuped, Error> {
    check_sizes(control, treatment)?;
    let m2_x = control.m2_x + treatment.m2_x;
    let theta = if m2_x > 0.0 {
        (control.c_xy + treatment.c_xy) / m2_x
    } else {
        0.0
    };
    let (nc, nt) = (control.n as f64, treatment.n as f64);
    let x_bar = (control.mean_x * nc + treatment.mean_x * nt) / (nc + nt);
    let adjusted_mean = |m: &Moments| m.mean_y - theta * (m.mean_x - x_bar);
    let adjusted_var = |m: &Moments| {
        (m.variance() - 2.0 * theta * m.covariance() + theta * theta * m.variance_x()).max(0.0)
    };
    let estimate = Estimate::new(
        adjusted_mean(control),
        adjusted_mean(treatment),
        [adjusted_var(control), adjusted_var(treatment)],
        [control.n, treatment.n],
    );
    let plain = control.variance() / nc + treatment.variance() / nt;
    let adjusted = estimate.var_control + estimate.var_treatment;
    Ok(Cuped {
        estimate,
        theta,
        variance_reduction: if plain > 0.0 {
            1.0 - adjusted / plain
        } else {
            0.0
        },
    })
}

/// Compares ratio metrics `Σ y / Σ x` per arm (clicks per impression, revenue per order) where
/// each user contributes a numerator `y` and a denominator `x` (pushed with
/// [`Moments::push_pair`]), by the delta method (Deng, Knoblich and Lu 2018).
///
/// The ratio `R = ȳ / x̄` has variance `(s_y² − 2R s_xy + R² s_x²) / (n x̄²)`: the variance of the
/// users' linearised values `(y − R x) / x̄`. Treating users' clicks as independent
/// impressions instead would understate it, because one user's impressions are correlated.
///
/// Fails with fewer than two users in an arm or with a zero mean denominator.
pub fn ratio(control: &Moments, treatment: &Moments) -> Result<Estimate, Error> {
    check_sizes(control, treatment)?;
    if control.mean_x == 0.0 || treatment.mean_x == 0.0 {
        return Err(Error::ZeroDenominator);
    }
    let linearised = |m: &Moments| {
        let r = m.mean_y / m.mean_x;
        let v = m.variance() - 2.0 * r * m.covariance() + r * r * m.variance_x();
        (r, v.max(0.0) / (m.mean_x * m.mean_x))
    };
    let (rc, vc) = linearised(control);
    let (rt, vt) = linearised(treatment);
    Ok(Estimate::new(rc, rt, [vc, vt], [control.n, treatment.n]))
}

/// Sample-ratio mismatch: do the users `observed` in each arm fit the configured
/// `expected_weights`? Pearson's chi-square goodness-of-fit test with arms − 1 degrees of
/// freedom; the alarm fires at `p < SRM_ALPHA`.
///
/// A mismatch means assignment or logging is broken (users lost by a redirect, a bot filter,
/// a crash in one arm), and then no effect estimate can be trusted (Fabijan et al. 2019). An arm
/// with weight 0 that has users gives `χ² = ∞` and an alarm. No users at all gives `p = 1`.
///
/// Fails when the lengths differ or the weights are invalid (as for [`super::Variants`]).
pub fn srm(observed: &[u64], expected_weights: &[f64]) -> Result<Srm, Error> {
    if observed.len() != expected_weights.len() {
        return Err(Error::LengthMismatch {
            names: observed.len(),
            weights: expected_weights.len(),
        });
    }
    if observed.is_empty() {
        return Err(Error::NoVariants);
    }
    let shares = normalise(expected_weights)?;
    let total: u64 = observed.iter().sum();
    let mut chi2 = 0.0;
    for (&o, &share) in observed.iter().zip(&shares) {
        let expected = total as f64 * share;
        let diff = o as f64 - expected;
        if expected > 0.0 {
            chi2 += diff * diff / expected;
        } else if o > 0 {
            chi2 = f64::INFINITY;
        }
    }
    let df = observed.len() - 1;
    let p_value = if df == 0 || total == 0 {
        1.0
    } else {
        chi2_sf(chi2, df as f64)
    };
    Ok(Srm {
        chi2,
        df,
        p_value,
        alarm: p_value < SRM_ALPHA,
    })
}

/// Holm's step-down adjustment (Holm 1979) of a family of p-values, returned in the input order:
/// reject every hypothesis whose adjusted p-value is below `α` and the chance of any false
/// rejection in the family stays at most `α`, with more power than Bonferroni.
///
/// Sorted ascending, `p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))`. NaN counts as 1.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let clean = |p: f64| if p.is_nan() { 1.0 } else { p.clamp(0.0, 1.0) };
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| clean(p_values[a]).total_cmp(&clean(p_values[b])));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0_f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * clean(p_values[i])).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, rel: f64) {
        assert!(
            (got - want).abs() <= rel * want.abs().max(1e-300),
            "got {got:e}, want {want:e}"
        );
    }

    fn arm(ys: &[f64]) -> Moments {
        let mut m = Moments::new();
        for &y in ys {
            m.push(y);
        }
        m
    }

    fn paired(pairs: &[(f64, f64)]) -> Moments {
        let mut m = Moments::new();
        for &(y, x) in pairs {
            m.push_pair(y, x);
        }
        m
    }

    #[test]
    fn moments_merge_equals_pushing_everything() {
        let values: Vec<(f64, f64)> = (0..57)
            .map(|i| {
                let i = f64::from(i);
                (
                    1e6 + (i * 0.7).sin() * 3.0,
                    1e6 + (i * 1.3).cos() + i * 0.01,
                )
            })
            .collect();
        let whole = paired(&values);
        let mut merged = paired(&values[..20]);
        merged.merge(&paired(&values[20..]));
        merged.merge(&Moments::new());
        assert_eq!(merged.n(), whole.n());
        close(merged.mean(), whole.mean(), 1e-14);
        close(merged.variance(), whole.variance(), 1e-9);
        close(merged.variance_x(), whole.variance_x(), 1e-9);
        close(merged.covariance(), whole.covariance(), 1e-8);
    }

    #[test]
    fn welch_matches_scipy() {
        let a = arm(&[3.1, 2.4, 5.6, 4.4, 3.9, 2.2, 4.8]);
        let b = arm(&[4.9, 5.3, 3.8, 6.1, 7.2, 5.5, 4.1, 6.6, 5.0]);
        // python3 -c "from scipy.stats import ttest_ind
        // r = ttest_ind([4.9,5.3,3.8,6.1,7.2,5.5,4.1,6.6,5.0], [3.1,2.4,5.6,4.4,3.9,2.2,4.8],
        //               equal_var=False)
        // print(repr(r.statistic), repr(r.pvalue), repr(r.df), r.confidence_interval(0.95))"
        let r = means(&a, &b).unwrap().welch(0.05).unwrap();
        close(r.effect / r.se, 2.674669664297557, 1e-12);
        close(r.p_value, 0.02013800211219221, 1e-10);
        close(r.df, 12.078520662537047, 1e-12);
        close(r.ci_low, 0.30081023125589224, 1e-10);
        close(r.ci_high, 2.934110403664744, 1e-10);
        close(r.relative.unwrap(), r.effect / a.mean(), 1e-15);
    }

    #[test]
    fn cuped_matches_the_formula_and_reduces_variance() {
        let c = paired(&[(5.0, 4.0), (7.0, 6.5), (3.0, 3.5), (6.0, 5.0), (9.0, 8.0)]);
        let t = paired(&[
            (6.5, 4.5),
            (8.0, 6.0),
            (4.5, 3.0),
            (7.5, 5.5),
            (10.0, 7.5),
            (5.0, 4.0),
        ]);
        // python3 -c "
        // import numpy as np; from scipy.stats import ttest_ind
        // c=np.array([(5,4),(7,6.5),(3,3.5),(6,5),(9,8)],float)
        // t=np.array([(6.5,4.5),(8,6),(4.5,3),(7.5,5.5),(10,7.5),(5,4)],float)
        // cx=c[:,1]-c[:,1].mean(); tx=t[:,1]-t[:,1].mean()
        // th=(cx@(c[:,0]-c[:,0].mean())+tx@(t[:,0]-t[:,0].mean()))/(cx@cx+tx@tx)
        // xb=np.concatenate([c[:,1],t[:,1]]).mean()
        // ca=c[:,0]-th*(c[:,1]-xb); ta=t[:,0]-th*(t[:,1]-xb)
        // r=ttest_ind(ta,ca,equal_var=False)
        // v0=c[:,0].var(ddof=1)/5+t[:,0].var(ddof=1)/6; v1=ca.var(ddof=1)/5+ta.var(ddof=1)/6
        // print(repr(th), repr(ta.mean()-ca.mean()), repr(r.pvalue), repr(1-v1/v0))"
        let r = cuped(&c, &t).unwrap();
        close(r.theta, 1.2133165036289049, 1e-12);
        close(r.estimate.effect(), 1.3008835594824877, 1e-12);
        close(
            r.estimate.welch(0.05).unwrap().p_value,
            0.004255360536602155,
            1e-10,
        );
        close(r.variance_reduction, 0.9506447132953983, 1e-12);
    }

    #[test]
    fn delta_method_matches_hand_computation() {
        // (clicks, impressions) per user.
        let c = paired(&[(1.0, 10.0), (0.0, 4.0), (3.0, 12.0), (2.0, 8.0)]);
        let t = paired(&[(2.0, 9.0), (1.0, 3.0), (4.0, 11.0), (3.0, 10.0), (0.0, 2.0)]);
        // python3 -c "
        // import numpy as np
        // def d(a):
        //     a=np.array(a,float); y,x=a[:,0],a[:,1]; n=len(a); r=y.sum()/x.sum()
        //     c=np.cov(y,x); return r, (c[0,0]-2*r*c[0,1]+r*r*c[1,1])/(n*x.mean()**2)
        // print(d([(1,10),(0,4),(3,12),(2,8)]), d([(2,9),(1,3),(4,11),(3,10),(0,2)]))"
        let e = ratio(&c, &t).unwrap();
        close(e.control, 0.17647058823529413, 1e-14);
        close(e.var_control, 0.0025462658093972365, 1e-12);
        close(e.treatment, 0.2857142857142857, 1e-14);
        close(e.var_treatment, 0.001457725947521866, 1e-12);
        assert_eq!(ratio(&arm(&[1.0, 2.0]), &c), Err(Error::ZeroDenominator));
    }

    #[test]
    fn sequential_matches_the_closed_form_and_is_wider_than_welch() {
        let e = Estimate {
            control: 10.0,
            treatment: 10.3,
            var_control: 0.005,
            var_treatment: 0.005,
            df: 1e4,
        };
        // python3 -c "
        // import math; d,v,t2,a=0.3,0.01,0.09,0.05
        // l=0.5*math.log(v/(v+t2))+t2*d*d/(2*v*(v+t2))
        // h=math.sqrt(v*(v+t2)/t2*(2*math.log(1/a)+math.log((v+t2)/v)))
        // print(repr(math.exp(-l)), repr(d-h), repr(d+h))"
        let s = e.sequential(0.05, 0.09).unwrap();
        close(s.always_valid_p, 0.055094386109554444, 1e-12);
        close(s.cs_low, -0.003572243645964368, 1e-10);
        close(s.cs_high, 0.6035722436459643, 1e-12);
        let w = e.welch(0.05).unwrap();
        assert!(s.cs_low < w.ci_low && s.cs_high > w.ci_high);
        assert!(s.always_valid_p > w.p_value);
        let later = SequentialResult {
            effect: 0.1,
            always_valid_p: 0.5,
            cs_low: 0.0,
            cs_high: 0.2,
        };
        let carried = s.carry(&later);
        assert_eq!(carried.always_valid_p, s.always_valid_p.min(0.5));
        assert_eq!(carried.cs_high, 0.2_f64.min(s.cs_high));
        assert!(e.sequential(0.05, 0.0).is_err());
        assert!(e.welch(1.0).is_err());
    }

    #[test]
    fn srm_on_balanced_and_broken_splits() {
        // python3 -c "from scipy.stats import chisquare
        // print(chisquare([5030, 4970]), chisquare([5000, 4500]), chisquare([200, 330, 470],
        //       [200, 300, 500]))"
        let ok = srm(&[5030, 4970], &[1.0, 1.0]).unwrap();
        close(ok.chi2, 0.36, 1e-12);
        close(ok.p_value, 0.5485062355001471, 1e-12);
        assert!(!ok.alarm);
        let broken = srm(&[5000, 4500], &[0.5, 0.5]).unwrap();
        close(broken.p_value, 2.899088282877562e-07, 1e-10);
        assert!(broken.alarm);
        let three = srm(&[200, 330, 470], &[2.0, 3.0, 5.0]).unwrap();
        assert_eq!(three.df, 2);
        close(three.p_value, 0.09071795328941248, 1e-12);
        assert!(srm(&[1, 0], &[0.0, 1.0]).unwrap().alarm);
        assert_eq!(srm(&[0, 0], &[1.0, 1.0]).unwrap().p_value, 1.0);
        assert!(srm(&[1, 2], &[1.0]).is_err());
    }

    #[test]
    fn holm_on_a_hand_case() {
        // Sorted 0.01, 0.02, 0.03, 0.04 (m = 4): 0.04, 0.06, 0.06 (monotone), 0.06 (monotone).
        let adjusted = holm(&[0.03, 0.01, 0.04, 0.02]);
        let want = [0.06, 0.04, 0.06, 0.06];
        for (a, w) in adjusted.iter().zip(want) {
            close(*a, w, 1e-12);
        }
        assert_eq!(holm(&[0.5, 0.9]), vec![1.0, 1.0]);
        assert_eq!(holm(&[f64::NAN, 0.01]), vec![1.0, 0.02]);
        assert!(holm(&[]).is_empty());
    }

    #[test]
    fn too_few_users_is_an_error() {
        assert_eq!(
            means(&arm(&[1.0]), &arm(&[1.0, 2.0])),
            Err(Error::TooFewUsers {
                control: 1,
                treatment: 2
            })
        );
        let same = means(&arm(&[1.0, 1.0]), &arm(&[1.0, 1.0])).unwrap();
        assert_eq!(same.welch(0.05).unwrap().p_value, 1.0);
    }
}
