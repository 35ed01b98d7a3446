//! The configuration tree (TOML). Unknown keys and bad values are rejected at start with
//! the key path and a clear message. An embedded default runs out of the box.
//!
//! * [`link`]: one `[[link]]`, typed per transport ([`LinkKind`]);
//! * [`policy`]: `[link.policy]`, the per-peer routing policy.

pub mod link;
pub mod policy;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub use link::{AmqpKind, AmqpLink, AmqpMode, FedLink, FedVersion, LinkConfig, LinkKind, Mode, MulticastLink, Overflow, Role, SendFormat, StreamLink, Transport, UdpLink, UdpMode};
pub use policy::{Direction, PolicyConfig, RateLimitConfig};

/// The embedded default configuration.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeConfig,
    pub router: RouterConfig,
    pub log: LogConfig,
    pub store: StoreConfig,
    pub missions: MissionsConfig,
    /// The admin API and dashboard; absent: not served.
    pub admin: Option<AdminConfig>,
    /// Federation Hub mode; absent: off.
    pub hub: Option<HubConfig>,
    /// The Marti file API for local clients (HTTPS); absent: not served.
    pub marti: Option<MartiConfig>,
    pub links: Vec<LinkConfig>,
}

/// The file as TOML gives it: links are parsed one by one afterwards, so that their
/// errors name the link.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
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
    pub hub: Option<HubConfig>,
    pub marti: Option<MartiConfig>,
    #[serde(default, rename = "link")]
    pub links: Vec<toml::Table>,
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
    /// A `takgate certs ca` directory: `POST /api/certs/package` makes device connection
    /// packages with it (the CA key stays in the directory).
    pub certs_dir: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { address: "127.0.0.1:8090".into(), allow_remote: false, token: None, cert: None, key: None, ca: None, certs_dir: None }
    }
}

/// The part of TAK Server's Marti API that ATAK, WinTAK and iTAK use for files: mission
/// content and data packages (upload, query, download) and mission content listings, on
/// HTTPS with client certificates, as TAK's port 8443.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MartiConfig {
    /// Listen address (TAK: 8443).
    #[serde(default = "marti_address")]
    pub address: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients' certificates must chain to this CA (as on TLS links).
    pub ca: PathBuf,
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// How clients reach this listener, e.g. `https://gw.example:8443`: the download URL of
    /// data packages announced by federates. Default: this machine's host name and the port.
    #[serde(default)]
    pub public_url: Option<String>,
}

impl MartiConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.address.parse::<SocketAddr>().map_err(|_| ConfigError(format!("marti.address: {:?} is not an IP:port", self.address)))?;
        if let Some(u) = &self.public_url {
            if !u.starts_with("https://") || u.len() <= 8 {
                return Err(ConfigError(format!("marti.public_url: {u:?} must be https://host[:port] (clients download files from it)")));
            }
        }
        Ok(())
    }
}

fn marti_address() -> String {
    "0.0.0.0:8443".into()
}

/// takgate as a TAK Federation Hub: TAK Servers (and takgates) federate through it over v2,
/// and what passes between them is decided by a policy file as TAK's hub UI exports it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Federation v2 (gRPC) listen address (TAK's hub: 9102).
    #[serde(default = "hub_v2_address")]
    pub address: String,
    /// Federation v1 listen address (TAK's hub: 9101); empty: no v1 port.
    #[serde(default = "hub_v1_address")]
    pub v1_address: String,
    /// The CAs federates' certificates chain to (one PEM file, several CAs allowed).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// The policy graph (JSON, as TAK's hub UI exports it). Re-read when it changes.
    pub policy: PathBuf,
    /// Hubs a message may cross (default 2; -1: unlimited).
    #[serde(default = "hub_max_hops")]
    pub max_hops: i64,
    /// Federates belong to the groups their CA certificates name (TAK's useCaGroups,
    /// default true); false: only federate nodes of the policy admit them.
    #[serde(default = "yes")]
    pub use_ca_groups: bool,
    /// Close a federate's session after this long without a health check (TAK: 15).
    #[serde(default)]
    pub health_timeout_secs: Option<f64>,
    /// Queue depth per federate and stream (default 16384).
    #[serde(default)]
    pub queue_depth: Option<usize>,
    /// A federate that comes back gets the ROL it missed within this many hours (TAK's hub:
    /// missionFederationRecencySeconds 43200). 0: no replay.
    #[serde(default = "hub_replay_hours")]
    pub replay_hours: f64,
    /// Files (ROL payloads) up to this size are replayed with their bytes; larger ones
    /// without (TAK's shipped hub: 200 bytes). Default 64 MiB.
    #[serde(default = "hub_replay_max_file_bytes")]
    pub replay_max_file_bytes: usize,
    /// Contacts kept per federate, offered with their latest position to federates that
    /// connect later (default 10000). Past it, new contacts are still forwarded live but not
    /// kept, and counted (`contacts_not_kept`).
    #[serde(default = "hub_max_contacts")]
    pub max_contacts_per_federate: usize,
}

fn hub_max_contacts() -> usize {
    10_000
}

fn hub_replay_hours() -> f64 {
    12.0
}

fn hub_replay_max_file_bytes() -> usize {
    64 << 20
}

fn hub_v2_address() -> String {
    "0.0.0.0:9102".into()
}

fn hub_v1_address() -> String {
    "0.0.0.0:9101".into()
}

fn yes() -> bool {
    true
}

