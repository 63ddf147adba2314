//! Moving a store from SQLite to PostgreSQL: [`sqlite_to_postgres`] copies everything an
//! SQLite data directory holds into an empty [`PgStore`] schema, ids and all, then reads the
//! copy back and compares it with the source, table by table, before it commits.
//!
//! ```no_run
//! use bespoke_store::PgOptions;
//! use bespoke_store::migrate::sqlite_to_postgres;
//!
//! let target = PgOptions::new("postgres://bespoke@127.0.0.1/bespoke").schema("bespoke");
//! let report = sqlite_to_postgres(std::path::Path::new("data"), target).unwrap();
//! assert!(report.committed, "{:?}", report.mismatches().collect::<Vec<_>>());
//! ```
//!
//! What is copied, and how:
//!
//! - Every table of the SQLite schema this binary creates ([`TABLES`], plus the counters of
//!   `meta`) goes to the PostgreSQL table of the same name, row for row, with every id as it
//!   was: user and item ids, event sequence numbers, key ids, audit and decision numbers.
//!   Model artifacts refer to user and item ids, so a model trained on SQLite serves unchanged.
//!   The few representation differences are converted: 0/1 integers to booleans, an event's
//!   8-byte fingerprint blob to its `BIGINT`, client event ids to PostgreSQL's encoding,
//!   `bandit_decisions.user` to `user_key`.
//! - Model versions, which SQLite keeps as files (`<data_dir>/models/<version>/`), go to
//!   `model_versions` and `model_files` under the same version numbers, and `ACTIVE` to
//!   `meta.active_model`.
//! - The store's tag of server-issued event ids (`meta.issued_id_tag`) is copied, so every
//!   server-issued event id reads back the same. The target's counters are moved past the
//!   copied ids (`next_event_seq`, and every identity sequence to SQLite's high-water mark,
//!   `sqlite_sequence` included), so no id is ever handed out twice, not even a deleted one's.
//!
//! How it stays correct:
//!
//! - The source is opened read-only and read in one read transaction: a consistent snapshot.
//!   It should be stopped (no server writing to it). A change committed to it during the copy
//!   (`PRAGMA data_version`), or to its model directory, fails the migration, since those writes
//!   would be missing from the target.
//! - The target is opened with [`PgStore::open`] (which creates the schema and applies
//!   migrations), then everything happens in one transaction that first locks every table and
//!   refuses a target holding any row ([`Error::InvalidInput`] naming the table). Rows go in
//!   with binary `COPY`, streamed: neither side is held in memory (a model file is, one at a
//!   time).
//! - Verification, still inside that transaction: each table is read back in key order and
//!   hashed (SHA-256 over a canonical, typed encoding of every value; see [`TableReport`]),
//!   exactly as its source rows were hashed while they were read. Any difference in a count or
//!   a checksum rolls the whole transaction back (the target stays empty) and is reported with
//!   [`Report::committed`] false.
//! - A table on either side that this module does not know (a newer schema) is refused before
//!   anything is copied.
//!
//! Not copied, because it is not in the store: the audit key file (`<data_dir>.audit-key`, or
//! `privacy.audit_secret_file`), which the server keeps beside the data directory whatever the
//! backend.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use postgres::Transaction;
use postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutIter};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use crate::event_id::format_uuid;
use crate::models::{ModelDir, ModelRecord};
use crate::postgres::{decode_stored_event_id, encode_event_id};
use crate::{Error, PgOptions, PgStore, Result};

/// How a column's values are read on each side and written to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `INTEGER` / `BIGINT`.
    Int,
    /// `REAL` / `DOUBLE PRECISION`, compared bit for bit.
    Real,
    /// `TEXT` / `TEXT`.
    Text,
    /// `BLOB` / `BYTEA`.
    Blob,
    /// `INTEGER` 0 or 1 / `BOOLEAN`.
    Bool,
    /// An event's client id: a 16-byte blob (canonical UUID) or text on SQLite, `BYTEA` in
    /// PostgreSQL's encoding; `NULL` (server-issued) on both.
    EventId,
    /// An event's fingerprint: 8 bytes on SQLite, the same bytes as a little-endian `BIGINT`.
    Fingerprint,
}

impl Kind {
    fn pg_type(self) -> Type {
        match self {
            Kind::Int | Kind::Fingerprint => Type::INT8,
            Kind::Real => Type::FLOAT8,
            Kind::Text => Type::TEXT,
            Kind::Blob | Kind::EventId => Type::BYTEA,
            Kind::Bool => Type::BOOL,
        }
    }
}

/// A column: its name on SQLite, its name on PostgreSQL, its kind.
pub type Column = (&'static str, &'static str, Kind);

