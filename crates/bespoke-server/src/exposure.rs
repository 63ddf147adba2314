//! What each user was shown and what they asked not to see: impressions (for the no-repeat
//! policy) and hidden items (`not_interested` events and the per-user block list).
//!
//! Impressions are not feedback: they never enter histories, popularity or training. They are
//! kept here, the newest `rules.impressions_per_user` per user, as `(time, item)`; the
//! impressions of one list share a timestamp, which is how lists are told apart.

use std::collections::VecDeque;

use bespoke_store::Millis;
use rustc_hash::{FxHashMap, FxHashSet};

/// The no-repeat policy of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoRepeat {
    /// Drop an item shown at least this many times within `window_ms` since the user last
    /// interacted with it; 0: off.
    pub(crate) max_impressions: u32,
    /// The window of `max_impressions`.
    pub(crate) window_ms: Millis,
    /// Drop what was in the user's last this many lists; 0: off.
    pub(crate) lists: u32,
}

impl NoRepeat {
    pub(crate) fn is_off(&self) -> bool {
        self.max_impressions == 0 && self.lists == 0
    }
}

/// Why the no-repeat policy drops an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Shown this many times in the window without an interaction since.
    Shown(u32),
    /// In the list shown this many lists ago (1: the latest).
    InList(u32),
}

/// Hidden from a user: the latest decision wins.
#[derive(Debug, Clone, Copy)]
struct Hide {
    blocked: bool,
    at: Millis,
    /// Set by an event (which retention may expire), not by the block list.
    from_event: bool,
}

/// Impressions and hidden items of every user.
#[derive(Debug, Default)]
pub(crate) struct Exposure {
    impressions: FxHashMap<u32, VecDeque<(Millis, u32)>>,
    hidden: FxHashMap<u32, FxHashMap<u32, Hide>>,
}

impl Exposure {
    /// Records that `user` was shown `item` at `at`, keeping the newest `keep`.
    pub(crate) fn record_impression(&mut self, user: u32, item: u32, at: Millis, keep: usize) {
        let list = self.impressions.entry(user).or_default();
        // Lists arrive in time order nearly always; a late one is put in its place.
        let pos = list.partition_point(|&(t, _)| t <= at);
        list.insert(pos, (at, item));
        while list.len() > keep {
            list.pop_front();
        }
    }

    /// Records a hide (`blocked`) or an unhide; an older decision than the one kept is ignored.
    pub(crate) fn set_hidden(
        &mut self,
        user: u32,
        item: u32,
        blocked: bool,
        at: Millis,
        from_event: bool,
    ) {
        let entry = self.hidden.entry(user).or_default();
        match entry.get(&item) {
            // Older, or as old and weaker (the store keeps a block over an unblock at the
            // same time, whatever their order).
            Some(h) if h.at > at || (h.at == at && h.blocked && !blocked) => {}
            _ => {
                entry.insert(
                    item,
                    Hide {
                        blocked,
                        at,
                        from_event,
                    },
                );
            }
        }
    }

