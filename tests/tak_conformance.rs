//! takgate's federation v2 client role against a server that behaves as TAK Server 5.7's
//! does (tests/common/tak.rs: lazy response headers, nothing on ClientEventStream before
//! ServerEventStream, a ClientROLStream that stays silent or is completed after a replay,
//! the chain's second certificate required, TAK's ROL reading and mission retention).
//! One test per finding of the interop review (issue 24).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::certs::Pki;
use common::tak::{self, Options, RolMode, Tak};
use common::{eventually, gateway, pli, seq_of, Client};
use takgate::cot::{CotEvent, CotTime};
use takgate::federation::fig::{ContactListEntry, Crud, FederatedEvent};

struct Ends {
    pki: Pki,
    cert: PathBuf,
    key: PathBuf,
}

/// One PKI: the TAK server's certificate and takgate's (leaf; its CA is in `ca`, so the
/// chain takgate presents is leaf + CA).
fn ends(tag: &str) -> Ends {
    let mut pki = Pki::new(tag);
    let (cert, key) = pki.leaf("takgate-fed", false);
    Ends { pki, cert, key }
}

async fn tak_server(e: &Ends, opts: Options) -> Tak {
    Tak::start(&e.pki.server_cert, &e.pki.server_key, &e.pki.ca, opts).await
}

/// takgate with a TCP client link `c` and a federation v2 link `fed` to `to`.
fn node(e: &Ends, to: SocketAddr, fed_extra: &str, top: &str) -> String {
    format!(
        "[node]\nid = \"takgate-conf\"\n{top}\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"connect\"\naddress = \"{to}\"\nserver_name = \"localhost\"\n\
         reconnect_min_secs = 0.2\nreconnect_max_secs = 0.5\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{fed_extra}\n",
        e.pki.path(&e.pki.ca),
        e.cert.display(),
        e.key.display()
    )
}

