//! [`crate::PrivacyStore`] on SQLite: the `erasures` table, WAL truncation and
//! `PRAGMA integrity_check`.

use super::*;

impl crate::PrivacyStore for SqliteStore {
    fn save_erasure(
        &self,
        id: &str,
        requested_at: Millis,
        receipt: &serde_json::Value,
    ) -> Result<()> {
        let (id, receipt) = (id.to_owned(), json_text(receipt));
        self.exec(move |c| {
            c.prepare_cached(
                "INSERT INTO erasures (id, requested_at, receipt) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET receipt = excluded.receipt",
            )?
            .execute(params![id, requested_at, receipt])?;
            Ok(())
        })
    }

    fn erasure(&self, id: &str) -> Result<Option<serde_json::Value>> {
        self.read(|c| {
            let text: Option<String> = c
                .prepare_cached("SELECT receipt FROM erasures WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            text.map(|t| parse_json(&t, "erasure receipt")).transpose()
        })
    }

    fn erasures(&self) -> Result<Vec<(String, serde_json::Value)>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id, receipt FROM erasures ORDER BY requested_at, id")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, t)| Ok((id, parse_json(&t, "erasure receipt")?)))
                .collect()
        })
    }

    fn purge_deleted(&self) -> Result<()> {
        match self.checkpointer.lock().as_ref() {
            Some(c) => c.truncate(),
            None => Err(Error::Closed),
        }
    }

    fn integrity_check(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare("PRAGMA integrity_check")?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().filter(|r| r != "ok").collect())
        })
    }
}
