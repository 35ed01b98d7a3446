//! QUIC as TAK Server and ATAK 5.5 speak it (../shared/specs/tak-quic.md): QUIC v1, TLS 1.3,
//! ALPN exactly `takstream`, a client certificate always, one client-initiated
//! bidirectional stream per connection, no unidirectional streams, no DATAGRAM frames, no
//! Retry. On the stream runs exactly the TLS stream protocol, so a QUIC connection becomes
//! an ordinary [`super::Io`] here ([`QuicIo`]) and the stream session runs on it unchanged.
//!
//! * [`QuicSettings`] and [`transport_config`]: idle timeout (TAK Server: 30 s), keep-alive,
//!   flow-control windows, stream limits;
//! * [`server_config`], [`client_config`], [`bind`]: quinn configurations from a link's PEM
//!   files (the same CA, CRLs and identity rules as TLS links);
//! * [`QuicIo`]: the stream as a byte stream, with TAK Server's end-of-session rules: a FIN
//!   from the peer does not end the session (reads then wait for the connection to close),
//!   a reset or a closed connection does, and when the session ends the connection closes;
//! * [`QuicDialer`]: the outgoing side for [`super::connect`];
//! * [`explain`]: why a handshake failed, in words for the operator's log.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connect::{Dialer, Dialled};
use super::peer::PeerIdentity;
use super::tls;

/// The one application protocol (9 bytes, as ATAK offers it).
pub const ALPN: &[u8] = b"takstream";
/// TAK Server's `quicConnectionTimeoutSeconds` default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an outgoing link sends a QUIC PING when nothing else is sent (within TAK
/// Server's 30 s idle timeout with room for a lost packet or two).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Per-stream receive window: what a peer may send ahead of our reading. ATAK grants 128
/// KiB; a gateway's stream carries a whole network's fan-out, so it grants 1 MiB.
pub const DEFAULT_STREAM_WINDOW: u64 = 1 << 20;
/// Bytes buffered toward one peer before writes wait (about a second of a busy fan-out).
pub const SEND_WINDOW: u64 = 512 << 10;
/// UDP socket buffers asked for (the kernel caps them at net.core.[rw]mem_max).
const SOCKET_BUFFER: usize = 4 << 20;

/// The QUIC side of a link.
#[derive(Debug, Clone, Copy)]
pub struct QuicSettings {
    pub idle_timeout: Duration,
    /// QUIC PINGs when otherwise idle (None: none, as TAK Server's input).
    pub keep_alive: Option<Duration>,
    pub stream_window: u64,
}

/// Which end we are: the client opens the stream, the server accepts one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
}

/// Transport parameters: as TAK Server advertises them (one bidirectional stream from the
/// client, no unidirectional ones, no datagrams), with windows sized for a gateway.
pub fn transport_config(s: &QuicSettings, side: Side) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(s.idle_timeout).unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000)));
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(s.keep_alive);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(if side == Side::Server { 1 } else { 0 }));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.datagram_receive_buffer_size(None);
    let window = quinn::VarInt::from_u64(s.stream_window).unwrap_or(quinn::VarInt::from_u32(1 << 20));
    t.stream_receive_window(window);
    // One stream per connection: the connection's window is the stream's, with room.
    t.receive_window(quinn::VarInt::from_u64(s.stream_window.saturating_mul(2)).unwrap_or(window));
    // What quinn buffers toward a peer before writes wait (then the peer's queue fills and
    // overflows, and a write stalled past the write timeout disconnects it, as on TCP). It is
    // memory per connection, like a TCP send buffer: not the receive window's multiple, or a
    // few hundred slow readers hold gigabytes.
    t.send_window(SEND_WINDOW);
    // Ask the peer to acknowledge every 8 packets (or within its ACK delay) instead of every
    // other one: the ACKs of a busy stream are as many packets as its data otherwise.
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(8));
    t.ack_frequency_config(Some(ack));
    t
}

fn quic_err(e: impl std::fmt::Display) -> String {
    format!("QUIC TLS configuration: {e}")
}

/// A QUIC listener's configuration: our chain, client certificates required and verified
/// against the link's CA and CRLs, ALPN `takstream`, QUIC v1 without Retry.
pub fn server_config(f: &crate::config::link::TlsFiles, s: &QuicSettings) -> Result<quinn::ServerConfig, String> {
    let tls = tls::server_for_quic(f, &[ALPN]).map_err(|e| e.to_string())?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(quic_err)?;
    let mut c = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    c.transport_config(Arc::new(transport_config(s, Side::Server)));
    Ok(c)
}

