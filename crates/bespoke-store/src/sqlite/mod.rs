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

use crate::event_id::{self, format_uuid, parse_uuid};
use crate::fingerprint::fingerprint;
use crate::model::*;
use crate::{AuditEntry, Error, ItemIdx, KeyRecord, Millis, NewAudit, NewKey, Result, UserIdx};

/// Name of the database file inside the data directory.
const DB_FILE: &str = "bespoke.db";

/// The database file of the store in `data_dir`: for [`crate::migrate`], which reads it
/// directly (read-only), without opening the store.
#[cfg(feature = "postgres")]
pub(crate) fn database_file(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// The schema version this binary creates (`PRAGMA user_version`): the one whose tables
/// [`crate::migrate`] knows how to copy.
#[cfg(feature = "postgres")]
pub(crate) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

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
    decisions::MIGRATION,
    rules::MIGRATION,
    // Marketing consent (audiences): allowed until the user objects.
    "ALTER TABLE users ADD COLUMN consent_marketing INTEGER NOT NULL DEFAULT 1;",
    campaigns::MIGRATION,
    access::SESSIONS_MIGRATION,
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
/// page images until [`crate::PrivacyStore::purge_deleted`] truncates it.
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
/// It also runs the `TRUNCATE` checkpoints of [`crate::PrivacyStore::purge_deleted`]: only one checkpoint can
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

/// The SQLite-backed [`crate::Store`].
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

/// One process per data directory (the directory lock): nothing to hear, always the leader.
impl crate::ClusterStore for SqliteStore {}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

mod access;
mod campaigns;
mod catalog;
mod decisions;
mod events;
mod models;
mod privacy;
mod rules;
mod writer;

use catalog::{read_item, read_user};
use events::event_id_value;
use writer::Writer;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
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
    use crate::prelude::*;

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