/// A CoT item sent to `mission`.
fn to_mission(uid: &str, mission: &str, seq: u32) -> CotEvent {
    let now = CotTime::now();
    let mut ev = CotEvent::new(uid, "a-h-G", "h-g-i-g-o", CotTime(now.0 + seq as i64), 300);
    ev.detail.xml = format!(r#"<marti><dest mission="{mission}"/></marti><remarks>seq={seq}</remarks>"#);
    ev
}

/// ATAK's mission-create notice.
fn mission_created(name: &str, creator: &str) -> CotEvent {
    let mut ev = CotEvent::new(takgate::cot::random_uid(), "t-x-m-n", "h-g-i-g-o", CotTime::now(), 20);
    ev.detail.xml = format!(r#"<mission type="CREATE" tool="public" name="{name}" guid="{}" authorUid="{creator}"/>"#, takgate::cot::random_uid());
    ev
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Items 1, 2 and 12 (`other`): the client role connects although ClientEventStream
/// answers nothing until ServerEventStream exists, health-checks every 3 s, keeps reading
/// events while ClientROLStream stays silent, and sends what TAK can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_health_checks_and_exchanges_cot_with_a_tak_server() {
    let e = ends("takconf1");
    let tak = tak_server(&e, Options::default()).await;
    tak.local_user("TAK-USER", "TAKUSER", 5);
    let gw = gateway(&node(&e, tak.addr, "", "")).await;
    let mut bravo = Client::tcp(gw.local_addr("c").unwrap()).await;
    bravo.send(&pli("ANDROID-BRAVO", "BRAVO", 1)).await;
    // TAK's snapshot: its user's latest SA, once ServerEventStream exists.
    let t0 = Instant::now();
    let mut got = vec![];
    while got.is_empty() && t0.elapsed() < Duration::from_secs(5) {
        if let Some(ev) = bravo.recv(Duration::from_millis(500)).await {
            if ev.uid == "TAK-USER" {
                got.extend(seq_of(&ev));
            }
        }
    }
    assert_eq!(got, [5], "TAK's user reached takgate's client within {} ms", ms(t0.elapsed()));
    // Three health checks, then a silent ClientROLStream for a while.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    // Events still flow both ways while ClientROLStream is silent.
    for k in 0..50 {
        tak.local_event(tak::geo("TAK-USER", "TAKUSER", 100 + k));
    }
    let mut track = pli("ANDROID-BRAVO", "BRAVO", 2);
    track.detail = takgate::cot::Detail { track: Some(takgate::cot::Track { speed: 3.0, course: 90.0 }), ..Default::default() };
    bravo.send(&track).await;
    let live: Vec<u32> = bravo.drain(Duration::from_millis(1500)).await.iter().filter(|e| e.uid == "TAK-USER").filter_map(seq_of).collect();
    assert_eq!(live, (100..150).collect::<Vec<u32>>(), "every live TAK event, in order, after ClientROLStream opened");
    let st = tak.state();
    st.assert_clean();
    assert_eq!(st.connections, 1, "one connection, never reconnected");
    assert_eq!(st.deadlines, 0, "TAK's inactivity check never fired");
    assert!(st.version_major.iter().all(|m| *m > 0), "ClientEventStream carries version.major > 0");
    let ces = st.first("ClientEventStream").expect("ClientEventStream");
    let ses = st.first("ServerEventStream").expect("ServerEventStream opened without ClientEventStream's headers");
    assert!(ces <= ses, "ClientEventStream before ServerEventStream (TAK's contact snapshot)");
    let health = st.times("HealthCheck");
    assert!(health.len() >= 3, "health checks: {}", health.len());
    assert!(health[0] - ces >= Duration::from_millis(2500), "the first health check after 3 s");
    for w in health.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(2700) && gap <= Duration::from_millis(3600), "health interval {gap:?}");
    }
    let rol = st.first("ClientROLStream").expect("ClientROLStream opened");
    assert!(rol > health[0], "ClientROLStream after the first SERVING health check");
    assert_eq!(st.count("SendOneEvent") + st.count("SendOneBlob"), 0);
    assert_eq!(st.contacts.get("ANDROID-BRAVO").map(String::as_str), Some("BRAVO"), "takgate's client is a contact: {:?}", st.contacts);
    let seqs: Vec<String> = st.events_of("ANDROID-BRAVO").iter().map(|g| g.other.clone()).collect();
    assert_eq!(seqs.len(), 2, "{seqs:?}");
    assert!(seqs[0].contains("seq=1"));
    assert!(seqs[1].starts_with("<detail") && !seqs[1].contains("<track"), "what is left of the detail, tag included (an empty `other` would make TAK drop the track): {}", seqs[1]);
    let g = st.events_of("ANDROID-BRAVO")[1].clone();
    assert_eq!((g.speed, g.course), (3.0, 90.0));
    drop(st);
    let conn = gw.connection("fed").unwrap();
    assert_eq!((conn.state, conn.connects), (takgate::link::LinkState::Connected, 1), "{conn:?}");
    gw.shutdown().await;
}

