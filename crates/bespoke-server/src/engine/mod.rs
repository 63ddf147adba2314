//! The engine: the store plus the in-memory serving state derived from it.
//!
//! Every write goes to the store first and is applied to memory only after it committed, so
//! memory never shows what the store does not hold. Memory is rebuilt from the store at start-up.
//!
//! Ordering: concurrent requests may apply to memory in a different order than they committed.
//! Two rules keep memory exact anyway. (1) Ids are never reused, so an event whose user or item
//! has been deleted (a tombstoned id) is known to be gone from the store and is never applied.
//! (2) Profile and catalog changes (`put_*`, `delete_*`) are serialised by the `admin` lock; an
//! event that created a user or item registers it only if no profile change got there first, and
//! only if no newer incarnation of the key (a larger id) is already registered.
//!
//! All methods block (store IO, CPU-bound scoring); async callers use `spawn_blocking`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use bespoke_algo::{IdMap, ItemIdx, LiveIndex, Popularity, UserIdx};
use bespoke_store::{
    Appended, Deleted, Event, EventBatch, Item, ItemUpsert, Millis, NewEvent, Page, Store,
    Upserted, User, UserUpsert,
};
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashSet;
use serde::Serialize;

use crate::models::ServingModel;
use crate::settings::{Settings, WeightSpec};

mod admin;
mod erasure;
mod lifecycle;
mod serve;

pub use erasure::{CleanModel, ErasureReceipt, Removed};
pub use lifecycle::{TrainError, TrainOutcome, TrainingStatus};

/// Chunk size when loading the event log at start-up.
const LOAD_CHUNK: usize = 100_000;

pub use crate::pipeline::{Contribution, Reason};

/// One result: an item, its score (higher is better) and why it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// Item key.
    pub item: String,
    /// Score; comparable only within one response.
    pub score: f32,
    /// Why it was chosen.
    pub reasons: Vec<Reason>,
    /// The terms of its score (`explain=full`), summing to it; empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contributions: Vec<Contribution>,
}

/// Filters of a recommendation request: the pipeline's request.
pub type RecommendQuery = crate::pipeline::RankRequest;

/// How `popular` ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopularSort {
    /// Total weight (within the window, if any).
    Count,
    /// Time-decayed weight.
    Trending,
}

/// Filters of a popularity request.
#[derive(Debug, Clone)]
pub struct PopularQuery {
    /// How many results.
    pub n: usize,
    /// Keep only items in any of these categories.
    pub categories: Vec<String>,
    /// Count only events newer than this many milliseconds (with `Count`).
    pub window: Option<Millis>,
    /// Ranking.
    pub sort: PopularSort,
}

/// Recommendations for one user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendations {
    /// The results, best first.
    pub items: Vec<Recommendation>,
    /// Whether the user's own history shaped the results.
    pub personalized: bool,
    /// The model that ranked them: `als`, `knn` or `popular`.
    pub model: &'static str,
    /// The version of the trained model used, if any.
    pub model_version: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ItemMeta {
    pub(crate) categories: Vec<u32>,
    available: bool,
}

/// Event-type weights, resolved once from the settings.
#[derive(Debug, Clone)]
pub struct Weights {
    specs: std::collections::HashMap<String, WeightSpec>,
    /// `events.max_weight`: no single event weighs more than this, either way.
    max_weight: f32,
}

impl Weights {
    /// The weights configured in `settings`.
    pub fn new(settings: &Settings) -> Self {
        Self {
            specs: settings.events.weights.clone().into_iter().collect(),
            max_weight: settings.events.max_weight as f32,
        }
    }

    /// The weight of an event, or `None` for an unknown type or a value-weighted type without
    /// a value (or with a NaN one). The weight is clipped to `±events.max_weight`: new events
    /// are validated within it already, but events stored earlier (or imported under wider
    /// limits) may not be, and one of them must not dominate popularity or training. Every
    /// consumer (serving state, retention, training) goes through here, so what is removed is
    /// always what was added.
    pub fn weight(&self, kind: &str, value: Option<f64>) -> Option<f32> {
        let w = match self.specs.get(kind)? {
            WeightSpec::Fixed(w) => *w as f32,
            WeightSpec::Value(_) => value.filter(|v| !v.is_nan())? as f32,
        };
        Some(w.clamp(-self.max_weight, self.max_weight))
    }

    /// Whether the type exists, and whether it needs a value.
    pub fn spec(&self, kind: &str) -> Option<&WeightSpec> {
        self.specs.get(kind)
    }

