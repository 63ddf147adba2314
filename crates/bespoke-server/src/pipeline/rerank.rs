//! The re-ranking stage: an ordered list of [`Reranker`]s, each taking the scored candidates
//! and giving back the `n` to answer with, in order. A re-ranker never changes a score (the
//! score stays the model's, and its contributions still sum to it); it changes the order and
//! says why in the reasons of the items it moved down.
//!
//! [`HideSimilar`] (items resembling what the user hid) and [`Diversity`] run in that order,
//! then the fairness re-rankers (`fairness.rs`): calibration, popularity debiasing and the
//! protected group's share, last so that its guarantee holds on the answer.

use bespoke_algo::ItemIdx;

use super::Recommendation;
use super::rules::Plan;
use super::{RankRequest, Reason};
use crate::models::ServingModel;
use crate::state::State;

/// What re-rankers may read: the serving state, the model, if any, and the request's rules.
pub(crate) struct Context<'a> {
    pub(crate) s: &'a State,
    pub(crate) m: Option<&'a ServingModel>,
    pub(crate) plan: &'a Plan,
    /// Whose tastes calibration and popularity debiasing follow: the user's history (or the
    /// session's items) as `(store item, weight)`.
    pub(crate) profile: Vec<(u32, f32)>,
}

/// One re-ranking stage.
pub(crate) trait Reranker {
    /// How many candidates it wants to choose `n` from.
    fn wants(&self, n: usize) -> usize;
    /// Reorders `items` (best first) and keeps at most `n`.
    fn rerank(&self, cx: &Context<'_>, items: &mut Vec<Recommendation>, n: usize);
}

/// The re-rankers a request asks for, in order.
pub(crate) fn for_request(req: &RankRequest, plan: &Plan) -> Vec<Box<dyn Reranker>> {
    let mut out: Vec<Box<dyn Reranker>> = Vec::new();
    if plan.hide_similar > 0.0 && !plan.hidden_items().is_empty() {
        out.push(Box::new(HideSimilar {
            lambda: plan.hide_similar,
        }));
    }
    if req.diversity > 0.0 {
        out.push(Box::new(Diversity {
            lambda: req.diversity,
        }));
    }
    out
}

/// Maximal marginal relevance (Carbonell and Goldstein, 1998): picks, one at a time, the
/// candidate maximising `(1 − λ)·relevance − λ·max similarity to the items already picked`.
/// Relevance is the score rescaled to `[0, 1]` over the candidates; similarity is the cosine
/// of the items' iALS factors when the model has both, else the share of categories they have
/// in common (Jaccard), else 0.
pub(crate) struct Diversity {
    /// λ in `(0, 1]`: 1 ranks by dissimilarity alone.
    pub(crate) lambda: f32,
}

/// Moves down items that resemble what the user hid: candidates are ordered by
/// `(1 − λ)·relevance − λ·max similarity to a hidden item`, relevance and similarity as for
/// [`Diversity`].
pub(crate) struct HideSimilar {
    /// λ in `(0, 1]`.
    pub(crate) lambda: f32,
}

/// Below this similarity to a hidden item an item is not said to resemble it.
const RESEMBLES: f32 = 0.3;

impl Reranker for HideSimilar {
    fn wants(&self, n: usize) -> usize {
        (n * 2).max(n + 20)
    }

    fn rerank(&self, cx: &Context<'_>, items: &mut Vec<Recommendation>, n: usize) {
        let hidden: Vec<(String, Profile<'_>)> = cx
            .plan
            .hidden_items()
            .iter()
            .filter_map(|&i| Some((cx.s.items.key(i)?.to_owned(), profile(cx, i))))
            .collect();
        if hidden.is_empty() || items.is_empty() {
            items.truncate(n);
            return;
        }
        let relevance = relevance(items);
        // (ordering key, position, the hidden item it resembles and how much).
        type Keyed = (f32, usize, Option<(usize, f32)>);
        let mut keyed: Vec<Keyed> = items
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let p = cx.s.items.get(&r.item).map(|i| profile(cx, i));
                let closest = p.and_then(|p| {
                    hidden
                        .iter()
                        .enumerate()
                        .map(|(h, (_, hp))| (h, p.similarity(hp)))
                        .max_by(|a, b| a.1.total_cmp(&b.1))
                });
                let sim = closest.map_or(0.0, |c| c.1);
                let key = (1.0 - self.lambda) * relevance[k] - self.lambda * sim;
                (key, k, closest.filter(|c| c.1 >= RESEMBLES))
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut slots: Vec<Option<Recommendation>> = items.drain(..).map(Some).collect();
        for (pos, (_, k, closest)) in keyed.into_iter().take(n).enumerate() {
            let mut r = slots[k].take().expect("each once");
            if let Some((h, similarity)) = closest
                && pos > k
            {
                r.reasons.push(Reason::Rule {
                    message: format!(
                        "moved down: it resembles {}, which you asked not to see (similarity {similarity:.2})",
                        hidden[h].0
                    ),
                    rule: "hide_similar".into(),
                    effect: "hide_similar",
                });
            }
            items.push(r);
        }
    }
}

/// An item's profile for similarity: unit iALS factors when the model has them, categories.
fn profile<'a>(cx: &Context<'a>, i: u32) -> Profile<'a> {
    let unit = cx.m.and_then(|m| {
        let y = m.als.item_vector(m.model_item(i)?);
        let norm = bespoke_algo::simd::dot(y, y).sqrt();
        (norm > 0.0).then(|| y.iter().map(|v| v / norm).collect())
    });
    let categories = cx.s.meta(ItemIdx(i)).map_or(&[][..], |m| &m.categories[..]);
    Profile { unit, categories }
}

