//! The router actor. Links hand it messages; it decides who gets each one and `try_send`s
//! an `Arc<Message>` to each peer's bounded queue. It never waits on a peer: when a queue
//! is full the peer's overflow rule applies (drop and count, or disconnect).
//!
//! Loop and duplicate protection: never back to the origin, a short dedup window on
//! (uid, type, time), and `_flow-tags_` checked and stamped by the links. Direct messages
//! (`marti/dest callsign|uid`) go only to the links where those contacts were last seen
//! (learned from their SA); contacts not seen yet are sent to `upstream` links.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::message::{LinkId, Message};
use super::policy::{PeerPolicy, RateLimiter};
use crate::config::Overflow;

/// A contact not heard from for this long is forgotten (direct messages to it then go
/// upstream).
const CONTACT_TTL: Duration = Duration::from_secs(15 * 60);
const CONTACT_SWEEP: Duration = Duration::from_secs(30);
/// At most this many contacts are remembered per table.
const MAX_CONTACTS: usize = 100_000;

/// A hasher for keys that are already uniformly distributed, unpredictable hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ *b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Records where a contact lives (bounded by MAX_CONTACTS).
fn note_contact(map: &mut HashMap<String, (LinkId, Instant)>, key: &str, link: LinkId, now: Instant) {
    if let Some(e) = map.get_mut(key) {
        *e = (link, now);
    } else if map.len() < MAX_CONTACTS {
        map.insert(key.to_owned(), (link, now));
    }
}

/// Counters of one link or peer. Shared with the link task; read for stats and metrics.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Dropped because this peer's queue was full.
    pub drops_queue_full: AtomicU64,
    /// Not delivered to this peer by its policy.
    pub filtered: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Events from this link that could not be decoded.
    pub decode_errors: AtomicU64,
    /// Bytes skipped by the stream framer (garbage, oversized events).
    pub frame_errors: AtomicU64,
    /// Datagrams larger than the maximum.
    pub truncated: AtomicU64,
    /// Events from this link dropped as duplicates or loops.
    pub duplicates: AtomicU64,
    pub loops: AtomicU64,
    /// Events from this link dropped because the router was saturated (datagram links).
    pub drops_router_busy: AtomicU64,
    /// Sessions that switched to TAK protocol v1 by negotiation.
    pub negotiated_proto: AtomicU64,
    /// Connections refused by a limit (total, per address, per certificate identity, TLS
    /// handshakes in progress).
    pub refused: AtomicU64,
    /// Times reading from a connection paused to hold its read rate limit.
    pub throttled: AtomicU64,
    /// Connections closed because they did not take what was sent to them (a write that
    /// stalled past the write timeout, or a full queue with `overflow = "disconnect"`).
    pub slow_consumers: AtomicU64,
    /// Connections closed for silence beyond the idle timeout.
    pub idle_timeouts: AtomicU64,
}

impl LinkCounters {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            events_in: self.events_in.load(Relaxed),
            events_out: self.events_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            drops_queue_full: self.drops_queue_full.load(Relaxed),
            filtered: self.filtered.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            frame_errors: self.frame_errors.load(Relaxed),
            truncated: self.truncated.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            loops: self.loops.load(Relaxed),
            drops_router_busy: self.drops_router_busy.load(Relaxed),
            negotiated_proto: self.negotiated_proto.load(Relaxed),
            refused: self.refused.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
            slow_consumers: self.slow_consumers.load(Relaxed),
            idle_timeouts: self.idle_timeouts.load(Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub events_in: u64,
    pub events_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub drops_queue_full: u64,
    pub filtered: u64,
    pub rate_limited: u64,
    pub decode_errors: u64,
    pub frame_errors: u64,
    pub truncated: u64,
    pub duplicates: u64,
    pub loops: u64,
    pub drops_router_busy: u64,
    pub negotiated_proto: u64,
    pub refused: u64,
    pub throttled: u64,
    pub slow_consumers: u64,
    pub idle_timeouts: u64,
}

/// Identity of a TLS peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerIdentity {
    /// Subject common name.
    pub cn: String,
    /// SHA-256 of the DER certificate, upper-case hex pairs joined by ':'.
    pub fingerprint: String,
    /// Issuer common name.
    pub issuer_cn: String,
}

