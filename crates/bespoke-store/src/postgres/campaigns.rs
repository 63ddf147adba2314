//! [`crate::CampaignStore`] on PostgreSQL: experiments with their exposures, segments with their
//! members and size history.
//!
//! Exposures are keyed by the user's stored key (a user is exposed before their first event
//! creates them), so `delete_user` deletes them by key; members reference the user row and go
//! with it by cascade.

use super::*;
use crate::{Exposure, Member, NewExposure, RuleRecord};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE experiments (
    name TEXT COLLATE "C" PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE experiment_exposures (
    experiment TEXT COLLATE "C" NOT NULL,
    user_key TEXT COLLATE "C" NOT NULL,
    variant BIGINT NOT NULL,
    at BIGINT NOT NULL,
    credit_a BIGINT NOT NULL DEFAULT 0,
    credit_b BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment, user_key)
);
CREATE INDEX experiment_exposures_by_user ON experiment_exposures (user_key);
CREATE TABLE segments (
    name TEXT COLLATE "C" PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE segment_members (
    segment TEXT COLLATE "C" NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    score DOUBLE PRECISION NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (segment, user_id)
);
CREATE INDEX segment_members_by_user ON segment_members (user_id);
CREATE TABLE segment_sizes (
    segment TEXT COLLATE "C" NOT NULL,
    at BIGINT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (segment, at)
);
"#;

/// The two tables of named definitions, with their SQL (table names are never parameters, so
/// each gets statements of its own).
#[derive(Clone, Copy)]
enum Defs {
    Experiments,
    Segments,
}

macro_rules! put_sql {
    ($table:literal) => {
        concat!(
            "INSERT INTO ",
            $table,
            " (name, definition, created_at, updated_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
                 updated_at = excluded.updated_at
             RETURNING created_at, updated_at"
        )
    };
}

macro_rules! list_sql {
    ($table:literal) => {
        concat!(
            "SELECT name, definition, created_at, updated_at FROM ",
            $table,
            " ORDER BY name"
        )
    };
}

impl Defs {
    fn put(self) -> &'static str {
        match self {
            Defs::Experiments => put_sql!("experiments"),
            Defs::Segments => put_sql!("segments"),
        }
    }

    fn list(self) -> &'static str {
        match self {
            Defs::Experiments => list_sql!("experiments"),
            Defs::Segments => list_sql!("segments"),
        }
    }
}

impl PgStore {
    fn put_def(
        &self,
        defs: Defs,
        name: &str,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<RuleRecord> {
        let text = definition.to_string();
        let row = self.write(|db| db.query_one(defs.put(), &[&name, &text, &now]))?;
        Ok(RuleRecord {
            name: name.to_owned(),
            definition: definition.clone(),
            created_at: row.get(0),
            updated_at: row.get(1),
        })
    }

    fn defs(&self, defs: Defs) -> Result<Vec<RuleRecord>> {
        self.read(|db| {
            db.query(defs.list(), &[])?
                .iter()
                .map(super::rules::record_from_row)
                .collect()
        })
    }
}

fn replace_members(
    db: &mut Db<'_, '_>,
    segment: &str,
    members: &[(UserIdx, f64)],
    at: Millis,
) -> Result<u64> {
    // A user listed twice keeps the later score, as on SQLite.
    let mut scores: BTreeMap<i64, f64> = BTreeMap::new();
    for (user, score) in members {
        scores.insert(i64::from(user.0), *score);
    }
    let (ids, scores): (Vec<i64>, Vec<f64>) = scores.into_iter().unzip();
    db.execute(
        "DELETE FROM segment_members WHERE segment = $1",
        &[&segment],
    )?;
    // Users that no longer exist are skipped; `KEY SHARE` makes a concurrent deletion wait for
    // this commit (and then delete the row by cascade).
    db.execute(
        "INSERT INTO segment_members (segment, user_id, score, at)
         SELECT $1, u.id, m.score, $4
         FROM unnest($2::int8[], $3::float8[]) AS m(id, score)
         JOIN users u ON u.id = m.id
         FOR KEY SHARE OF u",
        &[&segment, &ids, &scores, &at],
    )?;
    let size: i64 = db
        .query_one(
            "SELECT count(*) FROM segment_members WHERE segment = $1",
            &[&segment],
        )?
        .get(0);
    db.execute(
        "INSERT INTO segment_sizes (segment, at, size) VALUES ($1, $2, $3)
         ON CONFLICT (segment, at) DO UPDATE SET size = excluded.size",
        &[&segment, &at, &size],
    )?;
    Ok(size as u64)
}

impl crate::CampaignStore for PgStore {
    fn put_experiment(
        &self,
        name: &str,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<RuleRecord> {
        self.put_def(Defs::Experiments, name, definition, now)
    }

    fn experiments(&self) -> Result<Vec<RuleRecord>> {
        self.defs(Defs::Experiments)
    }

    fn delete_experiment(&self, name: &str) -> Result<bool> {
        self.write(|db| {
            db.execute(
                "DELETE FROM experiment_exposures WHERE experiment = $1",
                &[&name],
            )?;
            Ok(db.execute("DELETE FROM experiments WHERE name = $1", &[&name])? == 1)
        })
    }

    fn record_exposures(&self, experiment: &str, exposures: Vec<NewExposure>) -> Result<u64> {
        if exposures.is_empty() {
            return Ok(0);
        }
        let users: Vec<&str> = exposures.iter().map(|e| e.user.as_str()).collect();
        let variants: Vec<i64> = exposures.iter().map(|e| i64::from(e.variant)).collect();
        let at: Vec<i64> = exposures.iter().map(|e| e.at).collect();
        // Rows are inserted in input order, so of one user's rows in the batch the first is
        // kept, as is a row already stored.
        self.write(|db| {
            db.execute(
                "INSERT INTO experiment_exposures (experiment, user_key, variant, at)
                 SELECT $1, u, v, a FROM unnest($2::text[], $3::int8[], $4::int8[])
                     WITH ORDINALITY AS t(u, v, a, n)
                 ORDER BY n
                 ON CONFLICT (experiment, user_key) DO NOTHING",
                &[&experiment, &users, &variants, &at],
            )
        })
    }

    fn add_credits(&self, experiment: &str, credits: Vec<(String, u32, u32)>) -> Result<u64> {
        if credits.is_empty() {
            return Ok(0);
        }
        let users: Vec<&str> = credits.iter().map(|c| c.0.as_str()).collect();
        let a: Vec<i64> = credits.iter().map(|c| i64::from(c.1)).collect();
        let b: Vec<i64> = credits.iter().map(|c| i64::from(c.2)).collect();
        // One update per user with the sums of their credits; a row counts once per credit
        // applied to it, as SQLite's one update per credit does.
        self.write(|db| {
            let rows = db.query(
                "UPDATE experiment_exposures e
                 SET credit_a = e.credit_a + t.a, credit_b = e.credit_b + t.b
                 FROM (SELECT u, sum(a)::int8 AS a, sum(b)::int8 AS b, count(*) AS n
                       FROM unnest($2::text[], $3::int8[], $4::int8[]) AS x(u, a, b)
                       GROUP BY u) t
                 WHERE e.experiment = $1 AND e.user_key = t.u
                 RETURNING t.n",
                &[&experiment, &users, &a, &b],
            )?;
            Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).sum())
        })
    }

