//! What travels through the router: an event, where it came from, the facts routing needs
//! (computed once), and its encodings, made lazily and at most once per wire format no
//! matter how many peers receive it.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use quick_xml::events::Event;
use quick_xml::Reader;

use crate::codec::WireFormat;
use crate::cot::{fragment, CotEvent, CotTime};

/// Identifies one attached peer (a connection, a datagram endpoint).
pub type LinkId = u64;

/// Facts about an event that routing decisions use.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Facts {
    pub callsign: Option<String>,
    pub group: Option<String>,
    /// `marti/dest callsign=…`
    pub dest_callsigns: Vec<String>,
    /// `marti/dest uid=…`
    pub dest_uids: Vec<String>,
    /// `marti/dest mission=…`, and the mission named in a `t-x-m-*` announcement.
    pub missions: Vec<String>,
    /// Mission traffic: `t-x-m-*` or addressed to a mission.
    pub is_mission: bool,
    /// The position report of a client (a device on the network, not a marker or track it
    /// sent): `a-…` with a contact endpoint. Only these are federation contacts and part
    /// of the latest picture, as in TAK Server.
    pub client_sa: bool,
}

impl Facts {
    pub fn of(ev: &CotEvent) -> Facts {
        let mut f = Facts { callsign: ev.callsign().map(|c| c.into_owned()), ..Default::default() };
        f.client_sa = ev.cot_type.starts_with("a-") && f.callsign.is_some() && has_endpoint(ev);
        f.group = match &ev.detail.group {
            Some(g) => Some(g.name.clone()),
            None if ev.detail.xml.contains("<__group") => fragment::find_attr(&ev.detail.xml, "__group", "name"),
            None => None,
        };
        if ev.detail.xml.contains("<marti") {
            scan_marti(&ev.detail.xml, &mut f);
        }
        if ev.cot_type.starts_with("t-x-m-") {
            f.is_mission = true;
            if let Some(name) = fragment::find_attr(&ev.detail.xml, "mission", "name") {
                if !f.missions.contains(&name) {
                    f.missions.push(name);
                }
            }
        }
        if !f.missions.is_empty() {
            f.is_mission = true;
        }
        f
    }

    /// Addressed to particular contacts (a direct message).
    pub fn is_direct(&self) -> bool {
        !self.dest_callsigns.is_empty() || !self.dest_uids.is_empty()
    }
}

/// Whether the event's contact names an endpoint (how a client can be reached).
fn has_endpoint(ev: &CotEvent) -> bool {
    match &ev.detail.contact {
        Some(c) => !c.endpoint.is_empty(),
        None => fragment::find_attr(&ev.detail.xml, "contact", "endpoint").is_some_and(|e| !e.is_empty()),
    }
}

fn scan_marti(detail: &str, f: &mut Facts) {
    let mut r = Reader::from_str(detail);
    let mut depth = 0usize;
    let mut in_marti = false;
    loop {
        let Ok(ev) = r.read_event() else { return };
        match ev {
            Event::Start(e) => {
                if depth == 0 && e.name().as_ref() == b"marti" {
                    in_marti = true;
                }
                if in_marti && depth == 1 && e.name().as_ref() == b"dest" {
                    dest(&e, f);
                }
                depth += 1;
            }
            Event::Empty(e) => {
                if in_marti && depth == 1 && e.name().as_ref() == b"dest" {
                    dest(&e, f);
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    in_marti = false;
                }
            }
            Event::Eof => return,
            _ => {}
        }
    }
}

fn dest(e: &quick_xml::events::BytesStart<'_>, f: &mut Facts) {
    for a in e.attributes().flatten() {
        let Ok(v) = a.unescape_value() else { continue };
        match a.key.as_ref() {
            b"callsign" => f.dest_callsigns.push(v.into_owned()),
            b"uid" => f.dest_uids.push(v.into_owned()),
            b"mission" => f.missions.push(v.into_owned()),
            _ => {}
        }
    }
}

/// Whether `ev` already passed through the node `node_id` (its `_flow-tags_` has our tag).
pub fn has_flow_tag(ev: &CotEvent, node_id: &str) -> bool {
    ev.detail.xml.contains("<_flow-tags_") && fragment::find_attr(&ev.detail.xml, "_flow-tags_", node_id).is_some()
}

