//! takgate as a TAK Federation Hub (`[hub]`): TAK Servers and takgates federate through it
//! over federation v2 (gRPC, default port 9102) and what passes between them is decided by a
//! policy graph in TAK's own file format (../shared/specs/tak-fedhub.md). The hub never
//! terminates CoT: it forwards `FederatedEvent`, `FederateGroups` and `ROL` messages as they
//! came, rewriting their group lists along the edge they take, stamping its provenance and
//! counting hops; it drops whatever already carries its provenance.
//!
//! * [`policy`]: the policy file (both shapes TAK's UI writes), validation with the node or
//!   edge at fault, and the one-hop routing rule;
//! * [`identity`]: CA group ids and federate ids, exactly as TAK's hub computes them;
//! * [`server`]: the v2 service of one federate session;
//! * this file: the hub's state (sessions, their streams, contacts, advertised groups),
//!   routing between sessions, the policy reloaded when its file changes.

pub mod identity;
mod outgoing;
pub mod policy;
mod server;
mod v1;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::{Acquire, Relaxed, Release}};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HubConfig;
use crate::federation::fig::{BinaryBlob, Crud, FederateGroups, FederateHops, FederateProvenance, FederatedEvent, Rol};
use crate::link::{LinkCounters, StartError};
use crate::sync::lock;
use policy::{Member, Policy};
use prost::Message as _;

/// A federate's streams toward it, once it opened them.
#[derive(Default)]
struct Streams {
    events: Option<mpsc::Sender<FederatedEvent>>,
    rol: Option<mpsc::Sender<Rol>>,
    groups: Option<mpsc::Sender<FederateGroups>>,
    /// Outgoing connections only: v2 carries blobs from client to server alone.
    blobs: Option<mpsc::Sender<BinaryBlob>>,
}

/// Counters of one federate session.
#[derive(Debug, Default, Serialize)]
pub struct SessionCounters {
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    pub rol_in: AtomicU64,
    pub rol_out: AtomicU64,
    /// Not sent to this federate: its queue was full.
    pub dropped: AtomicU64,
    /// Contacts it announced past `max_contacts_per_federate`: forwarded, not kept.
    pub contacts_not_kept: AtomicU64,
}

/// One federate connected to the hub.
pub struct Session {
    pub serial: u64,
    pub remote: String,
    /// Federate id (name-fingerprint-serverId), known from its first Subscription.
    fed_id: Mutex<String>,
    name: Mutex<String>,
    /// The leaf fingerprint, TAK's way (lower-case hex).
    fingerprint: String,
    ca_groups: Vec<String>,
    /// A connection the hub made (an outgoing node of the policy), not a federate's.
    outgoing: bool,
    streams: Mutex<Streams>,
    /// Its contacts (CREATE contact events), offered to federates that connect later.
    contacts: Mutex<HashMap<String, FederatedEvent>>,
    /// The latest event of each of its contacts (their position), offered with them.
    latest: Mutex<HashMap<String, FederatedEvent>>,
    /// The groups it advertised (ClientFederateGroupsStream).
    advertised: Mutex<Vec<String>>,
    /// ROL it sent before it opened its ClientROLStream (routed once it does, as TAK's hub).
    rol_waiting: Mutex<Vec<Rol>>,
    pub connected: SystemTime,
    last_health: Mutex<Instant>,
    pub counters: SessionCounters,
    pub cancel: CancellationToken,
}

impl Session {
    /// A new session; `fed_id` empty until the federate names itself (v2).
    #[allow(clippy::too_many_arguments)]
    fn new(serial: u64, remote: String, fed_id: String, name: String, fingerprint: String, ca_groups: Vec<String>, outgoing: bool, cancel: CancellationToken) -> Arc<Session> {
        Arc::new(Session {
            serial,
            remote,
            fed_id: Mutex::new(fed_id),
            name: Mutex::new(name),
            fingerprint,
            ca_groups,
            outgoing,
            streams: Mutex::default(),
            contacts: Mutex::default(),
            latest: Mutex::default(),
            advertised: Mutex::default(),
            rol_waiting: Mutex::default(),
            connected: SystemTime::now(),
            last_health: Mutex::new(Instant::now()),
            counters: Default::default(),
            cancel,
        })
    }

