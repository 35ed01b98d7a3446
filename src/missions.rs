//! Missions: mission changes recorded once in the store, queued durably for every federate
//! that should get them, sent over federation v2 as ROL the way TAK Server emits them, and
//! applied (then announced to local links as `t-x-m-c`) when a federate sends them.
//!
//! Local changes come from the router's mission traffic: CoT addressed to a mission
//! (`<marti><dest mission=…>`: ADD_CONTENT the first time its uid joins the mission),
//! `t-x-m-c` change announcements, `t-x-m-n` (CREATE_MISSION) and `t-x-m-d`
//! (DELETE_MISSION) seen on any link, the RabbitMQ bridge included. Changes from federates
//! arrive as ROL only (their CoT is not re-recorded) and are never sent back out.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::cot::{fragment, CotEvent, CotTime};
use crate::federation::fig::{BinaryBlob, BinaryTypes, Rol};
use crate::router::pattern::PatternList;
use crate::router::{LinkCounters, LinkId, Message, PeerPolicy, RouterHandle};
use crate::store::{now_ms, Change, Server, Store};

/// Description TAK Server gives the CoT payload of an ADD_CONTENT ROL.
pub const COT_PAYLOAD: &str = "tak.server.cot.CotEventContainer";

/// A ROL handed to a federate's outbound stream, with what to do once it is written.
pub struct OutRol {
    pub rol: Rol,
    pub written: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for OutRol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutRol").field("program", &self.rol.program).finish()
    }
}

/// Queue items written to one federate session and not yet known to have arrived.
///
/// Written is not delivered: bytes in our buffers or on a lossy link die with the
/// connection. An item counts as delivered only when a later health check round trip on
/// the same connection completed: as client, a SERVING answer to a check sent after the
/// item was written (HTTP/2 frames share one TCP stream, so the server had the item
/// first); as server, the next check after our answer to one sent after the item (the
/// client checks one at a time, so it had our answer, and the item before it). What a
/// session leaves unconfirmed is sent again by the next one; receivers apply a change
/// once (the store's unique key), so a repeat is harmless.
pub struct Receipts {
    store: Arc<Store>,
    written: std::sync::Mutex<std::collections::VecDeque<(i64, std::time::Instant)>>,
}

impl Receipts {
    pub fn new(store: Arc<Store>) -> Arc<Receipts> {
        Arc::new(Receipts { store, written: Default::default() })
    }

    fn written(&self, queue_id: i64) {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).push_back((queue_id, std::time::Instant::now()));
    }

    /// Marks delivered what was written before `t`; returns how many.
    pub fn confirm_before(&self, t: std::time::Instant) -> usize {
        let mut done = Vec::new();
        {
            let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
            while w.front().is_some_and(|(_, at)| *at < t) {
                done.extend(w.pop_front().map(|(q, _)| q));
            }
        }
        for q in &done {
            if let Err(e) = self.store.mark_delivered(*q) {
                tracing::error!("mission queue: {e}");
            }
        }
        done.len()
    }

    /// Written and not confirmed.
    pub fn unconfirmed(&self) -> usize {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

pub struct Missions {
    pub store: Arc<Store>,
    router: RouterHandle,
    /// Our router id (announcements we route are not recorded again).
    id: LinkId,
    notify: Notify,
    /// A new federate gets the local changes of this window replayed.
    pub replay_window: Duration,
    /// Apply DELETE_MISSION and REMOVE_CONTENT from federates (TAK: allowFederatedDelete).
    pub allow_federated_delete: bool,
    pub counters: Arc<LinkCounters>,
}

impl std::fmt::Debug for Missions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Missions").field("store", &self.store.path).finish()
    }
}

/// What a received ROL did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Recorded (and announced locally).
    Recorded(Change),
    /// Already recorded: nothing done.
    Duplicate,
    /// Understood but not applied (the reason).
    Ignored(String),
}

