//! The embedded backend: one SQLite database (`bespoke.db`) in the data directory.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a committed transaction survives power
//! loss. Writes are funnelled through one writer thread ([`Writer`]) that commits every request
//! waiting in its queue as one transaction (group commit), isolating each request in a savepoint
//! so that one request's error never fails its neighbours. Reads use a small pool of separate
//! connections, which WAL lets run concurrently with the writer.
//!
//! Internal ids are `AUTOINCREMENT` row ids, so an id is never reused after a deletion: models
//! trained later can keep referring to ids without confusing a deleted user with a new one.
//! Event sequence numbers are never reused either, but are assigned by the writer and persisted
//! once per transaction (`meta.next_event_seq`): `AUTOINCREMENT` would write its counter row
//! once per inserted event.
//!
//! Event ids: see [`crate::event_id`]. Client ids are stored (canonical UUIDs as 16-byte blobs)
//! under a partial unique index; server-issued ids are derived from the row and not stored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::{Map, Value};

use crate::bandit::{
    self, DecisionRecord, LoopLogStats, LoopRecord, NewDecision, NewReward, RewardOutcome,
    RewardRecord,
};
use crate::event_id::{self, format_uuid, parse_uuid};
use crate::fingerprint::fingerprint;
use crate::model::*;
use crate::{
    AuditEntry, Error, ItemIdx, KeyRecord, Millis, NewAudit, NewKey, Result, Store, UserIdx,
};

/// Name of the database file inside the data directory.
const DB_FILE: &str = "bespoke.db";

/// Schema migrations; entry `i` moves the schema from version `i` to `i + 1`
/// (`PRAGMA user_version`). Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    attributes TEXT NOT NULL,
    consent_personalization INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    categories TEXT NOT NULL,
    text TEXT NOT NULL,
    numeric TEXT NOT NULL,
    attributes TEXT NOT NULL,
    available INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE embedding_spaces (
    name TEXT PRIMARY KEY,
    dim INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE item_embeddings (
    item_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (item_id, name)
) WITHOUT ROWID;
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    event_id BLOB,
    user_id INTEGER NOT NULL,
    item_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    value REAL,
    ts INTEGER NOT NULL,
    context TEXT,
    fingerprint BLOB NOT NULL
);
CREATE UNIQUE INDEX events_by_id ON events (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX events_by_user ON events (user_id, seq);
"#,
    r#"
ALTER TABLE users ADD COLUMN consent_training INTEGER NOT NULL DEFAULT 1;
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    hash BLOB NOT NULL,
    rate_per_second REAL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT
);
CREATE TABLE erasures (
    id TEXT PRIMARY KEY,
    requested_at INTEGER NOT NULL,
    receipt TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
"#,
    crate::bandit::MIGRATION,
];

/// Settings of the SQLite backend.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most events committed in one group transaction.
    pub max_group_events: usize,
    /// SQLite page cache per connection, in MiB.
    pub cache_mib: u32,
    /// Most idle read connections kept open.
    pub read_pool: usize,
    /// Largest size of the database in MiB (0: no limit beyond the disk). Writes that would
    /// pass it fail with [`Error::StorageFull`], as on a full disk, and store nothing.
    pub max_size_mib: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_group_events: 100_000,
            cache_mib: 64,
            read_pool: 8,
            max_size_mib: 0,
        }
    }
}

type Reply<T> = Sender<Result<T>>;

/// A write request for the writer thread.
enum Op {
    Append(EventBatch, Reply<Vec<Appended>>),
    PutUsers(Vec<UserUpsert>, Reply<Vec<Upserted<User>>>),
    DeleteUser(String, Reply<Option<Deleted>>),
    PutItems(Vec<ItemUpsert>, Reply<Vec<Upserted<Item>>>),
    DeleteItem(String, Reply<Option<Deleted>>),
    /// Any other write, run on the writer's connection inside the group transaction.
    Exec(ExecFn, Reply<Box<dyn std::any::Any + Send>>),
    /// A write whose only change is one statement, atomic by itself: it needs no savepoint
    /// (which would copy every page it touches to the statement journal first).
    ExecSingle(ExecFn, Reply<Box<dyn std::any::Any + Send>>),
}

type ExecFn = Box<dyn FnOnce(&Connection) -> Result<Box<dyn std::any::Any + Send>> + Send>;

impl Op {
    /// This request, answered with `e` without running it.
    fn failed(self, e: Error) -> Done {
        match self {
            Op::Append(_, tx) => Done::Append(tx, Err(e)),
            Op::PutUsers(_, tx) => Done::PutUsers(tx, Err(e)),
            Op::DeleteUser(_, tx) => Done::DeleteUser(tx, Err(e)),
            Op::PutItems(_, tx) => Done::PutItems(tx, Err(e)),
            Op::DeleteItem(_, tx) => Done::DeleteItem(tx, Err(e)),
            Op::Exec(_, tx) | Op::ExecSingle(_, tx) => Done::Exec(tx, Err(e)),
        }
    }

    fn size(&self) -> usize {
        match self {
            Op::Append(b, _) => b.events.len().max(1),
            Op::PutUsers(u, _) => u.len().max(1),
            Op::PutItems(i, _) => i.len().max(1),
            _ => 1,
        }
    }
}

/// A finished request whose reply waits for the commit.
enum Done {
    Append(Reply<Vec<Appended>>, Result<Vec<Appended>>),
    PutUsers(Reply<Vec<Upserted<User>>>, Result<Vec<Upserted<User>>>),
    DeleteUser(Reply<Option<Deleted>>, Result<Option<Deleted>>),
    PutItems(Reply<Vec<Upserted<Item>>>, Result<Vec<Upserted<Item>>>),
    DeleteItem(Reply<Option<Deleted>>, Result<Option<Deleted>>),
    Exec(
        Reply<Box<dyn std::any::Any + Send>>,
        Result<Box<dyn std::any::Any + Send>>,
    ),
}

fn settle<T>(reply: Reply<T>, result: Result<T>, commit: &Result<()>) {
    let out = match commit {
        Ok(()) => result,
        Err(e) => Err(repeat_error(e)),
    };
    // The caller may have given up waiting; that is not the writer's problem.
    let _ = reply.send(out);
}

impl Done {
    fn is_ok(&self) -> bool {
        self.error().is_none()
    }

    fn error(&self) -> Option<&Error> {
        match self {
            Done::Append(_, r) => r.as_ref().err(),
            Done::PutUsers(_, r) => r.as_ref().err(),
            Done::DeleteUser(_, r) => r.as_ref().err(),
            Done::PutItems(_, r) => r.as_ref().err(),
            Done::DeleteItem(_, r) => r.as_ref().err(),
            Done::Exec(_, r) => r.as_ref().err(),
        }
    }

    fn send(self, commit: &Result<()>) {
        match self {
            Done::Append(tx, r) => settle(tx, r, commit),
            Done::PutUsers(tx, r) => settle(tx, r, commit),
            Done::DeleteUser(tx, r) => settle(tx, r, commit),
            Done::PutItems(tx, r) => settle(tx, r, commit),
            Done::DeleteItem(tx, r) => settle(tx, r, commit),
            Done::Exec(tx, r) => settle(tx, r, commit),
        }
    }
}

/// The same failure for every request of a failed group commit.
fn repeat_error(e: &Error) -> Error {
    match e {
        Error::StorageFull => Error::StorageFull,
        Error::Closed => Error::Closed,
        other => Error::Backend(other.to_string().into()),
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

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises to JSON")
}

fn parse_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

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

/// Connection settings. The writer keeps SQLite's automatic checkpoint (after a commit that
/// leaves 1000 pages in the WAL): run by the writer between transactions, it is what lets the
/// WAL restart from the beginning under a constant stream of writes. Most of the copying is done
/// beforehand by the checkpointer thread (see [`Checkpointer`]), so that the writer's own
/// checkpoints are short and the requests queued behind it do not wait long. (Larger automatic
/// checkpoints made imports 5 % faster but took single-event ingest's p99 from 6 to 20 ms; with
/// no automatic checkpoint at all the WAL grew without bound.) The WAL is cut back to 64 MiB when
/// it restarts.
///
/// `secure_delete` overwrites deleted content with zeros (in the page and in freed pages), so
/// that an erased user's rows do not linger in the file's free space; the WAL keeps the older
/// page images until [`Store::purge_deleted`] truncates it.
fn configure(conn: &Connection, cache_mib: u32) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; PRAGMA cache_size = -{};
         PRAGMA wal_autocheckpoint = 1000; PRAGMA journal_size_limit = 67108864;
         PRAGMA secure_delete = ON;",
        cache_mib as u64 * 1024
    ))?;
    Ok(())
}

