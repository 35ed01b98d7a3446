//! Mission content with its files, and data packages, end to end: takgate between a server
//! that reads and writes ROL as TAK Server 5.7 does (tests/common/tak.rs: `create resource`
//! with the bytes as payload[0], the hash recomputed, ADD_CONTENT of unheld hashes skipped,
//! `announce package` as ResourceDetails) and clients that use the Marti API the way ATAK
//! does (tests/py/marti_client.py: plain Python HTTPS with a client certificate).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use common::certs::Pki;
use common::tak::{self, Options, Tak};
use common::{eventually, gateway, Client};
use serde_json::{json, Value};
use takgate::cot::{CotEvent, CotTime};

struct Ends {
    pki: Pki,
    fed: (PathBuf, PathBuf),
    atak: (PathBuf, PathBuf),
}

fn ends(tag: &str) -> Ends {
    let mut pki = Pki::new(tag);
    let fed = pki.leaf("takgate-fed", false);
    let atak = pki.leaf("alice", false);
    Ends { pki, fed, atak }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// takgate: a TCP client link `c`, a federation v2 link to `tak`, and the Marti API on `marti`.
fn node(e: &Ends, tak: SocketAddr, marti: SocketAddr, top: &str) -> String {
    let p = |x: &PathBuf| e.pki.path(x);
    format!(
        "[node]\nid = \"takgate-files\"\n{top}\n[marti]\naddress = \"{marti}\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\npublic_url = \"https://127.0.0.1:{}\"\n\
         [[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"connect\"\naddress = \"{tak}\"\nserver_name = \"localhost\"\n\
         reconnect_min_secs = 0.2\nreconnect_max_secs = 0.5\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        p(&e.pki.server_cert),
        p(&e.pki.server_key),
        p(&e.pki.ca),
        marti.port(),
        p(&e.pki.ca),
        p(&e.fed.0),
        p(&e.fed.1)
    )
}

/// Runs Marti requests as ATAK's client would (alice's certificate); one answer each.
async fn marti(e: &Ends, port: u16, requests: Value) -> Vec<Value> {
    marti_as(e, port, Some(&e.atak), requests).await
}

async fn marti_as(e: &Ends, port: u16, who: Option<&(PathBuf, PathBuf)>, requests: Value) -> Vec<Value> {
    let mut args = vec!["--port".to_string(), port.to_string(), "--ca".into(), e.pki.path(&e.pki.ca)];
    if let Some((c, k)) = who {
        args.extend(["--cert".into(), e.pki.path(c), "--key".into(), e.pki.path(k)]);
    }
    args.push(requests.to_string());
    let run = common::py::run_script("marti_client.py", args, 60.0).await;
    assert!(run.done.is_some(), "marti_client.py failed: {}", run.stderr);
    run.events
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn sha256(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

fn sa(uid: &str, callsign: &str) -> CotEvent {
    let mut ev = CotEvent::new(uid, "a-f-G-U-C", "m-g", CotTime::now(), 300);
    ev.detail.xml = format!(r#"<contact callsign="{callsign}" endpoint="*:-1:stcp"/>"#);
    ev
}

/// A file a TAK Server federates (`create resource` with its bytes, then ADD_CONTENT of its
/// hash) is stored under the hash of its bytes, listed in the mission, announced to local
/// clients with its contentResource, and downloadable by hash over the Marti API; a file
/// whose bytes do not match the hash it claims is refused and counted, and its ADD_CONTENT
/// skipped, as TAK skips hashes it does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_from_a_tak_server_is_stored_announced_and_served() {
    let e = ends("files1");
    let tak = Tak::start(&e.pki.server_cert, &e.pki.server_key, &e.pki.ca, Options::default()).await;
    let m = free_port();
    let gw = gateway(&node(&e, tak.addr, m, "")).await;
    let mut alpha = Client::tcp(gw.local_addr("c").unwrap()).await;
    alpha.send(&sa("ANDROID-ALPHA", "ALPHA")).await;
    assert!(eventually(10.0, || tak.state().count("ClientROLStream") >= 1).await, "ClientROLStream");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (file, hash) = tak::create_resource(&bytes, "map.kmz");
    tak.send_rol(tak::create_mission("ops", "ANDROID-TAK"));
    tak.send_rol(file);
    tak.send_rol(tak::update_mission("ADD_CONTENT", "ops", &[], &[&hash], Some(CotTime::now().0)));
    // a file whose claimed hash is not its bytes'
    let (mut forged, _) = tak::create_resource(b"forged bytes", "forged.txt");
    let claimed = "0f".repeat(32);
    forged.program = forged.program.replace(&sha256(b"forged bytes"), &claimed);
    tak.send_rol(forged);
    tak.send_rol(tak::update_mission("ADD_CONTENT", "ops", &[], &[&claimed], Some(CotTime::now().0 + 1)));
    assert!(eventually(10.0, || gw.store().has_hash("ops", &hash).unwrap()).await, "{:?}", gw.store().changes("ops"));
    let evs = alpha.drain(Duration::from_millis(1500)).await;
    let ann = evs.iter().find(|e| e.cot_type == "t-x-m-c" && e.detail.xml.contains(&hash));
    assert!(ann.is_some_and(|a| a.detail.xml.contains("<filename>map.kmz</filename>") && a.detail.xml.contains("<size>200000</size>")), "the change is announced with its file: {evs:?}");
    assert!(!gw.store().has_hash("ops", &claimed).unwrap(), "the forged file is not in the mission");
    assert!(gw.missions().counters.decode_errors.load(std::sync::atomic::Ordering::Relaxed) >= 1, "and counted");

    let r = marti(
        &e,
        m.port(),
        json!([
            {"method": "GET", "path": format!("/Marti/sync/content?hash={hash}")},
            {"method": "HEAD", "path": format!("/Marti/sync/content?hash={}", hash.to_uppercase())},
            {"method": "GET", "path": format!("/Marti/sync/content?hash={claimed}")},
            {"method": "GET", "path": "/Marti/sync/content?hash=../../etc/passwd"},
            {"method": "GET", "path": "/Marti/api/missions/ops"},
        ]),
    )
    .await;
    assert_eq!((r[0]["status"].as_i64(), r[0]["sha256"].as_str(), r[0]["length"].as_i64()), (Some(200), Some(hash.as_str()), Some(200_000)), "{:?}", r[0]);
    assert!(r[0]["disposition"].as_str().is_some_and(|d| d.contains("map.kmz")), "{:?}", r[0]);
    assert_eq!(r[1]["status"], 200, "HEAD, any hex case");
    assert_eq!((r[2]["status"].as_i64(), r[3]["status"].as_i64()), (Some(404), Some(404)));
    let mission = &r[4]["json"]["data"][0];
    assert_eq!(mission["name"], "ops");
    assert_eq!(mission["contents"].as_array().map(|c| c.iter().map(|c| c["data"]["hash"].as_str().unwrap_or("").to_owned()).collect::<Vec<_>>()), Some(vec![hash.clone()]), "{mission}");
    // without a client certificate: refused at the handshake
    let anon = marti_as(&e, m.port(), None, json!([{"method": "GET", "path": format!("/Marti/sync/content?hash={hash}")}])).await;
    assert_eq!(anon[0]["status"], 0, "no client certificate, no answer: {:?}", anon[0]);
    tak.state().assert_clean();
    gw.shutdown().await;
}

/// A file a local client uploads and adds to a mission over the Marti API goes to the TAK
/// Server as TAK sends one: `create resource` with its bytes, then the ADD_CONTENT of its
/// hash, which TAK applies because it holds the file by then; both ROL in shapes TAK's
/// receiver accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_a_client_adds_reaches_the_tak_server_before_its_add_content() {
    let e = ends("files2");
    let tak = Tak::start(&e.pki.server_cert, &e.pki.server_key, &e.pki.ca, Options::default()).await;
    let m = free_port();
    let gw = gateway(&node(&e, tak.addr, m, "")).await;
    let photo: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let h = sha256(&photo);
    let r = marti(
        &e,
        m.port(),
        json!([
            {"method": "PUT", "path": "/Marti/api/missions/recon?creatorUid=ANDROID-ALPHA&tool=public&description=photos"},
            {"method": "POST", "path": "/Marti/sync/upload?name=photo.jpg&creatorUid=ANDROID-ALPHA&keywords=recon", "body_b64": b64(&photo), "content_type": "image/jpeg"},
            {"method": "PUT", "path": "/Marti/api/missions/recon/contents?creatorUid=ANDROID-ALPHA", "json": {"hashes": [h]}},
            {"method": "PUT", "path": "/Marti/api/missions/recon/contents?creatorUid=ANDROID-ALPHA", "json": {"hashes": ["ab".repeat(32)]}},
            {"method": "GET", "path": "/Marti/sync/search"},
        ]),
    )
    .await;
    assert_eq!(r[0]["status"], 201, "{:?}", r[0]);
    assert_eq!((r[1]["status"].as_i64(), r[1]["json"]["Hash"].as_str(), r[1]["json"]["SubmissionUser"].as_str()), (Some(200), Some(h.as_str()), Some("alice")), "{:?}", r[1]);
    assert_eq!(r[2]["status"], 200, "{:?}", r[2]);
    assert_eq!(r[3]["status"], 404, "a hash we do not hold: {:?}", r[3]);
    assert_eq!(r[4]["json"]["resultCount"], 1);
    let arrived = eventually(15.0, || tak.state().missions.get("recon").is_some_and(|m| m.hashes.contains(&h))).await;
    let st = tak.state();
    assert!(arrived, "TAK added the file to the mission: {:?} {:?}", st.missions.get("recon"), st.rols.iter().map(|r| r.program.lines().next().unwrap_or("")).collect::<Vec<_>>());
    st.assert_clean();
    let (bytes, resource) = &st.files[&h];
    assert_eq!(bytes, &photo, "the bytes as payload[0]");
    assert_eq!((resource["name"].as_str(), resource["mimeType"].as_str(), resource["creatorUid"].as_str(), resource["size"].as_i64()), (Some("photo.jpg"), Some("image/jpeg"), Some("ANDROID-ALPHA"), Some(50_000)));
    let at = |pred: &dyn Fn(&str) -> bool| st.rols.iter().position(|r| pred(&r.program));
    let (res, add) = (at(&|p| p.starts_with("create resource")).unwrap(), at(&|p| p.starts_with("update mission") && p.contains(&h)).unwrap());
    assert!(res < add, "create resource first, then the ADD_CONTENT of its hash");
    drop(st);
    // the removal goes too (applied by TAK only with allowFederatedDelete; here: seen)
    let r = marti(&e, m.port(), json!([{"method": "DELETE", "path": format!("/Marti/api/missions/recon/contents?hash={h}&creatorUid=ANDROID-ALPHA")}, {"method": "GET", "path": "/Marti/api/missions/recon"}])).await;
    assert_eq!(r[0]["status"], 200, "{:?}", r[0]);
    assert_eq!(r[1]["json"]["data"][0]["contents"].as_array().map(Vec::len), Some(0));
    assert!(eventually(10.0, || tak.state().rols.iter().any(|r| r.program.contains("REMOVE_CONTENT") && r.program.contains(&h))).await);
    tak.state().assert_clean();
    gw.shutdown().await;
}

/// A data package shared with a contact: ATAK uploads it (`missionquery` 404, then
/// `missionupload`) and sends a `b-f-t-r` to a callsign; toward the TAK Server that becomes
/// the file (`create resource`) and `announce package`, never a CoT event. A package a TAK
/// user sends to ALPHA arrives as a local `b-f-t-r` to ALPHA only, whose URL is takgate's
/// own, from which ALPHA's client downloads the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_packages_cross_as_announce_package_both_ways() {
    let e = ends("files3");
    let tak = Tak::start(&e.pki.server_cert, &e.pki.server_key, &e.pki.ca, Options::default()).await;
    tak.local_user("TAK-USER", "TAKUSER", 1);
    let m = free_port();
    let gw = gateway(&node(&e, tak.addr, m, "")).await;
    let mut alpha = Client::tcp(gw.local_addr("c").unwrap()).await;
    let mut bravo = Client::tcp(gw.local_addr("c").unwrap()).await;
    alpha.send(&sa("ANDROID-ALPHA", "ALPHA")).await;
    bravo.send(&sa("ANDROID-BRAVO", "BRAVO")).await;
    assert!(eventually(10.0, || tak.state().count("ClientROLStream") >= 1 && tak.state().contacts.contains_key("ANDROID-ALPHA")).await);

    // out: ATAK's upload, then its file transfer request to TAKUSER
    let pkg: Vec<u8> = (0..30_000u32).map(|i| (i % 241) as u8).collect();
    let h = sha256(&pkg);
    let r = marti(
        &e,
        m.port(),
        json!([
            {"method": "GET", "path": format!("/Marti/sync/missionquery?hash={h}")},
            {"method": "POST", "path": format!("/Marti/sync/missionupload?hash={h}&filename=orders.zip&creatorUid=ANDROID-ALPHA"), "multipart": {"field": "assetfile", "filename": "orders.zip", "b64": b64(&pkg)}},
            {"method": "GET", "path": format!("/Marti/sync/missionquery?hash={h}")},
        ]),
    )
    .await;
    assert_eq!(r[0]["status"], 404, "not held yet");
    assert_eq!(r[1]["status"], 200, "{:?}", r[1]);
    assert_eq!(r[1]["text"].as_str(), Some(format!("https://127.0.0.1:{}/Marti/api/sync/metadata/{h}/tool", m.port()).as_str()));
    assert_eq!(r[2]["status"], 200);
    let mut share = CotEvent::new("share-1", "b-f-t-r", "h-e", CotTime::now(), 60);
    share.detail.xml = format!(r#"<fileshare filename="orders.zip" senderUrl="https://127.0.0.1:{}/Marti/sync/content?hash={h}" sizeInBytes="{}" sha256="{h}" senderUid="ANDROID-ALPHA" senderCallsign="ALPHA" name="orders"/><ackrequest uid="ack-1" ackrequested="true" tag="orders"/><marti><dest callsign="TAKUSER"/></marti>"#, m.port(), pkg.len());
    alpha.send(&share).await;
    assert!(eventually(10.0, || !tak.state().packages.is_empty()).await, "announce package: {:?}", tak.state().rols.iter().map(|r| r.program.lines().next().unwrap_or("")).collect::<Vec<_>>());
    let st = tak.state();
    st.assert_clean();
    let p = &st.packages[0];
    assert_eq!((p["sha256"].as_str(), p["name"].as_str(), p["sizeInBytes"].as_i64()), (Some(h.as_str()), Some("orders"), Some(30_000)));
    assert_eq!(serde_json::from_str::<Value>(p["senderUid"].as_str().unwrap()).unwrap(), json!({"callsigns": ["TAKUSER"], "uids": []}));
    assert_eq!(st.files.get(&h).map(|f| &f.0), Some(&pkg), "the file went ahead of the announcement");
    assert!(st.events_of("share-1").is_empty(), "no b-f-t-r event toward a v2 federate");
    drop(st);

    // in: TAKUSER sends a package to ALPHA
    let inbound: Vec<u8> = b"PK\x03\x04 a data package from TAK".repeat(100);
    let (file, h2) = tak::create_resource(&inbound, "from-tak.zip");
    tak.send_rol(file);
    tak.send_rol(tak::announce_package(&h2, "from-tak.zip", inbound.len(), &["ALPHA"], &[]));
    let got = alpha.drain(Duration::from_millis(2500)).await;
    let req = got.iter().find(|e| e.cot_type == "b-f-t-r").unwrap_or_else(|| panic!("ALPHA gets the transfer request: {got:?}"));
    let url = takgate::cot::fragment::find_attr(&req.detail.xml, "fileshare", "senderUrl").unwrap();
    assert_eq!(url, format!("https://127.0.0.1:{}/Marti/sync/content?hash={h2}", m.port()));
    assert!(!bravo.drain(Duration::from_millis(300)).await.iter().any(|e| e.cot_type == "b-f-t-r"), "a package to ALPHA never reaches BRAVO");
    let r = marti(&e, m.port(), json!([{"method": "GET", "url": url}])).await;
    assert_eq!((r[0]["status"].as_i64(), r[0]["sha256"].as_str()), (Some(200), Some(h2.as_str())), "{:?}", r[0]);
    gw.shutdown().await;
}

/// The replay window sends files with their bytes up to `replay_max_file_bytes`, larger
/// ones as metadata only (TAK then ignores the resource and skips the hash), and the
/// mission change after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_window_sends_files_up_to_its_size_cap() {
    let e = ends("files4");
    let dir = e.pki.dir.join("store");
    let store = format!("[store]\npath = \"{}\"\n[missions]\nreplay_max_file_bytes = 1000\n", dir.join("gw.db").display());
    let tak_addr = free_port();
    let m = free_port();
    // First run: no federation link yet (the TAK Server is configured later).
    let solo = node(&e, tak_addr, m, &store);
    let solo = &solo[..solo.find("[[link]]\nname = \"fed\"").unwrap()];
    let gw = gateway(solo).await;
    let (small, big) = (vec![1u8; 500], vec![2u8; 5000]);
    let (hs, hb) = (sha256(&small), sha256(&big));
    let r = marti(
        &e,
        m.port(),
        json!([
            {"method": "PUT", "path": "/Marti/api/missions/replayed?creatorUid=ANDROID-ALPHA"},
            {"method": "POST", "path": "/Marti/sync/upload?name=small.bin", "body_b64": b64(&small)},
            {"method": "POST", "path": "/Marti/sync/upload?name=big.bin", "body_b64": b64(&big)},
            {"method": "PUT", "path": "/Marti/api/missions/replayed/contents", "json": {"hashes": [hs, hb]}},
        ]),
    )
    .await;
    assert!(r.iter().all(|x| x["status"].as_i64().is_some_and(|s| (200..300).contains(&s))), "{r:?}");
    gw.shutdown().await;
    // Second run: the new federate gets the replay window.
    let tak = Tak::start_at(tak_addr, &e.pki.server_cert, &e.pki.server_key, &e.pki.ca, Options::default()).await;
    let gw = gateway(&node(&e, tak_addr, m, &store)).await;
    assert!(eventually(15.0, || tak.state().missions.get("replayed").is_some_and(|m| m.hashes.contains(&hs)) && tak.state().resources_without_content == 1).await, "{:?}", tak.state().rols.iter().map(|r| r.program.lines().next().unwrap_or("")).collect::<Vec<_>>());
    let st = tak.state();
    st.assert_clean();
    assert!(st.files.contains_key(&hs) && !st.files.contains_key(&hb), "the small file with its bytes, the big one without");
    drop(st);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!tak.state().missions["replayed"].hashes.contains(&hb), "TAK skips the hash it never got");
    gw.shutdown().await;
}

