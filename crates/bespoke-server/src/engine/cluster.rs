//! Several nodes on one shared store (PostgreSQL): each follows the others' writes into its
//! own memory, and one at a time leads (trains on schedule, refreshes segments, expires data).
//!
//! **Events** are followed through the log itself: appends commit in sequence order (the
//! store's append lock), so reading `scan_interactions(cursor)` never skips an event that
//! commits later with a smaller number. A node's own appends are applied by
//! [`Engine::ingest`] as before; the two paths meet under the state lock, where `cursor` and
//! `own` decide which one applies each event, so every event is applied exactly once:
//! ingestion skips an event the tail already passed (`seq <= cursor`), and marks the others
//! `own`, which the tail then skips (and, since the store numbers appends without gaps, steps
//! over without reading them back when they follow the cursor).
//!
//! **Everything else** is announced by the store ([`bespoke_store::Change`]) and read back:
//! profiles and consent, deletions (an erasure on one node reaches every node's memory and
//! served model at once), catalog changes, the active model version, rules and blocks. When
//! announcements may have been lost (the listening connection dropped) or retention expired
//! events, the node rebuilds its state from the store and swaps it in.
//!
//! **Leadership** is a store lock per role ([`bespoke_store::ClusterStore::try_lead`]), which
//! the database releases when its holder dies: `scheduler` for background training, segment
//! schedules and retention; `train` for the duration of every training run, wherever it was
//! asked for, so that only one node trains at a time.

use std::sync::Arc;
use std::time::Duration;

use bespoke_algo::{ItemIdx, UserIdx};
use bespoke_store::{Change, ChangeFeed, Leadership};
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};

use super::Engine;
use crate::state::newer;

/// Events read from the log per query when catching up.
const TAIL_CHUNK: usize = 10_000;

/// The follower's position in the event log.
#[derive(Debug, Default)]
struct Tail {
    /// Every event up to this sequence number is applied.
    cursor: u64,
    /// Events above `cursor` that this node's ingestion applied itself.
    own: FxHashSet<u64>,
}

/// What the engine needs to follow and lead a shared store.
pub(super) struct Cluster {
    /// Announcements from the store; `None` on a store nobody else writes.
    feed: Option<Arc<ChangeFeed>>,
    /// Locked inside the state's write lock, never the other way around.
    tail: Mutex<Tail>,
    /// One catch-up at a time (they would read the same rows twice).
    catching_up: Mutex<()>,
    /// Leaderships held, by role.
    leads: Mutex<FxHashMap<&'static str, Box<dyn Leadership>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("shared", &self.feed.is_some())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub(super) fn new(feed: Option<Arc<ChangeFeed>>, cursor: u64) -> Self {
        Self {
            feed,
            tail: Mutex::new(Tail {
                cursor,
                own: FxHashSet::default(),
            }),
            catching_up: Mutex::new(()),
            leads: Mutex::new(FxHashMap::default()),
        }
    }

    /// Whether other nodes may write the store.
    pub(super) fn shared(&self) -> bool {
        self.feed.is_some()
    }
}

/// What a node knows of its place in the cluster (docs/deploy.md), for `GET /v1/models`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    /// Other nodes may write the store (PostgreSQL).
    pub shared_store: bool,
    /// This node holds the `scheduler` leadership (background training, segment schedules,
    /// retention).
    pub leader: bool,
    /// The last event sequence number applied to memory.
    pub applied_seq: u64,
}

impl Engine {
    /// Whether another node may write this engine's store.
    pub fn shared_store(&self) -> bool {
        self.cluster.shared()
    }

    /// Where this node stands in its cluster.
    pub fn cluster_status(&self) -> ClusterStatus {
        ClusterStatus {
            shared_store: self.cluster.shared(),
            leader: !self.cluster.shared() || self.cluster.leads.lock().contains_key("scheduler"),
            applied_seq: self.cluster.tail.lock().cursor,
        }
    }

