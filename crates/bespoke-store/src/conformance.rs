//! The store conformance suite: what every backend must do, written once against the traits.
//!
//! Each behaviour is a public function taking a fresh, empty store; it panics (with the
//! assertion that failed) when the store misbehaves. A backend runs them all from its tests with
//! one line, which generates one `#[test]` per behaviour:
//!
//! ```text
//! bespoke_store::store_conformance_tests!(my_fresh_store());
//! ```
//!
//! where `my_fresh_store()` returns anything that dereferences to the store (so it can own the
//! temporary directory or database the store lives in, and drop it after the store). A backend
//! that prefers one test calls [`run_all`] with the same factory. The suite is behind the
//! `conformance` cargo feature, so only tests pay for it.
//!
//! Behaviours only use what the traits promise: no backend type, no raw SQL, and no clock (every
//! time is given explicitly, except creation times, which are only compared with each other).

use std::ops::Deref;

use serde_json::{Map, Value, json};

use crate::prelude::*;
use crate::{
    Block, Consent, ConsentUpdate, DecisionRecord, Error, EventBatch, Interaction, ItemIdx,
    ItemUpsert, Kinds, Millis, NewAudit, NewDecision, NewEvent, NewExposure, NewKey, NewReward,
    RewardOutcome, UserIdx, UserUpsert,
};

/// Calls `$callback! { $args; behaviour, behaviour, ... }` with the name of every behaviour: the
/// one list that both [`store_conformance_tests!`](crate::store_conformance_tests) and
/// [`run_all`] walk, so neither can miss one.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_behaviours {
    ([$($callback:tt)*] $($args:tt)*) => {
        $($callback)*! {
            $($args)*;
            events_replay_is_idempotent_and_conflicts_are_refused,
            events_batch_returns_ids_in_order,
            events_concurrent_appends_all_commit_and_replays_stay_single,
            events_unknown_user_or_item_is_refused_when_creation_is_off,
            events_scan_interactions_pages_see_every_row_once,
            events_scan_events_and_user_events_page_newest_first,
            events_stats_count_users_items_events_and_kinds,
            events_delete_before_returns_what_it_removed,
            events_delete_pair_takes_one_users_events_on_one_item,
            catalog_user_upsert_get_and_consent_merge,
            catalog_delete_user_removes_their_events,
            catalog_item_upsert_get_and_embedding_dimensions,
            catalog_delete_item_removes_its_events,
            catalog_scans_page_in_id_order,
            models_save_list_read_activate_prune_delete,
            models_rewrite_file,
            access_keys_insert_list_revoke,
            access_audit_appends_and_pages_by_before,
            access_secrets_are_stable_and_deletable,
            access_sessions_expire_touch_close_and_cap,
            privacy_erasure_receipts_save_get_list,
            privacy_purge_and_integrity_check_after_deletes,
            decisions_loops_put_get_list,
            decisions_insert_is_idempotent_and_activation_once,
            decisions_rewards_duplicates_and_unknown_decisions,
            decisions_open_decisions_settle_and_decision_log,
            decisions_loop_rewards_page_in_reward_order,
            decisions_checkpoint_save_load_delete,
            decisions_per_user_export_and_delete,
            decisions_loop_stats_count_the_log,
            decisions_delete_before_keeps_open_and_recent,
            rules_put_replace_list_delete,
            rules_blocks_latest_at_wins,
            rules_blocks_of_by_item_and_unknown_ids_refused,
            rules_scan_blocks_pages_in_user_item_order,
            rules_blocks_go_with_their_user,
            rules_blocks_go_with_their_item,
            rules_blocks_are_not_subject_to_retention,
            campaigns_experiments_and_first_exposures,
            campaigns_segment_members_page_and_sizes_accumulate,
            campaigns_rows_go_with_their_user_and_expire,
        }
    };
}

/// Generates one `#[test]` per conformance behaviour for the store `$fresh` makes (evaluated
/// anew in every test, so each test gets an empty store of its own). Call it in a backend's test
/// file (the `conformance` feature of `bespoke-store` must be on).
#[macro_export]
macro_rules! store_conformance_tests {
    ($fresh:expr) => {
        $crate::__store_behaviours!([$crate::__store_conformance_test_fns] $fresh);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_test_fns {
    ($fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let store = $fresh;
                $crate::conformance::$name(&*store);
            }
        )*
    };
}

/// Runs every behaviour, each on a new store from `fresh`, in one test.
pub fn run_all<F, S>(fresh: F)
where
    F: Fn() -> S,
    S: Deref,
    S::Target: Store,
{
    macro_rules! each {
        ($f:expr; $($name:ident),* $(,)?) => {
            $( $name(&*$f()); )*
        };
    }
    crate::__store_behaviours!([each] fresh);
}

/// An event with a client id, at time `ts`.
fn ev(id: &str, user: &str, item: &str, ts: Millis) -> NewEvent {
    NewEvent {
        event_id: Some(id.into()),
        timestamp: Some(ts),
        ..NewEvent::new(user, item, "view")
    }
}

fn append<S: Store + ?Sized>(store: &S, events: Vec<NewEvent>) -> Vec<crate::Appended> {
    store
        .append_events(EventBatch::new(events))
        .expect("append events")
}

fn user(key: &str, attributes: Map<String, Value>) -> UserUpsert {
    UserUpsert {
        key: key.into(),
        attributes,
        consent: ConsentUpdate::default(),
        default_consent: Consent::ALL,
        restore_times: None,
    }
}

fn item(key: &str) -> ItemUpsert {
    ItemUpsert {
        key: key.into(),
        available: true,
        ..Default::default()
    }
}

fn ids(decisions: &[DecisionRecord]) -> Vec<&str> {
    decisions.iter().map(|d| d.id.as_str()).collect()
}

/// A decision of loop `loop_name` made at `created_at` with reward window end `deadline`.
fn decision(id: &str, loop_name: &str, user: Option<&str>, created_at: Millis) -> NewDecision {
    NewDecision {
        id: id.into(),
        loop_name: loop_name.into(),
        user: user.map(Into::into),
        created_at,
        deadline: created_at + 100,
        activated: true,
        payload: json!({ "id": id }).to_string(),
    }
}

fn reward(id: &str, slot: u32, value: f64) -> NewReward {
    NewReward {
        decision_id: id.into(),
        slot,
        value,
        at: 5,
        is_default: false,
    }
}

fn recorded(outcome: RewardOutcome) -> u64 {
    match outcome {
        RewardOutcome::Recorded(seq) => seq,
        other => panic!("expected a recorded reward, got {other:?}"),
    }
}

/// Replaying an event id with the same payload returns the first append's sequence number and
/// id; the same id with another payload fails the whole batch with [`Error::EventConflict`].
pub fn events_replay_is_idempotent_and_conflicts_are_refused<S: Store + ?Sized>(store: &S) {
    let first = append(store, vec![ev("e1", "u", "i", 1_000)]);
    assert!(!first[0].duplicate);
    assert_eq!(first[0].event_id, "e1");
    let again = append(store, vec![ev("e1", "u", "i", 1_000)]);
    assert!(again[0].duplicate, "a replay is recognised");
    assert_eq!(
        (again[0].seq, &again[0].event_id),
        (first[0].seq, &first[0].event_id)
    );
    assert_eq!(store.stats().unwrap().events, 1);

    // Same id, other item: the batch fails as a whole, so e2 and the item are not kept.
    let err = store
        .append_events(EventBatch::new(vec![
            ev("e2", "u", "i", 1_000),
            ev("e1", "u", "other", 1_000),
        ]))
        .unwrap_err();
    assert!(
        matches!(err, Error::EventConflict { index: 1, ref event_id } if event_id == "e1"),
        "{err:?}"
    );
    assert!(err.is_user_error());
    assert_eq!(store.stats().unwrap().events, 1);
    assert_eq!(
        store.get_item("other").unwrap(),
        None,
        "kept by a failed batch"
    );

    // The same id twice within one batch: stored once.
    let out = append(
        store,
        vec![ev("e3", "u", "i", 2_000), ev("e3", "u", "i", 2_000)],
    );
    assert_eq!((out[0].duplicate, out[1].duplicate), (false, true));
    assert_eq!(out[0].seq, out[1].seq);
    assert_eq!(store.stats().unwrap().events, 2);
}

