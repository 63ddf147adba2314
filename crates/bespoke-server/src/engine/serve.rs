//! Answering requests: recommendations, similar items and popular items, each with reasons.
//!
//! Recommendations use the requested model (iALS, item-kNN or popularity). iALS solves the user's
//! vector exactly from their current history against the served item factors (cached per history
//! revision), so an event changes the next answer without retraining; the reasons are the
//! history items with the largest Hu–Koren–Volinsky contributions. Anything a model cannot
//! answer (no model yet, a user it knows nothing of, too few results) falls back to popularity,
//! and the reasons say so.

use bespoke_algo::{ItemIdx, Scored, UserIdx};
use bespoke_store::Millis;
use rustc_hash::FxHashSet;

use super::{
    Engine, PopularQuery, PopularSort, Reason, RecommendQuery, Recommendation, Recommendations,
    State, now_ms,
};
use crate::models::ServingModel;
use crate::models::tuning::Serve;
use crate::settings::{ModelChoice, PopularityMode, SimilarChoice};
use bespoke_algo::tune::{BLEND_CANDIDATES, Blend};

/// [`Engine::recommend`] found a user with no history and must read their stored attributes.
struct NeedsAttributes;

/// History items named in the reasons of one result.
const EXPLAIN_TOP: usize = 3;

/// What a request allows: availability, categories, exclusions and (optionally) unseen items.
struct Filter<'a> {
    s: &'a State,
    wanted: Vec<u32>,
    excluded: FxHashSet<u32>,
    unseen_for: Option<UserIdx>,
}

impl Filter<'_> {
    /// [`Self::keep`] for a row of model `m`: false for rows whose item no longer exists.
    fn keep_model(&self, m: &ServingModel, i: u32) -> bool {
        m.store_item(i).is_some_and(|st| self.keep(ItemIdx(st)))
    }

    fn keep(&self, item: ItemIdx) -> bool {
        self.s.servable(item)
            && !self.excluded.contains(&item.0)
            && self.s.in_categories(item, &self.wanted)
            && self
                .unseen_for
                .is_none_or(|u| !self.s.live.has_seen(u, item))
    }
}

fn model_name(choice: ModelChoice) -> &'static str {
    match choice {
        ModelChoice::Auto => "blend",
        ModelChoice::Als => "als",
        ModelChoice::Knn => "knn",
        ModelChoice::Ease => "ease",
        ModelChoice::Bpr => "bpr",
        ModelChoice::Popular => "popular",
    }
}

