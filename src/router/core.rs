//! The router. Links hand it messages; it decides who gets each one and `try_send`s an
//! `Arc<Message>` to each peer's bounded queue. It never waits on a peer: when a queue is
//! full the peer's overflow rule applies (drop and count, or disconnect).
//!
//! Loop and duplicate protection: never back to the origin, a short dedup window on
//! (uid, type, time), and `_flow-tags_` checked and stamped at ingest. Direct messages
//! (`marti/dest callsign|uid`) go only to the links where those contacts were last seen
//! (learned from their SA, or announced by a federate); contacts not seen yet go to
//! `upstream` links.
//!
//! [`Router`] is plain state driven with `now` passed in (unit-tested below); [`spawn`]
//! runs it as a task behind a [`RouterHandle`].

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handle::{Cmd, Data, RouterCounters, RouterHandle};
use super::message::{LinkId, Message};
use super::peer::{PeerInfo, PeerStats};
use super::policy::RateLimiter;
use crate::config::Overflow;
use crate::cot::{fragment, CotTime};
use crate::link::counters::LinkCounters;

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

/// Where contacts were last seen: (link, when). Aged out after CONTACT_TTL and capped at
/// MAX_CONTACTS, so a flood of unique uids cannot grow memory without bound.
#[derive(Default)]
struct Contacts(HashMap<String, (LinkId, Instant)>);

impl Contacts {
    fn note(&mut self, key: &str, link: LinkId, now: Instant) {
        if let Some(e) = self.0.get_mut(key) {
            *e = (link, now);
        } else if self.0.len() < MAX_CONTACTS {
            self.0.insert(key.to_owned(), (link, now));
        }
    }
    fn link(&self, key: &str) -> Option<LinkId> {
        self.0.get(key).map(|(l, _)| *l)
    }
    fn sweep(&mut self, now: Instant) {
        self.0.retain(|_, (_, t)| now.duration_since(*t) < CONTACT_TTL);
    }
    fn drop_link(&mut self, id: LinkId) {
        self.0.retain(|_, (l, _)| *l != id);
    }
}

/// Dedup keys in two generations: a key is remembered for at least the window (at most
/// two). Keys are keyed SipHash values already, so the sets do not hash them again, and
/// cleared sets keep their capacity (no allocation in steady state).
struct Dedup {
    sets: [HashSet<u64, BuildHasherDefault<PassThrough>>; 2],
    window: Duration,
    last_swap: Instant,
    hasher: RandomState,
}

impl Dedup {
    /// True when (uid, type, time) was seen within the window.
    fn seen(&mut self, m: &Message, now: Instant) -> bool {
        if self.window.is_zero() {
            return false;
        }
        let mut h = self.hasher.build_hasher();
        m.event.uid.hash(&mut h);
        m.event.cot_type.hash(&mut h);
        m.event.time.hash(&mut h);
        let key = h.finish();
        if now.duration_since(self.last_swap) >= self.window {
            // the older generation goes; its (cleared) set becomes the current one
            self.sets.swap(0, 1);
            self.sets[0].clear();
            self.last_swap = now;
        }
        self.sets[1].contains(&key) || !self.sets[0].insert(key)
    }
}

struct Peer {
    info: PeerInfo,
    limiter: RateLimiter,
}

/// The router state.
pub struct Router {
    peers: Vec<Peer>,
    by_callsign: Contacts,
    by_uid: Contacts,
    /// Latest position report per uid (same bounds as contacts).
    latest_sa: HashMap<String, Arc<Message>>,
    last_contact_sweep: Instant,
    dedup: Dedup,
    counters: Arc<RouterCounters>,
    /// Mission traffic is copied here (except what the tap itself routed).
    tap: Option<(mpsc::Sender<Arc<Message>>, LinkId)>,
}

/// Starts the router task (under `tracker`, until `cancel`) and returns its handle.
pub fn spawn(node_id: &str, dedup_window: Duration, cancel: &CancellationToken, tracker: &TaskTracker) -> RouterHandle {
    let (data, data_rx) = mpsc::channel(16 * 1024);
    let (tx, rx) = mpsc::unbounded_channel();
    let router = Router::new(dedup_window, Instant::now());
    let counters = router.counters.clone();
    tracker.spawn(router.run(rx, data_rx, cancel.clone()));
    RouterHandle { data, tx, next_id: Arc::new(AtomicU64::new(1)), node_id: node_id.into(), counters }
}