/// A batch returns one result per event in input order, with increasing sequence numbers,
/// distinct generated ids, the batch's `now` as default time and created-user/item flags.
pub fn events_batch_returns_ids_in_order<S: Store + ?Sized>(store: &S) {
    let mut events = vec![NewEvent::new("u1", "a", "click"); 3];
    events.push(ev("given", "u2", "b", 7));
    let mut batch = EventBatch::new(events);
    batch.now = Some(42);
    let out = store.append_events(batch).unwrap();
    assert_eq!(out.len(), 4);
    assert!(out.windows(2).all(|w| w[0].seq < w[1].seq), "{out:?}");
    assert!(out[0].event_id < out[1].event_id && out[1].event_id < out[2].event_id);
    assert_eq!(out[3].event_id, "given");
    assert_eq!(
        out.iter().map(|a| a.timestamp).collect::<Vec<_>>(),
        [42, 42, 42, 7]
    );
    assert!(out[0].created_user && out[0].created_item);
    assert!(!out[1].created_user && !out[1].created_item);
    assert!(out[3].created_user && out[3].created_item);
    assert_eq!(out[0].user, out[2].user);
    assert_ne!(out[0].user, out[3].user);
    // What scans read back is what the batch said it stored.
    let scanned = store.scan_events(0, 10).unwrap();
    assert_eq!(
        scanned
            .iter()
            .map(|e| (e.seq, e.event_id.clone()))
            .collect::<Vec<_>>(),
        out.iter()
            .map(|a| (a.seq, a.event_id.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        store.append_events(EventBatch::new(vec![])).unwrap(),
        vec![]
    );
}

/// Appends from several threads at once all commit, with distinct sequence numbers, and an
/// event id sent by every thread at the same time is stored once (every thread gets the same
/// sequence number back): idempotency holds under races, not only one request at a time.
pub fn events_concurrent_appends_all_commit_and_replays_stay_single<S: Store + ?Sized>(store: &S) {
    const THREADS: usize = 4;
    const BATCHES: usize = 10;
    const PER_BATCH: usize = 5;
    let results: Vec<(Vec<u64>, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let mut seqs = Vec::new();
                    let mut shared = None;
                    for b in 0..BATCHES {
                        let mut events: Vec<NewEvent> = (0..PER_BATCH)
                            .map(|i| {
                                ev(
                                    &format!("t{t}b{b}i{i}"),
                                    &format!("u{t}"),
                                    &format!("i{i}"),
                                    1,
                                )
                            })
                            .collect();
                        if b == BATCHES / 2 {
                            events.push(ev("shared", "everyone", "i0", 1));
                        }
                        let out = append(store, events);
                        seqs.extend(out.iter().take(PER_BATCH).map(|a| a.seq));
                        if let Some(last) = out.get(PER_BATCH) {
                            shared = Some(last.seq);
                        }
                    }
                    (seqs, shared.expect("the shared event was sent"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("appender"))
            .collect()
    });
    let shared: Vec<u64> = results.iter().map(|r| r.1).collect();
    assert!(shared.iter().all(|&s| s == shared[0]), "{shared:?}");
    for (seqs, _) in &results {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "a thread's appends are in order"
        );
    }
    let mut all: Vec<u64> = results.into_iter().flat_map(|r| r.0).collect();
    all.push(shared[0]);
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        THREADS * BATCHES * PER_BATCH + 1,
        "distinct sequence numbers"
    );
    let stats = store.stats().unwrap();
    assert_eq!(stats.events as usize, all.len());
    assert_eq!(
        (stats.users, stats.items),
        (THREADS as u64 + 1, PER_BATCH as u64)
    );
    let scanned: Vec<u64> = store
        .scan_interactions(0, 10_000)
        .unwrap()
        .iter()
        .map(|i| i.seq)
        .collect();
    assert_eq!(scanned, all);
}

/// With creation off, an unknown user or item fails the batch with its index.
pub fn events_unknown_user_or_item_is_refused_when_creation_is_off<S: Store + ?Sized>(store: &S) {
    append(store, vec![ev("a", "known", "i", 1)]);
    let mut batch = EventBatch::new(vec![ev("b", "known", "i", 1), ev("c", "stranger", "i", 1)]);
    batch.create_users = false;
    let err = store.append_events(batch).unwrap_err();
    assert!(
        matches!(err, Error::UnknownUser { index: 1, ref key } if key == "stranger"),
        "{err:?}"
    );
    let mut batch = EventBatch::new(vec![ev("d", "known", "new-item", 1)]);
    batch.create_items = false;
    let err = store.append_events(batch).unwrap_err();
    assert!(
        matches!(err, Error::UnknownItem { index: 0, ref key } if key == "new-item"),
        "{err:?}"
    );
    assert_eq!(store.stats().unwrap().events, 1);
    assert_eq!(store.get_user("stranger").unwrap(), None);
}

/// Paging `scan_interactions` with `after` = the last sequence number seen visits every event
/// exactly once, in sequence order, with the internal ids the append returned.
pub fn events_scan_interactions_pages_see_every_row_once<S: Store + ?Sized>(store: &S) {
    let events: Vec<NewEvent> = (0..23)
        .map(|i| NewEvent {
            value: Some(f64::from(i)),
            ..ev(
                &format!("s{i}"),
                &format!("u{}", i % 5),
                &format!("i{}", i % 7),
                100 + i64::from(i),
            )
        })
        .collect();
    let appended = append(store, events);
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store.scan_interactions(after, 5).unwrap();
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        after = last.seq;
        seen.extend(page);
    }
    assert_eq!(seen.len(), 23);
    for (got, want) in seen.iter().zip(&appended) {
        assert_eq!(
            (got.seq, got.user, got.item),
            (want.seq, want.user, want.item)
        );
        assert_eq!(got.timestamp, want.timestamp);
        assert_eq!(got.kind, "view");
    }
    assert_eq!(seen[22].value, Some(22.0));
    assert!(store.scan_interactions(after, 5).unwrap().is_empty());
}

/// `scan_events` returns whole events in sequence order; `user_events` pages one user's events
/// newest first through `next`, and is `None` for an unknown user.
pub fn events_scan_events_and_user_events_page_newest_first<S: Store + ?Sized>(store: &S) {
    let mut context = Map::new();
    context.insert("device".into(), json!("phone"));
    let mut events: Vec<NewEvent> = (0..25)
        .map(|i| {
            ev(
                &format!("p{i}"),
                "u",
                &format!("i{}", i % 4),
                1_000 + i64::from(i),
            )
        })
        .collect();
    events[0].context = Some(context.clone());
    events.push(ev("other", "v", "i0", 5_000));
    append(store, events);

    let all = store.scan_events(0, 100).unwrap();
    assert_eq!(all.len(), 26);
    assert_eq!(
        (
            all[0].event_id.as_str(),
            all[0].user.as_str(),
            all[0].item.as_str()
        ),
        ("p0", "u", "i0")
    );
    assert_eq!(all[0].context, Some(context));
    assert_eq!(all[0].timestamp, 1_000);
    assert_eq!(
        store.scan_events(all[24].seq, 100).unwrap()[0].event_id,
        "other"
    );

    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.user_events("u", before, 10).unwrap().expect("user u");
        assert!(page.items.len() <= 10);
        seen.extend(page.items.iter().map(|e| e.event_id.clone()));
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("p{i}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(store.user_events("nobody", None, 10).unwrap(), None);
}

/// `stats` counts users, items, events (by kind) and the time range of the events.
pub fn events_stats_count_users_items_events_and_kinds<S: Store + ?Sized>(store: &S) {
    let empty = store.stats().unwrap();
    assert_eq!((empty.users, empty.items, empty.events), (0, 0, 0));
    assert!(empty.events_by_kind.is_empty());
    assert_eq!(empty.time_range, None);

    store.put_user(user("lonely", Map::new())).unwrap();
    store.put_item(item("unseen")).unwrap();
    append(
        store,
        vec![
            ev("1", "a", "x", 30),
            NewEvent {
                kind: "purchase".into(),
                ..ev("2", "b", "x", 10)
            },
            ev("3", "a", "y", 20),
        ],
    );
    let stats = store.stats().unwrap();
    assert_eq!((stats.users, stats.items, stats.events), (3, 3, 3));
    assert_eq!(
        stats.events_by_kind.into_iter().collect::<Vec<_>>(),
        [("purchase".to_owned(), 1), ("view".to_owned(), 2)]
    );
    assert_eq!(stats.time_range, Some((10, 30)));
}

/// Retention: `delete_events_before` removes at most `limit` events older than the cut, returns
/// them in sequence order, and is called until it returns nothing.
pub fn events_delete_before_returns_what_it_removed<S: Store + ?Sized>(store: &S) {
    let appended = append(
        store,
        vec![
            ev("old1", "u", "i", 10),
            ev("new1", "u", "i", 500),
            ev("old2", "v", "j", 20),
            ev("old3", "u", "j", 30),
        ],
    );
    let first = store.delete_events_before(100, 2).unwrap();
    let rest = store.delete_events_before(100, 2).unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(rest.len(), 1);
    assert!(store.delete_events_before(100, 2).unwrap().is_empty());
    let mut removed: Vec<_> = first
        .iter()
        .chain(&rest)
        .map(|i| (i.seq, i.timestamp))
        .collect();
    assert!(first.windows(2).all(|w| w[0].seq < w[1].seq));
    removed.sort_unstable();
    assert_eq!(
        removed,
        [
            (appended[0].seq, 10),
            (appended[2].seq, 20),
            (appended[3].seq, 30)
        ]
    );
    let left = store.scan_interactions(0, 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].seq, left[0].user),
        (appended[1].seq, appended[1].user)
    );
    // Users and items stay: retention forgets events, not the catalog.
    assert!(store.get_user("v").unwrap().is_some());
}