    /// The configured type names, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.specs.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }
}

/// Whether a user or item created with id `created` should take over a key currently mapped to
/// `current`. Ids only grow, so a larger id is a newer incarnation of the key (the older one was
/// deleted, perhaps with its deletion not yet applied here); an equal id was already registered by
/// a profile or catalog change, whose values win.
fn newer(current: Option<u32>, created: u32) -> bool {
    current.is_none_or(|c| c < created)
}

/// The in-memory serving state; the pipeline reads it under the engine's read lock.
pub(crate) struct State {
    /// Bumped whenever an item deletion changes histories, so that every cached user vector
    /// computed before it is stale.
    catalog_epoch: u64,
    /// Per user: bumped whenever the user's history changes.
    user_rev: Vec<u32>,
    pub(crate) users: IdMap,
    pub(crate) items: IdMap,
    deleted_users: FxHashSet<u32>,
    deleted_items: FxHashSet<u32>,
    pub(crate) personalization: Vec<bool>,
    item_meta: Vec<ItemMeta>,
    pub(crate) categories: IdMap,
    pub(crate) live: LiveIndex,
}

impl State {
    fn bump_user(&mut self, user: UserIdx) {
        let u = user.0 as usize;
        if self.user_rev.len() <= u {
            self.user_rev.resize(u + 1, 0);
        }
        self.user_rev[u] = self.user_rev[u].wrapping_add(1);
    }

    /// The revision of a user's history: equal revisions mean equal histories.
    pub(crate) fn revision(&self, user: UserIdx) -> u64 {
        (self.catalog_epoch << 32) | self.user_rev.get(user.0 as usize).copied().unwrap_or(0) as u64
    }

    fn set_personalization(&mut self, user: UserIdx, allowed: bool) {
        let u = user.0 as usize;
        if self.personalization.len() <= u {
            self.personalization.resize(u + 1, true);
        }
        self.personalization[u] = allowed;
    }

    fn set_item(&mut self, item: &Item) {
        let categories = item
            .categories
            .iter()
            .map(|c| self.categories.get_or_assign(c))
            .collect();
        let i = item.idx.0 as usize;
        if self.item_meta.len() <= i {
            self.item_meta.resize_with(i + 1, ItemMeta::default);
        }
        self.item_meta[i] = ItemMeta {
            categories,
            available: item.available,
        };
        self.items.insert(&item.key, item.idx.0);
    }

    fn register_new_item(&mut self, key: &str, idx: ItemIdx) {
        if self.deleted_items.contains(&idx.0) || !newer(self.items.get(key), idx.0) {
            return;
        }
        let i = idx.0 as usize;
        if self.item_meta.len() <= i {
            self.item_meta.resize_with(i + 1, ItemMeta::default);
        }
        self.item_meta[i] = ItemMeta {
            categories: Vec::new(),
            available: true,
        };
        self.items.insert(key, idx.0);
    }

    pub(crate) fn meta(&self, item: ItemIdx) -> Option<&ItemMeta> {
        self.item_meta.get(item.0 as usize)
    }

    pub(crate) fn category_ids(&self, names: &[String]) -> Vec<u32> {
        // Unknown categories match nothing, so they are kept as an impossible id.
        names
            .iter()
            .map(|c| self.categories.get(c).unwrap_or(u32::MAX))
            .collect()
    }

    pub(crate) fn in_categories(&self, item: ItemIdx, wanted: &[u32]) -> bool {
        wanted.is_empty()
            || self
                .meta(item)
                .is_some_and(|m| m.categories.iter().any(|c| wanted.contains(c)))
    }

    pub(crate) fn servable(&self, item: ItemIdx) -> bool {
        self.items.key(item.0).is_some() && self.meta(item).is_some_and(|m| m.available)
    }

    fn first_category(&self, item: ItemIdx) -> Option<String> {
        let c = *self.meta(item)?.categories.first()?;
        self.categories.key(c).map(str::to_owned)
    }

    pub(crate) fn item_key(&self, item: ItemIdx) -> String {
        self.items.key(item.0).unwrap_or_default().to_owned()
    }

    pub(crate) fn popular_reason(&self, item: ItemIdx, trending: bool, count: u64) -> Reason {
        let category = self.first_category(item);
        let adjective = if trending { "trending" } else { "popular" };
        let message = match &category {
            Some(c) => format!("{adjective} in {c}"),
            None => format!("{adjective} overall"),
        };
        let p = crate::pipeline::explain::Popularity {
            message,
            category,
            count: Some(count),
        };
        if trending {
            Reason::Trending(p)
        } else {
            Reason::Popular(p)
        }
    }
}

