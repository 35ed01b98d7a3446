//! Helpers shared by the integration tests: a gateway on port 0, a small TAK stream client
//! built on takgate's own codec, test certificates from rcgen, and the Python peers.
#![allow(dead_code)]

pub mod certs;
pub mod corpus;
pub mod py;
pub mod ots;
pub mod tak;

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use takgate::codec::{decode_frame, StreamDecoder, WireFormat};
use takgate::config::Config;
use takgate::cot::control::{self, Control};
use takgate::cot::{CotEvent, CotTime};
use takgate::runtime::{self, Gateway};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn gateway(toml_text: &str) -> Gateway {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into())).with_test_writer().try_init();
    let cfg = Config::parse(toml_text).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    let gw = runtime::start(&cfg).await.unwrap();
    if let Some(a) = &cfg.admin {
        takgate::admin::spawn(&gw, a).await.unwrap();
    }
    gw
}

/// A position report with a callsign, and a sequence number in remarks.
pub fn pli(uid: &str, callsign: &str, seq: u32) -> CotEvent {
    let now = CotTime::now();
    let mut ev = CotEvent::new(uid, "a-f-G-U-C", "m-g", CotTime(now.millis() + seq as i64), 120);
    ev.point.lat = 10.0 + seq as f64 / 1000.0;
    ev.point.lon = 20.0;
    ev.detail.contact = Some(takgate::cot::Contact { callsign: callsign.into(), endpoint: "*:-1:stcp".into(), altendpoints: String::new() });
    ev.detail.xml = format!("<remarks>seq={seq}</remarks>");
    ev
}

pub fn seq_of(ev: &CotEvent) -> Option<u32> {
    let i = ev.detail.xml.find("seq=")? + 4;
    ev.detail.xml[i..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A TAK stream client for tests.
pub struct Client {
    io: Pin<Box<dyn Io>>,
    dec: StreamDecoder,
    pub format: WireFormat,
    /// Control events seen (offers, responses, pongs).
    pub control: Vec<Control>,
    /// Frames received, by kind: (XML, protobuf).
    pub frames: (usize, usize),
    /// Events read while negotiating, returned by `recv` first.
    pending: std::collections::VecDeque<CotEvent>,
}

impl Client {
    pub async fn tcp(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Client::over(Box::pin(s))
    }

    pub fn over(io: Pin<Box<dyn Io>>) -> Client {
        Client { io, dec: StreamDecoder::new(1 << 20), format: WireFormat::Xml, control: vec![], frames: (0, 0), pending: Default::default() }
    }

    pub async fn send(&mut self, ev: &CotEvent) {
        let mut b = Vec::new();
        self.format.encode_into(ev, &mut b);
        self.io.write_all(&b).await.unwrap();
    }

    pub async fn send_raw(&mut self, b: &[u8]) {
        self.io.write_all(b).await.unwrap();
    }

    /// The next non-control event, or None after `wait` of silence. What the gateway sends
    /// must frame and decode: anything else fails the test.
    pub async fn recv(&mut self, wait: Duration) -> Option<CotEvent> {
        match self.pending.pop_front() {
            Some(ev) => Some(ev),
            None => self.read_event(wait).await,
        }
    }

    async fn read_event(&mut self, wait: Duration) -> Option<CotEvent> {
        loop {
            while let Some(f) = self.dec.next_frame() {
                let f = f.unwrap_or_else(|e| panic!("the gateway sent bytes that do not frame: {e}"));
                match &f {
                    takgate::codec::Frame::Proto(_) => self.frames.1 += 1,
                    _ => self.frames.0 += 1,
                }
                let Some(ev) = decode_frame(&f).unwrap_or_else(|e| panic!("the gateway sent an event that does not decode: {e}")) else { continue };
                match control::recognise(&ev) {
                    Some(c) => self.control.push(c),
                    None => return Some(ev),
                }
            }
            self.dec.buffer_mut().reserve(8192);
            match tokio::time::timeout(wait, self.io.read_buf(self.dec.buffer_mut())).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Every event until `wait` of silence.
    pub async fn drain(&mut self, wait: Duration) -> Vec<CotEvent> {
        let mut v = vec![];
        while let Some(ev) = self.recv(wait).await {
            v.push(ev);
        }
        v
    }

    /// Waits for the server's offer, requests protobuf, waits for the answer and switches.
    pub async fn negotiate(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.control.iter().any(|c| matches!(c, Control::Offer(v) if v.contains(&1))) {
            assert!(tokio::time::Instant::now() < deadline, "no offer");
            if let Some(ev) = self.read_event(Duration::from_millis(100)).await {
                self.pending.push_back(ev);
            }
        }
        self.send(&control::request("test-client", CotTime::now(), 1)).await;
        while !self.control.contains(&Control::Response(true)) {
            assert!(tokio::time::Instant::now() < deadline, "no response");
            if let Some(ev) = self.read_event(Duration::from_millis(100)).await {
                self.pending.push_back(ev);
            }
        }
        self.format = WireFormat::ProtoStream;
    }
}

/// Retries `f` until it is true or `secs` pass.
pub async fn eventually(secs: f64, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Whether something accepts TCP connections on `addr` within `secs` (a gateway process
/// starting up).
pub async fn listening(addr: SocketAddr, secs: f64) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    while tokio::time::Instant::now() < end {
        if TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The number of peers attached to `gw`'s router once it reaches `want` (or after 5 s).
pub async fn peers_settle_at(gw: &Gateway, want: usize) -> usize {
    let mut left = gw.router().stats().await.len();
    for _ in 0..100 {
        if left == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = gw.router().stats().await.len();
    }
    left
}

/// A free UDP port on loopback.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
