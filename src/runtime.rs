//! Starting and stopping the gateway: the router, then every configured link. Listeners
//! are bound before `start` returns (so port 0 works in tests and bind errors surface at
//! once); shutdown stops accepting, lets writers drain their queues within the deadline,
//! and waits for every task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec::{WireFormat, DEFAULT_MAX_EVENT};
use crate::config::{Config, LinkConfig, Mode, SendFormat, Transport};
use crate::missions::Missions;
use crate::router::{LinkCounters, PeerPolicy, Router, RouterHandle};
use crate::store::Store;
use crate::transport::datagram::{self, DatagramSettings, MulticastOptions};
use crate::transport::stream::{Role, StreamSettings};
use crate::transport::tcp::{self, Backoff, Security};
use crate::transport::tls;

#[derive(Debug, thiserror::Error)]
#[error("link {link:?}: {message}")]
pub struct StartError {
    pub link: String,
    pub message: String,
}

/// A configured link once started.
#[derive(Debug, Clone)]
pub struct LinkStatus {
    pub name: String,
    pub transport: Transport,
    pub mode: Mode,
    /// The bound address (listeners, multicast, udp) or the target (connect, send).
    pub address: String,
    pub local_addr: Option<SocketAddr>,
    pub counters: Arc<LinkCounters>,
    /// Outgoing stream and federation connections: state, last error, last connected.
    pub connection: Option<Arc<tcp::ConnStatus>>,
}

/// A running gateway.
pub struct Gateway {
    inner: Arc<Control>,
}

impl Drop for Gateway {
    /// A gateway dropped without `shutdown` (a panicking caller) still stops its links, so
    /// blocking receive threads end and the runtime can close.
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

/// What a running gateway is made of, shared with the admin API: links can be added and
/// removed while it runs.
pub struct Control {
    pub router: RouterHandle,
    pub store: Arc<Store>,
    pub missions: Arc<Missions>,
    pub cfg: Config,
    links: std::sync::Mutex<Vec<(LinkStatus, CancellationToken)>>,
    /// Where the admin API listens, when it does.
    pub admin_addr: std::sync::Mutex<Option<SocketAddr>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    drain: Duration,
}

impl Control {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(LinkStatus, CancellationToken)>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn links(&self) -> Vec<LinkStatus> {
        self.lock().iter().map(|(s, _)| s.clone()).collect()
    }
    pub fn link(&self, name: &str) -> Option<LinkStatus> {
        self.lock().iter().find(|(s, _)| s.name == name).map(|(s, _)| s.clone())
    }
    /// Starts a link now (a name already running is an error).
    pub async fn add_link(&self, l: &LinkConfig) -> Result<(), String> {
        if self.link(&l.name).is_some() {
            return Err(format!("a link named {:?} is already running", l.name));
        }
        let token = self.cancel.child_token();
        let status = start_link(l, &self.cfg, &self.router, &self.missions, &token, &self.tracker, self.drain).await?;
        self.lock().push((status, token));
        tracing::info!(link = %l.name, "link started");
        Ok(())
    }
    /// Stops a running link (its connections close); false when there is none.
    pub fn remove_link(&self, name: &str) -> bool {
        let mut links = self.lock();
        let Some(i) = links.iter().position(|(s, _)| s.name == name) else { return false };
        let (_, token) = links.remove(i);
        token.cancel();
        tracing::info!(link = %name, "link stopped");
        true
    }
}

impl Gateway {
    pub fn control(&self) -> Arc<Control> {
        self.inner.clone()
    }
    pub fn router(&self) -> &RouterHandle {
        &self.inner.router
    }
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }
    pub fn missions(&self) -> &Arc<Missions> {
        &self.inner.missions
    }
    pub fn links(&self) -> Vec<LinkStatus> {
        self.inner.links()
    }
    /// The bound address of the named link.
    pub fn local_addr(&self, link: &str) -> Option<SocketAddr> {
        self.inner.link(link).and_then(|l| l.local_addr)
    }
    /// The connection state of an outgoing link.
    pub fn connection(&self, link: &str) -> Option<tcp::ConnState> {
        self.inner.link(link).and_then(|l| l.connection).map(|c| c.get())
    }
    pub fn counters(&self, link: &str) -> Option<Arc<LinkCounters>> {
        self.inner.link(link).map(|l| l.counters)
    }
    /// Where the admin API listens.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        *self.inner.admin_addr.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Stops every link and waits (bounded by the drain deadline plus a margin).
    pub async fn shutdown(self) {
        let c = &self.inner;
        c.cancel.cancel();
        c.tracker.close();
        if tokio::time::timeout(c.drain + Duration::from_secs(2), c.tracker.wait()).await.is_err() {
            tracing::warn!("some links did not stop within the drain deadline");
        }
    }
}