impl PeerIdentity {
    /// The federate name TAK Server gives a new federate: `CN:issuer CN`.
    pub fn federate_name(&self) -> String {
        format!("{}:{}", self.cn, self.issuer_cn)
    }
}

/// What a peer's queue carries.
pub type Outbound = Arc<Message>;

/// What a peer's wire carries now (streams switch when TAK protocol v1 is negotiated).
pub mod codec {
    pub const XML: u8 = 0;
    pub const PROTOBUF: u8 = 1;
    pub const PROTOBUF_MESH: u8 = 2;
    pub const FIG_V1: u8 = 3;
    pub const FIG_GRPC: u8 = 4;
    pub const AMQP_XML: u8 = 5;
    pub fn name(c: u8) -> &'static str {
        match c {
            XML => "xml",
            PROTOBUF => "protobuf",
            PROTOBUF_MESH => "protobuf-mesh",
            FIG_V1 => "fig-v1 (FederatedEvent frames)",
            FIG_GRPC => "fig-v2 (gRPC)",
            AMQP_XML => "xml (amqp)",
            _ => "unknown",
        }
    }
}

/// Everything the router needs to know about an attached peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub id: LinkId,
    /// The peer's current codec ([`codec`]), updated by its writer.
    pub codec: Arc<std::sync::atomic::AtomicU8>,
    /// Name of the configured link it belongs to.
    pub link: String,
    pub transport: &'static str,
    pub remote: String,
    pub identity: Option<PeerIdentity>,
    pub policy: Arc<PeerPolicy>,
    pub tx: mpsc::Sender<Outbound>,
    pub overflow: Overflow,
    pub counters: Arc<LinkCounters>,
    /// Cancelled to disconnect the peer (overflow rule `disconnect`).
    pub close: CancellationToken,
}

impl PeerInfo {
    /// A peer that only receives (a datagram sender, a broker link): no TLS identity,
    /// overflow drops, closed with `cancel`.
    pub fn output(id: LinkId, link: &str, transport: &'static str, remote: String, policy: Arc<PeerPolicy>, tx: mpsc::Sender<Outbound>, counters: Arc<LinkCounters>, cancel: &CancellationToken) -> PeerInfo {
        PeerInfo { id, codec: Arc::new(std::sync::atomic::AtomicU8::new(codec::XML)), link: link.to_owned(), transport, remote, identity: None, policy, tx, overflow: Overflow::Drop, counters, close: cancel.child_token() }
    }
}

/// Per-peer statistics.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStats {
    pub id: LinkId,
    pub link: String,
    pub transport: &'static str,
    pub remote: String,
    pub identity: Option<PeerIdentity>,
    pub codec: &'static str,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    #[serde(flatten)]
    pub counters: CounterSnapshot,
}

/// Router-wide counters.
#[derive(Debug, Default)]
pub struct RouterCounters {
    pub routed: AtomicU64,
    pub duplicates: AtomicU64,
    pub deliveries: AtomicU64,
    pub direct_unknown: AtomicU64,
}

enum Cmd {
    Attach(PeerInfo),
    Detach(LinkId),
    Route(Arc<Message>),
    /// Several messages at once (a batch of datagrams): one wake-up for the lot.
    RouteMany(Vec<Arc<Message>>),
    Stats(oneshot::Sender<Vec<PeerStats>>),
    /// The latest position report of every contact seen on non-federate links.
    Snapshot(oneshot::Sender<Vec<Arc<Message>>>),
    /// A contact announced by a peer (federation contact CREATE).
    Contact { uid: String, callsign: String, link: LinkId },
    /// A contact that left (federation contact DELETE).
    Forget { uid: String, link: LinkId },
    /// Where mission traffic is also copied (the mission store), and its own id.
    Tap(mpsc::Sender<Arc<Message>>, LinkId),
}

