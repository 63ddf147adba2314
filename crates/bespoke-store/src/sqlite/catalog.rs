//! [`crate::CatalogStore`] on SQLite: reads of the `users`, `items` and `item_embeddings`
//! tables (their writes go through the writer thread, in `writer.rs`).

use super::*;

pub(super) fn read_user(conn: &Connection, key: &str) -> Result<Option<User>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, key, attributes, consent_personalization, created_at, updated_at, consent_training,
                consent_marketing
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
                r.get::<_, bool>(7)?,
            ))
        })
        .optional()?;
    row.map(user_from_row).transpose()
}

pub(super) type UserRow = (i64, String, String, bool, i64, i64, bool, bool);

pub(super) fn user_from_row(
    (id, key, attrs, consent, created, updated, training, marketing): UserRow,
) -> Result<User> {
    Ok(User {
        idx: UserIdx(to_u32(id, "users")?),
        key,
        attributes: parse_json(&attrs, "user attributes")?,
        consent: Consent {
            personalization: consent,
            training,
            marketing,
        },
        created_at: created,
        updated_at: updated,
    })
}

pub(super) type ItemRow = (i64, String, String, String, String, String, bool, i64, i64);

pub(super) const ITEM_COLUMNS: &str =
    "id, key, categories, text, numeric, attributes, available, created_at, updated_at";

pub(super) fn item_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ItemRow> {
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

pub(super) fn item_from_row(conn: &Connection, row: ItemRow) -> Result<Item> {
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

pub(super) fn read_item(conn: &Connection, key: &str) -> Result<Option<Item>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {ITEM_COLUMNS} FROM items WHERE key = ?1"))?;
    let row = stmt.query_row([key], item_row).optional()?;
    row.map(|row| item_from_row(conn, row)).transpose()
}

impl crate::CatalogStore for SqliteStore {
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

    fn scan_users(&self, after: Option<UserIdx>, limit: usize) -> Result<Vec<User>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, key, attributes, consent_personalization, created_at, updated_at, consent_training,
                        consent_marketing
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
                        r.get(7)?,
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
}
