//! Item popularity: all-time totals, counts within a time window, and time-decayed trending.
//!
//! Only positive feedback counts towards popularity: a dislike says something about the user who
//! gave it, not about how many people want the item.
//!
//! Layout: per-item arrays indexed by [`ItemIdx`] for the totals and the decayed score, plus the
//! events themselves in hour buckets (`BTreeMap<hour, Vec<BucketEntry>>`) so that a windowed
//! count reads only the events inside the window and an erasure can find a user's events.

use std::collections::BTreeMap;

use crate::{ItemIdx, Millis, Score, TopK, UserIdx};

const HOUR_MS: i64 = 3_600_000;
/// Rebase the decay anchor before `2^(Δ/half_life)` can approach `f64::MAX` (2^1023).
const MAX_DECAY_EXPONENT: f64 = 512.0;

#[derive(Debug, Clone, Copy)]
struct BucketEntry {
    user: u32,
    item: u32,
    weight: f32,
    ts: Millis,
}

/// Popularity statistics over the positive events applied to it.
#[derive(Debug, Clone)]
pub struct Popularity {
    half_life_ms: f64,
    totals: Vec<f64>,
    counts: Vec<u32>,
    /// `Σ w · 2^((ts − anchor) / half_life)` per item.
    decayed: Vec<f64>,
    anchor: Millis,
    buckets: BTreeMap<i64, Vec<BucketEntry>>,
}

impl Popularity {
    /// Empty statistics whose trending score halves every `half_life_ms` milliseconds.
    pub fn new(half_life_ms: f64) -> Self {
        assert!(half_life_ms > 0.0, "half-life must be positive");
        Self {
            half_life_ms,
            totals: Vec::new(),
            counts: Vec::new(),
            decayed: Vec::new(),
            anchor: 0,
            buckets: BTreeMap::new(),
        }
    }

    fn grow(&mut self, item: usize) {
        if self.totals.len() <= item {
            self.totals.resize(item + 1, 0.0);
            self.counts.resize(item + 1, 0);
            self.decayed.resize(item + 1, 0.0);
        }
    }

    fn decay_factor(&self, ts: Millis) -> f64 {
        ((ts - self.anchor) as f64 / self.half_life_ms).exp2()
    }

    /// Records one event. Events with `weight <= 0` (or NaN) are ignored.
    pub fn add(&mut self, user: UserIdx, item: ItemIdx, weight: f32, ts: Millis) {
        if weight.is_nan() || weight <= 0.0 {
            return;
        }
        let i = item.0 as usize;
        self.grow(i);
        if self.buckets.is_empty() && self.decayed.iter().all(|&d| d == 0.0) {
            self.anchor = ts;
        }
        if (ts - self.anchor) as f64 / self.half_life_ms > MAX_DECAY_EXPONENT {
            let scale = ((self.anchor - ts) as f64 / self.half_life_ms).exp2();
            self.decayed.iter_mut().for_each(|d| *d *= scale);
            self.anchor = ts;
        }
        self.totals[i] += weight as f64;
        self.counts[i] += 1;
        self.decayed[i] += weight as f64 * self.decay_factor(ts);
        self.buckets
            .entry(ts.div_euclid(HOUR_MS))
            .or_default()
            .push(BucketEntry {
                user: user.0,
                item: item.0,
                weight,
                ts,
            });
    }

    fn remove_where(&mut self, mut pred: impl FnMut(&BucketEntry) -> bool) -> Vec<BucketEntry> {
        let mut removed = Vec::new();
        self.buckets.retain(|_, entries| {
            entries.retain(|e| {
                if pred(e) {
                    removed.push(*e);
                    false
                } else {
                    true
                }
            });
            !entries.is_empty()
        });
        for e in &removed {
            let i = e.item as usize;
            self.totals[i] = (self.totals[i] - e.weight as f64).max(0.0);
            self.counts[i] -= 1;
            let d = e.weight as f64 * self.decay_factor(e.ts);
            self.decayed[i] = (self.decayed[i] - d).max(0.0);
            if self.counts[i] == 0 {
                // Exact zero, so that rounding leftovers never rank a forgotten item.
                self.totals[i] = 0.0;
                self.decayed[i] = 0.0;
            }
        }
        removed
    }

