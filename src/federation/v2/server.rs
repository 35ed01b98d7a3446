//! The v2 server role: one federate session per TLS connection, its rules in a
//! [`ServerSession`] shared by the RPC handlers. ServerFederateGroupsStream answers SERVING
//! first; ClientEventStream is the outbound event stream (contact snapshot and latest SA
//! first); ServerEventStream, ServerROLStream and ClientFederateGroupsStream answer their
//! `Subscription` at once and stay open; HealthCheck answers what the session says. A
//! watchdog ends the outbound streams with DEADLINE_EXCEEDED when health checks stop, then
//! closes the connection; an inbound stream that fails ends the session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinSet;
use tonic::{Request, Response, Streaming};

use super::*;
use crate::federation::fig::federated_channel_server::{FederatedChannel, FederatedChannelServer};
use crate::federation::fig::{client_health, server_health, BinaryBlob, ClientHealth, Empty, FederateGroups, FederateTokenResponse, ServerHealth, Subscription};
use crate::federation::shared::{admit, attach_federate, receive, RemoteContacts};
use crate::link::{log_bad_input, Codec, PeerIdentity};
use crate::missions::Receipts;
use crate::session::federate::{Call, End, Health, ServerConfig, ServerSession};

/// One federate connection (server role): the `FederatedChannel` service of that session.
struct Conn {
    sh: Arc<Shared>,
    /// Router peer id of the session.
    id: u64,
    serial: u64,
    remote: String,
    identity: PeerIdentity,
    session: CancellationToken,
    rules: Mutex<ServerSession>,
    /// Set when the outbound streams must end with DEADLINE_EXCEEDED.
    expired: Arc<AtomicBool>,
    /// The open ClientEventStream and ClientROLStream (cancelled to end them).
    outbound: Mutex<(Option<CancellationToken>, Option<CancellationToken>)>,
    generation: Arc<AtomicU64>,
    peer_name: Mutex<String>,
    /// Mission changes written to this federate, confirmed by its health checks.
    receipts: Option<Arc<Receipts>>,
    contacts: Arc<RemoteContacts>,
    inject: Arc<Inject>,
    /// Wakes the watchdog when the session's deadlines move.
    changed: Notify,
    tasks: Mutex<JoinSet<()>>,
}

impl Conn {
    fn name(&self) -> String {
        let n = lock(&self.peer_name).clone();
        if n.is_empty() {
            self.identity.federate_name()
        } else {
            n
        }
    }

    fn check_name(&self, sub: &Subscription, rpc: &str) -> Result<String, Status> {
        let id = sub.identity.as_ref();
        let name = id.map(|i| i.name.clone()).unwrap_or_default();
        if name.is_empty() {
            log_bad_input(LinkCounters::inc(&self.sh.s.counters.decode_errors), &self.sh.s.link, &self.remote, &format!("{rpc}: Subscription.identity.name is empty"));
            return Err(Status::invalid_argument(format!("{rpc}: Subscription.identity.name must not be empty")));
        }
        self.sh.check_peer_id(id.map(|i| i.server_id.as_str()).unwrap_or(""), &self.remote);
        Ok(name)
    }

    fn reply(&self) -> Subscription {
        Subscription { identity: Some(self.sh.our_identity(identity::ConnectionType::FederationTakServer, self.serial.to_string())), filter: String::new(), version: Some(our_version()) }
    }

    /// A new outbound stream replaces the old one of its kind.
    fn outbound(&self, call: Call) -> CancellationToken {
        let token = self.session.child_token();
        let mut o = lock(&self.outbound);
        let slot = if call == Call::ClientEvents { &mut o.0 } else { &mut o.1 };
        if let Some(old) = slot.replace(token.clone()) {
            old.cancel();
        }
        token
    }