/// A listener's connection limits (TLS handshakes: 128 at once unless configured).
fn limits(l: &LinkConfig) -> Arc<tcp::Limits> {
    let tls = matches!(l.transport, Transport::Tls | Transport::FederationV1 | Transport::FederationV2);
    let mut limits = tcp::Limits::new(l.max_connections, l.max_connections_per_address, if tls { Some(l.max_tls_handshakes.unwrap_or(128)) } else { None });
    limits.max_per_identity = l.max_connections_per_identity;
    Arc::new(limits)
}

fn secs(v: Option<f64>, default: f64) -> Duration {
    Duration::from_secs_f64(v.unwrap_or(default))
}

/// Starts the router and all links of `cfg`.
pub async fn start(cfg: &Config) -> Result<Gateway, StartError> {
    let router = Router::spawn(&cfg.node.id, Duration::from_secs_f64(cfg.router.dedup_window_secs));
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let drain = Duration::from_secs_f64(cfg.router.drain_timeout_secs);
    let store_path = cfg.store.path.clone().unwrap_or_else(|| ":memory:".into());
    let store = Arc::new(Store::open(&store_path).map_err(|e| StartError { link: "store".into(), message: e.0 })?);
    if cfg.store.path.is_none() {
        tracing::info!("missions and the federation queue are kept in memory: set [store] path to keep them across restarts");
    }
    let missions = Missions::start(store.clone(), router.clone(), Duration::from_secs_f64(cfg.missions.replay_hours * 3600.0), cfg.missions.allow_federated_delete, cancel.clone()).await;
    let mut all: Vec<LinkConfig> = cfg.links.clone();
    all.extend(reconcile_servers(cfg, &missions).map_err(|message| StartError { link: "store".into(), message })?);
    let mut links = Vec::new();
    for l in &all {
        if l.enabled == Some(false) {
            tracing::info!(link = %l.name, "link disabled: not started");
            continue;
        }
        let token = cancel.child_token();
        match start_link(l, cfg, &router, &missions, &token, &tracker, drain).await {
            Ok(s) => links.push((s, token)),
            Err(message) => {
                cancel.cancel();
                return Err(StartError { link: l.name.clone(), message });
            }
        }
    }
    let control = Arc::new(Control { router, store, missions, cfg: cfg.clone(), links: std::sync::Mutex::new(links), admin_addr: std::sync::Mutex::new(None), cancel, tracker, drain });
    if let Some(a) = &cfg.admin {
        let listener = match TcpListener::bind(&a.address).await {
            Ok(l) => l,
            Err(e) => {
                control.cancel.cancel();
                return Err(StartError { link: "admin".into(), message: format!("cannot listen on {}: {e}", a.address) });
            }
        };
        let addr = listener.local_addr().ok();
        *control.admin_addr.lock().unwrap_or_else(|p| p.into_inner()) = addr;
        let token = std::env::var("TAKGATE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()).or_else(|| a.token.clone());
        if token.is_none() {
            tracing::warn!("admin API: no token configured ([admin] token or TAKGATE_ADMIN_TOKEN): only /api/health answers");
        }
        let files = match &cfg.store.path {
            Some(p) => std::path::Path::new(p).parent().map(|d| d.join("federation")).unwrap_or_else(|| "federation".into()),
            None => std::env::temp_dir().join(format!("takgate-{}-{}", cfg.node.id, std::process::id())).join("federation"),
        };
        let state = Arc::new(crate::admin::AdminState { control: control.clone(), token, files });
        match (&a.cert, &a.key) {
            (Some(cert), Some(key)) => {
                let tls = tls::server_config(cert, key, a.ca.as_deref(), a.ca.is_some()).map_err(|e| StartError { link: "admin".into(), message: e.0 });
                let tls = match tls {
                    Ok(t) => t,
                    Err(e) => {
                        control.cancel.cancel();
                        return Err(e);
                    }
                };
                tracing::info!(address = ?addr, mutual_tls = a.ca.is_some(), "admin API and dashboard listening (HTTPS)");
                control.tracker.spawn(crate::admin::serve_tls(listener, TlsAcceptor::from(Arc::new(tls)), state, control.cancel.clone()));
            }
            _ => {
                tracing::info!(address = ?addr, "admin API and dashboard listening");
                control.tracker.spawn(crate::admin::serve(listener, state, control.cancel.clone()));
            }
        }
    }
    Ok(Gateway { inner: control })
}

/// The outgoing federation link for a store server row (admin API and start-up).
pub fn server_link(s: &crate::store::Server) -> Result<LinkConfig, String> {
    let mut t = toml::Table::new();
    t.insert("name".into(), s.name.clone().into());
    t.insert("transport".into(), if s.protocol == "v2" { "federation-v2" } else { "federation-v1" }.into());
    t.insert("mode".into(), "connect".into());
    t.insert("address".into(), format!("{}:{}", if s.address.contains(':') { format!("[{}]", s.address) } else { s.address.clone() }, s.port).into());
    t.insert("enabled".into(), s.enabled.into());
    for (k, v) in [("ca", &s.ca_path), ("cert", &s.cert_path), ("key", &s.key_path)] {
        if let Some(v) = v {
            t.insert(k.into(), v.clone().into());
        }
    }
    let mut p = toml::Table::new();
    p.insert("sync_missions".into(), s.sync_missions.into());
    p.insert("sync_cot".into(), s.sync_cot.into());
    if let Some(f) = &s.mission_filter {
        p.insert("mission_filter".into(), toml::Value::Array(f.iter().map(|x| x.clone().into()).collect()));
    }
    t.insert("policy".into(), p.into());
    t.try_into::<LinkConfig>().map_err(|e| e.to_string())
}

/// Brings the store's federation servers in line with the configuration: every outgoing
/// federation link of the file is a server (source `config`; the file wins over a row of the
/// same name), config rows no longer in the file are removed, and enabled outgoing servers
/// added through the admin API (source `api`) are returned as links to start.
fn reconcile_servers(cfg: &Config, missions: &Missions) -> Result<Vec<LinkConfig>, String> {
    let store = &missions.store;
    let mut keep = vec![];
    for l in cfg.links.iter().filter(|l| l.transport.is_federation() && l.mode() == Mode::Connect) {
        let (host, port) = l.address.rsplit_once(':').map(|(h, p)| (h.trim_matches(['[', ']']).to_owned(), p.parse().unwrap_or(0))).unwrap_or((l.address.clone(), 0));
        let policy = PeerPolicy::new(&l.policy, false)?;
        let row = crate::store::Server {
            name: l.name.clone(),
            address: host,
            port,
            direction: "outbound".into(),
            protocol: if l.transport == Transport::FederationV2 { "v2" } else { "v1" }.into(),
            ca_path: l.ca.as_ref().map(|p| p.display().to_string()),
            cert_path: l.cert.as_ref().map(|p| p.display().to_string()),
            key_path: l.key.as_ref().map(|p| p.display().to_string()),
            verify_ssl: true,
            enabled: l.enabled != Some(false),
            sync_missions: policy.sync_missions,
            sync_cot: policy.sync_cot,
            mission_filter: policy.mission_filter_patterns(),
            link: l.name.clone(),
            source: "config".into(),
            ..Default::default()
        };
        let (id, new) = store.upsert_server(&row).map_err(|e| e.0)?;
        if new {
            missions.replay_for(id).map_err(|e| e.0)?;
        }
        keep.push(l.name.clone());
    }
    let gone = store.remove_stale_config_servers(&keep).map_err(|e| e.0)?;
    if gone > 0 {
        tracing::info!(removed = gone, "federation servers no longer in the configuration were removed from the store");
    }
    let mut extra = vec![];
    for s in store.servers().map_err(|e| e.0)? {
        if s.source != "api" || s.direction != "outbound" || cfg.links.iter().any(|l| l.name == s.name) {
            continue;
        }
        match server_link(&s) {
            Ok(l) => extra.push(l),
            Err(e) => tracing::error!(server = %s.name, "federation server from the store not started: {e}"),
        }
    }
    Ok(extra)
}

async fn start_link(l: &LinkConfig, cfg: &Config, router: &RouterHandle, missions: &Arc<Missions>, cancel: &CancellationToken, tracker: &TaskTracker, drain: Duration) -> Result<LinkStatus, String> {
    let mode = l.mode();
    let counters = Arc::new(LinkCounters::default());
    let connect = mode == Mode::Connect;
    let policy = Arc::new(PeerPolicy::new(&l.policy, connect)?);
    let queue_depth = l.queue_depth.unwrap_or(cfg.router.queue_depth);
    let mut status = LinkStatus { name: l.name.clone(), transport: l.transport, mode, address: crate::config::redact_address(&l.address), local_addr: None, counters: counters.clone(), connection: None };
    let cancel = cancel.clone();
    match l.transport {
        Transport::Tcp | Transport::Tls => {
            let tls_on = l.transport == Transport::Tls;
            let settings = Arc::new(StreamSettings {
                link: l.name.clone(),
                transport: if tls_on { "tls" } else { "tcp" },
                role: if connect { Role::Client } else { Role::Server },
                negotiate: l.negotiate.unwrap_or(true),
                protobuf_only: l.format == Some(SendFormat::Protobuf),
                idle_timeout: secs(l.idle_timeout_secs, if connect { 25.0 } else { 120.0 }),
                max_event: l.max_event_bytes.unwrap_or(DEFAULT_MAX_EVENT),
                queue_depth,
                overflow: l.overflow,
                policy,
                counters,
                drain_timeout: drain,
                read_rate: crate::transport::stream::ReadRateLimits { bytes_per_sec: l.max_read_bytes_per_sec, events_per_sec: l.max_read_events_per_sec },
                write_timeout: l.write_timeout_secs.map(Duration::from_secs_f64).unwrap_or(crate::transport::stream::DEFAULT_WRITE_TIMEOUT),
            });
            let sec = if tls_on { tls_security(l, connect, l.require_client_cert.unwrap_or(l.ca.is_some()), &[])? } else { Security::Plain };
            let endpoint = tcp::Endpoint { link: l.name.clone(), counters: settings.counters.clone(), status: Arc::default(), limits: limits(l) };
            if connect {
                status.connection = Some(endpoint.status.clone());
            }
            let session: tcp::SessionFn = {
                let router = router.clone();
                Arc::new(move |io, remote, id, cancel| Box::pin(crate::transport::stream::run_session(io, remote, id, settings.clone(), router.clone(), cancel)))
            };
            if connect {
                let backoff = Backoff { min: secs(l.reconnect_min_secs, 1.0), max: secs(l.reconnect_max_secs, 60.0), healthy: Duration::from_secs(60) };
                tracker.spawn(tcp::connect_loop(l.address.clone(), sec, backoff, endpoint, session, cancel));
                tracing::info!(link = %l.name, transport = ?l.transport, address = %l.address, "connecting");
            } else {
                let listener = TcpListener::bind(&l.address).await.map_err(|e| format!("cannot listen on {}: {e}", l.address))?;
                status.local_addr = listener.local_addr().ok();
                tracing::info!(link = %l.name, transport = ?l.transport, address = ?status.local_addr, "listening");
                tracker.spawn(tcp::listen(listener, sec, endpoint, session, cancel, tracker.clone()));
            }
        }
        Transport::FederationV1 | Transport::FederationV2 => {
            let (Some(_), Some(cert), Some(_)) = (&l.ca, &l.cert, &l.key) else {
                return Err("federation links need ca, cert and key".into());
            };
            let v2 = l.transport == Transport::FederationV2;
            let alpn: &[&[u8]] = if v2 { &[b"h2"] } else { &[] };
            let sec = tls_security(l, connect, true, alpn)?;
            let mut p = PeerPolicy::new(&l.policy, false)?;
            p.federate = true;
            let mut fs = crate::federation::link::FedSettings::new(&l.name, &cfg.node.id, p);
            fs.display_name = l.display_name.clone().unwrap_or_else(|| cfg.node.id.clone());
            fs.counters = counters.clone();
            fs.queue_depth = queue_depth;
            fs.read_rate = crate::transport::stream::ReadRateLimits { bytes_per_sec: l.max_read_bytes_per_sec, events_per_sec: l.max_read_events_per_sec };
            fs.write_timeout = l.write_timeout_secs.map(Duration::from_secs_f64).unwrap_or(crate::transport::stream::DEFAULT_WRITE_TIMEOUT);
            fs.idle_timeout = if v2 { None } else { Some(secs(l.idle_timeout_secs, 900.0)) };
            fs.max_frame = l.max_event_bytes.unwrap_or(if v2 { crate::federation::v2::DEFAULT_MAX_MESSAGE } else { crate::federation::v1::DEFAULT_MAX_FRAME });
            fs.allow = l.allow_fingerprints.clone();
            fs.max_hops = l.max_hops.unwrap_or(-1);
            fs.outbound_groups = crate::router::pattern::PatternList::new(&l.outbound_groups)?;
            fs.outbound_group_names = l.outbound_groups.clone();
            fs.inbound_groups = l.inbound_groups.clone();
            fs.group_mapping = l.group_mapping.iter().filter_map(|m| m.split_once(':')).map(|(a, b)| (a.to_owned(), b.to_owned())).collect();
            fs.health_interval = secs(l.health_interval_secs, 3.0);
            fs.health_timeout = secs(l.health_timeout_secs, if connect { 10.0 } else { 15.0 });
            fs.own_cert = tls::load_certs(cert).map_err(|e| e.0)?.first().map(|c| c.to_vec()).unwrap_or_default();
            let settings = Arc::new(fs);
            let endpoint = tcp::Endpoint { link: l.name.clone(), counters, status: Arc::default(), limits: limits(l) };
            if connect {
                status.connection = Some(endpoint.status.clone());
            }
            let session: tcp::SessionFn = {
                let router = router.clone();
                if v2 {
                    let server_id = if connect { missions.store.server_by_name(&l.name).ok().flatten().map(|s| s.id) } else { None };
                    let server = crate::federation::v2::Shared::new(settings, router, Some(missions.clone()), server_id);
                    if connect {
                        *server.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(endpoint.status.clone());
                        Arc::new(move |io, remote, id, cancel| Box::pin(crate::federation::v2::run_client(io, remote, id, server.clone(), cancel)))
                    } else {
                        Arc::new(move |io, remote, id, cancel| Box::pin(crate::federation::v2::serve_connection(io, remote, id, server.clone(), cancel)))
                    }
                } else {
                    Arc::new(move |io, remote, id, cancel| Box::pin(crate::federation::link::run_session(io, remote, id, settings.clone(), router.clone(), cancel)))
                }
            };
            let proto = if v2 { "federation v2" } else { "federation v1" };
            if connect {
                let backoff = Backoff { min: secs(l.reconnect_min_secs, 1.0), max: secs(l.reconnect_max_secs, 60.0), healthy: Duration::from_secs(60) };
                tracing::info!(link = %l.name, address = %l.address, "{proto}: connecting");
                tracker.spawn(tcp::connect_loop(l.address.clone(), sec, backoff, endpoint, session, cancel));
            } else {
                let listener = TcpListener::bind(&l.address).await.map_err(|e| format!("cannot listen on {}: {e}", l.address))?;
                status.local_addr = listener.local_addr().ok();
                tracing::info!(link = %l.name, address = ?status.local_addr, "{proto}: listening");
                tracker.spawn(tcp::listen(listener, sec, endpoint, session, cancel, tracker.clone()));
            }
        }
        Transport::Amqp => {
            let mode = l.amqp_mode.ok_or("amqp_mode missing")?;
            let s = Arc::new(crate::transport::amqp::AmqpSettings {
                link: l.name.clone(),
                url: l.address.clone(),
                mode,
                node_id: cfg.node.id.clone(),
                exchange: l.exchange.clone().unwrap_or_else(|| "takgate".into()),
                bind_keys: l.bind_keys.clone(),
                group: l.ots_group.clone().unwrap_or_else(|| "__ANON__".into()),
                persist: l.persist.unwrap_or(false),
                ots_node_id: l.ots_node_id.clone(),
                uid: l.amqp_uid.clone().unwrap_or_else(|| format!("takgate-{}", cfg.node.id)),
                buffer: l.buffer_events.unwrap_or(100_000),
                queue_depth,
                backoff: Backoff { min: secs(l.reconnect_min_secs, 0.5), max: secs(l.reconnect_max_secs, 30.0), healthy: Duration::from_secs(60) },
                policy,
                counters,
                missions: Some(missions.clone()),
            });
            tracing::info!(link = %l.name, mode = ?mode, "amqp link starting");
            tracker.spawn(crate::transport::amqp::run(s, router.clone(), cancel));
        }
        Transport::Udp | Transport::Multicast => {
            let format = match l.format {
                Some(SendFormat::Protobuf) => WireFormat::ProtoMesh,
                _ => WireFormat::Xml,
            };
            let s = Arc::new(DatagramSettings {
                link: l.name.clone(),
                transport: if l.transport == Transport::Udp { "udp" } else { "multicast" },
                format,
                max_datagram: l.max_datagram_bytes.unwrap_or(65_507),
                queue_depth,
                policy,
                counters,
            });
            if l.transport == Transport::Multicast {
                let group: SocketAddr = l.address.parse().map_err(|e| format!("{e}"))?;
                let o = MulticastOptions { group, interfaces: l.interfaces.clone(), ttl: l.ttl.unwrap_or(1), loopback: l.loopback.unwrap_or(true) };
                let id = router.next_id();
                let conn = Arc::new(tcp::ConnStatus::default());
                status.connection = Some(conn.clone());
                match datagram::multicast_sockets(&o) {
                    Ok(socks) => {
                        status.local_addr = socks.0.local_addr().ok();
                        conn.set(|c| c.state = "connected");
                        start_multicast(socks, group, id, s, router.clone(), cancel, tracker);
                        tracing::info!(link = %l.name, group = %l.address, interfaces = ?l.interfaces, "multicast joined");
                    }
                    Err(e) => {
                        // An interface may come up later (a radio, a VPN): keep serving
                        // everything else and try again.
                        tracing::error!(link = %l.name, group = %l.address, "cannot join multicast group: {}; retrying every 10 s", e.0);
                        conn.set(|c| {
                            c.state = "error";
                            c.last_error = Some(e.0.clone());
                        });
                        let (router, name, tracker2) = (router.clone(), l.name.clone(), tracker.clone());
                        tracker.spawn(async move {
                            loop {
                                tokio::select! {
                                    _ = cancel.cancelled() => return,
                                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                                }
                                match datagram::multicast_sockets(&o) {
                                    Ok(socks) => {
                                        conn.set(|c| {
                                            c.state = "connected";
                                            c.last_error = None;
                                        });
                                        tracing::info!(link = %name, group = %o.group, "multicast joined");
                                        start_multicast(socks, group, id, s, router, cancel, &tracker2);
                                        return;
                                    }
                                    Err(e) => conn.set(|c| c.last_error = Some(e.0)),
                                }
                            }
                        });
                    }
                }
            } else if mode == Mode::Listen {
                let addr: SocketAddr = l.address.parse().map_err(|e| format!("{e}"))?;
                let sock = datagram::bind_udp(addr).map_err(|e| e.0)?;
                status.local_addr = sock.local_addr().ok();
                tracing::info!(link = %l.name, address = ?status.local_addr, "udp listening");
                start_receiver(sock, router.next_id(), None, s, router.clone(), cancel, tracker);
            } else {
                let target = tokio::net::lookup_host(&l.address).await.map_err(|e| format!("cannot resolve {}: {e}", l.address))?.next().ok_or("address resolves to nothing")?;
                let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse().unwrap_or(target) } else { "[::]:0".parse().unwrap_or(target) };
                let sock = tokio::net::UdpSocket::bind(bind).await.map_err(|e| format!("udp socket: {e}"))?;
                status.local_addr = sock.local_addr().ok();
                tracing::info!(link = %l.name, %target, "udp sending");
                tracker.spawn(datagram::send_loop(Arc::new(sock), target, router.next_id(), s, router.clone(), cancel));
            }
        }
    }
    Ok(status)
}

