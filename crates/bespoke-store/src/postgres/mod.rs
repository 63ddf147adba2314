//! The PostgreSQL backend: every table in one schema of one database, reached through a small
//! pool of blocking connections (the `postgres` crate, without TLS).
//!
//! The semantics are SQLite's (`crate::sqlite`), kept by other means:
//!
//! - **Dense ids, never reused.** Users and items take `BIGINT` identity ids from sequences
//!   bounded to `1..=u32::MAX`, so they fit [`crate::UserIdx`] and [`crate::ItemIdx`]; a sequence
//!   never hands a value out twice (a rolled-back insert leaves a gap, as a deleted row does).
//! - **Event sequence numbers in commit order.** Appends take the row lock of the
//!   `meta.next_event_seq` counter first and hold it until they commit, so appends are
//!   serialized, numbers are assigned without gaps in the order the batches commit, and a
//!   reader paging with `scan_interactions(after)` can never miss an event committed later with
//!   a smaller number. The counter is written once per batch. Rewards are numbered the same way
//!   (their replay order is what learners checkpoint against).
//! - **Idempotent events.** Client event ids are stored under a partial unique index, looked up
//!   for the whole batch in one query under the append lock; server-issued ids are not stored at
//!   all (see [`crate::event_id`]). A batch is one transaction: all its events or none.
//! - **Deletions that race writes.** Deleting a user or an item takes the append lock first, so
//!   no append that resolved its id is still running, and the next one creates it anew.
//!   Blocks and segment members lock the user's (and item's) row `FOR KEY SHARE` and reference
//!   it with a foreign key that cascades: a deletion waits for them and then takes their rows
//!   along. Events have no foreign keys, as on SQLite: the check would cost every insert.
//!
//! Writes commit with the server's durability settings (`synchronous_commit`, default on): a
//! call returns after the commit did, so an acknowledged write is durable as far as the server
//! promises.
//!
//! The blocking client runs its own small runtime per connection: call this store from plain
//! threads or `spawn_blocking`, never from an async task.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::model::*;
use crate::{Error, ItemIdx, Millis, Result, UserIdx};

mod access;
mod campaigns;
mod catalog;
mod cluster;
mod decisions;
mod events;
mod models;
mod pool;
mod privacy;
mod rules;

pub(crate) use events::{decode_stored_event_id, encode_event_id};
use pool::{Db, Lease, Pool};

/// Schema migrations, applied in order at open, each in its own transaction with its row in
/// `schema_migrations`. Never edit a released entry: append a new one. The first one creates
/// the schema SQLite reached after its sixth.
const MIGRATIONS: &[(&str, &[&str])] = &[
    (
        "initial schema",
        &[
            META_SCHEMA,
            catalog::SCHEMA,
            events::SCHEMA,
            access::SCHEMA,
            decisions::SCHEMA,
            rules::SCHEMA,
            campaigns::SCHEMA,
            models::SCHEMA,
        ],
    ),
    ("dashboard sessions", &[access::SESSIONS_SCHEMA]),
];

/// Counters and markers. `next_event_seq` doubles as the append lock (see the module doc),
/// `reward_lock` as the reward lock; `catalog_epoch` counts deletions of users and items (see
/// `events::IdMemo`); `active_model` is 0 when no version is active.
const META_SCHEMA: &str = r#"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value)
VALUES ('next_event_seq', 1), ('reward_lock', 0), ('catalog_epoch', 0), ('active_model', 0);
"#;

/// Key of the advisory lock that serializes schema creation and migrations between processes
/// opening the same database at once ("bespoke" in ASCII).
const MIGRATION_LOCK: i64 = 0x0062_6573_706f_6b65;

