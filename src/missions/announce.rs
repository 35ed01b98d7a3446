//! Mission change announcements: the `t-x-m-c` events clients and OpenTAKServer send when a
//! mission changes (read into changes), and the ones takgate sends local clients when a
//! federate's change is applied (written as TAK Server and OTS write them).

use crate::cot::{fragment, CotEvent, CotTime};
use crate::store::{Change, ChangeType, FileMeta, MissionMeta};

/// The changes a `t-x-m-c` announcement carries.
pub fn parse_announcement(ev: &CotEvent) -> Vec<Change> {
    let d = &ev.detail.xml;
    let mission = fragment::find_attr(d, "mission", "name").unwrap_or_default();
    let mut out = vec![];
    let mut rest = d.as_str();
    while let Some(i) = rest.find("<MissionChange>") {
        let after = &rest[i + 15..];
        let end = after.find("</MissionChange>").unwrap_or(after.len());
        let body = &after[..end];
        let text = |tag: &str| -> String {
            let open = format!("<{tag}>");
            let close = format!("</{tag}>");
            body.find(&open).and_then(|a| body[a + open.len()..].find(&close).map(|b| fragment::unescape_text(&body[a + open.len()..a + open.len() + b]))).unwrap_or_default()
        };
        let name = Some(text("missionName")).filter(|n| !n.is_empty()).unwrap_or_else(|| mission.clone());
        let ts = CotTime::parse(&text("timestamp")).map(|t| t.0).unwrap_or(ev.time.0);
        // Types TAK has no ROL for are not recorded (never sent on as "CHANGE").
        if let (false, Ok(t)) = (name.is_empty(), text("type").parse::<ChangeType>()) {
            // A file's contentUid is the file's uid, not a CoT item's.
            let hash = xml_hash(body);
            let uid = if body.contains("<contentResource>") { String::new() } else { text("contentUid") };
            let meta = MissionMeta { guid: fragment::find_attr(d, "mission", "guid").unwrap_or_default(), tool: fragment::find_attr(d, "mission", "tool").unwrap_or_default(), ..Default::default() };
            out.push(Change { content_uid: uid, content_hash: hash, creator_uid: text("creatorUid"), ts_ms: ts, is_federated: text("isFederatedChange") == "true", mission_meta: Some(meta), ..Change::new(&name, t) });
        }
        rest = &after[end..];
    }
    out
}

/// The files (`contentResource`) a `t-x-m-c` announcement names, with what it says of them.
pub fn announced_files(ev: &CotEvent) -> Vec<FileMeta> {
    let mut out = vec![];
    let mut rest = ev.detail.xml.as_str();
    while let Some(i) = rest.find("<contentResource>") {
        let after = &rest[i + 17..];
        let end = after.find("</contentResource>").unwrap_or(after.len());
        let body = &after[..end];
        let text = |tag: &str| -> String {
            let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
            body.find(&open).and_then(|a| body[a + open.len()..].find(&close).map(|b| fragment::unescape_text(&body[a + open.len()..a + open.len() + b]))).unwrap_or_default()
        };
        let name = Some(text("filename")).filter(|n| !n.is_empty()).unwrap_or_else(|| text("name"));
        out.push(FileMeta { hash: text("hash"), name, mime: text("mimeType"), size: text("size").parse().unwrap_or(0), submitter: text("submitter"), creator_uid: text("creatorUid"), uid: text("uid"), ..Default::default() });
        rest = &after[end..];
    }
    out
}

fn xml_hash(body: &str) -> String {
    let Some(a) = body.find("<contentResource>") else { return String::new() };
    let r = &body[a..];
    r.find("<hash>").and_then(|h| r[h + 6..].find("</hash>").map(|e| r[h + 6..h + 6 + e].to_string())).unwrap_or_default()
}

/// The `t-x-m-c` event that announces `c` to local clients (as TAK Server and OTS write it).
pub fn announcement(c: &Change) -> CotEvent {
    announcement_of(c, None)
}

