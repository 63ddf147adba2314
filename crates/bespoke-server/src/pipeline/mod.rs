//! The ranking pipeline: every answer that ranks items goes through the same stages.
//!
//! ```text
//! RankRequest ─► candidates (a Source, scored by one model or the blend)
//!             ─► filters (availability, categories, exclude, include_seen, and the business
//!                         rules' filters, hidden items and no-repeat; applied inside retrieval,
//!                         so a filtered item never takes a place)
//!             ─► boosts (business rules: scores multiplied or shifted, re-sorted)
//!             ─► category cap
//!             ─► re-rankers (ordered: hide_similar, diversity, calibration, popularity,
//!                            protected share)
//!             ─► promotions (reserved slots)
//!             ─► explanations (Reason always; Contribution terms with explain=full)
//!             ─► response
//! ```
//!
//! Recommendations ([`Source::User`]), anonymous sessions ([`Source::Session`]), similar items
//! ([`Source::Similar`]), popular items ([`Source::Popular`]) and the ranking of supplied
//! candidates ([`Serving::rank_supplied`]) differ only in their source, so every filter and
//! re-ranker works on all of them.
//!
//! Every stage reads in-memory state only: a source that needs stored data (a history-less
//! user's attributes) returns [`NeedsAttributes`], and the caller reads them on the blocking
//! pool and runs the pipeline again with them.

mod candidates;
pub mod explain;
mod fairness;
mod filters;
pub mod request;
mod rerank;
pub(crate) mod rules;
mod supplied;
mod why_not;

use bespoke_algo::{ItemIdx, UserIdx};
use bespoke_store::Millis;
use serde::Serialize;
use serde_json::{Map, Value};

pub use candidates::NeedsAttributes;
pub use explain::{Contribution, Explain, Reason};
pub use request::RankRequest;
use rules::Plan;
pub use rules::{Filtered, RuleProblem};
pub use supplied::{Ranked, RankedItem};
pub use why_not::{Stage, WhyNot};

pub(crate) use fairness::popularity as item_popularity;
pub(crate) use filters::Filter;

use crate::models::ServingModel;
use crate::rules::spec::Route;
use crate::settings::SimilarChoice;
use crate::state::{Serving, State};

/// One result: an item, its score (higher is better) and why it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Recommendation {
    /// Item key.
    pub item: String,
    /// Score; comparable only within one response.
    pub score: f32,
    /// Why it was chosen.
    pub reasons: Vec<Reason>,
    /// The terms of its score (`explain=full`), summing to it; empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contributions: Vec<Contribution>,
}

/// Filters of a recommendation request: the pipeline's request.
pub type RecommendQuery = RankRequest;

/// How `popular` ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopularSort {
    /// Total weight (within the window, if any).
    Count,
    /// Time-decayed weight.
    Trending,
}

/// Filters of a popularity request.
#[derive(Debug, Clone)]
pub struct PopularQuery {
    /// How many results.
    pub n: usize,
    /// Keep only items in any of these categories.
    pub categories: Vec<String>,
    /// Count only events newer than this many milliseconds (with `Count`).
    pub window: Option<Millis>,
    /// Ranking.
    pub sort: PopularSort,
}

/// Recommendations for one user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendations {
    /// The results, best first.
    pub items: Vec<Recommendation>,
    /// Whether the user's own history shaped the results.
    pub personalized: bool,
    /// The model that ranked them: `als`, `knn` or `popular`.
    pub model: &'static str,
    /// The version of the trained model used, if any.
    pub model_version: Option<u64>,
    /// The business rules that applied (saved ones by name, the request's own as
    /// `request.filter`, ...), plus `hidden` and `no_repeat` when they removed anything.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// With `explain=full`: items the rules kept out of the answer, and which rule.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filtered: Vec<Filtered>,
}

