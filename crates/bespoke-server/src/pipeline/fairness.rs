//! The fairness re-rankers (`docs/fairness.md`): calibration (Steck 2018), popularity
//! debiasing (smooth xQuAD over head and tail, or inverse popularity) and a protected group's
//! minimum share at every prefix (FA*IR, Zehlike et al. 2017). The algorithms are
//! `bespoke_algo::rerank`'s; this module feeds them the serving state and writes what each
//! did into the reasons of the items it moved.

use std::sync::Arc;

use bespoke_algo::ItemIdx;
use bespoke_algo::fairness::{CALIBRATION_ALPHA, distribution_of as distribution, miscalibration};
use bespoke_algo::rerank::{self as algo, Fair};

use super::rerank::{Context, Reranker, relevance};
use super::{RankRequest, Reason, Recommendation};
use crate::settings::PopularityMethod;
use crate::state::{Serving, State, TailCut};

/// Candidates a fairness re-ranker chooses `n` from: it can only lift what was retrieved.
fn pool(n: usize) -> usize {
    (n * 5).max(n + 50)
}

/// The fairness re-rankers `req` asks for (its own fields over the `fairness.*` defaults),
/// in order: calibration, popularity, protected share.
pub(crate) fn for_request(
    serving: &Serving,
    s: &State,
    req: &RankRequest,
    protected: bool,
) -> Vec<Box<dyn Reranker>> {
    let d = &serving.settings.fairness;
    let f = &req.fairness;
    let mut out: Vec<Box<dyn Reranker>> = Vec::new();
    let calibration = f.calibration.unwrap_or(d.calibration);
    if calibration > 0.0 {
        out.push(Box::new(Calibration {
            lambda: f64::from(calibration),
        }));
    }
    let popularity = f.popularity.unwrap_or(d.popularity);
    if popularity > 0.0 {
        out.push(Box::new(PopularityDebias {
            weight: f64::from(popularity),
            method: f.popularity_method.unwrap_or(d.popularity_method),
            tail: serving.tail_cut(s),
        }));
    }
    if protected {
        let p = f.protected_share.unwrap_or(d.protected_share);
        let alpha = f.protected_alpha.unwrap_or(d.protected_alpha);
        if let Some(table) = serving.fair_table(req.n, p, alpha) {
            out.push(Box::new(ProtectedShare { table }));
        }
    }
    out
}

impl Serving {
    /// The long tail as of now: recomputed when the events counted moved by more than 1%
    /// (items added since are tail), outside the lock, so that requests never queue behind it.
    pub(crate) fn tail_cut(&self, s: &State) -> Arc<TailCut> {
        let events = s.live.events();
        if let Some(c) = self.tail.lock().as_ref()
            && events.abs_diff(c.events) * 100 <= c.events.max(1)
        {
            return c.clone();
        }
        let cut = Arc::new(compute_tail(s, bespoke_algo::fairness::HEAD_SHARE));
        *self.tail.lock() = Some(cut.clone());
        cut
    }

    /// The FA*IR table for `(n, p, α)`, p and α to three decimals (so that requests cannot
    /// defeat the cache with endless variants), cached and built outside the lock.
    pub(crate) fn fair_table(&self, n: usize, p: f64, alpha: f64) -> Option<Arc<Fair>> {
        let round = |v: f64| ((v * 1000.0).round() / 1000.0).clamp(0.001, 0.999);
        let (p, alpha) = (round(p), round(alpha));
        let key = (n, p.to_bits(), alpha.to_bits());
        if let Some(t) = self.fair_tables.lock().get(&key) {
            return Some(t.clone());
        }
        let table = Arc::new(Fair::new(n, p, alpha).ok()?);
        let mut tables = self.fair_tables.lock();
        if tables.len() >= 256 {
            tables.clear();
        }
        tables.insert(key, table.clone());
        Some(table)
    }
}

/// Per item its interactions, and the tail by `head_share`.
fn compute_tail(s: &State, head_share: f64) -> TailCut {
    let pop = popularity(s);
    let tail = bespoke_algo::fairness::tail_items(&pop, head_share);
    let min_head = pop
        .iter()
        .zip(&tail)
        .filter(|(_, t)| !**t)
        .map(|(p, _)| *p)
        .fold(f64::INFINITY, f64::min);
    let max_users = (0..s.items.id_bound() as u32)
        .map(|i| s.live.item_users(ItemIdx(i)).len())
        .max()
        .unwrap_or(0) as f64;
    TailCut {
        events: s.live.events(),
        tail: Arc::new(tail),
        min_head: if min_head.is_finite() { min_head } else { 0.0 },
        max_users,
    }
}

