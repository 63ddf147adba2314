//! [`crate::CampaignStore`] on SQLite: experiments with their exposures, segments with their
//! members and size history.
//!
//! Exposures are keyed by the user's stored key (a user is exposed before their first event
//! creates them), members by the internal user id like `item_blocks`; the writer's
//! `delete_user` deletes a user's rows of both in the deletion's transaction.

use rusqlite::{Connection, params};

use super::SqliteStore;
use crate::{Exposure, Member, Millis, NewExposure, Result, RuleRecord, RuleStoreError, UserIdx};

pub(super) const MIGRATION: &str = r#"
CREATE TABLE experiments (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE experiment_exposures (
    experiment TEXT NOT NULL,
    user_key TEXT NOT NULL,
    variant INTEGER NOT NULL,
    at INTEGER NOT NULL,
    credit_a INTEGER NOT NULL DEFAULT 0,
    credit_b INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment, user_key)
) WITHOUT ROWID;
CREATE INDEX experiment_exposures_by_user ON experiment_exposures (user_key);
CREATE TABLE segments (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE segment_members (
    segment TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    score REAL NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (segment, user_id)
) WITHOUT ROWID;
CREATE INDEX segment_members_by_user ON segment_members (user_id);
CREATE TABLE segment_sizes (
    segment TEXT NOT NULL,
    at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (segment, at)
) WITHOUT ROWID;
"#;

/// The tables of named JSON definitions (rules, experiments, segments); only these names ever
/// reach the SQL below.
#[derive(Clone, Copy)]
pub(super) enum Defs {
    Rules,
    Experiments,
    Segments,
}

impl Defs {
    fn table(self) -> &'static str {
        match self {
            Defs::Rules => "rules",
            Defs::Experiments => "experiments",
            Defs::Segments => "segments",
        }
    }
}

pub(super) fn put_def(
    c: &Connection,
    defs: Defs,
    name: &str,
    definition: &serde_json::Value,
    now: Millis,
) -> Result<RuleRecord> {
    let t = defs.table();
    let (created_at, updated_at) = c
        .prepare_cached(&format!(
            "INSERT INTO {t} (name, definition, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
             updated_at = excluded.updated_at
             RETURNING created_at, updated_at"
        ))?
        .query_row(params![name, definition.to_string(), now], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok(RuleRecord {
        name: name.to_owned(),
        definition: definition.clone(),
        created_at,
        updated_at,
    })
}

pub(super) fn defs(c: &Connection, defs: Defs) -> Result<Vec<RuleRecord>> {
    let t = defs.table();
    let rows: Vec<(String, String, Millis, Millis)> = c
        .prepare_cached(&format!(
            "SELECT name, definition, created_at, updated_at FROM {t} ORDER BY name"
        ))?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter()
        .map(|(name, text, created_at, updated_at)| {
            let definition =
                serde_json::from_str(&text).map_err(|source| RuleStoreError::Definition {
                    name: name.clone(),
                    source,
                })?;
            Ok(RuleRecord {
                name,
                definition,
                created_at,
                updated_at,
            })
        })
        .collect()
}

fn delete_experiment(c: &Connection, name: &str) -> Result<bool> {
    c.prepare_cached("DELETE FROM experiment_exposures WHERE experiment = ?1")?
        .execute([name])?;
    Ok(c.prepare_cached("DELETE FROM experiments WHERE name = ?1")?
        .execute([name])?
        == 1)
}

fn record_exposures(c: &Connection, experiment: &str, rows: &[NewExposure]) -> Result<u64> {
    let mut stmt = c.prepare_cached(
        "INSERT INTO experiment_exposures (experiment, user_key, variant, at)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (experiment, user_key) DO NOTHING",
    )?;
    let mut added = 0;
    for e in rows {
        added += stmt.execute(params![experiment, e.user, e.variant, e.at])? as u64;
    }
    Ok(added)
}

fn exposures(c: &Connection, experiment: &str) -> Result<Vec<Exposure>> {
    Ok(c.prepare_cached(
        "SELECT user_key, variant, at, credit_a, credit_b FROM experiment_exposures
         WHERE experiment = ?1 ORDER BY user_key",
    )?
    .query_map([experiment], |r| {
        Ok(Exposure {
            key: r.get(0)?,
            variant: r.get(1)?,
            at: r.get(2)?,
            credit: (r.get(3)?, r.get(4)?),
        })
    })?
    .collect::<rusqlite::Result<_>>()?)
}

fn add_credits(c: &Connection, experiment: &str, credits: &[(String, u32, u32)]) -> Result<u64> {
    let mut stmt = c.prepare_cached(
        "UPDATE experiment_exposures SET credit_a = credit_a + ?3, credit_b = credit_b + ?4
         WHERE experiment = ?1 AND user_key = ?2",
    )?;
    let mut n = 0;
    for (user, a, b) in credits {
        n += stmt.execute(params![experiment, user, a, b])? as u64;
    }
    Ok(n)
}

fn delete_segment(c: &Connection, name: &str) -> Result<bool> {
    c.prepare_cached("DELETE FROM segment_members WHERE segment = ?1")?
        .execute([name])?;
    c.prepare_cached("DELETE FROM segment_sizes WHERE segment = ?1")?
        .execute([name])?;
    Ok(c.prepare_cached("DELETE FROM segments WHERE name = ?1")?
        .execute([name])?
        == 1)
}

fn replace_members(
    c: &Connection,
    segment: &str,
    members: &[(UserIdx, f64)],
    at: Millis,
) -> Result<u64> {
    c.prepare_cached("DELETE FROM segment_members WHERE segment = ?1")?
        .execute([segment])?;
    let mut stmt = c.prepare_cached(
        "INSERT INTO segment_members (segment, user_id, score, at)
         SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2)
         ON CONFLICT (segment, user_id) DO UPDATE SET score = excluded.score",
    )?;
    for (user, score) in members {
        stmt.execute(params![segment, user.0, score, at])?;
    }
    let size: i64 = c
        .prepare_cached("SELECT count(*) FROM segment_members WHERE segment = ?1")?
        .query_row([segment], |r| r.get(0))?;
    c.prepare_cached(
        "INSERT INTO segment_sizes (segment, at, size) VALUES (?1, ?2, ?3)
         ON CONFLICT (segment, at) DO UPDATE SET size = excluded.size",
    )?
    .execute(params![segment, at, size])?;
    Ok(size as u64)
}

