//! The ranking pipeline: every answer that ranks items goes through the same stages.
//!
//! ```text
//! RankRequest ─► candidates (a Source, scored by one model or the blend)
//!             ─► filters (availability, categories, exclude, include_seen; applied inside
//!                         retrieval, so a filtered item never takes a place)
//!             ─► re-rankers (ordered; diversity now)
//!             ─► explanations (Reason always; Contribution terms with explain=full)
//!             ─► response
//! ```
//!
//! Recommendations ([`Source::User`]), anonymous sessions ([`Source::Session`]), similar items
//! ([`Source::Similar`]), popular items ([`Source::Popular`]) and the ranking of supplied
//! candidates ([`Engine::rank_supplied`]) differ only in their source, so every filter and
//! re-ranker works on all of them.
//!
//! Every stage reads in-memory state only: a source that needs stored data (a history-less
//! user's attributes) returns [`NeedsAttributes`], and the caller reads them on the blocking
//! pool and runs the pipeline again with them.

mod candidates;
pub mod explain;
mod filters;
pub mod request;
mod rerank;
mod supplied;

use bespoke_store::Millis;
use serde_json::{Map, Value};

pub use candidates::NeedsAttributes;
pub use explain::{Contribution, Explain, Reason};
pub use request::RankRequest;
pub use supplied::{Ranked, RankedItem};

pub(crate) use filters::Filter;

use crate::engine::{Engine, PopularSort, Recommendations};
use crate::settings::SimilarChoice;

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

impl Engine {
    /// Runs the pipeline for `source`. `Ok(None)` when the source's subject does not exist
    /// (similar items of an unknown item).
    pub fn rank(
        &self,
        source: Source<'_>,
        req: &RankRequest,
    ) -> Result<Option<Recommendations>, NeedsAttributes> {
        let model = self.model.load_full();
        let s = self.state.read();
        let m = model.as_deref();
        let rerankers = rerank::for_request(req);
        let fetch = rerankers
            .iter()
            .fold(req.n, |n, r| r.wants(req.n).max(n))
            .min(self.settings.limits.max_n.max(req.n));
        let mut out = match source {
            Source::User { key, attributes } => {
                self.user_candidates(&s, m, key, req, fetch, attributes)?
            }
            Source::Session(items) => self.session_candidates(&s, m, items, req, fetch),
            Source::Similar { item, model } => {
                let Some(items) = self.similar_candidates(&s, m, item, model, req, fetch) else {
                    return Ok(None);
                };
                unpersonalized(items)
            }
            Source::Popular { sort, window } => {
                unpersonalized(self.popular_candidates(&s, sort, window, req, fetch))
            }
        };
        let cx = rerank::Context { s: &s, m };
        for r in &rerankers {
            r.rerank(&cx, &mut out.items, req.n);
        }
        out.items.truncate(req.n);
        Ok(Some(out))
    }
}

/// Items ranked without anyone's history (similar, popular).
fn unpersonalized(items: Vec<crate::engine::Recommendation>) -> Recommendations {
    Recommendations {
        items,
        personalized: false,
        model: "popular",
        model_version: None,
    }
}
