//! One streaming connection (TCP or TLS, accepted or dialled): the same session either way.
//!
//! Reader: bytes -> [`StreamDecoder`] -> events; pings answered with pongs, TAK protocol
//! negotiation handled (as server: offer, answer requests, switch; as client: request when
//! offered, hold output until the answer), everything else stamped and routed. Silence
//! beyond the idle timeout closes the connection; as a client it pings after 15 s of
//! silence and every 4.5 s after that, as ATAK does.
//!
//! Writer: drains the peer's bounded queue, coalescing whatever is queued into one write,
//! each event in the connection's current format (encoded once per format for everyone).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::codec::{decode_frame, StreamDecoder, WireFormat};
use crate::config::Overflow;
use crate::cot::control::{self, Control};
use crate::cot::{CotEvent, CotTime};
use crate::router::message::{has_flow_tag, stamp_flow_tag};
use crate::router::{LinkCounters, Message, PeerIdentity, PeerInfo, PeerPolicy, RouterHandle};

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// Settings shared by every connection of one configured stream link.
#[derive(Debug)]
pub struct StreamSettings {
    pub link: String,
    pub transport: &'static str,
    pub role: Role,
    pub negotiate: bool,
    /// Send stream protobuf from the first byte (no negotiation).
    pub protobuf_only: bool,
    pub idle_timeout: Duration,
    pub max_event: usize,
    pub queue_depth: usize,
    pub overflow: Overflow,
    pub policy: Arc<PeerPolicy>,
    pub counters: Arc<LinkCounters>,
    pub drain_timeout: Duration,
    /// Read rate limits of one connection (none: unlimited).
    pub read_rate: ReadRateLimits,
    /// A write that takes longer closes the connection (a peer that stopped reading).
    pub write_timeout: Duration,
}

/// Per-connection read rates; reading pauses when a connection goes over.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadRateLimits {
    pub bytes_per_sec: Option<f64>,
    pub events_per_sec: Option<f64>,
}

