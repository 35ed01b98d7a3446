//! Transports: one module each, with one constructor per link kind (`start(config, &ctx)`).
//! They depend on [`crate::link`] (the shared link vocabulary) and [`crate::router`], never
//! on each other.
//!
//! * [`stream`]: TCP and TLS streams to and from TAK clients, servers and gateways;
//! * [`datagram`]: UDP (listen, send) and multicast groups ([`mmsg`] batches on Linux);
//! * [`amqp`]: the RabbitMQ bridge (OpenTAKServer's bus, or a takgate cluster).

pub mod amqp;
pub mod datagram;
#[cfg(target_os = "linux")]
pub mod mmsg;
pub mod stream;
