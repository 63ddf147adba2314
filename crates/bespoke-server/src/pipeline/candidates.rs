//! The candidate sources, each scoring what it retrieves: model retrieval for a user or a
//! session (one model or the tuned blend), the content model for users without history,
//! similar items, popular or trending items, and a caller-supplied list (see `supplied.rs`).
//!
//! Sources retrieve through the request's [`Filter`] (inside the exact top-k scan, so a
//! filtered item never takes a place) and explain what they return: reasons always, every
//! term of the score with `explain=full`.

use bespoke_algo::tune::{BLEND_CANDIDATES, Blend};
use bespoke_algo::{ItemIdx, ModelKind, Scored, UserIdx};
use bespoke_store::Millis;
use rustc_hash::FxHashSet;

use super::explain::{Contribution, Feature, History, scaled};
use super::rules::Plan;
use super::{Filter, RankRequest, Reason};
use super::{PopularSort, Recommendation, Recommendations};
use crate::models::ServingModel;
use crate::models::meta::Serve;
use crate::models::model::{self as scorer, Explanation, Prepared, Scorer, Term};
use crate::models::views::Factorization;
use crate::settings::{ModelChoice, PopularityMode, SimilarChoice};
use crate::state::{Serving, State};
use crate::time::now_ms;

/// A history item the model has no row for: its content-predicted factors and its weight.
pub(crate) type ColdHistory = (Vec<f32>, f32);

/// History items named in the reasons of one result.
const EXPLAIN_TOP: usize = 3;

/// A user without history must be placed by their stored attributes, which live in the store:
/// the caller reads them off the async runtime and asks again with them.
#[derive(Debug)]
pub struct NeedsAttributes;

pub(crate) fn model_name(choice: ModelChoice) -> &'static str {
    match choice {
        ModelChoice::Auto => "blend",
        other => other.name(),
    }
}

/// The name of the model whose training matrix, and recency weighting, `choice` reads a
/// history with: its family's (BPR trains on item-kNN's), iALS's for a blend.
pub(crate) fn history_model(choice: ModelChoice) -> &'static str {
    (choice.kind())
        .and_then(crate::models::family)
        .map_or(ModelKind::Als, |f| f.matrix_of())
        .name()
}

/// The reason kind of a model's history reasons.
pub(crate) fn history_reason(name: &str) -> fn(History) -> Reason {
    match name {
        "knn" => Reason::Knn,
        "ease" => Reason::Ease,
        "bpr" => Reason::Bpr,
        _ => Reason::Als,
    }
}

/// How a model source explains what it scored: the model explains (through
/// [`Scorer::explain_prepared`]), the source words the reasons.
pub(crate) struct Scoring<'a> {
    /// The model that scored.
    pub(crate) scorer: &'a dyn Scorer,
    /// The history as that model prepared it.
    pub(crate) prepared: &'a Prepared,
    /// Reason kind.
    pub(crate) make: fn(History) -> Reason,
    /// The message of a reason naming a history item.
    pub(crate) message: &'a dyn Fn(&str) -> String,
    /// The reason when no history item contributed.
    pub(crate) fallback: Option<Reason>,
    /// The term of what the model's terms leave of the score (a session's new items, which
    /// shape iALS's vector but are not history rows), when there is such a part.
    pub(crate) residual: Option<&'static str>,
}

impl Serving {
    /// The user's history in model item ids: `(item, summed weight)`, only items the model knows.
    /// With `serving.recent_boost` > 0, an item's positive weight is multiplied by
    /// `1 + recent_boost · 2^(−age / recent_half_life_hours)`, `age` the time since the user's
    /// latest event on it: what they did lately leads.
    ///
    /// The recency weighting model `name` was trained with (from tuning) applies as in
    /// training: by position among the user's interactions, latest first.
    pub(crate) fn model_history(
        &self,
        s: &State,
        m: &ServingModel,
        user: UserIdx,
        name: &str,
    ) -> Vec<(u32, f32)> {
        let boost = self.settings.serving.recent_boost;
        let half_life_ms = self.settings.serving.recent_half_life_hours * 3_600_000.0;
        let now = now_ms();
        // In the model's row order (item keys), as training reads a user's pairs, not in store
        // id order: sums and recency ties then go the same way as in training, and two stores
        // holding the same data answer the same to the last bit. Items the model has no row for
        // (newer than it) come last; they still count as later interactions for recency.
        let mut history: Vec<(u32, &bespoke_algo::Interaction)> = s
            .live
            .history(user)
            .iter()
            .map(|x| (m.model_item(x.item.0).unwrap_or(u32::MAX), x))
            .collect();
        history.sort_by_key(|(i, x)| (*i, x.item.0));
        let recency = m.recency_of(name);
        // A propensity-weighted iALS folds a history in with the weights it was trained with
        // (from current popularity: the training counts are not kept).
        let propensity = m.meta.params.propensity.filter(|_| name == "als");
        let max_users = propensity.map_or(0.0, |_| self.tail_cut(s).max_users);
        let position = if recency.is_on() {
            let times: Vec<i64> = history.iter().map(|(_, x)| x.last_ts).collect();
            recency.factors(&times)
        } else {
            Vec::new()
        };
        history
            .iter()
            .enumerate()
            .filter(|(_, (i, _))| *i != u32::MAX)
            .map(|(k, &(i, x))| {
                let mut w = x.weight * position.get(k).copied().unwrap_or(1.0);
                if let Some(p) = propensity {
                    w *= p.factor(s.live.item_users(x.item).len() as f64, max_users);
                }
                if boost > 0.0 && w > 0.0 && half_life_ms > 0.0 {
                    let age = (now - x.last_ts).max(0) as f64;
                    w *= (1.0 + boost * (-age / half_life_ms).exp2()) as f32;
                }
                (i, w)
            })
            .collect()
    }

