//! The store: SQLite (rusqlite, WAL) holding federation servers, missions, mission changes
//! and the durable outbound queue. `schema.sql` is applied at open (idempotent, versioned
//! with PRAGMA user_version). Every write is its own transaction, so a `kill -9` loses
//! nothing that was recorded (WAL with synchronous=NORMAL survives a process crash).
//!
//! Calls are synchronous and short (indexed lookups and single-row writes); async callers
//! hold the connection's mutex for well under a millisecond.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = include_str!("../schema.sql");

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// One recorded mission change.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Change {
    pub id: i64,
    pub mission: String,
    pub change_type: String,
    pub content_uid: String,
    pub content_hash: String,
    pub creator_uid: String,
    /// When it happened, ms since the epoch (the origin's stamp).
    pub ts_ms: i64,
    pub is_federated: bool,
    pub origin_federate: Option<String>,
    #[serde(skip)]
    pub cot_xml: String,
}

/// A federation peer.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Server {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub node_id: Option<String>,
    pub address: String,
    pub port: u16,
    pub direction: String,
    pub protocol: String,
    pub ca_path: Option<String>,
    pub cert_path: Option<String>,
    pub key_path: Option<String>,
    pub verify_ssl: bool,
    pub enabled: bool,
    pub status: String,
    pub last_connected: Option<String>,
    pub last_error: Option<String>,
    pub sync_missions: bool,
    pub sync_cot: bool,
    /// None: every mission; Some(empty): none.
    pub mission_filter: Option<Vec<String>>,
    pub link: String,
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mission {
    pub name: String,
    pub guid: String,
    pub creator_uid: String,
    pub tool: String,
    pub created_at: String,
    pub deleted_at: Option<String>,
    pub items: i64,
    pub changes: i64,
}

/// A queue item still to deliver.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pending {
    pub queue_id: i64,
    pub server: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub change: Change,
}

/// Queue totals for one server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStats {
    pub server_id: i64,
    pub server: String,
    pub total: i64,
    pub sent: i64,
    pub pending: i64,
    /// Pending items that failed at least once.
    pub failed: i64,
    pub oldest_pending: Option<String>,
    pub last_error: Option<String>,
}

