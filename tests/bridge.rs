//! Two takgate nodes bridge two multicast groups over one mutual-TLS link: every event
//! crosses once, in both directions, with no loops and no duplicates on either LAN.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::certs::Pki;
use common::{gateway, pli, seq_of};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use takgate::codec::mesh;
use takgate::cot::xml;

/// A plain member of a multicast group on loopback (another TAK app on the LAN).
fn member(group: SocketAddr) -> tokio::net::UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.set_nonblocking(true).unwrap();
    s.bind(&SockAddr::from(group)).unwrap();
    let g = match group.ip() {
        std::net::IpAddr::V4(g) => g,
        _ => unreachable!(),
    };
    s.join_multicast_v4(&g, &Ipv4Addr::LOCALHOST).unwrap();
    s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    s.set_multicast_loop_v4(true).unwrap();
    tokio::net::UdpSocket::from_std(s.into()).unwrap()
}

/// Counts (uid, seq) of every event heard on the group for `wait`.
async fn listen(sock: &tokio::net::UdpSocket, wait: Duration) -> HashMap<(String, u32), usize> {
    let mut seen = HashMap::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(Ok((n, _))) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        if let Ok(d) = mesh::decode(&buf[..n]) {
            if let Some(ev) = d.event {
                *seen.entry((ev.uid.clone(), seq_of(&ev).unwrap_or(0))).or_insert(0) += 1;
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_bridge_two_multicast_groups_over_tls() {
    let mut pki = Pki::new("bridge");
    let (c2, k2) = pki.leaf("gw2", false);
    let p1 = common::free_udp_port();
    let p2 = common::free_udp_port();
    let g1: SocketAddr = format!("239.255.77.1:{p1}").parse().unwrap();
    let g2: SocketAddr = format!("239.255.77.2:{p2}").parse().unwrap();
    let gw1 = gateway(&format!(
        "[node]\nid = \"gw1\"\n[[link]]\nname = \"lan1\"\ntransport = \"multicast\"\naddress = \"{g1}\"\ninterfaces = [\"127.0.0.1\"]\n\
         [[link]]\nname = \"trunk\"\ntransport = \"tls\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.path(&pki.ca),
        pki.path(&pki.server_cert),
        pki.path(&pki.server_key)
    ))
    .await;
    let trunk = gw1.local_addr("trunk").unwrap();
    let gw2 = gateway(&format!(
        "[node]\nid = \"gw2\"\n[[link]]\nname = \"lan2\"\ntransport = \"multicast\"\naddress = \"{g2}\"\ninterfaces = [\"127.0.0.1\"]\nformat = \"protobuf\"\n\
         [[link]]\nname = \"trunk\"\ntransport = \"tls\"\nmode = \"connect\"\naddress = \"{trunk}\"\nserver_name = \"localhost\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.path(&pki.ca),
        c2.display(),
        k2.display()
    ))
    .await;
    let mut linked = false;
    for _ in 0..100 {
        if gw1.router().stats().await.iter().any(|s| s.link == "trunk") {
            linked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(linked, "gw2 connected to gw1 over TLS");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let lan1 = member(g1);
    let lan2 = member(g2);
    let n = 50u32;
    // LAN 1 speaks XML, LAN 2 mesh protobuf.
    for i in 0..n {
        lan1.send_to(&xml::encode(&pli("LAN1-A", "A", i)), g1).await.unwrap();
        let mut m = Vec::new();
        takgate::codec::WireFormat::ProtoMesh.encode_into(&pli("LAN2-B", "B", i), &mut m);
        lan2.send_to(&m, g2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (heard1, heard2) = tokio::join!(listen(&lan1, Duration::from_millis(800)), listen(&lan2, Duration::from_millis(800)));
    for i in 0..n {
        // Each LAN hears its own sender once (the original) and the other LAN's once.
        assert_eq!(heard1.get(&("LAN1-A".into(), i)), Some(&1), "LAN1 own #{i}: {heard1:?}");
        assert_eq!(heard1.get(&("LAN2-B".into(), i)), Some(&1), "LAN2 -> LAN1 #{i}");
        assert_eq!(heard2.get(&("LAN2-B".into(), i)), Some(&1), "LAN2 own #{i}");
        assert_eq!(heard2.get(&("LAN1-A".into(), i)), Some(&1), "LAN1 -> LAN2 #{i}");
    }
    assert_eq!(heard1.len() as u32, 2 * n, "nothing else on LAN1");
    assert_eq!(heard2.len() as u32, 2 * n, "nothing else on LAN2");
    let t1 = gw1.counters("trunk").unwrap().snapshot();
    assert_eq!(t1.events_in, n as u64, "each LAN2 event crossed the trunk once");
    assert_eq!(t1.events_out, n as u64, "each LAN1 event crossed the trunk once");
    gw2.shutdown().await;
    gw1.shutdown().await;
}
