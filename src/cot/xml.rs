//! CoT XML <-> [`CotEvent`] with quick-xml.
//!
//! Decoding accepts what real traffic has: any fractional-second width, either quote style,
//! `<point>` and `<detail>` in either order, character references, CDATA, newlines inside
//! tags, a BOM, and an `encoding="utf-16"` label on bytes that are really UTF-8 (the label is
//! ignored; the bytes must be UTF-8). A DOCTYPE or entity declaration is rejected and never
//! expanded.
//!
//! A detail element becomes a typed part only when it matches TAK protocol v1's field
//! exactly (commo's rule): required attributes present and parseable, no other attributes,
//! no children, and no second element of that name. Everything else is kept verbatim.
//!
//! Encoding writes `<?xml …?>\n<event …>…</event>` with nothing after `</event>`, so encoded
//! events can be written back to back on a stream (ATAK drops the message after a stray
//! newline).

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::event::{Contact, CotEvent, Detail, Group, Point, PrecisionLocation, Status, Takv, Track};
use super::time::CotTime;
use super::fragment::{check_no_dtd, escape_attr};
use crate::error::CodecError;

/// The declaration written before every event.
pub const XML_DECL: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n";

/// How `how` is filled in when a producer leaves it out (iTAK's UAS tool does): "unknown
/// provenance", so that ATAK, which requires the attribute, still accepts the event.
pub const DEFAULT_HOW: &str = "h-g-i-g-o";