/// Where a table's identity sequence must continue from on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// None: the table has no generated key.
    None,
    /// `INTEGER PRIMARY KEY AUTOINCREMENT` on SQLite: past `sqlite_sequence`'s high-water mark
    /// for the table (ids of deleted rows included) and past the largest id.
    AutoIncrement(&'static str),
    /// A plain row id on SQLite: past the largest one.
    Max(&'static str),
}

/// A table copied row for row: same name on both sides.
#[derive(Debug)]
pub struct Table {
    /// The table's name.
    pub name: &'static str,
    /// Its columns.
    pub columns: &'static [Column],
    /// The primary key's columns, the order rows are copied and hashed in.
    pub key: &'static str,
    /// Its generated key, if any.
    pub identity: Identity,
}

use Kind::*;

/// Every SQLite table copied row for row, in an order that satisfies PostgreSQL's foreign keys
/// (users and items before what refers to them). `meta` and the model directory are copied
/// apart ([`sqlite_to_postgres`]).
pub const TABLES: &[Table] = &[
    Table {
        name: "users",
        columns: &[
            ("id", "id", Int),
            ("key", "key", Text),
            ("attributes", "attributes", Text),
            ("consent_personalization", "consent_personalization", Bool),
            ("consent_training", "consent_training", Bool),
            ("consent_marketing", "consent_marketing", Bool),
            ("created_at", "created_at", Int),
            ("updated_at", "updated_at", Int),
        ],
        key: "id",
        identity: Identity::AutoIncrement("id"),
    },
    Table {
        name: "items",
        columns: &[
            ("id", "id", Int),
            ("key", "key", Text),
            ("categories", "categories", Text),
            ("text", "text", Text),
            ("numeric", "numeric", Text),
            ("attributes", "attributes", Text),
            ("available", "available", Bool),
            ("created_at", "created_at", Int),
            ("updated_at", "updated_at", Int),
        ],
        key: "id",
        identity: Identity::AutoIncrement("id"),
    },
    Table {
        name: "embedding_spaces",
        columns: &[("name", "name", Text), ("dim", "dim", Int)],
        key: "name",
        identity: Identity::None,
    },
    Table {
        name: "item_embeddings",
        columns: &[
            ("item_id", "item_id", Int),
            ("name", "name", Text),
            ("vector", "vector", Blob),
        ],
        key: "item_id, name",
        identity: Identity::None,
    },
    Table {
        name: "events",
        columns: &[
            ("seq", "seq", Int),
            ("event_id", "event_id", EventId),
            ("user_id", "user_id", Int),
            ("item_id", "item_id", Int),
            ("kind", "kind", Text),
            ("value", "value", Real),
            ("ts", "ts", Int),
            ("context", "context", Text),
            ("fingerprint", "fingerprint", Fingerprint),
        ],
        key: "seq",
        identity: Identity::None,
    },
    Table {
        name: "api_keys",
        columns: &[
            ("id", "id", Int),
            ("prefix", "prefix", Text),
            ("name", "name", Text),
            ("scopes", "scopes", Text),
            ("hash", "hash", Blob),
            ("rate_per_second", "rate_per_second", Real),
            ("created_at", "created_at", Int),
            ("revoked_at", "revoked_at", Int),
        ],
        key: "id",
        identity: Identity::AutoIncrement("id"),
    },
    Table {
        name: "audit",
        columns: &[
            ("seq", "seq", Int),
            ("at", "at", Int),
            ("actor", "actor", Text),
            ("action", "action", Text),
            ("target", "target", Text),
            ("detail", "detail", Text),
        ],
        key: "seq",
        identity: Identity::AutoIncrement("seq"),
    },
    Table {
        name: "erasures",
        columns: &[
            ("id", "id", Text),
            ("requested_at", "requested_at", Int),
            ("receipt", "receipt", Text),
        ],
        key: "id",
        identity: Identity::None,
    },
    Table {
        name: "secrets",
        columns: &[("name", "name", Text), ("value", "value", Blob)],
        key: "name",
        identity: Identity::None,
    },
    Table {
        name: "dashboard_sessions",
        columns: &[
            ("lookup", "lookup", Blob),
            ("prefix", "prefix", Text),
            ("key_digest", "key_digest", Blob),
            ("csrf", "csrf", Text),
            ("created_at", "created_at", Int),
            ("last_seen", "last_seen", Int),
        ],
        key: "lookup",
        identity: Identity::None,
    },
    Table {
        name: "bandit_loops",
        columns: &[
            ("name", "name", Text),
            ("config", "config", Text),
            ("created_at", "created_at", Int),
            ("updated_at", "updated_at", Int),
        ],
        key: "name",
        identity: Identity::None,
    },
    Table {
        name: "bandit_decisions",
        columns: &[
            ("seq", "seq", Int),
            ("id", "id", Text),
            ("loop", "loop", Text),
            ("user", "user_key", Text),
            ("created_at", "created_at", Int),
            ("deadline", "deadline", Int),
            ("activated", "activated", Bool),
            ("settled", "settled", Bool),
            ("payload", "payload", Text),
        ],
        key: "seq",
        identity: Identity::Max("seq"),
    },
    Table {
        name: "bandit_rewards",
        columns: &[
            ("seq", "seq", Int),
            ("decision_seq", "decision_seq", Int),
            ("loop", "loop", Text),
            ("slot", "slot", Int),
            ("value", "value", Real),
            ("at", "at", Int),
            ("is_default", "is_default", Bool),
        ],
        key: "seq",
        identity: Identity::Max("seq"),
    },
    Table {
        name: "bandit_checkpoints",
        columns: &[
            ("loop", "loop", Text),
            ("reward_seq", "reward_seq", Int),
            ("model", "model", Blob),
            ("saved_at", "saved_at", Int),
        ],
        key: "loop",
        identity: Identity::None,
    },
    Table {
        name: "rules",
        columns: &[
            ("name", "name", Text),
            ("definition", "definition", Text),
            ("created_at", "created_at", Int),
            ("updated_at", "updated_at", Int),
        ],
        key: "name",
        identity: Identity::None,
    },
    Table {
        name: "item_blocks",
        columns: &[
            ("user_id", "user_id", Int),
            ("item_id", "item_id", Int),
            ("blocked", "blocked", Bool),
            ("at", "at", Int),
        ],
        key: "user_id, item_id",
        identity: Identity::None,
    },
    Table {
        name: "experiments",
        columns: &[
            ("name", "name", Text),
            ("definition", "definition", Text),
            ("created_at", "created_at", Int),
            ("updated_at", "updated_at", Int),
        ],
        key: "name",
        identity: Identity::None,
    },
    Table {
        name: "experiment_exposures",
        columns: &[
            ("experiment", "experiment", Text),
            ("user_key", "user_key", Text),
            ("variant", "variant", Int),
            ("at", "at", Int),
            ("credit_a", "credit_a", Int),
            ("credit_b", "credit_b", Int),
        ],
        key: "experiment, user_key",
        identity: Identity::None,
    },
    Table {
        name: "segments",
        columns: &[
            ("name", "name", Text),
            ("definition", "definition", Text),
            ("created_at", "created_at", Int),
            ("updated_at", "updated_at", Int),
        ],
        key: "name",
        identity: Identity::None,
    },
    Table {
        name: "segment_members",
        columns: &[
            ("segment", "segment", Text),
            ("user_id", "user_id", Int),
            ("score", "score", Real),
            ("at", "at", Int),
        ],
        key: "segment, user_id",
        identity: Identity::None,
    },
    Table {
        name: "segment_sizes",
        columns: &[
            ("segment", "segment", Text),
            ("at", "at", Int),
            ("size", "size", Int),
        ],
        key: "segment, at",
        identity: Identity::None,
    },
];

/// SQLite tables copied apart from [`TABLES`]: the counters (`meta`) and SQLite's own
/// `AUTOINCREMENT` bookkeeping (read for the high-water marks).
const SQLITE_SPECIAL: &[&str] = &["meta", "sqlite_sequence"];

/// PostgreSQL tables filled apart from [`TABLES`]: counters, migrations (written by
/// [`PgStore::open`]), and the model versions that SQLite keeps as files.
const PG_SPECIAL: &[&str] = &["meta", "schema_migrations", "model_versions", "model_files"];

/// The `meta` counters copied, in the order they are hashed.
const META_KEYS: [&str; 3] = ["next_event_seq", "issued_id_tag", "active_model"];

/// Size of one stored piece of a model file: `postgres/models.rs` stores files in pieces of
/// this size and reads back any number of them in order.
const MODEL_CHUNK: usize = 8 << 20;

/// What a migration did and found, table by table.
#[derive(Debug, Clone, serde::Serialize)]
#[must_use = "a migration whose copy did not match is rolled back: check `committed`"]
pub struct Report {
    /// Every table compared, in copy order (`meta`, `model_versions` and `model_files` last).
    pub tables: Vec<TableReport>,
    /// Whether the copy was committed: true exactly when every table matched.
    pub committed: bool,
    /// Wall-clock time of the whole migration (open, copy, verification, commit), in ms.
    pub elapsed_ms: u64,
    /// Rows copied over all tables.
    pub rows: u64,
}

impl Report {
    /// The tables whose count or checksum differed.
    pub fn mismatches(&self) -> impl Iterator<Item = &TableReport> {
        self.tables.iter().filter(|t| !t.ok)
    }

    /// Events copied per second of the whole migration.
    pub fn events_per_second(&self) -> f64 {
        let events = self
            .tables
            .iter()
            .find(|t| t.table == "events")
            .map_or(0, |t| t.source_rows);
        events as f64 / (self.elapsed_ms.max(1) as f64 / 1000.0)
    }
}

/// One table's comparison. A checksum is SHA-256 over the table's rows in primary-key order,
/// each value encoded by type: a tag byte (0 null, 1 integer, 2 float, 3 text, 4 bytes), then
/// the integer or the float's bits as 8 little-endian bytes, or the length as 8 little-endian
/// bytes and the bytes. Booleans are the integers 0 and 1, an event's client id its text, a
/// fingerprint its 8 bytes, a model's metadata its compact JSON text, on both sides alike.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableReport {
    /// The PostgreSQL table.
    pub table: String,
    /// Where its rows came from: the SQLite table, or the model directory.
    pub source: String,
    /// Rows read from the source.
    pub source_rows: u64,
    /// Rows read back from PostgreSQL.
    pub target_rows: u64,
    /// Hex SHA-256 of the source rows.
    pub source_checksum: String,
    /// Hex SHA-256 of the rows read back.
    pub target_checksum: String,
    /// Same count and same checksum.
    pub ok: bool,
}

