//! The hub's federation v2 service for one federate connection (one TLS connection, one
//! HTTP/2 connection, one session), as TAK's Federation Hub answers each RPC
//! (../shared/specs/tak-fedhub.md §3): identity and admission on every stream open
//! (PERMISSION_DENIED when neither a CA group nor a federate node of the policy names it);
//! ClientEventStream starts with the contacts of the federates that reach this one and an
//! event carrying only its hub groups; ServerEventStream answers its Subscription at once;
//! ServerFederateGroupsStream starts with the hub groups and SERVING; ServerROLStream and
//! ClientFederateGroupsStream never answer (as TAK's hub); HealthCheck answers SERVING once
//! the federate subscribed to events, NOT_CONNECTED before. A federate that stops health
//! checks for the timeout is closed.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::{identity, Hub, Session};
use crate::federation::fig::federated_channel_server::{FederatedChannel, FederatedChannelServer};
use crate::federation::fig::{client_health, identity as fig_identity, server_health, BinaryBlob, ClientHealth, ContactListEntry, Crud, Empty, FederateGroups, FederateTokenResponse, FederatedEvent, Identity, Rol, ServerHealth, Subscription};
use crate::link::listen::{Conn, Handler};
use crate::link::{log_bad_input, LinkCounters};
use crate::sync::lock;

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Runs a hub session on each accepted connection.
pub struct HubHandler(pub Arc<Hub>);

impl Handler for HubHandler {
    fn run(self: Arc<Self>, conn: Conn) -> BoxFuture<'static, ()> {
        Box::pin(serve(self.0.clone(), conn))
    }
}

/// `items`, then what arrives on `rx`, until `stop`.
fn stream_of<T: Send + 'static>(items: Vec<T>, rx: Option<mpsc::Receiver<T>>, stop: CancellationToken) -> Out<T> {
    Box::pin(futures_util::stream::unfold((VecDeque::from(items), rx, stop), |(mut q, mut rx, stop)| async move {
        if let Some(x) = q.pop_front() {
            return Some((Ok(x), (q, rx, stop)));
        }
        let next = match rx.as_mut() {
            Some(r) => tokio::select! {
                _ = stop.cancelled() => None,
                m = r.recv() => m,
            },
            None => {
                stop.cancelled().await;
                None
            }
        };
        next.map(|x| (Ok(x), (q, rx, stop)))
    }))
}

struct Svc {
    hub: Arc<Hub>,
    s: Arc<Session>,
}

impl Svc {
    /// Names the federate from a Subscription's identity and checks the policy admits it.
    fn identify(&self, sub: &Subscription, rpc: &str) -> Result<(), Status> {
        let id = sub.identity.clone().unwrap_or_default();
        if id.name.is_empty() {
            log_bad_input(LinkCounters::inc(&self.hub.counters.decode_errors), "hub", &self.s.remote, &format!("{rpc}: Subscription.identity.name is empty"));
            return Err(Status::invalid_argument(format!("{rpc}: Subscription.identity.name must not be empty")));
        }
        if self.s.ca_groups.is_empty() {
            log_bad_input(LinkCounters::inc(&self.hub.counters.refused), "hub", &self.s.remote, &"federate refused: it presented no CA certificate after its own (send the issuing CA in the chain: the hub names CA groups from it)");
            return Err(Status::invalid_argument("Client identification not available"));
        }
        let fed_id = identity::federate_id(&id.name, &self.s.fingerprint, &id.server_id, self.s.serial);
        let p = self.hub.policy();
        let groups = p.membership(&fed_id, &self.s.ca_groups);
        if !p.admits(&fed_id, &groups) {
            log_bad_input(LinkCounters::inc(&self.hub.counters.refused), "hub", &self.s.remote, &format!("federate {fed_id:?} refused: neither its CA groups {:?} nor its federate id are nodes of the policy", self.s.ca_groups));
            return Err(Status::permission_denied("Permission Denied. Federate/CA Group not found in the policy graph"));
        }
        let first = {
            let mut f = lock(&self.s.fed_id);
            let first = f.is_empty();
            let renamed = *f != fed_id;
            *f = fed_id.clone();
            drop(f);
            if renamed {
                self.hub.changed();
            }
            first
        };
        *lock(&self.s.name) = id.name.clone();
        if first {
            tracing::info!(federate = %fed_id, remote = %self.s.remote, groups = ?groups, "federate joined the hub");
        }
        Ok(())
    }

