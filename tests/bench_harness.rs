//! `takgate bench` against a real gateway at small scale: every scenario counts what it
//! should (so the figures in BENCHMARKS.md come from a harness that is itself tested).

mod common;

use std::time::Duration;

use common::gateway;
use takgate::bench::{self, ClientsArgs, FanoutArgs, IdleArgs, Target, UdpArgs};

fn target(addr: std::net::SocketAddr, proto: bool) -> Target {
    Target { target: addr.to_string(), ca: None, cert: None, key: None, server_name: None, proto, quic: false, allow_remote: false, json: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_fanout_udp_multicast_and_idle_scenarios() {
    let port = common::free_udp_port();
    let group = format!("239.255.79.{}:{port}", 1 + port % 200);
    let gw = gateway(&format!(
        "[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"u\"\ntransport = \"udp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"m\"\ntransport = \"multicast\"\naddress = \"{group}\"\ninterfaces = [\"127.0.0.1\"]\n"
    ))
    .await;
    let c = gw.local_addr("c").unwrap();
    for proto in [false, true] {
        let s = bench::clients(ClientsArgs { target: target(c, proto), clients: 10, rate: 5.0, duration: 2.0, ramp: 0.5, pad: 0 }).await.unwrap();
        assert_eq!(s.connected, 10);
        assert!(s.sent_in_window >= 80, "{s:?}");
        assert_eq!(s.delivered, s.expected_deliveries, "{s:?}");
        assert_eq!((s.pongs, s.disconnects), (10, 0));
        assert!(s.latency_ms_p99 > 0.0 && s.latency_ms_p99 < 1000.0);
    }
    let f = bench::fanout(FanoutArgs { target: target(c, false), senders: 1, receivers: 3, duration: 1.0, baseline: true, receive_target: None }).await.unwrap();
    assert!(f.delivered > 0 && f.baseline_deliveries_per_s.unwrap() > 0.0, "{f:?}");
    for udp in [gw.local_addr("u").unwrap(), group.parse().unwrap()] {
        let u = bench::udp(UdpArgs { target: target(c, false), udp, multicast_if: std::net::Ipv4Addr::LOCALHOST, rate: 500.0, senders: 1, receivers: 1, duration: 1.0 }).await.unwrap();
        assert!(u.sent > 300, "{u:?}");
        assert!(u.loss < 0.01, "{udp}: {u:?}");
    }
    let i = bench::idle(IdleArgs { target: target(c, false), clients: 50, pid: Some(std::process::id()), hold: 0.2 }).await.unwrap();
    assert_eq!(i.connected, 50);
    assert!(i.rss_after_kib.is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_scenario_over_v1_and_v2() {
    for protocol in ["v1", "v2"] {
        let f = bench::federation(bench::FederationArgs { protocol: protocol.into(), target: None, receive_target: None, senders: 1, duration: 1.5, rate: Some(2000.0), hub: false, json: false }).await.unwrap();
        assert!(f.sent >= 2500, "{protocol}: {f:?}");
        // A check that the scenario works; the throughput figures live in BENCHMARKS.md (a busy
        // shared machine delivers less of a paced load within the short window: with other
        // tests on the same two cores, 5000/s in a debug build came through 35-55%, before
        // and after the link-layer redesign alike).
        assert!(f.delivered_pct > 80.0, "{protocol}: paced load crosses the link: {f:?}");
    }
    // Through a takgate Federation Hub, with the direct link of the same run for the ratio.
    let f = bench::federation(bench::FederationArgs { protocol: "v2".into(), target: None, receive_target: None, senders: 1, duration: 1.5, rate: Some(2000.0), hub: true, json: false }).await.unwrap();
    assert!(f.via_hub && f.direct_events_per_s.is_some_and(|d| d > 0.0) && f.ratio_to_direct.is_some(), "{f:?}");
    assert!(f.delivered_pct > 80.0, "paced load crosses the hub: {f:?}");
    let e = bench::federation(bench::FederationArgs { protocol: "v3".into(), target: None, receive_target: None, senders: 1, duration: 1.0, rate: None, hub: false, json: false }).await;
    assert!(e.is_err());
}
