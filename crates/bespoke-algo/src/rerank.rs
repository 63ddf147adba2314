//! Re-rankers that reorder a candidate list for calibration, popularity debiasing and group
//! fairness.
//!
//! Every re-ranker takes the candidates best first, as the scorer ranked them, and returns the
//! positions of the chosen candidates in their new order: distinct indices into the input, at
//! most `n` of them. Scores are never changed, so the caller keeps them for display and for
//! explaining why an item moved. Ties always go to the smaller position, which keeps the output
//! deterministic and as close to the scorer's order as the objective allows.
//!
//! - [`calibrate`]: Steck's calibrated recommendations; the categories of the list match the
//!   shares in the user's history.
//! - [`xquad`] and [`inverse_popularity`]: popularity debiasing; long-tail items move up.
//! - [`Fair`]: FA*IR; every prefix of the list holds enough items of a protected group.

/// Calibrated re-ranking after Steck, "Calibrated recommendations" (RecSys 2018), with the
/// paper's greedy algorithm.
///
/// Items are picked one at a time; each step adds the candidate that maximises
///
/// ```text
/// (1 − λ)·Σ_{i∈S} relevance(i) − λ·KL(p ‖ q̃(S)),    q̃(S) = (1 − α)·q(S) + α·p
/// ```
///
/// where `S` is the list so far plus the candidate, `p = target` is the user's category
/// distribution p(g|u) and `q(g|S)` is the mean over the items of `S` of p(g|i), an item's mass
/// split evenly over its categories.
///
/// - `relevance[j]` and `categories[j]` describe candidate `j`; the caller rescales relevance so
///   that it is comparable with the KL term (Steck uses scores in \[0, 1\]). It must be finite.
/// - Items without categories carry no information about the shares, so they are left out of
///   the mean that forms `q`: adding one leaves `q` unchanged and it competes on relevance alone.
///   (Counting them with zero mass would make `q` sum to less than 1 and penalise them for no
///   category in particular.)
/// - A category id `≥ target.len()` still takes its share of the item's mass, mass that matches
///   no target category; list distinct ids, since a repeated id gets its share twice.
/// - `target` is normalised to sum to 1 (negative or non-finite entries count as 0); when it is
///   all zeros there is nothing to calibrate to and the list follows relevance.
/// - `lambda` is clamped to \[0, 1\]; `lambda ≤ 0` (or NaN) returns `0..min(n, len)` exactly,
///   the candidate order, without looking at relevance.
/// - `alpha` (clamped to \[0, 1\], NaN counts as 0) keeps the KL finite when the list misses a
///   category of the user; Steck uses 0.01. With `alpha = 0` such lists have infinite
///   divergence and tie with each other, and the smaller position wins.
///
/// Returns `min(n, len)` distinct positions. Cost: O(n·(G + len·c)) for `G` categories and `c`
/// categories per item, as `q` is kept incrementally.
///
/// # Panics
///
/// When `relevance` and `categories` differ in length.
pub fn calibrate(
    relevance: &[f64],
    categories: &[&[u32]],
    target: &[f64],
    lambda: f64,
    alpha: f64,
    n: usize,
) -> Vec<usize> {
    assert_eq!(
        relevance.len(),
        categories.len(),
        "one category list per candidate"
    );
    let len = relevance.len();
    let take = n.min(len);
    if lambda.is_nan() || lambda <= 0.0 {
        return (0..take).collect();
    }
    let lambda = lambda.min(1.0);
    let alpha = if alpha >= 0.0 { alpha.min(1.0) } else { 0.0 };

    let mut p: Vec<f64> = target
        .iter()
        .map(|&t| if t.is_finite() && t > 0.0 { t } else { 0.0 })
        .collect();
    let total: f64 = p.iter().sum();
    if total > 0.0 {
        p.iter_mut().for_each(|x| *x /= total);
    }
    let items = ItemCategories::new(categories, &p);

    // Category mass summed over the categorised items chosen so far, and their number.
    let mut mass = vec![0.0; p.len()];
    let mut categorised = 0usize;
    let mut with_one_more = vec![0.0; p.len()];
    let mut current = vec![0.0; p.len()];
    let mut chosen = vec![false; len];
    let mut order = Vec::with_capacity(take);
    for _ in 0..take {
        // Cross-entropy −Σ p·ln q̃ stands in for KL(p ‖ q̃): the two differ by the entropy of
        // p, the same for every candidate, so the argmax is the same.
        let base = LogSum::fill(&p, &mass, categorised + 1, alpha, &mut with_one_more);
        let unchanged = LogSum::fill(&p, &mass, categorised, alpha, &mut current).cross_entropy();
        let mut best: Option<(usize, f64)> = None;
        for j in (0..len).filter(|&j| !chosen[j]) {
            let cross_entropy = if items.categorised[j] {
                // Only the candidate's own categories change; swap their terms.
                let mut sum = base;
                for &(g, w) in items.of(j) {
                    sum.remove(with_one_more[g]);
                    sum.add(log_term(p[g], mass[g] + w, categorised + 1, alpha));
                }
                sum.cross_entropy()
            } else {
                unchanged
            };
            let mut objective = (1.0 - lambda) * relevance[j] - lambda * cross_entropy;
            if objective.is_nan() {
                objective = f64::NEG_INFINITY;
            }
            if best.is_none_or(|(_, b)| objective > b) {
                best = Some((j, objective));
            }
        }
        let (j, _) = best.expect("take ≤ len leaves a candidate at every step");
        chosen[j] = true;
        order.push(j);
        if items.categorised[j] {
            for &(g, w) in items.of(j) {
                mass[g] += w;
            }
            categorised += 1;
        }
    }
    order
}

/// Each candidate's category mass p(g|i), restricted to the categories the user has (the only
/// ones KL(p ‖ q̃) looks at), with repeated ids merged so that each category's term is swapped
/// once. Flattened: candidate `j`'s entries are `entries[offsets[j]..offsets[j + 1]]`.
struct ItemCategories {
    offsets: Vec<usize>,
    entries: Vec<(usize, f64)>,
    categorised: Vec<bool>,
}

