//! `takgate bench`: a load harness for any TAK server or gateway (takgate, taky, TAK
//! Server, OpenTAKServer). Every run is bounded in time, clients ramp up gradually, a live
//! progress line goes to stderr, a summary to stdout (`--json` for machines). Targets that
//! are not on loopback need `--allow-remote`.

pub mod conn;
pub mod hist;
pub mod cluster;
pub mod spokes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use conn::{bench_event, bench_event_at, classify, now_micros, Dial, Seen};
use hist::Histogram;

/// Options shared by the stream scenarios.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// HOST:PORT of the TAK server or gateway under test (`bench clients`: several,
    /// comma-separated, spread the clients across them).
    #[arg(long)]
    pub target: String,
    /// Connect with TLS, trusting this CA.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate and key for mutual TLS.
    #[arg(long)]
    pub cert: Option<std::path::PathBuf>,
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
    /// Name to verify in the server certificate (default: the target host).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Negotiate TAK protocol v1 (protobuf) on every connection.
    #[arg(long)]
    pub proto: bool,
    /// Connect over QUIC (TAK's ALPN takstream, as ATAK 5.5's `host:port:quic`); needs
    /// --ca, --cert and --key.
    #[arg(long)]
    pub quic: bool,
    /// Allow a target that is not on loopback.
    #[arg(long)]
    pub allow_remote: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Target {
    /// One dial per comma-separated target.
    pub async fn dials(&self) -> Result<Vec<Dial>, String> {
        let mut out = vec![];
        for t in self.target.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            out.push(Target { target: t.to_owned(), ..self.clone() }.dial().await?);
        }
        if out.is_empty() {
            return Err("--target: no HOST:PORT given".into());
        }
        Ok(out)
    }

    pub async fn dial(&self) -> Result<Dial, String> {
        let addr = tokio::net::lookup_host(&self.target).await.map_err(|e| format!("{}: {e}", self.target))?.next().ok_or("target resolves to nothing")?;
        if !addr.ip().is_loopback() && !self.allow_remote {
            return Err(format!("{addr} is not on loopback: load tests against other hosts need --allow-remote"));
        }
        let host = self.server_name.clone().unwrap_or_else(|| self.target.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']).to_owned()).unwrap_or_default());
        if self.quic {
            let (Some(ca), Some(cert), Some(key)) = (&self.ca, &self.cert, &self.key) else { return Err("--quic needs --ca, --cert and --key (TAK's QUIC requires a client certificate)".into()) };
            let settings = crate::link::quic::QuicSettings { idle_timeout: crate::link::quic::DEFAULT_IDLE_TIMEOUT, keep_alive: Some(crate::link::quic::DEFAULT_KEEP_ALIVE), stream_window: 4 << 20 };
            let config = crate::link::quic::client_config(ca, Some((cert, key)), &[], &settings)?;
            let local: std::net::SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
            let endpoints = (0..conn::QUIC_ENDPOINTS).map(|_| crate::link::quic::bind(local, None)).collect::<Result<Vec<_>, _>>().map_err(|e| format!("UDP socket: {e}"))?;
            let quic = Arc::new(conn::QuicDial { config, name: host, endpoints, next: AtomicU64::new(0) });
            return Ok(Dial { addr, tls: None, quic: Some(quic), proto: self.proto });
        }
        let tls = match &self.ca {
            None => None,
            Some(ca) => {
                let cc = crate::link::tls::client_config(ca, self.cert.as_deref().zip(self.key.as_deref())).map_err(|e| e.to_string())?;
                let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(cc)), name))
            }
        };
        Ok(Dial { addr, tls, quic: None, proto: self.proto })
    }
}

#[derive(Default)]
struct Live {
    connected: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    disconnects: AtomicU64,
    errors: AtomicU64,
}

