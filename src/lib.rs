//! takgate: a gateway for TAK (Team Awareness Kit) Cursor-on-Target traffic.
//!
//! The one data path:
//!
//! ```text
//! socket -> transport task -> codec (framing + format) -> Message -> Router -> per-peer queue -> writer -> socket
//! ```
//!
//! * [`cot`]: the canonical [`cot::CotEvent`] and pure conversions to and from CoT XML and
//!   TAK protocol v1 protobuf; negotiation and keepalive builders ([`cot::control`]).
//! * [`codec`]: framing of streams (XML split after `</event>`, `0xbf` varint frames) and
//!   mesh datagrams, independent of the format.
//! * [`router`]: [`router::Message`] (event + facts + encodings cached per wire format),
//!   [`router::PeerPolicy`], wildcard patterns, and the router actor that fans out to
//!   bounded per-peer queues without waiting on anyone.
//! * [`transport`]: stream sessions (TCP/TLS, server and client roles), TCP/TLS listeners
//!   and reconnecting connectors, UDP and multicast links, the RabbitMQ link
//!   ([`transport::amqp`]: OpenTAKServer's bus or a takgate cluster).
//! * [`runtime`]: starts the router and every configured link; clean shutdown.
//! * [`config`]: the TOML configuration, embedded default and validation.
//! * [`cotcmd`]: `takgate cot convert` and `takgate cot inspect`.
//! * [`bench`]: `takgate bench`, the load harness for any TAK server.
//! * [`error`]: error values for everything that reads bytes from the network.

pub mod admin;
pub mod bench;
pub mod certs;
pub mod codec;
pub mod config;
pub mod cot;
pub mod cotcmd;
pub mod error;
pub mod federation;
pub mod fuzz;
pub mod metrics;
pub mod missions;
pub mod router;
pub mod runtime;
pub mod store;
pub mod transport;