/// Every item's interaction count (0 for deleted ones).
pub(crate) fn popularity(s: &State) -> Vec<f64> {
    let p = s.live.popularity();
    (0..s.items.id_bound() as u32)
        .map(|i| {
            if s.deleted_items.contains(&i) {
                0.0
            } else {
                f64::from(p.count(ItemIdx(i)))
            }
        })
        .collect()
}

/// Store ids of the candidates (`None` for items no longer known).
fn ids(s: &State, items: &[Recommendation]) -> Vec<Option<u32>> {
    items.iter().map(|r| s.items.get(&r.item)).collect()
}

/// Applies a chosen order (positions into `items`) and gives every item that moved a
/// reason from `why(from, to)`, positions from 1.
fn reorder(
    items: &mut Vec<Recommendation>,
    order: &[usize],
    stage: &'static str,
    why: impl Fn(usize, usize) -> Option<String>,
) {
    let mut slots: Vec<Option<Recommendation>> = items.drain(..).map(Some).collect();
    for (to, &from) in order.iter().enumerate() {
        let Some(mut r) = slots.get_mut(from).and_then(Option::take) else {
            continue;
        };
        if from != to
            && let Some(message) = why(from, to)
        {
            r.reasons.push(Reason::Fairness {
                message,
                stage,
                from: from + 1,
                to: to + 1,
            });
        }
        items.push(r);
    }
}

/// Steck's calibration: the list's category distribution pulled toward the user's history.
pub(crate) struct Calibration {
    /// λ in `(0, 1]`.
    pub(crate) lambda: f64,
}

impl Reranker for Calibration {
    fn wants(&self, n: usize) -> usize {
        pool(n)
    }

    fn rerank(&self, cx: &Context<'_>, items: &mut Vec<Recommendation>, n: usize) {
        let s = cx.s;
        let n_categories = s.categories.len();
        let cats = |i: u32| s.meta(ItemIdx(i)).map_or(&[][..], |m| &m.categories[..]);
        let Some(target) = distribution(
            cx.profile.iter().map(|&(i, w)| (cats(i), f64::from(w))),
            n_categories,
        ) else {
            items.truncate(n);
            return;
        };
        let ids = ids(s, items);
        let categories: Vec<&[u32]> = ids.iter().map(|i| i.map_or(&[][..], cats)).collect();
        let rel: Vec<f64> = relevance(items).into_iter().map(f64::from).collect();
        // Steck's greedy chooses the set; its items are shown best first. Miscalibration is a
        // property of the set, so this costs it nothing and keeps the relevant items on top:
        // on MovieLens it halves the NDCG lost for the same calibration (docs/fairness.md).
        let mut order = algo::calibrate(
            &rel,
            &categories,
            &target,
            self.lambda,
            CALIBRATION_ALPHA,
            n,
        );
        order.sort_unstable();
        let kl = |positions: &mut dyn Iterator<Item = usize>| {
            let q = distribution(positions.map(|j| (categories[j], 1.0)), n_categories);
            q.map(|q| miscalibration(&target, &q, CALIBRATION_ALPHA))
        };
        let before = kl(&mut (0..n.min(items.len())));
        let after = kl(&mut order.iter().copied());
        let change = match (before, after) {
            (Some(b), Some(a)) => format!(" (miscalibration {b:.3} → {a:.3})"),
            _ => String::new(),
        };
        reorder(items, &order, "calibration", |from, to| {
            let dir = if to < from { "up" } else { "down" };
            Some(format!(
                "moved {dir} from {} to {} by calibration: the list's categories follow the user's history{change}",
                from + 1,
                to + 1
            ))
        });
    }
}

/// Popularity debiasing: long-tail items lifted by smooth xQuAD or inverse popularity.
pub(crate) struct PopularityDebias {
    /// λ (xQuAD) or β (inverse) in `(0, 1]`.
    pub(crate) weight: f64,
    pub(crate) method: PopularityMethod,
    pub(crate) tail: Arc<TailCut>,
}

impl Reranker for PopularityDebias {
    fn wants(&self, n: usize) -> usize {
        pool(n)
    }

