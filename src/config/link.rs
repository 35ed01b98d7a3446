//! One `[[link]]`: the keys every link has (name, transport, mode, enabled, queue depth,
//! overflow, policy) and a typed spec per transport, so that a key which cannot apply to a
//! link is an error that says where it does apply, instead of a flat bag of options
//! checked by hand.
//!
//! The TOML stays flat (the keys users write are those of earlier versions). Parsing takes
//! the link's table apart: each [`Section`] takes its own keys and is deserialized with
//! `deny_unknown_fields`; whatever no section of that transport and mode took is refused
//! with the sections it belongs to. Errors name the link and the key path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::policy::PolicyConfig;
use super::ConfigError;

/// A group of keys that go together, and which links they apply to.
pub trait Section: DeserializeOwned {
    const KEYS: &'static [&'static str];
    /// Where these keys apply, for error messages ("tcp, tls and federation listeners").
    const APPLIES: &'static str;
}

macro_rules! section {
    ($(#[$m:meta])* $name:ident, $applies:literal { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Default, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
        }
        impl Section for $name {
            const KEYS: &'static [&'static str] = &[$(stringify!($f)),*];
            const APPLIES: &'static str = $applies;
        }
    };
}

/// Seconds: a positive, finite number.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Secs(pub f64);

impl TryFrom<f64> for Secs {
    type Error = String;
    fn try_from(v: f64) -> Result<Secs, String> {
        if v > 0.0 && v < 1e9 {
            Ok(Secs(v))
        } else {
            Err("must be a positive number of seconds".into())
        }
    }
}

impl Secs {
    pub fn duration(self) -> Duration {
        Duration::from_secs_f64(self.0)
    }
}

/// `v` seconds, or `default` when not set.
pub fn secs_or(v: Option<Secs>, default: f64) -> Duration {
    Duration::from_secs_f64(v.map(|s| s.0).unwrap_or(default))
}

/// A count of at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "usize")]
pub struct Count(pub usize);

impl TryFrom<usize> for Count {
    type Error = String;
    fn try_from(v: usize) -> Result<Count, String> {
        if v >= 1 {
            Ok(Count(v))
        } else {
            Err("must be at least 1".into())
        }
    }
}

/// A rate per second of at least one.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Rate(pub f64);

impl TryFrom<f64> for Rate {
    type Error = String;
    fn try_from(v: f64) -> Result<Rate, String> {
        if (1.0..1e12).contains(&v) {
            Ok(Rate(v))
        } else {
            Err("must be at least 1".into())
        }
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
    /// TAK's QUIC stream input (TAK Server `protocol="quic"`, ATAK `host:port:quic`):
    /// the TLS stream protocol on one QUIC stream, ALPN `takstream`, client certificates.
    Quic,
    /// TAK Server federation v1 (port 9000): mutual TLS, length-prefixed FederatedEvents.
    FederationV1,
    /// TAK Server federation v2 (port 9001): gRPC over mutual TLS (`FederatedChannel`).
    FederationV2,
}

impl Transport {
    pub fn is_federation(self) -> bool {
        matches!(self, Transport::FederationV1 | Transport::FederationV2)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Udp => "udp",
            Transport::Multicast => "multicast",
            Transport::Quic => "quic",
            Transport::Amqp => "amqp",
            Transport::FederationV1 => "federation-v1",
            Transport::FederationV2 => "federation-v2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Accept connections (tcp, tls, federation) or datagrams (udp).
    Listen,
    /// Connect out, with reconnect (tcp, tls, federation).
    Connect,
    /// Send datagrams to a unicast address (udp); multicast and amqp links send too.
    Send,
}

/// What a datagram link sends; streams send XML until TAK protocol v1 is negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SendFormat {
    #[default]
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

/// x-overflow of a cluster node's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum QueueOverflow {
    #[default]
    DropHead,
    RejectPublish,
}

impl QueueOverflow {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueOverflow::DropHead => "drop-head",
            QueueOverflow::RejectPublish => "reject-publish",
        }
    }
}

/// x-queue-type of a cluster node's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
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

section! {
    /// The keys of every link.
    Common, "every link" {
        name: String,
        transport: Option<Transport>,
        /// listen | connect | send. Multicast and amqp links have none.
        mode: Option<Mode>,
        /// Bind address (listen), remote address (connect, send), group:port (multicast) or
        /// amqp:// URL.
        address: String,
        /// A disabled link is checked but not started (default true).
        enabled: Option<bool>,
        /// Per-peer queue depth (default: router.queue_depth).
        queue_depth: Option<Count>,
        overflow: Overflow,
        policy: PolicyConfig,
    }
}

