//! The edge defects of issue 16, over real sockets: a reconnect storm against a freshly
//! started binary, the latest picture a new client gets, and the default config's
//! multicast split (GeoChat to the chat group only). (/metrics is parsed by a real
//! OpenMetrics parser in admin.rs; buffer growth is a property in framing_props.rs.)

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{gateway, pli, seq_of, Client};
use takgate::cot::{CotEvent, CotTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The distinct burst clients (`uid="C-…"`, position reports) whose events a client read,
/// counted on whole events.
struct Tally {
    buf: Vec<u8>,
    uids: std::collections::HashSet<Vec<u8>>,
}

impl Tally {
    fn feed(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        while let Some(end) = memchr::memmem::find(&self.buf, b"</event>") {
            let start = memchr::memmem::find(&self.buf[..end], b"<event").unwrap_or(0);
            let head_end = memchr::memchr(b'>', &self.buf[start..end]).map_or(end, |i| start + i);
            let head = &self.buf[start..head_end];
            if let (Some(u), Some(_)) = (memchr::memmem::find(head, b" uid=\"C-"), memchr::memmem::find(head, b" type=\"a-f-G-U-C\"")) {
                let v = &head[u + 6..];
                let q = memchr::memchr(b'"', v).unwrap_or(v.len());
                self.uids.insert(v[..q].to_vec());
            }
            self.buf.drain(..end + 8);
        }
    }
}

/// 1,000 clients connect in one burst to a gateway started a moment before (what a unit's
/// ATAKs do when a radio network comes back) and each sends one position report 1.5 s
/// later: every client gets every other client's report, live (the latest-picture replay
/// is off here, so a connection accepted late would miss them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connections_loses_no_first_event() {
    const N: usize = 1000;
    takgate::link::listen::raise_nofile_limit();
    let addr = free_port();
    let dir = std::env::temp_dir().join(format!("takgate-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("storm.toml");
    std::fs::write(&cfg, format!("[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"{addr}\"\nsend_latest_sa = false\nqueue_depth = 8192\n")).unwrap();
    let _gw = tokio::process::Command::new(env!("CARGO_BIN_EXE_takgate")).args(["run", "--config"]).arg(&cfg).env("RUST_LOG", "warn").kill_on_drop(true).spawn().unwrap();
    assert!(common::listening(addr, 10.0).await, "takgate did not start");
    let t0 = Instant::now();
    let conns = futures_util::future::join_all((0..N).map(|_| tokio::net::TcpStream::connect(addr))).await;
    let conns: Vec<tokio::net::TcpStream> = conns.into_iter().map(|c| c.expect("connect")).collect();
    let connected_in = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut readers = tokio::task::JoinSet::new();
    for (i, mut s) in conns.into_iter().enumerate() {
        readers.spawn(async move {
            let mut b = Vec::new();
            takgate::codec::WireFormat::Xml.encode_into(&pli(&format!("C-{i}"), &format!("CALL-{i}"), 1), &mut b);
            s.write_all(&b).await.unwrap();
            let mut t = Tally { buf: Vec::new(), uids: Default::default() };
            let mut chunk = vec![0u8; 64 * 1024];
            let end = tokio::time::Instant::now() + Duration::from_secs(90);
            while t.uids.len() < N - 1 {
                match tokio::time::timeout_at(end, s.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => t.feed(&chunk[..n]),
                    _ => break,
                }
            }
            t.uids.len()
        });
    }
    let mut counts = vec![];
    while let Some(r) = readers.join_next().await {
        counts.push(r.unwrap());
    }
    let delivered: usize = counts.iter().sum();
    let short = counts.iter().filter(|&&c| c < N - 1).count();
    println!("storm: {N} connections in {:.2} s; {delivered} of {} deliveries ({:.2} %) in {:.1} s; {short} clients short", connected_in.as_secs_f64(), N * (N - 1), 100.0 * delivered as f64 / (N * (N - 1)) as f64, t0.elapsed().as_secs_f64());
    assert_eq!(delivered, N * (N - 1), "every client gets every other client's first report ({short} clients short)");
}

fn with_stale(mut ev: CotEvent, secs: i64) -> CotEvent {
    ev.stale = CotTime(CotTime::now().0 + secs * 1000);
    ev
}

/// A client that connects gets the latest position report of every contact that is not
/// stale and has not left, in its own format once negotiation settles, filtered by its
/// link's policy; `send_latest_sa = false` turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_gets_the_latest_picture() {
    let link = |name: &str, extra: &str| format!("[[link]]\nname = \"{name}\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n{extra}\n");
    let cfg = format!("{}{}{}", link("c", ""), link("quiet", "send_latest_sa = false"), link("no-alpha", "[link.policy]\nuids_deny = [\"ANDROID-A\"]"));
    let gw = gateway(&cfg).await;
    let c = gw.local_addr("c").unwrap();
    let mut alpha = Client::tcp(c).await;
    alpha.send(&pli("ANDROID-A", "ALPHA", 1)).await;
    alpha.send(&pli("ANDROID-A", "ALPHA", 2)).await;
    let mut bravo = Client::tcp(c).await;
    bravo.send(&pli("ANDROID-B", "BRAVO", 1)).await;
    let mut delta = Client::tcp(c).await;
    delta.send(&with_stale(pli("ANDROID-D", "DELTA", 1), 1)).await;
    let mut echo = Client::tcp(c).await;
    echo.send(&pli("ANDROID-E", "ECHO", 1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(bravo); // left: TAK's t-x-d-d removes it from the picture
    tokio::time::sleep(Duration::from_millis(1500)).await; // delta is stale now
    // A new XML client: ALPHA's latest and ECHO, nothing else, without anyone speaking again.
    let mut x = Client::tcp(c).await;
    let mut got: Vec<(String, u32)> = x.drain(Duration::from_millis(2500)).await.iter().filter(|e| e.uid.starts_with("ANDROID-")).map(|e| (e.uid.clone(), seq_of(e).unwrap_or(0))).collect();
    got.sort();
    assert_eq!(got, [("ANDROID-A".to_string(), 2), ("ANDROID-E".to_string(), 1)], "the latest report of each live contact, once each");
    // A client that negotiates protobuf gets the picture in protobuf, after the switch.
    let mut p = Client::tcp(c).await;
    p.negotiate().await;
    let frames_before = p.frames;
    let got: Vec<String> = p.drain(Duration::from_millis(2500)).await.iter().filter(|e| e.uid.starts_with("ANDROID-")).map(|e| e.uid.clone()).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(p.frames.0, frames_before.0, "no XML after the switch: the picture came as protobuf");
    // Off, and filtered by policy.
    let mut q = Client::tcp(gw.local_addr("quiet").unwrap()).await;
    assert!(q.drain(Duration::from_millis(1500)).await.iter().all(|e| !e.uid.starts_with("ANDROID-")), "send_latest_sa = false: no picture");
    let mut n = Client::tcp(gw.local_addr("no-alpha").unwrap()).await;
    let got: Vec<String> = n.drain(Duration::from_millis(1500)).await.iter().filter(|e| e.uid.starts_with("ANDROID-")).map(|e| e.uid.clone()).collect();
    assert_eq!(got, ["ANDROID-E"], "the link's policy filters the picture");
    drop((alpha, delta, echo));
    gw.shutdown().await;
}

/// A UDP socket joined to `group` on loopback.
fn member(group: Ipv4Addr, port: u16) -> std::net::UdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&socket2::SockAddr::from(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))).unwrap();
    s.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s.into()
}

