//! The data every model family is fitted on: a consistent snapshot of the store in key order
//! (so a matrix is a pure function of the data), and the progress a fit reports.

use bespoke_algo::{Bag, Csr, IterationReport, Recency};
use bespoke_store::Store;
use rayon::prelude::*;

use super::content::{attribute_bag, item_bag};
use crate::settings::Settings;
use crate::weights::Weights;

/// Interactions read per store round trip.
const CHUNK: usize = 100_000;
/// Share of each eligible user's latest positive pairs held out when evaluating.
const HOLDOUT: f64 = 0.2;
/// Users with fewer positive pairs are not evaluated.
const MIN_PAIRS: usize = 5;

/// One user–item pair of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// Dense user index (key order).
    pub user: u32,
    /// Dense item index (key order).
    pub item: u32,
    /// Summed (and decayed) weight.
    pub weight: f32,
    /// Time of the latest event of the pair.
    pub last_ts: i64,
}

/// The training data: every pair with events, in dense key-ordered indices.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// External user keys, in index order (sorted).
    pub user_keys: Vec<String>,
    /// External item keys, in index order (sorted).
    pub item_keys: Vec<String>,
    /// Pairs sorted by `(user, item)`, with non-zero weight.
    pub pairs: Vec<Pair>,
    /// Sequence number of the newest event included.
    pub watermark: u64,
    /// Number of events read.
    pub events: u64,
    /// When reading began (Unix ms): everything erased before this is not in the snapshot.
    pub read_at: i64,
    /// Content of every stored item that has some, by key (sorted): the hybrid model's input.
    pub catalog: Vec<(String, Bag)>,
    /// Attributes of each user of `user_keys`, in index order (empty when none).
    pub user_content: Vec<Bag>,
    /// For each item of `item_keys`, how many distinct users who train were shown it
    /// (`POST /v1/impressions`): its exposure, for debiased evaluation. All zero when the
    /// application sends none.
    pub impressions: Vec<f64>,
    /// Users who train, with or without pairs: who could have been shown an item.
    pub users_all: usize,
}

