//! [`crate::CatalogStore`] on PostgreSQL: the `users`, `items`, `embedding_spaces` and
//! `item_embeddings` tables.
//!
//! Upserts of many users or items take a fixed number of round trips: the existing rows are
//! read (and locked) in one query, each upsert is applied in input order in memory (so a key
//! given twice behaves as two upserts in a row, as on SQLite), and the final rows are written
//! with one `UPDATE ... FROM unnest(...)` and one `INSERT ... SELECT FROM unnest(...)`.
//!
//! JSON fields are kept as text (as on SQLite) rather than `jsonb`, which would reorder keys,
//! refuse `\u0000` and change nothing the store does with them.

use super::*;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE users (
    id BIGINT GENERATED ALWAYS AS IDENTITY (MINVALUE 1 MAXVALUE 4294967295) PRIMARY KEY,
    key TEXT COLLATE "C" NOT NULL UNIQUE,
    attributes TEXT NOT NULL,
    consent_personalization BOOLEAN NOT NULL,
    consent_training BOOLEAN NOT NULL DEFAULT TRUE,
    consent_marketing BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE items (
    id BIGINT GENERATED ALWAYS AS IDENTITY (MINVALUE 1 MAXVALUE 4294967295) PRIMARY KEY,
    key TEXT COLLATE "C" NOT NULL UNIQUE,
    categories TEXT NOT NULL,
    text TEXT NOT NULL,
    numeric TEXT NOT NULL,
    attributes TEXT NOT NULL,
    available BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE embedding_spaces (
    name TEXT COLLATE "C" PRIMARY KEY,
    dim BIGINT NOT NULL
);
CREATE TABLE item_embeddings (
    item_id BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    name TEXT COLLATE "C" NOT NULL,
    vector BYTEA NOT NULL,
    PRIMARY KEY (item_id, name)
);
"#;

fn user_from_row(r: &postgres::Row) -> Result<User> {
    let attributes: String = r.get(2);
    Ok(User {
        idx: UserIdx(to_u32(r.get(0), "users")?),
        key: r.get(1),
        attributes: parse_json(&attributes, "user attributes")?,
        consent: Consent {
            personalization: r.get(3),
            training: r.get(4),
            marketing: r.get(5),
        },
        created_at: r.get(6),
        updated_at: r.get(7),
    })
}

fn item_from_row(r: &postgres::Row, embeddings: BTreeMap<String, Vec<f32>>) -> Result<Item> {
    let field = |i: usize| -> String { r.get(i) };
    Ok(Item {
        idx: ItemIdx(to_u32(r.get(0), "items")?),
        key: r.get(1),
        categories: parse_json(&field(2), "item categories")?,
        text: parse_json(&field(3), "item text")?,
        numeric: parse_json(&field(4), "item numeric fields")?,
        attributes: parse_json(&field(5), "item attributes")?,
        embeddings,
        available: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
    })
}

/// The embeddings of `ids`, by item id.
fn embeddings_of(
    db: &mut Db<'_, '_>,
    ids: &[i64],
) -> Result<HashMap<i64, BTreeMap<String, Vec<f32>>>> {
    let mut out: HashMap<i64, BTreeMap<String, Vec<f32>>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    for r in db.query(
        "SELECT item_id, name, vector FROM item_embeddings WHERE item_id = ANY($1)",
        &[&ids],
    )? {
        out.entry(r.get(0))
            .or_default()
            .insert(r.get(1), blob_to_vector(r.get(2))?);
    }
    Ok(out)
}

/// Items from rows of `ITEM_COLUMNS`, with their embeddings.
fn items_from_rows(db: &mut Db<'_, '_>, rows: &[postgres::Row]) -> Result<Vec<Item>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let mut embeddings = embeddings_of(db, &ids)?;
    rows.iter()
        .map(|r| {
            item_from_row(
                r,
                embeddings.remove(&r.get::<_, i64>(0)).unwrap_or_default(),
            )
        })
        .collect()
}

/// A user as the upserts of one batch leave it, before it is written.
struct PendingUser {
    id: Option<i64>,
    attributes: Map<String, Value>,
    consent: Consent,
    created_at: Millis,
    updated_at: Millis,
}

fn put_users(db: &mut Db<'_, '_>, users: &[UserUpsert]) -> Result<Vec<Upserted<User>>> {
    let now = now_ms();
    let keys = distinct(users.iter().map(|u| u.key.as_str()));
    let mut state: HashMap<&str, PendingUser> = HashMap::new();
    for r in db.query(
        "SELECT id, key, consent_personalization, consent_training, consent_marketing, created_at
         FROM users WHERE key = ANY($1) FOR UPDATE",
        &[&keys],
    )? {
        let key: &str = r.get(1);
        let key = *keys.iter().find(|k| **k == key).expect("a key asked for");
        state.insert(
            key,
            PendingUser {
                id: Some(r.get(0)),
                attributes: Map::new(),
                consent: Consent {
                    personalization: r.get(2),
                    training: r.get(3),
                    marketing: r.get(4),
                },
                created_at: r.get(5),
                updated_at: 0,
            },
        );
    }
    let existing: Vec<&str> = state.keys().copied().collect();
    // Each upsert in input order: what it returns is the user as it leaves it.
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let updated_at = u.restore_times.map_or(now, |t| t.1);
        let (base, created) = match state.get(u.key.as_str()) {
            Some(s) => (s.consent, false),
            None => (u.default_consent, true),
        };
        let consent = Consent {
            personalization: u.consent.personalization.unwrap_or(base.personalization),
            training: u.consent.training.unwrap_or(base.training),
            marketing: u.consent.marketing.unwrap_or(base.marketing),
        };
        let s = state.entry(&u.key).or_insert_with(|| PendingUser {
            id: None,
            attributes: Map::new(),
            consent,
            created_at: u.restore_times.map_or(updated_at, |t| t.0),
            updated_at,
        });
        s.attributes = u.attributes.clone();
        s.consent = consent;
        s.updated_at = updated_at;
        out.push((
            User {
                idx: UserIdx(0),
                key: u.key.clone(),
                attributes: u.attributes.clone(),
                consent,
                created_at: s.created_at,
                updated_at,
            },
            created,
        ));
    }

    // Write the final rows: updates of existing users, inserts of new ones.
    let mut update = UserColumns::default();
    for key in &existing {
        update.push(key, &state[key]);
    }
    if !update.keys.is_empty() {
        let ids: Vec<i64> = existing
            .iter()
            .map(|k| state[k].id.expect("existing"))
            .collect();
        db.execute(
            "UPDATE users u SET attributes = t.a, consent_personalization = t.p,
                 consent_training = t.tr, consent_marketing = t.m, updated_at = t.up
             FROM unnest($1::int8[], $2::text[], $3::bool[], $4::bool[], $5::bool[], $6::int8[])
                 AS t(id, a, p, tr, m, up)
             WHERE u.id = t.id",
            &[
                &ids,
                &update.attributes,
                &update.personalization,
                &update.training,
                &update.marketing,
                &update.updated_at,
            ],
        )?;
    }
    let mut insert = UserColumns::default();
    for key in keys.iter().filter(|k| state[**k].id.is_none()) {
        insert.push(key, &state[key]);
    }
    if !insert.keys.is_empty() {
        // A concurrent insert of the same key fails this with a unique violation, and the
        // whole upsert is retried (then finding the user).
        for r in db.query(
            "INSERT INTO users (key, attributes, consent_personalization, consent_training,
                                consent_marketing, created_at, updated_at)
             SELECT k, a, p, tr, m, c, up
             FROM unnest($1::text[], $2::text[], $3::bool[], $4::bool[], $5::bool[], $6::int8[],
                         $7::int8[]) WITH ORDINALITY AS t(k, a, p, tr, m, c, up, n)
             ORDER BY n
             RETURNING key, id",
            &[
                &insert.keys,
                &insert.attributes,
                &insert.personalization,
                &insert.training,
                &insert.marketing,
                &insert.created_at,
                &insert.updated_at,
            ],
        )? {
            let key: &str = r.get(0);
            let key = *keys.iter().find(|k| **k == key).expect("a key inserted");
            state.get_mut(key).expect("pending").id = Some(r.get(1));
        }
    }
    out.into_iter()
        .map(|(mut record, created)| {
            let id = state[record.key.as_str()]
                .id
                .ok_or_else(|| Error::Corrupt("a user was not written".into()))?;
            record.idx = UserIdx(to_u32(id, "users")?);
            Ok(Upserted { record, created })
        })
        .collect()
}

