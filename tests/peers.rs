//! takgate with real TAK peers: pytak clients over TCP (XML and protobuf), TLS with mutual
//! certificates, UDP and multicast; takgate as a client of taky.

mod common;

use std::time::Duration;

use common::certs::Pki;
use common::py::{args, peer};
use common::{gateway, pli, seq_of, Client};

fn link(name: &str, transport: &str, mode: &str, address: &str, extra: &str) -> String {
    format!("[[link]]\nname = \"{name}\"\ntransport = \"{transport}\"\nmode = \"{mode}\"\naddress = \"{address}\"\n{extra}\n")
}

/// Two pytak clients, one sending `n` events (seq 1..=n) after the other has connected.
async fn pytak_pair(listener_args: String, sender_args: String, n: u32) -> (common::py::PeerRun, common::py::PeerRun) {
    let rx = tokio::spawn(peer(args(&listener_args), 30.0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tx = peer(args(&format!("{sender_args} --send {n} --interval 0.05 --listen 1")), 30.0).await;
    (rx.await.unwrap(), tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytak_clients_exchange_cot_over_tcp() {
    let gw = gateway(&link("c", "tcp", "listen", "127.0.0.1:0", "")).await;
    let url = format!("tcp://{}", gw.local_addr("c").unwrap());
    let (rx, tx) = pytak_pair(format!("--url {url} --uid B --callsign BRAVO --listen 5"), format!("--url {url} --uid A --callsign ALPHA"), 5).await;
    assert_eq!(rx.seqs_from("A"), [1, 2, 3, 4, 5], "receiver: {:?} {}", rx.events, rx.stderr);
    assert!(rx.events.iter().filter(|e| e["uid"] == "A").all(|e| e["callsign"] == "ALPHA"));
    assert_eq!(tx.done.as_ref().unwrap()["sent"], 5, "{}", tx.stderr);
    assert!(tx.seqs_from("A").is_empty(), "no echo");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytak_protobuf_client_and_xml_client_see_each_other() {
    let gw = gateway(&link("c", "tcp", "listen", "127.0.0.1:0", "")).await;
    let addr = gw.local_addr("c").unwrap();
    let url = format!("tcp://{addr}");
    // pytak sends stream-framed protobuf without negotiating (TAK_PROTO=1); takgate reads it.
    let mut xml_client = Client::tcp(addr).await;
    let proto_rx = tokio::spawn(peer(args(&format!("--url {url} --uid P --callsign PAPA --proto --listen 4")), 30.0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    xml_client.send(&pli("X", "XRAY", 7)).await;
    let tx = peer(args(&format!("--url {url} --uid Q --callsign QUEBEC --proto --send 3 --interval 0.05 --listen 0.5")), 30.0).await;
    assert_eq!(tx.done.as_ref().unwrap()["sent"], 3, "{}", tx.stderr);
    let got: Vec<_> = xml_client.drain(Duration::from_millis(500)).await.iter().filter(|e| e.uid == "Q").filter_map(seq_of).collect();
    assert_eq!(got, [1, 2, 3], "the XML client gets the protobuf client's events");
    let proto_rx = proto_rx.await.unwrap();
    assert_eq!(proto_rx.seqs_from("X"), [7], "{:?} {}", proto_rx.events, proto_rx.stderr);
    assert_eq!(proto_rx.seqs_from("Q"), [1, 2, 3]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytak_clients_over_mutual_tls_and_identity() {
    let mut pki = Pki::new("tls");
    let (ccert, ckey) = pki.leaf("alpha-client", false);
    let (bcert, bkey) = pki.leaf("bravo-client", false);
    let extra = format!("ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nhandshake_timeout_secs = 1", pki.path(&pki.ca), pki.path(&pki.server_cert), pki.path(&pki.server_key));
    let gw = gateway(&link("tls", "tls", "listen", "127.0.0.1:0", &extra)).await;
    let addr = gw.local_addr("tls").unwrap();
    // Half-open handshakes must not block anyone: a few silent TCP connections first.
    let silent: Vec<_> = futures_util_join(addr, 5).await;
    let url = format!("tls://{addr}");
    let ca = pki.path(&pki.ca);
    let (rx, tx) = pytak_pair(
        format!("--url {url} --cert {} --key {} --ca {ca} --uid B --callsign BRAVO --listen 5", bcert.display(), bkey.display()),
        format!("--url {url} --cert {} --key {} --ca {ca} --uid A --callsign ALPHA", ccert.display(), ckey.display()),
        4,
    )
    .await;
    assert_eq!(rx.seqs_from("A"), [1, 2, 3, 4], "{:?} {} {}", rx.events, rx.stderr, tx.stderr);
    // A client without a certificate is refused.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in takgate::link::tls::load_certs(&pki.ca).unwrap() {
            r.add(c).unwrap();
        }
        r
    };
    let cc = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider())).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots).with_no_client_auth();
    let conn = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cc));
    let res = conn.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await;
    let refused = match res {
        Err(_) => true,
        Ok(mut s) => {
            use tokio::io::AsyncReadExt;
            let mut b = [0u8; 16];
            matches!(tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await, Ok(Err(_)) | Ok(Ok(0)))
        }
    };
    assert!(refused, "no client certificate, no service");
    // The identity of a connected peer is known to the router.
    let mut held = tokio::spawn(peer(args(&format!("--url {url} --cert {} --key {} --ca {ca} --uid H --listen 3", ccert.display(), ckey.display())), 30.0));
    let mut ids = vec![];
    for _ in 0..100 {
        ids = gw.router().stats().await.into_iter().filter_map(|s| s.identity).collect::<Vec<_>>();
        if !ids.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ids.first().map(|i| i.cn.as_str()), Some("alpha-client"));
    assert_eq!(ids[0].fingerprint.len(), 32 * 3 - 1);
    let _ = (&mut held).await;
    let st = gw.counters("tls").unwrap().snapshot();
    assert!(st.decode_errors >= 5, "handshake failures and timeouts are counted: {st:?}");
    drop(silent);
    gw.shutdown().await;
}

/// Opens `n` TCP connections that never speak.
async fn futures_util_join(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut v = vec![];
    for _ in 0..n {
        v.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytak_udp_sender_reaches_a_tcp_client() {
    let cfg = format!("{}{}", link("c", "tcp", "listen", "127.0.0.1:0", ""), link("u", "udp", "listen", "127.0.0.1:0", ""));
    let gw = gateway(&cfg).await;
    let mut rx = Client::tcp(gw.local_addr("c").unwrap()).await;
    let u = gw.local_addr("u").unwrap();
    let xml = peer(args(&format!("--url udp+wo://{u} --uid UX --send 3 --interval 0.02")), 30.0).await;
    let proto = peer(args(&format!("--url udp+wo://{u} --uid UP --proto --send 2 --interval 0.02")), 30.0).await;
    assert_eq!((xml.status, proto.status), (Some(0), Some(0)), "{} {}", xml.stderr, proto.stderr);
    let got = rx.drain(Duration::from_millis(500)).await;
    let seqs = |uid: &str| got.iter().filter(|e| e.uid == uid).filter_map(seq_of).collect::<Vec<_>>();
    assert_eq!(seqs("UX"), [1, 2, 3]);
    // pytak frames unicast protobuf datagrams with the *stream* header (not mesh): read too.
    assert_eq!(seqs("UP"), [1, 2]);
    let st = gw.counters("u").unwrap().snapshot();
    assert_eq!(st.decode_errors, 0, "{st:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytak_multicast_both_ways() {
    let port = common::free_udp_port();
    let group = format!("239.255.42.{}:{port}", 1 + port % 200);
    let cfg = format!("{}{}", link("c", "tcp", "listen", "127.0.0.1:0", ""), format!("[[link]]\nname = \"m\"\ntransport = \"multicast\"\naddress = \"{group}\"\ninterfaces = [\"127.0.0.1\"]\n"));
    let gw = gateway(&cfg).await;
    let mut tcp = Client::tcp(gw.local_addr("c").unwrap()).await;
    // pytak multicast listener; then a TCP client's event must come out on the group.
    let listener = tokio::spawn(peer(args(&format!("--url udp+ro://{group} --uid L --listen 4")), 30.0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tcp.send(&pli("FROM-TCP", "T", 5)).await;
    let sender = peer(args(&format!("--url udp+wo://{group} --uid MC --send 3 --interval 0.05")), 30.0).await;
    assert_eq!(sender.status, Some(0), "{}", sender.stderr);
    let got: Vec<_> = tcp.drain(Duration::from_millis(500)).await.iter().filter(|e| e.uid == "MC").filter_map(seq_of).collect();
    assert_eq!(got, [1, 2, 3], "multicast -> tcp");
    let l = listener.await.unwrap();
    assert_eq!(l.seqs_from("FROM-TCP"), [5], "tcp -> multicast: {:?} {}", l.events, l.stderr);
    gw.shutdown().await;
}

/// A taky server (PyPI) on a free loopback port, in its own directory.
struct Taky {
    child: tokio::process::Child,
    port: u16,
}

impl Taky {
    async fn start() -> Taky {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("takgate-taky-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("taky.conf");
        std::fs::write(&conf, format!("[taky]\nhostname = localhost\nnode_id = TAKY\nbind_ip = 127.0.0.1\nroot_dir = .\n\n[cot_server]\nport = {port}\n\n[ssl]\nenabled = false\n")).unwrap();
        let taky = common::py::python().parent().unwrap().join("taky");
        let child = tokio::process::Command::new(taky).arg("-c").arg(&conf).current_dir(&dir).kill_on_drop(true).spawn().expect("start taky");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Taky { child, port };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("taky did not start on port {port}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takgate_connects_to_taky_and_relays_both_ways() {
    let mut taky = Taky::start().await;
    let cfg = format!(
        "{}{}",
        link("local", "tcp", "listen", "127.0.0.1:0", ""),
        link("taky", "tcp", "connect", &format!("127.0.0.1:{}", taky.port), "reconnect_min_secs = 0.2")
    );
    let gw = gateway(&cfg).await;
    let mut local = Client::tcp(gw.local_addr("local").unwrap()).await;
    // A pytak client on taky listens; a takgate client sends; then the reverse.
    let on_taky = tokio::spawn(peer(args(&format!("--url tcp://127.0.0.1:{} --uid T --callsign TANGO --send 2 --interval 2 --listen 3", taky.port)), 40.0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    local.send(&pli("LOCAL", "LIMA", 9)).await;
    let on_taky = on_taky.await.unwrap();
    assert_eq!(on_taky.seqs_from("LOCAL"), [9], "takgate client -> taky client: {:?} {}", on_taky.events, on_taky.stderr);
    let got: Vec<_> = local.drain(Duration::from_millis(500)).await.iter().filter(|e| e.uid == "T").filter_map(seq_of).collect();
    assert_eq!(got, [1, 2], "taky client -> takgate client");
    let st = gw.counters("taky").unwrap().snapshot();
    assert_eq!(st.decode_errors + st.frame_errors, 0, "{st:?}");
    gw.shutdown().await;
    let _ = taky.child.kill().await;
}
