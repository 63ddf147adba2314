//! # Brief overview
//!
//! `bespoke-store` keeps Bespoke's durable state: users, items (with their embedding vectors) and
//! the event log. Callers talk to traits only: one per capability ([`EventStore`],
//! [`CatalogStore`], [`ModelStore`], [`AccessStore`], [`PrivacyStore`], [`DecisionStore`],
//! [`RuleStore`], [`CampaignStore`]) and [`Store`], their union. [`SqliteStore`] is the embedded backend, one SQLite
//! file in a data directory, with one module per capability under `sqlite/`. `PgStore` (feature
//! `postgres`, options in `PgOptions`) is the PostgreSQL backend, one schema of one database,
//! with one module per capability under `postgres/`. Nothing backend-specific (no SQLite or
//! PostgreSQL type) appears in the traits, their data types or [`Error`], and both backends pass
//! the same conformance suite.
//!
//! Writes go through one writer thread that commits whatever requests arrived while the previous
//! transaction was committing, as one transaction (group commit). A call returns only after its
//! transaction has committed, so an acknowledged write is durable.
//!
//! ```
//! use bespoke_store::prelude::*;
//! use bespoke_store::{EventBatch, NewEvent, SqliteStore, StoreOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
//! let event = NewEvent::new("alice", "book-1", "purchase");
//! let appended = store.append_events(EventBatch::new(vec![event.clone()])).unwrap();
//! assert!(!appended[0].duplicate);
//! assert_eq!(store.stats().unwrap().events, 1);
//! ```
#![warn(missing_docs)]

mod admin;
mod campaign;
mod cluster;
#[cfg(feature = "conformance")]
pub mod conformance;
mod decision;
mod error;
mod event_id;
mod fingerprint;
#[cfg(feature = "postgres")]
pub mod migrate;
mod model;
mod models;
mod owner_only;
#[cfg(feature = "postgres")]
mod postgres;
mod rule;
mod sqlite;

pub use admin::{AuditEntry, KeyRecord, NewAudit, NewKey, SessionLimits, SessionRecord};
pub use bespoke_algo::{ItemIdx, Millis, UserIdx};
pub use campaign::{Exposure, Member, NewExposure};
pub use cluster::{Alone, Change, ChangeFeed, ClusterStore, Leadership};
pub use decision::{
    DecisionRecord, LoopLogStats, LoopRecord, NewDecision, NewReward, RewardOutcome, RewardRecord,
};
pub use error::{DecisionStoreError, Error, Result, RuleStoreError};
pub use model::{
    Appended, Consent, ConsentUpdate, Deleted, Event, EventBatch, Interaction, Item, ItemUpsert,
    Kinds, NewEvent, Page, StoreStats, Upserted, User, UserUpsert,
};
pub use models::ModelRecord;
#[cfg(feature = "postgres")]
pub use postgres::{PgOptions, PgStore};
pub use rule::{Block, RuleRecord};
pub use sqlite::{SqliteStore, StoreOptions};

/// Every store trait, for `use bespoke_store::prelude::*`: a capability trait's methods can be
/// called on a concrete backend (or through a generic bound) only with that trait in scope.
pub mod prelude {
    pub use crate::{
        AccessStore, CampaignStore, CatalogStore, ClusterStore, DecisionStore, EventStore,
        ModelStore, PrivacyStore, RuleStore, Store,
    };
}

/// Durable storage of users, items and events: every capability trait at once.
///
/// Every method blocks until its work is done (and, for writes, committed); async callers run them
/// on a blocking thread pool. Keys are the external ids clients send; the store assigns each user
/// and item a dense internal id ([`UserIdx`], [`ItemIdx`]) that never changes and is never reused.
///
/// Implemented for every type that implements all capability traits; a backend implements those,
/// and code that needs one capability only can take that trait instead.
pub trait Store:
    EventStore
    + CatalogStore
    + ModelStore
    + AccessStore
    + PrivacyStore
    + DecisionStore
    + RuleStore
    + CampaignStore
    + ClusterStore
{
}

