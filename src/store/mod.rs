//! The store: SQLite (rusqlite, WAL) holding federation servers, missions, mission changes
//! and the durable outbound queue, plus a few facts of the node itself (its generated id).
//! `schema.sql` (version 1) and the migrations after it are applied at open, idempotently;
//! the version is kept in `PRAGMA user_version`, and a store written by a newer takgate is
//! refused rather than guessed at. Every write is its own transaction, so a `kill -9` loses
//! nothing that was recorded (WAL with synchronous=NORMAL survives a process crash).
//!
//! Calls are synchronous and short (indexed lookups and single-row writes); async callers
//! hold the connection's mutex for well under a millisecond.
//!
//! * [`types`]: what is stored, with enums for kinds and states;
//! * [`servers`], [`missions`], [`files`], [`logs`], [`queue`], [`hub`]: the queries, one area each.

pub mod files;
pub mod hub;
pub mod logs;
pub mod missions;
pub mod queue;
pub mod servers;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension};

pub use types::{Change, ChangeType, FileMeta, LogEntry, Direction, Mission, MissionMeta, Pending, Protocol, QueueStats, Server, ServerStatus, Source};

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 5;
const SCHEMA_V1: &str = include_str!("../../schema.sql");
/// Migrations from version N to N+1, in order (index 0: 1 -> 2).
const MIGRATIONS: &[&str] = &[
    // 2: mission metadata and federation groups kept with each change, the latest CoT of
    // each item, the files (hashes) of a mission, facts of the node.
    "ALTER TABLE mission_changes ADD COLUMN meta TEXT NOT NULL DEFAULT '';
     ALTER TABLE mission_changes ADD COLUMN groups TEXT NOT NULL DEFAULT '';
     ALTER TABLE missions ADD COLUMN chat_room TEXT NOT NULL DEFAULT '';
     ALTER TABLE mission_items ADD COLUMN cot_xml TEXT NOT NULL DEFAULT '';
     CREATE TABLE IF NOT EXISTS mission_hashes (
         mission_name TEXT NOT NULL,
         hash         TEXT NOT NULL,
         added_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
         PRIMARY KEY (mission_name, hash)
     );
     CREATE TABLE IF NOT EXISTS node_facts (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 3: the Federation Hub's ROL, kept for federates that were away (the replay window),
    // with the sender's policy groups at the time, and when each federate was last there.
    "CREATE TABLE IF NOT EXISTS hub_rol (
         id          INTEGER PRIMARY KEY,
         source      TEXT NOT NULL,
         groups      TEXT NOT NULL DEFAULT '[]',
         received_ms INTEGER NOT NULL,
         rol         BLOB NOT NULL
     );
     CREATE INDEX IF NOT EXISTS hub_rol_received ON hub_rol (received_ms);
     CREATE TABLE IF NOT EXISTS hub_seen (federate TEXT PRIMARY KEY, last_ms INTEGER NOT NULL);",
    // 4: files (mission content and data packages) by SHA-256, their bytes on disk beside the
    // store; queue items marked when they came from a replay window (files over the replay
    // size cap go without their bytes).
    "CREATE TABLE IF NOT EXISTS files (
         hash         TEXT PRIMARY KEY,
         name         TEXT NOT NULL DEFAULT '',
         mime         TEXT NOT NULL DEFAULT '',
         size         INTEGER NOT NULL,
         submitter    TEXT NOT NULL DEFAULT '',
         creator_uid  TEXT NOT NULL DEFAULT '',
         uid          TEXT NOT NULL DEFAULT '',
         keywords     TEXT NOT NULL DEFAULT '[]',
         tool         TEXT NOT NULL DEFAULT 'public',
         submitted_ms INTEGER NOT NULL,
         origin       TEXT NOT NULL DEFAULT ''
     );
     ALTER TABLE outbound_queue ADD COLUMN replay INTEGER NOT NULL DEFAULT 0;",
    // 5: mission log entries (their current state), and the entry a log change carried; the
    // change table is rebuilt for its new change types (SQLite cannot alter a CHECK; foreign
    // keys are off while migrating, so the queue that references it is kept).
    "CREATE TABLE IF NOT EXISTS mission_logs (
         entry_uid      TEXT PRIMARY KEY,
         mission_name   TEXT NOT NULL,
         content        TEXT NOT NULL DEFAULT '',
         creator_uid    TEXT NOT NULL DEFAULT '',
         dtg_ms         INTEGER NOT NULL DEFAULT 0,
         created_ms     INTEGER NOT NULL DEFAULT 0,
         servertime_ms  INTEGER NOT NULL DEFAULT 0,
         content_hashes TEXT NOT NULL DEFAULT '[]',
         keywords       TEXT NOT NULL DEFAULT '[]'
     );
     CREATE INDEX IF NOT EXISTS mission_logs_mission ON mission_logs (mission_name);
     CREATE TABLE mission_changes_v5 (
         id                  INTEGER PRIMARY KEY,
         mission_name        TEXT NOT NULL,
         change_type         TEXT NOT NULL CHECK (change_type IN (
                                 'CREATE_MISSION', 'DELETE_MISSION', 'ADD_CONTENT', 'REMOVE_CONTENT',
                                 'CREATE_DATA_FEED', 'DELETE_DATA_FEED', 'CHANGE',
                                 'ADD_UPDATE_LOG_ENTRY', 'DELETE_LOG_ENTRY', 'ROL')),
         content_uid         TEXT NOT NULL DEFAULT '',
         content_hash        TEXT NOT NULL DEFAULT '',
         creator_uid         TEXT NOT NULL DEFAULT '',
         ts_ms               INTEGER NOT NULL,
         received_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
         is_federated_change INTEGER NOT NULL DEFAULT 0,
         origin_federate     TEXT,
         cot_xml             TEXT NOT NULL DEFAULT '',
         meta                TEXT NOT NULL DEFAULT '',
         groups              TEXT NOT NULL DEFAULT '',
         log_entry           TEXT NOT NULL DEFAULT '',
         UNIQUE (mission_name, change_type, content_uid, content_hash, ts_ms)
     );
     INSERT INTO mission_changes_v5 (id, mission_name, change_type, content_uid, content_hash, creator_uid, ts_ms, received_at, is_federated_change, origin_federate, cot_xml, meta, groups)
         SELECT id, mission_name, change_type, content_uid, content_hash, creator_uid, ts_ms, received_at, is_federated_change, origin_federate, cot_xml, meta, groups FROM mission_changes;
     DROP TABLE mission_changes;
     ALTER TABLE mission_changes_v5 RENAME TO mission_changes;
     CREATE INDEX IF NOT EXISTS mission_changes_by_mission ON mission_changes (mission_name, id);",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("store: cannot create {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("{path} has schema version {version}, newer than this takgate ({SCHEMA_VERSION}): use a newer takgate or another file")]
    Newer { path: String, version: i64 },
    #[error("store {path}: migrating to schema version {to}: {source}")]
    Migrate { path: String, to: i64, source: rusqlite::Error },
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

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    crate::cot::CotTime::now().0
}