fn members(
    c: &Connection,
    segment: &str,
    after: Option<UserIdx>,
    limit: usize,
) -> Result<Vec<Member>> {
    let after = after.map_or(-1, |u| i64::from(u.0));
    Ok(c.prepare_cached(
        "SELECT m.user_id, u.key, m.score, m.at FROM segment_members m
         JOIN users u ON u.id = m.user_id
         WHERE m.segment = ?1 AND m.user_id > ?2 ORDER BY m.user_id LIMIT ?3",
    )?
    .query_map(
        params![segment, after, limit.min(i64::MAX as usize) as i64],
        |r| {
            Ok(Member {
                user: UserIdx(r.get(0)?),
                key: r.get(1)?,
                score: r.get(2)?,
                at: r.get(3)?,
            })
        },
    )?
    .collect::<rusqlite::Result<_>>()?)
}

fn memberships(c: &Connection, user: UserIdx) -> Result<Vec<(String, f64)>> {
    Ok(c.prepare_cached(
        "SELECT segment, score FROM segment_members WHERE user_id = ?1 ORDER BY segment",
    )?
    .query_map([user.0], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect::<rusqlite::Result<_>>()?)
}

fn segment_sizes(c: &Connection, segment: &str) -> Result<Vec<(Millis, u64)>> {
    Ok(
        c.prepare_cached("SELECT at, size FROM segment_sizes WHERE segment = ?1 ORDER BY at")?
            .query_map([segment], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<rusqlite::Result<_>>()?,
    )
}

fn delete_rows_before(c: &Connection, before: Millis) -> Result<u64> {
    let mut n = 0;
    for sql in [
        "DELETE FROM experiment_exposures WHERE at < ?1",
        "DELETE FROM segment_members WHERE at < ?1",
        "DELETE FROM segment_sizes WHERE at < ?1",
    ] {
        n += c.prepare_cached(sql)?.execute([before])? as u64;
    }
    Ok(n)
}

impl crate::CampaignStore for SqliteStore {
    fn put_experiment(
        &self,
        name: &str,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<RuleRecord> {
        let (name, definition) = (name.to_owned(), definition.clone());
        self.exec_single(move |c| put_def(c, Defs::Experiments, &name, &definition, now))
    }

    fn experiments(&self) -> Result<Vec<RuleRecord>> {
        self.read(|c| defs(c, Defs::Experiments))
    }

    fn delete_experiment(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.exec(move |c| delete_experiment(c, &name))
    }

    fn record_exposures(&self, experiment: &str, exposures: Vec<NewExposure>) -> Result<u64> {
        let experiment = experiment.to_owned();
        self.exec(move |c| record_exposures(c, &experiment, &exposures))
    }

    fn add_credits(&self, experiment: &str, credits: Vec<(String, u32, u32)>) -> Result<u64> {
        let experiment = experiment.to_owned();
        self.exec(move |c| add_credits(c, &experiment, &credits))
    }

    fn exposures(&self, experiment: &str) -> Result<Vec<Exposure>> {
        self.read(|c| exposures(c, experiment))
    }

    fn put_segment(
        &self,
        name: &str,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<RuleRecord> {
        let (name, definition) = (name.to_owned(), definition.clone());
        self.exec_single(move |c| put_def(c, Defs::Segments, &name, &definition, now))
    }

    fn segments(&self) -> Result<Vec<RuleRecord>> {
        self.read(|c| defs(c, Defs::Segments))
    }

    fn delete_segment(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.exec(move |c| delete_segment(c, &name))
    }

    fn replace_members(
        &self,
        segment: &str,
        members: Vec<(UserIdx, f64)>,
        at: Millis,
    ) -> Result<u64> {
        let segment = segment.to_owned();
        self.exec(move |c| replace_members(c, &segment, &members, at))
    }

    fn members(&self, segment: &str, after: Option<UserIdx>, limit: usize) -> Result<Vec<Member>> {
        self.read(|c| members(c, segment, after, limit))
    }

    fn memberships(&self, user: UserIdx) -> Result<Vec<(String, f64)>> {
        self.read(|c| memberships(c, user))
    }

    fn segment_sizes(&self, segment: &str) -> Result<Vec<(Millis, u64)>> {
        self.read(|c| segment_sizes(c, segment))
    }

    fn delete_campaign_rows_before(&self, before: Millis) -> Result<u64> {
        self.exec(move |c| delete_rows_before(c, before))
    }
}
