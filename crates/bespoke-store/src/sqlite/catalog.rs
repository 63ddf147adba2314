use super::*;

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
}
