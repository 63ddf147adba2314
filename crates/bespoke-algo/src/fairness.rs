//! Fairness and bias measures of recommendation lists, and a [`Report`] that assembles them.
//!
//! [`report`] reads one [`ReportInput`]: every user's top-`k` list, training profile and (when
//! known) held-out relevant items, the catalog's training popularity and categories, and optional
//! [`Grouping`]s of users and items. It returns a serialisable [`Report`]; [`Report::table`]
//! renders it as text. The definitions, each also available as a function:
//!
//! - [`coverage`]: the share of catalog items in at least one top-`k` list.
//! - [`gini`]: the Gini coefficient of exposure over the whole catalog, where an item's exposure
//!   is the number of top-`k` lists containing it (never recommended items count as 0).
//! - [`tail_items`]: the short head of Abdollahpouri et al. 2019 ("Managing popularity bias in
//!   recommender systems with personalized re-ranking") is the fewest most popular items holding
//!   [`HEAD_SHARE`] of training interactions; every other item is in the long tail.
//! - Popularity lift (Abdollahpouri et al. 2019, "The unfairness of popularity bias in
//!   recommendation"): `GAP_profile` is the mean over users of the mean popularity of their
//!   profile items, `GAP_list` the same over list items, `lift = (GAP_list − GAP_profile) /
//!   GAP_profile`. Popularity is the raw training interaction count given in
//!   [`ReportInput::popularity`]; the paper divides it by the number of users, which the ratio
//!   cancels.
//! - [`miscalibration`] (Steck 2018, "Calibrated recommendations"): `KL(p‖q̃)` between the
//!   category distribution of the profile and of the list, see [`category_distribution`].
//! - Accuracy by user group: NDCG@10 and recall@10 with the definitions of [`crate::eval`], a
//!   percentile bootstrap interval ([`bootstrap_ci`]) and the gap between the best and worst
//!   group.
//! - Exposure by item group: each group's share of the catalog, of top-`k` slots and of
//!   relevant items.
//!
//! Nothing here returns NaN: an undefined value is `None` (`null` in JSON) and the report's
//! `notes` say why. Bad input (ids outside the catalog, repeated list entries, unsorted relevant
//! items, group ids without a name) is ignored or repaired, counted and noted, never a panic.
//!
//! The per-user pass runs on rayon, and the bootstrap splits its resamples into chunks seeded
//! from one [`Rng`] in order, so a report depends only on its input and seed, not on the thread
//! count.

use std::fmt;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Rng;

/// Steck's mixing weight: `q̃ = (1 − α) q + α p` keeps the divergence finite when the list
/// misses a category of the profile.
pub const CALIBRATION_ALPHA: f64 = 0.01;

/// Share of training interactions held by the short head (the Pareto 80 %).
pub const HEAD_SHARE: f64 = 0.8;

/// Cut-off of the accuracy measures (NDCG@10, recall@10).
pub const ACCURACY_K: usize = 10;

/// Name of the group of users or items a [`Grouping`] leaves without a group.
pub const NO_GROUP: &str = "(none)";

/// Resamples per rayon task in the bootstrap; each chunk has its own generator.
const BOOTSTRAP_CHUNK: usize = 32;

/// One evaluated (or served) user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserCase {
    /// Recommended items, best first (only the first `k` of ReportInput are read).
    pub list: Vec<u32>,
    /// The user's profile: training items and their weights (order irrelevant).
    pub profile: Vec<(u32, f64)>,
    /// Held-out relevant items, sorted ascending, distinct; empty when unknown (live model).
    pub relevant: Vec<u32>,
}

/// A partition of users or items into named groups by one attribute.
#[derive(Debug, Clone)]
pub struct Grouping<'a> {
    /// The attribute's name (e.g. "gender", "provider").
    pub attribute: String,
    /// Group names; group id `g` is `names[g]`.
    pub names: Vec<String>,
    /// Per user (index into ReportInput::users) or per item (item id): its group, if any.
    pub of: &'a [Option<u32>],
}

/// A [`Grouping`] that owns its names and ids: what callers build from attribute values.
#[derive(Debug, Clone, PartialEq)]
pub struct Groups {
    /// The attribute's name.
    pub attribute: String,
    /// Group names, sorted.
    pub names: Vec<String>,
    /// Per user or item: its group, if any.
    pub of: Vec<Option<u32>>,
}

impl Groups {
    /// Groups by value (names sorted, so ids do not depend on input order); `None` values
    /// belong to no group.
    pub fn from_values(attribute: &str, values: impl IntoIterator<Item = Option<String>>) -> Self {
        let values: Vec<Option<String>> = values.into_iter().collect();
        let mut names: Vec<String> = values.iter().flatten().cloned().collect();
        names.sort();
        names.dedup();
        let of = values
            .iter()
            .map(|v| {
                v.as_ref()
                    .and_then(|v| names.binary_search(v).ok())
                    .map(|g| g as u32)
            })
            .collect();
        Self {
            attribute: attribute.to_owned(),
            names,
            of,
        }
    }

    /// The borrowed view [`ReportInput`] takes.
    pub fn grouping(&self) -> Grouping<'_> {
        Grouping {
            attribute: self.attribute.clone(),
            names: self.names.clone(),
            of: &self.of,
        }
    }
}

/// Everything [`report`] measures.
#[derive(Debug, Clone)]
pub struct ReportInput<'a> {
    /// Catalog size: item ids are `0..n_items`.
    pub n_items: usize,
    /// Length of the lists measured (e.g. 10); longer lists are truncated.
    pub k: usize,
    /// Per item: training interactions (length `n_items`; negative or non-finite counts as 0).
    pub popularity: &'a [f64],
    /// Per item: category ids (length `n_items`; may be empty per item).
    pub item_categories: &'a [Vec<u32>],
    /// Category names; category id `g` is `category_names[g]`, larger ids are ignored.
    pub category_names: &'a [String],
    /// The users measured.
    pub users: &'a [UserCase],
    /// Accuracy by group, one block per grouping (`of` indexed by user).
    pub user_groups: Vec<Grouping<'a>>,
    /// Exposure share, one block per grouping (`of` indexed by item id).
    pub item_groups: Vec<Grouping<'a>>,
    /// Bootstrap resamples for confidence intervals (1000 is usual; 0 gives no intervals).
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    pub seed: u64,
}

/// Fairness and bias measures of a set of recommendation lists. Undefined values are `None`,
/// and `notes` say why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = FairnessMeasures))]
pub struct Report {
    /// Users in the input.
    pub users: usize,
    /// List length measured.
    pub k: usize,
    /// Catalog size.
    pub catalog_items: usize,
    /// Share of catalog items in at least one top-`k` list.
    pub coverage: Option<f64>,
    /// Gini coefficient of exposure counts over the whole catalog (0 = equal, → 1 = one item).
    pub gini: Option<f64>,
    /// Long-tail shares.
    pub long_tail: LongTail,
    /// Popularity of lists against profiles.
    pub popularity_lift: PopularityLift,
    /// Category miscalibration of lists against profiles.
    pub miscalibration: Miscalibration,
    /// Accuracy overall and by user group; `None` when no user has relevant items.
    pub accuracy: Option<Accuracy>,
    /// Exposure by item group, one block per item grouping.
    pub exposure: Vec<ExposureGrouping>,
    /// Why values are `None`, which input was ignored, which groups were skipped.
    pub notes: Vec<String>,
}

/// Long-tail shares, with the head of [`tail_items`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LongTail {
    /// Share of training interactions defining the head ([`HEAD_SHARE`]).
    pub head_share: f64,
    /// Number of head items.
    pub head_items: usize,
    /// Share of catalog items in the tail.
    pub catalog_tail_share: Option<f64>,
    /// Mean over users with a non-empty list of the share of tail items in their list.
    pub list_tail_share: Option<f64>,
    /// Mean over users with a non-empty profile of the share of tail items among their profile
    /// entries (unweighted).
    pub profile_tail_share: Option<f64>,
}

/// Group average popularity (GAP) of Abdollahpouri et al. 2019, in training interactions,
/// over the users with both a non-empty profile and a non-empty list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PopularityLift {
    /// Users measured.
    pub users_measured: usize,
    /// Mean over users of the mean popularity of their profile items.
    pub gap_profile: Option<f64>,
    /// Mean over users of the mean popularity of their list items.
    pub gap_list: Option<f64>,
    /// `(gap_list − gap_profile) / gap_profile`: above 0, lists favour popular items more than
    /// the users did.
    pub lift: Option<f64>,
}

/// Steck's miscalibration, averaged over users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Miscalibration {
    /// Mixing weight used ([`CALIBRATION_ALPHA`]).
    pub alpha: f64,
    /// Mean over the users measured.
    pub mean: Option<f64>,
    /// Users whose profile and list both have an item with a category.
    pub users_measured: usize,
}

