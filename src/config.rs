//! The configuration tree (TOML). Unknown keys and bad values are rejected at start with
//! the key path and a clear message. An embedded default runs out of the box.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The embedded default configuration.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub router: RouterConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub missions: MissionsConfig,
    /// The admin API and dashboard; absent: not served.
    pub admin: Option<AdminConfig>,
    #[serde(default, rename = "link")]
    pub links: Vec<LinkConfig>,
}

/// The HTTP admin API (and dashboard).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address (default 127.0.0.1:8090). Anything but loopback needs `allow_remote`.
    pub address: String,
    pub allow_remote: bool,
    /// The bearer token every endpoint but /api/health requires. The environment variable
    /// TAKGATE_ADMIN_TOKEN overrides it. Without either, only /api/health answers.
    pub token: Option<String>,
    /// Serve HTTPS with this certificate and key.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// With HTTPS: also require a client certificate that chains to this CA (mutual TLS, on
    /// top of the token).
    pub ca: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { address: "127.0.0.1:8090".into(), allow_remote: false, token: None, cert: None, key: None, ca: None }
    }
}

/// Where missions, federation servers and the outbound queue are kept.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite file (created if missing). Absent: kept in memory, lost at exit.
    pub path: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MissionsConfig {
    /// A federate seen for the first time gets the local mission changes of this many hours
    /// (TAK Server: 12).
    pub replay_hours: f64,
    /// Apply DELETE_MISSION and REMOVE_CONTENT received from federates (TAK Server's
    /// allowFederatedDelete, default false).
    pub allow_federated_delete: bool,
}

impl Default for MissionsConfig {
    fn default() -> Self {
        MissionsConfig { replay_hours: 12.0, allow_federated_delete: false }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default = "default_node_id")]
    pub id: String,
}

fn default_node_id() -> String {
    "takgate".into()
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { id: default_node_id() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    pub dedup_window_secs: f64,
    pub queue_depth: usize,
    /// How long shutdown waits for queues to drain.
    pub drain_timeout_secs: f64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig { dedup_window_secs: 5.0, queue_depth: 4096, drain_timeout_secs: 3.0 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub json: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), json: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    Tcp,
    Tls,
    Udp,
    Multicast,
    /// RabbitMQ (AMQP 0-9-1): OpenTAKServer's bus or a takgate cluster.
    Amqp,
    /// TAK Server federation v1 (port 9000): mutual TLS, length-prefixed FederatedEvents.
    FederationV1,
    /// TAK Server federation v2 (port 9001): gRPC over mutual TLS (`FederatedChannel`).
    FederationV2,
}

impl Transport {
    pub fn is_federation(self) -> bool {
        matches!(self, Transport::FederationV1 | Transport::FederationV2)
    }
}

/// What an `amqp` link talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AmqpMode {
    /// OpenTAKServer 1.7.x: consume `firehose` (and `missions`), publish to `groups`
    /// (and `cot_parser` with `persist`).
    Opentakserver,
    /// Several takgate nodes sharing one topic exchange.
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Accept connections (tcp, tls) or datagrams (udp).
    Listen,
    /// Connect out, with reconnect (tcp, tls).
    Connect,
    /// Send datagrams to a unicast address (udp).
    Send,
}

/// What a datagram link sends; streams send XML until TAK protocol v1 is negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SendFormat {
    Xml,
    /// Mesh protobuf (datagrams) / stream protobuf without negotiation (streams).
    Protobuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Drop the newest event for this peer and count it.
    #[default]
    Drop,
    /// Disconnect the peer (streams); for datagram links the same as drop.
    Disconnect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    In,
    Out,
    #[default]
    Both,
}

