//! Federation v2 (TAK Server's port 9001 protocol): the gRPC service
//! `com.atakmap.FederatedChannel` over mutual TLS with ALPN `h2`, as a server and as a
//! client (../shared/specs/tak-federation.md §3). The rules of a session (call order,
//! health deadlines, receipts) are [`crate::session::federate`]; this module is the I/O
//! around them: tonic calls on one hyper HTTP/2 connection per session.
//!
//! * [`server`]: each TLS connection is one HTTP/2 connection and one federate session;
//!   every RPC on it shares the session (TAK keys sessions by TLS session id, which comes
//!   to the same thing). A second connection from a federate that already has an active
//!   ServerEventStream is refused with ALREADY_EXISTS.
//! * [`client`]: one HTTP/2 connection for every call of a session, in TAK's order, never
//!   waiting on a reply a TAK Server sends late (response headers come with the first
//!   message in grpc-java).
//!
//! What both roles send: events as `FederatedEvent`s (an outbound stream fed by the
//! router, with the contact snapshot and latest SA first), and the mission queue as ROL:
//! each queued change in TAK's shape, stamped with our provenance, hops and the federation
//! groups it may reach; an item's CoT goes on the event stream just before the ROL that
//! adds it (a TAK Server adds a uid only when it has its CoT).

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message as _;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Code, Status};

use super::fig::{identity, FederateHops, FederateProvenance, FederatedEvent, Identity, Rol, TakServerVersion};
use super::shared::{federated_for, outbound_groups_for, FedSettings};
use crate::link::listen::{Conn, Handler};
use crate::link::{ConnStatus, LinkCounters};
use crate::missions::{to_rol, Missions, OutRol};
use crate::router::{Message, RouterHandle};
use crate::sync::lock;

mod client;
mod server;

pub use client::{h2_client, subscription, Client, H2};

pub use super::shared::DEFAULT_MAX_MESSAGE;

pub(super) type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// State shared by every session of one federation v2 link.
pub struct Shared {
    pub s: Arc<FedSettings>,
    pub router: RouterHandle,
    /// Server role: the connection holding each federate's (by fingerprint) event stream.
    pub(super) active: Mutex<std::collections::HashMap<String, u64>>,
    /// The mission store: received ROL is applied to it, and its queue is delivered.
    pub missions: Option<Arc<Missions>>,
    /// Client role: this link's federation server row.
    pub server_id: Option<i64>,
    pub(super) serial: AtomicU64,
    /// Client role: the connector's status, where session failures are recorded.
    pub status: Mutex<Option<Arc<ConnStatus>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("link", &self.s.link).finish()
    }
}

impl Handler for Shared {
    /// Client role when the link has a connector status, else server role.
    fn run(self: Arc<Self>, conn: Conn) -> futures_util::future::BoxFuture<'static, ()> {
        if lock(&self.status).is_some() {
            Box::pin(client::run(conn, self))
        } else {
            Box::pin(server::serve(conn, self))
        }
    }
}

impl Shared {
    pub fn new(s: Arc<FedSettings>, router: RouterHandle, missions: Option<Arc<Missions>>, server_id: Option<i64>) -> Arc<Shared> {
        Arc::new(Shared { s, router, active: Mutex::default(), missions, server_id, serial: AtomicU64::new(1), status: Mutex::new(None) })
    }

    /// A ROL from federate `from` (server row `origin`): dropped when it carries our own
    /// provenance, else its mission changes are applied (in the local groups its federation
    /// groups map to).
    pub(super) async fn handle_rol(&self, from: &str, origin: Option<i64>, rol: Rol) {
        if rol.federate_provenance.iter().any(|p| p.federation_server_id == self.s.node_id) {
            LinkCounters::inc(&self.s.counters.loops);
            return;
        }
        LinkCounters::inc(&self.s.counters.events_in);
        LinkCounters::add(&self.s.counters.bytes_in, rol.encoded_len() as u64);
        if let Some(m) = &self.missions {
            let groups = super::shared::inbound_groups(&rol.federate_groups, &self.s);
            let r = m.apply_rol(from, origin, &rol, &groups).await;
            tracing::debug!(link = %self.s.link, federate = from, program = rol.program.lines().next().unwrap_or(""), result = ?r, "ROL applied");
        }
    }

