//! Simulated experiments: the evidence that the statistics in [`super::stats`] and
//! [`super::interleave`] do what they claim, on a population whose truth is known.
//!
//! - [`Population`]: users arriving every day, each with a pre-period value `x` and an outcome
//!   `y` correlated at `ρ`; [`simulate_ab`] runs many experiments on it, looks every day, and
//!   reports how often each test declares a difference (the false-positive rate when the true
//!   lift is 0, the power otherwise), when the sequential test decides, and what CUPED saves.
//! - [`ClickModel`]: users with their own click propensity, requests with candidate items of
//!   random relevance, two noisy rankers of which B is the better, and a position-based click
//!   model; [`power`] and [`users_needed`] compare an A/B test of click-through with
//!   interleaving.
//! - [`simulate_srm`]: how often the sample-ratio-mismatch alarm fires on healthy and broken
//!   assignment.
//!
//! Every experiment draws from its own generator, seeded from the run's seed and the
//! experiment's index, so results do not depend on the number of threads.

use std::fmt::Write as _;

use rayon::prelude::*;
use serde::Serialize;

use super::interleave::{Credit, Preference, team_draft};
use super::stats::{Estimate, Moments, SequentialResult, cuped, means, ratio, srm};
use super::{Variants, bucket};
use crate::Rng;

/// Generator of experiment `index` of a run seeded `seed`.
fn rng_for(seed: u64, index: usize) -> Rng {
    Rng::seed_from_u64(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A synthetic population for A/B tests of a per-user metric (revenue per user, say).
///
/// Each user has a pre-period value `x = μ + σ z₁` and, in the experiment, the outcome
/// `y = μ (1 + lift) + σ (ρ z₁ + √(1 − ρ²) z₂)` with `z₁, z₂` independent standard normals, so
/// `corr(x, y) = ρ` and the treatment multiplies the mean by `1 + lift`. A user's outcome is
/// known from the day they arrive; `users_per_day` new users arrive every day.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Population {
    /// New users per day, split between the arms by [`Variants::assign`].
    pub users_per_day: usize,
    /// Length of the experiment: the fixed horizon, and the number of daily looks.
    pub days: usize,
    /// Mean `μ` of the metric without treatment.
    pub mean: f64,
    /// Standard deviation `σ` of the metric.
    pub sd: f64,
    /// Correlation `ρ` between the pre-period value and the outcome.
    pub rho: f64,
}

impl Default for Population {
    /// 1000 users a day for 28 days, `μ = σ = 10`, `ρ = 0.6`: with a 3% lift, a fixed-horizon
    /// test at the end has about 70% power without CUPED.
    fn default() -> Self {
        Self {
            users_per_day: 1000,
            days: 28,
            mean: 10.0,
            sd: 10.0,
            rho: 0.6,
        }
    }
}

impl Population {
    /// One user's `(y, x)`, with the relative `lift` applied to the outcome's mean.
    pub fn draw(&self, rng: &mut Rng, lift: f64) -> (f64, f64) {
        let z1 = rng.normal();
        let z2 = rng.normal();
        let x = self.mean + self.sd * z1;
        let noise = self.rho * z1 + (1.0 - self.rho * self.rho).sqrt() * z2;
        (self.mean * (1.0 + lift) + self.sd * noise, x)
    }
}

/// A run of simulated A/B experiments.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AbParams {
    /// Who arrives and what they do.
    pub population: Population,
    /// True relative lift of the treatment (0 for A/A experiments).
    pub lift: f64,
    /// Significance level of every test.
    pub alpha: f64,
    /// Mixing variance `τ²` of the sequential test, in squared units of the metric.
    pub tau2: f64,
    /// Number of experiments.
    pub experiments: usize,
    /// Seed of the run.
    pub seed: u64,
}

impl Default for AbParams {
    /// 500 A/A experiments on the default population at `α = 0.05`, with `τ²` the square of a 3%
    /// lift (`(0.03 μ)²`), the smallest effect the experiment is meant to find.
    fn default() -> Self {
        let population = Population::default();
        let tau = 0.03 * population.mean;
        Self {
            population,
            lift: 0.0,
            alpha: 0.05,
            tau2: tau * tau,
            experiments: 500,
            seed: 0,
        }
    }
}

