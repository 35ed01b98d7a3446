//! Starting and stopping the gateway: the store and the mission service, the router, then
//! every configured link (one constructor per transport). Listeners are bound before
//! `start` returns, so port 0 works in tests and bind errors surface at once. Shutdown
//! stops accepting, lets writers drain their queues within the deadline, and waits for
//! every task. The admin API is not started here: the binary (or a test) composes it on
//! top of a running [`Gateway`] (`crate::admin::spawn`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, LinkConfig, LinkKind, Role};
use crate::link::{ConnState, LinkCounters, LinkCtx, LinkStatus, StartError};
use crate::missions::Missions;
use crate::router::{PeerPolicy, RouterHandle};
use crate::store::{Direction, Protocol, Server, Source, Store};
use crate::sync::lock;

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
    links: Mutex<Vec<(LinkStatus, CancellationToken)>>,
    /// Where the admin API listens, when it does.
    pub admin_addr: Mutex<Option<SocketAddr>>,
    /// Where the Marti file API listens, when it does.
    pub marti_addr: Option<SocketAddr>,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    pub drain: Duration,
    /// The Federation Hub, when `[hub]` is configured.
    pub hub: Option<Arc<crate::hub::Hub>>,
    /// What the cluster links know of their clusters.
    pub clusters: Arc<crate::transport::amqp::members::Clusters>,
}

impl Control {
    pub fn links(&self) -> Vec<LinkStatus> {
        lock(&self.links).iter().map(|(s, _)| s.clone()).collect()
    }
    pub fn link(&self, name: &str) -> Option<LinkStatus> {
        lock(&self.links).iter().find(|(s, _)| s.name == name).map(|(s, _)| s.clone())
    }
    /// Starts a link now (a name already running is an error).
    pub async fn add_link(&self, l: &LinkConfig) -> Result<(), StartError> {
        if self.link(&l.name).is_some() {
            return Err(StartError::new(&l.name, "a link of that name is already running"));
        }
        let ctx = self.ctx(self.cancel.child_token());
        let status = start_link(l, &ctx, &self.missions).await?;
        lock(&self.links).push((status, ctx.cancel));
        tracing::info!(link = %l.name, "link started");
        Ok(())
    }
    /// Stops a running link (its connections close); false when there is none.
    pub fn remove_link(&self, name: &str) -> bool {
        let mut links = lock(&self.links);
        let Some(i) = links.iter().position(|(s, _)| s.name == name) else { return false };
        let (_, token) = links.remove(i);
        token.cancel();
        tracing::info!(link = %name, "link stopped");
        true
    }
    fn ctx(&self, cancel: CancellationToken) -> LinkCtx {
        LinkCtx { router: self.router.clone(), cancel, tracker: self.tracker.clone(), drain: self.drain, queue_depth: self.cfg.router.queue_depth, clusters: self.clusters.clone() }
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
    pub fn connection(&self, link: &str) -> Option<ConnState> {
        self.inner.link(link).and_then(|l| l.connection).map(|c| c.get())
    }
    pub fn counters(&self, link: &str) -> Option<Arc<LinkCounters>> {
        self.inner.link(link).map(|l| l.counters)
    }
    /// Where the admin API listens.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        *lock(&self.inner.admin_addr)
    }