fn xml_err(r: &Reader<&[u8]>, e: impl std::fmt::Display) -> CodecError {
    CodecError::Xml { offset: r.error_position() as usize, message: e.to_string() }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Decodes one CoT XML document.
pub fn decode(input: &[u8]) -> Result<CotEvent, CodecError> {
    // Every leading BOM goes: quick-xml skips one itself but then reports positions from
    // after it, which would shift the verbatim detail slices (found by fuzzing).
    let mut input = input;
    while let Some(rest) = input.strip_prefix(b"\xEF\xBB\xBF") {
        input = rest;
    }
    let s = match simdutf8::basic::from_utf8(input) {
        Ok(s) => s,
        Err(_) => return Err(CodecError::Utf8 { offset: std::str::from_utf8(input).err().map_or(0, |e| e.valid_up_to()) }),
    };
    check_no_dtd(input)?;
    let mut r = Reader::from_str(s);
    let mut ev: Option<CotEvent> = None;
    loop {
        let ev_result = r.read_event().map_err(|e| xml_err(&r, e))?;
        match ev_result {
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Text(t) if t.iter().all(|&b| is_ws(b)) => {}
            Event::DocType(_) => return Err(CodecError::Doctype),
            Event::Start(e) if e.name().as_ref() == b"event" && ev.is_none() => {
                let mut event = parse_event_attrs(&r, s, &e)?;
                parse_event_body(&mut r, s, &mut event)?;
                ev = Some(event);
            }
            Event::Empty(e) if e.name().as_ref() == b"event" => return Err(CodecError::MissingPoint),
            Event::Eof => return ev.ok_or(CodecError::NoEvent),
            _ => {
                let offset = r.buffer_position() as usize;
                return Err(if ev.is_some() { CodecError::TrailingContent { offset } } else { CodecError::NoEvent });
            }
        }
    }
}

/// The unescaped value of an attribute read from `doc`. The value's bytes are a slice of the
/// already validated document, so they are taken as `&str` from it instead of being
/// validated again (quick-xml's `unescape_value` would re-check UTF-8 for every attribute).
fn value_in<'a>(doc: &'a str, a: &quick_xml::events::attributes::Attribute<'_>) -> Option<Cow<'a, str>> {
    let v: &[u8] = &a.value;
    let off = (v.as_ptr() as usize).checked_sub(doc.as_ptr() as usize)?;
    let raw = doc.get(off..off + v.len())?;
    quick_xml::escape::unescape(raw).ok()
}

fn attr_value<'a>(r: &Reader<&[u8]>, doc: &'a str, a: &quick_xml::events::attributes::Attribute<'_>) -> Result<Cow<'a, str>, CodecError> {
    match value_in(doc, a) {
        Some(v) => Ok(v),
        None => a.unescape_value().map(|v| Cow::Owned(v.into_owned())).map_err(|e| xml_err(r, e)),
    }
}

fn parse_time(name: &'static str, v: &str) -> Result<CotTime, CodecError> {
    CotTime::parse(v).ok_or_else(|| CodecError::BadValue { name, value: v.to_owned() })
}

/// Lenient number parsing: surrounding spaces and a decimal comma are accepted.
pub(crate) fn parse_f64(name: &'static str, v: &str) -> Result<f64, CodecError> {
    let t = v.trim();
    t.parse::<f64>()
        .or_else(|_| t.replace(',', ".").parse::<f64>())
        .map_err(|_| CodecError::BadValue { name, value: v.to_owned() })
}

fn parse_event_attrs(r: &Reader<&[u8]>, doc: &str, e: &BytesStart<'_>) -> Result<CotEvent, CodecError> {
    let mut ev = CotEvent::default();
    let (mut uid, mut typ, mut how) = (None, None, None);
    let (mut time, mut start, mut stale) = (None, None, None);
    for a in e.attributes().with_checks(false) {
        let a = a.map_err(|e| xml_err(r, e))?;
        let key = a.key.as_ref();
        match key {
            b"uid" => uid = Some(attr_value(r, doc, &a)?.into_owned()),
            b"type" => typ = Some(attr_value(r, doc, &a)?.into_owned()),
            b"how" => how = Some(attr_value(r, doc, &a)?.into_owned()),
            b"time" => time = Some(parse_time("time", &attr_value(r, doc, &a)?)?),
            b"start" => start = Some(parse_time("start", &attr_value(r, doc, &a)?)?),
            b"stale" => stale = Some(parse_time("stale", &attr_value(r, doc, &a)?)?),
            b"access" => ev.access = Some(attr_value(r, doc, &a)?.into_owned()),
            b"qos" => ev.qos = Some(attr_value(r, doc, &a)?.into_owned()),
            b"opex" => ev.opex = Some(attr_value(r, doc, &a)?.into_owned()),
            b"caveat" => ev.caveat = Some(attr_value(r, doc, &a)?.into_owned()),
            b"releasableTo" | b"releaseableTo" => ev.releasable_to = Some(attr_value(r, doc, &a)?.into_owned()),
            _ => {}
        }
    }
    // Empty optional attributes are absent (commo omits them; protobuf cannot tell).
    for o in [&mut ev.access, &mut ev.qos, &mut ev.opex, &mut ev.caveat, &mut ev.releasable_to] {
        if o.as_deref() == Some("") {
            *o = None;
        }
    }
    ev.uid = uid.filter(|u| !u.is_empty()).ok_or(CodecError::MissingAttr("uid"))?;
    ev.cot_type = typ.filter(|t| !t.is_empty()).ok_or(CodecError::MissingAttr("type"))?;
    ev.how = how.filter(|h| !h.is_empty()).unwrap_or_else(|| DEFAULT_HOW.to_owned());
    ev.time = time.or(start).ok_or(CodecError::MissingAttr("time"))?;
    ev.start = start.unwrap_or(ev.time);
    ev.stale = stale.ok_or(CodecError::MissingAttr("stale"))?;
    Ok(ev)
}

fn parse_point(r: &Reader<&[u8]>, doc: &str, e: &BytesStart<'_>) -> Result<Point, CodecError> {
    let mut p = Point::default();
    let (mut lat, mut lon) = (None, None);
    for a in e.attributes().with_checks(false) {
        let a = a.map_err(|e| xml_err(r, e))?;
        match a.key.as_ref() {
            b"lat" => lat = Some(parse_f64("point lat", &attr_value(r, doc, &a)?)?),
            b"lon" => lon = Some(parse_f64("point lon", &attr_value(r, doc, &a)?)?),
            b"hae" => p.hae = parse_f64("point hae", &attr_value(r, doc, &a)?)?,
            b"ce" => p.ce = parse_f64("point ce", &attr_value(r, doc, &a)?)?,
            b"le" => p.le = parse_f64("point le", &attr_value(r, doc, &a)?)?,
            _ => {}
        }
    }
    p.lat = lat.ok_or(CodecError::MissingAttr("point lat"))?;
    p.lon = lon.ok_or(CodecError::MissingAttr("point lon"))?;
    Ok(p)
}

fn parse_event_body(r: &mut Reader<&[u8]>, s: &str, ev: &mut CotEvent) -> Result<(), CodecError> {
    let mut have_point = false;
    let mut have_detail = false;
    loop {
        let before = r.buffer_position() as usize;
        let e = r.read_event().map_err(|e| xml_err(r, e))?;
        match e {
            Event::Empty(e) if e.name().as_ref() == b"point" && !have_point => {
                ev.point = parse_point(r, s, &e)?;
                have_point = true;
            }
            Event::Start(e) if e.name().as_ref() == b"point" && !have_point => {
                ev.point = parse_point(r, s, &e)?;
                r.read_to_end(e.name()).map_err(|err| xml_err(r, err))?;
                have_point = true;
            }
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"detail" && have_detail => return Err(xml_err(r, "more than one <detail>")),
            Event::Start(e) if e.name().as_ref() == b"detail" => {
                parse_detail(r, s, &mut ev.detail)?;
                have_detail = true;
            }
            Event::Empty(e) if e.name().as_ref() == b"detail" => have_detail = true,
            Event::Empty(_) => ev.extra_xml.push_str(&s[before..r.buffer_position() as usize]),
            Event::Start(e) => {
                r.read_to_end(e.name()).map_err(|err| xml_err(r, err))?;
                ev.extra_xml.push_str(&s[before..r.buffer_position() as usize]);
            }
            Event::End(_) => break,
            Event::Text(_) | Event::Comment(_) | Event::CData(_) | Event::PI(_) => {}
            Event::DocType(_) => return Err(CodecError::Doctype),
            Event::Decl(_) => return Err(xml_err(r, "XML declaration inside <event>")),
            Event::Eof => return Err(CodecError::Truncated),
        }
    }
    if !have_point {
        return Err(CodecError::MissingPoint);
    }
    Ok(())
}

const TYPED: [&[u8]; 6] = [b"contact", b"__group", b"precisionlocation", b"status", b"takv", b"track"];

enum Typed {
    Contact(Contact),
    Group(Group),
    Precision(PrecisionLocation),
    Status(Status),
    Takv(Takv),
    Track(Track),
}

enum Seg {
    Raw(usize, usize),
    Typed(usize, usize, usize, Typed),
}

/// Parses the attributes of a typed candidate; `None` when it does not match exactly.
fn try_typed(doc: &str, kind: usize, e: &BytesStart<'_>) -> Option<Typed> {
    let mut vals: [Option<Cow<'_, str>>; 4] = [None, None, None, None];
    let names: &[&[u8]] = match kind {
        0 => &[b"callsign", b"endpoint", b"altendpoints"],
        1 => &[b"name", b"role"],
        2 => &[b"geopointsrc", b"altsrc"],
        3 => &[b"battery"],
        4 => &[b"device", b"platform", b"os", b"version"],
        _ => &[b"speed", b"course"],
    };
    for a in e.attributes().with_checks(false) {
        let a = a.ok()?;
        let i = names.iter().position(|n| *n == a.key.as_ref())?;
        vals[i] = Some(value_in(doc, &a)?);
    }
    let [a, b, c, d] = vals;
    let own = |v: Option<Cow<'_, str>>| v.map(Cow::into_owned);
    Some(match kind {
        0 => Typed::Contact(Contact { callsign: own(a)?, endpoint: own(b).unwrap_or_default(), altendpoints: own(c).unwrap_or_default() }),
        1 => Typed::Group(Group { name: own(a)?, role: own(b)? }),
        2 => Typed::Precision(PrecisionLocation { geopointsrc: own(a)?, altsrc: own(b)? }),
        3 => {
            let v: u32 = a?.trim().parse().ok()?;
            if v > i32::MAX as u32 {
                return None;
            }
            Typed::Status(Status { battery: v })
        }
        4 => Typed::Takv(Takv { device: own(a).unwrap_or_default(), platform: own(b)?, os: own(c).unwrap_or_default(), version: own(d)? }),
        _ => Typed::Track(Track { speed: a?.trim().parse().ok()?, course: b?.trim().parse().ok()? }),
    })
}

fn parse_detail(r: &mut Reader<&[u8]>, s: &str, d: &mut Detail) -> Result<(), CodecError> {
    let mut segs: Vec<Seg> = Vec::with_capacity(8);
    let mut seen = [0u8; 6];
    loop {
        let before = r.buffer_position() as usize;
        let e = r.read_event().map_err(|e| xml_err(r, e))?;
        match e {
            Event::Empty(e) => {
                let after = r.buffer_position() as usize;
                push_element(s, &mut segs, &mut seen, &e, before, after, true);
            }
            Event::Start(e) => {
                let span = r.read_to_end(e.name()).map_err(|err| xml_err(r, err))?;
                let after = r.buffer_position() as usize;
                push_element(s, &mut segs, &mut seen, &e, before, after, span.start == span.end);
            }
            Event::Text(t) => {
                if !t.iter().all(|&b| is_ws(b)) {
                    segs.push(Seg::Raw(before, r.buffer_position() as usize));
                }
            }
            Event::CData(_) | Event::Comment(_) | Event::PI(_) => segs.push(Seg::Raw(before, r.buffer_position() as usize)),
            Event::End(_) => break,
            Event::DocType(_) => return Err(CodecError::Doctype),
            Event::Decl(_) => return Err(xml_err(r, "XML declaration inside <detail>")),
            Event::Eof => return Err(CodecError::Truncated),
        }
    }
    let mut len = 0;
    for seg in &segs {
        let (Seg::Raw(a, b) | Seg::Typed(_, a, b, _)) = seg;
        len += b - a;
    }
    let mut xml = String::with_capacity(len);
    for seg in segs {
        match seg {
            Seg::Raw(a, b) => xml.push_str(&s[a..b]),
            Seg::Typed(kind, a, b, _) if seen[kind] > 1 => xml.push_str(&s[a..b]),
            Seg::Typed(_, _, _, t) => match t {
                Typed::Contact(v) => d.contact = Some(v),
                Typed::Group(v) => d.group = Some(v),
                Typed::Precision(v) => d.precision_location = Some(v),
                Typed::Status(v) => d.status = Some(v),
                Typed::Takv(v) => d.takv = Some(v),
                Typed::Track(v) => d.track = Some(v),
            },
        }
    }
    d.xml = xml;
    Ok(())
}

fn push_element(doc: &str, segs: &mut Vec<Seg>, seen: &mut [u8; 6], e: &BytesStart<'_>, a: usize, b: usize, no_content: bool) {
    if let Some(kind) = TYPED.iter().position(|n| *n == e.name().as_ref()) {
        seen[kind] = seen[kind].saturating_add(1);
        if seen[kind] == 1 && no_content {
            if let Some(t) = try_typed(doc, kind, e) {
                segs.push(Seg::Typed(kind, a, b, t));
                return;
            }
        }
    }
    segs.push(Seg::Raw(a, b));
}

/// Decodes a whole `<detail>…</detail>` element (as federation GeoEvents carry it).
pub fn decode_detail_element(detail: &str) -> Result<Detail, CodecError> {
    let body = detail.trim_start_matches('\u{feff}').trim();
    let body = match body.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, r)| r.trim_start()).unwrap_or(""),
        None => body,
    };
    let doc = format!("<event uid=\"x\" type=\"x\" time=\"1970-01-01T00:00:00Z\" stale=\"1970-01-01T00:00:00Z\"><point lat=\"0\" lon=\"0\"/>{body}</event>");
    let ev = decode(doc.as_bytes())?;
    if !ev.extra_xml.is_empty() {
        return Err(CodecError::BadXmlDetail("not a single <detail> element".into()));
    }
    Ok(ev.detail)
}

