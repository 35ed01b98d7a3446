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
use crate::cot::{fragment, CotEvent, CotTime};
use crate::router::pattern::PatternList;
use crate::router::{FedMeta, LinkCounters, Message, PeerIdentity, PeerInfo, PeerPolicy, RouterHandle};
use crate::transport::stream::{ingest_from, log_bad_input};
use crate::transport::tcp::Io;

#[derive(Debug)]
pub struct FedSettings {
    pub link: String,
    pub node_id: String,
    /// The name we present (v2 `Subscription.identity.name`).
    pub display_name: String,
    pub policy: Arc<PeerPolicy>,
    pub counters: Arc<LinkCounters>,
    pub queue_depth: usize,
    pub idle_timeout: Option<Duration>,
    pub max_frame: usize,
    /// Accepted peer fingerprints (upper-case hex pairs joined by ':'); empty: any peer
    /// whose certificate chains to the federation CA.
    pub allow: Vec<String>,
    /// Hop limit stamped on what we send; -1: unlimited.
    pub max_hops: i64,
    /// Groups this federate may receive (empty: all, and no `federateGroups`).
    pub outbound_groups: PatternList,
    pub outbound_group_names: Vec<String>,
    /// Local groups for what this federate sends when the mapping yields none.
    pub inbound_groups: Vec<String>,
    /// v2: remote group name -> local group name.
    pub group_mapping: Vec<(String, String)>,
    /// v2 client: interval between health checks.
    pub health_interval: Duration,
    /// v2 server: streams without a health check for this long are closed.
    pub health_timeout: Duration,
    /// Our certificate (DER), for `Getx509Identity`.
    pub own_cert: Vec<u8>,
    /// v1: read rate limits of one connection.
    pub read_rate: crate::transport::stream::ReadRateLimits,
    /// v1: a write that takes longer closes the connection.
    pub write_timeout: Duration,
}

impl FedSettings {
    /// Settings with defaults, for tests and tools.
    pub fn new(link: &str, node_id: &str, policy: PeerPolicy) -> FedSettings {
        let mut policy = policy;
        policy.federate = true;
        FedSettings {
            link: link.into(),
            node_id: node_id.into(),
            display_name: node_id.into(),
            policy: Arc::new(policy),
            counters: Arc::default(),
            queue_depth: 16_384,
            idle_timeout: Some(Duration::from_secs(900)),
            max_frame: v1::DEFAULT_MAX_FRAME,
            allow: vec![],
            max_hops: -1,
            outbound_groups: PatternList::default(),
            outbound_group_names: vec![],
            inbound_groups: vec![],
            group_mapping: vec![],
            health_interval: Duration::from_secs(3),
            health_timeout: Duration::from_secs(15),
            own_cert: vec![],
            read_rate: Default::default(),
            write_timeout: crate::transport::stream::DEFAULT_WRITE_TIMEOUT,
        }
    }
}

/// Whether a federate with this certificate may connect (it presented one, and it is on the
/// allow-list when there is one); logs and counts a refusal.
pub(crate) fn admit(identity: Option<PeerIdentity>, s: &FedSettings, remote: &str) -> Option<PeerIdentity> {
    let Some(identity) = identity else {
        tracing::warn!(link = %s.link, %remote, "federate refused: it presented no certificate");
        return None;
    };
    if !s.allow.is_empty() && !s.allow.iter().any(|f| f.eq_ignore_ascii_case(&identity.fingerprint)) {
        let n = s.counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log_bad_input(n, &s.link, remote, &format!("federate refused: {} ({}) is not on the allow-list", identity.federate_name(), identity.fingerprint));
        return None;
    }
    Some(identity)
}