/// How often the checkpointer copies committed WAL frames into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Copies committed WAL frames into the database on its own connection, concurrently with the
/// writer (`PASSIVE` checkpoints never block it), so that the writer's own automatic checkpoints
/// find little left to copy. Committed data is durable in the WAL already; checkpoints only keep
/// it short.
///
/// It also runs the `TRUNCATE` checkpoints of [`Store::purge_deleted`]: only one checkpoint can
/// run at a time, so running them on this thread keeps them from failing on its own `PASSIVE`
/// ones. A purge that stays busy (the writer's automatic checkpoint holds the checkpoint lock,
/// or readers hold old snapshots) is retried on every tick until it succeeds.
#[derive(Debug)]
struct Checkpointer {
    requests: Sender<CheckpointRequest>,
    thread: JoinHandle<()>,
}

enum CheckpointRequest {
    /// Copy the whole WAL into the database and truncate it; answer whether that was done.
    Truncate(Sender<Result<()>>),
    Stop,
}

/// How many times a purge retries a busy `TRUNCATE` checkpoint before it answers (and leaves
/// the retries to the ticks), and how long it waits between two tries.
const TRUNCATE_TRIES: u32 = 200;
const TRUNCATE_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// One `TRUNCATE` checkpoint: whether the whole WAL was copied and the file truncated.
fn truncate_wal(conn: &Connection) -> Result<bool> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(busy == 0)
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let (requests, received) = crossbeam_channel::unbounded::<CheckpointRequest>();
        let thread = std::thread::Builder::new()
            .name("bespoke-store-checkpoint".into())
            .spawn(move || {
                // A purge that could not finish yet.
                let mut purge_pending = false;
                loop {
                    match received.recv_timeout(CHECKPOINT_EVERY) {
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            let done = if purge_pending {
                                truncate_wal(&conn).inspect(|&ok| purge_pending = !ok)
                            } else {
                                conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                                    .map(|_| true)
                                    .map_err(Error::from)
                            };
                            if let Err(e) = done {
                                tracing::warn!(error = %e, "WAL checkpoint failed");
                            }
                        }
                        Ok(CheckpointRequest::Truncate(reply)) => {
                            let mut outcome = Ok(false);
                            for _ in 0..TRUNCATE_TRIES {
                                outcome = truncate_wal(&conn);
                                if !matches!(outcome, Ok(false)) {
                                    break;
                                }
                                std::thread::sleep(TRUNCATE_RETRY);
                            }
                            purge_pending = !matches!(outcome, Ok(true));
                            let _ = reply.send(outcome.and_then(|done| {
                                if done {
                                    Ok(())
                                } else {
                                    Err(Error::Backend(
                                        "the WAL could not be truncated yet (busy); retrying in the background"
                                            .into(),
                                    ))
                                }
                            }));
                        }
                        // Stopping: one last checkpoint so that the WAL is short for the next
                        // start (and empty if a purge is still pending).
                        Ok(CheckpointRequest::Stop) | Err(_) => {
                            let _ = if purge_pending {
                                truncate_wal(&conn).map(|_| ())
                            } else {
                                conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                                    .map_err(Error::from)
                            };
                            return;
                        }
                    }
                }
            })
            .map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self { requests, thread })
    }

    fn truncate(&self) -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.requests
            .send(CheckpointRequest::Truncate(tx))
            .map_err(|_| Error::Closed)?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    fn stop(self) {
        let _ = self.requests.send(CheckpointRequest::Stop);
        let _ = self.thread.join();
    }
}

/// The store's tag of server-issued ids, drawn at random on first use and kept in `meta`.
fn issued_id_tag(conn: &Connection) -> Result<u64> {
    let stored: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'issued_id_tag'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(tag) = stored {
        return Ok(tag as u64 & event_id::TAG_MASK);
    }
    use std::hash::BuildHasher;
    let tag = std::hash::RandomState::new().hash_one(now_ms()) & event_id::TAG_MASK;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('issued_id_tag', ?1)",
        [tag as i64],
    )?;
    Ok(tag)
}

fn migrate(conn: &mut Connection) -> Result<u32> {
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version as usize > MIGRATIONS.len() {
        return Err(Error::InvalidInput(format!(
            "the database has schema version {version}, newer than this binary supports ({}); upgrade bespoke",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(MIGRATIONS.len() as u32)
}

/// The SQLite-backed [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// This store's tag of server-issued event ids (see [`crate::event_id`]).
    id_tag: u64,
    models: crate::models::ModelDir,
    ops: Mutex<Option<Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<Checkpointer>>,
    readers: Mutex<Vec<Connection>>,
    options: StoreOptions,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, applies pending schema migrations and
    /// starts the writer thread.
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<Self> {
        crate::owner_only::create_dir_all(data_dir).map_err(|source| Error::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        // Created owner-only here, as SQLite would create it with the umask's mode; its WAL and
        // shared-memory files take the database file's mode.
        crate::owner_only::touch(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        for (wide, mode) in crate::owner_only::wider_than_owner(data_dir, DB_FILE) {
            tracing::warn!(
                path = %wide.display(),
                mode = format!("{mode:o}"),
                "readable by others than the owner; the data directory holds personal data (chmod go-rwx)"
            );
        }
        let mut conn = Connection::open(&path)?;
        // 16 KiB pages: fewer B-tree levels and page lookups per insert. Measured with
        // `bespoke bench`: import 262k -> 328k rows/s, HTTP ingest 69k -> 102k events/s
        // against the 4 KiB default. Only takes effect when the file is created.
        conn.execute_batch("PRAGMA page_size = 16384")?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Backend(
                format!(
                    "could not switch {} to WAL mode (got {mode})",
                    path.display()
                )
                .into(),
            ));
        }
        configure(&conn, options.cache_mib)?;
        migrate(&mut conn)?;
        if options.max_size_mib > 0 {
            let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let pages = (options.max_size_mib * 1024 * 1024 / page as u64).max(1);
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        }
        let id_tag = issued_id_tag(&conn)?;
        let writer = Writer::new(conn, id_tag)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let max_group = options.max_group_events;
        let writer = std::thread::Builder::new()
            .name("bespoke-store-writer".into())
            .spawn(move || writer.run(rx, max_group))
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        let checkpointer = Checkpointer::start(&path)?;
        Ok(Self {
            models: crate::models::ModelDir::new(data_dir),
            id_tag,
            path,
            ops: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some(checkpointer)),
            readers: Mutex::new(Vec::new()),
            options,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer after it has finished the requests already queued. Later writes fail
    /// with [`Error::Closed`]. Called on drop as well.
    pub fn close(&self) {
        drop(self.ops.lock().take());
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
        if let Some(c) = self.checkpointer.lock().take() {
            c.stop();
        }
    }

    fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let ops = self.ops.lock();
            let sender = ops.as_ref().ok_or(Error::Closed)?;
            sender.send(make(tx)).map_err(|_| Error::Closed)?;
        }
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Runs a write on the writer's connection, in a group transaction like every other write.
    fn exec<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.run_exec(f, Op::Exec)
    }

    /// Like [`SqliteStore::exec`] for a write made of one statement (plus reads): atomic by
    /// itself, so it runs without a savepoint.
    fn exec_single<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.run_exec(f, Op::ExecSingle)
    }

    fn run_exec<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
        op: fn(ExecFn, Reply<Box<dyn std::any::Any + Send>>) -> Op,
    ) -> Result<T> {
        let out = self.submit(|tx| {
            op(
                Box::new(move |c| f(c).map(|v| Box::new(v) as Box<dyn std::any::Any + Send>)),
                tx,
            )
        })?;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| Error::Corrupt("a write returned an unexpected type".into()))
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = match self.readers.lock().pop() {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&c, self.options.cache_mib.min(16))?;
                c
            }
        };
        let out = f(&conn);
        let mut pool = self.readers.lock();
        if pool.len() < self.options.read_pool {
            pool.push(conn);
        }
        out
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn read_user(conn: &Connection, key: &str) -> Result<Option<User>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, key, attributes, consent_personalization, created_at, updated_at, consent_training
         FROM users WHERE key = ?1",
    )?;
    let row = stmt
        .query_row([key], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, bool>(6)?,
            ))
        })
        .optional()?;
    row.map(user_from_row).transpose()
}

