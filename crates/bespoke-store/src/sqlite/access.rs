//! [`crate::AccessStore`] on SQLite: the `api_keys`, `audit`, `secrets` and
//! `dashboard_sessions` tables.

use super::*;
use crate::{PrivacyStore, SessionLimits, SessionRecord};

/// Dashboard sessions, kept in the store so that any node knows them.
pub(super) const SESSIONS_MIGRATION: &str = r#"
CREATE TABLE dashboard_sessions (
    lookup BLOB PRIMARY KEY,
    prefix TEXT NOT NULL,
    key_digest BLOB NOT NULL,
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
) WITHOUT ROWID;
"#;

fn digest32(v: Vec<u8>, what: &str) -> Result<[u8; 32]> {
    v.try_into()
        .map_err(|_| Error::Corrupt(format!("a session's {what} is not 32 bytes")))
}

impl crate::AccessStore for SqliteStore {
    fn insert_key(&self, key: NewKey) -> Result<KeyRecord> {
        let now = now_ms();
        self.exec(move |c| {
            let inserted = c
                .prepare_cached(
                    "INSERT INTO api_keys (prefix, name, scopes, hash, rate_per_second, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (prefix) DO NOTHING",
                )?
                .execute(params![
                    key.prefix,
                    key.name,
                    json_text(&key.scopes),
                    &key.hash[..],
                    key.rate_per_second,
                    now
                ])?;
            if inserted == 0 {
                return Err(Error::InvalidInput(format!(
                    "an API key with prefix {} exists",
                    key.prefix
                )));
            }
            Ok(KeyRecord {
                id: c.last_insert_rowid() as u64,
                prefix: key.prefix,
                name: key.name,
                scopes: key.scopes,
                hash: key.hash,
                rate_per_second: key.rate_per_second,
                created_at: now,
                revoked_at: None,
            })
        })
    }