/// The `FederatedEvent`s for one routed event, in order (contact CREATE first when this
/// contact is new on this connection). Returns false when the event does not go to this
/// federate.
pub(crate) fn federated_for(m: &Message, s: &FedSettings, announced: &mut HashSet<String>, mut out: impl FnMut(FederatedEvent)) -> bool {
    let ev = &m.event;
    if ev.cot_type.starts_with("t-x-m") {
        return false;
    }
    let groups: Vec<String> = if s.outbound_group_names.is_empty() {
        vec![]
    } else {
        let own: Vec<&str> = match &m.fed {
            Some(f) if !f.groups.is_empty() => f.groups.iter().map(String::as_str).collect(),
            _ => vec![m.facts.group.as_deref().unwrap_or("__ANON__")],
        };
        let g: Vec<String> = own.into_iter().filter(|g| s.outbound_groups.any(g)).map(str::to_owned).collect();
        if g.is_empty() {
            LinkCounters::inc(&s.counters.filtered);
            return false;
        }
        g
    };
    let mut provenance: Vec<FederateProvenance> = m.fed.iter().flat_map(|f| f.provenance.iter()).filter(|p| **p != s.node_id).map(|p| FederateProvenance { federation_server_id: p.clone(), federation_server_name: String::new() }).collect();
    provenance.push(FederateProvenance { federation_server_id: s.node_id.clone(), federation_server_name: s.display_name.clone() });
    let (hops, max_hops) = match &m.fed {
        Some(f) => (f.hops + 1, min_limit(f.max_hops, s.max_hops)),
        None => (1, s.max_hops),
    };
    if ev.cot_type == "t-x-d-d" {
        let Some(uid) = fragment::find_attr(&ev.detail.xml, "link", "uid") else { return false };
        let typ = fragment::find_attr(&ev.detail.xml, "link", "type").unwrap_or_default();
        announced.remove(&uid);
        out(FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Delete as i32, uid, callsign: typ, ..Default::default() }), federate_groups: groups, ..Default::default() });
        return true;
    }
    if ev.cot_type.starts_with("a-") {
        if let Some(cs) = &m.facts.callsign {
            if announced.insert(ev.uid.clone()) {
                out(FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Create as i32, uid: ev.uid.clone(), callsign: cs.clone(), ..Default::default() }), federate_groups: groups.clone(), ..Default::default() });
            }
        }
    }
    out(FederatedEvent {
        event: Some(to_geo(ev, &m.facts)),
        federate_groups: groups,
        federate_provenance: provenance,
        federate_hops: Some(FederateHops { max_hops, current_hops: hops }),
        ..Default::default()
    });
    true
}

/// The stricter of two hop limits (-1: unlimited).
fn min_limit(a: i64, b: i64) -> i64 {
    match (a < 0, b < 0) {
        (true, _) => b,
        (_, true) => a,
        _ => a.min(b),
    }
}

/// The local groups for an event a federate sent with `remote` federation groups.
pub(crate) fn inbound_groups(remote: &[String], s: &FedSettings) -> Vec<String> {
    let mut g: Vec<String> = vec![];
    for r in remote {
        for (from, to) in &s.group_mapping {
            if from == r && !g.contains(to) {
                g.push(to.clone());
            }
        }
    }
    if g.is_empty() {
        g = s.inbound_groups.clone();
    }
    g
}

/// The frames for one routed event (v1).
fn frames_for(m: &Message, s: &FedSettings, announced: &mut HashSet<String>, out: &mut Vec<u8>) -> bool {
    federated_for(m, s, announced, |fe| v1::encode(&fe, out))
}