    /// Whether this node holds the leadership of `role`, taking it if nobody does and
    /// checking that a held one is still alive. Always true on a store nobody else writes.
    /// Blocks (a round trip to the store).
    pub fn lead(&self, role: &'static str) -> bool {
        if !self.cluster.shared() {
            return true;
        }
        let mut leads = self.cluster.leads.lock();
        if let Some(held) = leads.get_mut(role) {
            if held.alive() {
                return true;
            }
            tracing::warn!(target: "serve::cluster", role, "lost the leadership (its connection ended)");
            leads.remove(role);
        }
        match self.store.try_lead(role) {
            Ok(Some(guard)) => {
                tracing::info!(target: "serve::cluster", role, "took the leadership");
                leads.insert(role, guard);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(target: "serve::cluster", role, error = %e, "could not ask for the leadership");
                false
            }
        }
    }

    /// Gives up every leadership held (another node may take them): at shutdown.
    pub fn resign(&self) {
        self.cluster.leads.lock().clear();
    }

    /// The lock every training run holds on a shared store, so that one node trains at a
    /// time; `Ok(None)` when another node is training. A no-op lock on a store nobody shares.
    pub(super) fn training_lease(&self) -> bespoke_store::Result<Option<Box<dyn Leadership>>> {
        self.store.try_lead("train")
    }

    /// Whether a training run is in progress on another node.
    pub(super) fn training_elsewhere(&self) -> bool {
        self.cluster.shared() && matches!(self.training_lease(), Ok(None))
    }

    /// Marks the events this node appended (already applied by [`Engine::ingest`] under the
    /// state lock, which the caller holds) so that the tail skips them; whether `seq` is still
    /// to be applied (the tail has not applied it already).
    pub(super) fn claim_own(&self, seq: u64) -> bool {
        if !self.cluster.shared() {
            return true;
        }
        let mut tail = self.cluster.tail.lock();
        if seq <= tail.cursor {
            return false;
        }
        tail.own.insert(seq);
        true
    }

    /// Waits up to `wait` for announcements and applies them, then reads the event log past
    /// the cursor (whether or not anything was announced: a backstop for lost
    /// announcements). Returns how many events were applied. A no-op without a shared store.
    pub fn follow(&self, wait: Duration) -> bespoke_store::Result<u64> {
        let Some(feed) = self.cluster.feed.clone() else {
            std::thread::sleep(wait);
            return Ok(0);
        };
        let mut changes = Vec::new();
        if let Some(first) = feed.next_timeout(wait) {
            changes.push(first);
            while let Some(c) = feed.try_next() {
                changes.push(c);
            }
        }
        if changes.contains(&Change::Resync) {
            self.resync()?;
            return Ok(0);
        }
        // Profiles and items before events, so that events name users and items known here.
        let mut seen = FxHashSet::default();
        for c in changes {
            if c == Change::Events || !seen.insert(c.clone()) {
                continue;
            }
            self.apply_change(c)?;
        }
        // Rewards other nodes logged (decision loops learn from every node's rewards).
        if let Err(e) = self.decisions.follow() {
            tracing::warn!(target: "serve::cluster", error = %e, "following the decision logs failed");
        }
        self.catch_up()
    }

