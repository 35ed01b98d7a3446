//! Incremental stream framing. Bytes go in in arbitrary chunks; whole frames come out.
//! Splitting is done on bytes, never on decoded text, so a UTF-8 character cut in two by
//! the network survives. Memory is bounded by the maximum event size; an oversized or
//! garbled frame yields a [`FrameError`] and the decoder resynchronises on the next event.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

use crate::cot::{proto, CotEvent};
use crate::error::FrameError;

/// One frame cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `<event …>…</event>` (the XML declaration before it is consumed by the framer).
    Xml(Bytes),
    /// A TakMessage payload (after the `0xbf` varint header).
    Proto(Bytes),
    /// An `<auth>` document (TAK Server's login message), which carries no event.
    Auth(Bytes),
}

const END_EVENT: &[u8] = b"</event>";
/// How much room a read gets at least (and how much an idle connection holds).
const READ_CHUNK: usize = 8 * 1024;
const END_AUTH: &[u8] = b"</auth>";

/// Reads a protobuf varint at the start of `b`: `Ok(None)` when more bytes are needed.
pub fn read_varint(b: &[u8]) -> Result<Option<(u64, usize)>, ()> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    if b.len() >= 10 {
        Err(())
    } else {
        Ok(None)
    }
}

pub fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `0xbf` varint(len) TakMessage for `ev` (event only, as commo sends on streams).
pub fn encode_proto_frame(ev: &CotEvent, out: &mut Vec<u8>) {
    let mut payload = Vec::with_capacity(256);
    proto::encode_message_into(ev, None, &mut payload);
    out.push(0xbf);
    write_varint(payload.len() as u64, out);
    out.extend_from_slice(&payload);
}

#[derive(Debug)]
enum State {
    /// Looking for the start of the next frame.
    Ready,
    /// Skipping an oversized XML document up to and including its end (`</event>`,
    /// `</auth>` or `-->`).
    Discarding(&'static [u8]),
}

/// The incremental stream decoder.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: BytesMut,
    max: usize,
    /// Where to resume the search for an end tag (avoids rescanning).
    scan_from: usize,
    /// Stream offset of `buf[0]`.
    offset: u64,
    state: State,
}

impl StreamDecoder {
    pub fn new(max_event: usize) -> Self {
        StreamDecoder { buf: BytesMut::new(), max: max_event.max(64), scan_from: 0, offset: 0, state: State::Ready }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The buffer to read into directly (e.g. with `AsyncReadExt::read_buf`).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The buffer to read into, with room for the next read. It grows with the bytes that
    /// arrived (amortised), never with a length a frame header only claims.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK.max(self.buf.len()));
        }
        &mut self.buf
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn advance(&mut self, n: usize) {
        self.buf.advance(n);
        self.offset += n as u64;
        self.scan_from = 0;
    }

    fn take(&mut self, n: usize) -> Bytes {
        self.offset += n as u64;
        self.scan_from = 0;
        self.buf.split_to(n).freeze()
    }