impl<T> Store for T where
    T: EventStore
        + CatalogStore
        + ModelStore
        + AccessStore
        + PrivacyStore
        + DecisionStore
        + RuleStore
        + CampaignStore
        + ClusterStore
        + ?Sized
{
}

/// The event log: appending events (idempotent by event id), reading them back by user or in
/// sequence order, counting them, and deleting old ones for retention.
///
/// Every method blocks until its work is done (and, for writes, committed).
pub trait EventStore: Send + Sync + std::fmt::Debug {
    /// Appends a batch of events atomically: either every event is stored (or recognised as a
    /// duplicate of an identical earlier event with the same `event_id`) or none is.
    ///
    /// Returns one [`Appended`] per input event, in input order. Fails with
    /// [`Error::EventConflict`] when an `event_id` was already used for a different payload, and
    /// with [`Error::UnknownUser`] / [`Error::UnknownItem`] when the batch forbids creating them.
    fn append_events(&self, batch: EventBatch) -> Result<Vec<Appended>>;

    /// A page of the user's events, newest first, strictly before `before` (a sequence number)
    /// when given. `None` when there is no such user.
    fn user_events(
        &self,
        key: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Option<Page<Event>>>;

    /// Up to `limit` events with sequence number greater than `after`, in sequence order, in the
    /// lean form used to build in-memory indexes.
    fn scan_interactions(&self, after: u64, limit: usize) -> Result<Vec<Interaction>>;

    /// Up to `limit` whole events with sequence number greater than `after`, in sequence order.
    fn scan_events(&self, after: u64, limit: usize) -> Result<Vec<Event>>;

    /// Counts and sizes.
    fn stats(&self) -> Result<StoreStats>;

    /// Deletes up to `limit` events older than `before` (retention) and returns them, so that
    /// derived state can forget them too. Call until it returns nothing.
    fn delete_events_before(&self, before: Millis, limit: usize) -> Result<Vec<Interaction>>;

    /// The events of user `user` on item `item` (internal ids), in sequence order.
    fn pair_events(&self, user: UserIdx, item: ItemIdx) -> Result<Vec<Interaction>>;

    /// Deletes the events of the user keyed `user` on the item keyed `item` whose type `kinds`
    /// selects, in one transaction, and returns them in sequence order, so that derived state
    /// can forget them too (a shared store announces [`Change::Pair`]). Empty when the user,
    /// the item or such events do not exist. Their event ids are free again afterwards.
    fn delete_pair_events(&self, user: &str, item: &str, kinds: &Kinds)
    -> Result<Vec<Interaction>>;
}

/// Users and items: upserts, lookups by key, deletion (with the events that refer to them) and
/// scans in internal-id order.
///
/// Every method blocks until its work is done (and, for writes, committed).
pub trait CatalogStore: Send + Sync + std::fmt::Debug {
    /// Creates or replaces users' attributes in one transaction (all or none); consent flags not
    /// given keep their value (or the given default for a new user).
    fn put_users(&self, users: Vec<UserUpsert>) -> Result<Vec<Upserted<User>>>;

    /// Creates or replaces one user; see [`CatalogStore::put_users`].
    fn put_user(&self, user: UserUpsert) -> Result<Upserted<User>> {
        self.put_users(vec![user])?
            .pop()
            .ok_or_else(|| Error::Corrupt("an upsert returned nothing".into()))
    }

    /// The user with this key.
    fn get_user(&self, key: &str) -> Result<Option<User>>;

    /// Deletes the user, all their events, their item blocks ([`RuleStore::set_block`]), their
    /// experiment exposures and segment memberships ([`CampaignStore`]), in one transaction.
    /// `None` when there was no such user (exposures recorded under the key are deleted all the
    /// same).
    fn delete_user(&self, key: &str) -> Result<Option<Deleted>>;

    /// Creates or replaces items in one transaction (all or none). Each embedding name has one
    /// dimension, fixed by the first vector stored under it; a vector of another length fails with
    /// [`Error::DimensionMismatch`].
    fn put_items(&self, items: Vec<ItemUpsert>) -> Result<Vec<Upserted<Item>>>;

