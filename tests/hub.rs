//! takgate as a Federation Hub (`[hub]`), with TAK's policy file: two takgate spokes from
//! different CAs federate through it over v2 (CoT both ways as the edges allow, with the
//! group lists cut per edge, and mission changes as ROL), an independent grpcio federate
//! (tests/py/fig_client.py, TAK Server's client sequence) joins through its CA group, a
//! federate whose CA is not in the policy is refused with TAK's reason, and a policy reload
//! changes what passes without dropping the sessions that stay allowed.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, gateway, Client};
use takgate::certs::Authority;
use takgate::cot::{CotEvent, CotTime};
use takgate::link::LinkState;
use takgate::runtime::Gateway;

fn group_id(ca: &Path) -> String {
    let der = takgate::link::tls::load_certs(ca).unwrap().remove(0);
    takgate::hub::identity::ca_group_id(&der).unwrap()
}

fn policy(ga: &str, gb: &str, b_to_a: &str) -> String {
    format!(
        r#"{{ "name": "test", "version": "1", "type": "Federation", "graphData": {{ "nodes": [
          {{ "graphType": "GroupCell", "id": "gA", "federation": {{ "name": "{ga}", "interconnected": false }} }},
          {{ "graphType": "GroupCell", "id": "gB", "federation": {{ "name": "{gb}", "interconnected": false }} }},
          {{ "graphType": "EdgeCell", "id": "e1", "source": {{ "id": "gA" }}, "target": {{ "id": "gB" }},
            "federation": {{ "name": "A->B", "groupsFilterType": "allGroups" }} }}
          {b_to_a} ] }} }}"#
    )
}

const B_TO_A_BLUE: &str = r#", { "graphType": "EdgeCell", "id": "e2", "source": { "id": "gB" }, "target": { "id": "gA" },
    "federation": { "name": "B->A", "groupsFilterType": "allowed", "allowedGroups": ["Blue"] } }"#;

fn event(uid: &str, group: &str, seq: u32) -> CotEvent {
    let mut ev = CotEvent::new(uid, "a-f-G-U-C", "m-g", CotTime::now(), 120);
    ev.point.lat = 1.0 + seq as f64 * 0.001;
    // A connected client's own report (callsign and endpoint): a contact to federates.
    ev.detail.contact = Some(takgate::cot::Contact { callsign: uid.into(), endpoint: "*:-1:stcp".into(), altendpoints: String::new() });
    ev.detail.xml = format!(r#"<__group name="{group}" role="Team Member"/><remarks>seq={seq}</remarks>"#);
    ev
}

fn to_mission(uid: &str, mission: &str) -> CotEvent {
    let mut ev = CotEvent::new(uid, "a-h-G", "h-g-i-g-o", CotTime::now(), 300);
    ev.detail.xml = format!(r#"<marti><dest mission="{mission}"/></marti>"#);
    ev
}

struct Pki {
    dir: PathBuf,
    a: Authority,
    b: Authority,
    c: Authority,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("takgate-hub-{}-{}", std::process::id(), fastrand::u64(..)));
        let _ = std::fs::remove_dir_all(&dir);
        let mk = |n: &str| Authority::new(&dir.join(n), &format!("CA-{n}")).unwrap();
        let (a, b, c) = (mk("a"), mk("b"), mk("c"));
        // Every CA in one trust file: the hub and the spokes trust all three.
        let bundle: String = [&a.ca, &b.ca, &c.ca].iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
        std::fs::write(dir.join("bundle.pem"), bundle).unwrap();
        Pki { dir, a, b, c }
    }
    fn bundle(&self) -> String {
        self.dir.join("bundle.pem").display().to_string()
    }
}

fn spoke(id: &str, hub: std::net::SocketAddr, ca_bundle: &str, cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[node]\nid = \"{id}\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"hub\"\ntransport = \"federation-v2\"\nmode = \"connect\"\naddress = \"{hub}\"\nserver_name = \"localhost\"\nca = \"{ca_bundle}\"\ncert = \"{}\"\nkey = \"{}\"\nreconnect_min_secs = 0.3\nreconnect_max_secs = 1\n{extra}\n",
        cert.display(),
        key.display()
    )
}

