//! Item popularity: all-time totals, counts within a time window, and time-decayed trending.
//!
//! Only positive feedback counts towards popularity: a dislike says something about the user who
//! gave it, not about how many people want the item.
//!
//! Layout: per-item arrays indexed by [`ItemIdx`] for the totals and the decayed score, plus the
//! events in hour buckets (`BTreeMap<hour, Bucket>`) so that a windowed count reads only the
//! hours inside the window and an erasure can find a user's events. Within an hour, a user's
//! events on one item are kept as one aggregate (weight, count, first and last time), so memory
//! grows with the distinct (hour, user, item) triples, not with the number of events: a steady
//! stream of repeated interactions keeps it flat.
//!
//! What the aggregation costs is time resolution *inside* one hour, and only for repeats:
//! a windowed count includes an aggregate when its latest event is inside the window, and
//! retention drops an aggregate when its earliest event has expired (erring towards forgetting).
//! Erasure of a user or an item is exact.

use std::collections::BTreeMap;

use crate::{ItemIdx, Millis, Score, TopK, UserIdx};

const HOUR_MS: i64 = 3_600_000;
/// Rebase the decay anchor before `2^(Δ/half_life)` can approach `f64::MAX` (2^1023).
const MAX_DECAY_EXPONENT: f64 = 512.0;
/// A bucket's unsorted tail is merged into its aggregates once it is this long or as long as
/// the aggregates already there, whichever is more: amortized `O(log n)` per event.
const MIN_COMPACT: usize = 256;

/// One user's positive events on one item within one hour.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Agg {
    user: u32,
    item: u32,
    /// Sum of the weights.
    weight: f32,
    count: u32,
    /// Earliest and latest event, in milliseconds after the start of the hour.
    first: u32,
    last: u32,
    /// `Σ w · 2^((ts − last) / half_life)`: the decayed weight as of the latest event, which
    /// never overflows however short the half-life.
    decay: f64,
}

impl Agg {
    fn key(&self) -> (u32, u32) {
        (self.user, self.item)
    }
}

/// The events of one hour: aggregates sorted by (user, item), then an unsorted tail of events
/// not merged yet.
#[derive(Debug, Clone, Default)]
struct Bucket {
    entries: Vec<Agg>,
    /// Length of `entries` after the last merge.
    merged: usize,
}

/// A user's popularity contribution taken out by [`Popularity::take_user`], to be given back
/// with [`Popularity::restore`].
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    hour: i64,
    agg: Agg,
}

impl Contribution {
    /// One event, as [`Popularity::add`] would record it.
    pub(crate) fn event(user: UserIdx, item: ItemIdx, weight: f32, ts: Millis) -> Self {
        let hour = ts.div_euclid(HOUR_MS);
        let at = (ts - hour * HOUR_MS) as u32;
        Contribution {
            hour,
            agg: Agg {
                user: user.0,
                item: item.0,
                weight,
                count: 1,
                first: at,
                last: at,
                decay: weight as f64,
            },
        }
    }

    /// The item.
    pub fn item(&self) -> ItemIdx {
        ItemIdx(self.agg.item)
    }

    /// Time of the earliest event.
    pub fn first_ts(&self) -> Millis {
        self.hour * HOUR_MS + self.agg.first as i64
    }

    fn last_ts(&self) -> Millis {
        self.hour * HOUR_MS + self.agg.last as i64
    }
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
    buckets: BTreeMap<i64, Bucket>,
}