    fn member(&self, p: &Policy) -> Member {
        let id = lock(&self.fed_id).clone();
        let ca: &[String] = if p.use_ca_groups { &self.ca_groups } else { &[] };
        let groups = if self.outgoing { p.membership("", ca) } else { p.membership(&id, ca) };
        Member { groups, id, outgoing: self.outgoing }
    }
    fn identified(&self) -> bool {
        !lock(&self.fed_id).is_empty()
    }
}

/// The hub's state, shared by its sessions and the admin API.
pub struct Hub {
    /// Our provenance id (the node id).
    pub id: String,
    pub address: std::net::SocketAddr,
    /// The v1 port, when there is one.
    pub v1_address: Option<std::net::SocketAddr>,
    policy_path: PathBuf,
    policy: RwLock<Arc<Policy>>,
    /// The last policy file that did not validate, and why (the previous policy stays).
    policy_error: Mutex<Option<String>>,
    sessions: Mutex<Vec<Arc<Session>>>,
    /// Bumped after every change to the sessions or to an identity (join, leave, named).
    generation: AtomicU64,
    /// The identified sessions with their membership under a policy, for the generation it
    /// was computed in: routing reads it instead of recomputing it per message.
    graph_cache: Mutex<Option<GraphCache>>,
    serial: AtomicU64,
    pub max_hops: i64,
    /// Federates belong to the groups named by their CA certificates (TAK: useCaGroups).
    pub use_ca_groups: bool,
    pub health_timeout: Duration,
    pub queue_depth: usize,
    pub counters: Arc<LinkCounters>,
    /// Our certificate (DER), for `Getx509Identity`.
    own_cert: Vec<u8>,
    /// Where routed ROL is kept for federates that are away.
    store: Arc<crate::store::Store>,
    pub replay: Duration,
    pub replay_max_file_bytes: usize,
    /// Contacts kept per federate (offered to federates that connect later).
    pub max_contacts: usize,
    /// Storing and routing a ROL, and opening a ClientROLStream (replay up to the newest
    /// stored id, live after it), happen one at a time: nothing twice, nothing missed.
    rol_order: Mutex<()>,
    /// Outgoing connections running, by name, and why each last ended.
    outgoing_tasks: Mutex<HashMap<String, CancellationToken>>,
    /// Each outgoing connection's state, as outgoing federation links keep theirs.
    outgoing_status: Mutex<HashMap<String, Arc<crate::link::ConnStatus>>>,
    tls_client: Arc<rustls::ClientConfig>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// Itself, weakly (policy reloads start outgoing connections).
    me: Mutex<std::sync::Weak<Hub>>,
}

/// The longest an event waits for room at its destinations before it is dropped.
const HOLD_MAX: Duration = Duration::from_millis(500);

/// An event none of whose destinations had room (see `Hub::route_event`).
#[derive(Default)]
pub(crate) struct Held(Vec<(mpsc::Sender<FederatedEvent>, Arc<Session>, FederatedEvent)>);

impl Held {
    /// Waits (up to `HOLD_MAX`) until one destination has room, then sends to every one that
    /// has room; the rest are dropped and counted.
    pub(crate) async fn deliver(self, hub: &Hub) {
        if self.0.is_empty() {
            return;
        }
        let room = futures_util::future::select_all(self.0.iter().map(|(tx, _, _)| Box::pin(tx.reserve())));
        let _ = tokio::time::timeout(HOLD_MAX, room).await;
        for (tx, s, fe) in self.0 {
            match tx.try_send(fe) {
                Ok(()) => hub.sent(&s),
                Err(_) => hub.dropped(&s),
            }
        }
    }

    /// Where the caller cannot wait: dropped and counted.
    pub(crate) fn drop_now(self, hub: &Hub) {
        for (_, s, _) in self.0 {
            hub.dropped(&s);
        }
    }
}

/// Members of the graph as of one generation of sessions and one policy.
struct GraphCache {
    policy: Arc<Policy>,
    generation: u64,
    members: Members,
}

/// Identified sessions and their membership.
type Members = Arc<[(Arc<Session>, Member)]>;

/// A federate's state for the admin API.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub federate_id: String,
    pub name: String,
    pub remote: String,
    pub fingerprint: String,
    pub ca_groups: Vec<String>,
    pub groups: Vec<String>,
    pub advertised: Vec<String>,
    /// The groups the hub offers it (what those it receives from advertised, per edge).
    pub offered: Vec<String>,
    pub contacts: usize,
    pub streams: Vec<&'static str>,
    /// A connection the hub made (an outgoing node).
    pub outgoing: bool,
    pub connected_secs: u64,
    pub counters: SessionCounters,
    /// Federate ids this one's traffic may reach now.
    pub reaches: Vec<String>,
}