/// Settings of the PostgreSQL backend.
///
/// ```no_run
/// use bespoke_store::{PgOptions, PgStore};
///
/// let options = PgOptions::new("postgres://bespoke@127.0.0.1/bespoke").schema("bespoke");
/// let store = PgStore::open(options).unwrap();
/// ```
#[derive(Clone)]
pub struct PgOptions {
    /// Where to connect: a `postgres://user:password@host:port/database?...` URL or a libpq
    /// `key=value` string. TLS is not supported: `sslmode=require` fails to connect.
    pub url: String,
    /// The schema that holds the tables, created if missing and set as the `search_path` of
    /// every connection. `None`: the connection's default `search_path` decides (usually
    /// `public`). ASCII lowercase letters, digits and `_`, not starting with a digit, at most 63
    /// bytes.
    pub schema: Option<String>,
    /// Most connections open at once; a call waits for a free one beyond that.
    pub max_connections: usize,
    /// How long a call waits for a free connection before it fails.
    pub acquire_timeout: Duration,
    /// Timeout of opening a connection, when the URL sets none.
    pub connect_timeout: Duration,
    /// Make [`crate::PrivacyStore::purge_deleted`] run `VACUUM FULL` (rewrites the tables and
    /// their indexes into new files, under an exclusive lock that blocks every reader and
    /// writer meanwhile) instead of `VACUUM`.
    pub vacuum_full: bool,
}

impl PgOptions {
    /// Options for `url` with the defaults: the connection's own schema, 16 connections,
    /// 30 s to get one, 10 s to open one, plain `VACUUM` to purge.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            vacuum_full: false,
        }
    }

    /// Keeps the tables in `schema` (see [`PgOptions::schema`](PgOptions#structfield.schema)).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Sets [`PgOptions::max_connections`](PgOptions#structfield.max_connections).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets [`PgOptions::vacuum_full`](PgOptions#structfield.vacuum_full).
    pub fn vacuum_full(mut self, full: bool) -> Self {
        self.vacuum_full = full;
        self
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redacted(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("vacuum_full", &self.vacuum_full)
            .finish()
    }
}

/// `url` without its password, for logs and `Debug`.
fn redacted(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &rest[..colon],
                &rest[at..]
            );
        }
        return url.to_owned();
    }
    // key=value form: hide the value of `password`.
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The PostgreSQL-backed [`crate::Store`]: every capability trait, on one schema of one
/// database. See the module documentation for how it keeps SQLite's semantics, and
/// `docs/postgres.md` for operating it.
pub struct PgStore {
    pool: Pool,
    /// This store's tag of server-issued event ids (see [`crate::event_id`]), kept in `meta`.
    id_tag: u64,
    options: PgOptions,
    /// Ids of users and items by key, for appends.
    memo: parking_lot::Mutex<events::IdMemo>,
    /// Announces this handle's changes to the others (see `cluster.rs`).
    announcer: cluster::Announcer,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("options", &self.options)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, creates the schema if it is missing, applies pending migrations and reads (or
    /// draws) the store's tag of issued event ids.
    ///
    /// Fails with [`Error::InvalidInput`] for a malformed URL or schema name, or when the
    /// database has a newer schema than this binary knows; with [`Error::Unavailable`] when the
    /// server cannot be reached.
    pub fn open(options: PgOptions) -> Result<Self> {
        let mut config = postgres::Config::from_str(&options.url)
            .map_err(|e| Error::InvalidInput(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("bespoke");
        }
        // Every statement of this backend is a lookup by key or a range scan of an index, for
        // which the generic plan is the right one. Custom plans, made for the values of each
        // call, chose a sequential scan of `users` for the 1,000 keys of a batch (8.8 ms at 90k
        // users, growing with the table, against 3 ms through the index).
        let mut extra = String::from("-c plan_cache_mode=force_generic_plan");
        if let Some(schema) = &options.schema {
            if !valid_schema_name(schema) {
                return Err(Error::InvalidInput(format!(
                    "{schema:?} is not a valid schema name (ASCII lowercase letters, digits and _, at most 63 bytes)"
                )));
            }
            extra.push_str(&format!(" -c search_path={schema}"));
        }
        let all = match config.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {extra}"),
            _ => extra,
        };
        config.options(&all);
        let pool = Pool::new(config, options.max_connections, options.acquire_timeout);
        let version = migrate(&mut pool.get()?, options.schema.as_deref())?;
        let id_tag = pool.get()?.transaction(issued_id_tag)?;
        tracing::info!(
            url = %redacted(&options.url),
            schema = options.schema.as_deref().unwrap_or("(search_path)"),
            version,
            "opened the PostgreSQL store"
        );
        Ok(Self {
            pool,
            id_tag,
            announcer: cluster::Announcer::new(options.schema.as_deref()),
            options,
            memo: Default::default(),
        })
    }

    /// The options it was opened with.
    pub fn options(&self) -> &PgOptions {
        &self.options
    }

    /// A connection of its own with this store's settings (its schema as `search_path`),
    /// outside the pool: for [`crate::migrate`], which copies with `COPY` in one transaction.
    pub(crate) fn connect_unpooled(&self) -> Result<postgres::Client> {
        Ok(self.pool.config().connect(postgres::NoTls)?)
    }

    /// Closes the idle connections; later calls fail with [`Error::Closed`]. Calls already
    /// running finish, and their connections close as they come back. Called on drop as well.
    pub fn close(&self) {
        self.pool.close();
    }

    fn lease(&self) -> Result<Lease<'_>> {
        self.pool.get()
    }