fn types_on(s: &std::net::UdpSocket, group: Ipv4Addr, wait: Duration) -> Vec<String> {
    let end = Instant::now() + wait;
    let mut out = vec![];
    let mut b = vec![0u8; 65536];
    while Instant::now() < end {
        if let Ok((n, from)) = s.recv_from(&mut b) {
            let _ = (from, group);
            if let Ok(takgate::codec::mesh::Datagram { event: Some(ev), .. }) = takgate::codec::mesh::decode(&b[..n]) {
                if ev.uid.starts_with("EDGE-") {
                    out.push(ev.cot_type);
                }
            }
        }
    }
    out
}

/// The embedded default config sends GeoChat (b-t-f and its receipts) to the GeoChat
/// group only, and everything else to the SA group only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_config_keeps_position_reports_off_the_chat_group() {
    let (sa_port, chat_port) = (common::free_udp_port(), common::free_udp_port());
    let text = takgate::config::DEFAULT_TOML
        .replace("0.0.0.0:8087", "127.0.0.1:0")
        .replace("address = \"127.0.0.1:8090\"", "address = \"127.0.0.1:0\"")
        .replace("\"239.2.3.1:6969\"", &format!("\"239.2.3.1:{sa_port}\"\ninterfaces = [\"127.0.0.1\"]"))
        .replace("\"224.10.10.1:17012\"", &format!("\"224.10.10.1:{chat_port}\"\ninterfaces = [\"127.0.0.1\"]"));
    assert!(text.contains(&sa_port.to_string()) && text.contains(&chat_port.to_string()), "the default config's groups moved");
    let gw = gateway(&text).await;
    let (sa, chat) = (member("239.2.3.1".parse().unwrap(), sa_port), member("224.10.10.1".parse().unwrap(), chat_port));
    let mut c = Client::tcp(gw.local_addr("tcp-clients").unwrap()).await;
    c.send(&pli("EDGE-A", "ALPHA", 1)).await;
    let now = CotTime::now();
    for (uid, t) in [("EDGE-CHAT", "b-t-f"), ("EDGE-DELIVERED", "b-t-f-d"), ("EDGE-READ", "b-t-f-r"), ("EDGE-MARKER", "a-h-G")] {
        let mut ev = CotEvent::new(uid, t, "h-g-i-g-o", now, 60);
        ev.detail.xml = r#"<remarks source="BAO.F.ATAK.EDGE-A" to="All Chat Rooms">hello</remarks>"#.into();
        c.send(&ev).await;
    }
    // both groups read at once, for the same window
    let chat_reader = std::thread::spawn(move || types_on(&chat, "224.10.10.1".parse().unwrap(), Duration::from_millis(2000)));
    let on_sa = types_on(&sa, "239.2.3.1".parse().unwrap(), Duration::from_millis(2000));
    let on_chat = chat_reader.join().unwrap();
    assert_eq!(on_sa, ["a-f-G-U-C", "a-h-G"], "the SA group: everything but GeoChat");
    assert_eq!(on_chat, ["b-t-f", "b-t-f-d", "b-t-f-r"], "the chat group: GeoChat and its receipts only");
    gw.shutdown().await;
}