/// Where a ranking's candidates come from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Model retrieval for a user (raw key), with their stored attributes once read.
    User {
        /// The user's key as the caller knows it.
        key: &'a str,
        /// Their stored attributes, when [`NeedsAttributes`] asked for them.
        attributes: Option<&'a Map<String, Value>>,
    },
    /// An anonymous session: item keys and weights, oldest first.
    Session(&'a [(String, f32)]),
    /// Items similar to an item, by the given model (the configured default when `None`).
    Similar {
        /// The item's key.
        item: &'a str,
        /// The similarity model.
        model: Option<SimilarChoice>,
    },
    /// Popular or trending items.
    Popular {
        /// Count or trending.
        sort: PopularSort,
        /// Count only events of this many milliseconds (with `Count`).
        window: Option<Millis>,
    },
}

impl Source<'_> {
    /// The route a saved rule names for this source.
    fn route(&self) -> Route {
        match self {
            Source::User { .. } => Route::Recommendations,
            Source::Session(_) => Route::Session,
            Source::Similar { .. } => Route::Similar,
            Source::Popular { .. } => Route::Popular,
        }
    }
}

impl Serving {
    /// Runs the pipeline for `source`. `Ok(None)` when the source's subject does not exist
    /// (similar items of an unknown item).
    pub fn rank(
        &self,
        source: Source<'_>,
        req: &RankRequest,
    ) -> Result<Option<Recommendations>, NeedsAttributes> {
        // Debug-level spans: free unless a subscriber wants them (the OTLP exporter does).
        let _rank =
            tracing::debug_span!("rank", route = source.route().name(), n = req.n).entered();
        let model = self.model.load_full();
        let s = self.state.read();
        let m = model.as_deref();
        let full = req.explain.full();
        // Whose hidden items and impressions apply.
        let user = match source {
            Source::User { key, .. } => Some(key),
            _ => req.user.as_deref(),
        }
        .and_then(|k| self.user_of(&s, k, req));
        let mut plan = self.plan(&s, source.route(), req, user);
        let mut rerankers = rerank::for_request(req, &plan);
        rerankers.extend(fairness::for_request(
            self,
            &s,
            req,
            plan.protected.is_some(),
        ));
        // Boosts alone only reorder: sources need explain no more than the answer holds.
        if plan.boosts_any() && !plan.caps() && rerankers.is_empty() {
            plan.shortlist = Some(req.n);
        }
        let fetch = rerankers
            .iter()
            .fold(
                plan.wants(req.n, self.settings.rules.candidate_factor),
                |n, r| r.wants(req.n).max(n),
            )
            .min(self.settings.limits.max_n.max(req.n));
        let retrieved = {
            let _stage = tracing::debug_span!("retrieve", fetch).entered();
            self.retrieve(&s, m, source, req, &plan, fetch)?
        };
        let Some(mut out) = retrieved else {
            return Ok(None);
        };
        let mut dropped = Vec::new();
        {
            let _stage = tracing::debug_span!("rules", candidates = out.items.len()).entered();
            plan.boost(&s, &mut out.items, full);
            plan.cap(&s, &mut out.items, req.n, &mut dropped);
        }
        let pool = if plan.promotions.is_empty() {
            Vec::new()
        } else {
            out.items.clone()
        };
        let profile = if rerankers.is_empty() {
            Vec::new()
        } else {
            match source {
                Source::Session(items) => items
                    .iter()
                    .filter_map(|(k, w)| Some((s.items.get(k)?, *w)))
                    .collect(),
                // Only with consent to personalization: calibration and popularity debiasing
                // tailor the list to the history.
                _ => user
                    .filter(|u| s.personalization.get(u.0 as usize).copied().unwrap_or(true))
                    .map_or_else(Vec::new, |u| {
                        s.live
                            .history(u)
                            .iter()
                            .map(|x| (x.item.0, x.weight))
                            .collect()
                    }),
            }
        };
        let cx = rerank::Context {
            s: &s,
            m,
            plan: &plan,
            profile,
        };
        // Each stage chooses n; every stage but the last hands the next the whole pool, its
        // n first and the rest in their order, so that a later stage (the protected share)
        // can still lift what an earlier one left below the cut.
        let last = rerankers.len().saturating_sub(1);
        let rerank_span = tracing::debug_span!("rerank", stages = rerankers.len()).entered();
        for (k, r) in rerankers.iter().enumerate() {
            if k == last {
                r.rerank(&cx, &mut out.items, req.n);
            } else {
                let before = out.items.clone();
                r.rerank(&cx, &mut out.items, req.n);
                let kept: rustc_hash::FxHashSet<&str> =
                    out.items.iter().map(|r| r.item.as_str()).collect();
                let rest: Vec<Recommendation> = before
                    .into_iter()
                    .filter(|r| !kept.contains(r.item.as_str()))
                    .collect();
                out.items.extend(rest);
            }
        }
        out.items.truncate(req.n);
        drop(rerank_span);
        for p in plan.promotions.iter().filter(|p| p.slot <= req.n) {
            let matching = |r: &Recommendation| {
                s.items
                    .get(&r.item)
                    .is_some_and(|i| p.when.eval(&s.columns, i))
            };
            let above: Vec<&str> = out
                .items
                .iter()
                .take(p.slot - 1)
                .map(|r| r.item.as_str())
                .collect();
            let mut candidates: Vec<Recommendation> = pool
                .iter()
                .filter(|r| matching(r) && !above.contains(&r.item.as_str()))
                .cloned()
                .collect();
            if candidates.is_empty() {
                // None among the candidates: retrieve the promotion's own.
                let narrow = plan.narrowed(&p.when);
                if let Some(mut found) = self.retrieve(&s, m, source, req, &narrow, p.slot)? {
                    plan.boost(&s, &mut found.items, full);
                    candidates = found.items;
                }
            }
            rules::promote(&mut out.items, p, candidates, req.n);
        }
        if full && (plan.filters_any() || !dropped.is_empty()) {
            // What the answer would have held without the rules, and which rule kept each out.
            if let Some(unruled) = self.retrieve(&s, m, source, req, &Plan::default(), req.n)? {
                out.filtered = plan.filtered(&s, &unruled.items, &out.items);
            }
            out.filtered.extend(dropped);
        }
        out.rules = plan.applied.clone();
        Ok(Some(out))
    }