fn progress(live: &Live, started: Instant, last: &mut (u64, u64, Instant), extra: &str) {
    let (s, r) = (live.sent.load(Relaxed), live.received.load(Relaxed));
    let dt = last.2.elapsed().as_secs_f64().max(1e-3);
    eprint!(
        "\r t={:>4.0}s connected={:<6} sent/s={:<9.0} delivered/s={:<10.0} disconnects={} {extra}   ",
        started.elapsed().as_secs_f64(),
        live.connected.load(Relaxed),
        (s - last.0) as f64 / dt,
        (r - last.1) as f64 / dt,
        live.disconnects.load(Relaxed)
    );
    *last = (s, r, Instant::now());
}

/// `clients`: N streaming clients, each sending its own position report at R Hz and
/// reading everything.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Number of clients.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub clients: u32,
    /// Position reports per second per client.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Seconds of measurement (after ramp-up and warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seconds over which clients connect.
    #[arg(long, default_value_t = 5.0)]
    pub ramp: f64,
    /// Bytes of padding in each event's remarks.
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
}

#[derive(Debug, Serialize)]
pub struct ClientsSummary {
    pub scenario: &'static str,
    pub target: String,
    pub transport: &'static str,
    pub format: &'static str,
    pub clients: u32,
    pub connected: u64,
    pub rate_hz: f64,
    pub duration_s: f64,
    pub sent_in_window: u64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub delivered_ratio: f64,
    pub deliveries_per_s: f64,
    pub completeness_min: f64,
    pub completeness_median: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub pings_sent: u64,
    pub pongs: u64,
    pub disconnects: u64,
    pub connect_errors: u64,
}

struct ClientResult {
    received_in_window: u64,
    hist: Histogram,
    pongs: u64,
}

/// The measurement window of `clients`: only events sent in it count, on both ends.
#[derive(Clone, Copy)]
struct Window {
    start_us: u64,
    end_us: u64,
    stop_at: Instant,
}

impl Window {
    fn has(&self, t: u64) -> bool {
        t >= self.start_us && t < self.end_us
    }
}

pub async fn clients(a: ClientsArgs) -> Result<ClientsSummary, String> {
    let dials = a.target.dials().await?;
    let n = a.clients.max(1);
    let live = Arc::new(Live::default());
    let started = Instant::now();
    // Window: after everyone is connected plus a warm-up.
    let warm = Duration::from_secs_f64(a.ramp + 2.0);
    let start_us = now_micros() + warm.as_micros() as u64;
    let w = Window { start_us, end_us: start_us + (a.duration * 1e6) as u64, stop_at: Instant::now() + warm + Duration::from_secs_f64(a.duration + 2.0) };
    let sent_in_window = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let delay = Duration::from_secs_f64(a.ramp * i as f64 / n as f64);
            tokio::spawn(bench_client(i, delay, dials[i as usize % dials.len()].clone(), live.clone(), sent_in_window.clone(), w, a.rate, a.pad))
        })
        .collect();
    let mut last = (0, 0, Instant::now());
    let joined = futures_join(tasks);
    tokio::pin!(joined);
    let results = loop {
        tokio::select! {
            r = &mut joined => break r,
            _ = tokio::time::sleep(Duration::from_secs(1)) => progress(&live, started, &mut last, ""),
        }
    };
    eprintln!();
    let results: Vec<ClientResult> = results.into_iter().flatten().collect();
    Ok(clients_summary(&a, n, &results, &live, sent_in_window.load(Relaxed)))
}

/// One bench client: connects after `delay`, sends at `rate` Hz and reads everything until
/// the window's end.
#[allow(clippy::too_many_arguments)]
async fn bench_client(i: u32, delay: Duration, dial: Dial, live: Arc<Live>, sent_in_window: Arc<AtomicU64>, w: Window, rate: f64, pad: usize) -> Option<ClientResult> {
    tokio::time::sleep(delay).await;
    let (io, dec, format) = match dial.connect().await {
        Ok(c) => c,
        Err(e) => {
            if live.errors.fetch_add(1, Relaxed) < 3 {
                eprintln!("\nconnect: {e}");
            }
            return None;
        }
    };
    live.connected.fetch_add(1, Relaxed);
    let (rd, wr) = tokio::io::split(io);
    let writer = tokio::spawn(bench_sender(i, wr, format, live.clone(), sent_in_window, w, rate, pad));
    let res = bench_reader(i, rd, dec, &live, w).await;
    writer.abort();
    Some(res)
}