fn attr(out: &mut Vec<u8>, name: &str, v: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    escape_attr(v, out);
    out.push(b'"');
}

fn attr_f64(out: &mut Vec<u8>, name: &str, v: f64) {
    use std::io::Write;
    let _ = write!(out, " {name}=\"{v}\"");
}

fn attr_time(out: &mut Vec<u8>, name: &str, t: CotTime) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    t.write_to(out);
    out.push(b'"');
}

/// Appends the XML encoding of `ev` (declaration, newline, event; nothing after `</event>`).
pub fn encode_into(ev: &CotEvent, out: &mut Vec<u8>) {
    out.reserve(400 + ev.detail.xml.len() + ev.extra_xml.len());
    out.extend_from_slice(XML_DECL);
    out.extend_from_slice(b"<event version=\"2.0\"");
    attr(out, "uid", &ev.uid);
    attr(out, "type", &ev.cot_type);
    attr(out, "how", &ev.how);
    attr_time(out, "time", ev.time);
    attr_time(out, "start", ev.start);
    attr_time(out, "stale", ev.stale);
    for (name, v) in [("access", &ev.access), ("qos", &ev.qos), ("opex", &ev.opex), ("caveat", &ev.caveat), ("releasableTo", &ev.releasable_to)] {
        if let Some(v) = v {
            attr(out, name, v);
        }
    }
    out.extend_from_slice(b"><point");
    let p = &ev.point;
    attr_f64(out, "lat", p.lat);
    attr_f64(out, "lon", p.lon);
    attr_f64(out, "hae", p.hae);
    attr_f64(out, "ce", p.ce);
    attr_f64(out, "le", p.le);
    out.extend_from_slice(b"/>");
    encode_detail(&ev.detail, out, false);
    out.extend_from_slice(ev.extra_xml.as_bytes());
    out.extend_from_slice(b"</event>");
}