    fn reply(&self) -> Subscription {
        Subscription { identity: Some(Identity { name: self.s.serial.to_string(), uid: self.s.serial.to_string(), description: format!("takgate hub {}", env!("CARGO_PKG_VERSION")), r#type: fig_identity::ConnectionType::FederationHubServer as i32, server_id: self.hub.id.clone() }), filter: String::new(), version: None }
    }

    /// Reads an inbound stream in the session until it ends.
    fn consume<T: Send + 'static>(&self, mut inbound: Streaming<T>, mut each: impl FnMut(T) + Send + 'static) {
        let stop = self.s.cancel.clone();
        tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = inbound.message() => m,
                };
                match m {
                    Ok(Some(x)) => each(x),
                    _ => return,
                }
            }
        });
    }
}

#[tonic::async_trait]
impl FederatedChannel for Svc {
    async fn send_one_event(&self, _r: Request<FederatedEvent>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }

    type BinaryMessageStreamStream = Out<Empty>;
    async fn binary_message_stream(&self, r: Request<Streaming<BinaryBlob>>) -> Result<Response<Self::BinaryMessageStreamStream>, Status> {
        // Forwarded to outgoing connections where the policy allows (TAK's hub drops them).
        let (hub, s) = (self.hub.clone(), self.s.clone());
        self.consume(r.into_inner(), move |b| hub.route_blob(&s, b));
        Ok(Response::new(stream_of(vec![], None, self.s.cancel.clone())))
    }

    async fn send_one_blob(&self, r: Request<BinaryBlob>) -> Result<Response<Empty>, Status> {
        self.hub.route_blob(&self.s, r.into_inner());
        Ok(Response::new(Empty {}))
    }

    async fn get_identity(&self, _r: Request<Empty>) -> Result<Response<Identity>, Status> {
        Err(Status::unimplemented("getIdentity"))
    }

    type ClientEventStreamStream = Out<FederatedEvent>;
    async fn client_event_stream(&self, r: Request<Subscription>) -> Result<Response<Self::ClientEventStreamStream>, Status> {
        self.identify(r.get_ref(), "ClientEventStream")?;
        let (tx, rx) = mpsc::channel(self.hub.queue_depth);
        lock(&self.s.streams).events = Some(tx);
        *lock(&self.s.last_health) = Instant::now();
        let mut first = self.hub.contacts_for(&self.s);
        first.push(FederatedEvent { federate_groups: self.hub.groups_for(&self.s), ..Default::default() });
        Ok(Response::new(stream_of(first, Some(rx), self.s.cancel.clone())))
    }

    type ServerEventStreamStream = Out<Subscription>;
    async fn server_event_stream(&self, r: Request<Streaming<FederatedEvent>>) -> Result<Response<Self::ServerEventStreamStream>, Status> {
        let (hub, s, stop) = (self.hub.clone(), self.s.clone(), self.s.cancel.clone());
        let mut inbound = r.into_inner();
        tokio::spawn(async move {
            loop {
                let fe = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = inbound.message() => match m {
                        Ok(Some(fe)) => fe,
                        _ => return,
                    },
                };
                // An empty event (TAK and hubs send one first) carries nothing to route.
                if fe.event.is_some() || fe.contact.is_some() {
                    hub.route_event(&s, fe).deliver(&hub).await;
                }
            }
        });
        Ok(Response::new(stream_of(vec![self.reply()], None, self.s.cancel.clone())))
    }

    async fn health_check(&self, _r: Request<ClientHealth>) -> Result<Response<ServerHealth>, Status> {
        let subscribed = lock(&self.s.streams).events.is_some();
        if subscribed && _r.get_ref().status == client_health::ServingStatus::Serving as i32 {
            *lock(&self.s.last_health) = Instant::now();
        }
        let status = if subscribed { server_health::ServingStatus::Serving } else { server_health::ServingStatus::NotConnected };
        Ok(Response::new(ServerHealth { status: status as i32 }))
    }

    type ClientROLStreamStream = Out<Rol>;
    async fn client_rol_stream(&self, r: Request<Subscription>) -> Result<Response<Self::ClientROLStreamStream>, Status> {
        self.identify(r.get_ref(), "ClientROLStream")?;
        let (tx, rx) = mpsc::channel(self.hub.queue_depth);
        let replay = self.hub.open_rol(&self.s, tx);
        let waiting: Vec<Rol> = std::mem::take(&mut *lock(&self.s.rol_waiting));
        for rol in waiting {
            self.s.counters.rol_in.fetch_sub(1, Relaxed);
            self.hub.route_rol(&self.s, rol);
        }
        Ok(Response::new(stream_of(replay, Some(rx), self.s.cancel.clone())))
    }

    type ServerROLStreamStream = Out<Subscription>;
    async fn server_rol_stream(&self, r: Request<Streaming<Rol>>) -> Result<Response<Self::ServerROLStreamStream>, Status> {
        let (hub, s) = (self.hub.clone(), self.s.clone());
        self.consume(r.into_inner(), move |rol| hub.route_rol(&s, rol));
        // TAK's hub never answers this stream's Subscription.
        Ok(Response::new(stream_of(vec![], None, self.s.cancel.clone())))
    }

    type ServerFederateGroupsStreamStream = Out<FederateGroups>;
    async fn server_federate_groups_stream(&self, r: Request<Subscription>) -> Result<Response<Self::ServerFederateGroupsStreamStream>, Status> {
        self.identify(r.get_ref(), "ServerFederateGroupsStream")?;
        let (tx, rx) = mpsc::channel(64);
        lock(&self.s.streams).groups = Some(tx);
        let first = FederateGroups { federate_groups: self.hub.groups_for(&self.s), stream_update: Some(ServerHealth { status: server_health::ServingStatus::Serving as i32 }), ..Default::default() };
        Ok(Response::new(stream_of(vec![first], Some(rx), self.s.cancel.clone())))
    }

    type ClientFederateGroupsStreamStream = Out<Subscription>;
    async fn client_federate_groups_stream(&self, r: Request<Streaming<FederateGroups>>) -> Result<Response<Self::ClientFederateGroupsStreamStream>, Status> {
        let (hub, s) = (self.hub.clone(), self.s.clone());
        self.consume(r.into_inner(), move |g: FederateGroups| {
            *lock(&s.advertised) = g.federate_groups.clone();
            let p = hub.policy();
            let me = s.member(&p);
            for (o, m) in hub.members(&p).iter() {
                if o.serial != s.serial && p.reaches_at_all(&me, m) {
                    hub.push_groups(o);
                }
            }
        });
        // TAK's hub never answers this stream's Subscription either.
        Ok(Response::new(stream_of(vec![], None, self.s.cancel.clone())))
    }

    async fn get_auth_token_by_x509(&self, _r: Request<BinaryBlob>) -> Result<Response<FederateTokenResponse>, Status> {
        Err(Status::unimplemented("token authentication is not supported: federates authenticate with mutual TLS certificates"))
    }

    async fn getx509_identity(&self, _r: Request<Empty>) -> Result<Response<BinaryBlob>, Status> {
        Ok(Response::new(BinaryBlob { data: self.hub.own_cert.clone(), ..Default::default() }))
    }
}

