//! Missions: the second data path. Mission changes are recorded once in the store,
//! queued durably for every federate that should get them, handed to federation v2 sessions
//! (which send them as ROL the way TAK Server emits them, [`rol`]), and applied (then
//! announced to local links as `t-x-m-c`, [`announce`]) when a federate sends them.
//!
//! ```text
//! router tap -> intake (record once) -> store (changes, outbound queue) -> deliver -> v2 session (ROL)
//! v2 session (ROL) -> apply_rol (record once, apply) -> announce (t-x-m-c) -> router
//! ```
//!
//! Local changes come from the router's mission traffic: CoT addressed to a mission
//! (`<marti><dest mission=…>`: ADD_CONTENT the first time its uid joins the mission),
//! `t-x-m-c` change announcements, `t-x-m-n` (CREATE_MISSION) and `t-x-m-d`
//! (DELETE_MISSION) seen on any link, the RabbitMQ bridge included. Changes from federates
//! arrive as ROL only (their CoT is not re-recorded) and are never sent back out. A change
//! that would change nothing (adding an item the mission has, removing one it lacks,
//! creating a mission that exists) is not recorded: that is how a change without a date
//! (TAK sends REMOVE_CONTENT so) is recognised when it comes again.

pub mod announce;
mod content;
pub mod files;
pub mod rol;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use announce::{announcement, parse_announcement};
pub use content::{package_of, LocalContentError};
pub use files::{FileError, FileStore};
pub use rol::{parse_rol, to_rol, COT_PAYLOAD};

use crate::cot::{fragment, CotEvent};
use crate::federation::fig::Rol;
use crate::link::{log_bad_input, LinkCounters};
use crate::router::pattern::PatternList;
use crate::router::{FedMeta, LinkId, Message, PeerPolicy, RouterHandle};
use crate::store::{now_ms, Change, ChangeType, Direction, MissionMeta, Protocol, Server, Source, Store, StoreError};
use crate::sync::lock;

/// A file to send as `create resource`: its metadata, and its bytes (None: over the size
/// limit, sent as metadata only, as TAK sends such files).
pub type Resource = (crate::store::FileMeta, Option<Vec<u8>>);

/// A queued change handed to a federate session, with what to do once it is written.
pub struct OutRol {
    pub change: Change,
    /// The file an ADD_CONTENT of a hash adds, sent as `create resource` just before it
    /// (its bytes: None when over the size limit, as TAK sends such files).
    pub resource: Option<Resource>,
    pub written: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for OutRol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutRol").field("mission", &self.change.mission).field("change", &self.change.change_type).finish()
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
        lock(&self.written).push_back((queue_id, std::time::Instant::now()));
    }

    /// Marks delivered what was written before `t`; returns how many.
    pub fn confirm_before(&self, t: std::time::Instant) -> usize {
        let mut done = Vec::new();
        {
            let mut w = lock(&self.written);
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
        lock(&self.written).len()
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
    /// Mission content and data packages by hash.
    pub files: Arc<FileStore>,
    /// Files larger than this go without their bytes in a replay window.
    pub replay_max_file_bytes: u64,
    /// Changes (and files) from a federate are queued for the other federates that want
    /// them (TAK Server never relays ROL; a gateway between servers does).
    pub relay: bool,
    /// The public base URL of our Marti API (`https://host:port/Marti`), where local
    /// clients download files; None: no Marti listener.
    pub marti_url: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Missions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Missions").field("store", &self.store.path).finish()
    }
}

/// What a received change did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Recorded (and announced locally).
    Recorded(Change),
    /// Already recorded, or it would change nothing: nothing done.
    Duplicate,
    /// Understood but not applied (the reason).
    Ignored(String),
    /// A file stored (`create resource`), or a data package announced to local contacts.
    File(crate::store::FileMeta),
}

