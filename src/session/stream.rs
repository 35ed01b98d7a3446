//! The rules of one TAK stream connection (TCP, TLS or QUIC), as server or client, with no
//! I/O and no clock: events and `now` go in, what to write and when to wake come out.
//!
//! * Negotiation of TAK protocol v1 (`t-x-takp-v` offer, `-q` request, `-r` response). As
//!   server: offer at start, answer a request for version 1 with yes and switch what is
//!   written after the answer to stream protobuf. As client: request when offered, hold
//!   queued traffic (and control events) until the answer, then resume in the agreed format;
//!   no answer within 60 s closes the connection.
//! * Keepalive: pings (`t-x-c-t`) are answered with pongs; as client, ping after 15 s of
//!   silence and every 4.5 s after that (ATAK's timing); silence beyond the idle timeout
//!   closes the connection.
//! * Settling (server): a client that connects is sent the latest picture once it is known
//!   which format it reads: after the answer to its request, its first event, or a short
//!   wait for a request that does not come. Live traffic does not wait for it (the driver
//!   leaves out of the picture what went out live meanwhile, which is newer).
//!
//! The async driver ([`crate::transport::stream`]) feeds bytes-read times and decoded
//! events in, writes what [`StreamSession::poll_transmit`] gives ahead of queued traffic,
//! takes queued traffic only while [`StreamSession::output`] says in which format, and
//! sleeps until [`StreamSession::poll_timeout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::codec::WireFormat;
use crate::cot::control::{self, Control};
use crate::cot::{CotEvent, CotTime};

/// ATAK's keepalive: ping after 15 s of silence, then every 4.5 s.
pub const PING_AFTER: Duration = Duration::from_secs(15);
pub const PING_EVERY: Duration = Duration::from_millis(4500);
/// How long a client waits for a t-x-takp-r after requesting protobuf (commo: 60 s).
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server waits for a client's request before it settles on what it has.
pub const SETTLE_AFTER: Duration = Duration::from_secs(1);

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub role: Role,
    /// Offer (server) or request (client) TAK protocol v1.
    pub negotiate: bool,
    /// Write stream protobuf from the first byte, without negotiation.
    pub protobuf_only: bool,
    pub idle_timeout: Duration,
    /// Our uid in control events.
    pub node_id: String,
    /// Client: ping at once (a TAK Server QUIC input learns of the stream only from the
    /// client's first bytes, and says nothing before).
    pub ping_first: bool,
}

/// Why a session ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    IdleTimeout,
    NoNegotiationAnswer,
}

