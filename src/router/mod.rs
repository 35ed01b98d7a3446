//! The routing core: messages, per-peer policy and the router actor that fans events out
//! to bounded per-peer queues without ever waiting on a peer.

pub mod core;
pub mod handle;
pub mod message;
pub mod pattern;
pub mod peer;
pub mod policy;

pub use self::core::spawn;
pub use handle::{RouterCounters, RouterHandle};
pub use message::{Facts, FedMeta, LinkId, Message};
pub use peer::{Outbound, PeerInfo, PeerStats};
pub use policy::PeerPolicy;