impl Engine {
    /// The user's history in model item ids: `(item, summed weight)`, only items the model knows.
    /// With `serving.recent_boost` > 0, an item's positive weight is multiplied by
    /// `1 + recent_boost · 2^(−age / recent_half_life_hours)`, `age` the time since the user's
    /// latest event on it: what they did lately leads.
    ///
    /// The recency weighting model `name` was trained with (from tuning) applies as in
    /// training: by position among the user's interactions, latest first.
    fn model_history(
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
    fn resolve(&self, asked: Option<ModelChoice>, m: Option<&ServingModel>) -> ModelChoice {
        match asked.unwrap_or(self.settings.serving.default_model) {
            ModelChoice::Auto => match m.map(|m| &m.serve) {
                Some(Serve::Blend { .. }) => ModelChoice::Auto,
                Some(Serve::Single(name))
                    if name == "ease" && m.is_some_and(|m| m.ease.is_some()) =>
                {
                    ModelChoice::Ease
                }
                Some(Serve::Single(name)) if name == "knn" => ModelChoice::Knn,
                _ => ModelChoice::Als,
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
    ) -> Vec<Recommendation> {
        let Serve::Blend { models, weight } = &m.serve else {
            return Vec::new();
        };
        let keep = |i: u32| m.store_item(i).is_some_and(|st| filter.keep(ItemIdx(st)));
        let mut lists: Vec<Vec<Scored>> = Vec::with_capacity(2);
        let mut histories: Vec<Vec<(u32, f32)>> = Vec::with_capacity(2);
        let mut vector = None;
        for name in models {
            let history = self.model_history(s, m, user, name.as_str());
            let positive: Vec<(u32, f32)> = history.iter().copied().filter(|h| h.1 > 0.0).collect();
            let list = match name.as_str() {
                "ease" => match &m.ease {
                    Some(e) => {
                        let mut scores = vec![0.0f32; e.n_items()];
                        let mut top = bespoke_algo::TopK::new(BLEND_CANDIDATES);
                        e.recommend(&positive, BLEND_CANDIDATES, keep, &mut scores, &mut top)
                    }
                    None => Vec::new(),
                },
                "knn" => m.knn.recommend(&positive, BLEND_CANDIDATES, keep),
                _ => match m
                    .als
                    .user_vector(user.0, self.vector_revision(s, user), &history)
                {
                    Some(v) => {
                        let l = m.als.top_k(&v.x, BLEND_CANDIDATES, keep);
                        vector = Some(v);
                        l
                    }
                    None => Vec::new(),
                },
            };
            lists.push(list);
            histories.push(positive);
        }
        let combined = Blend { weight: *weight }.combine(&lists[0], &lists[1], n);
        combined
            .into_iter()
            .filter_map(|Scored { idx, score }| {
                let item = ItemIdx(m.store_item(idx)?);
                let mut reasons = Vec::new();
                for (name, history) in models.iter().zip(&histories) {
                    let (parts, kind) = match name.as_str() {
                        "ease" => (
                            m.ease
                                .as_ref()
                                .map(|e| e.explain(history, idx))
                                .unwrap_or_default(),
                            "ease",
                        ),
                        "knn" => (m.knn.explain(history, idx), "knn"),
                        _ => (
                            vector
                                .as_ref()
                                .map(|v| m.als.explain(v, idx))
                                .unwrap_or_default(),
                            "als",
                        ),
                    };
                    for r in Self::contribution_reasons(s, m, parts, kind, |k| {
                        format!("because you interacted with {k}")
                    }) {
                        if reasons.len() < EXPLAIN_TOP
                            && !reasons.iter().any(|x: &Reason| x.item == r.item)
                        {
                            reasons.push(r);
                        }
                    }
                }
                if reasons.is_empty() {
                    reasons.push(Reason::new(
                        "blend",
                        format!("ranked by a blend of {} and {}", models[0], models[1]),
                    ));
                }
                Some(Recommendation {
                    item: s.item_key(item),
                    score,
                    reasons,
                })
            })
            .collect()
    }

    /// The cache key of a user's vector: the history's revision, and with recency weighting
    /// also a time bucket (a sixteenth of the half-life), since the weights change with time.
    fn vector_revision(&self, s: &State, user: UserIdx) -> u64 {
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
    fn contribution_reasons(
        s: &State,
        m: &ServingModel,
        mut parts: Vec<(u32, f32)>,
        kind: &'static str,
        message: impl Fn(&str) -> String,
    ) -> Vec<Reason> {
        parts.retain(|p| p.1 > 0.0);
        parts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        parts
            .into_iter()
            .filter_map(|(i, w)| {
                let key = s.item_key(ItemIdx(m.store_item(i)?));
                Some(Reason {
                    weight: Some(w),
                    ..Reason::new(kind, message(&key))
                })
                .map(|r| Reason {
                    item: Some(key),
                    ..r
                })
            })
            .take(EXPLAIN_TOP)
            .collect()
    }

    /// Model results as recommendations, each explained by `explain` (history items and their
    /// contributions, named by `message`) or, when none contributed, by `fallback`.
    fn explained(
        s: &State,
        m: &ServingModel,
        top: Vec<Scored>,
        kind: &'static str,
        message: impl Fn(&str) -> String,
        fallback: Option<Reason>,
        mut explain: impl FnMut(u32) -> Vec<(u32, f32)>,
    ) -> Vec<Recommendation> {
        top.into_iter()
            .filter_map(|Scored { idx, score }| {
                let item = ItemIdx(m.store_item(idx)?);
                let mut reasons = Self::contribution_reasons(s, m, explain(idx), kind, &message);
                if reasons.is_empty()
                    && let Some(f) = &fallback
                {
                    reasons.push(f.clone());
                }
                Some(Recommendation {
                    item: s.item_key(item),
                    score,
                    reasons,
                })
            })
            .collect()
    }

    /// Reasons from content features and their shares (`category:…`, `attr:…`), or `fallback`
    /// when none raised the score.
    fn feature_reasons(
        features: Vec<(String, f32)>,
        kind: &'static str,
        message: impl Fn(&str) -> String,
        fallback: &str,
    ) -> Vec<Reason> {
        let mut reasons: Vec<Reason> = features
            .into_iter()
            .map(|(feature, w)| {
                let message = message(&feature);
                Reason {
                    weight: Some(w),
                    feature: Some(feature),
                    ..Reason::new(kind, message)
                }
            })
            .collect();
        if reasons.is_empty() {
            reasons.push(Reason::new(kind, fallback));
        }
        reasons
    }

    /// What serving derived from a user, for their data export: per-item history, consent as
    /// applied, and (with personalization allowed and a model served) their user vector. `None`
    /// for an unknown user.
    pub fn derived(&self, user_key: &str) -> Option<serde_json::Value> {
        let model = self.model.load_full();
        let s = self.state.read();
        let user = UserIdx(s.users.get(&self.user_keys.to_store(user_key))?);
        let personal = s
            .personalization
            .get(user.0 as usize)
            .copied()
            .unwrap_or(true);
        let history: Vec<serde_json::Value> = s
            .live
            .history(user)
            .iter()
            .map(|x| {
                serde_json::json!({ "item": s.item_key(x.item), "weight": x.weight, "events": x.count,
                                    "last_event_at": crate::time::format_rfc3339(x.last_ts) })
            })
            .collect();
        let vector = model.as_ref().filter(|_| personal).and_then(|m| {
            let h = self.model_history(&s, m, user, "als");
            m.als
                .user_vector(user.0, self.vector_revision(&s, user), &h)
                .map(|v| (m.version, v.x.clone()))
        });
        Some(serde_json::json!({
            "history": history,
            "personalization_applied": personal,
            "shared_statistics": !s.live.is_private(user),
            "model_version": vector.as_ref().map(|v| v.0),
            "user_vector": vector.map(|v| v.1),
        }))
    }

    /// Recommendations for a user (see the module docs for the model and fallback rules).
    pub fn recommend(&self, user_key: &str, q: &RecommendQuery) -> Recommendations {
        // A user without history is placed by their stored attributes: read only then, and not
        // while holding the state lock (a store read may be a network round trip).
        let mut attributes = None;
        loop {
            match self.recommend_with(user_key, q, attributes.as_ref()) {
                Ok(out) => return out,
                Err(NeedsAttributes) => {
                    attributes = Some(
                        self.get_user(user_key)
                            .ok()
                            .flatten()
                            .map(|u| u.attributes)
                            .unwrap_or_default(),
                    );
                }
            }
        }
    }

    /// [`Engine::recommend`] with the user's stored attributes if already read; asks for them
    /// (never when given) when the user turns out to need them.
    fn recommend_with(
        &self,
        user_key: &str,
        q: &RecommendQuery,
        attributes: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Recommendations, NeedsAttributes> {
        let model = self.model.load_full();
        let s = self.state.read();
        let user = s.users.get(&self.user_keys.to_store(user_key)).map(UserIdx);
        let personal =
            user.filter(|u| s.personalization.get(u.0 as usize).copied().unwrap_or(true));
        let filter = Filter {
            s: &s,
            wanted: s.category_ids(&q.categories),
            excluded: q.exclude.iter().filter_map(|k| s.items.get(k)).collect(),
            unseen_for: if q.include_seen { None } else { personal },
        };
        let choice = self.resolve(q.model, model.as_deref());
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
            match &model {
                None => fallback = Some("no trained model yet: showing popular items".to_owned()),
                Some(m) => {
                    let name = match choice {
                        ModelChoice::Ease => "ease",
                        // BPR is trained on item-kNN's matrix, with its recency.
                        ModelChoice::Knn | ModelChoice::Bpr => "knn",
                        _ => "als",
                    };
                    let history = match personal {
                        Some(u) => self.model_history(&s, m, u, name),
                        None => Vec::new(),
                    };
                    items = match (personal, choice) {
                        (None, _) => Vec::new(),
                        (Some(u), ModelChoice::Auto) => {
                            self.recommend_blend(&s, m, u, q.n, &filter)
                        }
                        (Some(u), ModelChoice::Als) => {
                            self.recommend_als(&s, m, u, &history, q.n, &filter)
                        }
                        (Some(_), ModelChoice::Ease) => self.recommend_ease(
                            &s,
                            m,
                            &history,
                            q.n,
                            &filter,
                            "you interacted with",
                        ),
                        (Some(_), ModelChoice::Bpr) => {
                            self.recommend_bpr(&s, m, &history, q.n, &filter, "you interacted with")
                        }
                        (Some(_), _) => self.recommend_knn(&s, m, &history, q.n, &filter),
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
                        items = Self::recommend_profile(&s, m, &profile, q.n, &filter);
                        if !items.is_empty() {
                            used = "content";
                        }
                    }
                    if items.is_empty() && personal.is_some() {
                        fallback = Some(if choice == ModelChoice::Ease && m.ease.is_none() {
                            "EASE is not trained for this catalog (more items than training.ease_max_items): showing popular items".to_owned()
                        } else if choice == ModelChoice::Bpr && m.bpr.is_none() {
                            "BPR is not trained (training.bpr is off): showing popular items"
                                .to_owned()
                        } else {
                            format!(
                                "the {} model knows none of this user's interactions yet: showing popular items",
                                model_name(choice)
                            )
                        });
                    }
                }
            }
        }
        let personalized = used != "popular";
        self.top_up(&s, &filter, q.n, &mut items, fallback, !q.include_seen);
        Ok(Recommendations {
            items,
            personalized,
            model: used,
            model_version: model
                .as_ref()
                .filter(|_| used != "popular")
                .map(|m| m.version),
        })
    }

    /// Recommendations for an anonymous session: `items` are the item keys the visitor
    /// interacted with, oldest first, each with a weight. The history is folded into the model
    /// on the fly (iALS: the exact vector of this history; item-kNN: its neighbours); with
    /// `serving.session_half_life_items` > 0, an item `k` places before the last counts
    /// `2^(-k / half_life)` as much. Session items are not recommended back unless
    /// `include_seen`. Unknown items are ignored; a session with no known item gets popular
    /// items, and the reasons say so.
    pub fn recommend_session(
        &self,
        items: &[(String, f32)],
        q: &RecommendQuery,
    ) -> Recommendations {
        let model = self.model.load_full();
        let s = self.state.read();
        let half_life = self.settings.serving.session_half_life_items;
        let last = items.len().saturating_sub(1);
        let mut seen: FxHashSet<u32> = FxHashSet::default();
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
            seen.insert(idx);
            match store_history.iter_mut().find(|h| h.0 == idx) {
                Some(h) => h.1 += w * decay,
                None => store_history.push((idx, w * decay)),
            }
        }
        let mut excluded: FxHashSet<u32> =
            q.exclude.iter().filter_map(|k| s.items.get(k)).collect();
        if !q.include_seen {
            excluded.extend(seen.iter().copied());
        }
        let filter = Filter {
            s: &s,
            wanted: s.category_ids(&q.categories),
            excluded,
            unseen_for: None,
        };
        // A blend needs a user's history per model; sessions use the first of its models.
        let choice = match self.resolve(q.model, model.as_deref()) {
            ModelChoice::Auto => match model.as_deref().map(|m| &m.serve) {
                Some(Serve::Blend { models, .. }) if models[0] == "ease" => ModelChoice::Ease,
                Some(Serve::Blend { models, .. }) if models[0] == "knn" => ModelChoice::Knn,
                _ => ModelChoice::Als,
            },
            other => other,
        };
        let mut fallback = None;
        let mut items_out = Vec::new();
        let mut used = "popular";
        let profile = q.context.as_ref().filter(|c| !c.is_empty());
        if let (true, Some(profile), false) = (
            store_history.is_empty(),
            profile,
            choice == ModelChoice::Popular,
        ) {
            match &model {
                None => fallback = Some("no trained model yet: showing popular items".to_owned()),
                Some(m) => {
                    items_out = Self::recommend_profile(&s, m, profile, q.n, &filter);
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
            match &model {
                None => fallback = Some("no trained model yet: showing popular items".to_owned()),
                Some(m) => {
                    let mut history: Vec<(u32, f32)> = store_history
                        .iter()
                        .filter_map(|&(i, w)| m.model_item(i).map(|mi| (mi, w)))
                        .collect();
                    history.sort_unstable_by_key(|h| h.0);
                    // New items of the session (no model rows) count through their content.
                    let extra: Vec<(Vec<f32>, f32)> = store_history
                        .iter()
                        .filter(|(i, _)| m.model_item(*i).is_none())
                        .filter_map(|&(i, w)| Some((m.content.as_ref()?.cold_factors(i)?, w)))
                        .collect();
                    items_out = match choice {
                        ModelChoice::Als => match m.als.session_vector(&history, &extra) {
                            Some(v) => {
                                let top = m.als.top_k(&v.x, q.n, |i| filter.keep_model(m, i));
                                // A session of new items only has no history item to name.
                                let fallback = if extra.is_empty() {
                                    Reason::new(
                                        "als",
                                        "matches the taste this session shows (latent factors)",
                                    )
                                } else {
                                    Reason::new(
                                        "content",
                                        "matches the new items of this session (placed by their content)",
                                    )
                                };
                                let warm = Self::explained(
                                    &s,
                                    m,
                                    top,
                                    "als",
                                    |k| format!("because of {k} in this session"),
                                    Some(fallback),
                                    |idx| m.als.explain(&v, idx),
                                );
                                Self::with_cold_items(
                                    &s,
                                    m,
                                    &v.x,
                                    warm,
                                    q.n,
                                    &filter,
                                    "this session's",
                                )
                            }
                            None => Vec::new(),
                        },
                        ModelChoice::Ease => {
                            self.recommend_ease(&s, m, &history, q.n, &filter, "this session has")
                        }
                        ModelChoice::Bpr => {
                            self.recommend_bpr(&s, m, &history, q.n, &filter, "this session has")
                        }
                        _ => self.recommend_knn(&s, m, &history, q.n, &filter),
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
        self.top_up(&s, &filter, q.n, &mut items_out, fallback, false);
        Recommendations {
            items: items_out,
            personalized: used != "popular",
            model: used,
            model_version: model
                .as_ref()
                .filter(|_| used != "popular")
                .map(|m| m.version),
        }
    }

    fn recommend_als(
        &self,
        s: &State,
        m: &ServingModel,
        user: UserIdx,
        history: &[(u32, f32)],
        n: usize,
        filter: &Filter<'_>,
    ) -> Vec<Recommendation> {
        let Some(vector) = m
            .als
            .user_vector(user.0, self.vector_revision(s, user), history)
        else {
            return Vec::new();
        };
        let top = m.als.top_k(&vector.x, n, |i| filter.keep_model(m, i));
        let warm = Self::explained(
            s,
            m,
            top,
            "als",
            |k| format!("because you interacted with {k}"),
            Some(Reason::new(
                "als",
                "matches the taste your history shows (latent factors)",
            )),
            |idx| m.als.explain(&vector, idx),
        );
        Self::with_cold_items(s, m, &vector.x, warm, n, filter, "your")
    }

    /// Adds the items the model has no factors for, placed by their content (the hybrid
    /// model), to `warm` results for the vector `x`; keeps the best `n`. Their reasons name
    /// the content features that match.
    fn with_cold_items(
        s: &State,
        m: &ServingModel,
        x: &[f32],
        mut out: Vec<Recommendation>,
        n: usize,
        filter: &Filter<'_>,
        whose: &str,
    ) -> Vec<Recommendation> {
        let Some(content) = &m.content else {
            return out;
        };
        let cold = content.score_cold(x, |st| filter.keep(ItemIdx(st)));
        // Most requests find no new item: the model's results stand as they are.
        if cold.is_empty() {
            return out;
        }
        let mut top = bespoke_algo::TopK::new(n);
        for (item, score) in cold {
            top.push(item, score);
        }
        for Scored { idx, score } in top.into_sorted() {
            let reasons = Self::feature_reasons(
                content.explain_cold(idx, x, EXPLAIN_TOP),
                "content",
                |feature| {
                    format!("new item, no interactions yet: its {feature} matches {whose} taste")
                },
                "new item, no interactions yet: placed by its content",
            );
            out.push(Recommendation {
                item: s.item_key(ItemIdx(idx)),
                score,
                reasons,
            });
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        out.truncate(n);
        out
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
    ) -> Vec<Recommendation> {
        let Some(side) = m.content.as_ref().and_then(|c| c.model.users.as_ref()) else {
            return Vec::new();
        };
        let (x, v) = side.project(&crate::models::content::attribute_bag(profile));
        // The bias alone is the average user: not personal, popularity serves that better.
        if x.len() <= 1 {
            return Vec::new();
        }
        let top = m.als.top_k(&v, n, |i| filter.keep_model(m, i));
        let warm = top
            .into_iter()
            .filter_map(|Scored { idx, score }| {
                let item = ItemIdx(m.store_item(idx)?);
                let reasons = Self::feature_reasons(
                    side.top_features(&x, m.als.item_vector(idx), EXPLAIN_TOP),
                    "profile",
                    |feature| format!("popular with users whose profile has {feature}"),
                    "matches users with a similar profile",
                );
                Some(Recommendation {
                    item: s.item_key(item),
                    score,
                    reasons,
                })
            })
            .collect();
        Self::with_cold_items(s, m, &v, warm, n, filter, "this profile's")
    }

    /// EASE: the history's rows of the item–item weights, summed; the reasons are the history
    /// items that contributed most. Empty when this model version has no EASE (catalog larger
    /// than `training.ease_max_items`), and the caller falls back.
    fn recommend_ease(
        &self,
        s: &State,
        m: &ServingModel,
        history: &[(u32, f32)],
        n: usize,
        filter: &Filter<'_>,
        verb: &str,
    ) -> Vec<Recommendation> {
        let Some(ease) = &m.ease else {
            return Vec::new();
        };
        let positive: Vec<(u32, f32)> = history.iter().copied().filter(|h| h.1 > 0.0).collect();
        let mut scores = vec![0.0f32; ease.n_items()];
        let mut top = bespoke_algo::TopK::new(n);
        let top = ease.recommend(
            &positive,
            n,
            |i| filter.keep_model(m, i),
            &mut scores,
            &mut top,
        );
        Self::explained(
            s,
            m,
            top,
            "ease",
            |k| format!("because {verb} {k}"),
            Some(Reason::new("ease", "co-occurs with your history (EASE)")),
            |idx| ease.explain(&positive, idx),
        )
    }

    /// BPR: the history folded in by BPR's own user step; the reasons are the history items
    /// whose factors are closest to the result's.
    fn recommend_bpr(
        &self,
        s: &State,
        m: &ServingModel,
        history: &[(u32, f32)],
        n: usize,
        filter: &Filter<'_>,
        verb: &str,
    ) -> Vec<Recommendation> {
        let Some(bpr) = &m.bpr else {
            return Vec::new();
        };
        let mut positive: Vec<u32> = history.iter().filter(|h| h.1 > 0.0).map(|h| h.0).collect();
        positive.sort_unstable();
        let top = bpr.recommend(
            &positive,
            self.settings.serving.bpr_fold_in_epochs,
            n,
            |i| filter.keep_model(m, i),
        );
        Self::explained(
            s,
            m,
            top,
            "bpr",
            |k| format!("close in BPR's factors to {k}, which {verb}"),
            Some(Reason::new("bpr", "ranked high for this history by BPR")),
            |idx| bpr.explain(&positive, idx),
        )
    }

    fn recommend_knn(
        &self,
        s: &State,
        m: &ServingModel,
        history: &[(u32, f32)],
        n: usize,
        filter: &Filter<'_>,
    ) -> Vec<Recommendation> {
        let positive: Vec<(u32, f32)> = history.iter().copied().filter(|h| h.1 > 0.0).collect();
        let top = m.knn.recommend(&positive, n, |i| filter.keep_model(m, i));
        Self::explained(
            s,
            m,
            top,
            "knn",
            |k| format!("similar to {k}, which you interacted with"),
            None,
            |idx| m.knn.explain(&positive, idx),
        )
    }

    /// Fills `items` up to `n` with popular items `filter` accepts, scored below every model
    /// result, each with a reason: a top-up, the `fallback` message, or (with `unseen_reason`)
    /// that the user has not seen it.
    fn top_up(
        &self,
        s: &State,
        filter: &Filter<'_>,
        n: usize,
        items: &mut Vec<Recommendation>,
        fallback: Option<String>,
        unseen_reason: bool,
    ) {
        if items.len() >= n {
            return;
        }
        let taken: FxHashSet<String> = items.iter().map(|r| r.item.clone()).collect();
        let top_up = !items.is_empty();
        let mut popular = self.popular_for(s, n - items.len(), filter, |i| {
            !taken.contains(&s.item_key(i))
        });
        // Below every model score, so that a top-up never outranks a model result.
        let floor = items.last().map(|r| r.score);
        let max = popular
            .first()
            .map_or(1.0, |r| r.score.max(f32::MIN_POSITIVE));
        for r in &mut popular {
            if let Some(f) = floor {
                r.score = f - 1.0 + 0.999 * r.score / max;
            }
            if top_up {
                r.reasons
                    .push(Reason::new("fallback", "topped up with popular items"));
            } else if let Some(message) = &fallback {
                r.reasons.push(Reason::new("fallback", message.clone()));
            } else if unseen_reason {
                r.reasons.push(Reason::new(
                    "unseen",
                    "you have not interacted with this item yet",
                ));
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
        mut extra: impl FnMut(ItemIdx) -> bool,
    ) -> Vec<Recommendation> {
        let mode = self.settings.serving.recommend_popularity;
        let pop = s.live.popularity();
        let keep = |i: ItemIdx| filter.keep(i) && extra(i);
        let (scored, kind) = match mode {
            PopularityMode::AllTime => (pop.top_all_time(n, keep), "popular"),
            PopularityMode::Trending => (pop.top_trending(n, now_ms(), keep), "trending"),
        };
        scored
            .into_iter()
            .map(|Scored { idx, score }| {
                let item = ItemIdx(idx);
                Recommendation {
                    item: s.item_key(item),
                    score,
                    reasons: vec![s.popular_reason(item, kind, pop.count(item) as u64)],
                }
            })
            .collect()
    }

    /// Items related to `item_key`: from the requested model (item-kNN neighbours, cosine of
    /// iALS factors, or live co-occurrence), topped up with co-occurrence and then with popular
    /// items of its category when there are too few (a cold item has none). `None` when the item
    /// does not exist.
    pub fn similar(
        &self,
        item_key: &str,
        n: usize,
        choice: Option<SimilarChoice>,
    ) -> Option<Vec<Recommendation>> {
        let model = self.model.load_full();
        let s = self.state.read();
        let item = ItemIdx(s.items.get(item_key)?);
        let choice = choice.unwrap_or(self.settings.serving.default_similar_model);
        let mut out: Vec<Recommendation> = Vec::new();
        let mut taken: FxHashSet<u32> = FxHashSet::default();
        let servable = |j: ItemIdx| j != item && s.servable(j);
        if let (Some(m), false) = (&model, choice == SimilarChoice::Cooccurrence)
            && let Some(mi) = m.model_item(item.0)
        {
            let keep = |j: u32| m.store_item(j).is_some_and(|st| servable(ItemIdx(st)));
            let (found, kind, phrase) = match choice {
                SimilarChoice::Als => (
                    m.als.similar(mi, n, keep),
                    "als",
                    "liked by the same kind of users as",
                ),
                _ => (
                    m.knn.neighbours(mi, n, keep),
                    "knn",
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
                    reasons: vec![Reason {
                        item: Some(item_key.to_owned()),
                        weight: Some(score),
                        ..Reason::new(kind, format!("{phrase} {item_key}"))
                    }],
                });
            }
        }
        // An item the model has no factors for yet: its content places it among the items
        // with factors, and its neighbours there are related by content.
        if let (Some(m), true) = (
            &model,
            out.is_empty() && choice != SimilarChoice::Cooccurrence,
        ) && m.model_item(item.0).is_none()
            && let Some(y) = m.content.as_ref().and_then(|c| c.cold_factors(item.0))
        {
            let keep = |j: u32| m.store_item(j).is_some_and(|st| servable(ItemIdx(st)));
            for Scored { idx, score } in m.als.similar_to(&y, n, keep) {
                let Some(st) = m.store_item(idx) else {
                    continue;
                };
                taken.insert(st);
                out.push(Recommendation {
                    item: s.item_key(ItemIdx(st)),
                    score,
                    reasons: vec![Reason {
                        item: Some(item_key.to_owned()),
                        weight: Some(score),
                        ..Reason::new(
                            "content",
                            format!("{item_key} is new: placed by its content next to this item"),
                        )
                    }],
                });
            }
        }
        if out.len() < n {
            let related = s.live.related(
                item,
                n - out.len(),
                self.settings.serving.related_max_users,
                |j| servable(j) && !taken.contains(&j.0),
            );
            let ceiling = out.last().map(|r| r.score * 0.5);
            let max = related
                .first()
                .map_or(1.0, |r| r.score.max(f32::MIN_POSITIVE));
            for r in related {
                taken.insert(r.item.0);
                let mut reasons = vec![Reason {
                    item: Some(item_key.to_owned()),
                    count: Some(r.co_users as u64),
                    ..Reason::new(
                        "co_occurrence",
                        format!(
                            "{} {} who interacted with {item_key} also interacted with this",
                            r.co_users,
                            if r.co_users == 1 { "user" } else { "users" }
                        ),
                    )
                }];
                if choice != SimilarChoice::Cooccurrence {
                    reasons.push(Reason::new(
                        "fallback",
                        "the model does not know this item well enough yet",
                    ));
                }
                out.push(Recommendation {
                    item: s.item_key(r.item),
                    score: ceiling.map_or(r.score, |c| c * r.score / max),
                    reasons,
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
                servable(j) && !taken.contains(&j.0) && s.in_categories(j, &cats)
            });
            // Scaled below the weakest match, so real matches always rank first.
            let ceiling = out.last().map_or(1.0, |r| r.score * 0.5);
            let max_pop = fill.first().map_or(1.0, |f| f.score.max(f32::MIN_POSITIVE));
            for f in fill {
                let i = ItemIdx(f.idx);
                out.push(Recommendation {
                    item: s.item_key(i),
                    score: ceiling * f.score / max_pop,
                    reasons: vec![
                        s.popular_reason(i, "popular", s.live.popularity().count(i) as u64),
                        Reason {
                            item: Some(item_key.to_owned()),
                            ..Reason::new("fallback", message)
                        },
                    ],
                });
            }
        }
        Some(out)
    }

    /// The most popular items, all-time, within a window, or trending.
    pub fn popular(&self, q: &PopularQuery) -> Vec<Recommendation> {
        let s = self.state.read();
        let wanted = s.category_ids(&q.categories);
        let keep = |i: ItemIdx| s.servable(i) && s.in_categories(i, &wanted);
        let pop = s.live.popularity();
        let now = now_ms();
        let (scored, kind) = match (q.sort, q.window) {
            (PopularSort::Trending, _) => (pop.top_trending(q.n, now, keep), "trending"),
            (PopularSort::Count, Some(w)) => (pop.top_since(q.n, now - w, keep), "popular"),
            (PopularSort::Count, None) => (pop.top_all_time(q.n, keep), "popular"),
        };
        scored
            .into_iter()
            .map(|Scored { idx, score }| {
                let item = ItemIdx(idx);
                let mut reason = s.popular_reason(item, kind, pop.count(item) as u64);
                if let (PopularSort::Count, Some(w)) = (q.sort, q.window) {
                    reason
                        .message
                        .push_str(&format!(" in the last {}", describe_window(w)));
                    reason.count = None;
                }
                Recommendation {
                    item: s.item_key(item),
                    score,
                    reasons: vec![reason],
                }
            })
            .collect()
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
