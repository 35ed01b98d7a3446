//! `CotEvent`: the one canonical event that CoT XML, TAK protocol v1 and federation
//! messages all convert to and from.
//!
//! The detail keeps the six parts TAK protocol v1 has typed fields for, but only when the
//! XML element matches that field exactly (ATAK's rule); every other `<detail>` child stays
//! verbatim, in order, in [`Detail::xml`]. That makes XML -> proto -> XML lossless for
//! everything the protobuf format can carry.

use serde::Serialize;

use super::time::CotTime;

/// Value TAK uses for an unknown hae, ce or le.
pub const UNKNOWN: f64 = 9_999_999.0;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CotEvent {
    pub uid: String,
    #[serde(rename = "type")]
    pub cot_type: String,
    pub how: String,
    pub time: CotTime,
    pub start: CotTime,
    pub stale: CotTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caveat: Option<String>,
    #[serde(rename = "releasableTo", skip_serializing_if = "Option::is_none")]
    pub releasable_to: Option<String>,
    pub point: Point,
    pub detail: Detail,
    /// Children of `<event>` other than `<point>` and `<detail>` (seen in the wild: a
    /// `<contact>` beside `<detail>`), verbatim. XML only: TAK protocol v1 cannot carry them.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub extra_xml: String,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
    pub hae: f64,
    pub ce: f64,
    pub le: f64,
}

impl Default for Point {
    fn default() -> Self {
        Point { lat: 0.0, lon: 0.0, hae: UNKNOWN, ce: UNKNOWN, le: UNKNOWN }
    }
}

/// Float equality where NaN equals NaN (ATAK writes `NaN` points; an event must equal itself).
pub(crate) fn same_f64(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

impl PartialEq for Point {
    fn eq(&self, o: &Self) -> bool {
        same_f64(self.lat, o.lat)
            && same_f64(self.lon, o.lon)
            && same_f64(self.hae, o.hae)
            && same_f64(self.ce, o.ce)
            && same_f64(self.le, o.le)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Detail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    #[serde(rename = "__group", skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
    #[serde(rename = "precisionlocation", skip_serializing_if = "Option::is_none")]
    pub precision_location: Option<PrecisionLocation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub takv: Option<Takv>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<Track>,
    /// Every other `<detail>` child, verbatim and in order (whitespace-only text between
    /// top-level children is not kept).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub xml: String,
    /// ATAK 5.5 binary detail extensions (protobuf only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<DetailExtension>,
}

impl Detail {
    pub fn is_empty(&self) -> bool {
        self.contact.is_none()
            && self.group.is_none()
            && self.precision_location.is_none()
            && self.status.is_none()
            && self.takv.is_none()
            && self.track.is_none()
            && self.xml.is_empty()
            && self.extensions.is_empty()
    }
}

/// `<contact callsign=".." [endpoint=".."]/>`. Empty strings mean absent (proto3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Contact {
    pub callsign: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub altendpoints: String,
}

/// `<__group name=".." role=".."/>`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Group {
    pub name: String,
    pub role: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PrecisionLocation {
    pub geopointsrc: String,
    pub altsrc: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    pub battery: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Takv {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub device: String,
    pub platform: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub os: String,
    pub version: String,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Track {
    pub speed: f64,
    pub course: f64,
}

impl PartialEq for Track {
    fn eq(&self, o: &Self) -> bool {
        same_f64(self.speed, o.speed) && same_f64(self.course, o.course)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DetailExtension {
    pub id: u32,
    #[serde(serialize_with = "hex_bytes")]
    pub data: Vec<u8>,
}

fn hex_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&crate::cot::HexLine(b))
}

impl CotEvent {
    /// A new event with the given identity and times; point unknown, empty detail.
    pub fn new(uid: impl Into<String>, cot_type: impl Into<String>, how: impl Into<String>, time: CotTime, stale_secs: i64) -> Self {
        CotEvent {
            uid: uid.into(),
            cot_type: cot_type.into(),
            how: how.into(),
            time,
            start: time,
            stale: time.plus_secs(stale_secs),
            ..Default::default()
        }
    }

    /// The callsign, from the typed contact or a `<contact>` kept in the verbatim detail.
    pub fn callsign(&self) -> Option<std::borrow::Cow<'_, str>> {
        if let Some(c) = &self.detail.contact {
            return Some(std::borrow::Cow::Borrowed(&c.callsign));
        }
        crate::cot::fragment::find_attr(&self.detail.xml, "contact", "callsign").map(std::borrow::Cow::Owned)
    }
}
