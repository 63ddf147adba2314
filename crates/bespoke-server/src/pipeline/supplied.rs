//! The caller-supplied candidate source (`POST /v1/users/{key}/rank`): every supplied item is
//! scored for the user by one model (the first of a tuned blend, as for sessions) and returned,
//! best first. Items the model has no row for are scored by the content model when the catalog
//! has their content; the rest come last, flagged `unknown`.

use bespoke_algo::{ItemIdx, UserIdx};
use serde::Serialize;
use serde_json::{Map, Value};

use super::candidates::{bpr_terms, history_reason, history_term, model_name, popularity_terms};
use super::explain::{Contribution, Feature};
use super::{NeedsAttributes, RankRequest, Reason, rerank};
use crate::engine::{Engine, Recommendation, State};
use crate::models::ServingModel;
use crate::settings::ModelChoice;

/// One supplied item, ranked.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
}

/// How the candidates were scored, before falling back to popularity.
enum Scorer {
    /// A vector in iALS's space: a user's or a session's, or a profile placed by content.
    Als(std::sync::Arc<bespoke_algo::UserVector>, bool),
    /// A profile projected by the content model into iALS's space.
    Profile(Vec<(u32, f32)>, Vec<f32>),
    /// Item-kNN or EASE over a positive history.
    Items(&'static str, Vec<(u32, f32)>),
    /// BPR's folded-in vector and the sorted positive history.
    Bpr(Vec<f32>, Vec<u32>),
}

impl Engine {
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
                            // iALS explains every candidate in one blocked solve rather
                            // than one triangular solve each (the bulk of the route's time).
                            let mut batch = match &scorer {
                                Scorer::Als(v, _) => {
                                    let rows: Vec<u32> =
                                        ids.iter().filter_map(|id| m.model_item((*id)?)).collect();
                                    m.als.explain_many(v, &rows).into_iter()
                                }
                                _ => Vec::new().into_iter(),
                            };
                            let items = ids
                                .iter()
                                .map(|id| {
                                    let idx = (*id)?;
                                    let parts = m.model_item(idx).and_then(|_| batch.next());
                                    Self::score_supplied(&s, m, &scorer, idx, parts, full)
                                })
                                .collect();
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
        let mut known: Vec<Recommendation> = known.into_iter().map(|(_, r)| r).collect();
        let cx = rerank::Context { s: &s, m };
        let n = known.len();
        for r in rerank::for_request(req) {
            r.rerank(&cx, &mut known, n);
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
        let name = match choice {
            ModelChoice::Ease => "ease",
            ModelChoice::Knn | ModelChoice::Bpr => "knn",
            _ => "als",
        };
        let own = personal.filter(|u| !s.live.history(*u).is_empty());
        let (rows, extra) = match own {
            Some(u) => (self.model_history(s, m, u, name), Vec::new()),
            None => Self::split_history(m, &self.session_history(s, history)),
        };
        let positive: Vec<(u32, f32)> = rows.iter().copied().filter(|h| h.1 > 0.0).collect();
        let scorer = match choice {
            _ if rows.is_empty() && extra.is_empty() => None,
            ModelChoice::Knn => Some(Scorer::Items("knn", positive)),
            ModelChoice::Ease if m.ease.is_some() => Some(Scorer::Items("ease", positive)),
            ModelChoice::Ease => None,
            ModelChoice::Bpr => m.bpr.as_ref().and_then(|b| {
                let mut p: Vec<u32> = positive.iter().map(|h| h.0).collect();
                p.sort_unstable();
                let v = b.fold_in(&p, self.settings.serving.bpr_fold_in_epochs)?;
                Some(Scorer::Bpr(v, p))
            }),
            _ => {
                let v = match own {
                    Some(u) => m.als.user_vector(u.0, self.vector_revision(s, u), &rows),
                    None => m.als.session_vector(&rows, &extra).map(std::sync::Arc::new),
                };
                v.map(|v| Scorer::Als(v, !extra.is_empty()))
            }
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

    /// One supplied item (store id `idx`) scored by `scorer`; `None` when it cannot be.
    /// `parts` are its iALS contributions when they were computed with the others'.
    fn score_supplied(
        s: &State,
        m: &ServingModel,
        scorer: &Scorer,
        idx: u32,
        parts: Option<Vec<(u32, f32)>>,
        full: bool,
    ) -> Option<Recommendation> {
        let Some(mi) = m.model_item(idx) else {
            // No row: placed by its content in iALS's space, when it has content.
            let content = m.content.as_ref()?;
            let x: &[f32] = match scorer {
                Scorer::Als(v, _) => &v.x,
                Scorer::Profile(_, v) => v,
                _ => return None,
            };
            let y = content.cold_factors(idx)?;
            let score = bespoke_algo::simd::dot(x, &y);
            return Some(Self::cold_item(s, content, idx, score, x, "this", full));
        };
        let one = |score: f32, reasons: Vec<Reason>, contributions: Vec<Contribution>| {
            Some(Recommendation {
                item: s.item_key(ItemIdx(idx)),
                score,
                reasons,
                contributions,
            })
        };
        let with_fallback = |mut reasons: Vec<Reason>, fallback: Reason| {
            if reasons.is_empty() {
                reasons.push(fallback);
            }
            reasons
        };
        match scorer {
            Scorer::Als(v, has_extra) => {
                let score = bespoke_algo::simd::dot(&v.x, m.als.item_vector(mi));
                let parts = parts.unwrap_or_else(|| m.als.explain(v, mi));
                let mut terms = if full {
                    Self::item_terms(s, m, &parts, "history_item")
                } else {
                    Vec::new()
                };
                if full && *has_extra {
                    let sum: f32 = terms.iter().map(|c| c.value).sum();
                    terms.push(Contribution::new("session_content", score - sum));
                }
                let reasons = Self::contribution_reasons(s, m, parts, Reason::Als, |k| {
                    format!("because of {k} in this history")
                });
                let reasons = with_fallback(
                    reasons,
                    Reason::Als(Reason::history(
                        "matches the taste this history shows (latent factors)",
                    )),
                );
                one(score, reasons, terms)
            }
            Scorer::Profile(x, v) => {
                let side = m.content.as_ref()?.model.users.as_ref()?;
                let y = m.als.item_vector(mi);
                let score = bespoke_algo::simd::dot(v, y);
                let reasons = side
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
                let reasons = with_fallback(
                    reasons,
                    Reason::Profile(Reason::feature("matches users with a similar profile")),
                );
                let terms = if full {
                    side.all_features(x, y)
                        .into_iter()
                        .map(|(f, w)| Contribution::of_feature("feature", f, w))
                        .collect()
                } else {
                    Vec::new()
                };
                one(score, reasons, terms)
            }
            Scorer::Items(name, positive) => {
                let parts = match *name {
                    "ease" => m.ease.as_ref()?.explain(positive, mi),
                    _ => m.knn.explain(positive, mi),
                };
                let score: f32 = parts.iter().map(|p| p.1).sum();
                let terms = if full {
                    Self::item_terms(s, m, &parts, history_term(name))
                } else {
                    Vec::new()
                };
                let reasons = Self::contribution_reasons(s, m, parts, history_reason(name), |k| {
                    format!("related to {k} in this history")
                });
                let reasons = with_fallback(
                    reasons,
                    history_reason(name)(Reason::history(
                        "no item of this history is related to it",
                    )),
                );
                one(score, reasons, terms)
            }
            Scorer::Bpr(v, positive) => {
                let bpr = m.bpr.as_ref()?;
                let row = bpr.item_row(mi);
                let score = bespoke_algo::simd::dot(v, row);
                let scoring_terms = if full {
                    bpr_terms(Some(v), row)
                } else {
                    Vec::new()
                };
                let reasons =
                    Self::contribution_reasons(s, m, bpr.explain(positive, mi), Reason::Bpr, |k| {
                        format!("close in BPR's factors to {k}, in this history")
                    });
                let reasons = with_fallback(
                    reasons,
                    Reason::Bpr(Reason::history("ranked for this history by BPR")),
                );
                one(score, reasons, scoring_terms)
            }
        }
    }
}
