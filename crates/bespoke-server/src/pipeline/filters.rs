//! The filter stage: which candidates a request allows. Sources ask it while they retrieve
//! (retrieve-then-filter inside the top-k scan), so a filtered item never takes a place. The
//! request's business rules (its plan) are checked last: they cost the most per item.

use bespoke_algo::{ItemIdx, Scored, UserIdx};
use rustc_hash::FxHashSet;

use super::RankRequest;
use super::rules::Plan;
use crate::models::ServingModel;
use crate::state::State;

/// What a request allows: availability, categories, exclusions, (optionally) unseen items,
/// and its business rules (filters, hidden items, no-repeat).
pub(crate) struct Filter<'a> {
    s: &'a State,
    wanted: Vec<u32>,
    excluded: FxHashSet<u32>,
    unseen_for: Option<UserIdx>,
    plan: &'a Plan,
}

impl<'a> Filter<'a> {
    /// The filter of `req` and its rule `plan`; `unseen_for` drops what that user has seen.
    pub(crate) fn new(
        s: &'a State,
        req: &RankRequest,
        plan: &'a Plan,
        unseen_for: Option<UserIdx>,
    ) -> Self {
        Self {
            s,
            wanted: s.category_ids(&req.categories),
            excluded: req.exclude.iter().filter_map(|k| s.items.get(k)).collect(),
            unseen_for,
            plan,
        }
    }

    /// Also drops these store items (a session's own items, the item similar items are for).
    pub(crate) fn exclude(&mut self, items: impl IntoIterator<Item = u32>) {
        self.excluded.extend(items);
    }

    /// [`Self::keep`] for a row of model `m`: false for rows whose item no longer exists.
    pub(crate) fn keep_model(&self, m: &ServingModel, i: u32) -> bool {
        m.store_item(i).is_some_and(|st| self.keep(ItemIdx(st)))
    }

    /// The candidates worth explaining (see [`Plan::shortlisted`]).
    pub(crate) fn shortlisted(&self, m: &ServingModel, top: Vec<Scored>) -> Vec<Scored> {
        self.plan.shortlisted(self.s, m, top)
    }

    /// [`Self::shortlisted`] for candidates that are store items.
    pub(crate) fn shortlisted_items(&self, top: Vec<Scored>) -> Vec<Scored> {
        self.plan.shortlisted_by(self.s, top, Some)
    }

    /// How many candidates the answer needs, when boosts alone reorder them.
    pub(crate) fn shortlist(&self) -> Option<usize> {
        self.plan.shortlist
    }

    /// Whether the request allows the item.
    pub(crate) fn keep(&self, item: ItemIdx) -> bool {
        self.s.servable(item)
            && !self.excluded.contains(&item.0)
            && self.s.in_categories(item, &self.wanted)
            && self
                .unseen_for
                .is_none_or(|u| !self.s.live.has_seen(u, item))
            && self.plan.allows(self.s, item)
    }
}
