//! Records that administer the store rather than describe behaviour: API keys (stored only as
//! SHA-256 digests), the audit log, and erasure receipts.

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
