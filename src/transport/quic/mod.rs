//! QUIC stream links (`transport = "quic"`): ATAK 5.5 clients that connect with
//! `host:port:quic` (`mode = "listen"`), or a TAK Server QUIC input or another takgate we
//! connect to (`mode = "connect"`). On the one stream of each connection runs the same
//! [`crate::transport::stream`] session as on TLS (negotiation, pings, the latest picture,
//! queues, overflow and write timeout); [`crate::link::quic`] holds the QUIC rules.
//!
//! Accepting: each incoming connection is admitted under the listener's limits
//! (connections, per source address, handshakes in progress; per certificate after the
//! handshake) or refused at once; the handshake (bounded by the link's
//! `handshake_timeout_secs`) and the wait for the client's stream (it writes first) run in
//! the connection's own task, never in the accept loop.

pub mod probe;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::link::{secs_or, QuicOpts, TlsFiles};
use crate::config::{LinkConfig, Role, StreamLink};
use crate::link::connect::{Connector, Dial};
use crate::link::listen::{Conn, Handler, Limits, Listener};
use crate::link::quic::{self, QuicDialer, QuicIo, QuicSettings};
use crate::link::{tls, Backoff, ConnStatus, LinkCtx, LinkStatus, StartError};
use crate::transport::stream::{handler, StreamSettings};

/// The QUIC settings a link asks for.
pub fn quic_settings(q: &QuicOpts, connect: bool) -> QuicSettings {
    QuicSettings {
        idle_timeout: secs_or(q.quic_idle_timeout_secs, quic::DEFAULT_IDLE_TIMEOUT.as_secs_f64()),
        keep_alive: q.quic_keep_alive_secs.map(|s| s.duration()).or(connect.then_some(quic::DEFAULT_KEEP_ALIVE)),
        stream_window: q.quic_stream_window_bytes.map(|c| c.0 as u64).unwrap_or(quic::DEFAULT_STREAM_WINDOW),
    }
}

/// Starts a quic link.
pub async fn start(l: &LinkConfig, s: &StreamLink, q: &QuicOpts, ctx: &LinkCtx) -> Result<LinkStatus, StartError> {
    let err = |e: String| StartError::new(&l.name, e);
    let settings = Arc::new(StreamSettings::new(l, s, ctx, "quic").map_err(err)?);
    let counters = settings.counters.clone();
    let run = handler(settings, ctx.router.clone());
    let files = s.tls.clone().unwrap_or_default();
    let handshake_timeout = tls::handshake_timeout(&files);
    let mut status = LinkStatus { name: l.name.clone(), transport: l.transport(), mode: l.mode(), address: l.address(), local_addr: None, counters: counters.clone(), connection: None };
    match &s.role {
        Role::Listen { address, limits, tls } => {
            let qs = quic_settings(q, false);
            let server = quic::server_config(&files, &qs).map_err(err)?;
            let endpoint = quic::bind_listener(*address, server).await.map_err(|e| err(format!("cannot listen on udp {address}: {e}")))?;
            let local = endpoint.local_addr().map_err(|e| err(e.to_string()))?;
            let limits = Arc::new(Limits::for_listener(limits, Some(tls), &l.name));
            let listener = Listener { link: l.name.clone(), counters, limits, accept: crate::link::listen::Accept::Plain };
            let accept = AcceptCfg { handshake_timeout, stream_timeout: qs.idle_timeout };
            ctx.tracker.spawn(serve(endpoint, listener, run, accept, ctx.cancel.clone(), ctx.tracker.clone()));
            status.local_addr = Some(local);
            tracing::info!(link = %l.name, transport = "quic", address = %local, alpn = "takstream", idle_timeout_s = qs.idle_timeout.as_secs_f64(), "listening");
        }
        Role::Connect { address, reconnect, tls: tc } => {
            let qs = quic_settings(q, true);
            let config = client(&files, &qs).map_err(err)?;
            let dialer = QuicDialer { config, server_name: tls::server_name(address, tc), handshake_timeout };
            let conn = Arc::new(ConnStatus::default());
            status.connection = Some(conn.clone());
            let c = Connector { link: l.name.clone(), address: address.clone(), dial: Dial::Custom(Arc::new(dialer)), backoff: Backoff::from_config(reconnect, 1.0, 60.0), status: conn };
            ctx.tracker.spawn(crate::link::connect::run(c, run, ctx.cancel.clone()));
            tracing::info!(link = %l.name, transport = "quic", %address, "connecting");
        }
    }
    Ok(status)
}