/// Writes `<detail>…</detail>`: the verbatim part, then the typed parts as elements. With
/// `skip_flat`, status, track and precisionlocation are left out (federation GeoEvents carry
/// them in fields of their own).
pub(crate) fn encode_detail(d: &Detail, out: &mut Vec<u8>, skip_flat: bool) {
    encode_detail_with(d, &d.xml, out, skip_flat)
}

pub(crate) fn encode_detail_with(d: &Detail, verbatim: &str, out: &mut Vec<u8>, skip_flat: bool) {
    out.extend_from_slice(b"<detail>");
    out.extend_from_slice(verbatim.as_bytes());
    if let Some(c) = &d.contact {
        out.extend_from_slice(b"<contact");
        attr(out, "callsign", &c.callsign);
        if !c.endpoint.is_empty() {
            attr(out, "endpoint", &c.endpoint);
        }
        if !c.altendpoints.is_empty() {
            attr(out, "altendpoints", &c.altendpoints);
        }
        out.extend_from_slice(b"/>");
    }
    if let Some(g) = &d.group {
        out.extend_from_slice(b"<__group");
        attr(out, "name", &g.name);
        attr(out, "role", &g.role);
        out.extend_from_slice(b"/>");
    }
    if let Some(p) = d.precision_location.as_ref().filter(|_| !skip_flat) {
        out.extend_from_slice(b"<precisionlocation");
        attr(out, "geopointsrc", &p.geopointsrc);
        attr(out, "altsrc", &p.altsrc);
        out.extend_from_slice(b"/>");
    }
    if let Some(s) = d.status.as_ref().filter(|_| !skip_flat) {
        use std::io::Write;
        let _ = write!(out, "<status battery=\"{}\"/>", s.battery);
    }
    if let Some(t) = &d.takv {
        out.extend_from_slice(b"<takv");
        if !t.device.is_empty() {
            attr(out, "device", &t.device);
        }
        attr(out, "platform", &t.platform);
        if !t.os.is_empty() {
            attr(out, "os", &t.os);
        }
        attr(out, "version", &t.version);
        out.extend_from_slice(b"/>");
    }
    if let Some(t) = d.track.as_ref().filter(|_| !skip_flat) {
        out.extend_from_slice(b"<track");
        attr_f64(out, "speed", t.speed);
        attr_f64(out, "course", t.course);
        out.extend_from_slice(b"/>");
    }
    out.extend_from_slice(b"</detail>");
}