impl Missions {
    /// Starts the mission service: taps the router's mission traffic. Files are kept in
    /// `files_dir`.
    pub async fn start(store: Arc<Store>, router: RouterHandle, cfg: &crate::config::MissionsConfig, files_dir: std::path::PathBuf, cancel: CancellationToken, tracker: &TaskTracker) -> Arc<Missions> {
        let id = router.next_id();
        let files = Arc::new(FileStore::new(files_dir, cfg.max_file_bytes, store.clone()));
        let m = Arc::new(Missions {
            store,
            router: router.clone(),
            id,
            notify: Notify::new(),
            replay_window: Duration::from_secs_f64(cfg.replay_hours * 3600.0),
            allow_federated_delete: cfg.allow_federated_delete,
            counters: Arc::default(),
            files,
            replay_max_file_bytes: cfg.replay_max_file_bytes,
            relay: cfg.relay,
            marti_url: std::sync::Mutex::new(None),
        });
        let (tx, mut rx) = mpsc::channel::<Arc<Message>>(65_536);
        router.set_mission_tap(tx, id).await;
        let me = m.clone();
        tracker.spawn(async move {
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
    pub fn intake(&self, m: &Message) -> Result<(), StoreError> {
        if m.from_federate {
            return Ok(());
        }
        let ev = &m.event;
        if !ev.cot_type.starts_with("t-x-m") {
            return self.intake_items(m);
        }
        let changes = announced_changes(ev);
        let groups: Vec<String> = m.facts.group.iter().cloned().collect();
        for c in changes {
            let c = Change { groups: groups.clone(), ..c };
            if self.effective(&c)? {
                self.apply_to_missions(&c)?;
                self.record_local_with(None, c)?;
            }
        }
        Ok(())
    }

    /// CoT addressed to missions: ADD_CONTENT the first time its uid joins one; later
    /// copies only refresh the item's CoT (sent with it to federates that get it later).
    fn intake_items(&self, m: &Message) -> Result<(), StoreError> {
        let ev = &m.event;
        let cot = String::from_utf8_lossy(m.encoded(crate::codec::WireFormat::Xml)).into_owned();
        for name in &m.facts.missions {
            self.store.ensure_mission(name, "", &MissionMeta::default())?;
            if self.store.has_item(name, &ev.uid)? {
                self.store.set_item_cot(name, &ev.uid, &cot)?;
                continue;
            }
            let creator = m.sender.clone().unwrap_or_else(|| creator_of(ev));
            let c = Change { content_uid: ev.uid.clone(), creator_uid: creator, ts_ms: ev.time.0, cot_xml: cot.clone(), groups: m.facts.group.iter().cloned().collect(), ..Change::new(name, ChangeType::AddContent) };
            // the item and its change together, or neither
            self.record_local_with(Some((name, &ev.uid)), c)?;
        }
        Ok(())
    }

    /// Whether `c` would change anything now.
    fn effective(&self, c: &Change) -> Result<bool, StoreError> {
        let s = &self.store;
        Ok(match c.change_type {
            ChangeType::CreateMission => !s.mission_exists(&c.mission)?,
            ChangeType::DeleteMission => s.mission_exists(&c.mission)?,
            ChangeType::AddContent => (!c.content_uid.is_empty() && !s.has_item(&c.mission, &c.content_uid)?) || (!c.content_hash.is_empty() && !s.has_hash(&c.mission, &c.content_hash)?),
            ChangeType::RemoveContent => (!c.content_uid.is_empty() && s.has_item(&c.mission, &c.content_uid)?) || (!c.content_hash.is_empty() && s.has_hash(&c.mission, &c.content_hash)?),
            ChangeType::AddUpdateLogEntry => c.log_entry.as_ref().is_some_and(|e| s.log(&e.entry_uid).ok().flatten().as_ref() != Some(e)),
            ChangeType::DeleteLogEntry => s.log(&c.content_uid)?.is_some(),
            ChangeType::Relayed => true,
            ChangeType::CreateDataFeed | ChangeType::DeleteDataFeed => true,
        })
    }

    /// Keeps missions and items in step with a change.
    fn apply_to_missions(&self, c: &Change) -> Result<(), StoreError> {
        let s = &self.store;
        let meta = c.mission_meta.clone().unwrap_or_default();
        match c.change_type {
            ChangeType::CreateMission => {
                s.ensure_mission(&c.mission, &c.creator_uid, &meta)?;
            }
            ChangeType::DeleteMission => s.mark_mission_deleted(&c.mission)?,
            ChangeType::AddContent => {
                s.ensure_mission(&c.mission, "", &meta)?;
                if !c.content_uid.is_empty() {
                    s.add_item(&c.mission, &c.content_uid)?;
                    if !c.cot_xml.is_empty() {
                        s.set_item_cot(&c.mission, &c.content_uid, &c.cot_xml)?;
                    }
                }
                if !c.content_hash.is_empty() {
                    s.add_hash(&c.mission, &c.content_hash)?;
                }
            }
            ChangeType::RemoveContent => {
                if !c.content_uid.is_empty() {
                    s.remove_item(&c.mission, &c.content_uid)?;
                }
                if !c.content_hash.is_empty() {
                    s.remove_hash(&c.mission, &c.content_hash)?;
                }
            }
            ChangeType::AddUpdateLogEntry => {
                if let Some(e) = &c.log_entry {
                    s.ensure_mission(&c.mission, "", &meta)?;
                    s.upsert_log(e)?;
                }
            }
            ChangeType::DeleteLogEntry => {
                s.delete_log(&c.content_uid)?;
            }
            ChangeType::Relayed => {}
            ChangeType::CreateDataFeed | ChangeType::DeleteDataFeed => {}
        }
        Ok(())
    }

    /// Records a local change and queues it for the servers that want it, in one
    /// transaction (with the new mission item, when given).
    fn record_local_with(&self, item: Option<(&str, &str)>, c: Change) -> Result<Option<i64>, StoreError> {
        let servers: Vec<i64> = self.store.servers()?.iter().filter(|s| wants(s, &c.mission)).map(|s| s.id).collect();
        let Some(id) = self.store.record_change_queued(item, &c, &servers)? else { return Ok(None) };
        LinkCounters::inc(&self.counters.events_in);
        tracing::debug!(mission = %c.mission, change = %c.change_type, uid = %c.content_uid, queued = servers.len(), "mission change recorded");
        self.notify.notify_waiters();
        Ok(Some(id))
    }

    /// Applies a ROL a federate sent: each change it carries is recorded once (as a
    /// federated change, never sent back out), applied, and announced to local links as
    /// `t-x-m-c` with `groups` (the local groups the federate's `federateGroups` map to).
    pub async fn apply_rol(&self, federate: &str, origin: Option<i64>, rol: &Rol, groups: &[String]) -> Vec<Applied> {
        match rol::statement(rol) {
            Some(("create", "resource")) => return vec![self.apply_resource(federate, rol).await],
            Some(("announce", "package")) => return vec![self.apply_package(federate, rol, groups).await],
            _ => {}
        }
        let changes = match parse_rol(rol) {
            Ok(c) if c.is_empty() => return vec![Applied::Ignored(format!("{} not handled", rol.program.lines().next().unwrap_or("")))],
            Ok(c) => c,
            Err(e) => {
                log_bad_input(LinkCounters::inc(&self.counters.decode_errors), "missions", federate, &format!("bad ROL: {e}"));
                return vec![Applied::Ignored(e)];
            }
        };
        let received = now_ms();
        let mut out = vec![];
        for c in changes {
            // A change without a date is stamped when it arrived.
            let ts_ms = if c.ts_ms > 0 { c.ts_ms } else { received };
            let c = Change { is_federated: true, origin_federate: Some(federate.to_owned()), groups: groups.to_vec(), ts_ms, ..c };
            out.push(self.apply_federated(federate, origin, c).await);
        }
        out
    }

    async fn apply_federated(&self, federate: &str, origin: Option<i64>, c: Change) -> Applied {
        if c.change_type.is_delete() && !self.allow_federated_delete {
            tracing::info!(%federate, mission = %c.mission, change = %c.change_type, "federated delete not applied (missions.allow_federated_delete = false)");
            return Applied::Ignored("federated deletes are not allowed".into());
        }
        if let Some(why) = self.file_missing(&c) {
            return Applied::Ignored(why);
        }
        let recorded = self.effective(&c).and_then(|yes| if yes { self.record_federated(origin, &c) } else { Ok(None) });
        match recorded {
            Ok(None) => Applied::Duplicate,
            Ok(Some(id)) => {
                if let Err(e) = self.apply_to_missions(&c) {
                    tracing::error!("mission store: {e}");
                }
                LinkCounters::inc(&self.counters.events_in);
                let c = Change { id, ..c };
                if c.change_type != ChangeType::Relayed {
                    self.announce(&c).await;
                }
                Applied::Recorded(c)
            }
            Err(e) => {
                tracing::error!(%federate, "federated mission change not recorded: {e}");
                Applied::Ignored(e.to_string())
            }
        }
    }

    /// Records a federated change once; with `relay`, queued for the other federates that
    /// want its mission (never the one it came from).
    fn record_federated(&self, origin: Option<i64>, c: &Change) -> Result<Option<i64>, StoreError> {
        if !self.relay {
            return self.store.record_change(c);
        }
        let servers: Vec<i64> = self.store.servers()?.iter().filter(|s| Some(s.id) != origin && wants(s, &c.mission)).map(|s| s.id).collect();
        let id = self.store.record_change_queued(None, c, &servers)?;
        if id.is_some() && !servers.is_empty() {
            tracing::debug!(mission = %c.mission, change = %c.change_type, relayed_to = servers.len(), "federated change relayed");
            self.notify.notify_waiters();
        }
        Ok(id)
    }

    /// Routes a `t-x-m-c` announcement of a federated change `c` to local links (and the
    /// RabbitMQ bridge), in the groups the federate gave it; never back to federates.
    pub(crate) async fn announce(&self, c: &Change) {
        self.announce_from(c, self.id).await
    }

    /// [`Missions::announce`] as if it came from link `origin` (which is not told again).
    pub(crate) async fn announce_from(&self, c: &Change, origin: LinkId) {
        let file = if c.content_hash.is_empty() { None } else { self.files.meta(&c.content_hash).ok().flatten() };
        let mut m = Message::new(announce::announcement_of(c, file.as_ref()), origin);
        m.from_federate = true;
        m.fed = Some(Box::new(FedMeta { provenance: vec![], hops: 0, max_hops: -1, groups: c.groups.clone() }));
        if self.router.route(Arc::new(m)).await {
            LinkCounters::inc(&self.counters.events_out);
        }
    }

    /// The server row for an inbound federate on `link` (created the first time it
    /// connects, with the link's mission policy; then the replay window is queued for it).
    pub fn inbound_server(&self, link: &str, fingerprint: &str, name: &str, policy: &PeerPolicy) -> Result<i64, StoreError> {
        if let Some(s) = self.store.inbound_server(link, fingerprint)? {
            return Ok(s.id);
        }
        let short: String = fingerprint.chars().filter(|c| *c != ':').take(8).collect();
        let row = Server {
            name: format!("{link}/{name}/{short}"),
            node_id: Some(fingerprint.to_owned()),
            direction: Direction::Inbound,
            protocol: Protocol::V2,
            enabled: true,
            verify_ssl: true,
            sync_missions: policy.sync_missions,
            sync_cot: policy.sync_cot,
            mission_filter: policy.mission_filter_patterns(),
            link: link.to_owned(),
            source: Source::Inbound,
            ..Default::default()
        };
        let (id, new) = self.store.upsert_server(&row)?;
        if new {
            self.replay_for(id)?;
        }
        Ok(id)
    }

    /// Queues the replay window for a server seen for the first time.
    pub fn replay_for(&self, server_id: i64) -> Result<usize, StoreError> {
        let since = now_ms() - self.replay_window.as_millis() as i64;
        let n = self.store.enqueue_since(server_id, since, self.relay)?;
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
        let _ = store.set_status(server_id, crate::store::ServerStatus::Connected, None);
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
                let mut change = p.change;
                if change.change_type == ChangeType::AddContent && change.cot_xml.is_empty() && !change.content_uid.is_empty() {
                    // The item's latest CoT goes with it (TAK adds a uid only if it has its CoT).
                    change.cot_xml = store.item_cot(&change.mission, &change.content_uid).ok().flatten().unwrap_or_default();
                }
                let resource = self.resource_for(&change, p.replay).await;
                let out = OutRol { change, resource, written: Some(Box::new(move || r.written(qid))) };
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
        let _ = store.set_status(server_id, crate::store::ServerStatus::Disconnected, None);
    }
}

/// Whether server `s` gets changes of `mission`.
fn wants(s: &Server, mission: &str) -> bool {
    if !(s.enabled && s.sync_missions && s.protocol == Protocol::V2) {
        return false;
    }
    match &s.mission_filter {
        None => true,
        Some(f) => PatternList::new(f).map(|p| p.any(mission)).unwrap_or(false),
    }
}

/// The change a `t-x-m-n` (created) or `t-x-m-d` (deleted) notice carries, with the
/// mission's guid, creator and tool.
/// The mission changes an announcement carries: `t-x-m-c` (changes), `t-x-m-n` (created),
/// `t-x-m-d` (deleted); none for other types (log entries, invitations).
pub fn announced_changes(ev: &CotEvent) -> Vec<Change> {
    let t = ev.cot_type.as_str();
    if t.starts_with("t-x-m-c") && !t.starts_with("t-x-m-c-l") {
        parse_announcement(ev)
    } else if t == "t-x-m-n" || t == "t-x-m-d" {
        mission_notice(ev).into_iter().collect()
    } else {
        vec![]
    }
}

fn mission_notice(ev: &CotEvent) -> Option<Change> {
    let d = &ev.detail.xml;
    let attr = |a: &str| fragment::find_attr(d, "mission", a).unwrap_or_default();
    let name = attr("name");
    if name.is_empty() {
        return None;
    }
    let t = if ev.cot_type == "t-x-m-n" { ChangeType::CreateMission } else { ChangeType::DeleteMission };
    let meta = MissionMeta { guid: attr("guid"), tool: attr("tool"), description: attr("description"), ..Default::default() };
    Some(Change { creator_uid: attr("authorUid"), ts_ms: ev.time.0, mission_meta: Some(meta), ..Change::new(&name, t) })
}

/// Who added an item: the parent a marker links to (`<link relation="p-p" uid=…>`, the
/// device that dropped it), else the item itself.
fn creator_of(ev: &CotEvent) -> String {
    let d = &ev.detail.xml;
    match (fragment::find_attr(d, "link", "relation"), fragment::find_attr(d, "link", "uid")) {
        (Some(r), Some(uid)) if r == "p-p" && !uid.is_empty() => uid,
        _ => ev.uid.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_servers_want_a_mission() {
        let s = Server { enabled: true, sync_missions: true, protocol: Protocol::V2, ..Default::default() };
        assert!(wants(&s, "anything"));
        assert!(!wants(&Server { protocol: Protocol::V1, ..s.clone() }, "m"), "missions federate over v2 only");
        assert!(!wants(&Server { sync_missions: false, ..s.clone() }, "m"));
        assert!(!wants(&Server { enabled: false, ..s.clone() }, "m"));
        let f = Server { mission_filter: Some(vec!["ops-*".into()]), ..s.clone() };
        assert!(wants(&f, "ops-1") && !wants(&f, "training"));
        assert!(!wants(&Server { mission_filter: Some(vec![]), ..s }, "ops-1"), "an empty filter: none");
    }

    #[test]
    fn notices_and_creators() {
        let mut ev = CotEvent::new("n", "t-x-m-n", "h-g-i-g-o", crate::cot::CotTime(5), 20);
        ev.detail.xml = r#"<mission type="CREATE" tool="public" name="ops" guid="g-1" authorUid="ANDROID-1"/>"#.into();
        let c = mission_notice(&ev).unwrap();
        assert_eq!((c.change_type, c.creator_uid.as_str(), c.mission_meta.unwrap().guid.as_str()), (ChangeType::CreateMission, "ANDROID-1", "g-1"));
        let mut marker = CotEvent::new("M-1", "a-h-G", "h-e", crate::cot::CotTime(5), 20);
        marker.detail.xml = r#"<link uid="ANDROID-9" relation="p-p" type="a-f-G-U-C"/>"#.into();
        assert_eq!(creator_of(&marker), "ANDROID-9");
        marker.detail.xml.clear();
        assert_eq!(creator_of(&marker), "M-1");
    }
}