/// A cheap, cloneable handle to the router actor.
#[derive(Clone)]
pub struct RouterHandle {
    tx: mpsc::Sender<Cmd>,
    next_id: Arc<AtomicU64>,
    pub node_id: Arc<str>,
    pub counters: Arc<RouterCounters>,
}

impl RouterHandle {
    pub fn next_id(&self) -> LinkId {
        self.next_id.fetch_add(1, Relaxed)
    }
    pub async fn attach(&self, p: PeerInfo) {
        let _ = self.tx.send(Cmd::Attach(p)).await;
    }
    pub async fn detach(&self, id: LinkId) {
        let _ = self.tx.send(Cmd::Detach(id)).await;
    }
    /// Hands a message to the router, waiting while it is saturated (stream readers: TCP
    /// flow control then pushes back on the sender).
    pub async fn route(&self, m: Arc<Message>) -> bool {
        self.tx.send(Cmd::Route(m)).await.is_ok()
    }
    /// Hands a message to the router from a plain (non-async) thread, waiting while it is
    /// saturated; false when it has stopped.
    pub fn route_blocking(&self, m: Arc<Message>) -> bool {
        self.tx.blocking_send(Cmd::Route(m)).is_ok()
    }
    /// Hands several messages to the router from a plain thread (one command), waiting while
    /// it is saturated; false when it has stopped.
    pub fn route_many_blocking(&self, v: Vec<Arc<Message>>) -> bool {
        v.is_empty() || self.tx.blocking_send(Cmd::RouteMany(v)).is_ok()
    }
    /// Hands a message to the router without waiting; false when saturated (datagrams).
    pub fn try_route(&self, m: Arc<Message>) -> bool {
        self.tx.try_send(Cmd::Route(m)).is_ok()
    }
    /// The latest position report of every local contact (for a new federate).
    pub async fn snapshot(&self) -> Vec<Arc<Message>> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Snapshot(tx)).await.is_err() {
            return vec![];
        }
        rx.await.unwrap_or_default()
    }
    /// Registers where a contact lives, as announced by a peer.
    pub async fn learn_contact(&self, uid: String, callsign: String, link: LinkId) {
        let _ = self.tx.send(Cmd::Contact { uid, callsign, link }).await;
    }
    /// Forgets a contact a peer said has left.
    pub async fn forget_contact(&self, uid: String, link: LinkId) {
        let _ = self.tx.send(Cmd::Forget { uid, link }).await;
    }
    /// Copies mission traffic (facts.is_mission) to `tx`, except what `id` itself routed.
    pub async fn set_mission_tap(&self, tx: mpsc::Sender<Arc<Message>>, id: LinkId) {
        let _ = self.tx.send(Cmd::Tap(tx, id)).await;
    }
    pub async fn stats(&self) -> Vec<PeerStats> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Stats(tx)).await.is_err() {
            return vec![];
        }
        rx.await.unwrap_or_default()
    }
}

struct Peer {
    info: PeerInfo,
    limiter: RateLimiter,
}

/// The router state, owned by its task.
pub struct Router {
    peers: Vec<Peer>,
    /// Where contacts were last seen: (link, when). Aged out after CONTACT_TTL and capped
    /// at MAX_CONTACTS, so a flood of unique uids cannot grow memory without bound.
    by_callsign: HashMap<String, (LinkId, Instant)>,
    by_uid: HashMap<String, (LinkId, Instant)>,
    /// Latest position report per uid from non-federate links (same bounds as contacts).
    latest_sa: HashMap<String, Arc<Message>>,
    last_contact_sweep: Instant,
    /// Dedup keys in two generations: a key is remembered for at least the window (at most
    /// two). Keys are keyed SipHash values already, so the sets do not hash them again, and
    /// cleared sets keep their capacity (no allocation in steady state).
    dedup: [HashSet<u64, BuildHasherDefault<PassThrough>>; 2],
    dedup_window: Duration,
    last_sweep: Instant,
    hasher: RandomState,
    counters: Arc<RouterCounters>,
    /// Mission traffic is copied here (except what the tap itself routed).
    tap: Option<(mpsc::Sender<Arc<Message>>, LinkId)>,
}

