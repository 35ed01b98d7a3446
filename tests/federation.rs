//! Federation v1 and v2 between takgate nodes over mutual TLS, each side dialing in turn:
//! contact snapshot and latest SA on connect, live CoT both ways, direct messages to
//! federated contacts, no federate-to-federate relay, and the fingerprint allow-list.

mod common;

use std::time::Duration;

use common::certs::Pki;
use common::py::{args, peer};
use common::{gateway, pli, seq_of, Client};
use takgate::cot::{CotEvent, CotTime};

fn fed_listen_on(id: &str, pki: &Pki, transport: &str, addr: &str, extra: &str) -> String {
    pki.fed_listener(id, transport, addr, extra)
}

fn fed_listen(id: &str, pki: &Pki, extra: &str) -> String {
    fed_listen_on(id, pki, "federation-v1", "127.0.0.1:0", extra)
}

fn fed_connect_with(id: &str, pki: &mut Pki, transport: &str, to: std::net::SocketAddr) -> String {
    let (c, k) = pki.leaf(id, false);
    format!(
        "[node]\nid = \"{id}\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"fed\"\ntransport = \"{transport}\"\nmode = \"connect\"\naddress = \"{to}\"\nserver_name = \"localhost\"\nreconnect_min_secs = 0.2\nreconnect_max_secs = 0.5\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.path(&pki.ca),
        c.display(),
        k.display()
    )
}

fn fed_connect(id: &str, pki: &mut Pki, to: std::net::SocketAddr) -> String {
    fed_connect_with(id, pki, "federation-v1", to)
}