section! {
    /// Connection limits of a stream listener.
    ListenLimits, "tcp, tls, quic and federation listeners" {
        /// At most this many connections at once (default: derived from the process's
        /// file-descriptor limit).
        max_connections: Option<Count>,
        /// At most this many from one source address (default: none, because of NAT).
        max_connections_per_address: Option<Count>,
        /// The listen backlog (default 4096; the kernel caps it at net.core.somaxconn).
        listen_backlog: Option<Count>,
    }
}

section! {
    /// What a TLS listener adds to the limits.
    TlsListen, "tls, quic and federation listeners" {
        /// TLS handshakes in progress at once (default 128); more are refused at once.
        max_tls_handshakes: Option<Count>,
        /// Connections presenting one certificate (SHA-256 fingerprint).
        max_connections_per_identity: Option<Count>,
        /// Require a client certificate chaining to `ca` (default: true when `ca` is set).
        require_client_cert: Option<bool>,
    }
}

section! {
    /// Reconnect backoff bounds of an outgoing link.
    Reconnect, "outgoing tcp, tls, quic and federation links, and amqp links" {
        reconnect_min_secs: Option<Secs>,
        reconnect_max_secs: Option<Secs>,
    }
}

section! {
    /// TLS material of a link (PEM files, read in place).
    TlsFiles, "tls, quic and federation links" {
        /// Peers must chain to this CA (listen: client certificates; connect: the server).
        ca: Option<PathBuf>,
        /// Our certificate chain: leaf plus issuer (added from `ca` if missing).
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        /// Certificate revocation lists (PEM or DER). A peer revoked by one is refused, and
        /// so is a peer whose issuing CA has no list here.
        crl: Vec<PathBuf>,
        handshake_timeout_secs: Option<Secs>,
    }
}

section! {
    /// What an outgoing TLS link adds.
    TlsConnect, "outgoing tls, quic and federation links" {
        /// The name to verify in the server certificate (default: the host in address).
        server_name: Option<String>,
    }
}

section! {
    /// The stream protocol of a TAK client connection.
    StreamOpts, "tcp, tls and quic links" {
        /// `protobuf`: stream protobuf from the first byte (TAK Server's `prototls`).
        format: Option<SendFormat>,
        /// Offer (listen) or request (connect) TAK protocol v1 (default true).
        negotiate: Option<bool>,
        /// Close after this long without any bytes received (default 120 s listening, 25 s
        /// connecting, which pings after 15 s of silence).
        idle_timeout_secs: Option<Secs>,
        /// Send a client that connects the latest position report of every contact
        /// (default true).
        send_latest_sa: Option<bool>,
    }
}

section! {
    /// Read rates and the write timeout of one connection.
    ConnLimits, "tcp, tls, quic and federation-v1 links" {
        /// Read at most this many bytes per second (reading pauses; nothing is dropped).
        max_read_bytes_per_sec: Option<Rate>,
        /// Take at most this many events per second (reading pauses the same way).
        max_read_events_per_sec: Option<Rate>,
        /// A write that does not complete within this many seconds closes the connection
        /// (default 30).
        write_timeout_secs: Option<Secs>,
    }
}

section! {
    /// The largest event a stream carries.
    EventLimit, "tcp, tls, quic and federation links" {
        /// Bytes (default 1 MiB for streams; federation v1 64 MiB, v2 256 MiB).
        max_event_bytes: Option<Count>,
    }
}

section! {
    /// QUIC's own keys.
    QuicOpts, "quic links" {
        /// QUIC's idle timeout: the connection closes after this long without any packet
        /// (default 30, TAK Server's `quicConnectionTimeoutSeconds`; ATAK asks for 100 and
        /// the lower of both applies).
        quic_idle_timeout_secs: Option<Secs>,
        /// Send QUIC PINGs when nothing else is sent (default: every 10 s connecting, never
        /// listening, as TAK Server).
        quic_keep_alive_secs: Option<Secs>,
        /// Bytes a peer may send on the stream ahead of our reading (default 1 MiB).
        quic_stream_window_bytes: Option<Count>,
    }
}

section! {
    /// A datagram link.
    DatagramOpts, "udp and multicast links" {
        /// What is sent: xml (default) or protobuf (mesh); both are accepted.
        format: Option<SendFormat>,
        /// Largest datagram accepted; bigger ones are counted as truncated and dropped.
        max_datagram_bytes: Option<Count>,
    }
}

section! {
    /// A multicast group.
    MulticastOpts, "multicast links" {
        /// Interfaces to join on, by name (`eth0`) or address; the first is the outgoing one.
        interfaces: Vec<String>,
        /// Default 1.
        ttl: Option<u32>,
        /// Default true.
        loopback: Option<bool>,
    }
}

section! {
    /// The RabbitMQ bridge.
    AmqpOpts, "amqp links" {
        amqp_mode: Option<AmqpMode>,
        /// The uid in envelopes we publish, and whose envelopes we skip
        /// (default `takgate-<node id>`).
        amqp_uid: Option<String>,
        /// Events buffered while the broker is unreachable (default 100 000).
        buffer_events: Option<Count>,
    }
}