/// A stable 64-bit hash of a key (FNV-1a), mixed with the seed: the start of that row's factors.
pub fn key_seed(key: &str, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Snapshot {
    /// Reads everything the store holds. Events of types no longer configured are skipped.
    pub fn read(store: &dyn Store, settings: &Settings) -> bespoke_store::Result<Self> {
        let read_at = crate::time::now_ms();
        let weights = Weights::new(settings);
        // Keys by store id, then dense indices in key order.
        let mut users: Vec<(u32, String)> = Vec::new();
        let mut user_bags: rustc_hash::FxHashMap<String, Bag> = Default::default();
        let mut after = None;
        loop {
            let chunk = store.scan_users(after, CHUNK)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.idx);
            // Users who objected to training take no part: their events are skipped below.
            for u in chunk.into_iter().filter(|u| u.consent.training) {
                if !u.attributes.is_empty() {
                    user_bags.insert(u.key.clone(), attribute_bag(&u.attributes));
                }
                users.push((u.idx.0, u.key));
            }
        }
        let mut items: Vec<(u32, String)> = Vec::new();
        let mut catalog: Vec<(String, Bag)> = Vec::new();
        let mut after = None;
        loop {
            let chunk = store.scan_items(after, CHUNK)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.idx);
            for i in chunk {
                let bag = item_bag(
                    &i.categories,
                    &i.text,
                    &i.numeric,
                    &i.attributes,
                    &i.embeddings,
                );
                if !(bag.sparse.is_empty() && bag.dense.is_empty()) {
                    catalog.push((i.key.clone(), bag));
                }
                items.push((i.idx.0, i.key));
            }
        }
        catalog.sort_by(|a, b| a.0.cmp(&b.0));
        let user_dense = dense(&mut users);
        let item_dense = dense(&mut items);
        let mut raw: Vec<(u32, u32, f32, i64)> = Vec::new();
        // (item, user) of every impression, counted once per user below.
        let mut shown_to: Vec<(u32, u32)> = Vec::new();
        let (mut seq, mut events) = (0u64, 0u64);
        loop {
            let chunk = store.scan_interactions(seq, CHUNK)?;
            let Some(last) = chunk.last() else { break };
            seq = last.seq;
            for e in &chunk {
                let (Some(&u), Some(&i)) = (user_dense.get(&e.user.0), item_dense.get(&e.item.0))
                else {
                    continue;
                };
                if e.kind == crate::settings::IMPRESSION {
                    shown_to.push((i, u));
                    continue;
                }
                let Some(w) = weights.weight(&e.kind, e.value).filter(|w| w.is_finite()) else {
                    continue;
                };
                raw.push((u, i, w, e.timestamp));
                events += 1;
            }
        }
        let half_life_ms = settings.training.half_life_days * 86_400_000.0;
        if half_life_ms > 0.0 {
            let newest = raw.iter().map(|r| r.3).max().unwrap_or(0);
            for r in &mut raw {
                r.2 *= (-((newest - r.3) as f64) / half_life_ms).exp2() as f32;
            }
        }
        // Sum per pair in event order (a stable sort keeps it), newest time per pair.
        raw.par_sort_by_key(|r| (r.0, r.1));
        let mut pairs: Vec<Pair> = Vec::new();
        for (u, i, w, ts) in raw {
            match pairs.last_mut() {
                Some(p) if p.user == u && p.item == i => {
                    p.weight += w;
                    p.last_ts = p.last_ts.max(ts);
                }
                _ => pairs.push(Pair {
                    user: u,
                    item: i,
                    weight: w,
                    last_ts: ts,
                }),
            }
        }
        pairs.retain(|p| p.weight != 0.0);
        // Only users and items with data take part: a row without data would still move every
        // other row through the Gram matrix, so the model would depend on catalog entries and
        // profiles that carry no behaviour (an erased user's leftovers, say).
        shown_to.par_sort_unstable();
        shown_to.dedup();
        let mut shown = vec![0f64; items.len()];
        for (i, _) in shown_to {
            shown[i as usize] += 1.0;
        }
        let users_all = users.len();
        // Impressions by key, for the items that stay.
        let shown: rustc_hash::FxHashMap<String, f64> = items
            .iter()
            .zip(&shown)
            .filter(|(_, n)| **n > 0.0)
            .map(|((_, k), n)| (k.clone(), *n))
            .collect();
        let (user_keys, item_keys) = compact(&mut pairs, users, items);
        let impressions = item_keys
            .iter()
            .map(|k| shown.get(k).copied().unwrap_or(0.0))
            .collect();
        let user_content = user_keys
            .iter()
            .map(|k| user_bags.remove(k).unwrap_or_default())
            .collect();
        Ok(Self {
            user_keys,
            item_keys,
            pairs,
            watermark: seq,
            events,
            read_at,
            catalog,
            user_content,
            impressions,
            users_all,
        })
    }

    /// The weight matrix (users × items) of `pairs` (sorted by user), each weight multiplied
    /// by its recency factor (a pair's position among its user's pairs by last event time);
    /// with `positive_only`, pairs of negative weight are left out.
    pub fn matrix_of(&self, pairs: &[Pair], recency: Recency, positive_only: bool) -> Csr {
        let mut triples: Vec<(u32, u32, f32)> = Vec::with_capacity(pairs.len());
        let mut start = 0;
        while start < pairs.len() {
            let user = pairs[start].user;
            let end = start + pairs[start..].iter().take_while(|p| p.user == user).count();
            let group = &pairs[start..end];
            let factors = if recency.is_on() {
                let times: Vec<i64> = group.iter().map(|p| p.last_ts).collect();
                recency.factors(&times)
            } else {
                vec![1.0; group.len()]
            };
            for (p, f) in group.iter().zip(factors) {
                if !positive_only || p.weight > 0.0 {
                    triples.push((p.user, p.item, p.weight * f));
                }
            }
            start = end;
        }
        Csr::from_triples(self.user_keys.len(), self.item_keys.len(), &triples, false)
    }

    /// The positive weight matrix of `pairs` under `recency` (what tuning trains on).
    pub fn positive_matrix(&self, pairs: &[Pair], recency: Recency) -> Csr {
        self.matrix_of(pairs, recency, true)
    }

    /// The signed weight matrix of all pairs.
    pub fn weights(&self) -> Csr {
        self.matrix_of(&self.pairs, Recency::OFF, false)
    }

    /// The split used for offline metrics and tuning: each user with at least five positive
    /// pairs holds out the latest 20 % of them (by last event time, ties by item), as long as
    /// their items remain in training; returns the training pairs (sorted by user and item)
    /// and `(user, sorted test items)`.
    pub fn split_pairs(&self) -> (Vec<Pair>, Vec<(u32, Vec<u32>)>) {
        let mut train = Vec::with_capacity(self.pairs.len());
        let mut test: Vec<(u32, Vec<u32>)> = Vec::new();
        let mut start = 0;
        while start < self.pairs.len() {
            let user = self.pairs[start].user;
            let end = start
                + self.pairs[start..]
                    .iter()
                    .take_while(|p| p.user == user)
                    .count();
            let mut positive: Vec<Pair> = self.pairs[start..end]
                .iter()
                .copied()
                .filter(|p| p.weight > 0.0)
                .collect();
            let n_test = if positive.len() >= MIN_PAIRS {
                ((positive.len() as f64 * HOLDOUT).floor() as usize).max(1)
            } else {
                0
            };
            positive.sort_by_key(|p| (p.last_ts, p.item));
            let held: Vec<u32> = positive[positive.len() - n_test..]
                .iter()
                .map(|p| p.item)
                .collect();
            for p in &self.pairs[start..end] {
                if !held.contains(&p.item) {
                    train.push(*p);
                }
            }
            if !held.is_empty() {
                test.push((user, held));
            }
            start = end;
        }
        let mut in_train = vec![false; self.item_keys.len()];
        for p in &train {
            in_train[p.item as usize] = true;
        }
        for (_, items) in &mut test {
            items.retain(|&i| in_train[i as usize]);
            items.sort_unstable();
        }
        test.retain(|(_, items)| !items.is_empty());
        (train, test)
    }
}

