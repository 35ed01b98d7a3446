//! Who and what is on the other end of a link: the byte stream a connection runs on, the
//! certificate identity of a TLS peer, and the codec its wire carries. The router keeps
//! these per peer, so this file depends on nothing else of the crate.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use serde::Serialize;

/// A connected byte stream (plain TCP, TLS, a QUIC stream).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Identity of a TLS peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerIdentity {
    /// Subject common name.
    pub cn: String,
    /// SHA-256 of the DER certificate, upper-case hex pairs joined by ':'.
    pub fingerprint: String,
    /// Issuer common name.
    pub issuer_cn: String,
    /// How many certificates the peer presented (TAK needs its leaf and issuer).
    #[serde(skip)]
    pub chain_len: usize,
    /// The CA certificates the peer presented after its leaf (DER): a Federation Hub names
    /// a federate's CA groups from them.
    #[serde(skip)]
    pub issuers: Vec<Vec<u8>>,
}

impl PeerIdentity {
    /// The federate name TAK Server gives a new federate: `CN:issuer CN`.
    pub fn federate_name(&self) -> String {
        format!("{}:{}", self.cn, self.issuer_cn)
    }
}

/// What a peer's wire carries now (streams switch when TAK protocol v1 is negotiated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[repr(u8)]
pub enum Codec {
    #[default]
    Xml = 0,
    Protobuf = 1,
    ProtobufMesh = 2,
    FigV1 = 3,
    FigGrpc = 4,
    AmqpXml = 5,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Xml => "xml",
            Codec::Protobuf => "protobuf",
            Codec::ProtobufMesh => "protobuf-mesh",
            Codec::FigV1 => "fig-v1 (FederatedEvent frames)",
            Codec::FigGrpc => "fig-v2 (gRPC)",
            Codec::AmqpXml => "xml (amqp)",
        }
    }

    fn from_u8(v: u8) -> Codec {
        [Codec::Xml, Codec::Protobuf, Codec::ProtobufMesh, Codec::FigV1, Codec::FigGrpc, Codec::AmqpXml].get(v as usize).copied().unwrap_or_default()
    }
}

/// A peer's current codec: written by its writer, read for statistics.
#[derive(Debug, Default)]
pub struct CodecCell(AtomicU8);

impl CodecCell {
    pub fn new(c: Codec) -> Arc<CodecCell> {
        Arc::new(CodecCell(AtomicU8::new(c as u8)))
    }
    pub fn get(&self) -> Codec {
        Codec::from_u8(self.0.load(Relaxed))
    }
    pub fn set(&self, c: Codec) {
        self.0.store(c as u8, Relaxed);
    }
}
