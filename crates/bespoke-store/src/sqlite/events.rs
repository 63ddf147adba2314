//! [`crate::EventStore`] on SQLite: reads and retention of the `events` table (appends go
//! through the writer thread, in `writer.rs`).

use super::*;

/// An event id as stored: a blob for canonical UUIDs, text otherwise.
pub(super) fn event_id_value(id: &str) -> rusqlite::types::Value {
    match parse_uuid(id) {
        Some(b) => rusqlite::types::Value::Blob(b.to_vec()),
        None => rusqlite::types::Value::Text(id.to_owned()),
    }
}

/// The public id of an event row: the stored client id, or the server-issued one recomputed
/// from the row's time and sequence number.
pub(super) fn read_event_id(
    r: &rusqlite::Row<'_>,
    col: usize,
    tag: u64,
    ts: i64,
    seq: u64,
) -> Result<String> {
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

pub(super) fn event_context(text: Option<String>) -> Result<Option<Map<String, Value>>> {
    text.map(|t| parse_json(&t, "event context")).transpose()
}

impl crate::EventStore for SqliteStore {
    fn append_events(&self, batch: EventBatch) -> Result<Vec<Appended>> {
        if batch.events.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(|tx| Op::Append(batch, tx))
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
            let rows = stmt.query(params![after as i64, limit as i64])?;
            interactions(rows)
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

    fn delete_events_before(&self, before: Millis, limit: usize) -> Result<Vec<Interaction>> {
        self.exec(move |c| {
            // Old events sit mostly at the start of the log, so the scan for them stops early.
            let mut stmt = c.prepare_cached(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ts < ?1 LIMIT ?2)
                 RETURNING seq, user_id, item_id, kind, value, ts",
            )?;
            let rows = stmt.query(params![before, limit as i64])?;
            let mut out = interactions(rows)?;
            out.sort_by_key(|i| i.seq);
            Ok(out)
        })
    }

    fn pair_events(&self, user: UserIdx, item: ItemIdx) -> Result<Vec<Interaction>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, user_id, item_id, kind, value, ts FROM events
                 WHERE user_id = ?1 AND item_id = ?2 ORDER BY seq",
            )?;
            let rows = stmt.query(params![user.0 as i64, item.0 as i64])?;
            interactions(rows)
        })
    }

    fn delete_pair_events(
        &self,
        user: &str,
        item: &str,
        kinds: &Kinds,
    ) -> Result<Vec<Interaction>> {
        let (user, item, kinds) = (user.to_owned(), item.to_owned(), kinds.clone());
        self.exec_single(move |c| {
            let (kind, selected) = kinds.sql();
            let mut stmt = c.prepare_cached(
                "DELETE FROM events
                 WHERE user_id = (SELECT id FROM users WHERE key = ?1)
                   AND item_id = (SELECT id FROM items WHERE key = ?2)
                   AND (kind = ?3) = ?4
                 RETURNING seq, user_id, item_id, kind, value, ts",
            )?;
            let rows = stmt.query(params![user, item, kind, selected])?;
            let mut out = interactions(rows)?;
            out.sort_by_key(|i| i.seq);
            Ok(out)
        })
    }
}

/// Rows of `seq, user_id, item_id, kind, value, ts`.
fn interactions(mut rows: rusqlite::Rows<'_>) -> Result<Vec<Interaction>> {
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
    Ok(out)
}
