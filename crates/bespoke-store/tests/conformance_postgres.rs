//! The store conformance suite (`bespoke_store::conformance`) run against [`PgStore`]: one test
//! per behaviour, each on a new, empty schema of its own in the test database, dropped after.
//!
//! The server is `BESPOKE_TEST_POSTGRES_URL`, by default the local PostgreSQL that CI machines
//! run (`postgres://postgres@127.0.0.1:5432/test`, trust authentication). When it cannot be
//! reached, each test says so on stderr (`SKIPPED: PostgreSQL not reachable at ...`) and
//! passes, unless `BESPOKE_REQUIRE_POSTGRES=1`, which makes it fail instead.
//!
//! The tests are plain `#[test]`s on plain threads: the blocking client must not run inside an
//! async runtime.
#![cfg(feature = "postgres")]

use std::io::Write;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, Ordering};

use bespoke_store::prelude::*;
use bespoke_store::{Error, EventBatch, NewEvent, PgOptions, PgStore};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("BESPOKE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A store on a schema of its own, dropped (with everything in it) after the store.
struct TempSchema {
    // Declared first so that its connections close before the schema is dropped.
    store: PgStore,
    schema: String,
    url: String,
}

impl Deref for TempSchema {
    type Target = PgStore;

    fn deref(&self) -> &PgStore {
        &self.store
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        self.store.close();
        match postgres::Client::connect(&self.url, postgres::NoTls) {
            Ok(mut c) => {
                if let Err(e) =
                    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
                {
                    let _ = writeln!(
                        std::io::stderr(),
                        "could not drop schema {}: {e}",
                        self.schema
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "could not drop schema {}: {e}",
                    self.schema
                );
            }
        }
    }
}

/// A schema name no other test (of this run or a concurrent one) uses.
fn schema_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "bespoke_test_{}_{}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `e` with its causes (the client's own message is only "error connecting to server").
fn describe(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether the server could not be reached at all (as opposed to refusing us, or failing).
fn unreachable(e: &postgres::Error) -> bool {
    use std::error::Error as _;
    e.as_db_error().is_none()
        && (e.source().is_some_and(|s| s.is::<std::io::Error>())
            || e.to_string().contains("timed out")
            || e.to_string().contains("error connecting"))
}

/// A new store on a fresh schema, or `None` (having said so) when PostgreSQL is not reachable
/// and `BESPOKE_REQUIRE_POSTGRES` is not `1`.
fn fresh_with(options: impl FnOnce(PgOptions) -> PgOptions) -> Option<TempSchema> {
    let url = url();
    let required = std::env::var("BESPOKE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    // A plain connection first, to tell "no server here" from a failure of the store.
    match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(mut c) => {
            // amcheck, so that `integrity_check` runs it; a role that may not create it, or a
            // concurrent test creating it first, just leaves the consistency checks.
            let _ = c.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA public");
        }
        Err(e) if unreachable(&e) && !required => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL not reachable at {url} ({}); set BESPOKE_TEST_POSTGRES_URL, \
                 or BESPOKE_REQUIRE_POSTGRES=1 to make this a failure",
                describe(&e)
            );
            return None;
        }
        Err(e) => panic!(
            "PostgreSQL at {url}: {} (BESPOKE_REQUIRE_POSTGRES={required})",
            describe(&e)
        ),
    }
    let schema = schema_name();
    let store = PgStore::open(options(PgOptions::new(url.clone()).schema(schema.clone())))
        .unwrap_or_else(|e| panic!("open a store on schema {schema}: {e}"));
    Some(TempSchema { store, schema, url })
}

fn fresh() -> Option<TempSchema> {
    fresh_with(|o| o)
}

// `return` leaves the generated test (after the notice above) when there is no server.
bespoke_store::store_conformance_tests!(match fresh() {
    Some(store) => store,
    None => return,
});

/// The suite through a `dyn Store`, as the server holds its store.
#[test]
fn behaviours_run_through_dyn_store() {
    let Some(temp) = fresh() else { return };
    let store: &dyn bespoke_store::Store = &*temp;
    bespoke_store::conformance::events_replay_is_idempotent_and_conflicts_are_refused(store);
    bespoke_store::conformance::decisions_per_user_export_and_delete(store);
    bespoke_store::conformance::rules_put_replace_list_delete(store);
}

fn ev(id: &str, user: &str, item: &str) -> NewEvent {
    NewEvent {
        event_id: Some(id.into()),
        timestamp: Some(1_000),
        ..NewEvent::new(user, item, "view")
    }
}

/// Server-issued ids read back from the row, replay as duplicates, conflict with another
/// payload, cannot be forged beyond the log's end, and an erased one imported back is stored
/// once (as on SQLite).
#[test]
fn server_issued_ids_replay_and_cannot_be_forged() {
    let Some(s) = fresh() else { return };
    let mut e = NewEvent::new("u", "i", "view");
    e.timestamp = Some(1_700_000_000_000);
    let out = s.append_events(EventBatch::new(vec![e.clone()])).unwrap();
    let issued = out[0].event_id.clone();
    assert_eq!(
        s.user_events("u", None, 10).unwrap().unwrap().items[0].event_id,
        issued
    );
    assert_eq!(s.scan_events(0, 10).unwrap()[0].event_id, issued);
    let replay = NewEvent {
        event_id: Some(issued.clone()),
        ..e.clone()
    };
    let again = s
        .append_events(EventBatch::new(vec![replay.clone()]))
        .unwrap();
    assert!(again[0].duplicate);
    assert_eq!((again[0].seq, &again[0].event_id), (out[0].seq, &issued));
    let other = NewEvent {
        item: "j".into(),
        ..replay
    };
    assert!(matches!(
        s.append_events(EventBatch::new(vec![other])),
        Err(Error::EventConflict { index: 0, .. })
    ));
    // The same time and tag with a sequence number not yet issued: refused.
    let bytes: Vec<u8> = issued
        .bytes()
        .filter(|b| *b != b'-')
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap())
        .collect();
    let mut forged = bytes.clone();
    forged[15] = forged[15].wrapping_add(100);
    let forged: String = forged
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let sep = if matches!(i, 4 | 6 | 8 | 10) { "-" } else { "" };
            format!("{sep}{b:02x}")
        })
        .collect();
    let err = s
        .append_events(EventBatch::new(vec![NewEvent {
            event_id: Some(forged),
            ..e.clone()
        }]))
        .unwrap_err();
    assert!(
        matches!(err, Error::ReservedEventId { index: 0, .. }),
        "{err:?}"
    );
    assert_eq!(s.stats().unwrap().events, 1);
    // Erased, then imported back with its issued id: stored once.
    s.delete_user("u").unwrap().unwrap();
    let restore = NewEvent {
        event_id: Some(issued.clone()),
        ..e
    };
    let back = s
        .append_events(EventBatch::new(vec![restore.clone()]))
        .unwrap();
    assert!(!back[0].duplicate);
    assert_eq!(back[0].event_id, issued);
    assert!(s.append_events(EventBatch::new(vec![restore])).unwrap()[0].duplicate);
    assert_eq!(s.stats().unwrap().events, 1);
}

