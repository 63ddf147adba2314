//! [`crate::ModelStore`] on PostgreSQL: model versions live in the database, not beside it
//! (several servers sharing one database then share their models, and a backup of the database
//! holds them).
//!
//! `model_versions` numbers versions from an identity sequence (numbers only grow, even after
//! deletions); `model_files` holds each file in chunks of [`CHUNK`] bytes (`BYTEA` is limited
//! to 1 GiB, and a chunk at a time keeps the messages and their buffers small), stored without
//! compression (factors are floats, which do not compress). The active version is the
//! `active_model` row of `meta` (0: none); every operation that reads or changes it locks that
//! row first, so activating and deleting a version cannot interleave.
//!
//! A version is saved, and a file rewritten, in one transaction: readers see all of it or none.

use super::*;
use crate::ModelRecord;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE model_versions (
    version BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meta TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE model_files (
    version BIGINT NOT NULL REFERENCES model_versions (version) ON DELETE CASCADE,
    name TEXT COLLATE "C" NOT NULL,
    chunk BIGINT NOT NULL,
    bytes BYTEA NOT NULL,
    PRIMARY KEY (version, name, chunk)
);
ALTER TABLE model_files ALTER COLUMN bytes SET STORAGE EXTERNAL;
"#;

/// Size of one stored piece of a model file.
const CHUNK: usize = 8 << 20;

/// The file name rules of the directory backend ([`crate::models`]), so that a model moves
/// between backends unchanged: ASCII letters, digits, `.`, `_` and `-`, not starting with a dot,
/// and not `meta.json`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "meta.json"
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{name:?} is not a valid model file name"
        )))
    }
}

/// Stores `bytes` as file `name` of `version`, in chunks (an empty file is one empty chunk).
fn write_file(db: &mut Db<'_, '_>, version: i64, name: &str, bytes: &[u8]) -> Result<()> {
    let mut chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for (i, chunk) in chunks.into_iter().enumerate() {
        db.execute(
            "INSERT INTO model_files (version, name, chunk, bytes) VALUES ($1, $2, $3, $4)",
            &[&version, &name, &(i as i64), &chunk],
        )?;
    }
    Ok(())
}

/// The active version (0 when none), locking its row until the transaction ends.
fn lock_active(db: &mut Db<'_, '_>) -> Result<i64> {
    Ok(db
        .query_one(
            "SELECT value FROM meta WHERE key = 'active_model' FOR UPDATE",
            &[],
        )?
        .get(0))
}

fn exists(db: &mut Db<'_, '_>, version: i64) -> Result<bool> {
    Ok(db
        .query_opt(
            "SELECT 1 FROM model_versions WHERE version = $1 FOR KEY SHARE",
            &[&version],
        )?
        .is_some())
}

fn version_i64(version: u64) -> Result<i64> {
    i64::try_from(version).map_err(|_| Error::UnknownModel(version))
}

impl crate::ModelStore for PgStore {
    fn save_model(&self, files: &[(&str, &[u8])], meta: &serde_json::Value) -> Result<u64> {
        for (name, _) in files {
            check_name(name)?;
        }
        // A name given twice keeps its last bytes, as a second write of the file would.
        let mut by_name: BTreeMap<&str, &[u8]> = BTreeMap::new();
        for (name, bytes) in files {
            by_name.insert(name, bytes);
        }
        let meta = json_text(meta);
        let now = now_ms();
        let version = self.write(|db| {
            let version: i64 = db
                .query_one(
                    "INSERT INTO model_versions (meta, created_at) VALUES ($1, $2) RETURNING version",
                    &[&meta, &now],
                )?
                .get(0);
            for (name, bytes) in &by_name {
                write_file(db, version, name, bytes)?;
            }
            Ok(version)
        })?;
        Ok(version as u64)
    }

