//! Debiased evaluation and training for feedback that is missing not at random (MNAR).
//!
//! A user can only interact with what they were shown, and what they were shown is mostly what
//! was recommended or popular. Held-out interactions therefore over-represent exposed items, and
//! the usual ("naive", average-over-all) metrics reward a model for predicting exposure rather
//! than relevance. The remedy is inverse propensity weighting: each observed interaction counts
//! `1 / p_i`, where `p_i` is the probability that item `i` was observed at all.
//!
//! - Propensities: [`propensities_from_exposure`] when impressions are logged (the direct
//!   measurement), else [`propensities_from_popularity`], Yang et al.'s power law of the
//!   training popularity; [`held_out_propensities`] turns either into the propensity of a
//!   held-out test item.
//! - Evaluation: [`IpsSums`] gives IPS and self-normalised IPS (SNIPS) estimates of `ndcg@K` and
//!   `recall@K`, with the definitions of [`crate::eval`] (so that, with equal propensities, SNIPS
//!   *is* the naive metric).
//! - Training: [`weight_by_propensity`] reweights the interaction matrix of the factor models.
//! - [`synthetic`]: a world with a known exposure bias and a uniformly random test set, on which
//!   the above are checked against the truth.
//!
//! References: Schnabel et al., "Recommendations as Treatments" (ICML 2016); Yang et al.,
//! "Unbiased offline recommender evaluation for missing-not-at-random implicit feedback" (RecSys
//! 2018); Saito et al., "Unbiased recommender learning from missing-not-at-random implicit
//! feedback" (WSDM 2020).

use crate::Csr;

/// Exponent of [`propensities_from_popularity`]: `p_i = (n_i / max_j n_j)^η`.
///
/// Yang et al. (2018) model presentation as a power law of popularity and derive
/// `p_i ∝ n_i^((γ+1)/2)`, i.e. `η = (γ+1)/2`: `γ = −1` (`η = 0`) is no correction at all (the
/// naive metric) and `γ = 1` (`η = 1`) makes the propensity proportional to popularity, which
/// flattens every item to the same weighted count and over-corrects whenever popular items are
/// also more relevant. We take the midpoint, `γ = 0`, `η = 0.5`: the value Saito et al. (2020)
/// use when they follow Yang et al. on Yahoo! R3 (`(n_i / max n)^0.5` in their code), and the
/// one that removes half of the popularity skew (in log scale) without assuming the whole skew
/// is exposure. It is exact when items are shown in proportion to how many users want them
/// (observed popularity then grows as the square of the true one; see [`synthetic`]); exposure
/// that is unrelated to taste calls for a larger `η`.
pub const DEFAULT_ETA: f64 = 0.5;

/// Smallest observation propensity: an item observed too rarely to estimate (or not at all)
/// counts at most `1 / PROPENSITY_FLOOR = 100` times ([`held_out_propensities`] scales this by
/// up to the test fraction). Without a floor a single hit on a never-seen item decides a whole
/// comparison; 0.01 is the clip of Saito et al.'s evaluation code.
pub const PROPENSITY_FLOOR: f64 = 0.01;

/// Default `max_factor` of [`weight_by_propensity`]: no interaction weighs more than 10 times
/// its raw weight, i.e. propensities are clipped at 0.1 for training. Clipping trades a little
/// bias for a bounded variance (Swaminathan and Joachims' clipped IPS; Saito et al. 2020's
/// clipped estimator): unclipped, the few interactions with the rarest items would dominate the
/// loss. With [`DEFAULT_ETA`], the clip is reached by items 100 times less popular than the top.
pub const DEFAULT_MAX_FACTOR: f64 = 10.0;

/// Propensities from logged exposure: `p_i = impressions_i / users`, the share of users item `i`
/// was shown to, clamped to `[PROPENSITY_FLOOR, 1]`. Pass the number of distinct users shown
/// each item: raw impression counts repeat users, and can exceed `users` (hence the clamp).
/// Negative or non-finite counts count as 0. With no users there is nothing to measure, and
/// every item gets the floor.
pub fn propensities_from_exposure(impressions: &[f64], users: usize) -> Vec<f64> {
    impressions
        .iter()
        .map(|&n| {
            let p = if users == 0 || !n.is_finite() {
                0.0
            } else {
                n.max(0.0) / users as f64
            };
            p.clamp(PROPENSITY_FLOOR, 1.0)
        })
        .collect()
}