/// How often one analysis declared a difference, over a run of experiments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Analysis {
    /// Share of experiments where Welch's test gave `p < α` at the horizon, looked at once: the
    /// test used as designed.
    pub fixed_end: f64,
    /// Share where Welch's test gave `p < α` on at least one day, looked at daily and stopped at
    /// the first "significant" day: the peeking that inflates false positives.
    pub fixed_peeking: f64,
    /// Share where the always-valid p-value fell to `α` or below on at least one day.
    pub sequential: f64,
    /// Mean day (1-based) on which the sequential test first decided, over the experiments
    /// where it did; `None` when it never did.
    pub days_to_decision: Option<f64>,
}

/// The outcome of [`simulate_ab`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AbReport {
    /// The run's parameters.
    pub params: AbParams,
    /// Tests on the raw outcome.
    pub plain: Analysis,
    /// Tests on the CUPED-adjusted outcome.
    pub cuped: Analysis,
    /// Mean share of the effect's variance removed by CUPED at the horizon.
    pub variance_reduction: f64,
    /// Share of experiments whose final split raised the sample-ratio-mismatch alarm.
    pub srm_alarms: f64,
}

/// One experiment's outcome under one analysis.
#[derive(Clone, Copy, Default)]
struct Decisions {
    fixed_end: bool,
    fixed_peeking: bool,
    /// First day (1-based) the sequential test decided.
    sequential_day: Option<usize>,
}

impl Decisions {
    fn look(
        &mut self,
        estimate: &Estimate,
        day: usize,
        last: bool,
        params: &AbParams,
        running: &mut Option<SequentialResult>,
    ) {
        let alpha = params.alpha;
        let welch = estimate.welch(alpha).expect("alpha validated");
        let rejected = welch.p_value < alpha;
        self.fixed_peeking |= rejected;
        if last {
            self.fixed_end = rejected;
        }
        let now = estimate
            .sequential(alpha, params.tau2)
            .expect("alpha and tau2 validated");
        let carried = running.map_or(now, |r| r.carry(&now));
        *running = Some(carried);
        if carried.always_valid_p <= alpha && self.sequential_day.is_none() {
            self.sequential_day = Some(day + 1);
        }
    }
}

/// One experiment: its decisions under both analyses, CUPED's variance reduction at the end and
/// the SRM alarm.
fn run_experiment(params: &AbParams, index: usize) -> (Decisions, Decisions, f64, bool) {
    let pop = &params.population;
    let mut rng = rng_for(params.seed, index);
    let variants = Variants::new(
        vec!["control".into(), "treatment".into()],
        vec![1.0, 1.0],
        0.0,
    )
    .expect("two equal weights are valid");
    let salt = format!("sim-{}-{index}", params.seed);
    let mut key = String::new();
    let mut arms = [Moments::new(); 2];
    let (mut plain, mut adjusted) = (Decisions::default(), Decisions::default());
    let (mut plain_seq, mut adjusted_seq) = (None, None);
    let mut reduction = 0.0;
    for day in 0..pop.days {
        for u in 0..pop.users_per_day {
            key.clear();
            write!(key, "user-{}", day * pop.users_per_day + u).expect("writing to a String");
            let arm = variants.assign(&salt, &key).expect("no holdout");
            let lift = if arm == 1 { params.lift } else { 0.0 };
            let (y, x) = pop.draw(&mut rng, lift);
            arms[arm].push_pair(y, x);
        }
        let last = day + 1 == pop.days;
        // Too few users for a variance on the first day only happens with tiny populations.
        if let (Ok(e), Ok(c)) = (means(&arms[0], &arms[1]), cuped(&arms[0], &arms[1])) {
            plain.look(&e, day, last, params, &mut plain_seq);
            adjusted.look(&c.estimate, day, last, params, &mut adjusted_seq);
            reduction = c.variance_reduction;
        }
    }
    let alarm = srm(&[arms[0].n(), arms[1].n()], &[1.0, 1.0])
        .expect("two arms, valid weights")
        .alarm;
    (plain, adjusted, reduction, alarm)
}

