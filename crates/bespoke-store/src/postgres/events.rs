//! [`crate::EventStore`] on PostgreSQL: the `events` table.
//!
//! An append is one transaction of a fixed number of round trips whatever the batch size: the
//! append lock (the `next_event_seq` counter row), the users' and items' ids (one query each,
//! plus one insert each for those it creates), one lookup of every event id the batch names,
//! one multi-row insert of the new events (`unnest` of one array per column), and the counter.
//!
//! Event ids are stored in a `BYTEA` column: a canonical lowercase UUID as its 16 bytes (as in
//! SQLite), any other client id as its UTF-8 bytes, with one `0xFF` byte appended when that is
//! exactly 16 bytes long (`0xFF` never occurs in UTF-8, so the two forms cannot collide, and
//! ids containing NUL, which PostgreSQL text cannot hold, are stored as they are).
//! Server-issued ids are not stored (`NULL`): they are recomputed from the row.

use std::collections::HashSet;

use super::*;
use crate::event_id::{self, format_uuid, parse_uuid};
use crate::fingerprint::fingerprint;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    event_id BYTEA,
    user_id BIGINT NOT NULL,
    item_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    value DOUBLE PRECISION,
    ts BIGINT NOT NULL,
    context TEXT,
    fingerprint BIGINT NOT NULL
);
CREATE UNIQUE INDEX events_by_id ON events (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX events_by_user ON events (user_id, seq);
"#;

/// An event id as stored (see the module doc); also what `bespoke migrate` writes.
pub(crate) fn encode_event_id(id: &str) -> Vec<u8> {
    if let Some(b) = parse_uuid(id) {
        return b.to_vec();
    }
    let mut bytes = id.as_bytes().to_vec();
    if bytes.len() == 16 {
        bytes.push(0xFF);
    }
    bytes
}

/// The public id of an event row: the stored client id, or the server-issued one recomputed
/// from the row's time and sequence number.
pub(super) fn decode_event_id(
    stored: Option<&[u8]>,
    tag: u64,
    ts: i64,
    seq: u64,
) -> Result<String> {
    match stored {
        None => Ok(format_uuid(&event_id::issued(tag, ts, seq))),
        Some(b) => decode_stored_event_id(b),
    }
}

/// A stored client event id back as the client sent it (the inverse of [`encode_event_id`]).
pub(crate) fn decode_stored_event_id(b: &[u8]) -> Result<String> {
    let text = |b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|_| Error::Corrupt("event id is not UTF-8".into()))
    };
    match b {
        b if b.len() == 16 => Ok(format_uuid(b.try_into().expect("16 bytes"))),
        [rest @ .., 0xFF] => text(rest),
        b => text(b),
    }
}

fn event_context(text: Option<String>) -> Result<Option<Map<String, Value>>> {
    text.map(|t| parse_json(&t, "event context")).transpose()
}

/// The two keyed tables events refer to.
#[derive(Debug, Clone, Copy)]
enum Keyed {
    Users,
    Items,
}

impl Keyed {
    fn name(self) -> &'static str {
        match self {
            Keyed::Users => "users",
            Keyed::Items => "items",
        }
    }
}

/// Internal ids of the events' users (or items), one per event, with whether this event
/// created it; or the index of the first event whose user (item) is unknown.
type Resolved = std::result::Result<Vec<(u32, bool)>, usize>;

