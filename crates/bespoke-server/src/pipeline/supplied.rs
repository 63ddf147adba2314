//! The caller-supplied candidate source (`POST /v1/users/{key}/rank`): every supplied item is
//! scored for the user by one model (the first of a tuned blend, as for sessions) and returned,
//! best first. Items the model has no row for are scored by the content model when the catalog
//! has their content; the rest come last, flagged `unknown`.

use bespoke_algo::{ItemIdx, ModelKind, UserIdx, UserVector};
use serde::Serialize;
use serde_json::{Map, Value};

use super::Recommendation;
use super::candidates::{history_model, history_reason, model_name, popularity_terms};
use super::explain::{Contribution, Feature};
use super::rules::{self, Filtered};
use super::{NeedsAttributes, RankRequest, Reason, rerank};
use crate::models::ServingModel;
use crate::models::model::Prepared;
use crate::rules::spec::Route;
use crate::settings::ModelChoice;
use crate::state::{Serving, State};

/// One supplied item, ranked.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RankedItem {
    /// Item key, as supplied.
    pub item: String,
    /// Score (higher is better); `null` for an unknown item.
    pub score: Option<f32>,
    /// Nothing scores it: not in the catalog, or no events and no content to place it by.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
    /// Why it is where it is.
    pub reasons: Vec<Reason>,
    /// The terms of its score (`explain=full`), summing to it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contributions: Vec<Contribution>,
}

/// The supplied items, ranked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// Every supplied item: scored ones best first, then the unknown ones in the order given.
    pub items: Vec<RankedItem>,
    /// Whether the user's (or the request's) history shaped the order.
    pub personalized: bool,
    /// The model that scored them.
    pub model: &'static str,
    /// The trained model version, when one was used.
    pub model_version: Option<u64>,
    /// The business rules that applied.
    pub rules: Vec<String>,
    /// Supplied items the rules filtered out, and which rule.
    pub filtered: Vec<Filtered>,
}

/// How the candidates were scored, before falling back to popularity.
enum Scorer {
    /// A model over the history it prepared (iALS: a user's or a session's vector, the flag
    /// set when the session's new items, placed by content, shaped it).
    Model(ModelKind, Prepared, bool),
    /// A profile projected by the content model into iALS's space.
    Profile(Vec<(u32, f32)>, Vec<f32>),
}

