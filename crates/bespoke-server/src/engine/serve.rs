//! The engine's serving entry points for in-process callers (the CLI, tests): each runs the
//! ranking pipeline ([`crate::pipeline`]), reading stored attributes inline when a user without
//! history needs them. HTTP handlers call [`crate::state::Serving::rank`] directly and read attributes on the
//! blocking pool instead.
//!
//! Recommendations use the requested model (iALS, item-kNN, EASE, BPR, the tuned blend or
//! popularity). iALS solves the user's vector exactly from their current history against the
//! served item factors (cached per history revision), so an event changes the next answer
//! without retraining; the reasons are the history items with the largest Hu–Koren–Volinsky
//! contributions. Anything a model cannot answer (no model yet, a user it knows nothing of, too
//! few results) falls back to popularity, and the reasons say so.

use bespoke_algo::UserIdx;

use super::{Engine, PopularQuery, RecommendQuery, Recommendation, Recommendations};
use crate::pipeline::{NeedsAttributes, RankRequest, Source};
use crate::settings::SimilarChoice;

impl Engine {
    /// What serving derived from a user, for their data export: per-item history, consent as
    /// applied, and (with personalization allowed and a model served) their user vector. `None`
    /// for an unknown user.
    pub fn derived(&self, user_key: &str) -> Option<serde_json::Value> {
        let model = self.serving.model.load_full();
        let s = self.serving.state.read();
        let user = UserIdx(s.users.get(&self.serving.user_keys.to_store(user_key))?);
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
            let h = self.serving.model_history(&s, m, user, "als");
            m.als
                .user_vector(user.0, self.serving.vector_revision(&s, user), &h)
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

    /// A user's stored attributes (empty for an unknown user or a failed read): a store read,
    /// so async callers run it on the blocking pool.
    pub fn user_attributes(&self, user_key: &str) -> serde_json::Map<String, serde_json::Value> {
        self.get_user(user_key)
            .ok()
            .flatten()
            .map(|u| u.attributes)
            .unwrap_or_default()
    }

    /// Checks a request's business rules (filter, boosts, promotions) against the catalog, as
    /// the API does before it ranks: the field and what is wrong.
    pub fn check_rules(&self, q: &RecommendQuery) -> Result<(), crate::pipeline::RuleProblem> {
        self.serving.check_rules(q, q.n)
    }

    /// Recommendations for a user (see the module docs for the model and fallback rules).
    pub fn recommend(&self, user_key: &str, q: &RecommendQuery) -> Recommendations {
        let source = |attributes| Source::User {
            key: user_key,
            attributes,
        };
        let out = match self.serving.rank(source(None), q) {
            Ok(out) => out,
            Err(NeedsAttributes) => {
                let attributes = self.user_attributes(user_key);
                self.serving
                    .rank(source(Some(&attributes)), q)
                    .ok()
                    .flatten()
            }
        };
        out.unwrap_or_else(|| Recommendations {
            items: Vec::new(),
            personalized: false,
            model: "popular",
            model_version: None,
            rules: Vec::new(),
            filtered: Vec::new(),
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
        self.serving
            .rank(Source::Session(items), q)
            .ok()
            .flatten()
            .unwrap_or_else(|| Recommendations {
                items: Vec::new(),
                personalized: false,
                model: "popular",
                model_version: None,
                rules: Vec::new(),
                filtered: Vec::new(),
            })
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
        let req = RankRequest {
            n,
            ..RankRequest::default()
        };
        let source = Source::Similar {
            item: item_key,
            model: choice,
        };
        Some(self.serving.rank(source, &req).ok()??.items)
    }

    /// The most popular items, all-time, within a window, or trending.
    pub fn popular(&self, q: &PopularQuery) -> Vec<Recommendation> {
        let req = RankRequest {
            n: q.n,
            categories: q.categories.clone(),
            ..RankRequest::default()
        };
        let source = Source::Popular {
            sort: q.sort,
            window: q.window,
        };
        self.serving
            .rank(source, &req)
            .ok()
            .flatten()
            .map(|r| r.items)
            .unwrap_or_default()
    }
}
