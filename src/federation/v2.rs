//! Federation v2 (TAK Server's port 9001 protocol): the gRPC service
//! `com.atakmap.FederatedChannel` over mutual TLS with ALPN `h2`, as a server and as a
//! client, following TAK Server's sequence (../shared/specs/tak-federation.md §3).
//!
//! Server: each TLS connection is one HTTP/2 connection and one federate session: every
//! RPC on it shares the session (TAK keys sessions by TLS session id, which comes to the
//! same thing). ServerFederateGroupsStream answers SERVING first; ClientEventStream is the
//! outbound event stream (contact snapshot and latest SA first); ServerEventStream,
//! ServerROLStream and ClientFederateGroupsStream answer their `Subscription` at once and
//! stay open; HealthCheck answers SERVING once ClientEventStream is open, NOT_CONNECTED
//! before; outbound streams without a health check for `health_timeout` (15 s) end with
//! DEADLINE_EXCEEDED and the connection is closed; a second connection from a federate
//! that already has an active ServerEventStream is refused with ALREADY_EXISTS.
//!
//! Client: one HTTP/2 connection for every call, in TAK's order: ServerFederateGroupsStream,
//! ClientFederateGroupsStream, ClientEventStream with a version (major > 0), HealthCheck
//! every `health_interval` (3 s), ServerROLStream; ServerEventStream once the groups stream
//! says SERVING (an empty event first, then the snapshot and live traffic);
//! ClientROLStream after the first SERVING health reply. Any stream error, a health reply
//! other than SERVING or no reply within 10 s ends the session and the connector
//! reconnects with backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::fig::federated_channel_client::FederatedChannelClient;
use super::fig::federated_channel_server::{FederatedChannel, FederatedChannelServer};
use super::fig::{client_health, identity, server_health, BinaryBlob, ClientHealth, Empty, FederateGroups, FederateHops, FederateProvenance, FederateTokenResponse, FederatedEvent, Identity, Rol, ServerHealth, Subscription, TakServerVersion};
use super::link::{admit, federated_for, receive, FedSettings};
use crate::config::Overflow;
use crate::missions::{Missions, OutRol};
use crate::router::{LinkCounters, Message, PeerIdentity, PeerInfo, RouterHandle};
use crate::transport::tcp::{ConnStatus, Io};

/// Largest gRPC message accepted or sent (TAK Server allows 256 MiB; ROL carries files).
pub const DEFAULT_MAX_MESSAGE: usize = 256 << 20;

/// What a received ROL is handed to (the mission store, when there is one).
pub type RolHandler = Arc<dyn Fn(&str, Rol) + Send + Sync>;

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// State shared by every session of one federation v2 link.
pub struct Shared {
    pub s: Arc<FedSettings>,
    pub router: RouterHandle,
    /// Server role: the connection holding each federate's (by fingerprint) event stream.
    active: Mutex<HashMap<String, u64>>,
    /// Open outbound ROL streams, by connection.
    rol_out: Mutex<HashMap<u64, mpsc::Sender<OutRol>>>,
    /// The mission store: received ROL is applied to it, and its queue is delivered.
    pub missions: Option<Arc<Missions>>,
    /// Client role: this link's federation server row.
    pub server_id: Option<i64>,
    serial: AtomicU64,
    rol_handler: Mutex<Option<RolHandler>>,
    /// Client role: the connector's status, where session failures are recorded.
    pub status: Mutex<Option<Arc<ConnStatus>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("link", &self.s.link).finish()
    }
}

impl Shared {
    pub fn new(s: Arc<FedSettings>, router: RouterHandle, missions: Option<Arc<Missions>>, server_id: Option<i64>) -> Arc<Shared> {
        Arc::new(Shared { s, router, active: Mutex::default(), rol_out: Mutex::default(), missions, server_id, serial: AtomicU64::new(1), rol_handler: Mutex::new(None), status: Mutex::new(None) })
    }

    /// Where received ROL goes (default: counted and logged).
    pub fn set_rol_handler(&self, h: RolHandler) {
        *lock(&self.rol_handler) = Some(h);
    }

    /// Sends a ROL to every federate session with an open outbound ROL stream; returns how
    /// many took it.
    pub fn send_rol(&self, rol: &Rol) -> usize {
        lock(&self.rol_out).values().filter(|tx| tx.try_send(OutRol { rol: rol.clone(), written: None }).is_ok()).count()
    }

