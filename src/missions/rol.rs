//! Mission changes as ROL, the way TAK Server writes and reads them
//! (../shared/specs/tak-rol-missions.md §3): `create mission` with the whole
//! MissionMetadata (expiration -1, so a TAK Server's retention does not delete it), `delete
//! mission`, and `update mission` (MissionUpdateDetails) for ADD_CONTENT and
//! REMOVE_CONTENT, with the CoT item and its groups as payloads the way TAK's client role
//! injects them. Only the property names TAK's receiver accepts are written (its JSON
//! mapping refuses unknown ones); what is read is taken leniently.

use serde_json::{json, Value};

use crate::cot::CotTime;
use crate::federation::fig::{BinaryBlob, BinaryTypes, Rol};
use crate::store::{Change, ChangeType, FileMeta, LogEntry, MissionMeta};

/// Description TAK Server gives the CoT payload of an ADD_CONTENT ROL.
pub const COT_PAYLOAD: &str = "tak.server.cot.CotEventContainer";
/// Description TAK Server gives the groups payload beside it.
pub const GROUPS_PAYLOAD: &str = "com.bbn.marti.remote.util.GroupsPayload";

/// TAK's `MissionMetadata` for a mission we create on a federate.
fn mission_metadata(c: &Change) -> Value {
    let m = c.mission_meta.clone().unwrap_or_default();
    json!({
        "type": "MissionMetadata",
        "name": c.mission,
        "creatorUid": c.creator_uid,
        "description": m.description,
        "chatRoom": m.chat_room,
        "tool": if m.tool.is_empty() { "public" } else { m.tool.as_str() },
        "boundingPolygon": "",
        "bbox": "",
        "path": "",
        "classification": "",
        "parentMissionId": 0,
        "defaultRoleId": 2,
        // TAK stores a missing expiration as 0, and its retention service deletes missions
        // with 0 <= expiration <= now at its next start: -1 is "never".
        "expiration": -1,
        "passwordHash": "",
        "baseLayer": "",
        "inviteOnly": false,
        "guid": m.guid,
    })
}

/// TAK's GroupsPayload for `groups` (what the CoT payload of an ADD_CONTENT may be seen by).
pub fn groups_payload(groups: &[String], now: CotTime) -> Vec<u8> {
    let stamp = now.to_string();
    let day = stamp.get(..10).unwrap_or("1970-01-01");
    let at = format!("{}Z", stamp.get(..19).unwrap_or("1970-01-01T00:00:00"));
    let list: Vec<Value> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| json!({"name": g, "distinguishedName": "", "direction": "IN", "type": "SYSTEM", "bitpos": i, "active": true, "description": "", "created": day, "neighborCount": 0}))
        .collect();
    serde_json::to_vec(&json!({"schema": "groups.v1", "generated_at_utc": at, "groups": list})).unwrap_or_default()
}

