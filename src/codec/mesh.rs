//! Mesh datagrams: one event per datagram, CoT XML or `0xbf <varint version=1> 0xbf`
//! followed by a TakMessage. A datagram framed as a stream frame instead (`0xbf <varint
//! length>` and exactly that many bytes, as pytak sends unicast protobuf) is read too.

use crate::cot::{pb, proto, xml, CotEvent};
use crate::error::CodecError;

use super::stream::read_varint;

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq)]
pub struct Datagram {
    pub event: Option<CotEvent>,
    /// TakControl, when the sender announced its protocol versions.
    pub control: Option<pb::TakControl>,
    pub protobuf: bool,
}

/// Decodes one datagram, XML or mesh protobuf.
pub fn decode(d: &[u8]) -> Result<Datagram, CodecError> {
    if d.first() == Some(&0xbf) {
        let (version, n) = match read_varint(&d[1..]) {
            Ok(Some(v)) => v,
            _ => return Err(CodecError::BadMeshHeader),
        };
        if d.get(1 + n) != Some(&0xbf) {
            // A stream frame: the varint is the length of the rest.
            if version as usize == d.len() - 1 - n {
                let m = proto::decode_message(&d[1 + n..])?;
                return Ok(Datagram { event: m.event, control: m.control, protobuf: true });
            }
            return Err(CodecError::BadMeshHeader);
        }
        if version != 1 {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let m = proto::decode_message(&d[2 + n..])?;
        return Ok(Datagram { event: m.event, control: m.control, protobuf: true });
    }
    Ok(Datagram { event: Some(xml::decode(d)?), control: None, protobuf: false })
}

/// Appends the mesh protobuf encoding of `ev` (with an empty TakControl: versions 1..1).
pub fn encode_into(ev: &CotEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xbf, 0x01, 0xbf]);
    proto::encode_message_into(ev, Some(pb::TakControl::default()), out);
}