impl Missions {
    /// Starts the mission service: taps the router's mission traffic.
    pub async fn start(store: Arc<Store>, router: RouterHandle, replay_window: Duration, allow_federated_delete: bool, cancel: CancellationToken) -> Arc<Missions> {
        let id = router.next_id();
        let m = Arc::new(Missions { store, router: router.clone(), id, notify: Notify::new(), replay_window, allow_federated_delete, counters: Arc::default() });
        let (tx, mut rx) = mpsc::channel::<Arc<Message>>(65_536);
        router.set_mission_tap(tx, id).await;
        let me = m.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = rx.recv() => match m { Some(m) => m, None => return },
                };
                if let Err(e) = me.intake(&msg) {
                    tracing::error!(uid = %msg.event.uid, "mission change not recorded: {e}");
                }
            }
        });
        m
    }

    /// Records the local mission changes an event carries and queues them.
    pub fn intake(&self, m: &Message) -> Result<(), crate::store::StoreError> {
        if m.from_federate {
            return Ok(());
        }
        let ev = &m.event;
        let t = ev.cot_type.as_str();
        let mut changes = vec![];
        if t.starts_with("t-x-m-c") && !t.starts_with("t-x-m-c-l") {
            changes = parse_announcement(ev);
        } else if t == "t-x-m-n" || t == "t-x-m-d" {
            let name = fragment::find_attr(&ev.detail.xml, "mission", "name").unwrap_or_default();
            if !name.is_empty() {
                let guid = fragment::find_attr(&ev.detail.xml, "mission", "guid").unwrap_or_default();
                let creator = fragment::find_attr(&ev.detail.xml, "mission", "authorUid").unwrap_or_default();
                let ct = if t == "t-x-m-n" { "CREATE_MISSION" } else { "DELETE_MISSION" };
                changes.push(Change { mission: name, change_type: ct.into(), content_hash: guid, creator_uid: creator, ts_ms: ev.time.0, ..Default::default() });
            }
        } else if !t.starts_with("t-x-m") {
            for name in &m.facts.missions {
                self.store.ensure_mission(name, "", "", "public")?;
                if self.store.has_item(name, &ev.uid)? {
                    continue;
                }
                let cot = String::from_utf8_lossy(m.encoded(crate::codec::WireFormat::Xml)).into_owned();
                let c = Change { mission: name.clone(), change_type: "ADD_CONTENT".into(), content_uid: ev.uid.clone(), creator_uid: ev.uid.clone(), ts_ms: ev.time.0, cot_xml: cot, ..Default::default() };
                // the item and its change together, or neither
                self.record_local_with(Some((name, &ev.uid)), c)?;
            }
            return Ok(());
        }
        for c in changes {
            self.apply_to_missions(&c)?;
            self.record_local(c)?;
        }
        Ok(())
    }

    /// Keeps missions and items in step with a change.
    fn apply_to_missions(&self, c: &Change) -> Result<(), crate::store::StoreError> {
        match c.change_type.as_str() {
            "CREATE_MISSION" => {
                self.store.ensure_mission(&c.mission, &c.creator_uid, &c.content_hash, "public")?;
            }
            "DELETE_MISSION" => self.store.mark_mission_deleted(&c.mission)?,
            "ADD_CONTENT" => {
                self.store.ensure_mission(&c.mission, "", "", "public")?;
                if !c.content_uid.is_empty() {
                    self.store.add_item(&c.mission, &c.content_uid)?;
                }
            }
            "REMOVE_CONTENT" if !c.content_uid.is_empty() => {
                self.store.remove_item(&c.mission, &c.content_uid)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Records a change once; a new local change is queued for every federate that should
    /// get it.
    fn record_local(&self, c: Change) -> Result<Option<i64>, crate::store::StoreError> {
        self.record_local_with(None, c)
    }

    /// Records a local change and queues it for the servers that want it, in one
    /// transaction (with the new mission item, when given).
    fn record_local_with(&self, item: Option<(&str, &str)>, c: Change) -> Result<Option<i64>, crate::store::StoreError> {
        let servers: Vec<i64> = if c.is_federated { vec![] } else { self.store.servers()?.iter().filter(|s| wants(s, &c.mission)).map(|s| s.id).collect() };
        let Some(id) = self.store.record_change_queued(item, &c, &servers)? else { return Ok(None) };
        LinkCounters::inc(&self.counters.events_in);
        if !c.is_federated {
            tracing::debug!(mission = %c.mission, change = %c.change_type, uid = %c.content_uid, queued = servers.len(), "mission change recorded");
            self.notify.notify_waiters();
        }
        Ok(Some(id))
    }

    /// Applies a ROL a federate sent: recorded once (as a federated change, never sent
    /// back out) and announced to local links as `t-x-m-c`.
    pub async fn apply_rol(&self, federate: &str, rol: &Rol) -> Applied {
        let c = match parse_rol(rol) {
            Ok(Some(c)) => c,
            Ok(None) => return Applied::Ignored(format!("{} not handled", rol.program.lines().next().unwrap_or(""))),
            Err(e) => {
                let n = self.counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::transport::stream::log_bad_input(n, "missions", federate, &format!("bad ROL: {e}"));
                return Applied::Ignored(e);
            }
        };
        let c = Change { is_federated: true, origin_federate: Some(federate.to_owned()), ..c };
        if matches!(c.change_type.as_str(), "DELETE_MISSION" | "REMOVE_CONTENT") && !self.allow_federated_delete {
            tracing::info!(%federate, mission = %c.mission, change = %c.change_type, "federated delete not applied (missions.allow_federated_delete = false)");
            return Applied::Ignored("federated deletes are not allowed".into());
        }
        match self.store.record_change(&c) {
            Ok(None) => Applied::Duplicate,
            Ok(Some(id)) => {
                if let Err(e) = self.apply_to_missions(&c) {
                    tracing::error!("mission store: {e}");
                }
                LinkCounters::inc(&self.counters.events_in);
                let c = Change { id, ..c };
                self.announce(&c).await;
                Applied::Recorded(c)
            }
            Err(e) => {
                tracing::error!(%federate, "federated mission change not recorded: {e}");
                Applied::Ignored(e.to_string())
            }
        }
    }

    /// Routes a `t-x-m-c` announcement of `c` to local links (and the RabbitMQ bridge).
    async fn announce(&self, c: &Change) {
        let ev = announcement(c);
        let m = Arc::new(Message::new(ev, self.id));
        if self.router.route(m).await {
            LinkCounters::inc(&self.counters.events_out);
        }
    }

    /// The server row for an inbound federate on `link` (created the first time it
    /// connects, with the link's mission policy; then the replay window is queued for it).
    pub fn inbound_server(&self, link: &str, fingerprint: &str, name: &str, policy: &PeerPolicy) -> Result<i64, crate::store::StoreError> {
        if let Some(s) = self.store.inbound_server(link, fingerprint)? {
            return Ok(s.id);
        }
        let row = Server {
            name: format!("{link}/{name}/{}", &fingerprint.replace(':', "")[..8.min(fingerprint.replace(':', "").len())]),
            node_id: Some(fingerprint.to_owned()),
            direction: "inbound".into(),
            protocol: "v2".into(),
            enabled: true,
            verify_ssl: true,
            sync_missions: policy.sync_missions,
            sync_cot: policy.sync_cot,
            mission_filter: policy.mission_filter_patterns(),
            link: link.to_owned(),
            source: "inbound".into(),
            ..Default::default()
        };
        let (id, new) = self.store.upsert_server(&row)?;
        if new {
            self.replay_for(id)?;
        }
        Ok(id)
    }

    /// Queues the replay window for a server seen for the first time.
    pub fn replay_for(&self, server_id: i64) -> Result<usize, crate::store::StoreError> {
        let since = now_ms() - self.replay_window.as_millis() as i64;
        let n = self.store.enqueue_since(server_id, since)?;
        if n > 0 {
            tracing::info!(server_id, changes = n, "queued the replay window for a new federate");
        }
        Ok(n)
    }

    /// Delivers a server's queue over one federate session, in order, until the session
    /// ends; what was not confirmed by `receipts` by then gets another attempt with backoff.
    pub async fn deliver(self: Arc<Self>, server_id: i64, tx: mpsc::Sender<OutRol>, receipts: Arc<Receipts>, stop: CancellationToken) {
        let store = self.store.clone();
        let _ = store.reset_backoff(server_id);
        let _ = store.set_status(server_id, "connected", None, true);
        let mut cursor = 0i64;
        'session: loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let items = match store.pending(server_id, cursor, 256, now_ms()) {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!("mission queue: {e}");
                    Vec::new()
                }
            };
            if items.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            for p in items {
                let qid = p.queue_id;
                let r = receipts.clone();
                let out = OutRol { rol: to_rol(&p.change), written: Some(Box::new(move || r.written(qid))) };
                tokio::select! {
                    r = tx.send(out) => if r.is_err() { break 'session },
                    _ = stop.cancelled() => break 'session,
                }
                cursor = qid;
            }
        }
        if cursor > 0 {
            let left = receipts.unconfirmed();
            let _ = store.mark_failed(server_id, cursor, "the session ended before the federate confirmed it (by a health check round trip)");
            if left > 0 {
                tracing::info!(server_id, unconfirmed = left, "federate session ended: changes written but not confirmed will be sent again");
            }
        }
        let _ = store.set_status(server_id, "disconnected", None, false);
    }
}

