//! [`crate::RuleStore`] on PostgreSQL: the `rules` and `item_blocks` tables.
//!
//! `item_blocks` holds one row per (user, item) pair, with foreign keys to both that cascade on
//! deletion: a user's or item's deletion takes its rows with it, and a block racing that
//! deletion either commits first (and is deleted with it) or finds the row gone.

use super::*;
use crate::{Block, RuleRecord, RuleStoreError};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE rules (
    name TEXT COLLATE "C" PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE item_blocks (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    item_id BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    blocked BOOLEAN NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (user_id, item_id)
);
CREATE INDEX item_blocks_by_item ON item_blocks (item_id);
"#;

/// A named definition as stored (rules, experiments, segments): parses the definition, naming
/// the record when it cannot be read.
pub(super) fn record_from_row(r: &postgres::Row) -> Result<RuleRecord> {
    let name: String = r.get(0);
    let text: String = r.get(1);
    let definition = serde_json::from_str(&text).map_err(|source| RuleStoreError::Definition {
        name: name.clone(),
        source,
    })?;
    Ok(RuleRecord {
        name,
        definition,
        created_at: r.get(2),
        updated_at: r.get(3),
    })
}

fn block_from_row(r: &postgres::Row) -> Result<Block> {
    Ok(Block {
        user: UserIdx(to_u32(r.get(0), "users")?),
        item: ItemIdx(to_u32(r.get(1), "items")?),
        blocked: r.get(2),
        at: r.get(3),
    })
}

fn set_block(db: &mut Db<'_, '_>, block: Block) -> Result<()> {
    let (user, item) = (i64::from(block.user.0), i64::from(block.item.0));
    // `KEY SHARE` holds both rows until commit, so a deletion waits for this block and then
    // deletes it; one that committed first leaves nothing to find.
    if db
        .query_opt("SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE", &[&user])?
        .is_none()
    {
        return Err(Error::UnknownUserIdx(block.user));
    }
    if db
        .query_opt("SELECT 1 FROM items WHERE id = $1 FOR KEY SHARE", &[&item])?
        .is_none()
    {
        return Err(Error::UnknownItemIdx(block.item));
    }
    // Latest `at` wins; on a tie the block wins, so the outcome is the same whatever order two
    // writes arrive in.
    db.execute(
        "INSERT INTO item_blocks (user_id, item_id, blocked, at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, item_id) DO UPDATE SET blocked = excluded.blocked, at = excluded.at
         WHERE excluded.at > item_blocks.at
            OR (excluded.at = item_blocks.at AND excluded.blocked AND NOT item_blocks.blocked)",
        &[&user, &item, &block.blocked, &block.at],
    )?;
    Ok(())
}

impl crate::RuleStore for PgStore {
    fn put_rule(
        &self,
        name: &str,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<RuleRecord> {
        let text = definition.to_string();
        let row = self.write(|db| {
            self.announcer.notify(db, &[crate::Change::Rules])?;
            db.query_one(
                "INSERT INTO rules (name, definition, created_at, updated_at) VALUES ($1, $2, $3, $3)
                 ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
                     updated_at = excluded.updated_at
                 RETURNING created_at, updated_at",
                &[&name, &text, &now],
            )
        })?;
        Ok(RuleRecord {
            name: name.to_owned(),
            definition: definition.clone(),
            created_at: row.get(0),
            updated_at: row.get(1),
        })
    }

    fn rules(&self) -> Result<Vec<RuleRecord>> {
        self.read(|db| {
            db.query(
                "SELECT name, definition, created_at, updated_at FROM rules ORDER BY name",
                &[],
            )?
            .iter()
            .map(record_from_row)
            .collect()
        })
    }

    fn delete_rule(&self, name: &str) -> Result<bool> {
        self.write(|db| {
            let deleted = db.execute("DELETE FROM rules WHERE name = $1", &[&name])? == 1;
            if deleted {
                self.announcer.notify(db, &[crate::Change::Rules])?;
            }
            Ok(deleted)
        })
    }

    fn set_block(&self, user: UserIdx, item: ItemIdx, blocked: bool, at: Millis) -> Result<()> {
        let block = Block {
            user,
            item,
            blocked,
            at,
        };
        self.write(|db| {
            set_block(db, block)?;
            self.announcer.notify(db, &[crate::Change::Blocks(user)])
        })
    }

    fn blocks_of(&self, user: UserIdx) -> Result<Vec<Block>> {
        self.read(|db| {
            db.query(
                "SELECT user_id, item_id, blocked, at FROM item_blocks WHERE user_id = $1
                 ORDER BY item_id",
                &[&i64::from(user.0)],
            )?
            .iter()
            .map(block_from_row)
            .collect()
        })
    }

    fn scan_blocks(&self, after: Option<(UserIdx, ItemIdx)>, limit: usize) -> Result<Vec<Block>> {
        // Ids are never negative, so (-1, -1) is before every row; the row comparison is a
        // range scan of the primary key.
        let (user, item) = after.map_or((-1, -1), |(u, i)| (i64::from(u.0), i64::from(i.0)));
        self.read(|db| {
            db.query(
                "SELECT user_id, item_id, blocked, at FROM item_blocks
                 WHERE (user_id, item_id) > ($1, $2) ORDER BY user_id, item_id LIMIT $3",
                &[&user, &item, &to_i64(limit)],
            )?
            .iter()
            .map(block_from_row)
            .collect()
        })
    }
}