/// Users' final rows, one array per column.
#[derive(Default)]
struct UserColumns<'a> {
    keys: Vec<&'a str>,
    attributes: Vec<String>,
    personalization: Vec<bool>,
    training: Vec<bool>,
    marketing: Vec<bool>,
    created_at: Vec<i64>,
    updated_at: Vec<i64>,
}

impl<'a> UserColumns<'a> {
    fn push(&mut self, key: &'a str, u: &PendingUser) {
        self.keys.push(key);
        self.attributes.push(json_text(&u.attributes));
        self.personalization.push(u.consent.personalization);
        self.training.push(u.consent.training);
        self.marketing.push(u.consent.marketing);
        self.created_at.push(u.created_at);
        self.updated_at.push(u.updated_at);
    }
}

/// An item as the upserts of one batch leave it, before it is written.
struct PendingItem<'a> {
    id: Option<i64>,
    created_at: Millis,
    upsert: &'a ItemUpsert,
}

fn put_items(db: &mut Db<'_, '_>, items: &[ItemUpsert]) -> Result<Vec<Upserted<Item>>> {
    let now = now_ms();
    // Dimensions: each name keeps the length of its first vector, earlier items of this batch
    // included; the first mismatch in input order fails the batch.
    let names = distinct(
        items
            .iter()
            .flat_map(|i| i.embeddings.keys().map(String::as_str)),
    );
    let mut dims: HashMap<String, usize> = HashMap::new();
    if !names.is_empty() {
        for r in db.query(
            "SELECT name, dim FROM embedding_spaces WHERE name = ANY($1)",
            &[&names],
        )? {
            dims.insert(r.get(0), r.get::<_, i64>(1) as usize);
        }
    }
    let mut new_spaces: Vec<(&str, i64)> = Vec::new();
    for it in items {
        for (name, vector) in &it.embeddings {
            match dims.get(name) {
                Some(&d) if d != vector.len() => {
                    return Err(Error::DimensionMismatch {
                        name: name.clone(),
                        expected: d,
                        got: vector.len(),
                    });
                }
                Some(_) => {}
                None => {
                    dims.insert(name.clone(), vector.len());
                    new_spaces.push((name, vector.len() as i64));
                }
            }
        }
    }
    if !new_spaces.is_empty() {
        let (names, lens): (Vec<&str>, Vec<i64>) = new_spaces.iter().copied().unzip();
        db.execute(
            "INSERT INTO embedding_spaces (name, dim) SELECT * FROM unnest($1::text[], $2::int8[])
             ON CONFLICT (name) DO NOTHING",
            &[&names, &lens],
        )?;
        // A concurrent batch may have fixed a name first, with another length.
        for r in db.query(
            "SELECT name, dim FROM embedding_spaces WHERE name = ANY($1)",
            &[&names],
        )? {
            let (name, dim): (String, i64) = (r.get(0), r.get(1));
            let ours = dims[&name];
            if dim as usize != ours {
                return Err(Error::DimensionMismatch {
                    name,
                    expected: dim as usize,
                    got: ours,
                });
            }
        }
    }

    let keys = distinct(items.iter().map(|i| i.key.as_str()));
    let mut state: HashMap<&str, PendingItem<'_>> = HashMap::new();
    let mut existing: Vec<i64> = Vec::new();
    let found = db.query(
        "SELECT id, key, created_at FROM items WHERE key = ANY($1) FOR UPDATE",
        &[&keys],
    )?;
    for r in &found {
        let key: &str = r.get(1);
        let key = *keys.iter().find(|k| **k == key).expect("a key asked for");
        let upsert = items
            .iter()
            .find(|i| i.key == key)
            .expect("a key asked for");
        existing.push(r.get(0));
        state.insert(
            key,
            PendingItem {
                id: Some(r.get(0)),
                created_at: r.get(2),
                upsert,
            },
        );
    }
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        let created = !state.contains_key(it.key.as_str());
        let s = state.entry(&it.key).or_insert_with(|| PendingItem {
            id: None,
            created_at: now,
            upsert: it,
        });
        s.upsert = it;
        out.push((
            Item {
                idx: ItemIdx(0),
                key: it.key.clone(),
                categories: it.categories.clone(),
                text: it.text.clone(),
                numeric: it.numeric.clone(),
                attributes: it.attributes.clone(),
                embeddings: it.embeddings.clone(),
                available: it.available,
                created_at: s.created_at,
                updated_at: now,
            },
            created,
        ));
    }

    let update = ItemColumns::of(&keys, &state, true);
    if !update.keys.is_empty() {
        db.execute(
            "UPDATE items i SET categories = t.c, text = t.tx, numeric = t.nu, attributes = t.a,
                 available = t.av, updated_at = $7
             FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[])
                 AS t(id, c, tx, nu, a, av)
             WHERE i.id = t.id",
            &[
                &update.ids,
                &update.categories,
                &update.text,
                &update.numeric,
                &update.attributes,
                &update.available,
                &now,
            ],
        )?;
        db.execute(
            "DELETE FROM item_embeddings WHERE item_id = ANY($1)",
            &[&existing],
        )?;
    }
    let insert = ItemColumns::of(&keys, &state, false);
    if !insert.keys.is_empty() {
        for r in db.query(
            "INSERT INTO items (key, categories, text, numeric, attributes, available, created_at,
                                updated_at)
             SELECT k, c, tx, nu, a, av, $7, $7
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[])
                 WITH ORDINALITY AS t(k, c, tx, nu, a, av, n)
             ORDER BY n
             RETURNING key, id",
            &[
                &insert.keys,
                &insert.categories,
                &insert.text,
                &insert.numeric,
                &insert.attributes,
                &insert.available,
                &now,
            ],
        )? {
            let key: &str = r.get(0);
            let key = *keys.iter().find(|k| **k == key).expect("a key inserted");
            state.get_mut(key).expect("pending").id = Some(r.get(1));
        }
    }
    let (mut e_items, mut e_names, mut e_vectors) = (Vec::new(), Vec::new(), Vec::new());
    for key in &keys {
        let s = &state[key];
        let id =
            s.id.ok_or_else(|| Error::Corrupt("an item was not written".into()))?;
        to_u32(id, "items")?;
        for (name, vector) in &s.upsert.embeddings {
            e_items.push(id);
            e_names.push(name.as_str());
            e_vectors.push(vector_to_blob(vector));
        }
    }
    if !e_items.is_empty() {
        db.execute(
            "INSERT INTO item_embeddings (item_id, name, vector)
             SELECT * FROM unnest($1::int8[], $2::text[], $3::bytea[])",
            &[&e_items, &e_names, &e_vectors],
        )?;
    }
    out.into_iter()
        .map(|(mut record, created)| {
            let id = state[record.key.as_str()].id.expect("written above");
            record.idx = ItemIdx(to_u32(id, "items")?);
            Ok(Upserted { record, created })
        })
        .collect()
}

