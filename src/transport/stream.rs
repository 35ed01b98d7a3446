//! TCP and TLS stream links: TAK clients that connect to us (`mode = "listen"`), or a TAK
//! server or another gateway we connect to (`mode = "connect"`). Each connection runs a
//! [`StreamSession`] (negotiation, keepalive, settling) around two halves in one task:
//!
//! * reading: bytes -> [`StreamDecoder`] -> events; control events go to the session,
//!   everything else is ingested into the router (waiting while it is saturated, so TCP
//!   pushes back on the sender), under the connection's read rate limits;
//! * writing: what the session has to send first, then the peer's bounded queue, coalesced
//!   into one write and encoded once per format for everyone; and once, when the session has
//!   settled, the latest picture (a new client sees everyone at once), without what went out
//!   live meanwhile. A write that stalls past the write timeout disconnects the peer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep_until, Instant};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use crate::codec::{decode_frame, StreamDecoder, WireFormat, DEFAULT_MAX_EVENT};
use crate::config::link::{secs_or, StreamOpts};
use crate::config::{LinkConfig, Overflow, Role, SendFormat, StreamLink};
use crate::link::connect::{Connector, Dial};
use crate::link::ingest::{ingest, Origin};
use crate::link::latency::DELIVERY_LATENCY;
use crate::link::listen::{Accept, Conn, Handler, Limits};
use crate::link::rate::{ReadRate, ReadRateLimits};
use crate::link::write::{coalesce, write_timed, Stop};
use crate::link::{log_bad_input, tls, Backoff, Codec, CodecCell, ConnStatus, LinkCounters, LinkCtx, LinkStatus, StartError};
use crate::router::{Message, PeerInfo, PeerPolicy, RouterHandle};
use crate::session::stream::{self, StreamConfig, StreamSession};
use crate::sync::lock;


/// Settings shared by every connection of one configured stream link.
#[derive(Debug)]
pub struct StreamSettings {
    pub link: String,
    pub transport: &'static str,
    pub session: StreamConfig,
    pub max_event: usize,
    pub queue_depth: usize,
    pub overflow: Overflow,
    pub policy: Arc<PeerPolicy>,
    pub counters: Arc<LinkCounters>,
    pub drain_timeout: Duration,
    pub read_rate: ReadRateLimits,
    /// A write that takes longer closes the connection (a peer that stopped reading).
    pub write_timeout: Duration,
    /// Listeners: send a new client the latest position report of every contact.
    pub send_latest_sa: bool,
}

impl StreamSettings {
    pub fn new(l: &LinkConfig, s: &StreamLink, ctx: &LinkCtx, transport: &'static str) -> Result<StreamSettings, String> {
        let connect = s.role.is_connect();
        let StreamOpts { format, negotiate, idle_timeout_secs, send_latest_sa } = s.stream;
        let session = StreamConfig {
            role: if connect { stream::Role::Client } else { stream::Role::Server },
            negotiate: negotiate.unwrap_or(true),
            protobuf_only: format == Some(SendFormat::Protobuf),
            idle_timeout: secs_or(idle_timeout_secs, if connect { 25.0 } else { 120.0 }),
            node_id: ctx.router.node_id.to_string(),
            // A QUIC input hears of the stream only when the client writes (TAK Server, ATAK).
            ping_first: connect && transport == "quic",
        };
        Ok(StreamSettings {
            link: l.name.clone(),
            transport,
            session,
            max_event: s.events.max_event_bytes.map(|c| c.0).unwrap_or(DEFAULT_MAX_EVENT),
            queue_depth: l.queue_depth.unwrap_or(ctx.queue_depth),
            overflow: l.overflow,
            policy: Arc::new(PeerPolicy::new(&l.policy, connect)?),
            counters: Arc::default(),
            drain_timeout: ctx.drain,
            read_rate: ReadRateLimits::of(&s.conn),
            write_timeout: crate::link::rate::write_timeout(&s.conn),
            send_latest_sa: !connect && send_latest_sa.unwrap_or(true),
        })
    }
}