type UserRow = (i64, String, String, bool, i64, i64, bool);

fn user_from_row((id, key, attrs, consent, created, updated, training): UserRow) -> Result<User> {
    Ok(User {
        idx: UserIdx(to_u32(id, "users")?),
        key,
        attributes: parse_json(&attrs, "user attributes")?,
        consent: Consent {
            personalization: consent,
            training,
        },
        created_at: created,
        updated_at: updated,
    })
}

type ItemRow = (i64, String, String, String, String, String, bool, i64, i64);

const ITEM_COLUMNS: &str =
    "id, key, categories, text, numeric, attributes, available, created_at, updated_at";

fn item_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ItemRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn item_from_row(conn: &Connection, row: ItemRow) -> Result<Item> {
    let (id, key, cats, text, numeric, attrs, available, created, updated) = row;
    let mut embeddings = BTreeMap::new();
    let mut stmt =
        conn.prepare_cached("SELECT name, vector FROM item_embeddings WHERE item_id = ?1")?;
    let mut rows = stmt.query([id])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let blob: Vec<u8> = r.get(1)?;
        embeddings.insert(name, blob_to_vector(&blob)?);
    }
    Ok(Item {
        idx: ItemIdx(to_u32(id, "items")?),
        key,
        categories: parse_json(&cats, "item categories")?,
        text: parse_json(&text, "item text")?,
        numeric: parse_json(&numeric, "item numeric fields")?,
        attributes: parse_json(&attrs, "item attributes")?,
        embeddings,
        available,
        created_at: created,
        updated_at: updated,
    })
}

fn read_item(conn: &Connection, key: &str) -> Result<Option<Item>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {ITEM_COLUMNS} FROM items WHERE key = ?1"))?;
    let row = stmt.query_row([key], item_row).optional()?;
    row.map(|row| item_from_row(conn, row)).transpose()
}

/// An event id as stored: a blob for canonical UUIDs, text otherwise.
fn event_id_value(id: &str) -> rusqlite::types::Value {
    match parse_uuid(id) {
        Some(b) => rusqlite::types::Value::Blob(b.to_vec()),
        None => rusqlite::types::Value::Text(id.to_owned()),
    }
}

/// The public id of an event row: the stored client id, or the server-issued one recomputed
/// from the row's time and sequence number.
fn read_event_id(r: &rusqlite::Row<'_>, col: usize, tag: u64, ts: i64, seq: u64) -> Result<String> {
    use rusqlite::types::ValueRef;
    match r.get_ref(col)? {
        ValueRef::Null => Ok(format_uuid(&event_id::issued(tag, ts, seq))),
        ValueRef::Text(t) => String::from_utf8(t.to_vec())
            .map_err(|_| Error::Corrupt("event id is not UTF-8".into())),
        ValueRef::Blob(b) => b
            .try_into()
            .map(|b: [u8; 16]| format_uuid(&b))
            .map_err(|_| Error::Corrupt("event id blob is not 16 bytes".into())),
        _ => Err(Error::Corrupt("event id has an unexpected type".into())),
    }
}

fn event_context(text: Option<String>) -> Result<Option<Map<String, Value>>> {
    text.map(|t| parse_json(&t, "event context")).transpose()
}

impl Store for SqliteStore {
    fn save_model(&self, files: &[(&str, &[u8])], meta: &serde_json::Value) -> Result<u64> {
        self.models.save(files, meta)
    }

    fn list_models(&self) -> Result<Vec<crate::ModelRecord>> {
        self.models.list()
    }

    fn read_model_file(&self, version: u64, name: &str) -> Result<Vec<u8>> {
        self.models.read(version, name)
    }

    fn activate_model(&self, version: u64) -> Result<()> {
        self.models.activate(version)
    }

    fn active_model(&self) -> Result<Option<u64>> {
        self.models.active()
    }

    fn prune_models(&self, keep: usize) -> Result<Vec<u64>> {
        self.models.prune(keep)
    }

    fn delete_model(&self, version: u64) -> Result<()> {
        self.models.delete(version)
    }

    fn rewrite_model_file(&self, version: u64, name: &str, bytes: &[u8]) -> Result<()> {
        self.models.rewrite(version, name, bytes)
    }

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

