//! What federation v1 and v2 share: the settings of a federation link, who may connect
//! (a verified certificate, on the allow-list when there is one), how a routed event
//! becomes `FederatedEvent`s for one federate (groups, provenance, hops, contact
//! announcements), and how a received `FederatedEvent` enters the router (loop and hop
//! checks, contacts, the event with its provenance).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::convert::{from_geo, to_geo};
use super::fig::{ContactListEntry, Crud, FederateHops, FederateProvenance, FederatedEvent};
use crate::config::{FedLink, FedVersion, LinkConfig};
use crate::cot::{fragment, CotTime};
use crate::link::ingest::{ingest, Origin};
use crate::link::rate::ReadRateLimits;
use crate::link::{log_bad_input, LinkCounters, LinkCtx, PeerIdentity};
use crate::router::pattern::PatternList;
use crate::router::{FedMeta, Message, PeerPolicy, RouterHandle};

/// Default largest v1 frame accepted (TAK Server allows up to 256 MiB; CoT frames are
/// small, but v1 also carries large mission-package announcements).
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;
/// Largest v2 gRPC message accepted or sent (TAK Server allows 256 MiB; ROL carries files).
pub const DEFAULT_MAX_MESSAGE: usize = 256 << 20;

#[derive(Debug)]
pub struct FedSettings {
    pub link: String,
    pub node_id: String,
    /// The name we present (v2 `Subscription.identity.name`).
    pub display_name: String,
    pub policy: Arc<PeerPolicy>,
    pub counters: Arc<LinkCounters>,
    pub queue_depth: usize,
    pub idle_timeout: Option<Duration>,
    pub max_frame: usize,
    /// Accepted peer fingerprints (upper-case hex pairs joined by ':'); empty: any peer
    /// whose certificate chains to the federation CA.
    pub allow: Vec<String>,
    /// Hop limit stamped on what we send; -1: unlimited.
    pub max_hops: i64,
    /// Groups this federate may receive (empty: all, and no `federateGroups`).
    pub outbound_groups: PatternList,
    pub outbound_group_names: Vec<String>,
    /// Local groups for what this federate sends when the mapping yields none.
    pub inbound_groups: Vec<String>,
    /// v2: remote group name -> local group name.
    pub group_mapping: Vec<(String, String)>,
    /// v2 client: interval between health checks.
    pub health_interval: Duration,
    /// v2 server: streams without a health check for this long are closed.
    pub health_timeout: Duration,
    /// Our certificate (DER), for `Getx509Identity`.
    pub own_cert: Vec<u8>,
    /// v1: read rate limits of one connection.
    pub read_rate: ReadRateLimits,
    /// v1: a write that takes longer closes the connection.
    pub write_timeout: Duration,
}

impl FedSettings {
    /// Settings with defaults, for tests and tools.
    pub fn new(link: &str, node_id: &str, policy: PeerPolicy) -> FedSettings {
        let mut policy = policy;
        policy.federate = true;
        FedSettings {
            link: link.into(),
            node_id: node_id.into(),
            display_name: node_id.into(),
            policy: Arc::new(policy),
            counters: Arc::default(),
            queue_depth: 16_384,
            idle_timeout: None,
            max_frame: DEFAULT_MAX_FRAME,
            allow: vec![],
            max_hops: -1,
            outbound_groups: PatternList::default(),
            outbound_group_names: vec![],
            inbound_groups: vec![],
            group_mapping: vec![],
            health_interval: Duration::from_secs(3),
            health_timeout: Duration::from_secs(15),
            own_cert: vec![],
            read_rate: Default::default(),
            write_timeout: Duration::from_secs(30),
        }
    }

