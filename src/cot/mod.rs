//! The CoT codec: one canonical event and pure conversions to and from CoT XML and TAK
//! protocol v1 protobuf. No sockets, no clock (callers pass time in).

pub mod control;
pub mod event;
pub mod fragment;
pub mod pb;
pub mod proto;
pub mod sample;
pub mod time;
pub mod xml;

pub use event::{Contact, CotEvent, Detail, DetailExtension, Group, Point, PrecisionLocation, Status, Takv, Track, UNKNOWN};
pub use time::CotTime;


use std::fmt;

/// Bytes shown as lower-case hex.
pub struct HexLine<'a>(pub &'a [u8]);

impl fmt::Display for HexLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A random uid of 32 hex digits, as TAK Server makes them for messages and sessions.
pub fn random_uid() -> String {
    hex::encode(fastrand::u128(..).to_be_bytes())
}