/// Items' final rows, one array per column.
#[derive(Default)]
struct ItemColumns<'a> {
    keys: Vec<&'a str>,
    ids: Vec<i64>,
    categories: Vec<String>,
    text: Vec<String>,
    numeric: Vec<String>,
    attributes: Vec<String>,
    available: Vec<bool>,
}

impl<'a> ItemColumns<'a> {
    /// The final rows of the `existing` items (or of the new ones), in key order.
    fn of(keys: &[&'a str], state: &HashMap<&str, PendingItem<'_>>, existing: bool) -> Self {
        let mut c = ItemColumns::default();
        for &key in keys {
            let s = &state[key];
            if s.id.is_some() != existing {
                continue;
            }
            c.keys.push(key);
            c.ids.push(s.id.unwrap_or(0));
            c.categories.push(json_text(&s.upsert.categories));
            c.text.push(json_text(&s.upsert.text));
            c.numeric.push(json_text(&s.upsert.numeric));
            c.attributes.push(json_text(&s.upsert.attributes));
            c.available.push(s.upsert.available);
        }
        c
    }
}

/// Takes the append lock (the `next_event_seq` row), so that no append that resolved this
/// user's or item's id is still running and none starts before the deletion commits: every
/// event on it is deleted, and a later append creates a new one. Deletions are rare; appends
/// pay nothing for this. Also moves `catalog_epoch`, which makes every process's appends
/// forget the ids they remembered (`events::IdMemo`).
fn append_lock(db: &mut Db<'_, '_>) -> Result<()> {
    db.query_one(
        "SELECT value FROM meta WHERE key = 'next_event_seq' FOR UPDATE",
        &[],
    )?;
    db.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'catalog_epoch'",
        &[],
    )?;
    Ok(())
}