    fn integrity_check(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare("PRAGMA integrity_check")?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().filter(|r| r != "ok").collect())
        })
    }

    fn delete_events_before(&self, before: Millis, limit: usize) -> Result<Vec<Interaction>> {
        self.exec(move |c| {
            // Old events sit mostly at the start of the log, so the scan for them stops early.
            let mut stmt = c.prepare_cached(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ts < ?1 LIMIT ?2)
                 RETURNING seq, user_id, item_id, kind, value, ts",
            )?;
            let mut rows = stmt.query(params![before, limit as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(Interaction {
                    seq: r.get::<_, i64>(0)? as u64,
                    user: UserIdx(to_u32(r.get(1)?, "users")?),
                    item: ItemIdx(to_u32(r.get(2)?, "items")?),
                    kind: r.get(3)?,
                    value: r.get(4)?,
                    timestamp: r.get(5)?,
                });
            }
            out.sort_by_key(|i| i.seq);
            Ok(out)
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

    fn purge_deleted(&self) -> Result<()> {
        match self.checkpointer.lock().as_ref() {
            Some(c) => c.truncate(),
            None => Err(Error::Closed),
        }
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

    fn save_erasure(
        &self,
        id: &str,
        requested_at: Millis,
        receipt: &serde_json::Value,
    ) -> Result<()> {
        let (id, receipt) = (id.to_owned(), json_text(receipt));
        self.exec(move |c| {
            c.prepare_cached(
                "INSERT INTO erasures (id, requested_at, receipt) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET receipt = excluded.receipt",
            )?
            .execute(params![id, requested_at, receipt])?;
            Ok(())
        })
    }

    fn erasure(&self, id: &str) -> Result<Option<serde_json::Value>> {
        self.read(|c| {
            let text: Option<String> = c
                .prepare_cached("SELECT receipt FROM erasures WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            text.map(|t| parse_json(&t, "erasure receipt")).transpose()
        })
    }

    fn erasures(&self) -> Result<Vec<(String, serde_json::Value)>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id, receipt FROM erasures ORDER BY requested_at, id")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, t)| Ok((id, parse_json(&t, "erasure receipt")?)))
                .collect()
        })
    }

    fn put_loop(&self, name: &str, config: &serde_json::Value) -> Result<LoopRecord> {
        let (name, config) = (name.to_owned(), config.clone());
        self.exec(move |c| bandit::put_loop(c, &name, &config, now_ms()))
    }

    fn get_loop(&self, name: &str) -> Result<Option<LoopRecord>> {
        self.read(|c| bandit::get_loop(c, name))
    }

    fn loops(&self) -> Result<Vec<LoopRecord>> {
        self.read(bandit::loops)
    }

    fn insert_decision(&self, decision: NewDecision) -> Result<Option<u64>> {
        self.exec_single(move |c| bandit::insert_decision(c, &decision))
    }

    fn decision(&self, id: &str) -> Result<Option<DecisionRecord>> {
        self.read(|c| bandit::decision(c, id))
    }

    fn activate_decision(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.exec(move |c| bandit::activate(c, &id))
    }

    fn insert_reward(&self, reward: NewReward) -> Result<RewardOutcome> {
        self.exec_single(move |c| bandit::insert_reward(c, &reward))
    }

    fn insert_rewards(
        &self,
        rewards: Vec<NewReward>,
        settle: Vec<String>,
    ) -> Result<Vec<RewardOutcome>> {
        self.exec(move |c| {
            let out = rewards
                .iter()
                .map(|r| bandit::insert_reward(c, r))
                .collect::<Result<Vec<_>>>()?;
            bandit::settle(c, &settle)?;
            Ok(out)
        })
    }

    fn open_decisions(
        &self,
        deadline_before: Option<Millis>,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>> {
        self.read(|c| bandit::open_decisions(c, deadline_before, limit))
    }

    fn loop_rewards(
        &self,
        loop_name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(RewardRecord, DecisionRecord)>> {
        self.read(|c| bandit::loop_rewards(c, loop_name, after, limit))
    }

    fn decision_log(&self, loop_name: &str, limit: usize) -> Result<Vec<DecisionRecord>> {
        self.read(|c| bandit::decision_log(c, loop_name, limit))
    }

    fn save_checkpoint(&self, loop_name: &str, reward_seq: u64, model: Vec<u8>) -> Result<()> {
        let name = loop_name.to_owned();
        self.exec(move |c| bandit::save_checkpoint(c, &name, reward_seq, &model, now_ms()))
    }

    fn checkpoint(&self, loop_name: &str) -> Result<Option<(u64, Vec<u8>)>> {
        self.read(|c| bandit::checkpoint(c, loop_name))
    }

    fn delete_checkpoint(&self, loop_name: &str) -> Result<()> {
        let name = loop_name.to_owned();
        self.exec(move |c| bandit::delete_checkpoint(c, &name))
    }

    fn delete_user_decisions(&self, user: &str) -> Result<(Vec<String>, u64)> {
        let user = user.to_owned();
        self.exec(move |c| bandit::delete_user_decisions(c, &user))
    }

    fn user_decisions(&self, user: &str) -> Result<Vec<DecisionRecord>> {
        self.read(|c| bandit::user_decisions(c, user))
    }

    fn loop_stats(&self, loop_name: &str) -> Result<LoopLogStats> {
        self.read(|c| bandit::loop_stats(c, loop_name))
    }

    fn delete_decisions_before(&self, before: Millis, limit: usize) -> Result<u64> {
        self.exec(move |c| bandit::delete_decisions_before(c, before, limit))
    }

    fn append_events(&self, batch: EventBatch) -> Result<Vec<Appended>> {
        if batch.events.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(|tx| Op::Append(batch, tx))
    }

    fn put_users(&self, users: Vec<UserUpsert>) -> Result<Vec<Upserted<User>>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(|tx| Op::PutUsers(users, tx))
    }

    fn get_user(&self, key: &str) -> Result<Option<User>> {
        self.read(|c| read_user(c, key))
    }

    fn delete_user(&self, key: &str) -> Result<Option<Deleted>> {
        self.submit(|tx| Op::DeleteUser(key.to_owned(), tx))
    }

    fn put_items(&self, items: Vec<ItemUpsert>) -> Result<Vec<Upserted<Item>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(|tx| Op::PutItems(items, tx))
    }

    fn get_item(&self, key: &str) -> Result<Option<Item>> {
        self.read(|c| read_item(c, key))
    }

    fn delete_item(&self, key: &str) -> Result<Option<Deleted>> {
        self.submit(|tx| Op::DeleteItem(key.to_owned(), tx))
    }

    fn user_events(
        &self,
        key: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Option<Page<Event>>> {
        self.read(|c| {
            let Some(user_id) = c
                .prepare_cached("SELECT id FROM users WHERE key = ?1")?
                .query_row([key], |r| r.get::<_, i64>(0))
                .optional()?
            else {
                return Ok(None);
            };
            let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
            let mut stmt = c.prepare_cached(
                "SELECT e.seq, e.event_id, i.key, e.kind, e.value, e.ts, e.context
                 FROM events e JOIN items i ON i.id = e.item_id
                 WHERE e.user_id = ?1 AND e.seq < ?2 ORDER BY e.seq DESC LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![user_id, before, limit as i64 + 1])?;
            let mut items = Vec::with_capacity(limit.min(1024));
            let mut more = false;
            while let Some(r) = rows.next()? {
                if items.len() == limit {
                    more = true;
                    break;
                }
                let (seq, ts) = (r.get::<_, i64>(0)? as u64, r.get::<_, i64>(5)?);
                items.push(Event {
                    seq,
                    event_id: read_event_id(r, 1, self.id_tag, ts, seq)?,
                    user: key.to_owned(),
                    item: r.get(2)?,
                    kind: r.get(3)?,
                    value: r.get(4)?,
                    timestamp: ts,
                    context: event_context(r.get(6)?)?,
                });
            }
            let next = if more {
                items.last().map(|e: &Event| e.seq)
            } else {
                None
            };
            Ok(Some(Page { items, next }))
        })
    }

    fn scan_interactions(&self, after: u64, limit: usize) -> Result<Vec<Interaction>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, user_id, item_id, kind, value, ts FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![after as i64, limit as i64])?;
            let mut out = Vec::with_capacity(limit.min(1 << 16));
            while let Some(r) = rows.next()? {
                out.push(Interaction {
                    seq: r.get::<_, i64>(0)? as u64,
                    user: UserIdx(to_u32(r.get(1)?, "users")?),
                    item: ItemIdx(to_u32(r.get(2)?, "items")?),
                    kind: r.get(3)?,
                    value: r.get(4)?,
                    timestamp: r.get(5)?,
                });
            }
            Ok(out)
        })
    }

    fn scan_events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT e.seq, e.event_id, u.key, i.key, e.kind, e.value, e.ts, e.context
                 FROM events e JOIN users u ON u.id = e.user_id JOIN items i ON i.id = e.item_id
                 WHERE e.seq > ?1 ORDER BY e.seq LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![after as i64, limit as i64])?;
            let mut out = Vec::with_capacity(limit.min(1 << 16));
            while let Some(r) = rows.next()? {
                let (seq, ts) = (r.get::<_, i64>(0)? as u64, r.get::<_, i64>(6)?);
                out.push(Event {
                    seq,
                    event_id: read_event_id(r, 1, self.id_tag, ts, seq)?,
                    user: r.get(2)?,
                    item: r.get(3)?,
                    kind: r.get(4)?,
                    value: r.get(5)?,
                    timestamp: ts,
                    context: event_context(r.get(7)?)?,
                });
            }
            Ok(out)
        })
    }

    fn scan_users(&self, after: Option<UserIdx>, limit: usize) -> Result<Vec<User>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, key, attributes, consent_personalization, created_at, updated_at, consent_training
                 FROM users WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let after = after.map_or(-1, |u| u.0 as i64);
            let rows = stmt
                .query_map(params![after, limit as i64], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<UserRow>>>()?;
            rows.into_iter().map(user_from_row).collect()
        })
    }

    fn scan_items(&self, after: Option<ItemIdx>, limit: usize) -> Result<Vec<Item>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ITEM_COLUMNS} FROM items WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let after = after.map_or(-1, |i| i.0 as i64);
            let rows = stmt
                .query_map(params![after, limit as i64], item_row)?
                .collect::<rusqlite::Result<Vec<ItemRow>>>()?;
            rows.into_iter().map(|row| item_from_row(c, row)).collect()
        })
    }

    fn stats(&self) -> Result<StoreStats> {
        let mut stats = self.read(|c| {
            let count = |table: &str| -> Result<u64> {
                Ok(
                    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                        r.get::<_, i64>(0)
                    })? as u64,
                )
            };
            let mut events_by_kind = BTreeMap::new();
            let mut stmt = c.prepare("SELECT kind, count(*) FROM events GROUP BY kind")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                events_by_kind.insert(r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64);
            }
            let range: (Option<i64>, Option<i64>) =
                c.query_row("SELECT min(ts), max(ts) FROM events", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            Ok(StoreStats {
                users: count("users")?,
                items: count("items")?,
                events: count("events")?,
                events_by_kind,
                time_range: range.0.zip(range.1),
                bytes_on_disk: 0,
                schema_version: c.query_row("PRAGMA user_version", [], |r| r.get(0))?,
            })
        })?;
        stats.bytes_on_disk = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let mut p = self.path.as_os_str().to_owned();
                p.push(suffix);
                std::fs::metadata(p).ok().map(|m| m.len())
            })
            .sum();
        Ok(stats)
    }
}

