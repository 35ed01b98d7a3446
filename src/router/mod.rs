//! The routing core: messages, per-peer policy and the router actor that fans events out
//! to bounded per-peer queues without ever waiting on a peer.

pub mod core;
pub mod message;
pub mod pattern;
pub mod policy;

pub use self::core::{codec, CounterSnapshot, LinkCounters, Outbound, PeerIdentity, PeerInfo, PeerStats, Router, RouterHandle};
pub use message::{FedMeta, LinkId, Message};
pub use policy::PeerPolicy;