/// Runs `params.experiments` experiments, looking at each every day.
///
/// # Panics
///
/// If `alpha` is outside `(0, 1)` or `tau2` is not positive: a bug in the caller's constants.
pub fn simulate_ab(params: &AbParams) -> AbReport {
    assert!(params.alpha > 0.0 && params.alpha < 1.0, "alpha in (0, 1)");
    assert!(params.tau2 > 0.0 && params.tau2.is_finite(), "tau2 > 0");
    let runs: Vec<_> = (0..params.experiments)
        .into_par_iter()
        .map(|i| run_experiment(params, i))
        .collect();
    let n = runs.len().max(1) as f64;
    let summarise = |pick: fn(&(Decisions, Decisions, f64, bool)) -> Decisions| {
        let decisions: Vec<Decisions> = runs.iter().map(pick).collect();
        let share =
            |f: fn(&Decisions) -> bool| decisions.iter().filter(|d| f(d)).count() as f64 / n;
        let days: Vec<usize> = decisions.iter().filter_map(|d| d.sequential_day).collect();
        Analysis {
            fixed_end: share(|d| d.fixed_end),
            fixed_peeking: share(|d| d.fixed_peeking),
            sequential: share(|d| d.sequential_day.is_some()),
            days_to_decision: (!days.is_empty())
                .then(|| days.iter().sum::<usize>() as f64 / days.len() as f64),
        }
    };
    AbReport {
        params: params.clone(),
        plain: summarise(|r| r.0),
        cuped: summarise(|r| r.1),
        variance_reduction: runs.iter().map(|r| r.2).sum::<f64>() / n,
        srm_alarms: runs.iter().filter(|r| r.3).count() as f64 / n,
    }
}

/// A click model for comparing two rankers.
///
/// Each user has a click propensity `c = U^e` with `U ~ U(0, 1)` and `e` the
/// `propensity_exponent` (some users click a lot, some hardly at all) and makes between 1 and
/// `max_sessions` requests over the experiment. Each request has `candidates` items whose
/// relevance to the user is `r = U(0, 1)²` (few good items, many poor ones). Ranker A orders them
/// by `r + noise_a · N(0, 1)`, ranker B by `r + noise_b · N(0, 1)`, so with `noise_b < noise_a`
/// B is the better ranker. The user sees `shown` items and clicks the item at position `k`
/// (0-based) with probability `c · r / (k + 1)`: the position-based model, whose examination
/// probability falls with rank.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClickModel {
    /// Candidate items per request.
    pub candidates: usize,
    /// Items shown per request.
    pub shown: usize,
    /// Requests per user are uniform on `1..=max_sessions`.
    pub max_sessions: u64,
    /// Score noise of ranker A (the control).
    pub noise_a: f64,
    /// Score noise of ranker B (the candidate).
    pub noise_b: f64,
    /// A user's click propensity is `U(0, 1)` raised to this power: 1 spreads users evenly,
    /// larger values make most users rare clickers and a few heavy ones, as in real traffic.
    pub propensity_exponent: f64,
}

impl Default for ClickModel {
    /// 20 candidates, 10 shown, 1 to 20 requests per user over the experiment (10.5 on
    /// average), propensities uniform; B's scores half as noisy as A's, which lifts the
    /// click-through rate from 8.4% to 9.8%.
    fn default() -> Self {
        Self {
            candidates: 20,
            shown: 10,
            max_sessions: 20,
            noise_a: 0.4,
            noise_b: 0.2,
            propensity_exponent: 1.0,
        }
    }
}

/// How an experiment compares the two rankers of a [`ClickModel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Design {
    /// Half of the users see A, half B; the click-through rates (clicks per impression, per
    /// user, by the delta method) are compared with Welch's test.
    AB,
    /// Every user sees team-draft interleavings of A and B; per-user credit, sign test.
    Interleaving,
}

/// Per-request buffers, reused across requests.
#[derive(Default)]
struct Request {
    relevance: Vec<f64>,
    score: Vec<f64>,
    rank_a: Vec<u32>,
    rank_b: Vec<u32>,
}

