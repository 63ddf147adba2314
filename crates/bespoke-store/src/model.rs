//! The records the store keeps and the requests that change them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ItemIdx, Millis, UserIdx};

/// What a user has allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// Results may be personalized from the user's own behaviour.
    pub personalization: bool,
    /// The user's events may shape shared models (trained models, popularity, related items).
    #[serde(default = "yes")]
    pub training: bool,
    /// The user may be chosen for marketing audiences (`POST /v1/audiences/query`); false
    /// once they object.
    #[serde(default = "yes")]
    pub marketing: bool,
}

fn yes() -> bool {
    true
}

impl Consent {
    /// Everything allowed.
    pub const ALL: Consent = Consent {
        personalization: true,
        training: true,
        marketing: true,
    };
}

/// A partial change of consent flags; `None` keeps the current value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentUpdate {
    /// New value of [`Consent::personalization`].
    pub personalization: Option<bool>,
    /// New value of [`Consent::training`].
    pub training: Option<bool>,
    /// New value of [`Consent::marketing`].
    pub marketing: Option<bool>,
}

/// A stored user.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Internal id.
    pub idx: UserIdx,
    /// External key (1 to 256 bytes of UTF-8 by default).
    pub key: String,
    /// Free-form attributes supplied by the application.
    pub attributes: Map<String, Value>,
    /// Consent flags.
    pub consent: Consent,
    /// Creation time.
    pub created_at: Millis,
    /// Time of the last change.
    pub updated_at: Millis,
}

/// Create or replace a user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserUpsert {
    /// External key.
    pub key: String,
    /// Attributes; replace the stored ones entirely.
    pub attributes: Map<String, Value>,
    /// Consent changes; flags not set keep their value, or take `default_consent` for a new user.
    pub consent: ConsentUpdate,
    /// Consent of a newly created user before `consent` is applied.
    pub default_consent: Consent,
    /// `(created_at, updated_at)` to keep instead of now: restoring an export.
    pub restore_times: Option<(Millis, Millis)>,
}

/// A stored item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Internal id.
    pub idx: ItemIdx,
    /// External key.
    pub key: String,
    /// Categories, most specific last or in any order the application likes.
    pub categories: Vec<String>,
    /// Free-text fields (title, description, ...).
    pub text: BTreeMap<String, String>,
    /// Numeric fields (price, duration, ...).
    pub numeric: BTreeMap<String, f64>,
    /// Any other attributes.
    pub attributes: Map<String, Value>,
    /// Named embedding vectors of any modality; each name has one fixed dimension store-wide.
    pub embeddings: BTreeMap<String, Vec<f32>>,
    /// Whether the item may be recommended.
    pub available: bool,
    /// Creation time.
    pub created_at: Millis,
    /// Time of the last change.
    pub updated_at: Millis,
}

/// Create or replace an item (every field is replaced).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemUpsert {
    /// External key.
    pub key: String,
    /// Categories.
    pub categories: Vec<String>,
    /// Free-text fields.
    pub text: BTreeMap<String, String>,
    /// Numeric fields.
    pub numeric: BTreeMap<String, f64>,
    /// Other attributes.
    pub attributes: Map<String, Value>,
    /// Embedding vectors by name.
    pub embeddings: BTreeMap<String, Vec<f32>>,
    /// Whether the item may be recommended.
    pub available: bool,
}

/// An event as a client sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Client-chosen idempotency key; generated (UUIDv7) when absent.
    pub event_id: Option<String>,
    /// User key.
    pub user: String,
    /// Item key.
    pub item: String,
    /// Event type (`view`, `purchase`, ...); validated by the caller against its configuration.
    pub kind: String,
    /// Optional value (a rating, a price).
    pub value: Option<f64>,
    /// When it happened; the batch's `now` when absent.
    pub timestamp: Option<Millis>,
    /// Optional context (device, page, ...).
    pub context: Option<Map<String, Value>>,
}

impl NewEvent {
    /// An event with only the required fields.
    pub fn new(user: impl Into<String>, item: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            event_id: None,
            user: user.into(),
            item: item.into(),
            kind: kind.into(),
            value: None,
            timestamp: None,
            context: None,
        }
    }
}

