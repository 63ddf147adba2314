//! [`crate::RuleStore`] on SQLite: the `rules` and `item_blocks` tables. The functions take the
//! connection they run on and stay private to the backend.
//!
//! `item_blocks` holds one row per (user, item) pair, keyed by the internal ids like `events`
//! and `item_embeddings`. Foreign keys are off in this database, so the writer's
//! `delete_user` / `delete_item` delete a user's or an item's rows themselves, in the deletion's
//! transaction, and [`crate::RuleStore::set_block`] checks both ids exist before it writes.

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::campaigns::{Defs, defs, put_def};
use crate::{Block, Error, ItemIdx, Millis, Result, RuleRecord, UserIdx};

/// The index on `item_id` makes an item's deletion find its rows without scanning every
/// user's (events do without one, to keep inserts cheap; blocks are written far less often).
pub(super) const MIGRATION: &str = r#"
CREATE TABLE rules (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE item_blocks (
    user_id INTEGER NOT NULL,
    item_id INTEGER NOT NULL,
    blocked INTEGER NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (user_id, item_id)
) WITHOUT ROWID;
CREATE INDEX item_blocks_by_item ON item_blocks (item_id);
"#;

fn delete_rule(c: &Connection, name: &str) -> Result<bool> {
    Ok(c.prepare_cached("DELETE FROM rules WHERE name = ?1")?
        .execute([name])?
        == 1)
}

fn exists(c: &Connection, sql: &str, id: u32) -> Result<bool> {
    Ok(c.prepare_cached(sql)?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

fn set_block(c: &Connection, block: Block) -> Result<()> {
    // Checked on the writer's connection inside the group transaction, so a deletion committed
    // (or queued earlier in the same group) is seen and no orphan row is written.
    if !exists(c, "SELECT 1 FROM users WHERE id = ?1", block.user.0)? {
        return Err(Error::UnknownUserIdx(block.user));
    }
    if !exists(c, "SELECT 1 FROM items WHERE id = ?1", block.item.0)? {
        return Err(Error::UnknownItemIdx(block.item));
    }
    // Latest `at` wins; on a tie the block wins (blocked = 1 > 0), so the outcome is the same
    // whatever order two writes arrive in.
    c.prepare_cached(
        "INSERT INTO item_blocks (user_id, item_id, blocked, at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, item_id) DO UPDATE SET blocked = excluded.blocked, at = excluded.at
         WHERE excluded.at > item_blocks.at
            OR (excluded.at = item_blocks.at AND excluded.blocked > item_blocks.blocked)",
    )?
    .execute(params![block.user.0, block.item.0, block.blocked, block.at])?;
    Ok(())
}

fn block_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Block> {
    Ok(Block {
        user: UserIdx(r.get(0)?),
        item: ItemIdx(r.get(1)?),
        blocked: r.get(2)?,
        at: r.get(3)?,
    })
}

fn blocks_of(c: &Connection, user: UserIdx) -> Result<Vec<Block>> {
    Ok(c.prepare_cached(
        "SELECT user_id, item_id, blocked, at FROM item_blocks WHERE user_id = ?1
             ORDER BY item_id",
    )?
    .query_map([user.0], block_row)?
    .collect::<rusqlite::Result<_>>()?)
}

fn scan_blocks(
    c: &Connection,
    after: Option<(UserIdx, ItemIdx)>,
    limit: usize,
) -> Result<Vec<Block>> {
    // Ids are never negative, so (-1, -1) is before every row; the row-value comparison is a
    // range search on the primary key.
    let (user, item) = after.map_or((-1, -1), |(u, i)| (i64::from(u.0), i64::from(i.0)));
    Ok(c.prepare_cached(
        "SELECT user_id, item_id, blocked, at FROM item_blocks
             WHERE (user_id, item_id) > (?1, ?2) ORDER BY user_id, item_id LIMIT ?3",
    )?
    .query_map(
        params![user, item, limit.min(i64::MAX as usize) as i64],
        block_row,
    )?
    .collect::<rusqlite::Result<_>>()?)
}

impl crate::RuleStore for SqliteStore {
    fn put_rule(
        &self,
        name: &str,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<RuleRecord> {
        let (name, definition) = (name.to_owned(), definition.clone());
        self.exec_single(move |c| put_def(c, Defs::Rules, &name, &definition, now))
    }

    fn rules(&self) -> Result<Vec<RuleRecord>> {
        self.read(|c| defs(c, Defs::Rules))
    }

    fn delete_rule(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.exec_single(move |c| delete_rule(c, &name))
    }

    fn set_block(&self, user: UserIdx, item: ItemIdx, blocked: bool, at: Millis) -> Result<()> {
        let block = Block {
            user,
            item,
            blocked,
            at,
        };
        self.exec_single(move |c| set_block(c, block))
    }

    fn blocks_of(&self, user: UserIdx) -> Result<Vec<Block>> {
        self.read(|c| blocks_of(c, user))
    }

    fn scan_blocks(&self, after: Option<(UserIdx, ItemIdx)>, limit: usize) -> Result<Vec<Block>> {
        self.read(|c| scan_blocks(c, after, limit))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::prelude::*;
    use crate::{EventBatch, NewEvent, StoreOptions};

    fn open(dir: &std::path::Path) -> SqliteStore {
        SqliteStore::open(dir, StoreOptions::default()).expect("open the store")
    }

    /// Rules and blocks are in the database file: closing and reopening it keeps them.
    #[test]
    fn rules_and_blocks_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (rule, user, item) = {
            let s = open(dir.path());
            let rule = s.put_rule("pin", &json!({"item": "a"}), 7).unwrap();
            let event = NewEvent::new("ann", "a", "view");
            let out = s.append_events(EventBatch::new(vec![event])).unwrap();
            s.set_block(out[0].user, out[0].item, true, 9).unwrap();
            (rule, out[0].user, out[0].item)
        };
        let s = open(dir.path());
        assert_eq!(s.rules().unwrap(), [rule]);
        assert_eq!(
            s.blocks_of(user).unwrap(),
            [Block {
                user,
                item,
                blocked: true,
                at: 9
            }]
        );
    }

    /// A database made before this migration (schema version 3) gains the two tables on open
    /// and keeps what it held.
    #[test]
    fn the_migration_upgrades_an_older_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let s = open(dir.path());
            let event = NewEvent::new("ann", "a", "view");
            s.append_events(EventBatch::new(vec![event])).unwrap();
            s.path().to_owned()
        };
        let raw = Connection::open(&path).unwrap();
        // Back to version 3: before the rule tables, the marketing consent column, the
        // campaign tables and the dashboard sessions.
        raw.execute_batch(
            "DROP TABLE rules; DROP TABLE item_blocks;
             DROP TABLE experiments; DROP TABLE experiment_exposures; DROP TABLE segments;
             DROP TABLE segment_members; DROP TABLE segment_sizes; DROP TABLE dashboard_sessions;
             ALTER TABLE users DROP COLUMN consent_marketing; PRAGMA user_version = 3;",
        )
        .unwrap();
        drop(raw);
        let s = open(dir.path());
        assert_eq!(s.stats().unwrap().schema_version, 7);
        // Users from before the column allow marketing until they object.
        assert!(
            s.get_user("ann")
                .unwrap()
                .is_some_and(|u| u.consent.marketing)
        );
        assert!(s.rules().unwrap().is_empty());
        s.put_rule("pin", &json!({}), 1).unwrap();
        assert_eq!(s.rules().unwrap().len(), 1);
    }

    #[test]
    fn an_unreadable_rule_definition_is_a_typed_rule_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        s.put_rule("pin", &json!({"item": "a"}), 1).unwrap();
        // Damage the stored row behind the store's back, as a bad disk or a bad edit would.
        let raw = Connection::open(s.path()).unwrap();
        raw.execute("UPDATE rules SET definition = 'not json'", [])
            .unwrap();
        match s.rules() {
            Err(Error::Rule(crate::RuleStoreError::Definition { name, .. })) => {
                assert_eq!(name, "pin")
            }
            other => panic!("expected a rule definition error, got {other:?}"),
        }
    }
}
