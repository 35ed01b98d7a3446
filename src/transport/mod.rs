//! Transports: one module each, with one constructor per link kind (`start(config, &ctx)`).
//! They depend on [`crate::link`] (the shared link vocabulary) and [`crate::router`], never
//! on each other (the amqp link hands `amqp_mode = "opentakserver"` to [`ots`]).
//!
//! * [`stream`]: TCP and TLS streams to and from TAK clients, servers and gateways;
//! * [`quic`]: the same stream session on TAK's QUIC (`takstream`);
//! * [`datagram`]: UDP (listen, send) and multicast groups ([`mmsg`] batches on Linux);
//! * [`amqp`]: the RabbitMQ bridge of a takgate cluster;
//! * [`ots`]: OpenTAKServer (its bus, its TCP CoT port, its Marti API), with takgate as its
//!   federation engine.

pub mod amqp;
pub mod datagram;
#[cfg(target_os = "linux")]
pub mod mmsg;
pub mod ots;
pub mod quic;
pub mod stream;
