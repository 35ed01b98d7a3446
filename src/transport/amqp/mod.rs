//! The `amqp` link (RabbitMQ with lapin), in two modes.
//!
//! * `opentakserver`: OpenTAKServer's federation engine, in [`super::ots`].
//! * `cluster` (here): takgate nodes share one broker. Exchanges and queues, for exchange
//!   `E` (default `takgate`) and node `N`:
//!   - `E.node.N` (topic, durable): what node N publishes, batches of its local links'
//!     events ([`batch`]) with routing key `cot.<group>.<type>`. The router never hands a
//!     link its own input, so what came from the broker is not published again.
//!   - `E.q.N` (durable queue, with `x-expires`, `x-max-length`, `x-max-length-bytes`,
//!     `x-overflow`, optionally quorum): node N's inbox, bound with N's `bind_keys` to every
//!     *other* node's exchange and to `E` itself (where plain producers publish single
//!     events). Nothing N publishes reaches its own queue: no self-delivery.
//!   - `E` (topic, durable) also carries membership: every node announces itself
//!     (`members.<N>`, JSON: queue, bind keys, links, clients, rates, and the members it
//!     knows) on connect and every `announce_secs` ([`members`]). A node binds its queue to
//!     each member's exchange and each member's queue to its own exchange, so a node that
//!     joins reaches the others (even those switched off whose queue still waits) before it
//!     publishes (`join_wait_secs`).
//!
//! Publisher confirms: an event leaves the buffer only when the broker acknowledged its
//! batch (confirms pipelined, many outstanding). While the broker is unreachable events are
//! buffered up to `buffer_events`, then dropped and counted; the link reconnects with
//! backoff and declares its queue and bindings again. Deliveries are acknowledged in bulk
//! after they were routed; redelivery after a reconnect is at-least-once and the router's
//! dedup window makes it exactly-once toward each link.

pub mod batch;
pub mod members;

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::codec::WireFormat;
use crate::config::link::{QueueOverflow, QueueType};
use crate::config::{AmqpKind, AmqpLink, AmqpMode, LinkConfig};
use crate::cot::xml;
use crate::link::backoff::Attempts;
use crate::link::ingest::{ingest, Origin};
use crate::link::{log_bad_input, Backoff, Codec, LinkCounters, LinkCtx, LinkStatus, StartError};
use crate::missions::Missions;
use crate::router::{Message, PeerInfo, PeerPolicy, RouterHandle};
use members::{Announce, Directory, Known};

/// Header carrying the publishing node's id in cluster mode.
pub const NODE_HEADER: &str = "takgate-node";

/// How a node's queue is declared.
#[derive(Debug, Clone)]
pub struct QueueArgs {
    pub expiry: Duration,
    pub max_messages: usize,
    pub max_bytes: usize,
    pub overflow: QueueOverflow,
    pub kind: QueueType,
}

impl QueueArgs {
    fn table(&self) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-expires".into(), AMQPValue::LongLongInt(self.expiry.as_millis().min(i64::MAX as u128) as i64));
        t.insert("x-max-length".into(), AMQPValue::LongLongInt(self.max_messages as i64));
        t.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(self.max_bytes as i64));
        t.insert("x-overflow".into(), AMQPValue::LongString(LongString::from(self.overflow.as_str())));
        if self.kind == QueueType::Quorum {
            t.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
        }
        t
    }
}

#[derive(Debug)]
pub struct AmqpSettings {
    pub link: String,
    pub url: String,
    pub node_id: String,
    pub exchange: String,
    pub bind_keys: Vec<String>,
    pub buffer: usize,
    pub queue_depth: usize,
    pub backoff: Backoff,
    pub policy: Arc<PeerPolicy>,
    pub counters: Arc<LinkCounters>,
    /// Mission traffic from the broker is written to the mission store before its delivery
    /// is acknowledged, so a crash cannot lose an acknowledged change.
    pub missions: Option<Arc<crate::missions::Missions>>,
    pub batch_events: usize,
    pub batch_wait: Duration,
    pub queue: QueueArgs,
    pub announce_every: Duration,
    pub join_wait: Duration,
}