/// Item 2: a hub completes ClientROLStream after its replay: takgate applies the replay,
/// reopens the stream, and the session goes on. TAK's own replay (after the health
/// interval, 100 ms apart, stream kept open) arrives too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_or_replaying_rol_stream_does_not_end_the_session() {
    for mode in [RolMode::Hub, RolMode::Replay] {
        let e = ends("takconf2");
        let tak = tak_server(&e, Options { rol: mode, ..Default::default() }).await;
        tak.queue_replay(tak::create_mission("replayed", "TAK-API"));
        let (file, aa11) = tak::create_resource(b"file one", "one.txt");
        tak.queue_replay(file);
        tak.queue_replay(tak::update_mission("ADD_CONTENT", "replayed", &[], &[&aa11], Some(CotTime::now().0)));
        let gw = gateway(&node(&e, tak.addr, "", "")).await;
        let applied = eventually(12.0, || gw.store().has_hash("replayed", &aa11).unwrap_or(false)).await;
        assert!(applied, "{mode:?}: the replay applied: {:?}", gw.store().all_changes());
        if mode == RolMode::Hub {
            // reopened after the hub completed it; the next replay holds only what is new
            let (file, bb22) = tak::create_resource(b"file two", "two.txt");
            tak.queue_replay(file);
            tak.queue_replay(tak::update_mission("ADD_CONTENT", "replayed", &[], &[&bb22], Some(CotTime::now().0)));
            assert!(eventually(10.0, || tak.state().rol_opens >= 2).await, "ClientROLStream reopened");
            assert!(eventually(10.0, || gw.store().has_hash("replayed", &bb22).unwrap_or(false)).await, "the second replay applied");
            assert!(tak.state().rol_completed >= 1);
        } else {
            // live ROL on the stream the replay left open
            let (file, cc33) = tak::create_resource(b"file three", "three.txt");
            tak.send_rol(file);
            tak.send_rol(tak::update_mission("ADD_CONTENT", "replayed", &[], &[&cc33], Some(CotTime::now().0)));
            assert!(eventually(5.0, || gw.store().has_hash("replayed", &cc33).unwrap_or(false)).await, "live ROL after the replay");
            assert_eq!(tak.state().rol_opens, 1);
        }
        let st = tak.state();
        st.assert_clean();
        assert_eq!(st.connections, 1, "{mode:?}: never reconnected");
        drop(st);
        assert_eq!(gw.store().changes("replayed").unwrap().len(), if mode == RolMode::Hub { 3 } else { 3 });
        let conn = gw.connection("fed").unwrap();
        assert_eq!((conn.state, conn.connects), (takgate::link::LinkState::Connected, 1), "{mode:?}: {conn:?}");
        gw.shutdown().await;
    }
}

/// Item 3: TAK reads the chain's second certificate. A leaf-only chain gets INTERNAL on
/// every call, so takgate refuses to start such a link and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_only_chain_is_refused_at_start() {
    let e = ends("takconf3");
    let tak = tak_server(&e, Options::default()).await;
    // What TAK does with one: a raw client presenting only its leaf.
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(&e.pki.ca).unwrap()).unwrap();
    let leaf_only = vec![rustls::pki_types::CertificateDer::from_pem_file(&e.cert).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&e.key).unwrap();
    let mut cc = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider())).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots).with_client_auth_cert(leaf_only, key).unwrap();
    cc.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(tak.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cc)).connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let tok = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut c = takgate::federation::v2::h2_client(Box::new(tls), "localhost", 1 << 20, &tok, &mut tasks).await.unwrap();
    let sub = takgate::federation::fig::Subscription { identity: Some(takgate::federation::fig::Identity { name: "x".into(), ..Default::default() }), ..Default::default() };
    let r = c.server_federate_groups_stream(sub).await;
    assert_eq!(r.err().map(|s| s.code()), Some(tonic::Code::Internal), "TAK answers a leaf-only chain with INTERNAL");
    tok.cancel();
    // takgate's side: our CA is not in `ca` (it holds only the peer's), so the chain would be
    // the leaf alone.
    let mut ours = Pki::new("takconf3-ours");
    let (leaf, key) = ours.leaf("takgate-leaf-only", false);
    let cfg = format!(
        "[node]\nid = \"n\"\n[[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"connect\"\naddress = \"{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        tak.addr,
        e.pki.path(&e.pki.ca),
        leaf.display(),
        key.display()
    );
    let err = takgate::runtime::start(&takgate::config::Config::parse(&cfg).unwrap()).await.err().expect("a leaf-only chain is refused");
    let msg = err.to_string();
    assert!(msg.contains("only the leaf") && msg.contains("issuing CA"), "{msg}");
    // With the CA after the leaf in the cert file it starts.
    let fixed = cfg.replace(&leaf.display().to_string(), &ours.with_chain(&leaf).display().to_string());
    let gw = takgate::runtime::start(&takgate::config::Config::parse(&fixed).unwrap()).await.expect("leaf + CA starts");
    gw.shutdown().await;
}