/// The ids of `keys` (one per event) in `table`, creating the missing ones when `create` gives
/// `(consent, now)` (a user's consent; ignored for items, which are created available).
///
/// Rows are not locked `FOR KEY SHARE` (which writes a lock into every row found):
/// deletions of users and items take the append lock (see `catalog.rs`), so none can run
/// between this lookup and the append's commit.
///
/// Keys in `known` (from the memo) are not looked up again; what the database answered is
/// pushed to `learned`, for the memo once the append has committed.
fn resolve(
    db: &mut Db<'_, '_>,
    table: Keyed,
    keys: &[&str],
    create: Option<(Consent, Millis)>,
    known: &HashMap<String, u32>,
    learned: &mut Vec<(String, u32)>,
) -> Result<Resolved> {
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut unique = distinct(keys.iter().copied());
    unique.retain(|k| match known.get(*k) {
        Some(&id) => {
            ids.insert((*k).to_owned(), i64::from(id));
            false
        }
        None => true,
    });
    let found = match table {
        _ if unique.is_empty() => Vec::new(),
        Keyed::Users => db.query("SELECT key, id FROM users WHERE key = ANY($1)", &[&unique])?,
        Keyed::Items => db.query("SELECT key, id FROM items WHERE key = ANY($1)", &[&unique])?,
    };
    for r in &found {
        let (key, id): (String, i64) = (r.get(0), r.get(1));
        learned.push((key.clone(), to_u32(id, table.name())?));
        ids.insert(key, id);
    }
    let missing: Vec<&str> = unique
        .iter()
        .copied()
        .filter(|k| !ids.contains_key(*k))
        .collect();
    let mut created: HashSet<&str> = HashSet::new();
    if !missing.is_empty() {
        let Some((consent, now)) = create else {
            let first = keys
                .iter()
                .position(|k| !ids.contains_key(*k))
                .expect("a missing key belongs to an event");
            return Ok(Err(first));
        };
        // A concurrent transaction creating the same key makes this fail with a unique
        // violation; the append is then retried and finds it.
        let rows = match table {
            Keyed::Users => db.query(
                "INSERT INTO users (key, attributes, consent_personalization, consent_training,
                                    consent_marketing, created_at, updated_at)
                 SELECT k, '{}', $2, $3, $4, $5, $5
                 FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n
                 RETURNING key, id",
                &[
                    &missing,
                    &consent.personalization,
                    &consent.training,
                    &consent.marketing,
                    &now,
                ],
            )?,
            Keyed::Items => db.query(
                "INSERT INTO items (key, categories, text, numeric, attributes, available,
                                    created_at, updated_at)
                 SELECT k, '[]', '{}', '{}', '{}', TRUE, $2, $2
                 FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n
                 RETURNING key, id",
                &[&missing, &now],
            )?,
        };
        for r in rows {
            let (key, id): (String, i64) = (r.get(0), r.get(1));
            learned.push((key.clone(), to_u32(id, table.name())?));
            ids.insert(key, id);
        }
        created.extend(missing);
    }
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let id = *ids
            .get(*k)
            .ok_or_else(|| Error::Corrupt(format!("{} {k:?} vanished", table.name())))?;
        // Only the first event naming a created key created it.
        out.push((to_u32(id, table.name())?, created.remove(k)));
    }
    Ok(Ok(out))
}

/// Most keys a memo keeps per table before it starts over.
const MEMO_MAX: usize = 1 << 20;

/// Users' and items' ids by key, remembered from earlier appends so that a batch looks up only
/// the keys it has not seen (what SQLite's writer does too). Ids never change while their row
/// exists, so the memo is exact as long as nothing was deleted: every deletion of a user or an
/// item increments `meta.catalog_epoch` under the append lock, and an append, which reads the
/// epoch under the same lock, forgets the memo when the epoch moved, whichever process deleted.
#[derive(Debug, Default)]
pub(super) struct IdMemo {
    epoch: i64,
    users: HashMap<String, u32>,
    items: HashMap<String, u32>,
}

/// What an append learned for the memo, valid at `epoch`; kept only once it has committed.
pub(super) struct Learned {
    epoch: i64,
    users: Vec<(String, u32)>,
    items: Vec<(String, u32)>,
}

impl IdMemo {
    /// The memo as of `epoch`: emptied if a deletion happened since it was filled.
    fn at(&mut self, epoch: i64) -> &Self {
        if self.epoch != epoch {
            self.users.clear();
            self.items.clear();
            self.epoch = epoch;
        }
        self
    }

    /// Keeps what a committed append learned, unless a later append has seen a deletion since.
    pub(super) fn learn(&mut self, learned: Learned) {
        if learned.epoch != self.epoch {
            return;
        }
        for (map, entries) in [
            (&mut self.users, learned.users),
            (&mut self.items, learned.items),
        ] {
            if map.len() + entries.len() > MEMO_MAX {
                map.clear();
            }
            map.extend(entries);
        }
    }
}