/// One value in the form both sides are hashed in.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
}

/// Count and SHA-256 of a stream of rows.
#[derive(Default)]
struct Checksum {
    hash: Sha256,
    rows: u64,
}

impl Checksum {
    fn add(&mut self, row: &[Val]) {
        self.rows += 1;
        for v in row {
            match v {
                Val::Null => self.hash.update([0]),
                Val::Int(i) => {
                    self.hash.update([1]);
                    self.hash.update(i.to_le_bytes());
                }
                Val::Real(f) => {
                    self.hash.update([2]);
                    self.hash.update(f.to_bits().to_le_bytes());
                }
                Val::Text(s) => self.bytes(3, s.as_bytes()),
                Val::Bytes(b) => self.bytes(4, b),
            }
        }
    }

    fn bytes(&mut self, tag: u8, b: &[u8]) {
        self.hash.update([tag]);
        self.hash.update((b.len() as u64).to_le_bytes());
        self.hash.update(b);
    }

    fn finish(self) -> (u64, String) {
        let digest = self.hash.finalize();
        let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
        (self.rows, hex)
    }
}

fn corrupt(table: &str, column: &str, what: &str) -> Error {
    Error::Corrupt(format!("{table}.{column}: {what}"))
}

/// A source value in canonical form.
fn from_sqlite(v: ValueRef<'_>, kind: Kind, table: &str, column: &str) -> Result<Val> {
    let text = |b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|_| corrupt(table, column, "text is not UTF-8"))
    };
    Ok(match (kind, v) {
        (_, ValueRef::Null) => Val::Null,
        (Int, ValueRef::Integer(i)) => Val::Int(i),
        (Bool, ValueRef::Integer(i)) => Val::Int(i64::from(i != 0)),
        (Real, ValueRef::Real(f)) => Val::Real(f),
        (Real, ValueRef::Integer(i)) => Val::Real(i as f64),
        (Text, ValueRef::Text(t)) => Val::Text(text(t)?),
        (Blob, ValueRef::Blob(b)) => Val::Bytes(b.to_vec()),
        (EventId, ValueRef::Text(t)) => Val::Text(text(t)?),
        (EventId, ValueRef::Blob(b)) => {
            let b: [u8; 16] = b
                .try_into()
                .map_err(|_| corrupt(table, column, "event id blob is not 16 bytes"))?;
            Val::Text(format_uuid(&b))
        }
        (Fingerprint, ValueRef::Blob(b)) if b.len() == 8 => Val::Bytes(b.to_vec()),
        (kind, v) => {
            return Err(corrupt(
                table,
                column,
                &format!("a {:?} value where {kind:?} was expected", v.data_type()),
            ));
        }
    })
}

