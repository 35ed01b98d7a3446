//! The gateway over real sockets with takgate's own test client: TCP relay, negotiation,
//! keepalive, slow consumers, policy, direct messages, rate limits, UDP, bad input.

mod common;

use std::time::Duration;

use common::{eventually, gateway, pli, seq_of, Client};
use takgate::cot::control::{self, Control};
use takgate::cot::{xml, CotEvent, CotTime};

const MS: Duration = Duration::from_millis(300);

fn tcp_link(name: &str, extra: &str) -> String {
    format!("[[link]]\nname = \"{name}\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n{extra}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_clients_see_each_other_and_never_their_own() {
    let gw = gateway(&tcp_link("c", "")).await;
    let addr = gw.local_addr("c").unwrap();
    let mut a = Client::tcp(addr).await;
    let mut b = Client::tcp(addr).await;
    let mut c = Client::tcp(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..20 {
        a.send(&pli("ANDROID-A", "ALPHA", i)).await;
    }
    for cl in [&mut b, &mut c] {
        let got = cl.drain(MS).await;
        assert_eq!(got.iter().map(|e| seq_of(e).unwrap()).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
        assert_eq!(got[0].detail.contact.as_ref().unwrap().callsign, "ALPHA");
        let tag = format!("<_flow-tags_ {}=", gw.router().node_id);
        assert!(got[0].detail.xml.contains(&tag), "stamped with the node id: {}", got[0].detail.xml);
    }
    assert!(a.drain(MS).await.is_empty(), "no echo to the origin");
    assert!(a.control.iter().any(|c| matches!(c, Control::Offer(v) if v == &[1])), "server offers protocol 1");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_and_negotiated_protobuf_clients_see_each_other() {
    let gw = gateway(&tcp_link("c", "")).await;
    let addr = gw.local_addr("c").unwrap();
    let mut x = Client::tcp(addr).await;
    let mut p = Client::tcp(addr).await;
    p.negotiate().await;
    x.send(&pli("X", "XRAY", 1)).await;
    let got = p.recv(Duration::from_secs(2)).await.expect("proto client gets the XML client's event");
    assert_eq!(got.uid, "X");
    p.send(&pli("P", "PAPA", 2)).await;
    let got = x.recv(Duration::from_secs(2)).await.expect("XML client gets the proto client's event");
    assert_eq!((got.uid.as_str(), seq_of(&got)), ("P", Some(2)));
    // What the proto client received after the switch really was protobuf: its only XML
    // frames are the offer and the response, and the XML client got XML only.
    assert_eq!(p.frames.0, 2, "offer and response in XML, then protobuf: {:?}", p.frames);
    assert!(p.frames.1 >= 1, "{:?}", p.frames);
    assert_eq!(x.frames.1, 0, "{:?}", x.frames);
    let stats = gw.router().stats().await;
    assert_eq!(stats.iter().map(|s| s.counters.decode_errors).sum::<u64>(), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong_and_is_not_relayed() {
    let gw = gateway(&tcp_link("c", "")).await;
    let addr = gw.local_addr("c").unwrap();
    let mut a = Client::tcp(addr).await;
    let mut b = Client::tcp(addr).await;
    a.send(&control::ping("ANDROID-A", CotTime::now())).await;
    assert!(a.recv(MS).await.is_none());
    assert!(a.control.contains(&Control::Pong), "{:?}", a.control);
    assert!(b.recv(MS).await.is_none(), "pings are consumed");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let gw = gateway(&tcp_link("c", "idle_timeout_secs = 0.5")).await;
    let mut a = Client::tcp(gw.local_addr("c").unwrap()).await;
    let t = std::time::Instant::now();
    assert!(a.recv(Duration::from_secs(3)).await.is_none());
    assert!(t.elapsed() < Duration::from_secs(2), "closed by the idle timeout");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_slow_the_others() {
    let gw = gateway(&tcp_link("c", "queue_depth = 1024")).await;
    let addr = gw.local_addr("c").unwrap();
    // The stalled client never reads; the kernel buffers fill, then its queue.
    let stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut fast: Vec<Client> = Vec::new();
    for _ in 0..3 {
        fast.push(Client::tcp(addr).await);
    }
    let mut sender = Client::tcp(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = 3000u32;
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut c| tokio::spawn(async move { c.drain(Duration::from_secs(2)).await.len() }))
        .collect();
    for i in 0..n {
        let mut ev = pli("S", "SENDER", i);
        ev.detail.xml.push_str(&format!("<pad>{}</pad>", "x".repeat(8000)));
        sender.send(&ev).await;
        if i % 20 == 0 {
            // A busy client, not an infinitely fast one: readers that keep up must get all.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for r in readers {
        assert_eq!(r.await.unwrap(), n as usize, "every fast reader gets every event");
    }
    let stats = gw.router().stats().await;
    let drops: u64 = stats.iter().map(|s| s.counters.drops_queue_full).sum();
    assert!(drops > 0, "the stalled reader's drops are counted: {stats:?}");
    drop(stalled);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_disconnect_closes_the_slow_peer() {
    let gw = gateway(&tcp_link("c", "queue_depth = 8\noverflow = \"disconnect\"")).await;
    let addr = gw.local_addr("c").unwrap();
    let _stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut sender = Client::tcp(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..3000 {
        let mut ev = pli("S", "S", i);
        ev.detail.xml.push_str(&format!("<pad>{}</pad>", "y".repeat(1000)));
        sender.send(&ev).await;
    }
    assert_eq!(common::peers_settle_at(&gw, 1).await, 1, "only the sender remains");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_go_only_where_the_contact_lives() {
    let gw = gateway(&tcp_link("c", "")).await;
    let addr = gw.local_addr("c").unwrap();
    let mut a = Client::tcp(addr).await;
    let mut b = Client::tcp(addr).await;
    let mut c = Client::tcp(addr).await;
    b.send(&pli("ANDROID-B", "BRAVO", 0)).await;
    c.send(&pli("ANDROID-C", "CHARLIE", 0)).await;
    a.drain(MS).await;
    b.drain(MS).await;
    c.drain(MS).await;
    let mut chat = CotEvent::new("GeoChat.ANDROID-A.BRAVO.1", "b-t-f", "h-g-i-g-o", CotTime::now(), 60);
    chat.detail.xml = r#"<__chat chatroom="BRAVO" id="ANDROID-B" senderCallsign="ALPHA"/><marti><dest callsign="BRAVO"/></marti><remarks>seq=7</remarks>"#.into();
    a.send(&chat).await;
    let mut by_uid = chat.clone();
    by_uid.uid = "GeoChat.ANDROID-A.CHARLIE.2".into();
    by_uid.detail.xml = r#"<marti><dest uid="ANDROID-C"/></marti><remarks>seq=8</remarks>"#.into();
    a.send(&by_uid).await;
    let got_b: Vec<_> = b.drain(MS).await.iter().filter_map(seq_of).collect();
    let got_c: Vec<_> = c.drain(MS).await.iter().filter_map(seq_of).collect();
    assert_eq!(got_b, [7]);
    assert_eq!(got_c, [8]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_type_filter_toward_a_peer() {
    let cfg = format!(
        "{}{}",
        tcp_link("clients", ""),
        tcp_link("radio", "[link.policy]\ntypes_deny = [\"b-t-f\"]\nrate_limit = { interval_secs = 30, types = [\"a-\"] }")
    );
    let gw = gateway(&cfg).await;
    let mut sender = Client::tcp(gw.local_addr("clients").unwrap()).await;
    let mut radio = Client::tcp(gw.local_addr("radio").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..10 {
        sender.send(&pli("A", "ALPHA", i)).await;
        sender.send(&pli("B", "BRAVO", 100 + i)).await;
    }
    let mut chat = CotEvent::new("GeoChat.x", "b-t-f", "h-g-i-g-o", CotTime::now(), 60);
    chat.detail.xml = "<remarks>seq=999</remarks>".into();
    sender.send(&chat).await;
    let got: Vec<_> = radio.drain(MS).await.iter().filter_map(seq_of).collect();
    assert_eq!(got, [0, 100], "one PLI per uid, chat filtered out");
    let st = gw.counters("radio").unwrap().snapshot();
    assert_eq!((st.rate_limited, st.filtered), (18, 1));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_within_the_window_are_dropped() {
    let gw = gateway(&tcp_link("c", "")).await;
    let addr = gw.local_addr("c").unwrap();
    let mut a = Client::tcp(addr).await;
    let mut b = Client::tcp(addr).await;
    let mut r = Client::tcp(addr).await;
    // every session attached before the first send
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ev = pli("U", "U", 1);
    a.send(&ev).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.send(&ev).await;
    assert_eq!(r.drain(MS).await.len(), 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_counted_and_the_link_keeps_serving() {
    let gw = gateway(&tcp_link("c", "max_event_bytes = 4096")).await;
    let addr = gw.local_addr("c").unwrap();
    let mut bad = Client::tcp(addr).await;
    let mut good = Client::tcp(addr).await;
    let mut r = Client::tcp(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    bad.send_raw(b"\x01\x02garbage!!").await;
    bad.send_raw(format!("<event uid='big' type='a' how='h'>{}</event>", "z".repeat(10_000)).as_bytes()).await;
    bad.send_raw(br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><event uid="&a;" type="a-f-G" how="h" time="2020-01-01T00:00:00Z" start="2020-01-01T00:00:00Z" stale="2020-01-01T00:00:00Z"><point lat="0" lon="0"/></event>"#).await;
    bad.send_raw(&[0xbf, 0x05, 0x12, 0x10, 0x0a]).await; // truncated protobuf inside a complete frame
    bad.send_raw(b"<event uid='x'><point lat='0' lon='0'/></event>").await; // missing attributes
    bad.send(&pli("BAD-BUT-NOW-GOOD", "B", 1)).await;
    good.send(&pli("GOOD", "G", 2)).await;
    let got: Vec<_> = r.drain(MS).await.into_iter().map(|e| e.uid).collect();
    assert!(got.contains(&"BAD-BUT-NOW-GOOD".to_string()) && got.contains(&"GOOD".to_string()), "{got:?}");
    let st = gw.counters("c").unwrap().snapshot();
    assert!(st.frame_errors >= 2, "garbage and oversize: {st:?}");
    assert!(st.decode_errors >= 3, "DOCTYPE, truncated protobuf, missing attributes: {st:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_listen_accepts_xml_and_mesh_protobuf_and_counts_truncation() {
    let cfg = format!("{}[[link]]\nname = \"udp\"\ntransport = \"udp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\nmax_datagram_bytes = 2048\n", tcp_link("c", ""));
    let gw = gateway(&cfg).await;
    let mut r = Client::tcp(gw.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let udp = gw.local_addr("udp").unwrap();
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(&xml::encode(&pli("UX", "UX", 1)), udp).unwrap();
    let mut mesh = Vec::new();
    takgate::codec::WireFormat::ProtoMesh.encode_into(&pli("UP", "UP", 2), &mut mesh);
    s.send_to(&mesh, udp).unwrap();
    s.send_to(&vec![b'<'; 3000], udp).unwrap();
    s.send_to(b"not cot", udp).unwrap();
    let got: Vec<_> = r.drain(MS).await.into_iter().map(|e| e.uid).collect();
    assert_eq!(got, ["UX", "UP"]);
    let c = gw.counters("udp").unwrap();
    assert!(eventually(1.0, || c.snapshot().truncated == 1 && c.snapshot().decode_errors == 1).await, "{:?}", c.snapshot());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_send_delivers_datagrams_in_the_configured_format() {
    let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = format!("{}[[link]]\nname = \"out\"\ntransport = \"udp\"\nmode = \"send\"\naddress = \"{}\"\nformat = \"protobuf\"\n", tcp_link("c", ""), rx.local_addr().unwrap());
    let gw = gateway(&cfg).await;
    let mut a = Client::tcp(gw.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.send(&pli("TO-UDP", "U", 3)).await;
    let mut buf = [0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(2), rx.recv(&mut buf)).await.expect("a datagram").unwrap();
    assert_eq!(&buf[..3], &[0xbf, 0x01, 0xbf]);
    let d = takgate::codec::mesh::decode(&buf[..n]).unwrap();
    assert_eq!(d.event.unwrap().uid, "TO-UDP");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_connection_negotiates_and_reconnects() {
    // gateway A listens; gateway B connects out to it and relays its own clients.
    let a = gateway(&tcp_link("in", "")).await;
    let a_addr = a.local_addr("in").unwrap();
    let b_cfg = format!(
        "[node]\nid = \"gw-b\"\n{}[[link]]\nname = \"up\"\ntransport = \"tcp\"\nmode = \"connect\"\naddress = \"{a_addr}\"\nreconnect_min_secs = 0.1\nreconnect_max_secs = 0.5\n",
        tcp_link("local", "")
    );
    let b = gateway(&b_cfg).await;
    let mut on_a = Client::tcp(a_addr).await;
    let mut on_b = Client::tcp(b.local_addr("local").unwrap()).await;
    let mut peers = 0;
    for _ in 0..150 {
        peers = a.router().stats().await.len();
        if peers >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(peers, 2, "B connected to A (A's own client + B)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    on_b.send(&pli("FROM-B", "B", 1)).await;
    assert_eq!(on_a.recv(Duration::from_secs(2)).await.map(|e| e.uid).as_deref(), Some("FROM-B"));
    on_a.send(&pli("FROM-A", "A", 2)).await;
    assert_eq!(on_b.recv(Duration::from_secs(2)).await.map(|e| e.uid).as_deref(), Some("FROM-A"));
    let up = b.counters("up").unwrap().snapshot();
    assert_eq!(up.decode_errors + up.frame_errors, 0);
    assert_eq!(up.negotiated_proto, 1, "B asked for TAK protocol v1 when A offered it");
    assert_eq!(a.counters("in").unwrap().snapshot().negotiated_proto, 1);
    let st = b.connection("up").unwrap();
    assert_eq!((st.state, st.connects), (takgate::link::LinkState::Connected, 1));
    assert!(st.last_connected.is_some());
    // A goes away and comes back on the same port: B reconnects by itself.
    a.shutdown().await;
    drop(on_a);
    let mut seen_error = None;
    for _ in 0..100 {
        let st = b.connection("up").unwrap();
        if st.last_error.is_some() {
            seen_error = st.last_error;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_error.is_some_and(|e| e.contains("connect failed")), "the last error is kept while A is down");
    let a2 = gateway(&tcp_link("in", "").replace("127.0.0.1:0", &a_addr.to_string())).await;
    let mut on_a2 = Client::tcp(a_addr).await;
    let mut peers = 0;
    for _ in 0..200 {
        peers = a2.router().stats().await.len();
        if peers >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(peers, 2, "B reconnected");
    tokio::time::sleep(Duration::from_millis(300)).await;
    on_b.send(&pli("FROM-B-AGAIN", "B", 3)).await;
    assert_eq!(on_a2.recv(Duration::from_secs(2)).await.map(|e| e.uid).as_deref(), Some("FROM-B-AGAIN"));
    assert_eq!(b.counters("up").unwrap().snapshot().negotiated_proto, 2);
    let st = b.connection("up").unwrap();
    assert_eq!((st.state, st.connects), (takgate::link::LinkState::Connected, 2));
    b.shutdown().await;
    a2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_client_it_pings_after_15_s_of_silence_like_atak() {
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let gw = gateway(&format!("[node]\nid = \"pinger\"\n[[link]]\nname = \"up\"\ntransport = \"tcp\"\nmode = \"connect\"\naddress = \"{addr}\"\n")).await;
    let (s, _) = server.accept().await.unwrap();
    let mut c = Client::over(Box::pin(s));
    let t = std::time::Instant::now();
    // The server says nothing; the first thing we hear must be a ping, after ~15 s.
    while !c.control.contains(&Control::Ping) && t.elapsed() < Duration::from_secs(18) {
        assert!(c.recv(Duration::from_millis(200)).await.is_none(), "only control traffic");
    }
    assert!(c.control.contains(&Control::Ping), "{:?}", c.control);
    let secs = t.elapsed().as_secs_f64();
    assert!((14.5..17.5).contains(&secs), "first ping after {secs} s");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_presents_its_issuing_ca_and_verifies_optional_client_certs() {
    let pki = common::certs::Pki::new("chain");
    let gw = gateway(&format!(
        "[[link]]\nname = \"t\"\ntransport = \"tls\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nrequire_client_cert = false\n",
        pki.path(&pki.ca),
        pki.path(&pki.server_cert),
        pki.path(&pki.server_key)
    ))
    .await;
    let cc = takgate::link::tls::client_config(&pki.ca, None).unwrap();
    let tcp = tokio::net::TcpStream::connect(gw.local_addr("t").unwrap()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cc)).connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let chain = tls.get_ref().1.peer_certificates().unwrap().to_vec();
    assert_eq!(chain.len(), 2, "leaf + issuing CA");
    assert_eq!(chain[1].as_ref(), takgate::link::tls::load_certs(&pki.ca).unwrap()[0].as_ref());
    // Without a client certificate (allowed here) the connection still works.
    let mut c = Client::over(Box::pin(tls));
    c.send(&control::ping("x", CotTime::now())).await;
    c.recv(Duration::from_millis(500)).await;
    assert!(c.control.contains(&Control::Pong));
    gw.shutdown().await;
}

/// Connects from `from` (a 127.0.0.x address) and tells whether the gateway kept the
/// connection (true) or closed it at once (refused by a limit).
async fn kept(to: std::net::SocketAddr, from: &str) -> (bool, tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    let mut b = [0u8; 4096];
    // closed: end of stream or reset; kept: silence, or the gateway's greeting
    let open = match tokio::time::timeout(Duration::from_millis(400), s.read(&mut b)).await {
        Err(_) => true,
        Ok(Ok(n)) => n > 0,
        Ok(Err(_)) => false,
    };
    (open, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_refuse_count_and_recover() {
    let gw = gateway(&tcp_link("c", "max_connections = 3\nmax_connections_per_address = 2")).await;
    let addr = gw.local_addr("c").unwrap();
    let (a1, _s1) = kept(addr, "127.0.0.1").await;
    let (a2, s2) = kept(addr, "127.0.0.1").await;
    let (a3, _s3) = kept(addr, "127.0.0.1").await;
    assert_eq!((a1, a2, a3), (true, true, false), "two per address");
    let (b1, _t1) = kept(addr, "127.0.0.2").await;
    let (c1, _u1) = kept(addr, "127.0.0.3").await;
    assert_eq!((b1, c1), (true, false), "three in all");
    assert_eq!(gw.counters("c").unwrap().snapshot().refused, 2);
    // a closed connection gives its place back
    drop(s2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(kept(addr, "127.0.0.3").await.0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_tls_handshakes_do_not_pile_up() {
    let pki = common::certs::Pki::new("hslimit");
    let gw = gateway(&format!(
        "[[link]]\nname = \"t\"\ntransport = \"tls\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nmax_tls_handshakes = 1\nhandshake_timeout_secs = 2\n",
        pki.path(&pki.server_cert),
        pki.path(&pki.server_key)
    ))
    .await;
    let addr = gw.local_addr("t").unwrap();
    // One client opens TCP and never says hello: it holds the only handshake place...
    let (slow, _s) = kept(addr, "127.0.0.1").await;
    assert!(slow);
    // ...so the next is refused at once, and counted.
    let (next, _n) = kept(addr, "127.0.0.1").await;
    assert!(!next);
    assert_eq!(gw.counters("t").unwrap().snapshot().refused, 1);
    // When the slow one times out, the place is free again.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(kept(addr, "127.0.0.1").await.0);
    gw.shutdown().await;
}