    /// The model a request asked for, with `auto` resolved to what tuning chose (`Auto` stays
    /// only for a blend).
    pub(crate) fn resolve(
        &self,
        asked: Option<ModelChoice>,
        m: Option<&ServingModel>,
    ) -> ModelChoice {
        match asked.unwrap_or(self.settings.serving.default_model) {
            ModelChoice::Auto => match m.map(|m| &m.serve) {
                Some(Serve::Blend { .. }) => ModelChoice::Auto,
                // What tuning chose, when this version has it.
                Some(Serve::Single(kind)) if m.is_some_and(|m| m.scorer(*kind).is_some()) => {
                    ModelChoice::of_kind(kind.family()).unwrap_or(ModelChoice::ALS)
                }
                _ => ModelChoice::ALS,
            },
            other => other,
        }
    }

    /// [`Self::resolve`] for an anonymous history: a blend needs a user's history per model, so
    /// sessions use the first of its models.
    pub(crate) fn resolve_session(
        &self,
        asked: Option<ModelChoice>,
        m: Option<&ServingModel>,
    ) -> ModelChoice {
        match self.resolve(asked, m) {
            ModelChoice::Auto => match m.map(|m| &m.serve) {
                Some(Serve::Blend { models, .. }) => {
                    ModelChoice::of_kind(models[0].family()).unwrap_or(ModelChoice::ALS)
                }
                _ => ModelChoice::ALS,
            },
            other => other,
        }
    }

    /// The blend tuning chose: each model's top candidates for the user, scores divided by
    /// the user's top score per model and summed with the tuned weights; the reasons come from
    /// both models.
    fn recommend_blend(
        &self,
        s: &State,
        m: &ServingModel,
        user: UserIdx,
        n: usize,
        filter: &Filter<'_>,
        full: bool,
    ) -> Vec<Recommendation> {
        let Serve::Blend { models, weight } = &m.serve else {
            return Vec::new();
        };
        let keep = |i: u32| filter.keep_model(m, i);
        let mut lists: Vec<Vec<Scored>> = Vec::with_capacity(2);
        let mut prepared: Vec<Option<Prepared>> = Vec::with_capacity(2);
        for name in models {
            let history = self.model_history(s, m, user, name.as_str());
            let positive: Vec<(u32, f32)> = history.iter().copied().filter(|h| h.1 > 0.0).collect();
            // iALS from the user's cached vector; the others prepare their own.
            let p = match (*name, m.scorer(*name)) {
                (ModelKind::Als, Some(_)) => m
                    .als
                    .user_vector(user.0, self.vector_revision(s, user), &history)
                    .map(Prepared::shared),
                (_, Some(sc)) => sc.prepare(&positive, &self.settings.serving),
                (_, None) => None,
            };
            let list = match (m.scorer(*name), &p) {
                (Some(sc), Some(p)) => {
                    (sc.top_k(p, BLEND_CANDIDATES, &mut |i| keep(i))).unwrap_or_default()
                }
                _ => Vec::new(),
            };
            lists.push(list);
            // The explanations come from the model, from what it ranked with.
            prepared.push(p);
        }
        let blend = Blend { weight: *weight };
        let combined = blend.combine(&lists[0], &lists[1], n);
        // The scales `combine` divided by: each list's top score.
        let scale = |l: &[Scored]| {
            l.first()
                .map_or(1.0, |s| s.score.abs().max(f32::MIN_POSITIVE))
        };
        let by = [
            *weight / scale(&lists[0]),
            (1.0 - *weight) / scale(&lists[1]),
        ];
        let explain = |k: usize, idx: u32| {
            let (Some(sc), Some(p)) = (m.scorer(models[k]), &prepared[k]) else {
                return None;
            };
            let e = sc.explain_prepared(p, &[idx], full).pop()?;
            Some((sc, e))
        };
        combined
            .into_iter()
            .filter_map(|Scored { idx, score }| {
                let item = ItemIdx(m.store_item(idx)?);
                let mut reasons: Vec<Reason> = Vec::new();
                let mut contributions = Vec::new();
                for (k, kind) in models.iter().enumerate() {
                    let name = kind.as_str();
                    let Some((sc, e)) = explain(k, idx) else {
                        continue;
                    };
                    // A model adds to the blend only for the items in its own top list.
                    if full && lists[k].iter().any(|x| x.idx == idx) {
                        let terms = Self::model_terms(s, m, sc, e.terms);
                        contributions.extend(scaled(terms, name, by[k]));
                    }
                    for r in
                        Self::contribution_reasons(s, m, e.because, history_reason(name), |k| {
                            format!("because you interacted with {k}")
                        })
                    {
                        if reasons.len() < EXPLAIN_TOP
                            && !reasons.iter().any(|x| x.item() == r.item())
                        {
                            reasons.push(r);
                        }
                    }
                }
                if reasons.is_empty() {
                    reasons.push(Reason::Blend {
                        message: format!("ranked by a blend of {} and {}", models[0], models[1]),
                    });
                }
                Some(Recommendation {
                    item: s.item_key(item),
                    score,
                    reasons,
                    contributions,
                })
            })
            .collect()
    }

