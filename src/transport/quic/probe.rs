//! `takgate quic test HOST:PORT`: a staged connection test of a TAK QUIC input (TAK
//! Server's `protocol="quic"`, or a takgate's): our certificates, resolve, the QUIC
//! handshake (TLS 1.3 with our client certificate), ALPN `takstream`, the server's
//! identity, the stream (we write a ping first, as ATAK does), TAK protocol negotiation,
//! and a ping answered with a pong. Each stage says ok or why not, and how long it took.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::codec::{decode_frame, StreamDecoder, WireFormat};
use crate::cot::control::{self, Control};
use crate::cot::CotTime;
use crate::link::probe::{Stage, Stages};
use crate::link::quic::{self, confirmed, QuicIo, QuicSettings};
use crate::link::tls;

#[derive(Debug, Clone)]
pub struct QuicTarget {
    pub address: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_name: Option<String>,
    /// How long the handshake and each answer may take.
    pub timeout: Duration,
}

/// Runs the stages in order, stopping at the first failure.
pub async fn probe(t: &QuicTarget) -> Vec<Stage> {
    let mut st = Stages(vec![]);
    let _ = run(t, &mut st).await;
    st.0
}

async fn run(t: &QuicTarget, st: &mut Stages) -> Option<()> {
    let t0 = Instant::now();
    let settings = QuicSettings { idle_timeout: quic::DEFAULT_IDLE_TIMEOUT, keep_alive: Some(quic::DEFAULT_KEEP_ALIVE), stream_window: quic::DEFAULT_STREAM_WINDOW };
    let config = st.record("certificates", t0, certificates(t, &settings))?;
    let t1 = Instant::now();
    let addr = st.record("resolve", t1, resolve(&t.address).await)?;
    let host = t.server_name.clone().unwrap_or_else(|| t.address.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']).to_owned()).unwrap_or_default());
    let t2 = Instant::now();
    let conn = st.record("quic handshake", t2, handshake(config, addr, &host, t.timeout).await)?;
    let t3 = Instant::now();
    let agreed = quic::alpn(&conn);
    let alpn = match agreed.as_deref() {
        Some(quic::ALPN) => Ok(((), "takstream".to_string())),
        Some(other) => Err(format!("the server chose {:?}, not takstream", String::from_utf8_lossy(other))),
        None => Err("the server agreed on no application protocol: not a TAK QUIC input".into()),
    };
    st.record("alpn", t3, alpn)?;
    let t4 = Instant::now();
    st.record("peer identity", t4, quic::identity(&conn).map(|id| ((), format!("CN {} issued by {} fingerprint {}", id.cn, id.issuer_cn, id.fingerprint))).ok_or_else(|| "the server presented no certificate".to_string()))?;
    let t5 = Instant::now();
    let mut io = st.record("stream", t5, open_stream(&conn, t.timeout).await)?;
    let mut dec = StreamDecoder::new(crate::codec::DEFAULT_MAX_EVENT);
    let t7 = Instant::now();
    let format = st.record("negotiation", t7, negotiate(&mut io, &mut dec, t.timeout).await)?;
    let t8 = Instant::now();
    let mut b = Vec::new();
    format.encode_into(&control::ping("takgate-quic-test", CotTime::now()), &mut b);
    let pong = match io.write_all(&b).await {
        Ok(()) => wait_for(&mut io, &mut dec, t.timeout, |c| matches!(c, Some(Control::Pong))).await.map(|_| ((), format!("pong ({})", if format == WireFormat::Xml { "xml" } else { "protobuf" }))),
        Err(e) => Err(format!("writing: {e}")),
    };
    st.record("ping", t8, pong)?;
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
    Some(())
}

fn certificates(t: &QuicTarget, s: &QuicSettings) -> Result<(quinn::ClientConfig, String), String> {
    let chain = tls::chain(&t.cert, Some(&t.ca)).map_err(|e| e.to_string())?;
    let c = quic::client_config(&t.ca, Some((&t.cert, &t.key)), &[], s)?;
    Ok((c, format!("CA {}, certificate {} (chain {})", t.ca.display(), t.cert.display(), chain.len())))
}

async fn resolve(address: &str) -> Result<(std::net::SocketAddr, String), String> {
    let a = tokio::net::lookup_host(address).await.map_err(|e| e.to_string()).and_then(|mut a| a.next().ok_or("resolves to nothing".to_string())).map_err(|e| format!("{address}: {e}"))?;
    Ok((a, a.to_string()))
}

/// One bidirectional stream, and a ping written on it at once (the server learns of the
/// stream only from the client's first bytes).
async fn open_stream(conn: &quinn::Connection, timeout: Duration) -> Result<(QuicIo, String), String> {
    let (send, recv) = match tokio::time::timeout(timeout, conn.open_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("opening the stream: {e}")),
        Err(_) => return Err(format!("the server granted no bidirectional stream within {} s", timeout.as_secs())),
    };
    let mut io = QuicIo::new(conn.clone(), send, recv);
    let mut ping = Vec::new();
    WireFormat::Xml.encode_into(&control::ping("takgate-quic-test", CotTime::now()), &mut ping);
    io.write_all(&ping).await.map_err(|e| format!("writing: {e}"))?;
    Ok((io, "stream 0 open, a ping written first (the server speaks only after the client)".into()))
}