impl ItemCategories {
    fn new(categories: &[&[u32]], p: &[f64]) -> Self {
        let mut offsets = Vec::with_capacity(categories.len() + 1);
        offsets.push(0);
        let mut entries = Vec::new();
        let mut scratch = Vec::new();
        for cats in categories {
            scratch.clear();
            scratch.extend(
                cats.iter()
                    .map(|&g| g as usize)
                    .filter(|&g| g < p.len() && p[g] > 0.0),
            );
            scratch.sort_unstable();
            let share = 1.0 / cats.len() as f64;
            for run in scratch.chunk_by(|a, b| a == b) {
                entries.push((run[0], share * run.len() as f64));
            }
            offsets.push(entries.len());
        }
        let categorised = categories.iter().map(|c| !c.is_empty()).collect();
        Self {
            offsets,
            entries,
            categorised,
        }
    }

    fn of(&self, j: usize) -> &[(usize, f64)] {
        &self.entries[self.offsets[j]..self.offsets[j + 1]]
    }
}

/// Σ_g p_g·ln q̃_g, split into its finite part and the number of infinite terms (q̃_g = 0), so
/// that terms can be swapped out and in without computing ∞ − ∞.
#[derive(Clone, Copy)]
struct LogSum {
    finite: f64,
    infinite: usize,
}

impl LogSum {
    /// Sums the terms for a list of `count` categorised items with category mass `mass`,
    /// leaving each category's term in `terms`.
    fn fill(p: &[f64], mass: &[f64], count: usize, alpha: f64, terms: &mut [f64]) -> Self {
        let mut sum = Self {
            finite: 0.0,
            infinite: 0,
        };
        for g in 0..p.len() {
            terms[g] = if p[g] > 0.0 {
                log_term(p[g], mass[g], count, alpha)
            } else {
                0.0
            };
            sum.add(terms[g]);
        }
        sum
    }

    fn add(&mut self, term: f64) {
        if term == f64::NEG_INFINITY {
            self.infinite += 1;
        } else {
            self.finite += term;
        }
    }

    fn remove(&mut self, term: f64) {
        if term == f64::NEG_INFINITY {
            self.infinite -= 1;
        } else {
            self.finite -= term;
        }
    }

    fn cross_entropy(self) -> f64 {
        if self.infinite > 0 {
            f64::INFINITY
        } else {
            -self.finite
        }
    }
}

/// p_g·ln q̃_g for one category with `mass` spread over `count` categorised items (q = 0 for an
/// empty list).
fn log_term(p_g: f64, mass: f64, count: usize, alpha: f64) -> f64 {
    let q = if count == 0 { 0.0 } else { mass / count as f64 };
    p_g * ((1.0 - alpha) * q + alpha * p_g).ln()
}

/// Popularity debiasing after Abdollahpouri, Burke and Mobasher, "Managing popularity bias in
/// recommender systems with personalized re-ranking" (FLAIRS 2019): xQuAD over two groups,
/// head and tail, in the paper's smooth form, where a group's coverage is its share of the list
/// so far rather than the binary "already covered".
///
/// Each step adds the candidate `v` that maximises
///
/// ```text
/// score(v|S) = (1 − λ)·relevance(v) + λ·Σ_{c∈{head,tail}} P(c|u)·1[v∈c]·(1 − |S∩c| / max(|S|, 1))
/// ```
///
/// with `S` the list so far, `P(tail|u) = tail_preference` (the tail share of the user's
/// profile, clamped to \[0, 1\], NaN counts as 0) and `P(head|u) = 1 − tail_preference`.
///
/// - `is_tail[j]` says whether candidate `j` is a long-tail item.
/// - `lambda` is clamped to \[0, 1\]; `lambda ≤ 0` (or NaN) returns `0..min(n, len)` exactly.
/// - At `lambda = 1` relevance plays no part: the group with the larger bonus wins, and within a
///   tie the smaller position. With `tail_preference = 1` the first tail item comes first; the
///   next slot ties at zero bonus (the tail is covered, the head is not wanted) and goes to the
///   smallest position.
/// - Relevance must be finite; NaN scores rank last.
///
/// Returns `min(n, len)` distinct positions in O(len·log len): the bonus is the same for every
/// item of a group, so each group keeps its own order and only the two heads compete.
///
/// # Panics
///
/// When `relevance` and `is_tail` differ in length.
pub fn xquad(
    relevance: &[f64],
    is_tail: &[bool],
    tail_preference: f64,
    lambda: f64,
    n: usize,
) -> Vec<usize> {
    assert_eq!(
        relevance.len(),
        is_tail.len(),
        "one group flag per candidate"
    );
    let take = n.min(relevance.len());
    if lambda.is_nan() || lambda <= 0.0 {
        return (0..take).collect();
    }
    let lambda = lambda.min(1.0);
    let tail = if tail_preference >= 0.0 {
        tail_preference.min(1.0)
    } else {
        0.0
    };
    let preference = [1.0 - tail, tail];
    let weighted = |j: usize| not_nan((1.0 - lambda) * relevance[j]);

    // Group 0 is the head, group 1 the tail; each sorted by its weighted relevance, then position.
    let mut groups: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for (j, &t) in is_tail.iter().enumerate() {
        groups[usize::from(t)].push(j);
    }
    for group in &mut groups {
        group.sort_by(|&a, &b| weighted(b).total_cmp(&weighted(a)).then(a.cmp(&b)));
    }

    let mut next = [0usize; 2];
    let mut counts = [0usize; 2];
    let mut order = Vec::with_capacity(take);
    for size in 0..take {
        let mut best: Option<(usize, usize, f64)> = None;
        for c in 0..2 {
            let Some(&j) = groups[c].get(next[c]) else {
                continue;
            };
            let share = if size == 0 {
                0.0
            } else {
                counts[c] as f64 / size as f64
            };
            let score = not_nan(weighted(j) + lambda * preference[c] * (1.0 - share));
            if best.is_none_or(|(_, k, s)| score > s || (score == s && j < k)) {
                best = Some((c, j, score));
            }
        }
        let (c, j, _) = best.expect("take ≤ len leaves a candidate at every step");
        next[c] += 1;
        counts[c] += 1;
        order.push(j);
    }
    order
}

