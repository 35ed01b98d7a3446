//! A federation v1 link (TAK Server's port 9000 protocol), listening or connecting, over
//! mutual TLS: length-prefixed `FederatedEvent`s both ways.
//!
//! On connect each side sends the latest position report of every local contact and a
//! contact CREATE for each; then live CoT, a contact CREATE the first time a local contact
//! is seen on this connection, and a contact DELETE for `t-x-d-d`. Mission traffic
//! (`t-x-m-*`) is not sent over v1 (TAK Server federates missions only over v2). Received
//! contacts are registered so direct messages reach the federate; events carrying our own
//! provenance, or over their hop limit, are dropped; what a federate sends is not relayed
//! to other federates unless their policy says `relay_federates`. v1 has no heartbeat:
//! TCP keepalive and an idle timeout detect dead links.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::convert::{from_geo, to_geo};
use super::fig::{ContactListEntry, Crud, FederateHops, FederateProvenance, FederatedEvent};
use super::v1::{self, Decoder};
use crate::config::Overflow;
use crate::cot::{xml, CotEvent, CotTime};
use crate::router::{LinkCounters, Message, PeerIdentity, PeerInfo, PeerPolicy, RouterHandle};
use crate::transport::stream::{ingest_from, log_bad_input};
use crate::transport::tcp::Io;

#[derive(Debug)]
pub struct FedSettings {
    pub link: String,
    pub node_id: String,
    pub policy: Arc<PeerPolicy>,
    pub counters: Arc<LinkCounters>,
    pub queue_depth: usize,
    pub idle_timeout: Option<Duration>,
    pub max_frame: usize,
    /// Accepted peer fingerprints (upper-case hex pairs joined by ':'); empty: any peer
    /// whose certificate chains to the federation CA.
    pub allow: Vec<String>,
}

/// The frames for one routed event (contact CREATE first when this contact is new here).
fn frames_for(m: &Message, s: &FedSettings, announced: &mut HashSet<String>, out: &mut Vec<u8>) -> bool {
    let ev = &m.event;
    if ev.cot_type.starts_with("t-x-m") {
        return false;
    }
    if ev.cot_type == "t-x-d-d" {
        let Some(uid) = xml::find_attr(&ev.detail.xml, "link", "uid") else { return false };
        let typ = xml::find_attr(&ev.detail.xml, "link", "type").unwrap_or_default();
        announced.remove(&uid);
        v1::encode(&FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Delete as i32, uid, callsign: typ, ..Default::default() }), ..Default::default() }, out);
        return true;
    }
    if ev.cot_type.starts_with("a-") {
        if let Some(cs) = &m.facts.callsign {
            if announced.insert(ev.uid.clone()) {
                v1::encode(&FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Create as i32, uid: ev.uid.clone(), callsign: cs.clone(), ..Default::default() }), ..Default::default() }, out);
            }
        }
    }
    let fe = FederatedEvent {
        event: Some(to_geo(ev, &m.facts)),
        federate_provenance: vec![FederateProvenance { federation_server_id: s.node_id.clone(), federation_server_name: s.node_id.clone() }],
        federate_hops: Some(FederateHops { max_hops: -1, current_hops: 1 }),
        ..Default::default()
    };
    v1::encode(&fe, out);
    true
}