    /// Runs `f` on a pooled connection, outside an explicit transaction. A connection found
    /// closed (the server restarted since it was last used) is replaced and `f` run again.
    fn read<T>(&self, mut f: impl FnMut(&mut Db<'_, '_>) -> Result<T>) -> Result<T> {
        let mut lease = self.lease()?;
        match lease.run(&mut f) {
            // Reads change nothing: running one again is safe.
            Err(_) if lease.is_closed() => {
                drop(lease);
                self.lease()?.run(f)
            }
            other => other,
        }
    }

    /// Runs `f` in a transaction on a pooled connection (retried on deadlocks and races, see
    /// [`Lease::transaction`], and on another connection when this one was found closed before
    /// the transaction began).
    fn write<T>(&self, mut f: impl FnMut(&mut Db<'_, '_>) -> Result<T>) -> Result<T> {
        let mut lease = self.lease()?;
        match lease.transaction(&mut f) {
            Err(_) if lease.stale() => {
                drop(lease);
                self.lease()?.transaction(f)
            }
            other => other,
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Creates the schema (if named) and applies pending migrations, under an advisory lock so that
/// two processes opening the same database at once do not both apply them. Returns the version.
fn migrate(lease: &mut Lease<'_>, schema: Option<&str>) -> Result<u32> {
    // Up to date already: nothing to create, so no DDL privilege is needed (a role that may
    // only use the tables can open the store).
    let current = lease.run(|db| {
        let exists: bool = db
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let v: i64 = db
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )?
            .get(0);
        Ok(Some(v))
    })?;
    match current {
        Some(v) if v == MIGRATIONS.len() as i64 => return Ok(MIGRATIONS.len() as u32),
        Some(v) if v > MIGRATIONS.len() as i64 => return Err(newer_schema(v)),
        _ => {}
    }
    lease.transaction(|db| {
        db.query_one("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        if let Some(schema) = schema {
            // Validated by `open`: plain lowercase identifier, nothing to quote.
            db.batch(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))?;
        }
        db.batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at BIGINT NOT NULL
            )",
        )?;
        let applied: i64 = db
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )?
            .get(0);
        if applied as usize > MIGRATIONS.len() {
            return Err(newer_schema(applied));
        }
        for (i, (name, parts)) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            for sql in *parts {
                db.batch(sql)?;
            }
            let version = i as i64 + 1;
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                &[&version, name, &now_ms()],
            )?;
            tracing::info!(version, name, "applied PostgreSQL schema migration");
        }
        Ok(MIGRATIONS.len() as u32)
    })
}

fn newer_schema(version: i64) -> Error {
    Error::InvalidInput(format!(
        "the database has schema version {version}, newer than this binary supports ({}); upgrade bespoke",
        MIGRATIONS.len()
    ))
}

/// The store's tag of server-issued ids, drawn at random on first use and kept in `meta`.
fn issued_id_tag(db: &mut Db<'_, '_>) -> Result<u64> {
    use std::hash::BuildHasher;
    let fresh = std::hash::RandomState::new().hash_one(now_ms()) & crate::event_id::TAG_MASK;
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('issued_id_tag', $1) ON CONFLICT (key) DO NOTHING",
        &[&(fresh as i64)],
    )?;
    let tag: i64 = db
        .query_one("SELECT value FROM meta WHERE key = 'issued_id_tag'", &[])?
        .get(0);
    Ok(tag as u64 & crate::event_id::TAG_MASK)
}

/// A client error whose message includes what the server said: the client's own `Display`
/// is only "db error" for every error the server reports.
#[derive(Debug)]
pub(super) struct PgError(pub(super) postgres::Error);