/// Popularity debiasing by inverse-popularity re-weighting: orders candidates by
/// `relevance(v) / max(popularity(v), 1)^beta`, highest first.
///
/// - The floor of 1 keeps never-seen items (popularity 0) from dividing by zero or dominating
///   the list; NaN popularity counts as 1.
/// - `beta = 0` orders by relevance alone; larger `beta` favours the tail more; a negative
///   `beta` favours popular items. Relevance should be non-negative, since dividing a negative
///   score by a larger popularity would raise it.
/// - Stable: equal keys keep their candidate order. NaN keys rank last.
///
/// Returns `min(n, len)` distinct positions.
///
/// # Panics
///
/// When `relevance` and `popularity` differ in length.
pub fn inverse_popularity(
    relevance: &[f64],
    popularity: &[f64],
    beta: f64,
    n: usize,
) -> Vec<usize> {
    assert_eq!(
        relevance.len(),
        popularity.len(),
        "one popularity per candidate"
    );
    // Adding 0.0 turns −0.0 into +0.0, so that total_cmp ties them as the ordinary order does.
    let keys: Vec<f64> = relevance
        .iter()
        .zip(popularity)
        .map(|(&r, &pop)| not_nan(r / pop.max(1.0).powf(beta)) + 0.0)
        .collect();
    let better = |a: &usize, b: &usize| keys[*b].total_cmp(&keys[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..keys.len()).collect();
    let take = n.min(order.len());
    if take == 0 {
        return Vec::new();
    }
    if take < order.len() {
        order.select_nth_unstable_by(take - 1, better);
        order.truncate(take);
    }
    order.sort_unstable_by(better);
    order
}

fn not_nan(x: f64) -> f64 {
    if x.is_nan() { f64::NEG_INFINITY } else { x }
}

/// FA*IR, after Zehlike et al., "FA*IR: a fair top-k ranking algorithm" (CIKM 2017): a top-k
/// ranking in which every prefix of length `k` holds at least `m(k)` items of a protected group.
///
/// `m(k)` is the smallest count that a one-sided binomial test would not reject: the least `x`
/// with `F(x; k, p) > α_c`, `F` the binomial CDF (the paper's Definition 3.1). Testing every
/// prefix at level `α` rejects a truly fair ranking (each item protected with probability `p`)
/// more often than `α`, so [`Fair::new`] adjusts, as the paper's Algorithm 2 does: it computes
/// the probability that a fair ranking fails some prefix exactly, by dynamic programming over
/// the number of protected items, and bisects for `α_c`.
///
/// The failure probability is a step function of `α_c`, so it rarely equals `α`; `α_c` is the
/// largest level whose table fails with probability at most `α` (conservative, unlike the
/// `fairsearchcore` package, which takes the table whose failure probability is closest to `α`
/// on either side). When the unadjusted table already fails at most that often, `α_c = α`.
///
/// Construction costs O(n²) time and up to O(n²) transient memory (the lower tails of the
/// binomial CDFs); build once per setting and reuse.
#[derive(Clone, Debug, PartialEq)]
pub struct Fair {
    p: f64,
    alpha: f64,
    adjusted_alpha: f64,
    mtable: Vec<usize>,
}

/// Why [`Fair`] rejected its parameters.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FairError {
    /// The target share of protected items must lie strictly between 0 and 1.
    #[error("protected share p must be in (0, 1), got {p}")]
    InvalidP {
        /// The share given.
        p: f64,
    },
    /// The significance level must lie strictly between 0 and 1.
    #[error("significance alpha must be in (0, 1), got {alpha}")]
    InvalidAlpha {
        /// The level given.
        alpha: f64,
    },
    /// A table for an empty ranking constrains nothing.
    #[error("ranking length must be at least 1")]
    ZeroLength,
    /// The table costs O(n²) to build; longer rankings are outside what re-ranking is for.
    #[error("ranking length {n} exceeds the maximum of {max}")]
    TooLong {
        /// The length asked for.
        n: usize,
        /// [`Fair::MAX_LEN`].
        max: usize,
    },
}

/// The result of [`Fair::rerank`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FairRanking {
    /// Candidate positions in their new order.
    pub order: Vec<usize>,
    /// Per output slot: whether a protected item was moved up there to meet `m(k)`, ahead of a
    /// better non-protected candidate.
    pub forced: Vec<bool>,
    /// Whether every prefix met `m(k)`; false when the protected candidates ran out first.
    pub satisfied: bool,
}

impl Fair {
    /// The longest ranking a table can be built for.
    pub const MAX_LEN: usize = 1000;

