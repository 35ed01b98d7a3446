//! The link vocabulary: what every link shares and nothing transport-specific. A link is
//! anything attached to the router: a TCP, TLS or QUIC stream client or server, a UDP or
//! multicast endpoint, a federation session (v1 frames or v2 gRPC), the RabbitMQ bridge.
//!
//! * [`Io`], the byte stream a connection runs on; [`PeerIdentity`], who is on the other
//!   end of a TLS connection; [`Codec`], what its wire carries now.
//! * [`counters`]: per-link counters; [`status`]: an outgoing link's state, as an enum.
//! * [`ingest`]: loop checks, flow tag and policy, then into the router.
//! * [`rate`]: the one token bucket (read rates, per-uid rate limits); [`backoff`]: the
//!   one reconnect backoff.
//! * [`listen`] and [`connect`]: accepting (limits, TLS handshakes off the accept loop) and
//!   reconnecting, for every stream link; [`tls`]: rustls configurations from PEM files;
//!   [`quic`]: quinn configurations and a QUIC stream as an [`Io`]; [`https`]: the HTTPS
//!   accept loop of the services (admin API, Marti file API).
//! * [`write`]: coalesced writes with a write timeout, toward every stream peer.
//! * [`latency`]: the delivery latency histogram.
//!
//! Transports and federation depend on `link` and `router`, never on each other.

pub mod backoff;
pub mod connect;
pub mod counters;
pub mod https;
pub mod ingest;
pub mod latency;
pub mod listen;
pub mod peer;
pub mod probe;
pub mod quic;
pub mod rate;
pub mod status;
pub mod tls;
pub mod write;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use backoff::Backoff;
pub use counters::{CounterSnapshot, LinkCounters};
pub use peer::{Codec, CodecCell, Io, PeerIdentity};
pub use status::{ConnState, ConnStatus, LinkState};

use crate::config::{Mode, Transport};
use crate::router::RouterHandle;

/// Logs bad input without flooding: the first few, then every power of two. `counter` is
/// the value of the counter before this occurrence.
pub fn log_bad_input(counter: u64, link: &str, remote: &str, what: &dyn std::fmt::Display) {
    if counter < 5 || counter.is_power_of_two() {
        tracing::warn!(link, remote, count = counter + 1, "bad input: {what}");
    }
}

/// What a link constructor gets: the router, its own cancel token (a child of the
/// gateway's), the task tracker shutdown waits on, and the gateway-wide defaults.
#[derive(Clone)]
pub struct LinkCtx {
    pub router: RouterHandle,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    /// How long shutdown lets writers drain their queues.
    pub drain: Duration,
    /// Per-peer queue depth unless the link sets its own.
    pub queue_depth: usize,
    /// Where cluster links keep what they know of their cluster (GET /api/cluster).
    pub clusters: Arc<crate::transport::amqp::members::Clusters>,
}

/// A configured link once started: what the admin API and metrics show of it.
#[derive(Debug, Clone)]
pub struct LinkStatus {
    pub name: String,
    pub transport: Transport,
    pub mode: Mode,
    /// The bound address (listeners, multicast, udp) or the target (connect, send).
    pub address: String,
    pub local_addr: Option<SocketAddr>,
    pub counters: Arc<LinkCounters>,
    /// Outgoing connections (and multicast joins): state, last error, last connected.
    pub connection: Option<Arc<ConnStatus>>,
}

/// Why a link could not start.
#[derive(Debug, thiserror::Error)]
#[error("link {link:?}: {message}")]
pub struct StartError {
    pub link: String,
    pub message: String,
}

impl StartError {
    pub fn new(link: &str, message: impl std::fmt::Display) -> StartError {
        StartError { link: link.to_owned(), message: message.to_string() }
    }
}