    /// The settings of a configured federation link.
    pub fn from_config(l: &LinkConfig, f: &FedLink, ctx: &LinkCtx) -> Result<FedSettings, String> {
        let connect = f.role.is_connect();
        let mut s = FedSettings::new(&l.name, &ctx.router.node_id, PeerPolicy::new(&l.policy, false)?);
        s.display_name = f.fed.display_name.clone().unwrap_or_else(|| ctx.router.node_id.to_string());
        s.queue_depth = l.queue_depth.unwrap_or(ctx.queue_depth);
        s.allow = f.fed.allow_fingerprints.clone();
        s.max_hops = f.fed.max_hops.unwrap_or(-1);
        s.outbound_groups = PatternList::new(&f.fed.outbound_groups)?;
        s.outbound_group_names = f.fed.outbound_groups.clone();
        s.inbound_groups = f.fed.inbound_groups.clone();
        let max = f.events.max_event_bytes.map(|c| c.0);
        match &f.version {
            FedVersion::V1 { opts, conn } => {
                s.idle_timeout = opts.idle_timeout_secs.map(|t| t.duration());
                s.max_frame = max.unwrap_or(DEFAULT_MAX_FRAME);
                s.read_rate = ReadRateLimits::of(conn);
                s.write_timeout = crate::link::rate::write_timeout(conn);
            }
            FedVersion::V2(v) => {
                s.idle_timeout = None;
                s.max_frame = max.unwrap_or(DEFAULT_MAX_MESSAGE);
                s.group_mapping = v.group_mapping.iter().filter_map(|m| m.split_once(':')).map(|(a, b)| (a.to_owned(), b.to_owned())).collect();
                s.health_interval = crate::config::link::secs_or(v.health_interval_secs, 3.0);
                s.health_timeout = crate::config::link::secs_or(v.health_timeout_secs, if connect { 10.0 } else { 15.0 });
            }
        }
        let (_, cert, _) = f.files();
        s.own_cert = crate::link::tls::load_certs(cert).map_err(|e| e.to_string())?.first().map(|c| c.to_vec()).unwrap_or_default();
        Ok(s)
    }
}

/// Attaches a federate session to the router: the latest picture it may receive (taken
/// before attaching, so nothing in it is also queued live) and its queue.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn attach_federate(router: &RouterHandle, s: &FedSettings, id: u64, codec: crate::link::Codec, transport: &'static str, remote: &str, identity: Option<PeerIdentity>, close: tokio_util::sync::CancellationToken) -> (Vec<std::sync::Arc<Message>>, tokio::sync::mpsc::Receiver<std::sync::Arc<Message>>) {
    let snapshot = router.snapshot().await.into_iter().filter(|m| s.policy.allows_out(m)).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(s.queue_depth);
    let info = crate::router::PeerInfo { codec: crate::link::CodecCell::new(codec), id, link: s.link.clone(), transport, remote: remote.to_owned(), identity, policy: s.policy.clone(), tx, overflow: crate::config::Overflow::Drop, counters: s.counters.clone(), close };
    router.attach(info).await;
    (snapshot, rx)
}

/// Whether a federate with this certificate may connect (it presented one, and it is on the
/// allow-list when there is one); logs and counts a refusal.
pub(crate) fn admit(identity: Option<PeerIdentity>, s: &FedSettings, remote: &str) -> Option<PeerIdentity> {
    let Some(identity) = identity else {
        tracing::warn!(link = %s.link, %remote, "federate refused: it presented no certificate");
        return None;
    };
    if !s.allow.is_empty() && !s.allow.iter().any(|f| f.eq_ignore_ascii_case(&identity.fingerprint)) {
        let n = LinkCounters::inc(&s.counters.decode_errors);
        log_bad_input(n, &s.link, remote, &format!("federate refused: {} ({}) is not on the allow-list", identity.federate_name(), identity.fingerprint));
        return None;
    }
    Some(identity)
}