/// Sends a ping, then one position report per period until the window's end.
#[allow(clippy::too_many_arguments)]
async fn bench_sender(i: u32, mut wr: impl tokio::io::AsyncWrite + Unpin, format: crate::codec::WireFormat, live: Arc<Live>, sent_in_window: Arc<AtomicU64>, w: Window, rate: f64, pad: usize) {
    let mut buf = Vec::with_capacity(1024);
    format.encode_into(&crate::cot::control::ping(&format!("bench-{i}"), crate::cot::CotTime::now()), &mut buf);
    if wr.write_all(&buf).await.is_err() {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period.mul_f64(fastrand::f64()), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    while Instant::now() < w.stop_at {
        tick.tick().await;
        // The time in the event decides the window on both ends.
        let t = now_micros();
        buf.clear();
        format.encode_into(&bench_event_at(i, seq, pad, false, t), &mut buf);
        seq += 1;
        if wr.write_all(&buf).await.is_err() {
            break;
        }
        live.sent.fetch_add(1, Relaxed);
        if w.has(t) {
            sent_in_window.fetch_add(1, Relaxed);
        }
    }
}

/// Reads until the window's end: what the other clients sent in the window, with latency.
async fn bench_reader(i: u32, mut rd: impl tokio::io::AsyncRead + Unpin, mut dec: crate::codec::StreamDecoder, live: &Live, w: Window) -> ClientResult {
    let mut res = ClientResult { received_in_window: 0, hist: Histogram::default(), pongs: 0 };
    loop {
        let r = tokio::select! {
            r = rd.read_buf(dec.read_buffer()) => r,
            _ = tokio::time::sleep_until(w.stop_at.into()) => return res,
        };
        if matches!(r, Ok(0) | Err(_)) {
            live.disconnects.fetch_add(1, Relaxed);
            return res;
        }
        while let Some(f) = dec.next_frame() {
            let Ok(f) = f else { continue };
            match classify(&f) {
                Seen::Bench(c, _, t) if c != i => {
                    live.received.fetch_add(1, Relaxed);
                    if w.has(t) {
                        res.received_in_window += 1;
                        res.hist.record(now_micros().saturating_sub(t));
                    }
                }
                Seen::Pong => res.pongs += 1,
                _ => {}
            }
        }
    }
}

fn clients_summary(a: &ClientsArgs, n: u32, results: &[ClientResult], live: &Live, sent: u64) -> ClientsSummary {
    let mut hist = Histogram::default();
    for r in results {
        hist.merge(&r.hist);
    }
    let connected = live.connected.load(Relaxed);
    let per_client_expected = if connected > 0 { sent as f64 * (connected as f64 - 1.0) / connected as f64 } else { 0.0 };
    let mut comp: Vec<f64> = results.iter().map(|r| if per_client_expected > 0.0 { r.received_in_window as f64 / per_client_expected } else { 0.0 }).collect();
    comp.sort_by(|a, b| a.total_cmp(b));
    let delivered: u64 = results.iter().map(|r| r.received_in_window).sum();
    let expected = sent * connected.saturating_sub(1);
    let ms = |us: u64| us as f64 / 1000.0;
    ClientsSummary {
        scenario: "clients",
        target: a.target.target.clone(),
        transport: if a.target.quic { "quic" } else if a.target.ca.is_some() { "tls" } else { "tcp" },
        format: if a.target.proto { "protobuf" } else { "xml" },
        clients: n,
        connected,
        rate_hz: a.rate,
        duration_s: a.duration,
        sent_in_window: sent,
        expected_deliveries: expected,
        delivered,
        delivered_ratio: if expected > 0 { delivered as f64 / expected as f64 } else { 0.0 },
        deliveries_per_s: delivered as f64 / a.duration,
        completeness_min: comp.first().copied().unwrap_or(0.0),
        completeness_median: comp.get(comp.len() / 2).copied().unwrap_or(0.0),
        latency_ms_p50: ms(hist.quantile(0.5)),
        latency_ms_p99: ms(hist.quantile(0.99)),
        latency_ms_max: ms(hist.max()),
        pings_sent: connected,
        pongs: results.iter().map(|r| r.pongs).sum(),
        disconnects: live.disconnects.load(Relaxed),
        connect_errors: live.errors.load(Relaxed),
    }
}

/// A stream client that reads until `stop_at`, calling `on_frame` for every frame.
fn receiver(dial: Dial, stop_at: Instant, on_frame: impl Fn(&crate::codec::Frame) + Send + 'static) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok((mut io, mut dec, _)) = dial.connect().await else { return };
        loop {
            dec.buffer_mut().reserve(64 * 1024);
            let r = tokio::select! {
                r = io.read_buf(dec.buffer_mut()) => r,
                _ = tokio::time::sleep_until(stop_at.into()) => break,
            };
            if !matches!(r, Ok(n) if n > 0) {
                break;
            }
            while let Some(f) = dec.next_frame() {
                if let Ok(f) = f {
                    on_frame(&f);
                }
            }
        }
    })
}

