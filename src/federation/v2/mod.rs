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

pub(super) type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// State shared by every session of one federation v2 link.
pub struct Shared {
    pub s: Arc<FedSettings>,
    pub router: RouterHandle,
    /// Server role: the connection holding each federate's (by fingerprint) event stream.
    pub(super) active: Mutex<HashMap<String, u64>>,
    /// Open outbound ROL streams, by connection.
    pub(super) rol_out: Mutex<HashMap<u64, mpsc::Sender<OutRol>>>,
    /// The mission store: received ROL is applied to it, and its queue is delivered.
    pub missions: Option<Arc<Missions>>,
    /// Client role: this link's federation server row.
    pub server_id: Option<i64>,
    pub(super) serial: AtomicU64,
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

    pub(super) async fn handle_rol(&self, from: &str, rol: Rol) {
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
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The version we announce: TAK Server only completes health checks for subscribers whose
/// major version is above 0; 5.5 is the protocol level our fig.proto matches.
pub(super) fn our_version() -> TakServerVersion {
    TakServerVersion { major: 5, minor: 5, patch: 0, branch: "takgate".into(), variant: env!("CARGO_PKG_VERSION").into() }
}

pub(super) fn random_uid() -> String {
    (0..32).map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0')).collect()
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
pub(super) struct EventOut {
    pub(super) pending: VecDeque<FederatedEvent>,
    pub(super) rx: mpsc::Receiver<Arc<Message>>,
    pub(super) announced: HashSet<String>,
    pub(super) s: Arc<FedSettings>,
    pub(super) stop: CancellationToken,
    pub(super) expired: Option<Arc<AtomicBool>>,
    pub(super) done: bool,
    pub(super) _guard: Option<DetachGuard>,
}

impl EventOut {
    pub(super) fn new(snapshot: &[Arc<Message>], lead: Option<FederatedEvent>, rx: mpsc::Receiver<Arc<Message>>, s: Arc<FedSettings>, stop: CancellationToken) -> EventOut {
        let mut o = EventOut { pending: lead.into_iter().collect(), rx, announced: HashSet::new(), s, stop, expired: None, done: false, _guard: None };
        for m in snapshot {
            let (pending, announced) = (&mut o.pending, &mut o.announced);
            federated_for(m, &o.s, announced, |fe| pending.push_back(fe));
        }
        o
    }

    pub(super) fn stream(self) -> impl Stream<Item = Result<FederatedEvent, Status>> + Send + 'static {
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
pub(super) struct DetachGuard {
    pub(super) router: RouterHandle,
    pub(super) id: u64,
    pub(super) generation: u64,
    pub(super) current: Arc<AtomicU64>,
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
pub(super) fn then_hold<T: Send + 'static>(items: Vec<T>, until: CancellationToken) -> Out<T> {
    Box::pin(futures_util::stream::unfold((VecDeque::from(items), until), |(mut q, until)| async move {
        if let Some(x) = q.pop_front() {
            return Some((Ok(x), (q, until)));
        }
        until.cancelled().await;
        None
    }))
}

/// Outbound ROL for one session, stamped with our provenance.
pub(super) fn rol_stream(rx: mpsc::Receiver<OutRol>, sh: Arc<Shared>, stop: CancellationToken, expired: Option<Arc<AtomicBool>>) -> impl Stream<Item = Result<Rol, Status>> + Send + 'static {
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

mod client;
mod server;

pub use client::{h2_client, run_client, subscription, Client, H2};
pub use server::serve_connection;