    /// Applies the events appended since the cursor; how many.
    pub fn catch_up(&self) -> bespoke_store::Result<u64> {
        if !self.cluster.shared() {
            return Ok(0);
        }
        let _one = self.cluster.catching_up.lock();
        let mut applied = 0u64;
        loop {
            let cursor = {
                // Sequence numbers are assigned without gaps, so a run of this node's own
                // events right after the cursor needs no reading back: under steady
                // ingestion through this node, the tail then reads only others' events.
                let mut tail = self.cluster.tail.lock();
                while let Some(next) = tail.cursor.checked_add(1)
                    && tail.own.remove(&next)
                {
                    tail.cursor = next;
                }
                tail.cursor
            };
            let rows = self.store.scan_interactions(cursor, TAIL_CHUNK)?;
            let Some(last) = rows.last().map(|r| r.seq) else {
                break;
            };
            // Users and items created by other nodes' events, read before the lock is taken.
            let (users, items) = {
                let s = self.serving.state.read();
                let mut users: Vec<u32> = rows
                    .iter()
                    .map(|r| r.user.0)
                    .filter(|u| s.users.key(*u).is_none() && !s.deleted_users.contains(u))
                    .collect();
                let mut items: Vec<u32> = rows
                    .iter()
                    .map(|r| r.item.0)
                    .filter(|i| s.items.key(*i).is_none() && !s.deleted_items.contains(i))
                    .collect();
                users.sort_unstable();
                users.dedup();
                items.sort_unstable();
                items.dedup();
                (users, items)
            };
            let users: Vec<_> = users
                .into_iter()
                .filter_map(|u| self.user_by_idx(UserIdx(u)).transpose())
                .collect::<bespoke_store::Result<_>>()?;
            let items: Vec<_> = items
                .into_iter()
                .filter_map(|i| self.item_by_idx(ItemIdx(i)).transpose())
                .collect::<bespoke_store::Result<_>>()?;
            let mut s = self.serving.state.write();
            for u in &users {
                if !s.deleted_users.contains(&u.idx.0) && newer(s.users.get(&u.key), u.idx.0) {
                    s.users.insert(&u.key, u.idx.0);
                    s.set_personalization(u.idx, u.consent.personalization);
                    s.live.set_private(u.idx, !u.consent.training);
                    if !u.consent.marketing {
                        s.no_marketing.insert(u.idx.0);
                    }
                }
            }
            for i in &items {
                if !s.deleted_items.contains(&i.idx.0) && newer(s.items.get(&i.key), i.idx.0) {
                    s.set_item(i);
                }
            }
            let mut tail = self.cluster.tail.lock();
            let mut fresh = 0u64;
            for r in &rows {
                if r.seq <= tail.cursor || tail.own.remove(&r.seq) {
                    continue;
                }
                fresh += 1;
                if s.deleted_users.contains(&r.user.0) || s.deleted_items.contains(&r.item.0) {
                    continue;
                }
                if let Some(w) = self.weights.weight(&r.kind, r.value)
                    && w.is_finite()
                {
                    s.live.apply(r.user, r.item, w, r.timestamp);
                    s.bump_user(r.user);
                }
                s.apply_signal(&self.settings, &r.kind, r.user, r.item, r.timestamp);
            }
            tail.cursor = tail.cursor.max(last);
            let cursor = tail.cursor;
            tail.own.retain(|&seq| seq > cursor);
            drop(tail);
            drop(s);
            self.training.count_events(fresh);
            applied += fresh;
            if rows.len() < TAIL_CHUNK {
                break;
            }
        }
        Ok(applied)
    }

    /// Rebuilds what serving holds of `user`'s events on `item` from the store, after some of
    /// them were deleted (here or on another node): history, popularity, co-occurrence, hides
    /// by event, and the user's cached vector. The store is read under the state lock (one
    /// indexed read), so no event of the pair is applied between the read and the rebuild; on
    /// a shared store only the events this node has applied count, the tail applies the rest.
    /// On one node, an event of the same pair appended in the instant before the read and
    /// applied just after would count twice until a restart: a race we accept for a rare
    /// operation rather than take the state lock around every append.
    pub(crate) fn rebuild_pair(&self, user: UserIdx, item: ItemIdx) -> bespoke_store::Result<()> {
        let _one = self.cluster.catching_up.lock();
        let mut s = self.serving.state.write();
        if s.deleted_users.contains(&user.0) || s.deleted_items.contains(&item.0) {
            return Ok(());
        }
        let rows = self.store.pair_events(user, item)?;
        let rows: Vec<_> = if self.cluster.shared() {
            let tail = self.cluster.tail.lock();
            rows.into_iter()
                .filter(|r| r.seq <= tail.cursor || tail.own.contains(&r.seq))
                .collect()
        } else {
            rows
        };
        let kept: Vec<_> = rows
            .iter()
            .filter_map(|r| {
                let w = self.weights.weight(&r.kind, r.value)?;
                w.is_finite().then_some((w, r.timestamp))
            })
            .collect();
        s.live.replace_pair(user, item, &kept);
        s.exposure.drop_event_hide(user.0, item.0);
        for r in rows
            .iter()
            .filter(|r| r.kind != crate::settings::IMPRESSION)
        {
            s.apply_signal(&self.settings, &r.kind, user, item, r.timestamp);
        }
        s.bump_user(user);
        Ok(())
    }

