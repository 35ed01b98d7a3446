//! The durable outbound queue: what each federate still has to receive, in order. A change
//! is queued in the same transaction that records it; delivery is confirmed item by item;
//! a failed head waits out the backoff and holds what follows (the order per mission).

use std::time::Duration;

use rusqlite::params;

use super::missions::{change_extras, change_row, CHANGE_COLS, INSERT_CHANGE};
use super::types::{Change, Pending, QueueStats};
use super::{now_ms, Store, StoreError};
use crate::link::Backoff;

/// How long a failed head waits: 1 s doubling to 5 min.
const QUEUE_BACKOFF: Backoff = Backoff { min: Duration::from_secs(1), max: Duration::from_secs(300), healthy: Duration::from_secs(300) };

impl Store {
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
        let (meta, groups, log) = change_extras(c);
        let n = tx.execute(INSERT_CHANGE, params![c.mission, c.change_type, c.content_uid, c.content_hash, c.creator_uid, c.ts_ms, c.is_federated, c.origin_federate, c.cot_xml, meta, groups, log])?;
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

    /// Queues for `server_id` the local changes since `since_ms` (a replay window), and with
    /// `federated` those received from federates too (a relaying node; a server seen for the
    /// first time cannot be the origin of any).
    pub fn enqueue_since(&self, server_id: i64, since_ms: i64, federated: bool) -> Result<usize, StoreError> {
        Ok(self.db().execute(
            "INSERT OR IGNORE INTO outbound_queue (server_id, change_id, replay) SELECT ?1, id, 1 FROM mission_changes WHERE (is_federated_change = 0 OR ?3) AND ts_ms >= ?2 ORDER BY id",
            params![server_id, since_ms, federated],
        )?)
    }

    /// The head of a server's queue, in order, from after queue id `after`, at most `limit`
    /// items. Empty when the head is waiting out its backoff (so the order holds).
    pub fn pending(&self, server_id: i64, after: i64, limit: usize, now_ms: i64) -> Result<Vec<Pending>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(&format!(
            "SELECT q.id, s.name, q.attempts, q.last_error, q.created_at, q.next_attempt_ms, q.replay, {CHANGE_COLS}
             FROM outbound_queue q JOIN mission_changes c ON c.id = q.change_id JOIN federation_servers s ON s.id = q.server_id
             WHERE q.server_id = ?1 AND q.delivered_at IS NULL AND q.id > ?2 ORDER BY q.id LIMIT ?3"
        ))?;
        let mut out = vec![];
        let rows = st.query_map(params![server_id, after, limit as i64], |r| {
            Ok((r.get::<_, i64>(5)?, Pending { queue_id: r.get(0)?, server: r.get(1)?, attempts: r.get(2)?, last_error: r.get(3)?, created_at: r.get(4)?, replay: r.get(6)?, change: change_row(r, 7)? }))
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

    pub fn mark_delivered(&self, queue_id: i64) -> Result<(), StoreError> {
        self.db().execute("UPDATE outbound_queue SET delivered_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), last_error = NULL WHERE id = ?1", [queue_id])?;
        Ok(())
    }

    /// Items handed to a session that ended before they were confirmed: one more attempt
    /// after the queue's backoff (by the head's attempts so far), the error kept.
    pub fn mark_failed(&self, server_id: i64, up_to_queue_id: i64, error: &str) -> Result<usize, StoreError> {
        let db = self.db();
        let attempts: i64 = db.query_row("SELECT COALESCE(MIN(attempts), 0) FROM outbound_queue WHERE server_id = ?1 AND delivered_at IS NULL AND id <= ?2", params![server_id, up_to_queue_id], |r| r.get(0))?;
        let next = now_ms() + QUEUE_BACKOFF.base(attempts.clamp(0, 30) as u32).as_millis() as i64;
        Ok(db.execute(
            "UPDATE outbound_queue SET attempts = attempts + 1, last_error = ?3, next_attempt_ms = ?4 WHERE server_id = ?1 AND delivered_at IS NULL AND id <= ?2",
            params![server_id, up_to_queue_id, error, next],
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
            "SELECT q.id, s.name, q.attempts, q.last_error, q.created_at, q.replay, {CHANGE_COLS}
             FROM outbound_queue q JOIN mission_changes c ON c.id = q.change_id JOIN federation_servers s ON s.id = q.server_id
             WHERE q.delivered_at IS NULL ORDER BY s.name, q.id LIMIT ?1"
        ))?;
        let v = st
            .query_map([limit as i64], |r| Ok(Pending { queue_id: r.get(0)?, server: r.get(1)?, attempts: r.get(2)?, last_error: r.get(3)?, created_at: r.get(4)?, replay: r.get(5)?, change: change_row(r, 6)? }))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::{ChangeType, Direction, MissionMeta, Protocol, Server, Source};

    fn change(mission: &str, uid: &str, ts: i64) -> Change {
        Change { content_uid: uid.into(), creator_uid: "me".into(), ts_ms: ts, ..Change::new(mission, ChangeType::AddContent) }
    }

    fn server(name: &str) -> Server {
        Server { name: name.into(), direction: Direction::Outbound, protocol: Protocol::V2, address: "h".into(), port: 9001, enabled: true, sync_missions: true, link: "fed".into(), source: Source::Config, ..Default::default() }
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
        assert_eq!(s.enqueue_since(sid, 2_000, false).unwrap(), 1, "only local changes in the window");
        assert!(s.pending(sid, 0, 10, now_ms()).unwrap()[0].replay, "marked as a replay");
        assert_eq!(s.enqueue_since(sid, 2_000, true).unwrap(), 1, "a relaying node replays what federates sent too");
        s.upsert_server(&Server { source: Source::Api, ..server("api-peer") }).unwrap();
        assert_eq!(s.remove_stale_config_servers(&[]).unwrap(), 1);
        assert_eq!(s.servers().unwrap().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["api-peer"]);
        let meta = MissionMeta { guid: "g".into(), ..Default::default() };
        assert!(s.ensure_mission("m", "me", &meta).unwrap());
        assert!(!s.ensure_mission("m", "me", &meta).unwrap());
        assert!(s.add_item("m", "u").unwrap() && !s.add_item("m", "u").unwrap());
        let m = &s.missions().unwrap()[0];
        assert_eq!((m.items, m.changes, m.tool.as_str()), (1, 3, "public"));
    }
}