    /// Our provenance and hop count on a ROL we send.
    pub(super) fn stamp_rol(&self, mut rol: Rol) -> Rol {
        if !rol.federate_provenance.iter().any(|p| p.federation_server_id == self.s.node_id) {
            rol.federate_provenance.push(FederateProvenance { federation_server_id: self.s.node_id.clone(), federation_server_name: self.s.display_name.clone() });
        }
        rol.federate_hops = Some(FederateHops { max_hops: self.s.max_hops, current_hops: 1 });
        rol
    }

    pub(super) fn our_identity(&self, ty: identity::ConnectionType, uid: String) -> Identity {
        Identity { name: self.s.display_name.clone(), uid, description: format!("takgate {}", env!("CARGO_PKG_VERSION")), r#type: ty as i32, server_id: self.s.node_id.clone() }
    }

    /// Warns when a peer presents our own server id: everything it sends would be dropped
    /// as a loop, and a hub would refuse one of us (two gateways left on one id).
    pub(super) fn check_peer_id(&self, peer_server_id: &str, remote: &str) {
        if !peer_server_id.is_empty() && peer_server_id == self.s.node_id {
            tracing::warn!(link = %self.s.link, remote, server_id = peer_server_id, "the federate presents our own node id: set a distinct [node] id on one of the two (traffic between them is dropped as a loop)");
        }
    }
}

/// The version we announce: TAK Server only completes health checks for subscribers whose
/// major version is above 0; 5.5 is the protocol level our fig.proto matches.
pub(super) fn our_version() -> TakServerVersion {
    TakServerVersion { major: 5, minor: 5, patch: 0, branch: "takgate".into(), variant: env!("CARGO_PKG_VERSION").into() }
}

pub(super) use crate::cot::random_uid;

/// A gRPC status in words an operator can act on (for other modules).
pub fn describe_status(what: &str, st: &Status) -> String {
    describe(what, st)
}

/// A gRPC status in words an operator can act on.
pub(super) fn describe(what: &str, st: &Status) -> String {
    let code = match st.code() {
        Code::Unimplemented => "not implemented by the peer",
        Code::DeadlineExceeded => "deadline exceeded (the peer saw no health check in time)",
        Code::AlreadyExists => "refused as a duplicate connection",
        Code::Unavailable => "connection lost",
        Code::PermissionDenied | Code::Unauthenticated => "refused by the peer",
        Code::InvalidArgument => "rejected as invalid",
        Code::Cancelled => "cancelled",
        _ => "failed",
    };
    let mut detail = st.message().to_string();
    let mut src = std::error::Error::source(st);
    while let Some(e) = src {
        let t = e.to_string();
        if !detail.contains(&t) {
            detail.push_str(": ");
            detail.push_str(&t);
        }
        src = e.source();
    }
    let hint = tls_alert_hint(&detail);
    if detail.is_empty() {
        format!("{what}: {code} ({:?}){hint}", st.code())
    } else {
        format!("{what}: {code} ({:?}: {detail}){hint}", st.code())
    }
}

fn tls_alert_hint(detail: &str) -> String {
    let Some(i) = detail.find("received fatal alert: ") else { return String::new() };
    match detail[i + 22..].split([' ', ':', ')']).next().unwrap_or("") {
        a @ ("UnknownCA" | "BadCertificate" | "CertificateUnknown" | "DecryptError") => format!(" [the peer refused our certificate (TLS alert {a}): is our CA in its federation truststore?]"),
        "CertificateExpired" => " [the peer refused our certificate as expired (TLS alert CertificateExpired): renew it]".to_string(),
        "CertificateRevoked" => " [the peer says our certificate is revoked]".to_string(),
        a => format!(" [TLS alert {a} from the peer]"),
    }
}

/// What a session sends besides the router's traffic and the mission queue:
/// FederatedEvents ahead of the router's traffic on the event stream (the CoT of a mission
/// item, just before the ROL that adds it), and ROL for data packages (a `b-f-t-r` goes to a
/// v2 federate as `announce package`, never as an event, as TAK does).
#[derive(Default)]
pub(super) struct Inject {
    q: Mutex<VecDeque<FederatedEvent>>,
    wake: Notify,
    rols: Mutex<VecDeque<Rol>>,
    rol_wake: Notify,
    /// Where data packages' files are held (None: no mission store, packages go as events).
    missions: Option<Arc<Missions>>,
}

impl Inject {
    pub(super) fn new(missions: Option<Arc<Missions>>) -> Arc<Inject> {
        Arc::new(Inject { missions, ..Default::default() })
    }

