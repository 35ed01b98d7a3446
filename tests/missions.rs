//! Missions federated over v2 between two takgates: a change made on A arrives on B exactly
//! once and B's pytak subscriber sees the t-x-m-c announcement; with the link down 1,000
//! changes queue durably and all arrive, in order per mission; kill -9 of A while changes
//! are queued loses nothing and applies nothing twice.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::certs::Pki;
use common::py::{args, peer};
use common::{eventually, gateway, Client};
use takgate::cot::{CotEvent, CotTime};

fn node(id: &str, pki: &mut Pki, mode: &str, fed_addr: &str, client_addr: &str, extra: &str) -> String {
    let (c, k) = if mode == "listen" { (pki.server_cert.clone(), pki.server_key.clone()) } else { pki.leaf(id, false) };
    format!(
        "[node]\nid = \"{id}\"\n{extra}\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"{client_addr}\"\n\
         [[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"{mode}\"\naddress = \"{fed_addr}\"\nserver_name = \"localhost\"\n\
         reconnect_min_secs = 0.2\nreconnect_max_secs = 0.5\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.path(&pki.ca),
        c.display(),
        k.display()
    )
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A CoT item sent to `mission` (ADD_CONTENT the first time its uid joins).
fn to_mission(uid: &str, mission: &str, seq: u32) -> CotEvent {
    let now = CotTime::now();
    let mut ev = CotEvent::new(uid, "a-h-G", "h-g-i-g-o", CotTime(now.0 + seq as i64), 300);
    ev.detail.xml = format!(r#"<marti><dest mission="{mission}"/></marti><remarks>seq={seq}</remarks>"#);
    ev
}

async fn wait_v2(gw: &takgate::runtime::Gateway) {
    for _ in 0..300 {
        if gw.router().stats().await.iter().any(|s| s.transport == "federation-v2") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("no federation v2 session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_change_arrives_once_and_is_announced() {
    let mut pki = Pki::new("missions1");
    let a = gateway(&node("node-a", &mut pki, "listen", "127.0.0.1:0", "127.0.0.1:0", "")).await;
    let b = gateway(&node("node-b", &mut pki, "connect", &a.local_addr("fed").unwrap().to_string(), "127.0.0.1:0", "")).await;
    wait_v2(&a).await;
    wait_v2(&b).await;
    let url_b = format!("tcp://{}", b.local_addr("c").unwrap());
    let sub = tokio::spawn(peer(args(&format!("--url {url_b} --uid SUB --callsign SUBSCRIBER --listen 9")), 40.0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut alpha = Client::tcp(a.local_addr("c").unwrap()).await;
    alpha.send(&to_mission("ITEM-1", "ops", 1)).await;
    let one = eventually(8.0, || b.store().all_changes().unwrap().len() == 1).await;
    assert!(one, "B: {:?}", b.store().all_changes().unwrap());
    // The same item again (a newer report) is not a new change; a new item is.
    alpha.send(&to_mission("ITEM-1", "ops", 2)).await;
    alpha.send(&to_mission("ITEM-2", "ops", 3)).await;
    assert!(eventually(5.0, || b.store().all_changes().unwrap().len() >= 2).await);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let on_a = a.store().changes("ops").unwrap();
    let on_b = b.store().changes("ops").unwrap();
    assert_eq!(on_a.iter().map(|c| (c.change_type.as_str(), c.content_uid.as_str(), c.is_federated)).collect::<Vec<_>>(), [("ADD_CONTENT", "ITEM-1", false), ("ADD_CONTENT", "ITEM-2", false)]);
    assert_eq!(on_b.iter().map(|c| (c.change_type.as_str(), c.content_uid.as_str(), c.is_federated)).collect::<Vec<_>>(), [("ADD_CONTENT", "ITEM-1", true), ("ADD_CONTENT", "ITEM-2", true)], "exactly once on B");
    assert_eq!(on_b.iter().map(|c| c.ts_ms).collect::<Vec<_>>(), on_a.iter().map(|c| c.ts_ms).collect::<Vec<_>>(), "the origin's timestamps");
    let m = b.store().missions().unwrap();
    assert_eq!((m[0].name.as_str(), m[0].items), ("ops", 2));
    // Sent counts once a health check round trip after the write confirmed it.
    assert!(eventually(10.0, || a.store().queue_stats().unwrap().first().is_some_and(|s| (s.sent, s.pending) == (2, 0))).await, "{:?}", a.store().queue_stats());
    let q = a.store().queue_stats().unwrap();
    assert_eq!(q[0].server, format!("fed/node-b:takgate test CA missions1/{}", &q[0].server[q[0].server.len() - 8..]), "an inbound federate's row");
    // B never sends a federated change back.
    assert!(b.store().queue_stats().unwrap().iter().all(|s| s.total == 0));
    // A t-x-m-c announcement seen on a local link (e.g. from OpenTAKServer over the bridge)
    // is a local change too, and federates.
    let seen = takgate::store::Change { content_uid: "OTS-ITEM".into(), creator_uid: "ots".into(), ts_ms: CotTime::now().0, ..takgate::store::Change::new("ops2", takgate::store::ChangeType::AddContent) };
    alpha.send(&takgate::missions::announcement(&seen)).await;
    assert!(eventually(5.0, || b.store().changes("ops2").unwrap().len() == 1).await, "{:?}", b.store().all_changes());
    assert_eq!(a.store().changes("ops2").unwrap()[0].content_uid, "OTS-ITEM");
    let sub = sub.await.unwrap();
    let announced: Vec<_> = sub.events.iter().filter(|e| e["type"] == "t-x-m-c").collect();
    assert_eq!(announced.len(), 3, "B's pytak subscriber sees one t-x-m-c per change: {:?} {}", sub.events, sub.stderr);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_changes_queue_while_the_link_is_down_and_arrive_in_order() {
    let mut pki = Pki::new("missions2");
    let b_fed = free_port();
    let db = pki.dir.join("a.db");
    let a = gateway(&node("node-a", &mut pki, "connect", &b_fed.to_string(), "127.0.0.1:0", &format!("[store]\npath = \"{}\"", db.display()))).await;
    let mut alpha = Client::tcp(a.local_addr("c").unwrap()).await;
    for k in 0..1000u32 {
        alpha.send(&to_mission(&format!("ITEM-{k}"), &format!("m{}", k % 3), k)).await;
    }
    let queued = eventually(20.0, || a.store().queue_stats().unwrap().first().is_some_and(|s| s.pending == 1000)).await;
    assert!(queued, "{:?}", a.store().queue_stats());
    let before = a.connection("fed").unwrap();
    assert!(before.last_error.as_deref().is_some_and(|e| e.contains("connect failed")), "{before:?}");
    // The link comes up.
    let b = gateway(&node("node-b", &mut pki, "listen", &b_fed.to_string(), "127.0.0.1:0", "")).await;
    let all = eventually(40.0, || b.store().all_changes().unwrap().len() >= 1000).await;
    assert!(all, "B has {}", b.store().all_changes().unwrap().len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.store().all_changes().unwrap().len(), 1000, "nothing twice");
    for m in ["m0", "m1", "m2"] {
        let sent: Vec<String> = a.store().changes(m).unwrap().into_iter().map(|c| c.content_uid).collect();
        let got: Vec<String> = b.store().changes(m).unwrap().into_iter().map(|c| c.content_uid).collect();
        assert_eq!(got, sent, "in order for mission {m}");
    }
    assert!(eventually(10.0, || a.store().queue_stats().unwrap().first().is_some_and(|s| (s.sent, s.pending) == (1000, 0))).await, "{:?}", a.store().queue_stats());
    b.shutdown().await;
    a.shutdown().await;
}

fn takgate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_takgate")).args(args).output().unwrap()
}

async fn spawn_node(cfg: &Path, client: SocketAddr) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_takgate")).args(["run", "--config"]).arg(cfg).env("RUST_LOG", "warn").kill_on_drop(true).spawn().unwrap();
    assert!(common::listening(client, 10.0).await, "takgate did not start");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_changes_are_queued_loses_nothing_and_applies_nothing_twice() {
    let mut pki = Pki::new("missions3");
    let b_fed = free_port();
    let a_client = free_port();
    let db = pki.dir.join("a.db");
    let cfg = pki.dir.join("a.toml");
    std::fs::write(&cfg, node("node-a", &mut pki, "connect", &b_fed.to_string(), &a_client.to_string(), &format!("[store]\npath = \"{}\"", db.display()))).unwrap();
    let mut a = spawn_node(&cfg, a_client).await;
    let mut alpha = Client::tcp(a_client).await;
    for k in 0..300u32 {
        alpha.send(&to_mission(&format!("ITEM-{k}"), &format!("m{}", k % 2), k)).await;
    }
    let store = takgate::store::Store::open(&db.display().to_string()).unwrap();
    assert!(eventually(20.0, || store.queue_stats().unwrap().first().is_some_and(|s| s.pending == 300)).await, "{:?}", store.queue_stats());
    // kill -9, then start again on the same store.
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    drop(alpha);
    let mut a = spawn_node(&cfg, a_client).await;
    // The CLI reads the same store.
    let out = takgate(&["federation", "queue", "--config", &cfg.display().to_string(), "--json", "--limit", "0"]);
    let q: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(q["servers"][0]["pending"], 300, "{q}");
    let b = gateway(&node("node-b", &mut pki, "listen", &b_fed.to_string(), "127.0.0.1:0", "")).await;
    assert!(eventually(40.0, || b.store().all_changes().unwrap().len() >= 300).await, "B has {}", b.store().all_changes().unwrap().len());
    // And A is killed again right after delivering: its restart sends nothing twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    // The restarted A sends again what no health check confirmed; B applies none twice.
    let mut a = spawn_node(&cfg, a_client).await;
    let queue = || -> serde_json::Value {
        let out = takgate(&["federation", "queue", "--config", &cfg.display().to_string(), "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let confirmed = eventually(30.0, || {
        let q = queue();
        (q["servers"][0]["pending"].as_i64(), q["servers"][0]["sent"].as_i64()) == (Some(0), Some(300))
    })
    .await;
    assert!(confirmed, "{}", queue());
    assert_eq!(b.store().all_changes().unwrap().len(), 300, "nothing applied twice");
    let out = takgate(&["missions", "list", "--config", &cfg.display().to_string(), "--json"]);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m.as_array().map(|a| a.iter().map(|x| x["items"].as_i64().unwrap_or(0)).sum::<i64>()), Some(300), "{m}");
    let out = takgate(&["missions", "changes", "m0", "--config", &cfg.display().to_string()]);
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() == 151, "header and 150 changes:\n{}", String::from_utf8_lossy(&out.stdout));
    a.start_kill().unwrap();
    b.shutdown().await;
}