    /// Creates or replaces one item; see [`CatalogStore::put_items`].
    fn put_item(&self, item: ItemUpsert) -> Result<Upserted<Item>> {
        self.put_items(vec![item])?
            .pop()
            .ok_or_else(|| Error::Corrupt("an upsert returned nothing".into()))
    }

    /// The item with this key, with its embeddings.
    fn get_item(&self, key: &str) -> Result<Option<Item>>;

    /// Deletes the item, all events on it and every user's block of it
    /// ([`RuleStore::set_block`]), in one transaction. `None` when there was no such item.
    fn delete_item(&self, key: &str) -> Result<Option<Deleted>>;

    /// Up to `limit` users with id greater than `after` (`None`: from the first), in id order.
    fn scan_users(&self, after: Option<UserIdx>, limit: usize) -> Result<Vec<User>>;

    /// Up to `limit` items with id greater than `after` (`None`: from the first), in id order.
    fn scan_items(&self, after: Option<ItemIdx>, limit: usize) -> Result<Vec<Item>>;
}

/// Trained model versions: named files plus metadata, the active version, pruning and in-place
/// rewrites (to scrub an erased user's rows).
///
/// Every method blocks until its work is done (and, for writes, committed).
pub trait ModelStore: Send + Sync + std::fmt::Debug {
    /// Saves a new model version made of named files (names of ASCII letters, digits, `.`, `_`
    /// and `-`) and its metadata, atomically; returns its version number.
    fn save_model(&self, files: &[(&str, &[u8])], meta: &serde_json::Value) -> Result<u64>;

    /// Every stored model version, oldest first.
    fn list_models(&self) -> Result<Vec<ModelRecord>>;

    /// One file of a model version. [`Error::UnknownModel`] if the version does not exist.
    fn read_model_file(&self, version: u64, name: &str) -> Result<Vec<u8>>;

    /// Makes a version the one serving uses. [`Error::UnknownModel`] if it does not exist.
    fn activate_model(&self, version: u64) -> Result<()>;

    /// The version serving uses, if any.
    fn active_model(&self) -> Result<Option<u64>>;

    /// Deletes all but the newest `keep` versions, never the active one; returns those deleted.
    fn prune_models(&self, keep: usize) -> Result<Vec<u64>>;

    /// Deletes a stored model version that is not the active one.
    fn delete_model(&self, version: u64) -> Result<()>;

    /// Rewrites one file of a stored model version in place (atomically), e.g. to scrub an
    /// erased user's row. [`Error::UnknownModel`] if the version does not exist.
    fn rewrite_model_file(&self, version: u64, name: &str, bytes: &[u8]) -> Result<()>;
}

/// Who may do what and what they did: API key records, the audit log, and the store's named
/// secrets (the keys of keyed hashes that must survive restarts).
///
/// Every method blocks until its work is done (and, for writes, committed).
pub trait AccessStore: Send + Sync + std::fmt::Debug {
    /// Stores a new API key record; [`Error::InvalidInput`] if the prefix is taken.
    fn insert_key(&self, key: NewKey) -> Result<KeyRecord>;

    /// Every API key record, revoked ones included, oldest first.
    fn keys(&self) -> Result<Vec<KeyRecord>>;

    /// Revokes the key with this prefix; `None` if there is none (revoking twice is a no-op that
    /// returns the record).
    fn revoke_key(&self, prefix: &str) -> Result<Option<KeyRecord>>;

    /// Appends to the audit log.
    fn audit(&self, entry: NewAudit) -> Result<()>;

    /// A page of the audit log, newest first, before sequence number `before` when given.
    fn audit_log(&self, before: Option<u64>, limit: usize) -> Result<Page<AuditEntry>>;

    /// The store's secret called `name`: `fresh` is kept and returned the first time, the kept
    /// value every time after (for keyed hashes that must survive restarts).
    fn secret(&self, name: &str, fresh: [u8; 32]) -> Result<[u8; 32]>;