    fn user_by_idx(&self, idx: UserIdx) -> bespoke_store::Result<Option<bespoke_store::User>> {
        let after = idx.0.checked_sub(1).map(UserIdx);
        Ok(self
            .store
            .scan_users(after, 1)?
            .pop()
            .filter(|u| u.idx == idx))
    }

    fn item_by_idx(&self, idx: ItemIdx) -> bespoke_store::Result<Option<bespoke_store::Item>> {
        let after = idx.0.checked_sub(1).map(ItemIdx);
        Ok(self
            .store
            .scan_items(after, 1)?
            .pop()
            .filter(|i| i.idx == idx))
    }

    /// Applies one announced change to memory.
    fn apply_change(&self, change: Change) -> bespoke_store::Result<()> {
        match change {
            Change::Events | Change::Resync => {}
            Change::User(idx) => {
                let Some(u) = self.user_by_idx(idx)? else {
                    // Deleted since: its deletion is announced too.
                    return Ok(());
                };
                let _admin = self.admin.lock();
                let model = self.serving.model.load_full();
                let mut s = self.serving.state.write();
                if s.deleted_users.contains(&idx.0) || !newer_or_same(s.users.get(&u.key), idx.0) {
                    return Ok(());
                }
                let was_training = !s.live.is_private(idx);
                s.users.insert(&u.key, idx.0);
                s.set_personalization(idx, u.consent.personalization);
                s.live.set_private(idx, !u.consent.training);
                if u.consent.marketing {
                    s.no_marketing.remove(&idx.0);
                } else {
                    s.no_marketing.insert(idx.0);
                }
                if was_training
                    && !u.consent.training
                    && let Some(m) = &model
                {
                    m.als.forget(idx.0);
                }
                s.bump_user(idx);
            }
            Change::UserDeleted(idx) => {
                let _admin = self.admin.lock();
                let key = self
                    .serving
                    .state
                    .read()
                    .users
                    .key(idx.0)
                    .map(str::to_owned);
                if let Some(key) = &key {
                    self.forget_exposures(key);
                }
                let mut s = self.serving.state.write();
                s.deleted_users.insert(idx.0);
                if let Some(key) = &key
                    && s.users.get(key) == Some(idx.0)
                {
                    s.users.remove(key);
                }
                s.live.remove_user(idx);
                s.exposure.remove_user(idx.0);
                s.bump_user(idx);
                drop(s);
                if let Some(m) = self.serving.model.load_full() {
                    m.als.forget(idx.0);
                }
            }
            Change::Item(idx) => {
                let Some(item) = self.item_by_idx(idx)? else {
                    return Ok(());
                };
                let _admin = self.admin.lock();
                let mut s = self.serving.state.write();
                if s.deleted_items.contains(&idx.0) || !newer_or_same(s.items.get(&item.key), idx.0)
                {
                    return Ok(());
                }
                s.set_item(&item);
                drop(s);
                if let Some(m) = self.serving.model.load_full()
                    && let Some(content) = &m.content
                    && m.model_item(idx.0).is_none()
                {
                    content.set_cold(
                        idx.0,
                        &crate::models::content::item_bag(
                            &item.categories,
                            &item.text,
                            &item.numeric,
                            &item.attributes,
                            &item.embeddings,
                        ),
                    );
                }
            }
            Change::ItemDeleted(idx) => {
                let _admin = self.admin.lock();
                let mut s = self.serving.state.write();
                s.deleted_items.insert(idx.0);
                if let Some(key) = s.items.key(idx.0).map(str::to_owned)
                    && s.items.get(&key) == Some(idx.0)
                {
                    s.items.remove(&key);
                }
                s.live.remove_item(idx);
                s.columns.clear_item(idx.0);
                s.catalog_epoch += 1;
                drop(s);
                if let Some(c) = self
                    .serving
                    .model
                    .load_full()
                    .as_ref()
                    .and_then(|m| m.content.as_ref())
                {
                    c.remove_cold(idx.0);
                }
            }
            Change::Pair(user, item) => self.rebuild_pair(user, item)?,
            Change::Model => self.follow_model()?,
            Change::Rules => self.reload_rules()?,
            Change::Blocks(user) => {
                let blocks = self.store.blocks_of(user)?;
                let mut s = self.serving.state.write();
                if !s.deleted_users.contains(&user.0) {
                    for b in blocks {
                        s.exposure
                            .set_hidden(b.user.0, b.item.0, b.blocked, b.at, false);
                    }
                }
            }
            Change::Erasures => self.merge_pending_erasures()?,
        }
        Ok(())
    }

