//! Mission content beyond CoT uids: files, which travel as `create resource` with their
//! bytes just before the ADD_CONTENT of their hash (TAK's order, tak-rol-missions.md
//! §3.3.1); content added or removed by local clients through the Marti API; and data
//! packages sent to contacts, a `b-f-t-r` that goes to a v2 federate as TAK's `announce
//! package` and comes back from one as a local `b-f-t-r` whose download URL is ours (§3.5).

use std::sync::Arc;

use super::files::{normalize_hash, FileError};
use super::rol::{self, Package};
use super::{Applied, Missions, Resource};
use crate::cot::{fragment, CotEvent, CotTime};
use crate::federation::fig::Rol;
use crate::link::{log_bad_input, LinkCounters};
use crate::router::{FedMeta, Message};
use crate::store::{now_ms, Change, ChangeType, FileMeta, LogEntry, StoreError};
use crate::sync::lock;

/// Why content from a local client was not added or removed.
#[derive(Debug, thiserror::Error)]
pub enum LocalContentError {
    #[error("no mission {0:?}")]
    NoMission(String),
    #[error("no file with hash {0}")]
    NoFile(String),
    #[error("{0} is not in mission {1:?}")]
    NotInMission(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    File(#[from] FileError),
}

impl Missions {
    /// Why an ADD_CONTENT of a hash from a federate is not applied: as TAK, only hashes the
    /// file store holds are added (the file comes first, as `create resource`).
    pub(super) fn file_missing(&self, c: &Change) -> Option<String> {
        if c.change_type != ChangeType::AddContent || c.content_hash.is_empty() {
            return None;
        }
        match self.files.meta(&c.content_hash) {
            Ok(Some(_)) => None,
            Ok(None) => {
                tracing::warn!(federate = c.origin_federate.as_deref().unwrap_or(""), mission = %c.mission, hash = %c.content_hash, "ADD_CONTENT of a file we do not hold (no create resource with its bytes came first): not added");
                Some(format!("file {} not held", c.content_hash))
            }
            Err(e) => Some(e.to_string()),
        }
    }

    /// The file an ADD_CONTENT adds, with its bytes unless they are over the limit for this
    /// kind of delivery (live: the file limit; a replay: `replay_max_file_bytes`). None
    /// when the change adds no file or the file is not held (then only the change goes).
    pub(super) async fn resource_for(&self, change: &Change, replay: bool) -> Option<Resource> {
        if change.change_type != ChangeType::AddContent || change.content_hash.is_empty() {
            return None;
        }
        let files = self.files.clone();
        let hash = change.content_hash.clone();
        let limit = if replay { self.replay_max_file_bytes } else { self.files.max_bytes };
        let read = tokio::task::spawn_blocking(move || -> Result<Option<Resource>, FileError> {
            let Some(meta) = files.meta(&hash)? else { return Ok(None) };
            if meta.size as u64 > limit {
                tracing::info!(hash = %meta.hash, size = meta.size, limit, replay, "file over the size limit: create resource goes without its bytes");
                return Ok(Some((meta, None)));
            }
            Ok(files.read(&hash)?.map(|(m, b)| (m, Some(b))))
        });
        match read.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(hash = %change.content_hash, "file store: {e}");
                None
            }
            Err(e) => {
                tracing::error!("file store task: {e}");
                None
            }
        }
    }

    /// Stores a file (blocking work on a blocking thread).
    pub async fn store_file(&self, bytes: Vec<u8>, meta: FileMeta) -> Result<(FileMeta, bool), FileError> {
        let files = self.files.clone();
        match tokio::task::spawn_blocking(move || files.put(&bytes, meta)).await {
            Ok(r) => r,
            Err(e) => Err(FileError::Io { path: "(task)".into(), source: std::io::Error::other(e.to_string()) }),
        }
    }