    /// The store's secret called `name` if it holds one (never creates it).
    fn stored_secret(&self, name: &str) -> Result<Option<[u8; 32]>>;

    /// Deletes the store's secret called `name` and makes it unrecoverable from the files (see
    /// [`PrivacyStore::purge_deleted`]); whether there was one.
    fn delete_secret(&self, name: &str) -> Result<bool>;

    /// Stores a new dashboard session; first drops the sessions no longer live at its
    /// `created_at` and, when `limits.max` are left, the oldest.
    fn open_session(&self, session: SessionRecord, limits: SessionLimits) -> Result<()>;

    /// The session found by `lookup`, live or not.
    fn session(&self, lookup: &[u8; 32]) -> Result<Option<SessionRecord>>;

    /// Sets the `last_seen` of the session found by `lookup` (none: nothing happens).
    fn set_session_seen(&self, lookup: &[u8; 32], at: Millis) -> Result<()>;

    /// The session found by `lookup` if live at `now` (an expired one is deleted), its
    /// `last_seen` moved to `now` when older than `limits.touch_every`. The same policy on
    /// every backend: they provide only [`Self::session`], [`Self::set_session_seen`] and
    /// [`Self::close_session`].
    fn touch_session(
        &self,
        lookup: &[u8; 32],
        now: Millis,
        limits: SessionLimits,
    ) -> Result<Option<SessionRecord>> {
        let Some(mut session) = self.session(lookup)? else {
            return Ok(None);
        };
        if !limits.live(&session, now) {
            self.close_session(lookup)?;
            return Ok(None);
        }
        if now - session.last_seen >= limits.touch_every {
            session.last_seen = now;
            self.set_session_seen(lookup, now)?;
        }
        Ok(Some(session))
    }

    /// Ends the session found by `lookup` (logout, or its key no longer valid).
    fn close_session(&self, lookup: &[u8; 32]) -> Result<()>;
}

/// What the storage itself guarantees about deleted data: erasure receipts, making deletions
/// unrecoverable from the files, and checking the files for corruption.
///
/// Every method blocks until its work is done (and, for writes, committed).
pub trait PrivacyStore: Send + Sync + std::fmt::Debug {
    /// Creates or replaces an erasure receipt.
    fn save_erasure(
        &self,
        id: &str,
        requested_at: Millis,
        receipt: &serde_json::Value,
    ) -> Result<()>;

    /// One erasure receipt.
    fn erasure(&self, id: &str) -> Result<Option<serde_json::Value>>;

    /// Every erasure receipt, oldest first.
    fn erasures(&self) -> Result<Vec<(String, serde_json::Value)>>;

    /// Makes everything deleted so far unrecoverable from the store's files, for erasure: no
    /// deleted row may linger in free space or in a journal. On SQLite, deleted content is
    /// overwritten with zeros as it is deleted (`secure_delete`), and this copies the WAL into
    /// the database and truncates it (`wal_checkpoint(TRUNCATE)`), which the older versions of
    /// changed pages would otherwise keep. Blocks until done; if it stays busy (long readers),
    /// it fails, and the store keeps retrying in the background until it succeeds.
    fn purge_deleted(&self) -> Result<()>;

    /// Checks the storage for corruption (`PRAGMA integrity_check` on SQLite); the problems
    /// found, none when healthy.
    fn integrity_check(&self) -> Result<Vec<String>>;
}

/// Decision loops: their configuration, the decision and reward log, learner checkpoints, and
/// per-user deletion, export and retention of decisions.
///
/// Every method blocks until its work is done (and, for writes, committed).
pub trait DecisionStore: Send + Sync + std::fmt::Debug {
    /// Creates or replaces a decision loop's configuration.
    fn put_loop(&self, name: &str, config: &serde_json::Value) -> Result<LoopRecord>;

    /// One decision loop.
    fn get_loop(&self, name: &str) -> Result<Option<LoopRecord>>;