/// Whether server `s` gets changes of `mission`.
fn wants(s: &Server, mission: &str) -> bool {
    if !(s.enabled && s.sync_missions && s.protocol == "v2") {
        return false;
    }
    match &s.mission_filter {
        None => true,
        Some(f) => PatternList::new(f).map(|p| p.any(mission)).unwrap_or(false),
    }
}

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
        let ct = text("type");
        if !name.is_empty() && !ct.is_empty() {
            out.push(Change {
                mission: name,
                change_type: normalise_type(&ct),
                content_uid: text("contentUid"),
                content_hash: xml_hash(body),
                creator_uid: text("creatorUid"),
                ts_ms: ts,
                is_federated: text("isFederatedChange") == "true",
                ..Default::default()
            });
        }
        rest = &after[end..];
    }
    out
}

fn xml_hash(body: &str) -> String {
    let Some(a) = body.find("<contentResource>") else { return String::new() };
    let r = &body[a..];
    r.find("<hash>").and_then(|h| r[h + 6..].find("</hash>").map(|e| r[h + 6..h + 6 + e].to_string())).unwrap_or_default()
}

fn normalise_type(t: &str) -> String {
    match t {
        "CREATE_MISSION" | "DELETE_MISSION" | "ADD_CONTENT" | "REMOVE_CONTENT" | "CREATE_DATA_FEED" | "DELETE_DATA_FEED" => t.to_string(),
        _ => "CHANGE".to_string(),
    }
}

