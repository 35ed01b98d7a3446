//! Ingest: how an event that arrived on a link enters the router. Loops are refused (the
//! event already carries our `_flow-tags_`), our tag is stamped, the link's inbound policy
//! is applied, and the message goes to the router: waiting while it is saturated (streams,
//! so TCP pushes back on the sender) or not (datagrams, dropped and counted instead).

use std::sync::Arc;

use super::counters::LinkCounters;
use crate::cot::{CotEvent, CotTime};
use crate::router::message::{has_flow_tag, stamp_flow_tag, FedMeta, LinkId, Message};
use crate::router::{PeerPolicy, RouterHandle};

/// Where an event came from and under which rules it may enter.
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    pub id: LinkId,
    pub policy: &'a PeerPolicy,
    pub counters: &'a LinkCounters,
}

/// The message to route for `ev`, or None when it is a loop or not allowed in (counted).
/// `fed`: what a federate said of it (provenance, hops, groups).
pub fn prepare(node_id: &str, o: Origin<'_>, mut ev: CotEvent, fed: Option<FedMeta>) -> Option<Arc<Message>> {
    LinkCounters::inc(&o.counters.events_in);
    if has_flow_tag(&ev, node_id) {
        LinkCounters::inc(&o.counters.loops);
        return None;
    }
    stamp_flow_tag(&mut ev, node_id, CotTime::now());
    let mut m = Message::new(ev, o.id);
    m.from_federate = fed.is_some();
    m.fed = fed.map(Box::new);
    if !o.policy.allows_in(&m) {
        LinkCounters::inc(&o.counters.filtered);
        return None;
    }
    Some(Arc::new(m))
}

/// Prepares and routes `ev`, waiting while the router is saturated; false when it was not
/// routed (a loop, filtered, or the router has stopped).
pub async fn ingest(router: &RouterHandle, o: Origin<'_>, ev: CotEvent, fed: Option<FedMeta>) -> bool {
    match prepare(&router.node_id, o, ev, fed) {
        Some(m) => router.route(m).await,
        None => false,
    }
}

/// Prepares and routes `ev` without waiting: when the router is saturated the event is
/// dropped and counted (datagram links).
pub fn try_ingest(router: &RouterHandle, o: Origin<'_>, ev: CotEvent) -> bool {
    let Some(m) = prepare(&router.node_id, o, ev, None) else { return false };
    if router.try_route(m) {
        true
    } else {
        LinkCounters::inc(&o.counters.drops_router_busy);
        false
    }
}