    /// A `create resource` from a federate: its bytes stored under the hash computed from
    /// them (a different claimed hash is refused, counted as bad input).
    pub(super) async fn apply_resource(&self, federate: &str, rol: &Rol) -> Applied {
        let (mut meta, bytes) = match rol::parse_resource(rol) {
            Ok(r) => r,
            Err(e) => {
                log_bad_input(LinkCounters::inc(&self.counters.decode_errors), "missions", federate, &format!("bad create resource: {e}"));
                return Applied::Ignored(e);
            }
        };
        let Some(bytes) = bytes else {
            tracing::info!(%federate, hash = %meta.hash, name = %meta.name, "create resource without its bytes (the sender's size limit): not stored");
            return Applied::Ignored("create resource without content".into());
        };
        meta.origin = federate.to_owned();
        if meta.submitter.is_empty() {
            meta.submitter = federate.to_owned();
        }
        meta.submitted_ms = 0;
        match self.store_file(bytes.to_vec(), meta).await {
            Ok((m, new)) => {
                if new {
                    LinkCounters::inc(&self.counters.events_in);
                    tracing::info!(%federate, hash = %m.hash, name = %m.name, size = m.size, "file received");
                }
                Applied::File(m)
            }
            Err(e @ (FileError::Mismatch { .. } | FileError::TooLarge { .. })) => {
                log_bad_input(LinkCounters::inc(&self.counters.decode_errors), "missions", federate, &format!("create resource refused: {e}"));
                Applied::Ignored(e.to_string())
            }
            Err(e) => {
                tracing::error!(%federate, "file not stored: {e}");
                Applied::Ignored(e.to_string())
            }
        }
    }

    /// An `announce package` from a federate: a local `b-f-t-r` to its destinations, with
    /// our own download URL (as TAK's `createPackageAnnounceCot`).
    pub(super) async fn apply_package(&self, federate: &str, rol: &Rol, groups: &[String]) -> Applied {
        let p = match rol::parse_package(rol) {
            Ok(p) => p,
            Err(e) => {
                log_bad_input(LinkCounters::inc(&self.counters.decode_errors), "missions", federate, &format!("bad announce package: {e}"));
                return Applied::Ignored(e);
            }
        };
        let held = self.files.meta(&p.sha256).ok().flatten();
        let base = lock(&self.marti_url).clone();
        if base.is_none() {
            tracing::warn!(%federate, hash = %p.sha256, "data package announced, but no [marti] listener serves files to local clients: they cannot download it");
        } else if held.is_none() {
            tracing::warn!(%federate, hash = %p.sha256, "data package announced before its file arrived: clients will find no file until it does");
        }
        let url = base.map(|b| format!("{b}/sync/content?hash={}", p.sha256)).unwrap_or_default();
        let mut m = Message::new(package_event(&p, &url), self.id);
        m.from_federate = true;
        m.fed = Some(Box::new(FedMeta { provenance: vec![], hops: 0, max_hops: -1, groups: groups.to_vec() }));
        if self.router.route(Arc::new(m)).await {
            LinkCounters::inc(&self.counters.events_out);
        }
        Applied::File(held.unwrap_or(FileMeta { hash: p.sha256, name: p.filename, size: p.size, ..Default::default() }))
    }

    /// What a v2 federate gets for a `b-f-t-r`: the file as `create resource` when we hold
    /// it (bytes within the file limit), then `announce package`. None: not a data package
    /// TAK would announce (no SHA-256).
    pub async fn package_rols(&self, ev: &CotEvent) -> Option<Vec<Rol>> {
        let p = package_of(ev)?;
        let change = Change { content_hash: p.sha256.clone(), ..Change::new("", ChangeType::AddContent) };
        let mut out = vec![];
        if let Some((meta, bytes)) = self.resource_for(&change, false).await {
            out.push(rol::resource_rol(&meta, bytes));
        }
        out.push(rol::package_rol(&p));
        Some(out)
    }