/// A mean with its percentile bootstrap 95 % interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = FairnessEstimate))]
pub struct Estimate {
    /// Mean; `None` without values.
    pub mean: Option<f64>,
    /// Lower end of the interval; `None` with fewer than 2 values or no resamples.
    pub ci_low: Option<f64>,
    /// Upper end of the interval; `None` like `ci_low`.
    pub ci_high: Option<f64>,
}

/// Accuracy over the users with relevant items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = FairnessAccuracy))]
pub struct Accuracy {
    /// Users measured (those with relevant items in the catalog).
    pub users: usize,
    /// NDCG@10, as [`crate::eval`] defines it.
    pub ndcg10: Estimate,
    /// Recall@10 normalised by `min(10, |relevant|)`, as [`crate::eval`] defines it.
    pub recall10: Estimate,
    /// One block per user grouping.
    pub groupings: Vec<AccuracyGrouping>,
}

/// Accuracy by the groups of one user attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccuracyGrouping {
    /// The attribute.
    pub attribute: String,
    /// Every named group in order, then [`NO_GROUP`] when some measured user has no group.
    pub groups: Vec<GroupAccuracy>,
    /// Best against worst group; `None` when fewer than two named groups have ≥ 2 users.
    pub gap: Option<AccuracyGap>,
}

/// Accuracy of one group of users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupAccuracy {
    /// Group name.
    pub group: String,
    /// Users of the group measured (with relevant items).
    pub users: usize,
    /// NDCG@10.
    pub ndcg10: Estimate,
    /// Recall@10.
    pub recall10: Estimate,
}

/// Difference in mean NDCG@10 between the best and the worst named group with ≥ 2 users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccuracyGap {
    /// Best mean minus worst mean (≥ 0).
    pub ndcg10: f64,
    /// Group with the highest mean (the first one on ties).
    pub best: String,
    /// Group with the lowest mean (the first one on ties).
    pub worst: String,
}

/// Exposure by the groups of one item attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExposureGrouping {
    /// The attribute.
    pub attribute: String,
    /// Every named group in order, then [`NO_GROUP`] when some catalog item has no group.
    pub groups: Vec<GroupExposure>,
}

/// Exposure of one group of items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupExposure {
    /// Group name.
    pub group: String,
    /// Catalog items in the group.
    pub items: usize,
    /// `items / catalog_items`.
    pub catalog_share: Option<f64>,
    /// Share of all top-`k` slots (valid, distinct list entries) taken by the group's items.
    pub exposure_share: Option<f64>,
    /// Share of all relevant (user, item) pairs whose item is in the group; `None` without
    /// relevant items.
    pub relevant_share: Option<f64>,
    /// `exposure_share / catalog_share`: 1 is exposure in proportion to catalog size.
    pub ratio_to_catalog: Option<f64>,
}

/// Gini coefficient of `exposure` over all entries, `G = Σ_i (2i − n − 1) x_(i) / (n Σ x)` with
/// `x_(i)` ascending and `i` from 1. It is 0 when all entries are equal and `(n − 1) / n` when one
/// entry holds everything. `None` when there are fewer than 2 entries, the sum is 0, or an entry
/// is negative or not finite.
pub fn gini(exposure: &[f64]) -> Option<f64> {
    let n = exposure.len();
    if n < 2 || exposure.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return None;
    }
    let mut sorted = exposure.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let total: f64 = sorted.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let weighted: f64 = sorted
        .iter()
        .enumerate()
        .map(|(i, x)| (2.0 * (i + 1) as f64 - n as f64 - 1.0) * x)
        .sum();
    // Rounding can leave an equal distribution a hair below 0.
    Some((weighted / (n as f64 * total)).clamp(0.0, 1.0))
}

/// Share of the catalog `0..n_items` appearing among the first `k` entries of at least one of
/// `lists` (e.g. `users.iter().map(|u| u.list.as_slice())`). Ids outside the catalog are ignored.
/// `None` for an empty catalog; `Some(0.0)` without lists or with `k = 0`.
pub fn coverage<'a>(
    lists: impl IntoIterator<Item = &'a [u32]>,
    n_items: usize,
    k: usize,
) -> Option<f64> {
    if n_items == 0 {
        return None;
    }
    let mut covered = vec![false; n_items];
    for list in lists {
        for &i in list.iter().take(k) {
            if let Some(c) = covered.get_mut(i as usize) {
                *c = true;
            }
        }
    }
    Some(covered.iter().filter(|c| **c).count() as f64 / n_items as f64)
}

/// Marks the long tail: `true` for tail items. The head is the fewest most popular items whose
/// interactions sum to at least `head_share` of all interactions (popularity descending, ties by
/// item id ascending); every other item, including those without interactions, is tail.
/// Negative or non-finite popularity counts as 0; `head_share` is clamped into `[0, 1]` (NaN
/// counts as 0). With no interactions at all, every item is tail.
pub fn tail_items(popularity: &[f64], head_share: f64) -> Vec<bool> {
    let pop = |i: u32| clean_popularity(popularity[i as usize]);
    let share = if head_share >= 0.0 {
        head_share.min(1.0)
    } else {
        0.0
    };
    let mut order: Vec<u32> = (0..popularity.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| pop(b).total_cmp(&pop(a)).then(a.cmp(&b)));
    // Summed in the same order as below, so the running sum reaches `total` exactly and the loop
    // stops before any zero-interaction item.
    let total: f64 = order.iter().map(|&i| pop(i)).sum();
    let target = share * total;
    let mut tail = vec![true; popularity.len()];
    let mut sum = 0.0;
    for &i in &order {
        if sum >= target || pop(i) <= 0.0 {
            break;
        }
        tail[i as usize] = false;
        sum += pop(i);
    }
    tail
}

/// Steck's miscalibration `KL(p‖q̃) = Σ_g p(g) ln(p(g) / q̃(g))` with `q̃ = (1 − α) q + α p`
/// ([`CALIBRATION_ALPHA`] in reports). `p` is the profile's category distribution, `q` the
/// list's; missing entries of `q` count as 0 and terms with `p(g) ≤ 0` contribute 0. For
/// distributions the result is ≥ 0, and 0 when `q = p`. `alpha` is clamped into `[0, 1]`; with
/// `alpha = 0` a category of `p` absent from `q` makes the result `+∞`.
pub fn miscalibration(p: &[f64], q: &[f64], alpha: f64) -> f64 {
    let alpha = if alpha >= 0.0 { alpha.min(1.0) } else { 0.0 };
    let kl: f64 = p
        .iter()
        .enumerate()
        .map(|(g, &pg)| kl_term(pg, q.get(g).copied().unwrap_or(0.0), alpha))
        .sum();
    // Rounding can leave equal distributions a hair below 0; `max` also drops a NaN.
    kl.max(0.0)
}

/// Steck's category distribution `p(g|u) = Σ_i w_ui p(g|i) / Σ_i w_ui`, `p(g|i)` uniform over
/// item `i`'s categories (ids below `n_categories`). Items without such categories, outside
/// `item_categories`, or with a weight that is not finite and positive are skipped. `None` when
/// nothing is left. For a list, give each item weight 1.
pub fn category_distribution(
    items: impl Iterator<Item = (u32, f64)>,
    item_categories: &[Vec<u32>],
    n_categories: usize,
) -> Option<Vec<f64>> {
    distribution_of(
        items.map(|(i, w)| (categories_of(item_categories, i), w)),
        n_categories,
    )
}

/// [`category_distribution`] of items given by their categories rather than by id, for
/// callers that hold categories elsewhere (serving reads them per item, and must not copy the
/// catalog's).
pub fn distribution_of<'a>(
    items: impl Iterator<Item = (&'a [u32], f64)>,
    n_categories: usize,
) -> Option<Vec<f64>> {
    let mut dist = vec![0.0; n_categories];
    let mut total = 0.0;
    for (cats, w) in items {
        if w.is_finite() && w > 0.0 && spread(cats, n_categories, w, |g, x| dist[g] += x) {
            total += w;
        }
    }
    if total <= 0.0 {
        return None;
    }
    for d in &mut dist {
        *d /= total;
    }
    Some(dist)
}

/// Percentile 95 % bootstrap interval of the mean of `values`: the 2.5 % and 97.5 % quantiles
/// (linear interpolation) of the means of `resamples` samples drawn with replacement. `None` with
/// fewer than 2 values, no resamples, or a value that is not finite. The chunks of resamples are
/// seeded from `rng` in order, so the result depends only on `rng`'s state, not on threads.
pub fn bootstrap_ci(values: &[f64], resamples: usize, rng: &mut Rng) -> Option<(f64, f64)> {
    if values.len() < 2 || resamples == 0 || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let means = resample_means(values.len(), |i| [values[i]], resamples, rng);
    Some(percentile_interval(
        means.into_iter().map(|[m]| m).collect(),
    ))
}