impl AmqpSettings {
    fn new(l: &LinkConfig, a: &AmqpLink, ctx: &LinkCtx, missions: &Arc<Missions>) -> Result<AmqpSettings, String> {
        let node_id = ctx.router.node_id.to_string();
        let AmqpKind::Cluster(c) = &a.kind else { return Err("not a cluster link".into()) };
        let exchange = c.exchange.clone().unwrap_or_else(|| "takgate".into());
        let bind_keys = if c.bind_keys.is_empty() { vec!["cot.#".to_string()] } else { c.bind_keys.clone() };
        let secs = |s: Option<crate::config::link::Secs>, d: f64| Duration::from_secs_f64(s.map(|s| s.0).unwrap_or(d));
        Ok(AmqpSettings {
            link: l.name.clone(),
            url: a.url.clone(),
            node_id,
            exchange,
            bind_keys,
            buffer: a.opts.buffer_events.map(|c| c.0).unwrap_or(100_000),
            queue_depth: l.queue_depth.unwrap_or(ctx.queue_depth),
            backoff: Backoff::from_config(&a.reconnect, 0.5, 30.0),
            policy: Arc::new(PeerPolicy::new(&l.policy, false)?),
            counters: Arc::default(),
            missions: Some(missions.clone()),
            batch_events: c.batch_events.map(|c| c.0).unwrap_or(256),
            batch_wait: secs(c.batch_wait_secs, 0.002),
            queue: QueueArgs {
                expiry: secs(c.queue_expiry_secs, 86_400.0),
                max_messages: c.queue_max_messages.map(|c| c.0).unwrap_or(100_000),
                max_bytes: c.queue_max_bytes.map(|c| c.0).unwrap_or(1 << 30),
                overflow: c.queue_overflow.unwrap_or_default(),
                kind: c.queue_type.unwrap_or_default(),
            },
            announce_every: secs(c.announce_secs, 5.0),
            join_wait: secs(c.join_wait_secs, 0.5),
        })
    }

    /// Where `node` publishes.
    fn exchange_of(&self, node: &str) -> String {
        format!("{}.node.{}", self.exchange, node)
    }

    /// This node's queue.
    fn queue_name(&self) -> String {
        format!("{}.q.{}", self.exchange, self.node_id)
    }

    fn me(&self) -> Known {
        Known { node: self.node_id.clone(), queue: self.queue_name(), bind_keys: self.bind_keys.clone() }
    }
}

/// Starts an amqp link.
pub fn start(l: &LinkConfig, a: &AmqpLink, ctx: &LinkCtx, missions: &Arc<Missions>) -> Result<LinkStatus, StartError> {
    if a.mode() == AmqpMode::Opentakserver {
        return super::ots::start(l, a, ctx, missions);
    }
    let s = Arc::new(AmqpSettings::new(l, a, ctx, missions).map_err(|e| StartError::new(&l.name, e))?);
    let dir = Arc::new(Directory::new(&l.name, &s.exchange, &s.node_id, s.announce_every));
    ctx.clusters.add(dir.clone());
    let status = LinkStatus { name: l.name.clone(), transport: l.transport(), mode: l.mode(), address: crate::config::redact_address(&a.url), local_addr: None, counters: s.counters.clone(), connection: None };
    tracing::info!(link = %l.name, exchange = %s.exchange, queue = %s.queue_name(), "amqp cluster link starting");
    ctx.tracker.spawn(run(s, dir, ctx.router.clone(), ctx.cancel.clone()));
    Ok(status)
}

/// A routing key word: no '.', '*' or '#'.
fn word(s: &str) -> String {
    let w: String = s.chars().map(|c| if matches!(c, '.' | '*' | '#') { '_' } else { c }).collect();
    if w.is_empty() {
        "_".into()
    } else {
        w
    }
}

