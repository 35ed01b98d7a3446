//! OpenTAKServer (1.7.11–1.7.14) as a link: takgate as OTS's federation engine.
//!
//! * **From OpenTAKServer** (its RabbitMQ bus, read only; OTS's exchanges are checked,
//!   never created): every EUD's events from `firehose`, mission traffic from `missions`,
//!   and mission creation (`t-x-m-n`, which OTS announces only on `groups`). Events sent by
//!   our own clients (below) are skipped. Direct messages between OTS's own users are not
//!   taken: they stay on OpenTAKServer.
//! * **Into OpenTAKServer**, as OpenTAKServer's own clients arrive ([`clients`]): each
//!   takgate-side contact is an EUD on OTS's TCP CoT port, so OTS stores what it sends with
//!   its sender and routes it itself (direct messages only to their addressees, mission
//!   items to the mission, the rest to `__ANON__`). Mission changes takgate learns from
//!   federates are applied through OTS's Marti API ([`api`]) and by sending the item's CoT
//!   to the mission, so OTS's Data Sync shows them; OpenTAKServer's announcements of what
//!   we applied are recognised as already known and never sent back out.

pub mod api;
pub mod clients;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::clients::{Clients, Who};
use crate::codec::WireFormat;
use crate::config::{AmqpKind, AmqpLink, LinkConfig};
use crate::cot::xml::{self, XML_DECL};
use crate::cot::{CotEvent, CotTime};
use crate::link::backoff::Attempts;
use crate::link::ingest::{prepare, Origin};
use crate::link::{log_bad_input, Backoff, Codec, LinkCounters, LinkCtx, LinkStatus, StartError};
use crate::missions::Missions;
use crate::router::{Message, PeerInfo, PeerPolicy, RouterHandle};
use crate::store::{Change, ChangeType};

/// How long connecting to the broker (TCP and the AMQP handshake) may take: a broker that
/// is starting can take the connection and not finish the handshake.
const BROKER_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// OpenTAKServer's exchanges (name, type), all durable.
pub const OTS_FIREHOSE: (&str, ExchangeKind) = ("firehose", ExchangeKind::Fanout);
pub const OTS_GROUPS: (&str, ExchangeKind) = ("groups", ExchangeKind::Topic);
pub const OTS_MISSIONS: (&str, ExchangeKind) = ("missions", ExchangeKind::Topic);

#[derive(Debug)]
pub struct OtsSettings {
    pub link: String,
    pub url: String,
    /// OpenTAKServer's TCP CoT port.
    pub cot_addr: String,
    /// takgate's own client on OpenTAKServer.
    pub uid: String,
    pub callsign: String,
    pub max_clients: usize,
    pub register_delay: Duration,
    pub poll: Duration,
    pub max_event: usize,
    pub queue_depth: usize,
    pub backoff: Backoff,
    pub policy: Arc<PeerPolicy>,
    pub counters: Arc<LinkCounters>,
}

/// The broker's host in an `amqp://user:pass@host:port/vhost` URL.
fn broker_host(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let hostport = rest.split('/').next().unwrap_or_default();
    match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_owned(),
        _ => hostport.to_owned(),
    }
    .trim_matches(['[', ']'])
    .to_owned()
}