/// Measures `input`; see the module docs for every definition. Never panics on bad ids and never
/// yields NaN; with no users, an empty catalog or `k = 0` every measure is `None`.
pub fn report(input: &ReportInput<'_>) -> Report {
    let n_items = input.n_items;
    let k = input.k;
    let mut notes = Vec::new();
    let empty = |notes: Vec<String>| Report {
        users: input.users.len(),
        k,
        catalog_items: n_items,
        coverage: None,
        gini: None,
        long_tail: LongTail {
            head_share: HEAD_SHARE,
            head_items: 0,
            catalog_tail_share: None,
            list_tail_share: None,
            profile_tail_share: None,
        },
        popularity_lift: PopularityLift {
            users_measured: 0,
            gap_profile: None,
            gap_list: None,
            lift: None,
        },
        miscalibration: Miscalibration {
            alpha: CALIBRATION_ALPHA,
            mean: None,
            users_measured: 0,
        },
        accuracy: None,
        exposure: Vec::new(),
        notes,
    };
    if input.users.is_empty() {
        notes.push("no users: nothing is measured".to_owned());
    }
    if n_items == 0 {
        notes.push("empty catalog: nothing is measured".to_owned());
    }
    if k == 0 {
        notes.push("k = 0: lists are empty, nothing is measured".to_owned());
    }
    if !notes.is_empty() {
        return empty(notes);
    }

    let catalog = Catalog::new(input, &mut notes);
    let stats: Vec<UserStats> = input
        .users
        .par_iter()
        .with_min_len(256)
        .map_init(
            || Scratch::new(n_items, catalog.n_categories),
            |scratch, case| catalog.measure(case, scratch),
        )
        .collect();
    note_bad_input(&stats, k, &mut notes);

    let (exposure_counts, relevant_counts) = counts(input);
    let covered = exposure_counts.iter().filter(|&&c| c > 0).count();
    let slots: u64 = exposure_counts.iter().map(|&c| u64::from(c)).sum();
    let relevant_pairs: u64 = relevant_counts.iter().map(|&c| u64::from(c)).sum();
    let gini = gini(
        &exposure_counts
            .iter()
            .map(|&c| f64::from(c))
            .collect::<Vec<_>>(),
    );
    if gini.is_none() {
        notes.push(if slots == 0 {
            "no list holds a catalog item: gini is undefined".to_owned()
        } else {
            "a catalog of one item: gini is undefined".to_owned()
        });
    }

    let long_tail = long_tail(&catalog, &stats, &mut notes);
    let popularity_lift = popularity_lift(&stats, &mut notes);
    let miscalibration = mean_miscalibration(&catalog, &stats, &mut notes);
    let mut rng = Rng::seed_from_u64(input.seed);
    let accuracy = accuracy(input, &stats, &mut rng, &mut notes);
    if relevant_pairs == 0 && !input.item_groups.is_empty() {
        notes.push("no relevant items: relevant_share is null".to_owned());
    }
    let exposure = input
        .item_groups
        .iter()
        .map(|grouping| {
            exposure_grouping(
                grouping,
                n_items,
                &exposure_counts,
                &relevant_counts,
                slots,
                relevant_pairs,
                &mut notes,
            )
        })
        .collect();

    Report {
        coverage: Some(covered as f64 / n_items as f64),
        gini,
        long_tail,
        popularity_lift,
        miscalibration,
        accuracy,
        exposure,
        ..empty(notes)
    }
}

impl Report {
    /// The whole report as a fixed-width text table; `-` marks an undefined value.
    pub fn table(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Fairness and bias: {} users, k = {}, {} catalog items",
            self.users, self.k, self.catalog_items
        )?;
        let row = |f: &mut fmt::Formatter<'_>, label: &str, value: String| {
            writeln!(f, "  {label:<34} {value:>10}")
        };
        row(f, "coverage", num(self.coverage))?;
        row(f, "gini of exposure", num(self.gini))?;

        let t = &self.long_tail;
        writeln!(
            f,
            "Long tail (head: {} items with {:.0} % of interactions)",
            t.head_items,
            t.head_share * 100.0
        )?;
        row(f, "catalog tail share", num(t.catalog_tail_share))?;
        row(f, "list tail share", num(t.list_tail_share))?;
        row(f, "profile tail share", num(t.profile_tail_share))?;

        let p = &self.popularity_lift;
        writeln!(
            f,
            "Popularity (mean training interactions, {} users)",
            p.users_measured
        )?;
        row(f, "GAP profile", num(p.gap_profile))?;
        row(f, "GAP list", num(p.gap_list))?;
        row(f, "lift", num(p.lift))?;

        let m = &self.miscalibration;
        writeln!(
            f,
            "Miscalibration (Steck, alpha {}, {} users)",
            m.alpha, m.users_measured
        )?;
        row(f, "mean KL(p||q~)", num(m.mean))?;

        match &self.accuracy {
            None => writeln!(f, "Accuracy: not measured")?,
            Some(a) => {
                writeln!(f, "Accuracy ({} users with relevant items)", a.users)?;
                let width = a
                    .groupings
                    .iter()
                    .flat_map(|g| &g.groups)
                    .map(|g| g.group.chars().count())
                    .chain([7])
                    .max()
                    .unwrap_or(7);
                writeln!(
                    f,
                    "  {:<width$} {:>7}  {:>7} {:>17}  {:>7} {:>17}",
                    "group", "users", "ndcg@10", "95% CI", "rec@10", "95% CI"
                )?;
                let line =
                    |f: &mut fmt::Formatter<'_>, name: &str, users, n: &Estimate, r: &Estimate| {
                        writeln!(
                            f,
                            "  {name:<width$} {users:>7}  {:>7} {:>17}  {:>7} {:>17}",
                            num(n.mean),
                            interval(n),
                            num(r.mean),
                            interval(r)
                        )
                    };
                line(f, "overall", a.users, &a.ndcg10, &a.recall10)?;
                for grouping in &a.groupings {
                    writeln!(f, "  by {}", grouping.attribute)?;
                    for g in &grouping.groups {
                        line(f, &g.group, g.users, &g.ndcg10, &g.recall10)?;
                    }
                    match &grouping.gap {
                        Some(gap) => writeln!(
                            f,
                            "  ndcg@10 gap {:.4} (best {}, worst {})",
                            gap.ndcg10, gap.best, gap.worst
                        )?,
                        None => writeln!(f, "  ndcg@10 gap -")?,
                    }
                }
            }
        }

        for grouping in &self.exposure {
            writeln!(f, "Exposure by {}", grouping.attribute)?;
            let width = grouping
                .groups
                .iter()
                .map(|g| g.group.chars().count())
                .chain([5])
                .max()
                .unwrap_or(5);
            writeln!(
                f,
                "  {:<width$} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "group", "items", "catalog", "exposure", "relevant", "ratio"
            )?;
            for g in &grouping.groups {
                writeln!(
                    f,
                    "  {:<width$} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    g.group,
                    g.items,
                    num(g.catalog_share),
                    num(g.exposure_share),
                    num(g.relevant_share),
                    num(g.ratio_to_catalog)
                )?;
            }
        }

        if !self.notes.is_empty() {
            writeln!(f, "Notes")?;
            for note in &self.notes {
                writeln!(f, "  - {note}")?;
            }
        }
        Ok(())
    }
}

fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"))
}

fn interval(e: &Estimate) -> String {
    match (e.ci_low, e.ci_high) {
        (Some(lo), Some(hi)) => format!("[{lo:.4}, {hi:.4}]"),
        _ => "-".to_owned(),
    }
}