    /// The candidates of `source`, scored and filtered (by `plan` too), best first.
    #[allow(clippy::too_many_arguments)]
    fn retrieve(
        &self,
        s: &State,
        m: Option<&ServingModel>,
        source: Source<'_>,
        req: &RankRequest,
        plan: &Plan,
        fetch: usize,
    ) -> Result<Option<Recommendations>, NeedsAttributes> {
        Ok(Some(match source {
            Source::User { key, attributes } => {
                self.user_candidates(s, m, key, req, plan, fetch, attributes)?
            }
            Source::Session(items) => self.session_candidates(s, m, items, req, plan, fetch),
            Source::Similar { item, model } => {
                let Some(items) = self.similar_candidates(s, m, item, model, req, plan, fetch)
                else {
                    return Ok(None);
                };
                unpersonalized(items)
            }
            Source::Popular { sort, window } => {
                unpersonalized(self.popular_candidates(s, sort, window, req, plan, fetch))
            }
        }))
    }
}

impl Serving {
    /// The user a key names: mapped to the store's key unless the request says it is one.
    pub(crate) fn user_of(&self, s: &State, key: &str, req: &RankRequest) -> Option<UserIdx> {
        if req.stored_key {
            s.users.get(key).map(UserIdx)
        } else {
            s.users.get(&self.user_keys.to_store(key)).map(UserIdx)
        }
    }
}

/// Items ranked without anyone's history (similar, popular).
fn unpersonalized(items: Vec<Recommendation>) -> Recommendations {
    Recommendations {
        items,
        personalized: false,
        model: "popular",
        model_version: None,
        rules: Vec::new(),
        filtered: Vec::new(),
    }
}

impl State {
    /// The reason of an item ranked by popularity: "popular in" its first category.
    pub(crate) fn popular_reason(&self, item: ItemIdx, trending: bool, count: u64) -> Reason {
        let category = self.first_category(item);
        let adjective = if trending { "trending" } else { "popular" };
        let message = match &category {
            Some(c) => format!("{adjective} in {c}"),
            None => format!("{adjective} overall"),
        };
        let p = explain::Popularity {
            message,
            category,
            count: Some(count),
        };
        if trending {
            Reason::Trending(p)
        } else {
            Reason::Popular(p)
        }
    }
}