    /// The next complete frame, an error for bytes that were skipped, or `None` when more
    /// input is needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        loop {
            if let State::Discarding(end) = self.state {
                match memmem::find(&self.buf[self.scan_from..], end) {
                    Some(i) => {
                        let n = self.scan_from + i + end.len();
                        self.advance(n);
                        self.state = State::Ready;
                    }
                    None => {
                        let keep = end.len() - 1;
                        if self.buf.len() > keep {
                            let n = self.buf.len() - keep;
                            self.advance(n);
                        }
                        return None;
                    }
                }
            }
            // Whitespace between events, stray NULs (goatak adds one after each protobuf
            // frame) and BOMs carry nothing.
            let skip = self.buf.iter().position(|&b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0)).unwrap_or(self.buf.len());
            if skip > 0 {
                self.advance(skip);
            }
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.advance(3);
                continue;
            }
            let first = *self.buf.first()?;
            match first {
                0xbf => return self.proto_frame(),
                b'<' => {
                    if self.buf.len() < 5 {
                        return None;
                    }
                    if self.buf.starts_with(b"<?") {
                        match memmem::find(&self.buf, b"?>") {
                            Some(i) => {
                                self.advance(i + 2);
                                continue;
                            }
                            None if self.buf.len() > 1024 => return Some(Err(self.garbage_until_next())),
                            None => return None,
                        }
                    }
                    if self.buf.starts_with(b"<!--") {
                        match memmem::find(&self.buf, b"-->") {
                            Some(i) => {
                                self.advance(i + 3);
                                continue;
                            }
                            None => return self.need_more_or_oversize(b"-->"),
                        }
                    }
                    let end_tag = if self.buf.starts_with(b"<auth") { END_AUTH } else { END_EVENT };
                    let from = self.scan_from;
                    match memmem::find(&self.buf[from..], end_tag) {
                        Some(i) => {
                            let bytes = self.take(from + i + end_tag.len());
                            return Some(Ok(if end_tag == END_AUTH { Frame::Auth(bytes) } else { Frame::Xml(bytes) }));
                        }
                        None => {
                            if end_tag == END_AUTH {
                                if let Some(i) = memmem::find(&self.buf, b"/>") {
                                    if self.buf[..i].iter().filter(|&&b| b == b'<').count() == 1 {
                                        let bytes = self.take(i + 2);
                                        return Some(Ok(Frame::Auth(bytes)));
                                    }
                                }
                            }
                            self.scan_from = self.buf.len().saturating_sub(end_tag.len() - 1);
                            return self.need_more_or_oversize(if end_tag == END_AUTH { END_AUTH } else { END_EVENT });
                        }
                    }
                }
                _ => return Some(Err(self.garbage_until_next())),
            }
        }
    }

    fn need_more_or_oversize(&mut self, end: &'static [u8]) -> Option<Result<Frame, FrameError>> {
        if self.buf.len() <= self.max {
            return None;
        }
        let err = FrameError::Oversized { offset: self.offset, len: self.buf.len(), max: self.max };
        // Keep the tail: the end tag may be cut across this read and the next.
        self.scan_from = 0;
        let keep = end.len() - 1;
        let n = self.buf.len() - keep;
        self.advance(n);
        self.state = State::Discarding(end);
        Some(Err(err))
    }

    /// Skips the byte at the front and everything up to the next possible frame start.
    fn garbage_until_next(&mut self) -> FrameError {
        let offset = self.offset;
        let skipped = 1 + memchr::memchr2(b'<', 0xbf, &self.buf[1..]).unwrap_or(self.buf.len() - 1);
        self.advance(skipped);
        FrameError::Garbage { offset, skipped }
    }

    fn proto_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        let (len, hdr) = match read_varint(&self.buf[1..]) {
            Ok(Some((len, n))) => (len, 1 + n),
            Ok(None) => return None,
            Err(()) => {
                let offset = self.offset;
                self.garbage_until_next();
                return Some(Err(FrameError::BadVarint { offset }));
            }
        };
        if len > self.max as u64 {
            let err = FrameError::Oversized { offset: self.offset, len: len.min(usize::MAX as u64) as usize, max: self.max };
            // The length may be garbage: rescan from the next byte rather than trust it.
            self.garbage_until_next();
            return Some(Err(err));
        }
        let total = hdr + len as usize;
        if self.buf.len() < total {
            // Wait for the bytes; the buffer grows as they come (see `read_buffer`).
            return None;
        }
        self.advance(hdr);
        let payload = self.take(len as usize);
        Some(Ok(Frame::Proto(payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(dec: &mut StreamDecoder) -> Vec<Result<Frame, FrameError>> {
        std::iter::from_fn(|| dec.next_frame()).collect()
    }

    #[test]
    fn splits_xml_with_declarations_and_noise() {
        let mut d = StreamDecoder::new(1 << 20);
        d.push(b"\xEF\xBB\xBF<?xml version='1.0' encoding='utf-16'?>\n<event a='1'>x</event>\n\n<?xml version=\"1.0\"?><event>\xD0");
        let f = frames(&mut d);
        assert_eq!(f, vec![Ok(Frame::Xml(Bytes::from_static(b"<event a='1'>x</event>")))]);
        d.push(b"\x91</event>");
        assert_eq!(frames(&mut d), vec![Ok(Frame::Xml(Bytes::from_static("<event>Б</event>".as_bytes())))]);
    }

    #[test]
    fn auth_documents_are_their_own_frames() {
        let mut d = StreamDecoder::new(1 << 20);
        d.push(b"<?xml version=\"1.0\"?>\n<auth><cot username=\"a\" password=\"b\" uid=\"c\"/></auth><event/></event>");
        let f = frames(&mut d);
        assert!(matches!(&f[0], Ok(Frame::Auth(_))));
        assert!(matches!(&f[1], Ok(Frame::Xml(_))));
    }

    #[test]
    fn oversized_xml_is_skipped_and_decoder_resyncs() {
        let mut d = StreamDecoder::new(100);
        d.push(b"<event>");
        d.push(&[b'a'; 300]);
        assert!(matches!(d.next_frame(), Some(Err(FrameError::Oversized { offset: 0, .. }))));
        d.push(b"</eve");
        assert!(d.next_frame().is_none());
        d.push(b"nt><event>ok</event>");
        assert_eq!(frames(&mut d), vec![Ok(Frame::Xml(Bytes::from_static(b"<event>ok</event>")))]);
    }

    #[test]
    fn an_oversized_comment_does_not_swallow_the_next_event() {
        let mut d = StreamDecoder::new(100);
        d.push(b"<!--");
        d.push(&[b'c'; 300]);
        assert!(matches!(d.next_frame(), Some(Err(FrameError::Oversized { .. }))));
        d.push(b"--><event>ok</event>");
        assert_eq!(frames(&mut d), vec![Ok(Frame::Xml(Bytes::from_static(b"<event>ok</event>")))]);
    }

    #[test]
    fn proto_frames_garbage_and_oversize() {
        let mut d = StreamDecoder::new(100);
        d.push(&[0xbf, 3, 1, 2, 3, 0x00, b'z', b'z', 0xbf, 0xff, 0x01]);
        let f = frames(&mut d);
        assert_eq!(f[0], Ok(Frame::Proto(Bytes::from_static(&[1, 2, 3]))));
        assert_eq!(f[1], Err(FrameError::Garbage { offset: 6, skipped: 2 }));
        assert!(matches!(f[2], Err(FrameError::Oversized { len: 255, .. })));
        assert_eq!(d.buffered(), 0);
        d.push(&[0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Some(Err(FrameError::BadVarint { .. }))));
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, 65_535, u32::MAX as u64, u64::MAX >> 1] {
            let mut b = vec![];
            write_varint(v, &mut b);
            assert_eq!(read_varint(&b), Ok(Some((v, b.len()))));
            assert_eq!(read_varint(&b[..b.len() - 1]), Ok(None));
        }
    }
}