/// `delete_pair_events` deletes one user's events on one item, of one type or of every type
/// but one, returns them in sequence order, and leaves every other event; `pair_events` reads
/// what is left of the pair. Unknown keys delete nothing; a freed event id can be used again.
pub fn events_delete_pair_takes_one_users_events_on_one_item<S: Store + ?Sized>(store: &S) {
    let like = |id: &str, ts| NewEvent {
        kind: "like".into(),
        ..ev(id, "u", "i", ts)
    };
    let seen = |id: &str, ts| NewEvent {
        kind: "impression".into(),
        ..ev(id, "u", "i", ts)
    };
    let appended = append(
        store,
        vec![
            ev("a", "u", "i", 10),
            like("b", 20),
            seen("c", 30),
            ev("d", "u", "j", 40),
            ev("e", "v", "i", 50),
            ev("f", "u", "i", 60),
        ],
    );
    let (u, i) = (appended[0].user, appended[0].item);
    let seqs = |v: &[Interaction]| v.iter().map(|x| x.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(&store.pair_events(u, i).unwrap()),
        [
            appended[0].seq,
            appended[1].seq,
            appended[2].seq,
            appended[5].seq
        ]
    );
    let views = store
        .delete_pair_events("u", "i", &Kinds::Only("view".into()))
        .unwrap();
    assert_eq!(seqs(&views), [appended[0].seq, appended[5].seq]);
    assert!(
        views
            .iter()
            .all(|x| x.kind == "view" && x.user == u && x.item == i)
    );
    assert_eq!(views[1].timestamp, 60);
    let rest = store
        .delete_pair_events("u", "i", &Kinds::AllBut("impression".into()))
        .unwrap();
    assert_eq!(seqs(&rest), [appended[1].seq]);
    assert_eq!(rest[0].kind, "like");
    // The impression, the user's other item and the other user's event stay.
    assert_eq!(seqs(&store.pair_events(u, i).unwrap()), [appended[2].seq]);
    let left = seqs(&store.scan_interactions(0, 10).unwrap());
    assert_eq!(left, [appended[2].seq, appended[3].seq, appended[4].seq]);
    for (user, item) in [("u", "nobody"), ("nobody", "i"), ("v", "j")] {
        assert!(
            store
                .delete_pair_events(user, item, &Kinds::AllBut("impression".into()))
                .unwrap()
                .is_empty()
        );
    }
    // Users and items stay; the deleted event's id can be used again.
    assert!(store.get_user("u").unwrap().is_some() && store.get_item("i").unwrap().is_some());
    let again = append(store, vec![ev("a", "u", "i", 70)]);
    assert!(!again[0].duplicate);
    assert_eq!(store.pair_events(u, i).unwrap().len(), 2);
}

/// `put_user` creates, then updates in place (same internal id, attributes replaced); consent
/// not given keeps its value; `get_user` reads back what was stored.
pub fn catalog_user_upsert_get_and_consent_merge<S: Store + ?Sized>(store: &S) {
    let mut attrs = Map::new();
    attrs.insert("plan".into(), json!("pro"));
    let up = UserUpsert {
        default_consent: Consent {
            personalization: false,
            training: true,
            marketing: true,
        },
        ..user("ann", attrs.clone())
    };
    let created = store.put_user(up.clone()).unwrap();
    assert!(created.created);
    assert_eq!(created.record.key, "ann");
    assert_eq!(created.record.attributes, attrs);
    assert!(!created.record.consent.personalization && created.record.consent.training);
    assert!(created.record.consent.marketing);
    assert_eq!(store.get_user("ann").unwrap(), Some(created.record.clone()));

    let updated = store
        .put_user(UserUpsert {
            consent: ConsentUpdate {
                personalization: Some(true),
                training: Some(false),
                marketing: Some(false),
            },
            attributes: Map::new(),
            ..up.clone()
        })
        .unwrap();
    assert!(!updated.created);
    assert_eq!(updated.record.idx, created.record.idx);
    assert!(updated.record.attributes.is_empty());
    assert!(updated.record.consent.personalization && !updated.record.consent.training);
    assert!(!updated.record.consent.marketing);
    assert_eq!(updated.record.created_at, created.record.created_at);
    assert!(updated.record.updated_at >= created.record.updated_at);

    let kept = store.put_user(user("ann", attrs)).unwrap();
    assert!(kept.record.consent.personalization && !kept.record.consent.training);
    assert!(!kept.record.consent.marketing);
    // Scans read the flag too.
    let scanned = store.scan_users(None, 10).unwrap();
    assert!(
        scanned
            .iter()
            .any(|u| u.key == "ann" && !u.consent.marketing)
    );
    assert_eq!(store.get_user("ann").unwrap(), Some(kept.record));
    assert_eq!(store.get_user("nobody").unwrap(), None);

    // A batch returns one result per user, in order.
    let both = store
        .put_users(vec![user("ann", Map::new()), user("bob", Map::new())])
        .unwrap();
    assert_eq!(
        both.iter()
            .map(|u| (u.record.key.as_str(), u.created))
            .collect::<Vec<_>>(),
        [("ann", false), ("bob", true)]
    );
}

/// Deleting a user deletes their events (and only theirs): they vanish from scans and stats,
/// and the user's internal id is never handed out again.
pub fn catalog_delete_user_removes_their_events<S: Store + ?Sized>(store: &S) {
    let appended = append(
        store,
        vec![
            ev("x1", "ann", "i", 1),
            ev("x2", "ann", "j", 2),
            ev("x3", "bob", "i", 3),
        ],
    );
    let deleted = store.delete_user("ann").unwrap().expect("ann existed");
    assert_eq!(deleted.events, 2);
    assert_eq!(deleted.idx, appended[0].user.0);
    assert_eq!(store.get_user("ann").unwrap(), None);
    assert_eq!(store.delete_user("ann").unwrap(), None);
    assert_eq!(store.user_events("ann", None, 10).unwrap(), None);
    let left = store.scan_interactions(0, 10).unwrap();
    assert_eq!(
        left.iter().map(|i| i.seq).collect::<Vec<_>>(),
        [appended[2].seq]
    );
    assert!(
        store
            .scan_events(0, 10)
            .unwrap()
            .iter()
            .all(|e| e.user != "ann")
    );
    assert!(
        store
            .scan_users(None, 10)
            .unwrap()
            .iter()
            .all(|u| u.key != "ann")
    );
    assert_eq!(store.stats().unwrap().events, 1);
    // The items stay.
    assert!(store.get_item("j").unwrap().is_some());

    let back = append(store, vec![ev("x4", "ann", "i", 4)]);
    assert!(back[0].created_user);
    assert!(
        back[0].user.0 > deleted.idx,
        "a deleted user's id was reused"
    );
}

/// Items round-trip with their fields and embeddings; an embedding name keeps the dimension of
/// its first vector; a batch is all or nothing; replacing drops embeddings no longer given.
pub fn catalog_item_upsert_get_and_embedding_dimensions<S: Store + ?Sized>(store: &S) {
    let mut sku = ItemUpsert {
        categories: vec!["books".into()],
        ..item("sku-1")
    };
    sku.text.insert("title".into(), "Dune".into());
    sku.numeric.insert("price".into(), 9.5);
    sku.attributes.insert("lang".into(), json!("en"));
    sku.embeddings.insert("text".into(), vec![0.5, -1.0, 2.0]);
    let put = store.put_item(sku.clone()).unwrap();
    assert!(put.created);
    let got = store.get_item("sku-1").unwrap().expect("stored");
    assert_eq!(got, put.record);
    assert_eq!(got.embeddings["text"], vec![0.5, -1.0, 2.0]);
    assert_eq!(got.text["title"], "Dune");
    assert_eq!(got.numeric["price"], 9.5);
    assert_eq!(got.attributes["lang"], "en");
    assert_eq!(got.categories, ["books"]);
    assert!(got.available);

    let mut wrong = sku.clone();
    wrong.key = "sku-2".into();
    wrong.embeddings.insert("text".into(), vec![1.0; 4]);
    let err = store.put_item(wrong.clone()).unwrap_err();
    assert!(
        matches!(err, Error::DimensionMismatch { ref name, expected: 3, got: 4 } if name == "text"),
        "{err:?}"
    );
    assert!(err.is_user_error());
    assert_eq!(store.get_item("sku-2").unwrap(), None);
    let err = store.put_items(vec![item("sku-3"), wrong]).unwrap_err();
    assert!(matches!(err, Error::DimensionMismatch { .. }), "{err:?}");
    assert_eq!(
        store.get_item("sku-3").unwrap(),
        None,
        "kept by a failed batch"
    );

    sku.embeddings.clear();
    sku.available = false;
    let replaced = store.put_item(sku).unwrap();
    assert!(!replaced.created);
    assert_eq!(replaced.record.idx, got.idx);
    assert!(replaced.record.embeddings.is_empty() && !replaced.record.available);
    assert_eq!(store.get_item("sku-1").unwrap(), Some(replaced.record));
    assert_eq!(store.get_item("nothing").unwrap(), None);
}