    /// The table for rankings of length `n` with protected share `p` and significance `alpha`,
    /// adjusted for testing every prefix (see [`Fair`]).
    pub fn new(n: usize, p: f64, alpha: f64) -> Result<Self, FairError> {
        check(n, p, alpha)?;
        let tails = LowerTails::new(n, p, alpha);
        let mut adjusted_alpha = alpha;
        if fail_probability(&tails.mtable(alpha), p) > alpha {
            // Invariant: the table at `lo` fails at most `alpha` of fair rankings, at `hi` more.
            // Failure grows with the level, so bisect until no double lies between them.
            let (mut lo, mut hi) = (0.0_f64, alpha);
            loop {
                let mid = 0.5 * (lo + hi);
                if mid <= lo || mid >= hi {
                    break;
                }
                if fail_probability(&tails.mtable(mid), p) <= alpha {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            adjusted_alpha = lo;
        }
        Ok(Self {
            p,
            alpha,
            adjusted_alpha,
            mtable: tails.mtable(adjusted_alpha),
        })
    }

    /// The table with every prefix tested at `alpha` itself, as the paper's Definition 3.1
    /// without the multiple-testing adjustment; a fair ranking fails it more often than `alpha`.
    pub fn unadjusted(n: usize, p: f64, alpha: f64) -> Result<Self, FairError> {
        check(n, p, alpha)?;
        Ok(Self {
            p,
            alpha,
            adjusted_alpha: alpha,
            mtable: LowerTails::new(n, p, alpha).mtable(alpha),
        })
    }

    /// `m(1..=n)`: index `k − 1` holds the least number of protected items in the top `k`.
    pub fn mtable(&self) -> &[usize] {
        &self.mtable
    }

    /// The per-prefix level `α_c` the table was built with; equals [`Fair::alpha`] for
    /// [`Fair::unadjusted`] tables.
    pub fn adjusted_alpha(&self) -> f64 {
        self.adjusted_alpha
    }

    /// The target share of protected items.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// The significance level asked for.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// FA*IR's re-ranking (the paper's Algorithm 1): keeps the protected and the non-protected
    /// candidates in two queues in candidate order; at output position `k`, if fewer than `m(k)`
    /// protected items are placed it takes the next protected one, otherwise whichever queue
    /// head comes first in candidate order.
    ///
    /// - `protected[j]` says whether candidate `j` (best first) is protected.
    /// - Returns `min(n, len)` positions. Each group keeps its candidate order.
    /// - When the protected candidates run out, the rest are non-protected ones in order and
    ///   `satisfied` is false.
    /// - Positions beyond the table's length need `m(table length)` protected items, which the
    ///   earlier prefixes already hold, so they follow candidate order; build the table for the
    ///   longest list you serve.
    pub fn rerank(&self, protected: &[bool], n: usize) -> FairRanking {
        let take = n.min(protected.len());
        let next =
            |from: usize, want: bool| (from..protected.len()).find(|&j| protected[j] == want);
        let mut next_protected = next(0, true);
        let mut next_other = next(0, false);
        let mut placed = 0usize;
        let mut ranking = FairRanking {
            order: Vec::with_capacity(take),
            forced: Vec::with_capacity(take),
            satisfied: true,
        };
        for k in 1..=take {
            let need = self.mtable[k.min(self.mtable.len()) - 1];
            let (j, forced) = match (next_protected, next_other) {
                (Some(a), Some(b)) if placed < need => (a, b < a),
                (Some(a), Some(b)) => (a.min(b), false),
                (Some(a), None) => (a, false),
                (None, Some(b)) => (b, false),
                (None, None) => break,
            };
            if protected[j] {
                placed += 1;
                next_protected = next(j + 1, true);
            } else {
                next_other = next(j + 1, false);
            }
            if placed < need {
                ranking.satisfied = false;
            }
            ranking.order.push(j);
            ranking.forced.push(forced);
        }
        ranking
    }
}

fn check(n: usize, p: f64, alpha: f64) -> Result<(), FairError> {
    if !(p > 0.0 && p < 1.0) {
        return Err(FairError::InvalidP { p });
    }
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(FairError::InvalidAlpha { alpha });
    }
    if n == 0 {
        return Err(FairError::ZeroLength);
    }
    if n > Fair::MAX_LEN {
        return Err(FairError::TooLong {
            n,
            max: Fair::MAX_LEN,
        });
    }
    Ok(())
}

/// The binomial CDF values `F(x; k, p) ≤ alpha` for `k = 1..=n`, the only ones a table at a
/// level up to `alpha` looks at. Row `k` is `cdf[offsets[k - 1]..offsets[k]]`, increasing in `x`.
struct LowerTails {
    offsets: Vec<usize>,
    cdf: Vec<f64>,
}

impl LowerTails {
    fn new(n: usize, p: f64, alpha: f64) -> Self {
        // The pmf row by the recurrence P_k(x) = (1 − p)·P_{k−1}(x) + p·P_{k−1}(x − 1): convex
        // combinations of non-negative numbers, so it neither cancels nor overflows; values
        // below f64's range underflow to 0, far under any useful level.
        let mut pmf = vec![0.0; n + 1];
        pmf[0] = 1.0;
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        let mut cdf = Vec::new();
        for k in 1..=n {
            for x in (1..=k).rev() {
                pmf[x] = (1.0 - p) * pmf[x] + p * pmf[x - 1];
            }
            pmf[0] *= 1.0 - p;
            let mut f = 0.0;
            for &mass in &pmf[..=k] {
                f += mass;
                if f > alpha {
                    break;
                }
                cdf.push(f);
            }
            offsets.push(cdf.len());
        }
        Self { offsets, cdf }
    }