/// `cot.<group>.<type words>`: e.g. `cot.Cyan.a.f.G.U.C`.
pub fn cluster_key(m: &Message) -> String {
    let mut k = format!("cot.{}", word(m.facts.group.as_deref().unwrap_or("")));
    for part in m.event.cot_type.split('-') {
        k.push('.');
        k.push_str(&word(part));
    }
    k.truncate(255);
    k
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Runs the link until `cancel`.
pub async fn run(s: Arc<AmqpSettings>, dir: Arc<Directory>, router: RouterHandle, cancel: CancellationToken) {
    let id = router.next_id();
    let (tx, mut rx) = mpsc::channel::<Arc<Message>>(s.queue_depth);
    let remote = s.url.split('@').next_back().unwrap_or_default().to_owned();
    router.attach(PeerInfo::output(id, &s.link, "amqp", remote, Codec::AmqpXml, s.policy.clone(), tx, s.counters.clone(), &cancel)).await;
    let mut pending = Pending::default();
    let mut attempts = Attempts::new(s.backoff);
    loop {
        let started = Instant::now();
        match session(&s, &dir, &router, id, &mut rx, &mut pending, &cancel).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(link = %s.link, "broker: {e}"),
        }
        let delay = attempts.next_delay(started.elapsed());
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    router.detach(id).await;
                    return;
                }
                _ = tokio::time::sleep_until(until) => break,
                m = rx.recv() => match m {
                    Some(m) => pending.buffer(&s, m),
                    None => return,
                },
            }
        }
    }
    router.detach(id).await;
}

/// Events waiting to be published, and since when the oldest has waited.
#[derive(Default)]
struct Pending {
    q: VecDeque<Arc<Message>>,
    since: Option<tokio::time::Instant>,
}

impl Pending {
    fn buffer(&mut self, s: &AmqpSettings, m: Arc<Message>) {
        if self.q.len() < s.buffer {
            if self.q.is_empty() {
                self.since = Some(tokio::time::Instant::now());
            }
            self.q.push_back(m);
        } else {
            let n = s.counters.drops_queue_full.fetch_add(1, Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(link = %s.link, dropped = n + 1, "broker unreachable and buffer full: dropping events");
            }
        }
    }

    /// Unconfirmed events back at the front, in order.
    fn requeue(&mut self, ms: Vec<Arc<Message>>) {
        for m in ms.into_iter().rev() {
            self.q.push_front(m);
        }
        if !self.q.is_empty() {
            self.since.get_or_insert_with(tokio::time::Instant::now);
        }
    }

    /// When the next batch goes: at once when a batch is full, else when the oldest has
    /// waited `batch_wait`.
    fn due(&self, s: &AmqpSettings) -> Option<tokio::time::Instant> {
        if self.q.is_empty() {
            return None;
        }
        if self.q.len() >= s.batch_events {
            return self.since.or_else(|| Some(tokio::time::Instant::now()));
        }
        self.since.map(|t| t + s.batch_wait)
    }

    /// The next batch: the longest run of events with one routing key, up to the limits.
    fn take_batch(&mut self, s: &AmqpSettings) -> Option<(String, Vec<Arc<Message>>)> {
        let first = self.q.front()?.clone();
        let key = cluster_key(&first);
        // Same group and type: same key (without building each key).
        let same = |m: &Message| m.facts.group == first.facts.group && m.event.cot_type == first.event.cot_type;
        let mut out = vec![];
        let mut bytes = 0;
        while let Some(m) = self.q.front() {
            if out.len() >= s.batch_events || (bytes > 0 && bytes + m.encoded(WireFormat::Xml).len() > MAX_BATCH_BYTES) || !same(m) {
                break;
            }
            bytes += m.encoded(WireFormat::Xml).len() + 4;
            out.extend(self.q.pop_front());
        }
        self.since = if self.q.is_empty() { None } else { Some(tokio::time::Instant::now()) };
        Some((key, out))
    }
}

/// A batch's body stops growing past this many bytes.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// The channels of one broker connection.
struct Channels {
    conn: Connection,
    publish: Channel,
    /// Bindings and announcements (no confirms).
    ctl: Channel,
}