fn clean_popularity(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

fn categories_of(item_categories: &[Vec<u32>], item: u32) -> &[u32] {
    item_categories
        .get(item as usize)
        .map_or(&[][..], Vec::as_slice)
}

/// Spreads weight `w` uniformly over the item's categories below `n_categories`; false when it
/// has none.
fn spread(
    categories: &[u32],
    n_categories: usize,
    w: f64,
    mut add: impl FnMut(usize, f64),
) -> bool {
    let known = categories
        .iter()
        .filter(|&&g| (g as usize) < n_categories)
        .count();
    if known == 0 {
        return false;
    }
    let share = w / known as f64;
    for &g in categories {
        if (g as usize) < n_categories {
            add(g as usize, share);
        }
    }
    true
}

fn kl_term(pg: f64, qg: f64, alpha: f64) -> f64 {
    if pg > 0.0 {
        let mixed = (1.0 - alpha) * qg.max(0.0) + alpha * pg;
        pg * (pg / mixed).ln()
    } else {
        0.0
    }
}

/// `1 / log2(r + 1)` for 1-based rank `r` = `index + 1`, as `eval.rs`'s `dcg`.
fn discount(index: usize) -> f64 {
    1.0 / ((index + 2) as f64).log2()
}

/// `IDCG` of `n` relevant items in the first places.
fn idcg(n: usize) -> f64 {
    (0..n).map(discount).sum()
}

/// Means of `resamples` bootstrap samples of `n` values (`value(i)` is the i-th, `N` measures
/// resampled together with the same draws). One allocation for the output, none per resample.
fn resample_means<const N: usize>(
    n: usize,
    value: impl Fn(usize) -> [f64; N] + Sync,
    resamples: usize,
    rng: &mut Rng,
) -> Vec<[f64; N]> {
    let seeds: Vec<u64> = (0..resamples.div_ceil(BOOTSTRAP_CHUNK))
        .map(|_| rng.next_u64())
        .collect();
    let mut means = vec![[0.0; N]; resamples];
    means
        .par_chunks_mut(BOOTSTRAP_CHUNK)
        .zip(seeds.par_iter())
        .for_each(|(chunk, &seed)| {
            let mut rng = Rng::seed_from_u64(seed);
            for mean in chunk {
                let mut sum = [0.0; N];
                for _ in 0..n {
                    let v = value(rng.below(n as u64) as usize);
                    for (s, x) in sum.iter_mut().zip(v) {
                        *s += x;
                    }
                }
                for (m, s) in mean.iter_mut().zip(sum) {
                    *m = s / n as f64;
                }
            }
        });
    means
}

/// The 2.5 % and 97.5 % quantiles of non-empty `means`, interpolated linearly between order
/// statistics (numpy's default).
fn percentile_interval(mut means: Vec<f64>) -> (f64, f64) {
    means.sort_unstable_by(f64::total_cmp);
    let quantile = |p: f64| {
        let h = (means.len() - 1) as f64 * p;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(means.len() - 1);
        means[lo] + (h - lo as f64) * (means[hi] - means[lo])
    };
    (quantile(0.025), quantile(0.975))
}

/// Mean of each measure and, with ≥ 2 values, its interval.
fn estimates(values: &[[f64; 2]], resamples: usize, rng: &mut Rng) -> [Estimate; 2] {
    let n = values.len();
    let mean = |j: usize| (n > 0).then(|| values.iter().map(|v| v[j]).sum::<f64>() / n as f64);
    let intervals = (n >= 2 && resamples > 0).then(|| {
        let means = resample_means(n, |i| values[i], resamples, rng);
        [0, 1].map(|j| percentile_interval(means.iter().map(|m| m[j]).collect()))
    });
    [0, 1].map(|j| Estimate {
        mean: mean(j),
        ci_low: intervals.map(|iv| iv[j].0),
        ci_high: intervals.map(|iv| iv[j].1),
    })
}

/// The catalog-wide data every user is measured against.
struct Catalog<'a> {
    n_items: usize,
    k: usize,
    popularity: Vec<f64>,
    tail: Vec<bool>,
    item_categories: &'a [Vec<u32>],
    n_categories: usize,
}

/// What one user contributes; summed in user order afterwards so results are deterministic.
#[derive(Debug, Default)]
struct UserStats {
    list_items: u32,
    list_tail: u32,
    list_popularity: f64,
    profile_items: u32,
    profile_tail: u32,
    profile_popularity: f64,
    miscalibration: Option<f64>,
    /// NDCG@10 and recall@10, when the user has relevant items in the catalog.
    accuracy: Option<[f64; 2]>,
    list_outside: u32,
    list_repeated: u32,
    profile_outside: u32,
    bad_weights: u32,
    relevant_outside: u32,
    relevant_unsorted: bool,
}

/// Per-thread buffers, reused across users.
struct Scratch {
    /// `seen[i] == epoch` when item `i` already occurred in the current user's list.
    seen: Vec<u32>,
    epoch: u32,
    profile: Vec<f64>,
    profile_touched: Vec<usize>,
    list: Vec<f64>,
    list_touched: Vec<usize>,
    relevant: Vec<u32>,
}

impl Scratch {
    fn new(n_items: usize, n_categories: usize) -> Self {
        Self {
            seen: vec![0; n_items],
            epoch: 0,
            profile: vec![0.0; n_categories],
            profile_touched: Vec::new(),
            list: vec![0.0; n_categories],
            list_touched: Vec::new(),
            relevant: Vec::new(),
        }
    }
}

impl<'a> Catalog<'a> {
    fn new(input: &ReportInput<'a>, notes: &mut Vec<String>) -> Self {
        let n = input.n_items;
        if input.popularity.len() != n {
            notes.push(format!(
                "popularity has {} entries for {n} items: missing ones count as 0, extra ones are ignored",
                input.popularity.len()
            ));
        }
        let invalid = input
            .popularity
            .iter()
            .filter(|x| !x.is_finite() || **x < 0.0)
            .count();
        if invalid > 0 {
            notes.push(format!(
                "{invalid} popularity values negative or not finite: counted as 0"
            ));
        }
        let popularity: Vec<f64> = (0..n)
            .map(|i| clean_popularity(input.popularity.get(i).copied().unwrap_or(0.0)))
            .collect();
        if input.item_categories.len() != n {
            notes.push(format!(
                "item_categories has {} entries for {n} items: missing items have no category",
                input.item_categories.len()
            ));
        }
        let n_categories = input.category_names.len();
        let unnamed = input
            .item_categories
            .iter()
            .take(n)
            .filter(|cats| cats.iter().any(|&g| g as usize >= n_categories))
            .count();
        if unnamed > 0 {
            notes.push(format!(
                "{unnamed} items have category ids without a name (≥ {n_categories}): those ids are ignored"
            ));
        }
        Self {
            n_items: n,
            k: input.k,
            tail: tail_items(&popularity, HEAD_SHARE),
            popularity,
            item_categories: input.item_categories,
            n_categories,
        }
    }

    fn measure(&self, case: &UserCase, scratch: &mut Scratch) -> UserStats {
        let Scratch {
            seen,
            epoch,
            profile,
            profile_touched,
            list,
            list_touched,
            relevant: relevant_copy,
        } = scratch;
        *epoch = epoch.wrapping_add(1);
        if *epoch == 0 {
            seen.fill(0);
            *epoch = 1;
        }
        let mut st = UserStats::default();

        let mut relevant = case.relevant.as_slice();
        if !relevant.windows(2).all(|w| w[0] < w[1]) {
            st.relevant_unsorted = true;
            relevant_copy.clear();
            relevant_copy.extend_from_slice(relevant);
            relevant_copy.sort_unstable();
            relevant_copy.dedup();
            relevant = relevant_copy;
        }
        let in_catalog = relevant.partition_point(|&i| (i as usize) < self.n_items);
        st.relevant_outside = (relevant.len() - in_catalog) as u32;
        let relevant = &relevant[..in_catalog];

        // Out-of-catalog and repeated entries keep their rank (a slot was used) but count for
        // nothing, so the remaining items are judged at the place the user saw them.
        let (mut dcg, mut hits, mut list_total) = (0.0, 0u32, 0.0);
        for (r, &i) in case.list.iter().take(self.k).enumerate() {
            let iu = i as usize;
            if iu >= self.n_items {
                st.list_outside += 1;
                continue;
            }
            if seen[iu] == *epoch {
                st.list_repeated += 1;
                continue;
            }
            seen[iu] = *epoch;
            st.list_items += 1;
            st.list_tail += u32::from(self.tail[iu]);
            st.list_popularity += self.popularity[iu];
            if r < ACCURACY_K && relevant.binary_search(&i).is_ok() {
                hits += 1;
                dcg += discount(r);
            }
            let cats = categories_of(self.item_categories, i);
            if spread(cats, self.n_categories, 1.0, |g, x| {
                if list[g] == 0.0 {
                    list_touched.push(g);
                }
                list[g] += x;
            }) {
                list_total += 1.0;
            }
        }
        if !relevant.is_empty() {
            let cut = relevant.len().min(ACCURACY_K);
            st.accuracy = Some([dcg / idcg(cut), f64::from(hits) / cut as f64]);
        }

        let mut profile_total = 0.0;
        for &(i, w) in &case.profile {
            let iu = i as usize;
            if iu >= self.n_items {
                st.profile_outside += 1;
                continue;
            }
            st.profile_items += 1;
            st.profile_tail += u32::from(self.tail[iu]);
            st.profile_popularity += self.popularity[iu];
            if !w.is_finite() || w < 0.0 {
                st.bad_weights += 1;
                continue;
            }
            let cats = categories_of(self.item_categories, i);
            if w > 0.0
                && spread(cats, self.n_categories, w, |g, x| {
                    if profile[g] == 0.0 {
                        profile_touched.push(g);
                    }
                    profile[g] += x;
                })
            {
                profile_total += w;
            }
        }

        if profile_total > 0.0 && list_total > 0.0 {
            // Only categories of the profile contribute, so the sparse sum equals the dense one.
            let kl: f64 = profile_touched
                .iter()
                .map(|&g| {
                    kl_term(
                        profile[g] / profile_total,
                        list[g] / list_total,
                        CALIBRATION_ALPHA,
                    )
                })
                .sum();
            st.miscalibration = Some(kl.max(0.0));
        }
        for &g in profile_touched.iter() {
            profile[g] = 0.0;
        }
        for &g in list_touched.iter() {
            list[g] = 0.0;
        }
        profile_touched.clear();
        list_touched.clear();
        st
    }
}