    /// Serves the version another node activated (the store's active one), if it is not the
    /// one served here; then scrubs it of this node's pending erasures and completes those
    /// its snapshot postdates.
    fn follow_model(&self) -> bespoke_store::Result<()> {
        let Some(version) = self.store.active_model()? else {
            return Ok(());
        };
        if self.model().is_none_or(|m| m.version != version) {
            match self.load_model(version) {
                Ok(model) => {
                    let model = Arc::new(model);
                    self.serving.model.store(Some(model.clone()));
                    if let Err(e) = model.place_cold_items(&*self.store) {
                        tracing::warn!(target: "serve::cluster", version, error = %e, "placing new items on the followed model failed");
                    }
                    tracing::info!(target: "serve::cluster", version, "serving the model another node activated");
                }
                Err(e) => {
                    tracing::error!(target: "serve::cluster", version, error = %e, "could not load the model another node activated");
                    return Ok(());
                }
            }
        }
        self.after_foreign_activation(version)
    }

    /// Re-reads everything from the store and swaps it in: announcements may have been
    /// missed, or retention expired events.
    pub fn resync(&self) -> bespoke_store::Result<()> {
        let _one = self.cluster.catching_up.lock();
        let _admin = self.admin.lock();
        let mut fresh = crate::state::State::new(&self.settings);
        let loaded = super::load_state(&*self.store, &self.settings, &self.weights, &mut fresh)?;
        let mut s = self.serving.state.write();
        // Revisions only grow, so cached user vectors of the old state are never taken for
        // the new one's.
        fresh.catalog_epoch = s.catalog_epoch + 1;
        *s = fresh;
        let mut tail = self.cluster.tail.lock();
        tail.cursor = loaded.last_seq;
        // Events this node appended after the read are above the cursor and not in the new
        // state: the tail applies them.
        tail.own.clear();
        drop(tail);
        drop(s);
        tracing::info!(target: "serve::cluster", seq = loaded.last_seq, "re-read the serving state from the store");
        self.reload_rules()?;
        self.merge_pending_erasures()?;
        self.follow_model()
    }
}

/// Whether a profile change of id `idx` should (re)register a key mapped to `current`: the
/// same incarnation or a newer one.
fn newer_or_same(current: Option<u32>, idx: u32) -> bool {
    current.is_none_or(|c| c <= idx)
}