impl Close {
    pub fn as_str(self) -> &'static str {
        match self {
            Close::IdleTimeout => "idle timeout",
            Close::NoNegotiationAnswer => "no t-x-takp-r within 60 s",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Negotiation {
    /// Nothing asked or offered yet (or negotiation is off).
    Open,
    /// Client: a request is out; queued traffic is held until the answer or the deadline.
    Requested { deadline: Instant },
    /// Decided, either way, for good.
    Done,
}

#[derive(Debug)]
pub struct StreamSession {
    cfg: StreamConfig,
    format: WireFormat,
    negotiation: Negotiation,
    /// Server: the client's format is known; until `settle_at` at the latest.
    settled: bool,
    settle_at: Instant,
    last_rx: Instant,
    next_ping: Instant,
    transmit: VecDeque<(CotEvent, WireFormat)>,
    /// Control events that came up while paused: they go out in the agreed format.
    held: Vec<CotEvent>,
    closed: Option<Close>,
}

impl StreamSession {
    pub fn new(cfg: StreamConfig, now: Instant) -> StreamSession {
        let format = if cfg.protobuf_only { WireFormat::ProtoStream } else { WireFormat::Xml };
        let offers = cfg.role == Role::Server && cfg.negotiate && !cfg.protobuf_only;
        let mut s = StreamSession {
            format,
            negotiation: Negotiation::Open,
            settled: !offers,
            settle_at: now + SETTLE_AFTER,
            last_rx: now,
            next_ping: now + PING_AFTER,
            transmit: VecDeque::new(),
            held: Vec::new(),
            closed: None,
            cfg,
        };
        if s.cfg.role == Role::Client && s.cfg.ping_first {
            let ping = control::ping(&s.cfg.node_id, CotTime::now());
            s.send(ping);
        }
        if offers {
            let offer = control::offer(&s.cfg.node_id, CotTime::now(), &[1], concat!("takgate ", env!("CARGO_PKG_VERSION")));
            s.send(offer);
        }
        s
    }

    /// Bytes arrived: the connection is alive.
    pub fn handle_read(&mut self, now: Instant) {
        self.last_rx = now;
        self.next_ping = now + PING_AFTER;
    }

    /// A decoded event: control events are consumed (answered as needed); anything else is
    /// returned for routing.
    pub fn handle_event(&mut self, ev: CotEvent, now: Instant) -> Option<CotEvent> {
        let Some(c) = control::recognise(&ev) else {
            self.settled = true;
            return Some(ev);
        };
        match c {
            Control::Ping => self.send(control::pong(CotTime::now())),
            Control::Pong => {}
            Control::Offer(versions) => {
                let c = &self.cfg;
                if c.role == Role::Client && c.negotiate && !c.protobuf_only && self.negotiation == Negotiation::Open && versions.contains(&1) {
                    // The request goes in the current format; what follows waits for the answer.
                    self.transmit.push_back((control::request(&ev.uid, CotTime::now(), 1), self.format));
                    self.negotiation = Negotiation::Requested { deadline: now + NEGOTIATION_TIMEOUT };
                }
            }
            Control::Request(v) => {
                let c = &self.cfg;
                if c.role == Role::Server && c.negotiate && !c.protobuf_only {
                    let ok = v == 1;
                    self.transmit.push_back((control::response(&ev.uid, CotTime::now(), ok), self.format));
                    if ok {
                        self.format = WireFormat::ProtoStream;
                    }
                    self.negotiation = Negotiation::Done;
                    self.settled = true;
                    tracing::debug!(version = v, accepted = ok, "protocol negotiation (server)");
                }
            }
            Control::Response(ok) => {
                if matches!(self.negotiation, Negotiation::Requested { .. }) {
                    self.negotiation = Negotiation::Done;
                    if ok {
                        self.format = WireFormat::ProtoStream;
                    }
                    let f = self.format;
                    self.transmit.extend(self.held.drain(..).map(|e| (e, f)));
                }
            }
        }
        None
    }

    /// Whether this session switched to protobuf by negotiation (for counters).
    pub fn negotiated_proto(&self) -> bool {
        self.negotiation == Negotiation::Done && self.format == WireFormat::ProtoStream && !self.cfg.protobuf_only
    }

    fn paused(&self) -> bool {
        matches!(self.negotiation, Negotiation::Requested { .. })
    }

    /// Queues a control event now, or holds it while paused.
    fn send(&mut self, ev: CotEvent) {
        if self.paused() {
            self.held.push(ev);
        } else {
            self.transmit.push_back((ev, self.format));
        }
    }

    /// Whether control events wait to be written.
    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// The next control event to write, ahead of queued traffic, and its format.
    pub fn poll_transmit(&mut self) -> Option<(CotEvent, WireFormat)> {
        self.transmit.pop_front()
    }

    /// The format queued traffic is written in now; None while it must wait (a request is
    /// out).
    pub fn output(&self) -> Option<WireFormat> {
        (!self.paused()).then_some(self.format)
    }

    /// The current output format (also while paused).
    pub fn format(&self) -> WireFormat {
        self.format
    }

    /// Server: the client's format is known (the latest picture can go out).
    pub fn settled(&self) -> bool {
        self.settled
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.last_rx + self.cfg.idle_timeout;
        if self.cfg.role == Role::Client {
            t = t.min(self.next_ping);
        }
        if let Negotiation::Requested { deadline } = self.negotiation {
            t = t.min(deadline);
        }
        if !self.settled {
            t = t.min(self.settle_at);
        }
        t
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.last_rx + self.cfg.idle_timeout {
            self.closed = Some(Close::IdleTimeout);
            return;
        }
        if let Negotiation::Requested { deadline } = self.negotiation {
            if now >= deadline {
                self.closed = Some(Close::NoNegotiationAnswer);
                return;
            }
        }
        if !self.settled && now >= self.settle_at {
            self.settled = true;
        }
        if self.cfg.role == Role::Client && now >= self.next_ping {
            let ping = control::ping(&self.cfg.node_id, CotTime::now());
            self.send(ping);
            self.next_ping = now + PING_EVERY;
        }
    }

    /// Why the session ended on its own, once it has.
    pub fn closed(&self) -> Option<Close> {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(role: Role) -> StreamConfig {
        StreamConfig { role, negotiate: true, protobuf_only: false, idle_timeout: Duration::from_secs(120), node_id: "gw".into(), ping_first: false }
    }

    fn kinds(s: &mut StreamSession) -> Vec<(String, WireFormat)> {
        std::iter::from_fn(|| s.poll_transmit()).map(|(e, f)| (e.cot_type, f)).collect()
    }

    fn ev(t: &str, detail: &str) -> CotEvent {
        let mut e = CotEvent::new("ANDROID-1", t, "m-g", CotTime(0), 60);
        e.detail.xml = detail.into();
        e
    }

    const REQUEST_V1: &str = r#"<TakControl><TakRequest version="1"/></TakControl>"#;

    #[test]
    fn server_offers_answers_a_request_and_switches_after_the_answer() {
        let t0 = Instant::now();
        let mut s = StreamSession::new(cfg(Role::Server), t0);
        assert_eq!(kinds(&mut s), [("t-x-takp-v".to_string(), WireFormat::Xml)]);
        assert_eq!(s.output(), Some(WireFormat::Xml), "live traffic flows in XML meanwhile");
        assert!(!s.settled(), "the picture waits until the client has had its say");
        assert!(s.handle_event(ev("t-x-takp-q", REQUEST_V1), t0).is_none());
        assert_eq!(kinds(&mut s), [("t-x-takp-r".to_string(), WireFormat::Xml)]);
        assert_eq!(s.output(), Some(WireFormat::ProtoStream));
        assert!(s.negotiated_proto());
        // a ping now is answered in protobuf
        s.handle_event(ev("t-x-c-t", ""), t0);
        assert_eq!(kinds(&mut s), [("t-x-c-t-r".to_string(), WireFormat::ProtoStream)]);
    }

    #[test]
    fn server_settles_on_a_first_event_or_after_a_short_wait() {
        let t0 = Instant::now();
        let mut s = StreamSession::new(cfg(Role::Server), t0);
        let sa = ev("a-f-G", "");
        assert_eq!(s.handle_event(sa.clone(), t0).map(|e| e.cot_type), Some("a-f-G".into()));
        assert!(s.settled());
        let mut s = StreamSession::new(cfg(Role::Server), t0);
        assert_eq!(s.poll_timeout(), t0 + SETTLE_AFTER);
        s.handle_timeout(t0 + SETTLE_AFTER);
        assert!(s.settled() && s.closed().is_none());
        // a request for a version we lack is refused and nothing switches
        s.handle_event(ev("t-x-takp-q", r#"<TakControl><TakRequest version="2"/></TakControl>"#), t0);
        assert_eq!(kinds(&mut s).last().map(|k| k.0.as_str()), Some("t-x-takp-r"));
        assert_eq!(s.output(), Some(WireFormat::Xml));
    }

    #[test]
    fn client_requests_when_offered_and_holds_traffic_until_the_answer() {
        let t0 = Instant::now();
        let mut s = StreamSession::new(cfg(Role::Client), t0);
        assert!(kinds(&mut s).is_empty());
        assert_eq!(s.output(), Some(WireFormat::Xml));
        s.handle_event(ev("t-x-takp-v", r#"<TakControl><TakProtocolSupport version="1"/></TakControl>"#), t0);
        assert_eq!(kinds(&mut s), [("t-x-takp-q".to_string(), WireFormat::Xml)]);
        assert_eq!(s.output(), None);
        // a ping while paused: its pong waits, and goes out in the agreed format
        s.handle_event(ev("t-x-c-t", ""), t0);
        assert!(kinds(&mut s).is_empty());
        s.handle_event(ev("t-x-takp-r", r#"<TakControl><TakResponse status="true"/></TakControl>"#), t0);
        assert_eq!(kinds(&mut s), [("t-x-c-t-r".to_string(), WireFormat::ProtoStream)]);
        assert_eq!(s.output(), Some(WireFormat::ProtoStream));
        // a second offer is not answered again
        s.handle_event(ev("t-x-takp-v", r#"<TakControl><TakProtocolSupport version="1"/></TakControl>"#), t0);
        assert!(kinds(&mut s).is_empty());
    }

    #[test]
    fn client_closes_when_the_answer_never_comes() {
        let t0 = Instant::now();
        let mut s = StreamSession::new(StreamConfig { idle_timeout: Duration::from_secs(600), ..cfg(Role::Client) }, t0);
        s.handle_event(ev("t-x-takp-v", r#"<TakControl><TakProtocolSupport version="1"/></TakControl>"#), t0);
        // the peer stays chatty (pings keep the idle timer away) but never answers
        let mut t = t0;
        while s.closed().is_none() {
            t = s.poll_timeout();
            s.handle_read(t);
            s.handle_timeout(t);
        }
        assert_eq!(s.closed(), Some(Close::NoNegotiationAnswer));
        assert_eq!(t, t0 + NEGOTIATION_TIMEOUT);
    }

    #[test]
    fn client_pings_after_silence_and_closes_when_idle() {
        let t0 = Instant::now();
        let mut s = StreamSession::new(StreamConfig { idle_timeout: Duration::from_secs(25), ..cfg(Role::Client) }, t0);
        assert_eq!(s.poll_timeout(), t0 + PING_AFTER);
        s.handle_timeout(t0 + PING_AFTER);
        assert_eq!(kinds(&mut s), [("t-x-c-t".to_string(), WireFormat::Xml)]);
        assert_eq!(s.poll_timeout(), t0 + PING_AFTER + PING_EVERY);
        // an answer resets the clock
        s.handle_read(t0 + Duration::from_secs(16));
        assert_eq!(s.poll_timeout(), t0 + Duration::from_secs(16) + PING_AFTER);
        s.handle_timeout(t0 + Duration::from_secs(41));
        assert_eq!(s.closed(), Some(Close::IdleTimeout));
    }

    #[test]
    fn protobuf_only_and_negotiation_off_never_negotiate() {
        let t0 = Instant::now();
        let mut s = StreamSession::new(StreamConfig { protobuf_only: true, ..cfg(Role::Server) }, t0);
        assert!(kinds(&mut s).is_empty());
        assert_eq!(s.output(), Some(WireFormat::ProtoStream));
        s.handle_event(ev("t-x-takp-q", REQUEST_V1), t0);
        assert!(kinds(&mut s).is_empty() && !s.negotiated_proto());
        let mut s = StreamSession::new(StreamConfig { negotiate: false, ..cfg(Role::Client) }, t0);
        s.handle_event(ev("t-x-takp-v", r#"<TakControl><TakProtocolSupport version="1"/></TakControl>"#), t0);
        assert!(kinds(&mut s).is_empty());
        assert_eq!(s.output(), Some(WireFormat::Xml));
    }
}