fn note_bad_input(stats: &[UserStats], k: usize, notes: &mut Vec<String>) {
    let total = |f: fn(&UserStats) -> u32| stats.iter().map(|s| u64::from(f(s))).sum::<u64>();
    let counts = [
        (
            total(|s| s.list_outside),
            "list entries outside the catalog were ignored (their rank still counts)",
        ),
        (
            total(|s| s.list_repeated),
            "repeated list entries were ignored (only the first occurrence counts)",
        ),
        (
            total(|s| s.profile_outside),
            "profile entries outside the catalog were ignored",
        ),
        (
            total(|s| s.bad_weights),
            "profile weights negative or not finite were left out of category distributions",
        ),
        (
            total(|s| s.relevant_outside),
            "relevant items outside the catalog were ignored",
        ),
        (
            total(|s| u32::from(s.relevant_unsorted)),
            "users had relevant items not sorted or not distinct: they were sorted and deduplicated",
        ),
    ];
    for (count, what) in counts {
        if count > 0 {
            notes.push(format!("{count} {what}"));
        }
    }
    if k < ACCURACY_K {
        notes.push(format!(
            "k = {k} < {ACCURACY_K}: ndcg@10 and recall@10 read only the first {k} items"
        ));
    }
}

/// Per item: the number of lists containing it in their first `k`, and the number of users
/// holding it as relevant (each counted once per user).
fn counts(input: &ReportInput<'_>) -> (Vec<u32>, Vec<u32>) {
    let n = input.n_items;
    let mut exposure = vec![0u32; n];
    let mut relevant = vec![0u32; n];
    // Stamps dedupe within a user without clearing a set per user.
    let mut seen = vec![0usize; n];
    for (u, case) in input.users.iter().enumerate() {
        let stamp = 2 * u + 1;
        for &i in case.list.iter().take(input.k) {
            if let Some(s) = seen.get_mut(i as usize)
                && *s != stamp
            {
                *s = stamp;
                exposure[i as usize] += 1;
            }
        }
        let stamp = 2 * u + 2;
        for &i in &case.relevant {
            if let Some(s) = seen.get_mut(i as usize)
                && *s != stamp
            {
                *s = stamp;
                relevant[i as usize] += 1;
            }
        }
    }
    (exposure, relevant)
}

fn mean(sum: f64, n: usize) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

fn long_tail(catalog: &Catalog<'_>, stats: &[UserStats], notes: &mut Vec<String>) -> LongTail {
    let tail = catalog.tail.iter().filter(|t| **t).count();
    let share = |part: u32, whole: u32| f64::from(part) / f64::from(whole);
    let (mut list_sum, mut list_users, mut profile_sum, mut profile_users) = (0.0, 0, 0.0, 0);
    for s in stats {
        if s.list_items > 0 {
            list_sum += share(s.list_tail, s.list_items);
            list_users += 1;
        }
        if s.profile_items > 0 {
            profile_sum += share(s.profile_tail, s.profile_items);
            profile_users += 1;
        }
    }
    if list_users == 0 {
        notes.push("no user has a catalog item in their list: list_tail_share is null".to_owned());
    }
    if profile_users == 0 {
        notes.push(
            "no user has a catalog item in their profile: profile_tail_share is null".to_owned(),
        );
    }
    if catalog.popularity.iter().all(|&p| p == 0.0) {
        notes.push("no training interactions: every item is in the tail".to_owned());
    }
    LongTail {
        head_share: HEAD_SHARE,
        head_items: catalog.n_items - tail,
        catalog_tail_share: Some(tail as f64 / catalog.n_items as f64),
        list_tail_share: mean(list_sum, list_users),
        profile_tail_share: mean(profile_sum, profile_users),
    }
}

fn popularity_lift(stats: &[UserStats], notes: &mut Vec<String>) -> PopularityLift {
    let (mut profile, mut list, mut users) = (0.0, 0.0, 0);
    for s in stats
        .iter()
        .filter(|s| s.list_items > 0 && s.profile_items > 0)
    {
        profile += s.profile_popularity / f64::from(s.profile_items);
        list += s.list_popularity / f64::from(s.list_items);
        users += 1;
    }
    let gap_profile = mean(profile, users);
    let gap_list = mean(list, users);
    let lift = match (gap_profile, gap_list) {
        (Some(p), Some(l)) if p > 0.0 => Some((l - p) / p),
        (Some(_), Some(_)) => {
            notes.push("profile items have no training interactions: lift is null".to_owned());
            None
        }
        _ => {
            notes.push(
                "no user has catalog items in both profile and list: popularity lift is null"
                    .to_owned(),
            );
            None
        }
    };
    PopularityLift {
        users_measured: users,
        gap_profile,
        gap_list,
        lift,
    }
}

fn mean_miscalibration(
    catalog: &Catalog<'_>,
    stats: &[UserStats],
    notes: &mut Vec<String>,
) -> Miscalibration {
    let (mut sum, mut users) = (0.0, 0);
    for m in stats.iter().filter_map(|s| s.miscalibration) {
        sum += m;
        users += 1;
    }
    if users == 0 {
        notes.push(if catalog.n_categories == 0 {
            "no category names: miscalibration is null".to_owned()
        } else {
            "no user has categorised items in both profile and list: miscalibration is null"
                .to_owned()
        });
    }
    Miscalibration {
        alpha: CALIBRATION_ALPHA,
        mean: mean(sum, users),
        users_measured: users,
    }
}

/// The group of entry `index` of a grouping, `names.len()` standing for no group (including a
/// group id without a name).
fn group_of(grouping: &Grouping<'_>, index: usize) -> usize {
    match grouping.of.get(index).copied().flatten() {
        Some(g) if (g as usize) < grouping.names.len() => g as usize,
        _ => grouping.names.len(),
    }
}

/// Notes a grouping whose `of` does not match the `expected` users or items, or names no group.
fn note_grouping_shape(
    grouping: &Grouping<'_>,
    what: &str,
    expected: usize,
    notes: &mut Vec<String>,
) {
    if grouping.of.len() != expected {
        notes.push(format!(
            "{}: {} group entries for {expected} {what}: missing ones have no group, extra ones are ignored",
            grouping.attribute,
            grouping.of.len()
        ));
    }
    let unnamed = grouping
        .of
        .iter()
        .take(expected)
        .filter(|g| g.is_some_and(|g| g as usize >= grouping.names.len()))
        .count();
    if unnamed > 0 {
        notes.push(format!(
            "{}: {unnamed} {what} have a group id without a name: counted as {NO_GROUP}",
            grouping.attribute
        ));
    }
}