/// TLS for a stream or federation link: as client, trust `ca` and present `cert`/`key` when
/// given (server name from `server_name` or the address); as server, present `cert` with its
/// issuing CA and verify clients against `ca` (required when `require_client_cert`).
fn tls_security(l: &LinkConfig, connect: bool, require_client_cert: bool, alpn: &[&[u8]]) -> Result<Security, String> {
    let handshake_timeout = secs(l.handshake_timeout_secs, 10.0);
    if connect {
        let ca = l.ca.as_deref().ok_or("a tls connection needs ca (the CA that signed the server certificate)")?;
        let mut cc = tls::client_config_with_crls(ca, l.cert.as_deref().zip(l.key.as_deref()), &l.crl).map_err(|e| e.0)?;
        cc.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let host = l.address.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']).to_owned()).unwrap_or_default();
        Ok(Security::Tls { acceptor: None, connector: Some(TlsConnector::from(Arc::new(cc))), server_name: l.server_name.clone().unwrap_or(host), handshake_timeout })
    } else {
        let (cert, key) = l.cert.as_deref().zip(l.key.as_deref()).ok_or("a tls listener needs cert and key")?;
        let mut sc = tls::server_config_with_crls(cert, key, l.ca.as_deref(), require_client_cert, &l.crl).map_err(|e| e.0)?;
        sc.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Security::Tls { acceptor: Some(TlsAcceptor::from(Arc::new(sc))), connector: None, server_name: String::new(), handshake_timeout })
    }
}

