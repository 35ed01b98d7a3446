//! A federation v2 server that behaves as TAK Server 5.7's does toward a federate that
//! connects to it, for conformance tests of takgate's client role. Written from
//! ../shared/specs/tak-federation.md §3.1–3.5 and §5, tak-rol-missions.md §2–4 and TAK
//! Server's source (`FederationServer.java`, `GuardedStreamHolder.java`,
//! `FederationROLHandler.java`, `MissionServiceDefaultImpl.java`, `ExpirationTaskService.java`,
//! `TakFigClient.java` for the client role's payload rule), never from takgate's own server.
//!
//! What it reproduces, each where TAK does it:
//! * the interceptor reads the peer chain's second certificate: a leaf-only chain gets
//!   INTERNAL on every call;
//! * grpc-java sends response headers with the first message: a server-streaming call with
//!   nothing to send yet (ClientEventStream before the federate subscription exists,
//!   ClientROLStream with nothing to replay) does not answer at all;
//! * ServerFederateGroupsStream: SERVING at once; the client-streaming calls reply with a
//!   Subscription at once and never end;
//! * ServerEventStream creates the federate subscription (duplicate fingerprint refused) and
//!   sends the contact snapshot and latest SA on ClientEventStream; contacts are marked sent
//!   even when no ClientEventStream exists yet (TAK's ordering pitfall);
//! * HealthCheck: SERVING once ClientEventStream exists, completed only when its
//!   subscription had `version.major > 0`; NOT_CONNECTED otherwise, never completed; no
//!   answer at all with the health check disabled (a hub's `enableHealthCheck: false`);
//! * every 5 s, event and ROL streams without a SERVING health check for 15 s get
//!   DEADLINE_EXCEEDED;
//! * ClientROLStream: silent, TAK's disruption replay (after the health interval, 100 ms
//!   apart, stream kept open), or a hub's (replay, then the stream is completed);
//! * ROL as TAK's receiver reads it: `op resource\n{json};`, Jackson's refusal of unknown
//!   properties and unknown `changeType` values, `create mission` storing a missing
//!   expiration as 0, ADD_CONTENT creating the mission (expiration -1) and adding a uid only
//!   once its CoT exists locally (3 attempts, 1 s apart), REMOVE_CONTENT and `delete
//!   mission` only with `allowFederatedDelete`, the mapped groups as the mission's groups;
//! * the retention service at start: missions with `0 <= expiration <= now` are deleted.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use takgate::federation::fig::federated_channel_server::{FederatedChannel, FederatedChannelServer};
use takgate::federation::fig::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// What ClientROLStream does once opened.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RolMode {
    /// Nothing to replay (or disruption tolerance off): no message, so no headers, ever.
    Silent,
    /// TAK Server's disruption replay: after the health interval, the queued replay ROLs
    /// 100 ms apart; the stream stays open for live ROL.
    Replay,
    /// A Federation Hub's: what was queued since the federate's last open, one a second,
    /// then the stream is completed.
    Hub,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub rol: RolMode,
    /// CoreConfig `federation@allowFederatedDelete` (default false).
    pub allow_federated_delete: bool,
    /// `federation-server@enableHealthCheck` (TAK: true; the hub's can be false).
    pub health_check: bool,
    /// `healthCheckIntervalSeconds`: the replay delay.
    pub health_interval: Duration,
    /// `federatedGroupMapping` with these local groups: pushed as the outbound groups on
    /// ServerFederateGroupsStream, and received `federateGroups` map by name onto them.
    pub group_mapping: Option<Vec<String>>,
}

impl Default for Options {
    fn default() -> Self {
        Options { rol: RolMode::Silent, allow_federated_delete: false, health_check: true, health_interval: Duration::from_secs(3), group_mapping: None }
    }
}

/// A mission as TAK stores it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mission {
    pub creator: String,
    /// Seconds since the epoch; -1: never.
    pub expiration: i64,
    pub tool: String,
    /// The groups it was created in (empty: no group, visible to nobody).
    pub groups: Vec<String>,
    pub uids: Vec<String>,
    pub hashes: Vec<String>,
}