impl Router {
    pub fn new(dedup_window: Duration, now: Instant) -> Router {
        Router {
            peers: Vec::new(),
            by_callsign: Contacts::default(),
            by_uid: Contacts::default(),
            latest_sa: HashMap::new(),
            last_contact_sweep: now,
            dedup: Dedup { sets: Default::default(), window: dedup_window, last_swap: now, hasher: RandomState::new() },
            counters: Arc::default(),
            tap: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>, mut data: mpsc::Receiver<Data>, cancel: CancellationToken) {
        let mut batch = Vec::with_capacity(256);
        let mut cmds = Vec::with_capacity(16);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                n = rx.recv_many(&mut cmds, 64) => {
                    if n == 0 {
                        return;
                    }
                    let now = Instant::now();
                    cmds.drain(..).for_each(|c| self.handle(c, now));
                }
                n = data.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        return;
                    }
                    let now = Instant::now();
                    for d in batch.drain(..) {
                        match d {
                            Data::Route(m) => self.route(&m, now),
                            Data::RouteMany(v) => v.iter().for_each(|m| self.route(m, now)),
                        }
                    }
                }
            }
        }
    }

    fn handle(&mut self, cmd: Cmd, now: Instant) {
        match cmd {
            Cmd::Attach(p) => self.attach(p),
            Cmd::Detach(id) => {
                for m in self.detach(id) {
                    self.route(&m, now);
                }
            }
            Cmd::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Cmd::Snapshot(reply) => {
                let _ = reply.send(self.snapshot(CotTime::now()));
            }
            Cmd::Contact { uid, callsign, link } => self.learn(&uid, &callsign, link, now),
            Cmd::Forget { uid, link } => self.forget(&uid, link),
            Cmd::Tap(tx, id) => self.tap = Some((tx, id)),
        }
    }

    pub fn attach(&mut self, p: PeerInfo) {
        self.peers.push(Peer { info: p, limiter: RateLimiter::default() });
    }

    /// Removes peer `id`. A TAK client that disconnects has left: returns the `t-x-d-d` TAK
    /// Server sends for it (to route), so other clients and federates drop the contact.
    pub fn detach(&mut self, id: LinkId) -> Vec<Arc<Message>> {
        let client = self.peers.iter().any(|p| p.info.id == id && matches!(p.info.transport, "tcp" | "tls" | "quic"));
        self.peers.retain(|p| p.info.id != id);
        self.by_callsign.drop_link(id);
        self.by_uid.drop_link(id);
        let mut left = vec![];
        self.latest_sa.retain(|_, m| {
            if m.origin != id {
                return true;
            }
            if client {
                left.push(Arc::new(Message::new(crate::cot::control::departed(&m.event.uid, &m.event.cot_type, CotTime::now()), id)));
            }
            false
        });
        left
    }

    pub fn stats(&self) -> Vec<PeerStats> {
        self.peers.iter().map(|p| p.info.stats()).collect()
    }

    /// The latest position report of every contact that is not stale at `wall`.
    pub fn snapshot(&self, wall: CotTime) -> Vec<Arc<Message>> {
        self.latest_sa.values().filter(|m| m.event.stale > wall).cloned().collect()
    }

    /// A contact announced by peer `link`.
    pub fn learn(&mut self, uid: &str, callsign: &str, link: LinkId, now: Instant) {
        self.by_uid.note(uid, link, now);
        if !callsign.is_empty() {
            self.by_callsign.note(callsign, link, now);
        }
    }

    /// A contact that peer `link` said has left.
    pub fn forget(&mut self, uid: &str, link: LinkId) {
        if self.by_uid.link(uid) == Some(link) {
            self.by_uid.0.remove(uid);
        }
    }

    /// Routes one message.
    pub fn route(&mut self, m: &Arc<Message>, now: Instant) {
        self.counters.routed.fetch_add(1, Relaxed);
        if self.dedup.seen(m, now) {
            self.counters.duplicates.fetch_add(1, Relaxed);
            if let Some(p) = self.peers.iter().find(|p| p.info.id == m.origin) {
                LinkCounters::inc(&p.info.counters.duplicates);
            }
            return;
        }
        self.copy_to_tap(m);
        self.remember(m, now);
        if m.facts.is_direct() {
            self.route_direct(m, now);
        } else {
            for i in 0..self.peers.len() {
                self.deliver(i, m, now);
            }
        }
    }

    fn copy_to_tap(&self, m: &Arc<Message>) {
        if !m.facts.is_mission {
            return;
        }
        if let Some((tap, id)) = &self.tap {
            if m.origin != *id && tap.try_send(m.clone()).is_err() {
                tracing::warn!(uid = %m.event.uid, "mission store is behind: a mission event was not recorded");
            }
        }
    }

    /// Learns where contacts live from their position reports, and keeps the latest one.
    fn remember(&mut self, m: &Arc<Message>, now: Instant) {
        let t = m.event.cot_type.as_str();
        if t.starts_with("a-") {
            if now.duration_since(self.last_contact_sweep) > CONTACT_SWEEP {
                self.by_callsign.sweep(now);
                self.by_uid.sweep(now);
                self.latest_sa.retain(|_, m| now.duration_since(m.received) < CONTACT_TTL);
                self.last_contact_sweep = now;
            }
            if let Some(cs) = &m.facts.callsign {
                self.by_callsign.note(cs, m.origin, now);
            }
            if m.facts.client_sa && (self.latest_sa.len() < MAX_CONTACTS || self.latest_sa.contains_key(&m.event.uid)) {
                self.latest_sa.insert(m.event.uid.clone(), m.clone());
            }
            self.by_uid.note(&m.event.uid, m.origin, now);
        } else if t == "t-x-d-d" {
            if let Some(gone) = fragment::find_attr(&m.event.detail.xml, "link", "uid") {
                self.latest_sa.remove(&gone);
            }
        }
    }

    fn route_direct(&mut self, m: &Arc<Message>, now: Instant) {
        let mut targets: Vec<LinkId> = Vec::new();
        let mut unknown = false;
        // A contact learned on a link that cannot receive (a UDP listener) is unknown.
        let attached = |id: LinkId| self.peers.iter().any(|p| p.info.id == id);
        let found = m.facts.dest_callsigns.iter().map(|cs| self.by_callsign.link(cs)).chain(m.facts.dest_uids.iter().map(|u| self.by_uid.link(u)));
        for link in found {
            match link.filter(|id| attached(*id)) {
                Some(id) => targets.push(id),
                None => unknown = true,
            }
        }
        if unknown {
            self.counters.direct_unknown.fetch_add(1, Relaxed);
        }
        for i in 0..self.peers.len() {
            let p = &self.peers[i].info;
            if targets.contains(&p.id) || (unknown && p.policy.upstream) {
                self.deliver(i, m, now);
            }
        }
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
            Err(mpsc::error::TrySendError::Full(_)) => overflow(&p.info),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// A peer's queue is full: drop and count, or disconnect it.
fn overflow(p: &PeerInfo) {
    let n = LinkCounters::inc(&p.counters.drops_queue_full);
    if p.overflow == Overflow::Disconnect {
        if !p.close.is_cancelled() {
            LinkCounters::inc(&p.counters.slow_consumers);
            tracing::warn!(link = %p.link, remote = %p.remote, "queue full: disconnecting slow peer (overflow = disconnect)");
        }
        p.close.cancel();
    } else if n.is_power_of_two() {
        tracing::warn!(link = %p.link, remote = %p.remote, dropped = n + 1, "queue full: dropping events for slow peer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cot::CotEvent;
    use crate::link::peer::Codec;
    use crate::router::PeerPolicy;

    fn peer(id: LinkId, depth: usize, policy: PeerPolicy, overflow: Overflow) -> (PeerInfo, mpsc::Receiver<Arc<Message>>) {
        let (tx, rx) = mpsc::channel(depth);
        let mut p = PeerInfo::output(id, "l", "tcp", format!("peer{id}"), Codec::Xml, Arc::new(policy), tx, Arc::default(), &CancellationToken::new());
        p.overflow = overflow;
        (p, rx)
    }

    fn msg(uid: &str, t: &str, ms: i64, detail: &str, origin: LinkId) -> Arc<Message> {
        let mut e = CotEvent::new(uid, t, "m-g", CotTime(ms), 60);
        e.detail.xml = detail.into();
        Arc::new(Message::new(e, origin))
    }

    fn got(rx: &mut mpsc::Receiver<Arc<Message>>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok()).map(|m| m.event.uid.clone()).collect()
    }

    #[test]
    fn never_back_to_the_origin_and_duplicates_within_two_generations() {
        let t0 = Instant::now();
        let mut r = Router::new(Duration::from_secs(5), t0);
        let (a, mut ra) = peer(1, 16, PeerPolicy::open(), Overflow::Drop);
        let (b, mut rb) = peer(2, 16, PeerPolicy::open(), Overflow::Drop);
        r.attach(a);
        r.attach(b);
        r.route(&msg("u", "a-f-G", 1, "", 1), t0);
        assert_eq!((got(&mut ra), got(&mut rb)), (vec![], vec!["u".to_string()]));
        // the same (uid, type, time) again: within the window, and within the next one
        r.route(&msg("u", "a-f-G", 1, "", 2), t0 + Duration::from_secs(1));
        r.route(&msg("u", "a-f-G", 1, "", 2), t0 + Duration::from_secs(6));
        assert!(got(&mut ra).is_empty());
        // two windows later it is forgotten
        r.route(&msg("u", "a-f-G", 1, "", 2), t0 + Duration::from_secs(12));
        assert_eq!(got(&mut ra), ["u"]);
        assert_eq!(r.counters.duplicates.load(Relaxed), 2);
    }

    #[test]
    fn direct_messages_go_where_the_contact_was_seen_else_upstream() {
        let t0 = Instant::now();
        let mut r = Router::new(Duration::from_secs(5), t0);
        let (a, mut ra) = peer(1, 16, PeerPolicy::open(), Overflow::Drop);
        let (b, mut rb) = peer(2, 16, PeerPolicy::open(), Overflow::Drop);
        let mut up = PeerPolicy::open();
        up.upstream = true;
        let (c, mut rc) = peer(3, 16, up, Overflow::Drop);
        for p in [a, b, c] {
            r.attach(p);
        }
        r.route(&msg("BOB-1", "a-f-G", 1, r#"<contact callsign="BOB"/>"#, 2), t0);
        got(&mut ra);
        got(&mut rc);
        r.route(&msg("chat1", "b-t-f", 2, r#"<marti><dest callsign="BOB"/></marti>"#, 1), t0);
        assert_eq!((got(&mut ra), got(&mut rb), got(&mut rc)), (vec![], vec!["chat1".to_string()], vec![]));
        r.route(&msg("chat2", "b-t-f", 3, r#"<marti><dest uid="NOBODY"/></marti>"#, 1), t0);
        assert_eq!((got(&mut rb), got(&mut rc)), (vec![], vec!["chat2".to_string()]));
        // a federate's contact announcement counts too, and forgetting it ends that
        r.learn("FED-1", "CAROL", 1, t0);
        r.route(&msg("chat3", "b-t-f", 4, r#"<marti><dest callsign="CAROL"/></marti>"#, 2), t0);
        assert_eq!(got(&mut ra), ["chat3"]);
        r.forget("FED-1", 1);
        r.route(&msg("chat4", "b-t-f", 5, r#"<marti><dest uid="FED-1"/></marti>"#, 2), t0);
        assert_eq!((got(&mut ra), got(&mut rc)), (vec![], vec!["chat4".to_string()]));
    }

    #[test]
    fn a_full_queue_drops_or_disconnects_by_the_overflow_rule() {
        let t0 = Instant::now();
        let mut r = Router::new(Duration::ZERO, t0);
        let (drop, _rd) = peer(1, 1, PeerPolicy::open(), Overflow::Drop);
        let (disc, _rx) = peer(2, 1, PeerPolicy::open(), Overflow::Disconnect);
        let (drop_c, disc_c, close) = (drop.counters.clone(), disc.counters.clone(), disc.close.clone());
        r.attach(drop);
        r.attach(disc);
        for i in 0..3 {
            r.route(&msg(&format!("u{i}"), "a-f-G", i, "", 9), t0);
        }
        assert_eq!(drop_c.snapshot().drops_queue_full, 2);
        assert_eq!((disc_c.snapshot().drops_queue_full, disc_c.snapshot().slow_consumers), (2, 1));
        assert!(close.is_cancelled());
    }

    #[test]
    fn the_snapshot_holds_the_latest_report_of_live_contacts_only() {
        let t0 = Instant::now();
        let mut r = Router::new(Duration::ZERO, t0);
        let now = CotTime::now().0;
        r.route(&msg("A", "a-f-G", now - 1000, r#"<contact endpoint="*:-1:stcp" callsign="A"/>"#, 1), t0);
        r.route(&msg("A", "a-f-G", now, r#"<contact endpoint="*:-1:stcp" callsign="A"/>"#, 1), t0);
        r.route(&msg("OLD", "a-f-G", now - 120_000, r#"<contact endpoint="*:-1:stcp" callsign="OLD"/>"#, 1), t0);
        r.route(&msg("B", "a-f-G", now, r#"<contact endpoint="*:-1:stcp" callsign="B"/>"#, 1), t0);
        r.route(&msg("B-gone", "t-x-d-d", now, r#"<link uid="B" relation="p-p" type="a-f-G"/>"#, 1), t0);
        r.route(&msg("MARKER", "a-h-G", now, r#"<contact callsign="Bad Guy"/>"#, 1), t0);
        let snap = r.snapshot(CotTime(now));
        assert_eq!(snap.iter().map(|m| (m.event.uid.as_str(), m.event.time.0)).collect::<Vec<_>>(), [("A", now)]);
    }
}
