//! [`crate::DecisionStore`] on PostgreSQL: the `bandit_*` tables.
//!
//! Rewards reference their decision with a foreign key that cascades, so deleting decisions
//! (erasure, retention) takes their rewards along. Rewards are numbered in commit order: an
//! insert first takes the `reward_lock` row of `meta` (held until commit), so a learner that
//! replays `loop_rewards(after)` from a checkpoint never misses a reward committed late with a
//! smaller number.

use super::*;
use crate::{
    DecisionRecord, DecisionStoreError, LoopLogStats, LoopRecord, NewDecision, NewReward,
    RewardOutcome, RewardRecord,
};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE bandit_loops (
    name TEXT COLLATE "C" PRIMARY KEY,
    config TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE bandit_decisions (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    loop TEXT COLLATE "C" NOT NULL,
    user_key TEXT COLLATE "C",
    created_at BIGINT NOT NULL,
    deadline BIGINT NOT NULL,
    activated BOOLEAN NOT NULL,
    settled BOOLEAN NOT NULL DEFAULT FALSE,
    payload TEXT NOT NULL
);
CREATE INDEX bandit_decisions_open ON bandit_decisions (deadline) WHERE NOT settled;
CREATE INDEX bandit_decisions_by_loop ON bandit_decisions (loop, seq);
CREATE INDEX bandit_decisions_by_user ON bandit_decisions (user_key) WHERE user_key IS NOT NULL;
CREATE TABLE bandit_rewards (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decision_seq BIGINT NOT NULL REFERENCES bandit_decisions (seq) ON DELETE CASCADE,
    loop TEXT COLLATE "C" NOT NULL,
    slot BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    at BIGINT NOT NULL,
    is_default BOOLEAN NOT NULL,
    UNIQUE (decision_seq, slot)
);
CREATE INDEX bandit_rewards_by_loop ON bandit_rewards (loop, seq);
CREATE TABLE bandit_checkpoints (
    loop TEXT COLLATE "C" PRIMARY KEY,
    reward_seq BIGINT NOT NULL,
    model BYTEA NOT NULL,
    saved_at BIGINT NOT NULL
);
"#;

fn loop_from_row(r: &postgres::Row) -> Result<LoopRecord> {
    let name: String = r.get(0);
    let text: String = r.get(1);
    let config = serde_json::from_str(&text).map_err(|source| DecisionStoreError::LoopConfig {
        name: name.clone(),
        source,
    })?;
    Ok(LoopRecord {
        name,
        config,
        created_at: r.get(2),
        updated_at: r.get(3),
    })
}

/// A decision from `seq, id, loop, user_key, created_at, deadline, activated, settled,
/// payload` starting at column `at`, without its rewards.
fn decision_from_row(r: &postgres::Row, at: usize) -> DecisionRecord {
    DecisionRecord {
        seq: r.get::<_, i64>(at) as u64,
        id: r.get(at + 1),
        loop_name: r.get(at + 2),
        user: r.get(at + 3),
        created_at: r.get(at + 4),
        deadline: r.get(at + 5),
        activated: r.get(at + 6),
        settled: r.get(at + 7),
        payload: r.get(at + 8),
        rewards: Vec::new(),
    }
}

/// A reward from `seq, slot, value, at, is_default` starting at column `at`.
fn reward_from_row(r: &postgres::Row, at: usize) -> Result<RewardRecord> {
    Ok(RewardRecord {
        seq: r.get::<_, i64>(at) as u64,
        slot: u32::try_from(r.get::<_, i64>(at + 1))
            .map_err(|_| Error::Corrupt("a reward slot exceeds 2^32".into()))?,
        value: r.get(at + 2),
        at: r.get(at + 3),
        is_default: r.get(at + 4),
    })
}

/// `decisions` with their rewards (one query for all of them), by slot.
fn with_rewards(
    db: &mut Db<'_, '_>,
    mut decisions: Vec<DecisionRecord>,
) -> Result<Vec<DecisionRecord>> {
    if decisions.is_empty() {
        return Ok(decisions);
    }
    let seqs: Vec<i64> = decisions.iter().map(|d| d.seq as i64).collect();
    let mut rewards: HashMap<u64, Vec<RewardRecord>> = HashMap::new();
    for r in db.query(
        "SELECT decision_seq, seq, slot, value, at, is_default FROM bandit_rewards
         WHERE decision_seq = ANY($1) ORDER BY decision_seq, slot",
        &[&seqs],
    )? {
        rewards
            .entry(r.get::<_, i64>(0) as u64)
            .or_default()
            .push(reward_from_row(&r, 1)?);
    }
    for d in &mut decisions {
        d.rewards = rewards.remove(&d.seq).unwrap_or_default();
    }
    Ok(decisions)
}

fn decisions_from_rows(db: &mut Db<'_, '_>, rows: &[postgres::Row]) -> Result<Vec<DecisionRecord>> {
    let decisions = rows.iter().map(|r| decision_from_row(r, 0)).collect();
    with_rewards(db, decisions)
}

/// Records one reward in the current transaction, which holds the reward lock.
fn insert_reward(db: &mut Db<'_, '_>, r: &NewReward) -> Result<RewardOutcome> {
    // `KEY SHARE` keeps the decision from being deleted before this commits.
    let Some(d) = db.query_opt(
        "SELECT seq, loop FROM bandit_decisions WHERE id = $1 FOR KEY SHARE",
        &[&r.decision_id],
    )?
    else {
        return Ok(RewardOutcome::UnknownDecision);
    };
    let (seq, loop_name): (i64, String) = (d.get(0), d.get(1));
    let slot = i64::from(r.slot);
    if let Some(row) = db.query_opt(
        "INSERT INTO bandit_rewards (decision_seq, loop, slot, value, at, is_default)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (decision_seq, slot) DO NOTHING
         RETURNING seq",
        &[&seq, &loop_name, &slot, &r.value, &r.at, &r.is_default],
    )? {
        return Ok(RewardOutcome::Recorded(row.get::<_, i64>(0) as u64));
    }
    let default: bool = db
        .query_one(
            "SELECT is_default FROM bandit_rewards WHERE decision_seq = $1 AND slot = $2",
            &[&seq, &slot],
        )?
        .get(0);
    Ok(RewardOutcome::Duplicate { default })
}

fn reward_lock(db: &mut Db<'_, '_>) -> Result<()> {
    db.query_one(
        "SELECT value FROM meta WHERE key = 'reward_lock' FOR UPDATE",
        &[],
    )?;
    Ok(())
}

macro_rules! decisions_sql {
    ($($part:literal),*) => {
        concat!(
            "SELECT seq, id, loop, user_key, created_at, deadline, activated, settled, payload FROM bandit_decisions ",
            $($part),*
        )
    };
}

impl crate::DecisionStore for PgStore {
    fn put_loop(&self, name: &str, config: &serde_json::Value) -> Result<LoopRecord> {
        let text = config.to_string();
        let now = now_ms();
        self.write(|db| {
            let row = db.query_one(
                "INSERT INTO bandit_loops (name, config, created_at, updated_at) VALUES ($1, $2, $3, $3)
                 ON CONFLICT (name) DO UPDATE SET config = excluded.config,
                     updated_at = excluded.updated_at
                 RETURNING name, config, created_at, updated_at",
                &[&name, &text, &now],
            )?;
            loop_from_row(&row)
        })
    }

    fn get_loop(&self, name: &str) -> Result<Option<LoopRecord>> {
        self.read(|db| {
            db.query_opt(
                "SELECT name, config, created_at, updated_at FROM bandit_loops WHERE name = $1",
                &[&name],
            )?
            .map(|r| loop_from_row(&r))
            .transpose()
        })
    }

    fn loops(&self) -> Result<Vec<LoopRecord>> {
        self.read(|db| {
            db.query(
                "SELECT name, config, created_at, updated_at FROM bandit_loops ORDER BY name",
                &[],
            )?
            .iter()
            .map(loop_from_row)
            .collect()
        })
    }

    fn insert_decision(&self, d: NewDecision) -> Result<Option<u64>> {
        self.write(|db| {
            Ok(db
                .query_opt(
                    "INSERT INTO bandit_decisions (id, loop, user_key, created_at, deadline, activated, payload)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING seq",
                    &[
                        &d.id,
                        &d.loop_name,
                        &d.user,
                        &d.created_at,
                        &d.deadline,
                        &d.activated,
                        &d.payload,
                    ],
                )?
                .map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    fn decision(&self, id: &str) -> Result<Option<DecisionRecord>> {
        self.read(|db| {
            let rows = db.query(decisions_sql!("WHERE id = $1"), &[&id])?;
            Ok(decisions_from_rows(db, &rows)?.pop())
        })
    }

    fn activate_decision(&self, id: &str) -> Result<bool> {
        self.write(|db| {
            Ok(db.execute(
                "UPDATE bandit_decisions SET activated = TRUE WHERE id = $1 AND NOT activated",
                &[&id],
            )? == 1)
        })
    }

    fn insert_reward(&self, reward: NewReward) -> Result<RewardOutcome> {
        self.write(|db| {
            reward_lock(db)?;
            insert_reward(db, &reward)
        })
    }

    fn insert_rewards(
        &self,
        rewards: Vec<NewReward>,
        settle: Vec<String>,
    ) -> Result<Vec<RewardOutcome>> {
        self.write(|db| {
            if !rewards.is_empty() {
                reward_lock(db)?;
            }
            let out = rewards
                .iter()
                .map(|r| insert_reward(db, r))
                .collect::<Result<Vec<_>>>()?;
            if !settle.is_empty() {
                db.execute(
                    "UPDATE bandit_decisions SET settled = TRUE WHERE id = ANY($1)",
                    &[&settle],
                )?;
            }
            Ok(out)
        })
    }

    fn open_decisions(
        &self,
        deadline_before: Option<Millis>,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>> {
        self.read(|db| {
            let rows = db.query(
                decisions_sql!(
                    "WHERE NOT settled AND deadline < $1 ORDER BY deadline, seq LIMIT $2"
                ),
                &[&deadline_before.unwrap_or(i64::MAX), &to_i64(limit)],
            )?;
            decisions_from_rows(db, &rows)
        })
    }

    fn loop_rewards(
        &self,
        loop_name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(RewardRecord, DecisionRecord)>> {
        self.read(|db| {
            db.query(
                "SELECT r.seq, r.slot, r.value, r.at, r.is_default,
                        d.seq, d.id, d.loop, d.user_key, d.created_at, d.deadline, d.activated,
                        d.settled, d.payload
                 FROM bandit_rewards r JOIN bandit_decisions d ON d.seq = r.decision_seq
                 WHERE r.loop = $1 AND r.seq > $2 ORDER BY r.seq LIMIT $3",
                &[&loop_name, &seq_i64(after), &to_i64(limit)],
            )?
            .iter()
            .map(|r| Ok((reward_from_row(r, 0)?, decision_from_row(r, 5))))
            .collect()
        })
    }

    fn decision_log(&self, loop_name: &str, limit: usize) -> Result<Vec<DecisionRecord>> {
        self.read(|db| {
            let mut rows = db.query(
                decisions_sql!(
                    "WHERE loop = $1 AND activated AND settled ORDER BY seq DESC LIMIT $2"
                ),
                &[&loop_name, &to_i64(limit)],
            )?;
            rows.reverse();
            decisions_from_rows(db, &rows)
        })
    }

    fn save_checkpoint(&self, loop_name: &str, reward_seq: u64, model: Vec<u8>) -> Result<()> {
        let now = now_ms();
        self.write(|db| {
            db.execute(
                "INSERT INTO bandit_checkpoints (loop, reward_seq, model, saved_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (loop) DO UPDATE SET reward_seq = excluded.reward_seq,
                     model = excluded.model, saved_at = excluded.saved_at",
                &[&loop_name, &seq_i64(reward_seq), &model, &now],
            )?;
            Ok(())
        })
    }

    fn checkpoint(&self, loop_name: &str) -> Result<Option<(u64, Vec<u8>)>> {
        self.read(|db| {
            Ok(db
                .query_opt(
                    "SELECT reward_seq, model FROM bandit_checkpoints WHERE loop = $1",
                    &[&loop_name],
                )?
                .map(|r| (r.get::<_, i64>(0) as u64, r.get(1))))
        })
    }

    fn delete_checkpoint(&self, loop_name: &str) -> Result<()> {
        self.write(|db| {
            db.execute(
                "DELETE FROM bandit_checkpoints WHERE loop = $1",
                &[&loop_name],
            )?;
            Ok(())
        })
    }

    fn delete_user_decisions(&self, user: &str) -> Result<(Vec<String>, u64)> {
        self.write(|db| {
            // Rewards go with their decisions (cascade).
            let rows = db.query(
                "DELETE FROM bandit_decisions WHERE user_key = $1 RETURNING loop",
                &[&user],
            )?;
            let n = rows.len() as u64;
            let mut loops: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            loops.sort();
            loops.dedup();
            Ok((loops, n))
        })
    }

    fn user_decisions(&self, user: &str) -> Result<Vec<DecisionRecord>> {
        self.read(|db| {
            let rows = db.query(decisions_sql!("WHERE user_key = $1 ORDER BY seq"), &[&user])?;
            decisions_from_rows(db, &rows)
        })
    }

    fn loop_stats(&self, loop_name: &str) -> Result<LoopLogStats> {
        self.read(|db| {
            // As SQLite's `json_extract(payload, '$.agree') = 1`: JSON true or the number 1.
            let d = db.query_one(
                "SELECT count(*),
                        count(*) FILTER (WHERE payload::json ->> 'mode' = 'apprentice'),
                        count(*) FILTER (WHERE payload::json ->> 'agree' IN ('true', '1'))
                 FROM bandit_decisions WHERE loop = $1",
                &[&loop_name],
            )?;
            let r = db.query_one(
                "SELECT count(*), count(*) FILTER (WHERE is_default), coalesce(sum(value), 0)
                 FROM bandit_rewards WHERE loop = $1",
                &[&loop_name],
            )?;
            Ok(LoopLogStats {
                decisions: d.get::<_, i64>(0) as u64,
                rewards: r.get::<_, i64>(0) as u64,
                default_rewards: r.get::<_, i64>(1) as u64,
                reward_sum: r.get(2),
                apprentice_decisions: d.get::<_, i64>(1) as u64,
                apprentice_agreements: d.get::<_, i64>(2) as u64,
            })
        })
    }

    fn delete_decisions_before(&self, before: Millis, limit: usize) -> Result<u64> {
        // Open decisions are kept until their window closes; rewards go by cascade.
        self.write(|db| {
            db.execute(
                "DELETE FROM bandit_decisions WHERE seq IN (
                     SELECT seq FROM bandit_decisions WHERE created_at < $1 AND settled
                     ORDER BY seq LIMIT $2)",
                &[&before, &to_i64(limit)],
            )
        })
    }
}