/// A batch of events to append atomically, with how to treat unknown users and items.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBatch {
    /// The events.
    pub events: Vec<NewEvent>,
    /// Create users that do not exist yet (otherwise fail with `UnknownUser`).
    pub create_users: bool,
    /// Create items that do not exist yet (otherwise fail with `UnknownItem`).
    pub create_items: bool,
    /// Consent of users created by this batch.
    pub default_consent: Consent,
    /// Timestamp for events without one, and creation time of new users and items; the store's
    /// clock when `None`.
    pub now: Option<Millis>,
}

impl EventBatch {
    /// A batch that creates missing users and items, with personalization allowed by default.
    pub fn new(events: Vec<NewEvent>) -> Self {
        Self {
            events,
            create_users: true,
            create_items: true,
            default_consent: Consent::ALL,
            now: None,
        }
    }
}

/// The outcome for one appended event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Its id (the client's, or the generated one).
    pub event_id: String,
    /// Sequence number in the event log.
    pub seq: u64,
    /// Internal id of its user.
    pub user: UserIdx,
    /// Internal id of its item.
    pub item: ItemIdx,
    /// Its timestamp as stored.
    pub timestamp: Millis,
    /// It was already stored with the same payload, and was not stored again.
    pub duplicate: bool,
    /// Its user was created by this event.
    pub created_user: bool,
    /// Its item was created by this event.
    pub created_item: bool,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Sequence number in the event log (increasing, never reused).
    pub seq: u64,
    /// Event id.
    pub event_id: String,
    /// User key.
    pub user: String,
    /// Item key.
    pub item: String,
    /// Event type.
    pub kind: String,
    /// Optional value.
    pub value: Option<f64>,
    /// When it happened.
    pub timestamp: Millis,
    /// Optional context.
    pub context: Option<Map<String, Value>>,
}

/// Which event types [`crate::EventStore::delete_pair_events`] deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kinds {
    /// Only events of this type.
    Only(String),
    /// Events of every type but this one (feedback without impressions, for instance).
    AllBut(String),
}

impl Kinds {
    /// Whether an event of type `kind` is selected.
    pub fn selects(&self, kind: &str) -> bool {
        match self {
            Kinds::Only(k) => k == kind,
            Kinds::AllBut(k) => k != kind,
        }
    }

    /// The type named and whether it is the one selected (`kind = $1) = $2` in SQL).
    pub(crate) fn sql(&self) -> (&str, bool) {
        match self {
            Kinds::Only(k) => (k, true),
            Kinds::AllBut(k) => (k, false),
        }
    }
}

/// The lean form of an event used to build in-memory indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    /// Sequence number.
    pub seq: u64,
    /// User id.
    pub user: UserIdx,
    /// Item id.
    pub item: ItemIdx,
    /// Event type.
    pub kind: String,
    /// Optional value.
    pub value: Option<f64>,
    /// When it happened.
    pub timestamp: Millis,
}

/// Result of a create-or-replace.
#[derive(Debug, Clone, PartialEq)]
pub struct Upserted<T> {
    /// The record as stored.
    pub record: T,
    /// It did not exist before.
    pub created: bool,
}

/// What a deletion removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Internal id of the deleted user or item (never reused).
    pub idx: u32,
    /// Number of events deleted with it.
    pub events: u64,
}

/// A page of results and the cursor for the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The results.
    pub items: Vec<T>,
    /// Pass as `before` to get the next page; `None` on the last page.
    pub next: Option<u64>,
}

/// Counts and sizes of the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreStats {
    /// Number of users.
    pub users: u64,
    /// Number of items.
    pub items: u64,
    /// Number of events.
    pub events: u64,
    /// Events per type.
    pub events_by_kind: BTreeMap<String, u64>,
    /// Earliest and latest event timestamp.
    pub time_range: Option<(Millis, Millis)>,
    /// Size of the database files on disk, in bytes.
    pub bytes_on_disk: u64,
    /// Schema version.
    pub schema_version: u32,
}