/// Propensities from popularity when exposure is not logged: `p_i = (n_i / max_j n_j)^eta`,
/// floored at [`PROPENSITY_FLOOR`], where `n_i` is item `i`'s interaction count in the training
/// data (see [`DEFAULT_ETA`] for the model and the choice of `eta`). Only relative propensities
/// can be had this way (the most popular item gets 1), which is all a model comparison needs.
///
/// Negative or non-finite counts count as 0. If no item has any count there is no evidence of a
/// bias, and every item gets 1 (no correction).
pub fn propensities_from_popularity(popularity: &[f64], eta: f64) -> Vec<f64> {
    let count = |n: f64| if n.is_finite() { n.max(0.0) } else { 0.0 };
    let max = popularity.iter().map(|&n| count(n)).fold(0.0, f64::max);
    if max == 0.0 {
        return vec![1.0; popularity.len()];
    }
    popularity
        .iter()
        .map(|&n| (count(n) / max).powf(eta).clamp(PROPENSITY_FLOOR, 1.0))
        .collect()
}

/// Propensities of held-out test items, from observation propensities `p` (each clamped to
/// `[PROPENSITY_FLOOR, 1]`) when a random share `test_fraction = f` of the observations is held
/// out: `p·f / (1 − p·(1 − f))`.
///
/// Evaluation ranks only the items outside a user's training data, so what a test hit must be
/// weighted by is the probability that a relevant item *outside training* is a test item:
/// observed and held out, given that it was not kept for training. For a rarely observed item
/// that is about `p·f`, but an item that everyone is shown is, when it is not in training, in
/// test for sure (`p = 1` gives 1). Weighting by `p` instead over-weights the head against the
/// tail by up to `1/f`, which hides part of the gain of a model that finds relevant tail items.
/// Exact for absolute propensities (from exposure); for relative ones (from popularity) it
/// treats the most popular item as observed by everyone who finds it relevant.
///
/// Panics unless `0 < test_fraction <= 1` (a caller bug).
pub fn held_out_propensities(propensity: &[f64], test_fraction: f64) -> Vec<f64> {
    assert!(
        test_fraction > 0.0 && test_fraction <= 1.0,
        "test fraction in (0, 1]"
    );
    let f = test_fraction;
    propensity
        .iter()
        .map(|&p| {
            let p = valid(Some(p)).clamp(PROPENSITY_FLOOR, 1.0);
            p * f / (1.0 - p * (1.0 - f))
        })
        .collect()
}

/// `p` if it is a usable propensity (finite and positive), else [`PROPENSITY_FLOOR`]: an item
/// past the end of a propensity slice (added after the propensities were estimated) has never
/// been seen.
#[inline]
fn valid(p: Option<f64>) -> f64 {
    p.filter(|p| p.is_finite() && *p > 0.0)
        .unwrap_or(PROPENSITY_FLOOR)
}

/// `1 / log2(rank + 1)` for a 0-based rank.
#[inline]
fn gain(rank0: usize) -> f64 {
    1.0 / ((rank0 + 2) as f64).log2()
}

/// DCG of `n` hits at the top.
fn idcg(n: usize) -> f64 {
    (0..n).map(gain).sum()
}

/// Averages inverse-propensity-weighted `ndcg@K` and `recall@K` over users, from held-out test
/// items that were observed missing not at random.
///
/// For a user with test items `T` and ranking `L` (training items removed), each test item
/// weighs `w_i = 1 / p_i`, and `hit(i)` says whether `i` is in the first `K` of `L` at rank
/// `r_i` (1-based). With `n = min(K, |T|)`:
/// - IPS (Yang et al.'s estimator, with the user's number of relevant items approximated by
///   `|T|` as the naive metric does): `ndcg = Σ hit(i) w_i / log2(r_i + 1) / IDCG(n)` and
///   `recall = Σ hit(i) w_i / n`.
/// - SNIPS: the same with the weights divided by their mean over `T`, i.e. Yang et al.'s
///   `Σ w c / Σ w` within each user. It stays on the metric's scale whatever the absolute scale
///   of the propensities (popularity only gives relative ones), has a smaller variance, and with
///   equal propensities equals the naive metric of [`crate::eval::MetricSums`] exactly.
///
/// Both are means over users and can exceed 1: a hit on a rarely observed item stands for many
/// unobserved ones. SNIPS normalises within each user, so for a user with a single test item it
/// *is* the naive value: it needs several held-out items per user to correct anything, and IPS
/// is the one to read when users have few.
#[derive(Debug, Clone, Default)]
pub struct IpsSums {
    k: usize,
    users: usize,
    ndcg_ips: f64,
    ndcg_snips: f64,
    recall_ips: f64,
    recall_snips: f64,
}