/// Counts for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EngineCounts {
    /// Users known to serving.
    pub users: u64,
    /// Items known to serving.
    pub items: u64,
    /// Events applied to serving.
    pub events: u64,
}

/// The store and the serving state built from it.
pub struct Engine {
    store: Arc<dyn Store>,
    pub(crate) settings: Arc<Settings>,
    weights: Weights,
    pub(crate) state: RwLock<State>,
    admin: Mutex<()>,
    /// The model serving uses; swapped atomically, so a request sees one model throughout.
    pub(crate) model: ArcSwapOption<ServingModel>,
    training: lifecycle::TrainingState,
    keyring: crate::auth::Keyring,
    limiter: crate::auth::RateLimiter,
    /// Key of the user references in the audit log (see [`Engine::user_ref`]).
    audit_secret: Vec<u8>,
    erasures: Mutex<erasure::Erasures>,
    /// Raw user keys to store keys (pseudonymization).
    pub(crate) user_keys: crate::privacy::UserKeys,
    /// Decision loops (contextual bandits).
    decisions: crate::decisions::Loops,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

impl Engine {
    /// Builds the serving state from everything in `store`.
    pub fn open(store: Arc<dyn Store>, settings: Arc<Settings>) -> bespoke_store::Result<Self> {
        let started = std::time::Instant::now();
        let weights = Weights::new(&settings);
        let half_life_ms = settings.serving.trending_half_life_hours * 3_600_000.0;
        let mut state = State {
            catalog_epoch: 0,
            user_rev: Vec::new(),
            users: IdMap::new(),
            items: IdMap::new(),
            deleted_users: FxHashSet::default(),
            deleted_items: FxHashSet::default(),
            personalization: Vec::new(),
            item_meta: Vec::new(),
            categories: IdMap::new(),
            live: LiveIndex::new(Popularity::new(half_life_ms)),
        };
        let mut after = None;
        loop {
            let users = store.scan_users(after, LOAD_CHUNK)?;
            let Some(last) = users.last() else { break };
            after = Some(last.idx);
            for u in &users {
                state.users.insert(&u.key, u.idx.0);
                state.set_personalization(u.idx, u.consent.personalization);
                if !u.consent.training {
                    state.live.set_private(u.idx, true);
                }
            }
        }
        let mut after = None;
        loop {
            let items = store.scan_items(after, LOAD_CHUNK)?;
            let Some(last) = items.last() else { break };
            after = Some(last.idx);
            for it in &items {
                state.set_item(it);
            }
        }
        let mut seq = 0;
        let mut skipped = 0u64;
        loop {
            let chunk = store.scan_interactions(seq, LOAD_CHUNK)?;
            let Some(last) = chunk.last() else { break };
            seq = last.seq;
            for e in &chunk {
                match weights.weight(&e.kind, e.value) {
                    Some(w) if w.is_finite() => state.live.apply(e.user, e.item, w, e.timestamp),
                    // A type removed from the configuration since the event was stored.
                    _ => skipped += 1,
                }
            }
        }
        tracing::info!(
            users = state.users.len(),
            items = state.items.len(),
            events = state.live.events(),
            skipped_events = skipped,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded serving state"
        );
        let user_keys = crate::privacy::UserKeys::new(&settings);
        crate::privacy::check_store(&*store, &user_keys)?;
        // After the checks that may refuse the store, so that a refused start creates no file.
        let audit_secret = crate::privacy::audit_key(&settings, &*store)?;
        let decisions =
            crate::decisions::Loops::open(store.clone(), settings.decisions.checkpoint_every)
                .map(|loops| {
                    loops.with_limits(crate::decisions::LoopLimits::from_settings(
                        &settings.decisions,
                    ))
                })
                .map_err(|e| match e {
                    crate::decisions::DecisionError::Store(e) => e,
                    other => bespoke_store::Error::Corrupt(other.to_string()),
                })?;
        let engine = Self {
            store,
            settings,
            weights,
            state: RwLock::new(state),
            admin: Mutex::new(()),
            model: ArcSwapOption::empty(),
            training: lifecycle::TrainingState::default(),
            keyring: crate::auth::Keyring::default(),
            limiter: crate::auth::RateLimiter::default(),
            audit_secret,
            erasures: Mutex::default(),
            user_keys,
            decisions,
        };
        engine.refresh_keys()?;
        engine.load_pending_erasures()?;
        engine.load_active_model();
        Ok(engine)
    }