/// New event rows, one array per column, for one `unnest` insert.
#[derive(Default)]
struct Rows<'a> {
    seq: Vec<i64>,
    event_id: Vec<Option<Vec<u8>>>,
    user: Vec<i64>,
    item: Vec<i64>,
    kind: Vec<&'a str>,
    value: Vec<Option<f64>>,
    ts: Vec<i64>,
    context: Vec<Option<String>>,
    fingerprint: Vec<i64>,
}

/// Appends `batch` in the current transaction (see the module doc); fails, storing nothing,
/// exactly where SQLite's writer does.
pub(super) fn append(
    db: &mut Db<'_, '_>,
    batch: &EventBatch,
    tag: u64,
    memo: &parking_lot::Mutex<IdMemo>,
) -> Result<(Vec<Appended>, Learned)> {
    let now = batch.now.unwrap_or_else(now_ms);
    // The append lock: held until commit, so appends are numbered in commit order.
    let lock = db.query_one(
        "SELECT value, (SELECT value FROM meta WHERE key = 'catalog_epoch')
         FROM meta WHERE key = 'next_event_seq' FOR UPDATE",
        &[],
    )?;
    let (first_seq, epoch): (i64, i64) = (lock.get(0), lock.get(1));
    let mut learned = Learned {
        epoch,
        users: Vec::new(),
        items: Vec::new(),
    };
    let user_keys: Vec<&str> = batch.events.iter().map(|e| e.user.as_str()).collect();
    let item_keys: Vec<&str> = batch.events.iter().map(|e| e.item.as_str()).collect();
    // What the memo knows of this batch's keys, copied so that its lock is not held across
    // queries.
    let (known_users, known_items) = {
        let mut memo = memo.lock();
        let memo = memo.at(epoch);
        let pick = |map: &HashMap<String, u32>, keys: &[&str]| -> HashMap<String, u32> {
            keys.iter()
                .filter_map(|k| map.get(*k).map(|&id| ((*k).to_owned(), id)))
                .collect()
        };
        (pick(&memo.users, &user_keys), pick(&memo.items, &item_keys))
    };
    let users = resolve(
        db,
        Keyed::Users,
        &user_keys,
        batch.create_users.then_some((batch.default_consent, now)),
        &known_users,
        &mut learned.users,
    )?;
    let items = resolve(
        db,
        Keyed::Items,
        &item_keys,
        batch.create_items.then_some((Consent::ALL, now)),
        &known_items,
        &mut learned.items,
    )?;
    // SQLite checks each event's user, then its item, in order: report the first.
    let (users, items) = match (users, items) {
        (Ok(u), Ok(i)) => (u, i),
        (Err(u), Err(i)) if i < u => return Err(unknown_item(batch, i)),
        (Err(u), _) => return Err(unknown_user(batch, u)),
        (Ok(_), Err(i)) => return Err(unknown_item(batch, i)),
    };

    // Every id the batch names, looked up at once: client ids by the unique index, issued ids
    // by their sequence number.
    let mut client_keys = Vec::new();
    let mut issued_seqs = Vec::new();
    for id in batch.events.iter().filter_map(|e| e.event_id.as_deref()) {
        if let Some((_, seq)) = parse_uuid(id).and_then(|b| event_id::decode_issued(tag, &b)) {
            issued_seqs.push(seq as i64);
        }
        client_keys.push(encode_event_id(id));
    }
    let mut stored: HashMap<Vec<u8>, (i64, i64, i64)> = HashMap::new();
    if !client_keys.is_empty() {
        for r in db.query(
            "SELECT event_id, seq, fingerprint, ts FROM events WHERE event_id = ANY($1)",
            &[&client_keys],
        )? {
            stored.insert(r.get(0), (r.get(1), r.get(2), r.get(3)));
        }
    }
    let mut stored_issued: HashMap<i64, (i64, i64)> = HashMap::new();
    if !issued_seqs.is_empty() {
        for r in db.query(
            "SELECT seq, fingerprint, ts FROM events WHERE seq = ANY($1) AND event_id IS NULL",
            &[&issued_seqs],
        )? {
            stored_issued.insert(r.get(0), (r.get(1), r.get(2)));
        }
    }

    let mut next = first_seq;
    let mut rows = Rows::default();
    let mut out = Vec::with_capacity(batch.events.len());
    for (index, (e, (&(user, created_user), &(item, created_item)))) in batch
        .events
        .iter()
        .zip(users.iter().zip(items.iter()))
        .enumerate()
    {
        let fp = i64::from_le_bytes(fingerprint(e));
        let timestamp = e.timestamp.unwrap_or(now);
        let appended = |event_id: String, seq: i64, timestamp: i64, duplicate: bool| Appended {
            event_id,
            seq: seq as u64,
            user: UserIdx(user),
            item: ItemIdx(item),
            timestamp,
            duplicate,
            created_user,
            created_item,
        };
        let key = match &e.event_id {
            None => None,
            Some(id) => {
                // A server-issued id sent back: a replay of that event, or not ours to use.
                if let Some((_, issued_seq)) =
                    parse_uuid(id).and_then(|b| event_id::decode_issued(tag, &b))
                {
                    let original = stored_issued.get(&(issued_seq as i64)).copied();
                    match original {
                        Some((stored_fp, ts))
                            if format_uuid(&event_id::issued(tag, ts, issued_seq)) == *id =>
                        {
                            if stored_fp != fp {
                                return Err(Error::EventConflict {
                                    index,
                                    event_id: id.clone(),
                                });
                            }
                            out.push(appended(id.clone(), issued_seq as i64, ts, true));
                            continue;
                        }
                        // An id this store issued for an event since erased (an export imported
                        // back): its number is in the past and will never be issued again, so it
                        // is safe to keep as a client id.
                        None if (issued_seq as i64) < next => {}
                        _ => {
                            return Err(Error::ReservedEventId {
                                index,
                                event_id: id.clone(),
                            });
                        }
                    }
                }
                let key = encode_event_id(id);
                if let Some(&(seq, stored_fp, ts)) = stored.get(&key) {
                    if stored_fp != fp {
                        return Err(Error::EventConflict {
                            index,
                            event_id: id.clone(),
                        });
                    }
                    out.push(appended(id.clone(), seq, ts, true));
                    continue;
                }
                Some(key)
            }
        };
        let seq = next;
        let public_id = match (&key, &e.event_id) {
            (Some(k), Some(id)) => {
                // Later events of this batch with the same id are replays of this one.
                stored.insert(k.clone(), (seq, fp, timestamp));
                id.clone()
            }
            _ => {
                if seq as u64 > event_id::MAX_SEQ {
                    return Err(Error::InvalidInput(
                        "the event log is full (2^40 events)".into(),
                    ));
                }
                stored_issued.insert(seq, (fp, timestamp));
                format_uuid(&event_id::issued(tag, timestamp, seq as u64))
            }
        };
        rows.seq.push(seq);
        rows.event_id.push(key);
        rows.user.push(i64::from(user));
        rows.item.push(i64::from(item));
        rows.kind.push(&e.kind);
        rows.value.push(e.value);
        rows.ts.push(timestamp);
        rows.context.push(e.context.as_ref().map(json_text));
        rows.fingerprint.push(fp);
        out.push(appended(public_id, seq, timestamp, false));
        next += 1;
    }
    if !rows.seq.is_empty() {
        // The counter moves in the same statement (one round trip less per batch).
        db.execute(
            "WITH inserted AS (
                 INSERT INTO events (seq, event_id, user_id, item_id, kind, value, ts, context,
                                     fingerprint)
                 SELECT * FROM unnest($1::int8[], $2::bytea[], $3::int8[], $4::int8[],
                                      $5::text[], $6::float8[], $7::int8[], $8::text[],
                                      $9::int8[]))
             UPDATE meta SET value = $10 WHERE key = 'next_event_seq'",
            &[
                &rows.seq,
                &rows.event_id,
                &rows.user,
                &rows.item,
                &rows.kind,
                &rows.value,
                &rows.ts,
                &rows.context,
                &rows.fingerprint,
                &next,
            ],
        )?;
    }
    Ok((out, learned))
}