/// [`announcement`] of a change that adds or removes `file`: its `contentResource` as TAK
/// writes it (what Data Sync shows and downloads by hash).
pub fn announcement_of(c: &Change, file: Option<&FileMeta>) -> CotEvent {
    let now = CotTime::now();
    let mut ev = CotEvent::new(format!("takgate-mc-{}-{}", c.id, now.0), "t-x-m-c", "h-g-i-g-o", now, 20);
    ev.point.ce = 9_999_999.0;
    ev.point.le = 9_999_999.0;
    if matches!(c.change_type, ChangeType::AddUpdateLogEntry | ChangeType::DeleteLogEntry) {
        ev.cot_type = "t-x-m-c-l".into();
        ev.detail.xml = log_notice(c);
        return ev;
    }
    let mut d = Vec::new();
    let esc = |s: &str, d: &mut Vec<u8>| fragment::escape_attr(s, d);
    d.extend_from_slice(b"<mission type=\"");
    d.extend_from_slice(match c.change_type {
        ChangeType::CreateMission => "CREATE",
        ChangeType::DeleteMission => "DELETE",
        _ => "CHANGE",
    }.as_bytes());
    let meta = c.mission_meta.clone().unwrap_or_default();
    d.extend_from_slice(b"\" tool=\"");
    esc(if meta.tool.is_empty() { "public" } else { &meta.tool }, &mut d);
    d.extend_from_slice(b"\" name=\"");
    esc(&c.mission, &mut d);
    if !meta.guid.is_empty() {
        d.extend_from_slice(b"\" guid=\"");
        esc(&meta.guid, &mut d);
    }
    d.extend_from_slice(b"\" authorUid=\"");
    esc(&c.creator_uid, &mut d);
    d.extend_from_slice(b"\"><MissionChanges><MissionChange>");
    if !c.content_hash.is_empty() {
        let f = file.cloned().unwrap_or_else(|| FileMeta { hash: c.content_hash.clone(), ..Default::default() });
        content_resource(&f, &mut d);
    }
    let fed = if c.is_federated { "true" } else { "false" };
    elements(&[("contentUid", c.content_uid.as_str()), ("creatorUid", c.creator_uid.as_str()), ("isFederatedChange", fed), ("missionName", c.mission.as_str())], &mut d);
    let mut ts = Vec::new();
    CotTime(if c.ts_ms > 0 { c.ts_ms } else { now.0 }).write_to(&mut ts);
    d.extend_from_slice(b"<timestamp>");
    d.extend_from_slice(&ts);
    d.extend_from_slice(b"</timestamp><type>");
    d.extend_from_slice(c.change_type.as_str().as_bytes());
    d.extend_from_slice(b"</type></MissionChange></MissionChanges></mission>");
    ev.detail.xml = String::from_utf8_lossy(&d).into_owned();
    ev
}

/// `<tag>value</tag>` for each non-empty value.
fn elements(items: &[(&str, &str)], d: &mut Vec<u8>) {
    for (tag, val) in items {
        if val.is_empty() {
            continue;
        }
        d.extend_from_slice(format!("<{tag}>").as_bytes());
        fragment::escape_attr(val, d);
        d.extend_from_slice(format!("</{tag}>").as_bytes());
    }
}

/// A file's `contentResource`, as TAK's mission change notifications carry it.
fn content_resource(f: &FileMeta, d: &mut Vec<u8>) {
    let mut submitted = Vec::new();
    if f.submitted_ms > 0 {
        CotTime(f.submitted_ms).write_to(&mut submitted);
    }
    let (size, submitted) = (f.size.to_string(), String::from_utf8_lossy(&submitted).into_owned());
    d.extend_from_slice(b"<contentResource>");
    let items = [("creatorUid", f.creator_uid.as_str()), ("expiration", "-1"), ("filename", f.name.as_str()), ("hash", f.hash.as_str()), ("mimeType", f.mime.as_str()), ("name", f.name.as_str()), ("size", size.as_str()), ("submissionTime", submitted.as_str()), ("submitter", f.submitter.as_str()), ("tool", f.tool.as_str()), ("uid", f.uid.as_str())];
    elements(&items, d);
    d.extend_from_slice(b"</contentResource>");
}