impl Request {
    /// Draws the candidates' relevance and ranks them with the rankers of `which` (A, B).
    fn draw(&mut self, model: &ClickModel, rng: &mut Rng, which: [bool; 2]) {
        self.relevance.clear();
        self.relevance
            .extend((0..model.candidates).map(|_| rng.f64().powi(2)));
        let rank = |noise: f64, score: &mut Vec<f64>, rank: &mut Vec<u32>, rng: &mut Rng| {
            score.clear();
            score.extend(self.relevance.iter().map(|r| r + noise * rng.normal()));
            rank.clear();
            rank.extend(0..model.candidates as u32);
            rank.sort_unstable_by(|&i, &j| score[j as usize].total_cmp(&score[i as usize]));
        };
        if which[0] {
            rank(model.noise_a, &mut self.score, &mut self.rank_a, rng);
        }
        if which[1] {
            rank(model.noise_b, &mut self.score, &mut self.rank_b, rng);
        }
    }

    /// Positions clicked on `list` by a user of propensity `c`.
    fn clicks<'a>(
        &'a self,
        list: &'a [u32],
        c: f64,
        rng: &'a mut Rng,
    ) -> impl Iterator<Item = usize> + 'a {
        list.iter().enumerate().filter_map(move |(k, &item)| {
            let p = c * self.relevance[item as usize] / (k as f64 + 1.0);
            (rng.f64() < p).then_some(k)
        })
    }
}

/// An A/B test of `users` users: each arm's clicks (`y`) and impressions (`x`) per user.
fn ab_arms(model: &ClickModel, users: usize, rng: &mut Rng) -> [Moments; 2] {
    let mut request = Request::default();
    let shown = model.shown;
    let mut arms = [Moments::new(); 2];
    for u in 0..users {
        // Alternating arms: a perfectly balanced split, as hashing gives on average.
        let arm = u % 2;
        let c = rng.f64().powf(model.propensity_exponent);
        let sessions = 1 + rng.below(model.max_sessions);
        let mut clicks = 0usize;
        for _ in 0..sessions {
            request.draw(model, rng, [arm == 0, arm == 1]);
            let ranking = if arm == 0 {
                &request.rank_a
            } else {
                &request.rank_b
            };
            let top = &ranking[..shown.min(ranking.len())];
            clicks += request.clicks(top, c, rng).count();
        }
        arms[arm].push_pair(clicks as f64, (sessions as usize * shown) as f64);
    }
    arms
}

/// Click-through rates (clicks per impression) of rankers A and B, each shown alone to half of
/// `users` users: the size of the difference the experiments look for.
pub fn click_through(model: &ClickModel, users: usize, seed: u64) -> [f64; 2] {
    let arms = ab_arms(model, users, &mut rng_for(seed, 0));
    arms.map(|m| {
        if m.mean_x() > 0.0 {
            m.mean() / m.mean_x()
        } else {
            0.0
        }
    })
}

/// p-value of one simulated experiment with `users` users.
fn experiment_p(model: &ClickModel, design: Design, users: usize, rng: &mut Rng) -> f64 {
    let mut request = Request::default();
    let shown = model.shown;
    match design {
        Design::AB => {
            let arms = ab_arms(model, users, rng);
            ratio(&arms[0], &arms[1])
                .and_then(|e| e.welch(0.05))
                .map_or(1.0, |r| r.p_value)
        }
        Design::Interleaving => {
            let mut preference = Preference::default();
            for _ in 0..users {
                let c = rng.f64().powf(model.propensity_exponent);
                let sessions = 1 + rng.below(model.max_sessions);
                let mut credit = Credit::default();
                for _ in 0..sessions {
                    request.draw(model, rng, [true, true]);
                    let il = team_draft(&request.rank_a, &request.rank_b, shown, rng);
                    let clicked: Vec<usize> = request.clicks(&il.items, c, rng).collect();
                    credit += il.credit(clicked);
                }
                preference.push(credit);
            }
            preference.sign_test().p_value
        }
    }
}

/// Share of `reps` simulated experiments with `users` users that find B better at level `alpha`
/// (two-sided `p < alpha`).
pub fn power(
    model: &ClickModel,
    design: Design,
    users: usize,
    alpha: f64,
    reps: usize,
    seed: u64,
) -> f64 {
    let hits = (0..reps)
        .into_par_iter()
        .filter(|&i| {
            let mut rng = rng_for(seed, i);
            experiment_p(model, design, users, &mut rng) < alpha
        })
        .count();
    hits as f64 / reps.max(1) as f64
}

