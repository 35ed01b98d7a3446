//! The Federation Hub's ROL store: every ROL the hub routed, with its sender and the sender's
//! policy groups, kept for the replay window so that a federate that was away gets what it
//! missed; and when each federate was last connected.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

/// A stored ROL.
#[derive(Debug, Clone, PartialEq)]
pub struct HubRol {
    pub id: i64,
    pub source: String,
    pub groups: Vec<String>,
    pub received_ms: i64,
    /// The ROL as received (protobuf).
    pub rol: Vec<u8>,
}

impl Store {
    /// Keeps a ROL the hub routed; its id.
    pub fn hub_store_rol(&self, source: &str, groups: &[String], received_ms: i64, rol: &[u8]) -> Result<i64, StoreError> {
        let db = self.db();
        db.execute("INSERT INTO hub_rol (source, groups, received_ms, rol) VALUES (?1, ?2, ?3, ?4)", params![source, serde_json::to_string(groups).unwrap_or_default(), received_ms, rol])?;
        Ok(db.last_insert_rowid())
    }

    /// The newest ROL id (0: none).
    pub fn hub_last_rol(&self) -> Result<i64, StoreError> {
        Ok(self.db().query_row("SELECT COALESCE(MAX(id), 0) FROM hub_rol", [], |r| r.get(0))?)
    }

    /// ROL received after `since_ms` with ids up to `max_id`, oldest first.
    pub fn hub_rols(&self, since_ms: i64, max_id: i64) -> Result<Vec<HubRol>, StoreError> {
        let db = self.db();
        let mut st = db.prepare("SELECT id, source, groups, received_ms, rol FROM hub_rol WHERE received_ms > ?1 AND id <= ?2 ORDER BY id")?;
        let rows = st.query_map(params![since_ms, max_id], |r| {
            let g: String = r.get(2)?;
            Ok(HubRol { id: r.get(0)?, source: r.get(1)?, groups: serde_json::from_str(&g).unwrap_or_default(), received_ms: r.get(3)?, rol: r.get(4)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drops ROL received before `before_ms`; how many.
    pub fn hub_prune(&self, before_ms: i64) -> Result<usize, StoreError> {
        Ok(self.db().execute("DELETE FROM hub_rol WHERE received_ms < ?1", [before_ms])?)
    }

    /// When a federate was last connected (ms), if ever.
    pub fn hub_seen(&self, federate: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.db().query_row("SELECT last_ms FROM hub_seen WHERE federate = ?1", [federate], |r| r.get(0)).optional()?)
    }

    pub fn hub_set_seen(&self, federate: &str, ms: i64) -> Result<(), StoreError> {
        self.db().execute("INSERT INTO hub_seen (federate, last_ms) VALUES (?1, ?2) ON CONFLICT(federate) DO UPDATE SET last_ms = excluded.last_ms", params![federate, ms])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rol_is_kept_read_by_window_and_pruned() {
        let s = Store::open(":memory:").unwrap();
        let a = s.hub_store_rol("fed-a", &["g".into()], 1_000, b"one").unwrap();
        let b = s.hub_store_rol("fed-a", &[], 2_000, b"two").unwrap();
        assert_eq!(s.hub_last_rol().unwrap(), b);
        let r = s.hub_rols(1_500, b).unwrap();
        assert_eq!((r.len(), r[0].rol.as_slice()), (1, b"two".as_slice()));
        assert_eq!(s.hub_rols(0, a).unwrap()[0].groups, ["g"]);
        assert_eq!(s.hub_prune(1_500).unwrap(), 1);
        s.hub_set_seen("fed-b", 7).unwrap();
        s.hub_set_seen("fed-b", 9).unwrap();
        assert_eq!((s.hub_seen("fed-b").unwrap(), s.hub_seen("x").unwrap()), (Some(9), None));
    }
}