/// An outgoing QUIC connection's configuration: the server must chain to `ca`, we present
/// `cert` (a TAK Server QUIC input refuses clients without one).
pub fn client_config(ca: &std::path::Path, cert_key: Option<(&std::path::Path, &std::path::Path)>, crls: &[std::path::PathBuf], s: &QuicSettings) -> Result<quinn::ClientConfig, String> {
    let tls = tls::client_for_quic(ca, cert_key, crls, &[ALPN]).map_err(|e| e.to_string())?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(quic_err)?;
    let mut c = quinn::ClientConfig::new(Arc::new(crypto));
    c.transport_config(Arc::new(transport_config(s, Side::Client)));
    c.version(1);
    Ok(c)
}

/// A UDP socket for a QUIC endpoint on `addr` (IPv6 `[::]` serves IPv4 too), with large
/// buffers, run by quinn on tokio. QUIC v1 only.
pub fn bind(addr: SocketAddr, server: Option<quinn::ServerConfig>) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = sock.set_only_v6(false);
    }
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.bind(&addr.into())?;
    let mut ec = quinn::EndpointConfig::default();
    ec.supported_versions(vec![1]);
    quinn::Endpoint::new(ec, server, sock.into(), Arc::new(quinn::TokioRuntime))
}

/// The identity of the certificate the peer presented.
pub fn identity(conn: &quinn::Connection) -> Option<PeerIdentity> {
    let certs = conn.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    tls::identity(Some(&certs))
}

/// The application protocol the handshake agreed on.
pub fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

/// Why a QUIC handshake failed, in words for the operator (`client`: the peer is a client
/// of ours).
pub fn explain(e: &quinn::ConnectionError, client: bool) -> String {
    let who = if client { "client" } else { "server" };
    let (code, reason, by_peer) = match e {
        quinn::ConnectionError::TransportError(t) => (u64::from(t.code), t.reason.clone(), false),
        quinn::ConnectionError::ConnectionClosed(c) => (u64::from(c.error_code), String::from_utf8_lossy(&c.reason).into_owned(), true),
        quinn::ConnectionError::TimedOut => return format!("no answer from the {who} (QUIC handshake timed out): is it a QUIC port, is UDP let through?"),
        quinn::ConnectionError::VersionMismatch => return format!("the {who} does not speak QUIC v1"),
        other => return other.to_string(),
    };
    // TLS alerts travel as QUIC CRYPTO_ERROR 0x100 + alert (RFC 9001 §4.8).
    let what = match code.checked_sub(0x100) {
        Some(120) => format!("no common application protocol: TAK's QUIC speaks only ALPN {:?}", "takstream"),
        Some(116) => "no client certificate presented (a QUIC input requires one, as TAK Server's)".to_string(),
        Some(48) => format!("the {} certificate does not chain to the CA (unknown CA)", if client == by_peer { "server" } else { "client" }),
        Some(44) => format!("the {} certificate is revoked (by a CRL)", if client == by_peer { "server" } else { "client" }),
        Some(51) => format!("the {} certificate's signature does not verify against the CA (signed by another CA of the same name?)", if client == by_peer { "server" } else { "client" }),
        Some(45) => "certificate expired".to_string(),
        Some(42) => "bad certificate".to_string(),
        Some(40) => "handshake failure (no common cipher suite or key exchange)".to_string(),
        Some(a) if a < 256 => format!("TLS alert {a}"),
        _ => format!("QUIC error 0x{code:x}"),
    };
    let from = if by_peer { format!(", sent by the {who}") } else { String::new() };
    if reason.is_empty() {
        format!("{what}{from}")
    } else {
        format!("{what}{from} ({reason})")
    }
}

/// One QUIC connection's one stream as a byte stream. Dropping it closes the connection.
pub struct QuicIo {
    conn: quinn::Connection,
    recv: quinn::RecvStream,
    send: quinn::SendStream,
    /// The peer finished its side (FIN): reads wait for the connection to end.
    fin: bool,
    closed: Option<BoxFuture<'static, ()>>,
    stopped: Option<BoxFuture<'static, ()>>,
}

impl QuicIo {
    pub fn new(conn: quinn::Connection, send: quinn::SendStream, recv: quinn::RecvStream) -> QuicIo {
        QuicIo { conn, recv, send, fin: false, closed: None, stopped: None }
    }
}

impl Drop for QuicIo {
    fn drop(&mut self) {
        // One stream per connection: when the session ends the connection ends (TAK Server).
        self.conn.close(quinn::VarInt::from_u32(0), b"session ended");
    }
}