fn hub_max_hops() -> i64 {
    2
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
    /// The largest file (mission content, data package) kept and sent with its bytes
    /// (TAK's maxMessageSizeBytes: 256 MiB).
    pub max_file_bytes: u64,
    /// In a replay window, files up to this size go with their bytes; larger ones as
    /// metadata only (default 64 MiB).
    pub replay_max_file_bytes: u64,
    /// Relay what one federate sends (mission changes, files, log entries) to the other
    /// federates whose mission policy wants it, never back to its origin (default true; TAK
    /// Server itself never relays).
    pub relay: bool,
}

impl Default for MissionsConfig {
    fn default() -> Self {
        MissionsConfig { replay_hours: 12.0, allow_federated_delete: false, max_file_bytes: crate::missions::files::DEFAULT_MAX_FILE_BYTES, replay_max_file_bytes: 64 << 20, relay: true }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id (federation server id, loop prevention, control messages). Empty:
    /// `takgate-<8 hex>`, made on first start and kept in the store, so two gateways left
    /// on defaults never take each other's traffic for a loop.
    #[serde(default)]
    pub id: String,
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError(format!("invalid configuration: {e}")))?;
        let links = raw.links.into_iter().enumerate().map(|(i, t)| LinkConfig::from_table(i, t)).collect::<Result<Vec<_>, _>>()?;
        let cfg = Config { node: raw.node, router: raw.router, log: raw.log, store: raw.store, missions: raw.missions, admin: raw.admin, hub: raw.hub, marti: raw.marti, links };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn default_config() -> Config {
        Config::parse(DEFAULT_TOML).expect("the embedded default configuration is valid")
    }

    /// What the file has that does nothing (keys of earlier versions on links they do not
    /// apply to): logged at start and printed by `config check`.
    pub fn warnings(&self) -> Vec<String> {
        self.links.iter().flat_map(|l| l.ignored.iter().cloned()).collect()
    }

    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.node.id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(ConfigError(format!("node.id: {:?} must be letters, digits, '-', '_' or '.' (it becomes an XML attribute name)", self.node.id)));
        }
        if self.node.id.is_empty() && self.store.path.is_none() {
            if let Some(l) = self.links.iter().find(|l| matches!(&l.kind, LinkKind::Amqp(a) if matches!(a.kind, link::AmqpKind::Cluster(_)))) {
                return Err(ConfigError(format!("link {:?}: a cluster node needs a stable id (its broker queue is named after it): set [node] id, or a [store] path to keep the generated one", l.name)));
            }
        }
        if self.router.queue_depth == 0 {
            return Err(ConfigError("router.queue_depth: must be at least 1".into()));
        }
        if !(self.missions.replay_hours.is_finite() && self.missions.replay_hours >= 0.0) {
            return Err(ConfigError("missions.replay_hours: must be 0 or more".into()));
        }
        self.marti.as_ref().map(MartiConfig::validate).transpose()?;
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
        if let Some(h) = &self.hub {
            h.address.parse::<SocketAddr>().map_err(|_| ConfigError(format!("hub.address: {:?} is not an IP:port", h.address)))?;
            if !h.v1_address.is_empty() {
                h.v1_address.parse::<SocketAddr>().map_err(|_| ConfigError(format!("hub.v1_address: {:?} is not an IP:port (empty: no v1 port)", h.v1_address)))?;
            }
            for (k, p) in [("ca", &h.ca), ("cert", &h.cert), ("key", &h.key), ("policy", &h.policy)].into_iter().chain(h.crl.iter().map(|p| ("crl", p))) {
                if !p.is_file() {
                    return Err(ConfigError(format!("hub.{k}: {}: no such file", p.display())));
                }
            }
            let text = std::fs::read_to_string(&h.policy).map_err(|e| ConfigError(format!("hub.policy: {}: {e}", h.policy.display())))?;
            crate::hub::policy::Policy::parse(&text).map_err(|e| ConfigError(format!("hub.policy: {}: {e}", h.policy.display())))?;
            if !(h.replay_hours.is_finite() && h.replay_hours >= 0.0) {
                return Err(ConfigError("hub.replay_hours: must be 0 or more".into()));
            }
            if h.health_timeout_secs.is_some_and(|t| !(t > 0.0)) {
                return Err(ConfigError("hub.health_timeout_secs: must be a positive number of seconds".into()));
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
            if !names.insert(l.name.as_str()) {
                return Err(ConfigError(format!("link[{i}] ({:?}): name: used by another link", l.name)));
            }
        }
        Ok(())
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
    fn the_marti_listener_is_checked() {
        let m = "[marti]\ncert = \"s.pem\"\nkey = \"s.key\"\nca = \"ca.pem\"\n";
        let c = Config::parse(m).unwrap();
        assert_eq!(c.marti.as_ref().map(|m| m.address.as_str()), Some("0.0.0.0:8443"));
        let e = Config::parse(&format!("{m}public_url = \"http://gw:8443\"\n")).unwrap_err().0;
        assert!(e.contains("marti.public_url"), "{e}");
        assert!(Config::parse("[marti]\ncert = \"s.pem\"\n").unwrap_err().0.contains("key"));
    }

    #[test]
    fn default_config_is_valid() {
        let c = Config::default_config();
        assert_eq!(c.links[0].address(), "0.0.0.0:8087");
        assert_eq!(c.links[1].address(), "239.2.3.1:6969");
        assert_eq!(c.links[2].address(), "224.10.10.1:17012");
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
