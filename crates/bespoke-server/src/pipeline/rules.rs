//! The business-rule stages: what a request and the saved rules ask for, compiled once per
//! request into a [`Plan`] that the other stages read.
//!
//! ```text
//! filter stage   ─ the plan's filters, hidden items and no-repeat (inside retrieval)
//! boost stage    ─ scores of matching items multiplied or shifted, then re-sorted
//! re-rankers     ─ hide_similar, diversity, the category cap
//! promote stage  ─ reserved positions filled by the best-ranked matching items
//! ```
//!
//! A request's own expressions were checked by [`Serving::check_rules`] before it ran; a saved
//! rule that no longer compiles (its attribute left the catalog) is skipped with a warning, so
//! one stale rule never breaks serving.

use bespoke_algo::{ItemIdx, Rescore, Scored, UserIdx};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use super::explain::Contribution;
use super::{RankRequest, Reason, Recommendation};
use crate::exposure::{NoRepeat, Repeat};
use crate::models::ServingModel;
use crate::rules::spec::{BoostOp, BoostSpec, PromoteSpec, Route, SavedRule};
use crate::rules::{Evaluated, ExprError, Limits, Pred};
use crate::state::{Serving, State};
use crate::time::now_ms;

/// An item a rule kept out of the answer (`explain=full`, and always on the rank route).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Filtered {
    /// Item key.
    pub item: String,
    /// The rule that removed it.
    pub rule: String,
    /// Why, for people.
    pub message: String,
}

/// Something wrong with a request's rules: the field and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProblem {
    /// The field (`filter`, `boost[1].if`, `promote[0].slot`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl RuleProblem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    fn expr(field: impl Into<String>, e: &ExprError) -> Self {
        Self::new(field, e.to_string())
    }
}

/// A boost ready to apply.
struct Boost {
    rule: String,
    when: Pred,
    op: BoostOp,
}

/// A plan's boosts as a monotone re-scoring for a top-k scan: an item's class has a bit per
/// boost that matches it (at most 32 boosts).
pub(crate) struct RuleBoosts<'a, F> {
    s: &'a State,
    boosts: &'a [Boost],
    store: F,
}

impl<F: Fn(u32) -> Option<u32>> Rescore for RuleBoosts<'_, F> {
    fn class(&mut self, item: u32) -> u32 {
        let Some(st) = (self.store)(item) else {
            return 0;
        };
        self.boosts
            .iter()
            .enumerate()
            .filter(|(_, b)| b.when.eval(&self.s.columns, st))
            .fold(0, |c, (j, _)| c | 1 << j)
    }

    fn apply(&self, class: u32, score: f32) -> f32 {
        self.boosts
            .iter()
            .enumerate()
            .filter(|(j, _)| class & 1 << j != 0)
            .fold(score, |s, (_, b)| b.op.apply(s))
    }

    fn floor(&self, target: f32) -> f32 {
        // Undo every boost that can raise a score, last first, as if all matched (the others
        // only lower it); widened a little so that rounding never prunes a true candidate.
        let plain = self.boosts.iter().rev().fold(target, |t, b| match b.op {
            BoostOp::Multiply(by) if by > 1.0 && t >= 0.0 => t / by,
            BoostOp::Multiply(by) if by > 1.0 => t * by,
            BoostOp::Add(add) if add > 0.0 => t - add,
            _ => t,
        });
        plain - 1e-4 * (1.0 + plain.abs())
    }
}

/// A promotion ready to apply.
pub(crate) struct Promotion {
    pub(crate) rule: String,
    /// From 1.
    pub(crate) slot: usize,
    pub(crate) when: Pred,
}