/// Starts a tcp or tls link.
pub async fn start(l: &LinkConfig, s: &StreamLink, ctx: &LinkCtx) -> Result<LinkStatus, StartError> {
    let tls_files = s.tls.as_ref();
    let transport = if tls_files.is_some() { "tls" } else { "tcp" };
    let settings = Arc::new(StreamSettings::new(l, s, ctx, transport).map_err(|e| StartError::new(&l.name, e))?);
    let counters = settings.counters.clone();
    let handler: Arc<dyn Handler> = Arc::new(StreamHandler { s: settings, router: ctx.router.clone() });
    let mut status = LinkStatus { name: l.name.clone(), transport: l.transport(), mode: l.mode(), address: l.address(), local_addr: None, counters: counters.clone(), connection: None };
    match &s.role {
        Role::Listen { address, limits, tls } => {
            let accept = match tls_files {
                Some(f) => Accept::Tls { acceptor: TlsAcceptor::from(Arc::new(tls::server_for(f, tls, &[]).map_err(|e| StartError::new(&l.name, e))?)), handshake_timeout: tls::handshake_timeout(f) },
                None => Accept::Plain,
            };
            let backlog = limits.listen_backlog.map(|c| c.0 as u32).unwrap_or(crate::link::listen::DEFAULT_BACKLOG);
            let limits = Arc::new(Limits::for_listener(limits, tls_files.map(|_| tls), &l.name));
            status.local_addr = Some(crate::link::listen::spawn(ctx, &l.name, *address, limits, counters, accept, handler, backlog)?);
            tracing::info!(link = %l.name, transport, address = ?status.local_addr, "listening");
        }
        Role::Connect { address, reconnect, tls } => {
            let dial = match tls_files {
                Some(f) => Dial::Tls { connector: TlsConnector::from(Arc::new(tls::client_for(f, &[]).map_err(|e| StartError::new(&l.name, e))?)), server_name: tls::server_name(address, tls), handshake_timeout: tls::handshake_timeout(f) },
                None => Dial::Plain,
            };
            let conn = Arc::new(ConnStatus::default());
            status.connection = Some(conn.clone());
            let c = Connector { link: l.name.clone(), address: address.clone(), dial, backoff: Backoff::from_config(reconnect, 1.0, 60.0), status: conn };
            ctx.tracker.spawn(crate::link::connect::run(c, handler, ctx.cancel.clone()));
            tracing::info!(link = %l.name, transport, %address, "connecting");
        }
    }
    Ok(status)
}

/// What runs the stream session on each connection of a link (TCP, TLS or QUIC).
pub fn handler(s: Arc<StreamSettings>, router: RouterHandle) -> Arc<dyn Handler> {
    Arc::new(StreamHandler { s, router })
}

/// Runs the stream session on each connection of a link.
struct StreamHandler {
    s: Arc<StreamSettings>,
    router: RouterHandle,
}

impl Handler for StreamHandler {
    fn run(self: Arc<Self>, conn: Conn) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(run_session(conn, self.s.clone(), self.router.clone()))
    }
}

/// What the reader and the writer of one connection share.
struct Shared {
    session: Mutex<StreamSession>,
    /// The session has something to write.
    wake: Notify,
}

/// Runs one connection until it closes, the peer is disconnected, or the link stops.
pub async fn run_session(conn: Conn, s: Arc<StreamSettings>, router: RouterHandle) {
    let Conn { io, remote, identity, cancel } = conn;
    let id = router.next_id();
    // The picture is taken before attaching, so nothing in it is also queued live.
    let snapshot: Vec<Arc<Message>> = if s.send_latest_sa { router.snapshot().await.into_iter().filter(|m| s.policy.allows_out(m)).collect() } else { vec![] };
    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel(s.queue_depth);
    let session = cancel.child_token();
    let codec = CodecCell::new(Codec::Xml);
    let info = PeerInfo { codec: codec.clone(), id, link: s.link.clone(), transport: s.transport, remote: remote.clone(), identity, policy: s.policy.clone(), tx, overflow: s.overflow, counters: s.counters.clone(), close: session.clone() };
    router.attach(info).await;
    tracing::info!(link = %s.link, %remote, "connected");
    let shared = Shared { session: Mutex::new(StreamSession::new(s.session.clone(), Instant::now().into_std())), wake: Notify::new() };
    let w = Writer { rx, snapshot, live: Default::default(), codec, s: &s, remote: &remote, shared: &shared, session: &session, shutdown: &cancel };
    let (r, w) = tokio::join!(read_loop(rd, id, &remote, &s, &router, &shared, &session), w.run(wr));
    router.detach(id).await;
    tracing::info!(link = %s.link, %remote, reason = w.unwrap_or(r), "disconnected");
}