    /// The cache key of a user's vector: the history's revision, and with recency weighting
    /// also a time bucket (a sixteenth of the half-life), since the weights change with time.
    pub(crate) fn vector_revision(&self, s: &State, user: UserIdx) -> u64 {
        let base = s.revision(user);
        let serving = &self.settings.serving;
        if serving.recent_boost > 0.0 && serving.recent_half_life_hours > 0.0 {
            let bucket_ms = (serving.recent_half_life_hours * 3_600_000.0 / 16.0).max(1.0);
            let bucket = (now_ms() as f64 / bucket_ms) as u64;
            base ^ bucket.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        } else {
            base
        }
    }

    /// Explanation reasons from `(model item, contribution)` pairs: the largest positive ones.
    pub(crate) fn contribution_reasons(
        s: &State,
        m: &ServingModel,
        mut parts: Vec<(u32, f32)>,
        make: fn(History) -> Reason,
        message: impl Fn(&str) -> String,
    ) -> Vec<Reason> {
        parts.retain(|p| p.1 > 0.0);
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        // Only the first few are named: partition them out instead of sorting every part
        // (the rank route explains hundreds of items), unless a deleted item is among them.
        if parts.len() > EXPLAIN_TOP {
            parts.select_nth_unstable_by(EXPLAIN_TOP - 1, order);
            parts[..EXPLAIN_TOP].sort_by(order);
            if parts[..EXPLAIN_TOP]
                .iter()
                .any(|p| m.store_item(p.0).is_none())
            {
                parts.sort_by(order);
            }
        } else {
            parts.sort_by(order);
        }
        parts
            .into_iter()
            .filter_map(|(i, w)| {
                let key = s.item_key(ItemIdx(m.store_item(i)?));
                Some(make(History {
                    message: message(&key),
                    item: Some(key),
                    weight: Some(w),
                }))
            })
            .take(EXPLAIN_TOP)
            .collect()
    }

    /// A model's terms as a response's: history items by key (the deleted items' too, by
    /// the model's term name only: they still count in the score), BPR's factors by number.
    pub(crate) fn model_terms(
        s: &State,
        m: &ServingModel,
        sc: &dyn Scorer,
        terms: Vec<scorer::Contribution>,
    ) -> Vec<Contribution> {
        terms
            .into_iter()
            .map(|c| match c.term {
                Term::Item(i) => match m.store_item(i) {
                    Some(st) => {
                        Contribution::of_item(sc.item_term(), s.item_key(ItemIdx(st)), c.value)
                    }
                    None => Contribution::new(sc.item_term(), c.value),
                },
                Term::Bias => Contribution::new("item_bias", c.value),
                Term::Factor(k) => Contribution {
                    factor: Some(k),
                    ..Contribution::new("factor", c.value)
                },
            })
            .collect()
    }

    /// Model results as recommendations, each explained by `scoring` (history items and their
    /// contributions) or, when none contributed, by its fallback reason.
    pub(crate) fn explained(
        s: &State,
        m: &ServingModel,
        top: Vec<Scored>,
        filter: &Filter<'_>,
        scoring: &Scoring<'_>,
        full: bool,
    ) -> Vec<Recommendation> {
        let top = filter.shortlisted(m, top);
        let rows: Vec<u32> = top.iter().map(|x| x.idx).collect();
        let explanations = scoring
            .scorer
            .explain_prepared(scoring.prepared, &rows, full);
        top.into_iter()
            .zip(explanations)
            .filter_map(|(Scored { idx, score }, e)| {
                let item = ItemIdx(m.store_item(idx)?);
                let Explanation { because, terms } = e;
                let mut contributions = if full {
                    Self::model_terms(s, m, scoring.scorer, terms)
                } else {
                    Vec::new()
                };
                if let (true, Some(term)) = (full, scoring.residual) {
                    let sum: f32 = contributions.iter().map(|c| c.value).sum();
                    contributions.push(Contribution::new(term, score - sum));
                }
                let mut reasons =
                    Self::contribution_reasons(s, m, because, scoring.make, scoring.message);
                if reasons.is_empty()
                    && let Some(f) = &scoring.fallback
                {
                    reasons.push(f.clone());
                }
                Some(Recommendation {
                    item: s.item_key(item),
                    score,
                    reasons,
                    contributions,
                })
            })
            .collect()
    }

    /// Reasons from content features and their shares (`category:…`, `attr:…`), or `fallback`
    /// when none raised the score.
    fn feature_reasons(
        features: Vec<(String, f32)>,
        make: fn(Feature) -> Reason,
        message: impl Fn(&str) -> String,
        fallback: &str,
    ) -> Vec<Reason> {
        let mut reasons: Vec<Reason> = features
            .into_iter()
            .map(|(feature, w)| {
                make(Feature {
                    message: message(&feature),
                    item: None,
                    feature: Some(feature),
                    weight: Some(w),
                })
            })
            .collect();
        if reasons.is_empty() {
            reasons.push(make(Reason::feature(fallback)));
        }
        reasons
    }