    /// The items `user` hid.
    pub(crate) fn hidden_of(&self, user: u32) -> FxHashSet<u32> {
        self.hidden
            .get(&user)
            .map(|m| {
                m.iter()
                    .filter(|(_, h)| h.blocked)
                    .map(|(&i, _)| i)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The items `user` hid: `(item, since, by an event)`.
    pub(crate) fn hidden_entries(&self, user: u32) -> Vec<(u32, Millis, bool)> {
        self.hidden
            .get(&user)
            .map(|m| {
                m.iter()
                    .filter(|(_, h)| h.blocked)
                    .map(|(&i, h)| (i, h.at, h.from_event))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets a hide of `item` that came from an event (its events were deleted); a hide
    /// from the block list stays.
    pub(crate) fn drop_event_hide(&mut self, user: u32, item: u32) {
        if let Some(m) = self.hidden.get_mut(&user) {
            if m.get(&item).is_some_and(|h| h.from_event) {
                m.remove(&item);
            }
            if m.is_empty() {
                self.hidden.remove(&user);
            }
        }
    }

    /// Forgets everything about a user (erasure).
    pub(crate) fn remove_user(&mut self, user: u32) {
        self.impressions.remove(&user);
        self.hidden.remove(&user);
    }

    /// Forgets impressions and event hides older than `cutoff` (retention deleted their events).
    pub(crate) fn expire(&mut self, cutoff: Millis) {
        self.impressions.retain(|_, list| {
            while list.front().is_some_and(|&(t, _)| t < cutoff) {
                list.pop_front();
            }
            !list.is_empty()
        });
        self.hidden.retain(|_, m| {
            m.retain(|_, h| !(h.from_event && h.at < cutoff));
            !m.is_empty()
        });
    }

    /// The items the policy drops for `user` at `now`, and why. `last_interaction` gives the
    /// time of the user's latest event on an item, if any: impressions before it do not count.
    pub(crate) fn repeats(
        &self,
        user: u32,
        policy: NoRepeat,
        now: Millis,
        last_interaction: impl Fn(u32) -> Option<Millis>,
    ) -> FxHashMap<u32, Repeat> {
        let mut out = FxHashMap::default();
        let Some(list) = self.impressions.get(&user) else {
            return out;
        };
        if policy.lists > 0 {
            let mut lists = 0u32;
            let mut current = None;
            for &(t, item) in list.iter().rev() {
                if current != Some(t) {
                    current = Some(t);
                    lists += 1;
                    if lists > policy.lists {
                        break;
                    }
                }
                out.entry(item).or_insert(Repeat::InList(lists));
            }
        }
        if policy.max_impressions > 0 {
            let since = now.saturating_sub(policy.window_ms);
            let mut counts: FxHashMap<u32, u32> = FxHashMap::default();
            for &(t, item) in list.iter().rev() {
                if t < since {
                    break;
                }
                if last_interaction(item).is_some_and(|l| l >= t) {
                    continue;
                }
                *counts.entry(item).or_default() += 1;
            }
            for (item, c) in counts {
                if c >= policy.max_impressions {
                    out.entry(item).or_insert(Repeat::Shown(c));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Millis = 86_400_000;

    #[test]
    fn shown_often_without_interaction_is_dropped() {
        let mut e = Exposure::default();
        for t in 1..=3 {
            e.record_impression(7, 1, t * 1000, 100);
            e.record_impression(7, 2, t * 1000, 100);
        }
        let policy = NoRepeat {
            max_impressions: 3,
            window_ms: DAY,
            lists: 0,
        };
        let none = |_| None;
        let r = e.repeats(7, policy, 10_000, none);
        assert_eq!(r.get(&1), Some(&Repeat::Shown(3)));
        assert_eq!(r.get(&2), Some(&Repeat::Shown(3)));
        // An interaction after the second showing: only the third counts.
        let r = e.repeats(7, policy, 10_000, |i| (i == 2).then_some(2000));
        assert!(r.contains_key(&1) && !r.contains_key(&2));
        // Outside the window nothing counts.
        let r = e.repeats(7, policy, 10_000 + DAY, none);
        assert!(r.is_empty());
        // Another user is unaffected.
        assert!(e.repeats(8, policy, 10_000, none).is_empty());
    }

    #[test]
    fn last_lists_are_told_apart_by_time() {
        let mut e = Exposure::default();
        e.record_impression(1, 10, 100, 100);
        e.record_impression(1, 11, 100, 100);
        e.record_impression(1, 12, 200, 100);
        // Arrives late: belongs to the first list.
        e.record_impression(1, 13, 100, 100);
        let policy = NoRepeat {
            max_impressions: 0,
            window_ms: DAY,
            lists: 1,
        };
        let r = e.repeats(1, policy, 300, |_| None);
        assert_eq!(r.len(), 1);
        assert_eq!(r.get(&12), Some(&Repeat::InList(1)));
        let r = e.repeats(1, NoRepeat { lists: 2, ..policy }, 300, |_| None);
        assert_eq!(r.len(), 4);
        assert_eq!(r.get(&13), Some(&Repeat::InList(2)));
    }

    #[test]
    fn keeps_the_newest_and_expires_the_oldest() {
        let mut e = Exposure::default();
        for t in 0..10 {
            e.record_impression(1, t as u32, t, 4);
        }
        let policy = NoRepeat {
            max_impressions: 1,
            window_ms: DAY,
            lists: 0,
        };
        let r = e.repeats(1, policy, 10, |_| None);
        let mut items: Vec<u32> = r.keys().copied().collect();
        items.sort_unstable();
        assert_eq!(items, vec![6, 7, 8, 9]);
        e.expire(8);
        assert_eq!(e.repeats(1, policy, 10, |_| None).len(), 2);
    }

    #[test]
    fn latest_hide_decision_wins_and_erasure_forgets() {
        let mut e = Exposure::default();
        e.set_hidden(1, 5, true, 100, true);
        e.set_hidden(1, 5, false, 50, false);
        assert!(e.hidden_of(1).contains(&5), "an older unblock is ignored");
        e.set_hidden(1, 5, false, 150, false);
        assert!(e.hidden_of(1).is_empty());
        e.set_hidden(1, 6, true, 10, true);
        e.set_hidden(1, 7, true, 10, false);
        e.expire(20);
        assert_eq!(e.hidden_of(1), FxHashSet::from_iter([7]));
        e.remove_user(1);
        assert!(e.hidden_of(1).is_empty());
    }
}