    /// The settings the engine runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The event-type weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The decision loops.
    pub fn decisions(&self) -> &crate::decisions::Loops {
        &self.decisions
    }

    /// A user's consent as it bears on a decision: the configured defaults for an unknown
    /// user; and the key under which the store holds the user.
    pub fn decision_user(&self, key: &str) -> (String, crate::decisions::DecisionConsent) {
        let stored = self.user_keys.to_store(key).into_owned();
        let s = self.state.read();
        let consent = match s.users.get(&stored) {
            Some(idx) => crate::decisions::DecisionConsent {
                personalization: s.personalization.get(idx as usize).copied().unwrap_or(true),
                training: !s.live.is_private(UserIdx(idx)),
            },
            None => {
                let d = self.settings.consent.defaults();
                crate::decisions::DecisionConsent {
                    personalization: d.personalization,
                    training: d.training,
                }
            }
        };
        (stored, consent)
    }

    /// Counts for monitoring.
    pub fn counts(&self) -> EngineCounts {
        let s = self.state.read();
        EngineCounts {
            users: s.users.len() as u64,
            items: s.items.len() as u64,
            events: s.live.events(),
        }
    }

    /// Stores a batch of (already validated) events and applies the new ones to serving.
    pub fn ingest(&self, mut events: Vec<NewEvent>) -> bespoke_store::Result<Vec<Appended>> {
        if self.user_keys.pseudonymized() {
            for e in &mut events {
                e.user = self.user_keys.to_store(&e.user).into_owned();
            }
        }
        let kinds: Vec<(String, Option<f64>, String, String)> = events
            .iter()
            .map(|e| (e.kind.clone(), e.value, e.user.clone(), e.item.clone()))
            .collect();
        let batch = EventBatch {
            events,
            create_users: self.settings.events.create_missing_users,
            create_items: self.settings.events.create_missing_items,
            default_consent: self.settings.consent.defaults(),
            now: None,
        };
        let appended = self.store.append_events(batch)?;
        let mut s = self.state.write();
        for (a, (kind, value, user, item)) in appended.iter().zip(kinds) {
            if a.duplicate {
                continue;
            }
            if a.created_user
                && !s.deleted_users.contains(&a.user.0)
                && newer(s.users.get(&user), a.user.0)
            {
                s.users.insert(&user, a.user.0);
                let default = self.settings.consent.defaults();
                s.set_personalization(a.user, default.personalization);
                if !default.training {
                    s.live.set_private(a.user, true);
                }
            }
            if a.created_item {
                s.register_new_item(&item, a.item);
            }
            if s.deleted_users.contains(&a.user.0) || s.deleted_items.contains(&a.item.0) {
                continue;
            }
            if let Some(w) = self.weights.weight(&kind, value) {
                s.live.apply(a.user, a.item, w, a.timestamp);
                s.bump_user(a.user);
            }
        }
        drop(s);
        let new = appended.iter().filter(|a| !a.duplicate).count() as u64;
        self.training.count_events(new);
        Ok(appended)
    }

    /// Creates or replaces users (one transaction).
    pub fn put_users(
        &self,
        upserts: Vec<UserUpsert>,
    ) -> bespoke_store::Result<Vec<Upserted<User>>> {
        self.put_users_by("engine", upserts)
    }