fn uids(evs: &[CotEvent]) -> Vec<String> {
    let mut u: Vec<String> = evs.iter().filter(|e| !e.cot_type.starts_with("t-x")).map(|e| e.uid.clone()).collect();
    u.sort();
    u.dedup();
    u
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spokes_federate_through_the_hub_by_its_policy() {
    let pki = Pki::new();
    let (ga, gb) = (group_id(&pki.a.ca), group_id(&pki.b.ca));
    let policy_path = pki.dir.join("policy.json");
    std::fs::write(&policy_path, policy(&ga, &gb, B_TO_A_BLUE)).unwrap();
    let (hc, hk) = pki.a.leaf("hub", &["localhost", "127.0.0.1"]).unwrap();
    let hub = gateway(&format!(
        "[node]\nid = \"the-hub\"\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"hub-test-token-0123\"\n[hub]\naddress = \"127.0.0.1:0\"\nv1_address = \"127.0.0.1:0\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\npolicy = \"{}\"\n",
        pki.bundle(),
        hc.display(),
        hk.display(),
        policy_path.display()
    ))
    .await;
    let h = hub.control().hub.clone().unwrap();
    let addr = h.address;
    let (ac, ak) = pki.a.leaf("spoke-a", &["localhost"]).unwrap();
    let (bc, bk) = pki.b.leaf("spoke-b", &["localhost"]).unwrap();
    let a = gateway(&spoke("spoke-a", addr, &pki.bundle(), &ac, &ak, "")).await;
    let b = gateway(&spoke("spoke-b", addr, &pki.bundle(), &bc, &bk, "outbound_groups = [\"Blue\", \"Red\"]\n")).await;
    let up = |g: &takgate::runtime::Gateway| g.connection("hub").is_some_and(|c| c.state == LinkState::Connected);
    assert!(eventually(15.0, || up(&a) && up(&b)).await, "spokes connect: {:?} {:?}", a.connection("hub"), b.connection("hub"));
    assert!(eventually(10.0, || h.view().iter().filter(|s| s.streams.contains(&"events")).count() == 2).await, "{:#?}", h.view().iter().map(|s| (&s.federate_id, &s.streams)).collect::<Vec<_>>());
    let mut ca_client = Client::tcp(a.local_addr("c").unwrap()).await;
    let mut cb_client = Client::tcp(b.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A -> B on an all-groups edge (A's events carry no federation groups).
    ca_client.send(&event("ALPHA-1", "Cyan", 1)).await;
    // B -> A only in Blue: Blue passes, Red does not.
    cb_client.send(&event("BRAVO-BLUE", "Blue", 1)).await;
    cb_client.send(&event("BRAVO-RED", "Red", 1)).await;
    let at_b = uids(&cb_client.drain(Duration::from_secs(2)).await);
    let at_a = uids(&ca_client.drain(Duration::from_secs(1)).await);
    assert_eq!(at_b, ["ALPHA-1"], "B got A's event through the hub");
    assert_eq!(at_a, ["BRAVO-BLUE"], "A got B's Blue event, not its Red one");
    // Group advertisements: B's groups, cut by the B -> A edge, are what A is offered.
    let by_name = |n: &str| h.view().into_iter().find(|s| s.name == n);
    assert!(eventually(5.0, || by_name("spoke-b").is_some_and(|b| b.advertised == ["Blue", "Red"]) && by_name("spoke-a").is_some_and(|a| a.offered == ["Blue"])).await, "{:?}", h.view().iter().map(|s| (&s.name, &s.advertised, &s.offered)).collect::<Vec<_>>());

    // An independent federate (grpcio, TAK Server's client sequence) in CA A's group.
    let (pc, pk) = pki.a.leaf("pyfed", &["localhost"]).unwrap();
    let py = tokio::spawn(common::py::run_script("fig_client.py", vec!["--target".into(), addr.to_string(), "--ca".into(), pki.bundle(), "--cert".into(), pc.display().to_string(), "--key".into(), pk.display().to_string(), "--send".into(), "2".into(), "--seconds".into(), "6".into()], 40.0));
    let mut got = vec![];
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until && !got.iter().any(|e: &CotEvent| e.uid == "PY-FED-1") {
        got.extend(cb_client.recv(Duration::from_millis(200)).await);
    }
    assert!(got.iter().any(|e| e.uid == "PY-FED-1"), "B got the grpcio federate's events: {:?}", uids(&got));
    // While the grpcio federate is subscribed: B's Blue event reaches it (B -> CA A's group).
    cb_client.send(&event("BRAVO-BLUE", "Blue", 2)).await;
    let run = py.await.unwrap();
    let done = run.done.clone().unwrap_or_default();
    assert_eq!(done["done"]["groups_first"], "SERVING", "{done} {}", run.stderr);
    assert_eq!(done["done"]["health"], "SERVING", "{done}");
    let py_saw: Vec<&serde_json::Value> = run.events.iter().filter(|e| e["uid"] == "BRAVO-BLUE").collect();
    assert!(!py_saw.is_empty(), "the grpcio federate got B's Blue event: {:?}", run.events);
    assert!(py_saw[0]["provenance"].as_array().unwrap().iter().any(|p| p == "the-hub"), "stamped with the hub's provenance: {:?}", py_saw[0]);

    // Mission changes cross as ROL (A -> B).
    ca_client.send(&to_mission("ITEM-1", "ops")).await;
    assert!(eventually(10.0, || b.store().changes("ops").map(|c| c.iter().any(|c| c.content_uid == "ITEM-1")).unwrap_or(false)).await, "B applied A's mission change through the hub");

    // A federate whose CA is trusted but not in the policy is refused with TAK's reason.
    let (cc, ck) = pki.c.leaf("spoke-c", &["localhost"]).unwrap();
    let c = gateway(&spoke("spoke-c", addr, &pki.bundle(), &cc, &ck, "")).await;
    assert!(eventually(10.0, || c.connection("hub").and_then(|s| s.last_error).is_some_and(|e| e.contains("Federate/CA Group not found"))).await, "{:?}", c.connection("hub"));
    c.shutdown().await;

    // The admin API shows the graph and the federates; the dashboard draws them.
    let v = admin_get(hub.admin_addr().unwrap(), "/api/hub").await;
    assert_eq!(v["policy"]["edges"].as_array().map(|e| e.len()), Some(2), "{v:#}");
    assert!(v["federates"].as_array().unwrap().len() >= 2, "{v:#}");
    let drawn = dashboard_picture(hub.admin_addr().unwrap(), 2).await;
    assert_eq!((drawn["visible"].as_bool(), drawn["groups"].as_u64()), (Some(true), Some(2)), "{drawn}");
    assert_eq!(drawn["edges"], serde_json::json!(["A->B", "B->A"]), "{drawn}");
    assert!(drawn["filters"].as_array().unwrap().iter().any(|f| f.as_str().unwrap().contains("allowed Blue")), "{drawn}");
    assert!(drawn["live"].as_array().unwrap().len() >= 2 && drawn["rows"].as_u64() >= Some(2), "{drawn}");
    assert_eq!(drawn["errors"], serde_json::json!([]), "{drawn}");

    // Reload: the B -> A edge goes; A and B stay connected, B's Blue no longer reaches A.
    let connects = (a.connection("hub").unwrap().connects, b.connection("hub").unwrap().connects);
    ca_client.drain(Duration::from_millis(300)).await;
    std::fs::write(&policy_path, policy(&ga, &gb, "")).unwrap();
    assert!(eventually(5.0, || h.policy().edges.len() == 1).await, "reloaded");
    cb_client.send(&event("BRAVO-BLUE", "Blue", 3)).await;
    ca_client.send(&event("ALPHA-1", "Cyan", 2)).await;
    assert!(uids(&cb_client.drain(Duration::from_secs(2)).await).contains(&"ALPHA-1".to_string()), "A -> B still passes");
    let at_a = ca_client.drain(Duration::from_secs(1)).await;
    assert!(!at_a.iter().any(|e| e.uid == "BRAVO-BLUE" && common::seq_of(e) == Some(3)), "B -> A no longer passes: {at_a:?}");
    assert_eq!((a.connection("hub").unwrap().connects, b.connection("hub").unwrap().connects), connects, "sessions that stay allowed are kept");
    // B goes away; a mission change made meanwhile reaches it when it comes back (the
    // hub's replay from its store), and the ROL stream stays open for live changes after.
    let b_link = b.control().cfg.links.iter().find(|l| l.name == "hub").unwrap().clone();
    assert!(b.control().remove_link("hub"));
    assert!(eventually(10.0, || !h.view().iter().any(|s| s.name == "spoke-b")).await, "B left the hub");
    for item in ["ITEM-2", "ITEM-2B", "ITEM-2C"] {
        ca_client.send(&to_mission(item, "ops")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!b.store().changes("ops").unwrap().iter().any(|c| c.content_uid == "ITEM-2"));
    b.control().add_link(&b_link).await.unwrap();
    assert!(eventually(15.0, || b.store().changes("ops").map(|c| c.iter().any(|c| c.content_uid == "ITEM-2C")).unwrap_or(false)).await, "B got the changes it missed on its return");
    let order: Vec<String> = b.store().changes("ops").unwrap().into_iter().map(|c| c.content_uid).filter(|u| u.starts_with("ITEM-2")).collect();
    assert_eq!(order, ["ITEM-2", "ITEM-2B", "ITEM-2C"], "every missed change, in order, once");
    assert!(eventually(5.0, || up(&b)).await);
    ca_client.send(&to_mission("ITEM-3", "ops")).await;
    assert!(eventually(10.0, || b.store().changes("ops").map(|c| c.iter().any(|c| c.content_uid == "ITEM-3")).unwrap_or(false)).await, "live ROL after the replay");
    let items: Vec<String> = b.store().changes("ops").unwrap().into_iter().map(|c| c.content_uid).collect();
    assert_eq!(items.iter().filter(|u| *u == "ITEM-1").count(), 1, "nothing twice: {items:?}");
    // A policy that does not validate keeps the one in force and says why.
    std::fs::write(&policy_path, "{ \"graphData\": { \"nodes\": [ { \"graphType\": \"EdgeCell\", \"id\": \"e9\", \"source\": { \"id\": \"x\" }, \"target\": { \"id\": \"y\" } } ] } }").unwrap();
    assert!(eventually(5.0, || h.policy_error().is_some_and(|e| e.contains("e9"))).await, "{:?}", h.policy_error());
    assert_eq!(h.policy().edges.len(), 1);
    for g in [a, b, hub] {
        g.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&pki.dir);
}

/// The dashboard's hub picture as headless Chromium sees it (tests/browser/hub.mjs).
async fn dashboard_picture(admin: std::net::SocketAddr, federates: usize) -> serde_json::Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(root.join("tests/browser/node_modules/playwright-core").exists(), "playwright-core is missing: run the README's test command (scripts/test), which installs it into tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: scripts/test installs Debian's chromium");
    let shot = root.join("target/hub.png");
    let out = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/hub.mjs"))
        .args([format!("http://{admin}/"), "hub-test-token-0123".into(), shot.display().to_string(), federates.to_string()])
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out).await.expect("the browser run finishes").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hub.mjs: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap()
}

async fn admin_get(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer hub-test-token-0123\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut b = Vec::new();
    s.read_to_end(&mut b).await.unwrap();
    let text = String::from_utf8_lossy(&b).into_owned();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    let body = if text.to_ascii_lowercase().contains("transfer-encoding: chunked") { body.split_once("\r\n").map(|x| x.1).unwrap_or_default().rsplit_once("\r\n0\r\n").map(|x| x.0).unwrap_or(body) } else { body };
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn hub_check_validates_a_policy_file_offline() {
    let dir = std::env::temp_dir().join(format!("takgate-hub-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.json");
    std::fs::write(&good, policy("CA-A", "CA-B", B_TO_A_BLUE)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_takgate")).args(["hub", "check"]).arg(&good).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("2 groups") && text.contains("2 edges") && text.contains("B->A"), "{text} {}", String::from_utf8_lossy(&out.stderr));
    let bad = dir.join("bad.json");
    std::fs::write(&bad, policy("CA-A", "CA-B", B_TO_A_BLUE).replace("\"id\": \"gB\" }, \"target\"", "\"id\": \"gZ\" }, \"target\"")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_takgate")).args(["hub", "check"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("e2") && err.contains("\"gZ\" is not a node"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_dials_out_to_a_federation_server_named_in_its_policy() {
    let pki = Pki::new();
    let ga = group_id(&pki.a.ca);
    // The server the hub dials: a takgate federation v2 listener (as a TAK Server's 9001).
    let (tc, tk) = pki.b.leaf("t2", &["localhost", "127.0.0.1"]).unwrap();
    let t2 = gateway(&format!(
        "[node]\nid = \"t2\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.bundle(),
        tc.display(),
        tk.display()
    ))
    .await;
    let port = t2.local_addr("fed").unwrap().port();
    let policy_path = pki.dir.join("out.json");
    std::fs::write(
        &policy_path,
        format!(
            r#"{{ "name": "out", "graphData": {{ "nodes": [
              {{ "graphType": "GroupCell", "id": "gA", "federation": {{ "name": "{ga}" }} }},
              {{ "graphType": "FederationOutgoingCell", "id": "o1", "federation": {{ "outgoingName": "to-t2", "host": "127.0.0.1", "port": {port}, "outgoingEnabled": true }} }},
              {{ "graphType": "EdgeCell", "id": "e1", "source": {{ "id": "gA" }}, "target": {{ "id": "o1" }}, "federation": {{ "name": "A->T2" }} }},
              {{ "graphType": "EdgeCell", "id": "e2", "source": {{ "id": "o1" }}, "target": {{ "id": "gA" }}, "federation": {{ "name": "T2->A" }} }} ] }} }}"#
        ),
    )
    .unwrap();
    let (hc, hk) = pki.a.leaf("hub", &["localhost", "127.0.0.1"]).unwrap();
    let hub = gateway(&format!("[node]\nid = \"the-hub\"\n[hub]\naddress = \"127.0.0.1:0\"\nv1_address = \"127.0.0.1:0\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\npolicy = \"{}\"\n", pki.bundle(), hc.display(), hk.display(), policy_path.display())).await;
    let h = hub.control().hub.clone().unwrap();
    let (ac, ak) = pki.a.leaf("spoke-a", &["localhost"]).unwrap();
    let a = gateway(&spoke("spoke-a", h.address, &pki.bundle(), &ac, &ak, "")).await;
    let ready = |h: &takgate::hub::Hub| {
        let v = h.view();
        v.iter().any(|s| s.outgoing && s.streams.contains(&"events") && s.streams.contains(&"rol")) && v.iter().any(|s| !s.outgoing && s.streams.contains(&"events"))
    };
    assert!(eventually(20.0, || ready(&h)).await, "outgoing up and spoke subscribed: {:?} {:?}", h.view().iter().map(|s| (&s.federate_id, s.outgoing, &s.streams)).collect::<Vec<_>>(), h.outgoing_status());
    let mut at_a = Client::tcp(a.local_addr("c").unwrap()).await;
    let mut at_t2 = Client::tcp(t2.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    at_a.send(&event("ALPHA-1", "Cyan", 1)).await;
    at_t2.send(&event("TANGO-1", "Cyan", 1)).await;
    assert!(uids(&at_t2.drain(Duration::from_secs(3)).await).contains(&"ALPHA-1".to_string()), "the spoke's event reached the server the hub dialled");
    assert!(uids(&at_a.drain(Duration::from_secs(2)).await).contains(&"TANGO-1".to_string()), "and back");
    at_a.send(&to_mission("ITEM-9", "ops")).await;
    assert!(eventually(10.0, || t2.store().changes("ops").map(|c| c.iter().any(|c| c.content_uid == "ITEM-9")).unwrap_or(false)).await, "mission changes over the outgoing connection");
    // The policy drops the outgoing node: the connection closes.
    std::fs::write(&policy_path, policy(&ga, "CA-B", "")).unwrap();
    assert!(eventually(10.0, || !h.view().iter().any(|s| s.outgoing)).await, "closed with its node");
    for g in [a, hub, t2] {
        g.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_federate_and_a_v2_federate_meet_through_the_hub() {
    let pki = Pki::new();
    let (ga, gb) = (group_id(&pki.a.ca), group_id(&pki.b.ca));
    let policy_path = pki.dir.join("policy.json");
    std::fs::write(&policy_path, policy(&ga, &gb, B_TO_A_BLUE)).unwrap();
    let (hc, hk) = pki.a.leaf("hub", &["localhost", "127.0.0.1"]).unwrap();
    let hub = gateway(&format!("[node]\nid = \"the-hub\"\n[hub]\naddress = \"127.0.0.1:0\"\nv1_address = \"127.0.0.1:0\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\npolicy = \"{}\"\n", pki.bundle(), hc.display(), hk.display(), policy_path.display())).await;
    let h = hub.control().hub.clone().unwrap();
    let (ac, ak) = pki.a.leaf("spoke-a", &["localhost"]).unwrap();
    let (bc, bk) = pki.b.leaf("spoke-b", &["localhost"]).unwrap();
    // A speaks v1 to the hub's v1 port, B v2.
    let a = gateway(&spoke("spoke-a", h.v1_address.unwrap(), &pki.bundle(), &ac, &ak, "").replace("federation-v2", "federation-v1")).await;
    let b = gateway(&spoke("spoke-b", h.address, &pki.bundle(), &bc, &bk, "outbound_groups = [\"Blue\"]\n")).await;
    assert!(eventually(15.0, || h.view().iter().filter(|s| s.streams.contains(&"events")).count() == 2).await, "{:?}", h.view().iter().map(|s| (&s.federate_id, &s.streams)).collect::<Vec<_>>());
    let mut ca_client = Client::tcp(a.local_addr("c").unwrap()).await;
    let mut cb_client = Client::tcp(b.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    ca_client.send(&event("ALPHA-V1", "Cyan", 1)).await;
    cb_client.send(&event("BRAVO-BLUE", "Blue", 1)).await;
    assert_eq!(uids(&cb_client.drain(Duration::from_secs(2)).await), ["ALPHA-V1"], "v1 -> hub -> v2");
    assert_eq!(uids(&ca_client.drain(Duration::from_secs(1)).await), ["BRAVO-BLUE"], "v2 -> hub -> v1");
    for g in [a, b, hub] {
        g.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&pki.dir);
}

/// A bare v2 federate on takgate's generated stubs (a test driver, not a peer model):
/// connected, identified on ServerFederateGroupsStream.
async fn raw_federate(hub: std::net::SocketAddr, ca: &str, cert: &Path, key: &Path, name: &str, tasks: &mut tokio::task::JoinSet<()>, session: &tokio_util::sync::CancellationToken) -> (takgate::federation::v2::Client, takgate::federation::fig::Subscription) {
    use takgate::federation::fig::{identity::ConnectionType, Identity, Subscription, TakServerVersion};
    let mut cc = takgate::link::tls::client_config(Path::new(ca), Some((cert, key))).unwrap();
    cc.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(hub).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cc)).connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let mut c = takgate::federation::v2::h2_client(Box::new(tls), &hub.to_string(), 64 << 20, session, tasks).await.unwrap();
    let sub = Subscription { identity: Some(Identity { name: name.into(), uid: name.into(), description: String::new(), r#type: ConnectionType::FederationTakClient as i32, server_id: format!("{name}-server") }), filter: String::new(), version: Some(TakServerVersion { major: 5, minor: 5, ..Default::default() }) };
    let mut g = c.server_federate_groups_stream(sub.clone()).await.unwrap().into_inner();
    assert!(g.message().await.unwrap().unwrap().stream_update.is_some(), "SERVING first");
    (c, sub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_go_to_outgoing_connections_and_files_are_replayed_up_to_the_cap() {
    use takgate::federation::fig::{BinaryBlob, Rol};
    let pki = Pki::new();
    let (ga, gb) = (group_id(&pki.a.ca), group_id(&pki.b.ca));
    let (tc, tk) = pki.b.leaf("t2", &["localhost", "127.0.0.1"]).unwrap();
    let t2 = gateway(&format!("[node]\nid = \"t2\"\n[[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n", pki.bundle(), tc.display(), tk.display())).await;
    let port = t2.local_addr("fed").unwrap().port();
    let policy_path = pki.dir.join("blob.json");
    std::fs::write(&policy_path, format!(r#"{{ "graphData": {{ "nodes": [
        {{ "graphType": "GroupCell", "id": "gA", "federation": {{ "name": "{ga}" }} }},
        {{ "graphType": "GroupCell", "id": "gB", "federation": {{ "name": "{gb}" }} }},
        {{ "graphType": "FederationOutgoingCell", "id": "o1", "federation": {{ "outgoingName": "to-t2", "host": "127.0.0.1", "port": {port} }} }},
        {{ "graphType": "EdgeCell", "id": "e1", "source": {{ "id": "gA" }}, "target": {{ "id": "gB" }}, "federation": {{ "name": "A->B" }} }},
        {{ "graphType": "EdgeCell", "id": "e2", "source": {{ "id": "gA" }}, "target": {{ "id": "o1" }}, "federation": {{ "name": "A->T2" }} }} ] }} }}"#)).unwrap();
    let (hc, hk) = pki.a.leaf("hub", &["localhost", "127.0.0.1"]).unwrap();
    let hub = gateway(&format!("[node]\nid = \"the-hub\"\n[hub]\naddress = \"127.0.0.1:0\"\nv1_address = \"\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\npolicy = \"{}\"\nreplay_max_file_bytes = 1024\n", pki.bundle(), hc.display(), hk.display(), policy_path.display())).await;
    let h = hub.control().hub.clone().unwrap();
    assert!(eventually(20.0, || h.view().iter().any(|s| s.outgoing && s.streams.contains(&"events"))).await, "{:?}", h.outgoing_status());
    let (session, mut tasks) = (tokio_util::sync::CancellationToken::new(), tokio::task::JoinSet::new());
    let (rc, rk) = pki.a.leaf("raw-a", &["localhost"]).unwrap();
    let (mut a, sub) = raw_federate(h.address, &pki.bundle(), &rc, &rk, "raw-a", &mut tasks, &session).await;
    // A blob from A's group goes to the outgoing connection (T2 counts blobs it does not handle).
    let before = t2.counters("fed").unwrap().snapshot().filtered;
    a.send_one_blob(BinaryBlob { data: vec![7; 100], filename: "x.bin".into(), ..Default::default() }).await.unwrap();
    assert!(eventually(10.0, || t2.counters("fed").unwrap().snapshot().filtered > before).await, "the blob crossed the outgoing connection");
    // Two files as ROL payloads while B has never been here: one over the cap, one under.
    let mut rol_in = a.clone();
    let sub2 = sub.clone();
    tasks.spawn(async move {
        let _ = rol_in.client_rol_stream(sub2).await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Rol>(4);
    let mut rol_out = a.clone();
    tasks.spawn(async move {
        let _ = rol_out.server_rol_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })).await;
    });
    for (name, size) in [("big.bin", 4096usize), ("small.bin", 100)] {
        tx.send(Rol { program: format!("create resource\n{{\"name\":\"{name}\"}};"), payload: vec![BinaryBlob { data: vec![1; size], filename: name.into(), ..Default::default() }], ..Default::default() }).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // B arrives and subscribes to ROL: both are replayed, the big one without its bytes.
    let (bc, bk) = pki.b.leaf("raw-b", &["localhost"]).unwrap();
    let (mut b, bsub) = raw_federate(h.address, &pki.bundle(), &bc, &bk, "raw-b", &mut tasks, &session).await;
    let mut st = b.client_rol_stream(bsub).await.unwrap().into_inner();
    let mut got = vec![];
    while got.len() < 2 {
        let r = tokio::time::timeout(Duration::from_secs(10), st.message()).await.expect("replayed ROL").unwrap().unwrap();
        got.push((r.payload[0].filename.clone(), r.payload[0].data.len(), r.federate_provenance.iter().any(|p| p.federation_server_id == "the-hub")));
    }
    assert_eq!(got, [("big.bin".to_string(), 0, true), ("small.bin".to_string(), 100, true)]);
    session.cancel();
    for g in [hub, t2] {
        g.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_to_hub_and_the_reasons_a_federate_is_refused() {
    let pki = Pki::new();
    let (ga, gb) = (group_id(&pki.a.ca), group_id(&pki.b.ca));
    let hub_cfg = |id: &str, cert: &Path, key: &Path, policy: &Path| format!("[node]\nid = \"{id}\"\n[hub]\naddress = \"127.0.0.1:0\"\nv1_address = \"\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\npolicy = \"{}\"\n", pki.bundle(), cert.display(), key.display(), policy.display());
    // hub2: CA A's group and CA B's exchange everything.
    let p2 = pki.dir.join("hub2.json");
    std::fs::write(&p2, policy(&ga, &gb, &B_TO_A_BLUE.replace("\"allowed\", \"allowedGroups\": [\"Blue\"]", "\"allGroups\""))).unwrap();
    let (h2c, h2k) = pki.b.leaf("hub2", &["localhost", "127.0.0.1"]).unwrap();
    let hub2 = gateway(&hub_cfg("hub-two", &h2c, &h2k, &p2)).await;
    let h2 = hub2.control().hub.clone().unwrap();
    // hub1 dials hub2 (its certificate is from CA A: hub2 admits it by that group).
    let p1 = pki.dir.join("hub1.json");
    std::fs::write(&p1, format!(r#"{{ "graphData": {{ "nodes": [
        {{ "graphType": "GroupCell", "id": "gA", "federation": {{ "name": "{ga}" }} }},
        {{ "graphType": "FederationOutgoingCell", "id": "o1", "federation": {{ "outgoingName": "to-hub2", "host": "127.0.0.1", "port": {} }} }},
        {{ "graphType": "EdgeCell", "id": "e1", "source": {{ "id": "gA" }}, "target": {{ "id": "o1" }}, "federation": {{ "name": "A->hub2" }} }},
        {{ "graphType": "EdgeCell", "id": "e2", "source": {{ "id": "o1" }}, "target": {{ "id": "gA" }}, "federation": {{ "name": "hub2->A" }} }} ] }} }}"#, h2.address.port())).unwrap();
    let (h1c, h1k) = pki.a.leaf("hub1", &["localhost", "127.0.0.1"]).unwrap();
    let hub1 = gateway(&hub_cfg("hub-one", &h1c, &h1k, &p1)).await;
    let h1 = hub1.control().hub.clone().unwrap();
    let (ac, ak) = pki.a.leaf("spoke-a", &["localhost"]).unwrap();
    let (bc, bk) = pki.b.leaf("spoke-b", &["localhost"]).unwrap();
    let a = gateway(&spoke("spoke-a", h1.address, &pki.bundle(), &ac, &ak, "")).await;
    let b = gateway(&spoke("spoke-b", h2.address, &pki.bundle(), &bc, &bk, "")).await;
    let subscribed = |h: &takgate::hub::Hub, n: usize| h.view().iter().filter(|s| s.streams.contains(&"events")).count() >= n;
    assert!(eventually(20.0, || subscribed(&h1, 2) && subscribed(&h2, 2)).await, "hub1 {:?} {:?}; hub2 {:?}", h1.view().iter().map(|s| (&s.federate_id, &s.streams)).collect::<Vec<_>>(), h1.outgoing_status(), h2.view().iter().map(|s| (&s.federate_id, &s.streams)).collect::<Vec<_>>());
    let mut ca_client = Client::tcp(a.local_addr("c").unwrap()).await;
    let mut cb_client = Client::tcp(b.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    ca_client.send(&event("ALPHA-1", "Cyan", 1)).await;
    cb_client.send(&event("BRAVO-1", "Cyan", 1)).await;
    assert!(uids(&cb_client.drain(Duration::from_secs(3)).await).contains(&"ALPHA-1".to_string()), "spoke A -> hub1 -> hub2 -> spoke B");
    assert!(uids(&ca_client.drain(Duration::from_secs(2)).await).contains(&"BRAVO-1".to_string()), "and back");
    // A federate that connects later is offered A's contact with its latest position.
    let (cc, ck) = pki.b.leaf("late", &["localhost"]).unwrap();
    let late = gateway(&spoke("late", h2.address, &pki.bundle(), &cc, &ck, "")).await;
    let mut late_client = Client::tcp(late.local_addr("c").unwrap()).await;
    let seen = uids(&late_client.drain(Duration::from_secs(4)).await);
    assert!(seen.contains(&"ALPHA-1".to_string()), "the contact and its position, to a federate that came later: {seen:?} {:?}", h2.view().iter().map(|s| (&s.federate_id, s.contacts, &s.streams)).collect::<Vec<_>>());
    // A federate that presents its leaf alone (no CA after it) is refused with the hub's reason.
    let (lc, lk) = pki.a.leaf("leaf-only", &["localhost"]).unwrap();
    let leaf = takgate::link::tls::load_certs(&lc).unwrap().remove(0);
    let mut roots = rustls::RootCertStore::empty();
    for c in takgate::link::tls::load_certs(Path::new(&pki.bundle())).unwrap() {
        roots.add(c).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider())).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots).with_client_auth_cert(vec![leaf], takgate::link::tls::load_key(&lk).unwrap()).unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(h2.address).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let (session, mut tasks) = (tokio_util::sync::CancellationToken::new(), tokio::task::JoinSet::new());
    let mut c = takgate::federation::v2::h2_client(Box::new(tls), &h2.address.to_string(), 1 << 20, &session, &mut tasks).await.unwrap();
    let sub = takgate::federation::fig::Subscription { identity: Some(takgate::federation::fig::Identity { name: "leaf-only".into(), ..Default::default() }), ..Default::default() };
    let e = c.server_federate_groups_stream(sub).await.err().expect("refused");
    assert!(e.message().contains("Client identification not available"), "{e:?}");
    session.cancel();
    // hub2 goes away and comes back on the same port: hub1's outgoing connection says so and
    // reconnects (every 5 s, as TAK's hub).
    let port = h2.address.port();
    let connects = h1.outgoing_status()["to-hub2"].connects;
    for g in [late, b] {
        g.shutdown().await;
    }
    hub2.shutdown().await;
    assert!(eventually(10.0, || h1.outgoing_status()["to-hub2"].state != takgate::link::LinkState::Connected).await, "{:?}", h1.outgoing_status());
    let hub2 = gateway(&hub_cfg("hub-two", &h2c, &h2k, &p2).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))).await;
    assert!(eventually(20.0, || h1.outgoing_status()["to-hub2"].state == takgate::link::LinkState::Connected && h1.outgoing_status()["to-hub2"].connects == connects + 1).await, "{:?}", h1.outgoing_status());
    assert!(h1.outgoing_status()["to-hub2"].last_error.is_some(), "why it went down is kept");
    for g in [a, hub1, hub2] {
        g.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_with_pytak_clients_see_what_the_policy_allows() {
    use common::py::{args, peer};
    let dir = std::env::temp_dir().join(format!("takgate-hub3-{}-{}", std::process::id(), fastrand::u64(..)));
    let cas: Vec<Authority> = (1..=3).map(|i| Authority::new(&dir.join(format!("ca{i}")), &format!("CA-{i}")).unwrap()).collect();
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, cas.iter().map(|c| std::fs::read_to_string(&c.ca).unwrap()).collect::<String>()).unwrap();
    let g: Vec<String> = cas.iter().map(|c| group_id(&c.ca)).collect();
    let policy_path = dir.join("policy.json");
    // 1 -> 2 only in Cyan; 2 -> 1 everything; 1 -> 3 everything, one way; nothing from 3.
    std::fs::write(&policy_path, format!(r#"{{ "graphData": {{ "nodes": [
        {{ "graphType": "GroupCell", "id": "g1", "federation": {{ "name": "{}" }} }},
        {{ "graphType": "GroupCell", "id": "g2", "federation": {{ "name": "{}" }} }},
        {{ "graphType": "GroupCell", "id": "g3", "federation": {{ "name": "{}" }} }},
        {{ "graphType": "EdgeCell", "id": "e1", "source": {{ "id": "g1" }}, "target": {{ "id": "g2" }}, "federation": {{ "name": "1->2 Cyan", "groupsFilterType": "allowed", "allowedGroups": ["Cyan"] }} }},
        {{ "graphType": "EdgeCell", "id": "e2", "source": {{ "id": "g2" }}, "target": {{ "id": "g1" }}, "federation": {{ "name": "2->1" }} }},
        {{ "graphType": "EdgeCell", "id": "e3", "source": {{ "id": "g1" }}, "target": {{ "id": "g3" }}, "federation": {{ "name": "1->3" }} }} ] }} }}"#, g[0], g[1], g[2])).unwrap();
    let (hc, hk) = cas[0].leaf("hub", &["localhost", "127.0.0.1"]).unwrap();
    let hub = gateway(&format!("[node]\nid = \"the-hub\"\n[hub]\naddress = \"127.0.0.1:0\"\nv1_address = \"127.0.0.1:0\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\npolicy = \"{}\"\n", bundle.display(), hc.display(), hk.display(), policy_path.display())).await;
    let h = hub.control().hub.clone().unwrap();
    let mut servers = vec![];
    for (i, ca) in cas.iter().enumerate() {
        let (c, k) = ca.leaf(&format!("server-{}", i + 1), &["localhost"]).unwrap();
        // Server 3 federates over v1.
        let (target, v) = if i == 2 { (h.v1_address.unwrap(), "federation-v1") } else { (h.address, "federation-v2") };
        let cfg = spoke(&format!("server-{}", i + 1), target, &bundle.display().to_string(), &c, &k, "outbound_groups = [\"Cyan\", \"Red\"]\n").replace("federation-v2", v);
        servers.push(gateway(&cfg).await);
    }
    assert!(eventually(20.0, || h.view().iter().filter(|s| s.streams.contains(&"events")).count() == 3).await, "{:?}", h.view().iter().map(|s| (&s.federate_id, &s.streams)).collect::<Vec<_>>());
    let go = dir.join("go");
    let url = |i: usize| format!("tcp://{}", servers[i].local_addr("c").unwrap());
    let run = |i: usize, uid: &str, group: &str| tokio::spawn(peer(args(&format!("--url {} --uid {uid} --callsign {uid} --group {group} --send 2 --interval 0.2 --listen 5 --go-file {}", url(i), go.display())), 40.0));
    let peers = [run(0, "S1-CYAN", "Cyan"), run(0, "S1-RED", "Red"), run(1, "S2-RED", "Red"), run(2, "S3-CYAN", "Cyan")];
    let attached = |i: usize, n: usize| {
        let s = &servers[i];
        async move { eventually(20.0, || s.counters("c").is_some()).await && common::peers_settle_at(s, n).await >= n }
    };
    assert!(attached(0, 3).await && attached(1, 2).await && attached(2, 2).await, "pytak clients attached (plus the hub link)");
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&go, b"go").unwrap();
    let mut runs = vec![];
    for p in peers {
        runs.push(p.await.unwrap());
    }
    let got = |r: &common::py::PeerRun| -> Vec<(String, Vec<u32>)> {
        let mut uids: Vec<String> = r.events.iter().filter_map(|e| e["uid"].as_str().map(str::to_owned)).filter(|u| u.starts_with('S')).collect();
        uids.sort();
        uids.dedup();
        uids.into_iter().map(|u| (u.clone(), r.seqs_from(&u))).collect()
    };
    let want = |list: &[&str]| -> Vec<(String, Vec<u32>)> { list.iter().map(|u| (u.to_string(), vec![1, 2])).collect() };
    // Server 1: its own other client, and server 2 (2 -> 1); nothing from server 3.
    assert_eq!(got(&runs[0]), want(&["S1-RED", "S2-RED"]), "at server 1 (S1-CYAN's client): {}", runs[0].stderr);
    assert_eq!(got(&runs[1]), want(&["S1-CYAN", "S2-RED"]), "at server 1 (S1-RED's client)");
    // Server 2: only server 1's Cyan (1 -> 2 allows Cyan).
    assert_eq!(got(&runs[2]), want(&["S1-CYAN"]), "at server 2");
    // Server 3 (v1): all of server 1 (one way), nothing of server 2.
    assert_eq!(got(&runs[3]), want(&["S1-CYAN", "S1-RED"]), "at server 3");
    for s in servers {
        s.shutdown().await;
    }
    hub.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_dials_a_server_that_behaves_as_tak_server() {
    // tests/common/tak.rs: written from TAK Server's FederationServer (lazy response headers:
    // ClientEventStream silent until ServerEventStream exists; the chain's second certificate
    // required; streams closed after 15 s without a health check).
    let pki = Pki::new();
    let ga = group_id(&pki.a.ca);
    let (tc, tk) = pki.b.leaf("tak", &["localhost", "127.0.0.1"]).unwrap();
    let tak = common::tak::Tak::start(&tc, &tk, Path::new(&pki.bundle()), common::tak::Options::default()).await;
    tak.local_user("TAK-USER", "TAKUSER", 5);
    let policy_path = pki.dir.join("tak.json");
    std::fs::write(&policy_path, format!(r#"{{ "graphData": {{ "nodes": [
        {{ "graphType": "GroupCell", "id": "gA", "federation": {{ "name": "{ga}" }} }},
        {{ "graphType": "FederationOutgoingCell", "id": "o1", "federation": {{ "outgoingName": "to-tak", "host": "127.0.0.1", "port": {} }} }},
        {{ "graphType": "EdgeCell", "id": "e1", "source": {{ "id": "gA" }}, "target": {{ "id": "o1" }}, "federation": {{ "name": "A->TAK" }} }},
        {{ "graphType": "EdgeCell", "id": "e2", "source": {{ "id": "o1" }}, "target": {{ "id": "gA" }}, "federation": {{ "name": "TAK->A" }} }} ] }} }}"#, tak.addr.port())).unwrap();
    let (hc, hk) = pki.a.leaf("hub", &["localhost", "127.0.0.1"]).unwrap();
    let hub = gateway(&format!("[node]\nid = \"the-hub\"\n[hub]\naddress = \"127.0.0.1:0\"\nv1_address = \"\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\npolicy = \"{}\"\n", pki.bundle(), hc.display(), hk.display(), policy_path.display())).await;
    let h = hub.control().hub.clone().unwrap();
    let (ac, ak) = pki.a.leaf("spoke-a", &["localhost"]).unwrap();
    let a = gateway(&spoke("spoke-a", h.address, &pki.bundle(), &ac, &ak, "")).await;
    let mut client = Client::tcp(a.local_addr("c").unwrap()).await;
    assert!(eventually(20.0, || h.outgoing_status().get("to-tak").is_some_and(|s| s.state == LinkState::Connected)).await, "{:?}", h.outgoing_status());
    // TAK's user reaches the spoke's client through the hub; the spoke's user reaches TAK.
    let mut got = vec![];
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until && !got.iter().any(|e: &CotEvent| e.uid == "TAK-USER") {
        got.extend(client.recv(Duration::from_millis(200)).await);
    }
    assert!(got.iter().any(|e| e.uid == "TAK-USER"), "{:?}", uids(&got));
    client.send(&event("ALPHA-1", "Cyan", 1)).await;
    assert!(eventually(10.0, || tak.state().has_cot("ALPHA-1")).await, "TAK got the spoke's event");
    // Health checks keep the session past TAK's 15 s timeout.
    tokio::time::sleep(Duration::from_secs(17)).await;
    assert_eq!(h.outgoing_status()["to-tak"].connects, 1, "{:?}", h.outgoing_status());
    assert_eq!(tak.state().deadlines, 0);
    for g in [a, hub] {
        g.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&pki.dir);
}