    /// `m(k)` for `k = 1..=n` at level `level ≤ alpha`: the number of `x` with `F(x) ≤ level`,
    /// which is the least `x` with `F(x) > level`.
    fn mtable(&self, level: f64) -> Vec<usize> {
        self.offsets
            .windows(2)
            .map(|w| self.cdf[w[0]..w[1]].partition_point(|&f| f <= level))
            .collect()
    }
}

/// The probability that a fair ranking (each position protected with probability `p`,
/// independently) has fewer than `mtable[k − 1]` protected items in some prefix `k`.
///
/// Dynamic programming over the number of protected items among rankings that have not yet
/// failed; the mass that falls below `m(k)` is added up as it fails, which keeps small
/// probabilities accurate (1 − success would cancel).
fn fail_probability(mtable: &[usize], p: f64) -> f64 {
    let n = mtable.len();
    let mut alive = vec![0.0; n + 1];
    alive[0] = 1.0;
    // Counts below `low` have failed already and hold zero.
    let mut low = 0usize;
    let mut failed = 0.0;
    for (i, &m) in mtable.iter().enumerate() {
        let k = i + 1;
        for x in (low.max(1)..=k).rev() {
            alive[x] = (1.0 - p) * alive[x] + p * alive[x - 1];
        }
        if low == 0 {
            alive[0] *= 1.0 - p;
        }
        while low < m.min(k + 1) {
            failed += alive[low];
            alive[low] = 0.0;
            low += 1;
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn distinct_positions(order: &[usize], len: usize, n: usize) -> bool {
        let mut seen = vec![false; len];
        order.len() == n.min(len)
            && order
                .iter()
                .all(|&j| j < len && !std::mem::replace(&mut seen[j], true))
    }

    fn cats(lists: &[Vec<u32>]) -> Vec<&[u32]> {
        lists.iter().map(Vec::as_slice).collect()
    }

    // ---- calibrate ----

    /// Steck's objective for `set`, computed from scratch: the naive twin of `calibrate`.
    fn naive_calibration_objective(
        relevance: &[f64],
        categories: &[&[u32]],
        target: &[f64],
        lambda: f64,
        alpha: f64,
        set: &[usize],
    ) -> f64 {
        let total: f64 = target.iter().sum();
        let p: Vec<f64> = target.iter().map(|t| t / total).collect();
        let mut q = vec![0.0; p.len()];
        let with_categories: Vec<usize> = set
            .iter()
            .copied()
            .filter(|&j| !categories[j].is_empty())
            .collect();
        for &j in &with_categories {
            for &g in categories[j] {
                if (g as usize) < q.len() {
                    q[g as usize] +=
                        1.0 / categories[j].len() as f64 / with_categories.len() as f64;
                }
            }
        }
        let mut kl = 0.0;
        for g in 0..p.len() {
            if p[g] > 0.0 {
                kl += p[g] * (p[g] / ((1.0 - alpha) * q[g] + alpha * p[g])).ln();
            }
        }
        let relevance: f64 = set.iter().map(|&j| relevance[j]).sum();
        let objective = (1.0 - lambda) * relevance - lambda * kl;
        if objective.is_nan() {
            f64::NEG_INFINITY
        } else {
            objective
        }
    }

    #[test]
    fn calibrate_zero_lambda_keeps_candidate_order() {
        let lists = vec![vec![0], vec![1], vec![0]];
        // Relevance out of order on purpose: lambda 0 must not sort it.
        let order = calibrate(&[0.1, 0.9, 0.5], &cats(&lists), &[0.5, 0.5], 0.0, 0.01, 5);
        assert_eq!(order, vec![0, 1, 2]);
        let order = calibrate(&[0.1, 0.9, 0.5], &cats(&lists), &[0.5, 0.5], 0.0, 0.01, 2);
        assert_eq!(order, vec![0, 1]);
        assert!(calibrate(&[], &[], &[1.0], 0.5, 0.01, 3).is_empty());
    }

    #[test]
    fn calibrate_alternates_genres_for_a_balanced_user() {
        // Genre A fills the top four, genre B the next four; the user is 50/50.
        // By hand, λ = 0.5, α = 0.01: the first pick sees the same KL for every candidate
        // (q̃ = (0.995, 0.005) or its mirror, KL ≈ 1.958), so relevance picks 0. The second
        // compares A (KL 1.958) with B (q = (½, ½), KL 0): 0.5·0.99 − 0.979 < 0.5·0.96, so 4.
        // From then on every imbalance costs more KL than the 0.01 relevance steps gain.
        // Checked with a naive Python twin (the objective recomputed from scratch):
        // calibrate([1.0,0.99,...,0.93], [[0]]*4+[[1]]*4, [0.5,0.5], 0.5, 0.01, 8).
        let relevance = [1.0, 0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93];
        let lists = vec![
            vec![0],
            vec![0],
            vec![0],
            vec![0],
            vec![1],
            vec![1],
            vec![1],
            vec![1],
        ];
        let order = calibrate(&relevance, &cats(&lists), &[0.5, 0.5], 0.5, 0.01, 8);
        assert_eq!(order, vec![0, 4, 1, 5, 2, 6, 3, 7]);
        let order = calibrate(&relevance, &cats(&lists), &[0.5, 0.5], 0.5, 0.01, 3);
        assert_eq!(order, vec![0, 4, 1]);
        // Target given as counts rather than shares: normalised to the same thing.
        let order = calibrate(&relevance, &cats(&lists), &[3.0, 3.0], 0.5, 0.01, 8);
        assert_eq!(order, vec![0, 4, 1, 5, 2, 6, 3, 7]);
        // A user of genre A only: B never helps, so the list follows relevance.
        let order = calibrate(&relevance, &cats(&lists), &[1.0, 0.0], 0.5, 0.01, 8);
        assert_eq!(order, (0..8).collect::<Vec<_>>());
        // No target at all: nothing to calibrate to.
        let order = calibrate(&relevance, &cats(&lists), &[0.0, 0.0], 0.5, 0.01, 8);
        assert_eq!(order, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn calibrate_handles_multi_category_and_uncategorised_items() {
        // Candidate 1 has no category, 2 has two, 4 is the only one with genre 2.
        let relevance = [1.0, 0.9, 0.8, 0.7, 0.6];
        let lists = vec![vec![0], vec![], vec![0, 1], vec![1], vec![2]];
        let target = [0.5, 0.3, 0.2];
        // Naive Python twin, as above.
        assert_eq!(
            calibrate(&relevance, &cats(&lists), &target, 0.5, 0.01, 5),
            vec![2, 4, 0, 1, 3]
        );
        // Pure KL without smoothing: every list lacks genre 1 or 2 until both 3 or 2 and 4 are
        // in, so the first three picks tie at infinite divergence and go by position (0, 1, 2);
        // then 4 completes the genres (finite) where 3 does not.
        assert_eq!(
            calibrate(&relevance, &cats(&lists), &target, 1.0, 0.0, 5),
            vec![0, 1, 2, 4, 3]
        );
    }

    proptest! {
        #[test]
        fn calibrate_picks_the_naive_argmax(
            items in proptest::collection::vec(
                (0.0f64..1.0, proptest::collection::vec(0u32..5, 0..3)),
                0..20,
            ),
            target in proptest::collection::vec(0.0f64..1.0, 4),
            lambda in 0.05f64..1.0,
            alpha in prop_oneof![Just(0.0), 0.001f64..0.5],
            n in 0usize..25,
        ) {
            let relevance: Vec<f64> = items.iter().map(|(r, _)| *r).collect();
            let lists: Vec<Vec<u32>> = items.iter().map(|(_, c)| c.clone()).collect();
            let categories = cats(&lists);
            let target: Vec<f64> = target.iter().map(|t| t + 0.01).collect();
            let order = calibrate(&relevance, &categories, &target, lambda, alpha, n);
            prop_assert!(distinct_positions(&order, relevance.len(), n));
            let objective = |set: &[usize]| {
                naive_calibration_objective(&relevance, &categories, &target, lambda, alpha, set)
            };
            for step in 0..order.len() {
                let mut set = order[..step].to_vec();
                set.push(order[step]);
                let picked = objective(&set);
                for j in (0..relevance.len()).filter(|j| !order[..step].contains(j)) {
                    set[step] = j;
                    let other = objective(&set);
                    prop_assert!(
                        picked >= other - 1e-9 * (1.0 + other.abs()),
                        "step {step}: picked {} ({picked}) but {j} scores {other}",
                        order[step]
                    );
                }
            }
        }
    }

    // ---- xquad ----

    #[test]
    fn xquad_zero_lambda_keeps_candidate_order() {
        let order = xquad(&[0.1, 0.9, 0.5], &[true, false, true], 0.7, 0.0, 10);
        assert_eq!(order, vec![0, 1, 2]);
    }

    #[test]
    fn xquad_full_lambda_with_tail_user_puts_tail_first() {
        // Bonus only: tail 2 first (bonus 1 vs 0); then the tail share is 1 and both groups tie
        // at 0, so position 0; then tail's share is ½, bonus ½ > 0, so 3; then 1.
        let order = xquad(
            &[1.0, 0.9, 0.8, 0.7],
            &[false, false, true, true],
            1.0,
            1.0,
            4,
        );
        assert_eq!(order, vec![2, 0, 3, 1]);
    }

    #[test]
    fn xquad_follows_the_users_tail_share() {
        // Dyadic numbers so that the ties below are exact. λ = 0.5, P(tail|u) = 0.5:
        // step 1: head 0 scores 0.5 + 0.25 = 0.75, tail 3 scores 0.125 + 0.25 = 0.375 -> 0;
        // step 2: head 1 scores 0.375 + 0 (head share 1), tail 0.375 -> tie, smaller position 1;
        // step 3: head 2 scores 0.25, tail 0.375 -> 3; then 2.
        let relevance = [1.0, 0.75, 0.5, 0.25];
        let tail = [false, false, false, true];
        assert_eq!(xquad(&relevance, &tail, 0.5, 0.5, 4), vec![0, 1, 3, 2]);
        // P(tail|u) = 0.75: step 1 head 0.5 + 0.125 beats tail 0.125 + 0.375; step 2 head 1
        // scores 0.375, tail 0.5 -> 3.
        assert_eq!(xquad(&relevance, &tail, 0.75, 0.5, 4), vec![0, 3, 1, 2]);
        assert_eq!(xquad(&relevance, &tail, 0.75, 0.5, 2), vec![0, 3]);
    }

    proptest! {
        #[test]
        fn xquad_picks_the_naive_argmax(
            items in proptest::collection::vec((0.0f64..1.0, any::<bool>()), 0..30),
            tail_preference in 0.0f64..1.0,
            lambda in 0.01f64..1.0,
            n in 0usize..35,
        ) {
            let relevance: Vec<f64> = items.iter().map(|(r, _)| *r).collect();
            let is_tail: Vec<bool> = items.iter().map(|(_, t)| *t).collect();
            let order = xquad(&relevance, &is_tail, tail_preference, lambda, n);
            prop_assert!(distinct_positions(&order, relevance.len(), n));
            let mut tails = 0usize;
            for (size, &picked) in order.iter().enumerate() {
                let score = |j: usize| {
                    let (preference, in_group) = if is_tail[j] {
                        (tail_preference, tails)
                    } else {
                        (1.0 - tail_preference, size - tails)
                    };
                    let share = in_group as f64 / size.max(1) as f64;
                    (1.0 - lambda) * relevance[j] + lambda * preference * (1.0 - share)
                };
                for j in (0..relevance.len()).filter(|j| !order[..size].contains(j)) {
                    prop_assert!(score(picked) >= score(j) - 1e-12);
                }
                tails += usize::from(is_tail[picked]);
            }
        }
    }

    // ---- inverse_popularity ----

    #[test]
    fn inverse_popularity_by_hand() {
        // Keys at β = 1: 1/100, 0.9/10, 0.5/1.
        let relevance = [1.0, 0.9, 0.5];
        let popularity = [100.0, 10.0, 1.0];
        assert_eq!(
            inverse_popularity(&relevance, &popularity, 1.0, 3),
            vec![2, 1, 0]
        );
        assert_eq!(inverse_popularity(&relevance, &popularity, 1.0, 1), vec![2]);
        // β = 0 is relevance alone.
        assert_eq!(
            inverse_popularity(&relevance, &popularity, 0.0, 3),
            vec![0, 1, 2]
        );
        // β = 0.25: keys 1/√10 ≈ 0.316, 0.9/10^¼ ≈ 0.506, 0.5.
        assert_eq!(
            inverse_popularity(&relevance, &popularity, 0.25, 3),
            vec![1, 2, 0]
        );
        // Popularity below 1 is floored, so these tie and keep candidate order.
        assert_eq!(
            inverse_popularity(&[1.0, 1.0], &[0.0, 0.5], 1.0, 2),
            vec![0, 1]
        );
        assert_eq!(
            inverse_popularity(&[1.0, 2.0], &[1.0, 2.0], 1.0, 2),
            vec![0, 1]
        );
        // NaN keys go last.
        assert_eq!(
            inverse_popularity(&[f64::NAN, 0.1], &[1.0, 1.0], 1.0, 2),
            vec![1, 0]
        );
        assert!(inverse_popularity(&[1.0], &[1.0], 1.0, 0).is_empty());
    }

    proptest! {
        #[test]
        fn inverse_popularity_equals_stable_sort_and_truncate(
            items in proptest::collection::vec((0.0f64..1.0, 0.0f64..1000.0), 0..40),
            beta in -1.0f64..2.0,
            n in 0usize..45,
        ) {
            let relevance: Vec<f64> = items.iter().map(|(r, _)| *r).collect();
            let popularity: Vec<f64> = items.iter().map(|(_, p)| p.floor()).collect();
            let order = inverse_popularity(&relevance, &popularity, beta, n);
            prop_assert!(distinct_positions(&order, relevance.len(), n));
            let key = |j: usize| relevance[j] / popularity[j].max(1.0).powf(beta);
            let mut expected: Vec<usize> = (0..relevance.len()).collect();
            expected.sort_by(|&a, &b| key(b).partial_cmp(&key(a)).unwrap());
            expected.truncate(n);
            prop_assert_eq!(order, expected);
        }
    }

    // ---- FA*IR ----

    #[test]
    fn fair_unadjusted_tables_match_exact_binomial() {
        // m(k) = least x with F(x; k, p) > α, in exact rational arithmetic:
        // python3 -c "from fractions import Fraction as F; from math import comb
        //   m=lambda k,p,a: next(x for x in range(k+1)
        //     if sum(comb(k,j)*p**j*(1-p)**(k-j) for j in range(x+1)) > a)
        //   print([m(k,F(1,2),F(1,10)) for k in range(1,11)])"
        // The last three also appear in fairsearchcore's tests (tests/test_fair.py).
        let cases: [(usize, f64, f64, &[usize]); 4] = [
            (10, 0.5, 0.1, &[0, 0, 0, 1, 1, 1, 2, 2, 3, 3]),
            (10, 0.2, 0.15, &[0, 0, 0, 0, 0, 0, 0, 0, 1, 1]),
            (
                20,
                0.25,
                0.1,
                &[0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3],
            ),
            (
                30,
                0.3,
                0.05,
                &[
                    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4,
                    4, 5, 5, 5,
                ],
            ),
        ];
        for (n, p, alpha, expected) in cases {
            let fair = Fair::unadjusted(n, p, alpha).unwrap();
            assert_eq!(fair.mtable(), expected, "n={n} p={p} alpha={alpha}");
            assert_eq!(fair.adjusted_alpha(), alpha);
            assert_eq!((fair.p(), fair.alpha()), (p, alpha));
        }
    }

    #[test]
    fn fair_unadjusted_long_tables_match_exact_binomial() {
        // The same Python expression at k = 100, 500, 1000 (exact fractions).
        for (p, alpha, expected) in [
            (0.3, 0.05, [23, 133, 276]),
            (0.5, 0.1, [44, 236, 480]),
            (0.01, 0.1, [0, 2, 6]),
        ] {
            let fair = Fair::unadjusted(1000, p, alpha).unwrap();
            let m = fair.mtable();
            assert_eq!([m[99], m[499], m[999]], expected, "p={p} alpha={alpha}");
        }
    }

    #[test]
    fn fair_adjusted_tables_match_exact_search() {
        // Expected values from an exact search in Python with fractions.Fraction: the table only
        // changes at binomial CDF values, so walk the CDF values ≤ α in increasing order, build
        // the table at each (least x with F(x; k, p) > level) and keep the last one whose failure
        // probability (the same dynamic programme, in exact arithmetic) is ≤ α. The adjusted
        // level lies between that CDF value and the next one, where the table first fails.
        let (n, p, alpha) = (20, 0.25, 0.1);
        let fair = Fair::new(n, p, alpha).unwrap();
        assert_eq!(
            fair.mtable(),
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]
        );
        let level = fair.adjusted_alpha();
        assert!(
            (0.0634764397982508..0.07508468627929688).contains(&level),
            "{level}"
        );
        assert!((fail_probability(fair.mtable(), p) - 0.08972216723486781).abs() < 1e-12);

        let fair = Fair::new(10, 0.5, 0.1).unwrap();
        assert_eq!(fair.mtable(), &[0, 0, 0, 0, 1, 1, 1, 2, 2, 3]);
        assert!((fail_probability(fair.mtable(), 0.5) - 0.0751953125).abs() < 1e-12);

        // fairsearchcore's adjusted table and failure probability for these parameters.
        let fair = Fair::new(30, 0.3, 0.05).unwrap();
        assert_eq!(
            fair.mtable(),
            &[
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4,
                4, 4
            ]
        );
        assert!((fail_probability(fair.mtable(), 0.3) - 0.04877730797178292).abs() < 1e-12);

        // Already below α unadjusted (fails with 0.8^9 ≈ 0.134): no adjustment.
        let fair = Fair::new(10, 0.2, 0.15).unwrap();
        assert_eq!(fair.adjusted_alpha(), 0.15);
        assert_eq!(fair.mtable(), &[0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn fair_longest_table_builds() {
        let fair = Fair::new(Fair::MAX_LEN, 0.5, 0.1).unwrap();
        assert_eq!(fair.mtable().len(), Fair::MAX_LEN);
        assert!(fair.adjusted_alpha() < 0.1);
        assert!(fail_probability(fair.mtable(), 0.5) <= 0.1);
        // The adjustment loosens the table, never tightens it.
        let loose = Fair::unadjusted(Fair::MAX_LEN, 0.5, 0.1).unwrap();
        assert!(
            fair.mtable()
                .iter()
                .zip(loose.mtable())
                .all(|(a, b)| a <= b)
        );
    }

    #[test]
    fn fair_rejects_bad_parameters() {
        for p in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(matches!(
                Fair::new(10, p, 0.1),
                Err(FairError::InvalidP { .. })
            ));
        }
        for alpha in [0.0, 1.0, 2.0, f64::NAN] {
            assert!(matches!(
                Fair::unadjusted(10, 0.5, alpha),
                Err(FairError::InvalidAlpha { .. })
            ));
        }
        assert_eq!(Fair::new(0, 0.5, 0.1), Err(FairError::ZeroLength));
        assert_eq!(
            Fair::new(1001, 0.5, 0.1),
            Err(FairError::TooLong { n: 1001, max: 1000 })
        );
        assert_eq!(
            FairError::InvalidP { p: 1.5 }.to_string(),
            "protected share p must be in (0, 1), got 1.5"
        );
    }

    #[test]
    fn fair_rerank_moves_protected_items_up_by_hand() {
        // m = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]. Protected: 5, 7, 8.
        // k = 1..3 need none: 0, 1, 2. k = 4 needs one: 5, ahead of 3 (forced). k = 5, 6: 3, 4.
        // k = 7 needs two: 7, ahead of 6 (forced). k = 8: 6. k = 9 needs three: 8, which is
        // next in candidate order anyway (not forced). k = 10: 9.
        let fair = Fair::unadjusted(10, 0.5, 0.1).unwrap();
        let mut protected = [false; 11];
        for j in [5, 7, 8] {
            protected[j] = true;
        }
        let ranking = fair.rerank(&protected, 10);
        assert_eq!(ranking.order, vec![0, 1, 2, 5, 3, 4, 7, 6, 8, 9]);
        let forced: Vec<usize> = (0..10).filter(|&k| ranking.forced[k]).collect();
        assert_eq!(forced, vec![3, 6]);
        assert!(ranking.satisfied);

        // Only one protected candidate: k = 7 cannot be met.
        let mut protected = [false; 11];
        protected[9] = true;
        let ranking = fair.rerank(&protected, 10);
        assert_eq!(ranking.order, vec![0, 1, 2, 9, 3, 4, 5, 6, 7, 8]);
        assert!(ranking.forced[3]);
        assert!(!ranking.satisfied);

        // Beyond the table's length: candidate order.
        let fair = Fair::unadjusted(4, 0.5, 0.1).unwrap();
        let protected = [false, false, false, false, true, false, true];
        let ranking = fair.rerank(&protected, 10);
        assert_eq!(ranking.order, vec![0, 1, 2, 4, 3, 5, 6]);
        assert!(ranking.satisfied);
        assert!(fair.rerank(&protected, 0).order.is_empty());
    }

    /// The failure probability by enumerating all 2^n rankings: the naive twin.
    fn brute_force_fail_probability(mtable: &[usize], p: f64) -> f64 {
        let n = mtable.len();
        let mut failed = 0.0;
        for bits in 0u32..(1 << n) {
            let mut count = 0;
            let mut fails = false;
            for (k, &m) in mtable.iter().enumerate() {
                count += (bits >> k) & 1;
                fails |= (count as usize) < m;
            }
            if fails {
                let ones = bits.count_ones() as i32;
                failed += p.powi(ones) * (1.0 - p).powi(n as i32 - ones);
            }
        }
        failed
    }

    proptest! {
        #[test]
        fn fail_probability_equals_enumeration(
            steps in proptest::collection::vec(any::<bool>(), 1..13),
            p in 0.05f64..0.95,
        ) {
            // Any non-decreasing table that grows by at most one per position.
            let mut mtable = Vec::new();
            let mut m = 0;
            for (k, step) in steps.iter().enumerate() {
                if *step && m < k + 1 {
                    m += 1;
                }
                mtable.push(m);
            }
            let fast = fail_probability(&mtable, p);
            let naive = brute_force_fail_probability(&mtable, p);
            prop_assert!((fast - naive).abs() < 1e-12, "{fast} vs {naive}");
        }

        #[test]
        fn fair_adjusted_level_is_the_largest_that_keeps_failures_under_alpha(
            n in 1usize..60,
            p in 0.05f64..0.95,
            alpha in 0.01f64..0.3,
        ) {
            let fair = Fair::new(n, p, alpha).unwrap();
            let level = fair.adjusted_alpha();
            prop_assert!(level > 0.0 && level <= alpha);
            prop_assert!(fail_probability(fair.mtable(), p) <= alpha);
            // The same table comes back from the level on its own.
            let same = Fair::unadjusted(n, p, level).unwrap();
            prop_assert_eq!(same.mtable(), fair.mtable());
            if level < alpha {
                let tighter = Fair::unadjusted(n, p, level.next_up()).unwrap();
                prop_assert!(fail_probability(tighter.mtable(), p) > alpha);
            }
        }

        #[test]
        fn fair_rerank_meets_the_table_and_keeps_group_order(
            protected in proptest::collection::vec(proptest::bool::weighted(0.3), 0..60),
            table_len in 1usize..40,
            p in 0.1f64..0.9,
            n in 0usize..70,
        ) {
            let fair = Fair::new(table_len, p, 0.1).unwrap();
            let ranking = fair.rerank(&protected, n);
            let take = n.min(protected.len());
            prop_assert!(distinct_positions(&ranking.order, protected.len(), n));
            prop_assert_eq!(ranking.forced.len(), take);

            // Each group keeps its candidate order.
            for group in [true, false] {
                let within: Vec<usize> =
                    ranking.order.iter().copied().filter(|&j| protected[j] == group).collect();
                prop_assert!(within.windows(2).all(|w| w[0] < w[1]));
            }

            // Every prefix meets m(k) exactly when there are protected candidates enough.
            let m = |k: usize| fair.mtable()[k.min(table_len) - 1];
            let available = protected.iter().filter(|&&x| x).count();
            let enough = (1..=take).all(|k| available >= m(k));
            prop_assert_eq!(ranking.satisfied, enough);
            let mut placed = 0;
            for (k, &j) in ranking.order.iter().enumerate() {
                placed += usize::from(protected[j]);
                if enough {
                    prop_assert!(placed >= m(k + 1));
                }
                // Forced: a protected item placed ahead of a better non-protected one.
                let skipped = (0..j).any(|i| !protected[i] && !ranking.order[..k].contains(&i));
                prop_assert_eq!(ranking.forced[k], protected[j] && skipped);
            }
        }
    }
}
