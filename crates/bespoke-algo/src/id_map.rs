//! Two-way map between external keys and dense `u32` ids.

use std::collections::HashMap;

/// Maps external string keys to dense `u32` ids and back.
///
/// Keys come from clients, so the forward map uses the default (DoS-resistant) hasher. The reverse
/// map is a `Vec` indexed by id; removed ids leave a `None` hole so that the ids of other keys
/// never move.
#[derive(Debug, Default, Clone)]
pub struct IdMap {
    forward: HashMap<Box<str>, u32>,
    reverse: Vec<Option<Box<str>>>,
}

impl IdMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `key`, if present.
    pub fn get(&self, key: &str) -> Option<u32> {
        self.forward.get(key).copied()
    }

    /// The key of `id`, if present.
    pub fn key(&self, id: u32) -> Option<&str> {
        self.reverse.get(id as usize).and_then(|k| k.as_deref())
    }

    /// Returns the id of `key`, assigning the next free id (one past the largest ever used) when
    /// the key is new.
    pub fn get_or_assign(&mut self, key: &str) -> u32 {
        if let Some(id) = self.get(key) {
            return id;
        }
        let id = u32::try_from(self.reverse.len()).expect("fewer than 2^32 ids");
        self.insert(key, id);
        id
    }

    /// Records that `key` has id `id` (ids chosen elsewhere, e.g. by the store). A previous
    /// binding of either side is replaced.
    pub fn insert(&mut self, key: &str, id: u32) {
        if let Some(old) = self.forward.get(key).copied() {
            self.reverse[old as usize] = None;
        }
        if let Some(Some(old_key)) = self.reverse.get(id as usize) {
            self.forward.remove(old_key);
        }
        let slot = id as usize;
        if self.reverse.len() <= slot {
            self.reverse.resize(slot + 1, None);
        }
        let key: Box<str> = key.into();
        self.reverse[slot] = Some(key.clone());
        self.forward.insert(key, id);
    }

    /// Removes `key`, returning its id. The id is not reused by [`IdMap::get_or_assign`].
    pub fn remove(&mut self, key: &str) -> Option<u32> {
        let id = self.forward.remove(key)?;
        self.reverse[id as usize] = None;
        Some(id)
    }

    /// Number of keys present.
    pub fn len(&self) -> usize {
        self.forward.len()
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.forward.is_empty()
    }

    /// One past the largest id ever inserted: the length dense per-id arrays need.
    pub fn id_bound(&self) -> usize {
        self.reverse.len()
    }

    /// Iterates over `(id, key)` pairs in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.reverse
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.as_deref().map(|k| (i as u32, k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(keys in proptest::collection::vec("\\PC{1,12}", 0..60)) {
            let mut map = IdMap::new();
            let ids: Vec<u32> = keys.iter().map(|k| map.get_or_assign(k)).collect();
            for (key, id) in keys.iter().zip(&ids) {
                prop_assert_eq!(map.get(key), Some(*id));
                prop_assert_eq!(map.key(*id), Some(key.as_str()));
            }
            let distinct: std::collections::HashSet<&String> = keys.iter().collect();
            prop_assert_eq!(map.len(), distinct.len());
        }

        #[test]
        fn removal_keeps_other_ids(keys in proptest::collection::hash_set("[a-z]{1,6}", 1..40), drop_every in 2usize..5) {
            let mut map = IdMap::new();
            let keys: Vec<String> = keys.into_iter().collect();
            let ids: Vec<u32> = keys.iter().map(|k| map.get_or_assign(k)).collect();
            for (i, key) in keys.iter().enumerate() {
                if i % drop_every == 0 {
                    prop_assert_eq!(map.remove(key), Some(ids[i]));
                }
            }
            for (i, key) in keys.iter().enumerate() {
                let expected = if i % drop_every == 0 { None } else { Some(ids[i]) };
                prop_assert_eq!(map.get(key), expected);
            }
            // A fresh key never takes a removed id.
            let fresh = map.get_or_assign("fresh-key-not-in-set-0");
            prop_assert_eq!(fresh as usize, keys.len());
        }
    }

    #[test]
    fn insert_rebinds_both_sides() {
        let mut map = IdMap::new();
        map.insert("a", 5);
        map.insert("a", 7);
        assert_eq!(map.key(5), None);
        assert_eq!(map.get("a"), Some(7));
        map.insert("b", 7);
        assert_eq!(map.get("a"), None);
        assert_eq!(map.iter().collect::<Vec<_>>(), vec![(7, "b")]);
        assert_eq!(map.id_bound(), 8);
    }
}
