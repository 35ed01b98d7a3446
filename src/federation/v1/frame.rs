//! Federation v1 framing: each frame is a 4-byte big-endian length N followed by N bytes of
//! a serialized `FederatedEvent`. Nothing else travels on the socket.

use bytes::{Buf, BytesMut};
use prost::Message as _;

use crate::federation::fig::FederatedEvent;

pub use crate::federation::shared::DEFAULT_MAX_FRAME;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    #[error("v1 frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("v1 frame is not a FederatedEvent: {0}")]
    Decode(String),
}

/// Appends one frame for `ev`.
pub fn encode(ev: &FederatedEvent, out: &mut Vec<u8>) {
    let len = ev.encoded_len();
    out.reserve(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    let _ = ev.encode(out);
}

/// Incremental decoder: push bytes, take whole frames. A frame that cannot be decoded is
/// an error after which the connection should be closed (as TAK Server does): the stream
/// has no resynchronisation point.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    max: usize,
}

impl Decoder {
    pub fn new(max: usize) -> Decoder {
        Decoder { buf: BytesMut::new(), max }
    }
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The buffer to read into, with room for the next read: it grows with the bytes that
    /// arrived (amortised), never with the length a frame header only claims.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve((16 * 1024).max(self.buf.len()));
        }
        &mut self.buf
    }
    pub fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    pub fn next_frame(&mut self) -> Option<Result<FederatedEvent, FrameError>> {
        if self.buf.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max {
            return Some(Err(FrameError::TooLarge { len, max: self.max }));
        }
        if self.buf.len() < 4 + len {
            return None;
        }
        self.buf.advance(4);
        let frame = self.buf.split_to(len);
        Some(FederatedEvent::decode(&frame[..]).map_err(|e| FrameError::Decode(e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::fig::{ContactListEntry, Crud, GeoEvent};

    #[test]
    fn frames_survive_any_split() {
        let a = FederatedEvent { event: Some(GeoEvent { uid: "a".into(), r#type: "a-f-G".into(), ..Default::default() }), ..Default::default() };
        let b = FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Create as i32, uid: "u".into(), callsign: "C".into(), ..Default::default() }), federate_groups: vec!["g".into()], ..Default::default() };
        let empty = FederatedEvent::default();
        let mut wire = Vec::new();
        for e in [&a, &b, &empty] {
            encode(e, &mut wire);
        }
        for chunk in 1..wire.len() {
            let mut d = Decoder::new(1024);
            let mut got = vec![];
            for c in wire.chunks(chunk) {
                d.push(c);
                while let Some(f) = d.next_frame() {
                    got.push(f.unwrap());
                }
            }
            assert_eq!(got, vec![a.clone(), b.clone(), empty.clone()]);
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut d = Decoder::new(10);
        d.push(&[0, 0, 1, 0]);
        assert_eq!(d.next_frame(), Some(Err(FrameError::TooLarge { len: 256, max: 10 })));
        let mut d = Decoder::new(10);
        d.push(&[0, 0, 0, 2, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Some(Err(FrameError::Decode(_)))));
    }
}