/// Renumbers users and items densely over those that appear in `pairs`, keeping key order;
/// returns their keys.
fn compact(
    pairs: &mut [Pair],
    users: Vec<(u32, String)>,
    items: Vec<(u32, String)>,
) -> (Vec<String>, Vec<String>) {
    let mut user_used = vec![false; users.len()];
    let mut item_used = vec![false; items.len()];
    for p in pairs.iter() {
        user_used[p.user as usize] = true;
        item_used[p.item as usize] = true;
    }
    let renumber = |used: &[bool]| -> Vec<u32> {
        let mut next = 0;
        used.iter()
            .map(|&u| {
                let id = next;
                next += u32::from(u);
                id
            })
            .collect()
    };
    let (user_new, item_new) = (renumber(&user_used), renumber(&item_used));
    for p in pairs.iter_mut() {
        p.user = user_new[p.user as usize];
        p.item = item_new[p.item as usize];
    }
    let keep = |rows: Vec<(u32, String)>, used: &[bool]| -> Vec<String> {
        rows.into_iter()
            .zip(used)
            .filter(|(_, u)| **u)
            .map(|((_, k), _)| k)
            .collect()
    };
    (keep(users, &user_used), keep(items, &item_used))
}

/// Sorts `(store id, key)` by key and returns store id → dense index.
fn dense(rows: &mut [(u32, String)]) -> rustc_hash::FxHashMap<u32, u32> {
    rows.sort_by(|a, b| a.1.cmp(&b.1));
    rows.iter()
        .enumerate()
        .map(|(d, (id, _))| (*id, d as u32))
        .collect()
}

/// What a training run reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A new stage begins.
    Stage(&'a str),
    /// An iALS iteration finished.
    Iteration {
        /// Which fit (`evaluation` or `final`).
        fit: &'a str,
        /// The report.
        report: &'a IterationReport,
        /// Iterations in total.
        total: usize,
    },
}