/// The ROL TAK Server emits for a change; None for changes TAK has no ROL for.
/// `groups`: the federation groups the item is shared with (the GroupsPayload of an
/// ADD_CONTENT with its CoT).
pub fn to_rol(c: &Change, groups: &[String]) -> Option<Rol> {
    let mut payload = vec![];
    let (op, params) = match c.change_type {
        ChangeType::CreateMission => ("create mission", mission_metadata(c)),
        ChangeType::DeleteMission => ("delete mission", json!({"type": "MissionMetadata", "name": c.mission, "creatorUid": c.creator_uid})),
        ChangeType::AddContent | ChangeType::RemoveContent => {
            let content = json!({
                "hashes": if c.content_hash.is_empty() { vec![] } else { vec![c.content_hash.clone()] },
                "uids": if c.content_uid.is_empty() { vec![] } else { vec![c.content_uid.clone()] },
            });
            if !c.cot_xml.is_empty() && c.change_type == ChangeType::AddContent {
                payload.push(BinaryBlob { r#type: BinaryTypes::Other as i32, data: c.cot_xml.as_bytes().to_vec(), description: COT_PAYLOAD.into(), ..Default::default() });
                let groups = if groups.is_empty() { vec!["__ANON__".to_string()] } else { groups.to_vec() };
                payload.push(BinaryBlob { r#type: BinaryTypes::Other as i32, data: groups_payload(&groups, CotTime::now()), description: GROUPS_PAYLOAD.into(), ..Default::default() });
            }
            let meta = c.mission_meta.clone().unwrap_or_default();
            let mut p = json!({
                "content": content,
                "creatorUid": c.creator_uid,
                "changeType": c.change_type.as_str(),
                "missionName": c.mission,
                "missionCreatorUid": "",
                "missionChatRoom": meta.chat_room,
                "missionTool": if meta.tool.is_empty() { "public" } else { meta.tool.as_str() },
                "missionDescription": meta.description,
            });
            if c.ts_ms > 0 {
                p["date"] = json!(c.ts_ms);
            }
            ("update mission", p)
        }
        ChangeType::AddUpdateLogEntry | ChangeType::DeleteLogEntry => {
            let e = c.log_entry.clone().unwrap_or_else(|| LogEntry { entry_uid: c.content_uid.clone(), mission: c.mission.clone(), creator_uid: c.creator_uid.clone(), ..Default::default() });
            ("update mission", json!({"id": e.entry_uid, "logEntry": log_entry_json(&e), "created": c.ts_ms, "missionUpdateDetailsForLogEntryType": c.change_type.as_str()}))
        }
        ChangeType::Relayed => return Some(Rol { program: c.cot_xml.clone(), ..Default::default() }),
        ChangeType::CreateDataFeed | ChangeType::DeleteDataFeed => return None,
    };
    Some(Rol { program: format!("{op}\n{params};"), payload, ..Default::default() })
}

/// TAK's `LogEntry` JSON (its three dates as `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'` strings).
pub fn log_entry_json(e: &LogEntry) -> Value {
    let t = |ms: i64| CotTime(ms).to_string();
    json!({
        "id": e.entry_uid, "content": e.content, "creatorUid": e.creator_uid, "missionNames": [e.mission],
        "servertime": t(e.servertime_ms), "entryUid": e.entry_uid, "dtg": t(e.dtg_ms), "created": t(e.created_ms),
        "contentHashes": e.content_hashes, "keywords": e.keywords,
    })
}

/// A `LogEntry` as TAK (or a client, or OpenTAKServer) writes it; `mission` from its first
/// mission name, as TAK routes it.
pub fn parse_log_entry(le: &Value) -> LogEntry {
    let s = |k: &str| le.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let list = |k: &str| -> Vec<String> { le.get(k).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default() };
    let uid = Some(s("entryUid")).filter(|u| !u.is_empty()).unwrap_or_else(|| s("id"));
    LogEntry {
        entry_uid: uid,
        mission: list("missionNames").into_iter().next().unwrap_or_default(),
        content: s("content"),
        creator_uid: s("creatorUid"),
        dtg_ms: date(le.get("dtg")),
        created_ms: date(le.get("created")),
        servertime_ms: date(le.get("servertime")),
        content_hashes: list("contentHashes"),
        keywords: list("keywords"),
    }
}

/// A MissionUpdateDetailsForLogEntry read back as a change.
fn log_change(v: &Value) -> Option<Change> {
    let t = match v.get("missionUpdateDetailsForLogEntryType").and_then(Value::as_str)? {
        "ADD_UPDATE_LOG_ENTRY" => ChangeType::AddUpdateLogEntry,
        "DELETE_LOG_ENTRY" => ChangeType::DeleteLogEntry,
        _ => return None,
    };
    let mut e = parse_log_entry(v.get("logEntry").unwrap_or(&Value::Null));
    if e.entry_uid.is_empty() {
        e.entry_uid = v.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    }
    Some(Change { content_uid: e.entry_uid.clone(), creator_uid: e.creator_uid.clone(), ts_ms: date(v.get("created")), ..Change::new(&e.mission, t) }).map(|c| Change { log_entry: Some(e), ..c })
}

/// The changes a ROL program describes: one per content item (TAK sends whole lists);
/// empty for a program takgate does not apply. Dates the sender left out are 0 here (the
/// receiver stamps its own time).
pub fn parse_rol(rol: &Rol) -> Result<Vec<Change>, String> {
    let p = rol.program.trim();
    let (head, body) = match p.find(['\n', '{']) {
        Some(i) => (p[..i].trim(), p[i..].trim()),
        None => return Err(format!("no parameters in {:?}", truncate(p))),
    };
    let body = body.strip_suffix(';').unwrap_or(body).trim();
    let words: Vec<&str> = head.split_whitespace().collect();
    let [op, resource] = words[..] else { return Err(format!("statement {head:?} is not `<operation> <resource>`")) };
    if resource != "mission" && resource != "data_feed" {
        return Ok(vec![]);
    }
    let v: Value = serde_json::from_str(body).map_err(|e| format!("parameters of {head:?}: {e}"))?;
    if let Some(c) = kept_as_received(op, resource, &v) {
        return Ok(vec![c]);
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let meta = |name_key: &str| MissionMeta { guid: s("guid"), tool: s(name_key), description: s(if name_key == "tool" { "description" } else { "missionDescription" }), chat_room: s(if name_key == "tool" { "chatRoom" } else { "missionChatRoom" }) };
    let changes = match op {
        "create" | "delete" => {
            let t = if op == "create" { ChangeType::CreateMission } else { ChangeType::DeleteMission };
            vec![Change { creator_uid: s("creatorUid"), mission_meta: Some(meta("tool")), ..Change::new(&s("name"), t) }]
        }
        "update" if v.get("missionUpdateDetailsForLogEntryType").is_some() => log_change(&v).into_iter().collect(),
        "update" => {
            let t = match s("changeType").as_str() {
                "ADD_CONTENT" => ChangeType::AddContent,
                "REMOVE_CONTENT" => ChangeType::RemoveContent,
                _ => return Ok(vec![]),
            };
            let list = |k: &str| -> Vec<String> { v.get("content").and_then(|c| c.get(k)).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default() };
            let cot = rol.payload.iter().find(|b| b.description == COT_PAYLOAD).map(|b| String::from_utf8_lossy(&b.data).into_owned()).unwrap_or_default();
            let base = Change { creator_uid: s("creatorUid"), ts_ms: date(v.get("date")), mission_meta: Some(meta("missionTool")), ..Change::new(&s("missionName"), t) };
            let uids = list("uids").into_iter().map(|u| Change { content_uid: u, cot_xml: cot.clone(), ..base.clone() });
            let hashes = list("hashes").into_iter().map(|h| Change { content_hash: h, ..base.clone() });
            uids.chain(hashes).collect()
        }
        _ => return Ok(vec![]),
    };
    if changes.first().is_some_and(|c| c.mission.is_empty() && c.change_type != ChangeType::Relayed) {
        return Err(format!("{head:?} names no mission"));
    }
    Ok(changes)
}

/// Map layers, mission layers, external data (an `update mission` with one of their types).
const LAYER_TYPES: &[&str] = &["ADD_MAPLAYER_TO_MISSION", "UPDATE_MAPLAYER", "REMOVE_MAPLAYER_FROM_MISSION", "ADD_MISSION_LAYER_TO_MISSION", "REMOVE_MISSION_LAYER_FROM_MISSION"];

/// A ROL takgate keeps and relays as it came (mission hierarchy, map and mission layers,
/// external data, data feeds): a [`ChangeType::Relayed`] change whose program is the
/// statement re-written from its parsed JSON (so it is well formed), its content uid the
/// program's hash (the same program is kept once), its date 0.
fn kept_as_received(op: &str, resource: &str, v: &Value) -> Option<Change> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let kept = match (op, resource) {
        ("create" | "update" | "delete", "data_feed") => v.get("type").and_then(Value::as_str) == Some("DataFeedMetadata"),
        ("assign", "mission") => v.get("missionName").is_some() && v.get("parentMissionName").is_some(),
        ("update", "mission") => v.get("missionUpdateDetailsForExternalDataType").is_some() || v.get("type").and_then(Value::as_str).is_some_and(|t| LAYER_TYPES.contains(&t)),
        _ => false,
    };
    if !kept {
        return None;
    }
    let program = format!("{op} {resource}\n{v};");
    let id = super::files::sha256_hex(program.as_bytes());
    Some(Change { content_uid: format!("rol-{}", &id[..32]), creator_uid: s("creatorUid"), cot_xml: program, ..Change::new(&s("missionName"), ChangeType::Relayed) })
}

/// The `<operation> <resource>` of a ROL program (lowercase as TAK writes them).
pub fn statement(rol: &Rol) -> Option<(&str, &str)> {
    let p = rol.program.trim_start();
    let head = &p[..p.find(['\n', '{']).unwrap_or(p.len())];
    let mut w = head.split_whitespace();
    match (w.next(), w.next(), w.next()) {
        (Some(op), Some(res), None) => Some((op, res)),
        _ => None,
    }
}

/// The JSON parameters of a one-statement program.
fn parameters(rol: &Rol) -> Result<Value, String> {
    let p = rol.program.trim();
    let i = p.find('{').ok_or_else(|| format!("no parameters in {:?}", truncate(p)))?;
    let body = p[i..].strip_suffix(';').unwrap_or(&p[i..]).trim();
    let v: Value = serde_json::from_str(body).map_err(|e| format!("parameters: {e}"))?;
    if v.is_object() { Ok(v) } else { Err("parameters are not an object".into()) }
}

/// TAK's `submissionTime` ("yyyy-MM-dd'T'HH:mm:ss.S'Z'": milliseconds unpadded).
fn submission_time(ms: i64) -> String {
    let t = CotTime(ms).to_string();
    format!("{}.{}Z", t.get(..19).unwrap_or("1970-01-01T00:00:00"), ms.rem_euclid(1000))
}

/// `create resource` as TAK's `MissionActionROLConverter.getInsertResourceROL` writes it:
/// the Resource JSON (only the properties TAK's model has, nulls left out) and, when the
/// bytes go along, `payload[0]` with only `data` set.
pub fn resource_rol(f: &FileMeta, bytes: Option<Vec<u8>>) -> Rol {
    let name = if f.name.is_empty() { f.hash.as_str() } else { f.name.as_str() };
    let p = json!({
        "filename": name,
        "keywords": f.keywords,
        "mimeType": if f.mime.is_empty() { "application/octet-stream" } else { f.mime.as_str() },
        "name": name,
        "submissionTime": submission_time(f.submitted_ms),
        "submitter": f.submitter,
        "uid": if f.uid.is_empty() { f.hash.as_str() } else { f.uid.as_str() },
        "hash": f.hash,
        "size": f.size,
        "creatorUid": f.creator_uid,
        "tool": if f.tool.is_empty() { "public" } else { f.tool.as_str() },
    });
    let payload = bytes.map(|data| vec![BinaryBlob { data, ..Default::default() }]).unwrap_or_default();
    Rol { program: format!("create resource\n{p};"), payload, ..Default::default() }
}

/// A `create resource` read back: the file's metadata (hash as the sender claims it) and
/// its bytes (None: sent without content, as TAK does for files over its limit).
pub fn parse_resource(rol: &Rol) -> Result<(FileMeta, Option<&[u8]>), String> {
    let v = parameters(rol)?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let name = Some(s("filename")).filter(|n| !n.is_empty()).unwrap_or_else(|| s("name"));
    let keywords = v.get("keywords").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default();
    let mime = Some(s("mimeType")).filter(|m| !m.is_empty()).unwrap_or_else(|| s("contentType"));
    let meta = FileMeta { hash: s("hash"), name, mime, size: v.get("size").and_then(Value::as_i64).unwrap_or(0), submitter: s("submitter"), creator_uid: s("creatorUid"), uid: s("uid"), keywords, tool: s("tool"), submitted_ms: date(v.get("submissionTime")), origin: String::new() };
    Ok((meta, rol.payload.first().map(|b| b.data.as_slice()).filter(|d| !d.is_empty())))
}

/// A data package sent to contacts (TAK's `announce package`, from a `b-f-t-r`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Package {
    pub sha256: String,
    pub name: String,
    pub filename: String,
    pub size: i64,
    pub sender_callsign: String,
    pub ts_stored_ms: i64,
    /// The explicit destinations (`marti/dest`).
    pub callsigns: Vec<String>,
    pub uids: Vec<String>,
}

/// `announce package` as `GroupFederationUtil.generatePackageAnnounceROL` writes it: the
/// destinations as a JSON string in `senderUid`, `senderUrl` empty.
pub fn package_rol(p: &Package) -> Rol {
    let dest = json!({"callsigns": p.callsigns, "uids": p.uids}).to_string();
    let v = json!({
        "type": "ResourceDetails",
        "sha256": p.sha256,
        "senderUid": dest,
        "name": p.name,
        "filename": p.filename,
        "senderUrl": "",
        "tsStored": p.ts_stored_ms,
        "sizeInBytes": p.size,
        "senderCallsign": p.sender_callsign,
    });
    Rol { program: format!("announce package\n{v};"), ..Default::default() }
}

pub fn parse_package(rol: &Rol) -> Result<Package, String> {
    let v = parameters(rol)?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let sha256 = normalize(&s("sha256")).ok_or_else(|| format!("announce package: sha256 {:?} is not a SHA-256", s("sha256")))?;
    let dest: Value = serde_json::from_str(&s("senderUid")).unwrap_or(Value::Null);
    let list = |k: &str| dest.get(k).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default();
    let size = v.get("sizeInBytes").and_then(Value::as_i64).unwrap_or(0);
    Ok(Package { sha256, name: s("name"), filename: s("filename"), size, sender_callsign: s("senderCallsign"), ts_stored_ms: date(v.get("tsStored")), callsigns: list("callsigns"), uids: list("uids") })
}

fn normalize(h: &str) -> Option<String> {
    super::files::normalize_hash(h)
}

/// TAK's date: epoch milliseconds, or a CoT-style time string; 0 when absent or unreadable.
fn date(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(t)) => CotTime::parse(t).map(|t| t.0).unwrap_or(0),
        _ => 0,
    }
}

fn truncate(s: &str) -> &str {
    &s[..s.char_indices().nth(80).map(|(i, _)| i).unwrap_or(s.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(t: ChangeType) -> Change {
        let content = matches!(t, ChangeType::AddContent | ChangeType::RemoveContent);
        Change {
            content_uid: if content { "ANDROID-1".into() } else { String::new() },
            creator_uid: "me".into(),
            ts_ms: if content { 1_700_000_000_123 } else { 0 },
            cot_xml: if t == ChangeType::AddContent { "<event/>".into() } else { String::new() },
            mission_meta: Some(MissionMeta { guid: if content { String::new() } else { "guid-1".into() }, tool: "public".into(), ..Default::default() }),
            ..Change::new("ops \"1\"", t)
        }
    }

    #[test]
    fn rol_round_trips_every_emitted_change() {
        for t in [ChangeType::CreateMission, ChangeType::DeleteMission, ChangeType::AddContent, ChangeType::RemoveContent] {
            let c = change(t);
            let rol = to_rol(&c, &[]).unwrap();
            assert!(rol.program.ends_with(';'), "{}", rol.program);
            let mut back = parse_rol(&rol).unwrap();
            assert_eq!(back.len(), 1);
            let b = back.remove(0);
            assert_eq!((b.mission, b.change_type, b.content_uid, b.creator_uid, b.ts_ms, b.cot_xml), (c.mission.clone(), c.change_type, c.content_uid.clone(), c.creator_uid.clone(), c.ts_ms, c.cot_xml.clone()), "{}", rol.program);
        }
        let add = to_rol(&change(ChangeType::AddContent), &["Cyan".into()]).unwrap();
        assert!(add.program.starts_with("update mission\n{"));
        assert_eq!((add.payload[0].description.as_str(), add.payload[1].description.as_str()), (COT_PAYLOAD, GROUPS_PAYLOAD));
        let groups: Value = serde_json::from_slice(&add.payload[1].data).unwrap();
        assert_eq!((groups["schema"].as_str(), groups["groups"][0]["name"].as_str(), groups["groups"][0]["direction"].as_str()), (Some("groups.v1"), Some("Cyan"), Some("IN")));
    }

    #[test]
    fn created_missions_never_expire_and_carry_their_metadata() {
        let rol = to_rol(&change(ChangeType::CreateMission), &[]).unwrap();
        let v: Value = serde_json::from_str(rol.program.strip_prefix("create mission\n").unwrap().strip_suffix(';').unwrap()).unwrap();
        assert_eq!((v["expiration"].as_i64(), v["guid"].as_str(), v["tool"].as_str(), v["inviteOnly"].as_bool()), (Some(-1), Some("guid-1"), Some("public"), Some(false)));
    }

    #[test]
    fn lists_become_one_change_per_item_and_missing_dates_stay_zero() {
        let rol = Rol { program: r#"update mission
{"content":{"uids":["a","b"],"hashes":["h1"]},"changeType":"ADD_CONTENT","missionName":"m","creatorUid":"c"};"#.into(), ..Default::default() };
        let c = parse_rol(&rol).unwrap();
        assert_eq!(c.iter().map(|c| (c.content_uid.as_str(), c.content_hash.as_str(), c.ts_ms)).collect::<Vec<_>>(), [("a", "", 0), ("b", "", 0), ("", "h1", 0)]);
    }

    #[test]
    fn log_entries_round_trip_in_takes_shape() {
        let e = LogEntry { entry_uid: "e-1".into(), mission: "ops".into(), content: "contact at 0600".into(), creator_uid: "ANDROID-1".into(), dtg_ms: 1_700_000_000_000, created_ms: 1_700_000_000_100, servertime_ms: 1_700_000_000_200, content_hashes: vec![], keywords: vec!["sitrep".into()] };
        for t in [ChangeType::AddUpdateLogEntry, ChangeType::DeleteLogEntry] {
            let c = Change { content_uid: "e-1".into(), creator_uid: "ANDROID-1".into(), ts_ms: 1_700_000_000_300, log_entry: Some(e.clone()), ..Change::new("ops", t) };
            let rol = to_rol(&c, &[]).unwrap();
            assert!(rol.program.starts_with("update mission\n{") && rol.program.contains(&format!("\"missionUpdateDetailsForLogEntryType\":\"{t}\"")), "{}", rol.program);
            assert!(rol.program.contains("\"dtg\":\"2023-11-14T22:13:20.000Z\""), "{}", rol.program);
            let back = parse_rol(&rol).unwrap();
            assert_eq!(back, vec![Change { id: 0, ..c }]);
        }
    }

    #[test]
    fn what_takgate_does_not_model_is_kept_and_relayed_as_it_came() {
        let r = |p: &str| parse_rol(&Rol { program: p.into(), ..Default::default() }).unwrap();
        let assign = r("assign mission\n{\"missionName\":\"child\",\"parentMissionName\":\"ops\"};");
        assert_eq!((assign[0].change_type, assign[0].mission.as_str(), assign[0].ts_ms), (ChangeType::Relayed, "child", 0));
        let back = to_rol(&assign[0], &[]).unwrap();
        assert_eq!(back.program, "assign mission\n{\"missionName\":\"child\",\"parentMissionName\":\"ops\"};");
        let feed = r("create data_feed\n{\"type\":\"DataFeedMetadata\",\"missionName\":\"\",\"dataFeedUid\":\"f1\",\"feedName\":\"ais\"};");
        assert_eq!((feed[0].change_type, feed[0].mission.as_str()), (ChangeType::Relayed, ""), "a feed of no mission");
        let layer = r("update mission\n{\"missionName\":\"ops\",\"type\":\"ADD_MAPLAYER_TO_MISSION\",\"creatorUid\":\"c\"};");
        assert_eq!(layer[0].creator_uid, "c");
        assert_ne!(layer[0].content_uid, assign[0].content_uid);
        assert_eq!(r("assign mission\n{\"missionName\":\"ops\",\"missionExpiration\":5};"), vec![], "expiration: TAK itself cannot read it");
    }

    #[test]
    fn resources_and_packages_round_trip() {
        let f = FileMeta { hash: "ab".repeat(32), name: "map.kmz".into(), mime: "application/vnd.google-earth.kmz".into(), size: 3, submitter: "alice".into(), creator_uid: "ANDROID-1".into(), keywords: vec!["missionpackage".into()], submitted_ms: 1_712_318_400_005, ..Default::default() };
        let rol = resource_rol(&f, Some(b"abc".to_vec()));
        assert!(rol.program.starts_with("create resource\n{") && rol.program.ends_with("};"), "{}", rol.program);
        assert_eq!(statement(&rol), Some(("create", "resource")));
        assert!(rol.program.contains("\"submissionTime\":\"2024-04-05T12:00:00.5Z\""), "{}", rol.program);
        assert_eq!((rol.payload[0].r#type, rol.payload[0].description.as_str()), (0, ""), "only data set");
        let (back, bytes) = parse_resource(&rol).unwrap();
        assert_eq!((back.hash, back.name, back.mime, back.size, back.keywords, bytes), (f.hash.clone(), f.name.clone(), f.mime.clone(), 3, f.keywords.clone(), Some(b"abc".as_slice())));
        assert_eq!(parse_resource(&resource_rol(&f, None)).unwrap().1, None);
        let p = Package { sha256: "cd".repeat(32), name: "pkg.zip".into(), filename: "pkg.zip".into(), size: 2048, sender_callsign: "ALPHA".into(), ts_stored_ms: 7, callsigns: vec!["BRAVO".into()], uids: vec![] };
        let rol = package_rol(&p);
        assert!(rol.program.contains(r#""senderUid":"{\"callsigns\":[\"BRAVO\"],\"uids\":[]}""#), "{}", rol.program);
        assert_eq!(parse_package(&rol).unwrap(), p);
        assert!(parse_package(&Rol { program: "announce package\n{\"sha256\":\"../x\"};".into(), ..Default::default() }).is_err());
    }

    #[test]
    fn rol_errors_and_other_resources() {
        let r = |p: &str| parse_rol(&Rol { program: p.into(), ..Default::default() });
        assert_eq!(r("create federate\n{\"name\":\"x\"};"), Ok(vec![]));
        assert_eq!(r("create data_feed\n{\"type\":\"DataFeedMetadata\"};").unwrap()[0].change_type, ChangeType::Relayed);
        assert_eq!(r("update mission\n{\"changeType\":\"LOG\",\"missionName\":\"m\"};"), Ok(vec![]));
        assert!(r("update mission").is_err());
        assert!(r("update mission\n{not json};").unwrap_err().contains("parameters"));
        assert!(r("update mission\n{\"changeType\":\"ADD_CONTENT\",\"content\":{\"uids\":[\"u\"]}};").unwrap_err().contains("names no mission"));
        // TAK's date may be a string too
        let c = r("update mission {\"changeType\":\"ADD_CONTENT\",\"missionName\":\"m\",\"content\":{\"uids\":[\"u\"]},\"date\":\"2025-02-28T03:41:24.579Z\"};").unwrap();
        assert_eq!((c[0].content_uid.as_str(), c[0].ts_ms), ("u", 1_740_714_084_579));
    }
}
