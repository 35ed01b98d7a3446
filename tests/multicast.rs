//! Multicast details: IPv6 groups joined on an interface given by name (on a veth pair the
//! test makes), bad datagrams on a group, and truncation.

mod common;

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::process::Command;
use std::time::Duration;

use common::{gateway, pli, seq_of, Client};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use takgate::cot::xml;

/// A veth pair that exists while the value lives (needs root, as CI has).
struct Veth(String);

impl Veth {
    fn new() -> Veth {
        let a = format!("tg{}a", std::process::id() % 100_000);
        let b = format!("tg{}b", std::process::id() % 100_000);
        let _ = Command::new("ip").args(["link", "del", &a]).output();
        let ok = Command::new("ip").args(["link", "add", &a, "type", "veth", "peer", "name", &b]).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "cannot create a veth pair (the multicast tests need root and iproute2)");
        for i in [&a, &b] {
            let _ = Command::new("sysctl").args(["-qw", &format!("net.ipv6.conf.{i}.accept_dad=0")]).status();
            assert!(Command::new("ip").args(["link", "set", i, "up"]).status().unwrap().success());
        }
        std::thread::sleep(Duration::from_millis(300));
        Veth(a)
    }
    fn index(&self) -> u32 {
        takgate::transport::datagram::interfaces().into_iter().find(|i| i.0 == self.0).map(|i| i.1).expect("veth index")
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_group_on_a_named_interface_both_ways() {
    let veth = Veth::new();
    let idx = veth.index();
    let port = common::free_udp_port();
    let group: Ipv6Addr = format!("ff12::7a:{:x}", port).parse().unwrap();
    let cfg = format!(
        "[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"m6\"\ntransport = \"multicast\"\naddress = \"[{group}]:{port}\"\ninterfaces = [\"{}\"]\nttl = 2\n",
        veth.0
    );
    let gw = gateway(&cfg).await;
    let mut tcp = Client::tcp(gw.local_addr("c").unwrap()).await;
    // Another app on the same host and port: SO_REUSEADDR/SO_REUSEPORT let it coexist.
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.set_nonblocking(true).unwrap();
    s.bind(&SockAddr::from(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))).unwrap();
    s.join_multicast_v6(&group, idx).unwrap();
    s.set_multicast_if_v6(idx).unwrap();
    s.set_multicast_loop_v6(true).unwrap();
    let member = tokio::net::UdpSocket::from_std(s.into()).unwrap();
    let dest = SocketAddr::V6(SocketAddrV6::new(group, port, 0, idx));
    tokio::time::sleep(Duration::from_millis(100)).await;
    member.send_to(&xml::encode(&pli("V6", "SIX", 1)), dest).await.unwrap();
    let got: Vec<_> = tcp.drain(Duration::from_millis(500)).await.iter().filter(|e| e.uid == "V6").filter_map(seq_of).collect();
    assert_eq!(got, [1], "IPv6 multicast -> tcp");
    tcp.send(&pli("T", "TCP", 2)).await;
    let mut buf = vec![0u8; 65536];
    let mut heard = vec![];
    while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(500), member.recv_from(&mut buf)).await {
        if let Ok(d) = takgate::codec::mesh::decode(&buf[..n]) {
            heard.extend(d.event.map(|e| e.uid));
        }
    }
    assert!(heard.contains(&"T".to_string()), "tcp -> IPv6 multicast: {heard:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_datagrams_on_a_group_are_counted_and_the_group_keeps_working() {
    let port = common::free_udp_port();
    let group: SocketAddr = format!("239.255.78.{}:{port}", 1 + port % 200).parse().unwrap();
    let cfg = format!(
        "[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"m\"\ntransport = \"multicast\"\naddress = \"{group}\"\ninterfaces = [\"lo\"]\nmax_datagram_bytes = 1000\n"
    );
    let gw = gateway(&cfg).await;
    let mut tcp = Client::tcp(gw.local_addr("c").unwrap()).await;
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&tx).set_multicast_if_v4(&std::net::Ipv4Addr::LOCALHOST).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for bad in [&b"\xbf\x01\xbf\xff\xff"[..], b"<event uid='x'>", b"\xbf\x02\xbf\x00", &[b'x'; 1500][..]] {
        tx.send_to(bad, group).unwrap();
    }
    tx.send_to(&xml::encode(&pli("OK", "OK", 3)), group).unwrap();
    let got: Vec<_> = tcp.drain(Duration::from_millis(500)).await.into_iter().map(|e| e.uid).collect();
    assert_eq!(got, ["OK"]);
    let st = gw.counters("m").unwrap().snapshot();
    assert_eq!((st.decode_errors, st.truncated), (3, 1), "{st:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_cannot_be_joined_does_not_stop_the_gateway() {
    let cfg = "[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
               [[link]]\nname = \"radio\"\ntransport = \"multicast\"\naddress = \"239.2.3.1:6969\"\ninterfaces = [\"radio-not-up-yet\"]\n";
    let gw = gateway(cfg).await;
    let st = gw.connection("radio").unwrap();
    assert_eq!(st.state, takgate::link::LinkState::Error);
    assert!(st.last_error.as_deref().is_some_and(|e| e.contains("no interface \"radio-not-up-yet\"")), "{st:?}");
    let mut a = Client::tcp(gw.local_addr("c").unwrap()).await;
    let mut b = Client::tcp(gw.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.send(&pli("A", "A", 1)).await;
    assert_eq!(b.recv(Duration::from_secs(2)).await.and_then(|e| seq_of(&e)), Some(1), "everything else keeps working");
    gw.shutdown().await;
}
