//! The fairness report on the live model (`GET /v1/reports/fairness`, `bespoke fairness
//! --live`): every user with a history is ranked through the serving pipeline, as they would
//! be answered (with the re-rankers the request asks for), and the lists are measured by
//! `bespoke_algo::fairness::report`.

use bespoke_algo::fairness::{self, Groups, Report, ReportInput, UserCase};
use bespoke_algo::{ItemIdx, UserIdx};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde_json::Value;

use super::Engine;
use crate::pipeline::{RankRequest, Source};

/// What to measure.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// User attributes to compare groups by (accuracy needs held-out data, so on the live
    /// model these group popularity lift and miscalibration only through `notes`).
    pub user_attributes: Vec<String>,
    /// Item attributes whose groups' exposure is compared (`category` for categories).
    pub item_attributes: Vec<String>,
    /// Rank at most this many users (a seeded sample), all when `None`.
    pub max_users: Option<usize>,
    /// Seed of the sample and the bootstrap.
    pub seed: u64,
}

/// A user to rank: store id, store key, profile (dense item, weight).
type Ranked = (u32, String, Vec<(u32, f64)>);

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A group attribute nobody has.
    #[error("no {what} has the attribute {name:?}")]
    UnknownAttribute {
        /// `user` or `item`.
        what: &'static str,
        /// The attribute.
        name: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] bespoke_store::Error),
}

/// The report with what it was made from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = FairnessReport)]
pub struct LiveReport {
    /// The model version the lists came from, if one is served.
    pub model_version: Option<u64>,
    /// The measures.
    #[serde(flatten)]
    pub report: Report,
}

