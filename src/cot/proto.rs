//! [`CotEvent`] <-> TAK protocol v1 protobuf (`TakMessage`), following ATAK's mapping:
//! typed detail parts go to their fields, the verbatim rest to `xmlDetail`; on receipt a
//! typed field is dropped when `xmlDetail` already has an element of that name (xmlDetail
//! wins). Times are milliseconds since the epoch. Optional envelope attributes travel as
//! they are (ATAK itself puts `access="Undefined"` on the wire); empty means absent.

use prost::Message as _;

use super::event::{Contact, CotEvent, Detail, DetailExtension, Group, Point, PrecisionLocation, Status, Takv, Track};
use super::pb;
use super::time::CotTime;
use super::fragment::walk_fragment;
use super::xml::DEFAULT_HOW;
use crate::error::CodecError;

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

fn ms(t: CotTime) -> u64 {
    t.0.max(0) as u64
}

/// The protobuf form of `ev`.
pub fn to_pb(ev: &CotEvent) -> pb::CotEvent {
    let d = &ev.detail;
    let detail = (!d.is_empty()).then(|| pb::Detail {
        xml_detail: d.xml.clone(),
        contact: d.contact.as_ref().map(|c| pb::Contact { endpoint: c.endpoint.clone(), callsign: c.callsign.clone(), altendpoints: c.altendpoints.clone() }),
        group: d.group.as_ref().map(|g| pb::Group { name: g.name.clone(), role: g.role.clone() }),
        precision_location: d.precision_location.as_ref().map(|p| pb::PrecisionLocation { geopointsrc: p.geopointsrc.clone(), altsrc: p.altsrc.clone() }),
        status: d.status.as_ref().map(|s| pb::Status { battery: s.battery }),
        takv: d.takv.as_ref().map(|t| pb::Takv { device: t.device.clone(), platform: t.platform.clone(), os: t.os.clone(), version: t.version.clone() }),
        track: d.track.as_ref().map(|t| pb::Track { speed: t.speed, course: t.course }),
        extension_details: d.extensions.iter().map(|x| pb::detail::ExtensionEncodedDetail { extension_id: x.id, data: x.data.clone() }).collect(),
    });
    pb::CotEvent {
        r#type: ev.cot_type.clone(),
        access: opt(&ev.access),
        qos: opt(&ev.qos),
        opex: opt(&ev.opex),
        uid: ev.uid.clone(),
        send_time: ms(ev.time),
        start_time: ms(ev.start),
        stale_time: ms(ev.stale),
        how: ev.how.clone(),
        lat: ev.point.lat,
        lon: ev.point.lon,
        hae: ev.point.hae,
        ce: ev.point.ce,
        le: ev.point.le,
        detail,
        caveat: opt(&ev.caveat),
        releasable_to: opt(&ev.releasable_to),
    }
}

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn time(v: u64) -> CotTime {
    CotTime(v.min(i64::MAX as u64) as i64)
}