/// Everything the server saw and did, for the tests to check.
#[derive(Default)]
pub struct State {
    /// (rpc, when, connection)
    pub calls: Vec<(&'static str, Instant, u64)>,
    pub connections: u64,
    /// Calls refused with INTERNAL by the interceptor.
    pub internal: u64,
    pub version_major: Vec<i64>,
    /// Every FederatedEvent received on ServerEventStream.
    pub received: Vec<FederatedEvent>,
    /// The federates' contacts (uid -> callsign), as CREATE and DELETE left them.
    pub contacts: BTreeMap<String, String>,
    /// `federateGroups` of every received event (TAK keeps the last as "remote groups").
    pub remote_groups: Vec<String>,
    /// ROL received on ServerROLStream, in order.
    pub rols: Vec<Rol>,
    /// ROL TAK's parser or its JSON mapping refuses (head, why).
    pub rejected: Vec<(String, String)>,
    /// Events whose `other` TAK could not read as a `<detail>` document.
    pub bad_other: Vec<String>,
    /// Mission uids given up on: their CoT never arrived within the retries.
    pub gave_up: Vec<String>,
    pub missions: BTreeMap<String, Mission>,
    /// Hashes TAK's enterprise sync holds (an ADD_CONTENT of another hash is skipped).
    pub resources: Vec<String>,
    /// The bytes of each file `create resource` brought (hash recomputed from them, as
    /// `JDBCEnterpriseSyncService` does), with the Resource JSON.
    pub files: BTreeMap<String, (Vec<u8>, Value)>,
    /// `create resource` without payload (TAK ignores it).
    pub resources_without_content: u64,
    /// `announce package` parameters (ResourceDetails) received with a sha256.
    pub packages: Vec<Value>,
    /// Mission log entries by entry uid (`addUpdateLogEntry` / `deleteLogEntry`).
    pub logs: BTreeMap<String, Value>,
    /// DEADLINE_EXCEEDED sent by the inactivity check.
    pub deadlines: u64,
    pub duplicates: u64,
    pub rol_opens: u64,
    /// ClientROLStream calls the server completed (hub mode).
    pub rol_completed: u64,
    /// uid -> when TAK last got its CoT (from a federate or locally).
    latest: HashMap<String, Instant>,
    sessions: HashMap<u64, Sess>,
    /// The local users' contacts and latest SA.
    local_contacts: BTreeMap<String, String>,
    local_sa: BTreeMap<String, FederatedEvent>,
    /// ROL replayed when a federate opens ClientROLStream.
    replay: Vec<Rol>,
    /// Hub: per federate fingerprint, how much of `replay` it got already.
    replayed: HashMap<String, usize>,
}

impl State {
    pub fn count(&self, rpc: &str) -> usize {
        self.calls.iter().filter(|c| c.0 == rpc).count()
    }
    pub fn first(&self, rpc: &str) -> Option<Instant> {
        self.calls.iter().find(|c| c.0 == rpc).map(|c| c.1)
    }
    pub fn times(&self, rpc: &str) -> Vec<Instant> {
        self.calls.iter().filter(|c| c.0 == rpc).map(|c| c.1).collect()
    }
    /// Events received for `uid`.
    pub fn events_of(&self, uid: &str) -> Vec<&GeoEvent> {
        self.received.iter().filter_map(|f| f.event.as_ref()).filter(|e| e.uid == uid).collect()
    }
    pub fn has_cot(&self, uid: &str) -> bool {
        self.latest.contains_key(uid)
    }
    /// Nothing TAK would have refused or failed to read.
    pub fn assert_clean(&self) {
        assert!(self.rejected.is_empty(), "ROL TAK refuses: {:?}", self.rejected);
        assert!(self.bad_other.is_empty(), "events TAK cannot read: {:?}", self.bad_other);
        assert_eq!(self.internal, 0, "calls refused with INTERNAL");
    }
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
type Tx<T> = mpsc::UnboundedSender<Result<T, Status>>;

/// One connection (TAK: one TLS session id).
struct Sess {
    fingerprint: String,
    close: CancellationToken,
    events: Option<Tx<FederatedEvent>>,
    events_major: i64,
    events_health: (Instant, bool),
    rol: Option<Tx<Rol>>,
    rol_health: (Instant, bool),
    groups: Option<Tx<FederateGroups>>,
    /// ServerEventStream opened: the federate subscription exists.
    subscribed: bool,
    contacts_sent: bool,
}

struct Inner {
    st: Mutex<State>,
    opts: Options,
    stop: CancellationToken,
}

impl Inner {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.st.lock().unwrap())
    }
}

/// The server. Dropped, it stops.
pub struct Tak {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Drop for Tak {
    fn drop(&mut self) {
        self.inner.stop.cancel();
    }
}

impl Tak {
    /// Serves on a port of its own with `cert`/`key`, trusting federates that chain to `trust`.
    pub async fn start(cert: &Path, key: &Path, trust: &Path, opts: Options) -> Tak {
        Tak::start_at("127.0.0.1:0".parse().unwrap(), cert, key, trust, opts).await
    }

    pub async fn start_at(addr: SocketAddr, cert: &Path, key: &Path, trust: &Path, opts: Options) -> Tak {
        let mut sc = takgate::link::tls::server_config(cert, key, Some(trust), true).unwrap();
        sc.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(sc));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner { st: Mutex::default(), opts, stop: CancellationToken::new() });
        tokio::spawn(accept(listener, acceptor, inner.clone()));
        if inner.opts.health_check {
            tokio::spawn(inactivity_check(inner.clone()));
        }
        Tak { addr, inner }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.inner.st.lock().unwrap()
    }

    /// A local user of this TAK Server: its contact and position go to every federate
    /// subscription now, and into the snapshot later ones get.
    pub fn local_user(&self, uid: &str, callsign: &str, seq: u32) {
        let contact = FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Create as i32, uid: uid.into(), callsign: callsign.into(), ..Default::default() }), ..Default::default() };
        let sa = geo(uid, callsign, seq);
        self.inner.with(|st| {
            st.local_contacts.insert(uid.into(), callsign.into());
            st.local_sa.insert(uid.into(), sa.clone());
            st.latest.insert(uid.into(), Instant::now());
            for s in st.sessions.values_mut().filter(|s| s.subscribed) {
                if let Some(tx) = &s.events {
                    let _ = tx.send(Ok(contact.clone()));
                    let _ = tx.send(Ok(sa.clone()));
                }
            }
        });
    }

    /// A local event brokered to every federate subscription.
    pub fn local_event(&self, fe: FederatedEvent) {
        self.inner.with(|st| {
            if let Some(e) = &fe.event {
                st.latest.insert(e.uid.clone(), Instant::now());
            }
            for s in st.sessions.values_mut().filter(|s| s.subscribed) {
                if let Some(tx) = &s.events {
                    let _ = tx.send(Ok(fe.clone()));
                }
            }
        });
    }

    /// A ROL to every open ClientROLStream now.
    pub fn send_rol(&self, rol: Rol) {
        self.inner.with(|st| {
            for s in st.sessions.values() {
                if let Some(tx) = &s.rol {
                    let _ = tx.send(Ok(rol.clone()));
                }
            }
        });
    }

    /// A ROL for the replay a federate gets when it opens ClientROLStream.
    pub fn queue_replay(&self, rol: Rol) {
        self.inner.with(|st| st.replay.push(rol));
    }

    /// A mission made on this server (by one of its clients).
    pub fn local_mission(&self, name: &str, expiration: i64) {
        self.inner.with(|st| st.missions.insert(name.into(), Mission { expiration, tool: "public".into(), groups: vec!["__ANON__".into()], ..Default::default() }));
    }

    /// Every connection is closed (the federate reconnects).
    pub fn drop_connections(&self) {
        self.inner.with(|st| {
            for s in st.sessions.values() {
                s.close.cancel();
            }
            st.sessions.clear();
        });
    }

    /// A restart: connections close, and the retention service deletes the missions whose
    /// expiration has passed (`0 <= expiration <= now`; -1 is never).
    pub fn restart(&self) {
        self.drop_connections();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        self.inner.with(|st| st.missions.retain(|_, m| !(0 <= m.expiration && m.expiration <= now)));
    }
}

