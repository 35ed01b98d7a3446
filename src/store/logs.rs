//! Mission log entries: their current state (the changes that made it are mission changes).

use rusqlite::{params, OptionalExtension};

use super::types::LogEntry;
use super::{Store, StoreError};

const COLS: &str = "entry_uid, mission_name, content, creator_uid, dtg_ms, created_ms, servertime_ms, content_hashes, keywords";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogEntry> {
    let (h, k): (String, String) = (r.get(7)?, r.get(8)?);
    Ok(LogEntry {
        entry_uid: r.get(0)?,
        mission: r.get(1)?,
        content: r.get(2)?,
        creator_uid: r.get(3)?,
        dtg_ms: r.get(4)?,
        created_ms: r.get(5)?,
        servertime_ms: r.get(6)?,
        content_hashes: serde_json::from_str(&h).unwrap_or_default(),
        keywords: serde_json::from_str(&k).unwrap_or_default(),
    })
}

impl Store {
    /// Adds or replaces a log entry.
    pub fn upsert_log(&self, e: &LogEntry) -> Result<(), StoreError> {
        let (h, k) = (serde_json::to_string(&e.content_hashes).unwrap_or_else(|_| "[]".into()), serde_json::to_string(&e.keywords).unwrap_or_else(|_| "[]".into()));
        self.db().execute(
            &format!("INSERT INTO mission_logs ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(entry_uid) DO UPDATE SET mission_name = excluded.mission_name, content = excluded.content, creator_uid = excluded.creator_uid, dtg_ms = excluded.dtg_ms, created_ms = excluded.created_ms, servertime_ms = excluded.servertime_ms, content_hashes = excluded.content_hashes, keywords = excluded.keywords"),
            params![e.entry_uid, e.mission, e.content, e.creator_uid, e.dtg_ms, e.created_ms, e.servertime_ms, h, k],
        )?;
        Ok(())
    }

    /// Deletes a log entry; false when there was none.
    pub fn delete_log(&self, entry_uid: &str) -> Result<bool, StoreError> {
        Ok(self.db().execute("DELETE FROM mission_logs WHERE entry_uid = ?1", [entry_uid])? > 0)
    }

    pub fn log(&self, entry_uid: &str) -> Result<Option<LogEntry>, StoreError> {
        Ok(self.db().query_row(&format!("SELECT {COLS} FROM mission_logs WHERE entry_uid = ?1"), [entry_uid], row).optional()?)
    }

    /// A mission's log, oldest first (by its date-time group).
    pub fn logs(&self, mission: &str) -> Result<Vec<LogEntry>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(&format!("SELECT {COLS} FROM mission_logs WHERE mission_name = ?1 ORDER BY dtg_ms, entry_uid"))?;
        let v = st.query_map([mission], row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_are_kept_replaced_and_deleted() {
        let s = Store::open(":memory:").unwrap();
        let e = LogEntry { entry_uid: "e1".into(), mission: "ops".into(), content: "first".into(), dtg_ms: 5, keywords: vec!["k".into()], ..Default::default() };
        s.upsert_log(&e).unwrap();
        s.upsert_log(&LogEntry { content: "edited".into(), ..e.clone() }).unwrap();
        assert_eq!(s.logs("ops").unwrap().iter().map(|l| l.content.as_str()).collect::<Vec<_>>(), ["edited"]);
        assert_eq!(s.log("e1").unwrap().unwrap().keywords, ["k"]);
        assert!(s.delete_log("e1").unwrap() && !s.delete_log("e1").unwrap());
        assert!(s.logs("ops").unwrap().is_empty());
    }
}
