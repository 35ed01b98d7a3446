//! takgate as OpenTAKServer's federation engine, against a real, running OpenTAKServer
//! 1.7.14 (scripts/ots up; the test command starts it): OTS's own clients on its TCP CoT
//! port, its database and its Marti API are what the tests look at.

mod common;

use std::time::Duration;

use common::ots::{tag, Ots};
use common::{eventually, gateway, pli, seq_of, Client};
use takgate::cot::{CotEvent, CotTime};

/// A GeoChat message as ATAK writes it: to All Chat Rooms, or (with `to`) to one contact.
fn chat(from_uid: &str, from_cs: &str, to: Option<(&str, &str)>, text: &str) -> CotEvent {
    let msg = takgate::cot::random_uid();
    let (room, room_id) = match to {
        Some((uid, cs)) => (cs.to_owned(), uid.to_owned()),
        None => ("All Chat Rooms".to_owned(), "All Chat Rooms".to_owned()),
    };
    let mut ev = CotEvent::new(format!("GeoChat.{from_uid}.{room_id}.{msg}"), "b-t-f", "h-g-i-g-o", CotTime::now(), 60);
    // ATAK puts the sender's position on its chat (OTS stores chat only with a point)
    (ev.point.lat, ev.point.lon) = (10.5, 20.5);
    let dest = to.map(|(_, cs)| format!(r#"<marti><dest callsign="{cs}"/></marti>"#)).unwrap_or_default();
    ev.detail.xml = format!(
        r#"<__chat parent="RootContactGroup" groupOwner="false" messageId="{msg}" chatroom="{room}" id="{room_id}" senderCallsign="{from_cs}"><chatgrp uid0="{from_uid}" uid1="{room_id}" id="{room_id}"/></__chat><link uid="{from_uid}" type="a-f-G-U-C" relation="p-p"/><remarks source="BAO.F.ATAK.{from_uid}" to="{room_id}" time="{}">{text}</remarks>{dest}"#,
        CotTime::now()
    );
    ev
}

fn said(evs: &[CotEvent], text: &str) -> bool {
    evs.iter().any(|e| e.cot_type == "b-t-f" && e.detail.xml.contains(text))
}

/// Position reports, group chat and direct chat both ways between OpenTAKServer's clients
/// and takgate's; a direct message reaches only its addressee, on either side; what takgate
/// delivers is stored by OpenTAKServer with its sender, and its chat in OTS's chat history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sa_group_chat_and_private_chat_both_ways_with_opentakserver() {
    let ots = Ots::get("a");
    let t = tag();
    let (alpha, bravo, oscar, papa) = (format!("ANDROID-A-{t}"), format!("ANDROID-B-{t}"), format!("OTS-O-{t}"), format!("OTS-P-{t}"));
    let (alpha_cs, bravo_cs, oscar_cs, papa_cs) = (format!("ALPHA{t}"), format!("BRAVO{t}"), format!("OSCAR{t}"), format!("PAPA{t}"));
    let gw = gateway(&format!("[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n{}", ots.link("ots", ""))).await;
    let c = gw.local_addr("c").unwrap();
    let mut o = ots.client(&pli(&oscar, &oscar_cs, 1)).await;
    let mut p = ots.client(&pli(&papa, &papa_cs, 1)).await;
    let mut a = Client::tcp(c).await;
    let mut b = Client::tcp(c).await;
    a.send(&pli(&alpha, &alpha_cs, 1)).await;
    b.send(&pli(&bravo, &bravo_cs, 1)).await;
    // takgate's clients reach OTS's once their OTS clients are registered (a few seconds).
    let mut seen = vec![];
    for _ in 0..40 {
        seen.extend(o.drain(Duration::from_millis(250)).await);
        if seen.iter().any(|e| e.uid == alpha) && seen.iter().any(|e| e.uid == bravo) {
            break;
        }
    }
    assert!(seen.iter().any(|e| e.uid == alpha && seq_of(e) == Some(1)), "alpha's report reached OTS's client: {:?}", seen.iter().map(|e| &e.uid).collect::<Vec<_>>());
    // OTS's clients reach takgate's.
    o.send(&pli(&oscar, &oscar_cs, 2)).await;
    let got = a.drain(Duration::from_millis(2000)).await;
    assert!(got.iter().any(|e| e.uid == oscar && seq_of(e) == Some(2)), "oscar's report reached alpha: {:?}", got.iter().map(|e| &e.uid).collect::<Vec<_>>());
    // Group chat both ways.
    a.send(&chat(&alpha, &alpha_cs, None, &format!("hello all from alpha {t}"))).await;
    o.send(&chat(&oscar, &oscar_cs, None, &format!("hello all from oscar {t}"))).await;
    let (on_o, on_p, on_b) = (o.drain(Duration::from_millis(2500)).await, p.drain(Duration::from_millis(300)).await, b.drain(Duration::from_millis(300)).await);
    assert!(said(&on_o, &format!("hello all from alpha {t}")) && said(&on_p, &format!("hello all from alpha {t}")), "alpha's group chat on OTS");
    assert!(said(&on_b, &format!("hello all from oscar {t}")), "oscar's group chat on takgate");
    // Direct chat both ways, to the addressee only.
    a.send(&chat(&alpha, &alpha_cs, Some((&oscar, &oscar_cs)), &format!("private to oscar {t}"))).await;
    o.send(&chat(&oscar, &oscar_cs, Some((&alpha, &alpha_cs)), &format!("private to alpha {t}"))).await;
    let (on_o, on_p) = (o.drain(Duration::from_millis(2500)).await, p.drain(Duration::from_millis(300)).await);
    let (on_a, on_b) = (a.drain(Duration::from_millis(1500)).await, b.drain(Duration::from_millis(300)).await);
    assert!(said(&on_o, &format!("private to oscar {t}")), "the direct message reached oscar");
    assert!(said(&on_a, &format!("private to alpha {t}")), "the direct message reached alpha");
    assert!(!said(&on_p, &format!("private to oscar {t}")) && !said(&on_p, &format!("private to alpha {t}")), "papa (OTS) saw a private message");
    assert!(!said(&on_b, &format!("private to oscar {t}")) && !said(&on_b, &format!("private to alpha {t}")), "bravo (takgate) saw a private message");
    // Stored by OTS with its sender, chat in its chat history.
    let rows = || ots.query(&format!("select sender_uid, type from cot where sender_uid = '{alpha}' order by id"));
    assert!(eventually(5.0, || rows().iter().any(|r| r.ends_with("|a-f-G-U-C"))).await, "{:?}", rows());
    let chats = ots.query(&format!("select sender_uid, remarks from geochat where remarks like '%{t}%' order by timestamp"));
    assert!(chats.iter().any(|r| r == &format!("{alpha}|hello all from alpha {t}")) && chats.iter().any(|r| r == &format!("{alpha}|private to oscar {t}")), "OTS's chat history: {chats:?}");
    assert!(ots.query(&format!("select uid from euds where uid = '{alpha}'")).len() == 1, "alpha is an EUD of OTS");
    gw.shutdown().await;
}

/// takgate A (OpenTAKServer a's engine, federation v2 listener) and takgate B (a v2
/// federate of A), for the mission tests.
fn engine_with_v2(ots: &Ots, pki: &common::certs::Pki, extra_ots: &str) -> String {
    format!(
        "[node]\nid = \"ots-engine-{}\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n{}{}",
        ots.name,
        ots.link("ots", &format!("ots_poll_secs = 1\n{extra_ots}")),
        pki.fed_listener("unused", "federation-v2", "127.0.0.1:0", "").split_once("[[link]]\nname = \"fed\"").map(|(_, l)| format!("[[link]]\nname = \"fed\"{l}")).unwrap()
    )
}

fn federate_of(to: std::net::SocketAddr, pki: &mut common::certs::Pki, top: &str) -> String {
    let (cert, key) = pki.leaf("takgate-b", false);
    format!(
        "[node]\nid = \"takgate-b\"\n{top}\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"connect\"\naddress = \"{to}\"\nserver_name = \"localhost\"\nreconnect_min_secs = 0.2\nreconnect_max_secs = 0.5\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.path(&pki.ca),
        cert.display(),
        key.display()
    )
}

/// A CoT item sent to `mission`.
fn item(uid: &str, mission: Option<&str>) -> CotEvent {
    let mut ev = CotEvent::new(uid, "a-h-G", "h-g-i-g-o", CotTime::now(), 600);
    (ev.point.lat, ev.point.lon) = (11.5, 21.5);
    ev.detail.xml = mission.map(|m| format!(r#"<marti><dest mission="{m}"/></marti>"#)).unwrap_or_default();
    ev
}

/// A mission created through OpenTAKServer's Marti API, with content added (by an OTS
/// client's CoT and through the API) and removed, is recorded by takgate with its creator
/// and guid, and federated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_made_on_opentakserver_is_recorded_with_creator_and_guid_and_federated() {
    let ots = Ots::get("a");
    let t = tag();
    let mut pki = common::certs::Pki::new("otsmission");
    let a = gateway(&engine_with_v2(&ots, &pki, "")).await;
    let b = gateway(&federate_of(a.local_addr("fed").unwrap(), &mut pki, "[missions]\nallow_federated_delete = true")).await;
    let (oscar, mission) = (format!("OTS-O-{t}"), format!("ops-{t}"));
    let mut o = ots.client(&pli(&oscar, &format!("OSCAR{t}"), 1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // the mission, as an OTS client's Data Sync makes it
    let api = takgate::transport::ots::api::Api::new(&ots.api(), &std::fs::read_to_string(ots.service_cert()).unwrap()).unwrap();
    assert!(ots.make_mission(&api, &mission, &oscar, "made on OTS").await, "OTS created the mission");
    let guid = ots.mission(&mission).await["data"][0]["guid"].as_str().unwrap().to_owned();
    // an item by CoT, one through the API, then that one removed
    let (i1, i2) = (format!("ITEM-1-{t}"), format!("ITEM-2-{t}"));
    o.send(&item(&i1, Some(&mission))).await;
    o.send(&item(&i2, None)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    api.add_uids(&mission, &oscar, std::slice::from_ref(&i2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    api.remove(&mission, &oscar, &i2, "").await.unwrap();
    let want = vec![("CREATE_MISSION".to_string(), String::new(), oscar.clone()), ("ADD_CONTENT".into(), i1.clone(), oscar.clone()), ("ADD_CONTENT".into(), i2.clone(), oscar.clone()), ("REMOVE_CONTENT".into(), i2.clone(), oscar.clone())];
    let on = |gw: &takgate::runtime::Gateway| gw.store().changes(&mission).unwrap().into_iter().map(|c| (c.change_type.as_str().to_string(), c.content_uid, c.creator_uid)).collect::<Vec<_>>();
    let ok = eventually(15.0, || on(&a) == want).await;
    assert!(ok, "takgate A recorded {:?}", on(&a));
    let (creator, meta) = a.store().mission_meta(&mission).unwrap().unwrap();
    assert_eq!((creator.as_str(), meta.guid.as_str(), meta.tool.as_str(), meta.description.as_str()), (oscar.as_str(), guid.as_str(), "public", "made on OTS"));
    let ok = eventually(15.0, || on(&b) == want).await;
    assert!(ok, "federated to B: {:?}", on(&b));
    assert!(b.store().changes(&mission).unwrap().iter().all(|c| c.is_federated));
    b.shutdown().await;
    a.shutdown().await;
}

/// The uids of OpenTAKServer's mission `name` (its Marti API), each as often as listed.
async fn ots_uids(ots: &Ots, name: &str) -> Vec<String> {
    let v = ots.mission(name).await;
    v["data"][0]["uids"].as_array().map(|a| a.iter().filter_map(|u| u["data"].as_str().or_else(|| u["uid"].as_str()).map(str::to_owned)).collect()).unwrap_or_default()
}

/// The seed scenario: OTS a ↔ takgate A ⇄ federation v2 ⇄ takgate B ↔ OTS b. A mission made
/// on OTS a, with a CoT item, appears on OTS b's Marti API with that item, exactly once;
/// position reports and chat cross; a direct message crosses only to its addressee; with
/// the v2 link cut, a change made on a arrives on b when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentakserver_to_opentakserver_over_takgate_federation() {
    let (ots_a, ots_b) = (Ots::get("a"), Ots::get("b"));
    let t = tag();
    let mut pki = common::certs::Pki::new("otsseed");
    let a = gateway(&engine_with_v2(&ots_a, &pki, "")).await;
    let b_cfg = federate_of(a.local_addr("fed").unwrap(), &mut pki, "").replace("[[link]]\nname = \"c\"", &format!("{}[[link]]\nname = \"c\"", ots_b.link("ots", "ots_poll_secs = 1")));
    let b = gateway(&b_cfg).await;
    let (oscar, papa, victor, whiskey) = (format!("OTS-O-{t}"), format!("OTS-P-{t}"), format!("OTS-V-{t}"), format!("OTS-W-{t}"));
    let (oscar_cs, victor_cs) = (format!("OSCAR{t}"), format!("VICTOR{t}"));
    let sas = [pli(&oscar, &oscar_cs, 1), pli(&papa, &format!("PAPA{t}"), 1), pli(&victor, &victor_cs, 1), pli(&whiskey, &format!("WHISKEY{t}"), 1)];
    let (mut o, mut p, mut v, mut w) = tokio::join!(ots_a.client(&sas[0]), ots_a.client(&sas[1]), ots_b.client(&sas[2]), ots_b.client(&sas[3]));
    // position reports cross (each side's users become clients of the other OTS)
    let mut saw_victor = false;
    for k in 2..40u32 {
        o.send(&pli(&oscar, &oscar_cs, k)).await;
        v.send(&pli(&victor, &victor_cs, k)).await;
        let on_v = v.drain(Duration::from_millis(700)).await;
        saw_victor |= o.drain(Duration::from_millis(100)).await.iter().any(|e| e.uid == victor);
        if on_v.iter().any(|e| e.uid == oscar) && saw_victor {
            break;
        }
        assert!(k < 39, "position reports did not cross: victor saw oscar: false or oscar saw victor: {saw_victor}");
    }
    // group chat crosses; a direct message only to its addressee
    o.send(&chat(&oscar, &oscar_cs, None, &format!("all from oscar {t}"))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    o.send(&chat(&oscar, &oscar_cs, Some((&victor, &victor_cs)), &format!("oscar to victor {t}"))).await;
    let (on_v, on_w, on_p) = (v.drain(Duration::from_millis(3000)).await, w.drain(Duration::from_millis(300)).await, p.drain(Duration::from_millis(300)).await);
    assert!(said(&on_v, &format!("all from oscar {t}")) && said(&on_w, &format!("all from oscar {t}")), "group chat crossed");
    assert!(said(&on_v, &format!("oscar to victor {t}")), "the direct message reached victor");
    assert!(!said(&on_w, &format!("oscar to victor {t}")) && !said(&on_p, &format!("oscar to victor {t}")), "a third party saw the direct message");
    // a mission made on OTS a, with an item, appears on OTS b with the item once
    let mission = format!("seed-{t}");
    let api_a = takgate::transport::ots::api::Api::new(&ots_a.api(), &std::fs::read_to_string(ots_a.service_cert()).unwrap()).unwrap();
    ots_a.make_mission(&api_a, &mission, &oscar, "seed").await;
    let i1 = format!("SEED-ITEM-1-{t}");
    o.send(&item(&i1, Some(&mission))).await;
    let mut uids = vec![];
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if ots_b.query(&format!("select name from missions where name = '{mission}'")).len() == 1 {
            uids = ots_uids(&ots_b, &mission).await;
            if !uids.is_empty() {
                break;
            }
        }
    }
    assert_eq!(uids, [i1.clone()], "OTS b's mission shows the item once");
    let creator = ots_b.query(&format!("select creator_uid from mission_changes where mission_name = '{mission}' and mission_uid = '{i1}'"));
    assert_eq!(creator, [oscar.clone()], "with its creator");
    // the link is cut; a change made meanwhile on OTS a arrives on OTS b when it returns
    let fed = b.control().link("fed").map(|l| l.name).expect("fed link");
    assert!(b.control().remove_link(&fed));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let i2 = format!("SEED-ITEM-2-{t}");
    o.send(&item(&i2, Some(&mission))).await;
    assert!(eventually(10.0, || a.store().has_item(&mission, &i2).unwrap()).await, "A recorded the item while the link was down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!ots_uids(&ots_b, &mission).await.contains(&i2), "nothing crossed a cut link");
    b.control().add_link(&takgate::config::Config::parse(&b_cfg).unwrap().links.into_iter().find(|l| l.name == "fed").unwrap()).await.unwrap();
    let mut uids = vec![];
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        uids = ots_uids(&ots_b, &mission).await;
        if uids.contains(&i2) {
            break;
        }
    }
    uids.sort();
    let mut want = vec![i1, i2];
    want.sort();
    assert_eq!(uids, want, "after the link returned, once each");
    b.shutdown().await;
    a.shutdown().await;
}

/// A file added to a mission on OpenTAKServer a (uploaded and added through its Marti API,
/// as its Data Sync clients do) reaches the same mission on OpenTAKServer b with its bytes:
/// takgate A fetches it from OTS a, sends it as `create resource` before the ADD_CONTENT of
/// its hash, takgate B stores it and hands it to OTS b (upload, then the contents PUT), so
/// OTS b's Data Sync lists it and serves the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_added_on_opentakserver_a_reaches_opentakserver_b_with_its_bytes() {
    let (ots_a, ots_b) = (Ots::get("a"), Ots::get("b"));
    let t = tag();
    let mut pki = common::certs::Pki::new("otsfiles");
    let a = gateway(&engine_with_v2(&ots_a, &pki, "")).await;
    let marti = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let bravo = pki.leaf("bravo", false);
    let marti_cfg = format!("[marti]\naddress = \"{marti}\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n", pki.path(&pki.server_cert), pki.path(&pki.server_key), pki.path(&pki.ca));
    let b_cfg = federate_of(a.local_addr("fed").unwrap(), &mut pki, &marti_cfg).replace("[[link]]\nname = \"c\"", &format!("{}[[link]]\nname = \"c\"", ots_b.link("ots", "ots_poll_secs = 1")));
    let b = gateway(&b_cfg).await;
    let oscar = format!("OTS-O-{t}");
    let _o = ots_a.client(&pli(&oscar, &format!("OSCAR{t}"), 1)).await;
    let mission = format!("files-{t}");
    let api_a = takgate::transport::ots::api::Api::new(&ots_a.api(), &std::fs::read_to_string(ots_a.service_cert()).unwrap()).unwrap();
    let api_b = takgate::transport::ots::api::Api::new(&ots_b.api(), &std::fs::read_to_string(ots_b.service_cert()).unwrap()).unwrap();
    ots_a.make_mission(&api_a, &mission, &oscar, "files").await;
    let bytes: Vec<u8> = format!("situation report {t}\n").repeat(2000).into_bytes();
    let name = format!("sitrep-{t}.txt");
    let hash = api_a.upload(&name, &oscar, "text/plain", bytes.clone()).await.unwrap();
    assert_eq!(hash, hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()), "OTS a holds the file by its SHA-256");
    api_a.add_hashes(&mission, &oscar, std::slice::from_ref(&hash)).await.unwrap();
    assert!(eventually(20.0, || a.store().has_hash(&mission, &hash).unwrap() && b.store().has_hash(&mission, &hash).unwrap()).await, "A recorded and B applied the file: {:?} / {:?}", a.store().changes(&mission), b.store().changes(&mission));
    assert_eq!(b.missions().files.read(&hash).unwrap().map(|(m, b)| (m.name, b)), Some((name.clone(), bytes.clone())), "takgate B holds the file under its name");
    let mut listed = vec![];
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if ots_b.query(&format!("select name from missions where name = '{mission}'")).len() == 1 {
            let v = ots_b.mission(&mission).await;
            listed = v["data"][0]["contents"].as_array().map(|c| c.iter().filter_map(|c| c["data"]["hash"].as_str().map(str::to_owned)).collect()).unwrap_or_default();
            if !listed.is_empty() {
                break;
            }
        }
    }
    assert_eq!(listed, [hash.clone()], "OTS b's Data Sync lists the file");
    assert_eq!(api_b.content(&hash).await.unwrap(), bytes, "and serves the same bytes");
    // A log entry a client of takgate B writes (B's Marti API) goes into OTS b's copy of the
    // mission (B's engine made it there, so it holds the token), once: OTS b announces it back,
    // B reads OTS b's log and knows its own entry. It reaches takgate A too; OTS a's mission was
    // made by an OTS user, and OTS 1.7.14 gives takgate no token to write into it.
    let note = format!("log from bravo {t}");
    let entry = serde_json::json!({"content": note, "creatorUid": "ANDROID-BRAVO", "missionNames": [mission], "dtg": CotTime::now().to_string(), "keywords": ["sitrep"]});
    let args = vec!["--port".to_string(), marti.port().to_string(), "--ca".into(), pki.path(&pki.ca), "--cert".into(), pki.path(&bravo.0), "--key".into(), pki.path(&bravo.1), serde_json::json!([{"method": "POST", "path": "/Marti/api/missions/logs/entries", "json": entry}]).to_string()];
    let r = common::py::run_script("marti_client.py", args, 60.0).await;
    assert_eq!(r.events.first().and_then(|e| e["status"].as_i64()), Some(201), "{:?} {}", r.events, r.stderr);
    let mut rows = vec![];
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rows = ots_b.query(&format!("select content from mission_logs where mission_name = '{mission}'"));
        if !rows.is_empty() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ots_b.query(&format!("select content from mission_logs where mission_name = '{mission}'")), [note.clone()], "OTS b has the entry once: {rows:?}");
    assert_eq!(b.store().logs(&mission).unwrap().len(), 1, "B did not take its own entry back from OTS b as a new one");
    assert!(eventually(10.0, || a.store().logs(&mission).unwrap().iter().any(|l| l.content == note)).await, "A has it");
    b.shutdown().await;
    a.shutdown().await;
}