    /// Forgets every event of `user`; returns how many were removed. Cost: one pass over all
    /// events, which is acceptable because erasure is rare and must be exact.
    pub fn remove_user(&mut self, user: UserIdx) -> usize {
        self.remove_where(|e| e.user == user.0).len()
    }

    /// Forgets every event of `user` and returns them as `(item, weight, time)`, oldest
    /// bucket first, so that they can be added back later.
    pub fn take_user(&mut self, user: UserIdx) -> Vec<(ItemIdx, f32, Millis)> {
        self.remove_where(|e| e.user == user.0)
            .into_iter()
            .map(|e| (ItemIdx(e.item), e.weight, e.ts))
            .collect()
    }

    /// Forgets every event older than `cutoff` (retention); returns how many.
    pub fn remove_before(&mut self, cutoff: Millis) -> usize {
        self.remove_where(|e| e.ts < cutoff).len()
    }

    /// Forgets every event on `item`.
    pub fn remove_item(&mut self, item: ItemIdx) -> usize {
        self.remove_where(|e| e.item == item.0).len()
    }

    /// Sum of positive weights on `item` over all time.
    pub fn total(&self, item: ItemIdx) -> f64 {
        self.totals.get(item.0 as usize).copied().unwrap_or(0.0)
    }

    /// Number of positive events on `item` over all time.
    pub fn count(&self, item: ItemIdx) -> u32 {
        self.counts.get(item.0 as usize).copied().unwrap_or(0)
    }

    /// The trending score of `item` at time `now`: every event's weight halved once per
    /// half-life of age.
    pub fn trending(&self, item: ItemIdx, now: Millis) -> f64 {
        let d = self.decayed.get(item.0 as usize).copied().unwrap_or(0.0);
        d * ((self.anchor - now) as f64 / self.half_life_ms).exp2()
    }

    /// Number of items with at least one positive event.
    pub fn items_with_events(&self) -> usize {
        self.counts.iter().filter(|&&c| c > 0).count()
    }

    fn top_by(
        &self,
        n: usize,
        scores: impl Iterator<Item = (usize, f64)>,
        mut keep: impl FnMut(ItemIdx) -> bool,
    ) -> Vec<crate::Scored> {
        let mut top = TopK::new(n);
        for (i, s) in scores {
            if s > 0.0 && keep(ItemIdx(i as u32)) {
                top.push(i as u32, s as Score);
            }
        }
        top.into_sorted()
    }

    /// The `n` items with the largest all-time total among those `keep` accepts. Items without
    /// positive events never appear. Ties go to the smaller id.
    pub fn top_all_time(&self, n: usize, keep: impl FnMut(ItemIdx) -> bool) -> Vec<crate::Scored> {
        self.top_by(n, self.totals.iter().copied().enumerate(), keep)
    }

    /// The `n` items with the largest total weight of events at or after `since`.
    pub fn top_since(
        &self,
        n: usize,
        since: Millis,
        keep: impl FnMut(ItemIdx) -> bool,
    ) -> Vec<crate::Scored> {
        let mut sums = vec![0.0f64; self.totals.len()];
        for entries in self
            .buckets
            .range(since.div_euclid(HOUR_MS)..)
            .map(|(_, e)| e)
        {
            for e in entries.iter().filter(|e| e.ts >= since) {
                sums[e.item as usize] += e.weight as f64;
            }
        }
        self.top_by(n, sums.into_iter().enumerate(), keep)
    }