async fn accept(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, inner: Arc<Inner>) {
    loop {
        let tcp = tokio::select! {
            _ = inner.stop.cancelled() => return,
            r = listener.accept() => match r { Ok((t, _)) => t, Err(_) => continue },
        };
        let (acceptor, inner) = (acceptor.clone(), inner.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let certs = tls.get_ref().1.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
            let fingerprint = certs.first().map(|c| hex::encode(ring::digest::digest(&ring::digest::SHA256, c.as_ref()))).unwrap_or_default();
            let close = inner.stop.child_token();
            let conn = inner.with(|st| {
                st.connections += 1;
                let now = Instant::now();
                st.sessions.insert(st.connections, Sess { fingerprint: fingerprint.clone(), close: close.clone(), events: None, events_major: 0, events_health: (now, true), rol: None, rol_health: (now, true), groups: None, subscribed: false, contacts_sent: false });
                st.connections
            });
            let svc = Svc { inner: inner.clone(), conn, fingerprint, close: close.clone() };
            let gate = Gate { grpc: FederatedChannelServer::new(svc.clone()).max_decoding_message_size(256 << 20), svc, chain: certs.len() };
            let fut = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new()).serve_connection(hyper_util::rt::TokioIo::new(tls), hyper_util::service::TowerToHyperService::new(gate));
            tokio::select! {
                _ = fut => {}
                _ = close.cancelled() => {}
            }
            close.cancel();
            inner.with(|st| st.sessions.remove(&conn));
        });
    }
}

/// TAK's inactivity check: every 5 s, streams whose last SERVING health check is 15 s old
/// (or whose last status was not SERVING) get DEADLINE_EXCEEDED and are dropped.
async fn inactivity_check(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        inner.with(|st| {
            let mut n = 0;
            for s in st.sessions.values_mut() {
                let stale = |h: (Instant, bool)| !h.1 || h.0.elapsed() >= Duration::from_secs(15);
                if stale(s.events_health) {
                    if let Some(tx) = s.events.take() {
                        let _ = tx.send(Err(Status::deadline_exceeded("client stream inactive")));
                        n += 1;
                    }
                }
                if stale(s.rol_health) {
                    if let Some(tx) = s.rol.take() {
                        let _ = tx.send(Err(Status::deadline_exceeded("client ROL stream inactive")));
                        n += 1;
                    }
                }
            }
            st.deadlines += n;
        });
    }
}

/// The interceptor and the one method served by hand: every call needs the chain's second
/// certificate (INTERNAL otherwise), and HealthCheck can send its reply without ever
/// completing the call, as grpc-java's `onNext` without `onCompleted` does.
#[derive(Clone)]
struct Gate {
    grpc: FederatedChannelServer<Svc>,
    svc: Svc,
    chain: usize,
}

type Resp = http::Response<tonic::body::Body>;

impl tower::Service<http::Request<hyper::body::Incoming>> for Gate {
    type Response = Resp;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Resp, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        if self.chain < 2 {
            // certArray[1] of a leaf-only chain: ArrayIndexOutOfBoundsException, call.close(INTERNAL)
            self.svc.inner.with(|st| st.internal += 1);
            return Box::pin(async { Ok(Status::internal("Index 1 out of bounds for length 1").into_http()) });
        }
        if req.uri().path() == "/com.atakmap.FederatedChannel/HealthCheck" {
            let svc = self.svc.clone();
            return Box::pin(async move { Ok(tonic::server::Grpc::new(tonic_prost::ProstCodec::<ServerHealth, ClientHealth>::default()).server_streaming(Health(svc), req).await) });
        }
        let mut grpc = self.grpc.clone();
        Box::pin(async move { tower::Service::call(&mut grpc, req).await })
    }
}

struct Health(Svc);

impl tonic::server::ServerStreamingService<ClientHealth> for Health {
    type Response = ServerHealth;
    type ResponseStream = Out<ServerHealth>;
    type Future = std::future::Ready<Result<Response<Out<ServerHealth>>, Status>>;

    fn call(&mut self, _r: Request<ClientHealth>) -> Self::Future {
        let svc = &self.0;
        svc.record("HealthCheck");
        let close = svc.close.clone();
        let never_completed = move || -> Out<ServerHealth> {
            let close = close.clone();
            Box::pin(futures_util::stream::once(async move {
                close.cancelled().await;
                Err(Status::cancelled("connection closed"))
            }))
        };
        if !svc.inner.opts.health_check {
            // "not sending federation health check - disabled in config"
            return std::future::ready(Ok(Response::new(never_completed())));
        }
        let (status, complete) = svc.inner.with(|st| {
            let Some(s) = st.sessions.get_mut(&svc.conn) else { return (server_health::ServingStatus::NotConnected, false) };
            s.rol_health = (Instant::now(), true);
            if s.events.is_some() {
                s.events_health = (Instant::now(), true);
                (server_health::ServingStatus::Serving, s.events_major > 0)
            } else {
                (server_health::ServingStatus::NotConnected, false)
            }
        });
        let reply = futures_util::stream::once(std::future::ready(Ok(ServerHealth { status: status as i32 })));
        let out: Out<ServerHealth> = if complete { Box::pin(reply) } else { Box::pin(reply.chain(never_completed())) };
        std::future::ready(Ok(Response::new(out)))
    }
}

#[derive(Clone)]
struct Svc {
    inner: Arc<Inner>,
    conn: u64,
    fingerprint: String,
    close: CancellationToken,
}

fn rx_stream<T: Send + 'static>(rx: mpsc::UnboundedReceiver<Result<T, Status>>) -> Out<T> {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }))
}

/// A Subscription reply now, and the call held open until the connection closes.
fn reply_and_hold<T: Send + 'static>(first: T, close: CancellationToken) -> Out<T> {
    Box::pin(futures_util::stream::once(std::future::ready(Ok(first))).chain(futures_util::stream::once(async move {
        close.cancelled().await;
        Err(Status::cancelled("connection closed"))
    })))
}