impl Router {
    /// Starts the router task and returns its handle.
    pub fn spawn(node_id: &str, dedup_window: Duration) -> RouterHandle {
        let (tx, rx) = mpsc::channel(16 * 1024);
        let counters = Arc::new(RouterCounters::default());
        let router = Router {
            peers: Vec::new(),
            by_callsign: HashMap::new(),
            by_uid: HashMap::new(),
            latest_sa: HashMap::new(),
            last_contact_sweep: Instant::now(),
            dedup: Default::default(),
            dedup_window,
            last_sweep: Instant::now(),
            hasher: RandomState::new(),
            counters: counters.clone(),
            tap: None,
        };
        tokio::spawn(router.run(rx));
        RouterHandle { tx, next_id: Arc::new(AtomicU64::new(1)), node_id: node_id.into(), counters }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut batch = Vec::with_capacity(256);
        while rx.recv_many(&mut batch, 256).await > 0 {
            for cmd in batch.drain(..) {
                match cmd {
                    Cmd::Attach(p) => self.peers.push(Peer { info: p, limiter: RateLimiter::default() }),
                    Cmd::Detach(id) => self.detach(id),
                    Cmd::Route(m) => self.route(&m),
                    Cmd::RouteMany(v) => {
                        for m in &v {
                            self.route(m);
                        }
                    }
                    Cmd::Stats(reply) => {
                        let _ = reply.send(self.stats());
                    }
                    Cmd::Snapshot(reply) => {
                        let _ = reply.send(self.latest_sa.values().cloned().collect());
                    }
                    Cmd::Contact { uid, callsign, link } => {
                        let now = Instant::now();
                        note_contact(&mut self.by_uid, &uid, link, now);
                        if !callsign.is_empty() {
                            note_contact(&mut self.by_callsign, &callsign, link, now);
                        }
                    }
                    Cmd::Forget { uid, link } => {
                        if self.by_uid.get(&uid).is_some_and(|(l, _)| *l == link) {
                            self.by_uid.remove(&uid);
                        }
                    }
                    Cmd::Tap(tx, id) => self.tap = Some((tx, id)),
                }
            }
        }
    }

    fn detach(&mut self, id: LinkId) {
        self.peers.retain(|p| p.info.id != id);
        self.by_callsign.retain(|_, (l, _)| *l != id);
        self.by_uid.retain(|_, (l, _)| *l != id);
        self.latest_sa.retain(|_, m| m.origin != id);
    }

    fn stats(&self) -> Vec<PeerStats> {
        self.peers
            .iter()
            .map(|p| PeerStats {
                id: p.info.id,
                link: p.info.link.clone(),
                transport: p.info.transport,
                remote: p.info.remote.clone(),
                identity: p.info.identity.clone(),
                codec: codec::name(p.info.codec.load(Relaxed)),
                queue_capacity: p.info.tx.max_capacity(),
                queue_depth: p.info.tx.max_capacity() - p.info.tx.capacity(),
                counters: p.info.counters.snapshot(),
            })
            .collect()
    }

    /// True when (uid, type, time) was seen within the window.
    fn duplicate(&mut self, m: &Message, now: Instant) -> bool {
        if self.dedup_window.is_zero() {
            return false;
        }
        let mut h = self.hasher.build_hasher();
        m.event.uid.hash(&mut h);
        m.event.cot_type.hash(&mut h);
        m.event.time.hash(&mut h);
        let key = h.finish();
        if now.duration_since(self.last_sweep) >= self.dedup_window {
            // the older generation goes; its (cleared) set becomes the current one
            self.dedup.swap(0, 1);
            self.dedup[0].clear();
            self.last_sweep = now;
        }
        if self.dedup[1].contains(&key) {
            return true;
        }
        !self.dedup[0].insert(key)
    }

