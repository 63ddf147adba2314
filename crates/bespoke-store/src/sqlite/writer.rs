//! The writer thread: group commit of every queued write, each isolated in a savepoint.

use super::*;

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
pub(super) struct Writer {
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
    pub(super) fn new(conn: Connection, id_tag: u64) -> Result<Self> {
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

    pub(super) fn run(mut self, rx: Receiver<Op>, max_group: usize) {
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
            marketing: u.consent.marketing.unwrap_or(base.marketing),
        };
        let attrs = json_text(&u.attributes);
        match &existing {
            Some(e) => {
                self.conn
                    .prepare_cached(
                        "UPDATE users SET attributes = ?2, consent_personalization = ?3, updated_at = ?4,
                         consent_training = ?5, consent_marketing = ?6 WHERE id = ?1",
                    )?
                    .execute(params![
                        e.idx.0,
                        attrs,
                        consent.personalization,
                        now,
                        consent.training,
                        consent.marketing
                    ])?;
            }
            None => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO users (key, attributes, consent_personalization, created_at, updated_at,
                         consent_training, consent_marketing) VALUES (?1, ?2, ?3, ?4, ?6, ?5, ?7)",
                    )?
                    .execute(params![
                        u.key,
                        attrs,
                        consent.personalization,
                        created_at,
                        consent.training,
                        now,
                        consent.marketing
                    ])?;
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
        // Exposures are kept by key: a user served before any event has no row in `users`.
        self.conn
            .prepare_cached("DELETE FROM experiment_exposures WHERE user_key = ?1")?
            .execute([key])?;
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
        for sql in [
            "DELETE FROM item_blocks WHERE user_id = ?1",
            "DELETE FROM segment_members WHERE user_id = ?1",
        ] {
            self.conn.prepare_cached(sql)?.execute([id])?;
        }
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
            .prepare_cached("DELETE FROM item_blocks WHERE item_id = ?1")?
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