/// Deleting an item deletes the events on it; `None` when there is no such item.
pub fn catalog_delete_item_removes_its_events<S: Store + ?Sized>(store: &S) {
    let appended = append(
        store,
        vec![ev("y1", "u", "sku-1", 1), ev("y2", "u", "sku-2", 2)],
    );
    let deleted = store.delete_item("sku-1").unwrap().expect("sku-1 existed");
    assert_eq!(deleted.events, 1);
    assert_eq!(deleted.idx, appended[0].item.0);
    assert_eq!(store.get_item("sku-1").unwrap(), None);
    assert_eq!(store.delete_item("sku-1").unwrap(), None);
    let left = store.scan_events(0, 10).unwrap();
    assert_eq!(
        left.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
        ["y2"]
    );
    assert!(
        store
            .scan_items(None, 10)
            .unwrap()
            .iter()
            .all(|i| i.key != "sku-1")
    );
    assert_eq!(store.stats().unwrap().items, 1);
}

/// `scan_users` and `scan_items` page in internal-id order with `after`.
pub fn catalog_scans_page_in_id_order<S: Store + ?Sized>(store: &S) {
    let users: Vec<_> = (0..7).map(|i| user(&format!("u{i}"), Map::new())).collect();
    let users = store.put_users(users).unwrap();
    let items: Vec<_> = (0..7).map(|i| item(&format!("i{i}"))).collect();
    let items = store.put_items(items).unwrap();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.scan_users(after, 3).unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.idx);
        seen.extend(page);
    }
    assert_eq!(
        seen,
        users.into_iter().map(|u| u.record).collect::<Vec<_>>()
    );

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.scan_items(after, 3).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.idx);
        seen.extend(page);
    }
    assert_eq!(
        seen,
        items.into_iter().map(|i| i.record).collect::<Vec<_>>()
    );
}

/// Model versions: save numbers them 1, 2, ...; list shows them oldest first with metadata and
/// files; read returns the bytes; only an existing version can be activated; prune keeps the
/// newest `keep` and the active one; the active version cannot be deleted.
pub fn models_save_list_read_activate_prune_delete<S: Store + ?Sized>(store: &S) {
    assert!(store.list_models().unwrap().is_empty());
    assert_eq!(store.active_model().unwrap(), None);
    let v1 = store
        .save_model(&[("a.bin", b"one"), ("b.json", b"{}")], &json!({"n": 1}))
        .unwrap();
    let v2 = store
        .save_model(&[("a.bin", b"two")], &json!({"n": 2}))
        .unwrap();
    assert_eq!((v1, v2), (1, 2));
    assert_eq!(store.read_model_file(v2, "a.bin").unwrap(), b"two");
    assert_eq!(store.read_model_file(v1, "b.json").unwrap(), b"{}");
    assert!(matches!(
        store.read_model_file(9, "a.bin"),
        Err(Error::UnknownModel(9))
    ));
    assert!(matches!(
        store.save_model(&[("../x", b"")], &json!({})),
        Err(Error::InvalidInput(_))
    ));

    assert!(matches!(
        store.activate_model(9),
        Err(Error::UnknownModel(9))
    ));
    store.activate_model(v1).unwrap();
    assert_eq!(store.active_model().unwrap(), Some(v1));
    let list = store.list_models().unwrap();
    assert_eq!(
        list.iter()
            .map(|m| (m.version, m.active))
            .collect::<Vec<_>>(),
        [(v1, true), (v2, false)]
    );
    assert_eq!(list[0].files, ["a.bin", "b.json"]);
    assert_eq!(list[1].files, ["a.bin"]);
    assert_eq!(list[1].meta, json!({"n": 2}));
    assert!(list[1].bytes >= 3);

    let v3 = store.save_model(&[("a.bin", b"3")], &json!({})).unwrap();
    let v4 = store.save_model(&[("a.bin", b"4")], &json!({})).unwrap();
    assert_eq!(
        store.prune_models(2).unwrap(),
        [v2],
        "the active v1 is kept"
    );
    let left: Vec<u64> = store
        .list_models()
        .unwrap()
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(left, [v1, v3, v4]);

    let err = store.delete_model(v1).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    store.activate_model(v4).unwrap();
    store.delete_model(v1).unwrap();
    assert!(matches!(
        store.delete_model(v1),
        Err(Error::UnknownModel(_))
    ));
    let left: Vec<u64> = store
        .list_models()
        .unwrap()
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(left, [v3, v4]);
    assert_eq!(store.active_model().unwrap(), Some(v4));
    // Numbers only grow, even after deletions.
    assert!(store.save_model(&[("a.bin", b"5")], &json!({})).unwrap() > v4);
}

/// `rewrite_model_file` replaces one file of a stored version and leaves the others alone.
pub fn models_rewrite_file<S: Store + ?Sized>(store: &S) {
    let v = store
        .save_model(
            &[("users.bin", b"ann,bob"), ("items.bin", b"x")],
            &json!({}),
        )
        .unwrap();
    store.rewrite_model_file(v, "users.bin", b"bob").unwrap();
    assert_eq!(store.read_model_file(v, "users.bin").unwrap(), b"bob");
    assert_eq!(store.read_model_file(v, "items.bin").unwrap(), b"x");
    assert_eq!(
        store.list_models().unwrap()[0].files,
        ["items.bin", "users.bin"]
    );
    assert!(matches!(
        store.rewrite_model_file(v + 1, "users.bin", b""),
        Err(Error::UnknownModel(_))
    ));
}

fn new_key(prefix: &str, digest: u8) -> NewKey {
    NewKey {
        prefix: prefix.into(),
        name: format!("key {prefix}"),
        scopes: vec!["read".into(), "write".into()],
        hash: [digest; 32],
        rate_per_second: Some(5.0),
    }
}

