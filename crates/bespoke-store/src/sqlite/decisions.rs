//! Decision loops on SQLite: the `bandit_*` tables. The functions take the connection they run
//! on and stay private to the backend; callers see only [`crate::DecisionStore`].

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, now_ms};
use crate::{
    DecisionRecord, DecisionStoreError, LoopLogStats, LoopRecord, Millis, NewDecision, NewReward,
    Result, RewardOutcome, RewardRecord,
};

pub(super) const MIGRATION: &str = r#"
CREATE TABLE bandit_loops (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE bandit_decisions (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    loop TEXT NOT NULL,
    user TEXT,
    created_at INTEGER NOT NULL,
    deadline INTEGER NOT NULL,
    activated INTEGER NOT NULL,
    settled INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL
);
CREATE INDEX bandit_decisions_open ON bandit_decisions (deadline) WHERE settled = 0;
CREATE INDEX bandit_decisions_by_loop ON bandit_decisions (loop, seq);
CREATE INDEX bandit_decisions_by_user ON bandit_decisions (user) WHERE user IS NOT NULL;
CREATE TABLE bandit_rewards (
    seq INTEGER PRIMARY KEY,
    decision_seq INTEGER NOT NULL,
    loop TEXT NOT NULL,
    slot INTEGER NOT NULL,
    value REAL NOT NULL,
    at INTEGER NOT NULL,
    is_default INTEGER NOT NULL,
    UNIQUE (decision_seq, slot)
);
CREATE INDEX bandit_rewards_by_loop ON bandit_rewards (loop, seq);
CREATE TABLE bandit_checkpoints (
    loop TEXT PRIMARY KEY,
    reward_seq INTEGER NOT NULL,
    model BLOB NOT NULL,
    saved_at INTEGER NOT NULL
) WITHOUT ROWID;
"#;

fn parse_config(name: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|source| {
        DecisionStoreError::LoopConfig {
            name: name.to_owned(),
            source,
        }
        .into()
    })
}

fn put_loop(
    c: &Connection,
    name: &str,
    config: &serde_json::Value,
    now: Millis,
) -> Result<LoopRecord> {
    c.prepare_cached(
        "INSERT INTO bandit_loops (name, config, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
    )?
    .execute(params![name, config.to_string(), now])?;
    get_loop(c, name)?.ok_or_else(|| DecisionStoreError::LoopVanished(name.to_owned()).into())
}

fn get_loop(c: &Connection, name: &str) -> Result<Option<LoopRecord>> {
    let row = c
        .prepare_cached(
            "SELECT name, config, created_at, updated_at FROM bandit_loops WHERE name = ?1",
        )?
        .query_row([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
            ))
        })
        .optional()?;
    row.map(|(name, config, created_at, updated_at)| {
        let config = parse_config(&name, &config)?;
        Ok(LoopRecord {
            name,
            config,
            created_at,
            updated_at,
        })
    })
    .transpose()
}

fn loops(c: &Connection) -> Result<Vec<LoopRecord>> {
    let names: Vec<String> = c
        .prepare_cached("SELECT name FROM bandit_loops ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    names
        .iter()
        .filter_map(|n| get_loop(c, n).transpose())
        .collect()
}

fn insert_decision(c: &Connection, d: &NewDecision) -> Result<Option<u64>> {
    let n = c
        .prepare_cached(
            "INSERT INTO bandit_decisions (id, loop, user, created_at, deadline, activated, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            d.id,
            d.loop_name,
            d.user,
            d.created_at,
            d.deadline,
            d.activated,
            d.payload
        ])?;
    Ok((n == 1).then(|| c.last_insert_rowid() as u64))
}

const DECISION_COLUMNS: &str =
    "seq, id, loop, user, created_at, deadline, activated, settled, payload";

fn decision_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DecisionRecord> {
    Ok(DecisionRecord {
        seq: r.get::<_, i64>(0)? as u64,
        id: r.get(1)?,
        loop_name: r.get(2)?,
        user: r.get(3)?,
        created_at: r.get(4)?,
        deadline: r.get(5)?,
        activated: r.get(6)?,
        settled: r.get(7)?,
        payload: r.get(8)?,
        rewards: Vec::new(),
    })
}