/// Sorts a bucket by (user, item) and folds equal keys into one aggregate.
fn merge(bucket: &mut Bucket, half_life_ms: f64) {
    let e = &mut bucket.entries;
    // A stable sort finds the already merged prefix as one run: a merge costs about the tail.
    e.sort_by_key(Agg::key);
    let mut kept = 0;
    for r in 0..e.len() {
        if kept > 0 && e[kept - 1].key() == e[r].key() {
            let x = e[r];
            let a = &mut e[kept - 1];
            let last = a.last.max(x.last);
            let rescale = |at: u32| ((at as f64 - last as f64) / half_life_ms).exp2();
            a.decay = a.decay * rescale(a.last) + x.decay * rescale(x.last);
            a.weight += x.weight;
            a.count += x.count;
            a.first = a.first.min(x.first);
            a.last = last;
        } else {
            e[kept] = e[r];
            kept += 1;
        }
    }
    e.truncate(kept);
    bucket.merged = kept;
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
        self.insert(Contribution::event(user, item, weight, ts));
    }

    /// Gives back what [`take_user`](Self::take_user) took.
    pub fn restore(&mut self, taken: Vec<Contribution>) {
        for c in taken {
            self.insert(c);
        }
    }

    fn insert(&mut self, c: Contribution) {
        let i = c.agg.item as usize;
        self.grow(i);
        let last = c.last_ts();
        if self.buckets.is_empty() && self.decayed.iter().all(|&d| d == 0.0) {
            self.anchor = last;
        }
        if (last - self.anchor) as f64 / self.half_life_ms > MAX_DECAY_EXPONENT {
            let scale = ((self.anchor - last) as f64 / self.half_life_ms).exp2();
            self.decayed.iter_mut().for_each(|d| *d *= scale);
            self.anchor = last;
        }
        self.totals[i] += c.agg.weight as f64;
        self.counts[i] += c.agg.count;
        self.decayed[i] += c.agg.decay * self.decay_factor(last);
        let half_life_ms = self.half_life_ms;
        // The first event of a later hour closes the newest bucket: merge it for good and give
        // back its spare capacity.
        if let Some(mut newest) = self.buckets.last_entry()
            && c.hour > *newest.key()
        {
            let b = newest.get_mut();
            merge(b, half_life_ms);
            b.entries.shrink_to_fit();
        }
        let b = self.buckets.entry(c.hour).or_default();
        b.entries.push(c.agg);
        if b.entries.len() - b.merged >= b.merged.max(MIN_COMPACT) {
            merge(b, half_life_ms);
        }
    }

    /// Number of aggregates held (merged or not): what the memory grows with.
    pub fn stored(&self) -> usize {
        self.buckets.values().map(|b| b.entries.len()).sum()
    }

    fn remove_where(&mut self, mut pred: impl FnMut(i64, &Agg) -> bool) -> Vec<Contribution> {
        let mut removed = Vec::new();
        self.buckets.retain(|&hour, b| {
            b.entries.retain(|a| {
                if pred(hour, a) {
                    removed.push(Contribution { hour, agg: *a });
                    false
                } else {
                    true
                }
            });
            b.merged = b.merged.min(b.entries.len());
            !b.entries.is_empty()
        });
        for c in &removed {
            let i = c.agg.item as usize;
            self.totals[i] = (self.totals[i] - c.agg.weight as f64).max(0.0);
            self.counts[i] -= c.agg.count;
            let d = c.agg.decay * self.decay_factor(c.last_ts());
            self.decayed[i] = (self.decayed[i] - d).max(0.0);
            if self.counts[i] == 0 {
                // Exact zero, so that rounding leftovers never rank a forgotten item.
                self.totals[i] = 0.0;
                self.decayed[i] = 0.0;
            }
        }
        removed
    }

    fn events_in(removed: &[Contribution]) -> usize {
        removed.iter().map(|c| c.agg.count as usize).sum()
    }

    /// Forgets every event of `user`; returns how many were removed. Cost: one pass over all
    /// aggregates, which is acceptable because erasure is rare and must be exact.
    pub fn remove_user(&mut self, user: UserIdx) -> usize {
        Self::events_in(&self.remove_where(|_, a| a.user == user.0))
    }

    /// Forgets every event of `user` and returns them, so that they can be given back later
    /// with [`restore`](Self::restore).
    pub fn take_user(&mut self, user: UserIdx) -> Vec<Contribution> {
        self.remove_where(|_, a| a.user == user.0)
    }

    /// Forgets the events older than `cutoff` (retention), with every event aggregated with one
    /// of them in its hour; returns how many.
    pub fn remove_before(&mut self, cutoff: Millis) -> usize {
        let removed = self.remove_where(|hour, a| hour * HOUR_MS + (a.first as i64) < cutoff);
        Self::events_in(&removed)
    }

    /// Forgets every event of `user` on `item`; returns how many were removed.
    pub fn remove_pair(&mut self, user: UserIdx, item: ItemIdx) -> usize {
        Self::events_in(&self.remove_where(|_, a| a.user == user.0 && a.item == item.0))
    }

    /// Forgets every event on `item`.
    pub fn remove_item(&mut self, item: ItemIdx) -> usize {
        Self::events_in(&self.remove_where(|_, a| a.item == item.0))
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

    /// The `n` items with the largest total weight of events at or after `since` (an hour's
    /// repeated events of one user on one item count when the latest is).
    pub fn top_since(
        &self,
        n: usize,
        since: Millis,
        keep: impl FnMut(ItemIdx) -> bool,
    ) -> Vec<crate::Scored> {
        let mut sums = vec![0.0f64; self.totals.len()];
        for (&hour, b) in self.buckets.range(since.div_euclid(HOUR_MS)..) {
            let recent = |a: &&Agg| hour * HOUR_MS + a.last as i64 >= since;
            for a in b.entries.iter().filter(recent) {
                sums[a.item as usize] += a.weight as f64;
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

    #[test]
    fn repeated_pairs_keep_memory_flat() {
        let mut p = Popularity::new(DAY as f64);
        let pairs = 300u32;
        let mut peak = 0;
        for round in 0..200i64 {
            for k in 0..pairs {
                p.add(UserIdx(k % 50), ItemIdx(k), 1.0, round * 10_000 + k as i64);
            }
            peak = peak.max(p.stored());
        }
        // Merged aggregates plus at most as long a tail, never one entry per event.
        assert!(peak <= 2 * pairs as usize, "peak {peak}");
        assert_eq!(p.count(ItemIdx(7)), 200);
        // The next hour closes this one: merged for good, one aggregate per pair.
        p.add(UserIdx(0), ItemIdx(0), 1.0, HOUR_MS);
        assert_eq!(p.stored(), pairs as usize + 1);
        assert_eq!(p.remove_user(UserIdx(3)), 6 * 200);
    }

    #[test]
    fn short_half_life_with_repeats_stays_finite() {
        let mut p = Popularity::new(1000.0);
        for k in 0..600 {
            p.add(UserIdx(0), ItemIdx(0), 1.0, k * 6_000);
        }
        let t = p.trending(ItemIdx(0), 599 * 6_000);
        assert!(t.is_finite() && (t - 1.0).abs() < 0.02, "{t}");
        p.add(UserIdx(1), ItemIdx(1), 1.0, HOUR_MS);
        assert_eq!(p.remove_user(UserIdx(0)), 600);
        assert_eq!(p.trending(ItemIdx(0), HOUR_MS), 0.0);
        assert!((p.trending(ItemIdx(1), HOUR_MS) - 1.0).abs() < 1e-9);
    }

    /// Every statistic from the events themselves, for comparison.
    struct Naive(Vec<(u32, u32, f32, Millis)>);

    impl Naive {
        fn total(&self, i: u32) -> f64 {
            self.0.iter().filter(|e| e.1 == i).map(|e| e.2 as f64).sum()
        }
        fn trending(&self, i: u32, now: Millis, half_life: f64) -> f64 {
            let decay = |e: &&(u32, u32, f32, Millis)| ((e.3 - now) as f64 / half_life).exp2();
            self.0
                .iter()
                .filter(|e| e.1 == i)
                .map(|e| e.2 as f64 * decay(&e))
                .sum()
        }
        fn since(&self, i: u32, since: Millis) -> f64 {
            let recent = self.0.iter().filter(|e| e.1 == i && e.3 >= since);
            recent.map(|e| e.2 as f64).sum()
        }
    }

    proptest! {
        /// Aggregating repeats changes no statistic at hour resolution: totals, counts,
        /// trending, windowed sums and retention from an hour's start equal the events'.
        #[test]
        fn aggregates_equal_the_events(
            events in proptest::collection::vec((0u32..3, 0u32..4, 1u32..5, 0i64..(6 * HOUR_MS)), 0..300),
            since_hour in 0i64..7,
            cutoff_hour in 0i64..7,
        ) {
            let mut p = Popularity::new(2.0 * HOUR_MS as f64);
            let mut naive = Naive(Vec::new());
            for &(u, i, w, ts) in &events {
                p.add(UserIdx(u), ItemIdx(i), w as f32, ts);
                naive.0.push((u, i, w as f32, ts));
            }
            let now = 6 * HOUR_MS;
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
            for i in 0..4 {
                prop_assert!(close(p.total(ItemIdx(i)), naive.total(i)));
                let n = naive.0.iter().filter(|e| e.1 == i).count() as u32;
                prop_assert_eq!(p.count(ItemIdx(i)), n);
                let t = naive.trending(i, now, 2.0 * HOUR_MS as f64);
                prop_assert!(close(p.trending(ItemIdx(i), now), t));
            }
            let since = since_hour * HOUR_MS;
            for s in p.top_since(4, since, |_| true) {
                prop_assert!(close(s.score as f64, naive.since(s.idx, since)));
            }
            let cutoff = cutoff_hour * HOUR_MS;
            let expired = naive.0.iter().filter(|e| e.3 < cutoff).count();
            prop_assert_eq!(p.remove_before(cutoff), expired);
            naive.0.retain(|e| e.3 >= cutoff);
            for i in 0..4 {
                prop_assert!(close(p.total(ItemIdx(i)), naive.total(i)));
            }
        }

        /// A user taken out and given back leaves the statistics as they were.
        #[test]
        fn take_and_restore_round_trip(
            events in proptest::collection::vec((0u32..3, 0u32..4, 1u32..5, 0i64..(6 * HOUR_MS)), 0..200),
            victim in 0u32..3,
        ) {
            let mut p = Popularity::new(HOUR_MS as f64);
            for &(u, i, w, ts) in &events {
                p.add(UserIdx(u), ItemIdx(i), w as f32, ts);
            }
            let before: Vec<_> = (0..4).map(|i| (p.total(ItemIdx(i)), p.count(ItemIdx(i)))).collect();
            let taken = p.take_user(UserIdx(victim));
            p.restore(taken);
            for (i, &(total, count)) in before.iter().enumerate() {
                prop_assert!((p.total(ItemIdx(i as u32)) - total).abs() < 1e-9);
                prop_assert_eq!(p.count(ItemIdx(i as u32)), count);
            }
        }

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