/// API keys: insert returns the record, a taken prefix is refused, `keys` lists them oldest
/// first, revoking stamps the record once and an unknown prefix revokes nothing.
pub fn access_keys_insert_list_revoke<S: Store + ?Sized>(store: &S) {
    let a = store.insert_key(new_key("bsk_a", 1)).unwrap();
    assert_eq!(
        (a.prefix.as_str(), a.name.as_str(), a.hash),
        ("bsk_a", "key bsk_a", [1; 32])
    );
    assert_eq!(a.scopes, ["read", "write"]);
    assert_eq!((a.rate_per_second, a.revoked_at), (Some(5.0), None));
    let b = store
        .insert_key(NewKey {
            rate_per_second: None,
            ..new_key("bsk_b", 2)
        })
        .unwrap();
    assert!(matches!(
        store.insert_key(new_key("bsk_a", 3)),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(store.keys().unwrap(), [a.clone(), b.clone()]);

    let revoked = store.revoke_key("bsk_a").unwrap().expect("bsk_a exists");
    let at = revoked.revoked_at.expect("revoked");
    assert_eq!(revoked.id, a.id);
    let again = store.revoke_key("bsk_a").unwrap().expect("still there");
    assert_eq!(
        again.revoked_at,
        Some(at),
        "revoking twice keeps the first time"
    );
    assert_eq!(store.revoke_key("bsk_none").unwrap(), None);
    let keys = store.keys().unwrap();
    assert_eq!(keys[0].revoked_at, Some(at));
    assert_eq!(keys[1], b);
}

/// The audit log keeps entries in order, reads newest first, and pages with `before`.
pub fn access_audit_appends_and_pages_by_before<S: Store + ?Sized>(store: &S) {
    for i in 0..5 {
        store
            .audit(NewAudit {
                actor: "cli".into(),
                action: format!("action.{i}"),
                target: (i % 2 == 0).then(|| format!("t{i}")),
                detail: (i == 4).then(|| json!({"n": i})),
            })
            .unwrap();
    }
    let first = store.audit_log(None, 2).unwrap();
    assert_eq!(
        first
            .items
            .iter()
            .map(|e| e.action.as_str())
            .collect::<Vec<_>>(),
        ["action.4", "action.3"]
    );
    assert_eq!(first.items[0].detail, Some(json!({"n": 4})));
    assert_eq!(first.items[0].target.as_deref(), Some("t4"));
    assert_eq!(first.items[1].target, None);
    assert!(first.items[0].seq > first.items[1].seq);
    let mut actions: Vec<String> = first.items.iter().map(|e| e.action.clone()).collect();
    let mut before = first.next;
    assert_eq!(before, Some(first.items[1].seq));
    while let Some(b) = before {
        let page = store.audit_log(Some(b), 2).unwrap();
        assert!(page.items.iter().all(|e| e.seq < b));
        actions.extend(page.items.iter().map(|e| e.action.clone()));
        before = page.next;
    }
    assert_eq!(
        actions,
        ["action.4", "action.3", "action.2", "action.1", "action.0"]
    );
}

/// A secret is created by its first `secret` call and returned unchanged after; `stored_secret`
/// never creates one; `delete_secret` removes it (and says whether there was one).
pub fn access_secrets_are_stable_and_deletable<S: Store + ?Sized>(store: &S) {
    assert_eq!(store.stored_secret("pseudonym").unwrap(), None);
    assert_eq!(store.secret("pseudonym", [7; 32]).unwrap(), [7; 32]);
    assert_eq!(
        store.secret("pseudonym", [8; 32]).unwrap(),
        [7; 32],
        "the first one stays"
    );
    assert_eq!(store.stored_secret("pseudonym").unwrap(), Some([7; 32]));
    assert_eq!(store.secret("other", [9; 32]).unwrap(), [9; 32]);
    assert!(store.delete_secret("pseudonym").unwrap());
    assert!(!store.delete_secret("pseudonym").unwrap());
    assert_eq!(store.stored_secret("pseudonym").unwrap(), None);
    assert_eq!(store.secret("pseudonym", [8; 32]).unwrap(), [8; 32]);
    assert_eq!(store.stored_secret("other").unwrap(), Some([9; 32]));
}

/// Dashboard sessions: found by lookup while live, `last_seen` written no more often than
/// `touch_every`, ended by idleness, by age, by closing, and (the oldest) by the cap.
pub fn access_sessions_expire_touch_close_and_cap<S: Store + ?Sized>(store: &S) {
    use crate::{SessionLimits, SessionRecord};
    let limits = SessionLimits {
        idle: 1_000,
        absolute: 10_000,
        max: 3,
        touch_every: 100,
    };
    let at = |n: u8, t: Millis| SessionRecord {
        lookup: [n; 32],
        prefix: format!("bk_{n}"),
        key_digest: [n.wrapping_add(100); 32],
        csrf: format!("csrf-{n}"),
        created_at: t,
        last_seen: t,
    };
    store.open_session(at(1, 0), limits).unwrap();
    assert_eq!(
        store.touch_session(&[1; 32], 50, limits).unwrap(),
        Some(at(1, 0))
    );
    // Within touch_every nothing is written; past it, last_seen moves.
    let touched = store.touch_session(&[1; 32], 900, limits).unwrap().unwrap();
    assert_eq!(touched.last_seen, 900);
    assert_eq!(
        store
            .touch_session(&[1; 32], 950, limits)
            .unwrap()
            .unwrap()
            .last_seen,
        900
    );
    // Kept alive by its requests, until the absolute limit.
    for t in (1_800..10_000).step_by(800) {
        assert!(
            store.touch_session(&[1; 32], t, limits).unwrap().is_some(),
            "at {t}"
        );
    }
    assert_eq!(store.touch_session(&[1; 32], 10_000, limits).unwrap(), None);
    assert_eq!(
        store.touch_session(&[1; 32], 0, limits).unwrap(),
        None,
        "deleted"
    );
    // Idle too long.
    store.open_session(at(2, 20_000), limits).unwrap();
    assert_eq!(store.touch_session(&[2; 32], 21_000, limits).unwrap(), None);
    // Closing; unknown lookups.
    store.open_session(at(3, 30_000), limits).unwrap();
    store.close_session(&[3; 32]).unwrap();
    store.close_session(&[3; 32]).unwrap();
    assert_eq!(store.touch_session(&[3; 32], 30_001, limits).unwrap(), None);
    assert_eq!(store.touch_session(&[9; 32], 30_001, limits).unwrap(), None);
    // The cap ends the oldest live session.
    for (n, t) in [(4, 40_000), (5, 40_001), (6, 40_002), (7, 40_003)] {
        store.open_session(at(n, t), limits).unwrap();
    }
    assert_eq!(store.touch_session(&[4; 32], 40_004, limits).unwrap(), None);
    for n in 5..=7 {
        assert_eq!(
            store
                .touch_session(&[n; 32], 40_004, limits)
                .unwrap()
                .unwrap()
                .prefix,
            format!("bk_{n}")
        );
    }
}

/// Erasure receipts: saved by id (saving again replaces), read back, listed oldest first.
pub fn privacy_erasure_receipts_save_get_list<S: Store + ?Sized>(store: &S) {
    assert_eq!(store.erasure("e1").unwrap(), None);
    assert!(store.erasures().unwrap().is_empty());
    store
        .save_erasure("e2", 200, &json!({"state": "pending"}))
        .unwrap();
    store
        .save_erasure("e1", 100, &json!({"state": "pending"}))
        .unwrap();
    store
        .save_erasure("e2", 200, &json!({"state": "done"}))
        .unwrap();
    assert_eq!(store.erasure("e2").unwrap(), Some(json!({"state": "done"})));
    assert_eq!(
        store.erasures().unwrap(),
        [
            ("e1".to_owned(), json!({"state": "pending"})),
            ("e2".to_owned(), json!({"state": "done"}))
        ]
    );
}

/// After deletions, `purge_deleted` succeeds and what was not deleted is intact; a healthy store
/// reports no integrity problems.
pub fn privacy_purge_and_integrity_check_after_deletes<S: Store + ?Sized>(store: &S) {
    append(
        store,
        vec![ev("a", "gone", "i", 1), ev("b", "stays", "i", 2)],
    );
    store.delete_user("gone").unwrap().expect("existed");
    store.purge_deleted().unwrap();
    assert_eq!(store.integrity_check().unwrap(), Vec::<String>::new());
    let left = store.scan_events(0, 10).unwrap();
    assert_eq!(
        left.iter().map(|e| e.user.as_str()).collect::<Vec<_>>(),
        ["stays"]
    );
    assert_eq!(store.get_user("gone").unwrap(), None);
}

/// Loops: put creates then replaces the configuration (keeping the creation time); get and the
/// list (by name) read them back.
pub fn decisions_loops_put_get_list<S: Store + ?Sized>(store: &S) {
    assert_eq!(store.get_loop("home").unwrap(), None);
    assert!(store.loops().unwrap().is_empty());
    let home = store.put_loop("home", &json!({"slots": 3})).unwrap();
    assert_eq!(
        (home.name.as_str(), &home.config),
        ("home", &json!({"slots": 3}))
    );
    store.put_loop("cart", &json!({"slots": 1})).unwrap();
    let changed = store.put_loop("home", &json!({"slots": 4})).unwrap();
    assert_eq!(changed.config, json!({"slots": 4}));
    assert_eq!(changed.created_at, home.created_at);
    assert!(changed.updated_at >= home.updated_at);
    assert_eq!(store.get_loop("home").unwrap(), Some(changed));
    let names: Vec<String> = store.loops().unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["cart", "home"]);
}

/// A decision id is logged once: inserting it again changes nothing. Activation happens once.
pub fn decisions_insert_is_idempotent_and_activation_once<S: Store + ?Sized>(store: &S) {
    let first = store
        .insert_decision(decision("d1", "home", Some("u1"), 10))
        .unwrap()
        .expect("new");
    assert_eq!(
        store
            .insert_decision(NewDecision {
                payload: "{}".into(),
                ..decision("d1", "cart", None, 11)
            })
            .unwrap(),
        None
    );
    let stored = store.decision("d1").unwrap().expect("logged");
    assert_eq!(stored.seq, first);
    assert_eq!(
        (
            stored.loop_name.as_str(),
            stored.user.as_deref(),
            stored.created_at,
            stored.deadline
        ),
        ("home", Some("u1"), 10, 110)
    );
    assert_eq!(stored.payload, json!({"id": "d1"}).to_string());
    assert!(stored.activated && !stored.settled && stored.rewards.is_empty());
    assert_eq!(store.decision("nope").unwrap(), None);

    let second = store
        .insert_decision(NewDecision {
            activated: false,
            ..decision("d2", "home", None, 20)
        })
        .unwrap()
        .expect("new");
    assert!(second > first);
    assert!(!store.decision("d2").unwrap().unwrap().activated);
    assert!(store.activate_decision("d2").unwrap());
    assert!(!store.activate_decision("d2").unwrap(), "already active");
    assert!(!store.activate_decision("nope").unwrap());
    assert!(store.decision("d2").unwrap().unwrap().activated);
}

/// A slot takes one reward: a second is a duplicate that says whether the first was the
/// default; a reward for an unknown decision is reported as such.
pub fn decisions_rewards_duplicates_and_unknown_decisions<S: Store + ?Sized>(store: &S) {
    store
        .insert_decision(decision("d1", "home", None, 1))
        .unwrap();
    store
        .insert_decision(decision("d2", "home", None, 2))
        .unwrap();
    let r1 = recorded(store.insert_reward(reward("d1", 0, 1.0)).unwrap());
    let r2 = recorded(store.insert_reward(reward("d1", 1, 0.5)).unwrap());
    assert!(r2 > r1);
    assert_eq!(
        store.insert_reward(reward("d1", 0, 0.0)).unwrap(),
        RewardOutcome::Duplicate { default: false }
    );
    let default = NewReward {
        is_default: true,
        ..reward("d2", 0, 0.0)
    };
    recorded(store.insert_reward(default).unwrap());
    assert_eq!(
        store.insert_reward(reward("d2", 0, 1.0)).unwrap(),
        RewardOutcome::Duplicate { default: true }
    );
    assert_eq!(
        store.insert_reward(reward("nope", 0, 1.0)).unwrap(),
        RewardOutcome::UnknownDecision
    );
    let d1 = store.decision("d1").unwrap().unwrap();
    assert_eq!(
        d1.rewards
            .iter()
            .map(|r| (r.seq, r.slot, r.value))
            .collect::<Vec<_>>(),
        [(r1, 0, 1.0), (r2, 1, 0.5)],
        "the duplicate did not overwrite"
    );
    assert!(!d1.rewards[0].is_default);
    assert!(store.decision("d2").unwrap().unwrap().rewards[0].is_default);
}

/// Open decisions come earliest deadline first, filtered by deadline; `insert_rewards` records
/// defaults and closes windows in one go; the decision log holds activated, closed decisions,
/// the last `limit`, oldest first, with their rewards.
pub fn decisions_open_decisions_settle_and_decision_log<S: Store + ?Sized>(store: &S) {
    for (id, created) in [("late", 300), ("early", 100), ("mid", 200)] {
        store
            .insert_decision(decision(id, "home", None, created))
            .unwrap();
    }
    store
        .insert_decision(NewDecision {
            activated: false,
            ..decision("deferred", "home", None, 50)
        })
        .unwrap();
    assert_eq!(
        ids(&store.open_decisions(None, 10).unwrap()),
        ["deferred", "early", "mid", "late"]
    );
    // Deadlines are created_at + 100: 150, 200, 300, 400.
    assert_eq!(
        ids(&store.open_decisions(Some(300), 10).unwrap()),
        ["deferred", "early"]
    );
    assert_eq!(ids(&store.open_decisions(None, 1).unwrap()), ["deferred"]);

    recorded(store.insert_reward(reward("mid", 0, 1.0)).unwrap());
    let default = |id: &str| NewReward {
        is_default: true,
        ..reward(id, 0, 0.25)
    };
    let out = store
        .insert_rewards(
            vec![default("early"), default("mid"), default("deferred")],
            vec!["early".into(), "mid".into(), "deferred".into()],
        )
        .unwrap();
    assert!(matches!(out[0], RewardOutcome::Recorded(_)));
    assert_eq!(out[1], RewardOutcome::Duplicate { default: false });
    assert!(matches!(out[2], RewardOutcome::Recorded(_)));
    assert_eq!(ids(&store.open_decisions(None, 10).unwrap()), ["late"]);
    assert!(store.decision("early").unwrap().unwrap().settled);

    // "deferred" is closed but was never activated: not in the log.
    let log = store.decision_log("home", 10).unwrap();
    assert_eq!(ids(&log), ["early", "mid"]);
    assert_eq!(log[1].rewards[0].value, 1.0);
    assert!(log[0].rewards[0].is_default);
    assert_eq!(ids(&store.decision_log("home", 1).unwrap()), ["mid"]);
    assert!(store.decision_log("other", 10).unwrap().is_empty());
}

/// `loop_rewards` replays one loop's rewards in reward order, each with its decision, paged by
/// `after` and `limit`.
pub fn decisions_loop_rewards_page_in_reward_order<S: Store + ?Sized>(store: &S) {
    store
        .insert_decision(decision("a", "home", None, 1))
        .unwrap();
    store
        .insert_decision(decision("b", "home", None, 2))
        .unwrap();
    store
        .insert_decision(decision("c", "cart", None, 3))
        .unwrap();
    let rb = recorded(store.insert_reward(reward("b", 0, 0.5)).unwrap());
    recorded(store.insert_reward(reward("c", 0, 1.0)).unwrap());
    let ra = recorded(store.insert_reward(reward("a", 2, 1.0)).unwrap());
    let all = store.loop_rewards("home", 0, 10).unwrap();
    assert_eq!(
        all.iter()
            .map(|(r, d)| (r.seq, r.slot, d.id.as_str()))
            .collect::<Vec<_>>(),
        [(rb, 0, "b"), (ra, 2, "a")]
    );
    assert_eq!(all[0].1.loop_name, "home");
    let page = store.loop_rewards("home", 0, 1).unwrap();
    assert_eq!(page.len(), 1);
    let next = store.loop_rewards("home", page[0].0.seq, 10).unwrap();
    assert_eq!(next.iter().map(|(r, _)| r.seq).collect::<Vec<_>>(), [ra]);
    assert!(store.loop_rewards("home", ra, 10).unwrap().is_empty());
}

/// A loop's checkpoint is saved, replaced, read back and deleted.
pub fn decisions_checkpoint_save_load_delete<S: Store + ?Sized>(store: &S) {
    assert_eq!(store.checkpoint("home").unwrap(), None);
    store.save_checkpoint("home", 7, vec![1, 2, 3]).unwrap();
    store.save_checkpoint("cart", 1, vec![9]).unwrap();
    assert_eq!(store.checkpoint("home").unwrap(), Some((7, vec![1, 2, 3])));
    store.save_checkpoint("home", 9, vec![4]).unwrap();
    assert_eq!(store.checkpoint("home").unwrap(), Some((9, vec![4])));
    store.delete_checkpoint("home").unwrap();
    assert_eq!(store.checkpoint("home").unwrap(), None);
    store.delete_checkpoint("home").unwrap();
    assert_eq!(store.checkpoint("cart").unwrap(), Some((1, vec![9])));
}

/// A user's decisions are exported oldest first with their rewards, and deleted with their
/// rewards (returning the loops affected), leaving other users' decisions alone.
pub fn decisions_per_user_export_and_delete<S: Store + ?Sized>(store: &S) {
    store
        .insert_decision(decision("h1", "home", Some("u1"), 1))
        .unwrap();
    store
        .insert_decision(decision("c1", "cart", Some("u1"), 2))
        .unwrap();
    store
        .insert_decision(decision("h2", "home", Some("u2"), 3))
        .unwrap();
    store
        .insert_decision(decision("h3", "home", None, 4))
        .unwrap();
    recorded(store.insert_reward(reward("h1", 0, 1.0)).unwrap());
    recorded(store.insert_reward(reward("h2", 0, 0.5)).unwrap());

    let export = store.user_decisions("u1").unwrap();
    assert_eq!(ids(&export), ["h1", "c1"]);
    assert_eq!(export[0].rewards.len(), 1);
    assert!(store.user_decisions("nobody").unwrap().is_empty());

    assert_eq!(
        store.delete_user_decisions("u1").unwrap(),
        (vec!["cart".to_owned(), "home".to_owned()], 2)
    );
    assert_eq!(store.decision("h1").unwrap(), None);
    assert!(store.user_decisions("u1").unwrap().is_empty());
    let replay = store.loop_rewards("home", 0, 10).unwrap();
    assert_eq!(
        replay
            .iter()
            .map(|(_, d)| d.id.as_str())
            .collect::<Vec<_>>(),
        ["h2"],
        "the erased user's reward went with the decision"
    );
    assert_eq!(store.delete_user_decisions("u1").unwrap(), (vec![], 0));
    assert!(store.decision("h3").unwrap().is_some());
}

/// `loop_stats` counts a loop's decisions, rewards, defaults, the reward sum and apprentice
/// agreements (from the payload's `mode` and `agree`).
pub fn decisions_loop_stats_count_the_log<S: Store + ?Sized>(store: &S) {
    let apprentice = |id: &str, agree: bool| NewDecision {
        payload: json!({"mode": "apprentice", "agree": agree}).to_string(),
        ..decision(id, "home", None, 1)
    };
    store.insert_decision(apprentice("a1", true)).unwrap();
    store.insert_decision(apprentice("a2", false)).unwrap();
    store
        .insert_decision(decision("o1", "home", None, 1))
        .unwrap();
    store
        .insert_decision(decision("x", "cart", None, 1))
        .unwrap();
    recorded(store.insert_reward(reward("a1", 0, 1.0)).unwrap());
    recorded(store.insert_reward(reward("o1", 0, 0.5)).unwrap());
    recorded(
        store
            .insert_reward(NewReward {
                is_default: true,
                ..reward("a2", 0, 0.25)
            })
            .unwrap(),
    );
    recorded(store.insert_reward(reward("x", 0, 1.0)).unwrap());
    let stats = store.loop_stats("home").unwrap();
    assert_eq!(
        (stats.decisions, stats.rewards, stats.default_rewards),
        (3, 3, 1)
    );
    assert!(
        (stats.reward_sum - 1.75).abs() < 1e-12,
        "{}",
        stats.reward_sum
    );
    assert_eq!(
        (stats.apprentice_decisions, stats.apprentice_agreements),
        (2, 1)
    );
    assert_eq!(
        store.loop_stats("none").unwrap(),
        crate::LoopLogStats::default()
    );
}

/// Retention of decisions deletes closed ones made before the cut, with their rewards, up to
/// `limit` per call; open ones stay until their window closes.
pub fn decisions_delete_before_keeps_open_and_recent<S: Store + ?Sized>(store: &S) {
    for (id, created) in [
        ("old1", 10),
        ("old2", 20),
        ("old3", 30),
        ("open", 5),
        ("new", 500),
    ] {
        store
            .insert_decision(decision(id, "home", None, created))
            .unwrap();
    }
    recorded(store.insert_reward(reward("old1", 0, 1.0)).unwrap());
    store
        .insert_rewards(
            vec![],
            vec!["old1".into(), "old2".into(), "old3".into(), "new".into()],
        )
        .unwrap();
    assert_eq!(store.delete_decisions_before(100, 2).unwrap(), 2);
    assert_eq!(store.delete_decisions_before(100, 2).unwrap(), 1);
    assert_eq!(store.delete_decisions_before(100, 2).unwrap(), 0);
    for gone in ["old1", "old2", "old3"] {
        assert_eq!(store.decision(gone).unwrap(), None, "{gone}");
    }
    assert!(store.decision("open").unwrap().is_some(), "still open");
    assert!(store.decision("new").unwrap().is_some(), "after the cut");
    assert!(store.loop_rewards("home", 0, 10).unwrap().is_empty());
    assert_eq!(store.loop_stats("home").unwrap().decisions, 2);
}

/// Rules: put creates, then replaces the definition keeping the creation time (`now` is the
/// update time); the list is by name; delete says whether there was one.
pub fn rules_put_replace_list_delete<S: Store + ?Sized>(store: &S) {
    assert!(store.rules().unwrap().is_empty());
    let pin = store
        .put_rule("pin", &json!({"item": "a", "slot": 0}), 100)
        .unwrap();
    assert_eq!(
        (
            pin.name.as_str(),
            &pin.definition,
            pin.created_at,
            pin.updated_at
        ),
        ("pin", &json!({"item": "a", "slot": 0}), 100, 100)
    );
    store
        .put_rule("boost", &json!({"factor": 2.0}), 150)
        .unwrap();
    let replaced = store.put_rule("pin", &json!({"item": "b"}), 200).unwrap();
    assert_eq!(
        (
            &replaced.definition,
            replaced.created_at,
            replaced.updated_at
        ),
        (&json!({"item": "b"}), 100, 200),
        "a replace keeps created_at"
    );
    let all = store.rules().unwrap();
    assert_eq!(
        all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["boost", "pin"]
    );
    assert_eq!(all[1], replaced, "what the list reads is what put returned");
    assert!(store.delete_rule("pin").unwrap());
    assert!(!store.delete_rule("pin").unwrap());
    assert!(!store.delete_rule("never").unwrap());
    let left: Vec<String> = store.rules().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(left, ["boost"]);
}

/// `n` users and `n` items named `{prefix}u{i}` / `{prefix}i{i}`, with their internal ids.
fn catalog<S: Store + ?Sized>(store: &S, prefix: &str, n: usize) -> (Vec<UserIdx>, Vec<ItemIdx>) {
    let users = store
        .put_users(
            (0..n)
                .map(|i| user(&format!("{prefix}u{i}"), Map::new()))
                .collect(),
        )
        .unwrap();
    let items = store
        .put_items((0..n).map(|i| item(&format!("{prefix}i{i}"))).collect())
        .unwrap();
    (
        users.into_iter().map(|u| u.record.idx).collect(),
        items.into_iter().map(|i| i.record.idx).collect(),
    )
}

fn block(user: UserIdx, item: ItemIdx, blocked: bool, at: Millis) -> Block {
    Block {
        user,
        item,
        blocked,
        at,
    }
}

/// One row per (user, item): a later `at` replaces it, an older one arriving later is ignored,
/// and of two writes with the same `at` the block wins whatever their order. An unblock stays
/// as a row, so an older block cannot undo it.
pub fn rules_blocks_latest_at_wins<S: Store + ?Sized>(store: &S) {
    let (u, i) = catalog(store, "", 2);
    let (ann, a, b) = (u[0], i[0], i[1]);
    store.set_block(ann, a, true, 100).unwrap();
    assert_eq!(store.blocks_of(ann).unwrap(), [block(ann, a, true, 100)]);
    store.set_block(ann, a, false, 200).unwrap();
    assert_eq!(store.blocks_of(ann).unwrap(), [block(ann, a, false, 200)]);
    store.set_block(ann, a, true, 150).unwrap();
    assert_eq!(
        store.blocks_of(ann).unwrap(),
        [block(ann, a, false, 200)],
        "an older block arriving later is ignored"
    );
    store.set_block(ann, a, true, 300).unwrap();
    store.set_block(ann, a, true, 300).unwrap();
    assert_eq!(
        store.blocks_of(ann).unwrap(),
        [block(ann, a, true, 300)],
        "a replay changes nothing"
    );

    // Equal times: the block wins, in either order.
    store.set_block(ann, a, false, 300).unwrap();
    store.set_block(ann, b, true, 50).unwrap();
    store.set_block(ann, b, false, 50).unwrap();
    assert_eq!(
        store.blocks_of(ann).unwrap(),
        [block(ann, a, true, 300), block(ann, b, true, 50)]
    );
    assert_eq!(
        store.scan_blocks(None, 10).unwrap().len(),
        2,
        "one row per pair"
    );
}

/// `blocks_of` lists one user's rows by item, whatever order they were written in, and only
/// theirs. An unknown or deleted user or item is refused with its typed error and nothing is
/// stored.
pub fn rules_blocks_of_by_item_and_unknown_ids_refused<S: Store + ?Sized>(store: &S) {
    let (u, i) = catalog(store, "", 4);
    for (k, &item) in i.iter().enumerate().rev() {
        store
            .set_block(u[0], item, k % 2 == 0, 10 + k as Millis)
            .unwrap();
    }
    store.set_block(u[1], i[2], true, 5).unwrap();
    let expected: Vec<Block> = i
        .iter()
        .enumerate()
        .map(|(k, &item)| block(u[0], item, k % 2 == 0, 10 + k as Millis))
        .collect();
    assert_eq!(store.blocks_of(u[0]).unwrap(), expected);
    assert_eq!(store.blocks_of(u[1]).unwrap(), [block(u[1], i[2], true, 5)]);
    assert!(store.blocks_of(u[3]).unwrap().is_empty());

    let stranger = UserIdx(u.iter().map(|u| u.0).max().unwrap() + 1000);
    let nothing = ItemIdx(i.iter().map(|i| i.0).max().unwrap() + 1000);
    assert!(store.blocks_of(stranger).unwrap().is_empty());
    let err = store.set_block(stranger, i[0], true, 1).unwrap_err();
    assert!(
        matches!(err, Error::UnknownUserIdx(x) if x == stranger),
        "{err:?}"
    );
    assert!(err.is_user_error());
    let err = store.set_block(u[0], nothing, true, 1).unwrap_err();
    assert!(
        matches!(err, Error::UnknownItemIdx(x) if x == nothing),
        "{err:?}"
    );
    assert!(err.is_user_error());

    store.delete_user("u2").unwrap().expect("u2 existed");
    store.delete_item("i3").unwrap().expect("i3 existed");
    assert!(matches!(
        store.set_block(u[2], i[0], true, 1),
        Err(Error::UnknownUserIdx(x)) if x == u[2]
    ));
    assert!(matches!(
        store.set_block(u[1], i[3], true, 1),
        Err(Error::UnknownItemIdx(x)) if x == i[3]
    ));
    assert!(store.blocks_of(u[2]).unwrap().is_empty(), "no orphan row");
    assert!(
        store
            .scan_blocks(None, 100)
            .unwrap()
            .iter()
            .all(|b| b.user != u[2] && b.item != i[3] && b.user != stranger && b.item != nothing)
    );
}

/// Paging `scan_blocks` with `after` = the last row's (user, item) visits every row of every
/// user exactly once, in (user, item) order, pages breaking inside a user's rows.
pub fn rules_scan_blocks_pages_in_user_item_order<S: Store + ?Sized>(store: &S) {
    assert!(store.scan_blocks(None, 10).unwrap().is_empty());
    let (u, i) = catalog(store, "", 5);
    let mut expected = Vec::new();
    // Written newest user first and items in reverse, so that insertion order is no help.
    for (x, &user) in u.iter().enumerate().rev() {
        for (y, &item) in i.iter().enumerate().rev() {
            if (x + y) % 3 != 0 {
                let row = block(user, item, y % 2 == 0, (x * 10 + y) as Millis);
                store.set_block(user, item, row.blocked, row.at).unwrap();
                expected.push(row);
            }
        }
    }
    expected.sort_by_key(|b| (b.user, b.item));
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.scan_blocks(after, 4).unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = Some((last.user, last.item));
        seen.extend(page);
    }
    assert_eq!(seen, expected);
    assert!(store.scan_blocks(after, 4).unwrap().is_empty());
    assert!(store.scan_blocks(None, 0).unwrap().is_empty());
    // `after` need not be a stored row.
    let from_middle = store.scan_blocks(Some((u[2], ItemIdx(0))), 100).unwrap();
    assert_eq!(
        from_middle,
        expected
            .iter()
            .filter(|b| b.user >= u[2])
            .copied()
            .collect::<Vec<_>>()
    );
}