/// Deletes a user, their events, blocks and memberships (by cascade) and exposures (by key),
/// under the append lock.
fn delete_user(db: &mut Db<'_, '_>, key: &str) -> Result<Option<Deleted>> {
    append_lock(db)?;
    // Exposures are kept by key: a user served before any event has no row in `users`.
    db.execute(
        "DELETE FROM experiment_exposures WHERE user_key = $1",
        &[&key],
    )?;
    let Some(row) = db.query_opt("DELETE FROM users WHERE key = $1 RETURNING id", &[&key])? else {
        return Ok(None);
    };
    let id: i64 = row.get(0);
    let events = db.execute("DELETE FROM events WHERE user_id = $1", &[&id])?;
    Ok(Some(Deleted {
        idx: to_u32(id, "users")?,
        events,
    }))
}

/// Deletes an item and the events on it (a scan: there is no index on `events.item_id`, which
/// every insert would pay for), under the append lock; embeddings and blocks go by cascade.
fn delete_item(db: &mut Db<'_, '_>, key: &str) -> Result<Option<Deleted>> {
    append_lock(db)?;
    let Some(row) = db.query_opt("DELETE FROM items WHERE key = $1 RETURNING id", &[&key])? else {
        return Ok(None);
    };
    let id: i64 = row.get(0);
    let events = db.execute("DELETE FROM events WHERE item_id = $1", &[&id])?;
    Ok(Some(Deleted {
        idx: to_u32(id, "items")?,
        events,
    }))
}