    /// Sends a data package's ROL (its file first when held) on the ROL stream, without
    /// holding up the event stream.
    fn package(self: &Arc<Self>, ev: &crate::cot::CotEvent, groups: Vec<String>) -> bool {
        let Some(m) = self.missions.clone() else { return false };
        if crate::missions::package_of(ev).is_none() {
            return false;
        }
        let (me, ev) = (self.clone(), ev.clone());
        tokio::spawn(async move {
            for mut rol in m.package_rols(&ev).await.unwrap_or_default() {
                rol.federate_groups = groups.clone();
                lock(&me.rols).push_back(rol);
            }
            me.rol_wake.notify_one();
        });
        true
    }

    pub(super) fn push(&self, fe: FederatedEvent) {
        lock(&self.q).push_back(fe);
        self.wake.notify_one();
    }
    fn take(&self, out: &mut VecDeque<FederatedEvent>) {
        out.extend(lock(&self.q).drain(..));
    }
}

/// The outbound event stream of one session: queued `FederatedEvent`s first (an empty
/// event, the snapshot), then injected ones and live traffic from the router, until
/// `stop`; with `expired` set it ends with DEADLINE_EXCEEDED.
pub(super) struct EventOut {
    pub(super) pending: VecDeque<FederatedEvent>,
    pub(super) rx: mpsc::Receiver<Arc<Message>>,
    pub(super) inject: Arc<Inject>,
    pub(super) announced: HashSet<String>,
    pub(super) s: Arc<FedSettings>,
    pub(super) stop: CancellationToken,
    pub(super) expired: Option<Arc<AtomicBool>>,
    pub(super) done: bool,
    /// Detaches the session's router peer when the stream goes away.
    pub(super) _guard: Option<DetachGuard>,
}

impl EventOut {
    pub(super) fn new(snapshot: &[Arc<Message>], lead: Option<FederatedEvent>, rx: mpsc::Receiver<Arc<Message>>, inject: Arc<Inject>, s: Arc<FedSettings>, stop: CancellationToken) -> EventOut {
        let mut o = EventOut { pending: lead.into_iter().collect(), rx, inject, announced: HashSet::new(), s, stop, expired: None, done: false, _guard: None };
        for m in snapshot {
            o.add(m);
        }
        o
    }

    fn add(&mut self, m: &Message) {
        let (pending, announced) = (&mut self.pending, &mut self.announced);
        if m.event.cot_type == "b-f-t-r" {
            let mut groups = None;
            federated_for(m, &self.s, &mut HashSet::new(), |fe| {
                if fe.event.is_some() {
                    groups = Some(fe.federate_groups);
                }
            });
            match groups {
                Some(g) if self.inject.package(&m.event, g.clone()) => return,
                None => return,
                Some(_) => {}
            }
        }
        federated_for(m, &self.s, announced, |fe| pending.push_back(fe));
    }

    pub(super) fn stream(self) -> impl Stream<Item = Result<FederatedEvent, Status>> + Send + 'static {
        futures_util::stream::unfold(self, |mut o| async move {
            loop {
                o.inject.take(&mut o.pending);
                if let Some(fe) = o.pending.pop_front() {
                    LinkCounters::inc(&o.s.counters.events_out);
                    LinkCounters::add(&o.s.counters.bytes_out, fe.encoded_len() as u64);
                    return Some((Ok(fe), o));
                }
                if o.done {
                    return None;
                }
                let inject = o.inject.clone();
                tokio::select! {
                    biased;
                    _ = o.stop.cancelled() => {
                        o.done = true;
                        if o.expired.as_ref().is_some_and(|e| e.load(Ordering::Relaxed)) {
                            let secs = o.s.health_timeout.as_secs_f64();
                            return Some((Err(Status::deadline_exceeded(format!("no health check for {secs} s"))), o));
                        }
                        return None;
                    }
                    _ = inject.wake.notified() => {}
                    m = o.rx.recv() => match m {
                        Some(m) => {
                            o.add(&m);
                            // take what else is queued without waiting
                            while o.pending.len() < 256 {
                                let Ok(m) = o.rx.try_recv() else { break };
                                o.add(&m);
                            }
                        }
                        None => return None,
                    },
                }
            }
        })
    }
}

/// Detaches a session's router peer when its outbound stream goes away, unless a newer
/// stream of the same session has replaced it.
pub(super) struct DetachGuard {
    pub(super) router: RouterHandle,
    pub(super) id: u64,
    pub(super) generation: u64,
    pub(super) current: Arc<AtomicU64>,
}