/// The rules of one request, compiled and bound.
#[derive(Default)]
pub(crate) struct Plan {
    /// Names of the rules that apply, saved ones by name, the request's own as
    /// `request.filter`, `request.boost[0]`, ...
    pub(crate) applied: Vec<String>,
    filters: Vec<(String, Pred)>,
    boosts: Vec<Boost>,
    pub(crate) promotions: Vec<Promotion>,
    /// `(rule, at most this many per category)`.
    cap: Option<(String, usize)>,
    hidden: FxHashSet<u32>,
    repeats: FxHashMap<u32, Repeat>,
    /// The user's hidden items, for `hide_similar`, with its strength.
    pub(crate) hide_similar: f32,
    /// Only while filling a promotion: the promotion's expression.
    also: Option<Pred>,
    /// When only boosts reorder the candidates: how many the answer needs, so that model
    /// sources explain only those (explaining is most of a candidate's cost).
    pub(crate) shortlist: Option<usize>,
    /// The protected item group of the FA*IR re-ranker, when one applies.
    pub(crate) protected: Option<Pred>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Whether the rules allow the item (the filter stage).
    pub(crate) fn allows(&self, s: &State, item: ItemIdx) -> bool {
        if self.filters.is_empty()
            && self.also.is_none()
            && self.hidden.is_empty()
            && self.repeats.is_empty()
        {
            // No rules: the common case costs four length checks per item.
            return true;
        }
        !self.hidden.contains(&item.0)
            && !self.repeats.contains_key(&item.0)
            && self.filters.iter().all(|(_, b)| b.eval(&s.columns, item.0))
            && self
                .also
                .as_ref()
                .is_none_or(|b| b.eval(&s.columns, item.0))
    }

    /// The filter kept evaluated ([`Pred::Bits`], a saved rule's) that the fewest items pass,
    /// when the plan has one: sources may scan only its items.
    pub(crate) fn narrowest(&self) -> Option<&std::sync::Arc<Evaluated>> {
        (self.filters.iter().map(|(_, p)| p))
            .chain(&self.also)
            .filter_map(Pred::evaluated)
            .min_by_key(|e| e.ones())
    }

    /// The rule that keeps `item` out, if one does.
    pub(crate) fn why_filtered(&self, s: &State, item: ItemIdx) -> Option<(String, String)> {
        if self.hidden.contains(&item.0) {
            return Some((
                "hidden".into(),
                "the user asked not to see this item".into(),
            ));
        }
        if let Some(r) = self.repeats.get(&item.0) {
            let message = match r {
                Repeat::Shown(n) => {
                    format!("shown {n} times lately without an interaction since")
                }
                Repeat::InList(1) => "in the last list shown to the user".to_owned(),
                Repeat::InList(k) => format!("in the list shown {k} lists ago"),
            };
            return Some(("no_repeat".into(), message));
        }
        self.filters
            .iter()
            .find(|(_, b)| !b.eval(&s.columns, item.0))
            .map(|(rule, _)| (rule.clone(), format!("does not match the filter of {rule}")))
    }

    /// Whether the plan boosts anything.
    pub(crate) fn boosts_any(&self) -> bool {
        !self.boosts.is_empty()
    }

    /// Whether the plan caps categories.
    pub(crate) fn caps(&self) -> bool {
        self.cap.is_some()
    }

    /// Of `top` (model rows of `m`, best first), the [`Self::shortlist`] best by boosted
    /// score, back in their order of plain score: what the boost stage will choose from, so
    /// that only they are explained. All of `top` without a shortlist.
    pub(crate) fn shortlisted(&self, s: &State, m: &ServingModel, top: Vec<Scored>) -> Vec<Scored> {
        self.shortlisted_by(s, top, |row| m.store_item(row))
    }