/// Deleting a user deletes their block rows (and only theirs); the same key coming back is a
/// new user, with a new id and no blocks.
pub fn rules_blocks_go_with_their_user<S: Store + ?Sized>(store: &S) {
    let (u, i) = catalog(store, "", 3);
    for &user in &u {
        store.set_block(user, i[0], true, 1).unwrap();
        store.set_block(user, i[1], false, 2).unwrap();
    }
    store.delete_user("u1").unwrap().expect("u1 existed");
    assert!(store.blocks_of(u[1]).unwrap().is_empty());
    let left = store.scan_blocks(None, 100).unwrap();
    assert_eq!(left.len(), 4);
    assert!(left.iter().all(|b| b.user != u[1]));
    assert_eq!(store.blocks_of(u[0]).unwrap().len(), 2);
    // A new user with the same key gets a new id and no blocks.
    let back = store.put_user(user("u1", Map::new())).unwrap();
    assert_ne!(back.record.idx, u[1]);
    assert!(store.blocks_of(back.record.idx).unwrap().is_empty());
}

/// Deleting an item deletes every user's block row of it, and nothing else.
pub fn rules_blocks_go_with_their_item<S: Store + ?Sized>(store: &S) {
    let (u, i) = catalog(store, "", 3);
    for &user in &u {
        for &item in &i {
            store.set_block(user, item, true, 1).unwrap();
        }
    }
    store.delete_item("i1").unwrap().expect("i1 existed");
    let left = store.scan_blocks(None, 100).unwrap();
    assert_eq!(left.len(), 6);
    assert!(left.iter().all(|b| b.item != i[1]));
    for &user in &u {
        assert_eq!(
            store
                .blocks_of(user)
                .unwrap()
                .iter()
                .map(|b| b.item)
                .collect::<Vec<_>>(),
            [i[0], i[2]]
        );
    }
}

