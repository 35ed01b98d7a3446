//! Transports: one module each, all behind the same link abstraction (a task that decodes
//! into messages for the router and writes what the router hands it).

pub mod amqp;
pub mod datagram;
#[cfg(target_os = "linux")]
pub mod mmsg;
pub mod stream;
pub mod tcp;
pub mod tls;
