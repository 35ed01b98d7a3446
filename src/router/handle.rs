//! The router actor's handle: a cheap, cloneable sender of commands. Links attach and
//! detach peers, hand it messages (waiting while it is saturated, or not), register and
//! forget contacts, and ask for statistics and the latest position reports.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::message::{LinkId, Message};
use super::peer::{PeerInfo, PeerStats};

/// Messages to route: a bounded channel, so saturation pushes back on stream readers.
pub(super) enum Data {
    Route(Arc<Message>),
    /// Several messages at once (a batch of datagrams): one wake-up for the lot.
    RouteMany(Vec<Arc<Message>>),
}

/// Everything else: an unbounded channel the router serves first, so attaching, detaching
/// and statistics never wait behind a full queue of traffic (and detaching can be done
/// from a destructor).
pub(super) enum Cmd {
    Attach(PeerInfo),
    Detach(LinkId),
    Stats(oneshot::Sender<Vec<PeerStats>>),
    /// The latest position report of every contact that is not stale.
    Snapshot(oneshot::Sender<Vec<Arc<Message>>>),
    /// A contact announced by a peer (federation contact CREATE).
    Contact { uid: String, callsign: String, link: LinkId },
    /// A contact that left (federation contact DELETE).
    Forget { uid: String, link: LinkId },
    /// Where mission traffic is also copied (the mission store), and its own id.
    Tap(mpsc::Sender<Arc<Message>>, LinkId),
}

/// Router-wide counters.
#[derive(Debug, Default)]
pub struct RouterCounters {
    pub routed: AtomicU64,
    pub duplicates: AtomicU64,
    pub deliveries: AtomicU64,
    /// Direct messages for a contact the router has not seen (sent upstream, if anywhere).
    pub direct_unknown: AtomicU64,
}

#[derive(Clone)]
pub struct RouterHandle {
    pub(super) data: mpsc::Sender<Data>,
    pub(super) tx: mpsc::UnboundedSender<Cmd>,
    pub(super) next_id: Arc<AtomicU64>,
    pub node_id: Arc<str>,
    pub counters: Arc<RouterCounters>,
}

impl RouterHandle {
    pub fn next_id(&self) -> LinkId {
        self.next_id.fetch_add(1, Relaxed)
    }
    pub async fn attach(&self, p: PeerInfo) {
        let _ = self.tx.send(Cmd::Attach(p));
    }
    pub async fn detach(&self, id: LinkId) {
        self.detach_now(id);
    }
    /// Detaches a peer without waiting (from a destructor).
    pub fn detach_now(&self, id: LinkId) {
        let _ = self.tx.send(Cmd::Detach(id));
    }
    /// Hands a message to the router, waiting while it is saturated (stream readers: TCP
    /// flow control then pushes back on the sender).
    pub async fn route(&self, m: Arc<Message>) -> bool {
        self.data.send(Data::Route(m)).await.is_ok()
    }
    /// Hands several messages to the router from a plain thread (one command), waiting while
    /// it is saturated; false when it has stopped.
    pub fn route_many_blocking(&self, v: Vec<Arc<Message>>) -> bool {
        v.is_empty() || self.data.blocking_send(Data::RouteMany(v)).is_ok()
    }
    /// Hands a message to the router without waiting; false when saturated (datagrams).
    pub fn try_route(&self, m: Arc<Message>) -> bool {
        self.data.try_send(Data::Route(m)).is_ok()
    }
    /// The latest position report of every contact that is not stale (for a peer that
    /// just connected; it filters them by its own policy).
    pub async fn snapshot(&self) -> Vec<Arc<Message>> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Snapshot(tx)).is_err() {
            return vec![];
        }
        rx.await.unwrap_or_default()
    }
    /// Registers where a contact lives, as announced by a peer.
    pub async fn learn_contact(&self, uid: String, callsign: String, link: LinkId) {
        let _ = self.tx.send(Cmd::Contact { uid, callsign, link });
    }
    /// Forgets a contact a peer said has left.
    pub async fn forget_contact(&self, uid: String, link: LinkId) {
        let _ = self.tx.send(Cmd::Forget { uid, link });
    }
    /// Copies mission traffic (facts.is_mission) to `tx`, except what `id` itself routed.
    pub async fn set_mission_tap(&self, tx: mpsc::Sender<Arc<Message>>, id: LinkId) {
        let _ = self.tx.send(Cmd::Tap(tx, id));
    }
    pub async fn stats(&self) -> Vec<PeerStats> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Stats(tx)).is_err() {
            return vec![];
        }
        rx.await.unwrap_or_default()
    }
}