/// One attached link: a listener, an outgoing connection or a datagram endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    pub name: String,
    pub transport: Transport,
    /// A disabled link is checked but not started (default true).
    pub enabled: Option<bool>,
    /// listen | connect | send. Multicast links always join and send.
    pub mode: Option<Mode>,
    /// Bind address (listen), remote address (connect, send) or group:port (multicast).
    pub address: String,
    /// Datagram links: the format sent. Stream links: `protobuf` sends stream-framed
    /// protobuf from the first byte (TAK Server's `prototls`/`protobuf` inputs).
    pub format: Option<SendFormat>,
    /// Stream links: offer (listen) or request (connect) TAK protocol v1. Default true.
    pub negotiate: Option<bool>,
    /// Streams: close after this long without any bytes received. Default 120 s for
    /// listeners, 25 s for connections (which ping after 15 s of silence, as ATAK does).
    pub idle_timeout_secs: Option<f64>,
    /// Maximum size of one event in bytes (default 1 MiB).
    pub max_event_bytes: Option<usize>,
    /// Listeners (tcp, tls, federation): at most this many connections at once.
    pub max_connections: Option<usize>,
    /// Listeners: at most this many connections from one address.
    pub max_connections_per_address: Option<usize>,
    /// TLS listeners: at most this many handshakes in progress (default 128); more are
    /// refused at once rather than queued.
    pub max_tls_handshakes: Option<usize>,
    /// TLS and federation listeners: at most this many connections presenting the same
    /// certificate (by SHA-256 fingerprint): one device reconnecting in a storm cannot take
    /// every slot.
    pub max_connections_per_identity: Option<usize>,
    /// tcp, tls and federation v1 links: read at most this many bytes per second from one
    /// connection. Reading pauses, so TCP pushes back on the sender; nothing read is dropped.
    /// For links open to untrusted clients.
    pub max_read_bytes_per_sec: Option<f64>,
    /// tcp, tls and federation v1 links: take at most this many events per second from one
    /// connection (reading pauses the same way).
    pub max_read_events_per_sec: Option<f64>,
    /// tcp, tls and federation v1 links: a write to a peer that does not complete within
    /// this many seconds closes the connection (a peer that stopped reading; default 30).
    pub write_timeout_secs: Option<f64>,
    /// Per-peer queue depth (default: router.queue_depth).
    pub queue_depth: Option<usize>,
    #[serde(default)]
    pub overflow: Overflow,
    /// Connect: reconnect backoff bounds.
    pub reconnect_min_secs: Option<f64>,
    pub reconnect_max_secs: Option<f64>,
    // TLS
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Listen: require a client certificate chaining to `ca` (default true when `ca` is set).
    pub require_client_cert: Option<bool>,
    /// Connect: the name to verify in the server certificate (default: the host in address).
    pub server_name: Option<String>,
    pub handshake_timeout_secs: Option<f64>,
    /// TLS and federation links: certificate revocation lists (PEM or DER files). A peer
    /// certificate revoked by one of them is refused, and so is a peer whose issuing CA has
    /// no list here (its revocation status is unknown). Re-read when the link starts.
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    // Multicast
    /// Interfaces to join on, by name (`eth0`) or IPv4 address. Default: the system's choice.
    #[serde(default)]
    pub interfaces: Vec<String>,
    pub ttl: Option<u32>,
    pub loopback: Option<bool>,
    /// Largest datagram accepted; bigger ones are counted as truncated and dropped.
    pub max_datagram_bytes: Option<usize>,
    // AMQP
    /// `opentakserver` or `cluster` (amqp links).
    pub amqp_mode: Option<AmqpMode>,
    /// Cluster: the topic exchange the nodes share (default `takgate`).
    pub exchange: Option<String>,
    /// Cluster: binding keys, i.e. what this node subscribes to (default `["cot.#"]`).
    /// Keys are `cot.<group>.<type with '.' for '-'>`, e.g. `cot.Cyan.a.f.#`.
    #[serde(default)]
    pub bind_keys: Vec<String>,
    /// OpenTAKServer: deliver to the `groups` exchange with routing key `<group>.OUT`
    /// (default `__ANON__`).
    pub ots_group: Option<String>,
    /// OpenTAKServer: also publish to `cot_parser` so OTS stores the events.
    pub persist: Option<bool>,
    /// OpenTAKServer: its OTS_NODE_ID (from ~/ots/config.yml); the envelope uid for
    /// `cot_parser`, which avoids the euds foreign-key failure. Required with `persist`.
    pub ots_node_id: Option<String>,
    /// The uid in envelopes we publish, and whose envelopes we skip (default `takgate-<node id>`).
    pub amqp_uid: Option<String>,
    /// Events buffered while the broker is unreachable; beyond this they are dropped and counted.
    pub buffer_events: Option<usize>,
    /// Federation: accepted peer certificate fingerprints (SHA-256, `AA:BB:…`); empty:
    /// any peer whose certificate chains to `ca`.
    #[serde(default)]
    pub allow_fingerprints: Vec<String>,
    /// Federation: the name we present to the federate (v2 `Subscription.identity.name`;
    /// default the node id).
    pub display_name: Option<String>,
    /// Federation: hop limit stamped on what we send (-1, the default: unlimited); events
    /// received with more hops than their limit are dropped.
    pub max_hops: Option<i64>,
    /// Federation: the groups this federate may receive. An event's groups are its
    /// federation groups or its `__group` name (`__ANON__` without one); only events with a
    /// group on this list are sent, and v2 carries the matching names in `federateGroups`.
    /// Empty: everything, without `federateGroups`.
    #[serde(default)]
    pub outbound_groups: Vec<String>,
    /// Federation: the groups given to what this federate sends us, when `group_mapping`
    /// yields none.
    #[serde(default)]
    pub inbound_groups: Vec<String>,
    /// Federation v2: `remote:local` pairs mapping the federate's `federateGroups` names to
    /// our groups.
    #[serde(default)]
    pub group_mapping: Vec<String>,
    /// Federation v2: seconds between our health checks as client (default 3).
    pub health_interval_secs: Option<f64>,
    /// Federation v2: as server, close a federate's streams with DEADLINE_EXCEEDED after
    /// this many seconds without a health check (default 15, as TAK Server); as client,
    /// end the session when a health check goes unanswered this long (default 10). Raise
    /// both ends on slow, lossy radio links.
    pub health_timeout_secs: Option<f64>,
    #[serde(default)]
    pub policy: PolicyConfig,
}

