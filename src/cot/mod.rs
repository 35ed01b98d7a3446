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

pub(crate) use HexLine as HexDisplay;

impl fmt::Display for HexLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
