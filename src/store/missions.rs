//! Missions, their CoT items, and mission changes (each recorded once).

use rusqlite::{params, OptionalExtension};

use super::types::{Change, Mission, MissionMeta};
use super::{Store, StoreError};

pub(super) const CHANGE_COLS: &str = "c.id, c.mission_name, c.change_type, c.content_uid, c.content_hash, c.creator_uid, c.ts_ms, c.is_federated_change, c.origin_federate, c.cot_xml, c.meta, c.groups, c.log_entry";

pub(super) fn change_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Change> {
    let meta: String = r.get(at + 10)?;
    let groups: String = r.get(at + 11)?;
    let log: String = r.get(at + 12)?;
    Ok(Change {
        id: r.get(at)?,
        mission: r.get(at + 1)?,
        change_type: r.get(at + 2)?,
        content_uid: r.get(at + 3)?,
        content_hash: r.get(at + 4)?,
        creator_uid: r.get(at + 5)?,
        ts_ms: r.get(at + 6)?,
        is_federated: r.get(at + 7)?,
        origin_federate: r.get(at + 8)?,
        cot_xml: r.get(at + 9)?,
        mission_meta: (!meta.is_empty()).then(|| serde_json::from_str(&meta).ok()).flatten(),
        groups: serde_json::from_str(&groups).unwrap_or_default(),
        log_entry: (!log.is_empty()).then(|| serde_json::from_str(&log).ok()).flatten(),
    })
}

/// The change's metadata, groups and log entry as stored (JSON text, '' when empty).
pub(super) fn change_extras(c: &Change) -> (String, String, String) {
    let meta = c.mission_meta.as_ref().map(|m| serde_json::to_string(m).unwrap_or_default()).unwrap_or_default();
    let groups = if c.groups.is_empty() { String::new() } else { serde_json::to_string(&c.groups).unwrap_or_default() };
    let log = c.log_entry.as_ref().map(|l| serde_json::to_string(l).unwrap_or_default()).unwrap_or_default();
    (meta, groups, log)
}

pub(super) const INSERT_CHANGE: &str = "INSERT OR IGNORE INTO mission_changes (mission_name, change_type, content_uid, content_hash, creator_uid, ts_ms, is_federated_change, origin_federate, cot_xml, meta, groups, log_entry) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)";

impl Store {
    /// Creates the mission when it does not exist (or was deleted); true when created.
    pub fn ensure_mission(&self, name: &str, creator: &str, meta: &MissionMeta) -> Result<bool, StoreError> {
        let tool = if meta.tool.is_empty() { "public" } else { meta.tool.as_str() };
        let n = self.db().execute(
            "INSERT INTO missions (name, guid, creator_uid, tool, description, chat_room) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(name) DO UPDATE SET deleted_at = NULL, guid = excluded.guid, creator_uid = excluded.creator_uid, tool = excluded.tool, description = excluded.description, chat_room = excluded.chat_room WHERE deleted_at IS NOT NULL",
            params![name, meta.guid, creator, tool, meta.description, meta.chat_room],
        )?;
        Ok(n > 0)
    }