    /// [`Self::shortlisted`] for candidates whose `idx` maps to a store item by `store`.
    pub(crate) fn shortlisted_by(
        &self,
        s: &State,
        top: Vec<Scored>,
        store: impl Fn(u32) -> Option<u32>,
    ) -> Vec<Scored> {
        let Some(k) = self.shortlist.filter(|k| top.len() > *k) else {
            return top;
        };
        let boosted = |x: &Scored| {
            let Some(st) = store(x.idx) else {
                return x.score;
            };
            self.boosts
                .iter()
                .filter(|b| b.when.eval(&s.columns, st))
                .fold(x.score, |score, b| b.op.apply(score))
        };
        let mut order: Vec<(f32, usize)> = top.iter().map(boosted).zip(0..).collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut keep: Vec<usize> = order.into_iter().take(k).map(|(_, i)| i).collect();
        keep.sort_unstable();
        let mut top: Vec<Option<Scored>> = top.into_iter().map(Some).collect();
        keep.into_iter().filter_map(|i| top[i].take()).collect()
    }

    /// When only boosts reorder the candidates (see [`Self::shortlist`]): how many the answer
    /// needs and the boosts as a [`Rescore`] over candidates whose `idx` maps to a store item
    /// by `store`, so that a source can rank by boosted score inside its scan and fetch no
    /// larger pool.
    pub(crate) fn rescore<'a, F: Fn(u32) -> Option<u32>>(
        &'a self,
        s: &'a State,
        store: F,
    ) -> Option<(usize, RuleBoosts<'a, F>)> {
        let k = self.shortlist?;
        (!self.boosts.is_empty() && self.boosts.len() <= 32).then_some((
            k,
            RuleBoosts {
                s,
                boosts: &self.boosts,
                store,
            },
        ))
    }

    /// The items the user hid.
    pub(crate) fn hidden_items(&self) -> &FxHashSet<u32> {
        &self.hidden
    }

    /// Whether anything in the plan can keep an item out.
    pub(crate) fn filters_any(&self) -> bool {
        !self.filters.is_empty() || !self.hidden.is_empty() || !self.repeats.is_empty()
    }

    /// How many candidates the boost, cap and promotion stages want to choose `n` from:
    /// `factor × n`, at least `n + 20`.
    pub(crate) fn wants(&self, n: usize, factor: usize) -> usize {
        if self.boosts.is_empty() && self.cap.is_none() && self.promotions.is_empty() {
            n
        } else {
            n.saturating_mul(factor).max(n + 20)
        }
    }

    /// The boost stage: multiplies or shifts the scores of matching items (a `boost`
    /// contribution keeps the terms summing to the score), then re-sorts, ties in the order
    /// they came.
    pub(crate) fn boost(&self, s: &State, items: &mut [Recommendation], full: bool) {
        if self.boosts.is_empty() {
            return;
        }
        let mut moved = false;
        for r in items.iter_mut() {
            let Some(idx) = s.items.get(&r.item) else {
                continue;
            };
            for b in &self.boosts {
                if !b.when.eval(&s.columns, idx) {
                    continue;
                }
                let before = r.score;
                r.score = b.op.apply(before);
                moved |= r.score != before;
                if full {
                    r.contributions.push(Contribution {
                        feature: Some(b.rule.clone()),
                        ..Contribution::new("boost", r.score - before)
                    });
                }
                let how = match b.op {
                    BoostOp::Multiply(by) => format!("score multiplied by {by}"),
                    BoostOp::Add(add) => format!("{add:+} added to the score"),
                };
                r.reasons.push(Reason::Rule {
                    message: format!("boosted by {}: {how}", b.rule),
                    rule: b.rule.clone(),
                    effect: "boost",
                });
            }
        }
        if moved {
            items.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
    }

    /// The category cap: at most `k` items per category, going down the list; an item over the
    /// cap is dropped (and listed as filtered with `explain=full`).
    pub(crate) fn cap(
        &self,
        s: &State,
        items: &mut Vec<Recommendation>,
        n: usize,
        dropped: &mut Vec<Filtered>,
    ) {
        let Some((rule, k)) = &self.cap else {
            return;
        };
        let mut counts: FxHashMap<u32, usize> = FxHashMap::default();
        let mut kept = Vec::with_capacity(items.len().min(n));
        for r in items.drain(..) {
            let cats: &[u32] = s
                .items
                .get(&r.item)
                .and_then(|i| s.meta(ItemIdx(i)))
                .map_or(&[], |m| &m.categories);
            let over = cats
                .iter()
                .find(|c| counts.get(c).copied().unwrap_or(0) >= *k);
            match over {
                Some(c) if kept.len() < n => dropped.push(Filtered {
                    item: r.item,
                    rule: rule.clone(),
                    message: format!(
                        "{k} items of {} are already in the list (max_per_category)",
                        s.categories.key(*c).unwrap_or("its category")
                    ),
                }),
                Some(_) => {}
                None => {
                    for c in cats {
                        *counts.entry(*c).or_default() += 1;
                    }
                    kept.push(r);
                }
            }
        }
        *items = kept;
    }

    /// A plan that allows only what this one does and `when` matches: the candidates of a
    /// promotion.
    pub(crate) fn narrowed(&self, when: &Pred) -> Plan {
        Plan {
            applied: Vec::new(),
            filters: self
                .filters
                .iter()
                .map(|(r, b)| (r.clone(), b.clone()))
                .collect(),
            boosts: Vec::new(),
            promotions: Vec::new(),
            cap: None,
            hidden: self.hidden.clone(),
            repeats: self.repeats.clone(),
            hide_similar: 0.0,
            also: Some(when.clone()),
            shortlist: None,
            protected: None,
        }
    }

    /// Splits ranked items into those the filter stage allows and those it keeps out.
    pub(crate) fn split(
        &self,
        s: &State,
        items: Vec<Recommendation>,
    ) -> (Vec<Recommendation>, Vec<Filtered>) {
        let mut kept = Vec::with_capacity(items.len());
        let mut out = Vec::new();
        for r in items {
            let why = s
                .items
                .get(&r.item)
                .and_then(|i| self.why_filtered(s, ItemIdx(i)));
            match why {
                Some((rule, message)) => out.push(Filtered {
                    item: r.item,
                    rule,
                    message,
                }),
                None => kept.push(r),
            }
        }
        (kept, out)
    }

    /// Items `unruled` (the answer without rules) has that the rules kept out, and which rule.
    pub(crate) fn filtered(
        &self,
        s: &State,
        unruled: &[Recommendation],
        answer: &[Recommendation],
    ) -> Vec<Filtered> {
        let shown: FxHashSet<&str> = answer.iter().map(|r| r.item.as_str()).collect();
        unruled
            .iter()
            .filter(|r| !shown.contains(r.item.as_str()))
            .filter_map(|r| {
                let idx = ItemIdx(s.items.get(&r.item)?);
                let (rule, message) = self.why_filtered(s, idx)?;
                Some(Filtered {
                    item: r.item.clone(),
                    rule,
                    message,
                })
            })
            .collect()
    }
}

