//! takgate-side contacts as clients of OpenTAKServer: one TCP CoT connection to its
//! eud_handler per contact (local clients and federates' users), registered with the
//! contact's own position report, so OpenTAKServer knows them as it knows its own EUDs:
//! what they send is stored with its sender (points, chat), routed by OTS itself (direct
//! messages only to their addressees on `dms`, mission items on `missions.<name>`, the rest
//! to the group), and their mission items become mission changes with a creator. One more
//! client carries what has no contact of its own (takgate itself).
//!
//! Read side: OpenTAKServer delivers to each client what its EUD would get; only direct
//! messages addressed to that contact are taken from there (everything else also comes on
//! the bus, once). Events on the bus whose sender is one of these clients are ours, and
//! skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::OtsSettings;
use crate::codec::{decode_frame, StreamDecoder};
use crate::link::ingest::{ingest, Origin};
use crate::link::{log_bad_input, Backoff, LinkCounters};
use crate::router::RouterHandle;
use crate::sync::lock;

/// A takgate-side contact as OpenTAKServer will know it.
#[derive(Debug, Clone)]
pub struct Who {
    pub uid: String,
    pub callsign: String,
    /// The contact's position report (XML, with `<contact>`): the first thing its client
    /// sends, which makes OTS register it.
    pub sa: Bytes,
}

struct Client {
    tx: mpsc::Sender<Bytes>,
    /// Registered: connected, waited, and its position report sent.
    ready: Arc<std::sync::atomic::AtomicBool>,
}

/// The clients, by contact uid.
pub struct Clients {
    s: Arc<OtsSettings>,
    router: RouterHandle,
    link_id: u64,
    cancel: CancellationToken,
    by_uid: std::sync::Mutex<HashMap<String, Client>>,
}

/// Events a client holds while it connects.
const CLIENT_QUEUE: usize = 1024;

impl Clients {
    pub fn new(s: Arc<OtsSettings>, router: RouterHandle, link_id: u64, cancel: CancellationToken) -> Arc<Clients> {
        Arc::new(Clients { s, router, link_id, cancel, by_uid: Default::default() })
    }

    /// Whether `uid` is one of our clients (its events on the bus are ours).
    pub fn is_ours(&self, uid: &str) -> bool {
        lock(&self.by_uid).contains_key(uid)
    }

    /// Whether `uid`'s client is registered on OpenTAKServer (an EUD it knows).
    pub fn is_registered(&self, uid: &str) -> bool {
        lock(&self.by_uid).get(uid).is_some_and(|c| c.ready.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// How many clients there are.
    pub fn len(&self) -> usize {
        lock(&self.by_uid).len()
    }

    /// Whether there is a client for `uid`, or room for one more.
    pub fn has_room_for(&self, uid: &str) -> bool {
        let m = lock(&self.by_uid);
        m.contains_key(uid) || m.len() < self.s.max_clients
    }

    /// Writes `event` (XML) as `who`, connecting and registering its client first when
    /// there is none. False when it was dropped (its client's queue is full).
    pub fn send(self: &Arc<Self>, who: &Who, event: Bytes) -> bool {
        let mut m = lock(&self.by_uid);
        let c = m.entry(who.uid.clone()).or_insert_with(|| self.spawn(who.clone()));
        match c.tx.try_send(event) {
            Ok(()) => true,
            Err(_) => {
                let n = LinkCounters::inc(&self.s.counters.drops_queue_full);
                log_bad_input(n, &self.s.link, &self.s.cot_addr, &format!("the OpenTAKServer client of {} is not keeping up: event dropped", who.uid));
                false
            }
        }
    }

    /// Starts `who`'s client now (takgate's own one, at start).
    pub fn open(self: &Arc<Self>, who: &Who) {
        let mut m = lock(&self.by_uid);
        if !m.contains_key(&who.uid) {
            let c = self.spawn(who.clone());
            m.insert(who.uid.clone(), c);
        }
    }

    /// `uid` left (its `t-x-d-d`): its client disconnects, and OpenTAKServer marks the EUD
    /// disconnected as it does when one of its own leaves.
    pub fn close(&self, uid: &str) {
        lock(&self.by_uid).remove(uid);
    }

    fn spawn(self: &Arc<Self>, who: Who) -> Client {
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(self.clone().run(who, rx, ready.clone()));
        Client { tx, ready }
    }

    /// One client until its contact leaves (its sender is dropped) or the link stops:
    /// connects (again, with backoff, when the connection drops), registers, then writes
    /// what it is given and reads what OpenTAKServer delivers to it.
    async fn run(self: Arc<Self>, who: Who, mut rx: mpsc::Receiver<Bytes>, ready: Arc<std::sync::atomic::AtomicBool>) {
        let mut backoff = crate::link::backoff::Attempts::new(Backoff { min: Duration::from_millis(500), max: Duration::from_secs(30), healthy: Duration::from_secs(10) });
        loop {
            let started = std::time::Instant::now();
            let r = tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = self.session(&who, &mut rx, &ready) => r,
            };
            ready.store(false, std::sync::atomic::Ordering::Relaxed);
            match r {
                Ok(()) => return,
                Err(e) => tracing::debug!(link = %self.s.link, uid = %who.uid, "OpenTAKServer client: {e}"),
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay(started.elapsed())) => {}
            }
        }
    }