impl Serving {
    /// Ranks `candidates` for the user `user_key`. A user never seen (or one without history)
    /// is ranked by `history` (item keys and weights, oldest first, as a session). `Err` when a
    /// known user without history must be placed by their stored `attributes`.
    pub fn rank_supplied(
        &self,
        user_key: &str,
        candidates: &[String],
        history: &[(String, f32)],
        req: &RankRequest,
        attributes: Option<&Map<String, Value>>,
    ) -> Result<Ranked, NeedsAttributes> {
        let model = self.model.load_full();
        let s = self.state.read();
        let m = model.as_deref();
        let full = req.explain.full();
        let user = s.users.get(&self.user_keys.to_store(user_key)).map(UserIdx);
        let personal =
            user.filter(|u| s.personalization.get(u.0 as usize).copied().unwrap_or(true));
        let ids: Vec<Option<u32>> = candidates.iter().map(|k| s.items.get(k)).collect();
        let choice = self.resolve_session(req.model, m);
        let mut fallback = match (user, personal) {
            (Some(_), None) => {
                Some("personalization is off for this user: ranked by popularity".to_owned())
            }
            _ => None,
        };
        let mut scored: Option<(Vec<Option<Recommendation>>, &'static str)> = None;
        if user.is_none() || personal.is_some() {
            match (m, choice) {
                (_, ModelChoice::Popular) => {}
                (None, _) => {
                    fallback = Some("no trained model yet: ranked by popularity".to_owned());
                }
                (Some(m), _) => {
                    let scorer =
                        self.supplied_scorer(&s, m, personal, history, req, choice, attributes)?;
                    match scorer {
                        Some(scorer) => {
                            let used = match &scorer {
                                Scorer::Profile(..) => "content",
                                _ => model_name(choice),
                            };
                            let items = Self::score_supplied(&s, m, &scorer, &ids, full);
                            scored = Some((items, used));
                        }
                        None => {
                            fallback = Some(format!(
                                "the {} model knows nothing of this history: ranked by popularity",
                                model_name(choice)
                            ));
                        }
                    }
                }
            }
        }
        let (items, used) = scored.unwrap_or_else(|| {
            let pop = s.live.popularity();
            let items = ids
                .iter()
                .map(|id| {
                    let item = ItemIdx((*id)?);
                    let score = pop.total(item) as f32;
                    let mut reasons = vec![s.popular_reason(item, false, pop.count(item) as u64)];
                    if let Some(f) = &fallback {
                        reasons.push(Reason::fallback(f.clone()));
                    }
                    Some(Recommendation {
                        item: s.item_key(item),
                        score,
                        reasons,
                        contributions: popularity_terms(full, score),
                    })
                })
                .collect();
            (items, "popular")
        });
        // Scored first, best first; ties keep the order given.
        let mut known: Vec<(usize, Recommendation)> = Vec::with_capacity(items.len());
        let mut unknown: Vec<usize> = Vec::new();
        for (k, r) in items.into_iter().enumerate() {
            match r {
                Some(r) => known.push((k, r)),
                None => unknown.push(k),
            }
        }
        known.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
        let known: Vec<Recommendation> = known.into_iter().map(|(_, r)| r).collect();
        // The business rules: supplied items they filter out are listed, not returned.
        let plan = self.plan(&s, Route::Rank, req, user);
        let (mut known, mut filtered) = plan.split(&s, known);
        plan.boost(&s, &mut known, full);
        let n = known.len();
        plan.cap(&s, &mut known, n, &mut filtered);
        let cx = rerank::Context {
            s: &s,
            m,
            plan: &plan,
            profile: user
                .filter(|u| s.personalization.get(u.0 as usize).copied().unwrap_or(true))
                .map_or_else(Vec::new, |u| {
                    s.live
                        .history(u)
                        .iter()
                        .map(|x| (x.item.0, x.weight))
                        .collect()
                }),
        };
        let n = known.len();
        let mut rerankers = rerank::for_request(req, &plan);
        rerankers.extend(super::fairness::for_request(
            self,
            &s,
            req,
            plan.protected.is_some(),
        ));
        for r in rerankers {
            r.rerank(&cx, &mut known, n);
        }
        for p in plan.promotions.iter().filter(|p| p.slot <= n) {
            let above: Vec<String> = known
                .iter()
                .take(p.slot - 1)
                .map(|r| r.item.clone())
                .collect();
            let candidates: Vec<Recommendation> = known
                .iter()
                .filter(|r| {
                    !above.contains(&r.item)
                        && s.items
                            .get(&r.item)
                            .is_some_and(|i| p.when.eval(&s.columns, i))
                })
                .cloned()
                .collect();
            rules::promote(&mut known, p, candidates, n);
        }
        let mut out: Vec<RankedItem> = known
            .into_iter()
            .map(|r| RankedItem {
                item: r.item,
                score: Some(r.score),
                unknown: false,
                reasons: r.reasons,
                contributions: r.contributions,
            })
            .collect();
        for k in unknown {
            let message = if ids[k].is_some() {
                "no events and no content to place it by: ranked last"
            } else {
                "not in the catalog: ranked last"
            };
            out.push(RankedItem {
                item: candidates[k].clone(),
                score: None,
                unknown: true,
                reasons: vec![Reason::ColdStart {
                    message: message.into(),
                }],
                contributions: Vec::new(),
            });
        }
        Ok(Ranked {
            items: out,
            personalized: used != "popular",
            model: used,
            model_version: m.filter(|_| used != "popular").map(|m| m.version),
            rules: plan.applied,
            filtered,
        })
    }

    /// What scores the candidates: the user's history (or the request's, for a user never
    /// seen or without history) under `choice`, else their profile through the content model.
    /// `None` when nothing personal is known.
    #[allow(clippy::too_many_arguments)]
    fn supplied_scorer(
        &self,
        s: &State,
        m: &ServingModel,
        personal: Option<UserIdx>,
        history: &[(String, f32)],
        req: &RankRequest,
        choice: ModelChoice,
        attributes: Option<&Map<String, Value>>,
    ) -> Result<Option<Scorer>, NeedsAttributes> {
        let name = history_model(choice);
        let own = personal.filter(|u| !s.live.history(*u).is_empty());
        let (rows, extra) = match own {
            Some(u) => (self.model_history(s, m, u, name), Vec::new()),
            None => Self::split_history(m, &self.session_history(s, history)),
        };
        let scorer = match choice.kind() {
            _ if rows.is_empty() && extra.is_empty() => None,
            // iALS: the user's cached vector, or the session's with its new items.
            None | Some(ModelKind::Als) => {
                let v = match own {
                    Some(u) => m.als.user_vector(u.0, self.vector_revision(s, u), &rows),
                    None => m.als.session_vector(&rows, &extra).map(std::sync::Arc::new),
                };
                v.map(|v| Scorer::Model(ModelKind::Als, Prepared::shared(v), !extra.is_empty()))
            }
            Some(kind) => m
                .scorer(kind)
                .and_then(|sc| sc.prepare(&rows, &self.settings.serving))
                .map(|p| Scorer::Model(kind, p, false)),
        };
        if scorer.is_some() || !(rows.is_empty() && extra.is_empty()) {
            return Ok(scorer);
        }
        // Nothing of a history: the profile (stored attributes and the context).
        let mut profile = match (personal, attributes) {
            (Some(_), Some(a)) => a.clone(),
            (Some(_), None) => return Err(NeedsAttributes),
            (None, _) => Map::new(),
        };
        profile.extend(req.context.clone().unwrap_or_default());
        let Some(side) = m.content.as_ref().and_then(|c| c.model.users.as_ref()) else {
            return Ok(None);
        };
        let (x, v) = side.project(&crate::models::content::attribute_bag(&profile));
        Ok((x.len() > 1).then_some(Scorer::Profile(x, v)))
    }

    /// The supplied items (store ids, `None` for keys not in the catalog) scored and explained
    /// by `scorer`, in order; `None` for an item that cannot be scored. The model scores and
    /// explains all its rows at once (iALS in one blocked solve).
    fn score_supplied(
        s: &State,
        m: &ServingModel,
        scorer: &Scorer,
        ids: &[Option<u32>],
        full: bool,
    ) -> Vec<Option<Recommendation>> {
        let (kind, prepared, has_extra) = match scorer {
            Scorer::Profile(x, v) => {
                return (ids.iter())
                    .map(|id| Self::score_profile(s, m, x, v, (*id)?, full))
                    .collect();
            }
            Scorer::Model(kind, prepared, has_extra) => (*kind, prepared, *has_extra),
        };
        let Some(sc) = m.scorer(kind) else {
            return ids.iter().map(|_| None).collect();
        };
        let rows: Vec<u32> = ids.iter().filter_map(|id| m.model_item((*id)?)).collect();
        let scores = sc.score_prepared(prepared, &rows);
        let mut warm = scores
            .into_iter()
            .zip(sc.explain_prepared(prepared, &rows, full));
        // Items without a row are placed by their content in iALS's space.
        let x = prepared.get::<UserVector>().map(|v| &v.x[..]);
        let name = kind.name();
        let (message, fallback): (fn(&str) -> String, &str) = match kind {
            ModelKind::Als => (
                |k| format!("because of {k} in this history"),
                "matches the taste this history shows (latent factors)",
            ),
            ModelKind::Bpr => (
                |k| format!("close in BPR's factors to {k}, in this history"),
                "ranked for this history by BPR",
            ),
            _ => (
                |k| format!("related to {k} in this history"),
                "no item of this history is related to it",
            ),
        };
        (ids.iter())
            .map(|id| {
                let idx = (*id)?;
                if m.model_item(idx).is_none() {
                    let content = m.content.as_ref()?;
                    let x = x?;
                    let y = content.cold_factors(idx)?;
                    let score = bespoke_algo::simd::dot(x, &y);
                    return Some(Self::cold_item(s, content, idx, score, x, "this", full));
                }
                let (score, e) = warm.next()?;
                let mut terms = if full {
                    Self::model_terms(s, m, sc, e.terms)
                } else {
                    Vec::new()
                };
                // The session's new items shape the vector too: their part is what the history
                // items leave of the score.
                if full && has_extra {
                    let sum: f32 = terms.iter().map(|c| c.value).sum();
                    terms.push(Contribution::new("session_content", score - sum));
                }
                let make = history_reason(name);
                let mut reasons = Self::contribution_reasons(s, m, e.because, make, message);
                if reasons.is_empty() {
                    reasons.push(make(Reason::history(fallback)));
                }
                Some(Recommendation {
                    item: s.item_key(ItemIdx(idx)),
                    score,
                    reasons,
                    contributions: terms,
                })
            })
            .collect()
    }

    /// One supplied item (store id `idx`) scored for a profile placed by the content model;
    /// `None` when it cannot be.
    fn score_profile(
        s: &State,
        m: &ServingModel,
        x: &[(u32, f32)],
        v: &[f32],
        idx: u32,
        full: bool,
    ) -> Option<Recommendation> {
        let content = m.content.as_ref()?;
        let Some(mi) = m.model_item(idx) else {
            // No row: placed by its content in iALS's space, when it has content.
            let y = content.cold_factors(idx)?;
            let score = bespoke_algo::simd::dot(v, &y);
            return Some(Self::cold_item(s, content, idx, score, v, "this", full));
        };
        let side = content.model.users.as_ref()?;
        let y = m.als.item_vector(mi);
        let score = bespoke_algo::simd::dot(v, y);
        let mut reasons: Vec<Reason> = side
            .top_features(x, y, 3)
            .into_iter()
            .map(|(feature, w)| {
                Reason::Profile(Feature {
                    message: format!("popular with users whose profile has {feature}"),
                    item: None,
                    feature: Some(feature),
                    weight: Some(w),
                })
            })
            .collect();
        if reasons.is_empty() {
            reasons.push(Reason::Profile(Reason::feature(
                "matches users with a similar profile",
            )));
        }
        let contributions = if full {
            side.all_features(x, y)
                .into_iter()
                .map(|(f, w)| Contribution::of_feature("feature", f, w))
                .collect()
        } else {
            Vec::new()
        };
        Some(Recommendation {
            item: s.item_key(ItemIdx(idx)),
            score,
            reasons,
            contributions,
        })
    }
}