/// Scores rescaled to `[0, 1]` over the candidates (all 1 when equal).
pub(super) fn relevance(items: &[Recommendation]) -> Vec<f32> {
    let (lo, hi) = items
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |a, r| {
            (a.0.min(r.score), a.1.max(r.score))
        });
    items
        .iter()
        .map(|r| {
            if hi > lo {
                (r.score - lo) / (hi - lo)
            } else {
                1.0
            }
        })
        .collect()
}

/// One candidate's view for similarity: unit factors or categories.
struct Profile<'a> {
    unit: Option<Vec<f32>>,
    categories: &'a [u32],
}

impl Profile<'_> {
    fn similarity(&self, other: &Self) -> f32 {
        if let (Some(a), Some(b)) = (&self.unit, &other.unit) {
            return bespoke_algo::simd::dot(a, b).max(0.0);
        }
        let (a, b) = (self.categories, other.categories);
        if a.is_empty() || b.is_empty() {
            return 0.0;
        }
        let shared = a.iter().filter(|c| b.contains(c)).count();
        shared as f32 / (a.len() + b.len() - shared) as f32
    }
}

impl Reranker for Diversity {
    fn wants(&self, n: usize) -> usize {
        // Enough to choose from without scoring the catalog: three times the page, at least
        // twenty more.
        (n * 3).max(n + 20)
    }

    fn rerank(&self, cx: &Context<'_>, items: &mut Vec<Recommendation>, n: usize) {
        if items.len() <= 1 {
            items.truncate(n);
            return;
        }
        let profiles: Vec<Profile<'_>> = items
            .iter()
            .map(|r| match cx.s.items.get(&r.item) {
                Some(i) => profile(cx, i),
                None => Profile {
                    unit: None,
                    categories: &[],
                },
            })
            .collect();
        let relevance = relevance(items);
        let lambda = self.lambda;
        let mut picked: Vec<usize> = Vec::with_capacity(n);
        // Per candidate: the largest similarity to a picked item, and which.
        let mut closest: Vec<(f32, usize)> = vec![(0.0, usize::MAX); items.len()];
        let mut taken = vec![false; items.len()];
        let mut passed_over: Vec<Option<(usize, f32)>> = vec![None; items.len()];
        while picked.len() < n.min(items.len()) {
            let mut best: Option<(usize, f32)> = None;
            // The candidate relevance alone would pick (the first untaken: items are in
            // relevance order).
            let by_relevance = (0..items.len()).find(|&i| !taken[i]);
            for i in (0..items.len()).filter(|&i| !taken[i]) {
                let mmr = (1.0 - lambda) * relevance[i] - lambda * closest[i].0;
                if best.is_none_or(|b| mmr > b.1) {
                    best = Some((i, mmr));
                }
            }
            let Some((chosen, _)) = best else { break };
            if let Some(r) = by_relevance
                && r != chosen
                && passed_over[r].is_none()
                && closest[r].1 != usize::MAX
            {
                passed_over[r] = Some(closest[r].1).map(|j| (j, closest[r].0));
            }
            taken[chosen] = true;
            picked.push(chosen);
            for i in (0..items.len()).filter(|&i| !taken[i]) {
                let sim = profiles[i].similarity(&profiles[chosen]);
                if sim > closest[i].0 {
                    closest[i] = (sim, chosen);
                }
            }
        }
        let keys: Vec<String> = items.iter().map(|r| r.item.clone()).collect();
        let mut slots: Vec<Option<Recommendation>> = items.drain(..).map(Some).collect();
        for i in picked {
            let mut r = slots[i].take().expect("picked once");
            if let Some((j, similarity)) = passed_over[i] {
                r.reasons.push(Reason::Diversity {
                    message: format!(
                        "moved down for variety: it resembles {}, ranked above it",
                        keys[j]
                    ),
                    item: keys[j].clone(),
                    similarity,
                });
            }
            items.push(r);
        }
    }
}