/// The two keyed tables events refer to.
#[derive(Debug, Clone, Copy)]
enum Table {
    Users,
    Items,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Items => "items",
        }
    }

    fn select(self) -> &'static str {
        match self {
            Table::Users => "SELECT id FROM users WHERE key = ?1",
            Table::Items => "SELECT id FROM items WHERE key = ?1",
        }
    }

    /// Inserts a row with default fields; parameters: key, flag, second flag, now.
    fn insert(self) -> &'static str {
        match self {
            Table::Users => {
                "INSERT INTO users (key, attributes, consent_personalization, consent_training, created_at, updated_at)
                 VALUES (?1, '{}', ?2, ?3, ?4, ?4)"
            }
            Table::Items => {
                "INSERT INTO items (key, categories, text, numeric, attributes, available, created_at, updated_at)
                 VALUES (?1, '[]', '{}', '{}', '{}', ?2 AND ?3, ?4, ?4)"
            }
        }
    }
}

/// The single writer: owns the write connection and memoises key → id lookups.
struct Writer {
    conn: Connection,
    users: HashMap<String, u32>,
    items: HashMap<String, u32>,
    /// Keys whose memo entry the current request changed; dropped if the request rolls back.
    touched_users: Vec<String>,
    touched_items: Vec<String>,
    /// Sequence number of the next event; persisted at commit when it moved.
    next_seq: i64,
    /// This store's tag of server-issued event ids.
    id_tag: u64,
    persisted_seq: i64,
}

impl Writer {
    fn new(conn: Connection, id_tag: u64) -> Result<Self> {
        let stored: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'next_event_seq'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let max: Option<i64> = conn.query_row("SELECT max(seq) FROM events", [], |r| r.get(0))?;
        let next_seq = stored.unwrap_or(1).max(max.unwrap_or(0) + 1);
        Ok(Self {
            conn,
            users: HashMap::new(),
            items: HashMap::new(),
            touched_users: Vec::new(),
            touched_items: Vec::new(),
            next_seq,
            id_tag,
            persisted_seq: stored.unwrap_or(0),
        })
    }