/// The `FederatedEvent`s for one routed event, in order (contact CREATE first when this
/// contact is new on this connection). Returns false when the event does not go to this
/// federate.
pub(crate) fn federated_for(m: &Message, s: &FedSettings, announced: &mut HashSet<String>, mut out: impl FnMut(FederatedEvent)) -> bool {
    let ev = &m.event;
    if ev.cot_type.starts_with("t-x-m") {
        return false;
    }
    let own: Vec<&str> = match &m.fed {
        Some(f) if !f.groups.is_empty() => f.groups.iter().map(String::as_str).collect(),
        _ => vec![m.facts.group.as_deref().unwrap_or("__ANON__")],
    };
    let Some(groups) = outbound_groups_for(&own, s) else {
        LinkCounters::inc(&s.counters.filtered);
        return false;
    };
    let mut provenance: Vec<FederateProvenance> = m.fed.iter().flat_map(|f| f.provenance.iter()).filter(|p| **p != s.node_id).map(|p| FederateProvenance { federation_server_id: p.clone(), federation_server_name: String::new() }).collect();
    provenance.push(FederateProvenance { federation_server_id: s.node_id.clone(), federation_server_name: s.display_name.clone() });
    let (hops, max_hops) = match &m.fed {
        Some(f) => (f.hops + 1, min_limit(f.max_hops, s.max_hops)),
        None => (1, s.max_hops),
    };
    if ev.cot_type == "t-x-d-d" {
        let Some(uid) = fragment::find_attr(&ev.detail.xml, "link", "uid") else { return false };
        let typ = fragment::find_attr(&ev.detail.xml, "link", "type").unwrap_or_default();
        announced.remove(&uid);
        out(FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Delete as i32, uid, callsign: typ, ..Default::default() }), federate_groups: groups, ..Default::default() });
        return true;
    }
    // Only connected clients are contacts (TAK: a subscription's own uid and callsign),
    // never the markers and tracks they send.
    if m.facts.client_sa {
        if let Some(cs) = &m.facts.callsign {
            if announced.insert(ev.uid.clone()) {
                out(FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Create as i32, uid: ev.uid.clone(), callsign: cs.clone(), ..Default::default() }), federate_groups: groups.clone(), ..Default::default() });
            }
        }
    }
    out(FederatedEvent {
        event: Some(to_geo(ev, &m.facts)),
        federate_groups: groups,
        federate_provenance: provenance,
        federate_hops: Some(FederateHops { max_hops, current_hops: hops }),
        ..Default::default()
    });
    true
}

/// The federation groups something in groups `own` goes to this federate with: empty when
/// the link has no outbound groups (everything goes, without `federateGroups`), None when
/// none of them may go.
pub(crate) fn outbound_groups_for(own: &[&str], s: &FedSettings) -> Option<Vec<String>> {
    if s.outbound_group_names.is_empty() {
        return Some(vec![]);
    }
    let g: Vec<String> = own.iter().filter(|g| s.outbound_groups.any(g)).map(|g| (*g).to_owned()).collect();
    (!g.is_empty()).then_some(g)
}

/// The stricter of two hop limits (-1: unlimited).
fn min_limit(a: i64, b: i64) -> i64 {
    match (a < 0, b < 0) {
        (true, _) => b,
        (_, true) => a,
        _ => a.min(b),
    }
}

/// The local groups for an event a federate sent with `remote` federation groups.
pub(crate) fn inbound_groups(remote: &[String], s: &FedSettings) -> Vec<String> {
    let mut g: Vec<String> = vec![];
    for r in remote {
        for (from, to) in &s.group_mapping {
            if from == r && !g.contains(to) {
                g.push(to.clone());
            }
        }
    }
    if g.is_empty() {
        g = s.inbound_groups.clone();
    }
    g
}

/// The contacts one federate session announced: the router learns them, and when the
/// session ends each gets a delete (`t-x-d-d`) toward local clients, as TAK Server does.
#[derive(Debug, Default)]
pub(crate) struct RemoteContacts(std::sync::Mutex<std::collections::HashMap<String, String>>);