/// Mission log entries both ways: one a client writes and edits over the Marti API reaches
/// the TAK Server as TAK's MissionUpdateDetailsForLogEntry (add-or-update, then delete); one
/// TAK sends is in the mission's log on takgate's Marti API, announced to local clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mission_log_entries_cross_both_ways() {
    let e = ends("files5");
    let tak = Tak::start(&e.pki.server_cert, &e.pki.server_key, &e.pki.ca, Options::default()).await;
    let m = free_port();
    let gw = gateway(&node(&e, tak.addr, m, "")).await;
    let mut alpha = Client::tcp(gw.local_addr("c").unwrap()).await;
    alpha.send(&sa("ANDROID-ALPHA", "ALPHA")).await;
    assert!(eventually(10.0, || tak.state().count("ClientROLStream") >= 1).await);
    let entry = json!({"content": "contact at 0600", "creatorUid": "ANDROID-ALPHA", "missionNames": ["logbook"], "dtg": "2026-12-02T06:00:00.000Z", "keywords": ["sitrep"], "contentHashes": []});
    let r = marti(&e, m.port(), json!([{"method": "PUT", "path": "/Marti/api/missions/logbook?creatorUid=ANDROID-ALPHA"}, {"method": "POST", "path": "/Marti/api/missions/logs/entries", "json": entry}, {"method": "POST", "path": "/Marti/api/missions/logs/entries", "json": {"content": "no mission", "missionNames": ["nowhere"]}}])).await;
    assert_eq!((r[0]["status"].as_i64(), r[1]["status"].as_i64(), r[2]["status"].as_i64()), (Some(201), Some(201), Some(404)), "{r:?}");
    let uid = r[1]["json"]["data"]["entryUid"].as_str().unwrap().to_owned();
    let ok = eventually(10.0, || tak.state().logs.get(&uid).is_some_and(|l| l["content"] == "contact at 0600")).await;
    {
        let st = tak.state();
        assert!(ok, "TAK has the entry: {:?} {:?} {:?}", st.rejected, st.rols.iter().map(|r| r.program.clone()).collect::<Vec<_>>(), gw.store().changes("logbook"));
    }
    let mut edit = entry.clone();
    edit["content"] = "contact at 0600, two vehicles".into();
    edit["id"] = uid.clone().into();
    let r = marti(&e, m.port(), json!([{"method": "PUT", "path": "/Marti/api/missions/logs/entries", "json": edit}, {"method": "GET", "path": "/Marti/api/missions/logbook/log"}])).await;
    assert_eq!(r[0]["status"], 200, "{:?}", r[0]);
    assert_eq!(r[1]["json"]["data"].as_array().map(|a| a.iter().map(|l| l["content"].as_str().unwrap_or("").to_owned()).collect::<Vec<_>>()), Some(vec!["contact at 0600, two vehicles".to_string()]));
    assert!(eventually(10.0, || tak.state().logs.get(&uid).is_some_and(|l| l["content"] == "contact at 0600, two vehicles")).await, "the edit");
    let first = tak.state().logs[&uid].clone();
    assert_eq!((first["dtg"].as_str(), first["missionNames"][0].as_str(), first["keywords"][0].as_str()), (Some("2026-12-02T06:00:00.000Z"), Some("logbook"), Some("sitrep")));
    let r = marti(&e, m.port(), json!([{"method": "DELETE", "path": format!("/Marti/api/missions/logs/entries/{uid}")}])).await;
    assert_eq!(r[0]["status"], 200);
    assert!(eventually(10.0, || !tak.state().logs.contains_key(&uid)).await, "the deletion");
    // from TAK
    tak.send_rol(tak::log_entry("ADD_UPDATE_LOG_ENTRY", "logbook", "tak-entry-1", "from the TAK side"));
    assert!(eventually(10.0, || gw.store().log("tak-entry-1").unwrap().is_some()).await, "{:?}", gw.store().changes("logbook"));
    let r = marti(&e, m.port(), json!([{"method": "GET", "path": "/Marti/api/missions/logbook/log"}])).await;
    let l = &r[0]["json"]["data"][0];
    assert_eq!((l["entryUid"].as_str(), l["content"].as_str(), l["dtg"].as_str()), (Some("tak-entry-1"), Some("from the TAK side"), Some("2026-12-01T09:59:00.000Z")), "{:?}", r[0]);
    let evs = alpha.drain(Duration::from_millis(1500)).await;
    assert!(evs.iter().any(|e| e.cot_type == "t-x-m-c-l" && e.detail.xml.contains("logbook")), "local clients are told the log changed: {evs:?}");
    tak.state().assert_clean();
    gw.shutdown().await;
}