async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(v) = t.await {
            out.push(v);
        }
    }
    out
}

/// `fanout`: S senders at full speed, R receivers; deliveries per second.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value_t = 2)]
    pub senders: u32,
    #[arg(long, default_value_t = 50)]
    pub receivers: u32,
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Also run the same load against a plain relay (split after </event>, no parsing)
    /// started in this process, and report takgate's rate as a ratio of it.
    #[arg(long)]
    pub baseline: bool,
    /// Receivers connect here instead of --target (e.g. a second node of a cluster).
    #[arg(long)]
    pub receive_target: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FanoutSummary {
    pub scenario: &'static str,
    pub target: String,
    pub senders: u32,
    pub receivers: u32,
    pub duration_s: f64,
    pub sent: u64,
    pub delivered: u64,
    pub deliveries_per_s: f64,
    pub baseline_deliveries_per_s: Option<f64>,
    pub ratio_to_baseline: Option<f64>,
}

async fn fanout_once(dial: &Dial, rx_dial: &Dial, senders: u32, receivers: u32, duration: f64) -> (u64, u64) {
    fanout_paced(dial, rx_dial, senders, receivers, duration, None).await
}

/// Fanout, with the senders together held to `rate` events/s when given.
async fn fanout_paced(dial: &Dial, rx_dial: &Dial, senders: u32, receivers: u32, duration: f64, rate: Option<f64>) -> (u64, u64) {
    let (sent, delivered, _) = fanout_timed(dial, rx_dial, senders, receivers, duration, rate).await;
    (sent, delivered)
}