    /// Consumes an inbound stream in a task of the session until it ends; the end (or
    /// failure) of one of the session's streams (`call`) ends the session.
    fn consume<T: Send + 'static>(self: &Arc<Self>, mut inbound: Streaming<T>, call: Option<Call>, mut each: impl FnMut(T) -> futures_util::future::BoxFuture<'static, ()> + Send + 'static) {
        let me = self.clone();
        lock(&self.tasks).spawn(async move {
            let end = loop {
                let m = tokio::select! {
                    _ = me.session.cancelled() => return,
                    m = inbound.message() => m,
                };
                match m {
                    Ok(Some(x)) => each(x).await,
                    Ok(None) => break End::Completed,
                    Err(e) => break End::Failed(e.to_string()),
                }
            };
            if let Some(call) = call {
                tracing::debug!(link = %me.sh.s.link, remote = %me.remote, "{} ended: {end:?}", call.name());
                lock(&me.rules).handle_inbound_end(call, end);
                me.changed.notify_one();
            }
        });
    }

    fn serving(&self, client_health: &ClientHealth) -> ServerHealth {
        let client_serving = client_health.status == client_health::ServingStatus::Serving as i32;
        let (h, confirm) = lock(&self.rules).handle_health(client_serving, Instant::now());
        if let (Some(t), Some(r)) = (confirm, &self.receipts) {
            r.confirm_before(t);
        }
        self.changed.notify_one();
        let status = match h {
            Health::Serving => server_health::ServingStatus::Serving,
            Health::NotServing => server_health::ServingStatus::NotServing,
            Health::NotConnected => server_health::ServingStatus::NotConnected,
            Health::Unknown => server_health::ServingStatus::Unknown,
        };
        ServerHealth { status: status as i32 }
    }

    /// Refuses a second connection of a federate that has an active one.
    fn refuse_duplicate(&self) -> Result<(), Status> {
        let fp = self.identity.fingerprint.clone();
        let mut active = lock(&self.sh.active);
        match active.get(&fp) {
            Some(&other) if other != self.serial => {
                let why = format!("federate {} ({fp}) already has an active connection: duplicate refused", self.identity.federate_name());
                log_bad_input(LinkCounters::inc(&self.sh.s.counters.decode_errors), &self.sh.s.link, &self.remote, &why);
                self.session.cancel();
                Err(Status::already_exists(why))
            }
            _ => {
                active.insert(fp, self.serial);
                Ok(())
            }
        }
    }
}

/// The service of one connection (tonic wants a type it can share).
struct Svc(Arc<Conn>);

#[tonic::async_trait]
impl FederatedChannel for Svc {
    async fn send_one_event(&self, request: Request<FederatedEvent>) -> Result<Response<Empty>, Status> {
        // TAK Server counts and drops these without replying; we route the event and answer.
        let c = &self.0;
        receive(request.into_inner(), c.id, &c.sh.s, &c.sh.router, &c.contacts).await;
        Ok(Response::new(Empty {}))
    }

    type BinaryMessageStreamStream = Out<Empty>;
    async fn binary_message_stream(&self, request: Request<Streaming<BinaryBlob>>) -> Result<Response<Self::BinaryMessageStreamStream>, Status> {
        let (link, counters) = (self.0.sh.s.link.clone(), self.0.sh.s.counters.clone());
        self.0.consume(request.into_inner(), None, move |b: BinaryBlob| {
            LinkCounters::inc(&counters.filtered);
            tracing::debug!(%link, bytes = b.data.len(), "binary blob not handled (as TAK Server)");
            Box::pin(async {})
        });
        Ok(Response::new(then_hold(vec![], self.0.session.clone())))
    }

    async fn send_one_blob(&self, request: Request<BinaryBlob>) -> Result<Response<Empty>, Status> {
        LinkCounters::inc(&self.0.sh.s.counters.filtered);
        tracing::debug!(link = %self.0.sh.s.link, bytes = request.get_ref().data.len(), "binary blob not handled (as TAK Server)");
        Ok(Response::new(Empty {}))
    }

    async fn get_identity(&self, _request: Request<Empty>) -> Result<Response<Identity>, Status> {
        Ok(Response::new(self.0.sh.our_identity(identity::ConnectionType::FederationTakServer, self.0.serial.to_string())))
    }

    type ClientEventStreamStream = Out<FederatedEvent>;
    async fn client_event_stream(&self, request: Request<Subscription>) -> Result<Response<Self::ClientEventStreamStream>, Status> {
        let c = &self.0;
        let sub = request.into_inner();
        let name = c.check_name(&sub, "ClientEventStream")?;
        if sub.version.as_ref().is_none_or(|v| v.major <= 0) {
            tracing::warn!(link = %c.sh.s.link, remote = %c.remote, federate = %name, "ClientEventStream without a Subscription version (major > 0): TAK Server would never answer this federate's health checks; takgate answers them");
        }
        let s = c.sh.s.clone();
        let token = c.outbound(Call::ClientEvents);
        let generation = c.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *lock(&c.peer_name) = name.clone();
        lock(&c.rules).handle_events_open(Instant::now());
        c.expired.store(false, Ordering::Relaxed);
        c.changed.notify_one();
        let (snapshot, rx) = attach_federate(&c.sh.router, &s, c.id, Codec::FigGrpc, "federation-v2", &c.remote, Some(c.identity.clone()), token.clone()).await;
        tracing::info!(link = %s.link, remote = %c.remote, federate = %name, snapshot = snapshot.len(), "federate subscribed to events");
        let mut out = EventOut::new(&snapshot, None, rx, c.inject.clone(), s, token);
        out.expired = Some(c.expired.clone());
        out._guard = Some(DetachGuard { router: c.sh.router.clone(), id: c.id, generation, current: c.generation.clone() });
        Ok(Response::new(Box::pin(out.stream())))
    }