impl PgError {
    /// The SQLSTATE of `e` if it is a server error.
    pub(super) fn code_of(e: &Error) -> Option<&postgres::error::SqlState> {
        let Error::Backend(source) = e else {
            return None;
        };
        source.downcast_ref::<PgError>().and_then(|p| p.0.code())
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(
                    f,
                    "PostgreSQL {}: {} ({})",
                    db.severity(),
                    db.message(),
                    db.code().code()
                )?;
                if let Some(detail) = db.detail() {
                    write!(f, "; {detail}")?;
                }
                if let Some(hint) = db.hint() {
                    write!(f, "; hint: {hint}")?;
                }
                Ok(())
            }
            None => {
                write!(f, "{}", self.0)?;
                let mut source = std::error::Error::source(&self.0);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether `e` says that the server cannot be reached or the connection is lost, rather than
/// anything about the statement: no connection could be made (refused, timed out), the
/// connection broke or was closed, the server ended it or is shutting down or starting up
/// (`57P01`–`57P03`), refuses more connections (`53300`), or any connection exception
/// (class `08`). The client's error kinds are not public; its `Display` of one is a fixed
/// sentence per kind, which is what is matched for those without a SQLSTATE.
fn connection_lost(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
        None => {
            e.is_closed()
                || matches!(
                    e.to_string().as_str(),
                    "error connecting to server"
                        | "error communicating with the server"
                        | "timeout waiting for server"
                )
        }
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        if connection_lost(&e) {
            return Error::Unavailable(PgError(e).to_string());
        }
        let Some(code) = e.code() else {
            return Error::Backend(Box::new(PgError(e)));
        };
        if *code == SqlState::DISK_FULL {
            Error::StorageFull
        } else if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || *code == SqlState::UNTRANSLATABLE_CHARACTER
        {
            // Text with a NUL character (PostgreSQL's text types cannot hold one).
            let detail = e
                .as_db_error()
                .map_or_else(String::new, |d| d.message().to_owned());
            Error::InvalidInput(format!("text PostgreSQL cannot store: {detail}"))
        } else if *code == SqlState::SEQUENCE_GENERATOR_LIMIT_EXCEEDED {
            Error::InvalidInput("more than 2^32 users or items".into())
        } else {
            Error::Backend(Box::new(PgError(e)))
        }
    }
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

fn to_u32(id: i64, what: &str) -> Result<u32> {
    u32::try_from(id).map_err(|_| Error::InvalidInput(format!("more than 2^32 {what}")))
}

/// A count or length as the `BIGINT` PostgreSQL takes (saturating: a limit past `i64::MAX` is
/// no limit).
fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A sequence number as `BIGINT` (saturating).
fn seq_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises to JSON")
}

fn parse_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// Embeddings as SQLite stores them: little-endian `f32`s, back to back.
fn vector_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn blob_to_vector(b: &[u8]) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return Err(Error::Corrupt(
            "embedding blob length is not a multiple of 4".into(),
        ));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("chunks of 4")))
        .collect())
}

/// The distinct values of `keys`, in order of first appearance.
fn distinct<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::new();
    keys.into_iter().filter(|k| seen.insert(*k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_debug_output() {
        assert_eq!(
            redacted("postgres://ann:s3cret@db:5432/x?sslmode=disable"),
            "postgres://ann:***@db:5432/x?sslmode=disable"
        );
        assert_eq!(
            redacted("postgres://ann@db/x"),
            "postgres://ann@db/x",
            "nothing to hide"
        );
        assert_eq!(
            redacted("host=db user=ann password=s3cret"),
            "host=db user=ann password=***"
        );
        let debug = format!("{:?}", PgOptions::new("postgresql://a:pw@h/d"));
        assert!(!debug.contains("pw@"), "{debug}");
    }

    #[test]
    fn an_unreachable_server_is_unavailable_not_a_backend_failure() {
        // A port nothing listens on: the connection is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let err = PgStore::open(PgOptions::new(format!("postgres://x@127.0.0.1:{port}/db")))
            .expect_err("nothing listens there");
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        assert!(!err.is_user_error());
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema_name("bespoke"));
        assert!(valid_schema_name("_t1"));
        for bad in ["", "1a", "Bespoke", "a-b", "a b", "a;drop", &"x".repeat(64)] {
            assert!(!valid_schema_name(bad), "{bad:?}");
        }
    }
}
