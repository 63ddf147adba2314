//! The in-memory view of the interaction log that serving reads.
//!
//! Layout: `users[u]` is user `u`'s history, one [`Interaction`] per distinct item, sorted by
//! item id so that "has the user seen this item" is a binary search; `item_users[i]` lists the
//! users who interacted with item `i`, oldest first. Both are indexed by the store's dense ids.
//!
//! *Private* users (who did not consent to their events training models) keep their own history,
//! which personalizes their own results, but take no part in anything shared: popularity,
//! trending and co-occurrence never see them.

use rustc_hash::FxHashMap;

use crate::popularity::Contribution;
use crate::{ItemIdx, Millis, Popularity, Scored, TopK, UserIdx};

/// What one user did with one item, aggregated over all their events on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interaction {
    /// The item.
    pub item: ItemIdx,
    /// Sum of the event weights; negative when the feedback was negative on balance.
    pub weight: f32,
    /// Number of events.
    pub count: u32,
    /// Time of the latest event.
    pub last_ts: Millis,
}

/// An item related to another one by co-occurrence in user histories.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Related {
    /// The related item.
    pub item: ItemIdx,
    /// Cosine similarity of the two items' user sets (binary, positive interactions only).
    pub score: f32,
    /// Number of sampled users who interacted positively with both.
    pub co_users: u32,
}

/// Histories, reverse histories and popularity, updated event by event.
#[derive(Debug, Clone)]
pub struct LiveIndex {
    users: Vec<Vec<Interaction>>,
    item_users: Vec<Vec<UserIdx>>,
    /// Per item: how many of `item_users` are private.
    private_users: Vec<u32>,
    /// Per user: excluded from shared statistics.
    private: Vec<bool>,
    /// The popularity contributions of private users, kept so that a user who shares again is
    /// added back exactly, without a store read racing new events.
    private_log: FxHashMap<u32, Vec<Contribution>>,
    popularity: Popularity,
    events: u64,
}

impl LiveIndex {
    /// An empty index using `popularity` for its popularity statistics.
    pub fn new(popularity: Popularity) -> Self {
        Self {
            users: Vec::new(),
            item_users: Vec::new(),
            private_users: Vec::new(),
            private: Vec::new(),
            private_log: FxHashMap::default(),
            popularity,
            events: 0,
        }
    }

    /// Applies one event of weight `weight` (already mapped from its type) at time `ts`.
    pub fn apply(&mut self, user: UserIdx, item: ItemIdx, weight: f32, ts: Millis) {
        let (u, i) = (user.0 as usize, item.0 as usize);
        if self.users.len() <= u {
            self.users.resize_with(u + 1, Vec::new);
        }
        if self.item_users.len() <= i {
            self.item_users.resize_with(i + 1, Vec::new);
            self.private_users.resize(i + 1, 0);
        }
        let private = self.is_private(user);
        let history = &mut self.users[u];
        match history.binary_search_by_key(&item, |x| x.item) {
            Ok(pos) => {
                let x = &mut history[pos];
                x.weight += weight;
                x.count += 1;
                x.last_ts = x.last_ts.max(ts);
            }
            Err(pos) => {
                history.insert(
                    pos,
                    Interaction {
                        item,
                        weight,
                        count: 1,
                        last_ts: ts,
                    },
                );
                self.item_users[i].push(user);
                self.private_users[i] += private as u32;
            }
        }
        self.count_in_popularity(user, item, weight, ts);
        self.events += 1;
    }

    /// Adds one event to popularity, or to the private log of a private user.
    fn count_in_popularity(&mut self, user: UserIdx, item: ItemIdx, weight: f32, ts: Millis) {
        if self.is_private(user) {
            // What popularity would ignore is not worth keeping either.
            if weight > 0.0 {
                let c = Contribution::event(user, item, weight, ts);
                self.private_log.entry(user.0).or_default().push(c);
            }
        } else {
            self.popularity.add(user, item, weight, ts);
        }
    }

    /// Whether the user is kept out of shared statistics.
    pub fn is_private(&self, user: UserIdx) -> bool {
        self.private.get(user.0 as usize).copied().unwrap_or(false)
    }