/// Starts a datagram receiver: the batched receive thread on Linux, else the async loop.
fn start_receiver(sock: tokio::net::UdpSocket, id: u64, own: Option<(u16, std::collections::HashSet<std::net::IpAddr>)>, s: Arc<DatagramSettings>, router: RouterHandle, cancel: CancellationToken, tracker: &TaskTracker) {
    #[cfg(target_os = "linux")]
    match sock.into_std() {
        Ok(std_sock) => {
            tracker.spawn_blocking(move || datagram::receive_thread(std_sock, id, own, s, router, cancel));
        }
        Err(e) => tracing::error!(link = %s.link, "udp receiver: {e}"),
    }
    #[cfg(not(target_os = "linux"))]
    tracker.spawn(datagram::receive_loop(Arc::new(sock), id, own, s, router, cancel));
}

/// Starts the receive and send tasks of a joined multicast group.
fn start_multicast(socks: (tokio::net::UdpSocket, tokio::net::UdpSocket, std::collections::HashSet<std::net::IpAddr>), group: SocketAddr, id: u64, s: Arc<DatagramSettings>, router: RouterHandle, cancel: CancellationToken, tracker: &TaskTracker) {
    let (rx, tx, local) = socks;
    let own_port = tx.local_addr().map(|a| a.port()).unwrap_or(0);
    start_receiver(rx, id, Some((own_port, local)), s.clone(), router.clone(), cancel.clone(), tracker);
    tracker.spawn(datagram::send_loop(Arc::new(tx), group, id, s, router, cancel));
}

/// Runs the gateway until `shutdown` completes, then stops it cleanly.
pub async fn run(cfg: &Config, shutdown: impl std::future::Future<Output = ()>) -> Result<(), StartError> {
    let gw = start(cfg).await?;
    shutdown.await;
    tracing::info!("shutting down");
    gw.shutdown().await;
    Ok(())
}
