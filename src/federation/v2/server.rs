//! The v2 server role: one federate session per TLS connection.

use super::*;

// ---------------------------------------------------------------------------------------
// Server

struct ConnState {
    /// The open ClientEventStream and ClientROLStream.
    events: Option<CancellationToken>,
    rol: Option<CancellationToken>,
    last_health: Instant,
    peer_name: String,
    /// When we answered the last SERVING health check.
    last_answer: Option<Instant>,
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
    /// Mission changes written to this federate, confirmed by its health checks.
    receipts: Option<Arc<crate::missions::Receipts>>,
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
            let now = Instant::now();
            st.last_health = now;
            // The client asks again only after our last answer arrived, and that answer
            // went after everything written before it.
            if let (Some(prev), Some(r)) = (st.last_answer.replace(now), &self.receipts) {
                r.confirm_before(prev.into_std());
            }
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
                    let receipts = self.receipts.clone().unwrap_or_else(|| crate::missions::Receipts::new(m.store.clone()));
                    tokio::spawn(m.clone().deliver(server_id, tx, receipts, token.clone()));
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
        st: Mutex::new(ConnState { events: None, rol: None, last_health: Instant::now(), peer_name: String::new(), last_answer: None }),
        receipts: sh.missions.as_ref().map(|m| crate::missions::Receipts::new(m.store.clone())),
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