    fn rerank(&self, cx: &Context<'_>, items: &mut Vec<Recommendation>, n: usize) {
        let s = cx.s;
        let ids = ids(s, items);
        let is_tail = |i: Option<u32>| {
            i.is_none_or(|i| self.tail.tail.get(i as usize).copied().unwrap_or(true))
        };
        let tail: Vec<bool> = ids.iter().map(|&i| is_tail(i)).collect();
        let rel: Vec<f64> = relevance(items).into_iter().map(f64::from).collect();
        let order = match self.method {
            PopularityMethod::Xquad => {
                // P(tail | u): the tail's share of the user's history (half without one).
                let total: f64 = cx.profile.iter().map(|&(_, w)| f64::from(w.max(0.0))).sum();
                let in_tail: f64 = cx
                    .profile
                    .iter()
                    .filter(|&&(i, _)| is_tail(Some(i)))
                    .map(|&(_, w)| f64::from(w.max(0.0)))
                    .sum();
                let preference = if total > 0.0 { in_tail / total } else { 0.5 };
                algo::xquad(&rel, &tail, preference, self.weight, n)
            }
            PopularityMethod::Inverse => {
                // A ratio of scores, not a rescaling to [0, 1]: the least relevant candidate
                // must keep a relevance to divide.
                let top = items.iter().map(|r| r.score).fold(0.0f32, f32::max);
                let low = items.iter().map(|r| r.score).fold(f32::INFINITY, f32::min);
                let rel: Vec<f64> = if top > 0.0 && low >= 0.0 {
                    items.iter().map(|r| f64::from(r.score / top)).collect()
                } else {
                    // Scores of any sign (BPR, EASE, additive boosts): rescaled, kept above
                    // 0 so that the least relevant still has a relevance to divide.
                    rel.iter().map(|r| r + 0.01).collect()
                };
                let pop = s.live.popularity();
                let counts: Vec<f64> = ids
                    .iter()
                    .map(|i| i.map_or(0.0, |i| f64::from(pop.count(ItemIdx(i)))))
                    .collect();
                algo::inverse_popularity(&rel, &counts, self.weight, n)
            }
        };
        let min_head = self.tail.min_head;
        let pop = s.live.popularity();
        reorder(items, &order, "popularity", |from, to| {
            let count = ids[from].map_or(0, |i| pop.count(ItemIdx(i)));
            if to < from && tail[from] {
                Some(format!(
                    "moved up from {} to {} by popularity debiasing: a long-tail item ({count} interactions; head items have at least {min_head})",
                    from + 1,
                    to + 1
                ))
            } else if to > from && !tail[from] {
                Some(format!(
                    "moved down from {} to {} by popularity debiasing: a head item ({count} interactions)",
                    from + 1,
                    to + 1
                ))
            } else {
                None
            }
        });
    }
}

/// FA*IR: at least the table's count of protected items in every prefix.
pub(crate) struct ProtectedShare {
    pub(crate) table: Arc<Fair>,
}

impl Reranker for ProtectedShare {
    fn wants(&self, n: usize) -> usize {
        (n * 10).max(n + 50)
    }

    fn rerank(&self, cx: &Context<'_>, items: &mut Vec<Recommendation>, n: usize) {
        let Some(pred) = cx.plan.protected.as_ref() else {
            items.truncate(n);
            return;
        };
        let s = cx.s;
        let protected: Vec<bool> = ids(s, items)
            .iter()
            .map(|i| i.is_some_and(|i| pred.eval(&s.columns, i)))
            .collect();
        let algo::FairRanking {
            order,
            forced,
            satisfied,
        } = self.table.rerank(&protected, n);
        let (p, alpha) = (self.table.p(), self.table.alpha());
        let table = self.table.mtable();
        reorder(items, &order, "protected_share", |from, to| {
            // `forced[to]`: a protected item was placed at `to` ahead of a better one.
            if forced.get(to).copied().unwrap_or(false) {
                Some(format!(
                    "moved up from {} to {} by the protected group's share: at least {} protected items in the top {} (FA*IR, p = {p}, α = {alpha})",
                    from + 1,
                    to + 1,
                    table.get(to).copied().unwrap_or(0),
                    to + 1
                ))
            } else if to > from {
                Some(format!(
                    "moved down from {} to {} to make room for protected items (FA*IR, p = {p}, α = {alpha})",
                    from + 1,
                    to + 1
                ))
            } else {
                None
            }
        });
        if !satisfied {
            tracing::debug!("too few protected candidates for the FA*IR table");
        }
    }
}
