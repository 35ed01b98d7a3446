//! The RabbitMQ bridge against the real broker on 127.0.0.1:5672 (guest/guest): two
//! takgate nodes in cluster mode, a broker restart in the middle of a stream, kill -9 of a
//! node, and an OpenTAKServer link on a broker without OpenTAKServer. (OpenTAKServer
//! itself, live, is in ots_live.rs.)

mod common;

use std::time::Duration;

use common::{gateway, pli, seq_of, Client};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use takgate::cot::xml;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn broker() -> (Connection, Channel) {
    let conn = match tokio::time::timeout(Duration::from_secs(10), Connection::connect(URL, ConnectionProperties::default())).await {
        Ok(Ok(c)) => c,
        other => panic!("RabbitMQ is not reachable on 127.0.0.1:5672 ({other:?}); scripts/test starts it (rabbitmq-server -detached)"),
    };
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_opentakserver_exchanges_are_reported_not_created() {
    // A vhost of our own without OpenTAKServer: takgate must not create its exchanges.
    let vhost = format!("takgate-test-{}", std::process::id());
    let ctl = |a: &[&str]| std::process::Command::new("rabbitmqctl").args(a).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ctl(&["add_vhost", &vhost]) && ctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]), "rabbitmqctl add_vhost");
    let url = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
    let gw = gateway(&format!("[[link]]\nname = \"ots\"\ntransport = \"amqp\"\naddress = \"{url}\"\namqp_mode = \"opentakserver\"\nreconnect_min_secs = 0.2\n")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let conn = Connection::connect(&url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let r = ch.exchange_declare("firehose".into(), ExchangeKind::Fanout, ExchangeDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await;
    assert!(r.is_err(), "takgate created OpenTAKServer's exchange");
    gw.shutdown().await;
    let _ = conn.close(200, "bye".into()).await;
    ctl(&["delete_vhost", &vhost]);
}

fn cluster_node(id: &str, exchange: &str) -> String {
    format!(
        "[node]\nid = \"{id}\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"bus\"\ntransport = \"amqp\"\naddress = \"{URL}\"\namqp_mode = \"cluster\"\nexchange = \"{exchange}\"\nreconnect_min_secs = 0.2\nreconnect_max_secs = 1\n"
    )
}

async fn cleanup_cluster(ch: &Channel, exchange: &str, nodes: &[&str]) {
    for n in nodes {
        let _ = ch.queue_delete(format!("{exchange}.q.{n}").as_str().into(), QueueDeleteOptions::default()).await;
        let _ = ch.exchange_delete(format!("{exchange}.node.{n}").as_str().into(), ExchangeDeleteOptions::default()).await;
    }
    let _ = ch.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cluster_nodes_route_without_duplicates_or_loops() {
    let exchange = format!("takgate-test-{}", std::process::id());
    let n1 = gateway(&cluster_node("n1", &exchange)).await;
    let n2 = gateway(&cluster_node("n2", &exchange)).await;
    let mut a1 = Client::tcp(n1.local_addr("c").unwrap()).await;
    let mut a2 = Client::tcp(n1.local_addr("c").unwrap()).await;
    let mut b1 = Client::tcp(n2.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..20 {
        a1.send(&pli("A1", "A1", i)).await;
    }
    for i in 100..110 {
        b1.send(&pli("B1", "B1", i)).await;
    }
    let wait = Duration::from_millis(1500);
    let (ga2, gb1, ga1) = tokio::join!(a2.drain(wait), b1.drain(wait), a1.drain(wait));
    let seqs = |v: &Vec<takgate::cot::CotEvent>, uid: &str| v.iter().filter(|e| e.uid == uid).filter_map(seq_of).collect::<Vec<_>>();
    assert_eq!(seqs(&ga2, "A1"), (0..20).collect::<Vec<_>>(), "local delivery once");
    assert_eq!(seqs(&gb1, "A1"), (0..20).collect::<Vec<_>>(), "through the broker once");
    assert_eq!(seqs(&ga2, "B1"), (100..110).collect::<Vec<_>>());
    assert_eq!(seqs(&ga1, "B1"), (100..110).collect::<Vec<_>>());
    assert!(seqs(&ga1, "A1").is_empty() && seqs(&gb1, "B1").is_empty(), "no echo");
    let bus1 = n1.counters("bus").unwrap().snapshot();
    assert_eq!((bus1.events_out, bus1.events_in), (20, 10), "n1 published its 20 once and took n2's 10: {bus1:?}");
    n1.shutdown().await;
    n2.shutdown().await;
    let (_c, ch) = broker().await;
    cleanup_cluster(&ch, &exchange, &["n1", "n2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing() {
    let exchange = format!("takgate-restart-{}", std::process::id());
    let n1 = gateway(&cluster_node("r1", &exchange)).await;
    let n2 = gateway(&cluster_node("r2", &exchange)).await;
    let mut a = Client::tcp(n1.local_addr("c").unwrap()).await;
    let mut b = Client::tcp(n2.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Bursts of five every 20 ms: batches of several events are in flight when the broker
    // stops.
    let total = 600u32;
    let sender = tokio::spawn(async move {
        for i in 0..total {
            a.send(&pli("STREAM", "S", i)).await;
            if i % 5 == 4 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        a
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let ctl = |a: &str| assert!(std::process::Command::new("rabbitmqctl").arg(a).status().unwrap().success(), "rabbitmqctl {a}");
    ctl("stop_app");
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctl("start_app");
    let _ = std::process::Command::new("rabbitmqctl").args(["await_startup", "--timeout", "60"]).status();
    let _a = sender.await.unwrap();
    let mut seen = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < total as usize && tokio::time::Instant::now() < deadline {
        if let Some(ev) = b.recv(Duration::from_secs(2)).await {
            if ev.uid == "STREAM" {
                *seen.entry(seq_of(&ev).unwrap()).or_insert(0) += 1;
            }
        }
    }
    for ev in b.drain(Duration::from_millis(500)).await {
        if ev.uid == "STREAM" {
            *seen.entry(seq_of(&ev).unwrap()).or_insert(0) += 1;
        }
    }
    let missing: Vec<u32> = (0..total).filter(|i| !seen.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost across the restart: {missing:?}");
    assert!(seen.values().all(|&c| c == 1), "duplicates: {:?}", seen.iter().filter(|(_, &c)| c > 1).collect::<Vec<_>>());
    n1.shutdown().await;
    n2.shutdown().await;
    let (_c, ch) = broker().await;
    cleanup_cluster(&ch, &exchange, &["r1", "r2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_routing_keys_subscribe_by_group_and_type() {
    let exchange = format!("takgate-keys-{}", std::process::id());
    let n1 = gateway(&cluster_node("k1", &exchange)).await;
    // k2 wants only chat (b-t-f) and the Red team's position reports.
    let k2_cfg = cluster_node("k2", &exchange) + "bind_keys = [\"cot.*.b.t.f\", \"cot.Red.a.#\"]\n";
    let n2 = gateway(&k2_cfg).await;
    let mut a = Client::tcp(n1.local_addr("c").unwrap()).await;
    let mut b = Client::tcp(n2.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let team = |uid: &str, team: &str, seq: u32| {
        let mut ev = pli(uid, uid, seq);
        ev.detail.group = Some(takgate::cot::Group { name: team.into(), role: "Team Member".into() });
        ev
    };
    a.send(&team("CYAN-1", "Cyan", 1)).await;
    a.send(&team("RED-1", "Red", 2)).await;
    let mut chat = takgate::cot::CotEvent::new("GeoChat.x.All Chat Rooms.1", "b-t-f", "h-g-i-g-o", takgate::cot::CotTime::now(), 60);
    chat.detail.xml = "<remarks>seq=3</remarks>".into();
    a.send(&chat).await;
    let got: Vec<_> = b.drain(Duration::from_millis(1500)).await.iter().filter_map(seq_of).collect();
    assert_eq!(got, [2, 3], "k2 gets only what its binding keys select");
    n1.shutdown().await;
    n2.shutdown().await;
    let (_c, ch) = broker().await;
    cleanup_cluster(&ch, &exchange, &["k1", "k2"]).await;
}

/// A CoT item sent to `mission` (ADD_CONTENT the first time its uid joins).
fn to_mission(uid: &str, mission: &str, seq: u32) -> takgate::cot::CotEvent {
    let now = takgate::cot::CotTime::now();
    let mut ev = takgate::cot::CotEvent::new(uid, "a-h-G", "h-g-i-g-o", takgate::cot::CotTime(now.0 + seq as i64), 3600);
    ev.detail.xml = format!(r#"<marti><dest mission="{mission}"/></marti><remarks>seq={seq}</remarks>"#);
    ev
}

/// A takgate process, killed (-9) when dropped.
struct Node(std::process::Child);

impl Node {
    fn kill_9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_9();
    }
}

fn spawn_node(cfg: &std::path::Path) -> Node {
    Node(std::process::Command::new(env!("CARGO_BIN_EXE_takgate")).args(["run", "--config"]).arg(cfg).env("RUST_LOG", "warn").spawn().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_cluster_node_mid_stream_loses_no_mission_change_and_applies_none_twice() {
    let exchange = format!("takgate-kill-{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("takgate-amqp-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("k2.db");
    let cfg = dir.join("k2.toml");
    std::fs::write(&cfg, format!("[store]\npath = \"{}\"\n{}", db.display(), cluster_node("k2", &exchange))).unwrap();
    let (_c, ch) = broker().await;
    let mut node = spawn_node(&cfg);
    // The node's durable queue exists once it is up.
    let queue = format!("{exchange}.q.k2");
    let mut declared = false;
    for _ in 0..100 {
        let (_c2, probe) = broker().await;
        if probe.queue_declare(queue.as_str().into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.is_ok() {
            declared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(declared, "node k2 declared its queue");
    // Another node's traffic, as fast as the broker confirms: 1,500 items for two missions,
    // while k2 is killed three times at random moments and restarted.
    let total = 1500u32;
    let kills: Vec<u32> = (0..3).map(|k| 200 + k * 400 + fastrand::u32(..200)).collect();
    for i in 0..total {
        let ev = to_mission(&format!("ITEM-{i}"), &format!("m{}", i % 2), i);
        let mut headers = FieldTable::default();
        headers.insert("takgate-node".into(), lapin::types::AMQPValue::LongString("k-other".into()));
        let props = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
        ch.basic_publish(exchange.as_str().into(), "cot.__ANON__.a.h.G".into(), BasicPublishOptions::default(), &xml::encode(&ev), props).await.unwrap().await.unwrap();
        if kills.contains(&i) {
            node.kill_9();
            node = spawn_node(&cfg);
        }
    }
    let store = takgate::store::Store::open(&db.display().to_string()).unwrap();
    let all = common::eventually(60.0, || store.all_changes().map(|c| c.len()).unwrap_or(0) >= total as usize).await;
    assert!(all, "k2 recorded {} of {total} changes (kills after items {kills:?})", store.all_changes().unwrap().len());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let changes = store.all_changes().unwrap();
    assert_eq!(changes.len(), total as usize, "none applied twice");
    for m in ["m0", "m1"] {
        let uids: Vec<String> = store.changes(m).unwrap().into_iter().map(|c| c.content_uid).collect();
        let want: Vec<String> = (0..total).filter(|i| format!("m{}", i % 2) == m).map(|i| format!("ITEM-{i}")).collect();
        assert_eq!(uids, want, "mission {m} in order");
    }
    node.kill_9();
    cleanup_cluster(&ch, &exchange, &["k2"]).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// rabbitmqctl's table for `what` (e.g. list_bindings with columns), header rows skipped.
fn rabbit_rows(args: &[&str]) -> Vec<Vec<String>> {
    let out = std::process::Command::new("rabbitmqctl").arg("-q").arg("--no-table-headers").args(args).output().expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').map(str::to_owned).collect()).collect()
}

/// A queue of the test's own on `exchange` with `key`: what the broker routes there.
async fn probe(ch: &Channel, exchange: &str, key: &str) -> lapin::Consumer {
    let q = ch.queue_declare("".into(), QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }, FieldTable::default()).await.unwrap();
    ch.queue_bind(q.name().clone(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default()).await.unwrap();
    ch.basic_consume(q.name().clone(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await.unwrap()
}

async fn drain_probe(c: &mut lapin::Consumer, wait: Duration) -> Vec<lapin::message::Delivery> {
    use futures_util::StreamExt;
    let mut out = vec![];
    while let Ok(Some(Ok(d))) = tokio::time::timeout(wait, c.next()).await {
        out.push(d);
    }
    out
}

/// No self-delivery, as the broker's own routing shows it: the bindings route a node's
/// exchange only to the other nodes' queues, a probe on the shared exchange sees nothing of
/// what a node publishes, a probe on the node's exchange sees its batches (strict envelope,
/// every event once), and the other node's client gets each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_never_gets_its_own_publications_and_batches_carry_every_event_once() {
    let exchange = format!("takgate-self-{}", std::process::id());
    let n1 = gateway(&cluster_node("s1", &exchange)).await;
    let n2 = gateway(&cluster_node("s2", &exchange)).await;
    let up = |g: &takgate::runtime::Gateway| g.control().clusters.all().first().is_some_and(|d| d.view().iter().filter(|m| m.state == "up").count() == 1);
    assert!(common::eventually(10.0, || up(&n1) && up(&n2)).await, "each node sees the other");
    let (_c, ch) = broker().await;
    let mut on_shared = probe(&ch, &exchange, "cot.#").await;
    let mut on_s1 = probe(&ch, &format!("{exchange}.node.s1"), "#").await;
    // The broker's bindings: s1's exchange goes to s2's queue (and our probe), never to s1's.
    let bindings = rabbit_rows(&["list_bindings", "source_name", "destination_name", "routing_key"]);
    let from = |src: &str| bindings.iter().filter(|b| b[0] == src && b[1].starts_with(&exchange)).map(|b| b[1].clone()).collect::<Vec<_>>();
    assert_eq!(from(&format!("{exchange}.node.s1")), [format!("{exchange}.q.s2")]);
    assert_eq!(from(&format!("{exchange}.node.s2")), [format!("{exchange}.q.s1")]);
    let mut a = Client::tcp(n1.local_addr("c").unwrap()).await;
    let mut b = Client::tcp(n2.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..200 {
        a.send(&pli("BATCH", "B", i)).await;
    }
    let got = b.drain(Duration::from_millis(1500)).await;
    let seqs: Vec<u32> = got.iter().filter(|e| e.uid == "BATCH").filter_map(seq_of).collect();
    assert_eq!(seqs, (0..200).collect::<Vec<_>>(), "s2's client: every event once, in order");
    assert!(drain_probe(&mut on_shared, Duration::from_millis(300)).await.is_empty(), "nothing a node publishes goes to the shared exchange");
    let batches = drain_probe(&mut on_s1, Duration::from_millis(300)).await;
    let mut events = 0;
    for d in &batches {
        let ct = d.properties.content_type().as_ref().map(|c| c.as_str());
        let evs = takgate::transport::amqp::batch::events(ct, d.properties.headers().as_ref(), &d.data).expect("a valid batch");
        assert_eq!(ct, Some(takgate::transport::amqp::batch::CONTENT_TYPE));
        events += evs.len();
    }
    assert_eq!(events, 200, "the batches carry each event once");
    assert!(batches.len() < 200, "several events per message ({} messages)", batches.len());
    let bus1 = n1.counters("bus").unwrap().snapshot();
    assert_eq!((bus1.events_out, bus1.events_in), (200, 0), "s1 published 200 and received none back: {bus1:?}");
    n1.shutdown().await;
    n2.shutdown().await;
    cleanup_cluster(&ch, &exchange, &["s1", "s2"]).await;
}

/// Plain single-event messages on the shared exchange are read; a bad batch is refused as a
/// whole with a clear error and counted, and the link keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_and_counted_and_plain_messages_still_read() {
    use takgate::transport::amqp::batch;
    let exchange = format!("takgate-bad-{}", std::process::id());
    let n1 = gateway(&cluster_node("b1", &exchange)).await;
    let mut c = Client::tcp(n1.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_conn, ch) = broker().await;
    let publish = |body: Vec<u8>, props: BasicProperties| {
        let ch = ch.clone();
        let exchange = exchange.clone();
        async move { ch.basic_publish(exchange.as_str().into(), "cot.__ANON__.a.f.G".into(), BasicPublishOptions::default(), &body, props).await.unwrap().await.unwrap() }
    };
    let xml_of = |i: u32| xml::encode(&pli("EXT", "E", i)).to_vec();
    publish(xml_of(1), BasicProperties::default()).await;
    let mut good = vec![];
    batch::push(&mut good, &xml_of(2));
    batch::push(&mut good, &xml_of(3));
    publish(good.clone(), BasicProperties::default().with_content_type(batch::CONTENT_TYPE.into()).with_headers(batch::headers(2))).await;
    // Says three, holds two; and one whose last length runs past the end.
    publish(good.clone(), BasicProperties::default().with_content_type(batch::CONTENT_TYPE.into()).with_headers(batch::headers(3))).await;
    let mut cut = good.clone();
    cut.truncate(good.len() - 5);
    publish(cut, BasicProperties::default().with_content_type(batch::CONTENT_TYPE.into()).with_headers(batch::headers(2))).await;
    publish(xml_of(4), BasicProperties::default()).await;
    let got: Vec<u32> = c.drain(Duration::from_millis(1500)).await.iter().filter(|e| e.uid == "EXT").filter_map(seq_of).collect();
    assert_eq!(got, [1, 2, 3, 4], "the plain events and the good batch, nothing of the bad ones");
    assert_eq!(n1.counters("bus").unwrap().snapshot().decode_errors, 2, "both bad batches counted");
    n1.shutdown().await;
    cleanup_cluster(&ch, &exchange, &["b1"]).await;
}

/// A node's queue has the documented bounds: it expires once nobody consumes it, holds at
/// most `queue_max_messages` (the oldest go), and a node back within the expiry gets what
/// it missed (the newest, within the bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_expire_are_bounded_and_a_node_back_in_time_gets_what_it_missed() {
    let exchange = format!("takgate-life-{}", std::process::id());
    let bounded = |id: &str, expiry: u32| cluster_node(id, &exchange) + &format!("queue_expiry_secs = {expiry}
queue_max_messages = 5
");
    let n1 = gateway(&bounded("l1", 60)).await;
    let n2 = gateway(&bounded("l2", 60)).await;
    let up = |g: &takgate::runtime::Gateway| g.control().clusters.all().first().is_some_and(|d| d.view().iter().filter(|m| m.state == "up").count() == 1);
    assert!(common::eventually(10.0, || up(&n1) && up(&n2)).await, "each node sees the other");
    let queues = rabbit_rows(&["list_queues", "name", "arguments"]);
    let args = &queues.iter().find(|q| q[0] == format!("{exchange}.q.l2")).expect("l2's queue")[1];
    for want in ["x-expires", "60000", "x-max-length", "5", "x-overflow", "drop-head"] {
        assert!(args.contains(want), "{want} in {args}");
    }
    // l2 goes away; l1 publishes 20 single-event batches meanwhile.
    n2.shutdown().await;
    let mut a = Client::tcp(n1.local_addr("c").unwrap()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..20 {
        a.send(&pli("MISSED", "M", i)).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let depth = rabbit_rows(&["list_queues", "name", "messages"]).into_iter().find(|q| q[0] == format!("{exchange}.q.l2")).map(|q| q[1].clone());
    assert_eq!(depth.as_deref(), Some("5"), "the length bound holds");
    // Back within the expiry: the newest five.
    let n2 = gateway(&bounded("l2", 60)).await;
    assert!(common::eventually(10.0, || n2.counters("bus").is_some_and(|c| c.snapshot().events_in == 5)).await, "l2 got the five it missed: {:?}", n2.counters("bus").map(|c| c.snapshot()));
    let depth = rabbit_rows(&["list_queues", "name", "messages"]).into_iter().find(|q| q[0] == format!("{exchange}.q.l2")).map(|q| q[1].clone());
    assert_eq!(depth.as_deref(), Some("0"), "and its queue is empty");
    n2.shutdown().await;
    // Expiry: a queue nobody consumes is gone after queue_expiry_secs.
    let n3 = gateway(&bounded("l3", 2)).await;
    assert!(common::eventually(10.0, || rabbit_rows(&["list_queues", "name"]).iter().any(|q| q[0] == format!("{exchange}.q.l3"))).await);
    n3.shutdown().await;
    assert!(common::eventually(15.0, || !rabbit_rows(&["list_queues", "name"]).iter().any(|q| q[0] == format!("{exchange}.q.l3"))).await, "l3's queue expired");
    n1.shutdown().await;
    let (_c, ch) = broker().await;
    cleanup_cluster(&ch, &exchange, &["l1", "l2", "l3"]).await;
}

/// Three nodes, a client on each: every client gets every other client's events, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_everything_to_everyone_once() {
    let exchange = format!("takgate-three-{}", std::process::id());
    let mut nodes = vec![];
    for i in 1..=3 {
        nodes.push(gateway(&cluster_node(&format!("t{i}"), &exchange)).await);
    }
    let all_up = |g: &takgate::runtime::Gateway| g.control().clusters.all().first().is_some_and(|d| d.view().iter().filter(|m| m.state == "up").count() == 2);
    assert!(common::eventually(10.0, || nodes.iter().all(all_up)).await, "every node sees the other two");
    let mut clients = vec![];
    for n in &nodes {
        clients.push(Client::tcp(n.local_addr("c").unwrap()).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, c) in clients.iter_mut().enumerate() {
        for s in 0..5 {
            c.send(&pli(&format!("T{}", i + 1), "T", s)).await;
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let got = c.drain(Duration::from_millis(1500)).await;
        for j in 0..3 {
            let uid = format!("T{}", j + 1);
            let seqs: Vec<u32> = got.iter().filter(|e| e.uid == uid).filter_map(seq_of).collect();
            let want: Vec<u32> = if i == j { vec![] } else { (0..5).collect() };
            assert_eq!(seqs, want, "client on node {} from {uid}", i + 1);
        }
    }
    for n in nodes {
        n.shutdown().await;
    }
    let (_c, ch) = broker().await;
    cleanup_cluster(&ch, &exchange, &["t1", "t2", "t3"]).await;
}
