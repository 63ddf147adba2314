//! Administration: API keys and the audit log.

use bespoke_store::{AuditEntry, KeyRecord, NewAudit, Page};
use serde_json::Value;

use super::Engine;
use crate::auth::{AuthError, Caller, Scope};
/// Events deleted per retention transaction.
const RETENTION_BATCH: usize = 50_000;

use crate::wire::{EventJson, USER_EXPORT_FORMAT, UserExport, UserJson};

impl Engine {
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

    /// Everything held about a user (see [`UserExport`]); `None` for an unknown user. Audited.
    pub fn export_user(&self, actor: &str, key: &str) -> bespoke_store::Result<Option<UserExport>> {
        let Some(user) = self.get_user(key)? else {
            return Ok(None);
        };
        let mut events = Vec::new();
        let mut before = None;
        while let Some(page) = self.user_events(key, before, 1000)? {
            events.extend(page.items.into_iter().map(EventJson::from));
            match page.next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        events.reverse();
        let derived = self.derived(key).unwrap_or(Value::Null);
        let stored = self.user_keys.to_store(key).into_owned();
        let decisions = self
            .store
            .user_decisions(&stored)?
            .into_iter()
            .map(|d| {
                serde_json::json!({
                    "decision_id": d.id,
                    "loop": d.loop_name,
                    "created_at": crate::time::format_rfc3339(d.created_at),
                    "decision": serde_json::from_str::<Value>(&d.payload).unwrap_or(Value::Null),
                    "rewards": d.rewards.iter().map(|r| serde_json::json!({
                        "slot": r.slot, "value": r.value, "default": r.is_default,
                        "at": crate::time::format_rfc3339(r.at),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        self.audit(actor, "user.export", Some(&self.user_ref(key)), None);
        Ok(Some(UserExport {
            format: USER_EXPORT_FORMAT.to_owned(),
            exported_at: crate::time::format_rfc3339(super::now_ms()),
            user: UserJson::from(user),
            events,
            derived,
            decisions,
        }))
    }

    /// Deletes events older than `privacy.max_event_age_days` from the store and from serving;
    /// returns how many. The next trained model is the first without them.
    pub fn apply_retention(&self, actor: &str) -> bespoke_store::Result<u64> {
        let days = self.settings.privacy.max_event_age_days;
        if days <= 0.0 {
            return Ok(0);
        }
        let cutoff = super::now_ms() - (days * 86_400_000.0) as i64;
        let mut total = 0u64;
        loop {
            let batch = self.store.delete_events_before(cutoff, RETENTION_BATCH)?;
            if batch.is_empty() {
                break;
            }
            total += batch.len() as u64;
            let mut s = self.state.write();
            let expired: Vec<_> = batch
                .iter()
                .filter(|e| {
                    !s.deleted_users.contains(&e.user.0) && !s.deleted_items.contains(&e.item.0)
                })
                // Events of types no longer configured were never applied.
                .filter_map(|e| {
                    let w = self.weights.weight(&e.kind, e.value)?;
                    w.is_finite().then_some((e.user, e.item, w))
                })
                .collect();
            s.live.expire(&expired, cutoff);
            for &(u, _, _) in &expired {
                s.bump_user(u);
            }
        }
        // Decision logs age out with the same limit. Learners keep what they learned from
        // them (as trained models keep what they learned from expired events until retrained).
        let mut decisions = 0u64;
        loop {
            let n = self
                .store
                .delete_decisions_before(cutoff, RETENTION_BATCH)?;
            decisions += n;
            if n < RETENTION_BATCH as u64 {
                break;
            }
        }
        if decisions > 0 {
            self.audit(
                actor,
                "decisions.expire",
                None,
                Some(serde_json::json!({ "decisions": decisions, "before": crate::time::format_rfc3339(cutoff) })),
            );
        }
        if total > 0 {
            self.audit(
                actor,
                "events.expire",
                None,
                Some(serde_json::json!({ "events": total, "before": crate::time::format_rfc3339(cutoff) })),
            );
        }
        Ok(total)
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
