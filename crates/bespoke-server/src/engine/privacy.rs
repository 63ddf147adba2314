//! Privacy: a user's data export and the retention limit (erasure is in [`super::erasure`]).

use serde_json::Value;

use super::Engine;
use crate::wire::{EventJson, USER_EXPORT_FORMAT, UserExport, UserJson};

/// Events deleted per retention transaction.
const RETENTION_BATCH: usize = 50_000;

impl Engine {
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
        let mut derived = self.derived(key).unwrap_or(Value::Null);
        // The items the user hid (block list and hiding events).
        if let (Value::Object(d), Some(hidden)) = (&mut derived, self.hidden_items(key)) {
            d.insert(
                "hidden".into(),
                serde_json::to_value(hidden).unwrap_or(Value::Null),
            );
        }
        let stored = self.serving.user_keys.to_store(key).into_owned();
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
        self.access
            .audit(actor, "user.export", Some(&self.access.user_ref(key)), None);
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
            let mut s = self.serving.state.write();
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
            s.exposure.expire(cutoff);
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
            self.access.audit(
                actor,
                "decisions.expire",
                None,
                Some(serde_json::json!({ "decisions": decisions, "before": crate::time::format_rfc3339(cutoff) })),
            );
        }
        // So do experiment exposures and segment memberships (a segment's next refresh
        // recomputes its members from the events that remain).
        let campaign_rows = self.store.delete_campaign_rows_before(cutoff)?;
        if campaign_rows > 0 {
            self.access.audit(
                actor,
                "campaigns.expire",
                None,
                Some(serde_json::json!({ "rows": campaign_rows, "before": crate::time::format_rfc3339(cutoff) })),
            );
        }
        if total > 0 {
            self.access.audit(
                actor,
                "events.expire",
                None,
                Some(serde_json::json!({ "events": total, "before": crate::time::format_rfc3339(cutoff) })),
            );
        }
        Ok(total)
    }
}