    /// Candidates for a user: their model (or the blend), the content model when the model
    /// knows none of their history, popular items otherwise, topped up with popular items.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn user_candidates(
        &self,
        s: &State,
        model: Option<&ServingModel>,
        user_key: &str,
        q: &RankRequest,
        plan: &Plan,
        n: usize,
        attributes: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Recommendations, NeedsAttributes> {
        let full = q.explain.full();
        let user = self.user_of(s, user_key, q);
        let personal =
            user.filter(|u| s.personalization.get(u.0 as usize).copied().unwrap_or(true));
        let filter = Filter::new(s, q, plan, if q.include_seen { None } else { personal });
        let choice = self.resolve(q.model, model);
        let mut fallback = match (user, personal) {
            (None, _) => Some("unknown user: showing popular items".to_owned()),
            (Some(_), None) => {
                Some("personalization is off for this user: showing popular items".to_owned())
            }
            (Some(_), Some(_)) => None,
        };
        let mut items = Vec::new();
        let mut used = "popular";
        // Personal answers need consent; an unknown user may still be placed by the context.
        let allowed = personal.is_some() || (user.is_none() && q.context.is_some());
        if allowed && choice != ModelChoice::Popular {
            match model {
                None => fallback = Some("no trained model yet: showing popular items".to_owned()),
                Some(m) => {
                    // BPR is trained on item-kNN's matrix, with its recency.
                    let name = history_model(choice);
                    let history = match personal {
                        Some(u) => self.model_history(s, m, u, name),
                        None => Vec::new(),
                    };
                    let verb = "you interacted with";
                    items = match (personal, choice) {
                        (None, _) => Vec::new(),
                        (Some(u), ModelChoice::Auto) => {
                            self.recommend_blend(s, m, u, n, &filter, full)
                        }
                        (Some(u), ModelChoice::Model(ModelKind::Als)) => {
                            self.recommend_als(s, m, u, &history, n, &filter, full)
                        }
                        (Some(_), ModelChoice::Model(kind)) => {
                            self.recommend_model(s, m, kind, &history, n, &filter, verb, full)
                        }
                        (Some(_), ModelChoice::Popular) => Vec::new(),
                    };
                    if !items.is_empty() {
                        used = model_name(choice);
                    } else if history.is_empty() {
                        // No history the model knows: the user's attributes and the request
                        // context place them through the content model.
                        let mut profile = match (personal, attributes) {
                            (Some(_), Some(a)) => a.clone(),
                            (Some(_), None) => return Err(NeedsAttributes),
                            (None, _) => serde_json::Map::new(),
                        };
                        profile.extend(q.context.clone().unwrap_or_default());
                        items = Self::recommend_profile(s, m, &profile, n, &filter, full);
                        if !items.is_empty() {
                            used = "content";
                        }
                    }
                    if items.is_empty() && personal.is_some() {
                        fallback = Some(
                            if choice == ModelChoice::Model(ModelKind::Ease) && m.ease.is_none() {
                                "EASE is not trained for this catalog (more items than training.ease_max_items): showing popular items".to_owned()
                            } else if choice == ModelChoice::Model(ModelKind::Bpr)
                                && m.bpr.is_none()
                            {
                                "BPR is not trained (training.bpr is off): showing popular items"
                                    .to_owned()
                            } else {
                                format!(
                                    "the {} model knows none of this user's interactions yet: showing popular items",
                                    model_name(choice)
                                )
                            },
                        );
                    }
                }
            }
        }
        let personalized = used != "popular";
        self.top_up(s, &filter, n, &mut items, fallback, !q.include_seen, full);
        Ok(Recommendations {
            items,
            personalized,
            model: used,
            model_version: model.filter(|_| used != "popular").map(|m| m.version),
            rules: Vec::new(),
            filtered: Vec::new(),
        })
    }

    /// A session's items as a history of store items, summed per item and decayed by position
    /// (`serving.session_half_life_items`); unknown items are dropped.
    pub(crate) fn session_history(&self, s: &State, items: &[(String, f32)]) -> Vec<(u32, f32)> {
        let half_life = self.settings.serving.session_half_life_items;
        let last = items.len().saturating_sub(1);
        let mut store_history: Vec<(u32, f32)> = Vec::new();
        for (pos, (key, w)) in items.iter().enumerate() {
            let Some(idx) = s.items.get(key) else {
                continue;
            };
            let decay = if half_life > 0.0 {
                (-((last - pos) as f64) / half_life).exp2() as f32
            } else {
                1.0
            };
            match store_history.iter_mut().find(|h| h.0 == idx) {
                Some(h) => h.1 += w * decay,
                None => store_history.push((idx, w * decay)),
            }
        }
        store_history
    }

    /// A store history in model rows (sorted), and the items the model has no row for, by
    /// their content-predicted factors.
    pub(crate) fn split_history(
        m: &ServingModel,
        store_history: &[(u32, f32)],
    ) -> (Vec<(u32, f32)>, Vec<ColdHistory>) {
        let mut history: Vec<(u32, f32)> = store_history
            .iter()
            .filter_map(|&(i, w)| m.model_item(i).map(|mi| (mi, w)))
            .collect();
        history.sort_unstable_by_key(|h| h.0);
        let extra: Vec<(Vec<f32>, f32)> = store_history
            .iter()
            .filter(|(i, _)| m.model_item(*i).is_none())
            .filter_map(|&(i, w)| Some((m.content.as_ref()?.cold_factors(i)?, w)))
            .collect();
        (history, extra)
    }

