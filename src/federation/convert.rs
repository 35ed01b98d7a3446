//! GeoEvent <-> CotEvent, following TAK Server's `ProtoBufHelper` so TAK Servers read what
//! we send exactly as they read each other:
//!
//! * sending: `track` (speed and course), `status` (battery only) and `precisionlocation`
//!   (both sources) go to fields 20/21, 13 and 14/15 (our typed parts match exactly those
//!   cases); `marti/dest` becomes `ptpUids`, `ptpCallsigns` and `missionNames` and is removed;
//!   the rest of `<detail>`, tag included, goes to `other`.
//! * receiving: `other` is parsed as the detail; track/status/precisionlocation come back
//!   from their fields unless `other` already has them (TAK always sends speed and course,
//!   zeros meaning "none"); destinations come back as `marti/dest`.

use super::fig::GeoEvent;
use crate::cot::fragment::{self, escape_attr};
use crate::cot::xml;
use crate::cot::{CotEvent, CotTime, Detail, Point, PrecisionLocation, Status, Track};
use crate::error::CodecError;
use crate::router::message::Facts;

fn nonempty(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

/// The GeoEvent for `ev`, whose routing facts (destinations) are `facts`.
pub fn to_geo(ev: &CotEvent, facts: &Facts) -> GeoEvent {
    let d = &ev.detail;
    let verbatim = if ev.detail.xml.contains("<marti") { fragment::without_element(&d.xml, "marti") } else { d.xml.clone() };
    let rest = Detail { status: None, track: None, precision_location: None, xml: String::new(), ..d.clone() };
    // TAK serializes what is left of `<detail>`, tag included: `<detail/>` when everything
    // went to fields (an empty `other` would make its receiver drop the track).
    let other = if verbatim.is_empty() && rest.is_empty() {
        "<detail/>".to_owned()
    } else {
        let mut out = Vec::with_capacity(verbatim.len() + 256);
        xml::encode_detail_with(d, &verbatim, &mut out, true);
        String::from_utf8(out).unwrap_or_default()
    };
    GeoEvent {
        send_time: ev.time.millis(),
        start_time: ev.start.millis(),
        stale_time: ev.stale.millis(),
        lat: ev.point.lat,
        lon: ev.point.lon,
        hae: ev.point.hae,
        ce: ev.point.ce,
        le: ev.point.le,
        uid: ev.uid.clone(),
        r#type: ev.cot_type.clone(),
        coord_source: ev.how.clone(),
        other,
        battery: d.status.as_ref().map(|s| s.battery.min(i32::MAX as u32) as i32).unwrap_or(0),
        ploc: d.precision_location.as_ref().map(|p| p.geopointsrc.clone()).unwrap_or_default(),
        palt: d.precision_location.as_ref().map(|p| p.altsrc.clone()).unwrap_or_default(),
        speed: d.track.map(|t| t.speed).unwrap_or(0.0),
        course: d.track.map(|t| t.course).unwrap_or(0.0),
        ptp_uids: facts.dest_uids.clone(),
        ptp_callsigns: facts.dest_callsigns.clone(),
        mission_names: if ev.detail.xml.contains("<marti") { facts.missions.clone() } else { Vec::new() },
        access: nonempty(&ev.access),
        caveat: nonempty(&ev.caveat),
        releaseable_to: nonempty(&ev.releasable_to),
        ..Default::default()
    }
}

/// The CotEvent in a GeoEvent.
pub fn from_geo(g: GeoEvent) -> Result<CotEvent, CodecError> {
    if g.uid.is_empty() {
        return Err(CodecError::MissingAttr("uid"));
    }
    if g.r#type.is_empty() {
        return Err(CodecError::MissingAttr("type"));
    }
    let mut detail = if g.other.trim().is_empty() { Detail::default() } else { xml::decode_detail_element(&g.other)? };
    let mut names = std::collections::HashSet::new();
    fragment::walk_fragment(&detail.xml, |n| {
        names.insert(String::from_utf8_lossy(n).into_owned());
    })?;
    if detail.track.is_none() && !names.contains("track") && (g.speed != 0.0 || g.course != 0.0) {
        detail.track = Some(Track { speed: g.speed, course: g.course });
    }
    if detail.status.is_none() && !names.contains("status") && g.battery > 0 {
        detail.status = Some(Status { battery: g.battery as u32 });
    }
    if detail.precision_location.is_none() && !names.contains("precisionlocation") && (!g.ploc.is_empty() || !g.palt.is_empty()) {
        detail.precision_location = Some(PrecisionLocation { geopointsrc: g.ploc, altsrc: g.palt });
    }
    if !g.ptp_uids.is_empty() || !g.ptp_callsigns.is_empty() || !g.mission_names.is_empty() {
        let mut m = Vec::from(&b"<marti>"[..]);
        for (attr, list) in [("uid", &g.ptp_uids), ("callsign", &g.ptp_callsigns), ("mission", &g.mission_names)] {
            for v in list {
                m.extend_from_slice(format!("<dest {attr}=\"").as_bytes());
                escape_attr(v, &mut m);
                m.extend_from_slice(b"\"/>");
            }
        }
        m.extend_from_slice(b"</marti>");
        detail.xml.push_str(&String::from_utf8_lossy(&m));
    }
    let some = |s: String| (!s.is_empty()).then_some(s);
    Ok(CotEvent {
        uid: g.uid,
        cot_type: g.r#type,
        how: if g.coord_source.is_empty() { xml::DEFAULT_HOW.into() } else { g.coord_source },
        time: CotTime(g.send_time),
        start: CotTime(g.start_time),
        stale: CotTime(g.stale_time),
        access: some(g.access),
        qos: None,
        opex: None,
        caveat: some(g.caveat),
        releasable_to: some(g.releaseable_to),
        point: Point { lat: g.lat, lon: g.lon, hae: g.hae, ce: g.ce, le: g.le },
        detail,
        extra_xml: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cot::sample::ATAK_PLI;

    #[test]
    fn a_detail_left_empty_is_sent_as_an_empty_detail_element() {
        let mut ev = CotEvent::new("u", "a-f-G", "m-g", CotTime(5), 60);
        ev.detail.track = Some(Track { speed: 2.0, course: 45.0 });
        let g = to_geo(&ev, &Facts::default());
        // TAK serializes the rest of <detail>, tag included; an empty `other` would make its
        // receiver build the event without a detail and drop the track.
        assert_eq!((g.other.as_str(), g.speed, g.course), ("<detail/>", 2.0, 45.0));
        let back = from_geo(g).unwrap();
        assert_eq!(back.detail.track, Some(Track { speed: 2.0, course: 45.0 }));
    }

    #[test]
    fn pli_round_trips_and_flat_fields_are_used() {
        let ev = xml::decode(ATAK_PLI.as_bytes()).unwrap();
        let g = to_geo(&ev, &Facts::of(&ev));
        assert_eq!((g.battery, g.ploc.as_str(), g.palt.as_str()), (58, "USER", "DTED2"));
        assert_eq!(g.course, 327.66875837972367);
        assert!(g.other.starts_with("<detail>") && g.other.ends_with("</detail>"));
        assert!(!g.other.contains("<track") && !g.other.contains("<status") && !g.other.contains("<precisionlocation"));
        assert!(g.other.contains("<contact") && g.other.contains("<takv") && g.other.contains("<__group"));
        let back = from_geo(g).unwrap();
        let mut want = ev.clone();
        want.detail.track = Some(Track { speed: 0.0, course: 327.66875837972367 });
        assert_eq!(back.detail.contact, want.detail.contact);
        assert_eq!(back.detail.status, want.detail.status);
        assert_eq!(back.detail.precision_location, want.detail.precision_location);
        assert_eq!(back.detail.track, want.detail.track);
        assert_eq!((back.uid, back.time, back.stale, back.point), (ev.uid, ev.time, ev.stale, ev.point));
    }

    #[test]
    fn destinations_travel_as_fields() {
        let mut ev = CotEvent::new("GeoChat.a.b.1", "b-t-f", "h-g-i-g-o", CotTime(1000), 60);
        ev.detail.xml = r#"<remarks>hi</remarks><marti><dest callsign="BOB"/><dest uid="ANDROID-2"/><dest mission="ops"/></marti>"#.into();
        let g = to_geo(&ev, &Facts::of(&ev));
        assert_eq!((g.ptp_callsigns.clone(), g.ptp_uids.clone(), g.mission_names.clone()), (vec!["BOB".to_string()], vec!["ANDROID-2".to_string()], vec!["ops".to_string()]));
        assert_eq!(g.other, "<detail><remarks>hi</remarks></detail>");
        let back = from_geo(g).unwrap();
        let f = Facts::of(&back);
        assert_eq!((f.dest_callsigns, f.dest_uids, f.missions), (vec!["BOB".to_string()], vec!["ANDROID-2".to_string()], vec!["ops".to_string()]));
    }

    #[test]
    fn what_a_tak_server_sends_is_read() {
        // TAK appends a zero track and status to everything; a track inside `other` wins.
        let g = GeoEvent { uid: "u".into(), r#type: "a-f-G".into(), coord_source: "m-g".into(), send_time: 5, start_time: 5, stale_time: 9, other: r#"<?xml version="1.0" encoding="UTF-8"?><detail><track speed="1.0" course="2.0"/><contact callsign="X"/></detail>"#.into(), ..Default::default() };
        let ev = from_geo(g).unwrap();
        assert_eq!(ev.detail.track, Some(Track { speed: 1.0, course: 2.0 }));
        assert!(ev.detail.status.is_none());
        assert!(from_geo(GeoEvent { uid: "u".into(), r#type: "t".into(), other: "<detail><a></detail>".into(), ..Default::default() }).is_err());
        assert!(from_geo(GeoEvent { uid: "u".into(), r#type: "t".into(), other: "<detail/><detail/>".into(), ..Default::default() }).is_err());
    }
}