/// The QUIC and TLS handshake with our client certificate (on an endpoint of its own).
async fn handshake(config: quinn::ClientConfig, addr: std::net::SocketAddr, host: &str, timeout: Duration) -> Result<(quinn::Connection, String), String> {
    let local: std::net::SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let endpoint = quic::bind(local, None).map_err(|e| format!("cannot bind a UDP socket: {e}"))?;
    let connecting = endpoint.connect_with(config, addr, host).map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => {
            confirmed(&c, timeout).await?;
            let rtt = c.rtt().as_secs_f64() * 1000.0;
            Ok((c, format!("QUIC v1, TLS 1.3, our certificate accepted, rtt {rtt:.1} ms")))
        }
        Ok(Err(e)) => Err(quic::explain(&e, false)),
        Err(_) => Err(format!("no answer within {} s: is it a QUIC port (TAK Server: <input protocol=\"quic\">), is UDP let through?", timeout.as_secs())),
    }
}

/// Reads until `want` holds for a control event (or any event when it says so); the
/// control event seen.
async fn wait_for(io: &mut QuicIo, dec: &mut StreamDecoder, timeout: Duration, want: impl Fn(Option<&Control>) -> bool) -> Result<Option<Control>, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        while let Some(f) = dec.next_frame() {
            let Ok(f) = f else { continue };
            let Ok(Some(ev)) = decode_frame(&f) else { continue };
            let c = control::recognise(&ev);
            if want(c.as_ref()) {
                return Ok(c);
            }
        }
        match tokio::time::timeout_at(deadline, io.read_buf(dec.read_buffer())).await {
            Ok(Ok(0)) => return Err("the server closed the stream".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer within {} s", timeout.as_secs())),
        }
    }
}

async fn negotiate(io: &mut QuicIo, dec: &mut StreamDecoder, timeout: Duration) -> Result<(WireFormat, String), String> {
    let offer = wait_for(io, dec, timeout, |c| matches!(c, Some(Control::Offer(_)))).await.map_err(|e| format!("no t-x-takp-v offer: {e} (TAK Server offers TAK protocol v1 once the client has written)"))?;
    let Some(Control::Offer(versions)) = offer else { return Err("no offer".into()) };
    if !versions.contains(&1) {
        return Ok((WireFormat::Xml, format!("the server offers versions {versions:?}, not 1: XML only")));
    }
    let mut b = Vec::new();
    WireFormat::Xml.encode_into(&control::request("takgate-quic-test", CotTime::now(), 1), &mut b);
    io.write_all(&b).await.map_err(|e| format!("writing the request: {e}"))?;
    match wait_for(io, dec, timeout, |c| matches!(c, Some(Control::Response(_)))).await? {
        Some(Control::Response(true)) => Ok((WireFormat::ProtoStream, "TAK protocol v1 (protobuf) agreed".into())),
        _ => Err("the server refused TAK protocol v1 (t-x-takp-r status=false)".into()),
    }
}
