//! [`crate::PrivacyStore`] on PostgreSQL: the `erasures` table, `VACUUM` of the tables that
//! hold personal data, and an integrity check (consistency queries, plus `amcheck` when the
//! extension is installed).
//!
//! What `purge_deleted` does and does not reach is spelled out in `docs/postgres.md`: in short,
//! `VACUUM` removes deleted rows and their index entries so that no query, and no reuse of the
//! table, can bring them back, but PostgreSQL does not zero the freed bytes, and the WAL, its
//! archive, replicas and backups keep their own copies until they are recycled.

use super::*;

/// The tables `purge_deleted` vacuums: every one from which an erasure or a retention run
/// deletes personal data (user keys and attributes, events, blocks, memberships, exposures,
/// decisions and rewards, learner checkpoints, secrets, scrubbed model files).
const PERSONAL_TABLES: &str = "users, events, item_blocks, segment_members, segment_sizes, \
     experiment_exposures, bandit_decisions, bandit_rewards, bandit_checkpoints, secrets, \
     erasures, model_versions, model_files, audit";

/// Consistency checks: each counts rows that break an invariant the backend keeps.
const CHECKS: &[(&str, &str)] = &[
    (
        "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = e.user_id)",
        "events refer to a user that does not exist",
    ),
    (
        "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = e.item_id)",
        "events refer to an item that does not exist",
    ),
    (
        "SELECT count(*) FROM events WHERE seq >= (SELECT value FROM meta WHERE key = 'next_event_seq')",
        "events have a sequence number the counter would hand out again",
    ),
    (
        "SELECT count(*) FROM item_embeddings e LEFT JOIN embedding_spaces s ON s.name = e.name
         WHERE s.dim IS NULL OR octet_length(e.vector) <> 4 * s.dim",
        "item embeddings do not have their space's dimension",
    ),
    (
        "SELECT 4 - count(*) FROM meta
         WHERE key IN ('next_event_seq', 'reward_lock', 'catalog_epoch', 'active_model')",
        "bookkeeping rows of the meta table are missing",
    ),
    (
        "SELECT count(*) FROM meta m WHERE m.key = 'active_model' AND m.value <> 0
         AND NOT EXISTS (SELECT 1 FROM model_versions v WHERE v.version = m.value)",
        "the active model version does not exist",
    ),
];

/// `amcheck`'s verdict on every B-tree index (`bt_index_check` with `heapallindexed`) and every
/// table (`verify_heapam`, amcheck 1.3 and later) of the store's schema, when the extension is
/// installed (in any schema) and callable. Returns `None` when it is not.
fn amcheck(db: &mut Db<'_, '_>) -> Result<Option<Vec<String>>> {
    let Some(ext) = db.query_opt(
        "SELECT n.nspname, e.extversion FROM pg_extension e
         JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'",
        &[],
    )?
    else {
        return Ok(None);
    };
    let (schema, version): (String, String) = (ext.get(0), ext.get(1));
    let schema = format!("\"{}\"", schema.replace('"', "\"\""));
    let heap_checks = version.as_str() >= "1.3";
    let mut problems = Vec::new();
    let relations = db.query(
        "SELECT c.oid, c.relname, c.relkind::text FROM pg_class c
         LEFT JOIN pg_am a ON a.oid = c.relam
         WHERE c.relnamespace = current_schema()::regnamespace
           AND (c.relkind = 'r' OR (c.relkind = 'i' AND a.amname = 'btree'))
         ORDER BY c.relname",
        &[],
    )?;
    for r in relations {
        let (oid, name, kind): (u32, String, String) = (r.get(0), r.get(1), r.get(2));
        let outcome = if kind == "i" {
            db.query_unprepared(
                &format!("SELECT {schema}.bt_index_check($1::oid::regclass, true)"),
                &[&oid],
            )
            .map(|_| Vec::new())
        } else if heap_checks {
            db.query_unprepared(
                &format!(
                    "SELECT blkno, offnum, attnum, msg FROM {schema}.verify_heapam($1::oid::regclass)"
                ),
                &[&oid],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        let (blk, off, att, msg): (i64, Option<i32>, Option<i32>, String) =
                            (r.get(0), r.get(1), r.get(2), r.get(3));
                        format!("table {name}: block {blk}, item {off:?}, attribute {att:?}: {msg}")
                    })
                    .collect()
            })
        } else {
            Ok(Vec::new())
        };
        match outcome {
            Ok(found) => problems.extend(found),
            Err(e)
                if PgError::code_of(&e)
                    == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                tracing::warn!(
                    "amcheck is installed but this role may not run it; checked consistency only"
                );
                return Ok(None);
            }
            Err(Error::Backend(e)) => problems.push(format!("{name}: {e}")),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(problems))
}

