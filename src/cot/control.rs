//! Builders and recognisers for control events: TAK protocol negotiation on streams
//! (`t-x-takp-v` offer, `t-x-takp-q` request, `t-x-takp-r` response) and keepalive
//! (`t-x-c-t` ping, `t-x-c-t-r` pong). Time is passed in.

use quick_xml::events::Event;
use quick_xml::Reader;

use super::event::{CotEvent, Point};
use super::time::CotTime;

pub const PING: &str = "t-x-c-t";
pub const PONG: &str = "t-x-c-t-r";
pub const OFFER: &str = "t-x-takp-v";
pub const REQUEST: &str = "t-x-takp-q";
pub const RESPONSE: &str = "t-x-takp-r";

fn control_event(uid: &str, cot_type: &str, how: &str, now: CotTime, stale_secs: i64, detail_xml: String) -> CotEvent {
    let mut ev = CotEvent::new(uid, cot_type, how, now, stale_secs);
    ev.point = Point { lat: 0.0, lon: 0.0, hae: 0.0, ce: 9_999_999.0, le: 9_999_999.0 };
    ev.detail.xml = detail_xml;
    ev
}

/// A ping as ATAK sends it: uid `<self>-ping`, how `m-g`, stale 10 s.
pub fn ping(self_uid: &str, now: CotTime) -> CotEvent {
    control_event(&format!("{self_uid}-ping"), PING, "m-g", now, 10, String::new())
}

/// A pong as TAK Server sends it: uid `takPong`, how `h-g-i-g-o`, stale 20 s.
pub fn pong(now: CotTime) -> CotEvent {
    control_event("takPong", PONG, "h-g-i-g-o", now, 20, String::new())
}

/// The server's protocol offer (`t-x-takp-v`), listing the versions it supports.
pub fn offer(uid: &str, now: CotTime, versions: &[u32], server_version: &str) -> CotEvent {
    let mut x = String::from("<TakControl>");
    for v in versions {
        x.push_str(&format!("<TakProtocolSupport version=\"{v}\"/>"));
    }
    x.push_str(&format!("<TakServerVersionInfo serverVersion=\"{server_version}\" apiVersion=\"3\"/></TakControl>"));
    control_event(uid, OFFER, "m-g", now, 60, x)
}

/// The client's request to switch to `version` (`t-x-takp-q`).
pub fn request(uid: &str, now: CotTime, version: u32) -> CotEvent {
    control_event(uid, REQUEST, "m-g", now, 60, format!("<TakControl><TakRequest version=\"{version}\"/></TakControl>"))
}

/// The server's answer to a request (`t-x-takp-r`).
pub fn response(uid: &str, now: CotTime, accepted: bool) -> CotEvent {
    control_event(uid, RESPONSE, "m-g", now, 60, format!("<TakControl><TakResponse status=\"{accepted}\"/></TakControl>"))
}

/// What a control event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Ping,
    Pong,
    /// Offered protocol versions.
    Offer(Vec<u32>),
    /// Requested version.
    Request(u32),
    /// Whether the request was accepted.
    Response(bool),
}

/// The `t-x-d-d` TAK Server sends when a contact leaves (a client disconnects, a federate
/// deletes a contact): `<link relation="p-p" uid=… type=…/>` naming it, no `__forcedelete`.
pub fn departed(uid: &str, cot_type: &str, now: CotTime) -> CotEvent {
    let mut ev = CotEvent::new(crate::cot::random_uid(), "t-x-d-d", "h-g-i-g-o", now, 20);
    ev.point = crate::cot::Point { lat: 0.0, lon: 0.0, hae: 0.0, ce: crate::cot::UNKNOWN, le: crate::cot::UNKNOWN };
    let mut d = Vec::from(&b"<link relation=\"p-p\" uid=\""[..]);
    crate::cot::fragment::escape_attr(uid, &mut d);
    d.extend_from_slice(b"\" type=\"");
    crate::cot::fragment::escape_attr(cot_type, &mut d);
    d.extend_from_slice(b"\"/>");
    ev.detail.xml = String::from_utf8_lossy(&d).into_owned();
    ev
}

/// Recognises ping, pong and negotiation events. `None` for everything else (and for a
/// negotiation event whose TakControl cannot be read).
pub fn recognise(ev: &CotEvent) -> Option<Control> {
    match ev.cot_type.as_str() {
        PING => Some(Control::Ping),
        PONG => Some(Control::Pong),
        OFFER => {
            let mut versions = vec![];
            scan(&ev.detail.xml, |name, attrs| {
                if name == "TakProtocolSupport" {
                    if let Some(v) = attrs.iter().find(|(k, _)| k == "version").and_then(|(_, v)| v.trim().parse().ok()) {
                        versions.push(v);
                    }
                }
            });
            Some(Control::Offer(versions))
        }
        REQUEST => {
            let mut version = None;
            scan(&ev.detail.xml, |name, attrs| {
                if name == "TakRequest" {
                    version = attrs.iter().find(|(k, _)| k == "version").and_then(|(_, v)| v.trim().parse().ok());
                }
            });
            version.map(Control::Request)
        }
        RESPONSE => {
            let mut status = None;
            scan(&ev.detail.xml, |name, attrs| {
                if name == "TakResponse" {
                    status = attrs.iter().find(|(k, _)| k == "status").map(|(_, v)| v.trim().eq_ignore_ascii_case("true"));
                }
            });
            status.map(Control::Response)
        }
        _ => None,
    }
}

/// Calls `f` with the name and attributes of every element in a detail fragment.
fn scan(xml: &str, mut f: impl FnMut(&str, &[(String, String)])) {
    let mut r = Reader::from_str(xml);
    while let Ok(e) = r.read_event() {
        match e {
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let attrs: Vec<(String, String)> = e
                    .attributes()
                    .flatten()
                    .filter_map(|a| Some((String::from_utf8_lossy(a.key.as_ref()).into_owned(), a.unescape_value().ok()?.into_owned())))
                    .collect();
                f(&name, &attrs);
            }
            Event::Eof => break,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cot::xml;

    #[test]
    fn negotiation_round_trip_through_xml() {
        let now = CotTime(1_600_000_000_000);
        let o = xml::decode(&xml::encode(&offer("srv", now, &[1], "takgate"))).unwrap();
        assert_eq!(recognise(&o), Some(Control::Offer(vec![1])));
        let q = xml::decode(&xml::encode(&request("srv", now, 1))).unwrap();
        assert_eq!(recognise(&q), Some(Control::Request(1)));
        let r = xml::decode(&xml::encode(&response("srv", now, true))).unwrap();
        assert_eq!(recognise(&r), Some(Control::Response(true)));
        assert_eq!(recognise(&response("srv", now, false)), Some(Control::Response(false)));
        let p = ping("ANDROID-1", now);
        assert_eq!(p.uid, "ANDROID-1-ping");
        assert_eq!(p.stale, now.plus_secs(10));
        assert_eq!(recognise(&p), Some(Control::Ping));
        assert_eq!(recognise(&pong(now)), Some(Control::Pong));
    }
}
