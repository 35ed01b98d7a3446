//! Framing: how events are cut out of streams and datagrams, apart from their format.
//!
//! * stream: XML events split right after `</event>`, and TAK protocol v1 frames
//!   (`0xbf`, varint length, TakMessage); the decoder recognises each frame by its first
//!   byte, so XML and protobuf may follow each other on one stream (negotiation switches
//!   mid-buffer, and some clients send protobuf without negotiating).
//! * mesh: one event per datagram, XML or `0xbf 0x01 0xbf` + TakMessage.

pub mod mesh;
pub mod stream;

use crate::cot::{proto, xml, CotEvent};
use crate::error::CodecError;

pub use stream::{Frame, StreamDecoder};

/// Default maximum size of one event, XML or protobuf.
pub const DEFAULT_MAX_EVENT: usize = 1 << 20;

/// The wire formats an event can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WireFormat {
    /// CoT XML with declaration, nothing after `</event>`.
    Xml,
    /// `0xbf` varint(length) TakMessage.
    ProtoStream,
    /// `0xbf 0x01 0xbf` TakMessage (with an empty TakControl, as ATAK sends).
    ProtoMesh,
}

impl WireFormat {
    /// Appends `ev` in this format to `out`.
    pub fn encode_into(self, ev: &CotEvent, out: &mut Vec<u8>) {
        match self {
            WireFormat::Xml => xml::encode_into(ev, out),
            WireFormat::ProtoStream => stream::encode_proto_frame(ev, out),
            WireFormat::ProtoMesh => mesh::encode_into(ev, out),
        }
    }
}

/// Decodes the event in one stream frame. `Ok(None)` for frames that carry no event
/// (an `<auth>` document, a protobuf message with only TakControl).
pub fn decode_frame(frame: &Frame) -> Result<Option<CotEvent>, CodecError> {
    match frame {
        Frame::Xml(b) => xml::decode(b).map(Some),
        Frame::Proto(b) => proto::decode_message(b).map(|m| m.event),
        Frame::Auth(_) => Ok(None),
    }
}
