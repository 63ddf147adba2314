//! Records that administer the store rather than describe behaviour: API keys (stored only as
//! SHA-256 digests), the audit log, erasure receipts, and dashboard sessions.

use serde_json::Value;

use crate::Millis;

/// An API key as stored: never the key itself, only its visible prefix and its digest.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// Internal id.
    pub id: u64,
    /// The visible, non-secret start of the key (e.g. `bsk_3f9a1c2e`).
    pub prefix: String,
    /// A name for people.
    pub name: String,
    /// Granted scopes (`admin`, `write`, `read`).
    pub scopes: Vec<String>,
    /// SHA-256 of the whole key.
    pub hash: [u8; 32],
    /// Requests per second this key may make; the configured default when `None`.
    pub rate_per_second: Option<f64>,
    /// Creation time.
    pub created_at: Millis,
    /// Revocation time, if revoked.
    pub revoked_at: Option<Millis>,
}

/// An API key to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    /// The visible, non-secret start of the key; unique.
    pub prefix: String,
    /// A name for people.
    pub name: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// SHA-256 of the whole key.
    pub hash: [u8; 32],
    /// Requests per second this key may make; the configured default when `None`.
    pub rate_per_second: Option<f64>,
}

/// An audit log entry to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    /// Who: a key prefix, or `cli`.
    pub actor: String,
    /// What: `key.create`, `user.erase`, `consent.change`, ...
    pub action: String,
    /// On what: a key prefix, a pseudonymous user reference, a model version.
    pub target: Option<String>,
    /// Anything else worth keeping (never personal data).
    pub detail: Option<Value>,
}

/// An audit log entry as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Sequence number (increasing).
    pub seq: u64,
    /// When.
    pub at: Millis,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// Details.
    pub detail: Option<Value>,
}

/// A dashboard session as stored, so that every node of a cluster knows it: never its id (the
/// cookie's value), only the id's SHA-256, and never the API key, only the key's prefix and
/// SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// SHA-256 of the session id: how the session is found.
    pub lookup: [u8; 32],
    /// The key's prefix.
    pub prefix: String,
    /// SHA-256 of the key.
    pub key_digest: [u8; 32],
    /// The CSRF token of the session's forms.
    pub csrf: String,
    /// When it was opened.
    pub created_at: Millis,
    /// Its last request (within [`SessionLimits::touch_every`]).
    pub last_seen: Millis,
}

/// How long dashboard sessions live, and how many may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session ends this long after its last request (ms).
    pub idle: Millis,
    /// ... and this long after it was opened, however active (ms).
    pub absolute: Millis,
    /// At most this many live sessions: opening one beyond it ends the oldest.
    pub max: usize,
    /// `last_seen` is written at most this often per session (ms): a page's requests do not
    /// each cost a write.
    pub touch_every: Millis,
}

impl SessionLimits {
    /// Whether `s` is still live at `now`.
    pub fn live(&self, s: &SessionRecord, now: Millis) -> bool {
        now - s.last_seen < self.idle && now - s.created_at < self.absolute
    }
}