impl crate::CatalogStore for PgStore {
    fn put_users(&self, users: Vec<UserUpsert>) -> Result<Vec<Upserted<User>>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|db| {
            let out = put_users(db, &users)?;
            let changes: Vec<_> = out
                .iter()
                .map(|u| crate::Change::User(u.record.idx))
                .collect();
            self.announcer.notify(db, &changes)?;
            Ok(out)
        })
    }

    fn get_user(&self, key: &str) -> Result<Option<User>> {
        self.read(|db| {
            db.query_opt(
                "SELECT id, key, attributes, consent_personalization, consent_training,
                        consent_marketing, created_at, updated_at
                 FROM users WHERE key = $1",
                &[&key],
            )?
            .map(|r| user_from_row(&r))
            .transpose()
        })
    }

    fn delete_user(&self, key: &str) -> Result<Option<Deleted>> {
        self.write(|db| {
            let out = delete_user(db, key)?;
            if let Some(d) = &out {
                self.announcer
                    .notify(db, &[crate::Change::UserDeleted(UserIdx(d.idx))])?;
            }
            Ok(out)
        })
    }

    fn put_items(&self, items: Vec<ItemUpsert>) -> Result<Vec<Upserted<Item>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|db| {
            let out = put_items(db, &items)?;
            let changes: Vec<_> = out
                .iter()
                .map(|i| crate::Change::Item(i.record.idx))
                .collect();
            self.announcer.notify(db, &changes)?;
            Ok(out)
        })
    }

    fn get_item(&self, key: &str) -> Result<Option<Item>> {
        self.read(|db| {
            let rows = db.query(
                "SELECT id, key, categories, text, numeric, attributes, available, created_at,
                        updated_at
                 FROM items WHERE key = $1",
                &[&key],
            )?;
            Ok(items_from_rows(db, &rows)?.pop())
        })
    }

    fn delete_item(&self, key: &str) -> Result<Option<Deleted>> {
        self.write(|db| {
            let out = delete_item(db, key)?;
            if let Some(d) = &out {
                self.announcer
                    .notify(db, &[crate::Change::ItemDeleted(ItemIdx(d.idx))])?;
            }
            Ok(out)
        })
    }

    fn scan_users(&self, after: Option<UserIdx>, limit: usize) -> Result<Vec<User>> {
        let after = after.map_or(0, |u| i64::from(u.0));
        self.read(|db| {
            db.query(
                "SELECT id, key, attributes, consent_personalization, consent_training,
                        consent_marketing, created_at, updated_at
                 FROM users WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &to_i64(limit)],
            )?
            .iter()
            .map(user_from_row)
            .collect()
        })
    }

    fn scan_items(&self, after: Option<ItemIdx>, limit: usize) -> Result<Vec<Item>> {
        let after = after.map_or(0, |i| i64::from(i.0));
        self.read(|db| {
            let rows = db.query(
                "SELECT id, key, categories, text, numeric, attributes, available, created_at,
                        updated_at
                 FROM items WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &to_i64(limit)],
            )?;
            items_from_rows(db, &rows)
        })
    }
}