fn with_rewards(c: &Connection, mut d: DecisionRecord) -> Result<DecisionRecord> {
    d.rewards = c
        .prepare_cached(
            "SELECT seq, slot, value, at, is_default FROM bandit_rewards WHERE decision_seq = ?1 ORDER BY slot",
        )?
        .query_map([d.seq as i64], reward_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(d)
}

fn reward_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RewardRecord> {
    Ok(RewardRecord {
        seq: r.get::<_, i64>(0)? as u64,
        slot: r.get(1)?,
        value: r.get(2)?,
        at: r.get(3)?,
        is_default: r.get(4)?,
    })
}

fn decision(c: &Connection, id: &str) -> Result<Option<DecisionRecord>> {
    let d = c
        .prepare_cached(&format!(
            "SELECT {DECISION_COLUMNS} FROM bandit_decisions WHERE id = ?1"
        ))?
        .query_row([id], decision_row)
        .optional()?;
    d.map(|d| with_rewards(c, d)).transpose()
}

fn activate(c: &Connection, id: &str) -> Result<bool> {
    Ok(c.prepare_cached(
        "UPDATE bandit_decisions SET activated = 1 WHERE id = ?1 AND activated = 0",
    )?
    .execute([id])?
        == 1)
}

fn insert_reward(c: &Connection, r: &NewReward) -> Result<RewardOutcome> {
    let d: Option<(i64, String)> = c
        .prepare_cached("SELECT seq, loop FROM bandit_decisions WHERE id = ?1")?
        .query_row([&r.decision_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((seq, loop_name)) = d else {
        return Ok(RewardOutcome::UnknownDecision);
    };
    let n = c
        .prepare_cached(
            "INSERT INTO bandit_rewards (decision_seq, loop, slot, value, at, is_default)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (decision_seq, slot) DO NOTHING",
        )?
        .execute(params![seq, loop_name, r.slot, r.value, r.at, r.is_default])?;
    if n == 1 {
        return Ok(RewardOutcome::Recorded(c.last_insert_rowid() as u64));
    }
    let default = c
        .prepare_cached(
            "SELECT is_default FROM bandit_rewards WHERE decision_seq = ?1 AND slot = ?2",
        )?
        .query_row(params![seq, r.slot], |row| row.get(0))?;
    Ok(RewardOutcome::Duplicate { default })
}

fn settle_windows(c: &Connection, ids: &[String]) -> Result<()> {
    let mut stmt = c.prepare_cached("UPDATE bandit_decisions SET settled = 1 WHERE id = ?1")?;
    for id in ids {
        stmt.execute([id])?;
    }
    Ok(())
}

fn open_decisions(
    c: &Connection,
    deadline_before: Option<Millis>,
    limit: usize,
) -> Result<Vec<DecisionRecord>> {
    let rows: Vec<DecisionRecord> = c
        .prepare_cached(&format!(
            "SELECT {DECISION_COLUMNS} FROM bandit_decisions
             WHERE settled = 0 AND deadline < ?1 ORDER BY deadline, seq LIMIT ?2"
        ))?
        .query_map(
            params![deadline_before.unwrap_or(i64::MAX), limit as i64],
            decision_row,
        )?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter().map(|d| with_rewards(c, d)).collect()
}

fn loop_rewards(
    c: &Connection,
    loop_name: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<(RewardRecord, DecisionRecord)>> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT r.seq, r.slot, r.value, r.at, r.is_default,
                    {cols}
             FROM bandit_rewards r JOIN bandit_decisions d ON d.seq = r.decision_seq
             WHERE r.loop = ?1 AND r.seq > ?2 ORDER BY r.seq LIMIT ?3",
            cols = DECISION_COLUMNS
                .split(", ")
                .map(|c| format!("d.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))?
        .query_map(
            params![loop_name, after.min(i64::MAX as u64) as i64, limit as i64],
            |r| {
                let reward = reward_row(r)?;
                let d = DecisionRecord {
                    seq: r.get::<_, i64>(5)? as u64,
                    id: r.get(6)?,
                    loop_name: r.get(7)?,
                    user: r.get(8)?,
                    created_at: r.get(9)?,
                    deadline: r.get(10)?,
                    activated: r.get(11)?,
                    settled: r.get(12)?,
                    payload: r.get(13)?,
                    rewards: Vec::new(),
                };
                Ok((reward, d))
            },
        )?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

fn decision_log(c: &Connection, loop_name: &str, limit: usize) -> Result<Vec<DecisionRecord>> {
    let mut rows: Vec<DecisionRecord> = c
        .prepare_cached(&format!(
            "SELECT {DECISION_COLUMNS} FROM bandit_decisions
             WHERE loop = ?1 AND activated = 1 AND settled = 1 ORDER BY seq DESC LIMIT ?2"
        ))?
        .query_map(params![loop_name, limit as i64], decision_row)?
        .collect::<rusqlite::Result<_>>()?;
    rows.reverse();
    rows.into_iter().map(|d| with_rewards(c, d)).collect()
}

fn save_checkpoint(
    c: &Connection,
    loop_name: &str,
    reward_seq: u64,
    model: &[u8],
    now: Millis,
) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO bandit_checkpoints (loop, reward_seq, model, saved_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (loop) DO UPDATE SET reward_seq = excluded.reward_seq, model = excluded.model,
         saved_at = excluded.saved_at",
    )?
    .execute(params![loop_name, reward_seq as i64, model, now])?;
    Ok(())
}

fn checkpoint(c: &Connection, loop_name: &str) -> Result<Option<(u64, Vec<u8>)>> {
    Ok(
        c.prepare_cached("SELECT reward_seq, model FROM bandit_checkpoints WHERE loop = ?1")?
            .query_row([loop_name], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()?,
    )
}

fn delete_checkpoint(c: &Connection, loop_name: &str) -> Result<()> {
    c.prepare_cached("DELETE FROM bandit_checkpoints WHERE loop = ?1")?
        .execute([loop_name])?;
    Ok(())
}

/// Deletes every decision (and its rewards) made for `user`; returns the loops affected and
/// the number of decisions removed.
fn delete_user_decisions(c: &Connection, user: &str) -> Result<(Vec<String>, u64)> {
    let mut loops: Vec<String> = c
        .prepare_cached("SELECT DISTINCT loop FROM bandit_decisions WHERE user = ?1")?
        .query_map([user], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    loops.sort();
    c.prepare_cached(
        "DELETE FROM bandit_rewards WHERE decision_seq IN (SELECT seq FROM bandit_decisions WHERE user = ?1)",
    )?
    .execute([user])?;
    let n = c
        .prepare_cached("DELETE FROM bandit_decisions WHERE user = ?1")?
        .execute([user])?;
    Ok((loops, n as u64))
}

fn loop_stats(c: &Connection, loop_name: &str) -> Result<LoopLogStats> {
    let (decisions, apprentice_decisions, apprentice_agreements) = c
        .prepare_cached(
            "SELECT COUNT(*),
                    COALESCE(SUM(json_extract(payload, '$.mode') = 'apprentice'), 0),
                    COALESCE(SUM(json_extract(payload, '$.agree') = 1), 0)
             FROM bandit_decisions WHERE loop = ?1",
        )?
        .query_row([loop_name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
    let (rewards, default_rewards, reward_sum) = c
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(is_default), 0), COALESCE(SUM(value), 0.0)
             FROM bandit_rewards WHERE loop = ?1",
        )?
        .query_row([loop_name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })?;
    Ok(LoopLogStats {
        decisions: decisions as u64,
        rewards: rewards as u64,
        default_rewards: default_rewards as u64,
        reward_sum,
        apprentice_decisions: apprentice_decisions as u64,
        apprentice_agreements: apprentice_agreements as u64,
    })
}

/// Deletes up to `limit` closed decisions made before `before`, with their rewards; returns how
/// many. Open decisions are kept until their window closes.
fn delete_decisions_before(c: &Connection, before: Millis, limit: usize) -> Result<u64> {
    // The same rows both times: deleting rewards does not change which decisions match.
    const EXPIRED: &str = "SELECT seq FROM bandit_decisions
        WHERE created_at < ?1 AND settled = 1 ORDER BY seq LIMIT ?2";
    c.prepare_cached(&format!(
        "DELETE FROM bandit_rewards WHERE decision_seq IN ({EXPIRED})"
    ))?
    .execute(params![before, limit as i64])?;
    let n = c
        .prepare_cached(&format!(
            "DELETE FROM bandit_decisions WHERE seq IN ({EXPIRED})"
        ))?
        .execute(params![before, limit as i64])?;
    Ok(n as u64)
}

/// Decisions of `user`, oldest first (for an export).
fn user_decisions(c: &Connection, user: &str) -> Result<Vec<DecisionRecord>> {
    let rows: Vec<DecisionRecord> = c
        .prepare_cached(&format!(
            "SELECT {DECISION_COLUMNS} FROM bandit_decisions WHERE user = ?1 ORDER BY seq"
        ))?
        .query_map([user], decision_row)?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter().map(|d| with_rewards(c, d)).collect()
}

impl crate::DecisionStore for SqliteStore {
    fn put_loop(&self, name: &str, config: &serde_json::Value) -> Result<LoopRecord> {
        let (name, config) = (name.to_owned(), config.clone());
        self.exec(move |c| put_loop(c, &name, &config, now_ms()))
    }

    fn get_loop(&self, name: &str) -> Result<Option<LoopRecord>> {
        self.read(|c| get_loop(c, name))
    }

    fn loops(&self) -> Result<Vec<LoopRecord>> {
        self.read(loops)
    }

    fn insert_decision(&self, decision: NewDecision) -> Result<Option<u64>> {
        self.exec_single(move |c| insert_decision(c, &decision))
    }

    fn decision(&self, id: &str) -> Result<Option<DecisionRecord>> {
        self.read(|c| decision(c, id))
    }

    fn activate_decision(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.exec(move |c| activate(c, &id))
    }

    fn insert_reward(&self, reward: NewReward) -> Result<RewardOutcome> {
        self.exec_single(move |c| insert_reward(c, &reward))
    }

    fn insert_rewards(
        &self,
        rewards: Vec<NewReward>,
        settle: Vec<String>,
    ) -> Result<Vec<RewardOutcome>> {
        self.exec(move |c| {
            let out = rewards
                .iter()
                .map(|r| insert_reward(c, r))
                .collect::<Result<Vec<_>>>()?;
            settle_windows(c, &settle)?;
            Ok(out)
        })
    }

    fn open_decisions(
        &self,
        deadline_before: Option<Millis>,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>> {
        self.read(|c| open_decisions(c, deadline_before, limit))
    }

    fn loop_rewards(
        &self,
        loop_name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(RewardRecord, DecisionRecord)>> {
        self.read(|c| loop_rewards(c, loop_name, after, limit))
    }

    fn decision_log(&self, loop_name: &str, limit: usize) -> Result<Vec<DecisionRecord>> {
        self.read(|c| decision_log(c, loop_name, limit))
    }

    fn save_checkpoint(&self, loop_name: &str, reward_seq: u64, model: Vec<u8>) -> Result<()> {
        let name = loop_name.to_owned();
        self.exec(move |c| save_checkpoint(c, &name, reward_seq, &model, now_ms()))
    }

    fn checkpoint(&self, loop_name: &str) -> Result<Option<(u64, Vec<u8>)>> {
        self.read(|c| checkpoint(c, loop_name))
    }

    fn delete_checkpoint(&self, loop_name: &str) -> Result<()> {
        let name = loop_name.to_owned();
        self.exec(move |c| delete_checkpoint(c, &name))
    }

    fn delete_user_decisions(&self, user: &str) -> Result<(Vec<String>, u64)> {
        let user = user.to_owned();
        self.exec(move |c| delete_user_decisions(c, &user))
    }

    fn user_decisions(&self, user: &str) -> Result<Vec<DecisionRecord>> {
        self.read(|c| user_decisions(c, user))
    }

    fn loop_stats(&self, loop_name: &str) -> Result<LoopLogStats> {
        self.read(|c| loop_stats(c, loop_name))
    }

    fn delete_decisions_before(&self, before: Millis, limit: usize) -> Result<u64> {
        self.exec(move |c| delete_decisions_before(c, before, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crate::{Error, SqliteStore, StoreOptions};

    #[test]
    fn an_unreadable_loop_configuration_is_a_typed_decision_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        s.put_loop("home", &serde_json::json!({"slots": 1}))
            .unwrap();
        // Damage the stored row behind the store's back, as a bad disk or a bad edit would.
        let raw = Connection::open(s.path()).unwrap();
        raw.execute(
            "UPDATE bandit_loops SET config = 'not json' WHERE name = 'home'",
            [],
        )
        .unwrap();
        match s.get_loop("home") {
            Err(Error::Decision(DecisionStoreError::LoopConfig { name, .. })) => {
                assert_eq!(name, "home")
            }
            other => panic!("expected a LoopConfig error, got {other:?}"),
        }
        assert!(matches!(
            s.loops(),
            Err(Error::Decision(DecisionStoreError::LoopConfig { .. }))
        ));
    }
}