    /// Candidates for an anonymous session (see `Engine::recommend_session`).
    pub(crate) fn session_candidates(
        &self,
        s: &State,
        model: Option<&ServingModel>,
        items: &[(String, f32)],
        q: &RankRequest,
        plan: &Plan,
        n: usize,
    ) -> Recommendations {
        let full = q.explain.full();
        let store_history = self.session_history(s, items);
        let mut filter = Filter::new(s, q, plan, None);
        if !q.include_seen {
            filter.exclude(store_history.iter().map(|h| h.0));
        }
        let choice = self.resolve_session(q.model, model);
        let mut fallback = None;
        let mut items_out = Vec::new();
        let mut used = "popular";
        let profile = q.context.as_ref().filter(|c| !c.is_empty());
        if let (true, Some(profile), false) = (
            store_history.is_empty(),
            profile,
            choice == ModelChoice::Popular,
        ) {
            match model {
                None => fallback = Some("no trained model yet: showing popular items".to_owned()),
                Some(m) => {
                    items_out = Self::recommend_profile(s, m, profile, n, &filter, full);
                    if items_out.is_empty() {
                        fallback = Some(
                            "no item of this session is known and the content model knows nothing of its context: showing popular items"
                                .to_owned(),
                        );
                    } else {
                        used = "content";
                    }
                }
            }
        } else if store_history.is_empty() {
            fallback = Some("no item of this session is known: showing popular items".to_owned());
        } else if choice != ModelChoice::Popular {
            match model {
                None => fallback = Some("no trained model yet: showing popular items".to_owned()),
                Some(m) => {
                    let (history, extra) = Self::split_history(m, &store_history);
                    let verb = "this session has";
                    items_out = match choice {
                        ModelChoice::Model(ModelKind::Als) => match (
                            m.als.session_vector(&history, &extra),
                            m.scorer(ModelKind::Als),
                        ) {
                            (Some(v), Some(sc)) => {
                                let v = std::sync::Arc::new(v);
                                let prepared = Prepared::shared(v.clone());
                                let top = filter.top_als(m, &v.x, n);
                                // A session of new items only has no history item to name.
                                let fallback = if extra.is_empty() {
                                    Reason::Als(Reason::history(
                                        "matches the taste this session shows (latent factors)",
                                    ))
                                } else {
                                    Reason::Content(Reason::feature(
                                        "matches the new items of this session (placed by their content)",
                                    ))
                                };
                                let warm = Self::explained(
                                    s,
                                    m,
                                    top,
                                    &filter,
                                    &Scoring {
                                        scorer: sc,
                                        prepared: &prepared,
                                        make: Reason::Als,
                                        message: &|k| format!("because of {k} in this session"),
                                        fallback: Some(fallback),
                                        // The session's new items shape the vector too: their
                                        // part is what the history items leave of the score.
                                        residual: (!extra.is_empty()).then_some("session_content"),
                                    },
                                    full,
                                );
                                Self::with_cold_items(
                                    s,
                                    m,
                                    &v.x,
                                    warm,
                                    n,
                                    &filter,
                                    "this session's",
                                    full,
                                )
                            }
                            _ => Vec::new(),
                        },
                        ModelChoice::Model(kind) => {
                            self.recommend_model(s, m, kind, &history, n, &filter, verb, full)
                        }
                        _ => Vec::new(),
                    };
                    if items_out.is_empty() {
                        fallback = Some(format!(
                            "the {} model knows none of this session's items yet: showing popular items",
                            model_name(choice)
                        ));
                    } else {
                        used = model_name(choice);
                    }
                }
            }
        }
        self.top_up(s, &filter, n, &mut items_out, fallback, false, full);
        Recommendations {
            items: items_out,
            personalized: used != "popular",
            model: used,
            model_version: model.filter(|_| used != "popular").map(|m| m.version),
            rules: Vec::new(),
            filtered: Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn recommend_als(
        &self,
        s: &State,
        m: &ServingModel,
        user: UserIdx,
        history: &[(u32, f32)],
        n: usize,
        filter: &Filter<'_>,
        full: bool,
    ) -> Vec<Recommendation> {
        let Some(vector) = m
            .als
            .user_vector(user.0, self.vector_revision(s, user), history)
        else {
            return Vec::new();
        };
        let Some(sc) = m.scorer(ModelKind::Als) else {
            return Vec::new();
        };
        let top = filter.top_als(m, &vector.x, n);
        let prepared = Prepared::shared(vector.clone());
        let warm = Self::explained(
            s,
            m,
            top,
            filter,
            &Scoring {
                scorer: sc,
                prepared: &prepared,
                make: Reason::Als,
                message: &|k| format!("because you interacted with {k}"),
                fallback: Some(Reason::Als(Reason::history(
                    "matches the taste your history shows (latent factors)",
                ))),
                residual: None,
            },
            full,
        );
        Self::with_cold_items(s, m, &vector.x, warm, n, filter, "your", full)
    }

    /// Adds the items the model has no factors for, placed by their content (the hybrid
    /// model), to `warm` results for the vector `x`; keeps the best `n`. Their reasons name
    /// the content features that match.
    #[allow(clippy::too_many_arguments)]
    fn with_cold_items(
        s: &State,
        m: &ServingModel,
        x: &[f32],
        mut out: Vec<Recommendation>,
        n: usize,
        filter: &Filter<'_>,
        whose: &str,
        full: bool,
    ) -> Vec<Recommendation> {
        let Some(content) = &m.content else {
            return out;
        };
        let cold = filter.top_cold(content, x, n);
        // Most requests find no new item: the model's results stand as they are.
        if cold.is_empty() {
            return out;
        }
        // Explaining a new item is its cost: only those a boost stage could keep, and of
        // those only the ones that stay among the `n` best once merged with the model's.
        let mut merged: Vec<(f32, Result<Recommendation, u32>)> = out
            .drain(..)
            .map(|r| (r.score, Ok(r)))
            .chain(
                filter
                    .shortlisted_items(cold)
                    .into_iter()
                    .map(|c| (c.score, Err(c.idx))),
            )
            .collect();
        // Stable: on equal scores the model's results stay first, as they came.
        merged.sort_by(|a, b| b.0.total_cmp(&a.0));
        merged.truncate(n);
        out.extend(merged.into_iter().map(|(score, r)| match r {
            Ok(r) => r,
            Err(idx) => Self::cold_item(s, content, idx, score, x, whose, full),
        }));
        out
    }

    /// A new item (store id `idx`) placed by its content, scored `score` against `x`.
    pub(crate) fn cold_item(
        s: &State,
        content: &crate::models::content::ContentServing,
        idx: u32,
        score: f32,
        x: &[f32],
        whose: &str,
        full: bool,
    ) -> Recommendation {
        let reasons = Self::feature_reasons(
            content.explain_cold(idx, x, EXPLAIN_TOP),
            Reason::Content,
            |feature| format!("new item, no interactions yet: its {feature} matches {whose} taste"),
            "new item, no interactions yet: placed by its content",
        );
        let contributions = if full {
            content
                .cold_terms(idx, x)
                .into_iter()
                .map(|(f, w)| Contribution::of_feature("feature", f, w))
                .collect()
        } else {
            Vec::new()
        };
        Recommendation {
            item: s.item_key(ItemIdx(idx)),
            score,
            reasons,
            contributions,
        }
    }

    /// A user without history (or a visitor) placed in the iALS space by their attributes and
    /// the request context through the content model. Empty when there is no user side or the
    /// profile holds no feature it knows.
    fn recommend_profile(
        s: &State,
        m: &ServingModel,
        profile: &serde_json::Map<String, serde_json::Value>,
        n: usize,
        filter: &Filter<'_>,
        full: bool,
    ) -> Vec<Recommendation> {
        let Some(side) = m.content.as_ref().and_then(|c| c.model.users.as_ref()) else {
            return Vec::new();
        };
        let (x, v) = side.project(&crate::models::content::attribute_bag(profile));
        // The bias alone is the average user: not personal, popularity serves that better.
        if x.len() <= 1 {
            return Vec::new();
        }
        let top = filter.top_als(m, &v, n);
        let warm = top
            .into_iter()
            .filter_map(|Scored { idx, score }| {
                let item = ItemIdx(m.store_item(idx)?);
                let y = m.als.item_vector(idx);
                let reasons = Self::feature_reasons(
                    side.top_features(&x, y, EXPLAIN_TOP),
                    Reason::Profile,
                    |feature| format!("popular with users whose profile has {feature}"),
                    "matches users with a similar profile",
                );
                let contributions = if full {
                    side.all_features(&x, y)
                        .into_iter()
                        .map(|(f, w)| Contribution::of_feature("feature", f, w))
                        .collect()
                } else {
                    Vec::new()
                };
                Some(Recommendation {
                    item: s.item_key(item),
                    score,
                    reasons,
                    contributions,
                })
            })
            .collect();
        Self::with_cold_items(s, m, &v, warm, n, filter, "this profile's", full)
    }

    /// A model that retrieves by itself ([`Scorer::top_k`]: item-kNN, EASE, BPR) over the
    /// history it prepared; the reasons are the history items behind each result (BPR's
    /// closest in its factors). Empty when this version lacks the model (EASE over
    /// `training.ease_max_items`, BPR without `training.bpr`) or it knows none of the
    /// history, and the caller falls back.
    #[allow(clippy::too_many_arguments)]
    fn recommend_model(
        &self,
        s: &State,
        m: &ServingModel,
        kind: ModelKind,
        history: &[(u32, f32)],
        n: usize,
        filter: &Filter<'_>,
        verb: &str,
        full: bool,
    ) -> Vec<Recommendation> {
        let Some(sc) = m.scorer(kind) else {
            return Vec::new();
        };
        let Some(prepared) = sc.prepare(history, &self.settings.serving) else {
            return Vec::new();
        };
        let Some(top) = sc.top_k(&prepared, n, &mut |i| filter.keep_model(m, i)) else {
            return Vec::new();
        };
        // The words are the route's; the reason kind is the model's.
        let message: Box<dyn Fn(&str) -> String> = match kind {
            ModelKind::Ease => Box::new(|k| format!("because {verb} {k}")),
            ModelKind::Bpr => Box::new(|k| format!("close in BPR's factors to {k}, which {verb}")),
            _ => Box::new(|k| format!("similar to {k}, which you interacted with")),
        };
        let fallback = match kind {
            ModelKind::Ease => Some("co-occurs with your history (EASE)"),
            ModelKind::Bpr => Some("ranked high for this history by BPR"),
            _ => None,
        };
        let make = history_reason(kind.name());
        Self::explained(
            s,
            m,
            top,
            filter,
            &Scoring {
                scorer: sc,
                prepared: &prepared,
                make,
                message: &message,
                fallback: fallback.map(|f| make(Reason::history(f))),
                residual: None,
            },
            full,
        )
    }

    /// Fills `items` up to `n` with popular items `filter` accepts, scored below every model
    /// result, each with a reason: a top-up, the `fallback` message, or (with `unseen_reason`)
    /// that the user has not seen it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn top_up(
        &self,
        s: &State,
        filter: &Filter<'_>,
        n: usize,
        items: &mut Vec<Recommendation>,
        fallback: Option<String>,
        unseen_reason: bool,
        full: bool,
    ) {
        // With a shortlist the answer needs no more than it; the rest would only be dropped.
        let n = filter.shortlist().map_or(n, |k| k.min(n));
        if items.len() >= n {
            return;
        }
        let taken: FxHashSet<u32> = items.iter().filter_map(|r| s.items.get(&r.item)).collect();
        let top_up = !items.is_empty();
        let mut popular =
            self.popular_for(s, n - items.len(), filter, full, |i| !taken.contains(&i.0));
        // Below every model score, so that a top-up never outranks a model result.
        let floor = items.last().map(|r| r.score);
        let max = popular
            .first()
            .map_or(1.0, |r| r.score.max(f32::MIN_POSITIVE));
        for r in &mut popular {
            if let Some(f) = floor {
                let part = 0.999 * r.score / max;
                r.score = f - 1.0 + part;
                if full {
                    r.contributions = vec![
                        Contribution::new("popularity", part),
                        Contribution::new("offset", r.score - part),
                    ];
                }
            }
            if top_up {
                r.reasons
                    .push(Reason::fallback("topped up with popular items"));
            } else if let Some(message) = &fallback {
                r.reasons.push(Reason::fallback(message.clone()));
            } else if unseen_reason {
                r.reasons.push(Reason::Unseen {
                    message: "you have not interacted with this item yet".into(),
                });
            }
        }
        items.extend(popular);
    }

    /// The configured popularity ranking among items `filter` and `extra` accept.
    fn popular_for(
        &self,
        s: &State,
        n: usize,
        filter: &Filter<'_>,
        full: bool,
        mut extra: impl FnMut(ItemIdx) -> bool,
    ) -> Vec<Recommendation> {
        let mode = self.settings.serving.recommend_popularity;
        let pop = s.live.popularity();
        let keep = |i: ItemIdx| filter.keep(i) && extra(i);
        let (scored, trending) = match mode {
            PopularityMode::AllTime => (pop.top_all_time(n, keep), false),
            PopularityMode::Trending => (pop.top_trending(n, now_ms(), keep), true),
        };
        scored
            .into_iter()
            .map(|Scored { idx, score }| {
                let item = ItemIdx(idx);
                Recommendation {
                    item: s.item_key(item),
                    score,
                    reasons: vec![s.popular_reason(item, trending, pop.count(item) as u64)],
                    contributions: popularity_terms(full, score),
                }
            })
            .collect()
    }

    /// Items related to `item_key`: from the requested model (item-kNN neighbours, cosine of
    /// iALS factors, or live co-occurrence), topped up with co-occurrence and then with popular
    /// items of its category when there are too few (a cold item has none). `None` when the item
    /// does not exist.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn similar_candidates(
        &self,
        s: &State,
        model: Option<&ServingModel>,
        item_key: &str,
        choice: Option<SimilarChoice>,
        q: &RankRequest,
        plan: &Plan,
        n: usize,
    ) -> Option<Vec<Recommendation>> {
        let full = q.explain.full();
        let item = ItemIdx(s.items.get(item_key)?);
        let choice = choice.unwrap_or(self.settings.serving.default_similar_model);
        let mut filter = Filter::new(s, q, plan, None);
        filter.exclude([item.0]);
        let mut out: Vec<Recommendation> = Vec::new();
        let mut taken: FxHashSet<u32> = FxHashSet::default();
        let similarity = |score: f32| {
            popularity_terms(full, score)
                .into_iter()
                .map(|c| Contribution {
                    term: "similarity".into(),
                    ..c
                })
                .collect::<Vec<_>>()
        };
        if let (Some(m), false) = (model, choice == SimilarChoice::Cooccurrence)
            && let Some(mi) = m.model_item(item.0)
        {
            let keep = |j: u32| filter.keep_model(m, j);
            let (found, make, phrase): (_, fn(History) -> Reason, _) = match choice {
                SimilarChoice::Als => (
                    m.als.similar(
                        mi,
                        n,
                        keep,
                        filter.als_subset(m, Factorization::Unit).as_deref(),
                    ),
                    Reason::Als,
                    "liked by the same kind of users as",
                ),
                _ => (
                    m.knn.neighbours(mi, n, keep),
                    Reason::Knn,
                    "often interacted with together with",
                ),
            };
            for Scored { idx, score } in found {
                let Some(st) = m.store_item(idx) else {
                    continue;
                };
                taken.insert(st);
                out.push(Recommendation {
                    item: s.item_key(ItemIdx(st)),
                    score,
                    reasons: vec![make(History {
                        message: format!("{phrase} {item_key}"),
                        item: Some(item_key.to_owned()),
                        weight: Some(score),
                    })],
                    contributions: similarity(score),
                });
            }
        }
        // An item the model has no factors for yet: its content places it among the items
        // with factors, and its neighbours there are related by content.
        if let (Some(m), true) = (
            model,
            out.is_empty() && choice != SimilarChoice::Cooccurrence,
        ) && m.model_item(item.0).is_none()
            && let Some(y) = m.content.as_ref().and_then(|c| c.cold_factors(item.0))
        {
            let keep = |j: u32| filter.keep_model(m, j);
            for Scored { idx, score } in m.als.similar_to(&y, n, keep) {
                let Some(st) = m.store_item(idx) else {
                    continue;
                };
                taken.insert(st);
                out.push(Recommendation {
                    item: s.item_key(ItemIdx(st)),
                    score,
                    reasons: vec![Reason::Content(Feature {
                        message: format!(
                            "{item_key} is new: placed by its content next to this item"
                        ),
                        item: Some(item_key.to_owned()),
                        feature: None,
                        weight: Some(score),
                    })],
                    contributions: similarity(score),
                });
            }
        }
        if out.len() < n {
            let related = s.live.related(
                item,
                n - out.len(),
                self.settings.serving.related_max_users,
                |j| filter.keep(j) && !taken.contains(&j.0),
            );
            let ceiling = out.last().map(|r| r.score * 0.5);
            let max = related
                .first()
                .map_or(1.0, |r| r.score.max(f32::MIN_POSITIVE));
            for r in related {
                taken.insert(r.item.0);
                let mut reasons = vec![Reason::CoOccurrence {
                    message: format!(
                        "{} {} who interacted with {item_key} also interacted with this",
                        r.co_users,
                        if r.co_users == 1 { "user" } else { "users" }
                    ),
                    item: item_key.to_owned(),
                    count: r.co_users as u64,
                }];
                if choice != SimilarChoice::Cooccurrence {
                    reasons.push(Reason::fallback(
                        "the model does not know this item well enough yet",
                    ));
                }
                let score = ceiling.map_or(r.score, |c| c * r.score / max);
                out.push(Recommendation {
                    item: s.item_key(r.item),
                    score,
                    reasons,
                    contributions: popularity_terms(full, score)
                        .into_iter()
                        .map(|c| Contribution {
                            term: "co_occurrence".into(),
                            ..c
                        })
                        .collect(),
                });
            }
        }
        if out.len() < n {
            let cats = s
                .meta(item)
                .map(|m| m.categories.clone())
                .unwrap_or_default();
            let message = if out.is_empty() {
                "no co-occurrence data for this item yet: popular items of its category"
            } else {
                "too little co-occurrence data: topped up with popular items of its category"
            };
            let fill = s.live.popularity().top_all_time(n - out.len(), |j| {
                filter.keep(j) && !taken.contains(&j.0) && s.in_categories(j, &cats)
            });
            // Scaled below the weakest match, so real matches always rank first.
            let ceiling = out.last().map_or(1.0, |r| r.score * 0.5);
            let max_pop = fill.first().map_or(1.0, |f| f.score.max(f32::MIN_POSITIVE));
            for f in fill {
                let i = ItemIdx(f.idx);
                let score = ceiling * f.score / max_pop;
                out.push(Recommendation {
                    item: s.item_key(i),
                    score,
                    reasons: vec![
                        s.popular_reason(i, false, s.live.popularity().count(i) as u64),
                        Reason::Fallback {
                            message: message.to_owned(),
                            item: Some(item_key.to_owned()),
                        },
                    ],
                    contributions: popularity_terms(full, score),
                });
            }
        }
        Some(out)
    }