impl RemoteContacts {
    fn add(&self, uid: &str) {
        crate::sync::lock(&self.0).entry(uid.to_owned()).or_insert_with(|| "a-f-G-U-C".into());
    }
    /// The latest type a contact's SA had (the delete names it, as TAK's link@type).
    fn saw(&self, uid: &str, cot_type: &str) {
        if let Some(t) = crate::sync::lock(&self.0).get_mut(uid) {
            cot_type.clone_into(t);
        }
    }
    fn remove(&self, uid: &str) -> bool {
        crate::sync::lock(&self.0).remove(uid).is_some()
    }

    /// The session `id` ended: every contact it announced is gone.
    pub(crate) async fn gone(&self, id: u64, s: &FedSettings, router: &RouterHandle) {
        let left: Vec<(String, String)> = crate::sync::lock(&self.0).drain().collect();
        if !left.is_empty() {
            tracing::info!(link = %s.link, contacts = left.len(), "federate gone: its contacts are removed from local clients");
        }
        let meta = FedMeta { provenance: vec![], hops: 0, max_hops: -1, groups: s.inbound_groups.clone() };
        for (uid, t) in left {
            router.forget_contact(uid.clone(), id).await;
            ingest(router, Origin { id, policy: &s.policy, counters: &s.counters }, crate::cot::control::departed(&uid, &t, CotTime::now()), Some(meta.clone())).await;
        }
    }
}