/// Client ids of every shape round-trip exactly: UUIDs (stored as 16 bytes), 16-byte strings
/// that are not UUIDs, and ids with a NUL character.
#[test]
fn client_ids_round_trip_whatever_their_shape() {
    let Some(s) = fresh() else { return };
    let ids = [
        "0190a6b2-1234-7abc-8def-0123456789ab",
        "exactly-16-bytes",
        "with\0nul",
        "Plain-Id",
    ];
    let out = s
        .append_events(EventBatch::new(
            ids.iter().map(|id| ev(id, "u", "i")).collect(),
        ))
        .unwrap();
    assert!(out.iter().all(|a| !a.duplicate));
    let back: Vec<String> = s
        .scan_events(0, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(back, ids);
    let again = s
        .append_events(EventBatch::new(
            ids.iter().map(|id| ev(id, "u", "i")).collect(),
        ))
        .unwrap();
    assert!(again.iter().all(|a| a.duplicate));
}

/// Reopening the schema keeps everything, applies no migration twice, keeps the issued-id tag,
/// and sequence numbers and ids are never reused across deletions and reopenings.
#[test]
fn reopening_keeps_data_tag_and_numbering() {
    let Some(temp) = fresh() else { return };
    let first = temp
        .append_events(EventBatch::new(vec![NewEvent::new("gone", "i", "view")]))
        .unwrap();
    let deleted = temp.delete_user("gone").unwrap().unwrap();
    let options = temp.options().clone();
    let again = PgStore::open(options).unwrap();
    let stats = again.stats().unwrap();
    assert_eq!((stats.users, stats.items, stats.events), (0, 1, 0));
    assert_eq!(
        stats.schema_version, 2,
        "the initial schema and the dashboard sessions"
    );
    assert!(stats.bytes_on_disk > 0);
    let out = again
        .append_events(EventBatch::new(vec![NewEvent::new("new", "i", "view")]))
        .unwrap();
    assert!(out[0].seq > first[0].seq, "a sequence number was reused");
    assert!(out[0].user.0 > deleted.idx, "a user id was reused");
    // The same tag: an id issued through the second store replays through the first.
    let replay = NewEvent {
        event_id: Some(out[0].event_id.clone()),
        ..NewEvent::new("new", "i", "view")
    };
    let replayed = temp.append_events(EventBatch::new(vec![replay])).unwrap();
    assert!(replayed[0].duplicate);
    assert_eq!(replayed[0].seq, out[0].seq);
}

/// A schema migrated by a newer binary is refused, not downgraded or written to.
#[test]
fn a_newer_schema_is_refused() {
    let Some(s) = fresh() else { return };
    let mut raw = postgres::Client::connect(&s.url, postgres::NoTls).unwrap();
    raw.batch_execute(&format!(
        "INSERT INTO {}.schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)",
        s.schema
    ))
    .unwrap();
    let err = PgStore::open(s.options().clone()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("version 99")),
        "{err:?}"
    );
}