/// Runs one federation v1 connection until it closes or `cancel` fires.
pub async fn run_session(io: Box<dyn Io>, remote: String, identity: Option<PeerIdentity>, s: Arc<FedSettings>, router: RouterHandle, cancel: CancellationToken) {
    let Some(identity) = admit(identity, &s, &remote) else { return };
    let id = router.next_id();
    let (tx, rx) = mpsc::channel(s.queue_depth);
    let session = cancel.child_token();
    // The snapshot is taken before attaching, so nothing in it is also queued live.
    let snapshot: Vec<Arc<Message>> = router.snapshot().await.into_iter().filter(|m| s.policy.allows_out(m)).collect();
    router
        .attach(PeerInfo { codec: Arc::new(std::sync::atomic::AtomicU8::new(crate::router::codec::FIG_V1)), id, link: s.link.clone(), transport: "federation-v1", remote: remote.clone(), identity: Some(identity.clone()), policy: s.policy.clone(), tx, overflow: Overflow::Drop, counters: s.counters.clone(), close: session.clone() })
        .await;
    tracing::info!(link = %s.link, %remote, federate = %identity.federate_name(), fingerprint = %identity.fingerprint, "federate connected");
    let (mut rd, wr) = tokio::io::split(io);
    let writer = tokio::spawn(write_loop(wr, rx, snapshot, s.clone(), remote.clone(), session.clone()));
    let mut dec = Decoder::new(s.max_frame);
    let mut rate = crate::transport::stream::ReadRate::new(s.read_rate);
    let mut last_rx = Instant::now();
    let reason = loop {
        dec.buffer_mut().reserve(16 * 1024);
        let idle = s.idle_timeout.map(|d| last_rx + d);
        let r = tokio::select! {
            _ = session.cancelled() => break "closed",
            _ = async { match idle { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                LinkCounters::inc(&s.counters.idle_timeouts);
                break "idle timeout";
            }
            r = rd.read_buf(dec.buffer_mut()) => r,
        };
        match r {
            Ok(0) => break "end of stream",
            Err(_) => break "read error",
            Ok(n) => {
                s.counters.bytes_in.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                rate.bytes(n, &s.counters, &s.link, &remote, &session).await;
                last_rx = Instant::now();
            }
        }
        let mut fatal = false;
        while let Some(f) = dec.next_frame() {
            match f {
                Ok(fe) => {
                    rate.event(&s.counters, &s.link, &remote, &session).await;
                    receive(fe, id, &s, &router).await
                }
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

async fn write_loop(mut wr: impl tokio::io::AsyncWrite + Unpin, mut rx: mpsc::Receiver<Arc<Message>>, snapshot: Vec<Arc<Message>>, s: Arc<FedSettings>, remote: String, session: CancellationToken) {
    let mut announced = HashSet::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut n = 0u64;
    for m in &snapshot {
        n += frames_for(m, &s, &mut announced, &mut buf) as u64;
    }
    loop {
        if !buf.is_empty() {
            let r = tokio::select! {
                r = tokio::time::timeout(s.write_timeout, async { wr.write_all(&buf).await?; wr.flush().await }) => r,
                _ = session.cancelled() => break,
            };
            match r {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    LinkCounters::inc(&s.counters.slow_consumers);
                    tracing::warn!(link = %s.link, %remote, secs = s.write_timeout.as_secs_f64(), "slow federate: a write did not complete within the write timeout; disconnecting");
                    break;
                }
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

/// Handles one `FederatedEvent` from federate session `id`: loop and hop checks, contacts,
/// and the event itself, routed with its provenance.
pub(crate) async fn receive(fe: FederatedEvent, id: u64, s: &FedSettings, router: &RouterHandle) {
    if fe.federate_provenance.iter().any(|p| p.federation_server_id == s.node_id) {
        LinkCounters::inc(&s.counters.loops);
        return;
    }
    let (hops, max_hops) = fe.federate_hops.as_ref().map(|h| (h.current_hops, h.max_hops)).unwrap_or((0, -1));
    if (max_hops >= 0 && hops > max_hops) || (s.max_hops >= 0 && hops > s.max_hops) {
        LinkCounters::inc(&s.counters.loops);
        return;
    }
    let meta = || FedMeta { provenance: fe.federate_provenance.iter().map(|p| p.federation_server_id.clone()).collect(), hops, max_hops, groups: inbound_groups(&fe.federate_groups, s) };
    if let Some(c) = &fe.contact {
        match Crud::try_from(c.operation) {
            Ok(Crud::Create | Crud::Update) => router.learn_contact(c.uid.clone(), c.callsign.clone(), id).await,
            Ok(Crud::Delete) => {
                router.forget_contact(c.uid.clone(), id).await;
                // A departed remote client: tell local clients to remove it.
                let mut ev = CotEvent::new(format!("{}-delete", c.uid), "t-x-d-d", "h-g-i-g-o", CotTime::now(), 20);
                let mut d = Vec::new();
                d.extend_from_slice(b"<link uid=\"");
                fragment::escape_attr(&c.uid, &mut d);
                d.extend_from_slice(b"\" relation=\"p-p\" type=\"");
                fragment::escape_attr(&c.callsign, &mut d);
                d.extend_from_slice(b"\"/><__forcedelete/>");
                ev.detail.xml = String::from_utf8_lossy(&d).into_owned();
                ingest_from(router, &s.policy, &s.counters, id, ev, true, Some(meta())).await;
            }
            _ => {}
        }
    }
    if let Some(g) = fe.event.clone() {
        if g.r#type.starts_with("t-x-m") {
            // Mission-change notices travel as ROL on v2 (TAK Server discards them here too).
            LinkCounters::inc(&s.counters.filtered);
            return;
        }
        match from_geo(g) {
            Ok(ev) => {
                ingest_from(router, &s.policy, &s.counters, id, ev, true, Some(meta())).await;
            }
            Err(e) => {
                let n = s.counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log_bad_input(n, &s.link, "federate", &e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cot::CotTime;

    fn msg(fed: Option<FedMeta>, group: Option<&str>) -> Message {
        let mut ev = CotEvent::new("ANDROID-1", "a-f-G-U-C", "m-g", CotTime(1_700_000_000_000), 60);
        ev.detail.xml = match group {
            Some(g) => format!(r#"<contact callsign="ONE"/><__group name="{g}" role="x"/>"#),
            None => r#"<contact callsign="ONE"/>"#.into(),
        };
        let mut m = Message::new(ev, 1);
        m.from_federate = fed.is_some();
        m.fed = fed.map(Box::new);
        m
    }

    fn out(m: &Message, s: &FedSettings) -> Vec<FederatedEvent> {
        let mut v = vec![];
        federated_for(m, s, &mut HashSet::new(), |fe| v.push(fe));
        v
    }

    #[test]
    fn provenance_and_hops_are_stamped_and_carried() {
        let mut s = FedSettings::new("fed", "me", PeerPolicy::open());
        s.max_hops = 5;
        let local = out(&msg(None, None), &s);
        assert_eq!(local.len(), 2, "contact CREATE, then the event");
        let ev = &local[1];
        assert_eq!(ev.federate_provenance.iter().map(|p| p.federation_server_id.as_str()).collect::<Vec<_>>(), ["me"]);
        assert_eq!(ev.federate_hops, Some(FederateHops { max_hops: 5, current_hops: 1 }));
        // Relayed: the incoming provenance is kept, hops go on, the stricter limit wins.
        let relayed = out(&msg(Some(FedMeta { provenance: vec!["other".into()], hops: 2, max_hops: 3, groups: vec![] }), None), &s);
        let ev = relayed.last().unwrap();
        assert_eq!(ev.federate_provenance.iter().map(|p| p.federation_server_id.as_str()).collect::<Vec<_>>(), ["other", "me"]);
        assert_eq!(ev.federate_hops, Some(FederateHops { max_hops: 3, current_hops: 3 }));
        assert_eq!((min_limit(-1, 4), min_limit(4, -1), min_limit(-1, -1), min_limit(2, 7)), (4, 4, -1, 2));
    }

    #[test]
    fn outbound_groups_filter_and_name_the_groups() {
        let mut s = FedSettings::new("fed", "me", PeerPolicy::open());
        s.outbound_groups = PatternList::new(&["Cyan".to_string(), "__ANON__".to_string()]).unwrap();
        s.outbound_group_names = vec!["Cyan".into(), "__ANON__".into()];
        assert_eq!(out(&msg(None, Some("Cyan")), &s).last().unwrap().federate_groups, ["Cyan"]);
        assert!(out(&msg(None, Some("Red")), &s).is_empty());
        assert_eq!(out(&msg(None, None), &s).last().unwrap().federate_groups, ["__ANON__"]);
        // A federate's groups stand in for the __group name.
        let fed = msg(Some(FedMeta { groups: vec!["Cyan".into()], ..Default::default() }), Some("Red"));
        assert_eq!(out(&fed, &s).last().unwrap().federate_groups, ["Cyan"]);
        s.group_mapping = vec![("A".into(), "Blue".into()), ("B".into(), "Blue".into())];
        s.inbound_groups = vec!["Fallback".into()];
        assert_eq!(inbound_groups(&["A".into(), "B".into()], &s), ["Blue"]);
        assert_eq!(inbound_groups(&["C".into()], &s), ["Fallback"]);
    }
}