/// Item 4: missions takgate creates on a TAK Server carry `expiration: -1` and the rest of
/// MissionMetadata, so TAK's retention does not delete them at its next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missions_we_create_survive_a_tak_restart() {
    let e = ends("takconf4");
    let tak = tak_server(&e, Options::default()).await;
    // what the retention service does with a mission stored with expiration 0
    tak.local_mission("stored-with-zero", 0);
    tak.local_mission("never-expires", -1);
    let gw = gateway(&node(&e, tak.addr, "", "")).await;
    let mut alpha = Client::tcp(gw.local_addr("c").unwrap()).await;
    alpha.send(&mission_created("ops", "ANDROID-ALPHA")).await;
    assert!(eventually(15.0, || tak.state().missions.contains_key("ops")).await, "created on TAK: {:?}", tak.state().rols);
    let m = tak.state().missions["ops"].clone();
    assert_eq!((m.expiration, m.creator.as_str(), m.tool.as_str()), (-1, "ANDROID-ALPHA", "public"), "{m:?}");
    tak.restart();
    let st = tak.state();
    st.assert_clean();
    assert!(st.missions.contains_key("ops"), "our mission survives TAK's restart");
    assert!(st.missions.contains_key("never-expires") && !st.missions.contains_key("stored-with-zero"), "retention deletes 0 <= expiration <= now");
    drop(st);
    gw.shutdown().await;
}

/// Item 5: an ADD_CONTENT queued while the link was down reaches TAK with its CoT: TAK
/// adds a uid only when the uid's CoT exists locally, so the item's CoT goes first as an
/// event (with its mission name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_add_content_arrives_with_its_cot() {
    let e = ends("takconf5");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = gateway(&node(&e, port, "", "")).await;
    let mut alpha = Client::tcp(gw.local_addr("c").unwrap()).await;
    alpha.send(&to_mission("ITEM-Q1", "queued", 1)).await;
    alpha.send(&to_mission("ITEM-Q2", "queued", 2)).await;
    assert!(eventually(10.0, || gw.store().queue_stats().unwrap().first().is_some_and(|s| s.pending == 2)).await, "{:?}", gw.store().queue_stats());
    // TAK comes up later: the CoT of those items never crossed this session.
    let tak = Tak::start_at(port, &e.pki.server_cert, &e.pki.server_key, &e.pki.ca, Options::default()).await;
    let both = eventually(15.0, || tak.state().missions.get("queued").is_some_and(|m| m.uids.len() == 2)).await;
    let st = tak.state();
    assert!(both, "TAK added both items: {:?}, gave up on {:?}", st.missions.get("queued"), st.gave_up);
    st.assert_clean();
    assert!(st.gave_up.is_empty());
    let ev = st.events_of("ITEM-Q1");
    assert!(ev.first().is_some_and(|g| g.mission_names == ["queued"]), "the item's CoT as an event with its mission: {ev:?}");
    // the payloads TAK's client role needs are there too
    let add = st.rols.iter().find(|r| r.program.contains("ITEM-Q1")).expect("ADD_CONTENT ROL");
    assert!(tak::client_role_injects(add).is_some_and(|x| x.contains("ITEM-Q1")), "{:?}", add.payload.iter().map(|b| &b.description).collect::<Vec<_>>());
    drop(st);
    gw.shutdown().await;
}