    /// Adds held files (by hash) and CoT uids to a mission for a local client (Marti's
    /// `PUT /api/missions/{name}/contents`): each new item is a local ADD_CONTENT, queued for
    /// federates and announced to local clients. How many were new.
    pub async fn add_local_content(&self, mission: &str, hashes: &[String], uids: &[String], creator: &str) -> Result<usize, LocalContentError> {
        if !self.store.mission_exists(mission)? {
            return Err(LocalContentError::NoMission(mission.to_owned()));
        }
        let mut hs = vec![];
        for h in hashes {
            let n = normalize_hash(h).ok_or_else(|| LocalContentError::NoFile(h.clone()))?;
            if self.files.meta(&n)?.is_none() {
                return Err(LocalContentError::NoFile(n));
            }
            hs.push(n);
        }
        let items = hs.into_iter().map(|h| (h, String::new())).chain(uids.iter().map(|u| (String::new(), u.clone())));
        let mut n = 0;
        for (hash, uid) in items {
            let c = Change { content_hash: hash, content_uid: uid, creator_uid: creator.to_owned(), ts_ms: now_ms(), ..Change::new(mission, ChangeType::AddContent) };
            n += usize::from(self.local_change(c).await?);
        }
        Ok(n)
    }

    /// Removes a file or uid from a mission for a local client (a local REMOVE_CONTENT).
    pub async fn remove_local_content(&self, mission: &str, hash: Option<&str>, uid: Option<&str>, creator: &str) -> Result<usize, LocalContentError> {
        if !self.store.mission_exists(mission)? {
            return Err(LocalContentError::NoMission(mission.to_owned()));
        }
        let mut n = 0;
        let hash = hash.map(|h| normalize_hash(h).unwrap_or_else(|| h.to_owned()));
        for (hash, uid) in [(hash.unwrap_or_default(), String::new()), (String::new(), uid.unwrap_or_default().to_owned())] {
            if hash.is_empty() && uid.is_empty() {
                continue;
            }
            let what = if hash.is_empty() { uid.clone() } else { hash.clone() };
            let c = Change { content_hash: hash, content_uid: uid, creator_uid: creator.to_owned(), ts_ms: now_ms(), ..Change::new(mission, ChangeType::RemoveContent) };
            if !self.local_change(c).await? {
                return Err(LocalContentError::NotInMission(what, mission.to_owned()));
            }
            n += 1;
        }
        Ok(n)
    }

    /// Adds, edits or (`delete`) removes a mission log entry for a local client (Marti's
    /// `logs/entries`, or OpenTAKServer's log): a local change, queued for federates and
    /// announced. False: it changed nothing.
    pub async fn local_log(&self, entry: LogEntry, delete: bool) -> Result<bool, LocalContentError> {
        self.local_log_from(entry, delete, self.id).await
    }

    /// [`Missions::local_log`] of an entry that came from link `origin` (OpenTAKServer's
    /// log), whose announcement is not sent back to it.
    pub async fn local_log_from(&self, entry: LogEntry, delete: bool, origin: crate::router::LinkId) -> Result<bool, LocalContentError> {
        if !self.store.mission_exists(&entry.mission)? {
            return Err(LocalContentError::NoMission(entry.mission.clone()));
        }
        let t = if delete { ChangeType::DeleteLogEntry } else { ChangeType::AddUpdateLogEntry };
        let meta = self.store.mission_meta(&entry.mission)?.map(|(_, m)| m);
        let c = Change { content_uid: entry.entry_uid.clone(), creator_uid: entry.creator_uid.clone(), ts_ms: now_ms(), mission_meta: meta, ..Change::new(&entry.mission, t) };
        Ok(self.local_change_from(Change { log_entry: Some(entry), ..c }, origin).await?)
    }

    /// Creates a mission for a local client (a local CREATE_MISSION); false when it exists.
    pub async fn create_local_mission(&self, name: &str, creator: &str, meta: crate::store::MissionMeta) -> Result<bool, StoreError> {
        let c = Change { creator_uid: creator.to_owned(), ts_ms: now_ms(), mission_meta: Some(meta), ..Change::new(name, ChangeType::CreateMission) };
        self.local_change(c).await
    }

    /// Records, applies, queues and announces one local change; false when it would change nothing.
    async fn local_change(&self, c: Change) -> Result<bool, StoreError> {
        self.local_change_from(c, self.id).await
    }

    async fn local_change_from(&self, c: Change, origin: crate::router::LinkId) -> Result<bool, StoreError> {
        if !self.effective(&c)? {
            return Ok(false);
        }
        self.apply_to_missions(&c)?;
        let Some(id) = self.record_local_with(None, c.clone())? else { return Ok(false) };
        self.announce_from(&Change { id, ..c }, origin).await;
        Ok(true)
    }
}