/// Retention deletes old events, not blocks: a block's `at` long before the cut stays.
pub fn rules_blocks_are_not_subject_to_retention<S: Store + ?Sized>(store: &S) {
    let out = append(store, vec![ev("r1", "u", "i", 10)]);
    store.set_block(out[0].user, out[0].item, true, 10).unwrap();
    store.put_rule("pin", &json!({}), 10).unwrap();
    assert_eq!(store.delete_events_before(1_000, 10).unwrap().len(), 1);
    assert_eq!(
        store.blocks_of(out[0].user).unwrap(),
        [block(out[0].user, out[0].item, true, 10)]
    );
    assert_eq!(store.rules().unwrap().len(), 1);
}

fn exposure(user: &str, variant: u32, at: Millis) -> NewExposure {
    NewExposure {
        user: user.to_owned(),
        variant,
        at,
    }
}

/// Experiment definitions are stored like rules; an exposure is recorded once per user (the
/// first wins), by key whether or not the user exists yet, and deleting the experiment deletes
/// its exposures.
pub fn campaigns_experiments_and_first_exposures<S: Store + ?Sized>(store: &S) {
    let first = store.put_experiment("blend", &json!({"v": 1}), 10).unwrap();
    let again = store.put_experiment("blend", &json!({"v": 2}), 20).unwrap();
    assert_eq!(again.created_at, first.created_at);
    assert_eq!(again.updated_at, 20);
    store.put_experiment("another", &json!({}), 5).unwrap();
    let names: Vec<_> = store
        .experiments()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["another", "blend"]);
    assert_eq!(store.experiments().unwrap()[1].definition, json!({"v": 2}));

    let added = store
        .record_exposures(
            "blend",
            vec![exposure("u0", 1, 100), exposure("new", 0, 110)],
        )
        .unwrap();
    assert_eq!(added, 2);
    // A repeat keeps the first variant and time.
    let added = store
        .record_exposures("blend", vec![exposure("u0", 0, 200)])
        .unwrap();
    assert_eq!(added, 0);
    let rows = store.exposures("blend").unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].key, "u0");
    assert_eq!((rows[1].variant, rows[1].at), (1, 100));
    assert_eq!(rows[1].credit, (0, 0));
    // Credit adds up on existing rows only.
    let changed = store
        .add_credits(
            "blend",
            vec![
                ("u0".into(), 2, 1),
                ("u0".into(), 1, 0),
                ("nobody".into(), 5, 5),
            ],
        )
        .unwrap();
    assert_eq!(changed, 2);
    assert_eq!(store.exposures("blend").unwrap()[1].credit, (3, 1));
    assert!(store.exposures("another").unwrap().is_empty());

    assert!(store.delete_experiment("blend").unwrap());
    assert!(!store.delete_experiment("blend").unwrap());
    assert!(store.exposures("blend").unwrap().is_empty());
}

