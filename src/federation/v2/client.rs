//! The v2 client role: one HTTP/2 connection for every call of a session.

use super::*;

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

/// Starts a bidirectional call whose replies we only drain; its end is reported on `ev`
/// (an UNIMPLEMENTED answer is ignored when `optional`). The call is polled once here, so
/// its request is handed to the connection before whatever we call next (TAK's order).
async fn spawn_call<R: Send + 'static>(what: &'static str, call: impl std::future::Future<Output = Result<Response<Streaming<R>>, Status>> + Send + 'static, ev: mpsc::Sender<Ev>, session: CancellationToken, optional: bool) {
    let mut call = Box::pin(call);
    let first = futures_util::poll!(call.as_mut());
    tokio::spawn(async move {
        let r = match first {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => tokio::select! {
                _ = session.cancelled() => return,
                r = call => r,
            },
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
    spawn_call("ClientFederateGroupsStream", { let mut c = client.clone(); async move { c.client_federate_groups_stream(recv_stream(grp_rx)).await } }, ev_tx.clone(), session.clone(), true).await;
    // A server starts each call's handler on its own task, and two requests that arrive in
    // one read may start in either order; a short gap keeps TAK's order at the server too.
    tokio::time::sleep(Duration::from_millis(25)).await;
    // 2. ClientEventStream, with a version so TAK answers our health checks.
    let mut events_in = Some(client.client_event_stream(versioned.clone()).await.map_err(|st| describe("ClientEventStream", &st))?.into_inner());
    // 3. Health checks; each SERVING answer confirms the mission changes written before it
    // was asked.
    let receipts = sh.missions.as_ref().map(|m| crate::missions::Receipts::new(m.store.clone()));
    {
        let (mut c, ev, stop, every, receipts) = (client.clone(), ev_tx.clone(), session.clone(), s.health_interval, receipts.clone());
        let patience = s.health_timeout.max(every);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let asked = Instant::now();
                let r = match tokio::time::timeout(patience, c.health_check(ClientHealth { status: client_health::ServingStatus::Serving as i32 })).await {
                    Ok(Ok(h)) => {
                        let st = h.into_inner().status;
                        if st == server_health::ServingStatus::Serving as i32 {
                            if let Some(r) = &receipts {
                                r.confirm_before(asked.into_std());
                            }
                        }
                        Ok(st)
                    }
                    Ok(Err(st)) => Err(describe("HealthCheck", &st)),
                    Err(_) => Err(format!("HealthCheck: no answer within {:.0} s (does the server need a Subscription version? is it alive? a slow link may need a higher health_timeout_secs)", patience.as_secs_f64())),
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
    spawn_call("ServerROLStream", { let mut c = client.clone(); async move { c.server_rol_stream(rol_out).await } }, ev_tx.clone(), session.clone(), false).await;

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
                        if let (Some(m), Some(id), Some(r)) = (&sh.missions, sh.server_id, &receipts) {
                            tokio::spawn(m.clone().deliver(id, rol_tx.clone(), r.clone(), session.clone()));
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
    spawn_call("ServerEventStream", { let mut c = client.clone(); async move { c.server_event_stream(out).await } }, ev.clone(), session.clone(), false).await;
}

fn recv_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}