/// The data package a `b-f-t-r` file-transfer request carries (`detail/fileshare` and
/// its `marti/dest` destinations); None without a valid SHA-256.
pub fn package_of(ev: &CotEvent) -> Option<Package> {
    if ev.cot_type != "b-f-t-r" {
        return None;
    }
    let d = &ev.detail.xml;
    let a = |k: &str| fragment::find_attr(d, "fileshare", k).unwrap_or_default();
    let sha256 = normalize_hash(&a("sha256"))?;
    let facts = crate::router::Facts::of(ev);
    let filename = a("filename");
    let name = Some(a("name")).filter(|n| !n.is_empty()).unwrap_or_else(|| filename.clone());
    Some(Package { sha256, name, filename, size: a("sizeInBytes").parse().unwrap_or(0), sender_callsign: a("senderCallsign"), ts_stored_ms: now_ms(), callsigns: facts.dest_callsigns, uids: facts.dest_uids })
}

/// The local `b-f-t-r` for a package a federate announced (TAK's `createPackageAnnounceCot`:
/// uid and senderUid the hash, point 0,0 hae 9999999, stale in 100 s, `senderCallsign` from
/// the package name, the explicit destinations).
fn package_event(p: &Package, url: &str) -> CotEvent {
    let now = CotTime::now();
    let mut ev = CotEvent::new(p.sha256.clone(), "b-f-t-r", "h-e", now, 100);
    ev.point.hae = 9_999_999.0;
    ev.point.ce = 9_999_999.0;
    ev.point.le = 9_999_999.0;
    let e = fragment::escape_attr_string;
    let mut d = format!(
        r#"<fileshare sha256="{h}" senderUid="{h}" name="{n}" filename="{f}" senderUrl="{u}" sizeInBytes="{s}" senderCallsign="{c}"/><marti>"#,
        h = p.sha256,
        n = e(&p.filename),
        f = e(&p.filename),
        u = e(url),
        s = p.size,
        c = e(&p.name)
    );
    for u in &p.uids {
        d.push_str(&format!(r#"<dest uid="{}"/>"#, e(u)));
    }
    for c in &p.callsigns {
        d.push_str(&format!(r#"<dest callsign="{}"/>"#, e(c)));
    }
    d.push_str("</marti>");
    ev.detail.xml = d;
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_transfer_request_is_a_package_and_back() {
        let mut ev = CotEvent::new("pkg-1", "b-f-t-r", "h-e", CotTime(5), 20);
        let h = "ab".repeat(32);
        ev.detail.xml = format!(r#"<fileshare filename="pkg.zip" senderUrl="https://x/Marti/sync/content?hash={h}" sizeInBytes="2048" sha256="{h}" senderUid="ANDROID-1" senderCallsign="ALPHA" name="pkg"/><marti><dest callsign="BRAVO"/></marti>"#);
        let p = package_of(&ev).unwrap();
        assert_eq!((p.sha256.as_str(), p.name.as_str(), p.filename.as_str(), p.size, p.sender_callsign.as_str(), p.callsigns.as_slice()), (h.as_str(), "pkg", "pkg.zip", 2048, "ALPHA", ["BRAVO".to_string()].as_slice()));
        let back = package_event(&p, "https://gw:8443/Marti/sync/content?hash=x");
        let f = Facts::of(&back);
        assert_eq!((back.uid.as_str(), back.stale.0 - back.time.0, f.dest_callsigns.as_slice()), (h.as_str(), 100_000, ["BRAVO".to_string()].as_slice()));
        assert_eq!(fragment::find_attr(&back.detail.xml, "fileshare", "senderUrl").as_deref(), Some("https://gw:8443/Marti/sync/content?hash=x"));
        assert_eq!(fragment::find_attr(&back.detail.xml, "fileshare", "senderCallsign").as_deref(), Some("pkg"), "TAK fills it from the name");
        ev.detail.xml = ev.detail.xml.replace(&h, "nothex");
        assert!(package_of(&ev).is_none());
    }

    use crate::router::Facts;
}
