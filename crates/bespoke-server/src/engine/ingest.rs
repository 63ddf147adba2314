//! Ingestion: events, users and items reach the store, then the serving state.

use bespoke_algo::{ItemIdx, UserIdx};
use bespoke_store::{
    Appended, Deleted, Event, EventBatch, Item, ItemUpsert, Kinds, NewEvent, Page, Upserted, User,
    UserUpsert,
};

use super::Engine;
use crate::state::newer;

impl Engine {
    /// Stores a batch of (already validated) events and applies the new ones to serving.
    pub fn ingest(&self, mut events: Vec<NewEvent>) -> bespoke_store::Result<Vec<Appended>> {
        if self.serving.user_keys.pseudonymized() {
            for e in &mut events {
                e.user = self.serving.user_keys.to_store(&e.user).into_owned();
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
        // Only an interleaving experiment needs the events' times after the append.
        let times: Vec<i64> = if self.interleaving_running() {
            let now = super::now_ms();
            batch
                .events
                .iter()
                .map(|e| e.timestamp.unwrap_or(now))
                .collect()
        } else {
            Vec::new()
        };
        let appended = {
            let _store =
                tracing::debug_span!("store.append_events", events = kinds.len()).entered();
            self.store.append_events(batch)?
        };
        let _apply = tracing::debug_span!("apply").entered();
        if !times.is_empty() {
            let fresh: Vec<(&str, &str, &str, i64)> = appended
                .iter()
                .zip(&kinds)
                .zip(&times)
                .filter(|((a, _), _)| !a.duplicate)
                .map(|((_, (k, _, u, i)), t)| (u.as_str(), i.as_str(), k.as_str(), *t))
                .collect();
            self.credit_clicks(&fresh);
        }
        let mut s = self.serving.state.write();
        let mut new = 0u64;
        for (a, (kind, value, user, item)) in appended.iter().zip(kinds) {
            // On a shared store, the tail of the log may have applied it already.
            if a.duplicate || !self.claim_own(a.seq) {
                continue;
            }
            new += 1;
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
            s.apply_signal(&self.settings, &kind, a.user, a.item, a.timestamp);
        }
        drop(s);
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
                key: self.serving.user_keys.to_store(&u.key).into_owned(),
                ..u
            })
            .collect();
        let _admin = self.admin.lock();
        let mut out = self.store.put_users(upserts)?;
        let mut changes = Vec::new();
        let mut s = self.serving.state.write();
        let model = self.serving.model.load_full();
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
                    marketing: !s.no_marketing.contains(&idx.0),
                }
            };
            let after = u.record.consent;
            s.users.insert(&u.record.key, idx.0);
            s.set_personalization(idx, after.personalization);
            s.live.set_private(idx, !after.training);
            if after.marketing {
                s.no_marketing.remove(&idx.0);
            } else {
                s.no_marketing.insert(idx.0);
            }
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
            self.access.audit(
                actor,
                "consent.change",
                Some(&self.access.user_ref(&key)),
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
        let key = &*self.serving.user_keys.to_store(key);
        let _admin = self.admin.lock();
        // Before the store's deletion, so a flush racing it cannot write them back after.
        self.forget_exposures(key);
        let out = self.store.delete_user(key)?;
        if let Some(d) = out {
            let mut s = self.serving.state.write();
            s.deleted_users.insert(d.idx);
            if s.users.get(key) == Some(d.idx) {
                s.users.remove(key);
            }
            s.live.remove_user(UserIdx(d.idx));
            s.exposure.remove_user(d.idx);
            s.bump_user(UserIdx(d.idx));
            if let Some(m) = self.serving.model.load_full() {
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
        let mut s = self.serving.state.write();
        for i in &out {
            s.set_item(&i.record);
        }
        // A new item (or new content of one the model has no factors for) is placed by its
        // content at once: recommendable before the next training.
        if let Some(m) = self.serving.model.load_full()
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
        let s = self.serving.state.read();
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
            let mut s = self.serving.state.write();
            s.deleted_items.insert(d.idx);
            if s.items.get(key) == Some(d.idx) {
                s.items.remove(key);
            }
            s.live.remove_item(ItemIdx(d.idx));
            s.columns.clear_item(d.idx);
            s.catalog_epoch += 1;
            if let Some(c) = self
                .serving
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

    /// Deletes `user`'s events on `item` (of type `kind`, else every type but impressions),
    /// from the store and from serving (every node of a cluster), audited as `action` by
    /// `actor` when any was deleted; returns how many. The next trained model is the first
    /// without them; until then the user's vector is folded in from what is left.
    pub fn delete_pair_events(
        &self,
        actor: &str,
        action: &str,
        user: &str,
        item: &str,
        kind: Option<String>,
    ) -> bespoke_store::Result<usize> {
        let kinds = match kind {
            Some(k) => Kinds::Only(k),
            None => Kinds::AllBut(crate::settings::IMPRESSION.to_owned()),
        };
        let stored = self.serving.user_keys.to_store(user);
        let deleted = self.store.delete_pair_events(&stored, item, &kinds)?;
        let Some(first) = deleted.first() else {
            return Ok(0);
        };
        self.rebuild_pair(first.user, first.item)?;
        self.access.audit(
            actor,
            action,
            Some(&self.access.user_ref(user)),
            Some(serde_json::json!({ "events": deleted.len() })),
        );
        Ok(deleted.len())
    }

    /// The stored user.
    pub fn get_user(&self, key: &str) -> bespoke_store::Result<Option<User>> {
        let mut user = self.store.get_user(&self.serving.user_keys.to_store(key))?;
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
        let mut page =
            self.store
                .user_events(&self.serving.user_keys.to_store(key), before, limit)?;
        if let Some(p) = &mut page {
            for e in &mut p.items {
                key.clone_into(&mut e.user);
            }
        }
        Ok(page)
    }
}