/// Two stores on one schema (two server processes on one database) share idempotency and
/// number events in one sequence.
#[test]
fn two_stores_on_one_schema_share_the_log() {
    let Some(a) = fresh() else { return };
    let b = PgStore::open(a.options().clone()).unwrap();
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| {
            a.append_events(EventBatch::new(vec![ev("same", "u", "i")]))
                .unwrap()
        });
        let hb = s.spawn(|| {
            b.append_events(EventBatch::new(vec![ev("same", "u", "i")]))
                .unwrap()
        });
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert_eq!(ra[0].seq, rb[0].seq);
    assert!(ra[0].duplicate != rb[0].duplicate, "stored once");
    assert_eq!(b.stats().unwrap().events, 1);
}

/// A user deleted through another store (another process) is not appended to under its old
/// id: the first store's remembered ids are dropped, and the user comes back with a new id.
#[test]
fn a_deletion_through_another_store_reaches_remembered_ids() {
    let Some(a) = fresh() else { return };
    let b = PgStore::open(a.options().clone()).unwrap();
    let first = a
        .append_events(EventBatch::new(vec![ev("1", "u", "i")]))
        .unwrap();
    b.delete_user("u").unwrap().unwrap();
    b.delete_item("i").unwrap().unwrap();
    let again = a
        .append_events(EventBatch::new(vec![ev("2", "u", "i")]))
        .unwrap();
    assert!(again[0].created_user && again[0].created_item);
    assert!(again[0].user.0 > first[0].user.0 && again[0].item.0 > first[0].item.0);
    let mut batch = EventBatch::new(vec![ev("3", "u", "i")]);
    batch.create_users = false;
    a.append_events(batch).unwrap();
    b.delete_user("u").unwrap().unwrap();
    let mut batch = EventBatch::new(vec![ev("4", "u", "i")]);
    batch.create_users = false;
    assert!(matches!(
        a.append_events(batch),
        Err(Error::UnknownUser { index: 0, .. })
    ));
    assert_eq!(a.integrity_check().unwrap(), Vec::<String>::new());
}

/// `purge_deleted` also runs as `VACUUM FULL`, and the integrity check passes after it.
#[test]
fn purge_with_vacuum_full() {
    let Some(s) = fresh_with(|o| o.vacuum_full(true)) else {
        return;
    };
    s.append_events(EventBatch::new(vec![
        ev("a", "gone", "i"),
        ev("b", "stays", "i"),
    ]))
    .unwrap();
    s.delete_user("gone").unwrap().unwrap();
    s.purge_deleted().unwrap();
    assert_eq!(s.integrity_check().unwrap(), Vec::<String>::new());
    assert_eq!(s.stats().unwrap().events, 1);
}

/// The integrity check reports rows that break the backend's invariants (here written behind
/// the store's back, as a bad restore or a manual edit would).
#[test]
fn integrity_check_finds_broken_invariants() {
    let Some(s) = fresh() else { return };
    s.append_events(EventBatch::new(vec![ev("a", "u", "i")]))
        .unwrap();
    assert_eq!(s.integrity_check().unwrap(), Vec::<String>::new());
    let mut raw = postgres::Client::connect(&s.url, postgres::NoTls).unwrap();
    raw.batch_execute(&format!(
        "INSERT INTO {0}.events (seq, user_id, item_id, kind, ts, fingerprint)
         VALUES (1000, 424242, 1, 'view', 1, 0);",
        s.schema
    ))
    .unwrap();
    let problems = s.integrity_check().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("refer to a user that does not exist")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("counter would hand out again")),
        "{problems:?}"
    );
}