    type ServerEventStreamStream = Out<Subscription>;
    async fn server_event_stream(&self, request: Request<Streaming<FederatedEvent>>) -> Result<Response<Self::ServerEventStreamStream>, Status> {
        let c = &self.0;
        c.refuse_duplicate()?;
        let (id, sh, contacts) = (c.id, c.sh.clone(), c.contacts.clone());
        c.consume(request.into_inner(), Some(Call::ServerEvents), move |fe: FederatedEvent| {
            let (sh, contacts) = (sh.clone(), contacts.clone());
            Box::pin(async move {
                LinkCounters::add(&sh.s.counters.bytes_in, fe.encoded_len() as u64);
                receive(fe, id, &sh.s, &sh.router, &contacts).await
            })
        });
        Ok(Response::new(then_hold(vec![c.reply()], c.session.clone())))
    }

    async fn health_check(&self, request: Request<ClientHealth>) -> Result<Response<ServerHealth>, Status> {
        Ok(Response::new(self.0.serving(request.get_ref())))
    }

    type ClientROLStreamStream = Out<Rol>;
    async fn client_rol_stream(&self, request: Request<Subscription>) -> Result<Response<Self::ClientROLStreamStream>, Status> {
        let c = &self.0;
        let name = c.check_name(request.get_ref(), "ClientROLStream")?;
        let token = c.outbound(Call::ClientRol);
        lock(&c.rules).handle_rol_open(Instant::now());
        c.changed.notify_one();
        let (tx, rx) = mpsc::channel(256);
        tracing::info!(link = %c.sh.s.link, remote = %c.remote, federate = %name, "federate subscribed to ROL");
        if let Some(m) = &c.sh.missions {
            match m.inbound_server(&c.sh.s.link, &c.identity.fingerprint, &c.identity.federate_name(), &c.sh.s.policy) {
                Ok(server_id) => {
                    let receipts = c.receipts.clone().unwrap_or_else(|| Receipts::new(m.store.clone()));
                    lock(&c.tasks).spawn(m.clone().deliver(server_id, tx, receipts, token.clone()));
                }
                Err(e) => tracing::error!(link = %c.sh.s.link, "mission queue unavailable for {name}: {e}"),
            }
        }
        Ok(Response::new(Box::pin(rol_stream(rx, c.sh.clone(), c.inject.clone(), token, Some(c.expired.clone())))))
    }

    type ServerROLStreamStream = Out<Subscription>;
    async fn server_rol_stream(&self, request: Request<Streaming<Rol>>) -> Result<Response<Self::ServerROLStreamStream>, Status> {
        let c = &self.0;
        let (sh, name) = (c.sh.clone(), c.name());
        // the federate's server row: what it sends is never relayed back to it
        let origin = c.sh.missions.as_ref().and_then(|m| m.inbound_server(&c.sh.s.link, &c.identity.fingerprint, &c.identity.federate_name(), &c.sh.s.policy).ok());
        c.consume(request.into_inner(), Some(Call::ServerRol), move |r: Rol| {
            let (sh, name) = (sh.clone(), name.clone());
            Box::pin(async move { sh.handle_rol(&name, origin, r).await })
        });
        Ok(Response::new(then_hold(vec![c.reply()], c.session.clone())))
    }

    type ServerFederateGroupsStreamStream = Out<FederateGroups>;
    async fn server_federate_groups_stream(&self, request: Request<Subscription>) -> Result<Response<Self::ServerFederateGroupsStreamStream>, Status> {
        let c = &self.0;
        *lock(&c.peer_name) = c.check_name(request.get_ref(), "ServerFederateGroupsStream")?;
        let mut items = vec![FederateGroups { stream_update: Some(ServerHealth { status: server_health::ServingStatus::Serving as i32 }), ..Default::default() }];
        if !c.sh.s.outbound_group_names.is_empty() {
            items.push(FederateGroups { federate_groups: c.sh.s.outbound_group_names.clone(), ..Default::default() });
        }
        Ok(Response::new(then_hold(items, c.session.clone())))
    }

    type ClientFederateGroupsStreamStream = Out<Subscription>;
    async fn client_federate_groups_stream(&self, request: Request<Streaming<FederateGroups>>) -> Result<Response<Self::ClientFederateGroupsStreamStream>, Status> {
        let c = &self.0;
        let (link, remote) = (c.sh.s.link.clone(), c.remote.clone());
        c.consume(request.into_inner(), Some(Call::ClientFederateGroups), move |g: FederateGroups| {
            tracing::info!(%link, %remote, groups = ?g.federate_groups, "federate announced its groups");
            Box::pin(async {})
        });
        Ok(Response::new(then_hold(vec![c.reply()], c.session.clone())))
    }

