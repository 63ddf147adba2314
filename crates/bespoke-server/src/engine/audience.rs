//! Audiences: the users most likely to respond to an item, a set of items, a category or an
//! item expression (`POST /v1/audiences/query`). The other direction of recommendation: the
//! query's items become one vector (the mean of their iALS factors) scored against every
//! trained user vector, so 100k users cost one pass of dot products.
//!
//! Only users who allow it are scored: not those who objected to marketing
//! (`consent.marketing`), turned personalization off, or withheld their data from training
//! (their trained rows no longer speak for them), nor deleted ones.

use bespoke_algo::{ItemIdx, TopK, UserIdx};
use serde::Serialize;

use super::Engine;
use crate::pipeline::explain::History;
use crate::pipeline::{RankRequest, Reason};

/// Most items one query may name.
pub const MAX_AUDIENCE_ITEMS: usize = 500;

/// What an audience is for.
#[derive(Debug, Clone, Default)]
pub struct AudienceQuery {
    /// Item keys (at most [`MAX_AUDIENCE_ITEMS`]).
    pub items: Vec<String>,
    /// Every item of this category.
    pub category: Option<String>,
    /// Every item this rule expression matches (`docs/rules.md`).
    pub filter: Option<String>,
    /// How many users to return.
    pub n: usize,
    /// Count the users scoring at least this (the audience's size at that threshold).
    pub threshold: Option<f32>,
}

/// One user of an audience.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AudienceUser {
    /// The user's key as stored (pseudonymous when `privacy.pseudonymize` is on).
    pub user: String,
    /// Predicted affinity: the user's factors against the query's mean item vector.
    pub score: f32,
    /// Why: the query item the user is most drawn to.
    pub reasons: Vec<Reason>,
}

/// Users left out, by why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = AudienceExcluded)]
pub struct Excluded {
    /// Objected to marketing.
    pub marketing: usize,
    /// Turned personalization off.
    pub personalization: usize,
    /// Withheld their data from training.
    pub training: usize,
}

/// The audience's size at a threshold.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = AudienceSize)]
pub struct Size {
    /// The threshold asked for.
    pub threshold: f32,
    /// Users scoring at least that.
    pub users: usize,
}

/// An audience.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Audience {
    /// The best users, best first.
    pub users: Vec<AudienceUser>,
    /// With a threshold: how many users reach it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// Items of the query the model knows (their mean vector was scored).
    pub items_matched: usize,
    /// Users scored.
    pub scored_users: usize,
    /// Users left out.
    pub excluded: Excluded,
    /// The model version whose user vectors were scored.
    pub model_version: u64,
}