/// Per-peer routing policy. Lists are wildcard patterns (`*`, `?`, `[abc]`, `[!abc]`).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// in: the link only feeds the router; out: only receives; both (default).
    pub direction: Direction,
    /// Forward general CoT to this peer (default true).
    pub sync_cot: Option<bool>,
    /// Forward mission traffic (t-x-m-* and events addressed to a mission; default true).
    pub sync_missions: Option<bool>,
    /// Missions this peer gets. Absent: every mission. Empty list: none.
    pub mission_filter: Option<Vec<String>>,
    /// CoT type prefixes (or patterns) allowed toward this peer; empty: all.
    pub types_allow: Vec<String>,
    pub types_deny: Vec<String>,
    pub uids_allow: Vec<String>,
    pub uids_deny: Vec<String>,
    pub callsigns_allow: Vec<String>,
    pub callsigns_deny: Vec<String>,
    /// `__group` names accepted from this link (events without a group always pass).
    pub groups_in: Vec<String>,
    /// `__group` names delivered to this link (events without a group always pass).
    pub groups_out: Vec<String>,
    pub rate_limit: Option<RateLimitConfig>,
    /// Where direct messages (`marti/dest`) for contacts we have not seen go: links with
    /// this flag (default: true for outgoing stream connections, false otherwise).
    pub upstream: Option<bool>,
    /// Federation links: also send what came from other federates (default false: like
    /// TAK Server, federation is pair-wise).
    pub relay_federates: bool,
}

