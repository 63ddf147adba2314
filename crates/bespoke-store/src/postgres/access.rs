//! [`crate::AccessStore`] on PostgreSQL: the `api_keys`, `audit` and `secrets` tables (and
//! `erasures`, which [`crate::PrivacyStore`] uses, created with them as on SQLite).

use super::*;
use crate::{AuditEntry, KeyRecord, NewAudit, NewKey, PrivacyStore, SessionLimits, SessionRecord};

/// Dashboard sessions, kept in the store so that any node knows them.
pub(super) const SESSIONS_SCHEMA: &str = r#"
CREATE TABLE dashboard_sessions (
    lookup BYTEA PRIMARY KEY,
    prefix TEXT NOT NULL,
    key_digest BYTEA NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
"#;

fn session_from_row(lookup: [u8; 32], r: &postgres::Row) -> Result<SessionRecord> {
    let digest: Vec<u8> = r.get(1);
    Ok(SessionRecord {
        lookup,
        prefix: r.get(0),
        key_digest: digest
            .try_into()
            .map_err(|_| Error::Corrupt("a session's key digest is not 32 bytes".into()))?,
        csrf: r.get(2),
        created_at: r.get(3),
        last_seen: r.get(4),
    })
}

pub(super) const SCHEMA: &str = r#"
CREATE TABLE api_keys (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix TEXT COLLATE "C" NOT NULL UNIQUE,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    hash BYTEA NOT NULL,
    rate_per_second DOUBLE PRECISION,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE TABLE audit (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT
);
CREATE TABLE erasures (
    id TEXT COLLATE "C" PRIMARY KEY,
    requested_at BIGINT NOT NULL,
    receipt TEXT NOT NULL
);
CREATE TABLE secrets (
    name TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL
);
"#;

fn key_from_row(r: &postgres::Row) -> Result<KeyRecord> {
    let scopes: String = r.get(3);
    let hash: Vec<u8> = r.get(4);
    Ok(KeyRecord {
        id: r.get::<_, i64>(0) as u64,
        prefix: r.get(1),
        name: r.get(2),
        scopes: parse_json(&scopes, "key scopes")?,
        hash: hash
            .try_into()
            .map_err(|_| Error::Corrupt("a key digest is not 32 bytes".into()))?,
        rate_per_second: r.get(5),
        created_at: r.get(6),
        revoked_at: r.get(7),
    })
}

fn secret_bytes(name: &str, v: Vec<u8>) -> Result<[u8; 32]> {
    v.try_into()
        .map_err(|_| Error::Corrupt(format!("secret {name} is not 32 bytes")))
}

impl crate::AccessStore for PgStore {
    fn insert_key(&self, key: NewKey) -> Result<KeyRecord> {
        let now = now_ms();
        let scopes = json_text(&key.scopes);
        let id = self.write(|db| {
            Ok(db
                .query_opt(
                    "INSERT INTO api_keys (prefix, name, scopes, hash, rate_per_second, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (prefix) DO NOTHING RETURNING id",
                    &[
                        &key.prefix,
                        &key.name,
                        &scopes,
                        &&key.hash[..],
                        &key.rate_per_second,
                        &now,
                    ],
                )?
                .map(|r| r.get::<_, i64>(0)))
        })?;
        let Some(id) = id else {
            return Err(Error::InvalidInput(format!(
                "an API key with prefix {} exists",
                key.prefix
            )));
        };
        Ok(KeyRecord {
            id: id as u64,
            prefix: key.prefix,
            name: key.name,
            scopes: key.scopes,
            hash: key.hash,
            rate_per_second: key.rate_per_second,
            created_at: now,
            revoked_at: None,
        })
    }

    fn keys(&self) -> Result<Vec<KeyRecord>> {
        self.read(|db| {
            db.query(
                "SELECT id, prefix, name, scopes, hash, rate_per_second, created_at, revoked_at
                 FROM api_keys ORDER BY id",
                &[],
            )?
            .iter()
            .map(key_from_row)
            .collect()
        })
    }

    fn revoke_key(&self, prefix: &str) -> Result<Option<KeyRecord>> {
        let now = now_ms();
        self.write(|db| {
            db.execute(
                "UPDATE api_keys SET revoked_at = $2 WHERE prefix = $1 AND revoked_at IS NULL",
                &[&prefix, &now],
            )?;
            db.query_opt(
                "SELECT id, prefix, name, scopes, hash, rate_per_second, created_at, revoked_at
                 FROM api_keys WHERE prefix = $1",
                &[&prefix],
            )?
            .map(|r| key_from_row(&r))
            .transpose()
        })
    }

    fn audit(&self, entry: NewAudit) -> Result<()> {
        let now = now_ms();
        let detail = entry.detail.as_ref().map(json_text);
        self.write(|db| {
            db.execute(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
                &[&now, &entry.actor, &entry.action, &entry.target, &detail],
            )?;
            Ok(())
        })
    }

    fn audit_log(&self, before: Option<u64>, limit: usize) -> Result<Page<AuditEntry>> {
        let before = before.map_or(i64::MAX, seq_i64);
        self.read(|db| {
            let rows = db.query(
                "SELECT seq, at, actor, action, target, detail FROM audit
                 WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                &[&before, &to_i64(limit).saturating_add(1)],
            )?;
            let more = rows.len() > limit;
            let items = rows
                .iter()
                .take(limit)
                .map(|r| {
                    let detail: Option<String> = r.get(5);
                    Ok(AuditEntry {
                        seq: r.get::<_, i64>(0) as u64,
                        at: r.get(1),
                        actor: r.get(2),
                        action: r.get(3),
                        target: r.get(4),
                        detail: detail.map(|d| parse_json(&d, "audit detail")).transpose()?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let next = if more {
                items.last().map(|e| e.seq)
            } else {
                None
            };
            Ok(Page { items, next })
        })
    }

    fn secret(&self, name: &str, fresh: [u8; 32]) -> Result<[u8; 32]> {
        let v: Vec<u8> = self.write(|db| {
            db.execute(
                "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &&fresh[..]],
            )?;
            Ok(db
                .query_one("SELECT value FROM secrets WHERE name = $1", &[&name])?
                .get(0))
        })?;
        secret_bytes(name, v)
    }

    fn stored_secret(&self, name: &str) -> Result<Option<[u8; 32]>> {
        self.read(|db| {
            db.query_opt("SELECT value FROM secrets WHERE name = $1", &[&name])?
                .map(|r| secret_bytes(name, r.get(0)))
                .transpose()
        })
    }

    fn delete_secret(&self, name: &str) -> Result<bool> {
        let deleted =
            self.write(|db| Ok(db.execute("DELETE FROM secrets WHERE name = $1", &[&name])? > 0))?;
        self.purge_deleted()?;
        Ok(deleted)
    }

    fn open_session(&self, session: SessionRecord, limits: SessionLimits) -> Result<()> {
        let now = session.created_at;
        self.write(|db| {
            db.execute(
                "DELETE FROM dashboard_sessions WHERE last_seen <= $1 OR created_at <= $2",
                &[&(now - limits.idle), &(now - limits.absolute)],
            )?;
            let live: i64 = db
                .query_one("SELECT COUNT(*) FROM dashboard_sessions", &[])?
                .get(0);
            let over = (live + 1 - limits.max as i64).max(0);
            db.execute(
                "DELETE FROM dashboard_sessions WHERE lookup IN (SELECT lookup FROM \
                 dashboard_sessions ORDER BY created_at, lookup LIMIT $1)",
                &[&over],
            )?;
            db.execute(
                "INSERT INTO dashboard_sessions (lookup, prefix, key_digest, csrf, created_at, \
                 last_seen) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &&session.lookup[..],
                    &session.prefix,
                    &&session.key_digest[..],
                    &session.csrf,
                    &session.created_at,
                    &session.last_seen,
                ],
            )?;
            Ok(())
        })
    }

    fn session(&self, lookup: &[u8; 32]) -> Result<Option<SessionRecord>> {
        let row = self.read(|db| {
            db.query_opt(
                "SELECT prefix, key_digest, csrf, created_at, last_seen FROM dashboard_sessions \
                 WHERE lookup = $1",
                &[&&lookup[..]],
            )
        })?;
        row.map(|r| session_from_row(*lookup, &r)).transpose()
    }

    fn set_session_seen(&self, lookup: &[u8; 32], at: Millis) -> Result<()> {
        self.write(|db| {
            db.execute(
                "UPDATE dashboard_sessions SET last_seen = $2 WHERE lookup = $1",
                &[&&lookup[..], &at],
            )?;
            Ok(())
        })
    }

    fn close_session(&self, lookup: &[u8; 32]) -> Result<()> {
        self.write(|db| {
            db.execute(
                "DELETE FROM dashboard_sessions WHERE lookup = $1",
                &[&&lookup[..]],
            )?;
            Ok(())
        })
    }
}