    fn list_models(&self) -> Result<Vec<ModelRecord>> {
        self.read(|db| {
            let active: i64 = db
                .query_one("SELECT value FROM meta WHERE key = 'active_model'", &[])?
                .get(0);
            let mut files: HashMap<i64, (Vec<String>, u64)> = HashMap::new();
            for r in db.query(
                "SELECT version, name, sum(octet_length(bytes))::int8 FROM model_files
                 GROUP BY version, name ORDER BY version, name",
                &[],
            )? {
                let entry = files.entry(r.get(0)).or_default();
                entry.0.push(r.get(1));
                entry.1 += r.get::<_, i64>(2) as u64;
            }
            db.query(
                "SELECT version, meta FROM model_versions ORDER BY version",
                &[],
            )?
            .iter()
            .map(|r| {
                let version: i64 = r.get(0);
                let meta_text: String = r.get(1);
                let (names, bytes) = files.remove(&version).unwrap_or_default();
                Ok(ModelRecord {
                    version: version as u64,
                    meta: parse_json(&meta_text, &format!("model version {version} metadata"))?,
                    active: version == active,
                    bytes: bytes + meta_text.len() as u64,
                    files: names,
                })
            })
            .collect()
        })
    }

    fn read_model_file(&self, version: u64, name: &str) -> Result<Vec<u8>> {
        check_name(name)?;
        let v = version_i64(version)?;
        // One snapshot for all the chunks, so that a concurrent rewrite is seen whole or not.
        self.write(|db| {
            db.batch("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
            let found = db.query_opt("SELECT 1 FROM model_versions WHERE version = $1", &[&v])?;
            if found.is_none() {
                return Err(Error::UnknownModel(version));
            }
            let size = db.query_one(
                "SELECT count(*), coalesce(sum(octet_length(bytes)), 0)::int8 FROM model_files
                 WHERE version = $1 AND name = $2",
                &[&v, &name],
            )?;
            let (chunks, size): (i64, i64) = (size.get(0), size.get(1));
            if chunks == 0 {
                return Err(Error::Io {
                    path: format!("model_files/{version}/{name}").into(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such file in this model version",
                    ),
                });
            }
            let mut out = Vec::with_capacity(size as usize);
            for chunk in 0..chunks {
                let row = db.query_one(
                    "SELECT bytes FROM model_files WHERE version = $1 AND name = $2 AND chunk = $3",
                    &[&v, &name, &chunk],
                )?;
                out.extend_from_slice(row.get::<_, &[u8]>(0));
            }
            Ok(out)
        })
    }

    fn activate_model(&self, version: u64) -> Result<()> {
        let v = version_i64(version)?;
        self.write(|db| {
            lock_active(db)?;
            if !exists(db, v)? {
                return Err(Error::UnknownModel(version));
            }
            db.execute(
                "UPDATE meta SET value = $1 WHERE key = 'active_model'",
                &[&v],
            )?;
            self.announcer.notify(db, &[crate::Change::Model])
        })
    }

    fn active_model(&self) -> Result<Option<u64>> {
        self.read(|db| {
            let v: i64 = db
                .query_one("SELECT value FROM meta WHERE key = 'active_model'", &[])?
                .get(0);
            Ok((v != 0).then_some(v as u64))
        })
    }

    fn prune_models(&self, keep: usize) -> Result<Vec<u64>> {
        self.write(|db| {
            let active = lock_active(db)?;
            let versions: Vec<i64> = db
                .query("SELECT version FROM model_versions ORDER BY version", &[])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let cut = versions.len().saturating_sub(keep);
            let doomed: Vec<i64> = versions[..cut]
                .iter()
                .copied()
                .filter(|&v| v != active)
                .collect();
            if !doomed.is_empty() {
                db.execute(
                    "DELETE FROM model_versions WHERE version = ANY($1)",
                    &[&doomed],
                )?;
            }
            Ok(doomed.into_iter().map(|v| v as u64).collect())
        })
    }

    fn delete_model(&self, version: u64) -> Result<()> {
        let v = version_i64(version)?;
        self.write(|db| {
            if lock_active(db)? == v {
                return Err(Error::InvalidInput(format!(
                    "model version {version} is active and cannot be deleted"
                )));
            }
            if db.execute("DELETE FROM model_versions WHERE version = $1", &[&v])? == 0 {
                return Err(Error::UnknownModel(version));
            }
            Ok(())
        })
    }

    fn rewrite_model_file(&self, version: u64, name: &str, bytes: &[u8]) -> Result<()> {
        check_name(name)?;
        let v = version_i64(version)?;
        self.write(|db| {
            if !exists(db, v)? {
                return Err(Error::UnknownModel(version));
            }
            db.execute(
                "DELETE FROM model_files WHERE version = $1 AND name = $2",
                &[&v, &name],
            )?;
            write_file(db, v, name, bytes)
        })
    }
}