/// A token bucket per uid toward this peer: at most `burst` events, refilled one per
/// `interval_secs`. E.g. one PLI per uid every 30 s toward a radio link.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub interval_secs: f64,
    #[serde(default = "one")]
    pub burst: u32,
    /// Only events whose type matches one of these prefixes/patterns are limited; empty: all.
    #[serde(default)]
    pub types: Vec<String>,
}

fn one() -> u32 {
    1
}

/// An address for logs and the API: a URL's password (`amqp://user:pass@host`) becomes `***`.
pub fn redact_address(address: &str) -> String {
    let Some((scheme, rest)) = address.split_once("://") else { return address.to_owned() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return address.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => address.to_owned(),
    }
}

/// A configuration error: where and what.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError(format!("invalid configuration: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn default_config() -> Config {
        Config::parse(DEFAULT_TOML).expect("the embedded default configuration is valid")
    }

    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.id.is_empty() || !self.node.id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(ConfigError(format!("node.id: {:?} must be non-empty letters, digits, '-', '_' or '.' (it becomes an XML attribute name)", self.node.id)));
        }
        if self.router.queue_depth == 0 {
            return Err(ConfigError("router.queue_depth: must be at least 1".into()));
        }
        if !(self.missions.replay_hours.is_finite() && self.missions.replay_hours >= 0.0) {
            return Err(ConfigError("missions.replay_hours: must be 0 or more".into()));
        }
        if let Some(a) = &self.admin {
            let sa: SocketAddr = a.address.parse().map_err(|_| ConfigError(format!("admin.address: {:?} is not an IP:port", a.address)))?;
            if !sa.ip().is_loopback() && !a.allow_remote {
                return Err(ConfigError(format!("admin.address: {sa} is not on loopback: set admin.allow_remote = true to serve the admin API there (and use a strong token)")));
            }
            if a.cert.is_some() != a.key.is_some() {
                return Err(ConfigError("admin: cert and key go together".into()));
            }
            if a.ca.is_some() && a.cert.is_none() {
                return Err(ConfigError("admin.ca (mutual TLS) needs cert and key (HTTPS)".into()));
            }
            if a.token.as_deref().is_some_and(|t| t.len() < 16) {
                return Err(ConfigError("admin.token: use at least 16 characters".into()));
            }
        }
        if self.store.path.as_deref() == Some("") {
            return Err(ConfigError("store.path: empty (leave it out to keep the store in memory)".into()));
        }
        if !(self.router.dedup_window_secs >= 0.0) {
            return Err(ConfigError("router.dedup_window_secs: must be >= 0".into()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.links.iter().enumerate() {
            let at = format!("link[{i}] ({:?})", l.name);
            let bad = |m: String| ConfigError(format!("{at}: {m}"));
            if l.name.is_empty() {
                return Err(bad("name: must not be empty".into()));
            }
            if !names.insert(l.name.clone()) {
                return Err(bad("name: used by another link".into()));
            }
            let mode = l.mode();
            let amqp = l.transport == Transport::Amqp;
            if amqp != l.amqp_mode.is_some() {
                return Err(bad("amqp links need amqp_mode (opentakserver or cluster); other links must not set it".into()));
            }
            if !amqp && (l.exchange.is_some() || !l.bind_keys.is_empty() || l.ots_group.is_some() || l.persist.is_some() || l.ots_node_id.is_some() || l.amqp_uid.is_some() || l.buffer_events.is_some()) {
                return Err(bad("exchange, bind_keys, ots_group, persist, ots_node_id, amqp_uid and buffer_events apply only to amqp links".into()));
            }
            if amqp {
                if l.mode.is_some() {
                    return Err(bad("mode does not apply to amqp links".into()));
                }
                if !(l.address.starts_with("amqp://") || l.address.starts_with("amqps://")) {
                    return Err(bad(format!("address: {:?} must be an amqp:// URL", l.address)));
                }
                if l.amqp_mode == Some(AmqpMode::Opentakserver) && (l.exchange.is_some() || !l.bind_keys.is_empty()) {
                    return Err(bad("exchange and bind_keys apply only to amqp_mode = \"cluster\"".into()));
                }
                if l.amqp_mode == Some(AmqpMode::Cluster) && (l.ots_group.is_some() || l.persist.is_some() || l.ots_node_id.is_some()) {
                    return Err(bad("ots_group, persist and ots_node_id apply only to amqp_mode = \"opentakserver\"".into()));
                }
                if l.persist == Some(true) && l.ots_node_id.is_none() {
                    return Err(bad("persist needs ots_node_id (OpenTAKServer's OTS_NODE_ID): other envelope uids fail its euds foreign key".into()));
                }
                if l.buffer_events == Some(0) {
                    return Err(bad("buffer_events must be at least 1".into()));
                }
            }
            match (l.transport, mode) {
                (Transport::Amqp, _) => {}
                (Transport::Tcp | Transport::Tls | Transport::FederationV1 | Transport::FederationV2, Mode::Listen | Mode::Connect) => {}
                (Transport::Udp, Mode::Listen | Mode::Send) => {}
                (Transport::Multicast, _) if l.mode.is_none() => {}
                (t, m) => return Err(bad(format!("mode: {m:?} does not apply to transport {t:?}").to_lowercase())),
            }
            let addr = l.address.as_str();
            if amqp {
            } else if matches!(mode, Mode::Listen) || l.transport == Transport::Multicast {
                let sa: SocketAddr = addr.parse().map_err(|_| bad(format!("address: {addr:?} is not an IP:port")))?;
                if l.transport == Transport::Multicast && !sa.ip().is_multicast() {
                    return Err(bad(format!("address: {addr:?} is not a multicast group")));
                }
            } else if !addr.contains(':') {
                return Err(bad(format!("address: {addr:?} must be host:port")));
            }
            let fed = l.transport.is_federation();
            if fed && (l.ca.is_none() || l.cert.is_none() || l.key.is_none()) {
                return Err(bad("federation links use mutual TLS: ca, cert and key are required".into()));
            }
            if !fed && (!l.allow_fingerprints.is_empty() || l.display_name.is_some() || l.max_hops.is_some() || !l.outbound_groups.is_empty() || !l.inbound_groups.is_empty()) {
                return Err(bad("allow_fingerprints, display_name, max_hops, outbound_groups and inbound_groups apply only to federation links".into()));
            }
            if l.transport != Transport::FederationV2 && (!l.group_mapping.is_empty() || l.health_interval_secs.is_some() || l.health_timeout_secs.is_some()) {
                return Err(bad("group_mapping, health_interval_secs and health_timeout_secs apply only to federation-v2 links".into()));
            }
            for m in &l.group_mapping {
                if !m.split_once(':').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty()) {
                    return Err(bad(format!("group_mapping: {m:?} is not remote:local")));
                }
            }
            for (k, v) in [("health_interval_secs", l.health_interval_secs), ("health_timeout_secs", l.health_timeout_secs)] {
                if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                    return Err(bad(format!("{k} must be a positive number of seconds")));
                }
            }
            if fed && (l.negotiate.is_some() || l.format.is_some()) {
                return Err(bad("negotiate and format do not apply to federation links".into()));
            }
            let stream = matches!(l.transport, Transport::Tcp | Transport::Tls | Transport::FederationV1 | Transport::FederationV2);
            let datagram = matches!(l.transport, Transport::Udp | Transport::Multicast);
            if stream && (!l.interfaces.is_empty() || l.ttl.is_some() || l.loopback.is_some() || l.max_datagram_bytes.is_some()) {
                return Err(bad("interfaces, ttl, loopback and max_datagram_bytes apply only to udp and multicast links".into()));
            }
            if (!stream || mode != Mode::Listen) && (l.max_connections.is_some() || l.max_connections_per_address.is_some() || l.max_tls_handshakes.is_some()) {
                return Err(bad("max_connections, max_connections_per_address and max_tls_handshakes apply only to tcp, tls and federation listeners".into()));
            }
            if l.max_connections_per_identity.is_some() && (mode != Mode::Listen || !matches!(l.transport, Transport::Tls | Transport::FederationV1 | Transport::FederationV2)) {
                return Err(bad("max_connections_per_identity applies only to tls and federation listeners".into()));
            }
            let v1_stream = matches!(l.transport, Transport::Tcp | Transport::Tls | Transport::FederationV1);
            if !v1_stream && (l.max_read_bytes_per_sec.is_some() || l.max_read_events_per_sec.is_some() || l.write_timeout_secs.is_some()) {
                return Err(bad("max_read_bytes_per_sec, max_read_events_per_sec and write_timeout_secs apply only to tcp, tls and federation v1 links".into()));
            }
            for (k, v) in [("max_read_bytes_per_sec", l.max_read_bytes_per_sec), ("max_read_events_per_sec", l.max_read_events_per_sec)] {
                if let Some(v) = v {
                    if !(1.0..1e12).contains(&v) {
                        return Err(bad(format!("{k}: must be at least 1")));
                    }
                }
            }
            if [l.max_connections, l.max_connections_per_address, l.max_tls_handshakes, l.max_connections_per_identity].contains(&Some(0)) {
                return Err(bad("connection limits must be at least 1".into()));
            }
            if datagram && (l.negotiate.is_some() || l.idle_timeout_secs.is_some() || l.reconnect_min_secs.is_some() || l.reconnect_max_secs.is_some()) {
                return Err(bad("negotiate, idle_timeout_secs and reconnect_* apply only to tcp and tls links".into()));
            }
            if amqp && (l.negotiate.is_some() || l.idle_timeout_secs.is_some() || !l.interfaces.is_empty() || l.ttl.is_some() || l.max_datagram_bytes.is_some() || l.format.is_some()) {
                return Err(bad("negotiate, idle_timeout_secs, interfaces, ttl, max_datagram_bytes and format do not apply to amqp links".into()));
            }
            if l.transport != Transport::Multicast && (!l.interfaces.is_empty() || l.ttl.is_some() || l.loopback.is_some()) {
                return Err(bad("interfaces, ttl and loopback apply only to multicast links".into()));
            }
            if !matches!(l.transport, Transport::Tls | Transport::FederationV1 | Transport::FederationV2) {
                if l.ca.is_some() || l.cert.is_some() || l.key.is_some() || l.require_client_cert.is_some() || l.server_name.is_some() || l.handshake_timeout_secs.is_some() || !l.crl.is_empty() {
                    return Err(bad("ca, cert, key, crl, require_client_cert, server_name and handshake_timeout_secs apply only to tls links".into()));
                }
            } else {
                if mode == Mode::Listen && (l.cert.is_none() || l.key.is_none()) {
                    return Err(bad("a tls listener needs cert and key".into()));
                }
                if l.cert.is_some() != l.key.is_some() {
                    return Err(bad("cert and key go together".into()));
                }
                if l.require_client_cert == Some(true) && l.ca.is_none() {
                    return Err(bad("require_client_cert needs ca".into()));
                }
                if !l.crl.is_empty() && l.ca.is_none() {
                    return Err(bad("crl needs ca (the lists are checked against it)".into()));
                }
                for p in [&l.ca, &l.cert, &l.key].into_iter().flatten().chain(&l.crl) {
                    if !p.is_file() {
                        return Err(bad(format!("{}: no such file", p.display())));
                    }
                }
            }
            if let Some(t) = l.ttl {
                if t > 255 {
                    return Err(bad("ttl: must be 0..=255".into()));
                }
            }
            for (k, v) in [("idle_timeout_secs", l.idle_timeout_secs), ("reconnect_min_secs", l.reconnect_min_secs), ("reconnect_max_secs", l.reconnect_max_secs), ("handshake_timeout_secs", l.handshake_timeout_secs), ("write_timeout_secs", l.write_timeout_secs)] {
                if let Some(v) = v {
                    if !(v > 0.0 && v < 1e9) {
                        return Err(bad(format!("{k}: must be a positive number of seconds")));
                    }
                }
            }
            if l.max_event_bytes == Some(0) || l.queue_depth == Some(0) || l.max_datagram_bytes == Some(0) {
                return Err(bad("max_event_bytes, max_datagram_bytes and queue_depth must be at least 1".into()));
            }
            let p = &l.policy;
            for (k, list) in [("types_allow", &p.types_allow), ("types_deny", &p.types_deny), ("uids_allow", &p.uids_allow), ("uids_deny", &p.uids_deny), ("callsigns_allow", &p.callsigns_allow), ("callsigns_deny", &p.callsigns_deny), ("groups_in", &p.groups_in), ("groups_out", &p.groups_out)]
                .into_iter()
                .chain(p.mission_filter.as_ref().map(|m| ("mission_filter", m)))
            {
                for pat in list {
                    crate::router::pattern::Pattern::new(pat).map_err(|e| bad(format!("policy.{k}: {pat:?}: {e}")))?;
                }
            }
            if let Some(r) = &p.rate_limit {
                if !(r.interval_secs > 0.0) || r.burst == 0 {
                    return Err(bad("policy.rate_limit: interval_secs must be > 0 and burst >= 1".into()));
                }
            }
        }
        Ok(())
    }
}