async fn session(s: &AmqpSettings, dir: &Directory, router: &RouterHandle, id: u64, rx: &mut mpsc::Receiver<Arc<Message>>, pending: &mut Pending, cancel: &CancellationToken) -> Result<(), String> {
    // A broker that is starting can take the TCP connection and not finish the AMQP
    // handshake: without a deadline the link would wait there for good.
    let conn = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        c = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&s.url, ConnectionProperties::default())) => match c {
            Ok(c) => c.map_err(|e| err("connect", e))?,
            Err(_) => return Err(format!("broker: connect: no AMQP handshake within {} s", CONNECT_TIMEOUT.as_secs())),
        },
    };
    let publish = conn.create_channel().await.map_err(|e| err("channel", e))?;
    publish.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| err("confirm_select", e))?;
    let consume = conn.create_channel().await.map_err(|e| err("channel", e))?;
    consume.basic_qos(PREFETCH, BasicQosOptions::default()).await.map_err(|e| err("qos", e))?;
    let ctl = conn.create_channel().await.map_err(|e| err("channel", e))?;
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ctl.exchange_declare(s.exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default()).await.map_err(|e| err("exchange_declare", e))?;
    ctl.exchange_declare(s.exchange_of(&s.node_id).as_str().into(), ExchangeKind::Topic, durable, FieldTable::default()).await.map_err(|e| err("exchange_declare", e))?;
    // A durable queue per node: what others publish while this node reconnects waits (until
    // it expires), bound to the cluster exchange for plain producers.
    let qname = s.queue_name();
    let q = ctl.queue_declare(qname.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, s.queue.table()).await.map_err(|e| {
        if e.to_string().contains("PRECONDITION_FAILED") {
            format!("queue_declare {qname}: {e} (the queue exists with other arguments: delete it, or give it back its queue_expiry_secs, queue_max_messages, queue_max_bytes, queue_overflow and queue_type)")
        } else {
            err("queue_declare", e)
        }
    })?;
    for k in &s.bind_keys {
        ctl.queue_bind(q.name().clone(), s.exchange.as_str().into(), k.as_str().into(), QueueBindOptions::default(), FieldTable::default()).await.map_err(|e| err("queue_bind", e))?;
    }
    // Membership: a queue of our own for the announcements, gone with the connection.
    let mq = consume.queue_declare("".into(), QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }, FieldTable::default()).await.map_err(|e| err("queue_declare", e))?;
    consume.queue_bind(mq.name().clone(), s.exchange.as_str().into(), "members.*".into(), QueueBindOptions::default(), FieldTable::default()).await.map_err(|e| err("queue_bind", e))?;
    let mut announcements = consume.basic_consume(mq.name().clone(), format!("takgate-members-{}", s.node_id).as_str().into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await.map_err(|e| err("consume", e))?;
    let mut consumer = consume.basic_consume(q.name().clone(), format!("takgate-{}", s.node_id).as_str().into(), BasicConsumeOptions::default(), FieldTable::default()).await.map_err(|e| err("consume", e))?;
    let mut ch = Channels { conn, publish, ctl };
    // The members we knew: bound again (a no-op for bindings that survived).
    for k in dir.known() {
        bind_member(s, dir, &ch, &k).await;
    }
    announce(s, dir, router, &ch, true, false).await?;
    tracing::info!(link = %s.link, buffered = pending.q.len(), members = dir.known().len(), "broker connected");
    let mut inflight: InFlight = VecDeque::new();
    let joined = tokio::time::Instant::now() + s.join_wait;
    let result = pump(s, dir, router, id, rx, pending, cancel, &mut ch, &mut consumer, &mut announcements, &mut inflight, joined).await;
    // Whatever the broker did not confirm goes back to the front of the buffer, in order.
    let unconfirmed: Vec<Arc<Message>> = inflight.into_iter().flat_map(|(_, ms)| ms).collect();
    pending.requeue(unconfirmed);
    if result.is_ok() {
        let _ = announce(s, dir, router, &ch, false, true).await;
        let _ = ch.conn.close(200, "shutdown".into()).await;
    }
    result
}