    fn exposures(&self, experiment: &str) -> Result<Vec<Exposure>> {
        self.read(|db| {
            db.query(
                "SELECT user_key, variant, at, credit_a, credit_b FROM experiment_exposures
                 WHERE experiment = $1 ORDER BY user_key",
                &[&experiment],
            )?
            .iter()
            .map(|r| {
                let small = |i: usize| {
                    u32::try_from(r.get::<_, i64>(i))
                        .map_err(|_| Error::Corrupt("an exposure field exceeds 2^32".into()))
                };
                Ok(Exposure {
                    key: r.get(0),
                    variant: small(1)?,
                    at: r.get(2),
                    credit: (small(3)?, small(4)?),
                })
            })
            .collect()
        })
    }

    fn put_segment(
        &self,
        name: &str,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<RuleRecord> {
        self.put_def(Defs::Segments, name, definition, now)
    }

    fn segments(&self) -> Result<Vec<RuleRecord>> {
        self.defs(Defs::Segments)
    }

    fn delete_segment(&self, name: &str) -> Result<bool> {
        self.write(|db| {
            db.execute("DELETE FROM segment_members WHERE segment = $1", &[&name])?;
            db.execute("DELETE FROM segment_sizes WHERE segment = $1", &[&name])?;
            Ok(db.execute("DELETE FROM segments WHERE name = $1", &[&name])? == 1)
        })
    }

    fn replace_members(
        &self,
        segment: &str,
        members: Vec<(UserIdx, f64)>,
        at: Millis,
    ) -> Result<u64> {
        self.write(|db| replace_members(db, segment, &members, at))
    }

    fn members(&self, segment: &str, after: Option<UserIdx>, limit: usize) -> Result<Vec<Member>> {
        let after = after.map_or(0, |u| i64::from(u.0));
        self.read(|db| {
            db.query(
                "SELECT m.user_id, u.key, m.score, m.at FROM segment_members m
                 JOIN users u ON u.id = m.user_id
                 WHERE m.segment = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3",
                &[&segment, &after, &to_i64(limit)],
            )?
            .iter()
            .map(|r| {
                Ok(Member {
                    user: UserIdx(to_u32(r.get(0), "users")?),
                    key: r.get(1),
                    score: r.get(2),
                    at: r.get(3),
                })
            })
            .collect()
        })
    }

    fn memberships(&self, user: UserIdx) -> Result<Vec<(String, f64)>> {
        self.read(|db| {
            Ok(db
                .query(
                    "SELECT segment, score FROM segment_members WHERE user_id = $1
                     ORDER BY segment",
                    &[&i64::from(user.0)],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn segment_sizes(&self, segment: &str) -> Result<Vec<(Millis, u64)>> {
        self.read(|db| {
            Ok(db
                .query(
                    "SELECT at, size FROM segment_sizes WHERE segment = $1 ORDER BY at",
                    &[&segment],
                )?
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                .collect())
        })
    }

    fn delete_campaign_rows_before(&self, before: Millis) -> Result<u64> {
        self.write(|db| {
            let mut n = db.execute("DELETE FROM experiment_exposures WHERE at < $1", &[&before])?;
            n += db.execute("DELETE FROM segment_members WHERE at < $1", &[&before])?;
            n += db.execute("DELETE FROM segment_sizes WHERE at < $1", &[&before])?;
            Ok(n)
        })
    }
}