/// Starts an OpenTAKServer link.
pub fn start(l: &LinkConfig, a: &AmqpLink, ctx: &LinkCtx, missions: &Arc<Missions>) -> Result<LinkStatus, StartError> {
    let AmqpKind::Opentakserver(o) = &a.kind else { return Err(StartError::new(&l.name, "not an OpenTAKServer link")) };
    let bad = |e: String| StartError::new(&l.name, e);
    let host = broker_host(&a.url);
    let node = ctx.router.node_id.to_string();
    let s = Arc::new(OtsSettings {
        link: l.name.clone(),
        url: a.url.clone(),
        cot_addr: o.ots_cot.clone().unwrap_or_else(|| format!("{host}:8088")),
        uid: a.opts.amqp_uid.clone().unwrap_or_else(|| node.clone()),
        callsign: o.ots_callsign.clone().unwrap_or(node),
        max_clients: o.ots_max_clients.map(|c| c.0).unwrap_or(500),
        register_delay: o.ots_register_delay_secs.map(|s| s.duration()).unwrap_or(Duration::from_secs(3)),
        poll: o.ots_poll_secs.map(|s| s.duration()).unwrap_or(Duration::from_secs(10)),
        max_event: 1 << 20,
        queue_depth: l.queue_depth.unwrap_or(ctx.queue_depth),
        backoff: Backoff::from_config(&a.reconnect, 0.5, 30.0),
        policy: Arc::new(PeerPolicy::new(&l.policy, false).map_err(bad)?),
        counters: Arc::default(),
    });
    let api = match &o.ots_api_cert {
        Some(p) => {
            let pem = std::fs::read_to_string(p).map_err(|e| bad(format!("ots_api_cert: {}: {e}", p.display())))?;
            Some(Arc::new(api::Api::new(&o.ots_api.clone().unwrap_or_else(|| format!("http://{host}:8081")), &pem).map_err(bad)?))
        }
        None => {
            tracing::warn!(link = %l.name, "no ots_api_cert: mission changes from federates are not applied to OpenTAKServer's missions (items still reach their subscribers)");
            None
        }
    };
    let status = LinkStatus { name: l.name.clone(), transport: l.transport(), mode: l.mode(), address: crate::config::redact_address(&a.url), local_addr: None, counters: s.counters.clone(), connection: None };
    tracing::info!(link = %l.name, cot = %s.cot_addr, "OpenTAKServer link starting");
    let id = ctx.router.next_id();
    let clients = Clients::new(s.clone(), ctx.router.clone(), id, ctx.cancel.clone());
    clients.open(&own_client(&s));
    let (tx, rx) = mpsc::channel(s.queue_depth);
    let router = ctx.router.clone();
    let engine = Engine { s: s.clone(), clients: clients.clone(), api: api.clone(), missions: missions.clone(), contacts: HashMap::new(), by_origin: HashMap::new(), known_missions: Default::default() };
    let (cancel, missions) = (ctx.cancel.clone(), missions.clone());
    ctx.tracker.spawn(async move {
        router.attach(PeerInfo::output(id, &s.link, "amqp", remote_of(&s.url), Codec::AmqpXml, s.policy.clone(), tx, s.counters.clone(), &cancel)).await;
        tokio::join!(engine.run(rx, cancel.clone(), id), bus(&s, &router, id, &clients, &missions, api.as_deref(), &cancel));
        router.detach(id).await;
    });
    Ok(status)
}

fn remote_of(url: &str) -> String {
    url.split('@').next_back().unwrap_or_default().to_owned()
}

/// takgate's own client: what has no contact of its own is sent as it.
fn own_client(s: &OtsSettings) -> Who {
    let mut ev = CotEvent::new(s.uid.clone(), "a-f-G-U-C-I", "h-g-i-g-o", CotTime::now(), 24 * 3600);
    ev.detail.contact = Some(crate::cot::Contact { callsign: s.callsign.clone(), endpoint: "*:-1:stcp".into(), altendpoints: String::new() });
    ev.detail.xml = format!(r#"<takv device="takgate" platform="takgate" os="linux" version="{}"/><remarks>takgate federation gateway</remarks>"#, env!("CARGO_PKG_VERSION"));
    Who { uid: s.uid.clone(), callsign: s.callsign.clone(), sa: without_decl(xml::encode(&ev)) }
}

fn without_decl(b: Vec<u8>) -> Bytes {
    match b.strip_prefix(XML_DECL) {
        Some(rest) => Bytes::copy_from_slice(rest),
        None => Bytes::from(b),
    }
}

/// OpenTAKServer's envelope.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub uid: Option<String>,
    pub cot: Option<String>,
}