    async fn get_auth_token_by_x509(&self, _request: Request<BinaryBlob>) -> Result<Response<FederateTokenResponse>, Status> {
        Err(Status::unimplemented("token authentication is not supported: federates authenticate with mutual TLS certificates"))
    }

    async fn getx509_identity(&self, _request: Request<Empty>) -> Result<Response<BinaryBlob>, Status> {
        Ok(Response::new(BinaryBlob { data: self.0.sh.s.own_cert.clone(), ..Default::default() }))
    }
}

/// Serves one accepted federation v2 connection (after TLS) until it closes.
pub(super) async fn serve(conn: crate::link::listen::Conn, sh: Arc<Shared>) {
    let crate::link::listen::Conn { io, remote, identity, cancel } = conn;
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
        rules: Mutex::new(ServerSession::new(ServerConfig { health_timeout: sh.s.health_timeout }, Instant::now())),
        expired: Arc::default(),
        outbound: Mutex::default(),
        generation: Arc::default(),
        peer_name: Mutex::default(),
        receipts: sh.missions.as_ref().map(|m| Receipts::new(m.store.clone())),
        contacts: Arc::default(),
        inject: Inject::new(sh.missions.clone()),
        changed: Notify::new(),
        tasks: Mutex::new(JoinSet::new()),
    });
    tracing::info!(link = %sh.s.link, %remote, federate = %identity.federate_name(), fingerprint = %identity.fingerprint, "federate connected (v2)");
    let h = http2(io, &conn);
    tokio::pin!(h);
    let reason = tokio::select! {
        r = &mut h => r,
        why = watchdog(&conn) => {
            // The rules ended the session: HTTP/2 closes gracefully (statuses go out first).
            session.cancel();
            let _ = (&mut h).await;
            why
        }
    };
    session.cancel();
    {
        let mut active = lock(&sh.active);
        if active.get(&identity.fingerprint) == Some(&serial) {
            active.remove(&identity.fingerprint);
        }
    }
    conn.generation.fetch_add(1, Ordering::Relaxed);
    lock(&conn.tasks).abort_all();
    sh.router.detach(conn.id).await;
    conn.contacts.gone(conn.id, &sh.s, &sh.router).await;
    tracing::info!(link = %sh.s.link, %remote, federate = %conn.name(), %reason, "federate disconnected (v2)");
}

/// Serves the HTTP/2 connection until it ends or the session is cancelled.
async fn http2(io: Box<dyn crate::link::Io>, conn: &Arc<Conn>) -> String {
    let max = conn.sh.s.max_frame;
    let svc = FederatedChannelServer::new(Svc(conn.clone())).max_decoding_message_size(max).max_encoding_message_size(max);
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.initial_stream_window_size(4 << 20).initial_connection_window_size(8 << 20).max_frame_size(256 << 10).max_send_buf_size(1 << 20);
    let fut = b.serve_connection(TokioIo::new(io), hyper_util::service::TowerToHyperService::new(svc));
    tokio::pin!(fut);
    tokio::select! {
        r = &mut fut => match r {
            Ok(()) => "closed by the federate".to_string(),
            Err(e) => format!("HTTP/2 error: {e}"),
        },
        _ = conn.session.cancelled() => {
            fut.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut fut).await;
            "closed".to_string()
        }
    }
}

/// Follows the session's deadlines: ends the outbound streams with DEADLINE_EXCEEDED when
/// health checks stop (as TAK Server), then the connection; ends the session when its rules
/// say so (an inbound stream failed).
async fn watchdog(conn: &Arc<Conn>) -> String {
    loop {
        let wake = {
            let mut r = lock(&conn.rules);
            r.handle_timeout(Instant::now());
            if r.expired() && !conn.expired.swap(true, Ordering::Relaxed) {
                tracing::warn!(link = %conn.sh.s.link, remote = %conn.remote, federate = %conn.name(), "no health check for {:.0} s: closing the federate's streams (DEADLINE_EXCEEDED) and the connection", conn.sh.s.health_timeout.as_secs_f64());
                let o = lock(&conn.outbound);
                for t in [&o.0, &o.1].into_iter().flatten() {
                    t.cancel();
                }
            }
            if let Some(why) = r.closed() {
                return why.to_owned();
            }
            r.poll_timeout()
        };
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = conn.changed.notified() => {}
        }
    }
}
