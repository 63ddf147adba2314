//! JSON shapes shared by the HTTP API and the CLI's JSONL import and export, so that what
//! `bespoke export` writes, `bespoke import` and the API read back unchanged.

use std::collections::BTreeMap;

use bespoke_store::{Consent, Event, Item, ItemUpsert, NewEvent, User};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::{TimeError, format_rfc3339, parse_rfc3339};

/// An event's `timestamp` that is not an RFC 3339 time; the message starts with `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timestamp {0}")]
pub struct TimestampError(pub TimeError);

// The doc comments of this type and its fields are its description in `/openapi.json`.
/// An event: the items of `POST /v1/events`, the lines of an events JSONL file, the events of
/// a user's page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Event)]
pub struct EventJson {
    /// Idempotency key; a UUIDv7 is issued when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The user's key.
    pub user: String,
    /// The item's key.
    pub item: String,
    /// A configured event type: view, click, add_to_cart, purchase, like, rating (needs
    /// value), dislike, not_interested (also hides the item from the user), skip by default;
    /// and impression (an item shown: no weight, see POST /v1/impressions).
    #[serde(rename = "type")]
    pub kind: String,
    /// Optional value; the weight of value-weighted types such as rating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// RFC 3339 with a time zone; default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
    /// Where it happened (device, page, ...): an object.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::strict::opt_object"
    )]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
}

impl EventJson {
    /// Converts for the store; only the timestamp can be wrong.
    pub fn into_new_event(self) -> Result<NewEvent, TimestampError> {
        let timestamp = match &self.timestamp {
            None => None,
            Some(t) => Some(parse_rfc3339(t).map_err(TimestampError)?),
        };
        Ok(NewEvent {
            event_id: self.event_id,
            user: self.user,
            item: self.item,
            kind: self.kind,
            value: self.value,
            timestamp,
            context: self.context,
        })
    }
}

impl From<Event> for EventJson {
    fn from(e: Event) -> Self {
        Self {
            event_id: Some(e.event_id),
            user: e.user,
            item: e.item,
            kind: e.kind,
            value: e.value,
            timestamp: Some(format_rfc3339(e.timestamp)),
            context: e.context,
        }
    }
}

/// A user: the answer of `GET /v1/users/{key}`, the lines of a users JSONL file.
// The doc comments of this type and its fields are its description in `/openapi.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = User)]
pub struct UserJson {
    /// The user's key.
    pub key: String,
    /// Attributes (country, plan, ...): rules, segments and the content model read them.
    #[serde(default, deserialize_with = "crate::strict::object")]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// Consent flags, each given.
    #[schema(value_type = ConsentJson)]
    pub consent: Consent,
    /// Creation time (kept on import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    /// Last change (kept on import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

/// A user's consent flags; in a change, a flag not given keeps its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Consent)]
pub struct ConsentJson {
    /// Results may be personalized from the user's own behaviour; without it, popular items.
    /// Default consent.default_personalization.
    pub personalization: Option<bool>,
    /// The user's events may shape shared models (trained models, popularity, related items);
    /// without it they are stored (for export and erasure) but used for nothing shared.
    /// Default consent.default_training.
    pub training: Option<bool>,
    /// The user may be chosen for marketing audiences (POST /v1/audiences/query); false once
    /// they object. Default true.
    pub marketing: Option<bool>,
}

impl From<User> for UserJson {
    fn from(u: User) -> Self {
        Self {
            key: u.key,
            attributes: u.attributes,
            consent: u.consent,
            created_at: Some(format_rfc3339(u.created_at)),
            updated_at: Some(format_rfc3339(u.updated_at)),
        }
    }
}

/// An item: the body of `PUT /v1/items/{key}` (where `key` may be left out), the answer of
/// `GET /v1/items/{key}`, the lines of an items JSONL file.
// The doc comments of this type and its fields are its description in `/openapi.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Item)]
pub struct ItemJson {
    /// The item's key; optional in `PUT /v1/items/{key}`, where it must equal the key in the
    /// path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Categories (filter recommendations by them; at most limits.max_categories distinct).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Free-text fields (title, description, ...): the content model reads their words.
    #[serde(default, deserialize_with = "crate::strict::map")]
    pub text: BTreeMap<String, String>,
    /// Numeric fields (price, ...).
    #[serde(default, deserialize_with = "crate::strict::map")]
    pub numeric: BTreeMap<String, f64>,
    /// Other attributes, for rules and filters.
    #[serde(default, deserialize_with = "crate::strict::object")]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// Named vectors of any modality; each name has one dimension store-wide (another
    /// length is a 422).
    #[serde(default, deserialize_with = "crate::strict::map")]
    pub embeddings: BTreeMap<String, Vec<f32>>,
    /// Whether the item may be recommended.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub available: bool,
    /// Creation time (in answers; ignored on input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    /// Last change (in answers; ignored on input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

fn yes() -> bool {
    true
}

impl ItemJson {
    /// The store's upsert under `key`.
    pub fn into_upsert(self, key: String) -> ItemUpsert {
        ItemUpsert {
            key,
            categories: self.categories,
            text: self.text,
            numeric: self.numeric,
            attributes: self.attributes,
            embeddings: self.embeddings,
            available: self.available,
        }
    }
}

impl From<Item> for ItemJson {
    fn from(i: Item) -> Self {
        Self {
            key: Some(i.key),
            categories: i.categories,
            text: i.text,
            numeric: i.numeric,
            attributes: i.attributes,
            embeddings: i.embeddings,
            available: i.available,
            created_at: Some(format_rfc3339(i.created_at)),
            updated_at: Some(format_rfc3339(i.updated_at)),
        }
    }
}

/// Format tag of [`UserExport`].
pub const USER_EXPORT_FORMAT: &str = "bespoke.user-export.v1";

/// Everything held about one user (`GET /v1/users/{key}/export`); `bespoke import` takes it
/// back (profile, consent, times and events; `derived` is recomputed, not imported).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserExport {
    /// [`USER_EXPORT_FORMAT`].
    #[schema(example = "bespoke.user-export.v1")]
    pub format: String,
    /// When the export was made.
    #[schema(format = DateTime)]
    pub exported_at: String,
    /// Profile and consent.
    pub user: UserJson,
    /// Every event, oldest first.
    pub events: Vec<EventJson>,
    /// What the engine derived from them: per-item history, consent as applied, and the user
    /// vector of the served model.
    #[serde(deserialize_with = "strict_value")]
    #[schema(value_type = Object)]
    pub derived: Value,
    /// Decisions made for the user by decision loops, with their rewards, oldest first.
    /// Informational: `bespoke import` does not restore them (a decision belongs to the model
    /// that made it).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "strict_values"
    )]
    #[schema(value_type = Vec<Object>)]
    pub decisions: Vec<Value>,
}

fn strict_values<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    <Vec<crate::strict::StrictValue> as Deserialize>::deserialize(d)
        .map(|v| v.into_iter().map(|x| x.0).collect())
}

fn strict_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    <crate::strict::StrictValue as Deserialize>::deserialize(d).map(|v| v.0)
}

/// A CSV field (RFC 4180): quoted, with inner quotes doubled, when it holds a comma, a quote or
/// a line break; as is otherwise. Shared by every CSV export (audiences, segments).
///
/// ```
/// use bespoke_server::wire::csv_field;
/// assert_eq!(csv_field("ann"), "ann");
/// assert_eq!(csv_field("smith, ann"), "\"smith, ann\"");
/// assert_eq!(csv_field("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
/// ```
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}