/// What an OpenTAKServer envelope (`{"uid": …, "cot": "<event…>"}`) carries: its sender
/// and its event (None for disconnect notices, which have no `cot`).
pub fn decode_envelope(data: &[u8]) -> Result<(Option<String>, Option<CotEvent>), String> {
    let env: Envelope = serde_json::from_slice(data).map_err(|e| format!("not an OpenTAKServer envelope: {e}"))?;
    let ev = match env.cot {
        Some(c) => Some(xml::decode(c.as_bytes()).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok((env.uid, ev))
}

/// Checks that an OpenTAKServer exchange exists (passive declare on a throwaway channel,
/// since a failed passive declare closes the channel).
async fn check_exchange(conn: &Connection, (name, kind): (&str, ExchangeKind)) -> Result<(), String> {
    let ch = conn.create_channel().await.map_err(|e| format!("channel: {e}"))?;
    let r = ch.exchange_declare(name.into(), kind.clone(), ExchangeDeclareOptions { passive: true, durable: true, ..Default::default() }, FieldTable::default()).await;
    let _ = ch.close(200, "ok".into()).await;
    r.map_err(|e| format!("OpenTAKServer exchange {name:?} ({kind:?}, durable) is missing on the broker ({e}); is OpenTAKServer 1.7.11 or later running? takgate does not create OpenTAKServer's exchanges"))
}

/// Reads OpenTAKServer's bus until `cancel`, reconnecting with backoff.
async fn bus(s: &Arc<OtsSettings>, router: &RouterHandle, id: u64, clients: &Arc<Clients>, missions: &Arc<Missions>, api: Option<&api::Api>, cancel: &CancellationToken) {
    let mut attempts = Attempts::new(s.backoff);
    loop {
        let started = std::time::Instant::now();
        match consume(s, router, id, clients, missions, api, cancel).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(link = %s.link, "OpenTAKServer bus: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(attempts.next_delay(started.elapsed())) => {}
        }
    }
}

async fn consume(s: &OtsSettings, router: &RouterHandle, id: u64, clients: &Clients, missions: &Arc<Missions>, api: Option<&api::Api>, cancel: &CancellationToken) -> Result<(), String> {
    let conn = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        c = tokio::time::timeout(BROKER_CONNECT_TIMEOUT, Connection::connect(&s.url, ConnectionProperties::default())) => c.map_err(|_| "connect: no AMQP handshake within 15 s".to_string())?.map_err(|e| format!("connect: {e}"))?,
    };
    for x in [OTS_FIREHOSE, OTS_GROUPS, OTS_MISSIONS] {
        check_exchange(&conn, x).await?;
    }
    let ch = conn.create_channel().await.map_err(|e| format!("channel: {e}"))?;
    ch.basic_qos(256, BasicQosOptions::default()).await.map_err(|e| format!("qos: {e}"))?;
    let q = ch.queue_declare("".into(), QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }, FieldTable::default()).await.map_err(|e| format!("queue_declare: {e}"))?;
    let name = q.name().clone();
    let binds = [(OTS_FIREHOSE.0, ""), (OTS_MISSIONS.0, "missions"), (OTS_MISSIONS.0, "missions.#"), (OTS_GROUPS.0, "#")];
    for (x, key) in binds {
        ch.queue_bind(name.clone(), x.into(), key.into(), QueueBindOptions::default(), FieldTable::default()).await.map_err(|e| format!("bind {x} {key:?}: {e}"))?;
    }
    let mut consumer = ch.basic_consume(name, format!("takgate-{}", s.uid).as_str().into(), BasicConsumeOptions::default(), FieldTable::default()).await.map_err(|e| format!("consume: {e}"))?;
    tracing::info!(link = %s.link, "OpenTAKServer bus connected");
    loop {
        let d = tokio::select! {
            _ = cancel.cancelled() => {
                let _ = conn.close(200, "shutdown".into()).await;
                return Ok(());
            }
            d = consumer.next() => match d {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(format!("consume: {e}")),
                None => return Err("the broker cancelled our consumer".into()),
            },
        };
        LinkCounters::add(&s.counters.bytes_in, d.data.len() as u64);
        if let Some((ev, sender)) = taken(s, clients, d.exchange.as_str(), &d.data) {
            // A mission change is in the store before its delivery is acknowledged.
            if let Some(m) = prepare(&router.node_id, Origin { id, policy: &s.policy, counters: &s.counters }, ev, None) {
                if m.facts.is_mission {
                    // a mission first heard of here: its creation, from OTS's API, goes first
                    if let Some(api) = api {
                        for name in m.facts.missions.iter().filter(|n| !missions.store.mission_exists(n).unwrap_or(true)) {
                            learn_mission(s, api, missions, id, name).await;
                        }
                    }
                    if let Some(api) = api {
                        fetch_files(s, api, missions, &m.event).await;
                        fetch_logs(s, api, missions, &m.event, id).await;
                    }
                    let mut rec = Message::new(m.event.clone(), id);
                    rec.sender = sender.filter(|u| !u.is_empty());
                    if let Err(e) = missions.intake(&rec) {
                        tracing::error!(link = %s.link, uid = %m.event.uid, "mission change not recorded: {e}");
                    }
                }
                router.route(m).await;
            }
        }
        d.ack(BasicAckOptions::default()).await.map_err(|e| format!("ack: {e}"))?;
    }
}