    fn keys(&self) -> Result<Vec<KeyRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, prefix, name, scopes, hash, rate_per_second, created_at, revoked_at \
                 FROM api_keys ORDER BY id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, Option<f64>>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(
                    |(id, prefix, name, scopes, hash, rate_per_second, created_at, revoked_at)| {
                        Ok(KeyRecord {
                            id: id as u64,
                            prefix,
                            name,
                            scopes: parse_json(&scopes, "key scopes")?,
                            hash: hash.try_into().map_err(|_| {
                                Error::Corrupt("a key digest is not 32 bytes".into())
                            })?,
                            rate_per_second,
                            created_at,
                            revoked_at,
                        })
                    },
                )
                .collect()
        })
    }

    fn revoke_key(&self, prefix: &str) -> Result<Option<KeyRecord>> {
        let p = prefix.to_owned();
        let now = now_ms();
        self.exec(move |c| {
            c.prepare_cached(
                "UPDATE api_keys SET revoked_at = ?2 WHERE prefix = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![p, now])?;
            Ok(())
        })?;
        Ok(self.keys()?.into_iter().find(|k| k.prefix == prefix))
    }

    fn audit(&self, entry: NewAudit) -> Result<()> {
        let now = now_ms();
        self.exec(move |c| {
            c.prepare_cached(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                now,
                entry.actor,
                entry.action,
                entry.target,
                entry.detail.as_ref().map(json_text)
            ])?;
            Ok(())
        })
    }

    fn audit_log(&self, before: Option<u64>, limit: usize) -> Result<Page<AuditEntry>> {
        self.read(|c| {
            let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
            let mut stmt = c.prepare_cached(
                "SELECT seq, at, actor, action, target, detail FROM audit WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![before, limit as i64 + 1])?;
            let mut items = Vec::new();
            let mut more = false;
            while let Some(r) = rows.next()? {
                if items.len() == limit {
                    more = true;
                    break;
                }
                let detail: Option<String> = r.get(5)?;
                items.push(AuditEntry {
                    seq: r.get::<_, i64>(0)? as u64,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: detail.map(|d| parse_json(&d, "audit detail")).transpose()?,
                });
            }
            let next = if more { items.last().map(|e: &AuditEntry| e.seq) } else { None };
            Ok(Page { items, next })
        })
    }

    fn secret(&self, name: &str, fresh: [u8; 32]) -> Result<[u8; 32]> {
        let name = name.to_owned();
        self.exec(move |c| {
            c.prepare_cached(
                "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?
            .execute(params![name, &fresh[..]])?;
            let v: Vec<u8> = c
                .prepare_cached("SELECT value FROM secrets WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))?;
            v.try_into()
                .map_err(|_| Error::Corrupt(format!("secret {name} is not 32 bytes")))
        })
    }

    fn stored_secret(&self, name: &str) -> Result<Option<[u8; 32]>> {
        self.read(|c| {
            let v: Option<Vec<u8>> = c
                .prepare_cached("SELECT value FROM secrets WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?;
            v.map(|v| {
                v.try_into()
                    .map_err(|_| Error::Corrupt(format!("secret {name} is not 32 bytes")))
            })
            .transpose()
        })
    }

    fn delete_secret(&self, name: &str) -> Result<bool> {
        let owned = name.to_owned();
        let deleted = self.exec_single(move |c| {
            Ok(c.prepare_cached("DELETE FROM secrets WHERE name = ?1")?
                .execute([owned])?
                > 0)
        })?;
        self.purge_deleted()?;
        Ok(deleted)
    }

    fn open_session(&self, session: SessionRecord, limits: SessionLimits) -> Result<()> {
        self.exec(move |c| {
            let now = session.created_at;
            c.prepare_cached(
                "DELETE FROM dashboard_sessions WHERE last_seen <= ?1 OR created_at <= ?2",
            )?
            .execute(params![now - limits.idle, now - limits.absolute])?;
            let live: i64 =
                c.query_row("SELECT COUNT(*) FROM dashboard_sessions", [], |r| r.get(0))?;
            let over = (live + 1 - limits.max as i64).max(0);
            c.prepare_cached(
                "DELETE FROM dashboard_sessions WHERE lookup IN (SELECT lookup FROM \
                 dashboard_sessions ORDER BY created_at, lookup LIMIT ?1)",
            )?
            .execute([over])?;
            c.prepare_cached(
                "INSERT INTO dashboard_sessions (lookup, prefix, key_digest, csrf, created_at, \
                 last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                &session.lookup[..],
                session.prefix,
                &session.key_digest[..],
                session.csrf,
                session.created_at,
                session.last_seen
            ])?;
            Ok(())
        })
    }

    fn session(&self, lookup: &[u8; 32]) -> Result<Option<SessionRecord>> {
        let found = self.read(|c| {
            c.prepare_cached(
                "SELECT prefix, key_digest, csrf, created_at, last_seen FROM dashboard_sessions \
                 WHERE lookup = ?1",
            )?
            .query_row([&lookup[..]], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .optional()
            .map_err(Error::from)
        })?;
        found
            .map(|(prefix, key_digest, csrf, created_at, last_seen)| {
                Ok(SessionRecord {
                    lookup: *lookup,
                    prefix,
                    key_digest: digest32(key_digest, "key digest")?,
                    csrf,
                    created_at,
                    last_seen,
                })
            })
            .transpose()
    }

    fn set_session_seen(&self, lookup: &[u8; 32], at: Millis) -> Result<()> {
        let lookup = *lookup;
        self.exec(move |c| {
            c.prepare_cached("UPDATE dashboard_sessions SET last_seen = ?2 WHERE lookup = ?1")?
                .execute(params![&lookup[..], at])?;
            Ok(())
        })
    }

    fn close_session(&self, lookup: &[u8; 32]) -> Result<()> {
        let lookup = *lookup;
        self.exec(move |c| {
            c.prepare_cached("DELETE FROM dashboard_sessions WHERE lookup = ?1")?
                .execute([&lookup[..]])?;
            Ok(())
        })
    }
}