/// The ROL TAK Server emits for a change (§4.2 of the federation spec).
pub fn to_rol(c: &Change) -> Rol {
    let mut payload = vec![];
    let (op, params) = match c.change_type.as_str() {
        "CREATE_MISSION" => ("create mission", json!({"type": "MissionMetadata", "name": c.mission, "creatorUid": c.creator_uid, "description": "", "chatRoom": "", "tool": "public", "guid": c.content_hash})),
        "DELETE_MISSION" => ("delete mission", json!({"type": "MissionMetadata", "name": c.mission, "creatorUid": c.creator_uid, "guid": c.content_hash})),
        _ => {
            let content = json!({
                "hashes": if c.content_hash.is_empty() { vec![] } else { vec![c.content_hash.clone()] },
                "uids": if c.content_uid.is_empty() { vec![] } else { vec![c.content_uid.clone()] },
            });
            if !c.cot_xml.is_empty() && c.change_type == "ADD_CONTENT" {
                payload.push(BinaryBlob { r#type: BinaryTypes::Other as i32, data: c.cot_xml.as_bytes().to_vec(), description: COT_PAYLOAD.into(), timestamp: c.ts_ms, ..Default::default() });
            }
            ("update mission", json!({"content": content, "creatorUid": c.creator_uid, "changeType": c.change_type, "missionName": c.mission, "missionCreatorUid": "", "missionChatRoom": "", "missionTool": "public", "missionDescription": "", "date": c.ts_ms}))
        }
    };
    Rol { program: format!("{op}\n{params};"), payload, ..Default::default() }
}

/// The change a ROL program describes (None: a program takgate does not apply).
pub fn parse_rol(rol: &Rol) -> Result<Option<Change>, String> {
    let p = rol.program.trim();
    let (head, body) = match p.find(['\n', '{']) {
        Some(i) => (p[..i].trim(), p[i..].trim()),
        None => return Err(format!("no parameters in {:?}", truncate(p))),
    };
    let body = body.strip_suffix(';').unwrap_or(body).trim();
    let words: Vec<&str> = head.split_whitespace().collect();
    let [op, resource] = words[..] else { return Err(format!("statement {head:?} is not `<operation> <resource>`")) };
    if resource != "mission" {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(body).map_err(|e| format!("parameters of {head:?}: {e}"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let date = match v.get("date") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(t)) => CotTime::parse(t).map(|t| t.0).unwrap_or(0),
        _ => 0,
    };
    let change = match op {
        "create" => Change { mission: s("name"), change_type: "CREATE_MISSION".into(), creator_uid: s("creatorUid"), content_hash: s("guid"), ts_ms: 0, ..Default::default() },
        "delete" => Change { mission: s("name"), change_type: "DELETE_MISSION".into(), creator_uid: s("creatorUid"), content_hash: s("guid"), ts_ms: 0, ..Default::default() },
        "update" => {
            let ct = s("changeType");
            if ct != "ADD_CONTENT" && ct != "REMOVE_CONTENT" {
                return Ok(None);
            }
            let first = |k: &str| v.get("content").and_then(|c| c.get(k)).and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str).unwrap_or_default().to_string();
            let cot = rol.payload.iter().find(|b| b.description == COT_PAYLOAD).map(|b| String::from_utf8_lossy(&b.data).into_owned()).unwrap_or_default();
            Change { mission: s("missionName"), change_type: ct, content_uid: first("uids"), content_hash: first("hashes"), creator_uid: s("creatorUid"), ts_ms: date, cot_xml: cot, ..Default::default() }
        }
        _ => return Ok(None),
    };
    if change.mission.is_empty() {
        return Err(format!("{head:?} names no mission"));
    }
    Ok(Some(change))
}

fn truncate(s: &str) -> &str {
    &s[..s.char_indices().nth(80).map(|(i, _)| i).unwrap_or(s.len())]
}

/// The `t-x-m-c` event that announces `c` to local clients (as TAK Server and OTS write it).
pub fn announcement(c: &Change) -> CotEvent {
    let now = CotTime::now();
    let mut ev = CotEvent::new(format!("takgate-mc-{}-{}", c.id, now.0), "t-x-m-c", "h-g-i-g-o", now, 20);
    ev.point.ce = 9_999_999.0;
    ev.point.le = 9_999_999.0;
    let mut d = Vec::new();
    let esc = |s: &str, d: &mut Vec<u8>| fragment::escape_attr(s, d);
    d.extend_from_slice(b"<mission type=\"");
    d.extend_from_slice(if c.change_type == "CREATE_MISSION" || c.change_type == "DELETE_MISSION" { c.change_type.split('_').next().unwrap_or("CHANGE") } else { "CHANGE" }.as_bytes());
    d.extend_from_slice(b"\" tool=\"public\" name=\"");
    esc(&c.mission, &mut d);
    d.extend_from_slice(b"\" authorUid=\"");
    esc(&c.creator_uid, &mut d);
    d.extend_from_slice(b"\"><MissionChanges><MissionChange>");
    for (tag, val) in [("contentUid", c.content_uid.as_str()), ("creatorUid", c.creator_uid.as_str()), ("isFederatedChange", if c.is_federated { "true" } else { "false" }), ("missionName", c.mission.as_str())] {
        if val.is_empty() {
            continue;
        }
        d.extend_from_slice(format!("<{tag}>").as_bytes());
        esc(val, &mut d);
        d.extend_from_slice(format!("</{tag}>").as_bytes());
    }
    let mut ts = Vec::new();
    CotTime(if c.ts_ms > 0 { c.ts_ms } else { now.0 }).write_to(&mut ts);
    d.extend_from_slice(b"<timestamp>");
    d.extend_from_slice(&ts);
    d.extend_from_slice(b"</timestamp><type>");
    d.extend_from_slice(c.change_type.as_bytes());
    d.extend_from_slice(b"</type></MissionChange></MissionChanges></mission>");
    ev.detail.xml = String::from_utf8_lossy(&d).into_owned();
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rol_round_trips_every_emitted_change() {
        for ct in ["CREATE_MISSION", "DELETE_MISSION", "ADD_CONTENT", "REMOVE_CONTENT"] {
            let c = Change { mission: "ops \"1\"".into(), change_type: ct.into(), content_uid: if ct.contains("CONTENT") { "ANDROID-1".into() } else { String::new() }, creator_uid: "me".into(), ts_ms: if ct.contains("CONTENT") { 1_700_000_000_123 } else { 0 }, cot_xml: if ct == "ADD_CONTENT" { "<event/>".into() } else { String::new() }, content_hash: if ct.contains("MISSION") { "guid-1".into() } else { String::new() }, ..Default::default() };
            let rol = to_rol(&c);
            assert!(rol.program.ends_with(';'), "{}", rol.program);
            assert_eq!(parse_rol(&rol).unwrap(), Some(c.clone()), "{}", rol.program);
        }
        let add = to_rol(&Change { mission: "m".into(), change_type: "ADD_CONTENT".into(), content_uid: "u".into(), cot_xml: "<event/>".into(), ts_ms: 5, ..Default::default() });
        assert!(add.program.starts_with("update mission\n{"));
        assert_eq!(add.payload[0].description, COT_PAYLOAD);
    }

    #[test]
    fn which_servers_want_a_mission() {
        let s = Server { enabled: true, sync_missions: true, protocol: "v2".into(), ..Default::default() };
        assert!(wants(&s, "anything"));
        assert!(!wants(&Server { protocol: "v1".into(), ..s.clone() }, "m"), "missions federate over v2 only");
        assert!(!wants(&Server { sync_missions: false, ..s.clone() }, "m"));
        assert!(!wants(&Server { enabled: false, ..s.clone() }, "m"));
        let f = Server { mission_filter: Some(vec!["ops-*".into()]), ..s.clone() };
        assert!(wants(&f, "ops-1") && !wants(&f, "training"));
        assert!(!wants(&Server { mission_filter: Some(vec![]), ..s }, "ops-1"), "an empty filter: none");
    }

    #[test]
    fn rol_errors_and_other_resources() {
        let r = |p: &str| parse_rol(&Rol { program: p.into(), ..Default::default() });
        assert_eq!(r("create data_feed\n{\"type\":\"DataFeedMetadata\"};"), Ok(None));
        assert_eq!(r("update mission\n{\"changeType\":\"LOG\",\"missionName\":\"m\"};"), Ok(None));
        assert!(r("update mission").is_err());
        assert!(r("update mission\n{not json};").unwrap_err().contains("parameters"));
        assert!(r("update mission\n{\"changeType\":\"ADD_CONTENT\"};").unwrap_err().contains("names no mission"));
        // TAK's date may be a string too
        let c = r("update mission {\"changeType\":\"ADD_CONTENT\",\"missionName\":\"m\",\"content\":{\"uids\":[\"u\"]},\"date\":\"2025-02-28T03:41:24.579Z\"};").unwrap().unwrap();
        assert_eq!((c.content_uid.as_str(), c.ts_ms), ("u", 1_740_714_084_579));
    }

    #[test]
    fn announcements_parse_and_are_written_like_tak() {
        let raw = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/xml/takaware_t-x-m-c_add-content.xml"));
        if let Ok(raw) = raw {
            let ev = crate::cot::xml::decode(&raw).unwrap();
            let c = parse_announcement(&ev);
            assert_eq!(c.len(), 1);
            assert_eq!((c[0].mission.as_str(), c[0].change_type.as_str(), c[0].content_uid.as_str(), c[0].is_federated), ("FT-Test4", "ADD_CONTENT", "A4F2E606-A1AF-4FA3-AB97-211DA9DEF357", false));
            assert_eq!(c[0].ts_ms, 1_740_714_084_579);
        }
        let c = Change { id: 3, mission: "ops".into(), change_type: "ADD_CONTENT".into(), content_uid: "u<1>".into(), creator_uid: "me".into(), ts_ms: 1_700_000_000_000, is_federated: true, ..Default::default() };
        let ev = announcement(&c);
        assert_eq!(ev.cot_type, "t-x-m-c");
        let back = parse_announcement(&crate::cot::xml::decode(&crate::cot::xml::encode(&ev)).unwrap());
        assert_eq!(back, vec![Change { id: 0, ..c }]);
    }
}