/// One federate connection until it closes, its health checks stop, or the hub stops.
async fn serve(hub: Arc<Hub>, conn: Conn) {
    let Conn { io, remote, identity, cancel } = conn;
    let Some(identity) = identity else { return };
    let serial = hub.serial.fetch_add(1, Relaxed);
    let s = Session::new(serial, remote.clone(), String::new(), String::new(), identity.fingerprint.replace(':', "").to_ascii_lowercase(), identity::ca_groups(&identity.issuers), false, cancel.child_token());
    hub.join(s.clone());
    let svc = FederatedChannelServer::new(Svc { hub: hub.clone(), s: s.clone() }).max_decoding_message_size(crate::federation::v2::DEFAULT_MAX_MESSAGE).max_encoding_message_size(crate::federation::v2::DEFAULT_MAX_MESSAGE);
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.initial_stream_window_size(4 << 20).initial_connection_window_size(8 << 20).max_frame_size(256 << 10).max_send_buf_size(1 << 20);
    let fut = b.serve_connection(TokioIo::new(io), hyper_util::service::TowerToHyperService::new(svc));
    tokio::pin!(fut);
    let reason = tokio::select! {
        r = &mut fut => match r {
            Ok(()) => "closed by the federate".to_string(),
            Err(e) => format!("HTTP/2 error: {e}"),
        },
        why = watchdog(&hub, &s) => {
            s.cancel.cancel();
            fut.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut fut).await;
            why
        }
    };
    s.cancel.cancel();
    // Its contacts leave the federates they reached.
    let contacts: Vec<String> = lock(&s.contacts).keys().cloned().collect();
    for uid in contacts {
        hub.route_event(&s, FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Delete as i32, uid, ..Default::default() }), ..Default::default() }).drop_now(&hub);
    }
    hub.left(&s);
    hub.part(serial);
    tracing::info!(federate = %lock(&s.fed_id), %remote, %reason, "federate left the hub");
}

/// Ends the session when its health checks stop (TAK: 15 s) or the session is cancelled.
async fn watchdog(hub: &Hub, s: &Session) -> String {
    loop {
        tokio::select! {
            _ = s.cancel.cancelled() => return "closed".into(),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let subscribed = lock(&s.streams).events.is_some();
        if subscribed && lock(&s.last_health).elapsed() > hub.health_timeout {
            tracing::warn!(federate = %lock(&s.fed_id), remote = %s.remote, "no health check for {:.0} s: closing the federate's session", hub.health_timeout.as_secs_f64());
            return "no health check".into();
        }
    }
}