fn copy(c: &SessionCounters) -> SessionCounters {
    let g = |a: &AtomicU64| AtomicU64::new(a.load(Relaxed));
    SessionCounters { events_in: g(&c.events_in), events_out: g(&c.events_out), rol_in: g(&c.rol_in), rol_out: g(&c.rol_out), dropped: g(&c.dropped), contacts_not_kept: g(&c.contacts_not_kept) }
}

impl Hub {
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn policy_error(&self) -> Option<String> {
        lock(&self.policy_error).clone()
    }

    /// Reads the policy file again; a file that does not validate keeps the policy in force
    /// (and says why). Sessions the new policy no longer admits are closed; the others stay.
    pub fn reload(&self) -> Result<(), String> {
        let text = std::fs::read_to_string(&self.policy_path).map_err(|e| format!("{}: {e}", self.policy_path.display()))?;
        let p = match Policy::parse(&text) {
            Ok(mut p) => {
                p.use_ca_groups = self.use_ca_groups;
                p
            }
            Err(e) => {
                let e = format!("{}: {e}", self.policy_path.display());
                tracing::error!("hub policy not loaded, the previous one stays in force: {e}");
                *lock(&self.policy_error) = Some(e.clone());
                return Err(e);
            }
        };
        *lock(&self.policy_error) = None;
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p.clone());
        for s in self.sessions() {
            let id = lock(&s.fed_id).clone();
            if s.identified() && !p.admits(&id, &p.membership(&id, &s.ca_groups)) {
                tracing::warn!(federate = %id, "the new hub policy no longer admits this federate: closing its session");
                s.cancel.cancel();
            }
        }
        tracing::info!(policy = %p.name, groups = p.groups.len(), federates = p.federates.len(), edges = p.edges.len(), "hub policy loaded");
        self.reconcile_outgoing(self.self_arc());
        for s in self.sessions() {
            self.push_groups(&s);
        }
        Ok(())
    }

    /// This hub as an `Arc` (for tasks it starts).
    fn self_arc(&self) -> Option<Arc<Hub>> {
        lock(&self.me).upgrade()
    }

    /// Starts the outgoing connections the policy has and stops those it no longer has.
    fn reconcile_outgoing(&self, me: Option<Arc<Hub>>) {
        let Some(me) = me else { return };
        let want: Vec<_> = self.policy().outgoings.iter().filter(|o| o.enabled).cloned().collect();
        let mut running = lock(&self.outgoing_tasks);
        running.retain(|name, token| {
            let keep = want.iter().any(|o| &o.name == name);
            if !keep {
                tracing::info!(outgoing = %name, "the hub policy no longer has this outgoing connection: closing it");
                token.cancel();
            }
            if !keep {
                lock(&self.outgoing_status).remove(name);
            }
            keep
        });
        for o in want {
            if running.contains_key(&o.name) {
                continue;
            }
            let token = self.cancel.child_token();
            running.insert(o.name.clone(), token.clone());
            tracing::info!(outgoing = %o.name, host = %o.host, port = o.port, "hub outgoing connection");
            self.tracker.spawn(outgoing::run(me.clone(), o, self.tls_client.clone(), token));
        }
    }

    /// Each outgoing connection's state: connected or not, connects, last error.
    pub fn outgoing_status(&self) -> HashMap<String, crate::link::ConnState> {
        lock(&self.outgoing_status).iter().map(|(k, v)| (k.clone(), v.get())).collect()
    }

    fn status_of(&self, name: &str) -> Arc<crate::link::ConnStatus> {
        lock(&self.outgoing_status).entry(name.to_owned()).or_default().clone()
    }

    fn sessions(&self) -> Vec<Arc<Session>> {
        lock(&self.sessions).clone()
    }

    /// A session starts.
    fn join(&self, s: Arc<Session>) {
        lock(&self.sessions).push(s);
        self.changed();
    }

    /// A session ends.
    fn part(&self, serial: u64) {
        lock(&self.sessions).retain(|x| x.serial != serial);
        self.changed();
    }

    /// The sessions or an identity changed: the graph is computed again when next needed.
    fn changed(&self) {
        self.generation.fetch_add(1, Release);
    }

    /// Identified sessions with their policy membership (computed once per generation of
    /// sessions and policy).
    fn members(&self, p: &Arc<Policy>) -> Members {
        let generation = self.generation.load(Acquire);
        if let Some(c) = lock(&self.graph_cache).as_ref() {
            if c.generation == generation && Arc::ptr_eq(&c.policy, p) {
                return c.members.clone();
            }
        }
        let members: Members = self.sessions().into_iter().filter(|s| s.identified()).map(|s| {
            let m = s.member(p);
            (s, m)
        }).collect();
        let mut cache = lock(&self.graph_cache);
        // A change since `generation` was read may be missing here: then this is not kept.
        if self.generation.load(Acquire) == generation {
            *cache = Some(GraphCache { policy: p.clone(), generation, members: members.clone() });
        }
        members
    }

    /// The identified sessions with their membership, and `who`'s own (None: not identified).
    fn graph(&self, p: &Arc<Policy>, who: &Session) -> (Members, Option<Member>) {
        let members = self.members(p);
        let me = members.iter().find(|(s, _)| s.serial == who.serial).map(|(_, m)| m.clone());
        (members, me)
    }

    /// The sessions `src` reaches with `groups`, each with the groups it gets.
    fn destinations<'m>(p: &Policy, members: &'m Members, src: &Member, groups: &[String]) -> Vec<(&'m Arc<Session>, Vec<String>)> {
        p.reach(src, groups, members.iter().map(|(_, m)| m))
            .into_iter()
            .filter_map(|(dst, g)| members.iter().find(|(_, m)| std::ptr::eq(m, dst)).map(|(s, _)| (s, g)))
            .collect()
    }

    /// Our provenance and the hop count on what leaves the hub; false when over the limit.
    fn stamp(&self, prov: &mut Vec<FederateProvenance>, hops: &mut Option<FederateHops>) -> bool {
        stamp(&self.id, self.max_hops, prov, hops)
    }

    fn seen(&self, prov: &[FederateProvenance]) -> bool {
        prov.iter().any(|p| p.federation_server_id == self.id)
    }

    /// Routes an event from `from` to every federate the policy lets it reach. When none of
    /// them has room, the event comes back held: the caller waits for room before it reads
    /// `from` again (`Held::deliver`), so the federate's stream is slowed instead of its
    /// events read and dropped; with one destination that has room, the others drop.
    #[must_use = "a held event is delivered with Held::deliver, or dropped with it"]
    fn route_event(&self, from: &Session, fe: FederatedEvent) -> Held {
        from.counters.events_in.fetch_add(1, Relaxed);
        LinkCounters::inc(&self.counters.events_in);
        if self.seen(&fe.federate_provenance) {
            LinkCounters::inc(&self.counters.loops);
            return Held::default();
        }
        if let Some(c) = &fe.contact {
            let mut contacts = lock(&from.contacts);
            if c.operation == Crud::Delete as i32 {
                contacts.remove(&c.uid);
                lock(&from.latest).remove(&c.uid);
            } else if contacts.len() < self.max_contacts || contacts.contains_key(&c.uid) {
                contacts.insert(c.uid.clone(), fe.clone());
            } else if from.counters.contacts_not_kept.fetch_add(1, Relaxed) == 0 {
                tracing::warn!(federate = %lock(&from.fed_id), kept = contacts.len(), "this federate announces more contacts than the hub keeps (hub.max_contacts_per_federate): the rest are forwarded live but not offered to federates that connect later");
            }
        } else if let Some(ev) = &fe.event {
            if lock(&from.contacts).contains_key(&ev.uid) {
                lock(&from.latest).insert(ev.uid.clone(), fe.clone());
            }
        }
        let p = self.policy();
        let members = self.members(&p);
        let Some((_, src)) = members.iter().find(|(s, _)| s.serial == from.serial) else {
            // TAK's hub drops events from a session it has not identified yet.
            LinkCounters::inc(&self.counters.filtered);
            return Held::default();
        };
        let dests = Self::destinations(&p, &members, src, &fe.federate_groups);
        let last = dests.len().saturating_sub(1);
        let mut fe = Some(fe);
        let (mut full, mut sent) = (vec![], false);
        for (i, (s, groups)) in dests.into_iter().enumerate() {
            // The last destination gets the event itself, the others a copy.
            let Some(mut out) = (if i == last { fe.take() } else { fe.clone() }) else { break };
            out.federate_groups = groups;
            if !self.stamp(&mut out.federate_provenance, &mut out.federate_hops) {
                LinkCounters::inc(&self.counters.filtered);
                continue;
            }
            let Some(tx) = lock(&s.streams).events.clone() else {
                self.dropped(s);
                continue;
            };
            match tx.try_send(out) {
                Ok(()) => {
                    self.sent(s);
                    sent = true;
                }
                Err(mpsc::error::TrySendError::Full(out)) => full.push((tx, s.clone(), out)),
                Err(mpsc::error::TrySendError::Closed(_)) => self.dropped(s),
            }
        }
        if sent {
            for (_, s, _) in &full {
                self.dropped(s);
            }
            full.clear();
        }
        Held(full)
    }

    fn sent(&self, to: &Session) {
        to.counters.events_out.fetch_add(1, Relaxed);
        LinkCounters::inc(&self.counters.events_out);
    }

    fn dropped(&self, to: &Session) {
        to.counters.dropped.fetch_add(1, Relaxed);
        LinkCounters::inc(&self.counters.drops_queue_full);
    }

    /// Routes a ROL from `from` (held until `from` has its own ClientROLStream, as TAK's hub).
    fn route_rol(&self, from: &Session, rol: Rol) {
        from.counters.rol_in.fetch_add(1, Relaxed);
        if self.seen(&rol.federate_provenance) {
            LinkCounters::inc(&self.counters.loops);
            return;
        }
        if lock(&from.streams).rol.is_none() {
            lock(&from.rol_waiting).push(rol);
            return;
        }
        let _order = lock(&self.rol_order);
        let p = self.policy();
        let (members, src) = self.graph(&p, from);
        let Some(src) = src else { return };
        if !self.replay.is_zero() {
            if let Err(e) = self.store.hub_store_rol(&src.id, &src.groups, crate::store::now_ms(), &self.kept(&rol).encode_to_vec()) {
                tracing::warn!("hub: ROL not kept for replay: {e}");
            }
        }
        for (s, groups) in Self::destinations(&p, &members, &src, &rol.federate_groups) {
            let mut out = rol.clone();
            out.federate_groups = groups;
            if !self.stamp(&mut out.federate_provenance, &mut out.federate_hops) {
                continue;
            }
            let tx = lock(&s.streams).rol.clone();
            match tx.map(|t| t.try_send(out).is_ok()) {
                Some(true) => {
                    s.counters.rol_out.fetch_add(1, Relaxed);
                }
                _ => {
                    s.counters.dropped.fetch_add(1, Relaxed);
                    LinkCounters::inc(&self.counters.drops_queue_full);
                }
            }
        }
    }

    /// Routes a binary blob from `from` to the outgoing connections the policy lets it reach
    /// (a blob has no groups: all-groups edges only). TAK's hub drops every blob; federation
    /// v2 has no stream toward a federate that carries one, so spokes cannot get them.
    fn route_blob(&self, from: &Session, mut blob: BinaryBlob) {
        if self.seen(&blob.federate_provenance) {
            LinkCounters::inc(&self.counters.loops);
            return;
        }
        let p = self.policy();
        let (members, src) = self.graph(&p, from);
        let Some(src) = src else { return };
        let mut sent = false;
        if self.stamp(&mut blob.federate_provenance, &mut blob.federate_hops) {
            for (s, _) in Self::destinations(&p, &members, &src, &[]) {
                if let Some(tx) = lock(&s.streams).blobs.clone() {
                    sent |= tx.try_send(blob.clone()).is_ok();
                }
            }
        }
        if !sent {
            LinkCounters::inc(&self.counters.filtered);
        }
    }

    /// A ROL as kept for replay: payloads over the size limit without their bytes.
    fn kept(&self, rol: &Rol) -> Rol {
        let mut r = rol.clone();
        for b in &mut r.payload {
            if b.data.len() > self.replay_max_file_bytes {
                b.data.clear();
            }
        }
        r
    }

    /// Opens `to`'s ROL stream: what it missed since it was last here (within the replay
    /// window) from the federates that reach it now, then everything live. Unlike TAK's
    /// hub, the stream stays open after the replay.
    fn open_rol(&self, to: &Session, tx: mpsc::Sender<Rol>) -> Vec<Rol> {
        let _order = lock(&self.rol_order);
        lock(&to.streams).rol = Some(tx);
        if self.replay.is_zero() {
            return vec![];
        }
        let p = self.policy();
        let dst = to.member(&p);
        let now = crate::store::now_ms();
        let window = now - self.replay.as_millis() as i64;
        let since = self.store.hub_seen(&dst.id).ok().flatten().unwrap_or(window).max(window);
        let max_id = self.store.hub_last_rol().unwrap_or(0);
        let stored = match self.store.hub_rols(since, max_id) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("hub: no replay for {}: {e}", dst.id);
                return vec![];
            }
        };
        let mut out = vec![];
        for r in stored.into_iter().filter(|r| r.source != dst.id) {
            let Ok(mut rol) = Rol::decode(r.rol.as_slice()) else { continue };
            let src = Member { id: r.source, groups: r.groups, outgoing: false };
            let Some((_, groups)) = p.reach(&src, &rol.federate_groups, [&dst]).into_iter().next() else { continue };
            rol.federate_groups = groups;
            if self.stamp(&mut rol.federate_provenance, &mut rol.federate_hops) {
                out.push(rol);
            }
        }
        if !out.is_empty() {
            tracing::info!(federate = %dst.id, count = out.len(), since_ms = since, "hub: replaying the ROL this federate missed");
        }
        to.counters.rol_out.fetch_add(out.len() as u64, Relaxed);
        out
    }

    /// A federate leaves: when, for its next replay.
    fn left(&self, s: &Session) {
        let id = lock(&s.fed_id).clone();
        if !id.is_empty() {
            let _ = self.store.hub_set_seen(&id, crate::store::now_ms());
        }
    }

    /// The groups the hub offers `to`: what every federate it receives from advertised, cut
    /// to what the edge between them lets through.
    fn groups_for(&self, to: &Session) -> Vec<String> {
        let p = self.policy();
        let (members, dst) = self.graph(&p, to);
        let Some(dst) = dst else { return vec![] };
        let mut out: Vec<String> = vec![];
        for (s, m) in members.iter() {
            if !p.reaches_at_all(m, &dst) {
                continue;
            }
            let adv = lock(&s.advertised).clone();
            let kept = match p.edge_filter(m, &dst) {
                Some(f) => f.pass(&adv).unwrap_or_default(),
                None => adv,
            };
            out.extend(kept);
        }
        out.sort();
        out.dedup();
        out
    }

    /// Sends `to` its current group list on its ServerFederateGroupsStream.
    fn push_groups(&self, to: &Session) {
        let g = self.groups_for(to);
        if g.is_empty() {
            return;
        }
        if let Some(tx) = lock(&to.streams).groups.clone() {
            let _ = tx.try_send(FederateGroups { federate_groups: g, ..Default::default() });
        }
    }

    /// The contacts of every federate that reaches `to`, and their latest positions, as they
    /// may reach it.
    fn contacts_for(&self, to: &Session) -> Vec<FederatedEvent> {
        let p = self.policy();
        let (members, dst) = self.graph(&p, to);
        let Some(dst) = dst else { return vec![] };
        let mut out = vec![];
        for (s, m) in members.iter() {
            if s.serial == to.serial {
                continue;
            }
            let mut offered: Vec<FederatedEvent> = lock(&s.contacts).values().cloned().collect();
            offered.extend(lock(&s.latest).values().cloned());
            for fe in &offered {
                if let Some((_, groups)) = p.reach(m, &fe.federate_groups, [&dst]).into_iter().next() {
                    let mut c = fe.clone();
                    c.federate_groups = groups;
                    if self.stamp(&mut c.federate_provenance, &mut c.federate_hops) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    /// The federates, their state and where their traffic may go (admin API).
    pub fn view(&self) -> Vec<SessionView> {
        let p = self.policy();
        let members = self.members(&p);
        self.sessions()
            .into_iter()
            .map(|s| {
                let m = s.member(&p);
                let st = lock(&s.streams);
                let streams = [("events", st.events.is_some()), ("rol", st.rol.is_some()), ("groups", st.groups.is_some())].into_iter().filter(|(_, on)| *on).map(|(n, _)| n).collect();
                drop(st);
                let reaches = members.iter().filter(|(o, om)| o.serial != s.serial && p.reaches_at_all(&m, om)).map(|(_, om)| om.id.clone()).collect();
                SessionView {
                    federate_id: m.id.clone(),
                    name: lock(&s.name).clone(),
                    remote: s.remote.clone(),
                    fingerprint: s.fingerprint.clone(),
                    ca_groups: s.ca_groups.clone(),
                    groups: m.groups.clone(),
                    advertised: lock(&s.advertised).clone(),
                    offered: self.groups_for(&s),
                    contacts: lock(&s.contacts).len(),
                    streams,
                    outgoing: s.outgoing,
                    connected_secs: s.connected.elapsed().map(|d| d.as_secs()).unwrap_or(0),
                    counters: copy(&s.counters),
                    reaches,
                }
            })
            .collect()
    }
}

/// Adds the hub's provenance and counts the hop. Two limits hold: the message's own
/// (`max_hops` of its FederateHops, -1: none) and the hub's, on the hubs it has crossed
/// (`hub_max`, default 2: a spoke, two hubs, a spoke; the sender's own hop not counted).
/// False when the message has gone too far.
fn stamp(id: &str, hub_max: i64, prov: &mut Vec<FederateProvenance>, hops: &mut Option<FederateHops>) -> bool {
    prov.push(FederateProvenance { federation_server_id: id.to_owned(), federation_server_name: id.to_owned() });
    let (current, max, hubs) = match hops {
        Some(h) => (h.current_hops + 1, h.max_hops, h.current_hops),
        None => (1, -1, 1),
    };
    *hops = Some(FederateHops { current_hops: current, max_hops: max });
    (max < 0 || current <= max) && (hub_max < 0 || hubs <= hub_max)
}

/// Starts the hub: its v2 listener and the watcher that reloads the policy file.
pub async fn start(cfg: &HubConfig, node_id: &str, store: Arc<crate::store::Store>, cancel: CancellationToken, tracker: &TaskTracker) -> Result<Arc<Hub>, StartError> {
    let err = |e: String| StartError::new("hub", e);
    let text = std::fs::read_to_string(&cfg.policy).map_err(|e| err(format!("policy {}: {e}", cfg.policy.display())))?;
    let mut policy = Policy::parse(&text).map_err(|e| err(format!("policy {}: {e}", cfg.policy.display())))?;
    policy.use_ca_groups = cfg.use_ca_groups;
    let files = crate::config::link::TlsFiles { ca: Some(cfg.ca.clone()), cert: Some(cfg.cert.clone()), key: Some(cfg.key.clone()), crl: cfg.crl.clone(), handshake_timeout_secs: None };
    let tls = crate::link::tls::server_for_required(&files, true, &[b"h2"]).map_err(|e| err(e.to_string()))?;
    let own_cert = crate::link::tls::load_certs(&cfg.cert).map_err(|e| err(e.to_string()))?.first().map(|c| c.to_vec()).unwrap_or_default();
    let tls_client = Arc::new(crate::link::tls::client_for(&files, &[b"h2"]).map_err(|e| err(e.to_string()))?);
    let address: std::net::SocketAddr = cfg.address.parse().map_err(|_| err(format!("address {:?} is not IP:port", cfg.address)))?;
    let counters = Arc::new(LinkCounters::default());
    let listener = crate::link::listen::bind(address, crate::link::listen::DEFAULT_BACKLOG, "hub").map_err(|e| err(format!("cannot listen on {address}: {e}")))?;
    let local = listener.local_addr().map_err(|e| err(e.to_string()))?;
    let v1 = match cfg.v1_address.as_str() {
        "" => None,
        a => {
            let a: std::net::SocketAddr = a.parse().map_err(|_| err(format!("v1_address {a:?} is not IP:port")))?;
            let l = crate::link::listen::bind(a, crate::link::listen::DEFAULT_BACKLOG, "hub-v1").map_err(|e| err(format!("cannot listen on {a} (v1): {e}")))?;
            let local = l.local_addr().map_err(|e| err(e.to_string()))?;
            let tls = crate::link::tls::server_for_required(&files, true, &[]).map_err(|e| err(e.to_string()))?;
            Some((l, local, tls))
        }
    };
    tracing::info!(address = %local, policy = %policy.name, groups = policy.groups.len(), edges = policy.edges.len(), "federation hub listening (v2)");
    let hub = Arc::new(Hub {
        id: node_id.to_owned(),
        address: local,
        v1_address: v1.as_ref().map(|v| v.1),
        policy_path: cfg.policy.clone(),
        policy: RwLock::new(Arc::new(policy)),
        policy_error: Mutex::default(),
        sessions: Mutex::default(),
        generation: AtomicU64::new(0),
        graph_cache: Mutex::default(),
        serial: AtomicU64::new(1),
        max_hops: cfg.max_hops,
        use_ca_groups: cfg.use_ca_groups,
        health_timeout: Duration::from_secs_f64(cfg.health_timeout_secs.unwrap_or(15.0)),
        queue_depth: cfg.queue_depth.unwrap_or(16_384).max(1),
        counters: counters.clone(),
        own_cert,
        store,
        replay: Duration::from_secs_f64(cfg.replay_hours * 3600.0),
        replay_max_file_bytes: cfg.replay_max_file_bytes,
        max_contacts: cfg.max_contacts_per_federate,
        rol_order: Mutex::default(),
        outgoing_tasks: Mutex::default(),
        outgoing_status: Mutex::default(),
        tls_client,
        tracker: tracker.clone(),
        cancel: cancel.clone(),
        me: Mutex::default(),
    });
    *lock(&hub.me) = Arc::downgrade(&hub);
    hub.reconcile_outgoing(Some(hub.clone()));
    let limits = Arc::new(crate::link::listen::Limits::new(Some(crate::link::listen::default_max_connections().0), None, None, Some(128)));
    let accept = crate::link::listen::Accept::Tls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)), handshake_timeout: Duration::from_secs(10) };
    let l = crate::link::listen::Listener { link: "hub".into(), counters, limits, accept };
    let handler: Arc<dyn crate::link::listen::Handler> = Arc::new(server::HubHandler(hub.clone()));
    tracker.spawn(crate::link::listen::serve(listener, l, handler, cancel.clone(), tracker.clone()));
    if let Some((listener, local, tls)) = v1 {
        tracing::info!(address = %local, "federation hub listening (v1)");
        let limits = Arc::new(crate::link::listen::Limits::new(Some(crate::link::listen::default_max_connections().0), None, None, Some(128)));
        let accept = crate::link::listen::Accept::Tls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)), handshake_timeout: Duration::from_secs(10) };
        let l = crate::link::listen::Listener { link: "hub-v1".into(), counters: hub.counters.clone(), limits, accept };
        let handler: Arc<dyn crate::link::listen::Handler> = Arc::new(v1::V1Handler(hub.clone()));
        tracker.spawn(crate::link::listen::serve(listener, l, handler, cancel.clone(), tracker.clone()));
    }
    tracker.spawn(watch_policy(hub.clone(), cancel));
    Ok(hub)
}