    /// [`Engine::put_users`] on behalf of `actor` (a key prefix), who is named in the audit log
    /// of consent changes. A change of consent takes effect on the next request: without
    /// personalization the user gets popular items; without training their events leave
    /// popularity, co-occurrence and the served model's user rows at once, and the next
    /// trained model.
    pub fn put_users_by(
        &self,
        actor: &str,
        upserts: Vec<UserUpsert>,
    ) -> bespoke_store::Result<Vec<Upserted<User>>> {
        let raw: Vec<String> = upserts.iter().map(|u| u.key.clone()).collect();
        let upserts = upserts
            .into_iter()
            .map(|u| UserUpsert {
                key: self.user_keys.to_store(&u.key).into_owned(),
                ..u
            })
            .collect();
        let _admin = self.admin.lock();
        let mut out = self.store.put_users(upserts)?;
        let mut changes = Vec::new();
        let mut s = self.state.write();
        let model = self.model.load_full();
        for u in &out {
            let idx = u.record.idx;
            let before = if u.created {
                self.settings.consent.defaults()
            } else {
                bespoke_store::Consent {
                    personalization: s
                        .personalization
                        .get(idx.0 as usize)
                        .copied()
                        .unwrap_or(true),
                    training: !s.live.is_private(idx),
                }
            };
            let after = u.record.consent;
            s.users.insert(&u.record.key, idx.0);
            s.set_personalization(idx, after.personalization);
            s.live.set_private(idx, !after.training);
            if before.training && !after.training {
                if let Some(m) = &model {
                    m.als.forget(idx.0);
                }
                s.bump_user(idx);
            }
            if before != after {
                changes.push((idx, before, after));
            }
        }
        drop(s);
        // Answer with the keys the caller knows.
        for (u, key) in out.iter_mut().zip(raw) {
            u.record.key = key;
        }
        let changes: Vec<_> = changes
            .into_iter()
            .filter_map(|(idx, b, a)| {
                let key = &out.iter().find(|u| u.record.idx == idx)?.record.key;
                Some((key.clone(), b, a))
            })
            .collect();
        for (key, before, after) in changes {
            self.audit(
                actor,
                "consent.change",
                Some(&self.user_ref(&key)),
                Some(serde_json::json!({ "before": before, "after": after })),
            );
        }
        Ok(out)
    }

    /// Creates or replaces one user.
    pub fn put_user(&self, upsert: UserUpsert) -> bespoke_store::Result<Upserted<User>> {
        Ok(self.put_users(vec![upsert])?.remove(0))
    }

    /// Deletes a user, their events and everything serving derived from them.
    pub fn delete_user(&self, key: &str) -> bespoke_store::Result<Option<Deleted>> {
        let key = &*self.user_keys.to_store(key);
        let _admin = self.admin.lock();
        let out = self.store.delete_user(key)?;
        if let Some(d) = out {
            let mut s = self.state.write();
            s.deleted_users.insert(d.idx);
            if s.users.get(key) == Some(d.idx) {
                s.users.remove(key);
            }
            s.live.remove_user(UserIdx(d.idx));
            s.bump_user(UserIdx(d.idx));
            if let Some(m) = self.model.load_full() {
                m.als.forget(d.idx);
            }
        }
        Ok(out)
    }

    /// Creates or replaces items (one transaction).
    pub fn put_items(
        &self,
        upserts: Vec<ItemUpsert>,
    ) -> bespoke_store::Result<Vec<Upserted<Item>>> {
        let _admin = self.admin.lock();
        let out = self.store.put_items(upserts)?;
        let mut s = self.state.write();
        for i in &out {
            s.set_item(&i.record);
        }
        // A new item (or new content of one the model has no factors for) is placed by its
        // content at once: recommendable before the next training.
        if let Some(m) = self.model.load_full()
            && let Some(content) = &m.content
        {
            for Upserted { record: i, .. } in &out {
                if m.model_item(i.idx.0).is_none() {
                    content.set_cold(
                        i.idx.0,
                        &crate::models::content::item_bag(
                            &i.categories,
                            &i.text,
                            &i.numeric,
                            &i.attributes,
                            &i.embeddings,
                        ),
                    );
                }
            }
        }
        Ok(out)
    }

    /// How many distinct categories the serving state would know once `categories` are added:
    /// the in-memory category map only grows until a restart, so `PUT /v1/items` checks this
    /// against `limits.max_categories` first (concurrent writes can pass it by at most their
    /// own categories, 100 each).
    pub fn categories_after(&self, categories: &[String]) -> usize {
        let s = self.state.read();
        let mut new: Vec<&String> = categories
            .iter()
            .filter(|c| s.categories.get(c).is_none())
            .collect();
        new.sort_unstable();
        new.dedup();
        s.categories.len() + new.len()
    }

    /// Creates or replaces one item.
    pub fn put_item(&self, upsert: ItemUpsert) -> bespoke_store::Result<Upserted<Item>> {
        Ok(self.put_items(vec![upsert])?.remove(0))
    }

    /// Deletes an item and its events.
    pub fn delete_item(&self, key: &str) -> bespoke_store::Result<Option<Deleted>> {
        let _admin = self.admin.lock();
        let out = self.store.delete_item(key)?;
        if let Some(d) = out {
            let mut s = self.state.write();
            s.deleted_items.insert(d.idx);
            if s.items.get(key) == Some(d.idx) {
                s.items.remove(key);
            }
            s.live.remove_item(ItemIdx(d.idx));
            s.catalog_epoch += 1;
            if let Some(c) = self
                .model
                .load_full()
                .as_ref()
                .and_then(|m| m.content.as_ref())
            {
                c.remove_cold(d.idx);
            }
        }
        Ok(out)
    }