section! {
    /// OpenTAKServer: its bus (read), its TCP CoT port and its Marti API (written).
    OtsOpts, "amqp links with amqp_mode = \"opentakserver\"" {
        /// OpenTAKServer's group takgate's contacts are in: over its TCP CoT port that is
        /// `__ANON__`, the default and the only value supported. Which takgate groups go
        /// into it is the link's policy (`groups_out`).
        ots_group: Option<String>,
        /// OpenTAKServer's TCP CoT port (eud_handler), where each takgate-side contact is
        /// a client of its own (default: the broker's host, port 8088).
        ots_cot: Option<String>,
        /// OpenTAKServer's API, for missions (default `http://<broker host>:8081`).
        ots_api: Option<String>,
        /// A certificate issued by OpenTAKServer's CA for an OTS user with the
        /// administrator role (PEM), sent as nginx does (`X-Ssl-Cert`). Without it,
        /// missions are not applied to OpenTAKServer.
        ots_api_cert: Option<PathBuf>,
        /// The callsign of takgate's own client on OpenTAKServer (default: the node id).
        ots_callsign: Option<String>,
        /// At most this many takgate-side contacts are clients on OpenTAKServer at once
        /// (each costs OTS a process); beyond, events go as takgate's own (default 500).
        ots_max_clients: Option<Count>,
        /// Seconds a new client connection waits before its first event (OTS 1.7.14's
        /// eud_handler misses the first contact otherwise; default 3).
        ots_register_delay_secs: Option<Secs>,
        /// How often OpenTAKServer's missions are listed through its API, to learn the ones
        /// created there (OTS announces a creation only to its creator's groups; default 10).
        ots_poll_secs: Option<Secs>,
        /// Earlier versions: publish to `cot_parser`. No longer needed (kept so old files load).
        persist: Option<bool>,
        /// Earlier versions: OTS_NODE_ID for `persist`. No longer needed.
        ots_node_id: Option<String>,
    }
}

section! {
    /// A takgate cluster on one topic exchange.
    ClusterOpts, "amqp links with amqp_mode = \"cluster\"" {
        /// Default `takgate`.
        exchange: Option<String>,
        /// What this node subscribes to (default `["cot.#"]`).
        bind_keys: Vec<String>,
        /// Events per AMQP message at most (default 256).
        batch_events: Option<Count>,
        /// How long the first event of a batch waits for more (default 0.002 s).
        batch_wait_secs: Option<Secs>,
        /// The node's queue is deleted by the broker after this long without a consumer
        /// (x-expires; default 86400: a day). A node back within it gets what it missed.
        queue_expiry_secs: Option<Secs>,
        /// The node's queue holds at most this many messages (batches) (x-max-length;
        /// default 100000) and this many bytes (x-max-length-bytes; default 1 GiB).
        queue_max_messages: Option<Count>,
        queue_max_bytes: Option<Count>,
        /// What the broker does with a full queue (x-overflow): `drop-head` (default: the
        /// oldest messages go, publishers never block) or `reject-publish` (publishers get
        /// nacks: a stopped node's full queue then stops everyone's publishing).
        queue_overflow: Option<QueueOverflow>,
        /// `classic` (default) or `quorum` (replicated on a clustered broker; see README).
        queue_type: Option<QueueType>,
        /// Seconds between membership announcements (default 5).
        announce_secs: Option<Secs>,
        /// How long a node that connects listens for the others before it publishes
        /// (default 0.5 s): their queues are bound to its exchange first.
        join_wait_secs: Option<Secs>,
    }
}

section! {
    /// A federate.
    FedOpts, "federation links" {
        /// Accepted peer fingerprints (SHA-256, `AA:BB:…`); empty: any peer chaining to `ca`.
        allow_fingerprints: Vec<String>,
        /// The name we present (default: the node id).
        display_name: Option<String>,
        /// Hop limit stamped on what we send (-1, the default: unlimited).
        max_hops: Option<i64>,
        /// The groups this federate may receive (empty: everything).
        outbound_groups: Vec<String>,
        /// The groups given to what it sends us, when `group_mapping` yields none.
        inbound_groups: Vec<String>,
    }
}

section! {
    /// Federation v1's own keys.
    V1Opts, "federation-v1 links" {
        /// Close a silent connection after this long (default: never; v1 has no heartbeat,
        /// TCP keepalive finds dead peers).
        idle_timeout_secs: Option<Secs>,
    }
}

section! {
    /// Federation v2's own keys.
    V2Opts, "federation-v2 links" {
        /// `remote:local` pairs mapping the federate's `federateGroups` to our groups.
        group_mapping: Vec<String>,
        /// As client: seconds between health checks (default 3).
        health_interval_secs: Option<Secs>,
        /// As server: close a federate's streams after this long without a health check
        /// (default 15, as TAK Server); as client: a peer that answered health checks and
        /// stops for this long is gone (default 10).
        health_timeout_secs: Option<Secs>,
    }
}