/// Reloads the policy when its file changes (checked every second), and drops kept ROL
/// older than the replay window (every minute).
async fn watch_policy(hub: Arc<Hub>, cancel: CancellationToken) {
    let stamp = |p: &PathBuf| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
    let mut last = stamp(&hub.policy_path);
    let mut tick = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        tick += 1;
        if tick % 60 == 0 && !hub.replay.is_zero() {
            let _ = hub.store.hub_prune(crate::store::now_ms() - hub.replay.as_millis() as i64);
        }
        let now = stamp(&hub.policy_path);
        if now != last {
            last = now;
            let _ = hub.reload();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_count_against_the_message_limit_and_the_hub_limit() {
        // A spoke stamps its own hop (1); each hub adds one.
        let (mut prov, mut hops) = (vec![], Some(FederateHops { current_hops: 1, max_hops: -1 }));
        assert!(stamp("hub1", 2, &mut prov, &mut hops), "the first hub");
        assert_eq!((prov.len(), hops.as_ref().unwrap().current_hops, hops.as_ref().unwrap().max_hops), (1, 2, -1));
        assert!(stamp("hub2", 2, &mut prov, &mut hops), "the second hub");
        assert!(!stamp("hub3", 2, &mut prov, &mut hops), "a third is over the hub limit of 2");
        let mut h = Some(FederateHops { current_hops: 1, max_hops: 1 });
        assert!(!stamp("hub", -1, &mut vec![], &mut h), "the message's own limit holds too");
        assert!(stamp("hub", -1, &mut vec![], &mut None), "no limits at all");
    }
}