fn accuracy(
    input: &ReportInput<'_>,
    stats: &[UserStats],
    rng: &mut Rng,
    notes: &mut Vec<String>,
) -> Option<Accuracy> {
    let measured: Vec<(usize, [f64; 2])> = stats
        .iter()
        .enumerate()
        .filter_map(|(u, s)| s.accuracy.map(|a| (u, a)))
        .collect();
    if measured.is_empty() {
        notes.push("no user has relevant items in the catalog: accuracy is null".to_owned());
        return None;
    }
    if input.bootstrap == 0 {
        notes.push("bootstrap = 0: no confidence intervals".to_owned());
    }
    let values: Vec<[f64; 2]> = measured.iter().map(|&(_, v)| v).collect();
    let [ndcg10, recall10] = estimates(&values, input.bootstrap, rng);

    let mut groupings = Vec::with_capacity(input.user_groups.len());
    for grouping in &input.user_groups {
        let n_named = grouping.names.len();
        let mut buckets: Vec<Vec<[f64; 2]>> = vec![Vec::new(); n_named + 1];
        for &(u, v) in &measured {
            buckets[group_of(grouping, u)].push(v);
        }
        note_grouping_shape(grouping, "users", input.users.len(), notes);

        let mut groups = Vec::with_capacity(n_named + 1);
        let (mut empty, mut single) = (Vec::new(), Vec::new());
        for (g, bucket) in buckets.iter().enumerate() {
            let name = grouping.names.get(g).map_or(NO_GROUP, String::as_str);
            if g == n_named && bucket.is_empty() {
                continue;
            }
            match bucket.len() {
                0 => empty.push(name),
                1 => single.push(name),
                _ => {}
            }
            let [ndcg10, recall10] = estimates(bucket, input.bootstrap, rng);
            groups.push(GroupAccuracy {
                group: name.to_owned(),
                users: bucket.len(),
                ndcg10,
                recall10,
            });
        }
        if !empty.is_empty() {
            notes.push(format!(
                "{}: no user with relevant items in {}: means are null",
                grouping.attribute,
                empty.join(", ")
            ));
        }
        if !single.is_empty() {
            notes.push(format!(
                "{}: one user with relevant items in {}: no interval, left out of the gap",
                grouping.attribute,
                single.join(", ")
            ));
        }

        // Named groups with two users or more; the no-group bucket is not a value of the attribute.
        let mut eligible = groups
            .iter()
            .take(n_named)
            .filter(|g| g.users >= 2)
            .filter_map(|g| g.ndcg10.mean.map(|m| (m, g.group.as_str())));
        let gap = match eligible.next() {
            Some(first) => {
                let (mut best, mut worst, mut count) = (first, first, 1);
                for e in eligible {
                    count += 1;
                    if e.0 > best.0 {
                        best = e;
                    }
                    if e.0 < worst.0 {
                        worst = e;
                    }
                }
                (count >= 2).then(|| AccuracyGap {
                    ndcg10: best.0 - worst.0,
                    best: best.1.to_owned(),
                    worst: worst.1.to_owned(),
                })
            }
            None => None,
        };
        if gap.is_none() {
            notes.push(format!(
                "{}: fewer than two groups have 2 users with relevant items: gap is null",
                grouping.attribute
            ));
        }
        groupings.push(AccuracyGrouping {
            attribute: grouping.attribute.clone(),
            groups,
            gap,
        });
    }

    Some(Accuracy {
        users: measured.len(),
        ndcg10,
        recall10,
        groupings,
    })
}