/// The default write timeout for streams.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A token bucket one second deep.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket { rate, tokens: rate, last: Instant::now() }
    }
    /// Takes `n`; how long to wait before going on when that put the bucket in debt.
    fn take(&mut self, n: f64, now: Instant) -> Option<Duration> {
        self.tokens = (self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        self.tokens -= n;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

/// The read rate state of one connection.
#[derive(Debug)]
pub(crate) struct ReadRate {
    bytes: Option<Bucket>,
    events: Option<Bucket>,
}

impl ReadRate {
    pub(crate) fn new(l: ReadRateLimits) -> ReadRate {
        ReadRate { bytes: l.bytes_per_sec.map(Bucket::new), events: l.events_per_sec.map(Bucket::new) }
    }

    /// After reading `n` bytes: pauses while the connection is over its byte rate.
    pub(crate) async fn bytes(&mut self, n: usize, counters: &LinkCounters, link: &str, remote: &str, session: &CancellationToken) {
        if let Some(b) = &mut self.bytes {
            if let Some(d) = b.take(n as f64, Instant::now()) {
                let rate = b.rate;
                pause(d, counters, link, remote, format!("over max_read_bytes_per_sec ({rate} B/s)"), session).await;
            }
        }
    }

    /// Before taking one more event: pauses while the connection is over its event rate.
    pub(crate) async fn event(&mut self, counters: &LinkCounters, link: &str, remote: &str, session: &CancellationToken) {
        if let Some(b) = &mut self.events {
            if let Some(d) = b.take(1.0, Instant::now()) {
                let rate = b.rate;
                pause(d, counters, link, remote, format!("over max_read_events_per_sec ({rate}/s)"), session).await;
            }
        }
    }
}

async fn pause(d: Duration, counters: &LinkCounters, link: &str, remote: &str, why: String, session: &CancellationToken) {
    let n = counters.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if n < 5 || n.is_power_of_two() {
        tracing::warn!(link, remote, count = n + 1, "reading paused {} ms: {why}", d.as_millis());
    }
    tokio::select! {
        _ = session.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// ATAK's keepalive: ping after 15 s of silence, then every 4.5 s.
const PING_AFTER: Duration = Duration::from_secs(15);
const PING_EVERY: Duration = Duration::from_millis(4500);
/// How long to wait for a t-x-takp-r after requesting protobuf (commo: 60 s).
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(60);
/// A coalesced write stops growing at this size.
const MAX_BATCH: usize = 256 * 1024;

enum Ctrl {
    /// Write this event now (ahead of queued traffic).
    Send(CotEvent),
    /// Write this event, then switch the output format.
    SendThenSwitch(CotEvent, WireFormat),
    /// Write this event, then hold queued traffic until `Resume`.
    SendThenPause(CotEvent),
    /// Resume queued traffic, optionally in a new format.
    Resume(Option<WireFormat>),
}

/// Logs bad input without flooding: the first few, then every power of two.
pub(crate) fn log_bad_input(counter: u64, link: &str, remote: &str, what: &dyn std::fmt::Display) {
    if counter < 5 || counter.is_power_of_two() {
        tracing::warn!(link, remote, count = counter + 1, "bad input: {what}");
    }
}

/// Stamps our flow tag and routes an event that arrived on `origin`; returns false when it
/// is a loop (it already carries our tag) or not allowed in.
pub(crate) async fn ingest(router: &RouterHandle, policy: &PeerPolicy, counters: &LinkCounters, origin: u64, ev: CotEvent, wait: bool) -> bool {
    ingest_from(router, policy, counters, origin, ev, wait, None).await
}

/// [`ingest`], marking the message as come from a federate when `fed` is given.
pub(crate) async fn ingest_from(router: &RouterHandle, policy: &PeerPolicy, counters: &LinkCounters, origin: u64, mut ev: CotEvent, wait: bool, fed: Option<crate::router::FedMeta>) -> bool {
    LinkCounters::inc(&counters.events_in);
    if has_flow_tag(&ev, &router.node_id) {
        LinkCounters::inc(&counters.loops);
        return false;
    }
    stamp_flow_tag(&mut ev, &router.node_id, CotTime::now());
    let mut m = Message::new(ev, origin);
    m.from_federate = fed.is_some();
    m.fed = fed.map(Box::new);
    if !policy.allows_in(&m) {
        LinkCounters::inc(&counters.filtered);
        return false;
    }
    if wait {
        router.route(Arc::new(m)).await
    } else if router.try_route(Arc::new(m)) {
        true
    } else {
        LinkCounters::inc(&counters.drops_router_busy);
        false
    }
}

/// The message [`ingest`] would route, for callers that batch (the datagram receiver
/// thread): None when it is a loop or not allowed in (counted).
pub(crate) fn prepare(router: &RouterHandle, policy: &PeerPolicy, counters: &LinkCounters, origin: u64, mut ev: CotEvent) -> Option<Arc<Message>> {
    LinkCounters::inc(&counters.events_in);
    if has_flow_tag(&ev, &router.node_id) {
        LinkCounters::inc(&counters.loops);
        return None;
    }
    stamp_flow_tag(&mut ev, &router.node_id, CotTime::now());
    let m = Message::new(ev, origin);
    if !policy.allows_in(&m) {
        LinkCounters::inc(&counters.filtered);
        return None;
    }
    Some(Arc::new(m))
}

/// Runs one connection until it closes, the peer is disconnected, or `cancel` fires.
pub async fn run_session<S>(stream: S, remote: String, identity: Option<PeerIdentity>, s: Arc<StreamSettings>, router: RouterHandle, cancel: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let id = router.next_id();
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(s.queue_depth);
    let (ctrl_tx, ctrl_rx) = mpsc::channel(64);
    let session = cancel.child_token();
    let codec = Arc::new(std::sync::atomic::AtomicU8::new(crate::router::codec::XML));
    router
        .attach(PeerInfo {
            codec: codec.clone(),
            id,
            link: s.link.clone(),
            transport: s.transport,
            remote: remote.clone(),
            identity,
            policy: s.policy.clone(),
            tx,
            overflow: s.overflow,
            counters: s.counters.clone(),
            close: session.clone(),
        })
        .await;
    tracing::info!(link = %s.link, %remote, "connected");
    let initial = if s.protobuf_only { WireFormat::ProtoStream } else { WireFormat::Xml };
    if s.role == Role::Server && s.negotiate && !s.protobuf_only {
        let _ = ctrl_tx.try_send(Ctrl::Send(control::offer(&router.node_id, CotTime::now(), &[1], concat!("takgate ", env!("CARGO_PKG_VERSION")))));
    }
    let writer = tokio::spawn(write_loop(wr, rx, ctrl_rx, initial, codec, s.clone(), remote.clone(), session.clone(), cancel.clone()));
    let reason = read_loop(rd, id, &remote, &s, &router, &ctrl_tx, &session).await;
    session.cancel();
    drop(ctrl_tx);
    router.detach(id).await;
    let _ = writer.await;
    tracing::info!(link = %s.link, %remote, reason, "disconnected");
}

async fn read_loop<R: AsyncRead + Unpin>(mut rd: R, id: u64, remote: &str, s: &StreamSettings, router: &RouterHandle, ctrl: &mpsc::Sender<Ctrl>, session: &CancellationToken) -> &'static str {
    let mut dec = StreamDecoder::new(s.max_event);
    let mut rate = ReadRate::new(s.read_rate);
    let mut last_rx = Instant::now();
    let mut next_ping = last_rx + PING_AFTER;
    // As client: a request is outstanding / negotiation is over (either way) for good.
    let mut requested = false;
    let mut negotiated = false;
    // Control messages to the writer must not block the reader past the session's end.
    let send_ctrl = |c: Ctrl| async move {
        tokio::select! {
            _ = session.cancelled() => {}
            _ = ctrl.send(c) => {}
        }
    };
    loop {
        let idle_at = last_rx + s.idle_timeout;
        let wake = if s.role == Role::Client { idle_at.min(next_ping) } else { idle_at };
        if dec.buffer_mut().capacity() - dec.buffered() < 2048 {
            dec.buffer_mut().reserve(8192);
        }
        tokio::select! {
            _ = session.cancelled() => return "closed",
            r = rd.read_buf(dec.buffer_mut()) => match r {
                Ok(0) => return "end of stream",
                Ok(n) => {
                    s.counters.bytes_in.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    rate.bytes(n, &s.counters, &s.link, remote, session).await;
                    last_rx = Instant::now();
                    next_ping = last_rx + PING_AFTER;
                }
                Err(e) => {
                    tracing::debug!(link = %s.link, remote, "read error: {e}");
                    return "read error";
                }
            },
            _ = sleep_until(wake) => {
                let now = Instant::now();
                if now >= idle_at {
                    LinkCounters::inc(&s.counters.idle_timeouts);
                    tracing::info!(link = %s.link, remote, secs = s.idle_timeout.as_secs_f64(), "idle timeout");
                    return "idle timeout";
                }
                let _ = ctrl.try_send(Ctrl::Send(control::ping(&router.node_id, CotTime::now())));
                next_ping = now + PING_EVERY;
                continue;
            }
        }
        while let Some(frame) = dec.next_frame() {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    let n = s.counters.frame_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    log_bad_input(n, &s.link, remote, &e);
                    continue;
                }
            };
            let ev = match decode_frame(&frame) {
                Ok(Some(ev)) => ev,
                Ok(None) => continue,
                Err(e) => {
                    let n = s.counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    log_bad_input(n, &s.link, remote, &e);
                    continue;
                }
            };
            match control::recognise(&ev) {
                Some(Control::Ping) => {
                    let _ = ctrl.try_send(Ctrl::Send(control::pong(CotTime::now())));
                }
                Some(Control::Offer(versions)) => {
                    if s.role == Role::Client && s.negotiate && !s.protobuf_only && !requested && !negotiated && versions.contains(&1) {
                        requested = true;
                        send_ctrl(Ctrl::SendThenPause(control::request(&ev.uid, CotTime::now(), 1))).await;
                    }
                }
                Some(Control::Request(v)) => {
                    if s.role == Role::Server && s.negotiate && !s.protobuf_only {
                        let ok = v == 1;
                        if ok {
                            LinkCounters::inc(&s.counters.negotiated_proto);
                        }
                        let resp = control::response(&ev.uid, CotTime::now(), ok);
                        let c = if ok { Ctrl::SendThenSwitch(resp, WireFormat::ProtoStream) } else { Ctrl::Send(resp) };
                        send_ctrl(c).await;
                        tracing::info!(link = %s.link, remote, version = v, accepted = ok, "protocol negotiation");
                    }
                }
                Some(Control::Response(ok)) => {
                    if requested {
                        requested = false;
                        negotiated = true;
                        if ok {
                            LinkCounters::inc(&s.counters.negotiated_proto);
                        }
                        send_ctrl(Ctrl::Resume(ok.then_some(WireFormat::ProtoStream))).await;
                        tracing::info!(link = %s.link, remote, accepted = ok, "protocol negotiation");
                    }
                }
                Some(Control::Pong) => {}
                None => {
                    rate.event(&s.counters, &s.link, remote, session).await;
                    ingest(router, &s.policy, &s.counters, id, ev, true).await;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Arc<Message>>, mut ctrl: mpsc::Receiver<Ctrl>, mut format: WireFormat, codec: Arc<std::sync::atomic::AtomicU8>, s: Arc<StreamSettings>, remote: String, session: CancellationToken, shutdown: CancellationToken) {
    // Grows on first use: an idle connection holds no write buffer.
    let mut buf: Vec<u8> = Vec::new();
    let mut paused_until: Option<Instant> = None;
    // Control events that arrive while paused wait for the answer, to go out in the
    // negotiated format (a server that said yes no longer reads XML).
    let mut held: Vec<CotEvent> = Vec::new();
    loop {
        codec.store(
            match format {
                WireFormat::Xml => crate::router::codec::XML,
                WireFormat::ProtoStream => crate::router::codec::PROTOBUF,
                WireFormat::ProtoMesh => crate::router::codec::PROTOBUF_MESH,
            },
            std::sync::atomic::Ordering::Relaxed,
        );
        buf.clear();
        let mut switch_after: Option<WireFormat> = None;
        if let Some(deadline) = paused_until {
            tokio::select! {
                _ = session.cancelled() => break,
                _ = sleep_until(deadline) => {
                    tracing::warn!(link = %s.link, "no t-x-takp-r within 60 s: disconnecting");
                    break;
                }
                c = ctrl.recv() => match c {
                    Some(Ctrl::Resume(f)) => {
                        paused_until = None;
                        if let Some(f) = f {
                            format = f;
                        }
                        for ev in held.drain(..) {
                            format.encode_into(&ev, &mut buf);
                        }
                    }
                    Some(Ctrl::Send(ev)) => held.push(ev),
                    Some(_) => {}
                    None => break,
                },
            }
        } else {
            tokio::select! {
                biased;
                _ = session.cancelled() => {
                    if shutdown.is_cancelled() {
                        drain(&mut wr, &mut rx, format, &s).await;
                    }
                    break;
                }
                c = ctrl.recv() => match c {
                    Some(Ctrl::Send(ev)) => format.encode_into(&ev, &mut buf),
                    Some(Ctrl::SendThenSwitch(ev, f)) => { format.encode_into(&ev, &mut buf); switch_after = Some(f); }
                    Some(Ctrl::SendThenPause(ev)) => { format.encode_into(&ev, &mut buf); paused_until = Some(Instant::now() + NEGOTIATION_TIMEOUT); }
                    Some(Ctrl::Resume(f)) => { if let Some(f) = f { format = f; } }
                    None => break,
                },
                m = rx.recv() => match m {
                    Some(m) => {
                        let mut n = 1u64;
                        crate::metrics::DELIVERY_LATENCY.observe(m.received.elapsed());
                        buf.extend_from_slice(m.encoded(format));
                        while buf.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(m) => { buf.extend_from_slice(m.encoded(format)); n += 1; }
                                Err(_) => break,
                            }
                        }
                        s.counters.events_out.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    None => break,
                },
            }
        }
        if !buf.is_empty() {
            // A peer that stops reading must not hold this task forever.
            let r = tokio::select! {
                r = tokio::time::timeout(s.write_timeout, write_all(&mut wr, &buf, &s)) => r,
                _ = session.cancelled() => break,
            };
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(link = %s.link, "write error: {e}");
                    break;
                }
                Err(_) => {
                    LinkCounters::inc(&s.counters.slow_consumers);
                    tracing::warn!(link = %s.link, remote = %remote, secs = s.write_timeout.as_secs_f64(), bytes = buf.len(), "slow consumer: a write did not complete within the write timeout; disconnecting");
                    break;
                }
            }
        }
        if let Some(f) = switch_after {
            format = f;
        }
    }
    // Whatever ended the writer ends the session (the reader stops too).
    session.cancel();
    let _ = tokio::time::timeout(s.drain_timeout, wr.shutdown()).await;
}

async fn write_all<W: AsyncWrite + Unpin>(wr: &mut W, buf: &[u8], s: &StreamSettings) -> std::io::Result<()> {
    wr.write_all(buf).await?;
    wr.flush().await?;
    s.counters.bytes_out.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// On shutdown: write what is still queued, within the drain deadline.
async fn drain<W: AsyncWrite + Unpin>(wr: &mut W, rx: &mut mpsc::Receiver<Arc<Message>>, format: WireFormat, s: &StreamSettings) {
    let mut buf = Vec::new();
    while let Ok(m) = rx.try_recv() {
        buf.extend_from_slice(m.encoded(format));
        s.counters.events_out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    if !buf.is_empty() {
        let _ = tokio::time::timeout(s.drain_timeout, write_all(wr, &buf, s)).await;
    }
}