/// takgate between two TAK Servers: what one federates (a file and the change that adds
/// it, a log entry) is relayed to the other as TAK would send it, never back to its origin;
/// with `relay = false`, as a TAK Server, it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_two_tak_servers_files_and_changes_are_relayed_never_back() {
    for relay in [true, false] {
        let e = ends(if relay { "files6" } else { "files7" });
        let (east, west) = tokio::join!(Tak::start(&e.pki.server_cert, &e.pki.server_key, &e.pki.ca, Options::default()), Tak::start(&e.pki.server_cert, &e.pki.server_key, &e.pki.ca, Options::default()));
        let m = free_port();
        let cfg = node(&e, east.addr, m, &format!("[missions]\nrelay = {relay}\n")).replace("name = \"fed\"", "name = \"east\"");
        let west_link = cfg[cfg.find("[[link]]\nname = \"east\"").unwrap()..].replace("name = \"east\"", "name = \"west\"").replace(&east.addr.to_string(), &west.addr.to_string());
        let gw = gateway(&format!("{cfg}{west_link}")).await;
        assert!(eventually(10.0, || east.state().count("ClientROLStream") >= 1 && west.state().count("ClientROLStream") >= 1).await);
        let bytes = format!("overlay relay={relay}").repeat(300).into_bytes();
        let (file, h) = tak::create_resource(&bytes, "overlay.kml");
        east.send_rol(tak::create_mission("shared", "ANDROID-EAST"));
        east.send_rol(file);
        east.send_rol(tak::update_mission("ADD_CONTENT", "shared", &[], &[&h], Some(CotTime::now().0)));
        east.send_rol(tak::log_entry("ADD_UPDATE_LOG_ENTRY", "shared", "east-log-1", "from east"));
        // what takgate does not model goes on as it came
        let assign = "assign mission\n{\"missionName\":\"shared\",\"parentMissionName\":\"theatre\"};";
        let feed = "create data_feed\n{\"type\":\"DataFeedMetadata\",\"missionName\":\"\",\"missionFeedUid\":\"\",\"dataFeedUid\":\"3c1e\",\"filterPolygon\":\"\",\"filterCotTypes\":[],\"filterCallsign\":\"\",\"archive\":true,\"sync\":false,\"enableLatestSA\":true,\"archiveOnly\":false,\"feedName\":\"ais\",\"authType\":\"X_509\",\"syncCacheRetentionSeconds\":3600,\"tags\":[]};";
        for p in [assign, feed] {
            east.send_rol(takgate::federation::fig::Rol { program: p.into(), ..Default::default() });
        }
        assert!(eventually(10.0, || gw.store().has_hash("shared", &h).unwrap() && gw.store().log("east-log-1").unwrap().is_some()).await, "applied on takgate");
        if relay {
            let got = eventually(15.0, || west.state().missions.get("shared").is_some_and(|m| m.hashes.contains(&h)) && west.state().logs.contains_key("east-log-1")).await;
            let st = west.state();
            assert!(got, "west got the mission, the file and the log: {:?}", st.rols.iter().map(|r| r.program.lines().next().unwrap_or("")).collect::<Vec<_>>());
            assert_eq!(st.files.get(&h).map(|f| &f.0), Some(&bytes));
            drop(st);
            assert!(eventually(10.0, || [assign, feed].iter().all(|p| west.state().rols.iter().any(|r| r.program == *p))).await, "hierarchy and data feed relayed as they came: {:?}", west.state().rols.iter().map(|r| r.program.clone()).collect::<Vec<_>>());
            let st = west.state();
            st.assert_clean();
        } else {
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(west.state().rols.is_empty(), "relay = false: west gets nothing of east's");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(east.state().rols.is_empty(), "nothing goes back to its origin: {:?}", east.state().rols.iter().map(|r| r.program.lines().next().unwrap_or("")).collect::<Vec<_>>());
        gw.shutdown().await;
    }
}