impl crate::PrivacyStore for PgStore {
    fn save_erasure(
        &self,
        id: &str,
        requested_at: Millis,
        receipt: &serde_json::Value,
    ) -> Result<()> {
        let receipt = json_text(receipt);
        self.write(|db| {
            db.execute(
                "INSERT INTO erasures (id, requested_at, receipt) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET receipt = excluded.receipt",
                &[&id, &requested_at, &receipt],
            )?;
            self.announcer.notify(db, &[crate::Change::Erasures])
        })
    }

    fn erasure(&self, id: &str) -> Result<Option<serde_json::Value>> {
        self.read(|db| {
            db.query_opt("SELECT receipt FROM erasures WHERE id = $1", &[&id])?
                .map(|r| parse_json(r.get(0), "erasure receipt"))
                .transpose()
        })
    }

    fn erasures(&self) -> Result<Vec<(String, serde_json::Value)>> {
        self.read(|db| {
            db.query(
                "SELECT id, receipt FROM erasures ORDER BY requested_at, id",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.get(0), parse_json(r.get(1), "erasure receipt")?)))
            .collect()
        })
    }

    /// Runs `VACUUM (INDEX_CLEANUP ON)` (or `VACUUM FULL` with
    /// [`PgOptions::vacuum_full`](crate::PgOptions#structfield.vacuum_full)) on every table
    /// that holds personal data. Index cleanup is forced: by default PostgreSQL may skip it when
    /// few rows died, which would leave deleted keys in the indexes. It cannot remove rows that
    /// a transaction older than the deletion can still see; see `docs/postgres.md`.
    ///
    /// PostgreSQL skips, with only a warning, a table the role may not vacuum (neither its
    /// owner, nor the database's owner, nor a superuser): that would be a purge that purged
    /// nothing, so this fails instead, naming the tables.
    fn purge_deleted(&self) -> Result<()> {
        let sql = if self.options.vacuum_full {
            format!("VACUUM FULL {PERSONAL_TABLES}")
        } else {
            format!("VACUUM (INDEX_CLEANUP ON) {PERSONAL_TABLES}")
        };
        let tables: Vec<&str> = PERSONAL_TABLES.split(", ").map(str::trim).collect();
        self.read(|db| {
            let refused: Vec<String> = db
                .query(
                    "SELECT c.relname::text FROM pg_class c
                     WHERE c.relnamespace = current_schema()::regnamespace
                       AND c.relname = ANY($1)
                       AND NOT pg_has_role(current_user, c.relowner, 'USAGE')
                       AND NOT pg_has_role(current_user,
                               (SELECT datdba FROM pg_database
                                WHERE datname = current_database()), 'USAGE')
                     ORDER BY 1",
                    &[&tables],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !refused.is_empty() {
                return Err(Error::Backend(
                    format!(
                        "cannot purge deleted data: this role may not VACUUM {} (run the store as their owner)",
                        refused.join(", ")
                    )
                    .into(),
                ));
            }
            db.batch(&sql)
        })
    }

    /// Consistency queries over the store's invariants, then `amcheck` on every index and table
    /// of the schema when the extension is installed and callable (see `docs/postgres.md`).
    fn integrity_check(&self) -> Result<Vec<String>> {
        self.read(|db| {
            let mut problems = Vec::new();
            for (sql, what) in CHECKS {
                let n: i64 = db.query_one(sql, &[])?.get(0);
                if n > 0 {
                    problems.push(format!("{n} {what}"));
                }
            }
            if let Some(found) = amcheck(db)? {
                problems.extend(found);
            } else {
                tracing::debug!("amcheck is not available; checked consistency only");
            }
            Ok(problems)
        })
    }
}
