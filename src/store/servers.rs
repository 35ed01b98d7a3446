//! Federation servers: from the configuration file (source `config`, reconciled at start),
//! the admin API (source `api`), or first seen connecting to a listener (source
//! `inbound`, known afterwards by its certificate fingerprint).

use rusqlite::{params, OptionalExtension};

use super::types::{Direction, Server, ServerStatus, Source};
use super::{Store, StoreError};

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
        verify_ssl: r.get(11)?,
        enabled: r.get(12)?,
        status: r.get(13)?,
        last_connected: r.get(14)?,
        last_error: r.get(15)?,
        sync_missions: r.get(16)?,
        sync_cot: r.get(17)?,
        mission_filter: filter.and_then(|f| serde_json::from_str(&f).ok()),
        link: r.get(19)?,
        source: r.get(20)?,
        created_at: r.get(21)?,
        updated_at: r.get(22)?,
    })
}

impl Store {
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
                    params![id, s.description, s.node_id, s.address, s.port as i64, s.direction, s.protocol, s.ca_path, s.cert_path, s.key_path, s.verify_ssl, s.enabled, s.sync_missions, s.sync_cot, filter, s.link, s.source],
                )?;
                Ok((id, false))
            }
            None => {
                db.execute(
                    "INSERT INTO federation_servers (name, description, node_id, address, port, direction, protocol, ca_path, cert_path, key_path, verify_ssl, enabled, sync_missions, sync_cot, mission_filter, link, source) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)",
                    params![s.name, s.description, s.node_id, s.address, s.port as i64, s.direction, s.protocol, s.ca_path, s.cert_path, s.key_path, s.verify_ssl, s.enabled, s.sync_missions, s.sync_cot, filter, s.link, s.source],
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
            let mut st = db.prepare("SELECT name FROM federation_servers WHERE source = ?1")?;
            let v = st.query_map([Source::Config], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
            v
        };
        let mut n = 0;
        for name in names.iter().filter(|n| !keep.contains(n)) {
            n += db.execute("DELETE FROM federation_servers WHERE name = ?1", [name])?;
        }
        Ok(n)
    }

    pub fn rename_server(&self, id: i64, name: &str) -> Result<(), StoreError> {
        self.db().execute("UPDATE federation_servers SET name = ?2, link = CASE WHEN source = ?3 THEN ?2 ELSE link END WHERE id = ?1", params![id, name, Source::Api])?;
        Ok(())
    }

    pub fn delete_server(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.db().execute("DELETE FROM federation_servers WHERE id = ?1", [id])? > 0)
    }

    /// The inbound server row of a federate (by certificate fingerprint) on `link`.
    pub fn inbound_server(&self, link: &str, fingerprint: &str) -> Result<Option<Server>, StoreError> {
        Ok(self.db().query_row(&format!("SELECT {SERVER_COLS} FROM federation_servers WHERE link = ?1 AND node_id = ?2 AND direction = ?3"), params![link, fingerprint, Direction::Inbound], server_row).optional()?)
    }

    pub fn set_status(&self, id: i64, status: ServerStatus, error: Option<&str>) -> Result<(), StoreError> {
        let db = self.db();
        if status == ServerStatus::Connected {
            db.execute("UPDATE federation_servers SET status=?2, last_connected=strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id=?1", params![id, status])?;
        } else {
            db.execute("UPDATE federation_servers SET status=?2, last_error=COALESCE(?3, last_error) WHERE id=?1", params![id, status, error])?;
        }
        Ok(())
    }
}