/// Binds our queue to `k`'s exchange and `k`'s queue to ours (each with its owner's keys).
/// A member whose queue is gone (expired) is forgotten; the bindings use a channel of their
/// own, since the broker closes a channel on a missing queue.
async fn bind_member(s: &AmqpSettings, dir: &Directory, ch: &Channels, k: &Known) {
    let r = async {
        let c = ch.conn.create_channel().await?;
        let theirs = s.exchange_of(&k.node);
        c.exchange_declare(theirs.as_str().into(), ExchangeKind::Topic, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await?;
        for key in &s.bind_keys {
            c.queue_bind(s.queue_name().as_str().into(), theirs.as_str().into(), key.as_str().into(), QueueBindOptions::default(), FieldTable::default()).await?;
        }
        let ours = s.exchange_of(&s.node_id);
        for key in &k.bind_keys {
            c.queue_bind(k.queue.as_str().into(), ours.as_str().into(), key.as_str().into(), QueueBindOptions::default(), FieldTable::default()).await?;
        }
        let _ = c.close(200, "bound".into()).await;
        Ok::<(), lapin::Error>(())
    }
    .await;
    match r {
        Ok(()) => tracing::info!(link = %s.link, member = %k.node, "cluster member bound"),
        Err(e) => {
            tracing::info!(link = %s.link, member = %k.node, queue = %k.queue, "cluster member forgotten: {e}");
            dir.forget(&k.node);
        }
    }
}

/// Announces this node (with `hello`: the others answer with theirs at once).
async fn announce(s: &AmqpSettings, dir: &Directory, router: &RouterHandle, ch: &Channels, hello: bool, leaving: bool) -> Result<(), String> {
    let stats = router.stats().await;
    let mut links: Vec<String> = stats.iter().map(|p| p.link.clone()).collect();
    links.sort();
    links.dedup();
    let clients = stats.iter().filter(|p| matches!(p.transport, "tcp" | "tls" | "quic")).count();
    let (rate_in, rate_out) = dir.rates(stats.iter().map(|p| (p.counters.events_in, p.counters.events_out)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)));
    let a = Announce { me: s.me(), hello, leaving, links, clients, events_in_per_s: rate_in, events_out_per_s: rate_out, known: dir.known() };
    let body = serde_json::to_vec(&a).map_err(|e| err("announce", e))?;
    dir.set_own(a);
    let props = BasicProperties::default().with_content_type("application/json".into()).with_expiration(format!("{}", (s.announce_every.as_millis() * 3).max(1000)).as_str().into());
    ch.ctl.basic_publish(s.exchange.as_str().into(), format!("members.{}", word(&s.node_id)).as_str().into(), BasicPublishOptions::default(), &body, props).await.map_err(|e| err("announce", e))?;
    Ok(())
}

/// An announcement from the broker: a member noted (and bound when it is new), the members
/// it knows learnt, and a newcomer answered.
async fn heard(s: &AmqpSettings, dir: &Directory, router: &RouterHandle, ch: &Channels, data: &[u8], answered: &mut Option<Instant>) -> Result<(), String> {
    let a: Announce = match serde_json::from_slice(data) {
        Ok(a) => a,
        Err(e) => {
            log_bad_input(s.counters.decode_errors.fetch_add(1, Relaxed), &s.link, "members", &format!("a membership announcement that does not parse: {e}"));
            return Ok(());
        }
    };
    if a.me.node == s.node_id {
        return Ok(());
    }
    let (hello, known) = (a.hello, a.known.clone());
    let me = a.me.clone();
    if dir.note(a) {
        bind_member(s, dir, ch, &me).await;
    }
    for k in known.iter().filter(|k| dir.learn(k)) {
        bind_member(s, dir, ch, k).await;
    }
    if hello && answered.is_none_or(|t| t.elapsed() > Duration::from_millis(200)) {
        *answered = Some(Instant::now());
        announce(s, dir, router, ch, false, false).await?;
    }
    Ok(())
}

/// Published batches waiting for the broker's confirm, with their events.
type InFlight = VecDeque<(std::pin::Pin<Box<lapin::PublisherConfirm>>, Vec<Arc<Message>>)>;

/// How long connecting to the broker (TCP and the AMQP handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How many batches may be unconfirmed at once.
const WINDOW: usize = 512;

/// Unacknowledged deliveries (batches) the broker may send us.
const PREFETCH: u16 = 256;