fn unknown_user(batch: &EventBatch, index: usize) -> Error {
    Error::UnknownUser {
        index,
        key: batch.events[index].user.clone(),
    }
}

fn unknown_item(batch: &EventBatch, index: usize) -> Error {
    Error::UnknownItem {
        index,
        key: batch.events[index].item.clone(),
    }
}

fn interaction(r: &postgres::Row) -> Result<Interaction> {
    Ok(Interaction {
        seq: r.get::<_, i64>(0) as u64,
        user: UserIdx(to_u32(r.get(1), "users")?),
        item: ItemIdx(to_u32(r.get(2), "items")?),
        kind: r.get(3),
        value: r.get(4),
        timestamp: r.get(5),
    })
}

impl crate::EventStore for PgStore {
    fn append_events(&self, batch: EventBatch) -> Result<Vec<Appended>> {
        if batch.events.is_empty() {
            return Ok(Vec::new());
        }
        let (out, learned) = self.write(|db| {
            let (out, learned) = append(db, &batch, self.id_tag, &self.memo)?;
            // Every event is already in the log a reader pages through; created users and
            // items are found there by their ids. Only a batch of duplicates wakes nobody.
            if out.iter().any(|a: &Appended| !a.duplicate) {
                self.announcer.notify(db, &[crate::Change::Events])?;
            }
            Ok((out, learned))
        })?;
        self.memo.lock().learn(learned);
        Ok(out)
    }