/// The XML encoding of `ev`.
pub fn encode(ev: &CotEvent) -> Vec<u8> {
    let mut v = Vec::new();
    encode_into(ev, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cot::UNKNOWN;

    const PLI: &str = r#"<?xml version='1.0' encoding='UTF-8' standalone='yes'?>
<event version='2.0' uid='ANDROID-1' type='a-f-G-U-C' time='2020-02-08T18:10:44.123Z' start='2020-02-08T18:10:44.123Z' stale='2020-02-08T18:11:59.123Z' how='m-g'><point lat='1.5' lon='-2.25' hae='9999999.0' ce='9999999.0' le='9999999.0'/><detail><takv os='29' version='4.0' device='X' platform='ATAK-CIV'/><contact endpoint='*:-1:stcp' callsign='JDOG'/><uid Droid='JDOG'/><__group role='Team Member' name='Cyan'/><status battery='88'/><track course='10.5' speed='0.0'/><precisionlocation altsrc='GPS' geopointsrc='USER'/></detail></event>"#;

    #[test]
    fn typed_parts_and_verbatim_rest() {
        let ev = decode(PLI.as_bytes()).unwrap();
        assert_eq!(ev.uid, "ANDROID-1");
        assert_eq!(ev.point.lon, -2.25);
        assert_eq!(ev.detail.contact.as_ref().unwrap().callsign, "JDOG");
        assert_eq!(ev.detail.group.as_ref().unwrap().name, "Cyan");
        assert_eq!(ev.detail.status.as_ref().unwrap().battery, 88);
        assert_eq!(ev.detail.takv.as_ref().unwrap().device, "X");
        assert_eq!(ev.detail.track.as_ref().unwrap().course, 10.5);
        assert_eq!(ev.detail.precision_location.as_ref().unwrap().altsrc, "GPS");
        assert_eq!(ev.detail.xml, "<uid Droid='JDOG'/>");
        let again = decode(&encode(&ev)).unwrap();
        assert_eq!(again, ev);
    }

    #[test]
    fn inexact_typed_elements_stay_verbatim() {
        let x = r#"<event uid="u" type="a-f-G" how="m-g" time="2020-01-01T00:00:00Z" start="2020-01-01T00:00:00Z" stale="2020-01-01T00:01:00Z"><detail><contact callsign="A" phone="123"/><status readiness="true"/><track speed="1" course="2" slope="3"/><__group name="Red" role="HQ"/><__group name="Blue" role="HQ"/><precisionlocation altsrc="DTED0"/></detail><point lat="1" lon="2" hae="3" ce="4" le="5"/></event>"#;
        let ev = decode(x.as_bytes()).unwrap();
        assert!(ev.detail.contact.is_none() && ev.detail.status.is_none() && ev.detail.track.is_none());
        assert!(ev.detail.group.is_none(), "a second __group makes both verbatim");
        assert!(ev.detail.precision_location.is_none());
        assert!(ev.detail.xml.starts_with(r#"<contact callsign="A" phone="123"/><status readiness="true"/>"#));
        assert!(ev.detail.xml.contains(r#"<__group name="Red" role="HQ"/><__group name="Blue" role="HQ"/>"#));
        assert_eq!(ev.callsign().as_deref(), Some("A"));
        assert_eq!(decode(&encode(&ev)).unwrap(), ev);
    }

    #[test]
    fn doctype_is_rejected() {
        let x = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><event uid="&lol;" type="a" how="h" time="2020-01-01T00:00:00Z" start="2020-01-01T00:00:00Z" stale="2020-01-01T00:00:00Z"><point lat="0" lon="0" hae="0" ce="0" le="0"/></event>"#;
        assert_eq!(decode(x.as_bytes()), Err(CodecError::Doctype));
    }

    #[test]
    fn attribute_escapes_survive() {
        let mut ev = decode(PLI.as_bytes()).unwrap();
        ev.uid = "a\"b<c>&d\ne\tf'g".into();
        ev.detail.contact.as_mut().unwrap().callsign = "Б&#10;".into();
        let out = encode(&ev);
        assert!(!out.ends_with(b"\n"));
        assert_eq!(decode(&out).unwrap(), ev);
    }

    #[test]
    fn missing_fields_give_clear_errors() {
        let base = |attrs: &str, body: &str| format!("<event {attrs}>{body}</event>");
        let ok_attrs = r#"uid="u" type="t" time="2020-01-01T00:00:00Z" start="2020-01-01T00:00:00Z" stale="2020-01-01T00:00:00Z""#;
        let pt = r#"<point lat="0" lon="0"/>"#;
        assert_eq!(decode(base(ok_attrs, "").as_bytes()), Err(CodecError::MissingPoint));
        assert_eq!(decode(base(r#"type="t" time="2020-01-01T00:00:00Z" stale="2020-01-01T00:00:00Z""#, pt).as_bytes()), Err(CodecError::MissingAttr("uid")));
        assert!(matches!(decode(base(&ok_attrs.replace("stale=\"2020", "stale=\"x020"), pt).as_bytes()), Err(CodecError::BadValue { name: "stale", .. })));
        let ev = decode(base(ok_attrs, pt).as_bytes()).unwrap();
        assert_eq!(ev.how, DEFAULT_HOW);
        assert_eq!(ev.point.hae, UNKNOWN);
        assert!(matches!(decode(b"<event uid='u'"), Err(CodecError::Xml { .. }) | Err(CodecError::Truncated)));
        assert!(matches!(decode(b"\xff\xfe<event/>"), Err(CodecError::Utf8 { offset: 0 })));
    }

    #[test]
    fn several_boms_keep_detail_slices_aligned() {
        let x = "\u{feff}\u{feff}<event uid='u' type='a' time='2020-01-01T00:00:00Z' stale='2020-01-01T00:00:00Z'><point lat='0' lon='0'/><detail><contact phone='1' callsign='X'/><y/></detail></event>";
        let ev = decode(x.as_bytes()).unwrap();
        assert_eq!(ev.detail.xml, "<contact phone='1' callsign='X'/><y/>");
    }

    #[test]
    fn a_second_detail_is_an_error() {
        // Found by the fuzzer: the second <detail> used to replace the verbatim part of the
        // first while keeping its typed parts.
        let x = r#"<event uid="u" type="a" time="2020-01-01T00:00:00Z" stale="2020-01-01T00:00:00Z"><point lat="0" lon="0"/><detail><precisionlocation geopointsrc="GPS" altsrc="GPS"/></detail><detail><x/></detail></event>"#;
        assert!(matches!(decode(x.as_bytes()), Err(CodecError::Xml { message, .. }) if message.contains("more than one <detail>")));
    }
}