fn client(f: &TlsFiles, qs: &QuicSettings) -> Result<quinn::ClientConfig, String> {
    let ca = f.ca.as_deref().ok_or("a quic connection needs ca")?;
    quic::client_config(ca, f.cert.as_deref().zip(f.key.as_deref()), &f.crl, qs)
}

#[derive(Clone, Copy)]
struct AcceptCfg {
    handshake_timeout: Duration,
    /// How long a connected client may take to open its stream (its first bytes).
    stream_timeout: Duration,
}

/// Accepts connections until `cancel`, then closes the endpoint.
async fn serve(endpoint: quinn::Endpoint, l: Listener, run: Arc<dyn Handler>, a: AcceptCfg, cancel: CancellationToken, tracker: TaskTracker) {
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let remote = incoming.remote_address();
        let slot = match l.limits.admit(remote.ip()) {
            Ok(s) => s,
            Err(why) => {
                incoming.refuse();
                l.refuse(&remote.to_string(), &why);
                continue;
            }
        };
        let permit = match &l.limits.handshakes {
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    incoming.refuse();
                    l.refuse(&remote.to_string(), &"too many QUIC handshakes in progress (max_tls_handshakes)");
                    continue;
                }
            },
            None => None,
        };
        let (l, run, cancel) = (l.clone(), run.clone(), cancel.clone());
        tracker.spawn(async move {
            let _slot = slot;
            let Some(conn) = handshake(&l, incoming, remote, a.handshake_timeout, &cancel).await else { return };
            drop(permit);
            connection(&l, conn, remote, run, a.stream_timeout, cancel).await;
        });
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"link stopped");
}

/// The QUIC and TLS handshake of one incoming connection; None when it failed (logged and
/// counted, with why in words).
async fn handshake(l: &Listener, incoming: quinn::Incoming, remote: SocketAddr, timeout: Duration, cancel: &CancellationToken) -> Option<quinn::Connection> {
    let remote_s = remote.to_string();
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            l.failed(&remote_s, &format!("QUIC handshake failed: {}", quic::explain(&e, true)));
            return None;
        }
    };
    let r = tokio::select! {
        _ = cancel.cancelled() => return None,
        r = tokio::time::timeout(timeout, connecting) => r,
    };
    match r {
        Ok(Ok(c)) if quic::alpn(&c).as_deref() == Some(quic::ALPN) => Some(c),
        Ok(Ok(c)) => {
            c.close(quinn::VarInt::from_u32(0x178), b"no_application_protocol");
            l.failed(&remote_s, &"QUIC handshake failed: the client agreed on no application protocol; TAK's QUIC speaks only ALPN \"takstream\"");
            None
        }
        Ok(Err(e)) => {
            l.failed(&remote_s, &format!("QUIC handshake failed: {}", quic::explain(&e, true)));
            None
        }
        Err(_) => {
            l.failed(&remote_s, &"QUIC handshake timed out");
            None
        }
    }
}

/// One authenticated connection: the per-certificate limit, the client's stream (it
/// writes first), then the stream session; the connection closes when the session ends.
async fn connection(l: &Listener, conn: quinn::Connection, remote: SocketAddr, run: Arc<dyn Handler>, stream_timeout: Duration, cancel: CancellationToken) {
    let remote_s = remote.to_string();
    let identity = quic::identity(&conn);
    tracing::debug!(link = %l.link, remote = %remote_s, identity = ?identity, "QUIC handshake done");
    let _id_slot = match identity.as_ref().map(|i| l.limits.admit_identity(i)).transpose() {
        Ok(s) => s.flatten(),
        Err(why) => {
            conn.close(quinn::VarInt::from_u32(1), b"connection limit (max_connections_per_identity)");
            return l.refuse(&remote_s, &why);
        }
    };
    let r = tokio::select! {
        _ = cancel.cancelled() => return,
        r = tokio::time::timeout(stream_timeout, conn.accept_bi()) => r,
    };
    let (send, recv) = match r {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(link = %l.link, remote = %remote_s, "QUIC connection ended before its stream: {e}");
            return;
        }
        Err(_) => {
            conn.close(quinn::VarInt::from_u32(0), b"no stream");
            l.failed(&remote_s, &format!("the QUIC client opened no stream within {} s", stream_timeout.as_secs()));
            return;
        }
    };
    run.run(Conn { io: Box::new(QuicIo::new(conn, send, recv)), remote: remote_s, identity, cancel }).await;
}