impl Drop for DetachGuard {
    fn drop(&mut self) {
        if self.current.load(Ordering::Relaxed) == self.generation {
            self.router.detach_now(self.id);
        }
    }
}

/// Yields `items`, then stays open (yielding nothing) until `until` is cancelled.
pub(super) fn then_hold<T: Send + 'static>(items: Vec<T>, until: CancellationToken) -> Out<T> {
    Box::pin(futures_util::stream::unfold((VecDeque::from(items), until), |(mut q, until)| async move {
        if let Some(x) = q.pop_front() {
            return Some((Ok(x), (q, until)));
        }
        until.cancelled().await;
        None
    }))
}

/// The CoT of a mission item as the FederatedEvent that goes just before its ADD_CONTENT
/// (destined to the mission, as TAK's own replay sends it).
fn item_event(change: &crate::store::Change, s: &FedSettings) -> Option<FederatedEvent> {
    if change.change_type != crate::store::ChangeType::AddContent || change.cot_xml.is_empty() {
        return None;
    }
    let ev = crate::cot::xml::decode(change.cot_xml.as_bytes()).ok()?;
    let m = Message::new(ev, 0);
    let mut out = None;
    federated_for(&m, s, &mut HashSet::new(), |fe| {
        if fe.event.is_some() {
            out = Some(fe);
        }
    });
    let mut fe = out?;
    if let Some(g) = fe.event.as_mut() {
        if !g.mission_names.contains(&change.mission) {
            g.mission_names.push(change.mission.clone());
        }
    }
    Some(fe)
}

/// The outbound ROL stream of one session: each queued change as TAK's ROL (a file's
/// `create resource` just before the ADD_CONTENT of its hash), then injected ROL (data
/// packages), each stamped with our provenance and the federation groups it may reach (a
/// change for groups this federate may not receive is skipped), an item's CoT injected on
/// the event stream first. A change counts as written when the stream takes it.
pub(super) fn rol_stream(rx: mpsc::Receiver<OutRol>, sh: Arc<Shared>, inject: Arc<Inject>, stop: CancellationToken, expired: Option<Arc<AtomicBool>>) -> impl Stream<Item = Result<Rol, Status>> + Send + 'static {
    let state = RolOut { done: false, rx, sh, inject, stop, expired, pending: VecDeque::new() };
    futures_util::stream::unfold(state, |mut o| async move {
        if o.done {
            return None;
        }
        loop {
            if let Some(rol) = o.pending.pop_front().or_else(|| lock(&o.inject.rols).pop_front()) {
                LinkCounters::inc(&o.sh.s.counters.events_out);
                LinkCounters::add(&o.sh.s.counters.bytes_out, rol.encoded_len() as u64);
                let rol = o.sh.stamp_rol(rol);
                return Some((Ok(rol), o));
            }
            let inject = o.inject.clone();
            let r = tokio::select! {
                biased;
                _ = o.stop.cancelled() => {
                    o.done = true;
                    if o.expired.as_ref().is_some_and(|e| e.load(Ordering::Relaxed)) {
                        return Some((Err(Status::deadline_exceeded("no health check in time")), o));
                    }
                    return None;
                }
                _ = inject.rol_wake.notified() => continue,
                r = o.rx.recv() => r?,
            };
            let OutRol { change, resource, written } = r;
            if let Some(w) = written {
                w();
            }
            let own: Vec<&str> = if change.groups.is_empty() { vec!["__ANON__"] } else { change.groups.iter().map(String::as_str).collect() };
            let Some(groups) = outbound_groups_for(&own, &o.sh.s) else {
                LinkCounters::inc(&o.sh.s.counters.filtered);
                continue;
            };
            let Some(mut rol) = to_rol(&change, &groups) else { continue };
            if let Some(fe) = item_event(&change, &o.sh.s) {
                o.inject.push(fe);
            }
            if let Some((meta, bytes)) = resource {
                let mut r = crate::missions::rol::resource_rol(&meta, bytes);
                r.federate_groups = groups.clone();
                o.pending.push_back(r);
            }
            rol.federate_groups = groups;
            o.pending.push_back(rol);
        }
    })
}

struct RolOut {
    done: bool,
    rx: mpsc::Receiver<OutRol>,
    sh: Arc<Shared>,
    inject: Arc<Inject>,
    stop: CancellationToken,
    expired: Option<Arc<AtomicBool>>,
    /// ROL of the current change still to send (a file, then its ADD_CONTENT).
    pending: VecDeque<Rol>,
}
