//! The filter stage: which candidates a request allows. Sources ask it while they retrieve
//! (retrieve-then-filter inside the top-k scan), so a filtered item never takes a place. The
//! request's business rules (its plan) come before the user's history: a selective filter
//! spares most searches of it.

use std::sync::Arc;

use bespoke_algo::{Identity, Interaction, ItemIdx, ItemScorer, Scored, UserIdx};
use rustc_hash::FxHashSet;

use super::RankRequest;
use super::rules::Plan;
use crate::models::ServingModel;
use crate::models::content::ContentServing;
use crate::models::views::Factorization;
use crate::state::State;

/// What a request allows: availability, categories, exclusions, (optionally) unseen items,
/// and its business rules (filters, hidden items, no-repeat).
pub(crate) struct Filter<'a> {
    s: &'a State,
    wanted: Vec<u32>,
    excluded: FxHashSet<u32>,
    /// The history whose items are dropped (`unseen_for`'s), sorted by item.
    seen: &'a [Interaction],
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
            seen: unseen_for.map_or(&[], |u| s.live.history(u)),
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

    /// The `n` best rows of `m`'s iALS factors for `x` that the request allows. When boosts
    /// alone reorder the answer, the scan ranks by boosted score and returns only the
    /// [`Plan::shortlist`] best: the boost stage would choose those from any larger pool.
    pub(crate) fn top_als(&self, m: &ServingModel, x: &[f32], n: usize) -> Vec<Scored> {
        let keep = |i| self.keep_model(m, i);
        let within = self.als_subset(m, Factorization::Factors);
        let within = within.as_deref();
        match self.plan.rescore(self.s, |row| m.store_item(row)) {
            Some((k, mut boosts)) => m.als.top_k_rescored(x, k.min(n), keep, &mut boosts, within),
            None => m.als.top_k_rescored(x, n, keep, &mut Identity, within),
        }
    }

    /// iALS's items restricted to those of the plan's narrowest saved filter, when scanning
    /// only them pays: a saved rule's selective filter otherwise makes every request scan the
    /// many items it rejects, against a lower k-th best score.
    pub(crate) fn als_subset(
        &self,
        m: &ServingModel,
        of: Factorization,
    ) -> Option<Arc<ItemScorer>> {
        let e = self.plan.narrowest()?;
        let share = e.ones() as f32 / self.s.columns.item_slots().max(1) as f32;
        let cols = &self.s.columns;
        m.als.subset(of, e.id(), share, |row| {
            m.store_item(row).is_some_and(|st| e.get(cols, st))
        })
    }

    /// [`Self::top_als`] over the items the content model placed (store items).
    pub(crate) fn top_cold(&self, content: &ContentServing, x: &[f32], n: usize) -> Vec<Scored> {
        let keep = |st| self.keep(ItemIdx(st));
        // The narrowest saved filter's bit before an item is scored: most items fail it.
        let narrowest = self.plan.narrowest();
        let cols = &self.s.columns;
        let inside = |st| narrowest.is_none_or(|e| e.get(cols, st));
        match self.plan.rescore(self.s, Some) {
            Some((k, mut boosts)) => content.top_cold(x, k.min(n), inside, keep, &mut boosts),
            None => content.top_cold(x, n, inside, keep, &mut Identity),
        }
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
        // The rules first: without any they cost four length checks, and a saved filter is a
        // bit test that rejects most items before the catalog's tables are read.
        self.plan.allows(self.s, item)
            && self.s.servable(item)
            && !self.excluded.contains(&item.0)
            && self.s.in_categories(item, &self.wanted)
            && self.seen.binary_search_by_key(&item, |x| x.item).is_err()
    }
}
