//! What the router knows of an attached peer: its link, identity, policy, bounded queue,
//! overflow rule and counters, and the statistics it reports for it.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::message::{LinkId, Message};
use super::policy::PeerPolicy;
use crate::config::Overflow;
use crate::link::counters::{CounterSnapshot, LinkCounters};
use crate::link::peer::{Codec, CodecCell, PeerIdentity};

/// What a peer's queue carries.
pub type Outbound = Arc<Message>;

/// Everything the router needs to know about an attached peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub id: LinkId,
    /// The peer's current codec, updated by its writer.
    pub codec: Arc<CodecCell>,
    /// Name of the configured link it belongs to.
    pub link: String,
    pub transport: &'static str,
    pub remote: String,
    pub identity: Option<PeerIdentity>,
    pub policy: Arc<PeerPolicy>,
    pub tx: mpsc::Sender<Outbound>,
    pub overflow: Overflow,
    pub counters: Arc<LinkCounters>,
    /// Cancelled to disconnect the peer (overflow rule `disconnect`).
    pub close: CancellationToken,
}

impl PeerInfo {
    /// A peer that only receives (a datagram sender, a broker link): no TLS identity,
    /// overflow drops, closed with `cancel`.
    #[allow(clippy::too_many_arguments)]
    pub fn output(id: LinkId, link: &str, transport: &'static str, remote: String, codec: Codec, policy: Arc<PeerPolicy>, tx: mpsc::Sender<Outbound>, counters: Arc<LinkCounters>, cancel: &CancellationToken) -> PeerInfo {
        PeerInfo { id, codec: CodecCell::new(codec), link: link.to_owned(), transport, remote, identity: None, policy, tx, overflow: Overflow::Drop, counters, close: cancel.child_token() }
    }

    pub fn stats(&self) -> PeerStats {
        PeerStats {
            id: self.id,
            link: self.link.clone(),
            transport: self.transport,
            remote: self.remote.clone(),
            identity: self.identity.clone(),
            codec: self.codec.get().name(),
            queue_capacity: self.tx.max_capacity(),
            queue_depth: self.tx.max_capacity() - self.tx.capacity(),
            counters: self.counters.snapshot(),
        }
    }
}

/// Per-peer statistics.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStats {
    pub id: LinkId,
    pub link: String,
    pub transport: &'static str,
    pub remote: String,
    pub identity: Option<PeerIdentity>,
    pub codec: &'static str,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    #[serde(flatten)]
    pub counters: CounterSnapshot,
}