async fn wait_federates_on(gw: &takgate::runtime::Gateway, transport: &str, n: usize) {
    for _ in 0..300 {
        if gw.router().stats().await.iter().filter(|s| s.transport == transport).count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("federates did not connect");
}

async fn wait_federates(gw: &takgate::runtime::Gateway, n: usize) {
    wait_federates_on(gw, "federation-v1", n).await
}

/// Two nodes federated over `transport`. ALPHA sits on the node that listens when
/// `alpha_on_listener`, else on the node that dials; either way it is there before the
/// link comes up, so the other node must get its latest SA in the connect snapshot.
async fn two_nodes_federate(transport: &str, alpha_on_listener: bool) {
    let mut pki = Pki::new(&format!("fed-{transport}-{alpha_on_listener}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let listen_cfg = fed_listen_on("node-a", &pki, transport, &port.to_string(), "");
    let dial_cfg = fed_connect_with("node-b", &mut pki, transport, port);
    // A is the node ALPHA is on.
    let (a, b) = if alpha_on_listener {
        let a = gateway(&listen_cfg).await;
        (a, None)
    } else {
        (gateway(&dial_cfg).await, None)
    };
    let mut alpha = Client::tcp(a.local_addr("c").unwrap()).await;
    let mut alpha2 = Client::tcp(a.local_addr("c").unwrap()).await;
    alpha.send(&pli("ANDROID-ALPHA", "ALPHA", 1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = match b {
        Some(b) => b,
        None => gateway(if alpha_on_listener { &dial_cfg } else { &listen_cfg }).await,
    };
    let mut bravo = Client::tcp(b.local_addr("c").unwrap()).await;
    let stats_name = if transport == "federation-v1" { "federation-v1" } else { "federation-v2" };
    wait_federates_on(&a, stats_name, 1).await;
    wait_federates_on(&b, stats_name, 1).await;
    let got = bravo.drain(Duration::from_millis(1000)).await;
    assert_eq!(got.iter().filter(|e| e.uid == "ANDROID-ALPHA").filter_map(seq_of).collect::<Vec<_>>(), [1], "snapshot on connect: {got:?}");
    let ev = got.iter().find(|e| e.uid == "ANDROID-ALPHA").unwrap();
    assert_eq!(ev.detail.contact.as_ref().unwrap().callsign, "ALPHA");
    // Live CoT both ways.
    bravo.send(&pli("ANDROID-BRAVO", "BRAVO", 2)).await;
    alpha.send(&pli("ANDROID-ALPHA", "ALPHA", 3)).await;
    let on_a: Vec<_> = alpha.drain(Duration::from_millis(800)).await.iter().filter(|e| e.uid == "ANDROID-BRAVO").filter_map(seq_of).collect();
    assert_eq!(on_a, [2]);
    let on_b: Vec<_> = bravo.drain(Duration::from_millis(800)).await.iter().filter(|e| e.uid == "ANDROID-ALPHA").filter_map(seq_of).collect();
    assert_eq!(on_b, [3]);
    alpha2.drain(Duration::from_millis(200)).await;
    // A direct message from B to ALPHA reaches ALPHA only (contact learned over federation).
    let mut chat = CotEvent::new("GeoChat.ANDROID-BRAVO.ALPHA.1", "b-t-f", "h-g-i-g-o", CotTime::now(), 60);
    chat.detail.xml = r#"<remarks>seq=9</remarks><marti><dest callsign="ALPHA"/></marti>"#.into();
    bravo.send(&chat).await;
    let to_alpha: Vec<_> = alpha.drain(Duration::from_millis(800)).await.iter().filter_map(seq_of).collect();
    let to_alpha2: Vec<_> = alpha2.drain(Duration::from_millis(300)).await.iter().filter_map(seq_of).collect();
    assert_eq!(to_alpha, [9], "direct message delivered");
    assert!(to_alpha2.is_empty(), "and only to its addressee: {to_alpha2:?}");
    // And back: a direct message from A to BRAVO.
    let mut chat = CotEvent::new("GeoChat.ANDROID-ALPHA.BRAVO.1", "b-t-f", "h-g-i-g-o", CotTime::now(), 60);
    chat.detail.xml = r#"<remarks>seq=10</remarks><marti><dest uid="ANDROID-BRAVO"/></marti>"#.into();
    alpha.send(&chat).await;
    let to_bravo: Vec<_> = bravo.drain(Duration::from_millis(800)).await.iter().filter_map(seq_of).collect();
    assert_eq!(to_bravo, [10], "direct message by uid delivered");
    for gw in [&a, &b] {
        let st = gw.counters("fed").unwrap().snapshot();
        assert_eq!(st.frame_errors + st.decode_errors, 0, "{st:?}");
    }
    // pytak clients on both sides: what one sends reaches the other across the federation.
    let (listener, dialer_node) = if alpha_on_listener { (&a, &b) } else { (&b, &a) };
    let url_l = format!("tcp://{}", listener.local_addr("c").unwrap());
    let url_d = format!("tcp://{}", dialer_node.local_addr("c").unwrap());
    let rx = tokio::spawn(peer(args(&format!("--url {url_d} --uid PY-D --callsign PYDIALER --listen 5")), 30.0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tx = peer(args(&format!("--url {url_l} --uid PY-L --callsign PYLISTENER --send 3 --interval 0.05 --listen 1")), 30.0).await;
    let rx = rx.await.unwrap();
    assert_eq!(rx.seqs_from("PY-L"), [1, 2, 3], "pytak to pytak across {transport}: {:?} {}", rx.events, rx.stderr);
    assert_eq!(tx.done.as_ref().unwrap()["sent"], 3, "{}", tx.stderr);
    let dialer = if alpha_on_listener { &b } else { &a };
    let conn = dialer.connection("fed").unwrap();
    assert_eq!((conn.state, conn.connects), (takgate::link::LinkState::Connected, 1), "{conn:?}");
    // The last error stays visible after a reconnect (here: the listener was not up yet).
    assert_eq!(conn.last_error.is_some(), !alpha_on_listener, "{conn:?}");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_federates_with_the_listener_holding_the_snapshot() {
    two_nodes_federate("federation-v1", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_federates_with_the_dialer_holding_the_snapshot() {
    two_nodes_federate("federation-v1", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_federates_with_the_listener_holding_the_snapshot() {
    two_nodes_federate("federation-v2", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_federates_with_the_dialer_holding_the_snapshot() {
    two_nodes_federate("federation-v2", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_is_pair_wise() {
    let mut pki = Pki::new("fedpair");
    let a = gateway(&fed_listen("node-a", &pki, "")).await;
    let fed_addr = a.local_addr("fed").unwrap();
    let mut alpha = Client::tcp(a.local_addr("c").unwrap()).await;
    let b = gateway(&fed_connect("node-b", &mut pki, fed_addr)).await;
    let mut bravo = Client::tcp(b.local_addr("c").unwrap()).await;
    let c = gateway(&fed_connect("node-c", &mut pki, fed_addr)).await;
    let mut charlie = Client::tcp(c.local_addr("c").unwrap()).await;
    wait_federates(&a, 2).await;
    charlie.drain(Duration::from_millis(500)).await;
    bravo.send(&pli("ANDROID-BRAVO", "BRAVO", 4)).await;
    alpha.send(&pli("ANDROID-ALPHA", "ALPHA", 5)).await;
    let on_c = charlie.drain(Duration::from_millis(800)).await;
    assert!(on_c.iter().all(|e| e.uid != "ANDROID-BRAVO"), "no federate-to-federate relay: {on_c:?}");
    assert_eq!(on_c.iter().filter(|e| e.uid == "ANDROID-ALPHA").filter_map(seq_of).collect::<Vec<_>>(), [5]);
    for gw in [c, b, a] {
        gw.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_fingerprints_federate() {
    let mut pki = Pki::new("fedallow");
    let a = gateway(&fed_listen("node-a", &pki, "allow_fingerprints = [\"00:11\"]")).await;
    let b = gateway(&fed_connect("node-b", &mut pki, a.local_addr("fed").unwrap())).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.router().stats().await.iter().filter(|s| s.transport == "federation-v1").count(), 0);
    assert!(a.counters("fed").unwrap().snapshot().decode_errors >= 1, "refusals are counted");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_connection_test_reports_each_stage() {
    use takgate::federation::probe::{probe, ProbeTarget};
    let mut pki = Pki::new("fedprobe");
    let a = gateway(&fed_listen("node-a", &pki, "")).await;
    let mut alpha = Client::tcp(a.local_addr("c").unwrap()).await;
    alpha.send(&pli("ANDROID-ALPHA", "ALPHA", 1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (cert, key) = pki.leaf("prober", false);
    let t = ProbeTarget { address: a.local_addr("fed").unwrap().to_string(), ca: pki.ca.clone(), cert, key, server_name: Some("localhost".into()), listen: Duration::from_secs(2), protocol: 1 };
    let stages = probe(&t).await;
    let names: Vec<_> = stages.iter().map(|s| (s.name, s.ok)).collect();
    assert_eq!(names, [("certificates", true), ("resolve", true), ("tcp connect", true), ("tls handshake", true), ("peer identity", true), ("v1 first frame", true)], "{stages:?}");
    assert!(stages[4].detail.contains("CN localhost") && stages[4].detail.contains("chain 2"), "{}", stages[4].detail);
    assert!(stages[5].detail.contains("received a contact"), "{}", stages[5].detail);
    // Dialed by an address the server certificate does not name: the reason, in words.
    let stages = probe(&ProbeTarget { server_name: Some("10.0.0.5".into()), ..t.clone() }).await;
    let last = stages.last().unwrap();
    assert_eq!((last.name, last.ok), ("tls handshake", false));
    assert!(last.detail.starts_with("server certificate has no SAN for 10.0.0.5"), "{}", last.detail);
    // A v2 listener: SERVING on the groups stream, then a health check.
    let b = gateway(&fed_listen_on("node-b", &pki, "federation-v2", "127.0.0.1:0", "")).await;
    let stages = probe(&ProbeTarget { address: b.local_addr("fed").unwrap().to_string(), protocol: 2, ..t.clone() }).await;
    let names: Vec<_> = stages.iter().map(|s| (s.name, s.ok)).collect();
    assert_eq!(names, [("certificates", true), ("resolve", true), ("tcp connect", true), ("tls handshake", true), ("peer identity", true), ("v2 groups stream", true), ("v2 health check", true)], "{stages:?}");
    // v2 against a v1 port: no HTTP/2.
    let stages = probe(&ProbeTarget { protocol: 2, ..t.clone() }).await;
    assert!(stages.last().is_some_and(|s| !s.ok && s.detail.contains("did not negotiate HTTP/2")), "{stages:?}");
    b.shutdown().await;
    // Nobody listening: the test stops at the TCP stage with the reason.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let stages = probe(&ProbeTarget { address: closed.to_string(), ..t }).await;
    assert_eq!(stages.last().map(|s| (s.name, s.ok)), Some(("tcp connect", false)));
    a.shutdown().await;
}

/// Per-federate groups over v2: A sends B only its Cyan traffic, named in
/// `federateGroups`; B maps Cyan to its Blue group, which only the Blue link receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_outbound_groups_and_group_mapping() {
    let mut pki = Pki::new("fedgroups");
    let a = gateway(&fed_listen_on("node-a", &pki, "federation-v2", "127.0.0.1:0", "outbound_groups = [\"Cyan\"]")).await;
    let mut b_cfg = fed_connect_with("node-b", &mut pki, "federation-v2", a.local_addr("fed").unwrap());
    b_cfg.push_str("group_mapping = [\"Cyan:Blue\"]\n");
    b_cfg.push_str("[[link]]\nname = \"blue\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n[link.policy]\ngroups_out = [\"Blue\"]\n");
    b_cfg.push_str("[[link]]\nname = \"red\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n[link.policy]\ngroups_out = [\"Red\"]\n");
    let b = gateway(&b_cfg).await;
    wait_federates_on(&a, "federation-v2", 1).await;
    wait_federates_on(&b, "federation-v2", 1).await;
    let mut blue = Client::tcp(b.local_addr("blue").unwrap()).await;
    let mut red = Client::tcp(b.local_addr("red").unwrap()).await;
    let mut alpha = Client::tcp(a.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (seq, group) in [(1, "Cyan"), (2, "Red")] {
        let mut ev = pli(&format!("ANDROID-{group}"), group, seq);
        ev.detail.xml = format!("<__group name=\"{group}\" role=\"Team Member\"/><remarks>seq={seq}</remarks>");
        alpha.send(&ev).await;
    }
    let on_blue: Vec<_> = blue.drain(Duration::from_millis(1000)).await.iter().filter_map(seq_of).collect();
    let on_red: Vec<_> = red.drain(Duration::from_millis(300)).await.iter().filter_map(seq_of).collect();
    assert_eq!(on_blue, [1], "Cyan crosses and maps to Blue; Red is not in A's outbound groups");
    assert!(on_red.is_empty(), "the Red link does not get B's Blue traffic: {on_red:?}");
    assert!(a.counters("fed").unwrap().snapshot().filtered >= 1, "the Red event was filtered toward the federate");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_federation_link_does_not_connect() {
    let mut pki = Pki::new("feddisabled");
    let a = gateway(&fed_listen_on("node-a", &pki, "federation-v2", "127.0.0.1:0", "")).await;
    let cfg = fed_connect_with("node-b", &mut pki, "federation-v2", a.local_addr("fed").unwrap()).replace("name = \"fed\"\n", "name = \"fed\"\nenabled = false\n");
    let b = gateway(&cfg).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(b.connection("fed").is_none() && a.router().stats().await.iter().all(|s| s.transport != "federation-v2"));
    b.shutdown().await;
    a.shutdown().await;
}

/// Two gateways left without a `[node] id` get distinct generated ids (never each other's
/// loops), and a gateway keeps its generated id across restarts in its store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_an_id_generates_and_keeps_one() {
    let plain = "[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n";
    let (a, b) = (gateway(plain).await, gateway(plain).await);
    let (ia, ib) = (a.router().node_id.to_string(), b.router().node_id.to_string());
    assert!(ia.starts_with("takgate-") && ia.len() == 16 && ia != ib, "{ia} {ib}");
    a.shutdown().await;
    b.shutdown().await;
    let db = std::env::temp_dir().join(format!("takgate-nodeid-{}-{}.db", std::process::id(), fastrand::u64(..)));
    let with_store = format!("[store]\npath = \"{}\"\n{plain}", db.display());
    let first = gateway(&with_store).await;
    let id = first.router().node_id.to_string();
    first.shutdown().await;
    let again = gateway(&with_store).await;
    assert_eq!(again.router().node_id.to_string(), id, "kept in the store");
    again.shutdown().await;
    // a configured id wins
    let named = gateway(&format!("[node]\nid = \"gw-north\"\n{with_store}")).await;
    assert_eq!(&*named.router().node_id, "gw-north");
    named.shutdown().await;
    // the embedded default config names no id
    assert!(!takgate::config::DEFAULT_TOML.lines().any(|l| l.trim_start().starts_with("id =")));
}