/// Runs one federation v1 connection until it closes or `cancel` fires.
pub async fn run_session(io: Box<dyn Io>, remote: String, identity: Option<PeerIdentity>, s: Arc<FedSettings>, router: RouterHandle, cancel: CancellationToken) {
    let Some(identity) = identity else {
        tracing::warn!(link = %s.link, %remote, "federate presented no certificate: closing");
        return;
    };
    if !s.allow.is_empty() && !s.allow.iter().any(|f| f.eq_ignore_ascii_case(&identity.fingerprint)) {
        let n = s.counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log_bad_input(n, &s.link, &remote, &format!("federate {} ({}) is not on the allow-list", identity.cn, identity.fingerprint));
        return;
    }
    let id = router.next_id();
    let (tx, rx) = mpsc::channel(s.queue_depth);
    let session = cancel.child_token();
    // The snapshot is taken before attaching, so nothing in it is also queued live.
    let snapshot: Vec<Arc<Message>> = router.snapshot().await.into_iter().filter(|m| s.policy.allows_out(m)).collect();
    router
        .attach(PeerInfo { id, link: s.link.clone(), transport: "federation-v1", remote: remote.clone(), identity: Some(identity.clone()), policy: s.policy.clone(), tx, overflow: Overflow::Drop, counters: s.counters.clone(), close: session.clone() })
        .await;
    tracing::info!(link = %s.link, %remote, federate = %identity.cn, fingerprint = %identity.fingerprint, "federate connected");
    let (mut rd, wr) = tokio::io::split(io);
    let writer = tokio::spawn(write_loop(wr, rx, snapshot, s.clone(), session.clone()));
    let mut dec = Decoder::new(s.max_frame);
    let mut last_rx = Instant::now();
    let reason = loop {
        dec.buffer_mut().reserve(16 * 1024);
        let idle = s.idle_timeout.map(|d| last_rx + d);
        let r = tokio::select! {
            _ = session.cancelled() => break "closed",
            _ = async { match idle { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => break "idle timeout",
            r = rd.read_buf(dec.buffer_mut()) => r,
        };
        match r {
            Ok(0) => break "end of stream",
            Err(_) => break "read error",
            Ok(n) => {
                s.counters.bytes_in.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                last_rx = Instant::now();
            }
        }
        let mut fatal = false;
        while let Some(f) = dec.next_frame() {
            match f {
                Ok(fe) => receive(fe, id, &s, &router).await,
                Err(e) => {
                    let n = s.counters.frame_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    log_bad_input(n, &s.link, &remote, &e);
                    fatal = true;
                    break;
                }
            }
        }
        if fatal {
            break "bad frame";
        }
    };
    session.cancel();
    router.detach(id).await;
    let _ = writer.await;
    tracing::info!(link = %s.link, %remote, reason, "federate disconnected");
}

async fn write_loop(mut wr: impl tokio::io::AsyncWrite + Unpin, mut rx: mpsc::Receiver<Arc<Message>>, snapshot: Vec<Arc<Message>>, s: Arc<FedSettings>, session: CancellationToken) {
    let mut announced = HashSet::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut n = 0u64;
    for m in &snapshot {
        n += frames_for(m, &s, &mut announced, &mut buf) as u64;
    }
    loop {
        if !buf.is_empty() {
            let r = tokio::select! {
                r = async { wr.write_all(&buf).await?; wr.flush().await } => r,
                _ = session.cancelled() => break,
            };
            if r.is_err() {
                break;
            }
            s.counters.bytes_out.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            s.counters.events_out.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            buf.clear();
            n = 0;
        }
        let m = tokio::select! {
            _ = session.cancelled() => break,
            m = rx.recv() => match m { Some(m) => m, None => break },
        };
        n += frames_for(&m, &s, &mut announced, &mut buf) as u64;
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(m) => n += frames_for(&m, &s, &mut announced, &mut buf) as u64,
                Err(_) => break,
            }
        }
    }
    session.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), wr.shutdown()).await;
}

async fn receive(fe: FederatedEvent, id: u64, s: &FedSettings, router: &RouterHandle) {
    if fe.federate_provenance.iter().any(|p| p.federation_server_id == s.node_id) {
        LinkCounters::inc(&s.counters.loops);
        return;
    }
    if let Some(h) = &fe.federate_hops {
        if h.max_hops >= 0 && h.current_hops > h.max_hops {
            LinkCounters::inc(&s.counters.loops);
            return;
        }
    }
    if let Some(c) = fe.contact {
        match Crud::try_from(c.operation) {
            Ok(Crud::Create | Crud::Update) => router.learn_contact(c.uid, c.callsign, id).await,
            Ok(Crud::Delete) => {
                router.forget_contact(c.uid.clone(), id).await;
                // A departed remote client: tell local clients to remove it.
                let mut ev = CotEvent::new(format!("{}-delete", c.uid), "t-x-d-d", "h-g-i-g-o", CotTime::now(), 20);
                let mut d = Vec::new();
                d.extend_from_slice(b"<link uid=\"");
                xml::escape_attr(&c.uid, &mut d);
                d.extend_from_slice(b"\" relation=\"p-p\" type=\"");
                xml::escape_attr(&c.callsign, &mut d);
                d.extend_from_slice(b"\"/><__forcedelete/>");
                ev.detail.xml = String::from_utf8_lossy(&d).into_owned();
                ingest_from(router, &s.policy, &s.counters, id, ev, true, true).await;
            }
            _ => {}
        }
    }
    if let Some(g) = fe.event {
        match from_geo(g) {
            Ok(ev) => {
                ingest_from(router, &s.policy, &s.counters, id, ev, true, true).await;
            }
            Err(e) => {
                let n = s.counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log_bad_input(n, &s.link, "federate", &e);
            }
        }
    }
}