/// Places promoted items: for each promotion, in slot order, the first of `candidates` (best
/// first) not already placed moves to its slot, or stays if it is at the slot already. The
/// slots are checked against `n` by [`Serving::check_rules`]; a slot past the end of a shorter
/// list takes the last place.
pub(crate) fn promote(
    items: &mut Vec<Recommendation>,
    promotion: &Promotion,
    candidates: Vec<Recommendation>,
    n: usize,
) {
    let slot = promotion.slot - 1;
    // Items above the slot keep their places; a matching one among them does not fill it.
    let above: FxHashSet<String> = items.iter().take(slot).map(|r| r.item.clone()).collect();
    let Some(mut chosen) = candidates.into_iter().find(|c| !above.contains(&c.item)) else {
        return;
    };
    if let Some(pos) = items.iter().position(|r| r.item == chosen.item) {
        chosen = items.remove(pos);
    }
    chosen.reasons.push(Reason::Rule {
        message: format!(
            "promoted to position {} by {}",
            promotion.slot, promotion.rule
        ),
        rule: promotion.rule.clone(),
        effect: "promote",
    });
    let at = slot.min(items.len());
    items.insert(at, chosen);
    items.truncate(n);
}

/// The limits of expressions, from the settings.
pub(crate) fn limits(settings: &crate::settings::Settings) -> Limits {
    let r = &settings.rules;
    Limits {
        max_len: r.max_expression_bytes,
        max_depth: r.max_expression_depth,
        max_list: r.max_list_values,
        max_clauses: r.max_clauses,
    }
}

