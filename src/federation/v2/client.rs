//! The v2 client role: one HTTP/2 connection for every call of a session, driven by a
//! [`ClientSession`]. Each call runs in a task of the session's own set (ended with it):
//! the task hands the call's request to the connection at once (TAK's order), reads what
//! the call returns (events and ROL are handled right there), and reports to the session
//! loop only what its rules need: groups, health replies, and how calls end. The loop
//! never waits on a reply.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Code, Response, Status, Streaming};

use super::*;
use crate::federation::fig::federated_channel_client::FederatedChannelClient;
use crate::federation::fig::{client_health, server_health, ClientHealth, FederateGroups, Subscription};
use crate::federation::shared::{admit, attach_federate, receive, RemoteContacts};
use crate::link::{Codec, Io};
use crate::missions::Receipts;
use crate::session::federate::{Action, Call, ClientConfig, ClientSession, End, Health};

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

/// Opens an HTTP/2 connection on `io` and a tonic client on it. The connection is driven
/// in `tasks` until `session` is cancelled (and cancels it when it fails).
pub async fn h2_client(io: Box<dyn Io>, authority: &str, max: usize, session: &CancellationToken, tasks: &mut JoinSet<()>) -> Result<Client, String> {
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .max_frame_size(256 << 10)
        .max_send_buf_size(1 << 20)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    let s = session.clone();
    tasks.spawn(async move {
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

/// The gap between calls opened one after the other (see `perform`).
const CALL_GAP: std::time::Duration = std::time::Duration::from_millis(15);

/// What call tasks report to the session loop.
enum Ev {
    Groups { serving: bool, groups: Vec<String> },
    Health(Health),
    End(Call, End),
    /// A Subscription reply, with the peer's server id.
    Peer(String),
}

fn end_of(call: Call, r: Result<(), Status>) -> End {
    match r {
        Ok(()) => End::Completed,
        Err(st) if st.code() == Code::Unimplemented => End::Unimplemented,
        Err(st) => End::Failed(describe(call.name(), &st)),
    }
}

/// Runs one outgoing federation v2 session on an established TLS connection.
pub(super) async fn run(conn: Conn, sh: Arc<Shared>) {
    let Conn { io, remote, identity, cancel } = conn;
    let Some(identity) = admit(identity, &sh.s, &remote) else { return };
    let session = cancel.child_token();
    tracing::info!(link = %sh.s.link, %remote, federate = %identity.federate_name(), fingerprint = %identity.fingerprint, "connected to federate (v2)");
    let mut tasks = JoinSet::new();
    let r = match h2_client(io, &remote, sh.s.max_frame, &session, &mut tasks).await {
        Ok(client) => ClientIo::new(client, &remote, sh.clone(), session.clone(), tasks).run().await,
        Err(e) => Err(e),
    };
    session.cancel();
    match r {
        Ok(()) => tracing::info!(link = %sh.s.link, %remote, "federation v2 session closed"),
        Err(e) => {
            tracing::warn!(link = %sh.s.link, %remote, "federation v2 session ended: {e}");
            if let Some(st) = lock(&sh.status).as_ref() {
                st.note_error(e);
            }
        }
    }
}

/// The I/O of one client session.
struct ClientIo {
    sh: Arc<Shared>,
    client: Client,
    remote: String,
    id: u64,
    uid: String,
    session: CancellationToken,
    tasks: JoinSet<()>,
    ev_tx: mpsc::Sender<Ev>,
    ev_rx: mpsc::Receiver<Ev>,
    grp_tx: Option<mpsc::Sender<FederateGroups>>,
    rol_tx: mpsc::Sender<OutRol>,
    rol_rx: Option<mpsc::Receiver<OutRol>>,
    inject: Arc<Inject>,
    receipts: Option<Arc<Receipts>>,
    contacts: Arc<RemoteContacts>,
    health: Option<AbortHandle>,
    delivering: bool,
    /// When ClientEventStream was opened (ServerEventStream goes a moment later).
    events_opened: Option<tokio::time::Instant>,
}

impl ClientIo {
    fn new(client: Client, remote: &str, sh: Arc<Shared>, session: CancellationToken, tasks: JoinSet<()>) -> ClientIo {
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let (rol_tx, rol_rx) = mpsc::channel(256);
        let receipts = sh.missions.as_ref().map(|m| Receipts::new(m.store.clone()));
        let inject = Inject::new(sh.missions.clone());
        ClientIo { id: sh.router.next_id(), sh, client, remote: remote.to_owned(), uid: random_uid(), session, tasks, ev_tx, ev_rx, grp_tx: None, rol_tx, rol_rx: Some(rol_rx), inject, receipts, contacts: Arc::default(), health: None, delivering: false, events_opened: None }
    }

    async fn run(mut self) -> Result<(), String> {
        let s = &self.sh.s;
        let cfg = ClientConfig { health_interval: s.health_interval, health_timeout: s.health_timeout.max(s.health_interval), send_groups: !s.outbound_group_names.is_empty() };
        let mut fs = ClientSession::new(cfg, Instant::now());
        let r = self.drive(&mut fs).await;
        self.sh.router.detach(self.id).await;
        self.contacts.gone(self.id, &self.sh.s, &self.sh.router).await;
        r
    }

    async fn drive(&mut self, fs: &mut ClientSession) -> Result<(), String> {
        let mut silent_logged = false;
        loop {
            while let Some(a) = fs.poll_action() {
                self.perform(a).await;
            }
            if let Some(why) = fs.closed() {
                return Err(why.to_owned());
            }
            if fs.peer_is_silent() && !silent_logged {
                silent_logged = true;
                tracing::warn!(link = %self.sh.s.link, remote = %self.remote, "the peer does not answer health checks (a Federation Hub with enableHealthCheck: false?): keeping the session, and sending mission changes without the first healthy check");
            }
            let wake = fs.poll_timeout();
            tokio::select! {
                _ = self.session.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(wake.into()) => fs.handle_timeout(Instant::now()),
                Some(ev) = self.ev_rx.recv() => self.feed(fs, ev),
            }
        }
    }

    fn feed(&mut self, fs: &mut ClientSession, ev: Ev) {
        match ev {
            Ev::Groups { serving, groups } => {
                if !groups.is_empty() {
                    tracing::info!(link = %self.sh.s.link, remote = %self.remote, ?groups, "federate announced its groups");
                }
                fs.handle_groups(serving);
            }
            Ev::Health(h) => {
                if let (Some(asked), Some(r)) = (fs.handle_health(h, Instant::now()), &self.receipts) {
                    r.confirm_before(asked);
                }
            }
            Ev::End(call, end) => fs.handle_end(call, end, Instant::now()),
            Ev::Peer(server_id) => self.sh.check_peer_id(&server_id, &self.remote),
        }
    }

    async fn perform(&mut self, a: Action) {
        match a {
            Action::Open(Call::HealthCheck) => self.health_check(),
            Action::Open(call) => {
                // A server starts each call's handler on a task of its own (hyper, and
                // grpc-java's executor), so calls that arrive together may be handled in
                // either order. Short gaps keep TAK's order at the server too: above all
                // ClientEventStream before ServerEventStream, or a TAK Server loses the
                // contact snapshot for the whole connection.
                if call == Call::ServerEvents {
                    if let Some(t) = self.events_opened {
                        tokio::time::sleep_until(t + CALL_GAP * 4).await;
                    }
                }
                self.open(call).await;
                if call == Call::ClientEvents {
                    self.events_opened = Some(tokio::time::Instant::now());
                }
                if matches!(call, Call::ServerFederateGroups | Call::ClientFederateGroups | Call::ClientEvents) {
                    tokio::time::sleep(CALL_GAP).await;
                }
            }
            Action::SendGroups => {
                if let Some(tx) = &self.grp_tx {
                    let _ = tx.try_send(FederateGroups { federate_groups: self.sh.s.outbound_group_names.clone(), ..Default::default() });
                }
            }
            Action::StartDelivery => self.start_delivery(),
        }
    }

    /// One health check; the previous one, if it is still out, is given up (one at a time).
    fn health_check(&mut self) {
        if let Some(h) = self.health.take() {
            h.abort();
        }
        let (mut c, ev) = (self.client.clone(), self.ev_tx.clone());
        let h = self.tasks.spawn(async move {
            let r = match c.health_check(ClientHealth { status: client_health::ServingStatus::Serving as i32 }).await {
                Ok(h) => Ev::Health(health_of(h.into_inner().status)),
                Err(st) => Ev::End(Call::HealthCheck, End::Failed(describe("HealthCheck", &st))),
            };
            let _ = ev.send(r).await;
        });
        self.health = Some(h);
    }

    fn start_delivery(&mut self) {
        if self.delivering {
            return;
        }
        self.delivering = true;
        if let (Some(m), Some(id), Some(r)) = (&self.sh.missions, self.sh.server_id, &self.receipts) {
            self.tasks.spawn(m.clone().deliver(id, self.rol_tx.clone(), r.clone(), self.session.clone()));
        }
    }

    async fn open(&mut self, call: Call) {
        let (sh, ev, id) = (self.sh.clone(), self.ev_tx.clone(), self.id);
        let plain = subscription(&sh, false, &self.uid);
        let mut c = self.client.clone();
        match call {
            Call::ServerFederateGroups => {
                let fut = async move { c.server_federate_groups_stream(plain).await };
                self.spawn_call(call, fut, move |g: FederateGroups| {
                    let serving = g.stream_update.as_ref().is_some_and(|u| u.status == server_health::ServingStatus::Serving as i32);
                    let _ = ev.try_send(Ev::Groups { serving, groups: g.federate_groups });
                })
                .await
            }
            Call::ClientFederateGroups => {
                let (tx, rx) = mpsc::channel(4);
                self.grp_tx = Some(tx);
                let fut = async move { c.client_federate_groups_stream(recv_stream(rx)).await };
                self.spawn_call(call, fut, peer_reply(ev)).await
            }
            Call::ClientEvents => {
                let versioned = subscription(&sh, true, &self.uid);
                let contacts = self.contacts.clone();
                let fut = async move { c.client_event_stream(versioned).await };
                self.spawn_read(call, fut, move |fe: FederatedEvent| {
                    let (sh, contacts) = (sh.clone(), contacts.clone());
                    async move {
                        LinkCounters::add(&sh.s.counters.bytes_in, fe.encoded_len() as u64);
                        receive(fe, id, &sh.s, &sh.router, &contacts).await
                    }
                })
                .await
            }
            Call::ServerRol => {
                let Some(rx) = self.rol_rx.take() else { return };
                let out = rol_stream(rx, sh, self.inject.clone(), self.session.clone(), None).filter_map(|r| std::future::ready(r.ok()));
                let fut = async move { c.server_rol_stream(out).await };
                self.spawn_call(call, fut, peer_reply(ev)).await
            }
            Call::ServerEvents => {
                let out = self.server_events().await;
                let fut = async move { c.server_event_stream(out).await };
                self.spawn_call(call, fut, peer_reply(ev)).await
            }
            Call::ClientRol => {
                let remote = self.remote.clone();
                let fut = async move { c.client_rol_stream(plain).await };
                self.spawn_read(call, fut, move |r| {
                    let (sh, remote) = (sh.clone(), remote.clone());
                    async move { sh.handle_rol(&remote, sh.server_id, r).await }
                })
                .await
            }
            Call::HealthCheck => {}
        }
    }

    /// ServerEventStream's request stream: an empty event first (harmless, as TAK's hub
    /// client does), the contact snapshot and latest SA, then injected and live traffic.
    async fn server_events(&mut self) -> impl Stream<Item = FederatedEvent> + Send + 'static {
        let s = self.sh.s.clone();
        let (snapshot, rx) = attach_federate(&self.sh.router, &s, self.id, Codec::FigGrpc, "federation-v2", &self.remote, None, self.session.clone()).await;
        EventOut::new(&snapshot, Some(FederatedEvent::default()), rx, self.inject.clone(), s, self.session.clone()).stream().filter_map(|r| std::future::ready(r.ok()))
    }

    /// Starts a call whose replies `each` handles synchronously; its end goes to the loop.
    async fn spawn_call<R: Send + 'static>(&mut self, call: Call, fut: impl std::future::Future<Output = Result<Response<Streaming<R>>, Status>> + Send + 'static, mut each: impl FnMut(R) + Send + 'static) {
        self.spawn_read(call, fut, move |r| {
            each(r);
            std::future::ready(())
        })
        .await
    }

    /// Starts a call and reads what it returns with `each` (awaited in order). The call is
    /// polled once here, so its request is handed to the connection before whatever is
    /// opened next (TAK's order); its response headers are never waited for here.
    async fn spawn_read<R: Send + 'static, F: std::future::Future<Output = ()> + Send + 'static>(&mut self, call: Call, fut: impl std::future::Future<Output = Result<Response<Streaming<R>>, Status>> + Send + 'static, mut each: impl FnMut(R) -> F + Send + 'static) {
        let mut fut = Box::pin(fut);
        let first = futures_util::poll!(fut.as_mut());
        let ev = self.ev_tx.clone();
        self.tasks.spawn(async move {
            let r = match first {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => fut.await,
            };
            let end = async {
                let mut s = r?.into_inner();
                while let Some(x) = s.message().await? {
                    each(x).await;
                }
                Ok(())
            };
            let _ = ev.send(Ev::End(call, end_of(call, end.await))).await;
        });
    }
}

/// A reader for a call that answers with a Subscription: notes the peer's server id.
fn peer_reply(ev: mpsc::Sender<Ev>) -> impl FnMut(Subscription) + Send + 'static {
    move |sub: Subscription| {
        if let Some(id) = sub.identity {
            let _ = ev.try_send(Ev::Peer(id.server_id));
        }
    }
}

fn health_of(status: i32) -> Health {
    match server_health::ServingStatus::try_from(status) {
        Ok(server_health::ServingStatus::Serving) => Health::Serving,
        Ok(server_health::ServingStatus::NotServing) => Health::NotServing,
        Ok(server_health::ServingStatus::NotConnected) => Health::NotConnected,
        _ => Health::Unknown,
    }
}

fn recv_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}