    fn run(mut self, rx: Receiver<Op>, max_group: usize) {
        while let Ok(first) = rx.recv() {
            let mut size = first.size();
            let mut ops = vec![first];
            while size < max_group {
                match rx.try_recv() {
                    Ok(op) => {
                        size += op.size();
                        ops.push(op);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(ops);
        }
    }

    fn commit_group(&mut self, ops: Vec<Op>) {
        let group = ops.len();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let e = Error::from(e);
            for op in ops {
                op.failed(repeat_error(&e)).send(&Ok(()));
            }
            return;
        }
        let mut done = Vec::with_capacity(ops.len());
        // Some failures (a full disk, an I/O error) make SQLite roll the whole transaction back,
        // not just the statement: then nothing of the group is kept, every request in it must
        // hear so, and the rest must not run outside the group's transaction.
        let mut lost: Option<Error> = None;
        for op in ops {
            if let Some(e) = &lost {
                done.push(op.failed(repeat_error(e)));
                continue;
            }
            let d = self.isolated(op);
            if self.conn.is_autocommit() {
                lost = Some(d.error().map_or_else(
                    || Error::Backend("the transaction was rolled back".into()),
                    repeat_error,
                ));
            }
            done.push(d);
        }
        let commit = match lost {
            Some(e) => Err(e),
            None => self
                .persist_seq()
                .and_then(|()| self.conn.execute_batch("COMMIT").map_err(Error::from)),
        };
        if commit.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
            // The memo may hold ids that were never committed.
            self.users.clear();
            self.items.clear();
            self.persisted_seq = 0;
            tracing::error!(group, "group commit failed");
        }
        for d in done {
            d.send(&commit);
        }
    }

    fn persist_seq(&mut self) -> Result<()> {
        if self.next_seq != self.persisted_seq {
            self.conn
                .prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('next_event_seq', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute([self.next_seq])?;
            self.persisted_seq = self.next_seq;
        }
        Ok(())
    }

    /// Runs one request inside a savepoint, rolling back just its changes if it fails.
    fn isolated(&mut self, op: Op) -> Done {
        if let Op::ExecSingle(f, tx) = op {
            return Done::Exec(tx, f(&self.conn));
        }
        self.touched_users.clear();
        self.touched_items.clear();
        if let Err(e) = self
            .conn
            .prepare_cached("SAVEPOINT op")
            .and_then(|mut s| s.execute([]))
        {
            return op.failed(Error::from(e));
        }
        let done = match op {
            Op::Append(batch, tx) => Done::Append(tx, self.append(batch)),
            Op::PutUsers(u, tx) => {
                Done::PutUsers(tx, u.into_iter().map(|u| self.put_user(u)).collect())
            }
            Op::DeleteUser(k, tx) => Done::DeleteUser(tx, self.delete_user(&k)),
            Op::PutItems(i, tx) => {
                Done::PutItems(tx, i.into_iter().map(|i| self.put_item(i)).collect())
            }
            Op::DeleteItem(k, tx) => Done::DeleteItem(tx, self.delete_item(&k)),
            Op::Exec(f, tx) => Done::Exec(tx, f(&self.conn)),
            Op::ExecSingle(..) => unreachable!("handled above"),
        };
        if done.is_ok() {
            if let Err(e) = self
                .conn
                .prepare_cached("RELEASE op")
                .and_then(|mut s| s.execute([]))
            {
                tracing::error!(error = %e, "releasing a savepoint failed");
            }
        } else {
            let _ = self.conn.execute_batch("ROLLBACK TO op; RELEASE op");
            for k in self.touched_users.drain(..) {
                self.users.remove(&k);
            }
            for k in self.touched_items.drain(..) {
                self.items.remove(&k);
            }
        }
        done
    }

    fn user_id(
        &mut self,
        key: &str,
        create: Option<(Consent, Millis)>,
    ) -> Result<Option<(u32, bool)>> {
        let create = create.map(|(consent, now)| (consent.personalization, consent.training, now));
        self.resolve(Table::Users, key, create)
    }

    fn item_id(&mut self, key: &str, create: Option<Millis>) -> Result<Option<(u32, bool)>> {
        self.resolve(Table::Items, key, create.map(|now| (true, true, now)))
    }

    /// The id of `key` in `table` (from the memo or the database), creating the row when
    /// `create` gives `(flag, flag, now)`: a user's two consent flags, or an item's availability
    /// (twice). Returns whether it was created.
    fn resolve(
        &mut self,
        table: Table,
        key: &str,
        create: Option<(bool, bool, Millis)>,
    ) -> Result<Option<(u32, bool)>> {
        let (memo, touched) = match table {
            Table::Users => (&mut self.users, &mut self.touched_users),
            Table::Items => (&mut self.items, &mut self.touched_items),
        };
        if let Some(&id) = memo.get(key) {
            return Ok(Some((id, false)));
        }
        let found: Option<i64> = self
            .conn
            .prepare_cached(table.select())?
            .query_row([key], |r| r.get(0))
            .optional()?;
        let (id, created) = match (found, create) {
            (Some(id), _) => (to_u32(id, table.name())?, false),
            (None, None) => return Ok(None),
            (None, Some((flag, flag2, now))) => {
                self.conn
                    .prepare_cached(table.insert())?
                    .execute(params![key, flag, flag2, now])?;
                (to_u32(self.conn.last_insert_rowid(), table.name())?, true)
            }
        };
        memo.insert(key.to_owned(), id);
        touched.push(key.to_owned());
        Ok(Some((id, created)))
    }

    fn append(&mut self, batch: EventBatch) -> Result<Vec<Appended>> {
        let now = batch.now.unwrap_or_else(now_ms);
        // Resolve (and create) users and items first, so that the insert loop below can hold its
        // prepared statements.
        let mut resolved = Vec::with_capacity(batch.events.len());
        for (index, e) in batch.events.iter().enumerate() {
            let create_user = batch.create_users.then_some((batch.default_consent, now));
            let Some(user) = self.user_id(&e.user, create_user)? else {
                return Err(Error::UnknownUser {
                    index,
                    key: e.user.clone(),
                });
            };
            let Some(item) = self.item_id(&e.item, batch.create_items.then_some(now))? else {
                return Err(Error::UnknownItem {
                    index,
                    key: e.item.clone(),
                });
            };
            resolved.push((user, item));
        }
        // Events with a client id go through the unique index; events without one stay out of
        // it (their id is derived from the row, see `crate::event_id`).
        let mut insert_with_id = self.conn.prepare_cached(
            "INSERT INTO events (seq, event_id, user_id, item_id, kind, value, ts, context, fingerprint)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING",
        )?;
        let mut insert_issued = self.conn.prepare_cached(
            "INSERT INTO events (seq, event_id, user_id, item_id, kind, value, ts, context, fingerprint)
             VALUES (?1, NULL, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut by_id = self
            .conn
            .prepare_cached("SELECT seq, fingerprint, ts FROM events WHERE event_id = ?1")?;
        let mut by_seq = self.conn.prepare_cached(
            "SELECT fingerprint, ts FROM events WHERE seq = ?1 AND event_id IS NULL",
        )?;
        let mut out = Vec::with_capacity(batch.events.len());
        for (index, (e, ((user, created_user), (item, created_item)))) in
            batch.events.into_iter().zip(resolved).enumerate()
        {
            let fp = fingerprint(&e);
            let timestamp = e.timestamp.unwrap_or(now);
            let context = e.context.as_ref().map(json_text);
            let seq = self.next_seq;
            let new = |event_id: String, seq: i64, timestamp: i64| Appended {
                event_id,
                seq: seq as u64,
                user: UserIdx(user),
                item: ItemIdx(item),
                timestamp,
                duplicate: false,
                created_user,
                created_item,
            };
            let Some(id) = e.event_id else {
                if seq as u64 > event_id::MAX_SEQ {
                    return Err(Error::InvalidInput(
                        "the event log is full (2^40 events)".into(),
                    ));
                }
                insert_issued.execute(params![
                    seq,
                    user,
                    item,
                    e.kind,
                    e.value,
                    timestamp,
                    context,
                    &fp[..]
                ])?;
                self.next_seq += 1;
                out.push(new(
                    format_uuid(&event_id::issued(self.id_tag, timestamp, seq as u64)),
                    seq,
                    timestamp,
                ));
                continue;
            };
            let stored_id = event_id_value(&id);
            // A server-issued id sent back: a replay of that event, or not ours to use.
            if let Some((_, issued_seq)) =
                parse_uuid(&id).and_then(|b| event_id::decode_issued(self.id_tag, &b))
            {
                let original: Option<(Vec<u8>, i64)> = by_seq
                    .query_row([issued_seq as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                match original {
                    Some((stored_fp, ts))
                        if format_uuid(&event_id::issued(self.id_tag, ts, issued_seq)) == id =>
                    {
                        if stored_fp != fp {
                            return Err(Error::EventConflict {
                                index,
                                event_id: id,
                            });
                        }
                        out.push(Appended {
                            duplicate: true,
                            ..new(id, issued_seq as i64, ts)
                        });
                        continue;
                    }
                    // An id this store issued for an event since erased (an export imported
                    // back): its sequence number is in the past and will never be issued again,
                    // so it is safe to keep as a client id.
                    None if (issued_seq as i64) < self.next_seq => {}
                    _ => {
                        return Err(Error::ReservedEventId {
                            index,
                            event_id: id,
                        });
                    }
                }
            }
            let inserted = insert_with_id.execute(params![
                seq,
                stored_id,
                user,
                item,
                e.kind,
                e.value,
                timestamp,
                context,
                &fp[..]
            ])?;
            if inserted == 1 {
                self.next_seq += 1;
                out.push(new(id, seq, timestamp));
                continue;
            }
            let (seq, stored_fp, stored_ts): (i64, Vec<u8>, i64) =
                by_id.query_row([&stored_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            if stored_fp != fp {
                return Err(Error::EventConflict {
                    index,
                    event_id: id,
                });
            }
            out.push(Appended {
                duplicate: true,
                ..new(id, seq, stored_ts)
            });
        }
        Ok(out)
    }

    fn put_user(&mut self, u: UserUpsert) -> Result<Upserted<User>> {
        let now = u.restore_times.map_or_else(now_ms, |t| t.1);
        let created_at = u.restore_times.map_or(now, |t| t.0);
        let existing = read_user(&self.conn, &u.key)?;
        let created = existing.is_none();
        let base = existing.as_ref().map_or(u.default_consent, |e| e.consent);
        let consent = Consent {
            personalization: u.consent.personalization.unwrap_or(base.personalization),
            training: u.consent.training.unwrap_or(base.training),
        };
        let attrs = json_text(&u.attributes);
        match &existing {
            Some(e) => {
                self.conn
                    .prepare_cached(
                        "UPDATE users SET attributes = ?2, consent_personalization = ?3, updated_at = ?4,
                         consent_training = ?5 WHERE id = ?1",
                    )?
                    .execute(params![e.idx.0, attrs, consent.personalization, now, consent.training])?;
            }
            None => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO users (key, attributes, consent_personalization, created_at, updated_at,
                         consent_training) VALUES (?1, ?2, ?3, ?4, ?6, ?5)",
                    )?
                    .execute(params![u.key, attrs, consent.personalization, created_at, consent.training, now])?;
            }
        }
        let record = read_user(&self.conn, &u.key)?
            .ok_or_else(|| Error::Corrupt("user vanished after upsert".into()))?;
        self.users.insert(u.key.clone(), record.idx.0);
        self.touched_users.push(u.key);
        Ok(Upserted { record, created })
    }

    fn delete_user(&mut self, key: &str) -> Result<Option<Deleted>> {
        self.users.remove(key);
        self.touched_users.push(key.to_owned());
        let Some(id) = self
            .conn
            .prepare_cached("SELECT id FROM users WHERE key = ?1")?
            .query_row([key], |r| r.get::<_, i64>(0))
            .optional()?
        else {
            return Ok(None);
        };
        let events = self
            .conn
            .prepare_cached("DELETE FROM events WHERE user_id = ?1")?
            .execute([id])?;
        self.conn
            .prepare_cached("DELETE FROM users WHERE id = ?1")?
            .execute([id])?;
        Ok(Some(Deleted {
            idx: to_u32(id, "users")?,
            events: events as u64,
        }))
    }

    fn put_item(&mut self, it: ItemUpsert) -> Result<Upserted<Item>> {
        let now = now_ms();
        for (name, vector) in &it.embeddings {
            let dim: Option<i64> = self
                .conn
                .prepare_cached("SELECT dim FROM embedding_spaces WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?;
            match dim {
                Some(d) if d as usize != vector.len() => {
                    return Err(Error::DimensionMismatch {
                        name: name.clone(),
                        expected: d as usize,
                        got: vector.len(),
                    });
                }
                Some(_) => {}
                None => {
                    self.conn
                        .prepare_cached("INSERT INTO embedding_spaces (name, dim) VALUES (?1, ?2)")?
                        .execute(params![name, vector.len() as i64])?;
                }
            }
        }
        let existing: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM items WHERE key = ?1")?
            .query_row([&it.key], |r| r.get(0))
            .optional()?;
        let fields = (
            json_text(&it.categories),
            json_text(&it.text),
            json_text(&it.numeric),
            json_text(&it.attributes),
        );
        let id = match existing {
            Some(id) => {
                self.conn
                    .prepare_cached(
                        "UPDATE items SET categories = ?2, text = ?3, numeric = ?4, attributes = ?5,
                         available = ?6, updated_at = ?7 WHERE id = ?1",
                    )?
                    .execute(params![id, fields.0, fields.1, fields.2, fields.3, it.available, now])?;
                self.conn
                    .prepare_cached("DELETE FROM item_embeddings WHERE item_id = ?1")?
                    .execute([id])?;
                id
            }
            None => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO items (key, categories, text, numeric, attributes, available, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                    )?
                    .execute(params![it.key, fields.0, fields.1, fields.2, fields.3, it.available, now])?;
                self.conn.last_insert_rowid()
            }
        };
        to_u32(id, "items")?;
        for (name, vector) in &it.embeddings {
            self.conn
                .prepare_cached(
                    "INSERT INTO item_embeddings (item_id, name, vector) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![id, name, vector_to_blob(vector)])?;
        }
        let record = read_item(&self.conn, &it.key)?
            .ok_or_else(|| Error::Corrupt("item vanished after upsert".into()))?;
        self.items.insert(it.key.clone(), record.idx.0);
        self.touched_items.push(it.key);
        Ok(Upserted {
            record,
            created: existing.is_none(),
        })
    }

    fn delete_item(&mut self, key: &str) -> Result<Option<Deleted>> {
        self.items.remove(key);
        self.touched_items.push(key.to_owned());
        let Some(id) = self
            .conn
            .prepare_cached("SELECT id FROM items WHERE key = ?1")?
            .query_row([key], |r| r.get::<_, i64>(0))
            .optional()?
        else {
            return Ok(None);
        };
        // No index on events(item_id): it would slow every insert for the sake of a rare
        // deletion, which scans the log instead.
        let events = self
            .conn
            .prepare_cached("DELETE FROM events WHERE item_id = ?1")?
            .execute([id])?;
        self.conn
            .prepare_cached("DELETE FROM item_embeddings WHERE item_id = ?1")?
            .execute([id])?;
        self.conn
            .prepare_cached("DELETE FROM items WHERE id = ?1")?
            .execute([id])?;
        Ok(Some(Deleted {
            idx: to_u32(id, "items")?,
            events: events as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path(), StoreOptions::default()).expect("open store");
        (dir, store)
    }

    fn ev(id: &str, user: &str, item: &str) -> NewEvent {
        NewEvent {
            event_id: Some(id.into()),
            timestamp: Some(1_000),
            ..NewEvent::new(user, item, "view")
        }
    }

    #[test]
    fn replay_is_stored_once_and_conflict_rolls_back_the_batch() {
        let (_d, s) = open();
        let first = s
            .append_events(EventBatch::new(vec![ev("e1", "u", "i")]))
            .unwrap();
        assert!(!first[0].duplicate);
        let again = s
            .append_events(EventBatch::new(vec![ev("e1", "u", "i")]))
            .unwrap();
        assert!(again[0].duplicate);
        assert_eq!(again[0].seq, first[0].seq);
        assert_eq!(s.stats().unwrap().events, 1);

        // Same id, different item: the whole batch fails and its new event is not kept.
        let err = s
            .append_events(EventBatch::new(vec![
                ev("e2", "u", "i"),
                ev("e1", "u", "other"),
            ]))
            .unwrap_err();
        assert!(matches!(err, Error::EventConflict { index: 1, ref event_id } if event_id == "e1"));
        assert!(err.is_user_error());
        assert_eq!(s.stats().unwrap().events, 1);
        assert!(
            s.get_item("other").unwrap().is_none(),
            "item created by a failed batch"
        );

        // The same id twice within one batch.
        let out = s
            .append_events(EventBatch::new(vec![
                ev("e3", "u", "i"),
                ev("e3", "u", "i"),
            ]))
            .unwrap();
        assert_eq!((out[0].duplicate, out[1].duplicate), (false, true));
    }

    #[test]
    fn generated_ids_and_default_timestamp() {
        let (_d, s) = open();
        let mut batch = EventBatch::new(vec![NewEvent::new("u", "i", "click"); 3]);
        batch.now = Some(42);
        let out = s.append_events(batch).unwrap();
        assert_eq!(out.len(), 3);
        assert!(out[0].event_id < out[1].event_id && out[1].event_id < out[2].event_id);
        assert!(out.iter().all(|a| a.timestamp == 42 && !a.duplicate));
        assert!(out[0].created_user && out[0].created_item && !out[1].created_user);
    }

    #[test]
    fn server_issued_ids_read_back_replay_and_cannot_be_forged() {
        let (_d, s) = open();
        let mut e = NewEvent::new("u", "i", "view");
        e.timestamp = Some(1_700_000_000_000);
        let out = s.append_events(EventBatch::new(vec![e.clone()])).unwrap();
        let issued = out[0].event_id.clone();
        let page = s.user_events("u", None, 10).unwrap().unwrap();
        assert_eq!(
            page.items[0].event_id, issued,
            "the id reads back from the row"
        );
        assert_eq!(s.scan_events(0, 10).unwrap()[0].event_id, issued);
        // Sent back with the same payload: a replay, stored once.
        let replay = NewEvent {
            event_id: Some(issued.clone()),
            ..e.clone()
        };
        let again = s
            .append_events(EventBatch::new(vec![replay.clone()]))
            .unwrap();
        assert!(again[0].duplicate);
        assert_eq!((again[0].seq, &again[0].event_id), (out[0].seq, &issued));
        // With another payload: a conflict.
        let other = NewEvent {
            item: "j".into(),
            ..replay
        };
        assert!(matches!(
            s.append_events(EventBatch::new(vec![other])),
            Err(Error::EventConflict { .. })
        ));
        // An id in the issued format that this server never issued is refused.
        let forged = format_uuid(&event_id::issued(s.id_tag, 1_700_000_000_000, 999));
        let forged = NewEvent {
            event_id: Some(forged),
            ..e.clone()
        };
        let err = s.append_events(EventBatch::new(vec![forged])).unwrap_err();
        assert!(matches!(err, Error::ReservedEventId { index: 0, .. }) && err.is_user_error());
        assert_eq!(s.stats().unwrap().events, 1);
        // An erased event imported back keeps its issued id, once.
        s.delete_user(&e.user).unwrap().unwrap();
        let restore = NewEvent {
            event_id: Some(issued.clone()),
            ..e.clone()
        };
        let back = s
            .append_events(EventBatch::new(vec![restore.clone()]))
            .unwrap();
        assert!(!back[0].duplicate);
        assert_eq!(back[0].event_id, issued);
        assert!(s.append_events(EventBatch::new(vec![restore])).unwrap()[0].duplicate);
        assert_eq!(s.stats().unwrap().events, 1);
    }

    #[test]
    fn unknown_user_is_refused_when_creation_is_off() {
        let (_d, s) = open();
        s.append_events(EventBatch::new(vec![ev("a", "known", "i")]))
            .unwrap();
        let mut batch = EventBatch::new(vec![ev("b", "known", "i"), ev("c", "stranger", "i")]);
        batch.create_users = false;
        let err = s.append_events(batch).unwrap_err();
        assert!(matches!(err, Error::UnknownUser { index: 1, .. }));
        assert_eq!(s.stats().unwrap().events, 1);
        let mut batch = EventBatch::new(vec![ev("d", "known", "new-item")]);
        batch.create_items = false;
        assert!(matches!(
            s.append_events(batch),
            Err(Error::UnknownItem { index: 0, .. })
        ));
    }

    #[test]
    fn users_upsert_merge_consent_and_delete_with_events() {
        let (_d, s) = open();
        let mut attrs = Map::new();
        attrs.insert("plan".into(), Value::from("pro"));
        let up = UserUpsert {
            key: "ann".into(),
            attributes: attrs.clone(),
            consent: ConsentUpdate::default(),
            default_consent: Consent {
                personalization: false,
                training: true,
            },
            restore_times: None,
        };
        let created = s.put_user(up.clone()).unwrap();
        assert!(created.created);
        assert!(!created.record.consent.personalization);
        let updated = s
            .put_user(UserUpsert {
                consent: ConsentUpdate {
                    personalization: Some(true),
                    training: Some(false),
                },
                attributes: Map::new(),
                ..up.clone()
            })
            .unwrap();
        assert!(!updated.created);
        assert_eq!(updated.record.idx, created.record.idx);
        assert!(updated.record.consent.personalization);
        assert!(!updated.record.consent.training);
        assert!(updated.record.attributes.is_empty());
        // Consent not mentioned keeps its value.
        let kept = s
            .put_user(UserUpsert {
                attributes: attrs,
                ..up
            })
            .unwrap();
        assert!(kept.record.consent.personalization);
        assert!(!kept.record.consent.training);

        s.append_events(EventBatch::new(vec![
            ev("x1", "ann", "i"),
            ev("x2", "ann", "j"),
            ev("x3", "bob", "i"),
        ]))
        .unwrap();
        let del = s.delete_user("ann").unwrap().unwrap();
        assert_eq!(del.events, 2);
        assert!(s.get_user("ann").unwrap().is_none());
        assert!(s.delete_user("ann").unwrap().is_none());
        assert_eq!(s.stats().unwrap().events, 1);
        // A deleted id is never handed out again, and the writer's memo forgot the key.
        s.append_events(EventBatch::new(vec![ev("x4", "ann", "i")]))
            .unwrap();
        let again = s.get_user("ann").unwrap().unwrap();
        assert!(again.idx.0 > del.idx);
    }

    fn wrong_dim(item: &ItemUpsert) -> ItemUpsert {
        let mut w = item.clone();
        w.key = "sku-wrong".into();
        w.embeddings.insert("text".into(), vec![0.0; 7]);
        w
    }

    #[test]
    fn items_embeddings_have_fixed_dimensions() {
        let (_d, s) = open();
        let mut item = ItemUpsert {
            key: "sku-1".into(),
            categories: vec!["books".into()],
            available: true,
            ..Default::default()
        };
        item.text.insert("title".into(), "Dune".into());
        item.numeric.insert("price".into(), 9.5);
        item.embeddings.insert("text".into(), vec![0.5, -1.0, 2.0]);
        let put = s.put_item(item.clone()).unwrap();
        assert!(put.created);
        let got = s.get_item("sku-1").unwrap().unwrap();
        assert_eq!(got.embeddings["text"], vec![0.5, -1.0, 2.0]);
        assert_eq!(got.text["title"], "Dune");
        assert_eq!(got.categories, vec!["books"]);

        let mut wrong = item.clone();
        wrong.key = "sku-2".into();
        wrong.embeddings.insert("text".into(), vec![1.0; 4]);
        let err = s.put_item(wrong).unwrap_err();
        assert!(matches!(
            err,
            Error::DimensionMismatch {
                expected: 3,
                got: 4,
                ..
            }
        ));
        assert!(s.get_item("sku-2").unwrap().is_none());

        // A batch is all or nothing.
        let ok = ItemUpsert {
            key: "sku-3".into(),
            ..Default::default()
        };
        let err = s.put_items(vec![ok, wrong_dim(&item)]).unwrap_err();
        assert!(matches!(err, Error::DimensionMismatch { .. }));
        assert!(s.get_item("sku-3").unwrap().is_none());

        // Replacing drops embeddings that are no longer given.
        item.embeddings.clear();
        item.available = false;
        let put = s.put_item(item).unwrap();
        assert!(!put.created && put.record.embeddings.is_empty() && !put.record.available);

        s.append_events(EventBatch::new(vec![ev("y1", "u", "sku-1")]))
            .unwrap();
        assert_eq!(s.delete_item("sku-1").unwrap().unwrap().events, 1);
        assert_eq!(s.stats().unwrap().events, 0);
    }

    #[test]
    fn user_events_paginate_newest_first() {
        let (_d, s) = open();
        let events: Vec<NewEvent> = (0..25)
            .map(|i| ev(&format!("p{i}"), "u", &format!("i{}", i % 4)))
            .collect();
        s.append_events(EventBatch::new(events)).unwrap();
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = s.user_events("u", before, 10).unwrap().unwrap();
            seen.extend(page.items.iter().map(|e| e.event_id.clone()));
            match page.next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        let expected: Vec<String> = (0..25).rev().map(|i| format!("p{i}")).collect();
        assert_eq!(seen, expected);
        assert!(s.user_events("nobody", None, 10).unwrap().is_none());
    }

    #[test]
    fn concurrent_writers_all_commit_and_reopen_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = std::sync::Arc::new(
                SqliteStore::open(dir.path(), StoreOptions::default()).unwrap(),
            );
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        for b in 0..20 {
                            let events = (0..10)
                                .map(|i| {
                                    ev(&format!("t{t}b{b}i{i}"), &format!("u{t}"), &format!("i{i}"))
                                })
                                .collect();
                            s.append_events(EventBatch::new(events)).unwrap();
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(s.stats().unwrap().events, 1600);
        }
        let s = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        let stats = s.stats().unwrap();
        assert_eq!((stats.events, stats.users, stats.items), (1600, 8, 10));
        assert_eq!(stats.schema_version, MIGRATIONS.len() as u32);
        let scanned = s.scan_interactions(0, 10_000).unwrap();
        assert!(scanned.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(
            s.scan_events(scanned[99].seq, 5).unwrap()[0].seq,
            scanned[100].seq
        );
    }

    #[test]
    fn sequence_numbers_are_never_reused_across_deletes_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let last = {
            let s = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
            s.append_events(EventBatch::new(vec![ev("a", "keep", "i")]))
                .unwrap();
            let out = s
                .append_events(EventBatch::new(vec![ev("b", "gone", "i")]))
                .unwrap();
            s.delete_user("gone").unwrap();
            out[0].seq
        };
        let s = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        let out = s
            .append_events(EventBatch::new(vec![ev("c", "new", "i")]))
            .unwrap();
        assert!(out[0].seq > last, "{} reused", out[0].seq);
        // A UUID-shaped client id round-trips exactly, as does any other string.
        let uuid = "0190a6b2-1234-7abc-8def-0123456789ab";
        s.append_events(EventBatch::new(vec![
            ev(uuid, "new", "i"),
            ev("Plain-Id", "new", "i"),
        ]))
        .unwrap();
        let page = s.user_events("new", None, 10).unwrap().unwrap();
        let ids: Vec<&str> = page.items.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, vec!["Plain-Id", uuid, "c"]);
    }

    #[test]
    fn writes_after_close_fail_cleanly() {
        let (_d, s) = open();
        s.close();
        assert!(matches!(
            s.append_events(EventBatch::new(vec![ev("z", "u", "i")])),
            Err(Error::Closed)
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Against a model of idempotency: a new id is stored, a replay is a duplicate, a reuse
        /// with another payload conflicts and changes nothing.
        #[test]
        fn idempotency_matches_model(ops in proptest::collection::vec((0u8..6, 0u8..3), 1..40)) {
            let (_d, s) = open();
            let mut model: HashMap<String, String> = HashMap::new();
            for (id, item) in ops {
                let (id, item) = (format!("id{id}"), format!("item{item}"));
                let result = s.append_events(EventBatch::new(vec![ev(&id, "u", &item)]));
                match model.get(&id) {
                    None => {
                        prop_assert!(!result.unwrap()[0].duplicate);
                        model.insert(id, item);
                    }
                    Some(stored) if *stored == item => prop_assert!(result.unwrap()[0].duplicate),
                    Some(_) => {
                        let is_conflict = matches!(result, Err(Error::EventConflict { .. }));
                        prop_assert!(is_conflict);
                    }
                }
            }
            prop_assert_eq!(s.stats().unwrap().events, model.len() as u64);
        }
    }
}

#[cfg(test)]
mod full_tests {
    use super::*;

    /// Past the size cap, a write fails as on a full disk and stores nothing; earlier writes stay.
    #[test]
    fn a_full_store_refuses_writes_and_keeps_committed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(
            dir.path(),
            StoreOptions {
                max_size_mib: 2,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let mut stored = 0u64;
        let err = loop {
            let events = (0..100)
                .map(|i| {
                    let mut e = NewEvent::new(
                        format!("user-{stored}-{i}-{}", "x".repeat(60)),
                        format!("item-{i}"),
                        "view",
                    );
                    let mut ctx = Map::new();
                    ctx.insert("page".into(), Value::String("p".repeat(100)));
                    e.context = Some(ctx);
                    e
                })
                .collect();
            match s.append_events(EventBatch::new(events)) {
                Ok(out) => stored += out.len() as u64,
                Err(e) => break e,
            }
            assert!(stored < 1_000_000, "never full");
        };
        assert!(matches!(err, Error::StorageFull), "{err:?}");
        assert_eq!(s.stats().unwrap().events, stored);
        assert!(s.integrity_check().unwrap().is_empty());
    }
}