/// Every section, for telling a user where a key they misplaced applies.
const SECTIONS: &[(&[&str], &str)] = &[
    (ListenLimits::KEYS, ListenLimits::APPLIES),
    (TlsListen::KEYS, TlsListen::APPLIES),
    (Reconnect::KEYS, Reconnect::APPLIES),
    (TlsFiles::KEYS, TlsFiles::APPLIES),
    (TlsConnect::KEYS, TlsConnect::APPLIES),
    (StreamOpts::KEYS, StreamOpts::APPLIES),
    (ConnLimits::KEYS, ConnLimits::APPLIES),
    (EventLimit::KEYS, EventLimit::APPLIES),
    (QuicOpts::KEYS, QuicOpts::APPLIES),
    (DatagramOpts::KEYS, DatagramOpts::APPLIES),
    (MulticastOpts::KEYS, MulticastOpts::APPLIES),
    (AmqpOpts::KEYS, AmqpOpts::APPLIES),
    (OtsOpts::KEYS, OtsOpts::APPLIES),
    (ClusterOpts::KEYS, ClusterOpts::APPLIES),
    (FedOpts::KEYS, FedOpts::APPLIES),
    (V1Opts::KEYS, V1Opts::APPLIES),
    (V2Opts::KEYS, V2Opts::APPLIES),
];

/// Accepting or dialling, with what each side adds.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    Listen { address: SocketAddr, limits: ListenLimits, tls: TlsListen },
    Connect { address: String, reconnect: Reconnect, tls: TlsConnect },
}

impl Role {
    pub fn is_connect(&self) -> bool {
        matches!(self, Role::Connect { .. })
    }
}