    /// Whether the mission exists (and is not deleted).
    pub fn mission_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.db().query_row("SELECT 1 FROM missions WHERE name = ?1 AND deleted_at IS NULL", [name], |_| Ok(())).optional()?.is_some())
    }

    /// A mission's own fields (None: no such mission).
    pub fn mission_meta(&self, name: &str) -> Result<Option<(String, MissionMeta)>, StoreError> {
        Ok(self
            .db()
            .query_row("SELECT creator_uid, guid, tool, description, chat_room FROM missions WHERE name = ?1", [name], |r| Ok((r.get(0)?, MissionMeta { guid: r.get(1)?, tool: r.get(2)?, description: r.get(3)?, chat_room: r.get(4)? })))
            .optional()?)
    }

    pub fn mark_mission_deleted(&self, name: &str) -> Result<(), StoreError> {
        self.db().execute("UPDATE missions SET deleted_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE name = ?1", [name])?;
        Ok(())
    }

    /// Adds a CoT item to a mission; true when it was not in it.
    pub fn add_item(&self, mission: &str, uid: &str) -> Result<bool, StoreError> {
        Ok(self.db().execute("INSERT OR IGNORE INTO mission_items (mission_name, uid) VALUES (?1, ?2)", [mission, uid])? > 0)
    }

    pub fn remove_item(&self, mission: &str, uid: &str) -> Result<bool, StoreError> {
        Ok(self.db().execute("DELETE FROM mission_items WHERE mission_name = ?1 AND uid = ?2", [mission, uid])? > 0)
    }

    pub fn has_item(&self, mission: &str, uid: &str) -> Result<bool, StoreError> {
        Ok(self.db().query_row("SELECT 1 FROM mission_items WHERE mission_name = ?1 AND uid = ?2", [mission, uid], |_| Ok(())).optional()?.is_some())
    }

    /// Keeps the latest CoT of a mission item.
    pub fn set_item_cot(&self, mission: &str, uid: &str, cot: &str) -> Result<(), StoreError> {
        self.db().execute("UPDATE mission_items SET cot_xml = ?3 WHERE mission_name = ?1 AND uid = ?2", [mission, uid, cot])?;
        Ok(())
    }

    /// The latest CoT of a mission item (None: not in the mission, or never seen).
    pub fn item_cot(&self, mission: &str, uid: &str) -> Result<Option<String>, StoreError> {
        Ok(self.db().query_row("SELECT cot_xml FROM mission_items WHERE mission_name = ?1 AND uid = ?2", [mission, uid], |r| r.get::<_, String>(0)).optional()?.filter(|c| !c.is_empty()))
    }

    /// Adds a file (by hash) to a mission; true when it was not in it.
    pub fn add_hash(&self, mission: &str, hash: &str) -> Result<bool, StoreError> {
        Ok(self.db().execute("INSERT OR IGNORE INTO mission_hashes (mission_name, hash) VALUES (?1, ?2)", [mission, hash])? > 0)
    }

    pub fn remove_hash(&self, mission: &str, hash: &str) -> Result<bool, StoreError> {
        Ok(self.db().execute("DELETE FROM mission_hashes WHERE mission_name = ?1 AND hash = ?2", [mission, hash])? > 0)
    }

    pub fn has_hash(&self, mission: &str, hash: &str) -> Result<bool, StoreError> {
        Ok(self.db().query_row("SELECT 1 FROM mission_hashes WHERE mission_name = ?1 AND hash = ?2", [mission, hash], |_| Ok(())).optional()?.is_some())
    }

    /// The CoT uids in a mission.
    pub fn items(&self, mission: &str) -> Result<Vec<String>, StoreError> {
        let db = self.db();
        let mut st = db.prepare("SELECT uid FROM mission_items WHERE mission_name = ?1 ORDER BY added_at, uid")?;
        let v = st.query_map([mission], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
        Ok(v)
    }

    /// Records a change once: returns its id, or None when the same change (mission, type,
    /// content, timestamp) is already recorded.
    pub fn record_change(&self, c: &Change) -> Result<Option<i64>, StoreError> {
        let db = self.db();
        let (meta, groups, log) = change_extras(c);
        let n = db.execute(INSERT_CHANGE, params![c.mission, c.change_type, c.content_uid, c.content_hash, c.creator_uid, c.ts_ms, c.is_federated, c.origin_federate, c.cot_xml, meta, groups, log])?;
        Ok((n > 0).then(|| db.last_insert_rowid()))
    }

    pub fn missions(&self) -> Result<Vec<Mission>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT m.name, m.guid, m.creator_uid, m.tool, m.description, m.created_at, m.deleted_at,
                    (SELECT COUNT(*) FROM mission_items i WHERE i.mission_name = m.name),
                    (SELECT COUNT(*) FROM mission_changes c WHERE c.mission_name = m.name)
             FROM missions m ORDER BY m.name",
        )?;
        let v = st
            .query_map([], |r| Ok(Mission { name: r.get(0)?, guid: r.get(1)?, creator_uid: r.get(2)?, tool: r.get(3)?, description: r.get(4)?, created_at: r.get(5)?, deleted_at: r.get(6)?, items: r.get(7)?, changes: r.get(8)? }))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// A mission's changes, oldest first.
    pub fn changes(&self, mission: &str) -> Result<Vec<Change>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(&format!("SELECT {CHANGE_COLS} FROM mission_changes c WHERE c.mission_name = ?1 ORDER BY c.id"))?;
        let v = st.query_map([mission], |r| change_row(r, 0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// Every change, oldest first (for tests and tools).
    pub fn all_changes(&self) -> Result<Vec<Change>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(&format!("SELECT {CHANGE_COLS} FROM mission_changes c ORDER BY c.id"))?;
        let v = st.query_map([], |r| change_row(r, 0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }
}
