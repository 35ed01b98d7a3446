//! takgate: a gateway for TAK (Team Awareness Kit) Cursor-on-Target traffic.
//!
//! Two data paths (ARCHITECTURE.md has the picture):
//!
//! ```text
//! live CoT:
//! socket -> link (transport + session) -> codec -> Message -> Router -> per-peer queue -> link writer -> socket
//!
//! durable mission traffic:
//! Router tap -> missions (record once) -> store (changes, outbound queue) -> federate sessions (ROL)
//! federate sessions (ROL) -> missions (apply once) -> t-x-m-c announcement -> Router
//! ```
//!
//! The pure parts (no sockets, no clock of their own):
//!
//! * [`cot`]: the canonical [`cot::CotEvent`] and its conversions to and from CoT XML and TAK
//!   protocol v1 protobuf; negotiation and keepalive builders ([`cot::control`]); detail
//!   fragment helpers ([`cot::fragment`]).
//! * [`codec`]: framing of streams (XML split after `</event>`, `0xbf` varint frames) and
//!   mesh datagrams, apart from the format.
//! * [`session`]: protocol rules as state machines fed with events and `now`: a TAK stream
//!   connection ([`session::stream`]) and a federation v2 session ([`session::federate`]).
//! * [`router`]: [`router::Message`] (event, routing facts, encodings cached per wire
//!   format), [`router::PeerPolicy`], wildcard patterns, and the router that fans out to
//!   bounded per-peer queues without waiting on anyone.
//! * [`config`]: the TOML configuration, typed per transport, with the embedded default.
//!
//! The links (everything attached to the router):
//!
//! * [`link`]: what every link shares: the I/O trait, peer identity, codec, counters, status,
//!   ingest into the router, read-rate limits, backoff, accepting and reconnecting, TLS,
//!   QUIC (configurations, a stream as I/O), the stages of a connection test.
//! * [`transport`]: TCP/TLS streams, the same on TAK's QUIC (`takstream`, with
//!   `takgate quic test`), UDP and multicast, a takgate cluster over RabbitMQ,
//!   and OpenTAKServer (its bus, its TCP CoT port as its clients, its Marti API).
//! * [`federation`]: TAK Server federation v1 and v2 (both roles), GeoEvent conversion, the
//!   staged connection test.
//! * [`hub`]: takgate as a TAK Federation Hub: v2 federates routed by TAK's policy graph.
//!
//! The durable path and the services around it:
//!
//! * [`missions`]: mission changes recorded once, queued per federate, sent and applied as
//!   TAK's ROL ([`missions::rol`]), announced as `t-x-m-c` ([`missions::announce`]).
//! * [`store`]: SQLite: federation servers, missions, changes, the outbound queue.
//! * [`runtime`]: starts the store, missions, router and every link; clean shutdown.
//! * [`marti`]: the Marti file API local clients use (data packages, mission content).
//! * [`admin`]: the HTTP admin API, dashboard and metrics, composed by the binary on top of
//!   a running gateway.
//!
//! Tools: [`bench`] (`takgate bench`, the load harness), [`cotcmd`] (`takgate cot`),
//! [`certs`] (`takgate certs`), [`fuzz`] (the fuzz target bodies), [`error`] (decode
//! errors), [`sync`] (locking without poison).

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
pub mod hub;
pub mod link;
pub mod marti;
pub mod missions;
pub mod package;
pub mod router;
pub mod runtime;
pub mod session;
pub mod store;
pub mod sync;
pub mod transport;