    /// The stored user.
    pub fn get_user(&self, key: &str) -> bespoke_store::Result<Option<User>> {
        let mut user = self.store.get_user(&self.user_keys.to_store(key))?;
        if let Some(u) = &mut user {
            key.clone_into(&mut u.key);
        }
        Ok(user)
    }

    /// The stored item.
    pub fn get_item(&self, key: &str) -> bespoke_store::Result<Option<Item>> {
        self.store.get_item(key)
    }

    /// A page of the user's events, newest first.
    pub fn user_events(
        &self,
        key: &str,
        before: Option<u64>,
        limit: usize,
    ) -> bespoke_store::Result<Option<Page<Event>>> {
        let mut page = self
            .store
            .user_events(&self.user_keys.to_store(key), before, limit)?;
        if let Some(p) = &mut page {
            for e in &mut p.items {
                key.clone_into(&mut e.user);
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bespoke_store::{SqliteStore, StoreOptions};

    fn engine(dir: &std::path::Path) -> Engine {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir, StoreOptions::default()).unwrap());
        let mut settings = Settings::default();
        settings.store.data_dir = dir.to_owned();
        settings.privacy.audit_secret =
            crate::settings::Secret("unit tests' audit key, 32 bytes or more".into());
        Engine::open(store, Arc::new(settings)).unwrap()
    }

    /// A user's key and history as `(item key, weight, count)`.
    type UserView = (String, Vec<(String, f32, u32)>);

    /// Everything serving knows, in a comparable form.
    fn snapshot(e: &Engine) -> (EngineCounts, Vec<UserView>, Vec<String>) {
        let s = e.state.read();
        let mut users: Vec<UserView> = s
            .users
            .iter()
            .map(|(idx, key)| {
                let history = s
                    .live
                    .history(UserIdx(idx))
                    .iter()
                    .map(|x| (s.item_key(x.item), x.weight, x.count))
                    .collect();
                (key.to_owned(), history)
            })
            .collect();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        drop(s);
        let popular = e
            .popular(&PopularQuery {
                n: 1000,
                categories: Vec::new(),
                window: None,
                sort: PopularSort::Count,
            })
            .into_iter()
            .map(|r| format!("{}={}", r.item, r.score))
            .collect();
        (e.counts(), users, popular)
    }

    /// Ingests and erasures racing each other leave memory exactly as a rebuild from the store.
    #[test]
    fn concurrent_ingest_and_erasure_match_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let live = Arc::new(engine(dir.path()));
        std::thread::scope(|scope| {
            for t in 0..4 {
                let live = live.clone();
                scope.spawn(move || {
                    for round in 0..30 {
                        let events = (0..5)
                            .map(|i| {
                                NewEvent::new(
                                    format!("u{}", (t + round + i) % 6),
                                    format!("i{}", (round * i) % 7),
                                    "click",
                                )
                            })
                            .collect();
                        live.ingest(events).unwrap();
                    }
                });
            }
            let live = live.clone();
            scope.spawn(move || {
                for round in 0..30 {
                    live.delete_user(&format!("u{}", round % 6)).unwrap();
                    if round % 10 == 0 {
                        live.delete_item(&format!("i{}", round % 7)).unwrap();
                    }
                }
            });
        });
        let rebuilt = engine(dir.path());
        assert_eq!(snapshot(&live), snapshot(&rebuilt));
    }

    #[test]
    fn profile_changes_win_over_users_created_by_events() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        e.put_user(UserUpsert {
            key: "quiet".into(),
            attributes: Default::default(),
            consent: bespoke_store::ConsentUpdate {
                personalization: Some(false),
                training: None,
            },
            default_consent: bespoke_store::Consent::ALL,
            restore_times: None,
        })
        .unwrap();
        e.ingest(vec![NewEvent::new("quiet", "i", "view")]).unwrap();
        let q = RecommendQuery {
            n: 5,
            ..Default::default()
        };
        assert!(!e.recommend("quiet", &q).personalized);
        assert!(
            e.recommend("someone-else", &q)
                .items
                .iter()
                .all(|r| r.reasons.iter().any(|x| x.kind() == "fallback"))
        );
    }
}
