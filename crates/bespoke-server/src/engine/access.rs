//! Access control: API keys (a mirror of the store's, checked without IO), per-key rate
//! limits and the audit log.

use std::sync::Arc;

use bespoke_store::{AuditEntry, KeyRecord, NewAudit, Page, Store};
use serde_json::Value;

use crate::auth::{AuthError, Caller, Keyring, RateLimiter, Scope};
use crate::settings::Settings;

/// The access-control part of the engine.
pub struct Access {
    store: Arc<dyn Store>,
    settings: Arc<Settings>,
    keyring: Keyring,
    limiter: RateLimiter,
    /// Key of the user references in the audit log (see [`Access::user_ref`]).
    audit_secret: Vec<u8>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").finish_non_exhaustive()
    }
}

impl Access {
    /// Access control over `store`'s keys; call [`Access::refresh_keys`] to load them.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        settings: Arc<Settings>,
        audit_secret: Vec<u8>,
    ) -> Self {
        Self {
            store,
            settings,
            keyring: Keyring::default(),
            limiter: RateLimiter::default(),
            audit_secret,
        }
    }

    /// Reloads the key mirror from the store (keys created or revoked by another process).
    pub fn refresh_keys(&self) -> bespoke_store::Result<()> {
        // A key created or revoked through the API while the store is read is already in the
        // mirror; a list read before it would drop it, so such a refresh waits for the next.
        let generation = self.keyring.generation();
        let keys = self.store.keys()?;
        self.keyring.replace_if_unchanged(&keys, generation);
        Ok(())
    }

    /// Checks a presented key.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Caller, AuthError> {
        self.keyring
            .verify(presented, self.settings.auth.rate_per_second)
    }

    /// Checks a key known by its prefix and SHA-256 digest (see [`Keyring::verify_digest`]).
    pub fn authenticate_digest(
        &self,
        prefix: &str,
        digest: &[u8; 32],
    ) -> Result<Caller, AuthError> {
        self.keyring
            .verify_digest(prefix, digest, self.settings.auth.rate_per_second)
    }

    /// Takes a token from the caller's rate bucket; `Err(seconds)` to wait.
    pub fn rate_limit(&self, caller: &Caller) -> Result<(), f64> {
        self.limiter.take(
            &caller.prefix,
            caller.rate_per_second,
            self.settings.auth.burst_seconds,
            std::time::Instant::now(),
        )
    }

    /// Creates a key; returns the key itself (shown once, never stored) and its record.
    pub fn create_key(
        &self,
        actor: &str,
        name: &str,
        scopes: &[Scope],
        rate_per_second: Option<f64>,
    ) -> bespoke_store::Result<(String, KeyRecord)> {
        let (secret, new) = crate::auth::new_key(name, scopes, rate_per_second)
            .map_err(|e| bespoke_store::Error::Backend(Box::new(e)))?;
        let record = self.store.insert_key(new)?;
        self.keyring.upsert(&record);
        self.audit(
            actor,
            "key.create",
            Some(&record.prefix),
            Some(serde_json::json!({ "scopes": record.scopes, "name": record.name })),
        );
        Ok((secret, record))
    }

    /// Every key record.
    pub fn keys(&self) -> bespoke_store::Result<Vec<KeyRecord>> {
        self.store.keys()
    }

    /// Revokes a key; `None` if there is no key with this prefix.
    pub fn revoke_key(
        &self,
        actor: &str,
        prefix: &str,
    ) -> bespoke_store::Result<Option<KeyRecord>> {
        let record = self.store.revoke_key(prefix)?;
        if let Some(r) = &record {
            self.keyring.upsert(r);
            self.audit(actor, "key.revoke", Some(prefix), None);
        }
        Ok(record)
    }

    /// How the audit log names a user: a keyed hash of their key (`user:<16 hex>`), so that the
    /// log, which outlives erasures, holds no user key, while whoever knows a key can still
    /// find its entries (`bespoke` computes the same reference). The key is kept out of the
    /// database (see [`crate::privacy::audit_key`]).
    pub fn user_ref(&self, key: &str) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.audit_secret)
            .expect("HMAC takes keys of any length");
        mac.update(key.as_bytes());
        let tag = mac.finalize().into_bytes();
        let hex: String = tag[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("user:{hex}")
    }

    /// Appends to the audit log. A failure is logged, not returned: the audited operation has
    /// already happened and must not be reported as failed.
    pub fn audit(&self, actor: &str, action: &str, target: Option<&str>, detail: Option<Value>) {
        let entry = NewAudit {
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            detail,
        };
        if let Err(e) = self.store.audit(entry) {
            tracing::error!(target: "audit", error = %e, action, "could not write the audit log");
        }
    }

    /// A page of the audit log, newest first.
    pub fn audit_log(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> bespoke_store::Result<Page<AuditEntry>> {
        self.store.audit_log(before, limit)
    }
}