impl Serving {
    /// Compiles and binds `src` for this request; a saved rule's expression that depends on
    /// the item alone comes already evaluated for every item.
    pub(crate) fn bind(&self, s: &State, src: &str, req: &RankRequest) -> Result<Pred, ExprError> {
        if let Some(p) = s.columns.precomputed(src) {
            return Ok(p);
        }
        let compiled = self.exprs.get(src, &s.columns, &limits(&self.settings))?;
        Ok(Pred::Bound(compiled.bind(now_ms(), req.context.as_ref())?))
    }

    /// Checks a request's own rules (their expressions against the catalog, boosts, slots),
    /// naming the field that is wrong. Saved rules were checked when saved.
    pub(crate) fn check_rules(&self, req: &RankRequest, n: usize) -> Result<(), RuleProblem> {
        let s = self.state.read();
        let parts = Parts {
            filter: req.filter.as_deref(),
            boost: &req.boost,
            promote: &req.promote,
            max_per_category: req.max_per_category,
        };
        parts.check(n, self.settings.rules.max_boosts, |src| {
            self.bind(&s, src, req).map(|_| ())
        })?;
        if let Some(src) = req.fairness.protected.as_deref().filter(|p| !p.is_empty()) {
            let pred = self
                .bind(&s, src, req)
                .map_err(|e| RuleProblem::new("protected", e.to_string()))?;
            let any = (0..s.items.id_bound() as u32)
                .any(|i| s.servable(ItemIdx(i)) && pred.eval(&s.columns, i));
            if !any {
                return Err(RuleProblem::new(
                    "protected",
                    format!("the protected group {src:?} holds no item of the catalog"),
                ));
            }
        }
        for name in &req.skip_rules {
            if name != "*" && !self.saved_rules.load().iter().any(|r| &r.name == name) {
                return Err(RuleProblem::new(
                    "skip_rules",
                    format!("no saved rule named {name:?} (use * to skip them all)"),
                ));
            }
        }
        Ok(())
    }