    fn user_events(
        &self,
        key: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Option<Page<Event>>> {
        self.read(|db| {
            let Some(user) = db.query_opt("SELECT id FROM users WHERE key = $1", &[&key])? else {
                return Ok(None);
            };
            let user_id: i64 = user.get(0);
            let before = before.map_or(i64::MAX, seq_i64);
            let rows = db.query(
                "SELECT e.seq, e.event_id, i.key, e.kind, e.value, e.ts, e.context
                 FROM events e JOIN items i ON i.id = e.item_id
                 WHERE e.user_id = $1 AND e.seq < $2 ORDER BY e.seq DESC LIMIT $3",
                &[&user_id, &before, &to_i64(limit).saturating_add(1)],
            )?;
            let more = rows.len() > limit;
            let items = rows
                .iter()
                .take(limit)
                .map(|r| {
                    let (seq, ts) = (r.get::<_, i64>(0) as u64, r.get::<_, i64>(5));
                    Ok(Event {
                        seq,
                        event_id: decode_event_id(r.get(1), self.id_tag, ts, seq)?,
                        user: key.to_owned(),
                        item: r.get(2),
                        kind: r.get(3),
                        value: r.get(4),
                        timestamp: ts,
                        context: event_context(r.get(6))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let next = if more {
                items.last().map(|e| e.seq)
            } else {
                None
            };
            Ok(Some(Page { items, next }))
        })
    }

    fn scan_interactions(&self, after: u64, limit: usize) -> Result<Vec<Interaction>> {
        self.read(|db| {
            db.query(
                "SELECT seq, user_id, item_id, kind, value, ts FROM events
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&seq_i64(after), &to_i64(limit)],
            )?
            .iter()
            .map(interaction)
            .collect()
        })
    }

    fn scan_events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.read(|db| {
            db.query(
                "SELECT e.seq, e.event_id, u.key, i.key, e.kind, e.value, e.ts, e.context
                 FROM events e JOIN users u ON u.id = e.user_id JOIN items i ON i.id = e.item_id
                 WHERE e.seq > $1 ORDER BY e.seq LIMIT $2",
                &[&seq_i64(after), &to_i64(limit)],
            )?
            .iter()
            .map(|r| {
                let (seq, ts) = (r.get::<_, i64>(0) as u64, r.get::<_, i64>(6));
                Ok(Event {
                    seq,
                    event_id: decode_event_id(r.get(1), self.id_tag, ts, seq)?,
                    user: r.get(2),
                    item: r.get(3),
                    kind: r.get(4),
                    value: r.get(5),
                    timestamp: ts,
                    context: event_context(r.get(7))?,
                })
            })
            .collect()
        })
    }

    fn stats(&self) -> Result<StoreStats> {
        self.read(|db| {
            let counts = db.query_one(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items),
                        (SELECT count(*) FROM events), (SELECT min(ts) FROM events),
                        (SELECT max(ts) FROM events),
                        (SELECT coalesce(max(version), 0) FROM schema_migrations),
                        (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8
                         FROM pg_class c
                         WHERE c.relnamespace = current_schema()::regnamespace
                           AND c.relkind = 'r')",
                &[],
            )?;
            let events_by_kind = db
                .query("SELECT kind, count(*) FROM events GROUP BY kind", &[])?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                .collect();
            let (min, max): (Option<i64>, Option<i64>) = (counts.get(3), counts.get(4));
            Ok(StoreStats {
                users: counts.get::<_, i64>(0) as u64,
                items: counts.get::<_, i64>(1) as u64,
                events: counts.get::<_, i64>(2) as u64,
                events_by_kind,
                time_range: min.zip(max),
                bytes_on_disk: counts.get::<_, i64>(6) as u64,
                schema_version: counts.get::<_, i64>(5) as u32,
            })
        })
    }

    fn delete_events_before(&self, before: Millis, limit: usize) -> Result<Vec<Interaction>> {
        self.write(|db| {
            // Old events sit mostly at the start of the log, so the scan in sequence order
            // stops early.
            let mut out = db
                .query(
                    "DELETE FROM events WHERE seq IN (
                         SELECT seq FROM events WHERE ts < $1 ORDER BY seq LIMIT $2)
                     RETURNING seq, user_id, item_id, kind, value, ts",
                    &[&before, &to_i64(limit)],
                )?
                .iter()
                .map(interaction)
                .collect::<Result<Vec<_>>>()?;
            out.sort_by_key(|i| i.seq);
            // Too many to name: the other nodes re-read their state.
            if !out.is_empty() {
                self.announcer.notify(db, &[crate::Change::Resync])?;
            }
            Ok(out)
        })
    }

    fn pair_events(&self, user: UserIdx, item: ItemIdx) -> Result<Vec<Interaction>> {
        self.read(|db| {
            db.query(
                "SELECT seq, user_id, item_id, kind, value, ts FROM events
                 WHERE user_id = $1 AND item_id = $2 ORDER BY seq",
                &[&i64::from(user.0), &i64::from(item.0)],
            )?
            .iter()
            .map(interaction)
            .collect()
        })
    }

    fn delete_pair_events(
        &self,
        user: &str,
        item: &str,
        kinds: &Kinds,
    ) -> Result<Vec<Interaction>> {
        let (kind, selected) = kinds.sql();
        self.write(|db| {
            let mut out = db
                .query(
                    "DELETE FROM events
                     WHERE user_id = (SELECT id FROM users WHERE key = $1)
                       AND item_id = (SELECT id FROM items WHERE key = $2)
                       AND (kind = $3) = $4
                     RETURNING seq, user_id, item_id, kind, value, ts",
                    &[&user, &item, &kind, &selected],
                )?
                .iter()
                .map(interaction)
                .collect::<Result<Vec<_>>>()?;
            out.sort_by_key(|i| i.seq);
            if let Some(first) = out.first() {
                self.announcer
                    .notify(db, &[crate::Change::Pair(first.user, first.item)])?;
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every id round-trips through its stored form, and two ids never share one.
        #[test]
        fn stored_event_ids_round_trip_and_never_collide(
            a in "\\PC{0,20}",
            b in proptest::array::uniform16(any::<u8>()),
        ) {
            let uuid = format_uuid(&b);
            for id in [a.as_str(), uuid.as_str()] {
                let stored = encode_event_id(id);
                prop_assert_eq!(decode_event_id(Some(&stored), 0, 0, 0).unwrap(), id);
            }
            prop_assert!(a == uuid || encode_event_id(&a) != encode_event_id(&uuid));
        }
    }

    #[test]
    fn sixteen_byte_ids_are_not_uuids() {
        let id = "exactly-16-bytes";
        assert_eq!(id.len(), 16);
        let stored = encode_event_id(id);
        assert_eq!(stored.len(), 17);
        assert_eq!(decode_event_id(Some(&stored), 0, 0, 0).unwrap(), id);
        let nul = "a\0b";
        assert_eq!(
            decode_event_id(Some(&encode_event_id(nul)), 0, 0, 0).unwrap(),
            nul
        );
    }
}