/// `fanout_paced`, with the latency (µs) of what the receivers counted.
async fn fanout_timed(dial: &Dial, rx_dial: &Dial, senders: u32, receivers: u32, duration: f64, rate: Option<f64>) -> (u64, u64, Histogram) {
    let live = Arc::new(Live::default());
    let stop_at = Instant::now() + Duration::from_secs_f64(duration + 1.0);
    let measure_from = Instant::now() + Duration::from_secs(1);
    let counted = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(std::sync::Mutex::new(Histogram::default()));
    let rx_tasks: Vec<_> = (0..receivers)
        .map(|_| {
            let (counted, hist) = (counted.clone(), hist.clone());
            receiver(rx_dial.clone(), stop_at, move |f| {
                if Instant::now() >= measure_from {
                    counted.fetch_add(1, Relaxed);
                    if let Seen::Bench(_, _, t) = classify(f) {
                        crate::sync::lock(&hist).record(now_micros().saturating_sub(t));
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut tx_tasks = vec![];
    for s in 0..senders {
        let (dial, live) = (dial.clone(), live.clone());
        tx_tasks.push(tokio::spawn(async move {
            let Ok((mut io, _, format)) = dial.connect().await else { return };
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut seq = 0u64;
            let started = Instant::now();
            let per_sender = rate.map(|r| r / senders as f64);
            while Instant::now() < stop_at {
                if let Some(r) = per_sender {
                    let due = started + Duration::from_secs_f64(seq as f64 / r);
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                buf.clear();
                for _ in 0..32 {
                    format.encode_into(&bench_event(1_000_000 + s, seq, 0, true), &mut buf);
                    seq += 1;
                }
                if io.write_all(&buf).await.is_err() {
                    break;
                }
                if Instant::now() >= measure_from {
                    live.sent.fetch_add(32, Relaxed);
                }
            }
        }));
    }
    futures_join(tx_tasks).await;
    futures_join(rx_tasks).await;
    let h = crate::sync::lock(&hist).clone();
    (live.sent.load(Relaxed), counted.load(Relaxed), h)
}

pub async fn fanout(a: FanoutArgs) -> Result<FanoutSummary, String> {
    let dial = a.target.dial().await?;
    eprintln!("fanout: {} senders -> {} receivers for {} s against {}", a.senders, a.receivers, a.duration, a.target.target);
    let rx_dial = match &a.receive_target {
        Some(t) => Target { target: t.clone(), ..a.target.clone() }.dial().await?,
        None => dial.clone(),
    };
    let (sent, delivered) = fanout_once(&dial, &rx_dial, a.senders, a.receivers, a.duration).await;
    let rate = delivered as f64 / a.duration;
    let mut baseline = None;
    if a.baseline {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let addr: SocketAddr = l.local_addr().map_err(|e| e.to_string())?;
        let relay = tokio::spawn(conn::relay(l));
        eprintln!("fanout: same load against the plain relay on {addr}");
        let d = Dial { addr, tls: None, quic: None, proto: false };
        let (_, b) = fanout_once(&d, &d, a.senders, a.receivers, a.duration).await;
        relay.abort();
        baseline = Some(b as f64 / a.duration);
    }
    Ok(FanoutSummary {
        scenario: "fanout",
        target: a.target.target.clone(),
        senders: a.senders,
        receivers: a.receivers,
        duration_s: a.duration,
        sent,
        delivered,
        deliveries_per_s: rate,
        baseline_deliveries_per_s: baseline,
        ratio_to_baseline: baseline.map(|b| if b > 0.0 { rate / b } else { 0.0 }),
    })
}

/// `federation`: events per second across one federation link. Senders at full speed into
/// node A, one receiver on node B. Without --target, two takgate nodes are started in this
/// process, federated over loopback with a fresh CA (the link under test is real: mutual
/// TLS, v1 frames or v2 gRPC).
#[derive(Debug, Clone, clap::Args)]
pub struct FederationArgs {
    /// v1 or v2.
    #[arg(long, default_value = "v2")]
    pub protocol: String,
    /// Node A's client port (TCP); with --receive-target, run against running gateways.
    #[arg(long)]
    pub target: Option<String>,
    /// Node B's client port (TCP).
    #[arg(long)]
    pub receive_target: Option<String>,
    #[arg(long, default_value_t = 2)]
    pub senders: u32,
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Offered load in events/s (all senders together); default: as fast as they can.
    #[arg(long)]
    pub rate: Option<f64>,
    /// v2: the two nodes federate through a takgate Federation Hub (both connect to it); the
    /// direct link is measured first in the same run, for the ratio.
    #[arg(long)]
    pub hub: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct FederationSummary {
    /// Through a Federation Hub; then the direct link's rate of the same run and the ratio.
    pub via_hub: bool,
    pub direct_events_per_s: Option<f64>,
    pub ratio_to_direct: Option<f64>,
    /// Events the hub did not forward because the receiving federate's queue was full.
    pub hub_dropped: Option<u64>,
    pub scenario: &'static str,
    pub protocol: String,
    pub senders: u32,
    pub duration_s: f64,
    pub offered_per_s: Option<f64>,
    pub sent: u64,
    pub delivered: u64,
    pub events_per_s: f64,
    pub delivered_pct: f64,
}

pub async fn federation(a: FederationArgs) -> Result<FederationSummary, String> {
    let transport = match a.protocol.as_str() {
        "v1" => "federation-v1",
        "v2" => "federation-v2",
        p => return Err(format!("--protocol {p:?}: use v1 or v2")),
    };
    if a.hub && (transport != "federation-v2" || a.target.is_some()) {
        return Err("--hub runs its own nodes and hub over v2".into());
    }
    let direct = if a.hub { Some(Box::pin(federation(FederationArgs { hub: false, ..a.clone() })).await?.events_per_s) } else { None };
    let mut nodes = vec![];
    let (send_to, recv_from) = match (&a.target, &a.receive_target) {
        (Some(t), Some(r)) => (t.clone(), r.clone()),
        (None, None) => {
            let (started, ta, tb) = local_nodes(transport, a.hub).await?;
            nodes = started;
            (ta, tb)
        }
        _ => return Err("give both --target (node A) and --receive-target (node B), or neither".into()),
    };
    eprintln!("federation ({}): {} senders into {send_to}, 1 receiver on {recv_from}, {} s", a.protocol, a.senders, a.duration);
    let dial = Target { target: send_to, ca: None, cert: None, key: None, server_name: None, proto: false, quic: false, allow_remote: false, json: a.json }.dial().await?;
    let rx_dial = Target { target: recv_from, ca: None, cert: None, key: None, server_name: None, proto: false, quic: false, allow_remote: false, json: a.json }.dial().await?;
    let (sent, delivered) = fanout_paced(&dial, &rx_dial, a.senders, 1, a.duration, a.rate).await;
    let hub_dropped = nodes.iter().find_map(|n| n.control().hub.as_ref().map(|h| h.counters.drops_queue_full.load(std::sync::atomic::Ordering::Relaxed)));
    for n in nodes {
        n.shutdown().await;
    }
    let events_per_s = delivered as f64 / a.duration;
    Ok(FederationSummary {
        via_hub: a.hub,
        direct_events_per_s: direct,
        ratio_to_direct: direct.filter(|d| *d > 0.0).map(|d| events_per_s / d),
        hub_dropped,
        scenario: "federation",
        protocol: a.protocol.clone(),
        senders: a.senders,
        duration_s: a.duration,
        offered_per_s: a.rate,
        sent,
        delivered,
        events_per_s,
        delivered_pct: if sent > 0 { 100.0 * delivered as f64 / sent as f64 } else { 0.0 },
    })
}

/// Two takgate nodes federated over loopback with a fresh CA (directly, or both as spokes
/// of a takgate hub); the nodes (and hub) and the two client ports.
async fn local_nodes(transport: &str, hub: bool) -> Result<(Vec<crate::runtime::Gateway>, String, String), String> {
    let dir = std::env::temp_dir().join(format!("takgate-bench-fed-{}", std::process::id()));
    let ca = crate::certs::Authority::new(&dir, "takgate bench CA")?;
    let (ac, ak) = ca.leaf("node-a", &["localhost", "127.0.0.1"])?;
    let (bc, bk) = ca.leaf("node-b", &["localhost", "127.0.0.1"])?;
    let node = |id: &str, mode: &str, addr: &str, cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "[node]\nid = \"{id}\"\n[log]\nlevel = \"warn\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\nqueue_depth = 65536\n\
             [[link]]\nname = \"fed\"\ntransport = \"{transport}\"\nmode = \"{mode}\"\naddress = \"{addr}\"\n{}queue_depth = 65536\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            if mode == "connect" { "server_name = \"localhost\"\n" } else { "" },
            ca.ca.display(),
            cert.display(),
            key.display()
        )
    };
    let start = |t: String| async move { crate::runtime::start(&crate::config::Config::parse(&t).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string()) };
    let mut nodes = vec![];
    let (na, nb) = if hub {
        let h = bench_hub(&ca, &dir).await?;
        let at = h.control().hub.as_ref().map(|h| h.address.to_string()).ok_or("no hub")?;
        nodes.push(h);
        (start(node("node-a", "connect", &at, &ac, &ak)).await?, start(node("node-b", "connect", &at, &bc, &bk)).await?)
    } else {
        let na = start(node("node-a", "listen", "127.0.0.1:0", &ac, &ak)).await?;
        let fed = na.local_addr("fed").ok_or("node A has no federation address")?;
        let nb = start(node("node-b", "connect", &fed.to_string(), &bc, &bk)).await?;
        (na, nb)
    };
    let (ta, tb) = (na.local_addr("c").ok_or("no client port")?.to_string(), nb.local_addr("c").ok_or("no client port")?.to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    while na.router().stats().await.iter().all(|s| !s.transport.starts_with("federation")) || nb.router().stats().await.iter().all(|s| !s.transport.starts_with("federation")) {
        if Instant::now() > deadline {
            return Err("the two nodes did not federate within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes.push(na);
    nodes.push(nb);
    Ok((nodes, ta, tb))
}

/// A takgate hub whose policy has the bench CA as one interconnected group (everything
/// between its members).
async fn bench_hub(ca: &crate::certs::Authority, dir: &std::path::Path) -> Result<crate::runtime::Gateway, String> {
    let cfg = bench_hub_config(ca, dir, "127.0.0.1:0")?;
    crate::runtime::start(&crate::config::Config::parse(&cfg).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())
}

/// The bench hub's configuration, listening on `address`.
fn bench_hub_config(ca: &crate::certs::Authority, dir: &std::path::Path, address: &str) -> Result<String, String> {
    let (hc, hk) = ca.leaf("hub", &["localhost", "127.0.0.1"])?;
    let der = crate::link::tls::load_certs(&ca.ca).map_err(|e| e.to_string())?.remove(0);
    let policy = dir.join("bench-policy.json");
    let group = crate::hub::identity::ca_group_id(&der)?;
    std::fs::write(&policy, format!(r#"{{"name":"bench","graphData":{{"nodes":[{{"graphType":"GroupCell","id":"g","federation":{{"name":{},"interconnected":true}}}}]}}}}"#, serde_json::Value::String(group))).map_err(|e| e.to_string())?;
    Ok(format!(
        "[node]\nid = \"bench-hub\"\n[log]\nlevel = \"warn\"\n[hub]\naddress = \"{address}\"\nv1_address = \"\"\nqueue_depth = 65536\nreplay_hours = 0\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\npolicy = \"{}\"\n",
        ca.ca.display(),
        hc.display(),
        hk.display(),
        policy.display()
    ))
}

/// `idle`: N connections that only hold still; the gateway's resident memory per connection.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub clients: u32,
    /// The gateway's process id, to read its resident memory (VmRSS) before and after.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Seconds to hold the connections after the last one is up.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
}

#[derive(Debug, Serialize)]
pub struct IdleSummary {
    pub scenario: &'static str,
    pub clients: u32,
    pub connected: u64,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub rss_per_client_kib: Option<f64>,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

pub async fn idle(a: IdleArgs) -> Result<IdleSummary, String> {
    let dial = a.target.dial().await?;
    let before = a.pid.and_then(rss_kib);
    let mut held = Vec::with_capacity(a.clients as usize);
    let mut failed = 0;
    for i in 0..a.clients {
        match dial.connect().await {
            Ok(c) => held.push(c),
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("connect #{i}: {e}");
                }
            }
        }
        if i % 1000 == 999 {
            eprint!("\r connected {}   ", held.len());
        }
    }
    eprintln!();
    tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    let after = a.pid.and_then(rss_kib);
    let n = held.len() as u64;
    Ok(IdleSummary {
        scenario: "idle",
        clients: a.clients,
        connected: n,
        rss_before_kib: before,
        rss_after_kib: after,
        rss_per_client_kib: before.zip(after).filter(|_| n > 0).map(|(b, a)| (a as f64 - b as f64) / n as f64),
    })
}

/// `udp` (or multicast): datagram senders into the gateway, stream receivers out; loss.
#[derive(Debug, Clone, clap::Args)]
pub struct UdpArgs {
    #[command(flatten)]
    pub target: Target,
    /// Where datagrams go: the gateway's UDP port or a multicast group it joined.
    #[arg(long)]
    pub udp: SocketAddr,
    /// Outgoing interface address for a multicast --udp.
    #[arg(long, default_value = "127.0.0.1")]
    pub multicast_if: std::net::Ipv4Addr,
    /// Datagrams per second, in total.
    #[arg(long, default_value_t = 100_000.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 2)]
    pub senders: u32,
    #[arg(long, default_value_t = 1)]
    pub receivers: u32,
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

#[derive(Debug, Serialize)]
pub struct UdpSummary {
    pub scenario: &'static str,
    pub udp: String,
    pub rate_target: f64,
    pub sent: u64,
    pub sent_per_s: f64,
    pub received_per_receiver: f64,
    pub loss: f64,
}

pub async fn udp(a: UdpArgs) -> Result<UdpSummary, String> {
    if !a.udp.ip().is_loopback() && !a.udp.ip().is_multicast() && !a.target.allow_remote {
        return Err(format!("{} is not on loopback: load tests against other hosts need --allow-remote", a.udp));
    }
    let dial = a.target.dial().await?;
    let stop_send = Instant::now() + Duration::from_secs_f64(a.duration + 0.5);
    let stop_rx = stop_send + Duration::from_secs(2);
    let counted = Arc::new(AtomicU64::new(0));
    let rx_tasks: Vec<_> = (0..a.receivers)
        .map(|_| {
            let counted = counted.clone();
            receiver(dial.clone(), stop_rx, move |f| {
                if let Seen::Bench(c, _, _) = classify(f) {
                    if c >= 2_000_000 {
                        counted.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let send_start = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let mut tx_tasks = vec![];
    let per_sender = a.rate / a.senders.max(1) as f64;
    for s in 0..a.senders {
        let (sent, target, mif) = (sent.clone(), a.udp, a.multicast_if);
        // A plain thread with sendmmsg: the generator must outrun the gateway it measures.
        tx_tasks.push(tokio::task::spawn_blocking(move || {
            let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0") else { return };
            if target.ip().is_multicast() {
                let _ = socket2::SockRef::from(&sock).set_multicast_if_v4(&mif);
            }
            let _ = socket2::SockRef::from(&sock).set_send_buffer_size(4 << 20);
            let start = Instant::now();
            let mut seq = 0u64;
            let mut batch: Vec<Vec<u8>> = Vec::with_capacity(64);
            while Instant::now() < stop_send {
                let due = (start.elapsed().as_secs_f64() * per_sender) as u64;
                if seq >= due {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                let k = (due - seq).min(64) as usize;
                batch.resize_with(k, Vec::new);
                for b in batch.iter_mut() {
                    b.clear();
                    crate::codec::WireFormat::Xml.encode_into(&bench_event(2_000_000 + s, seq, 0, true), b);
                    seq += 1;
                }
                #[cfg(target_os = "linux")]
                let n = crate::transport::mmsg::send_batch(&sock, target, &batch).unwrap_or(0);
                #[cfg(not(target_os = "linux"))]
                let n = batch.iter().filter(|b| sock.send_to(b, target).is_ok()).count();
                sent.fetch_add(n as u64, Relaxed);
            }
        }));
    }
    futures_join(tx_tasks).await;
    futures_join(rx_tasks).await;
    let sent = sent.load(Relaxed);
    let per = counted.load(Relaxed) as f64 / a.receivers.max(1) as f64;
    Ok(UdpSummary {
        scenario: "udp",
        udp: a.udp.to_string(),
        rate_target: a.rate,
        sent,
        sent_per_s: sent as f64 / stop_send.saturating_duration_since(send_start).as_secs_f64().max(1e-3),
        received_per_receiver: per,
        loss: if sent > 0 { 1.0 - per / sent as f64 } else { 0.0 },
    })
}

/// Prints a summary as JSON or as aligned `key: value` lines.
pub fn print<T: Serialize>(s: &T, json: bool) {
    let v = serde_json::to_value(s).unwrap_or_default();
    if json {
        println!("{v}");
        return;
    }
    if let serde_json::Value::Object(m) = v {
        for (k, v) in m {
            let v = match v {
                serde_json::Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            println!("{k:>22}: {v}");
        }
    }
}