    /// Makes a user private (out of popularity and co-occurrence) or shared again.
    pub fn set_private(&mut self, user: UserIdx, private: bool) {
        if self.is_private(user) == private {
            return;
        }
        let u = user.0 as usize;
        if self.private.len() <= u {
            self.private.resize(u + 1, false);
        }
        self.private[u] = private;
        for x in self.users.get(u).map_or(&[][..], Vec::as_slice) {
            let c = &mut self.private_users[x.item.0 as usize];
            *c = if private { *c + 1 } else { *c - 1 };
        }
        if private {
            let log = self.popularity.take_user(user);
            self.private_log.insert(user.0, log);
        } else {
            let log = self.private_log.remove(&user.0).unwrap_or_default();
            self.popularity.restore(log);
        }
    }

    /// The user's history sorted by item id; empty for unknown users.
    pub fn history(&self, user: UserIdx) -> &[Interaction] {
        self.users.get(user.0 as usize).map_or(&[], Vec::as_slice)
    }

    /// Whether the user has any event on the item (positive or negative).
    pub fn has_seen(&self, user: UserIdx, item: ItemIdx) -> bool {
        self.history(user)
            .binary_search_by_key(&item, |x| x.item)
            .is_ok()
    }

    /// Users who interacted with the item, oldest first.
    pub fn item_users(&self, item: ItemIdx) -> &[UserIdx] {
        self.item_users
            .get(item.0 as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// Popularity statistics.
    pub fn popularity(&self) -> &Popularity {
        &self.popularity
    }

    /// Number of events applied (and not removed).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Forgets everything about `user`; returns the number of events removed.
    pub fn remove_user(&mut self, user: UserIdx) -> u64 {
        let Some(history) = self.users.get_mut(user.0 as usize) else {
            return 0;
        };
        let history = std::mem::take(history);
        let private = self.private.get(user.0 as usize).copied().unwrap_or(false);
        let mut removed = 0u64;
        for x in &history {
            removed += x.count as u64;
            let i = x.item.0 as usize;
            if let Some(users) = self.item_users.get_mut(i) {
                users.retain(|&u| u != user);
                self.private_users[i] -= private as u32;
            }
        }
        if let Some(p) = self.private.get_mut(user.0 as usize) {
            *p = false;
        }
        self.private_log.remove(&user.0);
        self.popularity.remove_user(user);
        self.events -= removed;
        removed
    }

    /// Forgets expired events: `expired` lists each one as `(user, item, weight)` (as applied),
    /// all older than `cutoff`, which also drops them from popularity.
    pub fn expire(&mut self, expired: &[(UserIdx, ItemIdx, f32)], cutoff: Millis) {
        for &(user, item, weight) in expired {
            let Some(history) = self.users.get_mut(user.0 as usize) else {
                continue;
            };
            let Ok(pos) = history.binary_search_by_key(&item, |x| x.item) else {
                continue;
            };
            let x = &mut history[pos];
            x.weight -= weight;
            x.count -= 1;
            self.events -= 1;
            if x.count == 0 {
                history.remove(pos);
                let i = item.0 as usize;
                self.item_users[i].retain(|&u| u != user);
                let private = self.private.get(user.0 as usize).copied().unwrap_or(false);
                self.private_users[i] -= private as u32;
            }
        }
        self.popularity.remove_before(cutoff);
        for log in self.private_log.values_mut() {
            log.retain(|c| c.first_ts() >= cutoff);
        }
    }

    /// Replaces what the index holds of `user`'s events on `item` by `events` (each
    /// `(weight, ts)` as applied, in time order): to delete some of them. Popularity forgets
    /// every aggregate of the pair (one pass over all of them, as for an erasure) and takes the
    /// kept events back; the user keeps their place among the item's users if any is kept.
    pub fn replace_pair(&mut self, user: UserIdx, item: ItemIdx, events: &[(f32, Millis)]) {
        let i = item.0 as usize;
        if let Some(history) = self.users.get_mut(user.0 as usize)
            && let Ok(pos) = history.binary_search_by_key(&item, |x| x.item)
        {
            let old = history.remove(pos);
            self.events -= old.count as u64;
            if events.is_empty() {
                self.item_users[i].retain(|&u| u != user);
                self.private_users[i] -= self.is_private(user) as u32;
            } else {
                // Re-inserted below without touching the item's user list.
                let history = &mut self.users[user.0 as usize];
                let (weight, last_ts) = events
                    .iter()
                    .fold((0.0f32, Millis::MIN), |(w, t), &(x, ts)| (w + x, t.max(ts)));
                history.insert(
                    pos,
                    Interaction {
                        item,
                        weight,
                        count: events.len() as u32,
                        last_ts,
                    },
                );
                self.events += events.len() as u64;
            }
        } else {
            // Nothing held: the kept events cannot have been applied either.
            debug_assert!(events.is_empty(), "kept events that were never applied");
            return;
        }
        self.popularity.remove_pair(user, item);
        if let Some(log) = self.private_log.get_mut(&user.0) {
            log.retain(|c| c.item() != item);
        }
        for &(w, ts) in events {
            self.count_in_popularity(user, item, w, ts);
        }
    }

    /// Forgets everything about `item`; returns the number of events removed.
    pub fn remove_item(&mut self, item: ItemIdx) -> u64 {
        let Some(users) = self.item_users.get_mut(item.0 as usize) else {
            return 0;
        };
        let users = std::mem::take(users);
        self.private_users[item.0 as usize] = 0;
        let mut removed = 0u64;
        for u in users {
            let history = &mut self.users[u.0 as usize];
            if let Ok(pos) = history.binary_search_by_key(&item, |x| x.item) {
                removed += history.remove(pos).count as u64;
            }
        }
        self.popularity.remove_item(item);
        for log in self.private_log.values_mut() {
            log.retain(|c| c.item() != item);
        }
        self.events -= removed;
        removed
    }

    /// Items that co-occur with `item` in the histories of its most recent `max_users` users,
    /// scored by cosine similarity of the binary user sets, best `n` among those `keep` accepts.
    /// Only positive interactions count on either side. Ties go to the smaller item id.
    pub fn related(
        &self,
        item: ItemIdx,
        n: usize,
        max_users: usize,
        mut keep: impl FnMut(ItemIdx) -> bool,
    ) -> Vec<Related> {
        let users = self.item_users(item);
        let start = users.len().saturating_sub(max_users);
        let mut co: FxHashMap<u32, u32> = FxHashMap::default();
        let mut sampled = 0u32;
        for &u in &users[start..] {
            if self.is_private(u) {
                continue;
            }
            let history = self.history(u);
            let positive = history
                .binary_search_by_key(&item, |x| x.item)
                .is_ok_and(|p| history[p].weight > 0.0);
            if !positive {
                continue;
            }
            sampled += 1;
            for x in history.iter().filter(|x| x.weight > 0.0 && x.item != item) {
                *co.entry(x.item.0).or_insert(0) += 1;
            }
        }
        if sampled == 0 {
            return Vec::new();
        }
        let mut top = TopK::new(n);
        for (&j, &c) in &co {
            if !keep(ItemIdx(j)) {
                continue;
            }
            let shared =
                self.item_users(ItemIdx(j)).len() - self.private_users[j as usize] as usize;
            let nj = shared.max(c as usize) as f32;
            top.push(j, c as f32 / (sampled as f32 * nj).sqrt());
        }
        top.into_sorted()
            .into_iter()
            .map(|Scored { idx, score }| Related {
                item: ItemIdx(idx),
                score,
                co_users: co[&idx],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn index() -> LiveIndex {
        LiveIndex::new(Popularity::new(86_400_000.0))
    }

    #[test]
    fn aggregates_per_item_and_tracks_seen() {
        let mut live = index();
        live.apply(UserIdx(3), ItemIdx(5), 1.0, 10);
        live.apply(UserIdx(3), ItemIdx(2), 2.0, 5);
        live.apply(UserIdx(3), ItemIdx(5), 8.0, 7);
        let h = live.history(UserIdx(3));
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].item, ItemIdx(2));
        assert_eq!(
            h[1],
            Interaction {
                item: ItemIdx(5),
                weight: 9.0,
                count: 2,
                last_ts: 10
            }
        );
        assert!(live.has_seen(UserIdx(3), ItemIdx(2)));
        assert!(!live.has_seen(UserIdx(3), ItemIdx(4)));
        assert!(live.history(UserIdx(100)).is_empty());
        assert_eq!(live.item_users(ItemIdx(5)), &[UserIdx(3)]);
        assert_eq!(live.events(), 3);
    }

    #[test]
    fn related_counts_positive_co_occurrence() {
        let mut live = index();
        // Users 0 and 1 both liked items 0 and 1; user 2 liked 0 and disliked 2.
        for u in 0..2 {
            live.apply(UserIdx(u), ItemIdx(0), 1.0, 0);
            live.apply(UserIdx(u), ItemIdx(1), 1.0, 0);
        }
        live.apply(UserIdx(2), ItemIdx(0), 1.0, 0);
        live.apply(UserIdx(2), ItemIdx(2), -1.0, 0);
        live.apply(UserIdx(2), ItemIdx(3), 1.0, 0);
        let rel = live.related(ItemIdx(0), 10, 100, |_| true);
        assert_eq!(rel.len(), 2);
        assert_eq!(rel[0].item, ItemIdx(1));
        assert_eq!(rel[0].co_users, 2);
        assert!((rel[0].score - 2.0 / (3.0f32 * 2.0).sqrt()).abs() < 1e-6);
        assert_eq!(rel[1].item, ItemIdx(3));
        assert!(
            live.related(ItemIdx(0), 10, 100, |i| i != ItemIdx(1))
                .iter()
                .all(|r| r.item != ItemIdx(1))
        );
        assert!(live.related(ItemIdx(9), 10, 100, |_| true).is_empty());
    }

    proptest! {
        /// After removing a user, the index equals one built without that user's events.
        #[test]
        fn remove_user_equals_rebuild(
            events in proptest::collection::vec((0u32..5, 0u32..8, -2i32..6, 0i64..1000), 0..100),
            victim in 0u32..5,
        ) {
            let mut with = index();
            let mut without = index();
            for &(u, i, w, ts) in &events {
                with.apply(UserIdx(u), ItemIdx(i), w as f32, ts);
                if u != victim {
                    without.apply(UserIdx(u), ItemIdx(i), w as f32, ts);
                }
            }
            with.remove_user(UserIdx(victim));
            prop_assert_eq!(with.events(), without.events());
            for u in 0..5 {
                prop_assert_eq!(with.history(UserIdx(u)), without.history(UserIdx(u)));
            }
            for i in 0..8 {
                let i = ItemIdx(i);
                prop_assert_eq!(with.item_users(i), without.item_users(i));
                prop_assert_eq!(with.related(i, 8, 100, |_| true), without.related(i, 8, 100, |_| true));
            }
        }

        /// A private user (made private at any point) is invisible to popularity and
        /// co-occurrence, but keeps their own history; made shared again, the index equals one
        /// where they always were.
        #[test]
        fn private_users_take_no_part_in_shared_statistics(
            events in proptest::collection::vec((0u32..5, 0u32..8, -2i32..6, 0i64..1000), 0..100),
            private in 0u32..5,
            at in 0usize..100,
        ) {
            let mut live = index();
            let mut without = index();
            let mut always = index();
            for (k, &(u, i, w, ts)) in events.iter().enumerate() {
                if k == at.min(events.len()) {
                    live.set_private(UserIdx(private), true);
                }
                live.apply(UserIdx(u), ItemIdx(i), w as f32, ts);
                always.apply(UserIdx(u), ItemIdx(i), w as f32, ts);
                if u != private {
                    without.apply(UserIdx(u), ItemIdx(i), w as f32, ts);
                }
            }
            live.set_private(UserIdx(private), true);
            prop_assert!(live.is_private(UserIdx(private)));
            prop_assert_eq!(live.history(UserIdx(private)), always.history(UserIdx(private)));
            for i in 0..8 {
                let i = ItemIdx(i);
                prop_assert_eq!(live.popularity().count(i), without.popularity().count(i));
                prop_assert!((live.popularity().total(i) - without.popularity().total(i)).abs() < 1e-6);
                let related = live.related(i, 8, 100, |_| true);
                prop_assert_eq!(&related, &without.related(i, 8, 100, |_| true));
            }
            live.set_private(UserIdx(private), false);
            for i in 0..8 {
                let i = ItemIdx(i);
                prop_assert_eq!(live.popularity().count(i), always.popularity().count(i));
                prop_assert!((live.popularity().total(i) - always.popularity().total(i)).abs() < 1e-6);
                prop_assert_eq!(live.related(i, 8, 100, |_| true), always.related(i, 8, 100, |_| true));
            }
        }

        /// Replacing a pair's events by some of them leaves the index a rebuild without the
        /// others would give: histories, item users, popularity (also with the user private)
        /// and co-occurrence.
        #[test]
        fn replace_pair_equals_rebuild_without_the_deleted(
            events in proptest::collection::vec((0u32..4, 0u32..5, -2i32..6, 0i64..20_000_000), 0..80),
            pair in (0u32..4, 0u32..5),
            deleted in proptest::collection::vec(any::<bool>(), 80),
            private in proptest::option::of(0u32..4),
        ) {
            let (pu, pi) = (UserIdx(pair.0), ItemIdx(pair.1));
            let mut live = index();
            let mut kept = index();
            if let Some(p) = private {
                live.set_private(UserIdx(p), true);
                kept.set_private(UserIdx(p), true);
            }
            let mut remaining = Vec::new();
            for (k, &(u, i, w, ts)) in events.iter().enumerate() {
                live.apply(UserIdx(u), ItemIdx(i), w as f32, ts);
                if (UserIdx(u), ItemIdx(i)) == (pu, pi) {
                    if deleted[k] {
                        continue;
                    }
                    remaining.push((w as f32, ts));
                }
                kept.apply(UserIdx(u), ItemIdx(i), w as f32, ts);
            }
            live.replace_pair(pu, pi, &remaining);
            if let Some(p) = private {
                // Shared again: the private log was kept right too.
                live.set_private(UserIdx(p), false);
                kept.set_private(UserIdx(p), false);
            }
            prop_assert_eq!(live.events(), kept.events());
            for u in 0..4 {
                let (a, b) = (live.history(UserIdx(u)), kept.history(UserIdx(u)));
                prop_assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(b) {
                    prop_assert_eq!((x.item, x.count, x.last_ts), (y.item, y.count, y.last_ts));
                    prop_assert!((x.weight - y.weight).abs() < 1e-4);
                }
            }
            let now = 20_000_000;
            for i in 0..5 {
                let i = ItemIdx(i);
                let mut users = live.item_users(i).to_vec();
                let mut want = kept.item_users(i).to_vec();
                users.sort();
                want.sort();
                prop_assert_eq!(users, want);
                let (p, q) = (live.popularity(), kept.popularity());
                prop_assert_eq!(p.count(i), q.count(i));
                prop_assert!((p.total(i) - q.total(i)).abs() < 1e-4);
                prop_assert!((p.trending(i, now) - q.trending(i, now)).abs() < 1e-4 * (1.0 + q.trending(i, now)));
                prop_assert_eq!(live.related(i, 5, 100, |_| true), kept.related(i, 5, 100, |_| true));
            }
        }

        /// Expiring old events leaves the index a rebuild from the remaining events would give.
        #[test]
        fn expiry_equals_rebuild_from_what_remains(
            events in proptest::collection::vec((0u32..5, 0u32..8, 1i32..6, 0i64..1000), 0..100),
            cutoff in 0i64..1000,
        ) {
            let mut live = index();
            let mut kept = index();
            for &(u, i, w, ts) in &events {
                live.apply(UserIdx(u), ItemIdx(i), w as f32, ts);
                if ts >= cutoff {
                    kept.apply(UserIdx(u), ItemIdx(i), w as f32, ts);
                }
            }
            let expired: Vec<_> = events
                .iter()
                .filter(|e| e.3 < cutoff)
                .map(|&(u, i, w, _)| (UserIdx(u), ItemIdx(i), w as f32))
                .collect();
            live.expire(&expired, cutoff);
            prop_assert_eq!(live.events(), kept.events());
            for u in 0..5 {
                let (a, b) = (live.history(UserIdx(u)), kept.history(UserIdx(u)));
                prop_assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(b) {
                    prop_assert_eq!((x.item, x.count, x.last_ts), (y.item, y.count, y.last_ts));
                    prop_assert!((x.weight - y.weight).abs() < 1e-4);
                }
            }
            for i in 0..8 {
                let i = ItemIdx(i);
                let mut users = live.item_users(i).to_vec();
                let mut want = kept.item_users(i).to_vec();
                users.sort();
                want.sort();
                prop_assert_eq!(users, want);
                prop_assert_eq!(live.popularity().count(i), kept.popularity().count(i));
            }
        }

        #[test]
        fn remove_item_forgets_it_everywhere(
            events in proptest::collection::vec((0u32..5, 0u32..8, 1i32..6, 0i64..1000), 0..100),
            victim in 0u32..8,
        ) {
            let mut live = index();
            for &(u, i, w, ts) in &events {
                live.apply(UserIdx(u), ItemIdx(i), w as f32, ts);
            }
            let removed = live.remove_item(ItemIdx(victim));
            prop_assert_eq!(removed as usize, events.iter().filter(|e| e.1 == victim).count());
            for u in 0..5 {
                prop_assert!(!live.has_seen(UserIdx(u), ItemIdx(victim)));
            }
            prop_assert_eq!(live.popularity().count(ItemIdx(victim)), 0);
            for i in 0..8 {
                prop_assert!(live.related(ItemIdx(i), 8, 100, |_| true).iter().all(|r| r.item != ItemIdx(victim)));
            }
        }
    }
}
