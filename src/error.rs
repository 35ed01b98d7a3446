//! Error types. Every error from network bytes is a value that says what went wrong and
//! where; none of them is a panic.

use thiserror::Error;

/// Why one event could not be decoded. `offset` fields are byte offsets inside the event.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CodecError {
    #[error("invalid UTF-8 at byte {offset}")]
    Utf8 { offset: usize },
    #[error("malformed XML at byte {offset}: {message}")]
    Xml { offset: usize, message: String },
    #[error("DOCTYPE or entity declaration rejected (never expanded)")]
    Doctype,
    #[error("no <event> element")]
    NoEvent,
    #[error("event ends before </event> (truncated)")]
    Truncated,
    #[error("content after </event> at byte {offset}")]
    TrailingContent { offset: usize },
    #[error("missing required attribute {0}")]
    MissingAttr(&'static str),
    #[error("bad value for {name}: {value:?}")]
    BadValue { name: &'static str, value: String },
    #[error("event has no <point>")]
    MissingPoint,
    #[error("protobuf decode failed: {0}")]
    Proto(String),
    #[error("TAK message carries no event")]
    NoCotEvent,
    #[error("xmlDetail is not well-formed XML: {0}")]
    BadXmlDetail(String),
    #[error("unsupported TAK protocol version {0} in mesh header")]
    UnsupportedVersion(u64),
    #[error("bad mesh header")]
    BadMeshHeader,
}

/// Why the stream framer skipped bytes. `offset` is the position in the stream.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("event too large at stream offset {offset}: {len} bytes or more (max {max}); skipped to the next event")]
    Oversized { offset: u64, len: usize, max: usize },
    #[error("{skipped} bytes of garbage at stream offset {offset} (not XML, not a 0xbf frame); resynchronised")]
    Garbage { offset: u64, skipped: usize },
    #[error("bad protobuf length varint at stream offset {offset}")]
    BadVarint { offset: u64 },
}