impl LinkConfig {
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or(match self.transport {
            Transport::Udp => Mode::Listen,
            Transport::Multicast | Transport::Amqp => Mode::Send,
            _ => Mode::Listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_addresses_are_redacted() {
        assert_eq!(redact_address("amqp://guest:s3cret@10.0.0.1:5672/%2f"), "amqp://guest:***@10.0.0.1:5672/%2f");
        assert_eq!(redact_address("amqp://a:b:c@d@h:1"), "amqp://a:***@h:1");
        assert_eq!(redact_address("amqp://h:5672"), "amqp://h:5672");
        assert_eq!(redact_address("127.0.0.1:8087"), "127.0.0.1:8087");
    }

    #[test]
    fn default_config_is_valid() {
        let c = Config::default_config();
        assert_eq!(c.links[0].address, "0.0.0.0:8087");
        assert_eq!(c.links[1].address, "239.2.3.1:6969");
        assert_eq!(c.links[2].address, "224.10.10.1:17012");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = Config::parse("[router]\nqueue_depht = 3\n").unwrap_err().0;
        assert!(e.contains("queue_depht"), "{e}");
        let e = Config::parse("[[link]]\nname='a'\ntransport='tcp'\naddress='0.0.0.0:1'\n[link.policy]\nsync_cot='yes'\n").unwrap_err().0;
        assert!(e.contains("sync_cot"), "{e}");
        let e = Config::parse("[[link]]\nname='a'\ntransport='udp'\nmode='connect'\naddress='1.2.3.4:5'\n").unwrap_err().0;
        assert!(e.contains("link[0] (\"a\")") && e.contains("mode"), "{e}");
        let e = Config::parse("[[link]]\nname='a'\ntransport='multicast'\naddress='10.0.0.1:5'\n").unwrap_err().0;
        assert!(e.contains("not a multicast group"), "{e}");
        let e = Config::parse("[[link]]\nname='a'\ntransport='tcp'\naddress='0.0.0.0:1'\nttl=3\n").unwrap_err().0;
        assert!(e.contains("ttl"), "{e}");
        let e = Config::parse("[[link]]\nname='a'\ntransport='tcp'\naddress='0.0.0.0:1'\n[link.policy]\ntypes_allow=['a-[f']\n").unwrap_err().0;
        assert!(e.contains("policy.types_allow"), "{e}");
        let e = Config::parse("[[link]]\nname='a'\ntransport='tcp'\naddress='0.0.0.0:1'\n[[link]]\nname='a'\ntransport='tcp'\naddress='0.0.0.0:2'\n").unwrap_err().0;
        assert!(e.contains("used by another link"), "{e}");
    }
}