/// Why an audience cannot be formed.
#[derive(Debug, thiserror::Error)]
pub enum AudienceError {
    /// No trained model yet.
    #[error("no trained model yet: audiences score the trained user vectors")]
    NoModel,
    /// The query matches no item the model knows.
    #[error("{0}")]
    NoItems(String),
    /// A field is wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Engine {
    /// The users most drawn to the query's items (see the module docs).
    pub fn audience(&self, q: &AudienceQuery) -> Result<Audience, AudienceError> {
        let model = self
            .serving
            .model
            .load_full()
            .ok_or(AudienceError::NoModel)?;
        let serving = &self.serving;
        let s = serving.state.read();
        let invalid = |field: &str, message: String| AudienceError::Invalid {
            field: field.into(),
            message,
        };
        // The query's store items.
        let mut items: Vec<u32> = Vec::new();
        for (k, key) in q.items.iter().enumerate() {
            let id = s
                .items
                .get(key)
                .filter(|i| !s.deleted_items.contains(i))
                .ok_or_else(|| invalid(&format!("items[{k}]"), format!("no item {key:?}")))?;
            items.push(id);
        }
        if let Some(c) = &q.category {
            let wanted = s.category_ids(std::slice::from_ref(c));
            let before = items.len();
            items.extend(
                (0..s.items.id_bound() as u32)
                    .filter(|&i| s.servable(ItemIdx(i)) && s.in_categories(ItemIdx(i), &wanted)),
            );
            if items.len() == before {
                return Err(invalid("category", format!("no item is in category {c:?}")));
            }
        }
        if let Some(src) = &q.filter {
            let pred = serving
                .bind(&s, src, &RankRequest::default())
                .map_err(|e| invalid("filter", e.to_string()))?;
            let before = items.len();
            items.extend(
                (0..s.items.id_bound() as u32)
                    .filter(|&i| s.servable(ItemIdx(i)) && pred.eval(&s.columns, i)),
            );
            if items.len() == before {
                return Err(invalid("filter", format!("{src:?} matches no item")));
            }
        }
        items.sort_unstable();
        items.dedup();
        let rows: Vec<(u32, u32)> = items
            .iter()
            .filter_map(|&i| Some((i, model.model_item(i)?)))
            .collect();
        if rows.is_empty() {
            return Err(AudienceError::NoItems(
                "none of the query's items has events the served model learned from".into(),
            ));
        }
        let als = &model.als;
        let dim = als.dim();
        let mut mean = vec![0f32; dim];
        for &(_, r) in &rows {
            for (m, y) in mean.iter_mut().zip(als.item_vector(r)) {
                *m += y;
            }
        }
        let inv = 1.0 / rows.len() as f32;
        mean.iter_mut().for_each(|m| *m *= inv);
        let factors = als.user_factors();
        let n = q.n.max(1);
        let mut top = TopK::new(n);
        let mut excluded = Excluded::default();
        let (mut scored, mut reached) = (0usize, 0usize);
        for (row, store) in model.user_store_ids().enumerate() {
            let Some(u) = store else { continue };
            if s.deleted_users.contains(&u) {
                continue;
            }
            if s.no_marketing.contains(&u) {
                excluded.marketing += 1;
                continue;
            }
            if !s.personalization.get(u as usize).copied().unwrap_or(true) {
                excluded.personalization += 1;
                continue;
            }
            if s.live.is_private(UserIdx(u)) {
                excluded.training += 1;
                continue;
            }
            let score = bespoke_algo::simd::dot(factors.row(row), &mean);
            scored += 1;
            if q.threshold.is_some_and(|t| score >= t) {
                reached += 1;
            }
            top.push(row as u32, score);
        }
        // Keys and item names under the lock; the reasons' dot products after it, so that a
        // large audience never holds up ingestion (and every request waiting behind it).
        let rows_by_user: Vec<Option<u32>> = model.user_store_ids().collect();
        let chosen: Vec<(u32, f32, String)> = top
            .drain_sorted()
            .into_iter()
            .filter_map(|t| {
                let store = rows_by_user[t.idx as usize]?;
                Some((t.idx, t.score, s.users.key(store)?.to_owned()))
            })
            .collect();
        let named: Vec<(String, u32)> = rows
            .iter()
            .take(MAX_AUDIENCE_ITEMS)
            .map(|&(item, r)| (s.item_key(ItemIdx(item)), r))
            .collect();
        drop(s);
        let users = chosen
            .into_iter()
            .map(|(row, score, key)| {
                let x = factors.row(row as usize);
                let best = named
                    .iter()
                    .map(|(name, r)| (name, bespoke_algo::simd::dot(x, als.item_vector(*r))))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                let reasons = best
                    .map(|(name, w)| {
                        vec![Reason::Als(History {
                            message: if rows.len() == 1 {
                                format!("predicted affinity {w:.3} for {name}")
                            } else {
                                format!(
                                    "mean predicted affinity over {} items; highest for {name} ({w:.3})",
                                    rows.len()
                                )
                            },
                            item: Some(name.clone()),
                            weight: Some(w),
                        })]
                    })
                    .unwrap_or_default();
                AudienceUser {
                    user: key,
                    score,
                    reasons,
                }
            })
            .collect();
        Ok(Audience {
            users,
            size: q.threshold.map(|threshold| Size {
                threshold,
                users: reached,
            }),
            items_matched: rows.len(),
            scored_users: scored,
            excluded,
            model_version: model.version,
        })
    }
}