async fn read_loop<R: AsyncRead + Unpin>(mut rd: R, id: u64, remote: &str, s: &StreamSettings, router: &RouterHandle, shared: &Shared, session: &CancellationToken) -> &'static str {
    let mut dec = StreamDecoder::new(s.max_event);
    let mut rate = ReadRate::new(s.read_rate);
    let mut negotiated = false;
    let origin = Origin { id, policy: &s.policy, counters: &s.counters };
    let reason = loop {
        let r = tokio::select! {
            _ = session.cancelled() => break "closed",
            r = rd.read_buf(dec.read_buffer()) => r,
        };
        match r {
            Ok(0) => break "end of stream",
            Ok(n) => {
                LinkCounters::add(&s.counters.bytes_in, n as u64);
                rate.bytes(n, &s.counters, &s.link, remote, session).await;
                lock(&shared.session).handle_read(Instant::now().into_std());
            }
            Err(e) => {
                tracing::debug!(link = %s.link, remote, "read error: {e}");
                break "read error";
            }
        }
        while let Some(frame) = dec.next_frame() {
            let ev = match frame.map_err(|e| (&s.counters.frame_errors, e.to_string())).and_then(|f| decode_frame(&f).map_err(|e| (&s.counters.decode_errors, e.to_string()))) {
                Ok(Some(ev)) => ev,
                Ok(None) => continue,
                Err((counter, e)) => {
                    log_bad_input(LinkCounters::inc(counter), &s.link, remote, &e);
                    continue;
                }
            };
            let (data, wake) = {
                let mut ss = lock(&shared.session);
                let before = (ss.output(), ss.settled());
                let data = ss.handle_event(ev, Instant::now().into_std());
                if !negotiated && ss.negotiated_proto() {
                    negotiated = true;
                    LinkCounters::inc(&s.counters.negotiated_proto);
                    tracing::info!(link = %s.link, remote, "protocol negotiation: TAK protocol v1 (protobuf) from now on");
                }
                // The writer has something to send, may now take queued traffic (in another
                // format), or can send the latest picture.
                (data, ss.has_transmit() || (ss.output(), ss.settled()) != before)
            };
            if wake {
                shared.wake.notify_one();
            }
            if let Some(ev) = data {
                rate.event(&s.counters, &s.link, remote, session).await;
                ingest(router, origin, ev, None).await;
            }
        }
    };
    session.cancel();
    reason
}

/// The writing half of one connection.
struct Writer<'a> {
    rx: mpsc::Receiver<Arc<Message>>,
    /// The latest picture, written once the session settles (empty: sent, or none).
    snapshot: Vec<Arc<Message>>,
    /// The uids written live while the picture waits: theirs in it is older.
    live: std::collections::HashSet<String>,
    codec: Arc<CodecCell>,
    s: &'a StreamSettings,
    remote: &'a str,
    shared: &'a Shared,
    session: &'a CancellationToken,
    /// The link (or gateway) stopping: queued traffic is drained first.
    shutdown: &'a CancellationToken,
}