    /// The plan of one request: the saved rules of `route` (unless skipped) and the request's
    /// own, for `user` (whose hidden items and impressions apply).
    pub(crate) fn plan(
        &self,
        s: &State,
        route: Route,
        req: &RankRequest,
        user: Option<UserIdx>,
    ) -> Plan {
        let mut plan = Plan::default();
        let skip_all = req.skip_rules.iter().any(|r| r == "*");
        let saved = self.saved_rules.load();
        for rule in saved.iter() {
            if skip_all || !rule.spec.applies_to(route) || req.skip_rules.contains(&rule.name) {
                continue;
            }
            match self.saved_plan(s, rule, req) {
                Ok(part) => {
                    plan.applied.push(rule.name.clone());
                    plan.merge(part);
                }
                Err(e) => {
                    tracing::warn!(rule = %rule.name, error = %e, "saved rule skipped");
                }
            }
        }
        // The request's own; checked by check_rules, so an error here is a race with a catalog
        // change and the part is left out.
        if let Some(src) = &req.filter
            && let Ok(b) = self.bind(s, src, req)
        {
            plan.filters.push(("request.filter".into(), b));
            plan.applied.push("request.filter".into());
        }
        for (i, spec) in req.boost.iter().enumerate() {
            if let (Ok(when), Ok(op)) = (self.bind(s, &spec.when, req), spec.op()) {
                let rule = format!("request.boost[{i}]");
                plan.applied.push(rule.clone());
                plan.boosts.push(Boost { rule, when, op });
            }
        }
        for (i, spec) in req.promote.iter().enumerate() {
            if let Ok(when) = self.bind(s, &spec.when, req) {
                let rule = format!("request.promote[{i}]");
                plan.applied.push(rule.clone());
                plan.promotions.retain(|p| p.slot != spec.slot);
                plan.promotions.push(Promotion {
                    rule,
                    slot: spec.slot,
                    when,
                });
            }
        }
        if let Some(k) = req.max_per_category {
            plan.cap = Some(("request.max_per_category".into(), k));
            plan.applied.push("request.max_per_category".into());
        }
        plan.promotions.sort_by_key(|p| p.slot);
        let protected = req
            .fairness
            .protected
            .as_deref()
            .unwrap_or(&self.settings.fairness.protected);
        if !protected.is_empty() {
            plan.protected = self.bind(s, protected, req).ok();
        }
        if let Some(u) = user {
            plan.hidden = s.exposure.hidden_of(u.0);
            let rules = &self.settings.rules;
            let policy = NoRepeat {
                max_impressions: req.max_impressions.unwrap_or(rules.max_impressions),
                window_ms: req
                    .impression_window
                    .unwrap_or_else(|| rules.impression_window_ms()),
                lists: req.no_repeat_lists.unwrap_or(rules.no_repeat_lists),
            };
            if !policy.is_off() {
                let history = s.live.history(u);
                plan.repeats = s.exposure.repeats(u.0, policy, now_ms(), |item| {
                    history.iter().find(|x| x.item.0 == item).map(|x| x.last_ts)
                });
            }
            if !plan.hidden.is_empty() {
                plan.applied.push("hidden".into());
            }
            if !plan.repeats.is_empty() {
                plan.applied.push("no_repeat".into());
            }
            plan.hide_similar = req.hide_similar.unwrap_or(rules.hide_similar);
        }
        plan
    }

    /// One saved rule, compiled and bound for this request.
    fn saved_plan(
        &self,
        s: &State,
        rule: &SavedRule,
        req: &RankRequest,
    ) -> Result<Plan, ExprError> {
        let mut part = Plan::default();
        if let Some(src) = &rule.spec.filter {
            part.filters
                .push((rule.name.clone(), self.bind(s, src, req)?));
        }
        for b in &rule.spec.boost {
            // Checked when saved.
            let Ok(op) = b.op() else { continue };
            part.boosts.push(Boost {
                rule: rule.name.clone(),
                when: self.bind(s, &b.when, req)?,
                op,
            });
        }
        for p in &rule.spec.promote {
            part.promotions.push(Promotion {
                rule: rule.name.clone(),
                slot: p.slot,
                when: self.bind(s, &p.when, req)?,
            });
        }
        part.cap = rule.spec.max_per_category.map(|k| (rule.name.clone(), k));
        Ok(part)
    }

