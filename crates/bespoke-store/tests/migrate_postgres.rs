//! `bespoke_store::migrate`: an SQLite store holding data of every kind, copied into a fresh
//! PostgreSQL schema, verified table by table, then read back through `PgStore`'s traits.
//!
//! The server is `BESPOKE_TEST_POSTGRES_URL`, by default `postgres://postgres@127.0.0.1:5432/test`
//! (as `tests/conformance_postgres.rs`). When it cannot be reached, each test says so on stderr
//! (`SKIPPED: ...`) and passes, unless `BESPOKE_REQUIRE_POSTGRES=1`, which makes it fail.
#![cfg(feature = "postgres")]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

use bespoke_store::migrate::sqlite_to_postgres;
use bespoke_store::prelude::*;
use bespoke_store::{
    Consent, ConsentUpdate, Error, EventBatch, ItemIdx, ItemUpsert, NewAudit, NewDecision,
    NewEvent, NewExposure, NewKey, NewReward, PgOptions, PgStore, SessionLimits, SessionRecord,
    SqliteStore, StoreOptions, UserIdx, UserUpsert,
};

/// The dashboard session the source holds, and limits under which it stays live.
const SESSION_LIMITS: SessionLimits = SessionLimits {
    idle: i64::MAX / 4,
    absolute: i64::MAX / 4,
    max: 10,
    touch_every: i64::MAX / 4,
};

fn session() -> SessionRecord {
    SessionRecord {
        lookup: [5; 32],
        prefix: "bsk_dash".into(),
        key_digest: [6; 32],
        csrf: "ab".repeat(32),
        created_at: 1_700_000_000_000,
        last_seen: 1_700_000_000_500,
    }
}
use serde_json::{Map, Value, json};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("BESPOKE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
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

/// A schema name of its own, dropped (with everything in it) when this is dropped.
struct TempSchema {
    name: String,
    url: String,
}

impl TempSchema {
    fn options(&self) -> PgOptions {
        PgOptions::new(self.url.clone()).schema(self.name.clone())
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        let dropped = postgres::Client::connect(&self.url, postgres::NoTls).and_then(|mut c| {
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
        });
        if let Err(e) = dropped {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop schema {}: {e}",
                self.name
            );
        }
    }
}