/// Connections the server ended while they sat in the pool (a restart, an administrator) are
/// replaced: the next read and the next write succeed.
#[test]
fn connections_ended_by_the_server_are_replaced() {
    let name = schema_name();
    let url = url();
    let tagged = if url.contains('?') {
        format!("{url}&application_name={name}")
    } else {
        format!("{url}?application_name={name}")
    };
    let Some(s) = fresh_with(|o| PgOptions { url: tagged, ..o }) else {
        return;
    };
    s.append_events(EventBatch::new(vec![ev("a", "u", "i")]))
        .unwrap();
    let end_ours = || {
        let mut raw = postgres::Client::connect(&s.url, postgres::NoTls).unwrap();
        let ended = raw
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .unwrap();
        assert!(!ended.is_empty(), "the store had a connection open");
        // Termination is asynchronous: wait until they are gone.
        for _ in 0..100 {
            let left: i64 = raw
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&name],
                )
                .unwrap()
                .get(0);
            if left == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the store's connections did not end");
    };
    end_ours();
    assert_eq!(s.stats().unwrap().events, 1, "a read after the end");
    end_ours();
    let out = s
        .append_events(EventBatch::new(vec![ev("b", "u", "i")]))
        .unwrap();
    assert!(!out[0].duplicate, "a write after the end");
    assert_eq!(s.stats().unwrap().events, 2);
}

/// A closed store refuses calls.
#[test]
fn calls_after_close_fail_cleanly() {
    let Some(s) = fresh() else { return };
    s.close();
    assert!(matches!(
        s.append_events(EventBatch::new(vec![ev("z", "u", "i")])),
        Err(Error::Closed)
    ));
}

/// Two handles on one schema (two nodes): each hears the other's committed changes, in commit
/// order and never its own; leadership of a role is exclusive and freed with its holder.
#[test]
fn handles_hear_each_other_and_lead_one_at_a_time() {
    use bespoke_store::{Change, UserUpsert};
    use std::time::Duration;
    let Some(first) = fresh() else { return };
    let second = PgStore::open(PgOptions::new(first.url.clone()).schema(first.schema.clone()))
        .expect("second handle");
    let feed = first.changes().unwrap().expect("a shared store announces");
    let heard = |n: usize| -> Vec<Change> {
        let mut out = Vec::new();
        while out.len() < n {
            match feed.next_timeout(Duration::from_secs(5)) {
                Some(c) => out.push(c),
                None => break,
            }
        }
        out
    };
    // Its own writes are not announced to it.
    first
        .append_events(EventBatch::new(vec![ev("own", "u0", "i0")]))
        .unwrap();
    assert_eq!(feed.try_next(), None);

    let put = second
        .put_user(UserUpsert {
            key: "alice".into(),
            attributes: Default::default(),
            consent: Default::default(),
            default_consent: bespoke_store::Consent::ALL,
            restore_times: None,
        })
        .unwrap();
    second
        .append_events(EventBatch::new(vec![ev("e1", "alice", "i1")]))
        .unwrap();
    let deleted = second.delete_user("alice").unwrap().unwrap();
    assert_eq!(
        heard(3),
        vec![
            Change::User(put.record.idx),
            Change::Events,
            Change::UserDeleted(bespoke_store::UserIdx(deleted.idx)),
        ]
    );
    // A batch of duplicates changes nothing and wakes nobody; a rolled-back write neither.
    let again = second
        .append_events(EventBatch::new(vec![ev("own", "u0", "i0")]))
        .unwrap();
    assert!(again[0].duplicate);
    assert!(second.activate_model(999).is_err());
    assert_eq!(feed.next_timeout(Duration::from_millis(300)), None);

    let mut lead = first
        .try_lead("scheduler")
        .unwrap()
        .expect("nobody leads yet");
    assert!(lead.alive());
    assert!(
        second.try_lead("scheduler").unwrap().is_none(),
        "two leaders"
    );
    assert!(
        second.try_lead("train").unwrap().is_some(),
        "roles are apart"
    );
    drop(lead);
    assert!(
        second.try_lead("scheduler").unwrap().is_some(),
        "the leadership outlived its holder"
    );
    second.close();
}