/// The means of an [`IpsSums`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct IpsMeans {
    /// Inverse-propensity-weighted `ndcg@K`.
    pub ndcg_ips: f64,
    /// Self-normalised inverse-propensity-weighted `ndcg@K`.
    pub ndcg_snips: f64,
    /// Inverse-propensity-weighted `recall@K` (normalised by `min(K, |T_u|)`).
    pub recall_ips: f64,
    /// Self-normalised inverse-propensity-weighted `recall@K`.
    pub recall_snips: f64,
    /// Number of users averaged over.
    pub users: usize,
}

impl IpsSums {
    /// Sums of metrics at cut-off `k`.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            ..Self::default()
        }
    }

    /// Adds one user: `ranking` is best first with the user's training items already removed,
    /// `test` the user's held-out items (non-empty, sorted, distinct), `propensity` one value per
    /// item id (see [`held_out_propensities`]). Values are capped at 1; missing, zero or
    /// non-finite ones take [`PROPENSITY_FLOOR`].
    pub fn add(&mut self, ranking: &[u32], test: &[u32], propensity: &[f64]) {
        assert!(!test.is_empty(), "an evaluated user has test items");
        let n = self.k.min(test.len());
        // Not floored again: held-out propensities legitimately go below the floor.
        let p = |i: u32| valid(propensity.get(i as usize).copied()).min(1.0);
        let total_weight: f64 = test.iter().map(|&i| 1.0 / p(i)).sum();
        let mean_weight = total_weight / test.len() as f64;
        let (mut dcg, mut hits) = (0.0, 0.0);
        for (rank0, item) in ranking.iter().take(self.k).enumerate() {
            if test.binary_search(item).is_ok() {
                let w = 1.0 / p(*item);
                dcg += w * gain(rank0);
                hits += w;
            }
        }
        let ideal = idcg(n);
        self.users += 1;
        self.ndcg_ips += dcg / ideal;
        self.ndcg_snips += dcg / (mean_weight * ideal);
        self.recall_ips += hits / n as f64;
        self.recall_snips += hits / (mean_weight * n as f64);
    }

    /// Merges sums from another worker (same `k`).
    pub fn merge(&mut self, other: &Self) {
        debug_assert_eq!(self.k, other.k, "merging sums of different cut-offs");
        self.users += other.users;
        self.ndcg_ips += other.ndcg_ips;
        self.ndcg_snips += other.ndcg_snips;
        self.recall_ips += other.recall_ips;
        self.recall_snips += other.recall_snips;
    }

    /// Number of users added.
    pub fn users(&self) -> usize {
        self.users
    }

    /// The means over the users added (all 0 if none).
    pub fn means(&self) -> IpsMeans {
        let n = self.users.max(1) as f64;
        IpsMeans {
            ndcg_ips: self.ndcg_ips / n,
            ndcg_snips: self.ndcg_snips / n,
            recall_ips: self.recall_ips / n,
            recall_snips: self.recall_snips / n,
            users: self.users,
        }
    }
}

/// Per column of `weights`: how many rows have an entry in it (an item's interactions), the
/// popularity [`propensities_from_popularity`] reads.
pub fn item_counts(weights: &Csr) -> Vec<f64> {
    let mut counts = vec![0.0; weights.n_cols()];
    for r in 0..weights.n_rows() {
        for &c in weights.row(r).0 {
            counts[c as usize] += 1.0;
        }
    }
    counts
}