impl Svc {
    fn record(&self, rpc: &'static str) {
        self.inner.with(|st| st.calls.push((rpc, Instant::now(), self.conn)));
    }

    /// Reads a client-streaming call's messages with `each` until it ends or the
    /// connection closes.
    fn read_all<T: Send + 'static>(&self, mut s: Streaming<T>, each: fn(&Svc, T)) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = me.close.cancelled() => return,
                    m = s.message() => match m { Ok(Some(x)) => each(&me, x), _ => return },
                }
            }
        });
    }

    fn session_reply(&self) -> Subscription {
        let id = format!("{}", 0x5e55_0000_0000u64 + self.conn);
        Subscription { filter: String::new(), identity: Some(Identity { r#type: identity::ConnectionType::FederationTakServer as i32, server_id: "tak-conformance".into(), name: id.clone(), uid: id, ..Default::default() }), version: None }
    }

    /// grpc-java sends a server-streaming call's headers with its first message: nothing
    /// is answered until there is one (or the stream fails, or is completed empty).
    async fn lazy<T: Send + 'static>(&self, mut rx: mpsc::UnboundedReceiver<Result<T, Status>>) -> Result<Response<Out<T>>, Status> {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = self.close.cancelled() => return Err(Status::cancelled("connection closed")),
        };
        match first {
            None => Ok(Response::new(Box::pin(futures_util::stream::empty()))),
            Some(Err(st)) => Err(st),
            Some(Ok(m)) => Ok(Response::new(Box::pin(futures_util::stream::once(std::future::ready(Ok(m))).chain(rx_stream(rx))))),
        }
    }

    fn named(sub: &Subscription) -> Result<(), Status> {
        match &sub.identity {
            Some(i) if !i.name.is_empty() => Ok(()),
            // IllegalArgumentException thrown from the handler: grpc-java answers UNKNOWN
            _ => Err(Status::unknown("invalid request from client - null or empty name was provided")),
        }
    }

    /// The contact snapshot (once per session, marked sent even without an event stream)
    /// and the latest SA, on the session's event stream.
    fn snapshot(st: &mut State, conn: u64) {
        let contacts: Vec<FederatedEvent> = st.local_contacts.iter().map(|(u, c)| FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Create as i32, uid: u.clone(), callsign: c.clone(), ..Default::default() }), ..Default::default() }).collect();
        let sa: Vec<FederatedEvent> = st.local_sa.values().cloned().collect();
        let Some(s) = st.sessions.get_mut(&conn) else { return };
        let send_contacts = !s.contacts_sent;
        s.contacts_sent = true;
        if let Some(tx) = &s.events {
            if send_contacts {
                for c in contacts {
                    let _ = tx.send(Ok(c));
                }
            }
            for e in sa {
                let _ = tx.send(Ok(e));
            }
        }
    }

    fn receive_event(&self, fe: FederatedEvent) {
        self.inner.with(|st| {
            st.remote_groups = fe.federate_groups.clone();
            if let Some(e) = &fe.event {
                if !other_is_readable(&e.other) {
                    st.bad_other.push(format!("{}: {:?}", e.uid, e.other));
                }
                if !e.r#type.starts_with("t-x-m") {
                    st.latest.insert(e.uid.clone(), Instant::now());
                }
            }
            if let Some(c) = &fe.contact {
                if c.operation == Crud::Delete as i32 {
                    st.contacts.remove(&c.uid);
                } else if c.operation != Crud::Invalid as i32 {
                    st.contacts.insert(c.uid.clone(), c.callsign.clone());
                }
            }
            st.received.push(fe);
        });
    }

    /// The local groups of something a federate sent with `remote` groups.
    fn mapped(&self, remote: &[String]) -> Vec<String> {
        match &self.inner.opts.group_mapping {
            Some(local) => remote.iter().filter(|g| local.contains(g)).cloned().collect(),
            None => vec!["__ANON__".into()],
        }
    }

    fn receive_rol(&self, rol: Rol) {
        let groups = self.mapped(&rol.federate_groups);
        let head = rol.program.lines().next().unwrap_or_default().to_owned();
        self.inner.with(|st| st.rols.push(rol.clone()));
        let parsed = parse_program(&rol.program).and_then(|(op, res, v)| typed(&op, &res, &v).map(|t| (op, res, v, t)));
        let (op, res, v, kind) = match parsed {
            Ok(x) => x,
            Err(why) => {
                self.inner.with(|st| st.rejected.push((head, why)));
                return;
            }
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let allow_delete = self.inner.opts.allow_federated_delete;
        match (op.as_str(), res.as_str(), kind) {
            ("create", "mission", Kind::MissionMetadata) => {
                let role = v.get("defaultRoleId").and_then(Value::as_i64).unwrap_or(0);
                if role > 3 {
                    self.inner.with(|st| st.rejected.push((head, format!("defaultRoleId {role}: Role.values()[{}] out of bounds", role - 1))));
                    return;
                }
                let expiration = v.get("expiration").and_then(Value::as_i64).unwrap_or(0);
                self.inner.with(|st| {
                    st.missions.entry(s("name")).or_insert(Mission { creator: s("creatorUid"), expiration, tool: s("tool"), groups, ..Default::default() });
                });
            }
            ("create", "resource", Kind::Resource) => {
                // FederationSyncResourceProcessor.processCreate: no payload -> ignored; the
                // stored hash is the SHA-256 of the bytes, whatever the JSON said.
                match rol.payload.first().filter(|b| !b.data.is_empty()) {
                    Some(b) => {
                        let h = hex::encode(ring::digest::digest(&ring::digest::SHA256, &b.data).as_ref());
                        self.inner.with(|st| {
                            if !st.resources.contains(&h) {
                                st.resources.push(h.clone());
                            }
                            st.files.insert(h, (b.data.clone(), v.clone()));
                        });
                    }
                    None => self.inner.with(|st| st.resources_without_content += 1),
                }
            }
            ("update", "mission", Kind::LogEntry) => {
                let e = v["logEntry"].clone();
                let uid = e["entryUid"].as_str().or_else(|| e["id"].as_str()).unwrap_or_default().to_owned();
                match s("missionUpdateDetailsForLogEntryType").as_str() {
                    "ADD_UPDATE_LOG_ENTRY" => self.inner.with(|st| st.logs.insert(uid, e)),
                    _ => self.inner.with(|st| st.logs.remove(&uid)),
                };
            }
            ("announce", "package", Kind::Package) => {
                // createPackageAnnounceCot requires a non-empty sha256.
                if !s("sha256").is_empty() {
                    self.inner.with(|st| st.packages.push(v.clone()));
                }
            }
            ("delete", "mission", Kind::MissionMetadata) if allow_delete => {
                self.inner.with(|st| st.missions.remove(&s("name")));
            }
            ("update", "mission", Kind::MissionUpdateDetails) => {
                let list = |k: &str| -> Vec<String> { v["content"].get(k).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default() };
                let (uids, hashes, name) = (list("uids"), list("hashes"), s("missionName"));
                match s("changeType").as_str() {
                    "ADD_CONTENT" => {
                        self.inner.with(|st| {
                            st.missions.entry(name.clone()).or_insert(Mission { creator: s("missionCreatorUid"), expiration: -1, tool: s("missionTool"), groups, ..Default::default() });
                        });
                        tokio::spawn(add_when_present(self.inner.clone(), name, uids, hashes));
                    }
                    "REMOVE_CONTENT" if allow_delete => self.inner.with(|st| {
                        if let Some(m) = st.missions.get_mut(&name) {
                            // only element 0 of each list
                            if let Some(u) = uids.first() {
                                m.uids.retain(|x| x != u);
                            }
                            if let Some(h) = hashes.first() {
                                m.hashes.retain(|x| x != h);
                            }
                        }
                    }),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// `addMissionContentWhenPresent`: every uid's CoT must exist locally; Spring Retry's
/// defaults give 3 attempts 1 s apart, then "unable to add federated mission uid".
/// Hashes the enterprise sync does not hold are skipped.
async fn add_when_present(inner: Arc<Inner>, mission: String, uids: Vec<String>, hashes: Vec<String>) {
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let done = inner.with(|st| {
            if !uids.iter().all(|u| st.latest.contains_key(u)) {
                return false;
            }
            let held: Vec<String> = hashes.iter().filter(|h| st.resources.contains(h)).cloned().collect();
            if let Some(m) = st.missions.get_mut(&mission) {
                for u in &uids {
                    if !m.uids.contains(u) {
                        m.uids.push(u.clone());
                    }
                }
                for h in held {
                    if !m.hashes.contains(&h) {
                        m.hashes.push(h);
                    }
                }
            }
            true
        });
        if done {
            return;
        }
    }
    inner.with(|st| st.gave_up.extend(uids.into_iter().filter(|u| !st.latest.contains_key(u)).collect::<Vec<_>>()));
}

/// Whether TAK's `ProtoBufHelper` reads `other`: empty, or one XML document (an XML
/// declaration allowed) whose root is `<detail>`.
fn other_is_readable(other: &str) -> bool {
    if other.trim().is_empty() {
        return true;
    }
    let mut r = quick_xml::Reader::from_str(other);
    let (mut depth, mut roots, mut root_ok) = (0usize, 0usize, true);
    loop {
        match r.read_event() {
            Ok(quick_xml::events::Event::Start(e)) => {
                if depth == 0 {
                    roots += 1;
                    root_ok &= e.name().as_ref() == b"detail";
                }
                depth += 1;
            }
            Ok(quick_xml::events::Event::Empty(e)) if depth == 0 => {
                roots += 1;
                root_ok &= e.name().as_ref() == b"detail";
            }
            Ok(quick_xml::events::Event::End(_)) => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Ok(quick_xml::events::Event::Text(t)) if depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => return false,
            Ok(quick_xml::events::Event::Eof) => return depth == 0 && roots == 1 && root_ok,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// `<operation> <resource>` + newline + a JSON object + `;`: one statement, with the
/// parameter block the evaluator needs (a statement without one is ignored by TAK; here,
/// reported).
fn parse_program(p: &str) -> Result<(String, String, Value), String> {
    const OPS: &[&str] = &["create", "add", "remove", "update", "assign", "revoke", "get", "post", "put", "delete", "contains", "request", "announce", "disperse", "store", "enable", "disable"];
    const RESOURCES: &[&str] = &["query", "subscription", "staticsubscription", "role", "priority", "resource", "package", "mission", "input", "federation", "federate", "federated_connection", "data_feed"];
    let brace = p.find('{').ok_or("no parameter block: the evaluator never runs")?;
    let words: Vec<&str> = p[..brace].split_whitespace().collect();
    let [op, res] = words[..] else { return Err(format!("statement head {:?}", &p[..brace])) };
    if !OPS.contains(&op) || !RESOURCES.contains(&res) {
        return Err(format!("syntax: {op} {res}"));
    }
    let body = p[brace..].trim_end();
    let body = body.strip_suffix(';').ok_or("no ';' after the statement (BailErrorStrategy)")?;
    let v: Value = serde_json::from_str(body).map_err(|e| format!("parameters are not JSON: {e}"))?;
    if !v.is_object() {
        return Err("parameters are not an object".into());
    }
    Ok((op.into(), res.into(), v))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    MissionMetadata,
    MissionUpdateDetails,
    /// `com.bbn.marti.sync.model.Resource`
    Resource,
    /// `ResourceDetails` (a `Parameters` subtype)
    Package,
    /// `MissionUpdateDetailsForLogEntry`
    LogEntry,
    /// `MissionHierarchy` (`assign mission`)
    MissionHierarchy,
    Other,
}

const MISSION_HIERARCHY: &[&str] = &["missionName", "parentMissionName"];
const LOG_UPDATE: &[&str] = &["id", "logEntry", "created", "missionUpdateDetailsForLogEntryType"];
const LOG_ENTRY: &[&str] = &["id", "content", "creatorUid", "missionNames", "servertime", "entryUid", "dtg", "created", "contentHashes", "keywords"];
const RESOURCE: &[&str] = &["filename", "keywords", "mimeType", "contentType", "name", "submissionTime", "submitter", "uid", "hash", "size", "creatorUid", "tool", "latitude", "longitude", "altitude", "expiration", "groups"];
const RESOURCE_DETAILS: &[&str] = &["type", "sha256", "senderUid", "name", "filename", "senderUrl", "tsStored", "sizeInBytes", "senderCallsign", "localPath"];

const MISSION_METADATA: &[&str] = &["type", "name", "creatorUid", "description", "chatRoom", "tool", "boundingPolygon", "bbox", "path", "classification", "parentMissionId", "defaultRoleId", "expiration", "passwordHash", "baseLayer", "inviteOnly", "guid"];
const MISSION_UPDATE_DETAILS: &[&str] = &["content", "creatorUid", "changeType", "missionName", "missionCreatorUid", "missionChatRoom", "missionTool", "missionDescription", "date", "xmlContentForNotification"];
const MISSION_CONTENT: &[&str] = &["hashes", "uids", "paths", "after"];
const CHANGE_TYPES: &[&str] = &["CREATE_MISSION", "DELETE_MISSION", "ADD_CONTENT", "REMOVE_CONTENT", "CREATE_DATA_FEED", "DELETE_DATA_FEED"];

fn unknown_keys(v: &Value, known: &[&str]) -> Vec<String> {
    v.as_object().map(|o| o.keys().filter(|k| !known.contains(&k.as_str())).cloned().collect()).unwrap_or_default()
}

/// The class TAK's `MissionEnterpriseSyncRolVisitor` maps mission parameters to, with
/// Jackson's `FAIL_ON_UNKNOWN_PROPERTIES`: the first that takes every property.
fn typed(op: &str, res: &str, v: &Value) -> Result<Kind, String> {
    if res == "resource" || res == "package" {
        // `Parameters` first (ResourceDetails when "type" is absent or says so), then
        // `Resource`; each with FAIL_ON_UNKNOWN_PROPERTIES.
        let t = v.get("type").and_then(Value::as_str);
        if (t.is_none() || t == Some("ResourceDetails")) && unknown_keys(v, RESOURCE_DETAILS).is_empty() {
            return Ok(Kind::Package);
        }
        if t.is_none() && unknown_keys(v, RESOURCE).is_empty() {
            return Ok(Kind::Resource);
        }
        return Err(format!("ROL {op} {res} does not have correct parameters: {}", truncate(&v.to_string())));
    }
    if res != "mission" {
        return Ok(Kind::Other);
    }
    let t = v.get("type").and_then(Value::as_str);
    if t == Some("MissionMetadata") {
        let bad = unknown_keys(v, MISSION_METADATA);
        return if bad.is_empty() { Ok(Kind::MissionMetadata) } else { Err(format!("MissionMetadata: unrecognized properties {bad:?}")) };
    }
    if t.is_none() && unknown_keys(v, MISSION_UPDATE_DETAILS).is_empty() {
        if let Some(c) = v.get("content") {
            let bad = unknown_keys(c, MISSION_CONTENT);
            if !bad.is_empty() {
                return Err(format!("MissionContent: unrecognized properties {bad:?}"));
            }
        }
        let ct = v.get("changeType").and_then(Value::as_str).unwrap_or_default();
        if !CHANGE_TYPES.contains(&ct) {
            return Err(format!("MissionChangeType has no value {ct:?}"));
        }
        if let Some(d) = v.get("date") {
            if !(d.is_i64() || d.is_string() || d.is_null()) {
                return Err(format!("date {d}"));
            }
        }
        return Ok(Kind::MissionUpdateDetails);
    }
    if t.is_none() && op == "assign" && unknown_keys(v, MISSION_HIERARCHY).is_empty() {
        return Ok(Kind::MissionHierarchy);
    }
    // MissionHierarchy, ...ForExternalData, ...ForMapLayer, ...ForMissionLayer each fail on a
    // log entry's properties; then MissionUpdateDetailsForLogEntry, whose enum and LogEntry
    // class refuse what they do not know.
    if t.is_none() && unknown_keys(v, LOG_UPDATE).is_empty() {
        let bad = unknown_keys(&v["logEntry"], LOG_ENTRY);
        if !bad.is_empty() {
            return Err(format!("LogEntry: unrecognized properties {bad:?}"));
        }
        let lt = v.get("missionUpdateDetailsForLogEntryType").and_then(Value::as_str).unwrap_or_default();
        if !["ADD_UPDATE_LOG_ENTRY", "DELETE_LOG_ENTRY"].contains(&lt) {
            return Err(format!("MissionUpdateDetailsForLogEntryType has no value {lt:?}"));
        }
        for k in ["servertime", "dtg", "created"] {
            if v["logEntry"].get(k).is_some_and(|d| !(d.is_string() || d.is_null())) {
                return Err(format!("LogEntry.{k}: a date string is expected, got {}", v["logEntry"][k]));
            }
        }
        return Ok(Kind::LogEntry);
    }
    Err(format!("ROL {op} {res} does not have correct parameters: {}", truncate(&v.to_string())))
}

fn truncate(s: &str) -> &str {
    s.get(..160).unwrap_or(s)
}

#[tonic::async_trait]
impl FederatedChannel for Svc {
    async fn send_one_event(&self, _r: Request<FederatedEvent>) -> Result<Response<Empty>, Status> {
        self.record("SendOneEvent");
        self.close.cancelled().await;
        Err(Status::cancelled(""))
    }
    type BinaryMessageStreamStream = Out<Empty>;
    async fn binary_message_stream(&self, _r: Request<Streaming<BinaryBlob>>) -> Result<Response<Self::BinaryMessageStreamStream>, Status> {
        self.record("BinaryMessageStream");
        Ok(Response::new(Box::pin(futures_util::stream::pending())))
    }
    async fn send_one_blob(&self, _r: Request<BinaryBlob>) -> Result<Response<Empty>, Status> {
        self.record("SendOneBlob");
        self.close.cancelled().await;
        Err(Status::cancelled(""))
    }
    async fn get_identity(&self, _r: Request<Empty>) -> Result<Response<Identity>, Status> {
        Err(Status::unimplemented(""))
    }
    /// Never reached: `Gate` serves this path itself (a reply without completion is not
    /// expressible as a unary handler).
    async fn health_check(&self, _r: Request<ClientHealth>) -> Result<Response<ServerHealth>, Status> {
        Err(Status::unimplemented("HealthCheck is served by Gate"))
    }

    type ClientEventStreamStream = Out<FederatedEvent>;
    async fn client_event_stream(&self, r: Request<Subscription>) -> Result<Response<Self::ClientEventStreamStream>, Status> {
        self.record("ClientEventStream");
        let sub = r.into_inner();
        Self::named(&sub)?;
        let major = sub.version.as_ref().map(|v| v.major).unwrap_or(0);
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.with(|st| {
            st.version_major.push(major);
            if let Some(s) = st.sessions.get_mut(&self.conn) {
                s.events = Some(tx);
                s.events_major = major;
                s.events_health = (Instant::now(), true);
                if s.subscribed {
                    Self::snapshot(st, self.conn);
                }
            }
        });
        self.lazy(rx).await
    }

    type ServerEventStreamStream = Out<Subscription>;
    async fn server_event_stream(&self, r: Request<Streaming<FederatedEvent>>) -> Result<Response<Self::ServerEventStreamStream>, Status> {
        self.record("ServerEventStream");
        let duplicate = self.inner.with(|st| {
            let dup = st.sessions.iter().any(|(id, s)| *id != self.conn && s.fingerprint == self.fingerprint && s.subscribed);
            if dup {
                st.duplicates += 1;
                return true;
            }
            let groups = self.inner.opts.group_mapping.clone();
            if let Some(s) = st.sessions.get_mut(&self.conn) {
                s.subscribed = true;
                if let (Some(g), Some(tx)) = (groups, &s.groups) {
                    let _ = tx.send(Ok(FederateGroups { federate_groups: g, ..Default::default() }));
                }
            }
            Self::snapshot(st, self.conn);
            false
        });
        if duplicate {
            return Err(Status::unknown("duplicate federate connection"));
        }
        self.read_all(r.into_inner(), Svc::receive_event);
        Ok(Response::new(reply_and_hold(self.session_reply(), self.close.clone())))
    }

    type ClientROLStreamStream = Out<Rol>;
    async fn client_rol_stream(&self, r: Request<Subscription>) -> Result<Response<Self::ClientROLStreamStream>, Status> {
        self.record("ClientROLStream");
        Self::named(&r.into_inner())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let replay = self.inner.with(|st| {
            st.rol_opens += 1;
            if let Some(s) = st.sessions.get_mut(&self.conn) {
                s.rol = Some(tx.clone());
                s.rol_health = (Instant::now(), true);
            }
            match self.inner.opts.rol {
                RolMode::Silent => vec![],
                RolMode::Replay => st.replay.clone(),
                RolMode::Hub => {
                    let from = st.replayed.get(&self.fingerprint).copied().unwrap_or(0);
                    st.replayed.insert(self.fingerprint.clone(), st.replay.len());
                    st.replay[from.min(st.replay.len())..].to_vec()
                }
            }
        });
        let (mode, delay, me) = (self.inner.opts.rol, self.inner.opts.health_interval, self.clone());
        match mode {
            RolMode::Silent => {}
            RolMode::Replay => {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    for r in replay {
                        let _ = tx.send(Ok(r));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
            }
            RolMode::Hub => {
                tokio::spawn(async move {
                    for r in replay {
                        let _ = tx.send(Ok(r));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    // "All ROLs sent; completing stream."
                    me.inner.with(|st| {
                        st.rol_completed += 1;
                        if let Some(s) = st.sessions.get_mut(&me.conn) {
                            s.rol = None;
                        }
                    });
                    drop(tx);
                });
            }
        }
        self.lazy(rx).await
    }

    type ServerROLStreamStream = Out<Subscription>;
    async fn server_rol_stream(&self, r: Request<Streaming<Rol>>) -> Result<Response<Self::ServerROLStreamStream>, Status> {
        self.record("ServerROLStream");
        self.read_all(r.into_inner(), Svc::receive_rol);
        Ok(Response::new(reply_and_hold(self.session_reply(), self.close.clone())))
    }

    type ServerFederateGroupsStreamStream = Out<FederateGroups>;
    async fn server_federate_groups_stream(&self, r: Request<Subscription>) -> Result<Response<Self::ServerFederateGroupsStreamStream>, Status> {
        self.record("ServerFederateGroupsStream");
        Self::named(&r.into_inner())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Ok(FederateGroups { stream_update: Some(ServerHealth { status: server_health::ServingStatus::Serving as i32 }), ..Default::default() }));
        self.inner.with(|st| {
            if let Some(s) = st.sessions.get_mut(&self.conn) {
                s.groups = Some(tx);
            }
        });
        self.lazy(rx).await
    }

    type ClientFederateGroupsStreamStream = Out<Subscription>;
    async fn client_federate_groups_stream(&self, r: Request<Streaming<FederateGroups>>) -> Result<Response<Self::ClientFederateGroupsStreamStream>, Status> {
        self.record("ClientFederateGroupsStream");
        // the remote groups are suggestions in TAK's UI: read and let go
        self.read_all(r.into_inner(), |_, _| {});
        Ok(Response::new(reply_and_hold(self.session_reply(), self.close.clone())))
    }
    async fn get_auth_token_by_x509(&self, _r: Request<BinaryBlob>) -> Result<Response<FederateTokenResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn getx509_identity(&self, _r: Request<Empty>) -> Result<Response<BinaryBlob>, Status> {
        Err(Status::unimplemented(""))
    }
}

/// A position report as a TAK Server federates it: `other` is the remaining `<detail>`
/// element, tag included; speed and course in their fields.
pub fn geo(uid: &str, callsign: &str, seq: u32) -> FederatedEvent {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    FederatedEvent {
        event: Some(GeoEvent {
            send_time: now + seq as i64,
            start_time: now + seq as i64,
            stale_time: now + 120_000,
            lat: 30.0,
            lon: 40.0,
            hae: 9999999.0,
            ce: 9999999.0,
            le: 9999999.0,
            uid: uid.into(),
            r#type: "a-f-G-U-C".into(),
            coord_source: "m-g".into(),
            other: format!(r#"<detail><contact callsign="{callsign}" endpoint="*:-1:stcp"/><remarks>seq={seq}</remarks></detail>"#),
            ..Default::default()
        }),
        federate_provenance: vec![FederateProvenance { federation_server_id: "tak-conformance".into(), federation_server_name: "tak".into() }],
        ..Default::default()
    }
}

fn rol(program: String) -> Rol {
    Rol { program, ..Default::default() }
}

/// `create mission` as `MissionActionROLConverter.missionToROLMissionMetadata` writes it.
pub fn create_mission(name: &str, creator: &str) -> Rol {
    let p = serde_json::json!({"type": "MissionMetadata", "name": name, "creatorUid": creator, "description": "", "chatRoom": "", "tool": "public", "boundingPolygon": "", "bbox": "", "path": "", "classification": "", "parentMissionId": 0, "defaultRoleId": 2, "expiration": -1, "passwordHash": "", "baseLayer": "", "inviteOnly": false, "guid": null});
    rol(format!("create mission\n{p};"))
}

/// `update mission` as TAK's API writes it: whole lists, and a date only when it has one.
pub fn update_mission(change: &str, mission: &str, uids: &[&str], hashes: &[&str], date: Option<i64>) -> Rol {
    let mut p = serde_json::json!({"content": {"hashes": hashes, "uids": uids}, "creatorUid": "TAK-API", "changeType": change, "missionName": mission, "missionCreatorUid": "TAK-API", "missionChatRoom": "", "missionTool": "public", "missionDescription": ""});
    if let Some(d) = date {
        p["date"] = d.into();
    }
    rol(format!("update mission\n{p};"))
}

/// `create resource` as `MissionActionROLConverter.getInsertResourceROL` writes it (the
/// Resource JSON of the e-sync Metadata, payload[0] a BinaryBlob with only `data`); the
/// file's SHA-256 with it.
pub fn create_resource(bytes: &[u8], name: &str) -> (Rol, String) {
    let hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    let p = serde_json::json!({"filename": name, "keywords": ["mission"], "mimeType": "application/octet-stream", "name": name, "submissionTime": "2026-12-01T10:00:00.5Z", "submitter": "tak-user", "uid": hash, "hash": hash, "size": bytes.len(), "creatorUid": "ANDROID-TAK", "tool": "public"});
    let mut r = rol(format!("create resource\n{p};"));
    r.payload.push(BinaryBlob { data: bytes.to_vec(), ..Default::default() });
    (r, hash)
}

/// A log entry change as `MissionActionROLConverter` writes it (MissionUpdateDetailsForLogEntry).
pub fn log_entry(kind: &str, mission: &str, entry_uid: &str, content: &str) -> Rol {
    let e = serde_json::json!({"id": entry_uid, "content": content, "creatorUid": "ANDROID-TAK", "missionNames": [mission], "servertime": "2026-12-01T10:00:00.000Z", "entryUid": entry_uid, "dtg": "2026-12-01T09:59:00.000Z", "created": "2026-12-01T10:00:00.000Z", "contentHashes": [], "keywords": ["tak"]});
    let p = serde_json::json!({"id": entry_uid, "logEntry": e, "created": 1_764_583_200_000i64, "missionUpdateDetailsForLogEntryType": kind});
    rol(format!("update mission\n{p};"))
}

/// `announce package` as `GroupFederationUtil.generatePackageAnnounceROL` writes it.
pub fn announce_package(sha256: &str, name: &str, size: usize, callsigns: &[&str], uids: &[&str]) -> Rol {
    let dest = serde_json::json!({"callsigns": callsigns, "uids": uids}).to_string();
    let p = serde_json::json!({"type": "ResourceDetails", "sha256": sha256, "senderUid": dest, "name": name, "filename": name, "senderUrl": "", "tsStored": 1_764_000_000_000i64, "sizeInBytes": size, "senderCallsign": "TAKUSER"});
    rol(format!("announce package\n{p};"))
}

/// Whether TAK's ROL parser and its JSON mapping take `rol` (the reason when not).
pub fn accepts(rol: &Rol) -> Result<(), String> {
    parse_program(&rol.program).and_then(|(op, res, v)| typed(&op, &res, &v)).map(|_| ())
}

/// What TAK's client role injects from an ROL's payloads (`TakFigClient`, clientROLStream
/// `onNext`): the CoT, only when an OTHER-typed `CotEventContainer` blob parses as XML and
/// an OTHER-typed `GroupsPayload` blob parses as its JSON.
pub fn client_role_injects(rol: &Rol) -> Option<String> {
    let mut cot = None;
    let mut groups = None;
    for b in &rol.payload {
        if b.r#type != BinaryTypes::Other as i32 {
            continue;
        }
        if b.description == "tak.server.cot.CotEventContainer" {
            let s = String::from_utf8(b.data.clone()).ok()?;
            let mut r = quick_xml::Reader::from_str(&s);
            let mut ok = false;
            loop {
                match r.read_event() {
                    Ok(quick_xml::events::Event::Start(e)) if !ok => ok = e.name().as_ref() == b"event",
                    Ok(quick_xml::events::Event::Eof) => break,
                    Err(_) => return None,
                    _ => {}
                }
            }
            if ok {
                cot = Some(s);
            }
        } else if b.description == "com.bbn.marti.remote.util.GroupsPayload" {
            let v: Value = serde_json::from_slice(&b.data).ok()?;
            let list = v.get("groups")?.as_array()?;
            if list.iter().all(|g| g.get("name").and_then(Value::as_str).is_some()) {
                groups = Some(list.len());
            }
        }
    }
    groups.and(cot)
}