impl AsyncRead for QuicIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if !this.fin {
            let before = buf.filled().len();
            match Pin::new(&mut this.recv).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() == before => {
                    // A FIN is not a logout (TAK Server keeps the session and keeps writing).
                    this.fin = true;
                    tracing::debug!("QUIC peer finished its stream; the session stays until the connection closes");
                }
                other => return other,
            }
        }
        let conn = this.conn.clone();
        let closed = this.closed.get_or_insert_with(|| Box::pin(async move {
            conn.closed().await;
        }));
        closed.as_mut().poll(cx).map(|()| Ok(()))
    }
}

impl AsyncWrite for QuicIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().send).poll_write(cx, buf).map_err(std::io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_flush(cx)
    }

    /// Finishes our side and waits until the peer has everything (the caller bounds it):
    /// closing the connection at once would throw away what is still in flight.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.stopped.is_none() {
            let _ = this.send.finish();
            let stopped = this.send.stopped();
            this.stopped = Some(Box::pin(async move {
                let _ = stopped.await;
            }));
        }
        this.stopped.as_mut().map(|f| f.as_mut().poll(cx).map(Ok)).unwrap_or(Poll::Ready(Ok(())))
    }
}

/// Waits for the server's verdict on our certificate. In TLS 1.3 a client's handshake is
/// complete before the server has checked the client's certificate (and before the server
/// has our Finished at all, which a lossy link may keep from it for long): the server
/// confirms its own completion with a HANDSHAKE_DONE frame (RFC 9001 4.1.2), and one that
/// refuses the certificate closes the connection with the reason as a TLS alert. Until
/// `within` has passed.
pub async fn confirmed(conn: &quinn::Connection, within: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if conn.stats().frame_rx.handshake_done > 0 {
            return Ok(());
        }
        tokio::select! {
            e = conn.closed() => return Err(explain(&e, false)),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the server did not confirm the handshake (HANDSHAKE_DONE) within {:?}", within));
        }
    }
}

/// Binds a QUIC listener, retrying for a few seconds while the port is still held by an
/// endpoint of the same link that is closing (a link removed and added again at once).
pub async fn bind_listener(addr: SocketAddr, server: quinn::ServerConfig) -> std::io::Result<quinn::Endpoint> {
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match bind(addr, Some(server.clone())) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 && tokio::time::Instant::now() < end => tokio::time::sleep(Duration::from_millis(100)).await,
            r => return r,
        }
    }
}

/// Connects to a QUIC stream input (TAK Server's, or a takgate's): handshake with our
/// certificate, ALPN checked, one bidirectional stream opened. The session writes first.
pub struct QuicDialer {
    pub config: quinn::ClientConfig,
    pub server_name: String,
    pub handshake_timeout: Duration,
}

impl QuicDialer {
    /// One connection: (connection, send, receive, remote address).
    pub async fn connect(&self, address: &str) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream, SocketAddr), String> {
        let addr = tokio::net::lookup_host(address).await.map_err(|e| format!("{address}: {e}"))?.next().ok_or_else(|| format!("{address}: resolves to nothing"))?;
        // A fresh UDP port per connection, as a device that reconnects has.
        let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        let endpoint = bind(local, None).map_err(|e| format!("cannot bind a UDP socket: {e}"))?;
        let connecting = endpoint.connect_with(self.config.clone(), addr, &self.server_name).map_err(|e| format!("QUIC connect to {addr}: {e}"))?;
        let conn = match tokio::time::timeout(self.handshake_timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(format!("QUIC handshake with {addr} failed: {}", explain(&e, false))),
            Err(_) => return Err(format!("QUIC handshake with {addr} timed out after {:?}: is it a QUIC port, is UDP let through?", self.handshake_timeout)),
        };
        if alpn(&conn).as_deref() != Some(ALPN) {
            conn.close(quinn::VarInt::from_u32(0), b"no takstream");
            return Err(format!("{addr} did not agree on ALPN \"takstream\": not a TAK QUIC stream input"));
        }
        if let Err(e) = confirmed(&conn, self.handshake_timeout).await {
            conn.close(quinn::VarInt::from_u32(0), b"handshake not confirmed");
            return Err(format!("QUIC handshake with {addr} failed: {e}"));
        }
        let (send, recv) = match tokio::time::timeout(self.handshake_timeout, conn.open_bi()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("QUIC stream to {addr}: {e}")),
            Err(_) => return Err(format!("{addr} grants no bidirectional stream")),
        };
        Ok((conn, send, recv, addr))
    }
}

impl Dialer for QuicDialer {
    fn dial<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Result<Dialled, String>> {
        Box::pin(async move {
            let (conn, send, recv, addr) = self.connect(address).await?;
            let identity = identity(&conn);
            Ok(Dialled { io: Box::new(QuicIo::new(conn, send, recv)), remote: addr.to_string(), identity })
        })
    }
}