/// A canonical value as the parameter PostgreSQL stores for a column of `kind`.
fn to_pg(v: Val, kind: Kind) -> Box<dyn ToSql + Sync> {
    match (v, kind) {
        (Val::Null, Int | Fingerprint) => Box::new(None::<i64>),
        (Val::Null, Real) => Box::new(None::<f64>),
        (Val::Null, Text) => Box::new(None::<String>),
        (Val::Null, Blob | EventId) => Box::new(None::<Vec<u8>>),
        (Val::Null, Bool) => Box::new(None::<bool>),
        (Val::Int(i), Bool) => Box::new(i != 0),
        (Val::Int(i), _) => Box::new(i),
        (Val::Real(f), _) => Box::new(f),
        (Val::Text(s), EventId) => Box::new(encode_event_id(&s)),
        (Val::Text(s), _) => Box::new(s),
        (Val::Bytes(b), Fingerprint) => {
            let bytes: [u8; 8] = b
                .try_into()
                .expect("fingerprints are checked to be 8 bytes");
            Box::new(i64::from_le_bytes(bytes))
        }
        (Val::Bytes(b), _) => Box::new(b),
    }
}

/// A value read back from PostgreSQL in canonical form.
fn from_pg(
    row: &postgres::binary_copy::BinaryCopyOutRow,
    i: usize,
    kind: Kind,
) -> std::result::Result<Val, Box<dyn std::error::Error + Send + Sync>> {
    Ok(match kind {
        Int => row.try_get::<Option<i64>>(i)?.map_or(Val::Null, Val::Int),
        Fingerprint => row
            .try_get::<Option<i64>>(i)?
            .map_or(Val::Null, |f| Val::Bytes(f.to_le_bytes().to_vec())),
        Real => row.try_get::<Option<f64>>(i)?.map_or(Val::Null, Val::Real),
        Text => row
            .try_get::<Option<String>>(i)?
            .map_or(Val::Null, Val::Text),
        Blob => row
            .try_get::<Option<Vec<u8>>>(i)?
            .map_or(Val::Null, Val::Bytes),
        Bool => row
            .try_get::<Option<bool>>(i)?
            .map_or(Val::Null, |b| Val::Int(i64::from(b))),
        EventId => match row.try_get::<Option<&[u8]>>(i)? {
            None => Val::Null,
            Some(b) => Val::Text(decode_stored_event_id(b)?),
        },
    })
}

