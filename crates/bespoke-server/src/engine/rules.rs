//! Saved business rules and per-user block lists: stored, then applied to serving.

use bespoke_algo::{ItemIdx, UserIdx};
use bespoke_store::{Block, RuleRecord, RuleStore};

use super::Engine;
use crate::pipeline::RuleProblem;
use crate::rules::spec::{RuleSpec, SavedRule};
use crate::time::now_ms;

/// Why a rule could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The rule itself is wrong: a field and what.
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(RuleProblem),
    /// `rules.max_saved_rules` reached.
    #[error("at most {0} saved rules (rules.max_saved_rules)")]
    TooMany(usize),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] bespoke_store::Error),
}

/// How an item came to be hidden.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named by the OpenAPI description only.
enum HiddenBy {
    Block,
    Event,
}

/// An item the user does not want to see.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct HiddenItem {
    /// Item key.
    pub item: String,
    /// When it was hidden (RFC 3339).
    #[schema(format = DateTime)]
    pub since: String,
    /// `block` (the block list) or `event` (a hiding event such as `not_interested`).
    #[schema(inline, value_type = HiddenBy)]
    pub by: &'static str,
}

/// A saved rule from its stored record; `None` (with a warning) when the definition no longer
/// reads, which only a hand-edited store or a downgrade can cause.
fn saved(record: RuleRecord) -> Option<SavedRule> {
    match serde_json::from_value::<RuleSpec>(record.definition) {
        Ok(spec) => Some(SavedRule {
            name: record.name,
            spec,
        }),
        Err(e) => {
            tracing::warn!(rule = %record.name, error = %e, "stored rule does not read; ignored");
            None
        }
    }
}

impl Engine {
    /// Loads the saved rules into serving (at start and after every change).
    pub(crate) fn reload_rules(&self) -> bespoke_store::Result<()> {
        let rules: Vec<SavedRule> = self.store.rules()?.into_iter().filter_map(saved).collect();
        // Their expressions that depend on the item alone are kept evaluated per item.
        let srcs = rules.iter().filter(|r| r.spec.enabled).flat_map(|r| {
            let spec = &r.spec;
            spec.filter
                .iter()
                .chain(spec.boost.iter().map(|b| &b.when))
                .chain(spec.promote.iter().map(|p| &p.when))
                .map(String::as_str)
        });
        let limits = crate::pipeline::rules::limits(&self.settings);
        self.serving.state.write().columns.precompute(srcs, &limits);
        self.serving.saved_rules.store(std::sync::Arc::new(rules));
        Ok(())
    }

    /// The saved rules, by name.
    pub fn rules(&self) -> Vec<SavedRule> {
        self.serving.saved_rules.load().as_ref().clone()
    }

    /// Creates or replaces the rule `name`; `true` when it is new. Checked first: a rule that
    /// does not compile against the catalog, or contradicts another, changes nothing.
    pub fn put_rule(&self, rule: SavedRule) -> Result<(SavedRule, bool), RuleError> {
        let _admin = self.admin.lock();
        self.serving
            .check_saved_rule(&rule)
            .map_err(RuleError::Invalid)?;
        let existing = self.serving.saved_rules.load();
        let new = !existing.iter().any(|r| r.name == rule.name);
        let max = self.settings.rules.max_saved_rules;
        if new && existing.len() >= max {
            return Err(RuleError::TooMany(max));
        }
        let definition = serde_json::to_value(&rule.spec).expect("a rule serializes");
        self.store.put_rule(&rule.name, &definition, now_ms())?;
        self.reload_rules()?;
        Ok((rule, new))
    }

    /// Deletes the rule `name`; `false` when there was none.
    pub fn delete_rule(&self, name: &str) -> bespoke_store::Result<bool> {
        let _admin = self.admin.lock();
        let deleted = self.store.delete_rule(name)?;
        self.reload_rules()?;
        Ok(deleted)
    }

    /// Hides `item` from `user` (`blocked`) or shows it again. `None` when either is unknown.
    pub fn set_block(
        &self,
        user_key: &str,
        item_key: &str,
        blocked: bool,
    ) -> bespoke_store::Result<Option<()>> {
        let user_key = self.serving.user_keys.to_store(user_key);
        let (user, item) = {
            let s = self.serving.state.read();
            match (s.users.get(&user_key), s.items.get(item_key)) {
                (Some(u), Some(i)) => (UserIdx(u), ItemIdx(i)),
                _ => return Ok(None),
            }
        };
        let at = now_ms();
        match self.store.set_block(user, item, blocked, at) {
            Ok(()) => {}
            // Deleted since it was looked up: as unknown as if it never was.
            Err(
                bespoke_store::Error::UnknownUserIdx(_) | bespoke_store::Error::UnknownItemIdx(_),
            ) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let mut s = self.serving.state.write();
        if !s.deleted_users.contains(&user.0) {
            s.exposure.set_hidden(user.0, item.0, blocked, at, false);
        }
        Ok(Some(()))
    }

    /// What `user` hid, newest first; `None` for an unknown user.
    pub fn hidden_items(&self, user_key: &str) -> Option<Vec<HiddenItem>> {
        let user_key = self.serving.user_keys.to_store(user_key);
        let s = self.serving.state.read();
        let user = s.users.get(&user_key)?;
        let mut out: Vec<(i64, HiddenItem)> = s
            .exposure
            .hidden_entries(user)
            .into_iter()
            .filter_map(|(item, at, from_event)| {
                Some((
                    at,
                    HiddenItem {
                        item: s.items.key(item)?.to_owned(),
                        since: crate::time::format_rfc3339(at),
                        by: if from_event { "event" } else { "block" },
                    },
                ))
            })
            .collect();
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.item.cmp(&b.1.item)));
        Some(out.into_iter().map(|(_, h)| h).collect())
    }
}

/// Applies stored blocks to the serving state at start.
pub(crate) fn load_blocks(
    store: &dyn RuleStore,
    state: &mut crate::state::State,
) -> bespoke_store::Result<u64> {
    let mut after = None;
    let mut n = 0u64;
    loop {
        let chunk: Vec<Block> = store.scan_blocks(after, 10_000)?;
        let Some(last) = chunk.last() else { break };
        after = Some((last.user, last.item));
        for b in &chunk {
            state
                .exposure
                .set_hidden(b.user.0, b.item.0, b.blocked, b.at, false);
            n += 1;
        }
    }
    Ok(n)
}