/// A group's name from an attribute's JSON value: strings as they are, anything else as JSON.
fn group_name(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl Engine {
    /// Ranks every user with a history through the pipeline (`req`, its `n` the list length)
    /// and measures the lists.
    pub fn fairness_report(
        &self,
        req: &RankRequest,
        opts: &ReportOptions,
    ) -> Result<LiveReport, ReportError> {
        let serving = &self.serving;
        let model_version = serving.model.load().as_ref().map(|m| m.version);
        // Users with a history and the catalog as of now, items renumbered densely (store ids
        // have holes where items were deleted, which are not part of the catalog).
        let (mut users, dense, popularity, categories, category_names) = {
            let s = serving.state.read();
            let mut dense: Vec<Option<u32>> = vec![None; s.items.id_bound()];
            let mut live: Vec<u32> = s
                .items
                .iter()
                .map(|(i, _)| i)
                .filter(|i| !s.deleted_items.contains(i))
                .collect();
            live.sort_unstable();
            for (d, &i) in live.iter().enumerate() {
                dense[i as usize] = Some(d as u32);
            }
            let users: Vec<Ranked> = s
                .users
                .iter()
                .filter_map(|(u, key)| {
                    let h = s.live.history(UserIdx(u));
                    (!h.is_empty()).then(|| {
                        let profile = h
                            .iter()
                            .filter(|x| x.weight > 0.0)
                            .filter_map(|x| {
                                Some((dense.get(x.item.0 as usize).copied()??, f64::from(x.weight)))
                            })
                            .collect();
                        (u, key.to_owned(), profile)
                    })
                })
                .collect();
            let all = crate::pipeline::item_popularity(&s);
            let popularity: Vec<f64> = live.iter().map(|&i| all[i as usize]).collect();
            let categories: Vec<Vec<u32>> = live
                .iter()
                .map(|&i| {
                    s.meta(ItemIdx(i))
                        .map_or_else(Vec::new, |m| m.categories.clone())
                })
                .collect();
            let names: Vec<String> = (0..s.categories.id_bound() as u32)
                .map(|c| s.categories.key(c).unwrap_or("").to_owned())
                .collect();
            (users, dense, popularity, categories, names)
        };
        let n_items = popularity.len();
        if let Some(max) = opts.max_users
            && users.len() > max
        {
            let mut rng = bespoke_algo::Rng::seed_from_u64(opts.seed);
            // A partial Fisher–Yates shuffle, then id order for determinism downstream.
            for i in 0..max {
                let j = i + rng.below((users.len() - i) as u64) as usize;
                users.swap(i, j);
            }
            users.truncate(max);
            users.sort_by_key(|u| u.0);
        }
        let req = RankRequest {
            stored_key: true,
            ..req.clone()
        };
        let cases: Vec<UserCase> = users
            .par_iter()
            .map(|(_, key, profile)| {
                let source = Source::User {
                    key,
                    attributes: None,
                };
                let list = match serving.rank(source, &req) {
                    Ok(Some(out)) => {
                        let s = serving.state.read();
                        out.items
                            .iter()
                            .filter_map(|r| dense.get(s.items.get(&r.item)? as usize).copied()?)
                            .collect()
                    }
                    _ => Vec::new(),
                };
                UserCase {
                    list,
                    profile: profile.clone(),
                    relevant: Vec::new(),
                }
            })
            .collect();
        // Groups: user attributes from the store, item attributes from the store as well
        // (categories from memory).
        let mut user_of: Vec<Groups> = Vec::new();
        if !opts.user_attributes.is_empty() {
            let mut attrs: FxHashMap<u32, serde_json::Map<String, Value>> = FxHashMap::default();
            let mut after = None;
            loop {
                let chunk = self.store.scan_users(after, 10_000)?;
                let Some(last) = chunk.last() else { break };
                after = Some(last.idx);
                for u in chunk {
                    attrs.insert(u.idx.0, u.attributes);
                }
            }
            for name in &opts.user_attributes {
                let g = Groups::from_values(
                    name,
                    users.iter().map(|(u, _, _)| {
                        attrs.get(u).and_then(|a| a.get(name)).and_then(group_name)
                    }),
                );
                if g.names.is_empty() {
                    return Err(ReportError::UnknownAttribute {
                        what: "user",
                        name: name.clone(),
                    });
                }
                user_of.push(g);
            }
        }
        let mut item_of: Vec<Groups> = Vec::new();
        if !opts.item_attributes.is_empty() {
            let mut attrs: Vec<Option<serde_json::Map<String, Value>>> = vec![None; n_items];
            // Store items in dense order.
            let mut after = None;
            loop {
                let chunk = self.store.scan_items(after, 10_000)?;
                let Some(last) = chunk.last() else { break };
                after = Some(last.idx);
                for it in chunk {
                    let d = dense.get(it.idx.0 as usize).copied().flatten();
                    if let Some(slot) = d.and_then(|d| attrs.get_mut(d as usize)) {
                        *slot = Some(it.attributes);
                    }
                }
            }
            for name in &opts.item_attributes {
                let g = if name == "category" {
                    Groups::from_values(
                        name,
                        (0..n_items).map(|i| {
                            categories[i]
                                .first()
                                .map(|&c| category_names[c as usize].clone())
                        }),
                    )
                } else {
                    Groups::from_values(
                        name,
                        attrs
                            .iter()
                            .map(|a| a.as_ref().and_then(|a| a.get(name)).and_then(group_name)),
                    )
                };
                if g.names.is_empty() {
                    return Err(ReportError::UnknownAttribute {
                        what: "item",
                        name: name.clone(),
                    });
                }
                item_of.push(g);
            }
        }
        let input = ReportInput {
            n_items,
            k: req.n,
            popularity: &popularity,
            item_categories: &categories,
            category_names: &category_names,
            users: &cases,
            user_groups: user_of.iter().map(Groups::grouping).collect(),
            item_groups: item_of.iter().map(Groups::grouping).collect(),
            bootstrap: self.settings.fairness.bootstrap,
            seed: opts.seed,
        };
        let mut report = fairness::report(&input);
        if !opts.user_attributes.is_empty() {
            report.notes.push(
                "accuracy by user group needs held-out interactions: run `bespoke fairness` on a split"
                    .into(),
            );
        }
        Ok(LiveReport {
            model_version,
            report,
        })
    }
}