/// Item 6: ROL carries `federateGroups` (TAK's federatedGroupMapping puts the mission in
/// those groups; without them, in none), and the groups a received ROL carries decide which
/// local clients get its announcement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rol_carries_federate_groups_both_ways() {
    let e = ends("takconf6");
    let tak = tak_server(&e, Options { group_mapping: Some(vec!["Cyan".into()]), ..Default::default() }).await;
    let links = "[[link]]\nname = \"cyan\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n[link.policy]\ngroups_out = [\"Cyan\"]\n\
                 [[link]]\nname = \"red\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n[link.policy]\ngroups_out = [\"Red\"]\n";
    let gw = gateway(&format!("{}{links}", node(&e, tak.addr, "outbound_groups = [\"__ANON__\", \"Cyan\"]\ngroup_mapping = [\"Cyan:Cyan\"]", ""))).await;
    let mut cyan = Client::tcp(gw.local_addr("cyan").unwrap()).await;
    let mut red = Client::tcp(gw.local_addr("red").unwrap()).await;
    let mut alpha = Client::tcp(gw.local_addr("c").unwrap()).await;
    let mut created = mission_created("cyan-ops", "ANDROID-ALPHA");
    created.detail.xml.push_str(r#"<__group name="Cyan" role="Team Member"/>"#);
    alpha.send(&created).await;
    assert!(eventually(15.0, || tak.state().missions.contains_key("cyan-ops")).await, "{:?}", tak.state().rols);
    let st = tak.state();
    st.assert_clean();
    let rol = st.rols.iter().find(|r| r.program.contains("cyan-ops")).unwrap();
    assert_eq!(rol.federate_groups, ["Cyan"], "the ROL carries the change's federation groups");
    assert_eq!(st.missions["cyan-ops"].groups, ["Cyan"], "and TAK files the mission under them");
    drop(st);
    // Inbound: a mission TAK shares with Cyan is announced on the Cyan link only.
    assert!(eventually(10.0, || tak.state().count("ClientROLStream") >= 1).await);
    let mut from_tak = tak::create_mission("from-tak", "TAK-API");
    from_tak.federate_groups = vec!["Cyan".into()];
    tak.send_rol(from_tak);
    let announced = |evs: Vec<CotEvent>| evs.iter().any(|e| e.cot_type.starts_with("t-x-m-c") && e.detail.xml.contains("from-tak"));
    assert!(announced(cyan.drain(Duration::from_millis(2500)).await), "the Cyan client is told");
    assert!(!announced(red.drain(Duration::from_millis(300)).await), "the Red client is not");
    gw.shutdown().await;
}

/// Items 7 and 8: a multi-item ADD_CONTENT keeps every uid and hash, and changes without a
/// date (TAK's REMOVE_CONTENT, API-made ADD_CONTENT) do not collide with each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_item_and_dateless_changes_from_tak_all_apply() {
    let e = ends("takconf7");
    let tak = tak_server(&e, Options::default()).await;
    let gw = gateway(&node(&e, tak.addr, "", "[missions]\nallow_federated_delete = true")).await;
    assert!(eventually(10.0, || tak.state().count("ClientROLStream") >= 1).await, "ClientROLStream");
    let (f1, h1) = tak::create_resource(b"first", "h1.txt");
    let (f2, h2) = tak::create_resource(b"second", "h2.txt");
    tak.send_rol(f1);
    tak.send_rol(f2);
    tak.send_rol(tak::update_mission("ADD_CONTENT", "multi", &["U1", "U2", "U3"], &[&h1, &h2, &"ee".repeat(32)], None));
    let all = eventually(5.0, || ["U1", "U2", "U3"].iter().all(|u| gw.store().has_item("multi", u).unwrap()) && [&h1, &h2].iter().all(|h| gw.store().has_hash("multi", h).unwrap())).await;
    assert!(all, "every uid and hash: {:?}", gw.store().changes("multi"));
    assert!(!gw.store().has_hash("multi", &"ee".repeat(32)).unwrap(), "as TAK: a hash whose file never came is not added");
    // add, remove, add, remove, add: all without a date
    for (k, change) in ["ADD_CONTENT", "REMOVE_CONTENT", "ADD_CONTENT", "REMOVE_CONTENT", "ADD_CONTENT"].iter().enumerate() {
        tak.send_rol(tak::update_mission(change, "dateless", &["D1"], &[], None));
        let present = k % 2 == 0;
        let ok = eventually(5.0, || gw.store().has_item("dateless", "D1").unwrap() == present).await;
        assert!(ok, "after change {k} ({change}) the item is {}: {:?}", if present { "there" } else { "gone" }, gw.store().changes("dateless"));
    }
    let changes = gw.store().changes("dateless").unwrap();
    assert_eq!(changes.len(), 5, "five changes recorded: {changes:?}");
    assert!(changes.iter().all(|c| c.ts_ms > 0), "stamped with the receive time");
    tak.state().assert_clean();
    gw.shutdown().await;
}