/// A propensity-weighted training matrix for the factor models: every weight (of any sign: a
/// negative weight's magnitude is its confidence, and a dislike needed an exposure too) is
/// multiplied by `min(1 / p_i, max_factor)` for its item `i`, so that interactions with rarely
/// exposed items count as the many unobserved ones they stand for, and no weight grows more than
/// `max_factor` times (see [`DEFAULT_MAX_FACTOR`]). Pass observation propensities (from exposure
/// or popularity), not held-out ones: training sees the training split only. They are clamped
/// to `[PROPENSITY_FLOOR, 1]`; items without one take the floor.
///
/// For iALS this raises the confidence `1 + alpha·|w|` of interactions with rarely exposed
/// items, which pulls the model's scores away from exposure and towards relevance.
pub fn weight_by_propensity(weights: &Csr, propensity: &[f64], max_factor: f64) -> Csr {
    let max_factor = max_factor.max(1.0);
    weights.map_entries(|_, item, w| {
        let p = valid(propensity.get(item as usize).copied()).clamp(PROPENSITY_FLOOR, 1.0);
        let factor = (1.0 / p).min(max_factor);
        (w as f64 * factor) as f32
    })
}

/// A synthetic world with a known exposure bias, where the truth is known: which items each
/// user finds relevant, and which they were shown.
///
/// - Relevance: user and item factors `x_u, y_i ~ N(0, I_d)` and an item appeal `b_i ~ N(0, 1)`
///   give `ρ_ui = σ(offset + appeal·b_i + scale·x_u·y_i/√d)`; the true relevance `R_ui` is one
///   Bernoulli draw of `ρ_ui`, fixed for the world.
/// - Exposure: item `i` is shown to each user independently with probability
///   `e_i = min(max_exposure, c·(n*_i)^a·exp(σ·z_i))`, where `n*_i = Σ_u ρ_ui` is its true
///   popularity, `z_i ~ N(0, 1)` a promotion unrelated to taste, and `c` sets the mean exposure.
///   With `a = 1, σ = 0` the system shows items in proportion to how many users want them (the
///   feedback loop of a popularity-driven front page): observed popularity grows as `n*²`, so
///   `p ∝ n^0.5` and [`DEFAULT_ETA`] is exact. Promotions (`σ > 0`) make the skew partly
///   unrelated to relevance, which is what misleads naive evaluation, and make the power law
///   under-correct.
/// - Observed positives: shown and relevant. A random `test_fraction` of them is the biased
///   (MNAR) test set, the rest is the training matrix (weight 1).
/// - Random test: for each user, `random_items` items drawn uniformly among those not in their
///   training data, revealed with their true relevance; the relevant ones are the test items (as
///   in Yahoo! R3 and Coat). A metric on it estimates the true metric without exposure bias.
pub mod synthetic {
    use crate::{Csr, Rng};