/// Adds `node_id="now"` to the event's `_flow-tags_` (creating the element if needed).
pub fn stamp_flow_tag(ev: &mut CotEvent, node_id: &str, now: CotTime) {
    let mut attr = Vec::with_capacity(node_id.len() + 30);
    attr.push(b' ');
    attr.extend_from_slice(node_id.as_bytes());
    attr.extend_from_slice(b"=\"");
    now.write_to(&mut attr);
    attr.push(b'"');
    let attr = String::from_utf8(attr).unwrap_or_default();
    let d = &mut ev.detail.xml;
    if let Some(i) = d.find("<_flow-tags_") {
        let at = i + "<_flow-tags_".len();
        if matches!(d.as_bytes().get(at), Some(b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>')) {
            d.insert_str(at, &attr);
            return;
        }
    }
    d.push_str("<_flow-tags_");
    d.push_str(&attr);
    d.push_str("/>");
}

/// What a federate told us about an event: the servers it passed through, its hop count
/// and limit (-1: none), and the local groups its federation groups mapped to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FedMeta {
    pub provenance: Vec<String>,
    pub hops: i64,
    pub max_hops: i64,
    pub groups: Vec<String>,
}

/// An event on its way through the router.
#[derive(Debug)]
pub struct Message {
    pub event: CotEvent,
    pub origin: LinkId,
    /// Came in over a federation link (not sent to other federates unless their policy
    /// says `relay_federates`).
    pub from_federate: bool,
    /// Provenance, hops and groups of an event received from a federate.
    pub fed: Option<Box<FedMeta>>,
    pub received: Instant,
    pub facts: Facts,
    /// The device that sent it, when the link knows better than the event (an
    /// OpenTAKServer envelope's uid): a mission item's creator.
    pub sender: Option<String>,
    encoded: [OnceLock<Bytes>; 3],
}

impl Message {
    pub fn new(event: CotEvent, origin: LinkId) -> Message {
        let facts = Facts::of(&event);
        Message { event, origin, from_federate: false, fed: None, received: Instant::now(), facts, sender: None, encoded: Default::default() }
    }

    /// The groups routing compares with `groups_out`: the federation groups when a federate
    /// gave any, else the `__group` name.
    pub fn has_group_in(&self, pats: &super::pattern::PatternList) -> Option<bool> {
        match &self.fed {
            Some(f) if !f.groups.is_empty() => Some(f.groups.iter().any(|g| pats.any(g))),
            _ => self.facts.group.as_deref().map(|g| pats.any(g)),
        }
    }

    /// The event in `format`, encoded on first use and shared afterwards.
    pub fn encoded(&self, format: WireFormat) -> &Bytes {
        let i = match format {
            WireFormat::Xml => 0,
            WireFormat::ProtoStream => 1,
            WireFormat::ProtoMesh => 2,
        };
        self.encoded[i].get_or_init(|| {
            let mut v = Vec::with_capacity(512);
            format.encode_into(&self.event, &mut v);
            Bytes::from(v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(detail: &str, t: &str) -> CotEvent {
        let mut e = CotEvent::new("u1", t, "h-e", CotTime(0), 60);
        e.detail.xml = detail.into();
        e
    }

    #[test]
    fn facts_from_marti_and_missions() {
        let f = Facts::of(&ev(r#"<marti><dest callsign="BOB"/><dest uid="ANDROID-2"/><dest mission="ops"/></marti><__group name="Cyan" role="x"/><__group name="Red" role="y"/>"#, "b-t-f"));
        assert_eq!(f.dest_callsigns, ["BOB"]);
        assert_eq!(f.dest_uids, ["ANDROID-2"]);
        assert_eq!(f.missions, ["ops"]);
        assert!(f.is_mission && f.is_direct());
        assert_eq!(f.group.as_deref(), Some("Cyan"));
        let m = Facts::of(&ev(r#"<mission type="CHANGE" name="alpha"/>"#, "t-x-m-c"));
        assert!(m.is_mission && !m.is_direct());
        assert_eq!(m.missions, ["alpha"]);
        assert!(!Facts::of(&ev("<marti/>", "a-f-G")).is_mission);
    }

    #[test]
    fn flow_tags() {
        let mut e = ev(r#"<_flow-tags_ marti1="2020-01-01T00:00:00Z"/>"#, "a-f-G");
        assert!(!has_flow_tag(&e, "gw1"));
        stamp_flow_tag(&mut e, "gw1", CotTime(1000));
        assert!(has_flow_tag(&e, "gw1") && has_flow_tag(&e, "marti1"));
        let mut e2 = ev("<remarks/>", "a-f-G");
        stamp_flow_tag(&mut e2, "gw1", CotTime(1000));
        assert_eq!(e2.detail.xml, r#"<remarks/><_flow-tags_ gw1="1970-01-01T00:00:01.000Z"/>"#);
        // the stamped event survives an XML round trip
        assert_eq!(crate::cot::xml::decode(&crate::cot::xml::encode(&e2)).unwrap(), e2);
    }

    #[test]
    fn encodes_once_per_format() {
        let m = Message::new(ev("", "a-f-G"), 1);
        let a = m.encoded(WireFormat::Xml).as_ptr();
        assert_eq!(a, m.encoded(WireFormat::Xml).as_ptr());
        assert_ne!(m.encoded(WireFormat::ProtoStream), m.encoded(WireFormat::Xml));
    }
}
