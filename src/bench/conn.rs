//! Connections of the load generator: TCP or TLS, XML or negotiated protobuf, and a cheap
//! reader that frames the stream and pulls the bench marker out of each event without
//! decoding it (the generator must cost less than what it measures).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use memchr::memmem;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codec::{decode_frame, Frame, StreamDecoder, WireFormat};
use crate::cot::control::{self, Control};
use crate::cot::{Contact, CotEvent, CotTime};

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Pin<Box<dyn Io>>;

/// How to reach the target.
#[derive(Clone)]
pub struct Dial {
    pub addr: SocketAddr,
    pub tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    pub quic: Option<Arc<QuicDial>>,
    pub proto: bool,
}

/// QUIC clients share a few UDP endpoints (one per device would cost a socket and a
/// driver task each; one for all would put every packet through one task).
pub const QUIC_ENDPOINTS: usize = 8;

pub struct QuicDial {
    pub config: quinn::ClientConfig,
    pub name: String,
    pub endpoints: Vec<quinn::Endpoint>,
    pub next: std::sync::atomic::AtomicU64,
}

impl QuicDial {
    /// A connection and its stream, with a newline written first (the server speaks only
    /// after the client's first bytes; ATAK writes a ping, whose pong would be counted).
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<BoxIo> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as usize;
        let ep = &self.endpoints[n % self.endpoints.len()];
        let connecting = ep.connect_with(self.config.clone(), addr, &self.name).map_err(std::io::Error::other)?;
        let conn = tokio::time::timeout(Duration::from_secs(20), connecting).await.map_err(|_| std::io::Error::other("QUIC handshake timed out"))?.map_err(|e| std::io::Error::other(crate::link::quic::explain(&e, false)))?;
        let (send, recv) = conn.open_bi().await.map_err(std::io::Error::other)?;
        let mut io: BoxIo = Box::pin(crate::link::quic::QuicIo::new(conn, send, recv));
        io.write_all(b"\n").await?;
        Ok(io)
    }
}

impl Dial {
    pub async fn connect(&self) -> std::io::Result<(BoxIo, StreamDecoder, WireFormat)> {
        if let Some(q) = &self.quic {
            let mut io = q.connect(self.addr).await?;
            let mut dec = StreamDecoder::new(1 << 20);
            let mut format = WireFormat::Xml;
            if self.proto {
                negotiate(&mut io, &mut dec).await?;
                format = WireFormat::ProtoStream;
            }
            return Ok((io, dec, format));
        }
        let tcp = tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(self.addr)).await.map_err(|_| std::io::Error::other("connect timed out"))??;
        tcp.set_nodelay(true)?;
        let mut io: BoxIo = match &self.tls {
            None => Box::pin(tcp),
            Some((c, name)) => Box::pin(tokio::time::timeout(Duration::from_secs(20), c.connect(name.clone(), tcp)).await.map_err(|_| std::io::Error::other("TLS handshake timed out"))??),
        };
        let mut dec = StreamDecoder::new(1 << 20);
        let mut format = WireFormat::Xml;
        if self.proto {
            negotiate(&mut io, &mut dec).await?;
            format = WireFormat::ProtoStream;
        }
        Ok((io, dec, format))
    }
}

async fn negotiate(io: &mut BoxIo, dec: &mut StreamDecoder) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut requested = false;
    loop {
        while let Some(f) = dec.next_frame() {
            let Ok(f) = f else { continue };
            let Ok(Some(ev)) = decode_frame(&f) else { continue };
            match control::recognise(&ev) {
                Some(Control::Offer(v)) if v.contains(&1) && !requested => {
                    let mut b = Vec::new();
                    WireFormat::Xml.encode_into(&control::request(&ev.uid, CotTime::now(), 1), &mut b);
                    io.write_all(&b).await?;
                    requested = true;
                }
                Some(Control::Response(true)) if requested => return Ok(()),
                Some(Control::Response(false)) => return Err(std::io::Error::other("target refused TAK protocol v1")),
                _ => {}
            }
        }
        dec.buffer_mut().reserve(16 * 1024);
        match tokio::time::timeout_at(deadline, io.read_buf(dec.buffer_mut())).await {
            Ok(Ok(0)) => return Err(std::io::Error::other("closed during negotiation")),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("target did not offer TAK protocol v1 within 15 s")),
        }
    }
}

pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// A position report carrying the bench marker `<__bench c=client s=seq t=micros/>`.
/// The uid is `bench-<client>`, or `bench-<client>-<seq>` with `uid_per_event` (streams far
/// above 1 kHz per uid would otherwise be (uid, type, time) duplicates at ms resolution).
pub fn bench_event(client: u32, seq: u64, pad: usize, uid_per_event: bool) -> CotEvent {
    bench_event_at(client, seq, pad, uid_per_event, now_micros())
}

/// [`bench_event`] stamped with send time `now` (µs since the epoch).
pub fn bench_event_at(client: u32, seq: u64, pad: usize, uid_per_event: bool, now: u64) -> CotEvent {
    let uid = if uid_per_event { format!("bench-{client}-{seq}") } else { format!("bench-{client}") };
    let mut ev = CotEvent::new(uid, "a-f-G-U-C", "m-g", CotTime((now / 1000) as i64), 60);
    ev.point.lat = 40.0 + (client % 1000) as f64 * 0.001;
    ev.point.lon = -105.0 + (seq % 1000) as f64 * 0.0001;
    ev.detail.contact = Some(Contact { callsign: format!("B{client}"), endpoint: "*:-1:stcp".into(), altendpoints: String::new() });
    ev.detail.xml = format!("<__bench c=\"{client}\" s=\"{seq}\" t=\"{now}\"/>");
    if pad > 0 {
        ev.detail.xml.push_str(&format!("<remarks>{}</remarks>", "x".repeat(pad)));
    }
    ev
}

/// What a received frame is, without decoding it.
pub enum Seen {
    /// (client, seq, send time µs)
    Bench(u32, u64, u64),
    Pong,
    Other,
}

fn attr_num(b: &[u8], name: &[u8]) -> Option<u64> {
    let i = memmem::find(b, name)? + name.len();
    let mut v = 0u64;
    let mut any = false;
    for &c in &b[i..] {
        if !c.is_ascii_digit() {
            break;
        }
        v = v * 10 + (c - b'0') as u64;
        any = true;
    }
    any.then_some(v)
}

pub fn classify(f: &Frame) -> Seen {
    static MARK: std::sync::LazyLock<memmem::Finder<'static>> = std::sync::LazyLock::new(|| memmem::Finder::new(b"<__bench c=\""));
    let b: &[u8] = match f {
        Frame::Xml(b) | Frame::Proto(b) => b,
        Frame::Auth(_) => return Seen::Other,
    };
    if let Some(i) = MARK.find(b) {
        let tail = &b[i..b.len().min(i + 80)];
        if let (Some(c), Some(s), Some(t)) = (attr_num(tail, b"c=\""), attr_num(tail, b"s=\""), attr_num(tail, b"t=\"")) {
            return Seen::Bench(c as u32, s, t);
        }
    }
    if memmem::find(b, control::PONG.as_bytes()).is_some() {
        return Seen::Pong;
    }
    Seen::Other
}

/// A plain relay for comparison: splits streams after each event (no parsing) and forwards
/// every event to every other connection, dropping for a connection whose queue is full.
pub async fn relay(listener: tokio::net::TcpListener) {
    use tokio::sync::{mpsc, Mutex};
    let peers: Arc<Mutex<Vec<(u64, mpsc::Sender<bytes::Bytes>)>>> = Arc::default();
    let mut next = 0u64;
    while let Ok((s, _)) = listener.accept().await {
        let _ = s.set_nodelay(true);
        next += 1;
        let id = next;
        let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(4096);
        peers.lock().await.push((id, tx));
        let (mut rd, mut wr) = s.into_split();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(64 * 1024);
            while let Some(b) = rx.recv().await {
                buf.clear();
                buf.extend_from_slice(&b);
                while buf.len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(b) => buf.extend_from_slice(&b),
                        Err(_) => break,
                    }
                }
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
        let peers = peers.clone();
        tokio::spawn(async move {
            let mut dec = StreamDecoder::new(1 << 20);
            loop {
                dec.buffer_mut().reserve(16 * 1024);
                match rd.read_buf(dec.buffer_mut()).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let mut frames = vec![];
                while let Some(Ok(f)) = dec.next_frame() {
                    if let Frame::Xml(b) = f {
                        frames.push(b);
                    }
                }
                if frames.is_empty() {
                    continue;
                }
                let list = peers.lock().await.clone();
                for (pid, tx) in &list {
                    if *pid != id {
                        for f in &frames {
                            let _ = tx.try_send(f.clone());
                        }
                    }
                }
            }
            peers.lock().await.retain(|(p, _)| *p != id);
        });
    }
}