    fn route(&mut self, m: &Arc<Message>) {
        let now = Instant::now();
        self.counters.routed.fetch_add(1, Relaxed);
        if self.duplicate(m, now) {
            self.counters.duplicates.fetch_add(1, Relaxed);
            if let Some(p) = self.peers.iter().find(|p| p.info.id == m.origin) {
                LinkCounters::inc(&p.info.counters.duplicates);
            }
            return;
        }
        if m.facts.is_mission {
            if let Some((tap, id)) = &self.tap {
                if m.origin != *id && tap.try_send(m.clone()).is_err() {
                    tracing::warn!(uid = %m.event.uid, "mission store is behind: a mission event was not recorded");
                }
            }
        }
        // Learn where contacts live from their position reports.
        if m.event.cot_type.starts_with("a-") {
            self.learn_contact(m, now);
            if !m.from_federate && m.facts.callsign.is_some() && (self.latest_sa.len() < MAX_CONTACTS || self.latest_sa.contains_key(&m.event.uid)) {
                self.latest_sa.insert(m.event.uid.clone(), m.clone());
            }
        }
        if m.event.cot_type == "t-x-d-d" {
            if let Some(gone) = crate::cot::fragment::find_attr(&m.event.detail.xml, "link", "uid") {
                self.latest_sa.remove(&gone);
            }
        }
        if m.facts.is_direct() {
            let mut targets: Vec<LinkId> = Vec::new();
            let mut unknown = false;
            // A contact learned on a link that cannot receive (a UDP listener) is unknown.
            let attached = |id: &LinkId| self.peers.iter().any(|p| p.info.id == *id);
            for cs in &m.facts.dest_callsigns {
                match self.by_callsign.get(cs).filter(|(id, _)| attached(id)) {
                    Some((id, _)) => targets.push(*id),
                    None => unknown = true,
                }
            }
            for uid in &m.facts.dest_uids {
                match self.by_uid.get(uid).filter(|(id, _)| attached(id)) {
                    Some((id, _)) => targets.push(*id),
                    None => unknown = true,
                }
            }
            if unknown {
                self.counters.direct_unknown.fetch_add(1, Relaxed);
            }
            for i in 0..self.peers.len() {
                let p = &self.peers[i];
                if targets.contains(&p.info.id) || (unknown && p.info.policy.upstream) {
                    self.deliver(i, m, now);
                }
            }
        } else {
            for i in 0..self.peers.len() {
                self.deliver(i, m, now);
            }
        }
    }

    fn learn_contact(&mut self, m: &Arc<Message>, now: Instant) {
        if now.duration_since(self.last_contact_sweep) > CONTACT_SWEEP {
            self.by_callsign.retain(|_, (_, t)| now.duration_since(*t) < CONTACT_TTL);
            self.by_uid.retain(|_, (_, t)| now.duration_since(*t) < CONTACT_TTL);
            self.latest_sa.retain(|_, m| now.duration_since(m.received) < CONTACT_TTL);
            self.last_contact_sweep = now;
        }
        if let Some(cs) = &m.facts.callsign {
            note_contact(&mut self.by_callsign, cs, m.origin, now);
        }
        note_contact(&mut self.by_uid, &m.event.uid, m.origin, now);
    }

    fn deliver(&mut self, i: usize, m: &Arc<Message>, now: Instant) {
        let p = &mut self.peers[i];
        if p.info.id == m.origin {
            return;
        }
        if !p.info.policy.allows_out(m) {
            LinkCounters::inc(&p.info.counters.filtered);
            return;
        }
        if !p.limiter.admit(&p.info.policy, m, now) {
            LinkCounters::inc(&p.info.counters.rate_limited);
            return;
        }
        match p.info.tx.try_send(m.clone()) {
            Ok(()) => {
                self.counters.deliveries.fetch_add(1, Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = p.info.counters.drops_queue_full.fetch_add(1, Relaxed);
                if p.info.overflow == Overflow::Disconnect {
                    if !p.info.close.is_cancelled() {
                        LinkCounters::inc(&p.info.counters.slow_consumers);
                        tracing::warn!(link = %p.info.link, remote = %p.info.remote, "queue full: disconnecting slow peer (overflow = disconnect)");
                    }
                    p.info.close.cancel();
                } else if n.is_power_of_two() {
                    tracing::warn!(link = %p.info.link, remote = %p.info.remote, dropped = n + 1, "queue full: dropping events for slow peer");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}