    /// The `n` items with the largest trending score at `now`.
    pub fn top_trending(
        &self,
        n: usize,
        now: Millis,
        keep: impl FnMut(ItemIdx) -> bool,
    ) -> Vec<crate::Scored> {
        let scale = ((self.anchor - now) as f64 / self.half_life_ms).exp2();
        self.top_by(n, self.decayed.iter().map(|d| d * scale).enumerate(), keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: i64 = 24 * HOUR_MS;

    #[test]
    fn trending_halves_per_half_life_and_prefers_recent() {
        let mut p = Popularity::new(DAY as f64);
        p.add(UserIdx(0), ItemIdx(0), 4.0, 0);
        p.add(UserIdx(1), ItemIdx(1), 3.0, 2 * DAY);
        assert!((p.trending(ItemIdx(0), 2 * DAY) - 1.0).abs() < 1e-9);
        assert!((p.trending(ItemIdx(1), 2 * DAY) - 3.0).abs() < 1e-9);
        let trending = p.top_trending(2, 2 * DAY, |_| true);
        assert_eq!(trending[0].idx, 1);
        let all_time = p.top_all_time(2, |_| true);
        assert_eq!(all_time[0].idx, 0);
    }

    #[test]
    fn window_counts_only_recent_events() {
        let mut p = Popularity::new(DAY as f64);
        p.add(UserIdx(0), ItemIdx(0), 1.0, 10);
        p.add(UserIdx(0), ItemIdx(0), 1.0, 20);
        p.add(UserIdx(0), ItemIdx(1), 1.0, 5 * DAY);
        p.add(UserIdx(1), ItemIdx(2), 1.0, 5 * DAY + 30 * 60_000);
        let top = p.top_since(10, 5 * DAY + 10 * 60_000, |_| true);
        assert_eq!(top.iter().map(|s| s.idx).collect::<Vec<_>>(), vec![2]);
        let top = p.top_since(10, 0, |_| true);
        assert_eq!(top[0], crate::Scored { idx: 0, score: 2.0 });
    }

    #[test]
    fn negative_feedback_and_filters_are_ignored_or_applied() {
        let mut p = Popularity::new(DAY as f64);
        p.add(UserIdx(0), ItemIdx(0), -5.0, 0);
        p.add(UserIdx(0), ItemIdx(1), 1.0, 0);
        p.add(UserIdx(0), ItemIdx(2), 2.0, 0);
        assert_eq!(p.count(ItemIdx(0)), 0);
        let top = p.top_all_time(5, |i| i != ItemIdx(2));
        assert_eq!(top, vec![crate::Scored { idx: 1, score: 1.0 }]);
    }

    #[test]
    fn far_future_event_rebases_without_overflow() {
        let mut p = Popularity::new(1000.0);
        p.add(UserIdx(0), ItemIdx(0), 1.0, 0);
        p.add(UserIdx(0), ItemIdx(1), 1.0, 2_000_000);
        let t = p.trending(ItemIdx(1), 2_000_000);
        assert!((t - 1.0).abs() < 1e-9 && t.is_finite());
        assert_eq!(p.trending(ItemIdx(0), 2_000_000), 0.0);
    }

    proptest! {
        /// Removing a user's events leaves exactly the statistics of the events never given.
        #[test]
        fn remove_user_equals_never_added(
            events in proptest::collection::vec((0u32..4, 0u32..6, 1u32..5, 0i64..(10 * DAY)), 0..80),
            victim in 0u32..4,
        ) {
            let mut with = Popularity::new(DAY as f64);
            let mut without = Popularity::new(DAY as f64);
            // Both share the anchor so decayed sums are comparable.
            with.add(UserIdx(99), ItemIdx(0), 1.0, 0);
            without.add(UserIdx(99), ItemIdx(0), 1.0, 0);
            for &(u, i, w, ts) in &events {
                with.add(UserIdx(u), ItemIdx(i), w as f32, ts);
                if u != victim {
                    without.add(UserIdx(u), ItemIdx(i), w as f32, ts);
                }
            }
            let removed = with.remove_user(UserIdx(victim));
            prop_assert_eq!(removed, events.iter().filter(|e| e.0 == victim).count());
            for i in 0..6 {
                let i = ItemIdx(i);
                prop_assert_eq!(with.count(i), without.count(i));
                prop_assert!((with.total(i) - without.total(i)).abs() < 1e-6);
                prop_assert!((with.trending(i, 10 * DAY) - without.trending(i, 10 * DAY)).abs() < 1e-6);
            }
            prop_assert_eq!(
                with.top_since(6, 3 * DAY, |_| true).iter().map(|s| s.idx).collect::<Vec<_>>(),
                without.top_since(6, 3 * DAY, |_| true).iter().map(|s| s.idx).collect::<Vec<_>>()
            );
        }
    }
}