    /// Checks a rule before it is saved: every expression compiles against the catalog, and
    /// its boosts and promotions make sense together with the other saved rules.
    pub(crate) fn check_saved_rule(&self, rule: &SavedRule) -> Result<(), RuleProblem> {
        let s = self.state.read();
        let spec = &rule.spec;
        if spec.is_empty() {
            return Err(RuleProblem::new(
                "",
                "a rule needs a filter, a boost, a promote or a max_per_category",
            ));
        }
        let parts = Parts {
            filter: spec.filter.as_deref(),
            boost: &spec.boost,
            promote: &spec.promote,
            max_per_category: spec.max_per_category,
        };
        // Without a request there is no context to bind yet: compile only.
        let limits = limits(&self.settings);
        let max = self.settings.rules.max_boosts;
        parts.check(self.settings.limits.max_n, max, |src| {
            self.exprs.get(src, &s.columns, &limits).map(|_| ())
        })?;
        // Two saved promotions of the same slot on a shared route contradict each other.
        for other in self.saved_rules.load().iter() {
            if other.name == rule.name || !other.spec.enabled || !spec.enabled {
                continue;
            }
            let shared = Route::ALL
                .iter()
                .any(|r| other.spec.applies_to(*r) && spec.applies_to(*r));
            if !shared {
                continue;
            }
            for (i, p) in spec.promote.iter().enumerate() {
                if other.spec.promote.iter().any(|q| q.slot == p.slot) {
                    return Err(RuleProblem::new(
                        format!("promote[{i}].slot"),
                        format!(
                            "slot {} is already promoted by the saved rule {:?} on a route this one applies to",
                            p.slot, other.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What a request and a saved rule both ask for.
struct Parts<'a> {
    filter: Option<&'a str>,
    boost: &'a [BoostSpec],
    promote: &'a [PromoteSpec],
    max_per_category: Option<usize>,
}

impl Parts<'_> {
    /// Checks every expression with `expr`, the boosts, slots (from 1 to `n`) and the cap; at
    /// most `max` boosts and `max` promotions.
    fn check(
        &self,
        n: usize,
        max: usize,
        expr: impl Fn(&str) -> Result<(), ExprError>,
    ) -> Result<(), RuleProblem> {
        if let Some(src) = self.filter {
            expr(src).map_err(|e| RuleProblem::expr("filter", &e))?;
        }
        if self.boost.len() > max {
            return Err(RuleProblem::new(
                "boost",
                format!("at most {max} boosts (rules.max_boosts)"),
            ));
        }
        for (i, b) in self.boost.iter().enumerate() {
            expr(&b.when).map_err(|e| RuleProblem::expr(format!("boost[{i}].if"), &e))?;
            b.op()
                .map_err(|m| RuleProblem::new(format!("boost[{i}]"), m))?;
        }
        check_promotions(self.promote, n, max, "promote")?;
        for (i, p) in self.promote.iter().enumerate() {
            expr(&p.when).map_err(|e| RuleProblem::expr(format!("promote[{i}].if"), &e))?;
        }
        if self.max_per_category == Some(0) {
            return Err(RuleProblem::new(
                "max_per_category",
                "max_per_category must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Slots from 1 to `n`, each once, at most `max` promotions.
fn check_promotions(
    promote: &[PromoteSpec],
    n: usize,
    max: usize,
    field: &str,
) -> Result<(), RuleProblem> {
    if promote.len() > max {
        return Err(RuleProblem::new(
            field,
            format!("at most {max} promotions (rules.max_boosts)"),
        ));
    }
    for (i, p) in promote.iter().enumerate() {
        if p.slot == 0 || p.slot > n {
            return Err(RuleProblem::new(
                format!("{field}[{i}].slot"),
                format!(
                    "slot must be from 1 to {n} (the number of results asked for), got {}",
                    p.slot
                ),
            ));
        }
        if promote[..i].iter().any(|q| q.slot == p.slot) {
            return Err(RuleProblem::new(
                format!("{field}[{i}].slot"),
                format!("slot {} is promoted twice", p.slot),
            ));
        }
    }
    Ok(())
}

impl Plan {
    /// Adds a saved rule's part; a later promotion of a slot already taken is ignored (saving
    /// refuses such pairs, so this is only a rule saved before another was changed).
    fn merge(&mut self, part: Plan) {
        self.filters.extend(part.filters);
        self.boosts.extend(part.boosts);
        for p in part.promotions {
            if !self.promotions.iter().any(|q| q.slot == p.slot) {
                self.promotions.push(p);
            }
        }
        match (&self.cap, part.cap) {
            (Some((_, k)), Some((r, k2))) if k2 < *k => self.cap = Some((r, k2)),
            (None, Some(c)) => self.cap = Some(c),
            _ => {}
        }
    }
}