pub struct Store {
    conn: Mutex<Connection>,
    pub path: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

const CHANGE_COLS: &str = "c.id, c.mission_name, c.change_type, c.content_uid, c.content_hash, c.creator_uid, c.ts_ms, c.is_federated_change, c.origin_federate, c.cot_xml";

fn change_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Change> {
    Ok(Change {
        id: r.get(at)?,
        mission: r.get(at + 1)?,
        change_type: r.get(at + 2)?,
        content_uid: r.get(at + 3)?,
        content_hash: r.get(at + 4)?,
        creator_uid: r.get(at + 5)?,
        ts_ms: r.get(at + 6)?,
        is_federated: r.get::<_, i64>(at + 7)? != 0,
        origin_federate: r.get(at + 8)?,
        cot_xml: r.get(at + 9)?,
    })
}

const SERVER_COLS: &str = "id, name, description, node_id, address, port, direction, protocol, ca_path, cert_path, key_path, verify_ssl, enabled, status, last_connected, last_error, sync_missions, sync_cot, mission_filter, link, source, created_at, updated_at";

fn server_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Server> {
    let filter: Option<String> = r.get(18)?;
    Ok(Server {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        node_id: r.get(3)?,
        address: r.get(4)?,
        port: r.get::<_, i64>(5)? as u16,
        direction: r.get(6)?,
        protocol: r.get(7)?,
        ca_path: r.get(8)?,
        cert_path: r.get(9)?,
        key_path: r.get(10)?,
        verify_ssl: r.get::<_, i64>(11)? != 0,
        enabled: r.get::<_, i64>(12)? != 0,
        status: r.get(13)?,
        last_connected: r.get(14)?,
        last_error: r.get(15)?,
        sync_missions: r.get::<_, i64>(16)? != 0,
        sync_cot: r.get::<_, i64>(17)? != 0,
        mission_filter: filter.and_then(|f| serde_json::from_str(&f).ok()),
        link: r.get(19)?,
        source: r.get(20)?,
        created_at: r.get(21)?,
        updated_at: r.get(22)?,
    })
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    crate::cot::CotTime::now().0
}

impl Store {
    /// Opens (creating if needed) the store at `path` (`:memory:` for a private in-memory
    /// store) and applies the schema.
    pub fn open(path: &str) -> Result<Store, StoreError> {
        if path != ":memory:" {
            if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
            }
        }
        let conn = Connection::open(path).map_err(|e| StoreError(format!("{path}: {e}")))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError(format!("{path} has schema version {version}, newer than this takgate ({SCHEMA_VERSION}): use a newer takgate or another file")));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA).map_err(|e| StoreError(format!("{path}: applying the schema: {e}")))?;
        Ok(Store { conn: Mutex::new(conn), path: path.to_owned() })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self.db().query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    // ---- federation servers

    pub fn servers(&self) -> Result<Vec<Server>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(&format!("SELECT {SERVER_COLS} FROM federation_servers ORDER BY id"))?;
        let rows = st.query_map([], server_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn server(&self, id: i64) -> Result<Option<Server>, StoreError> {
        Ok(self.db().query_row(&format!("SELECT {SERVER_COLS} FROM federation_servers WHERE id = ?1"), [id], server_row).optional()?)
    }

    pub fn server_by_name(&self, name: &str) -> Result<Option<Server>, StoreError> {
        Ok(self.db().query_row(&format!("SELECT {SERVER_COLS} FROM federation_servers WHERE name = ?1"), [name], server_row).optional()?)
    }

    /// Inserts a server, or updates the one with the same name; returns its id and whether
    /// it is new.
    pub fn upsert_server(&self, s: &Server) -> Result<(i64, bool), StoreError> {
        let db = self.db();
        let filter = s.mission_filter.as_ref().map(|f| serde_json::to_string(f).unwrap_or_default());
        let existing: Option<i64> = db.query_row("SELECT id FROM federation_servers WHERE name = ?1", [&s.name], |r| r.get(0)).optional()?;
        match existing {
            Some(id) => {
                db.execute(
                    "UPDATE federation_servers SET description=?2, node_id=?3, address=?4, port=?5, direction=?6, protocol=?7, ca_path=?8, cert_path=?9, key_path=?10, verify_ssl=?11, enabled=?12, sync_missions=?13, sync_cot=?14, mission_filter=?15, link=?16, source=?17, updated_at=strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id=?1",
                    params![id, s.description, s.node_id, s.address, s.port as i64, s.direction, s.protocol, s.ca_path, s.cert_path, s.key_path, s.verify_ssl as i64, s.enabled as i64, s.sync_missions as i64, s.sync_cot as i64, filter, s.link, s.source],
                )?;
                Ok((id, false))
            }
            None => {
                db.execute(
                    "INSERT INTO federation_servers (name, description, node_id, address, port, direction, protocol, ca_path, cert_path, key_path, verify_ssl, enabled, sync_missions, sync_cot, mission_filter, link, source) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)",
                    params![s.name, s.description, s.node_id, s.address, s.port as i64, s.direction, s.protocol, s.ca_path, s.cert_path, s.key_path, s.verify_ssl as i64, s.enabled as i64, s.sync_missions as i64, s.sync_cot as i64, filter, s.link, s.source],
                )?;
                Ok((db.last_insert_rowid(), true))
            }
        }
    }

    /// Removes config-sourced servers that are no longer in the configuration (`keep`:
    /// their names); returns how many.
    pub fn remove_stale_config_servers(&self, keep: &[String]) -> Result<usize, StoreError> {
        let db = self.db();
        let names: Vec<String> = {
            let mut st = db.prepare("SELECT name FROM federation_servers WHERE source = 'config'")?;
            let v = st.query_map([], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
            v
        };
        let mut n = 0;
        for name in names.iter().filter(|n| !keep.contains(n)) {
            n += db.execute("DELETE FROM federation_servers WHERE name = ?1", [name])?;
        }
        Ok(n)
    }

    pub fn rename_server(&self, id: i64, name: &str) -> Result<(), StoreError> {
        self.db().execute("UPDATE federation_servers SET name = ?2, link = CASE WHEN source = 'api' THEN ?2 ELSE link END WHERE id = ?1", params![id, name])?;
        Ok(())
    }

    pub fn delete_server(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.db().execute("DELETE FROM federation_servers WHERE id = ?1", [id])? > 0)
    }

    /// The inbound server row of a federate (by certificate fingerprint) on `link`.
    pub fn inbound_server(&self, link: &str, fingerprint: &str) -> Result<Option<Server>, StoreError> {
        Ok(self.db().query_row(&format!("SELECT {SERVER_COLS} FROM federation_servers WHERE link = ?1 AND node_id = ?2 AND direction = 'inbound'"), [link, fingerprint], server_row).optional()?)
    }

    pub fn set_status(&self, id: i64, status: &str, error: Option<&str>, connected: bool) -> Result<(), StoreError> {
        let db = self.db();
        if connected {
            db.execute("UPDATE federation_servers SET status=?2, last_connected=strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id=?1", params![id, status])?;
        } else {
            db.execute("UPDATE federation_servers SET status=?2, last_error=COALESCE(?3, last_error) WHERE id=?1", params![id, status, error])?;
        }
        Ok(())
    }

    // ---- missions and changes

    /// Creates the mission when it does not exist (or was deleted); true when created.
    pub fn ensure_mission(&self, name: &str, creator: &str, guid: &str, tool: &str) -> Result<bool, StoreError> {
        let db = self.db();
        let n = db.execute("INSERT INTO missions (name, guid, creator_uid, tool) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name) DO UPDATE SET deleted_at = NULL WHERE deleted_at IS NOT NULL", params![name, guid, creator, if tool.is_empty() { "public" } else { tool }])?;
        Ok(n > 0)
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

    /// Records a change once: returns its id, or None when the same change (mission, type,
    /// content, timestamp) is already recorded.
    pub fn record_change(&self, c: &Change) -> Result<Option<i64>, StoreError> {
        let db = self.db();
        let n = db.execute(
            "INSERT OR IGNORE INTO mission_changes (mission_name, change_type, content_uid, content_hash, creator_uid, ts_ms, is_federated_change, origin_federate, cot_xml) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
            params![c.mission, c.change_type, c.content_uid, c.content_hash, c.creator_uid, c.ts_ms, c.is_federated as i64, c.origin_federate, c.cot_xml],
        )?;
        Ok((n > 0).then(|| db.last_insert_rowid()))
    }

    pub fn missions(&self) -> Result<Vec<Mission>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT m.name, m.guid, m.creator_uid, m.tool, m.created_at, m.deleted_at,
                    (SELECT COUNT(*) FROM mission_items i WHERE i.mission_name = m.name),
                    (SELECT COUNT(*) FROM mission_changes c WHERE c.mission_name = m.name)
             FROM missions m ORDER BY m.name",
        )?;
        let v = st
            .query_map([], |r| Ok(Mission { name: r.get(0)?, guid: r.get(1)?, creator_uid: r.get(2)?, tool: r.get(3)?, created_at: r.get(4)?, deleted_at: r.get(5)?, items: r.get(6)?, changes: r.get(7)? }))?
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

    // ---- the outbound queue

    /// Queues change `change_id` for server `server_id` (once).
    /// In one transaction: adds `item` (mission, uid) when given, and only if it is new
    /// records `c` and queues it for `servers`. A crash leaves all of it or none, so an
    /// event redelivered after a crash is recorded exactly once. None: nothing new.
    pub fn record_change_queued(&self, item: Option<(&str, &str)>, c: &Change, servers: &[i64]) -> Result<Option<i64>, StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        if let Some((mission, uid)) = item {
            if tx.execute("INSERT OR IGNORE INTO mission_items (mission_name, uid) VALUES (?1, ?2)", [mission, uid])? == 0 {
                return Ok(None);
            }
        }
        let n = tx.execute(
            "INSERT OR IGNORE INTO mission_changes (mission_name, change_type, content_uid, content_hash, creator_uid, ts_ms, is_federated_change, origin_federate, cot_xml) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
            params![c.mission, c.change_type, c.content_uid, c.content_hash, c.creator_uid, c.ts_ms, c.is_federated as i64, c.origin_federate, c.cot_xml],
        )?;
        if n == 0 {
            tx.commit()?;
            return Ok(None);
        }
        let id = tx.last_insert_rowid();
        for s in servers {
            tx.execute("INSERT OR IGNORE INTO outbound_queue (server_id, change_id) VALUES (?1, ?2)", [*s, id])?;
        }
        tx.commit()?;
        Ok(Some(id))
    }

    pub fn enqueue(&self, server_id: i64, change_id: i64) -> Result<bool, StoreError> {
        Ok(self.db().execute("INSERT OR IGNORE INTO outbound_queue (server_id, change_id) VALUES (?1, ?2)", [server_id, change_id])? > 0)
    }

    /// Queues for `server_id` the local changes since `since_ms` (a replay window).
    pub fn enqueue_since(&self, server_id: i64, since_ms: i64) -> Result<usize, StoreError> {
        Ok(self.db().execute(
            "INSERT OR IGNORE INTO outbound_queue (server_id, change_id) SELECT ?1, id FROM mission_changes WHERE is_federated_change = 0 AND ts_ms >= ?2 ORDER BY id",
            params![server_id, since_ms],
        )?)
    }

    /// The head of a server's queue, in order, from after queue id `after`, at most `limit`
    /// items. Empty when the head is waiting out its backoff (so the order holds).
    pub fn pending(&self, server_id: i64, after: i64, limit: usize, now_ms: i64) -> Result<Vec<Pending>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(&format!(
            "SELECT q.id, s.name, q.attempts, q.last_error, q.created_at, q.next_attempt_ms, {CHANGE_COLS}
             FROM outbound_queue q JOIN mission_changes c ON c.id = q.change_id JOIN federation_servers s ON s.id = q.server_id
             WHERE q.server_id = ?1 AND q.delivered_at IS NULL AND q.id > ?2 ORDER BY q.id LIMIT ?3"
        ))?;
        let mut out = vec![];
        let rows = st.query_map(params![server_id, after, limit as i64], |r| {
            Ok((r.get::<_, i64>(5)?, Pending { queue_id: r.get(0)?, server: r.get(1)?, attempts: r.get(2)?, last_error: r.get(3)?, created_at: r.get(4)?, change: change_row(r, 6)? }))
        })?;
        for row in rows {
            let (next, p) = row?;
            if next > now_ms {
                break;
            }
            out.push(p);
        }
        Ok(out)
    }

    /// When the head of a server's queue may be tried again (None: nothing pending).
    pub fn next_attempt(&self, server_id: i64) -> Result<Option<i64>, StoreError> {
        Ok(self.db().query_row("SELECT next_attempt_ms FROM outbound_queue WHERE server_id = ?1 AND delivered_at IS NULL ORDER BY id LIMIT 1", [server_id], |r| r.get(0)).optional()?)
    }

    pub fn mark_delivered(&self, queue_id: i64) -> Result<(), StoreError> {
        self.db().execute("UPDATE outbound_queue SET delivered_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), last_error = NULL WHERE id = ?1", [queue_id])?;
        Ok(())
    }

    /// Items handed to a session that ended before they were written: one more attempt,
    /// exponential backoff (1 s doubling, at most 5 min), the error kept.
    pub fn mark_failed(&self, server_id: i64, up_to_queue_id: i64, error: &str) -> Result<usize, StoreError> {
        let now = now_ms();
        Ok(self.db().execute(
            "UPDATE outbound_queue SET attempts = attempts + 1, last_error = ?3,
                 next_attempt_ms = ?4 + MIN(300000, 1000 * (1 << MIN(attempts, 9)))
             WHERE server_id = ?1 AND delivered_at IS NULL AND id <= ?2",
            params![server_id, up_to_queue_id, error, now],
        )?)
    }

    /// A fresh session: what is waiting may go at once (the backoff was for the old one).
    pub fn reset_backoff(&self, server_id: i64) -> Result<(), StoreError> {
        self.db().execute("UPDATE outbound_queue SET next_attempt_ms = 0 WHERE server_id = ?1 AND delivered_at IS NULL", [server_id])?;
        Ok(())
    }

    /// Queue totals per server.
    pub fn queue_stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT s.id, s.name, COUNT(q.id), COUNT(q.delivered_at),
                    SUM(CASE WHEN q.id IS NOT NULL AND q.delivered_at IS NULL THEN 1 ELSE 0 END),
                    SUM(CASE WHEN q.delivered_at IS NULL AND q.attempts > 0 THEN 1 ELSE 0 END),
                    MIN(CASE WHEN q.delivered_at IS NULL THEN q.created_at END),
                    (SELECT q2.last_error FROM outbound_queue q2 WHERE q2.server_id = s.id AND q2.last_error IS NOT NULL ORDER BY q2.id DESC LIMIT 1)
             FROM federation_servers s LEFT JOIN outbound_queue q ON q.server_id = s.id GROUP BY s.id ORDER BY s.id",
        )?;
        let v = st
            .query_map([], |r| {
                Ok(QueueStats { server_id: r.get(0)?, server: r.get(1)?, total: r.get(2)?, sent: r.get(3)?, pending: r.get::<_, Option<i64>>(4)?.unwrap_or(0), failed: r.get::<_, Option<i64>>(5)?.unwrap_or(0), oldest_pending: r.get(6)?, last_error: r.get(7)? })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// Pending items of every server, oldest first.
    pub fn all_pending(&self, limit: usize) -> Result<Vec<Pending>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(&format!(
            "SELECT q.id, s.name, q.attempts, q.last_error, q.created_at, {CHANGE_COLS}
             FROM outbound_queue q JOIN mission_changes c ON c.id = q.change_id JOIN federation_servers s ON s.id = q.server_id
             WHERE q.delivered_at IS NULL ORDER BY s.name, q.id LIMIT ?1"
        ))?;
        let v = st
            .query_map([limit as i64], |r| Ok(Pending { queue_id: r.get(0)?, server: r.get(1)?, attempts: r.get(2)?, last_error: r.get(3)?, created_at: r.get(4)?, change: change_row(r, 5)? }))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(mission: &str, uid: &str, ts: i64) -> Change {
        Change { mission: mission.into(), change_type: "ADD_CONTENT".into(), content_uid: uid.into(), creator_uid: "me".into(), ts_ms: ts, ..Default::default() }
    }

    fn server(name: &str) -> Server {
        Server { name: name.into(), direction: "outbound".into(), protocol: "v2".into(), address: "h".into(), port: 9001, enabled: true, sync_missions: true, link: "fed".into(), source: "config".into(), ..Default::default() }
    }

    #[test]
    fn schema_applies_twice_and_reopens() {
        let dir = std::env::temp_dir().join(format!("takgate-store-{}", fastrand::u64(..)));
        let path = dir.join("t.db").display().to_string();
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        s.record_change(&change("m", "u", 1)).unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.all_changes().unwrap().len(), 1, "kept across reopen");
        s.db().pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        let e = Store::open(&path).unwrap_err();
        assert!(e.0.contains("newer than this takgate"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn changes_are_recorded_once_and_queued_in_order() {
        let s = Store::open(":memory:").unwrap();
        let (sid, new) = s.upsert_server(&server("east")).unwrap();
        assert!(new);
        assert_eq!(s.upsert_server(&server("east")).unwrap(), (sid, false));
        let a = s.record_change(&change("m", "u1", 10)).unwrap().unwrap();
        assert_eq!(s.record_change(&change("m", "u1", 10)).unwrap(), None, "the same change twice");
        let b = s.record_change(&change("m", "u2", 11)).unwrap().unwrap();
        s.enqueue(sid, a).unwrap();
        s.enqueue(sid, b).unwrap();
        assert!(!s.enqueue(sid, b).unwrap());
        let p = s.pending(sid, 0, 10, now_ms()).unwrap();
        assert_eq!(p.iter().map(|p| p.change.content_uid.as_str()).collect::<Vec<_>>(), ["u1", "u2"]);
        // a failed head waits out its backoff, and holds what follows (order per mission)
        s.mark_failed(sid, p[0].queue_id, "link down").unwrap();
        assert!(s.pending(sid, 0, 10, now_ms()).unwrap().is_empty());
        let st = &s.queue_stats().unwrap()[0];
        assert_eq!((st.total, st.pending, st.failed, st.last_error.as_deref()), (2, 2, 1, Some("link down")));
        s.reset_backoff(sid).unwrap();
        let p = s.pending(sid, 0, 10, now_ms()).unwrap();
        assert_eq!(p[0].attempts, 1);
        s.mark_delivered(p[0].queue_id).unwrap();
        assert_eq!(s.pending(sid, 0, 10, now_ms()).unwrap().len(), 1);
        assert_eq!(s.pending(sid, p[1].queue_id, 10, now_ms()).unwrap().len(), 0, "after the cursor");
        // deleting the server drops its queue
        assert!(s.delete_server(sid).unwrap());
        assert!(s.all_pending(10).unwrap().is_empty());
    }

    #[test]
    fn replay_window_and_config_reconcile() {
        let s = Store::open(":memory:").unwrap();
        s.record_change(&change("m", "old", 1_000)).unwrap();
        s.record_change(&change("m", "new", 5_000)).unwrap();
        s.record_change(&Change { is_federated: true, ..change("m", "theirs", 6_000) }).unwrap();
        let (sid, _) = s.upsert_server(&server("east")).unwrap();
        assert_eq!(s.enqueue_since(sid, 2_000).unwrap(), 1, "only local changes in the window");
        s.upsert_server(&Server { source: "api".into(), ..server("api-peer") }).unwrap();
        assert_eq!(s.remove_stale_config_servers(&[]).unwrap(), 1);
        assert_eq!(s.servers().unwrap().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["api-peer"]);
        assert!(s.ensure_mission("m", "me", "g", "").unwrap());
        assert!(!s.ensure_mission("m", "me", "g", "").unwrap());
        assert!(s.add_item("m", "u").unwrap() && !s.add_item("m", "u").unwrap());
        let m = &s.missions().unwrap()[0];
        assert_eq!((m.items, m.changes, m.tool.as_str()), (1, 3, "public"));
    }
}