/// The event carried by a protobuf `CotEvent`.
pub fn from_pb(p: pb::CotEvent) -> Result<CotEvent, CodecError> {
    if p.uid.is_empty() {
        return Err(CodecError::MissingAttr("uid"));
    }
    if p.r#type.is_empty() {
        return Err(CodecError::MissingAttr("type"));
    }
    let mut detail = Detail::default();
    if let Some(d) = p.detail {
        let mut shadowed = [false; 6];
        if !d.xml_detail.is_empty() {
            walk_fragment(&d.xml_detail, |name| {
                if let Some(i) = [&b"contact"[..], b"__group", b"precisionlocation", b"status", b"takv", b"track"].iter().position(|n| *n == name) {
                    shadowed[i] = true;
                }
            })?;
        }
        let keep = |i: usize| !shadowed[i];
        detail.contact = d.contact.filter(|_| keep(0)).map(|c| Contact { callsign: c.callsign, endpoint: c.endpoint, altendpoints: c.altendpoints });
        detail.group = d.group.filter(|_| keep(1)).map(|g| Group { name: g.name, role: g.role });
        detail.precision_location = d.precision_location.filter(|_| keep(2)).map(|p| PrecisionLocation { geopointsrc: p.geopointsrc, altsrc: p.altsrc });
        detail.status = d.status.filter(|_| keep(3)).map(|s| Status { battery: s.battery });
        detail.takv = d.takv.filter(|_| keep(4)).map(|t| Takv { device: t.device, platform: t.platform, os: t.os, version: t.version });
        detail.track = d.track.filter(|_| keep(5)).map(|t| Track { speed: t.speed, course: t.course });
        detail.xml = d.xml_detail;
        detail.extensions = d.extension_details.into_iter().map(|x| DetailExtension { id: x.extension_id, data: x.data }).collect();
    }
    Ok(CotEvent {
        uid: p.uid,
        cot_type: p.r#type,
        how: if p.how.is_empty() { DEFAULT_HOW.to_owned() } else { p.how },
        time: time(p.send_time),
        start: time(p.start_time),
        stale: time(p.stale_time),
        access: some(p.access),
        qos: some(p.qos),
        opex: some(p.opex),
        caveat: some(p.caveat),
        releasable_to: some(p.releasable_to),
        point: Point { lat: p.lat, lon: p.lon, hae: p.hae, ce: p.ce, le: p.le },
        detail,
        extra_xml: String::new(),
    })
}

/// A decoded `TakMessage`: control information, an event, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct TakMessage {
    pub control: Option<pb::TakControl>,
    pub event: Option<CotEvent>,
}

/// Decodes a `TakMessage` payload (without framing).
pub fn decode_message(payload: &[u8]) -> Result<TakMessage, CodecError> {
    let m = pb::TakMessage::decode(payload).map_err(|e| CodecError::Proto(e.to_string()))?;
    Ok(TakMessage { control: m.tak_control, event: m.cot_event.map(from_pb).transpose()? })
}

/// Appends the `TakMessage` payload for `ev` (with `control` when given) to `out`.
pub fn encode_message_into(ev: &CotEvent, control: Option<pb::TakControl>, out: &mut Vec<u8>) {
    let m = pb::TakMessage { tak_control: control, cot_event: Some(to_pb(ev)), submission_time: 0, creation_time: 0 };
    out.reserve(m.encoded_len());
    // Encoding into a Vec cannot run out of space.
    let _ = m.encode(out);
}

/// Encodes a `TakMessage` that carries only control information (mesh version announcement).
pub fn encode_control_into(control: pb::TakControl, out: &mut Vec<u8>) {
    let m = pb::TakMessage { tak_control: Some(control), cot_event: None, submission_time: 0, creation_time: 0 };
    let _ = m.encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_detail_wins_over_typed_field() {
        let p = pb::CotEvent {
            r#type: "a-f-G".into(),
            uid: "u".into(),
            detail: Some(pb::Detail {
                xml_detail: r#"<contact callsign="X" phone="1"/>"#.into(),
                contact: Some(pb::Contact { callsign: "Y".into(), ..Default::default() }),
                status: Some(pb::Status { battery: 5 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ev = from_pb(p).unwrap();
        assert!(ev.detail.contact.is_none());
        assert_eq!(ev.detail.status, Some(Status { battery: 5 }));
        assert_eq!(ev.callsign().as_deref(), Some("X"));
    }

    #[test]
    fn injected_xml_detail_is_refused() {
        let p = pb::CotEvent {
            r#type: "a".into(),
            uid: "u".into(),
            detail: Some(pb::Detail { xml_detail: "</detail></event><event uid='evil'>".into(), ..Default::default() }),
            ..Default::default()
        };
        assert!(matches!(from_pb(p), Err(CodecError::BadXmlDetail(_))));
    }

    #[test]
    fn optional_attributes_survive() {
        let mut ev = CotEvent::new("u", "a-f-G", "m-g", CotTime(1000), 60);
        ev.access = Some("Undefined".into());
        ev.caveat = Some("FOUO".into());
        ev.releasable_to = Some("USA".into());
        assert_eq!(from_pb(to_pb(&ev)).unwrap(), ev);
    }
}