/// A fresh schema name, or `None` (having said so) when PostgreSQL is not reachable and
/// `BESPOKE_REQUIRE_POSTGRES` is not `1`.
fn fresh_schema() -> Option<TempSchema> {
    use std::error::Error as _;
    let url = url();
    let required = std::env::var("BESPOKE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(_) => {}
        Err(e)
            if !required
                && e.as_db_error().is_none()
                && (e.source().is_some_and(|s| s.is::<std::io::Error>())
                    || e.to_string().contains("timed out")
                    || e.to_string().contains("error connecting")) =>
        {
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
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "bespoke_test_migrate_{}_{}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    Some(TempSchema { name, url })
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object literal"),
    }
}

const T0: i64 = 1_700_000_000_000;

/// An SQLite store holding data of every kind, written through the public API.
fn populate(store: &SqliteStore) {
    // Users: attributes, a consent withdrawn, one deleted last (so SQLite's high-water mark is
    // above the largest id left).
    store
        .put_users(vec![
            UserUpsert {
                key: "ann".into(),
                attributes: obj(json!({"country": "fr", "age": 31, "tags": ["a", "b"]})),
                consent: ConsentUpdate {
                    marketing: Some(false),
                    ..Default::default()
                },
                default_consent: Consent::ALL,
                restore_times: None,
            },
            UserUpsert {
                key: "bob".into(),
                attributes: Map::new(),
                consent: ConsentUpdate {
                    personalization: Some(false),
                    training: Some(false),
                    ..Default::default()
                },
                default_consent: Consent::ALL,
                restore_times: None,
            },
        ])
        .unwrap();
    // Items: every field, an embedding, one unavailable.
    store
        .put_items(vec![
            ItemUpsert {
                key: "book-1".into(),
                categories: vec!["books".into(), "sci-fi".into()],
                text: BTreeMap::from([("title".into(), "Dune".into())]),
                numeric: BTreeMap::from([("price".into(), 9.99)]),
                attributes: obj(json!({"author": "Herbert"})),
                embeddings: BTreeMap::from([("clip".into(), vec![0.25, -1.5, 3.0e-8])]),
                available: true,
            },
            ItemUpsert {
                key: "book-2".into(),
                available: false,
                ..Default::default()
            },
        ])
        .unwrap();
    // Events: server-issued ids, client ids of every shape, values, contexts, created keys.
    let mut events = Vec::new();
    for i in 0..50i64 {
        let mut e = NewEvent::new(
            format!("user-{}", i % 7),
            format!("book-{}", i % 5),
            if i % 3 == 0 { "purchase" } else { "view" },
        );
        e.timestamp = Some(T0 + i * 1000);
        if i % 4 == 0 {
            e.value = Some(i as f64 / 3.0);
        }
        if i % 5 == 0 {
            e.context = Some(obj(json!({"page": "home", "pos": i})));
        }
        e.event_id = match i % 10 {
            1 => Some(format!("0190a6b2-1234-7abc-8def-0123456789{i:02x}")),
            2 => Some(format!("exactly-16-byt{i:02}")),
            3 => Some(format!("evt-{i}")),
            _ => None,
        };
        events.push(e);
    }
    let mut ann = NewEvent::new("ann", "book-1", "rating");
    ann.value = Some(4.5);
    ann.timestamp = Some(T0 - 1);
    events.push(ann);
    store.append_events(EventBatch::new(events)).unwrap();
    store.delete_user("user-6").unwrap().unwrap();

    // Keys, audit, secrets, erasure receipts.
    for (prefix, name) in [("bk_aaaa", "admin"), ("bk_bbbb", "ingest")] {
        store
            .insert_key(NewKey {
                prefix: prefix.into(),
                name: name.into(),
                scopes: vec!["admin".into(), "events:write".into()],
                hash: [prefix.len() as u8; 32],
                rate_per_second: (name == "ingest").then_some(250.0),
            })
            .unwrap();
    }
    store.revoke_key("bk_bbbb").unwrap().unwrap();
    for i in 0..3 {
        store
            .audit(NewAudit {
                actor: "bk_aaaa".into(),
                action: format!("action-{i}"),
                target: (i > 0).then(|| "user:ann".into()),
                detail: (i == 2).then(|| json!({"n": i})),
            })
            .unwrap();
    }
    store.secret("pseudonyms", [7; 32]).unwrap();
    store.open_session(session(), SESSION_LIMITS).unwrap();
    store
        .save_erasure("er-1", T0, &json!({"user": "ref-123", "events": 3}))
        .unwrap();

    // Models with blobs; the first active, the second not.
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let v1 = store
        .save_model(
            &[("factors.safetensors", &blob), ("empty.bin", b"")],
            &json!({"kind": "als", "users": 6}),
        )
        .unwrap();
    store
        .save_model(&[("factors.safetensors", b"v2")], &json!({"kind": "knn"}))
        .unwrap();
    store.activate_model(v1).unwrap();

    // A decision loop with decisions, rewards and a checkpoint.
    store
        .put_loop("hero", &json!({"actions": ["a", "b"], "epsilon": 0.1}))
        .unwrap();
    for (i, user) in [Some("ann"), None, Some("bob")].into_iter().enumerate() {
        store
            .insert_decision(NewDecision {
                id: format!("d{i}"),
                loop_name: "hero".into(),
                user: user.map(Into::into),
                created_at: T0 + i as i64,
                deadline: T0 + 100_000,
                activated: i != 2,
                payload: json!({"chosen": i}).to_string(),
            })
            .unwrap();
    }
    store
        .insert_reward(NewReward {
            decision_id: "d0".into(),
            slot: 0,
            value: 0.75,
            at: T0 + 10,
            is_default: false,
        })
        .unwrap();
    store
        .insert_rewards(
            vec![NewReward {
                decision_id: "d1".into(),
                slot: 0,
                value: 0.0,
                at: T0 + 20,
                is_default: true,
            }],
            vec!["d1".into()],
        )
        .unwrap();
    store
        .save_checkpoint("hero", 2, vec![1, 2, 3, 0, 255])
        .unwrap();

    // Rules and blocks.
    let ann = store.get_user("ann").unwrap().unwrap().idx;
    let book1 = store.get_item("book-1").unwrap().unwrap().idx;
    let book2 = store.get_item("book-2").unwrap().unwrap().idx;
    store
        .put_rule("no-sci-fi", &json!({"filter": "category != 'sci-fi'"}), T0)
        .unwrap();
    store.set_block(ann, book1, true, T0).unwrap();
    store.set_block(ann, book2, false, T0 + 1).unwrap();

    // Experiments with exposures and credit; segments with members and sizes.
    store
        .put_experiment("exp", &json!({"variants": ["a", "b"]}), T0)
        .unwrap();
    store
        .record_exposures(
            "exp",
            vec![
                NewExposure {
                    user: "ann".into(),
                    variant: 0,
                    at: T0,
                },
                NewExposure {
                    user: "not-yet-a-user".into(),
                    variant: 1,
                    at: T0 + 5,
                },
            ],
        )
        .unwrap();
    store
        .add_credits("exp", vec![("ann".into(), 2, 1)])
        .unwrap();
    store
        .put_segment("fans", &json!({"rule": "events(purchase) > 0"}), T0)
        .unwrap();
    let bob = store.get_user("bob").unwrap().unwrap().idx;
    store
        .replace_members("fans", vec![(ann, 0.9), (bob, 0.1)], T0 + 60_000)
        .unwrap();
}

/// A model version as compared: version, metadata, active, files with their bytes (sizes are
/// counted differently by the two backends).
type ModelContents = (u64, Value, bool, Vec<(String, Vec<u8>)>);

/// Everything the traits read back, in a form to compare across backends.
#[derive(Debug, PartialEq)]
struct Contents {
    counts: (u64, u64, u64),
    users: Vec<bespoke_store::User>,
    items: Vec<bespoke_store::Item>,
    events: Vec<bespoke_store::Event>,
    ann_events: Vec<bespoke_store::Event>,
    keys: Vec<bespoke_store::KeyRecord>,
    audit: Vec<bespoke_store::AuditEntry>,
    secret: Option<[u8; 32]>,
    session: Option<SessionRecord>,
    erasures: Vec<(String, Value)>,
    models: Vec<ModelContents>,
    active_model: Option<u64>,
    loops: Vec<bespoke_store::LoopRecord>,
    decisions: Vec<bespoke_store::DecisionRecord>,
    bob_decisions: Vec<bespoke_store::DecisionRecord>,
    rewards: Vec<(bespoke_store::RewardRecord, bespoke_store::DecisionRecord)>,
    checkpoint: Option<(u64, Vec<u8>)>,
    rules: Vec<bespoke_store::RuleRecord>,
    blocks: Vec<bespoke_store::Block>,
    experiments: Vec<bespoke_store::RuleRecord>,
    exposures: Vec<bespoke_store::Exposure>,
    segments: Vec<bespoke_store::RuleRecord>,
    members: Vec<bespoke_store::Member>,
    sizes: Vec<(i64, u64)>,
}

fn contents(s: &dyn Store) -> Contents {
    let stats = s.stats().unwrap();
    let models = s
        .list_models()
        .unwrap()
        .into_iter()
        .map(|m| {
            let files = m
                .files
                .iter()
                .map(|f| (f.clone(), s.read_model_file(m.version, f).unwrap()))
                .collect();
            (m.version, m.meta, m.active, files)
        })
        .collect();
    Contents {
        counts: (stats.users, stats.items, stats.events),
        users: s.scan_users(None, 1000).unwrap(),
        items: s.scan_items(None, 1000).unwrap(),
        events: s.scan_events(0, 1000).unwrap(),
        ann_events: s.user_events("ann", None, 100).unwrap().unwrap().items,
        keys: s.keys().unwrap(),
        audit: s.audit_log(None, 100).unwrap().items,
        secret: s.stored_secret("pseudonyms").unwrap(),
        session: (s.touch_session(&session().lookup, session().last_seen + 1, SESSION_LIMITS))
            .unwrap(),
        erasures: s.erasures().unwrap(),
        models,
        active_model: s.active_model().unwrap(),
        loops: s.loops().unwrap(),
        decisions: s.decision_log("hero", 100).unwrap(),
        bob_decisions: s.user_decisions("bob").unwrap(),
        rewards: s.loop_rewards("hero", 0, 100).unwrap(),
        checkpoint: s.checkpoint("hero").unwrap(),
        rules: s.rules().unwrap(),
        blocks: s.scan_blocks(None, 100).unwrap(),
        experiments: s.experiments().unwrap(),
        exposures: s.exposures("exp").unwrap(),
        segments: s.segments().unwrap(),
        members: s.members("fans", None, 100).unwrap(),
        sizes: s.segment_sizes("fans").unwrap(),
    }
}

#[test]
fn everything_is_copied_verified_and_reads_back_the_same() {
    let Some(schema) = fresh_schema() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (before, deleted_user) = {
        let sqlite = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        populate(&sqlite);
        let before = contents(&sqlite);
        assert_eq!(before.session, Some(session()));
        // The last user created, deleted: its id must never be handed out again.
        let last = sqlite
            .put_user(UserUpsert {
                key: "short-lived".into(),
                attributes: Map::new(),
                consent: ConsentUpdate::default(),
                default_consent: Consent::ALL,
                restore_times: None,
            })
            .unwrap()
            .record
            .idx;
        sqlite.delete_user("short-lived").unwrap().unwrap();
        (before, last)
    };
    assert!(!before.events.is_empty() && !before.models.is_empty());
    assert!(!before.decisions.is_empty() && before.bob_decisions.len() == 1);
    assert_eq!((before.rewards.len(), before.members.len()), (2, 2));

    let report = sqlite_to_postgres(dir.path(), schema.options()).unwrap();
    assert!(report.committed, "{report:#?}");
    let by_table: BTreeMap<&str, &bespoke_store::migrate::TableReport> = report
        .tables
        .iter()
        .map(|t| (t.table.as_str(), t))
        .collect();
    for t in &report.tables {
        assert!(t.ok && t.source_rows == t.target_rows, "{t:?}");
        assert_eq!(t.source_checksum, t.target_checksum);
        assert_eq!(t.source_checksum.len(), 64);
    }
    // Every table holds something, so every conversion was exercised.
    for t in bespoke_store::migrate::TABLES {
        assert!(by_table[t.name].source_rows > 0, "{} is empty", t.name);
    }
    assert_eq!(by_table["events"].source_rows, before.counts.2);
    assert_eq!(by_table["users"].source_rows, before.counts.0);
    assert_eq!(by_table["model_versions"].source_rows, 2);
    assert_eq!(by_table["model_files"].source_rows, 3);
    assert_eq!(by_table["meta"].source_rows, 3);
    // The source is untouched: still opens, same contents.
    {
        let sqlite = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(contents(&sqlite), before);
    }

    let pg = PgStore::open(schema.options()).unwrap();
    let after = contents(&pg);
    // Field by field first, for a readable failure.
    assert_eq!(after.users, before.users);
    assert_eq!(after.items, before.items);
    assert_eq!(
        after.events, before.events,
        "same ids, sequence numbers, event ids"
    );
    assert_eq!(after.models, before.models, "same versions and blobs");
    assert_eq!(
        after.keys, before.keys,
        "same key records (prefix and digest)"
    );
    assert_eq!(after, before);
    assert!(pg.integrity_check().unwrap().is_empty());

    // New rows continue past the copied ids (and past the deleted ones).
    let max_seq = before.events.iter().map(|e| e.seq).max().unwrap();
    let out = pg
        .append_events(EventBatch::new(vec![NewEvent::new(
            "new-user", "book-1", "view",
        )]))
        .unwrap();
    assert!(
        out[0].seq > max_seq,
        "{} reuses a sequence number",
        out[0].seq
    );
    assert!(out[0].created_user);
    assert!(
        out[0].user.0 > deleted_user.0,
        "user id {} reused (deleted user had {})",
        out[0].user.0,
        deleted_user.0
    );
    let item = pg
        .put_item(ItemUpsert {
            key: "book-new".into(),
            available: true,
            ..Default::default()
        })
        .unwrap();
    let max_item = before.items.iter().map(|i| i.idx.0).max().unwrap();
    assert!(item.record.idx > ItemIdx(max_item));
    let key = pg
        .insert_key(NewKey {
            prefix: "bk_cccc".into(),
            name: "new".into(),
            scopes: vec![],
            hash: [9; 32],
            rate_per_second: None,
        })
        .unwrap();
    assert!(key.id > before.keys.iter().map(|k| k.id).max().unwrap());
    pg.audit(NewAudit {
        actor: "t".into(),
        action: "after".into(),
        target: None,
        detail: None,
    })
    .unwrap();
    let audit = pg.audit_log(None, 1).unwrap().items;
    assert!(audit[0].seq > before.audit.iter().map(|a| a.seq).max().unwrap());
    let version = pg.save_model(&[("x", b"y")], &json!({})).unwrap();
    assert_eq!(version, 3);
    assert_eq!(pg.active_model().unwrap(), Some(1));
    let seq = pg
        .insert_decision(NewDecision {
            id: "d-new".into(),
            loop_name: "hero".into(),
            user: None,
            created_at: T0,
            deadline: T0 + 1,
            activated: true,
            payload: "{}".into(),
        })
        .unwrap()
        .unwrap();
    assert!(seq > before.decisions.iter().map(|d| d.seq).max().unwrap());
    let reward = pg
        .insert_reward(NewReward {
            decision_id: "d-new".into(),
            slot: 0,
            value: 1.0,
            at: T0 + 2,
            is_default: false,
        })
        .unwrap();
    let last_reward = before.rewards.iter().map(|r| r.0.seq).max().unwrap();
    assert!(
        matches!(reward, bespoke_store::RewardOutcome::Recorded(s) if s > last_reward),
        "{reward:?}"
    );
    // A block on a copied user and item still works through the foreign keys.
    pg.set_block(UserIdx(1), item.record.idx, true, T0).unwrap();
    drop(pg);
    drop(schema);
}

#[test]
fn a_target_that_holds_data_is_refused_and_left_alone() {
    let Some(schema) = fresh_schema() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let sqlite = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        sqlite
            .append_events(EventBatch::new(vec![NewEvent::new("u", "i", "view")]))
            .unwrap();
    }
    {
        let pg = PgStore::open(schema.options()).unwrap();
        pg.put_item(ItemUpsert {
            key: "already-here".into(),
            available: true,
            ..Default::default()
        })
        .unwrap();
    }
    let err = sqlite_to_postgres(dir.path(), schema.options()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("table items holds rows")),
        "{err}"
    );
    let pg = PgStore::open(schema.options()).unwrap();
    let stats = pg.stats().unwrap();
    assert_eq!((stats.users, stats.items, stats.events), (0, 1, 0));
    drop(pg);

    // A second migration into a schema filled by the first is refused the same way.
    let other = fresh_schema().expect("reachable a moment ago");
    let report = sqlite_to_postgres(dir.path(), other.options()).unwrap();
    assert!(report.committed);
    let err = sqlite_to_postgres(dir.path(), other.options()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("table users holds rows")),
        "{err}"
    );
}

#[test]
fn a_missing_source_is_named() {
    let Some(schema) = fresh_schema() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let err = sqlite_to_postgres(&dir.path().join("nothing"), schema.options()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("holds no SQLite store")),
        "{err}"
    );
}