/// A log change is a notice (OpenTAKServer's `t-x-m-c-l`): clients read the log from the
/// Marti API. It names the entry for takgate's own links (OpenTAKServer's engine).
fn log_notice(c: &Change) -> String {
    let meta = c.mission_meta.clone().unwrap_or_default();
    let e = fragment::escape_attr_string;
    let tool = if meta.tool.is_empty() { "public" } else { meta.tool.as_str() };
    format!(r#"<mission type="CHANGE" tool="{}" name="{}" authorUid="{}"/><takgateLogChange type="{}" entryUid="{}"/>"#, e(tool), e(&c.mission), e(&c.creator_uid), c.change_type.as_str(), e(&c.content_uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared corpus (TAKGATE_CORPUS, else ../shared/corpus beside the checkout); a
    /// missing corpus fails the test rather than skipping it.
    fn corpus_file(name: &str) -> Vec<u8> {
        let dir = std::env::var("TAKGATE_CORPUS").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus").into());
        let path = std::path::Path::new(&dir).join("xml").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("corpus file {}: {e} (set TAKGATE_CORPUS)", path.display()))
    }

    #[test]
    fn a_clients_announcement_is_read() {
        let ev = crate::cot::xml::decode(&corpus_file("takaware_t-x-m-c_add-content.xml")).unwrap();
        let c = parse_announcement(&ev);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].mission.as_str(), c[0].change_type, c[0].content_uid.as_str(), c[0].is_federated), ("FT-Test4", ChangeType::AddContent, "A4F2E606-A1AF-4FA3-AB97-211DA9DEF357", false));
        assert_eq!(c[0].ts_ms, 1_740_714_084_579);
    }

    #[test]
    fn announcements_are_written_like_tak_and_read_back() {
        let meta = MissionMeta { guid: "5f0c-guid".into(), tool: "public".into(), ..Default::default() };
        let c = Change { id: 3, content_uid: "u<1>".into(), creator_uid: "me".into(), ts_ms: 1_700_000_000_000, is_federated: true, mission_meta: Some(meta), ..Change::new("ops", ChangeType::AddContent) };
        let ev = announcement(&c);
        assert_eq!(ev.cot_type, "t-x-m-c");
        let back = parse_announcement(&crate::cot::xml::decode(&crate::cot::xml::encode(&ev)).unwrap());
        assert_eq!(back, vec![Change { id: 0, ..c.clone() }]);
        let file = FileMeta { hash: "ab".repeat(32), name: "map.kmz".into(), size: 9, submitted_ms: 1_700_000_000_000, ..Default::default() };
        let f = Change { content_uid: String::new(), content_hash: file.hash.clone(), ..c };
        let ev = announcement_of(&f, Some(&file));
        assert!(ev.detail.xml.contains("<contentResource><expiration>-1</expiration><filename>map.kmz</filename>"), "{}", ev.detail.xml);
        let back = parse_announcement(&crate::cot::xml::decode(&crate::cot::xml::encode(&ev)).unwrap());
        assert_eq!((back[0].content_hash.as_str(), back[0].content_uid.as_str()), (file.hash.as_str(), ""));
        let files = announced_files(&ev);
        assert_eq!((files[0].hash.as_str(), files[0].name.as_str(), files[0].size), (file.hash.as_str(), "map.kmz", 9));
    }

    #[test]
    fn opentakservers_file_change_names_the_hash_not_a_cot_item() {
        // OTS writes a file's own uid in contentUid beside its contentResource
        // (models/MissionChange.py generate_mission_change_cot).
        let mut ev = CotEvent::new("f", "t-x-m-c", "h-g-i-g-o", CotTime(0), 20);
        ev.detail.xml = "<mission type=\"ADD_CONTENT\" tool=\"public\" name=\"m\" guid=\"g-7\" authorUid=\"OTS-U\"><MissionChanges><MissionChange><contentResource><creatorUid>OTS-U</creatorUid><hash>abc123</hash><uid>file-uid-9</uid></contentResource><contentUid>file-uid-9</contentUid><missionGuid>g-7</missionGuid><creatorUid>OTS-U</creatorUid><isFederatedChange>false</isFederatedChange><missionName>m</missionName><timestamp>2026-12-02T00:00:00.000Z</timestamp><type>ADD_CONTENT</type></MissionChange></MissionChanges></mission>".into();
        let c = parse_announcement(&ev);
        assert_eq!((c[0].content_uid.as_str(), c[0].content_hash.as_str(), c[0].creator_uid.as_str()), ("", "abc123", "OTS-U"));
        assert_eq!(c[0].mission_meta.as_ref().map(|m| m.guid.as_str()), Some("g-7"));
    }

    #[test]
    fn change_types_tak_does_not_know_are_not_recorded() {
        let mut ev = CotEvent::new("x", "t-x-m-c", "h-g-i-g-o", CotTime(0), 20);
        ev.detail.xml = "<mission type=\"CHANGE\" name=\"m\"><MissionChanges><MissionChange><type>KEYWORD</type><missionName>m</missionName></MissionChange></MissionChanges></mission>".into();
        assert!(parse_announcement(&ev).is_empty());
    }
}