/// What of a delivery from exchange `x` takgate takes: the event and its sender. Not our
/// own clients' events; from `groups` only mission creation (the rest is on `firehose`
/// too); from `firehose` no direct message (OTS routes those to their addressees, ours
/// through our clients).
fn taken(s: &OtsSettings, clients: &Clients, x: &str, data: &[u8]) -> Option<(CotEvent, Option<String>)> {
    let (sender, ev) = match decode_envelope(data) {
        Ok(v) => v,
        Err(e) => {
            log_bad_input(LinkCounters::inc(&s.counters.decode_errors), &s.link, &crate::config::redact_address(&s.url), &e);
            return None;
        }
    };
    if sender.as_deref().is_some_and(|u| clients.is_ours(u)) {
        return None;
    }
    let ev = ev?;
    let t = ev.cot_type.as_str();
    let keep = match x {
        "groups" => t == "t-x-m-n",
        "firehose" => !t.starts_with("t-x-m") && !crate::router::message::Facts::of(&ev).is_direct(),
        _ => true,
    };
    keep.then_some((ev, sender))
}

/// The XML takgate writes to OpenTAKServer for `m` (no XML declaration).
fn wire(m: &Message) -> Bytes {
    let b = m.encoded(WireFormat::Xml);
    Bytes::copy_from_slice(b.strip_prefix(XML_DECL).unwrap_or(b))
}

/// At most this many contacts are remembered.
const MAX_CONTACTS: usize = 10_000;

/// Delivers what the router gives the link into OpenTAKServer.
struct Engine {
    s: Arc<OtsSettings>,
    clients: Arc<Clients>,
    api: Option<Arc<api::Api>>,
    missions: Arc<Missions>,
    /// Contacts seen, by uid (with the position report that registers them).
    contacts: HashMap<String, Who>,
    /// The contact of each origin that is one client (a stream connection), by link id.
    by_origin: HashMap<u64, String>,
    /// Missions known to exist on OpenTAKServer.
    known_missions: std::collections::HashSet<String>,
}