/// A federate whose only destination cannot keep up is slowed down, not read and dropped:
/// the hub holds its stream while the destination's queue is full (hub queue of 8, the
/// destination not reading for 3 s behind megabytes of HTTP/2 windows). And the contacts the
/// hub keeps per federate are bounded (`max_contacts_per_federate`), counted past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_destination_slows_its_source_and_kept_contacts_are_bounded() {
    use takgate::federation::fig::{ContactListEntry, Crud, FederatedEvent, GeoEvent};
    let pki = Pki::new();
    let (ga, gb) = (group_id(&pki.a.ca), group_id(&pki.b.ca));
    let policy_path = pki.dir.join("p.json");
    std::fs::write(&policy_path, policy(&ga, &gb, "")).unwrap();
    let (hc, hk) = pki.a.leaf("hub", &["localhost", "127.0.0.1"]).unwrap();
    let hub = gateway(&format!("[node]\nid = \"the-hub\"\n[hub]\naddress = \"127.0.0.1:0\"\nv1_address = \"\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\npolicy = \"{}\"\nqueue_depth = 8\nmax_contacts_per_federate = 2\n", pki.bundle(), hc.display(), hk.display(), policy_path.display())).await;
    let h = hub.control().hub.clone().unwrap();
    let (session, mut tasks) = (tokio_util::sync::CancellationToken::new(), tokio::task::JoinSet::new());
    let (ac, ak) = pki.a.leaf("raw-a", &["localhost"]).unwrap();
    let (a, _) = raw_federate(h.address, &pki.bundle(), &ac, &ak, "raw-a", &mut tasks, &session).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<FederatedEvent>(16);
    let (mut out, held) = (a.clone(), session.clone());
    tasks.spawn(async move {
        // The response is kept open: dropping it resets the stream, and HTTP/2 discards what
        // the hub had received but not read yet.
        let _response = out.server_event_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })).await;
        held.cancelled().await;
    });
    for c in ["c1", "c2", "c3"] {
        tx.send(FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Create as i32, uid: c.into(), callsign: c.into(), ..Default::default() }), ..Default::default() }).await.unwrap();
    }
    assert!(eventually(10.0, || h.view().iter().any(|s| s.name == "raw-a" && s.counters.contacts_not_kept.load(std::sync::atomic::Ordering::Relaxed) == 1)).await, "the third contact is counted as not kept");
    // B arrives: it is offered the two contacts kept, then the hub's group list.
    let (bc, bk) = pki.b.leaf("raw-b", &["localhost"]).unwrap();
    let (mut b, bsub) = raw_federate(h.address, &pki.bundle(), &bc, &bk, "raw-b", &mut tasks, &session).await;
    let mut st = b.client_event_stream(bsub).await.unwrap().into_inner();
    let mut offered = vec![];
    loop {
        let fe = tokio::time::timeout(Duration::from_secs(10), st.message()).await.expect("B's first events").unwrap().unwrap();
        match fe.contact {
            Some(c) => offered.push(c.uid),
            None => break,
        }
    }
    offered.sort();
    assert_eq!(offered, ["c1", "c2"], "the contacts kept, offered to a federate that connects later");
    // A sends 6,000 events of 2 KiB (12 MB) while B reads nothing for 3 s.
    const N: usize = 6000;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = sent.clone();
    tasks.spawn(async move {
        for i in 0..N {
            let ev = GeoEvent { uid: format!("u{i}"), r#type: "a-f-G".into(), coord_source: "m-g".into(), other: "x".repeat(2048), send_time: 1, start_time: 1, stale_time: 2, ..Default::default() };
            if tx.send(FederatedEvent { event: Some(ev), ..Default::default() }).await.is_err() {
                return;
            }
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_reading = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(before_reading < N, "A was slowed down while B did not read (all {N} sent)");
    let mut got = 0;
    while got < N {
        match tokio::time::timeout(Duration::from_secs(10), st.message()).await {
            Ok(Ok(Some(fe))) if fe.event.is_some() => got += 1,
            Ok(Ok(Some(_))) => {}
            _ => break,
        }
        let dropped = h.view().iter().find(|s| s.name == "raw-b").map(|s| s.counters.dropped.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(0) as usize;
        if got + dropped >= N {
            break;
        }
    }
    let dropped = h.view().iter().find(|s| s.name == "raw-b").unwrap().counters.dropped.load(std::sync::atomic::Ordering::Relaxed) as usize;
    // Each 500 ms an event may give up waiting: a handful at most, never thousands.
    assert!(dropped <= 8 && got + dropped == N, "B got {got}, the hub dropped {dropped} of {N} (A had sent {before_reading} when B started reading)");
    session.cancel();
    hub.shutdown().await;
    let _ = std::fs::remove_dir_all(&pki.dir);
}

/// One pytak client per node sending at 1 Hz (3 reports), all started by one go-file; what
/// each received from the others, per uid, with every seq (nothing twice).
/// `peers[i]`: the router peers node i has once its client is attached (client + federates).
async fn one_pytak_per_node(nodes: &[Gateway], peers_when_attached: &[usize], dir: &Path) -> Vec<Vec<(String, Vec<u32>)>> {
    use common::py::{args, peer};
    let go = dir.join("go");
    let peers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let url = format!("tcp://{}", n.local_addr("c").unwrap());
            tokio::spawn(peer(args(&format!("--url {url} --uid S{} --callsign S{} --send 3 --interval 1.0 --listen 6 --go-file {}", i + 1, i + 1, go.display())), 60.0))
        })
        .collect();
    for (i, (n, want)) in nodes.iter().zip(peers_when_attached).enumerate() {
        assert!(common::peers_settle_at(n, *want).await >= *want, "the pytak client on node {} attached", i + 1);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&go, b"go").unwrap();
    let mut out = vec![];
    for p in peers {
        let r = p.await.unwrap();
        let mut uids: Vec<String> = r.events.iter().filter_map(|e| e["uid"].as_str().map(str::to_owned)).filter(|u| u.starts_with('S')).collect();
        uids.sort();
        uids.dedup();
        out.push(uids.into_iter().map(|u| (u.clone(), r.seqs_from(&u))).collect());
    }
    out
}

fn from(list: &[usize]) -> Vec<(String, Vec<u32>)> {
    let mut l: Vec<usize> = list.to_vec();
    l.sort_by_key(|i| format!("S{i}"));
    l.into_iter().map(|i| (format!("S{i}"), vec![1, 2, 3])).collect()
}

/// The "5+ federates" case: six servers, each with its own CA, through one hub whose policy
/// is a ring (i -> i+1) plus server 1 -> everyone; a pytak client on each server at 1 Hz
/// sees exactly what the edges allow, each report once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_spokes_with_pytak_clients_at_1_hz_see_exactly_what_the_policy_allows() {
    let dir = std::env::temp_dir().join(format!("takgate-hub6-{}-{}", std::process::id(), fastrand::u64(..)));
    let cas: Vec<Authority> = (1..=6).map(|i| Authority::new(&dir.join(format!("ca{i}")), &format!("CA-{i}")).unwrap()).collect();
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, cas.iter().map(|c| std::fs::read_to_string(&c.ca).unwrap()).collect::<String>()).unwrap();
    let mut nodes: Vec<String> = cas.iter().enumerate().map(|(i, c)| format!(r#"{{ "graphType": "GroupCell", "id": "g{}", "federation": {{ "name": "{}" }} }}"#, i + 1, group_id(&c.ca))).collect();
    let mut edge = |s: usize, t: usize| nodes.push(format!(r#"{{ "graphType": "EdgeCell", "id": "e{s}-{t}", "source": {{ "id": "g{s}" }}, "target": {{ "id": "g{t}" }}, "federation": {{ "name": "{s}->{t}" }} }}"#));
    for s in 1..=6 {
        edge(s, s % 6 + 1);
    }
    for t in 3..=6 {
        edge(1, t);
    }
    let policy_path = dir.join("policy.json");
    std::fs::write(&policy_path, format!(r#"{{ "graphData": {{ "nodes": [ {} ] }} }}"#, nodes.join(",\n"))).unwrap();
    let (hc, hk) = cas[0].leaf("hub", &["localhost", "127.0.0.1"]).unwrap();
    let hub = gateway(&format!("[node]\nid = \"the-hub\"\n[hub]\naddress = \"127.0.0.1:0\"\nv1_address = \"\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\npolicy = \"{}\"\n", bundle.display(), hc.display(), hk.display(), policy_path.display())).await;
    let h = hub.control().hub.clone().unwrap();
    let mut servers = vec![];
    for (i, ca) in cas.iter().enumerate() {
        let (c, k) = ca.leaf(&format!("server-{}", i + 1), &["localhost"]).unwrap();
        servers.push(gateway(&spoke(&format!("server-{}", i + 1), h.address, &bundle.display().to_string(), &c, &k, "")).await);
    }
    assert!(eventually(30.0, || h.view().iter().filter(|s| s.streams.contains(&"events")).count() == 6).await, "six federates subscribed");
    let got = one_pytak_per_node(&servers, &[2; 6], &dir).await;
    let want = [from(&[6]), from(&[1]), from(&[1, 2]), from(&[1, 3]), from(&[1, 4]), from(&[1, 5])];
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert_eq!(g, w, "at server {}", i + 1);
    }
    for s in servers {
        s.shutdown().await;
    }
    hub.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without a hub: one takgate federated pair-wise with five others at once over v2, a pytak
/// client on each at 1 Hz. Node 1's client sees all five; the others see node 1's only
/// (federation is pair-wise: node 1 does not relay one federate's traffic to another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_federated_pair_wise_with_five_others_at_once() {
    let dir = std::env::temp_dir().join(format!("takgate-fed6-{}-{}", std::process::id(), fastrand::u64(..)));
    let ca = Authority::new(&dir.join("ca"), "CA-mesh").unwrap();
    let cfg = |i: usize, mode: &str, addr: &str| {
        let (c, k) = ca.leaf(&format!("node-{i}"), &["localhost", "127.0.0.1"]).unwrap();
        format!(
            "[node]\nid = \"node-{i}\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
             [[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"{mode}\"\naddress = \"{addr}\"\nserver_name = \"localhost\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nreconnect_min_secs = 0.3\n",
            ca.ca.display(),
            c.display(),
            k.display()
        )
    };
    let center = gateway(&cfg(1, "listen", "127.0.0.1:0").replace("server_name = \"localhost\"\n", "").replace("reconnect_min_secs = 0.3\n", "")).await;
    let at = center.local_addr("fed").unwrap().to_string();
    let mut nodes = vec![center];
    for i in 2..=6 {
        nodes.push(gateway(&cfg(i, "connect", &at)).await);
    }
    async fn fed(g: &Gateway) -> usize {
        g.router().stats().await.iter().filter(|s| s.transport.starts_with("federation")).count()
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fed(&nodes[0]).await < 5 {
        assert!(std::time::Instant::now() < deadline, "node 1 has {} of 5 federates", fed(&nodes[0]).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = one_pytak_per_node(&nodes, &[6, 2, 2, 2, 2, 2], &dir).await;
    assert_eq!(got[0], from(&[2, 3, 4, 5, 6]), "at node 1");
    for (i, g) in got.iter().enumerate().skip(1) {
        assert_eq!(g, &from(&[1]), "at node {}", i + 1);
    }
    for n in nodes {
        n.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