/// Handles one `FederatedEvent` from federate session `id`: loop and hop checks, contacts,
/// and the event itself, routed with its provenance.
pub(crate) async fn receive(fe: FederatedEvent, id: u64, s: &FedSettings, router: &RouterHandle, contacts: &RemoteContacts) {
    if fe.federate_provenance.iter().any(|p| p.federation_server_id == s.node_id) {
        let n = LinkCounters::inc(&s.counters.loops);
        // The sender stamps itself last: our id there is a federate using our node id (both
        // left on one id, or a copied config), not a loop.
        if fe.federate_provenance.last().is_some_and(|p| p.federation_server_id == s.node_id) && (n < 3 || n.is_power_of_two()) {
            tracing::warn!(link = %s.link, node_id = %s.node_id, dropped = n + 1, "the federate stamps its events with our own node id: they are dropped as loops; give one of the two nodes its own [node] id");
        }
        return;
    }
    let (hops, max_hops) = fe.federate_hops.as_ref().map(|h| (h.current_hops, h.max_hops)).unwrap_or((0, -1));
    if (max_hops >= 0 && hops > max_hops) || (s.max_hops >= 0 && hops > s.max_hops) {
        LinkCounters::inc(&s.counters.loops);
        return;
    }
    let meta = || FedMeta { provenance: fe.federate_provenance.iter().map(|p| p.federation_server_id.clone()).collect(), hops, max_hops, groups: inbound_groups(&fe.federate_groups, s) };
    let origin = Origin { id, policy: &s.policy, counters: &s.counters };
    if let Some(c) = &fe.contact {
        match Crud::try_from(c.operation) {
            Ok(Crud::Create | Crud::Update) => {
                contacts.add(&c.uid);
                router.learn_contact(c.uid.clone(), c.callsign.clone(), id).await;
            }
            Ok(Crud::Delete) => {
                contacts.remove(&c.uid);
                router.forget_contact(c.uid.clone(), id).await;
                // A departed remote client: tell local clients to remove it (TAK puts the
                // client's CoT type where the callsign would be).
                ingest(router, origin, crate::cot::control::departed(&c.uid, &c.callsign, CotTime::now()), Some(meta())).await;
            }
            _ => {}
        }
    }
    let Some(g) = fe.event.clone() else { return };
    if g.r#type.starts_with("t-x-m") {
        // Mission-change notices travel as ROL on v2 (TAK Server discards them here too).
        LinkCounters::inc(&s.counters.filtered);
        return;
    }
    match from_geo(g) {
        Ok(ev) => {
            if ev.cot_type.starts_with("a-") {
                contacts.saw(&ev.uid, &ev.cot_type);
            }
            ingest(router, origin, ev, Some(meta())).await;
        }
        Err(e) => log_bad_input(LinkCounters::inc(&s.counters.decode_errors), &s.link, "federate", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cot::{CotEvent, CotTime};

    fn msg(fed: Option<FedMeta>, group: Option<&str>) -> Message {
        let mut ev = CotEvent::new("ANDROID-1", "a-f-G-U-C", "m-g", CotTime(1_700_000_000_000), 60);
        ev.detail.xml = match group {
            Some(g) => format!(r#"<contact endpoint="*:-1:stcp" callsign="ONE"/><__group name="{g}" role="x"/>"#),
            None => r#"<contact endpoint="*:-1:stcp" callsign="ONE"/>"#.into(),
        };
        let mut m = Message::new(ev, 1);
        m.from_federate = fed.is_some();
        m.fed = fed.map(Box::new);
        m
    }

    fn out(m: &Message, s: &FedSettings) -> Vec<FederatedEvent> {
        let mut v = vec![];
        federated_for(m, s, &mut HashSet::new(), |fe| v.push(fe));
        v
    }

    #[test]
    fn provenance_and_hops_are_stamped_and_carried() {
        let mut s = FedSettings::new("fed", "me", PeerPolicy::open());
        s.max_hops = 5;
        let local = out(&msg(None, None), &s);
        assert_eq!(local.len(), 2, "contact CREATE, then the event");
        // a marker (a callsign, no endpoint) is not a contact
        let mut marker = CotEvent::new("M-1", "a-h-G", "h-e", CotTime(1_700_000_000_000), 60);
        marker.detail.xml = r#"<contact callsign="Bad Guy"/>"#.into();
        assert_eq!(out(&Message::new(marker, 1), &s).len(), 1);
        let ev = &local[1];
        assert_eq!(ev.federate_provenance.iter().map(|p| p.federation_server_id.as_str()).collect::<Vec<_>>(), ["me"]);
        assert_eq!(ev.federate_hops, Some(FederateHops { max_hops: 5, current_hops: 1 }));
        // Relayed: the incoming provenance is kept, hops go on, the stricter limit wins.
        let relayed = out(&msg(Some(FedMeta { provenance: vec!["other".into()], hops: 2, max_hops: 3, groups: vec![] }), None), &s);
        let ev = relayed.last().unwrap();
        assert_eq!(ev.federate_provenance.iter().map(|p| p.federation_server_id.as_str()).collect::<Vec<_>>(), ["other", "me"]);
        assert_eq!(ev.federate_hops, Some(FederateHops { max_hops: 3, current_hops: 3 }));
        assert_eq!((min_limit(-1, 4), min_limit(4, -1), min_limit(-1, -1), min_limit(2, 7)), (4, 4, -1, 2));
    }

    #[test]
    fn outbound_groups_filter_and_name_the_groups() {
        let mut s = FedSettings::new("fed", "me", PeerPolicy::open());
        s.outbound_groups = PatternList::new(&["Cyan".to_string(), "__ANON__".to_string()]).unwrap();
        s.outbound_group_names = vec!["Cyan".into(), "__ANON__".into()];
        assert_eq!(out(&msg(None, Some("Cyan")), &s).last().unwrap().federate_groups, ["Cyan"]);
        assert!(out(&msg(None, Some("Red")), &s).is_empty());
        assert_eq!(out(&msg(None, None), &s).last().unwrap().federate_groups, ["__ANON__"]);
        // A federate's groups stand in for the __group name.
        let fed = msg(Some(FedMeta { groups: vec!["Cyan".into()], ..Default::default() }), Some("Red"));
        assert_eq!(out(&fed, &s).last().unwrap().federate_groups, ["Cyan"]);
        s.group_mapping = vec![("A".into(), "Blue".into()), ("B".into(), "Blue".into())];
        s.inbound_groups = vec!["Fallback".into()];
        assert_eq!(inbound_groups(&["A".into(), "B".into()], &s), ["Blue"]);
        assert_eq!(inbound_groups(&["C".into()], &s), ["Fallback"]);
    }
}