    /// The most popular items, all-time, within a window (`window` ms), or trending.
    pub(crate) fn popular_candidates(
        &self,
        s: &State,
        sort: PopularSort,
        window: Option<Millis>,
        q: &RankRequest,
        plan: &Plan,
        n: usize,
    ) -> Vec<Recommendation> {
        let full = q.explain.full();
        let filter = Filter::new(s, q, plan, None);
        let keep = |i: ItemIdx| filter.keep(i);
        let pop = s.live.popularity();
        let now = now_ms();
        let scored = match (sort, window) {
            (PopularSort::Trending, _) => pop.top_trending(n, now, keep),
            (PopularSort::Count, Some(w)) => pop.top_since(n, now - w, keep),
            (PopularSort::Count, None) => pop.top_all_time(n, keep),
        };
        scored
            .into_iter()
            .map(|Scored { idx, score }| {
                let item = ItemIdx(idx);
                let mut reason =
                    s.popular_reason(item, sort == PopularSort::Trending, pop.count(item) as u64);
                if let (PopularSort::Count, Some(w), Reason::Popular(p)) =
                    (sort, window, &mut reason)
                {
                    p.message
                        .push_str(&format!(" in the last {}", describe_window(w)));
                    p.count = None;
                }
                Recommendation {
                    item: s.item_key(item),
                    score,
                    reasons: vec![reason],
                    contributions: popularity_terms(full, score),
                }
            })
            .collect()
    }
}

/// A score that is one quantity (a popularity, a similarity) as its only term.
pub(crate) fn popularity_terms(full: bool, score: f32) -> Vec<Contribution> {
    if full {
        vec![Contribution::new("popularity", score)]
    } else {
        Vec::new()
    }
}

fn describe_window(ms: Millis) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    for (unit, name) in UNITS {
        if ms % unit == 0 {
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}