    async fn session(&self, who: &Who, rx: &mut mpsc::Receiver<Bytes>, ready: &std::sync::atomic::AtomicBool) -> Result<(), String> {
        let mut tcp = tokio::net::TcpStream::connect(&self.s.cot_addr).await.map_err(|e| format!("connect {}: {e}", self.s.cot_addr))?;
        tcp.set_nodelay(true).ok();
        // OpenTAKServer 1.7.14's eud_handler opens its broker channel after accepting; a
        // contact registered before that gets no queues and never receives anything.
        tokio::time::sleep(self.s.register_delay).await;
        tcp.write_all(&who.sa).await.map_err(|e| e.to_string())?;
        // When it lost that race anyway (a loaded OTS), OTS made no queue for the contact
        // and never will on this connection: connect again.
        if self.queue_exists(&who.uid).await == Some(false) {
            return Err(format!("OpenTAKServer did not register {} (no queue for it on its broker): reconnecting", who.uid));
        }
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(link = %self.s.link, uid = %who.uid, callsign = %who.callsign, "registered on OpenTAKServer");
        let (mut rd, mut wr) = tcp.into_split();
        let mut dec = StreamDecoder::new(self.s.max_event);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(b) => {
                        wr.write_all(&b).await.map_err(|e| e.to_string())?;
                        LinkCounters::inc(&self.s.counters.events_out);
                        LinkCounters::add(&self.s.counters.bytes_out, b.len() as u64);
                    }
                    None => return Ok(()),
                },
                n = rd.read_buf(dec.read_buffer()) => match n {
                    Ok(0) => return Err("OpenTAKServer closed the connection".into()),
                    Ok(_) => self.read_frames(who, &mut dec).await,
                    Err(e) => return Err(e.to_string()),
                },
            }
        }
    }

    /// Whether OpenTAKServer's broker has the queue eud_handler makes and consumes for a
    /// registered contact (named by its uid), checked passively for up to 3 s after
    /// registering; None when the broker cannot be asked.
    async fn queue_exists(&self, uid: &str) -> Option<bool> {
        let check = async {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let conn = tokio::time::timeout(super::BROKER_CONNECT_TIMEOUT, lapin::Connection::connect(&self.s.url, lapin::ConnectionProperties::default())).await.ok()?.ok()?;
                let ch = conn.create_channel().await.ok()?;
                let r = ch.queue_declare(uid.into(), lapin::options::QueueDeclareOptions { passive: true, ..Default::default() }, lapin::types::FieldTable::default()).await;
                let _ = conn.close(200, "ok".into()).await;
                // the queue outlives its EUD's connections: it counts once consumed again
                if r.is_ok_and(|q| q.consumer_count() > 0) {
                    return Some(true);
                }
            }
            Some(false)
        };
        tokio::time::timeout(Duration::from_secs(10), check).await.ok().flatten()
    }

    /// Direct messages OpenTAKServer delivers to this contact go to it; the rest of what
    /// the client gets also comes on the bus.
    async fn read_frames(&self, who: &Who, dec: &mut StreamDecoder) {
        while let Some(f) = dec.next_frame() {
            let Ok(Ok(Some(ev))) = f.map(|f| decode_frame(&f)) else { continue };
            let facts = crate::router::message::Facts::of(&ev);
            if facts.dest_callsigns.iter().any(|c| *c == who.callsign) || facts.dest_uids.iter().any(|u| *u == who.uid) {
                ingest(&self.router, Origin { id: self.link_id, policy: &self.s.policy, counters: &self.s.counters }, ev, None).await;
            }
        }
    }
}