/// Replacing a segment's members replaces the set, pages in user-id order, answers membership
/// per user and appends the size to its history.
pub fn campaigns_segment_members_page_and_sizes_accumulate<S: Store + ?Sized>(store: &S) {
    let (u, _) = catalog(store, "", 5);
    store.put_segment("vip", &json!({"rule": "x"}), 1).unwrap();
    let size = store
        .replace_members("vip", vec![(u[0], 1.0), (u[2], 0.5), (u[4], 0.25)], 100)
        .unwrap();
    assert_eq!(size, 3);
    let page = store.members("vip", None, 2).unwrap();
    assert_eq!(
        page.iter().map(|m| m.user).collect::<Vec<_>>(),
        [u[0], u[2]]
    );
    let rest = store.members("vip", Some(u[2]), 2).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].key.as_str(), rest[0].score), ("u4", 0.25));
    assert_eq!(store.memberships(u[2]).unwrap(), [("vip".to_owned(), 0.5)]);

    let size = store
        .replace_members("vip", vec![(u[1], 1.0), (UserIdx(9_999), 1.0)], 200)
        .unwrap();
    assert_eq!(size, 1, "an unknown user is skipped");
    assert!(store.memberships(u[2]).unwrap().is_empty());
    assert_eq!(store.segment_sizes("vip").unwrap(), [(100, 3), (200, 1)]);

    assert!(store.delete_segment("vip").unwrap());
    assert!(store.segments().unwrap().is_empty());
    assert!(store.members("vip", None, 10).unwrap().is_empty());
    assert!(store.segment_sizes("vip").unwrap().is_empty());
}

/// Deleting a user deletes their exposures and memberships; retention removes rows recorded
/// before the cutoff and keeps the rest.
pub fn campaigns_rows_go_with_their_user_and_expire<S: Store + ?Sized>(store: &S) {
    let (u, _) = catalog(store, "", 3);
    store.put_experiment("e", &json!({}), 1).unwrap();
    store.put_segment("s", &json!({}), 1).unwrap();
    store
        .record_exposures(
            "e",
            ["u0", "u1", "u2"].map(|k| exposure(k, 0, 100)).to_vec(),
        )
        .unwrap();
    store
        .replace_members("s", u.iter().map(|&x| (x, 1.0)).collect(), 100)
        .unwrap();
    store.delete_user("u1").unwrap().expect("u1 existed");
    assert!(store.exposures("e").unwrap().iter().all(|e| e.key != "u1"));
    assert_eq!(store.exposures("e").unwrap().len(), 2);
    assert!(store.memberships(u[1]).unwrap().is_empty());
    assert_eq!(store.members("s", None, 10).unwrap().len(), 2);

    store.replace_members("s", vec![(u[0], 1.0)], 300).unwrap();
    // Exposures (at 100) and the first size row (at 100) expire; the new members (300) stay.
    let removed = store.delete_campaign_rows_before(200).unwrap();
    assert_eq!(removed, 3);
    assert!(store.exposures("e").unwrap().is_empty());
    assert_eq!(store.members("s", None, 10).unwrap().len(), 1);
    assert_eq!(store.segment_sizes("s").unwrap(), [(300, 1)]);
}