/// The smallest user count of a grid that reaches a target power.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UsersNeeded {
    /// The first grid size whose power reached the target; `None` if none did.
    pub users: Option<usize>,
    /// Where the power crosses the target, interpolated linearly in `ln(users)` between the last
    /// two grid sizes: finer than the grid's step. `None` without a crossing after the first size.
    pub interpolated: Option<f64>,
    /// `(users, power)` for every grid size tried, in order.
    pub powers: Vec<(usize, f64)>,
}

/// Walks `grid` (ascending user counts) until `design` reaches power `target` at level `alpha`,
/// estimating each power from `reps` experiments.
pub fn users_needed(
    model: &ClickModel,
    design: Design,
    grid: &[usize],
    alpha: f64,
    target: f64,
    reps: usize,
    seed: u64,
) -> UsersNeeded {
    let mut powers = Vec::new();
    for &users in grid {
        let p = power(model, design, users, alpha, reps, seed);
        powers.push((users, p));
        if p >= target {
            let interpolated = match powers[..] {
                [.., (n0, p0), (n1, p1)] if p1 > p0 => {
                    let (l0, l1) = ((n0 as f64).ln(), (n1 as f64).ln());
                    Some((l0 + (target - p0) / (p1 - p0) * (l1 - l0)).exp())
                }
                _ => None,
            };
            return UsersNeeded {
                users: Some(users),
                interpolated,
                powers,
            };
        }
    }
    UsersNeeded {
        users: None,
        interpolated: None,
        powers,
    }
}

/// User counts from `from` to `to` in steps of `√2`, rounded: a grid fine enough that the
/// smallest sufficient size is known to within 41%.
pub fn grid(from: usize, to: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut k = 0;
    loop {
        let n = (from as f64 * 2f64.powf(k as f64 / 2.0)).round() as usize;
        if n > to {
            return out;
        }
        if out.last() != Some(&n) {
            out.push(n);
        }
        k += 1;
    }
}

/// The outcome of [`simulate_srm`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SrmReport {
    /// Share of experiments that raised the alarm.
    pub alarm_rate: f64,
    /// Mean share of the observed users who were in the treatment arm.
    pub treatment_share: f64,
}

/// Runs `experiments` 50/50 experiments of `users` users assigned by [`bucket`], where each
/// treatment user is lost from the logs with probability `drop_treatment` (0 for a healthy
/// split), and checks each split with [`srm`].
pub fn simulate_srm(users: usize, drop_treatment: f64, experiments: usize, seed: u64) -> SrmReport {
    let runs: Vec<(bool, f64)> = (0..experiments)
        .into_par_iter()
        .map(|e| {
            let mut rng = rng_for(seed, e);
            let salt = format!("srm-{seed}-{e}");
            let mut key = String::new();
            let mut counts = [0u64; 2];
            for u in 0..users {
                key.clear();
                write!(key, "user-{u}").expect("writing to a String");
                let arm = usize::from(bucket(&salt, &key) >= 0.5);
                if arm == 1 && rng.f64() < drop_treatment {
                    continue;
                }
                counts[arm] += 1;
            }
            let check = srm(&counts, &[1.0, 1.0]).expect("two arms, valid weights");
            let total = (counts[0] + counts[1]).max(1) as f64;
            (check.alarm, counts[1] as f64 / total)
        })
        .collect();
    let n = runs.len().max(1) as f64;
    SrmReport {
        alarm_rate: runs.iter().filter(|r| r.0).count() as f64 / n,
        treatment_share: runs.iter().map(|r| r.1).sum::<f64>() / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn population_has_the_requested_correlation_and_lift() {
        let pop = Population::default();
        let mut rng = Rng::seed_from_u64(5);
        let mut m = Moments::new();
        for _ in 0..50_000 {
            let (y, x) = pop.draw(&mut rng, 0.03);
            m.push_pair(y, x);
        }
        let rho = m.covariance() / (m.variance() * m.variance_x()).sqrt();
        assert!((rho - 0.6).abs() < 0.01, "{rho}");
        assert!((m.mean() - 10.3).abs() < 0.1, "{}", m.mean());
    }

    #[test]
    fn grid_steps_by_root_two() {
        assert_eq!(grid(100, 400), vec![100, 141, 200, 283, 400]);
    }
}