    /// Every decision loop, by name.
    fn loops(&self) -> Result<Vec<LoopRecord>>;

    /// Logs a decision; `None` if a decision with this id exists (nothing is changed).
    fn insert_decision(&self, decision: NewDecision) -> Result<Option<u64>>;

    /// One decision with its rewards.
    fn decision(&self, id: &str) -> Result<Option<DecisionRecord>>;

    /// Marks a deferred decision active; false if it was active already or does not exist.
    fn activate_decision(&self, id: &str) -> Result<bool>;

    /// Records a reward for one slot of a decision.
    fn insert_reward(&self, reward: NewReward) -> Result<RewardOutcome>;

    /// Records rewards (the defaults of expired decisions) and marks the `settle` decisions'
    /// windows closed, in one transaction.
    fn insert_rewards(
        &self,
        rewards: Vec<NewReward>,
        settle: Vec<String>,
    ) -> Result<Vec<RewardOutcome>>;

    /// Decisions whose window is still open and whose deadline is before `deadline_before`
    /// (all open ones with `None`), earliest deadline first.
    fn open_decisions(
        &self,
        deadline_before: Option<Millis>,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>>;

    /// A loop's rewards with sequence numbers above `after`, in order, each with its decision:
    /// what a learner replays.
    fn loop_rewards(
        &self,
        loop_name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(RewardRecord, DecisionRecord)>>;

    /// The last `limit` activated decisions of a loop whose window has closed, oldest first,
    /// with their rewards: what off-policy evaluation reads.
    fn decision_log(&self, loop_name: &str, limit: usize) -> Result<Vec<DecisionRecord>>;

    /// Saves a loop's learner as of reward sequence number `reward_seq`.
    fn save_checkpoint(&self, loop_name: &str, reward_seq: u64, model: Vec<u8>) -> Result<()>;

    /// A loop's last checkpoint: its reward sequence number and the learner's bytes.
    fn checkpoint(&self, loop_name: &str) -> Result<Option<(u64, Vec<u8>)>>;

    /// Forgets a loop's checkpoint (its model will be rebuilt from the log).
    fn delete_checkpoint(&self, loop_name: &str) -> Result<()>;

    /// Deletes every decision made for the stored user key `user` and its rewards; returns the
    /// loops affected and the number of decisions.
    fn delete_user_decisions(&self, user: &str) -> Result<(Vec<String>, u64)>;

    /// Every decision made for the stored user key `user`, oldest first.
    fn user_decisions(&self, user: &str) -> Result<Vec<DecisionRecord>>;

    /// Counts over a loop's log.
    fn loop_stats(&self, loop_name: &str) -> Result<LoopLogStats>;

    /// Deletes up to `limit` closed decisions made before `before` with their rewards
    /// (retention); returns how many.
    fn delete_decisions_before(&self, before: Millis, limit: usize) -> Result<u64>;
}

/// Saved business rules and per-user item blocks.
///
/// Rules are named JSON definitions that the store keeps without interpreting (the server
/// validates names and definitions). Blocks are users' explicit choices to hide an item (or
/// show it again): one row per (user, item) pair, the later decision winning. They go with
/// their user or item ([`CatalogStore::delete_user`], [`CatalogStore::delete_item`]) but not
/// with retention ([`EventStore::delete_events_before`]): they are the user's standing choices,
/// not events, and hiding an item the user asked never to see again must not lapse with age.
///
/// Every method blocks until its work is done (and, for writes, committed).
pub trait RuleStore: Send + Sync + std::fmt::Debug {
    /// Creates or replaces a rule; `created_at` survives a replace. Returns the stored record.
    fn put_rule(
        &self,
        name: &str,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<RuleRecord>;

    /// Every rule, by name.
    fn rules(&self) -> Result<Vec<RuleRecord>>;

    /// Deletes a rule; false when there was none.
    fn delete_rule(&self, name: &str) -> Result<bool>;

    /// Records a block or unblock of `item` for `user`: one row per pair, the later `at` wins
    /// (an older write is ignored). Of two writes with the same `at`, the block wins, so the
    /// outcome does not depend on the order they arrive in. An unblock is kept as a row, so
    /// that an older block arriving after it stays ignored.
    ///
    /// A user or item that does not exist (never did, or was deleted) fails with
    /// [`Error::UnknownUserIdx`] / [`Error::UnknownItemIdx`] and stores nothing: a block racing
    /// its user's erasure must not leave a row behind.
    fn set_block(&self, user: UserIdx, item: ItemIdx, blocked: bool, at: Millis) -> Result<()>;

    /// A user's rows (unblocks included), by item. Empty for an unknown user.
    fn blocks_of(&self, user: UserIdx) -> Result<Vec<Block>>;

    /// Every row (unblocks included) after `after` in (user, item) order, at most `limit`: for
    /// loading the serving state. `None` starts from the first; pass the last row's pair to get
    /// the next page.
    fn scan_blocks(&self, after: Option<(UserIdx, ItemIdx)>, limit: usize) -> Result<Vec<Block>>;
}

/// Experiments and segments: their definitions (opaque JSON, like rules), who was exposed to
/// which variant of an experiment, and who belongs to which segment, with each segment's size
/// over time.
///
/// Exposures and memberships go with their user ([`CatalogStore::delete_user`]); retention
/// ([`CampaignStore::delete_campaign_rows_before`]) removes those older than a cutoff.
///
/// Every method blocks until its work is done (and, for writes, committed).
pub trait CampaignStore: Send + Sync + std::fmt::Debug {
    /// Creates or replaces an experiment's definition; `created_at` survives a replace.
    fn put_experiment(
        &self,
        name: &str,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<RuleRecord>;

    /// Every experiment, by name.
    fn experiments(&self) -> Result<Vec<RuleRecord>>;

    /// Deletes an experiment and its exposures; false when there was none.
    fn delete_experiment(&self, name: &str) -> Result<bool>;

    /// Records first exposures to `experiment` (by stored user key, whether or not the user has
    /// events yet): a user already recorded keeps their first row. Returns how many rows were
    /// added.
    fn record_exposures(&self, experiment: &str, exposures: Vec<NewExposure>) -> Result<u64>;

    /// Adds interleaving credit `(user, a, b)` to users' exposure rows (a user without one is
    /// skipped); returns how many rows changed.
    fn add_credits(&self, experiment: &str, credits: Vec<(String, u32, u32)>) -> Result<u64>;

    /// Every exposure to `experiment`, by user key.
    fn exposures(&self, experiment: &str) -> Result<Vec<Exposure>>;

    /// Creates or replaces a segment's definition; `created_at` survives a replace.
    fn put_segment(
        &self,
        name: &str,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<RuleRecord>;

    /// Every segment, by name.
    fn segments(&self) -> Result<Vec<RuleRecord>>;

    /// Deletes a segment, its members and its size history; false when there was none.
    fn delete_segment(&self, name: &str) -> Result<bool>;

    /// Replaces the members of `segment` by `members` (user, score) computed at `at`, and
    /// appends the new size to its history, in one transaction. Users that no longer exist are
    /// skipped. Returns the size stored.
    fn replace_members(
        &self,
        segment: &str,
        members: Vec<(UserIdx, f64)>,
        at: Millis,
    ) -> Result<u64>;

    /// Up to `limit` members of `segment` with user id greater than `after`, in id order.
    fn members(&self, segment: &str, after: Option<UserIdx>, limit: usize) -> Result<Vec<Member>>;

    /// The segments `user` belongs to, with their scores, by name.
    fn memberships(&self, user: UserIdx) -> Result<Vec<(String, f64)>>;

    /// A segment's size after each computation, oldest first.
    fn segment_sizes(&self, segment: &str) -> Result<Vec<(Millis, u64)>>;

    /// Deletes exposures, memberships and size history recorded before `before` (retention);
    /// returns how many rows.
    fn delete_campaign_rows_before(&self, before: Millis) -> Result<u64>;
}