impl Store {
    /// Opens (creating if needed) the store at `path` (`:memory:` for a private in-memory
    /// store) and brings its schema up to date.
    pub fn open(path: &str) -> Result<Store, StoreError> {
        if path != ":memory:" {
            if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { dir: dir.to_owned(), source })?;
            }
        }
        let open = |source| StoreError::Open { path: path.to_owned(), source };
        let mut conn = Connection::open(path).map_err(open)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Newer { path: path.to_owned(), version });
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA_V1).map_err(open)?;
        if version == 0 {
            conn.pragma_update(None, "user_version", 1)?;
        }
        // A migration that rebuilds a table must not cascade into the tables referencing it.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        for (i, m) in MIGRATIONS.iter().enumerate() {
            let to = i as i64 + 2;
            if version.max(1) < to {
                let tx = conn.transaction()?;
                tx.execute_batch(m).and_then(|_| tx.pragma_update(None, "user_version", to)).map_err(|source| StoreError::Migrate { path: path.to_owned(), to, source })?;
                tx.commit()?;
            }
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Store { conn: Mutex::new(conn), path: path.to_owned() })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        crate::sync::lock(&self.conn)
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self.db().query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// A fact of this node (its generated id), if recorded.
    pub fn fact(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.db().query_row("SELECT value FROM node_facts WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Records a fact of this node.
    pub fn set_fact(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.db().execute("INSERT INTO node_facts (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", [key, value])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_applies_twice_reopens_and_refuses_newer() {
        let dir = std::env::temp_dir().join(format!("takgate-store-{}", fastrand::u64(..)));
        let path = dir.join("t.db").display().to_string();
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        s.record_change(&Change { content_uid: "u".into(), ts_ms: 1, ..Change::new("m", ChangeType::AddContent) }).unwrap();
        s.set_fact("node_id", "n1").unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.all_changes().unwrap().len(), 1, "kept across reopen");
        assert_eq!(s.fact("node_id").unwrap().as_deref(), Some("n1"));
        s.db().pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        let e = Store::open(&path).unwrap_err();
        assert!(e.to_string().contains("newer than this takgate"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_version_1_store_is_migrated() {
        let dir = std::env::temp_dir().join(format!("takgate-store-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v1.db").display().to_string();
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute("INSERT INTO mission_changes (mission_name, change_type, content_uid, ts_ms) VALUES ('m', 'ADD_CONTENT', 'u', 5)", []).unwrap();
            c.execute("INSERT INTO federation_servers (name, direction, protocol) VALUES ('east', 'outbound', 'v2')", []).unwrap();
            c.execute("INSERT INTO outbound_queue (server_id, change_id) VALUES (1, 1)", []).unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(s.all_changes().unwrap()[0].content_uid, "u");
        assert_eq!(s.all_pending(10).unwrap().len(), 1, "the queue survives the rebuild of the change table");
        let log = Change { content_uid: "e1".into(), ts_ms: 6, log_entry: Some(crate::store::LogEntry { entry_uid: "e1".into(), ..Default::default() }), ..Change::new("m", ChangeType::AddUpdateLogEntry) };
        assert!(s.record_change(&log).unwrap().is_some(), "the new change types are accepted");
        assert_eq!(s.all_changes().unwrap()[1].log_entry.as_ref().map(|l| l.entry_uid.as_str()), Some("e1"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