/// Consumer deliveries routed and not yet acknowledged: acknowledged in bulk (`multiple`)
/// every ACK_EVERY, or 50 ms after the first when traffic is light.
#[derive(Default)]
struct Acks {
    last: Option<lapin::message::Delivery>,
    n: usize,
    by: Option<tokio::time::Instant>,
}

impl Acks {
    async fn flush(&mut self) -> Result<(), String> {
        if let Some(d) = self.last.take() {
            d.ack(BasicAckOptions { multiple: true }).await.map_err(|e| err("ack", e))?;
        }
        self.n = 0;
        self.by = None;
        Ok(())
    }

    async fn add(&mut self, d: lapin::message::Delivery) -> Result<(), String> {
        self.n += 1;
        self.last = Some(d);
        if self.n >= ACK_EVERY {
            return self.flush().await;
        }
        self.by.get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_millis(50));
        Ok(())
    }
}

/// Deliveries acknowledged together (after they were routed).
const ACK_EVERY: usize = 64;

/// On shutdown: acknowledges what was routed, publishes what is still queued and waits for
/// its confirms, briefly.
async fn drain(s: &AmqpSettings, rx: &mut mpsc::Receiver<Arc<Message>>, pending: &mut Pending, publish: &Channel, inflight: &mut InFlight, acks: &mut Acks) -> Result<(), String> {
    let _ = acks.flush().await;
    while let Ok(m) = rx.try_recv() {
        pending.buffer(s, m);
    }
    let drained = tokio::time::timeout(Duration::from_secs(3), async {
        while !pending.q.is_empty() {
            publish_batch(s, publish, pending, inflight).await?;
        }
        while let Some((c, ms)) = inflight.pop_front() {
            settle(s, c.await, ms, pending)?;
        }
        Ok::<(), String>(())
    })
    .await;
    drained.unwrap_or(Ok(()))
}

/// A batch's confirm: its events counted; an error puts them back at the front of the
/// buffer (they go out again after the reconnect).
fn settle(s: &AmqpSettings, c: Result<Confirmation, lapin::Error>, ms: Vec<Arc<Message>>, pending: &mut Pending) -> Result<(), String> {
    let r = match c {
        Err(e) => Err(err("confirm", e)),
        Ok(Confirmation::Nack(_)) => Err("the broker refused a batch (nack: is a queue full with queue_overflow = \"reject-publish\"?)".into()),
        Ok(_) => {
            s.counters.events_out.fetch_add(ms.len() as u64, Relaxed);
            return Ok(());
        }
    };
    pending.requeue(ms);
    r
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    s: &AmqpSettings,
    dir: &Directory,
    router: &RouterHandle,
    id: u64,
    rx: &mut mpsc::Receiver<Arc<Message>>,
    pending: &mut Pending,
    cancel: &CancellationToken,
    ch: &mut Channels,
    consumer: &mut lapin::Consumer,
    announcements: &mut lapin::Consumer,
    inflight: &mut InFlight,
    joined: tokio::time::Instant,
) -> Result<(), String> {
    let mut acks = Acks::default();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + s.announce_every, s.announce_every);
    let mut answered = None;
    loop {
        let now = tokio::time::Instant::now();
        while now >= joined && inflight.len() < WINDOW && pending.due(s).is_some_and(|t| t <= tokio::time::Instant::now()) {
            publish_batch(s, &ch.publish, pending, inflight).await?;
        }
        let next = if inflight.len() < WINDOW { pending.due(s).map(|t| t.max(joined)) } else { None };
        tokio::select! {
            _ = cancel.cancelled() => return drain(s, rx, pending, &ch.publish, inflight, &mut acks).await,
            c = async { inflight.front_mut().map(|(c, _)| c).expect("guarded").await }, if !inflight.is_empty() => {
                let (_, ms) = inflight.pop_front().expect("non-empty");
                settle(s, c, ms, pending)?;
            }
            m = rx.recv(), if pending.q.len() < s.buffer => {
                let Some(m) = m else { return Ok(()) };
                pending.buffer(s, m);
                while pending.q.len() < s.buffer.min(4096) {
                    let Ok(m) = rx.try_recv() else { break };
                    pending.buffer(s, m);
                }
            }
            _ = tokio::time::sleep_until(next.unwrap_or(now)), if next.is_some() => {}
            _ = tokio::time::sleep_until(acks.by.unwrap_or(now)), if acks.last.is_some() => acks.flush().await?,
            _ = tick.tick() => {
                dir.expire(s.queue.expiry);
                announce(s, dir, router, ch, false, false).await?;
            }
            a = announcements.next() => match a {
                Some(Ok(d)) => heard(s, dir, router, ch, &d.data, &mut answered).await?,
                Some(Err(e)) => return Err(err("members", e)),
                None => return Err("the broker cancelled our membership consumer".into()),
            },
            d = consumer.next() => match d {
                Some(Ok(delivery)) => {
                    receive(s, router, id, &delivery).await;
                    acks.add(delivery).await?;
                }
                Some(Err(e)) => return Err(err("consume", e)),
                None => return Err("the broker cancelled our consumer".into()),
            },
        }
    }
}