/// Item 9: only connected clients are announced as contacts (never the markers they
/// send), a client that leaves is a contact DELETE, and when the federation session ends,
/// local clients get TAK's `t-x-d-d` (without `__forcedelete`) for each remote contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_are_clients_only_and_end_with_t_x_d_d() {
    let e = ends("takconf9");
    let tak = tak_server(&e, Options::default()).await;
    tak.local_user("TAK-USER", "TAKUSER", 1);
    let gw = gateway(&node(&e, tak.addr, "", "")).await;
    let mut bravo = Client::tcp(gw.local_addr("c").unwrap()).await;
    let mut charlie = Client::tcp(gw.local_addr("c").unwrap()).await;
    bravo.send(&pli("ANDROID-BRAVO", "BRAVO", 1)).await;
    assert!(eventually(10.0, || tak.state().contacts.contains_key("ANDROID-BRAVO")).await, "bravo is a contact");
    let mut marker = CotEvent::new("MARKER-1", "a-h-G", "h-g-i-g-o", CotTime::now(), 300);
    marker.detail.contact = Some(takgate::cot::Contact { callsign: "Hostile 1".into(), endpoint: String::new(), altendpoints: String::new() });
    marker.detail.xml = r#"<link uid="ANDROID-BRAVO" relation="p-p" type="a-f-G-U-C"/>"#.into();
    bravo.send(&marker).await;
    assert!(eventually(10.0, || {
        let st = tak.state();
        st.has_cot("MARKER-1") && st.contacts.contains_key("ANDROID-BRAVO")
    })
    .await, "{}", {
        let st = tak.state();
        format!("{:?} {:?}", st.contacts, st.received.iter().filter_map(|f| f.event.as_ref().map(|e| e.uid.clone())).collect::<Vec<_>>())
    });
    assert!(!tak.state().contacts.contains_key("MARKER-1"), "a marker is not a contact: {:?}", tak.state().contacts);
    assert!(charlie.drain(Duration::from_millis(800)).await.iter().any(|e| e.uid == "TAK-USER"), "TAK's user reached charlie");
    drop(bravo);
    assert!(eventually(5.0, || !tak.state().contacts.contains_key("ANDROID-BRAVO")).await, "a client that leaves is deleted: {:?}", tak.state().contacts);
    // TAK goes away: charlie is told TAK's user is gone, in TAK's own template.
    drop(tak);
    let gone = charlie.drain(Duration::from_millis(2500)).await;
    let dd: Vec<&CotEvent> = gone.iter().filter(|e| e.cot_type == "t-x-d-d" && e.detail.xml.contains(r#"uid="TAK-USER""#)).collect();
    assert_eq!(dd.len(), 1, "{gone:?}");
    assert!(dd[0].detail.xml.contains(r#"relation="p-p""#), "{}", dd[0].detail.xml);
    assert!(gone.iter().any(|e| e.cot_type == "t-x-d-d" && e.detail.xml.contains(r#"uid="ANDROID-BRAVO""#)), "charlie was told bravo left, as TAK tells its clients");
    assert!(!dd[0].detail.xml.contains("__forcedelete"), "TAK's template has no __forcedelete");
    gw.shutdown().await;
}

/// `takgate federation test` against a TAK Server reports every stage as it is, including a
/// health check that only answers once ClientEventStream is registered; and against a hub
/// whose health check is off it says so instead of "no answer".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_test_reports_each_stage_against_tak() {
    use takgate::federation::probe::{probe, ProbeTarget};
    let e = ends("takconf10");
    let tak = tak_server(&e, Options::default()).await;
    let t = ProbeTarget { address: tak.addr.to_string(), ca: e.pki.ca.clone(), cert: e.cert.clone(), key: e.key.clone(), server_name: Some("localhost".into()), listen: Duration::from_secs(1), protocol: 2 };
    let stages = probe(&t).await;
    let names: Vec<(&str, bool)> = stages.iter().map(|s| (s.name, s.ok)).collect();
    assert_eq!(names, [("certificates", true), ("resolve", true), ("tcp connect", true), ("tls handshake", true), ("peer identity", true), ("v2 groups stream", true), ("v2 health check", true)], "{stages:#?}");
    assert!(stages[0].detail.contains("chain 2"), "{}", stages[0].detail);
    // our certificate chain is leaf-only: said before anything is sent
    let mut ours = Pki::new("takconf10-ours");
    let (leaf, key) = ours.leaf("leaf-only", false);
    let stages = probe(&ProbeTarget { cert: leaf, key, ..t.clone() }).await;
    assert!(!stages[0].ok && stages[0].detail.contains("only the leaf"), "{stages:#?}");
    // a hub with enableHealthCheck: false
    let hub = tak_server(&e, Options { health_check: false, ..Default::default() }).await;
    let stages = probe(&ProbeTarget { address: hub.addr.to_string(), ..t }).await;
    let last = stages.last().unwrap();
    assert!(last.name == "v2 health check" && last.ok && last.detail.contains("enableHealthCheck"), "{stages:#?}");
}

/// Item 12: a Federation Hub with `enableHealthCheck: false` never answers health checks;
/// the session is kept (not ended every 13 s) and ClientROLStream opened anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_health_checks_keeps_the_session() {
    let e = ends("takconf12");
    let tak = tak_server(&e, Options { health_check: false, ..Default::default() }).await;
    tak.local_user("HUB-USER", "HUBUSER", 1);
    let gw = gateway(&node(&e, tak.addr, "", "")).await;
    let mut bravo = Client::tcp(gw.local_addr("c").unwrap()).await;
    bravo.send(&pli("ANDROID-BRAVO", "BRAVO", 1)).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    tak.local_event(tak::geo("HUB-USER", "HUBUSER", 2));
    bravo.send(&pli("ANDROID-BRAVO", "BRAVO", 2)).await;
    let got: Vec<u32> = bravo.drain(Duration::from_millis(1500)).await.iter().filter(|e| e.uid == "HUB-USER").filter_map(seq_of).collect();
    assert_eq!(got, [1, 2]);
    let st = tak.state();
    assert_eq!(st.connections, 1, "the session was kept");
    assert!(st.count("ClientROLStream") >= 1, "ClientROLStream opened without a healthy check");
    assert_eq!(st.events_of("ANDROID-BRAVO").len(), 2);
    drop(st);
    gw.shutdown().await;
}

/// A contact TAK announces reaches local clients as the contact's own SA; TAK's delete of a
/// contact (its user left) is a `t-x-d-d` for local clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_tak_deletes_is_deleted_locally() {
    let e = ends("takconf13");
    let tak = tak_server(&e, Options::default()).await;
    tak.local_user("TAK-LEAVER", "LEAVER", 1);
    let gw = gateway(&node(&e, tak.addr, "", "")).await;
    let mut charlie = Client::tcp(gw.local_addr("c").unwrap()).await;
    assert!(charlie.drain(Duration::from_millis(4000)).await.iter().any(|e| e.uid == "TAK-LEAVER"));
    tak.local_event(FederatedEvent { contact: Some(ContactListEntry { operation: Crud::Delete as i32, uid: "TAK-LEAVER".into(), callsign: "LEAVER".into(), ..Default::default() }), ..Default::default() });
    let evs = charlie.drain(Duration::from_millis(1500)).await;
    assert!(evs.iter().any(|e| e.cot_type == "t-x-d-d" && e.detail.xml.contains("TAK-LEAVER")), "{evs:?}");
    gw.shutdown().await;
}