/// `e` with what was being done when it happened; the kinds callers tell apart are kept.
fn context(what: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |e| match e {
        Error::Backend(source) => Error::Backend(format!("{what}: {source}").into()),
        Error::Corrupt(m) => Error::Corrupt(format!("{what}: {m}")),
        other => other,
    }
}

/// The source: one read-only connection holding one read transaction, and the model files.
struct Source {
    conn: Connection,
    data_dir: std::path::PathBuf,
    models: ModelDir,
    /// `PRAGMA data_version` when the snapshot began.
    data_version: i64,
    /// The model versions (with their files and sizes) when the snapshot began.
    model_list: Vec<ModelRecord>,
}

impl Source {
    fn open(data_dir: &Path) -> Result<Self> {
        let path = crate::sqlite::database_file(data_dir);
        if !path.is_file() {
            return Err(Error::InvalidInput(format!(
                "{} holds no SQLite store ({} is missing)",
                data_dir.display(),
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(Error::from)
        .map_err(context(&format!("opening {} read-only", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != crate::sqlite::SCHEMA_VERSION {
            return Err(Error::InvalidInput(format!(
                "{} has SQLite schema version {version}, this binary copies version {}; {}",
                path.display(),
                crate::sqlite::SCHEMA_VERSION,
                if version < crate::sqlite::SCHEMA_VERSION {
                    "open it once with this bespoke (e.g. `bespoke stats`) to upgrade it first"
                } else {
                    "upgrade bespoke"
                }
            )));
        }
        let data_version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        // The snapshot: every read below sees the database as of the first one.
        conn.execute_batch("BEGIN")?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        let models = ModelDir::new(data_dir);
        let model_list = models.list()?;
        Ok(Self {
            conn,
            data_dir: data_dir.to_owned(),
            models,
            data_version,
            model_list,
        })
    }

    /// Its tables other than SQLite's internal ones.
    fn tables(&self) -> Result<BTreeSet<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(names)
    }

    fn meta(&self, key: &str) -> Result<Option<i64>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Where `table`'s generated ids must continue from (0: nothing to move).
    fn high_water(&self, table: &Table) -> Result<i64> {
        use rusqlite::OptionalExtension;
        let column = match table.identity {
            Identity::None => return Ok(0),
            Identity::AutoIncrement(c) | Identity::Max(c) => c,
        };
        let max: Option<i64> = self.conn.query_row(
            &format!("SELECT max(\"{column}\") FROM \"{}\"", table.name),
            [],
            |r| r.get(0),
        )?;
        let mut high = max.unwrap_or(0);
        if matches!(table.identity, Identity::AutoIncrement(_)) {
            let seq: Option<i64> = self
                .conn
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                    [table.name],
                    |r| r.get(0),
                )
                .optional()?;
            high = high.max(seq.unwrap_or(0));
        }
        Ok(high)
    }

    /// Ends the snapshot and fails when anything was committed to the database, or changed in
    /// the model directory, since it began.
    fn check_unchanged(&self) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        let now: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?;
        let models_now = self.models.list()?;
        if now != self.data_version || models_now != self.model_list {
            return Err(Error::InvalidInput(
                "the SQLite store changed while it was being copied (a server is writing to it?): \
                 nothing was committed; stop the server and run the migration again"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Copies the SQLite store in `data_dir` into the empty PostgreSQL store `target` and verifies
/// the copy; see the module documentation for what is copied and checked.
///
/// Returns the report when the copy was made and compared: committed when every table matched,
/// rolled back (the target left as it was) otherwise. Fails, having changed nothing but the
/// target's schema creation and migrations, with [`Error::InvalidInput`] when the source is
/// missing or has another schema version, when the target holds any row (naming the table),
/// when either side has a table this binary does not know, or when the source changed during
/// the copy; with [`Error::Backend`] when PostgreSQL fails (a row the target's constraints
/// refuse, such as a row of a deleted user, is one: the message names the table).
pub fn sqlite_to_postgres(data_dir: &Path, target: PgOptions) -> Result<Report> {
    let started = Instant::now();
    let source = Source::open(data_dir)?;
    let unknown: Vec<String> = source
        .tables()?
        .into_iter()
        .filter(|t| {
            !t.starts_with("sqlite_")
                && !SQLITE_SPECIAL.contains(&t.as_str())
                && !TABLES.iter().any(|s| s.name == t)
        })
        .collect();
    if !unknown.is_empty() {
        return Err(Error::InvalidInput(format!(
            "SQLite tables with no PostgreSQL counterpart in this migration: {}",
            unknown.join(", ")
        )));
    }

    let store = PgStore::open(target)?;
    let mut client = store.connect_unpooled()?;
    store.close();
    drop(store);

    let mut tx = client.transaction()?;
    let pg_tables: BTreeSet<String> = tx
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: BTreeSet<String> = TABLES
        .iter()
        .map(|t| t.name)
        .chain(PG_SPECIAL.iter().copied())
        .map(str::to_owned)
        .collect();
    if pg_tables != expected {
        let extra: Vec<_> = pg_tables.difference(&expected).cloned().collect();
        let missing: Vec<_> = expected.difference(&pg_tables).cloned().collect();
        return Err(Error::InvalidInput(format!(
            "the PostgreSQL schema is not the one this migration fills (unknown tables: [{}], \
             missing tables: [{}])",
            extra.join(", "),
            missing.join(", ")
        )));
    }
    // No one else writes (or reads half a copy) until the commit; a store in use is not waited
    // for long.
    tx.batch_execute("SET LOCAL lock_timeout = '10s'")?;
    let all: Vec<&str> = pg_tables.iter().map(String::as_str).collect();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        all.join(", ")
    ))
    .map_err(Error::from)
    .map_err(context("locking the target's tables"))?;
    refuse_non_empty(&mut tx)?;

    let mut tables = Vec::new();
    for table in TABLES {
        let start = Instant::now();
        let copied = copy_table(&source, &mut tx, table).map_err(context(table.name))?;
        let copy_ms = start.elapsed().as_millis() as u64;
        let read = read_back(&mut tx, table).map_err(context(table.name))?;
        tracing::info!(
            table = table.name,
            rows = copied.0,
            copy_ms,
            verify_ms = start.elapsed().as_millis() as u64 - copy_ms,
            "copied and read back"
        );
        tables.push(compare(table.name, table.name, copied, read));
    }
    tables.extend(copy_models(&source, &mut tx).map_err(context("model versions"))?);
    tables.push(copy_counters(&source, &mut tx).map_err(context("meta"))?);

    let committed = tables.iter().all(|t| t.ok);
    source.check_unchanged()?;
    if committed {
        tx.commit()?;
        // Planner statistics for the copied tables, which autovacuum would gather later.
        let _ = client.batch_execute(&format!("ANALYZE {}", all.join(", ")));
    } else {
        drop(tx);
    }
    let rows = tables.iter().map(|t| t.source_rows).sum();
    Ok(Report {
        tables,
        committed,
        elapsed_ms: started.elapsed().as_millis() as u64,
        rows,
    })
}

fn compare(table: &str, source: &str, from: (u64, String), to: (u64, String)) -> TableReport {
    TableReport {
        table: table.into(),
        source: source.into(),
        ok: from == to,
        source_rows: from.0,
        target_rows: to.0,
        source_checksum: from.1,
        target_checksum: to.1,
    }
}

/// Fails naming the first target table that holds a row (or a counter that moved).
fn refuse_non_empty(tx: &mut Transaction<'_>) -> Result<()> {
    let names = TABLES
        .iter()
        .map(|t| t.name)
        .chain(["model_versions", "model_files"]);
    for name in names {
        let any: bool = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {name})"), &[])?
            .get(0);
        if any {
            return Err(Error::InvalidInput(format!(
                "the target is not empty: table {name} holds rows; migrate into a new schema \
                 (or an empty database)"
            )));
        }
    }
    let moved: i64 = tx
        .query_one(
            "SELECT count(*) FROM meta WHERE (key = 'next_event_seq' AND value <> 1)
                                          OR (key = 'active_model' AND value <> 0)",
            &[],
        )?
        .get(0);
    if moved > 0 {
        return Err(Error::InvalidInput(
            "the target is not empty: its meta counters moved (events or models were stored \
             and deleted); migrate into a new schema"
                .into(),
        ));
    }
    Ok(())
}

/// Streams `table` from the source into the target with binary `COPY`, hashing every row.
fn copy_table(source: &Source, tx: &mut Transaction<'_>, table: &Table) -> Result<(u64, String)> {
    let sqlite_cols: Vec<String> = table
        .columns
        .iter()
        .map(|(s, _, _)| format!("\"{s}\""))
        .collect();
    let pg_cols: Vec<String> = table
        .columns
        .iter()
        .map(|(_, p, _)| format!("\"{p}\""))
        .collect();
    let kinds: Vec<Kind> = table.columns.iter().map(|c| c.2).collect();
    let types: Vec<Type> = kinds.iter().map(|k| k.pg_type()).collect();

    let mut stmt = source.conn.prepare(&format!(
        "SELECT {} FROM \"{}\" ORDER BY {}",
        sqlite_cols.join(", "),
        table.name,
        table.key
    ))?;
    let mut rows = stmt.query([])?;
    // COPY writes identity columns as given (as `OVERRIDING SYSTEM VALUE` would).
    let sink = tx.copy_in(&format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        table.name,
        pg_cols.join(", ")
    ))?;
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    let mut sum = Checksum::default();
    let mut row_vals = Vec::with_capacity(kinds.len());
    while let Some(r) = rows.next()? {
        row_vals.clear();
        for (i, &(column, _, kind)) in table.columns.iter().enumerate() {
            row_vals.push(from_sqlite(r.get_ref(i)?, kind, table.name, column)?);
        }
        sum.add(&row_vals);
        let params: Vec<Box<dyn ToSql + Sync>> = row_vals
            .drain(..)
            .zip(&kinds)
            .map(|(v, &k)| to_pg(v, k))
            .collect();
        writer.write_raw(params)?;
    }
    writer.finish()?;
    let high = source.high_water(table)?;
    if let Identity::AutoIncrement(c) | Identity::Max(c) = table.identity
        && high > 0
    {
        tx.query_one(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{}', '{c}'), $1)",
                table.name
            ),
            &[&high],
        )?;
    }
    Ok(sum.finish())
}

/// Reads `table` back from the target in key order and hashes it as its source was.
fn read_back(tx: &mut Transaction<'_>, table: &Table) -> Result<(u64, String)> {
    let pg_cols: Vec<String> = table
        .columns
        .iter()
        .map(|(_, p, _)| format!("\"{p}\""))
        .collect();
    let kinds: Vec<Kind> = table.columns.iter().map(|c| c.2).collect();
    let types: Vec<Type> = kinds.iter().map(|k| k.pg_type()).collect();
    let reader = tx.copy_out(&format!(
        "COPY (SELECT {} FROM {} ORDER BY {}) TO STDOUT (FORMAT binary)",
        pg_cols.join(", "),
        table.name,
        table.key
    ))?;
    hash_copy_out(BinaryCopyOutIter::new(reader, &types), &kinds)
}

fn hash_copy_out(mut rows: BinaryCopyOutIter<'_>, kinds: &[Kind]) -> Result<(u64, String)> {
    let mut sum = Checksum::default();
    let mut row_vals = Vec::with_capacity(kinds.len());
    while let Some(row) = rows.next()? {
        row_vals.clear();
        for (i, &kind) in kinds.iter().enumerate() {
            row_vals.push(
                from_pg(&row, i, kind).map_err(|e| Error::Corrupt(format!("read back: {e}")))?,
            );
        }
        sum.add(&row_vals);
    }
    Ok(sum.finish())
}

/// Copies the model directory into `model_versions` and `model_files`, same version numbers.
/// A version's rows: `(version, meta as compact JSON, created_at)`, `created_at` being the
/// modification time of its `meta.json` (SQLite keeps no other); a file's rows:
/// `(version, name, chunk, bytes)` in chunks of [`MODEL_CHUNK`], files in name order.
fn copy_models(source: &Source, tx: &mut Transaction<'_>) -> Result<Vec<TableReport>> {
    let (mut versions, mut files) = (Checksum::default(), Checksum::default());
    let mut max_version = 0i64;
    for record in &source.model_list {
        let version = i64::try_from(record.version).map_err(|_| {
            Error::InvalidInput(format!("model version {} is too large", record.version))
        })?;
        max_version = max_version.max(version);
        let meta = serde_json::to_string(&record.meta).expect("JSON values serialise");
        let meta_file = data_path(source, record.version).join("meta.json");
        let created_at = std::fs::metadata(&meta_file)
            .and_then(|m| m.modified())
            .map_err(|source| Error::Io {
                path: meta_file.clone(),
                source,
            })?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        versions.add(&[
            Val::Int(version),
            Val::Text(meta.clone()),
            Val::Int(created_at),
        ]);
        tx.execute(
            "INSERT INTO model_versions (version, meta, created_at) OVERRIDING SYSTEM VALUE
             VALUES ($1, $2, $3)",
            &[&version, &meta, &created_at],
        )?;
        for name in &record.files {
            let bytes = source.models.read(record.version, name)?;
            let mut chunks: Vec<&[u8]> = bytes.chunks(MODEL_CHUNK).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            for (i, chunk) in chunks.into_iter().enumerate() {
                let i = i as i64;
                files.add(&[
                    Val::Int(version),
                    Val::Text(name.clone()),
                    Val::Int(i),
                    Val::Bytes(chunk.to_vec()),
                ]);
                tx.execute(
                    "INSERT INTO model_files (version, name, chunk, bytes) VALUES ($1, $2, $3, $4)",
                    &[&version, name, &i, &chunk],
                )?;
            }
        }
    }
    if max_version > 0 {
        tx.query_one(
            "SELECT setval(pg_get_serial_sequence('model_versions', 'version'), $1)",
            &[&max_version],
        )?;
    }
    let read_versions = hash_copy_out(
        BinaryCopyOutIter::new(
            tx.copy_out(
                "COPY (SELECT version, meta, created_at FROM model_versions ORDER BY version)
                 TO STDOUT (FORMAT binary)",
            )?,
            &[Type::INT8, Type::TEXT, Type::INT8],
        ),
        &[Int, Text, Int],
    )?;
    let read_files = hash_copy_out(
        BinaryCopyOutIter::new(
            tx.copy_out(
                "COPY (SELECT version, name, chunk, bytes FROM model_files
                       ORDER BY version, name, chunk) TO STDOUT (FORMAT binary)",
            )?,
            &[Type::INT8, Type::TEXT, Type::INT8, Type::BYTEA],
        ),
        &[Int, Text, Int, Blob],
    )?;
    let dir = "models/ (files)";
    Ok(vec![
        compare("model_versions", dir, versions.finish(), read_versions),
        compare("model_files", dir, files.finish(), read_files),
    ])
}

/// The directory of a model version (`crate::models`' layout).
fn data_path(source: &Source, version: u64) -> std::path::PathBuf {
    source.data_dir.join("models").join(version.to_string())
}

/// Sets the target's counters from the source: the next event number (past every stored
/// one), the tag of server-issued ids, the active model version.
fn copy_counters(source: &Source, tx: &mut Transaction<'_>) -> Result<TableReport> {
    let max_seq: Option<i64> = source
        .conn
        .query_row("SELECT max(seq) FROM events", [], |r| r.get(0))?;
    let next_seq = source
        .meta("next_event_seq")?
        .unwrap_or(1)
        .max(max_seq.unwrap_or(0) + 1);
    let tag = source.meta("issued_id_tag")?;
    let active = source
        .model_list
        .iter()
        .find(|m| m.active)
        .map_or(0, |m| m.version as i64);
    let mut wanted = BTreeMap::new();
    wanted.insert("next_event_seq", next_seq);
    wanted.insert("active_model", active);
    if let Some(tag) = tag {
        wanted.insert("issued_id_tag", tag);
    }
    for (key, value) in &wanted {
        let n = tx.execute(
            "UPDATE meta SET value = $2 WHERE key = $1",
            &[&key.to_string(), value],
        )?;
        if n != 1 {
            return Err(Error::Corrupt(format!("the target has no meta row {key}")));
        }
    }
    let mut from = Checksum::default();
    let mut to = Checksum::default();
    for key in META_KEYS {
        let read: Option<i64> = tx
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
            .map(|r| r.get(0));
        let val = |v: Option<i64>| [Val::Text(key.into()), v.map_or(Val::Null, Val::Int)];
        // A source without a tag (never written to) keeps the one the target drew.
        let expected = wanted.get(key).copied().or(read);
        from.add(&val(expected));
        to.add(&val(read));
    }
    Ok(compare("meta", "meta", from.finish(), to.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_through_the_postgres_encoding() {
        for id in [
            "0190a6b2-1234-7abc-8def-0123456789ab",
            "exactly-16-bytes",
            "Plain-Id",
            "0190A6B2-1234-7ABC-8DEF-0123456789AB",
            "",
        ] {
            assert_eq!(decode_stored_event_id(&encode_event_id(id)).unwrap(), id);
        }
        assert_eq!(encode_event_id("exactly-16-bytes").len(), 17);
    }

    #[test]
    fn checksums_tell_types_and_boundaries_apart() {
        let hash = |rows: &[&[Val]]| {
            let mut c = Checksum::default();
            for r in rows {
                c.add(r);
            }
            c.finish()
        };
        let a = hash(&[&[Val::Text("ab".into()), Val::Text("c".into())]]);
        let b = hash(&[&[Val::Text("a".into()), Val::Text("bc".into())]]);
        assert_ne!(a, b);
        assert_ne!(hash(&[&[Val::Int(1)]]), hash(&[&[Val::Real(1.0)]]));
        assert_ne!(hash(&[&[Val::Null]]), hash(&[&[Val::Int(0)]]));
        assert_eq!(hash(&[]).0, 0);
    }

    #[test]
    fn every_table_of_a_new_sqlite_store_is_mapped() {
        let dir = tempfile::tempdir().unwrap();
        drop(crate::SqliteStore::open(dir.path(), crate::StoreOptions::default()).unwrap());
        let source = Source::open(dir.path()).unwrap();
        let mut unmapped = source.tables().unwrap();
        unmapped.retain(|t| {
            !SQLITE_SPECIAL.contains(&t.as_str()) && !TABLES.iter().any(|s| s.name == t)
        });
        assert!(unmapped.is_empty(), "{unmapped:?}");
        // And every mapped table exists there with the columns named.
        for table in TABLES {
            let cols: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
            source
                .conn
                .prepare(&format!(
                    "SELECT \"{}\" FROM \"{}\" ORDER BY {}",
                    cols.join("\", \""),
                    table.name,
                    table.key
                ))
                .unwrap_or_else(|e| panic!("{}: {e}", table.name));
        }
        source.check_unchanged().unwrap();
    }

    /// Writes to the database or the model directory while the snapshot is open are noticed
    /// (a server still running); an idle store is not a change.
    #[test]
    fn writes_to_the_source_during_the_copy_are_detected() {
        use crate::prelude::*;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(dir.path(), crate::StoreOptions::default()).unwrap();
        let event = || crate::EventBatch::new(vec![crate::NewEvent::new("u", "i", "view")]);
        store.append_events(event()).unwrap();
        let source = Source::open(dir.path()).unwrap();
        // Longer than the checkpointer's period: its checkpoints change no data.
        std::thread::sleep(std::time::Duration::from_millis(600));
        source.check_unchanged().unwrap();

        let source = Source::open(dir.path()).unwrap();
        store.append_events(event()).unwrap();
        let err = source.check_unchanged().unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");

        let source = Source::open(dir.path()).unwrap();
        store
            .save_model(&[("a", b"b")], &serde_json::json!({}))
            .unwrap();
        assert!(source.check_unchanged().is_err());
    }
}