impl Writer<'_> {
    /// Writes until the session ends; the reason when the writer ended it.
    async fn run<W: AsyncWrite + Unpin>(mut self, mut wr: W) -> Option<&'static str> {
        let mut buf: Vec<u8> = Vec::new();
        let reason = loop {
            buf.clear();
            let (out, settled, wake_at) = match self.control(&mut buf) {
                Ok(x) => x,
                Err(why) => break Some(why),
            };
            if let (Some(f), true) = (out, settled) {
                self.picture(f, &mut buf);
            }
            if buf.is_empty() {
                tokio::select! {
                    biased;
                    _ = self.session.cancelled() => {
                        if let (true, Some(f)) = (self.shutdown.is_cancelled(), out) {
                            self.drain(&mut wr, f).await;
                        }
                        break None;
                    }
                    _ = self.shared.wake.notified() => continue,
                    _ = sleep_until(wake_at.into()) => {
                        lock(&self.shared.session).handle_timeout(Instant::now().into_std());
                        continue;
                    }
                    m = self.rx.recv(), if out.is_some() => match (m, out) {
                        (Some(m), Some(f)) => self.batch(m, f, &mut buf),
                        _ => break None,
                    },
                }
            }
            if let Err(why) = self.write(&mut wr, &buf).await {
                break why;
            }
        };
        self.session.cancel();
        let _ = tokio::time::timeout(self.s.drain_timeout, wr.shutdown()).await;
        reason
    }

    /// Encodes the session's control events into `buf`; the output format (None: hold
    /// queued traffic), whether it settled, and when to wake, or why the session closed.
    fn control(&mut self, buf: &mut Vec<u8>) -> Result<(Option<WireFormat>, bool, std::time::Instant), &'static str> {
        let mut ss = lock(&self.shared.session);
        if let Some(c) = ss.closed() {
            if c == stream::Close::IdleTimeout {
                LinkCounters::inc(&self.s.counters.idle_timeouts);
            }
            tracing::info!(link = %self.s.link, remote = self.remote, "{}", c.as_str());
            return Err(c.as_str());
        }
        while let Some((ev, f)) = ss.poll_transmit() {
            f.encode_into(&ev, buf);
        }
        self.codec.set(if ss.format() == WireFormat::ProtoStream { Codec::Protobuf } else { Codec::Xml });
        Ok((ss.output(), ss.settled(), ss.poll_timeout()))
    }

    /// The latest picture, once, in the client's format, without the contacts whose newer
    /// reports went out live meanwhile.
    fn picture(&mut self, f: WireFormat, buf: &mut Vec<u8>) {
        if self.snapshot.is_empty() {
            return;
        }
        let mut n = 0;
        for m in self.snapshot.drain(..).filter(|m| !self.live.contains(&m.event.uid)) {
            buf.extend_from_slice(m.encoded(f));
            n += 1;
        }
        self.live = Default::default();
        LinkCounters::add(&self.s.counters.events_out, n);
        tracing::debug!(link = %self.s.link, remote = self.remote, contacts = n, "latest picture sent");
    }

    /// `m` and whatever else is queued, up to the batch size.
    fn batch(&mut self, m: Arc<Message>, f: WireFormat, buf: &mut Vec<u8>) {
        DELIVERY_LATENCY.observe(m.received.elapsed());
        let (picture_waits, live) = (!self.snapshot.is_empty(), &mut self.live);
        let n = coalesce(m, &mut self.rx, buf, |m, buf| {
            buf.extend_from_slice(m.encoded(f));
            if picture_waits {
                live.insert(m.event.uid.clone());
            }
        });
        LinkCounters::add(&self.s.counters.events_out, n);
    }

    /// Writes `buf` within the write timeout; why the session must end if it cannot.
    async fn write<W: AsyncWrite + Unpin>(&self, wr: &mut W, buf: &[u8]) -> Result<(), Option<&'static str>> {
        match write_timed(wr, buf, self.s.write_timeout, &self.s.counters, self.session).await {
            Ok(()) => Ok(()),
            Err(Stop::Cancelled) => Err(None),
            Err(Stop::Failed(e)) => {
                tracing::debug!(link = %self.s.link, "write error: {e}");
                Err(Some("write error"))
            }
            Err(Stop::Slow) => {
                tracing::warn!(link = %self.s.link, remote = self.remote, secs = self.s.write_timeout.as_secs_f64(), bytes = buf.len(), "slow consumer: a write did not complete within the write timeout; disconnecting");
                Err(Some("slow consumer"))
            }
        }
    }

    /// On shutdown: writes what is still queued, within the drain deadline.
    async fn drain<W: AsyncWrite + Unpin>(&mut self, wr: &mut W, f: WireFormat) {
        let mut buf = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            buf.extend_from_slice(m.encoded(f));
            LinkCounters::inc(&self.s.counters.events_out);
        }
        if !buf.is_empty() {
            let _ = write_timed(wr, &buf, self.s.drain_timeout, &self.s.counters, &CancellationToken::new()).await;
        }
    }
}