    async fn handle_rol(&self, from: &str, rol: Rol) {
        if rol.federate_provenance.iter().any(|p| p.federation_server_id == self.s.node_id) {
            LinkCounters::inc(&self.s.counters.loops);
            return;
        }
        LinkCounters::inc(&self.s.counters.events_in);
        if let Some(m) = &self.missions {
            let r = m.apply_rol(from, &rol).await;
            tracing::debug!(link = %self.s.link, federate = from, program = rol.program.lines().next().unwrap_or(""), result = ?r, "ROL applied");
        }
        let h = lock(&self.rol_handler).clone();
        if let Some(h) = h {
            h(from, rol);
        }
    }

    fn stamp_rol(&self, mut rol: Rol) -> Rol {
        if !rol.federate_provenance.iter().any(|p| p.federation_server_id == self.s.node_id) {
            rol.federate_provenance.push(FederateProvenance { federation_server_id: self.s.node_id.clone(), federation_server_name: self.s.display_name.clone() });
        }
        rol.federate_hops = Some(FederateHops { max_hops: self.s.max_hops, current_hops: 1 });
        rol
    }

    fn our_identity(&self, ty: identity::ConnectionType, uid: String) -> Identity {
        Identity { name: self.s.display_name.clone(), uid, description: format!("takgate {}", env!("CARGO_PKG_VERSION")), r#type: ty as i32, server_id: self.s.node_id.clone() }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The version we announce: TAK Server only completes health checks for subscribers whose
/// major version is above 0; 5.5 is the protocol level our fig.proto matches.
fn our_version() -> TakServerVersion {
    TakServerVersion { major: 5, minor: 5, patch: 0, branch: "takgate".into(), variant: env!("CARGO_PKG_VERSION").into() }
}

fn random_uid() -> String {
    (0..32).map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0')).collect()
}

/// A gRPC status in words an operator can act on.
fn describe(what: &str, st: &Status) -> String {
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
    let hint = if let Some(i) = detail.find("received fatal alert: ") {
        let alert = detail[i + 22..].split([' ', ':', ')']).next().unwrap_or("");
        match alert {
            "UnknownCA" | "BadCertificate" | "CertificateUnknown" | "DecryptError" => format!(" [the peer refused our certificate (TLS alert {alert}): is our CA in its federation truststore?]"),
            "CertificateExpired" => " [the peer refused our certificate as expired (TLS alert CertificateExpired): renew it]".to_string(),
            "CertificateRevoked" => " [the peer says our certificate is revoked]".to_string(),
            a => format!(" [TLS alert {a} from the peer]"),
        }
    } else {
        String::new()
    };
    if detail.is_empty() {
        format!("{what}: {code} ({:?}){hint}", st.code())
    } else {
        format!("{what}: {code} ({:?}: {detail}){hint}", st.code())
    }
}

// ---------------------------------------------------------------------------------------
// Streams

/// The outbound event stream of one session: queued `FederatedEvent`s first (an empty
/// event, the snapshot), then live traffic from the router, until `stop`; with `expired`
/// set it ends with DEADLINE_EXCEEDED.
struct EventOut {
    pending: VecDeque<FederatedEvent>,
    rx: mpsc::Receiver<Arc<Message>>,
    announced: HashSet<String>,
    s: Arc<FedSettings>,
    stop: CancellationToken,
    expired: Option<Arc<AtomicBool>>,
    done: bool,
    _guard: Option<DetachGuard>,
}

impl EventOut {
    fn new(snapshot: &[Arc<Message>], lead: Option<FederatedEvent>, rx: mpsc::Receiver<Arc<Message>>, s: Arc<FedSettings>, stop: CancellationToken) -> EventOut {
        let mut o = EventOut { pending: lead.into_iter().collect(), rx, announced: HashSet::new(), s, stop, expired: None, done: false, _guard: None };
        for m in snapshot {
            let (pending, announced) = (&mut o.pending, &mut o.announced);
            federated_for(m, &o.s, announced, |fe| pending.push_back(fe));
        }
        o
    }

    fn stream(self) -> impl Stream<Item = Result<FederatedEvent, Status>> + Send + 'static {
        futures_util::stream::unfold(self, |mut o| async move {
            loop {
                if let Some(fe) = o.pending.pop_front() {
                    LinkCounters::inc(&o.s.counters.events_out);
                    o.s.counters.bytes_out.fetch_add(fe.encoded_len() as u64, Ordering::Relaxed);
                    return Some((Ok(fe), o));
                }
                if o.done {
                    return None;
                }
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
                    m = o.rx.recv() => match m {
                        Some(m) => {
                            let (pending, announced) = (&mut o.pending, &mut o.announced);
                            federated_for(&m, &o.s, announced, |fe| pending.push_back(fe));
                            // take what else is queued without waiting
                            while o.pending.len() < 256 {
                                let Ok(m) = o.rx.try_recv() else { break };
                                let (pending, announced) = (&mut o.pending, &mut o.announced);
                                federated_for(&m, &o.s, announced, |fe| pending.push_back(fe));
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
struct DetachGuard {
    router: RouterHandle,
    id: u64,
    generation: u64,
    current: Arc<AtomicU64>,
}

impl Drop for DetachGuard {
    fn drop(&mut self) {
        if self.current.load(Ordering::Relaxed) == self.generation {
            let (router, id) = (self.router.clone(), self.id);
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move { router.detach(id).await });
            }
        }
    }
}

/// Yields `items`, then stays open (yielding nothing) until `until` is cancelled.
fn then_hold<T: Send + 'static>(items: Vec<T>, until: CancellationToken) -> Out<T> {
    Box::pin(futures_util::stream::unfold((VecDeque::from(items), until), |(mut q, until)| async move {
        if let Some(x) = q.pop_front() {
            return Some((Ok(x), (q, until)));
        }
        until.cancelled().await;
        None
    }))
}

/// Outbound ROL for one session, stamped with our provenance.
fn rol_stream(rx: mpsc::Receiver<OutRol>, sh: Arc<Shared>, stop: CancellationToken, expired: Option<Arc<AtomicBool>>) -> impl Stream<Item = Result<Rol, Status>> + Send + 'static {
    futures_util::stream::unfold((false, rx, sh, stop, expired), |(done, mut rx, sh, stop, expired)| async move {
        if done {
            return None;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                if expired.as_ref().is_some_and(|e| e.load(Ordering::Relaxed)) {
                    return Some((Err(Status::deadline_exceeded("no health check in time")), (true, rx, sh, stop, expired)));
                }
                None
            }
            r = rx.recv() => {
                let OutRol { rol, written } = r?;
                // The stream takes it now: the queue item counts as delivered.
                if let Some(w) = written {
                    w();
                }
                LinkCounters::inc(&sh.s.counters.events_out);
                Some((Ok(sh.stamp_rol(rol)), (false, rx, sh, stop, expired)))
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// Server

struct ConnState {
    /// The open ClientEventStream and ClientROLStream.
    events: Option<CancellationToken>,
    rol: Option<CancellationToken>,
    last_health: Instant,
    peer_name: String,
}

/// One federate connection (server role): the `FederatedChannel` service of that session.
struct Conn {
    sh: Arc<Shared>,
    /// Router peer id of the session.
    id: u64,
    serial: u64,
    remote: String,
    identity: PeerIdentity,
    session: CancellationToken,
    expired: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    st: Mutex<ConnState>,
}

impl Conn {
    fn name(&self) -> String {
        let n = lock(&self.st).peer_name.clone();
        if n.is_empty() {
            self.identity.federate_name()
        } else {
            n
        }
    }

    fn check_name(&self, sub: &Subscription, rpc: &str) -> Result<String, Status> {
        let name = sub.identity.as_ref().map(|i| i.name.clone()).unwrap_or_default();
        if name.is_empty() {
            let n = self.sh.s.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            crate::transport::stream::log_bad_input(n, &self.sh.s.link, &self.remote, &format!("{rpc}: Subscription.identity.name is empty"));
            return Err(Status::invalid_argument(format!("{rpc}: Subscription.identity.name must not be empty")));
        }
        Ok(name)
    }

    fn reply(&self) -> Subscription {
        Subscription { identity: Some(self.sh.our_identity(identity::ConnectionType::FederationTakServer, self.serial.to_string())), filter: String::new(), version: Some(our_version()) }
    }

    /// Consumes an inbound stream in its own task until it ends or the session closes.
    fn consume<T: Send + 'static>(&self, mut inbound: Streaming<T>, what: &'static str, mut each: impl FnMut(T) -> futures_util::future::BoxFuture<'static, ()> + Send + 'static) {
        let (session, link, remote) = (self.session.clone(), self.sh.s.link.clone(), self.remote.clone());
        tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    _ = session.cancelled() => break,
                    m = inbound.message() => m,
                };
                match m {
                    Ok(Some(x)) => each(x).await,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(%link, %remote, "{what} ended: {e}");
                        break;
                    }
                }
            }
        });
    }
}

#[tonic::async_trait]
impl FederatedChannel for Conn {
    async fn send_one_event(&self, request: Request<FederatedEvent>) -> Result<Response<Empty>, Status> {
        // TAK Server counts and drops these without replying; we route the event and answer.
        receive(request.into_inner(), self.id, &self.sh.s, &self.sh.router).await;
        Ok(Response::new(Empty {}))
    }

    type BinaryMessageStreamStream = Out<Empty>;
    async fn binary_message_stream(&self, request: Request<Streaming<BinaryBlob>>) -> Result<Response<Self::BinaryMessageStreamStream>, Status> {
        let (link, counters) = (self.sh.s.link.clone(), self.sh.s.counters.clone());
        self.consume(request.into_inner(), "BinaryMessageStream", move |b: BinaryBlob| {
            LinkCounters::inc(&counters.filtered);
            tracing::debug!(%link, bytes = b.data.len(), "binary blob not handled (as TAK Server)");
            Box::pin(async {})
        });
        Ok(Response::new(then_hold(vec![], self.session.clone())))
    }

    async fn send_one_blob(&self, request: Request<BinaryBlob>) -> Result<Response<Empty>, Status> {
        LinkCounters::inc(&self.sh.s.counters.filtered);
        tracing::debug!(link = %self.sh.s.link, bytes = request.get_ref().data.len(), "binary blob not handled (as TAK Server)");
        Ok(Response::new(Empty {}))
    }

    async fn get_identity(&self, _request: Request<Empty>) -> Result<Response<Identity>, Status> {
        Ok(Response::new(self.sh.our_identity(identity::ConnectionType::FederationTakServer, self.serial.to_string())))
    }

    type ClientEventStreamStream = Out<FederatedEvent>;
    async fn client_event_stream(&self, request: Request<Subscription>) -> Result<Response<Self::ClientEventStreamStream>, Status> {
        let sub = request.into_inner();
        let name = self.check_name(&sub, "ClientEventStream")?;
        if sub.version.as_ref().is_none_or(|v| v.major <= 0) {
            tracing::warn!(link = %self.sh.s.link, remote = %self.remote, federate = %name, "ClientEventStream without a Subscription version (major > 0): TAK Server would never answer this federate's health checks; takgate answers them");
        }
        let s = self.sh.s.clone();
        let token = self.session.child_token();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut st = lock(&self.st);
            if let Some(old) = st.events.replace(token.clone()) {
                old.cancel();
            }
            st.last_health = Instant::now();
            st.peer_name = name.clone();
        }
        self.expired.store(false, Ordering::Relaxed);
        // The snapshot is taken before attaching, so nothing in it is also queued live.
        let snapshot: Vec<Arc<Message>> = self.sh.router.snapshot().await.into_iter().filter(|m| s.policy.allows_out(m)).collect();
        let (tx, rx) = mpsc::channel(s.queue_depth);
        self.sh
            .router
            .attach(PeerInfo { codec: Arc::new(std::sync::atomic::AtomicU8::new(crate::router::codec::FIG_GRPC)), id: self.id, link: s.link.clone(), transport: "federation-v2", remote: self.remote.clone(), identity: Some(self.identity.clone()), policy: s.policy.clone(), tx, overflow: Overflow::Drop, counters: s.counters.clone(), close: token.clone() })
            .await;
        tracing::info!(link = %s.link, remote = %self.remote, federate = %name, snapshot = snapshot.len(), "federate subscribed to events");
        let mut out = EventOut::new(&snapshot, None, rx, s, token);
        out.expired = Some(self.expired.clone());
        out._guard = Some(DetachGuard { router: self.sh.router.clone(), id: self.id, generation, current: self.generation.clone() });
        Ok(Response::new(Box::pin(out.stream())))
    }

    type ServerEventStreamStream = Out<Subscription>;
    async fn server_event_stream(&self, request: Request<Streaming<FederatedEvent>>) -> Result<Response<Self::ServerEventStreamStream>, Status> {
        let fp = self.identity.fingerprint.clone();
        {
            let mut active = lock(&self.sh.active);
            match active.get(&fp) {
                Some(&other) if other != self.serial => {
                    let n = self.sh.s.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    let why = format!("federate {} ({fp}) already has an active connection: duplicate refused", self.identity.federate_name());
                    crate::transport::stream::log_bad_input(n, &self.sh.s.link, &self.remote, &why);
                    self.session.cancel();
                    return Err(Status::already_exists(why));
                }
                _ => {
                    active.insert(fp, self.serial);
                }
            }
        }
        let (id, sh) = (self.id, self.sh.clone());
        self.consume(request.into_inner(), "ServerEventStream", move |fe: FederatedEvent| {
            let sh = sh.clone();
            Box::pin(async move {
                sh.s.counters.bytes_in.fetch_add(fe.encoded_len() as u64, Ordering::Relaxed);
                receive(fe, id, &sh.s, &sh.router).await
            })
        });
        Ok(Response::new(then_hold(vec![self.reply()], self.session.clone())))
    }

    async fn health_check(&self, request: Request<ClientHealth>) -> Result<Response<ServerHealth>, Status> {
        let client_serving = request.get_ref().status == client_health::ServingStatus::Serving as i32;
        let mut st = lock(&self.st);
        let open = st.events.as_ref().is_some_and(|t| !t.is_cancelled());
        let status = if open && client_serving {
            st.last_health = Instant::now();
            server_health::ServingStatus::Serving
        } else if open {
            server_health::ServingStatus::NotServing
        } else {
            server_health::ServingStatus::NotConnected
        };
        Ok(Response::new(ServerHealth { status: status as i32 }))
    }

    type ClientROLStreamStream = Out<Rol>;
    async fn client_rol_stream(&self, request: Request<Subscription>) -> Result<Response<Self::ClientROLStreamStream>, Status> {
        let name = self.check_name(request.get_ref(), "ClientROLStream")?;
        let token = self.session.child_token();
        if let Some(old) = lock(&self.st).rol.replace(token.clone()) {
            old.cancel();
        }
        let (tx, rx) = mpsc::channel(256);
        lock(&self.sh.rol_out).insert(self.serial, tx.clone());
        tracing::info!(link = %self.sh.s.link, remote = %self.remote, federate = %name, "federate subscribed to ROL");
        if let Some(m) = &self.sh.missions {
            match m.inbound_server(&self.sh.s.link, &self.identity.fingerprint, &self.identity.federate_name(), &self.sh.s.policy) {
                Ok(server_id) => {
                    tokio::spawn(m.clone().deliver(server_id, tx, token.clone()));
                }
                Err(e) => tracing::error!(link = %self.sh.s.link, "mission queue unavailable for {name}: {e}"),
            }
        }
        Ok(Response::new(Box::pin(rol_stream(rx, self.sh.clone(), token, Some(self.expired.clone())))))
    }

    type ServerROLStreamStream = Out<Subscription>;
    async fn server_rol_stream(&self, request: Request<Streaming<Rol>>) -> Result<Response<Self::ServerROLStreamStream>, Status> {
        let (sh, name) = (self.sh.clone(), self.name());
        self.consume(request.into_inner(), "ServerROLStream", move |r: Rol| {
            let (sh, name) = (sh.clone(), name.clone());
            Box::pin(async move { sh.handle_rol(&name, r).await })
        });
        Ok(Response::new(then_hold(vec![self.reply()], self.session.clone())))
    }

    type ServerFederateGroupsStreamStream = Out<FederateGroups>;
    async fn server_federate_groups_stream(&self, request: Request<Subscription>) -> Result<Response<Self::ServerFederateGroupsStreamStream>, Status> {
        let name = self.check_name(request.get_ref(), "ServerFederateGroupsStream")?;
        lock(&self.st).peer_name = name;
        let mut items = vec![FederateGroups { stream_update: Some(ServerHealth { status: server_health::ServingStatus::Serving as i32 }), ..Default::default() }];
        if !self.sh.s.outbound_group_names.is_empty() {
            items.push(FederateGroups { federate_groups: self.sh.s.outbound_group_names.clone(), ..Default::default() });
        }
        Ok(Response::new(then_hold(items, self.session.clone())))
    }

    type ClientFederateGroupsStreamStream = Out<Subscription>;
    async fn client_federate_groups_stream(&self, request: Request<Streaming<FederateGroups>>) -> Result<Response<Self::ClientFederateGroupsStreamStream>, Status> {
        let (link, remote) = (self.sh.s.link.clone(), self.remote.clone());
        self.consume(request.into_inner(), "ClientFederateGroupsStream", move |g: FederateGroups| {
            tracing::info!(%link, %remote, groups = ?g.federate_groups, "federate announced its groups");
            Box::pin(async {})
        });
        Ok(Response::new(then_hold(vec![self.reply()], self.session.clone())))
    }

    async fn get_auth_token_by_x509(&self, _request: Request<BinaryBlob>) -> Result<Response<FederateTokenResponse>, Status> {
        Err(Status::unimplemented("token authentication is not supported: federates authenticate with mutual TLS certificates"))
    }

    async fn getx509_identity(&self, _request: Request<Empty>) -> Result<Response<BinaryBlob>, Status> {
        Ok(Response::new(BinaryBlob { data: self.sh.s.own_cert.clone(), ..Default::default() }))
    }
}

/// Serves one accepted federation v2 connection (after TLS) until it closes.
pub async fn serve_connection(io: Box<dyn Io>, remote: String, identity: Option<PeerIdentity>, sh: Arc<Shared>, cancel: CancellationToken) {
    let Some(identity) = admit(identity, &sh.s, &remote) else { return };
    let session = cancel.child_token();
    let serial = sh.serial.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(Conn {
        sh: sh.clone(),
        id: sh.router.next_id(),
        serial,
        remote: remote.clone(),
        identity: identity.clone(),
        session: session.clone(),
        expired: Arc::default(),
        generation: Arc::default(),
        st: Mutex::new(ConnState { events: None, rol: None, last_health: Instant::now(), peer_name: String::new() }),
    });
    tracing::info!(link = %sh.s.link, %remote, federate = %identity.federate_name(), fingerprint = %identity.fingerprint, "federate connected (v2)");
    let watchdog = tokio::spawn(watchdog(conn.clone()));
    let max = sh.s.max_frame;
    let svc = FederatedChannelServer::from_arc(conn.clone()).max_decoding_message_size(max).max_encoding_message_size(max);
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.initial_stream_window_size(4 << 20).initial_connection_window_size(8 << 20).max_frame_size(256 << 10).max_send_buf_size(1 << 20);
    let fut = b.serve_connection(TokioIo::new(io), hyper_util::service::TowerToHyperService::new(svc));
    tokio::pin!(fut);
    let reason = tokio::select! {
        r = &mut fut => match r {
            Ok(()) => "closed by the federate".to_string(),
            Err(e) => format!("HTTP/2 error: {e}"),
        },
        _ = session.cancelled() => {
            fut.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut fut).await;
            "closed".to_string()
        }
    };
    session.cancel();
    watchdog.abort();
    {
        let mut active = lock(&sh.active);
        if active.get(&identity.fingerprint) == Some(&serial) {
            active.remove(&identity.fingerprint);
        }
    }
    lock(&sh.rol_out).remove(&serial);
    conn.generation.fetch_add(1, Ordering::Relaxed);
    sh.router.detach(conn.id).await;
    tracing::info!(link = %sh.s.link, %remote, federate = %conn.name(), %reason, "federate disconnected (v2)");
}

/// Closes the outbound streams of a session whose health checks stopped (DEADLINE_EXCEEDED,
/// as TAK Server), then the connection.
async fn watchdog(conn: Arc<Conn>) {
    let timeout = conn.sh.s.health_timeout;
    let period = (timeout / 3).min(Duration::from_secs(5)).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let stale = {
            let st = lock(&conn.st);
            let open = st.events.as_ref().is_some_and(|t| !t.is_cancelled()) || st.rol.as_ref().is_some_and(|t| !t.is_cancelled());
            open && st.last_health.elapsed() >= timeout
        };
        if stale {
            tracing::warn!(link = %conn.sh.s.link, remote = %conn.remote, federate = %conn.name(), "no health check for {:.0} s: closing the federate's streams (DEADLINE_EXCEEDED) and the connection", timeout.as_secs_f64());
            conn.expired.store(true, Ordering::Relaxed);
            {
                let st = lock(&conn.st);
                for t in [&st.events, &st.rol].into_iter().flatten() {
                    t.cancel();
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            conn.session.cancel();
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client

/// tonic's client over one hyper HTTP/2 connection: every call shares it, and it is never
/// silently re-established (TAK matches a session's calls by their connection).
#[derive(Clone)]
pub struct H2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tower::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, hyper::Error>> + Send>>;
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

pub type Client = FederatedChannelClient<H2>;

/// Opens an HTTP/2 connection on `io` and a tonic client on it; the connection is driven
/// until `session` is cancelled.
pub async fn h2_client(io: Box<dyn Io>, authority: &str, max: usize, session: &CancellationToken) -> Result<Client, String> {
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .max_frame_size(256 << 10)
        .max_send_buf_size(1 << 20)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    let s = session.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = conn => {}
            _ = s.cancelled() => {}
        }
        s.cancel();
    });
    let origin: http::Uri = format!("https://{authority}").parse().map_err(|e| format!("bad address {authority}: {e}"))?;
    Ok(FederatedChannelClient::with_origin(H2(send), origin).max_decoding_message_size(max).max_encoding_message_size(max))
}

pub fn subscription(sh: &Shared, versioned: bool, uid: &str) -> Subscription {
    Subscription { identity: Some(sh.our_identity(identity::ConnectionType::FederationTakClient, uid.to_owned())), filter: String::new(), version: versioned.then(our_version) }
}

enum Ev {
    Health(Result<i32, String>),
    Closed(String),
}

async fn next<T>(s: &mut Option<Streaming<T>>) -> Result<Option<T>, Status> {
    match s {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

/// Spawns a bidirectional call whose replies we only drain; its end is reported on `ev`
/// (an UNIMPLEMENTED answer is ignored when `optional`).
fn spawn_call<R: Send + 'static>(what: &'static str, call: impl std::future::Future<Output = Result<Response<Streaming<R>>, Status>> + Send + 'static, ev: mpsc::Sender<Ev>, session: CancellationToken, optional: bool) {
    tokio::spawn(async move {
        let r = tokio::select! {
            _ = session.cancelled() => return,
            r = call => r,
        };
        let why = match r {
            Ok(resp) => {
                let mut s = resp.into_inner();
                loop {
                    let m = tokio::select! {
                        _ = session.cancelled() => return,
                        m = s.message() => m,
                    };
                    match m {
                        Ok(Some(_)) => {}
                        Ok(None) => break format!("{what} was ended by the server"),
                        Err(st) => break describe(what, &st),
                    }
                }
            }
            Err(st) if optional && st.code() == Code::Unimplemented => return,
            Err(st) => describe(what, &st),
        };
        let _ = ev.send(Ev::Closed(why)).await;
    });
}

/// Runs one outgoing federation v2 session on an established TLS connection.
pub async fn run_client(io: Box<dyn Io>, remote: String, identity: Option<PeerIdentity>, sh: Arc<Shared>, cancel: CancellationToken) {
    let Some(identity) = admit(identity, &sh.s, &remote) else { return };
    let session = cancel.child_token();
    let id = sh.router.next_id();
    let serial = sh.serial.fetch_add(1, Ordering::Relaxed);
    tracing::info!(link = %sh.s.link, %remote, federate = %identity.federate_name(), fingerprint = %identity.fingerprint, "connected to federate (v2)");
    let r = client_session(io, &remote, id, serial, &sh, &session).await;
    session.cancel();
    lock(&sh.rol_out).remove(&serial);
    sh.router.detach(id).await;
    match r {
        Ok(()) => tracing::info!(link = %sh.s.link, %remote, "federation v2 session closed"),
        Err(e) => {
            tracing::warn!(link = %sh.s.link, %remote, "federation v2 session ended: {e}");
            if let Some(st) = lock(&sh.status).as_ref() {
                st.set(|c| c.last_error = Some(e.clone()));
            }
        }
    }
}

async fn client_session(io: Box<dyn Io>, remote: &str, id: u64, serial: u64, sh: &Arc<Shared>, session: &CancellationToken) -> Result<(), String> {
    let s = sh.s.clone();
    let mut client = h2_client(io, remote, s.max_frame, session).await?;
    let uid = random_uid();
    let plain = subscription(sh, false, &uid);
    let versioned = subscription(sh, true, &uid);
    let (ev_tx, mut ev_rx) = mpsc::channel::<Ev>(16);

    // 1. The groups stream first: the server answers SERVING on it.
    let mut groups = match client.server_federate_groups_stream(plain.clone()).await {
        Ok(r) => Some(r.into_inner()),
        Err(st) if st.code() == Code::Unimplemented => None,
        Err(st) => return Err(describe("ServerFederateGroupsStream", &st)),
    };
    // 1b. Our groups go on ClientFederateGroupsStream once the server is SERVING.
    let (grp_tx, grp_rx) = mpsc::channel::<FederateGroups>(4);
    spawn_call("ClientFederateGroupsStream", { let mut c = client.clone(); async move { c.client_federate_groups_stream(recv_stream(grp_rx)).await } }, ev_tx.clone(), session.clone(), true);
    // 2. ClientEventStream, with a version so TAK answers our health checks.
    let mut events_in = Some(client.client_event_stream(versioned.clone()).await.map_err(|st| describe("ClientEventStream", &st))?.into_inner());
    // 3. Health checks.
    {
        let (mut c, ev, stop, every) = (client.clone(), ev_tx.clone(), session.clone(), s.health_interval);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let r = match tokio::time::timeout(Duration::from_secs(10).max(every), c.health_check(ClientHealth { status: client_health::ServingStatus::Serving as i32 })).await {
                    Ok(Ok(h)) => Ok(h.into_inner().status),
                    Ok(Err(st)) => Err(describe("HealthCheck", &st)),
                    Err(_) => Err("HealthCheck: no answer within 10 s (does the server need a Subscription version? is it alive?)".to_string()),
                };
                let failed = r.is_err();
                if ev.send(Ev::Health(r)).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    // 4. ServerROLStream for what we send.
    let (rol_tx, rol_rx) = mpsc::channel::<OutRol>(256);
    lock(&sh.rol_out).insert(serial, rol_tx.clone());
    let rol_out = rol_stream(rol_rx, sh.clone(), session.clone(), None).filter_map(|r| std::future::ready(r.ok()));
    spawn_call("ServerROLStream", { let mut c = client.clone(); async move { c.server_rol_stream(rol_out).await } }, ev_tx.clone(), session.clone(), false);

    let mut serving = false;
    let mut rol_in: Option<Streaming<Rol>> = None;
    let mut healthy = false;
    if groups.is_none() {
        // An old server without the groups stream: go ahead, as TAK's client does.
        open_events(&mut client, id, sh, session, &ev_tx).await;
        serving = true;
    }
    loop {
        tokio::select! {
            _ = session.cancelled() => return Ok(()),
            m = next(&mut groups) => match m {
                Ok(Some(g)) => {
                    if g.stream_update.as_ref().is_some_and(|u| u.status == server_health::ServingStatus::Serving as i32) && !serving {
                        serving = true;
                        open_events(&mut client, id, sh, session, &ev_tx).await;
                        if !s.outbound_group_names.is_empty() {
                            let _ = grp_tx.try_send(FederateGroups { federate_groups: s.outbound_group_names.clone(), ..Default::default() });
                        }
                    }
                    if !g.federate_groups.is_empty() {
                        tracing::info!(link = %s.link, %remote, groups = ?g.federate_groups, "federate announced its groups");
                    }
                }
                Ok(None) => return Err("ServerFederateGroupsStream was ended by the server".into()),
                Err(st) => return Err(describe("ServerFederateGroupsStream", &st)),
            },
            m = next(&mut events_in) => match m {
                Ok(Some(fe)) => {
                    s.counters.bytes_in.fetch_add(fe.encoded_len() as u64, Ordering::Relaxed);
                    receive(fe, id, &s, &sh.router).await;
                }
                Ok(None) => return Err("ClientEventStream was ended by the server".into()),
                Err(st) => return Err(describe("ClientEventStream", &st)),
            },
            m = next(&mut rol_in) => match m {
                Ok(Some(r)) => sh.handle_rol(remote, r).await,
                Ok(None) => return Err("ClientROLStream was ended by the server".into()),
                Err(st) => return Err(describe("ClientROLStream", &st)),
            },
            Some(ev) = ev_rx.recv() => match ev {
                Ev::Health(Ok(st)) if st == server_health::ServingStatus::Serving as i32 => {
                    if !healthy {
                        healthy = true;
                        tracing::info!(link = %s.link, %remote, "federation v2: first health check SERVING");
                        rol_in = Some(client.client_rol_stream(plain.clone()).await.map_err(|st| describe("ClientROLStream", &st))?.into_inner());
                        // As TAK's client: queued and replayed mission changes go after the
                        // first healthy check.
                        if let (Some(m), Some(id)) = (&sh.missions, sh.server_id) {
                            tokio::spawn(m.clone().deliver(id, rol_tx.clone(), session.clone()));
                        }
                    }
                }
                Ev::Health(Ok(st)) => {
                    let name = server_health::ServingStatus::try_from(st).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
                    return Err(format!("health check answered {name}"));
                }
                Ev::Health(Err(e)) | Ev::Closed(e) => return Err(e),
            },
        }
    }
}

/// Opens ServerEventStream: an empty event first (harmless, as TAK's hub client does), the
/// contact snapshot and latest SA, then live traffic.
async fn open_events(client: &mut Client, id: u64, sh: &Arc<Shared>, session: &CancellationToken, ev: &mpsc::Sender<Ev>) {
    let s = sh.s.clone();
    let snapshot: Vec<Arc<Message>> = sh.router.snapshot().await.into_iter().filter(|m| s.policy.allows_out(m)).collect();
    let (tx, rx) = mpsc::channel(s.queue_depth);
    sh.router
        .attach(PeerInfo { codec: Arc::new(std::sync::atomic::AtomicU8::new(crate::router::codec::FIG_GRPC)), id, link: s.link.clone(), transport: "federation-v2", remote: String::new(), identity: None, policy: s.policy.clone(), tx, overflow: Overflow::Drop, counters: s.counters.clone(), close: session.child_token() })
        .await;
    let out = EventOut::new(&snapshot, Some(FederatedEvent::default()), rx, s, session.clone()).stream().filter_map(|r| std::future::ready(r.ok()));
    spawn_call("ServerEventStream", { let mut c = client.clone(); async move { c.server_event_stream(out).await } }, ev.clone(), session.clone(), false);
}

fn recv_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}