/// A TAK client stream link (tcp, or tls with `tls` set).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamLink {
    pub role: Role,
    pub tls: Option<TlsFiles>,
    pub stream: StreamOpts,
    pub conn: ConnLimits,
    pub events: EventLimit,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UdpMode {
    Listen(SocketAddr),
    Send(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct UdpLink {
    pub mode: UdpMode,
    pub datagram: DatagramOpts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MulticastLink {
    pub group: SocketAddr,
    pub datagram: DatagramOpts,
    pub multicast: MulticastOpts,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AmqpKind {
    Opentakserver(OtsOpts),
    Cluster(ClusterOpts),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AmqpLink {
    pub url: String,
    pub kind: AmqpKind,
    pub opts: AmqpOpts,
    pub reconnect: Reconnect,
}

impl AmqpLink {
    pub fn mode(&self) -> AmqpMode {
        match self.kind {
            AmqpKind::Opentakserver(_) => AmqpMode::Opentakserver,
            AmqpKind::Cluster(_) => AmqpMode::Cluster,
        }
    }
}

/// What differs between the two federation protocols.
#[derive(Debug, Clone, PartialEq)]
pub enum FedVersion {
    V1 { opts: V1Opts, conn: ConnLimits },
    V2(V2Opts),
}

/// A federation link: mutual TLS always (ca, cert and key are required).
#[derive(Debug, Clone, PartialEq)]
pub struct FedLink {
    pub role: Role,
    pub tls: TlsFiles,
    pub fed: FedOpts,
    pub events: EventLimit,
    pub version: FedVersion,
}

impl FedLink {
    /// The CA, certificate and key (all present: checked at parse).
    pub fn files(&self) -> (&std::path::Path, &std::path::Path, &std::path::Path) {
        let none = std::path::Path::new("");
        (self.tls.ca.as_deref().unwrap_or(none), self.tls.cert.as_deref().unwrap_or(none), self.tls.key.as_deref().unwrap_or(none))
    }
}

/// The per-transport part of a link.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkKind {
    Tcp(StreamLink),
    Tls(StreamLink),
    /// A stream link on QUIC (`tls` always set).
    Quic(StreamLink, QuicOpts),
    Udp(UdpLink),
    Multicast(MulticastLink),
    Amqp(AmqpLink),
    FederationV1(FedLink),
    FederationV2(FedLink),
}

/// One attached link: a listener, an outgoing connection or a datagram endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    pub name: String,
    pub enabled: bool,
    pub queue_depth: Option<usize>,
    pub overflow: Overflow,
    pub policy: PolicyConfig,
    pub kind: LinkKind,
    /// Keys of earlier versions that have no effect on this link (accepted, with a warning).
    pub ignored: Vec<String>,
}

impl LinkConfig {
    pub fn transport(&self) -> Transport {
        match &self.kind {
            LinkKind::Tcp(_) => Transport::Tcp,
            LinkKind::Tls(_) => Transport::Tls,
            LinkKind::Quic(..) => Transport::Quic,
            LinkKind::Udp(_) => Transport::Udp,
            LinkKind::Multicast(_) => Transport::Multicast,
            LinkKind::Amqp(_) => Transport::Amqp,
            LinkKind::FederationV1(_) => Transport::FederationV1,
            LinkKind::FederationV2(_) => Transport::FederationV2,
        }
    }

    pub fn mode(&self) -> Mode {
        let role = |r: &Role| if r.is_connect() { Mode::Connect } else { Mode::Listen };
        match &self.kind {
            LinkKind::Tcp(s) | LinkKind::Tls(s) | LinkKind::Quic(s, _) => role(&s.role),
            LinkKind::FederationV1(f) | LinkKind::FederationV2(f) => role(&f.role),
            LinkKind::Udp(UdpLink { mode: UdpMode::Listen(_), .. }) => Mode::Listen,
            LinkKind::Udp(_) | LinkKind::Multicast(_) | LinkKind::Amqp(_) => Mode::Send,
        }
    }

    /// The address as configured (an amqp URL with its password).
    pub fn address(&self) -> String {
        let role = |r: &Role| match r {
            Role::Listen { address, .. } => address.to_string(),
            Role::Connect { address, .. } => address.clone(),
        };
        match &self.kind {
            LinkKind::Tcp(s) | LinkKind::Tls(s) | LinkKind::Quic(s, _) => role(&s.role),
            LinkKind::FederationV1(f) | LinkKind::FederationV2(f) => role(&f.role),
            LinkKind::Udp(UdpLink { mode: UdpMode::Listen(a), .. }) => a.to_string(),
            LinkKind::Udp(UdpLink { mode: UdpMode::Send(a), .. }) => a.clone(),
            LinkKind::Multicast(m) => m.group.to_string(),
            LinkKind::Amqp(a) => a.url.clone(),
        }
    }

    /// Parses link `i` of the file from its table.
    pub fn from_table(i: usize, mut t: toml::Table) -> Result<LinkConfig, ConfigError> {
        let name = t.get("name").and_then(|v| v.as_str()).unwrap_or("").to_owned();
        let at = format!("link[{i}] ({name:?})");
        let bad = |m: String| ConfigError(format!("{at}: {m}"));
        let c: Common = take(&mut t).map_err(bad)?;
        if c.name.is_empty() {
            return Err(bad("name: must not be empty".into()));
        }
        let transport = c.transport.ok_or_else(|| bad("transport: missing (tcp, tls, quic, udp, multicast, amqp, federation-v1 or federation-v2)".into()))?;
        let kind = kind(transport, c.mode, &c.address, &mut t).map_err(bad)?;
        let mode = c.mode.map(|m| format!(" with mode = {:?}", format!("{m:?}").to_lowercase())).unwrap_or_default();
        let mut ignored = vec![];
        for k in t.keys() {
            if !tolerated(transport, c.mode, k) {
                return Err(bad(format!("{k}: does not apply to a {} link{mode}{}", transport.as_str(), applies(k))));
            }
            ignored.push(format!("{at}: {k} has no effect on a {} link{mode}{}", transport.as_str(), applies(k)));
        }
        if let LinkKind::Quic(StreamLink { role: Role::Listen { limits, .. }, .. }, _) = &kind {
            if limits.listen_backlog.is_some() {
                ignored.push(format!("{at}: listen_backlog has no effect on a quic link (UDP has no accept queue)"));
            }
        }
        if let LinkKind::Amqp(AmqpLink { kind: AmqpKind::Opentakserver(o), .. }) = &kind {
            for (k, set) in [("persist", o.persist.is_some()), ("ots_node_id", o.ots_node_id.is_some())] {
                if set {
                    ignored.push(format!("{at}: {k} is no longer needed: takgate delivers into OpenTAKServer as its own clients do, so OTS stores everything with its sender"));
                }
            }
        }
        let l = LinkConfig { name: c.name, enabled: c.enabled.unwrap_or(true), queue_depth: c.queue_depth.map(|q| q.0), overflow: c.overflow, policy: c.policy, kind, ignored };
        l.check().map_err(bad)?;
        Ok(l)
    }
}

/// Keys that earlier versions accepted on these links although they did nothing there: a
/// file that has them still loads (with a warning), so existing configurations keep
/// working. Every other misplaced key is an error.
fn tolerated(transport: Transport, mode: Option<Mode>, key: &str) -> bool {
    let listen = mode != Some(Mode::Connect);
    let reconnect = matches!(key, "reconnect_min_secs" | "reconnect_max_secs");
    match transport {
        Transport::Tcp => listen && (reconnect || key == "max_tls_handshakes"),
        Transport::Tls => (listen && (reconnect || key == "server_name")) || (!listen && key == "require_client_cert"),
        Transport::Quic => (listen && (reconnect || key == "server_name")) || (!listen && key == "require_client_cert"),
        Transport::FederationV1 | Transport::FederationV2 => (listen && (reconnect || key == "server_name")) || (!listen && key == "require_client_cert") || (transport == Transport::FederationV2 && key == "idle_timeout_secs"),
        Transport::Udp | Transport::Multicast | Transport::Amqp => key == "max_event_bytes",
    }
}

/// " (it applies to …)" for a key some section knows.
fn applies(key: &str) -> String {
    let places: Vec<&str> = SECTIONS.iter().filter(|(keys, _)| keys.contains(&key)).map(|(_, w)| *w).collect();
    if places.is_empty() {
        " (no link has this key)".into()
    } else {
        format!(" (it applies to {})", places.join("; "))
    }
}

/// Moves the keys of section `S` out of `t` and deserializes them.
fn take<S: Section>(t: &mut toml::Table) -> Result<S, String> {
    let mut mine = toml::Table::new();
    for k in S::KEYS {
        if let Some(v) = t.remove(*k) {
            mine.insert((*k).to_owned(), v);
        }
    }
    mine.try_into::<S>().map_err(|e| key_first(&e.to_string()))
}

/// toml's "message\nin `key`\n" as "key: message".
fn key_first(e: &str) -> String {
    let e = e.trim_end();
    match e.rsplit_once("\nin `") {
        Some((msg, key)) => format!("{}: {}", key.trim_end_matches('`'), msg.trim()),
        None => e.to_owned(),
    }
}

fn listen_addr(a: &str) -> Result<SocketAddr, String> {
    a.parse().map_err(|_| format!("address: {a:?} is not an IP:port"))
}

fn connect_addr(a: &str) -> Result<String, String> {
    if a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) {
        Ok(a.to_owned())
    } else {
        Err(format!("address: {a:?} must be host:port"))
    }
}

fn role(mode: Mode, address: &str, t: &mut toml::Table, tls: bool) -> Result<Role, String> {
    match mode {
        Mode::Listen => Ok(Role::Listen { address: listen_addr(address)?, limits: take(t)?, tls: if tls { take(t)? } else { TlsListen::default() } }),
        Mode::Connect => Ok(Role::Connect { address: connect_addr(address)?, reconnect: take(t)?, tls: if tls { take(t)? } else { TlsConnect::default() } }),
        Mode::Send => Err("mode: send does not apply to stream links (listen or connect)".into()),
    }
}

fn kind(transport: Transport, mode: Option<Mode>, address: &str, t: &mut toml::Table) -> Result<LinkKind, String> {
    let no_mode = |what: &str| if mode.is_some() { Err(format!("mode does not apply to {what} links")) } else { Ok(()) };
    Ok(match transport {
        Transport::Tcp | Transport::Tls => {
            let tls = transport == Transport::Tls;
            let s = StreamLink { role: role(mode.unwrap_or(Mode::Listen), address, t, tls)?, tls: if tls { Some(take(t)?) } else { None }, stream: take(t)?, conn: take(t)?, events: take(t)? };
            if tls {
                LinkKind::Tls(s)
            } else {
                LinkKind::Tcp(s)
            }
        }
        Transport::Quic => {
            let s = StreamLink { role: role(mode.unwrap_or(Mode::Listen), address, t, true)?, tls: Some(take(t)?), stream: take(t)?, conn: take(t)?, events: take(t)? };
            LinkKind::Quic(s, take(t)?)
        }
        Transport::Udp => {
            let mode = match mode.unwrap_or(Mode::Listen) {
                Mode::Listen => UdpMode::Listen(listen_addr(address)?),
                Mode::Send => UdpMode::Send(connect_addr(address)?),
                Mode::Connect => return Err("mode: connect does not apply to transport udp (listen or send)".into()),
            };
            LinkKind::Udp(UdpLink { mode, datagram: take(t)? })
        }
        Transport::Multicast => {
            no_mode("multicast")?;
            let group = listen_addr(address)?;
            if !group.ip().is_multicast() {
                return Err(format!("address: {address:?} is not a multicast group"));
            }
            LinkKind::Multicast(MulticastLink { group, datagram: take(t)?, multicast: take(t)? })
        }
        Transport::Amqp => {
            no_mode("amqp")?;
            if !(address.starts_with("amqp://") || address.starts_with("amqps://")) {
                return Err(format!("address: {:?} must be an amqp:// URL", super::redact_address(address)));
            }
            let opts: AmqpOpts = take(t)?;
            let kind = match opts.amqp_mode {
                Some(AmqpMode::Opentakserver) => AmqpKind::Opentakserver(take(t)?),
                Some(AmqpMode::Cluster) => AmqpKind::Cluster(take(t)?),
                None => return Err("amqp_mode: missing (opentakserver or cluster)".into()),
            };
            LinkKind::Amqp(AmqpLink { url: address.to_owned(), kind, opts, reconnect: take(t)? })
        }
        Transport::FederationV1 | Transport::FederationV2 => {
            let role = role(mode.unwrap_or(Mode::Listen), address, t, true)?;
            let version = if transport == Transport::FederationV1 { FedVersion::V1 { opts: take(t)?, conn: take(t)? } } else { FedVersion::V2(take(t)?) };
            let f = FedLink { role, tls: take(t)?, fed: take(t)?, events: take(t)?, version };
            if transport == Transport::FederationV1 {
                LinkKind::FederationV1(f)
            } else {
                LinkKind::FederationV2(f)
            }
        }
    })
}

impl LinkConfig {
    /// What the types cannot say: files that must exist, keys that go together.
    fn check(&self) -> Result<(), String> {
        self.policy.check()?;
        match &self.kind {
            LinkKind::Tls(s) => check_tls(s.tls.as_ref().unwrap_or(&TlsFiles::default()), &s.role, false),
            LinkKind::Quic(s, _) => {
                let t = s.tls.clone().unwrap_or_default();
                check_tls(&t, &s.role, false)?;
                match &s.role {
                    Role::Listen { tls, .. } if tls.require_client_cert == Some(false) => Err("require_client_cert: a quic listener always requires client certificates (as TAK Server's QUIC input)".into()),
                    Role::Listen { .. } if t.ca.is_none() => Err("ca: a quic listener needs the CA its clients' certificates chain to (QUIC inputs require client certificates)".into()),
                    Role::Connect { .. } if t.cert.is_none() => Err("cert: a quic connection presents a client certificate (TAK Server's QUIC input requires one): set cert and key".into()),
                    _ => Ok(()),
                }
            }
            LinkKind::FederationV1(f) | LinkKind::FederationV2(f) => {
                check_tls(&f.tls, &f.role, true)?;
                if let FedVersion::V2(v) = &f.version {
                    if let Some(m) = v.group_mapping.iter().find(|m| !m.split_once(':').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())) {
                        return Err(format!("group_mapping: {m:?} is not remote:local"));
                    }
                }
                Ok(())
            }
            LinkKind::Multicast(m) if m.multicast.ttl.is_some_and(|t| t > 255) => Err("ttl: must be 0..=255".into()),
            LinkKind::Amqp(a) => match &a.kind {
                AmqpKind::Opentakserver(o) => match (&o.ots_api_cert, o.ots_group.as_deref()) {
                    (Some(p), _) if !p.exists() => Err(format!("ots_api_cert: {}: no such file", p.display())),
                    (_, Some(g)) if g != "__ANON__" => Err(format!("ots_group: {g:?}: OpenTAKServer puts clients of its TCP CoT port in __ANON__ only; choose what goes into it with the link's policy (groups_out)")),
                    _ => Ok(()),
                },
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

fn check_tls(t: &TlsFiles, role: &Role, federation: bool) -> Result<(), String> {
    if federation && (t.ca.is_none() || t.cert.is_none() || t.key.is_none()) {
        return Err("federation links use mutual TLS: ca, cert and key are required".into());
    }
    if let Role::Listen { tls, .. } = role {
        if t.cert.is_none() || t.key.is_none() {
            return Err("a tls listener needs cert and key".into());
        }
        if tls.require_client_cert == Some(true) && t.ca.is_none() {
            return Err("require_client_cert needs ca".into());
        }
    }
    if t.cert.is_some() != t.key.is_some() {
        return Err("cert and key go together".into());
    }
    if !t.crl.is_empty() && t.ca.is_none() {
        return Err("crl needs ca (the lists are checked against it)".into());
    }
    if role.is_connect() && t.ca.is_none() {
        return Err("ca: a tls connection needs the CA that signed the server certificate".into());
    }
    for p in [&t.ca, &t.cert, &t.key].into_iter().flatten().chain(&t.crl) {
        if !p.is_file() {
            return Err(format!("{}: no such file", p.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(text: &str) -> Result<LinkConfig, String> {
        LinkConfig::from_table(0, toml::from_str(text).unwrap()).map_err(|e| e.0)
    }

    #[test]
    fn federation_v1_has_no_idle_timeout_by_default() {
        // v1 has no heartbeat: a quiet link is not a dead one (TCP keepalive finds those), and
        // each drop makes TAK Server delete and re-add every contact.
        let f = std::env::current_exe().unwrap().display().to_string();
        let l = link(&format!("name='f'\ntransport='federation-v1'\nmode='connect'\naddress='h:9000'\nca='{f}'\ncert='{f}'\nkey='{f}'\n")).unwrap();
        let LinkKind::FederationV1(f) = &l.kind else { panic!("{:?}", l.kind) };
        let FedVersion::V1 { opts, .. } = &f.version else { panic!() };
        assert_eq!(opts.idle_timeout_secs, None);
    }

    #[test]
    fn kinds_and_modes() {
        let l = link("name='a'\ntransport='tcp'\nmode='connect'\naddress='h:1'\nreconnect_min_secs=1\n").unwrap();
        assert_eq!((l.transport(), l.mode(), l.address()), (Transport::Tcp, Mode::Connect, "h:1".to_string()));
        let l = link("name='u'\ntransport='udp'\nmode='send'\naddress='10.0.0.1:6969'\nformat='protobuf'\n").unwrap();
        assert!(matches!(&l.kind, LinkKind::Udp(UdpLink { mode: UdpMode::Send(_), datagram }) if datagram.format == Some(SendFormat::Protobuf)));
        let l = link("name='m'\ntransport='multicast'\naddress='239.2.3.1:6969'\nttl=2\n").unwrap();
        assert_eq!(l.mode(), Mode::Send);
    }

    #[test]
    fn a_key_in_the_wrong_place_says_where_it_applies() {
        let e = link("name='a'\ntransport='tcp'\nmode='connect'\naddress='h:1'\nmax_connections=3\n").unwrap_err();
        assert!(e.contains("max_connections: does not apply to a tcp link with mode = \"connect\"") && e.contains("tcp, tls, quic and federation listeners"), "{e}");
        let e = link("name='a'\ntransport='tcp'\naddress='0.0.0.0:1'\nttl=3\n").unwrap_err();
        assert!(e.contains("ttl") && e.contains("multicast links"), "{e}");
        let e = link("name='a'\ntransport='udp'\naddress='0.0.0.0:1'\nbogus=3\n").unwrap_err();
        assert!(e.contains("bogus") && e.contains("no link has this key"), "{e}");
        let e = link("name='a'\ntransport='amqp'\naddress='amqp://h'\namqp_mode='cluster'\npersist=true\n").unwrap_err();
        assert!(e.contains("persist") && e.contains("opentakserver"), "{e}");
    }

    #[test]
    fn keys_earlier_versions_accepted_are_ignored_with_a_warning() {
        let l = link("name='a'\ntransport='tcp'\naddress='0.0.0.0:1'\nreconnect_min_secs=1\n").unwrap();
        assert!(l.ignored[0].contains("reconnect_min_secs has no effect on a tcp link"), "{:?}", l.ignored);
        assert!(link("name='a'\ntransport='udp'\naddress='0.0.0.0:1'\nmax_event_bytes=5\n").unwrap().ignored.len() == 1);
        assert!(link("name='a'\ntransport='tcp'\nmode='connect'\naddress='h:1'\nmax_tls_handshakes=5\n").is_err(), "refused before too");
    }

    #[test]
    fn values_are_checked_with_their_key() {
        let e = link("name='a'\ntransport='tcp'\naddress='0.0.0.0:1'\nidle_timeout_secs=0\n").unwrap_err();
        assert!(e.contains("idle_timeout_secs: must be a positive number of seconds"), "{e}");
        let e = link("name='a'\ntransport='tcp'\naddress='0.0.0.0:1'\nmax_connections=0\n").unwrap_err();
        assert!(e.contains("max_connections: must be at least 1"), "{e}");
        let e = link("name='a'\ntransport='tcp'\naddress='0.0.0.0:1'\n[policy]\nsync_cot='yes'\n").unwrap_err();
        assert!(e.contains("policy.sync_cot"), "{e}");
        let e = link("name='a'\ntransport='federation-v2'\naddress='0.0.0.0:1'\n").unwrap_err();
        assert!(e.contains("ca, cert and key are required"), "{e}");
        let e = link("name='a'\ntransport='amqp'\naddress='amqp://u:secret@h'\namqp_mode='opentakserver'\nots_api_cert='/nonexistent/cert.pem'\n").unwrap_err();
        assert!(e.contains("ots_api_cert") && e.contains("no such file"), "{e}");
        // keys of the bus-only design still load, with a warning
        let l = link("name='a'\ntransport='amqp'\naddress='amqp://u:secret@h'\namqp_mode='opentakserver'\npersist=true\nots_node_id='N'\n").unwrap();
        assert!(l.ignored.len() == 2 && l.ignored[0].contains("persist is no longer needed"), "{:?}", l.ignored);
    }

    #[test]
    fn every_section_key_is_a_field() {
        // A section's KEYS come from its fields: a table of just those keys parses.
        fn all<S: Section + std::fmt::Debug>() {
            let mut t = toml::Table::new();
            for k in S::KEYS {
                t.insert((*k).into(), toml::Value::Integer(1));
            }
            let e = toml::Value::Table(t).try_into::<S>().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!e.contains("unknown field"), "{e}");
        }
        all::<ListenLimits>();
        all::<TlsFiles>();
        all::<FedOpts>();
        all::<V2Opts>();
    }
}