impl Engine {
    async fn run(mut self, mut rx: mpsc::Receiver<Arc<Message>>, cancel: CancellationToken, id: u64) {
        let mut poll = tokio::time::interval(self.s.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                m = rx.recv() => match m {
                    Some(m) => self.handle(m).await,
                    None => return,
                },
                _ = poll.tick(), if self.api.is_some() => self.poll_missions(id).await,
            }
        }
    }

    /// Missions created on OpenTAKServer that takgate has not heard of are recorded (and
    /// federated) as OTS announces creations: with their creator, guid and tool.
    async fn poll_missions(&mut self, id: u64) {
        let Some(api) = &self.api else { return };
        let list = match api.missions("public").await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(link = %self.s.link, "listing OpenTAKServer's missions: {e}");
                return;
            }
        };
        for m in list {
            let name = m["name"].as_str().unwrap_or_default().to_owned();
            if name.is_empty() {
                continue;
            }
            self.known_missions.insert(name.clone());
            if !self.missions.store.mission_exists(&name).unwrap_or(true) {
                record_creation(&self.s, &self.missions, id, &m);
            }
        }
    }

    async fn handle(&mut self, m: Arc<Message>) {
        let ev = &m.event;
        let t = ev.cot_type.as_str();
        if t == "t-x-d-d" {
            // A contact left: its client disconnects, which OpenTAKServer announces itself.
            if let Some(uid) = crate::cot::fragment::find_attr(&ev.detail.xml, "link", "uid") {
                self.contacts.remove(&uid);
                self.clients.close(&uid);
            }
            return;
        }
        if t.starts_with("t-x-m") {
            self.apply_missions(&m).await;
            return;
        }
        if let (true, Some(cs)) = (m.facts.client_sa, &m.facts.callsign) {
            if self.contacts.len() < MAX_CONTACTS || self.contacts.contains_key(&ev.uid) {
                self.contacts.entry(ev.uid.clone()).or_insert_with(|| Who { uid: ev.uid.clone(), callsign: cs.clone(), sa: wire(&m) });
                if self.by_origin.len() < MAX_CONTACTS {
                    self.by_origin.insert(m.origin, ev.uid.clone());
                }
            }
        }
        let who = self.sender(&m);
        for name in &m.facts.missions {
            self.ensure_mission(name, &who.uid, "", "").await;
        }
        self.clients.send(&who, wire(&m));
    }

    /// Who sends `m` into OpenTAKServer: the contact itself, the contact a marker or chat
    /// names as its author, or the contact of the connection it came on; else takgate.
    fn sender(&self, m: &Message) -> Who {
        let ev = &m.event;
        let d = &ev.detail.xml;
        let pp = || match (crate::cot::fragment::find_attr(d, "link", "relation"), crate::cot::fragment::find_attr(d, "link", "uid")) {
            (Some(r), Some(u)) if r == "p-p" => Some(u),
            _ => None,
        };
        let candidates = [m.facts.client_sa.then(|| ev.uid.clone()), pp(), crate::cot::fragment::find_attr(d, "chatgrp", "uid0"), self.by_origin.get(&m.origin).cloned()];
        candidates.into_iter().flatten().find_map(|u| self.contacts.get(&u).filter(|_| self.clients.has_room_for(&u)).cloned()).unwrap_or_else(|| own_client(&self.s))
    }

    /// The creator OpenTAKServer accepts for a mission: an EUD it knows.
    async fn creator_for(&self, uid: &str) -> String {
        if !uid.is_empty() && self.clients.is_registered(uid) {
            return uid.to_owned();
        }
        // takgate's own client registers a few seconds after start
        for _ in 0..50 {
            if self.clients.is_registered(&self.s.uid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.s.uid.clone()
    }

    async fn ensure_mission(&mut self, name: &str, creator: &str, tool: &str, description: &str) {
        if self.known_missions.contains(name) {
            return;
        }
        let Some(api) = &self.api else { return };
        let creator = self.creator_for(creator).await;
        match api.ensure_mission(name, &creator, tool, description).await {
            Ok(created) => {
                tracing::info!(link = %self.s.link, mission = name, created, "mission on OpenTAKServer");
                self.known_missions.insert(name.to_owned());
            }
            Err(e) => tracing::warn!(link = %self.s.link, mission = name, "cannot create the mission on OpenTAKServer: {e}"),
        }
    }

    /// Mission changes takgate learned (from federates, or its own clients) applied to
    /// OpenTAKServer's missions.
    async fn apply_missions(&mut self, m: &Message) {
        if self.api.is_none() {
            return;
        }
        if m.event.cot_type == "t-x-m-c-l" {
            // takgate's notice of a log change names the entry; its text is in the store
            let d = &m.event.detail.xml;
            let (Some(uid), Some(t)) = (crate::cot::fragment::find_attr(d, "takgateLogChange", "entryUid"), crate::cot::fragment::find_attr(d, "takgateLogChange", "type")) else { return };
            let Ok(t) = t.parse::<ChangeType>() else { return };
            let entry = self.missions.store.log(&uid).ok().flatten();
            let mission = entry.as_ref().map(|e| e.mission.clone()).or_else(|| crate::cot::fragment::find_attr(d, "mission", "name")).unwrap_or_default();
            let creator = crate::cot::fragment::find_attr(d, "mission", "authorUid").unwrap_or_default();
            let c = Change { content_uid: uid, creator_uid: creator, log_entry: entry, ..Change::new(&mission, t) };
            self.apply(&c).await;
            return;
        }
        for c in crate::missions::announced_changes(&m.event) {
            self.apply(&c).await;
        }
    }

    async fn apply(&mut self, c: &Change) {
        let meta = c.mission_meta.clone().unwrap_or_default();
        match c.change_type {
            ChangeType::CreateMission => self.ensure_mission(&c.mission, &c.creator_uid, &meta.tool, &meta.description).await,
            ChangeType::AddContent => {
                self.ensure_mission(&c.mission, &c.creator_uid, &meta.tool, &meta.description).await;
                if !c.content_uid.is_empty() {
                    self.add_item(c).await;
                }
                if !c.content_hash.is_empty() {
                    let creator = self.creator_for(&c.creator_uid).await;
                    if let Some(api) = &self.api {
                        upload_file(&self.s, api, &self.missions, &c.content_hash, &creator).await;
                        if let Err(e) = api.add_hashes(&c.mission, &creator, std::slice::from_ref(&c.content_hash)).await {
                            tracing::warn!(link = %self.s.link, mission = %c.mission, hash = %c.content_hash, "file not added to the OpenTAKServer mission (OTS must hold the file): {e}");
                        }
                    }
                }
            }
            ChangeType::RemoveContent => {
                let creator = self.creator_for(&c.creator_uid).await;
                if let Some(api) = &self.api {
                    if let Err(e) = api.remove(&c.mission, &creator, &c.content_uid, &c.content_hash).await {
                        tracing::warn!(link = %self.s.link, mission = %c.mission, "content not removed on OpenTAKServer: {e}");
                    }
                }
            }
            ChangeType::DeleteMission => {
                let creator = self.creator_for(&c.creator_uid).await;
                if let Some(api) = &self.api {
                    if let Err(e) = api.delete_mission(&c.mission, &creator).await {
                        tracing::warn!(link = %self.s.link, mission = %c.mission, "mission not deleted on OpenTAKServer: {e}");
                    }
                }
                self.known_missions.remove(&c.mission);
            }
            ChangeType::AddUpdateLogEntry => {
                let (Some(e), Some(api)) = (c.log_entry.clone(), self.api.clone()) else { return };
                self.ensure_mission(&c.mission, &c.creator_uid, &meta.tool, &meta.description).await;
                let creator = self.creator_for(&c.creator_uid).await;
                if let Err(e) = api.add_log(&c.mission, &creator, &e).await {
                    tracing::warn!(link = %self.s.link, mission = %c.mission, "log entry not added on OpenTAKServer: {e}");
                }
            }
            // OpenTAKServer 1.7.14 has no API to delete a log entry.
            ChangeType::DeleteLogEntry => tracing::info!(link = %self.s.link, mission = %c.mission, entry = %c.content_uid, "log entry deletion not applied on OpenTAKServer (its API has no delete)"),
            ChangeType::Relayed | ChangeType::CreateDataFeed | ChangeType::DeleteDataFeed => {}
        }
    }

    /// A CoT item joins an OpenTAKServer mission the way OTS's own clients add one: its
    /// CoT, addressed to the mission, from its creator.
    async fn add_item(&mut self, c: &Change) {
        let cot = match self.missions.store.item_cot(&c.mission, &c.content_uid) {
            Ok(Some(x)) if !x.is_empty() => x,
            _ if !c.cot_xml.is_empty() => c.cot_xml.clone(),
            _ => {
                tracing::warn!(link = %self.s.link, mission = %c.mission, uid = %c.content_uid, "no CoT for the mission item: not added to OpenTAKServer");
                return;
            }
        };
        let Ok(mut ev) = xml::decode(cot.as_bytes()) else { return };
        if !crate::router::message::Facts::of(&ev).missions.contains(&c.mission) {
            ev.detail.xml.push_str(&format!(r#"<marti><dest mission="{}"/></marti>"#, crate::cot::fragment::escape_attr_string(&c.mission)));
        }
        let who = self.contacts.get(&c.creator_uid).filter(|_| self.clients.has_room_for(&c.creator_uid)).cloned().unwrap_or_else(|| own_client(&self.s));
        self.clients.send(&who, without_decl(xml::encode(&ev)));
    }
}

/// Hands a file we hold to OpenTAKServer before its hash is added to an OTS mission (OTS
/// adds only hashes it holds): uploaded as its Data Sync clients upload.
async fn upload_file(s: &OtsSettings, api: &api::Api, missions: &Missions, hash: &str, creator: &str) {
    let files = missions.files.clone();
    let h = hash.to_owned();
    let Ok(Ok(Some((meta, bytes)))) = tokio::task::spawn_blocking(move || files.read(&h)).await else {
        tracing::warn!(link = %s.link, %hash, "file not held by takgate: OpenTAKServer cannot be given it");
        return;
    };
    let name = if meta.name.is_empty() { format!("{hash}.bin") } else { meta.name.clone() };
    match api.upload(&name, creator, &meta.mime, bytes).await {
        Ok(h) if h == hash => tracing::info!(link = %s.link, %hash, %name, "file handed to OpenTAKServer"),
        Ok(h) => tracing::warn!(link = %s.link, %hash, recorded = %h, %name, "OpenTAKServer recorded the file under another hash"),
        Err(e) => tracing::warn!(link = %s.link, %hash, %name, "file not handed to OpenTAKServer (its ALLOWED_EXTENSIONS may refuse the name): {e}"),
    }
}

/// Files an OpenTAKServer mission change adds that takgate does not hold yet, fetched from
/// OTS before the change is recorded, so federates get them (`create resource`) with it.
async fn fetch_files(s: &OtsSettings, api: &api::Api, missions: &Missions, ev: &crate::cot::CotEvent) {
    if !ev.cot_type.starts_with("t-x-m-c") {
        return;
    }
    for mut f in crate::missions::announce::announced_files(ev) {
        let Some(hash) = crate::missions::files::normalize_hash(&f.hash) else { continue };
        if missions.files.meta(&hash).ok().flatten().is_some() {
            continue;
        }
        match api.content(&hash).await {
            Ok(bytes) => {
                f.hash = hash.clone();
                f.origin = s.link.clone();
                f.submitted_ms = 0;
                match missions.store_file(bytes, f).await {
                    Ok((m, _)) => tracing::info!(link = %s.link, %hash, name = %m.name, size = m.size, "file fetched from OpenTAKServer"),
                    Err(e) => tracing::warn!(link = %s.link, %hash, "file from OpenTAKServer not stored: {e}"),
                }
            }
            Err(e) => tracing::warn!(link = %s.link, %hash, "file not fetched from OpenTAKServer: {e}"),
        }
    }
}

/// OpenTAKServer announces a log change as a bare notice (`t-x-m-c-l`): its log is read
/// from the API and entries takgate has not seen are recorded as local changes. An entry
/// takgate itself put there (OTS gives it a new uid, and maybe another author) is known by
/// its mission, text and date-time group.
async fn fetch_logs(s: &OtsSettings, api: &api::Api, missions: &Missions, ev: &crate::cot::CotEvent, link: u64) {
    if ev.cot_type != "t-x-m-c-l" {
        return;
    }
    let d = &ev.detail.xml;
    let Some(name) = crate::cot::fragment::find_attr(d, "mission", "name").filter(|n| !n.is_empty()) else { return };
    let author = crate::cot::fragment::find_attr(d, "mission", "authorUid").unwrap_or_default();
    let list = match api.logs(&name, &author).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(link = %s.link, mission = %name, "OpenTAKServer's mission log not read: {e}");
            return;
        }
    };
    let known = missions.store.logs(&name).unwrap_or_default();
    for v in list {
        let mut e = crate::missions::rol::parse_log_entry(&v);
        if e.mission.is_empty() {
            e.mission = name.clone();
        }
        let same = |k: &crate::store::LogEntry| k.entry_uid == e.entry_uid || (k.content == e.content && (k.dtg_ms - e.dtg_ms).abs() < 1000);
        if e.entry_uid.is_empty() || known.iter().any(same) {
            continue;
        }
        if let Err(err) = missions.local_log_from(e, false, link).await {
            tracing::warn!(link = %s.link, mission = %name, "log entry from OpenTAKServer not recorded: {err}");
        }
    }
}

/// Records the creation of OpenTAKServer's mission `name` (as its API shows it).
async fn learn_mission(s: &OtsSettings, api: &api::Api, missions: &Missions, id: u64, name: &str) {
    match api.mission(name).await {
        Ok(v) => {
            if let Some(m) = v["data"].as_array().and_then(|d| d.first()) {
                record_creation(s, missions, id, m);
            }
        }
        Err(e) => tracing::debug!(link = %s.link, mission = name, "mission not found on OpenTAKServer's API: {e}"),
    }
}

/// Records a CREATE_MISSION for `m` (OTS's mission JSON) with its creator, guid, tool and
/// description, as a local change (it is federated).
fn record_creation(s: &OtsSettings, missions: &Missions, id: u64, m: &serde_json::Value) {
    let f = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
    let name = f("name");
    let mut ev = CotEvent::new(crate::cot::random_uid(), "t-x-m-n", "h-g-i-g-o", CotTime::now(), 60);
    let a = crate::cot::fragment::escape_attr_string;
    ev.detail.xml = format!(r#"<mission type="CREATE" tool="{}" name="{}" guid="{}" authorUid="{}" description="{}"/>"#, a(&f("tool")), a(&name), a(&f("guid")), a(&f("creatorUid")), a(&f("description")));
    match missions.intake(&Message::new(ev, id)) {
        Ok(()) => tracing::info!(link = %s.link, mission = %name, creator = %f("creatorUid"), "mission created on OpenTAKServer"),
        Err(e) => tracing::error!(link = %s.link, mission = %name, "mission not recorded: {e}"),
    }
}