    /// Where the Marti file API listens, when `[marti]` is configured.
    pub fn marti_addr(&self) -> Option<SocketAddr> {
        self.inner.marti_addr
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

/// Starts the router and all links of `cfg`.
pub async fn start(cfg: &Config) -> Result<Gateway, StartError> {
    for w in cfg.warnings() {
        tracing::warn!("configuration: {w}");
    }
    let store_err = |e: crate::store::StoreError| StartError::new("store", e);
    let store = Arc::new(Store::open(cfg.store.path.as_deref().unwrap_or(":memory:")).map_err(store_err)?);
    if cfg.store.path.is_none() {
        tracing::info!("missions and the federation queue are kept in memory: set [store] path to keep them across restarts");
    }
    let mut cfg = cfg.clone();
    cfg.node.id = node_id(&cfg.node.id, &store).map_err(store_err)?;
    let cfg = &cfg;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let router = crate::router::spawn(&cfg.node.id, Duration::from_secs_f64(cfg.router.dedup_window_secs), &cancel, &tracker);
    let files_dir = crate::missions::FileStore::dir_for(cfg.store.path.as_deref(), &cfg.node.id);
    let missions = Missions::start(store.clone(), router.clone(), &cfg.missions, files_dir, cancel.clone(), &tracker).await;
    let hub = match &cfg.hub {
        Some(h) => Some(crate::hub::start(h, &cfg.node.id, store.clone(), cancel.child_token(), &tracker).await?),
        None => None,
    };
    let marti_addr = match &cfg.marti {
        Some(m) => Some(crate::marti::spawn(m, missions.clone(), &cfg.node.id, cancel.clone(), &tracker)?),
        None => None,
    };
    let control = Arc::new(Control { router, store, missions, cfg: cfg.clone(), links: Mutex::default(), admin_addr: Mutex::default(), marti_addr, cancel, tracker, drain: Duration::from_secs_f64(cfg.router.drain_timeout_secs), hub, clusters: Arc::default() });
    let mut all: Vec<LinkConfig> = cfg.links.clone();
    all.extend(reconcile_servers(cfg, &control.missions).map_err(|e| StartError::new("store", e))?);
    for l in &all {
        if !l.enabled {
            tracing::info!(link = %l.name, "link disabled: not started");
            continue;
        }
        if let Err(e) = control.add_link(l).await {
            control.cancel.cancel();
            return Err(e);
        }
    }
    Ok(Gateway { inner: control })
}

/// The configured node id, else the one this store keeps (made on first start).
fn node_id(configured: &str, store: &Store) -> Result<String, crate::store::StoreError> {
    if !configured.is_empty() {
        return Ok(configured.to_owned());
    }
    if let Some(id) = store.fact("node_id")? {
        return Ok(id);
    }
    let id = format!("takgate-{:08x}", fastrand::u32(..));
    store.set_fact("node_id", &id)?;
    tracing::info!(node_id = %id, "no [node] id configured: using a generated one (kept in the store)");
    Ok(id)
}

/// Starts one link with its transport's constructor.
async fn start_link(l: &LinkConfig, ctx: &LinkCtx, missions: &Arc<Missions>) -> Result<LinkStatus, StartError> {
    match &l.kind {
        LinkKind::Tcp(s) | LinkKind::Tls(s) => crate::transport::stream::start(l, s, ctx).await,
        LinkKind::Quic(s, q) => crate::transport::quic::start(l, s, q, ctx).await,
        LinkKind::Udp(u) => crate::transport::datagram::start_udp(l, u, ctx).await,
        LinkKind::Multicast(m) => crate::transport::datagram::start_multicast(l, m, ctx),
        LinkKind::Amqp(a) => crate::transport::amqp::start(l, a, ctx, missions),
        LinkKind::FederationV1(f) | LinkKind::FederationV2(f) => crate::federation::start(l, f, ctx, missions).await,
    }
}

/// The outgoing federation link for a store server row (admin API and start-up).
pub fn server_link(s: &Server) -> Result<LinkConfig, String> {
    let mut t = toml::Table::new();
    t.insert("name".into(), s.name.clone().into());
    t.insert("transport".into(), if s.protocol == Protocol::V2 { "federation-v2" } else { "federation-v1" }.into());
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
    LinkConfig::from_table(0, t).map_err(|e| e.0)
}

/// The store row of an outgoing federation link of the file.
fn config_server(l: &LinkConfig) -> Result<Option<Server>, String> {
    let (LinkKind::FederationV1(f) | LinkKind::FederationV2(f)) = &l.kind else { return Ok(None) };
    let Role::Connect { address, .. } = &f.role else { return Ok(None) };
    let (host, port) = address.rsplit_once(':').map(|(h, p)| (h.trim_matches(['[', ']']).to_owned(), p.parse().unwrap_or(0))).unwrap_or((address.clone(), 0));
    let policy = PeerPolicy::new(&l.policy, false)?;
    let (ca, cert, key) = f.files();
    Ok(Some(Server {
        name: l.name.clone(),
        address: host,
        port,
        direction: Direction::Outbound,
        protocol: if matches!(l.kind, LinkKind::FederationV2(_)) { Protocol::V2 } else { Protocol::V1 },
        ca_path: Some(ca.display().to_string()),
        cert_path: Some(cert.display().to_string()),
        key_path: Some(key.display().to_string()),
        verify_ssl: true,
        enabled: l.enabled,
        sync_missions: policy.sync_missions,
        sync_cot: policy.sync_cot,
        mission_filter: policy.mission_filter_patterns(),
        link: l.name.clone(),
        source: Source::Config,
        ..Default::default()
    }))
}

/// Brings the store's federation servers in line with the configuration: every outgoing
/// federation link of the file is a server (source `config`; the file wins over a row of the
/// same name), config rows no longer in the file are removed, and enabled outgoing servers
/// added through the admin API (source `api`) are returned as links to start.
fn reconcile_servers(cfg: &Config, missions: &Missions) -> Result<Vec<LinkConfig>, String> {
    let store = &missions.store;
    let mut keep = vec![];
    for l in &cfg.links {
        let Some(row) = config_server(l)? else { continue };
        let (id, new) = store.upsert_server(&row).map_err(|e| e.to_string())?;
        if new {
            missions.replay_for(id).map_err(|e| e.to_string())?;
        }
        keep.push(l.name.clone());
    }
    let gone = store.remove_stale_config_servers(&keep).map_err(|e| e.to_string())?;
    if gone > 0 {
        tracing::info!(removed = gone, "federation servers no longer in the configuration were removed from the store");
    }
    let mut extra = vec![];
    for s in store.servers().map_err(|e| e.to_string())? {
        if s.source != Source::Api || s.direction != Direction::Outbound || cfg.links.iter().any(|l| l.name == s.name) {
            continue;
        }
        match server_link(&s) {
            Ok(l) => extra.push(l),
            Err(e) => tracing::error!(server = %s.name, "federation server from the store not started: {e}"),
        }
    }
    Ok(extra)
}