fn exposure_grouping(
    grouping: &Grouping<'_>,
    n_items: usize,
    exposure: &[u32],
    relevant: &[u32],
    slots: u64,
    relevant_pairs: u64,
    notes: &mut Vec<String>,
) -> ExposureGrouping {
    let n_named = grouping.names.len();
    // Per group: items, exposure slots, relevant pairs.
    let mut sums = vec![(0usize, 0u64, 0u64); n_named + 1];
    for i in 0..n_items {
        let s = &mut sums[group_of(grouping, i)];
        s.0 += 1;
        s.1 += u64::from(exposure[i]);
        s.2 += u64::from(relevant[i]);
    }
    note_grouping_shape(grouping, "items", n_items, notes);
    let share = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
    let groups = sums
        .iter()
        .enumerate()
        .filter(|&(g, s)| g < n_named || s.0 > 0)
        .map(|(g, &(items, exposed, rel))| {
            let catalog_share = share(items as u64, n_items as u64);
            let exposure_share = share(exposed, slots);
            GroupExposure {
                group: grouping
                    .names
                    .get(g)
                    .map_or(NO_GROUP, String::as_str)
                    .to_owned(),
                items,
                catalog_share,
                exposure_share,
                relevant_share: share(rel, relevant_pairs),
                ratio_to_catalog: match (exposure_share, catalog_share) {
                    (Some(e), Some(c)) if c > 0.0 => Some(e / c),
                    _ => None,
                },
            }
        })
        .collect::<Vec<_>>();
    let itemless: Vec<&str> = groups
        .iter()
        .filter(|g| g.items == 0)
        .map(|g| g.group.as_str())
        .collect();
    if !itemless.is_empty() {
        notes.push(format!(
            "{}: no catalog item in {}: ratio_to_catalog is null",
            grouping.attribute,
            itemless.join(", ")
        ));
    }
    ExposureGrouping {
        attribute: grouping.attribute.clone(),
        groups,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::Rng;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    fn assert_close(got: Option<f64>, want: f64) {
        let got = got.expect("a value");
        assert!(close(got, want), "{got} vs {want}");
    }

    #[test]
    fn gini_of_hand_cases() {
        // Sorted [0, 0, 0, 1], coefficients 2i − 5 = −3, −1, 1, 3: 3 / (4 · 1).
        assert_close(gini(&[0.0, 1.0, 0.0, 0.0]), 0.75);
        assert_close(gini(&[2.0, 2.0, 2.0]), 0.0);
        // Coefficients −2, 0, 2 over [1, 2, 3]: (−2 + 6) / (3 · 6).
        assert_close(gini(&[3.0, 1.0, 2.0]), 4.0 / 18.0);
        assert_eq!(gini(&[5.0]), None);
        assert_eq!(gini(&[0.0, 0.0]), None);
        assert_eq!(gini(&[1.0, f64::NAN]), None);
        assert_eq!(gini(&[1.0, -1.0]), None);
    }

    #[test]
    fn coverage_counts_first_k_of_each_list() {
        let lists: [&[u32]; 3] = [&[0, 1, 4], &[1, 9], &[]];
        // k = 2 reads {0, 1} and {1, 9}; 9 is outside the catalog.
        assert_close(coverage(lists, 5, 2), 2.0 / 5.0);
        assert_close(coverage(lists, 5, 3), 3.0 / 5.0);
        assert_close(coverage(lists, 5, 0), 0.0);
        assert_eq!(coverage(lists, 0, 2), None);
    }

    #[test]
    fn tail_items_takes_the_fewest_most_popular() {
        // Total 100, head needs 80: items 1 (50) and 2 (30).
        assert_eq!(
            tail_items(&[10.0, 50.0, 30.0, 10.0, 0.0], 0.8),
            [true, false, false, true, true]
        );
        // Total 10, head needs 8: item 2 (6), then item 0 wins the tie with item 1.
        assert_eq!(tail_items(&[2.0, 2.0, 6.0], 0.8), [false, true, false]);
        // Everything is needed for 100 %, but never an item without interactions.
        assert_eq!(tail_items(&[1.0, 0.0, 1.0], 1.0), [false, true, false]);
        assert_eq!(tail_items(&[0.0, 0.0], 0.8), [true, true]);
        assert_eq!(tail_items(&[f64::NAN, 3.0, -2.0], 0.8), [true, false, true]);
        assert!(tail_items(&[], 0.8).is_empty());
    }

    #[test]
    fn miscalibration_of_a_hand_case() {
        // q̃ = 0.99 · [1, 0] + 0.01 · [0.5, 0.5] = [0.995, 0.005];
        // KL = 0.5 ln(0.5 / 0.995) + 0.5 ln(0.5 / 0.005) = 1.9585178.
        let kl = miscalibration(&[0.5, 0.5], &[1.0, 0.0], CALIBRATION_ALPHA);
        assert!(close(kl, 1.958_517_77), "{kl}");
        assert_eq!(
            miscalibration(&[1.0, 0.0], &[1.0, 0.0], CALIBRATION_ALPHA),
            0.0
        );
        // A category only in q does not count; q shorter than p reads as 0.
        assert_eq!(miscalibration(&[1.0, 0.0], &[1.0], CALIBRATION_ALPHA), 0.0);
        assert_eq!(miscalibration(&[1.0], &[0.0, 1.0], 0.0), f64::INFINITY);
    }

    #[test]
    fn category_distribution_weights_items_and_splits_their_categories() {
        let cats = vec![vec![0], vec![0, 1], vec![], vec![7]];
        // (2 · [1, 0] + 1 · [0.5, 0.5]) / 3; item 2 has no category, item 3 an unnamed one,
        // item 9 is outside, the zero weight is skipped.
        let items = [(0, 2.0), (1, 1.0), (2, 5.0), (3, 4.0), (9, 1.0), (0, 0.0)];
        let p = category_distribution(items.into_iter(), &cats, 2).unwrap();
        assert!(close(p[0], 2.5 / 3.0) && close(p[1], 0.5 / 3.0), "{p:?}");
        assert_eq!(
            category_distribution([(2, 1.0)].into_iter(), &cats, 2),
            None
        );
        assert_eq!(category_distribution(std::iter::empty(), &cats, 2), None);
    }

    #[test]
    fn bootstrap_of_two_values_spans_both() {
        // Means of two draws from {0, 1} are 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so
        // the 2.5 % and 97.5 % quantiles of many resamples are 0 and 1.
        let mut rng = Rng::seed_from_u64(1);
        assert_eq!(bootstrap_ci(&[0.0, 1.0], 2000, &mut rng), Some((0.0, 1.0)));
        assert_eq!(
            bootstrap_ci(&[3.0, 3.0, 3.0], 100, &mut rng),
            Some((3.0, 3.0))
        );
        assert_eq!(bootstrap_ci(&[1.0], 100, &mut rng), None);
        assert_eq!(bootstrap_ci(&[1.0, 2.0], 0, &mut rng), None);
        assert_eq!(bootstrap_ci(&[1.0, f64::NAN], 10, &mut rng), None);
        let a = bootstrap_ci(&[0.1, 0.5, 0.2, 0.9], 500, &mut Rng::seed_from_u64(5));
        let b = bootstrap_ci(&[0.1, 0.5, 0.2, 0.9], 500, &mut Rng::seed_from_u64(5));
        assert_eq!(a, b);
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn case(list: &[u32], profile: &[(u32, f64)], relevant: &[u32]) -> UserCase {
        UserCase {
            list: list.to_vec(),
            profile: profile.to_vec(),
            relevant: relevant.to_vec(),
        }
    }

    /// Five items, two categories, three users, k = 2; every figure below is worked out by hand.
    #[test]
    fn report_of_a_hand_case() {
        let popularity = [50.0, 30.0, 10.0, 10.0, 0.0];
        let item_categories = vec![vec![0], vec![1], vec![0], vec![1], vec![]];
        let category_names = names(&["a", "b"]);
        let users = [
            case(&[0, 2, 3], &[(0, 1.0), (1, 1.0)], &[2]),
            case(&[0, 1], &[(2, 1.0), (3, 1.0)], &[1, 3]),
            case(&[0, 4], &[(0, 2.0)], &[]),
        ];
        let gender = [Some(0), Some(1), Some(0)];
        let provider = [Some(0), Some(0), Some(1), Some(1), None];
        let input = ReportInput {
            n_items: 5,
            k: 2,
            popularity: &popularity,
            item_categories: &item_categories,
            category_names: &category_names,
            users: &users,
            user_groups: vec![Grouping {
                attribute: "gender".into(),
                names: names(&["f", "m"]),
                of: &gender,
            }],
            item_groups: vec![Grouping {
                attribute: "provider".into(),
                names: names(&["p", "q"]),
                of: &provider,
            }],
            bootstrap: 200,
            seed: 7,
        };
        let r = report(&input);

        // Lists read [0, 2], [0, 1], [0, 4]: exposure [3, 1, 1, 0, 1] over 6 slots.
        assert_eq!((r.users, r.k, r.catalog_items), (3, 2, 5));
        assert_close(r.coverage, 0.8);
        // Sorted [0, 1, 1, 1, 3], coefficients −4, −2, 0, 2, 4: 12 / (5 · 6).
        assert_close(r.gini, 0.4);

        // Head {0, 1} holds 80 of 100 interactions.
        assert_eq!(r.long_tail.head_items, 2);
        assert_close(r.long_tail.catalog_tail_share, 0.6);
        // Lists: 1/2, 0, 1/2; profiles: 0, 1, 0.
        assert_close(r.long_tail.list_tail_share, 1.0 / 3.0);
        assert_close(r.long_tail.profile_tail_share, 1.0 / 3.0);

        // Profiles: 40, 10, 50; lists: 30, 40, 25.
        assert_eq!(r.popularity_lift.users_measured, 3);
        assert_close(r.popularity_lift.gap_profile, 100.0 / 3.0);
        assert_close(r.popularity_lift.gap_list, 95.0 / 3.0);
        assert_close(r.popularity_lift.lift, -0.05);

        // User 0: p = [0.5, 0.5], q = [1, 0]: 1.9585178; user 1: p = q; user 2: p = q = [1, 0]
        // (item 4 has no category).
        assert_eq!(r.miscalibration.users_measured, 3);
        assert_close(r.miscalibration.mean, 1.958_517_77 / 3.0);

        // User 0: hit at rank 2 of 1 relevant: ndcg 1/log2(3) = 0.6309298, recall 1.
        // User 1: hit at rank 2 of 2 relevant: ndcg 0.6309298 / 1.6309298 = 0.3868528, recall 0.5.
        // User 2 has no relevant items.
        let a = r.accuracy.as_ref().expect("accuracy");
        assert_eq!(a.users, 2);
        assert_close(a.ndcg10.mean, 0.508_891_28);
        assert_close(a.recall10.mean, 0.75);
        let (lo, hi) = (a.ndcg10.ci_low.unwrap(), a.ndcg10.ci_high.unwrap());
        assert!(lo >= 0.386_852 && hi <= 0.630_930 && lo <= hi, "{lo} {hi}");
        let g = &a.groupings[0];
        assert_eq!(g.attribute, "gender");
        assert_eq!(g.groups.len(), 2);
        assert_eq!((g.groups[0].group.as_str(), g.groups[0].users), ("f", 1));
        assert_close(g.groups[0].ndcg10.mean, 0.630_929_75);
        assert_eq!(g.groups[0].ndcg10.ci_low, None);
        assert_close(g.groups[1].recall10.mean, 0.5);
        assert_eq!(g.gap, None);

        // Provider p = {0, 1}: 4 of 6 slots, 1 of 3 relevant pairs; q = {2, 3}: 1 slot, 2 pairs;
        // item 4 has no provider: 1 slot, no pair.
        let e = &r.exposure[0];
        let want = [
            ("p", 2, 0.4, 4.0 / 6.0, 1.0 / 3.0),
            ("q", 2, 0.4, 1.0 / 6.0, 2.0 / 3.0),
            (NO_GROUP, 1, 0.2, 1.0 / 6.0, 0.0),
        ];
        assert_eq!(e.groups.len(), want.len());
        for (got, (name, items, catalog, exposure, relevant)) in e.groups.iter().zip(want) {
            assert_eq!((got.group.as_str(), got.items), (name, items));
            assert_close(got.catalog_share, catalog);
            assert_close(got.exposure_share, exposure);
            assert_close(got.relevant_share, relevant);
            assert_close(got.ratio_to_catalog, exposure / catalog);
        }

        assert!(
            r.notes.iter().any(|n| n.contains("k = 2 < 10")),
            "{:?}",
            r.notes
        );
        assert!(
            r.notes.iter().any(|n| n.contains("gender: one user")),
            "{:?}",
            r.notes
        );
        assert_eq!(report(&input), r, "deterministic");
        let table = r.table();
        assert!(
            table.contains("coverage") && table.contains("Exposure by provider"),
            "{table}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["accuracy"]["groupings"][0]["gap"].is_null());
    }

    /// Two groups of two users each, so the gap and the intervals are defined.
    #[test]
    fn accuracy_gap_between_groups() {
        let users = [
            case(&[0], &[], &[0]),    // ndcg 1, recall 1
            case(&[0], &[], &[0]),    // ndcg 1, recall 1
            case(&[1, 0], &[], &[0]), // ndcg 1/log2(3), recall 1
            case(&[1], &[], &[0]),    // ndcg 0, recall 0
            case(&[1], &[], &[]),     // not measured
        ];
        let group = [Some(0), Some(0), Some(1), Some(1), None];
        let r = report(&ReportInput {
            n_items: 3,
            k: 10,
            popularity: &[1.0, 1.0, 1.0],
            item_categories: &[],
            category_names: &[],
            users: &users,
            user_groups: vec![Grouping {
                attribute: "segment".into(),
                names: names(&["A", "B", "C"]),
                of: &group,
            }],
            item_groups: vec![],
            bootstrap: 300,
            seed: 1,
        });
        let a = r.accuracy.expect("accuracy");
        assert_eq!(a.users, 4);
        let g = &a.groupings[0];
        // C has no measured user; the unmeasured user without a group adds no "(none)" row.
        assert_eq!(g.groups.len(), 3);
        assert_eq!(g.groups[2].users, 0);
        assert_eq!(g.groups[2].ndcg10.mean, None);
        assert_close(g.groups[0].ndcg10.mean, 1.0);
        assert_eq!(
            (g.groups[0].ndcg10.ci_low, g.groups[0].ndcg10.ci_high),
            (Some(1.0), Some(1.0))
        );
        assert_close(g.groups[1].ndcg10.mean, 0.315_464_88);
        assert_close(g.groups[1].recall10.mean, 0.5);
        let gap = g.gap.as_ref().expect("gap");
        assert!(close(gap.ndcg10, 0.684_535_12), "{}", gap.ndcg10);
        assert_eq!((gap.best.as_str(), gap.worst.as_str()), ("A", "B"));
        // Without categories nothing is calibrated.
        assert_eq!(r.miscalibration.mean, None);
        assert!(r.notes.iter().any(|n| n.contains("no category names")));
    }

    #[test]
    fn ndcg_matches_eval_on_a_longer_list() {
        // Relevant {1, 7, 9}; hits at ranks 2 and 3: (1/log2 3 + 1/log2 4) / (1 + 1/log2 3 +
        // 1/log2 4) = 0.5307213, recall 2/3.
        let users = [case(&[5, 1, 7, 0, 2], &[], &[1, 7, 9])];
        let r = report(&ReportInput {
            n_items: 10,
            k: 10,
            popularity: &[1.0; 10],
            item_categories: &[],
            category_names: &[],
            users: &users,
            user_groups: vec![],
            item_groups: vec![],
            bootstrap: 10,
            seed: 0,
        });
        let a = r.accuracy.unwrap();
        assert_close(a.ndcg10.mean, 0.530_721_27);
        assert_close(a.recall10.mean, 2.0 / 3.0);
        assert_eq!(a.ndcg10.ci_low, None);
    }

    #[test]
    fn bad_ids_are_ignored_and_noted() {
        // Item 99 keeps rank 1, the repeated 2 counts once; relevant is unsorted with an
        // outside id; the profile has an outside id and a NaN weight.
        let users = [case(
            &[99, 2, 2, 1],
            &[(50, 1.0), (0, f64::NAN), (1, 1.0)],
            &[2, 99, 1, 2],
        )];
        let item_groups = [Some(0), Some(7)];
        let r = report(&ReportInput {
            n_items: 3,
            k: 4,
            popularity: &[5.0, 1.0],
            item_categories: &[vec![0], vec![1], vec![0, 5]],
            category_names: &names(&["x", "y"]),
            users: &users,
            user_groups: vec![],
            item_groups: vec![Grouping {
                attribute: "kind".into(),
                names: names(&["one"]),
                of: &item_groups,
            }],
            bootstrap: 10,
            seed: 0,
        });
        // List reads items 2 (rank 2) and 1 (rank 4); relevant {1, 2}:
        // ndcg = (1/log2 3 + 1/log2 5) / (1 + 1/log2 3), recall 1.
        let a = r.accuracy.as_ref().unwrap();
        let want = (1.0 / 3f64.log2() + 1.0 / 5f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert_close(a.ndcg10.mean, want);
        assert_close(a.recall10.mean, 1.0);
        assert_close(r.coverage, 2.0 / 3.0);
        // Item 0 is in group "one", item 1 has an unnamed group id, item 2 none.
        let e = &r.exposure[0].groups;
        assert_eq!(
            (e[0].items, e[1].group.as_str(), e[1].items),
            (1, NO_GROUP, 2)
        );
        assert_close(e[0].exposure_share, 0.0);
        for what in [
            "1 list entries outside",
            "1 repeated list entries",
            "1 profile entries outside",
            "1 profile weights",
            "1 relevant items outside",
            "1 users had relevant items not sorted",
            "popularity has 2 entries",
            "kind: 1 items have a group id without a name",
            "kind: 2 group entries for 3 items",
            "1 items have category ids without a name",
        ] {
            assert!(
                r.notes.iter().any(|n| n.contains(what)),
                "{what}: {:?}",
                r.notes
            );
        }
    }

    #[test]
    fn empty_inputs_give_nulls_and_notes() {
        let base = ReportInput {
            n_items: 3,
            k: 10,
            popularity: &[1.0, 2.0, 3.0],
            item_categories: &[],
            category_names: &[],
            users: &[],
            user_groups: vec![],
            item_groups: vec![],
            bootstrap: 10,
            seed: 0,
        };
        let r = report(&base);
        assert_eq!(
            (r.coverage, r.gini, r.accuracy.as_ref()),
            (None, None, None)
        );
        assert!(r.notes[0].contains("no users"));
        let users = [case(&[0], &[], &[])];
        let r = report(&ReportInput {
            k: 0,
            users: &users,
            ..base.clone()
        });
        assert_eq!(r.coverage, None);
        assert!(r.notes[0].contains("k = 0"));
        let r = report(&ReportInput {
            n_items: 0,
            popularity: &[],
            users: &users,
            ..base.clone()
        });
        assert!(r.notes[0].contains("empty catalog"));
        // Only out-of-catalog items: defined coverage 0, undefined everything else.
        let users = [case(&[9], &[(8, 1.0)], &[])];
        let r = report(&ReportInput {
            users: &users,
            ..base
        });
        assert_close(r.coverage, 0.0);
        assert_eq!(r.gini, None);
        assert_eq!(r.long_tail.list_tail_share, None);
        assert_eq!(r.popularity_lift.lift, None);
        assert_eq!(r.accuracy, None);
        assert_eq!(r, r.clone(), "no NaN");
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"gini\":null"), "{json}");
    }

    fn arb_input() -> impl Strategy<Value = (usize, usize, Vec<f64>, Vec<Vec<u32>>, Vec<UserCase>)>
    {
        (1usize..12, 0usize..6).prop_flat_map(|(n, k)| {
            let item = 0u32..(n as u32 + 3);
            let user = (
                prop::collection::vec(item.clone(), 0..8),
                prop::collection::vec((item.clone(), -1.0f64..3.0), 0..6),
                prop::collection::vec(item, 0..4),
            )
                .prop_map(|(list, profile, relevant)| UserCase {
                    list,
                    profile,
                    relevant,
                });
            (
                Just(n),
                Just(k),
                prop::collection::vec(0.0f64..10.0, n),
                prop::collection::vec(prop::collection::vec(0u32..4, 0..3), n),
                prop::collection::vec(user, 0..10),
            )
        })
    }

    proptest! {
        #[test]
        fn gini_is_in_unit_interval_and_order_free(
            (values, shuffled) in prop::collection::vec(0.0f64..100.0, 2..30)
                .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
        ) {
            let g = gini(&values);
            prop_assert_eq!(g, gini(&shuffled));
            if let Some(g) = g {
                prop_assert!((0.0..=1.0).contains(&g));
            }
        }

        #[test]
        fn miscalibration_is_nonnegative_and_zero_on_equal_distributions(
            p in prop::collection::vec(0.0f64..1.0, 1..8),
            q in prop::collection::vec(0.0f64..1.0, 1..8),
        ) {
            let norm = |v: &[f64]| {
                let s: f64 = v.iter().sum();
                v.iter().map(|x| if s > 0.0 { x / s } else { 0.0 }).collect::<Vec<_>>()
            };
            let (p, q) = (norm(&p), norm(&q));
            prop_assert!(miscalibration(&p, &q, CALIBRATION_ALPHA) >= 0.0);
            prop_assert!(miscalibration(&p, &p, CALIBRATION_ALPHA) < 1e-12);
        }

        #[test]
        fn coverage_never_drops_when_lists_are_added(
            lists in prop::collection::vec(prop::collection::vec(0u32..25, 0..6), 0..10),
            extra in prop::collection::vec(0u32..25, 0..6),
            k in 0usize..6,
        ) {
            let before = coverage(lists.iter().map(Vec::as_slice), 20, k).unwrap();
            let after = coverage(
                lists.iter().chain([&extra]).map(Vec::as_slice), 20, k).unwrap();
            prop_assert!(after >= before && (0.0..=1.0).contains(&after));
        }

        /// Any input, however malformed, yields a report without NaN that agrees with the
        /// primitives and does not depend on the run.
        #[test]
        fn report_is_total_and_consistent((n, k, popularity, item_categories, users) in arb_input()) {
            let groups: Vec<Option<u32>> = (0..users.len() as u32).map(|u| Some(u % 3)).collect();
            let input = ReportInput {
                n_items: n,
                k,
                popularity: &popularity,
                item_categories: &item_categories,
                category_names: &names(&["a", "b", "c"]),
                users: &users,
                user_groups: vec![Grouping { attribute: "g".into(), names: names(&["x", "y"]), of: &groups }],
                item_groups: vec![Grouping { attribute: "h".into(), names: names(&["x"]), of: &groups }],
                bootstrap: 20,
                seed: 3,
            };
            let r = report(&input);
            prop_assert_eq!(&r, &r.clone());
            prop_assert_eq!(&r, &report(&input));
            if !users.is_empty() && k > 0 {
                prop_assert_eq!(r.coverage, coverage(users.iter().map(|u| u.list.as_slice()), n, k));
            }
            if let Some(m) = r.miscalibration.mean {
                prop_assert!(m >= 0.0);
            }
            for g in r.exposure.iter().flat_map(|e| &e.groups) {
                prop_assert!(g.exposure_share.is_none_or(|s| (0.0..=1.0 + 1e-12).contains(&s)));
            }
            let _ = r.table();
        }
    }
}