    /// The knobs of [`generate`]; `Default` is a small world with a strong exposure bias.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct WorldParams {
        /// Number of users.
        pub users: usize,
        /// Number of items.
        pub items: usize,
        /// Dimension `d` of the relevance factors.
        pub factors: usize,
        /// `offset` of the relevance logit: sets how many items a user finds relevant.
        pub relevance_offset: f64,
        /// `appeal` of the relevance logit: how much items differ in general appeal.
        pub appeal: f64,
        /// `scale` of the relevance logit: how personal relevance is.
        pub relevance_scale: f64,
        /// `a`: exposure grows as the true popularity to this power (0: exposure ignores
        /// relevance; negative: the system hides what users like).
        pub exposure_popularity: f64,
        /// `σ` of the log-normal promotion factor of exposure (pushes unrelated to taste).
        pub promotion: f64,
        /// Mean exposure probability over items.
        pub mean_exposure: f64,
        /// Exposure probability of the most exposed items (the cap).
        pub max_exposure: f64,
        /// Share of the observed positives held out as the biased test set.
        pub test_fraction: f64,
        /// Items per user revealed uniformly at random for the random test set (Yahoo! R3
        /// reveals 10; a small world needs more for a precise truth).
        pub random_items: usize,
    }

    impl Default for WorldParams {
        fn default() -> Self {
            Self {
                users: 500,
                items: 300,
                factors: 4,
                relevance_offset: -2.0,
                appeal: 1.0,
                relevance_scale: 3.0,
                exposure_popularity: 1.0,
                promotion: 0.75,
                mean_exposure: 0.2,
                max_exposure: 0.9,
                test_fraction: 0.3,
                random_items: 150,
            }
        }
    }

    /// A generated world (see the [module docs](super::synthetic)).
    #[derive(Debug, Clone)]
    pub struct World {
        /// Users × items training matrix of observed positives (weight 1).
        pub train: Csr,
        /// Held-out observed positives per user (sorted; users without any are left out): the
        /// MNAR test set an offline evaluation normally has.
        pub biased_test: Vec<(u32, Vec<u32>)>,
        /// Relevant items among a uniformly random sample per user (sorted; users without any
        /// are left out): the unbiased test set, the truth.
        pub random_test: Vec<(u32, Vec<u32>)>,
        /// True exposure probability of each item.
        pub exposure: Vec<f64>,
        /// Training interaction count of each item.
        pub popularity: Vec<f64>,
        /// Relevance probability `ρ_ui`, row-major (`users × items`): what an oracle would rank
        /// by.
        pub relevance: Vec<f64>,
        /// Number of users.
        pub users: usize,
        /// Number of items.
        pub items: usize,
    }

    impl World {
        /// User `u`'s relevance probabilities, one per item.
        pub fn relevance_of(&self, u: usize) -> &[f64] {
            &self.relevance[u * self.items..(u + 1) * self.items]
        }
    }

    /// `e_i = min(max, c · raw_i)` with `c` such that the mean of `e` is `mean` (bisection on
    /// `log c`: the mean is increasing in `c`).
    fn scale_to_mean(raw: &[f64], mean: f64, max: f64) -> Vec<f64> {
        let n = raw.len().max(1) as f64;
        let mean_at = |c: f64| raw.iter().map(|&r| (c * r).min(max)).sum::<f64>() / n;
        let (mut lo, mut hi) = (-60f64, 60f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mean_at(mid.exp()) < mean {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let c = (0.5 * (lo + hi)).exp();
        raw.iter().map(|&r| (c * r).min(max)).collect()
    }

    /// Generates a world; the same parameters and seed give the same world.
    pub fn generate(params: &WorldParams, seed: u64) -> World {
        let WorldParams {
            users,
            items,
            factors,
            ..
        } = *params;
        let mut rng = Rng::seed_from_u64(seed);
        let mut normals = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.normal()).collect() };
        let x = normals(users * factors);
        let y = normals(items * factors);
        let appeal = normals(items);
        let promotion = normals(items);
        let scale = params.relevance_scale / (factors.max(1) as f64).sqrt();
        let mut relevance = Vec::with_capacity(users * items);
        for u in 0..users {
            let xu = &x[u * factors..(u + 1) * factors];
            for i in 0..items {
                let yi = &y[i * factors..(i + 1) * factors];
                let dot: f64 = xu.iter().zip(yi).map(|(a, b)| a * b).sum();
                let logit = params.relevance_offset + params.appeal * appeal[i] + scale * dot;
                relevance.push(1.0 / (1.0 + (-logit).exp()));
            }
        }

        // True popularity: the expected number of users each item is relevant to.
        let mut true_popularity = vec![0.0; items];
        for row in relevance.chunks_exact(items.max(1)) {
            for (n, r) in true_popularity.iter_mut().zip(row) {
                *n += r;
            }
        }
        let raw: Vec<f64> = true_popularity
            .iter()
            .zip(&promotion)
            .map(|(&n, &z)| {
                (params.exposure_popularity * n.max(1e-9).ln() + params.promotion * z).exp()
            })
            .collect();
        let exposure = scale_to_mean(&raw, params.mean_exposure, params.max_exposure);

        // One draw of relevance and of exposure per pair, in a fixed order.
        let mut relevant = vec![false; users * items];
        let mut train_triples = Vec::new();
        let mut biased_test = Vec::new();
        let mut popularity = vec![0.0; items];
        for u in 0..users {
            let mut test = Vec::new();
            for i in 0..items {
                let r = rng.f64() < relevance[u * items + i];
                let shown = rng.f64() < exposure[i];
                relevant[u * items + i] = r;
                if r && shown {
                    if rng.f64() < params.test_fraction {
                        test.push(i as u32);
                    } else {
                        train_triples.push((u as u32, i as u32, 1.0f32));
                        popularity[i] += 1.0;
                    }
                }
            }
            if !test.is_empty() {
                biased_test.push((u as u32, test));
            }
        }
        let train = Csr::from_triples(users, items, &train_triples, false);
        let mut in_train = vec![false; items];
        let mut random_test = Vec::new();
        for u in 0..users {
            in_train.iter_mut().for_each(|t| *t = false);
            for &i in train.row(u).0 {
                in_train[i as usize] = true;
            }
            let mut candidates: Vec<u32> = (0..items as u32)
                .filter(|&i| !in_train[i as usize])
                .collect();
            // A partial Fisher–Yates shuffle: the first `random_items` are a uniform sample.
            let take = params.random_items.min(candidates.len());
            for k in 0..take {
                let j = k + rng.below((candidates.len() - k) as u64) as usize;
                candidates.swap(k, j);
            }
            let mut test: Vec<u32> = candidates[..take]
                .iter()
                .copied()
                .filter(|&i| relevant[u * items + i as usize])
                .collect();
            test.sort_unstable();
            if !test.is_empty() {
                random_test.push((u as u32, test));
            }
        }
        World {
            train,
            biased_test,
            random_test,
            exposure,
            popularity,
            relevance,
            users,
            items,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::MetricSums;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn propensities_from_exposure_are_shares_of_users_clamped() {
        let p = propensities_from_exposure(&[50.0, 100.0, 250.0, 0.0, 0.5, -3.0, f64::NAN], 100);
        assert_eq!(p, vec![0.5, 1.0, 1.0, 0.01, 0.01, 0.01, 0.01]);
        assert_eq!(propensities_from_exposure(&[5.0], 0), vec![0.01]);
    }

    #[test]
    fn propensities_from_popularity_follow_the_power_law() {
        let p = propensities_from_popularity(&[100.0, 25.0, 1.0, 0.0], 0.5);
        assert!(
            close(p[0], 1.0) && close(p[1], 0.5) && close(p[2], 0.1),
            "{p:?}"
        );
        assert_eq!(p[3], PROPENSITY_FLOOR);
        // `eta = 1`: proportional to popularity, down to the floor.
        let p = propensities_from_popularity(&[200.0, 50.0, 1.0], 1.0);
        assert!(close(p[1], 0.25) && close(p[2], PROPENSITY_FLOOR), "{p:?}");
        // `eta = 0`: no correction; no data: no correction either.
        assert_eq!(
            propensities_from_popularity(&[9.0, 1.0], 0.0),
            vec![1.0, 1.0]
        );
        assert_eq!(
            propensities_from_popularity(&[0.0, 0.0], 0.5),
            vec![1.0, 1.0]
        );
    }

    /// One user, by hand: test items {2, 5, 7} with propensities 0.5, 0.25, 1 (weights 2, 4, 1);
    /// ranking 5, 3, 2, 9 with K = 3: item 5 hits at rank 1, item 2 at rank 3, item 7 misses.
    #[test]
    fn one_user_by_hand() {
        let mut p = vec![1.0; 10];
        p[2] = 0.5;
        p[5] = 0.25;
        let mut s = IpsSums::new(3);
        s.add(&[5, 3, 2, 9], &[2, 5, 7], &p);
        let m = s.means();
        let dcg = 4.0 / 2f64.log2() + 2.0 / 4f64.log2(); // 4 + 1 = 5
        let idcg = 1.0 + 1.0 / 3f64.log2() + 0.5;
        let mean_w = (2.0 + 4.0 + 1.0) / 3.0;
        assert!(close(m.ndcg_ips, dcg / idcg), "{m:?}");
        assert!(close(m.ndcg_snips, dcg / (mean_w * idcg)), "{m:?}");
        assert!(close(m.recall_ips, 6.0 / 3.0), "{m:?}");
        assert!(close(m.recall_snips, 6.0 / (mean_w * 3.0)), "{m:?}");
        assert!(close(m.recall_snips, 6.0 / 7.0));
        assert_eq!(m.users, 1);
        // Merging is adding users.
        let mut t = IpsSums::new(3);
        t.merge(&s);
        t.merge(&s);
        assert_eq!(t.users(), 2);
        assert!(close(t.means().ndcg_ips, m.ndcg_ips));
    }

    /// With equal propensities SNIPS is the naive metric, whatever their value, and IPS is the
    /// naive metric divided by the propensity.
    #[test]
    fn snips_with_equal_propensities_is_the_naive_metric() {
        let cases: [(&[u32], &[u32]); 4] = [
            (&[4, 1, 8, 0, 3, 9, 2, 7, 6, 5, 11, 12], &[0, 5, 12]),
            (&[1, 2, 3], &[2]),
            (
                &[9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 10, 11, 12, 13],
                &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13],
            ),
            (&[3, 4], &[7]),
        ];
        for p in [1.0, 0.3] {
            let props = vec![p; 20];
            let mut naive = MetricSums::new(20);
            let mut ips = IpsSums::new(10);
            let mut ips20 = IpsSums::new(20);
            for (ranking, test) in cases {
                naive.add(ranking, test);
                ips.add(ranking, test, &props);
                ips20.add(ranking, test, &props);
            }
            let (naive, m, m20) = (naive.means(), ips.means(), ips20.means());
            assert!((m.ndcg_snips - naive["ndcg@10"]).abs() < 1e-12, "{m:?}");
            assert!(
                (m20.recall_snips - naive["recall@20"]).abs() < 1e-12,
                "{m20:?}"
            );
            assert!((m.ndcg_ips * p - naive["ndcg@10"]).abs() < 1e-12, "{m:?}");
            assert!(
                (m20.recall_ips * p - naive["recall@20"]).abs() < 1e-12,
                "{m20:?}"
            );
        }
    }

    #[test]
    fn held_out_propensities_condition_on_not_being_in_training() {
        let p = held_out_propensities(&[1.0, 0.5, 0.001, f64::NAN], 0.25);
        // Always observed: in test whenever not in training.
        assert!(close(p[0], 1.0), "{p:?}");
        // 0.5 · 0.25 / (1 − 0.5 · 0.75) = 0.125 / 0.625.
        assert!(close(p[1], 0.2), "{p:?}");
        // Rare (floored first): about p·f.
        let rare = 0.01 * 0.25 / (1.0 - 0.01 * 0.75);
        assert!(close(p[2], rare) && close(p[3], rare), "{p:?}");
        // Holding everything out changes nothing.
        assert_eq!(held_out_propensities(&[0.3], 1.0), vec![0.3]);
        // IpsSums uses such values as given, below the floor included.
        let mut s = IpsSums::new(1);
        s.add(&[2], &[2], &p);
        assert!(close(s.means().ndcg_ips, 1.0 / rare));
    }

    #[test]
    fn weights_grow_by_inverse_propensity_up_to_the_clip() {
        let w = Csr::from_triples(
            2,
            4,
            &[
                (0, 0, 1.0),
                (0, 1, 2.0),
                (1, 2, 1.0),
                (1, 3, -1.0),
                (1, 1, 1.0),
            ],
            false,
        );
        // Item 3 has no propensity: the floor, so the clip.
        let p = [1.0, 0.5, 0.02];
        let out = weight_by_propensity(&w, &p, 10.0);
        assert_eq!(out.row(0), (&[0, 1][..], &[1.0, 4.0][..]));
        assert_eq!(out.row(1), (&[1, 2, 3][..], &[2.0, 10.0, -10.0][..]));
        // A clip below 1 would shrink weights; it is read as 1 (no weighting).
        assert_eq!(weight_by_propensity(&w, &p, 0.5), w);
    }

    #[test]
    fn the_world_is_deterministic_and_biased() {
        let params = synthetic::WorldParams::default();
        let a = synthetic::generate(&params, 3);
        let b = synthetic::generate(&params, 3);
        assert_eq!(a.train, b.train);
        assert_eq!(a.random_test, b.random_test);
        // The most exposed items are observed far more often than the least exposed ones.
        let mut by_exposure: Vec<usize> = (0..a.items).collect();
        by_exposure.sort_by(|&i, &j| a.exposure[j].total_cmp(&a.exposure[i]));
        let head: f64 = by_exposure[..30].iter().map(|&i| a.popularity[i]).sum();
        let tail: f64 = by_exposure[a.items - 30..]
            .iter()
            .map(|&i| a.popularity[i])
            .sum();
        assert!(head > 20.0 * tail.max(1.0), "head {head} tail {tail}");
        for (_, t) in a.biased_test.iter().chain(&a.random_test) {
            assert!(!t.is_empty() && t.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