/// Publishes the next batch and queues its confirm; on a failure its events go back.
async fn publish_batch(s: &AmqpSettings, ch: &Channel, pending: &mut Pending, inflight: &mut InFlight) -> Result<(), String> {
    let Some((key, ms)) = pending.take_batch(s) else { return Ok(()) };
    let mut body = Vec::with_capacity(ms.iter().map(|m| m.encoded(WireFormat::Xml).len() + 4).sum());
    for m in &ms {
        batch::push(&mut body, m.encoded(WireFormat::Xml));
    }
    let mut headers = batch::headers(ms.len());
    headers.insert(NODE_HEADER.into(), AMQPValue::LongString(s.node_id.as_str().into()));
    let props = BasicProperties::default().with_delivery_mode(2).with_headers(headers).with_content_type(batch::CONTENT_TYPE.into());
    match ch.basic_publish(s.exchange_of(&s.node_id).as_str().into(), key.as_str().into(), BasicPublishOptions::default(), &body, props).await {
        Ok(c) => {
            s.counters.bytes_out.fetch_add(body.len() as u64, Relaxed);
            inflight.push_back((Box::pin(c), ms));
            Ok(())
        }
        Err(e) => {
            pending.requeue(ms);
            Err(err("publish", e))
        }
    }
}

async fn receive(s: &AmqpSettings, router: &RouterHandle, id: u64, d: &lapin::message::Delivery) {
    s.counters.bytes_in.fetch_add(d.data.len() as u64, Relaxed);
    let headers = d.properties.headers().as_ref();
    let bad = |what: &dyn std::fmt::Display| {
        let n = s.counters.decode_errors.fetch_add(1, Relaxed);
        log_bad_input(n, &s.link, &crate::config::redact_address(&s.url), what);
    };
    let from = headers.and_then(|h| h.inner().get(&ShortString::from(NODE_HEADER))).and_then(|v| match v {
        AMQPValue::LongString(l) => Some(l.to_string()),
        _ => None,
    });
    if from.as_deref() == Some(s.node_id.as_str()) {
        // Only a node still on the old layout (everything on one exchange) sends us this.
        return;
    }
    let content_type = d.properties.content_type().as_ref().map(|c| c.as_str());
    let events = match batch::events(content_type, headers, &d.data) {
        Ok(e) => e,
        Err(e) => return bad(&format!("{e} (the message is dropped)")),
    };
    for data in events {
        match xml::decode(data) {
            Ok(ev) => {
                record_mission(s, id, &ev);
                ingest(router, Origin { id, policy: &s.policy, counters: &s.counters }, ev, None).await;
            }
            Err(e) => bad(&e),
        }
    }
}

/// Writes a mission change carried by `ev` to the store now, before the delivery is
/// acknowledged (the router's mission tap records it again later: a no-op, changes are
/// recorded once).
fn record_mission(s: &AmqpSettings, id: u64, ev: &crate::cot::CotEvent) {
    let Some(m) = &s.missions else { return };
    let facts = crate::router::message::Facts::of(ev);
    if facts.is_mission {
        if let Err(e) = m.intake(&Message::new(ev.clone(), id)) {
            tracing::error!(link = %s.link, uid = %ev.uid, "mission change not recorded: {e}");
        }
    }
}
