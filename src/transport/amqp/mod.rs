//! The `amqp` link (RabbitMQ with lapin), in two modes.
//!
//! * `opentakserver`: OpenTAKServer's federation engine, in [`super::ots`].
//! * `cluster` (here): takgate nodes share one durable topic exchange. Each node publishes
//!   what its local links receive (the router never hands a link its own input, so what
//!   came from the broker is not published again), with routing key `cot.<group>.<type>`
//!   and its node id in a header, and consumes a durable queue of its own bound with
//!   `bind_keys`; its own messages are dropped by node id.
//!
//! Publisher confirms: an event leaves the buffer only when the broker acknowledged it.
//! While the broker is unreachable events are buffered up to `buffer_events`, then dropped
//! and counted; the link reconnects with backoff and declares its queue and bindings again.
//! Redelivery after a reconnect is at-least-once; the router's dedup window makes it
//! exactly-once toward each link.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::codec::WireFormat;
use crate::config::{AmqpKind, AmqpLink, AmqpMode, LinkConfig};
use crate::cot::xml;
use crate::link::backoff::Attempts;
use crate::link::ingest::{ingest, Origin};
use crate::link::{log_bad_input, Backoff, Codec, LinkCounters, LinkCtx, LinkStatus, StartError};
use crate::missions::Missions;
use crate::router::{Message, PeerInfo, PeerPolicy, RouterHandle};

/// Header carrying the publishing node's id in cluster mode.
pub const NODE_HEADER: &str = "takgate-node";

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
}

impl AmqpSettings {
    fn new(l: &LinkConfig, a: &AmqpLink, ctx: &LinkCtx, missions: &Arc<Missions>) -> Result<AmqpSettings, String> {
        let node_id = ctx.router.node_id.to_string();
        let AmqpKind::Cluster(c) = &a.kind else { return Err("not a cluster link".into()) };
        let (exchange, bind_keys) = (c.exchange.clone().unwrap_or_else(|| "takgate".into()), c.bind_keys.clone());
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
        })
    }
}

/// Starts an amqp link.
pub fn start(l: &LinkConfig, a: &AmqpLink, ctx: &LinkCtx, missions: &Arc<Missions>) -> Result<LinkStatus, StartError> {
    if a.mode() == AmqpMode::Opentakserver {
        return super::ots::start(l, a, ctx, missions);
    }
    let s = Arc::new(AmqpSettings::new(l, a, ctx, missions).map_err(|e| StartError::new(&l.name, e))?);
    let status = LinkStatus { name: l.name.clone(), transport: l.transport(), mode: l.mode(), address: crate::config::redact_address(&a.url), local_addr: None, counters: s.counters.clone(), connection: None };
    tracing::info!(link = %l.name, exchange = %s.exchange, "amqp cluster link starting");
    ctx.tracker.spawn(run(s, ctx.router.clone(), ctx.cancel.clone()));
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
pub async fn run(s: Arc<AmqpSettings>, router: RouterHandle, cancel: CancellationToken) {
    let id = router.next_id();
    let (tx, mut rx) = mpsc::channel::<Arc<Message>>(s.queue_depth);
    let remote = s.url.split('@').next_back().unwrap_or_default().to_owned();
    router.attach(PeerInfo::output(id, &s.link, "amqp", remote, Codec::AmqpXml, s.policy.clone(), tx, s.counters.clone(), &cancel)).await;
    let mut pending: VecDeque<Arc<Message>> = VecDeque::new();
    let mut attempts = Attempts::new(s.backoff);
    loop {
        let started = std::time::Instant::now();
        match session(&s, &router, id, &mut rx, &mut pending, &cancel).await {
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
                    Some(m) => buffer(&s, &mut pending, m),
                    None => return,
                },
            }
        }
    }
    router.detach(id).await;
}

fn buffer(s: &AmqpSettings, pending: &mut VecDeque<Arc<Message>>, m: Arc<Message>) {
    if pending.len() < s.buffer {
        pending.push_back(m);
    } else {
        let n = s.counters.drops_queue_full.fetch_add(1, Relaxed);
        if n.is_power_of_two() {
            tracing::warn!(link = %s.link, dropped = n + 1, "broker unreachable and buffer full: dropping events");
        }
    }
}

async fn session(s: &AmqpSettings, router: &RouterHandle, id: u64, rx: &mut mpsc::Receiver<Arc<Message>>, pending: &mut VecDeque<Arc<Message>>, cancel: &CancellationToken) -> Result<(), String> {
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
    consume.basic_qos(256, BasicQosOptions::default()).await.map_err(|e| err("qos", e))?;
    publish
        .exchange_declare(s.exchange.as_str().into(), ExchangeKind::Topic, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .map_err(|e| err("exchange_declare", e))?;
    // A durable queue per node: what others publish while this node reconnects waits.
    let qname = format!("{}.{}", s.exchange, s.node_id);
    let q = consume.queue_declare(qname.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await.map_err(|e| err("queue_declare", e))?;
    let keys = if s.bind_keys.is_empty() { vec!["cot.#".to_string()] } else { s.bind_keys.clone() };
    for k in keys {
        consume.queue_bind(q.name().clone(), s.exchange.as_str().into(), k.as_str().into(), QueueBindOptions::default(), FieldTable::default()).await.map_err(|e| err("queue_bind", e))?;
    }
    let queue = q.name().clone();
    let mut consumer = consume.basic_consume(queue, format!("takgate-{}", s.node_id).as_str().into(), BasicConsumeOptions::default(), FieldTable::default()).await.map_err(|e| err("consume", e))?;
    tracing::info!(link = %s.link, buffered = pending.len(), "broker connected");
    let mut inflight: InFlight = VecDeque::new();
    let result = pump(s, router, id, rx, pending, cancel, &publish, &mut consumer, &mut inflight).await;
    // Whatever the broker did not confirm goes back to the front of the buffer, in order.
    for m in inflight.into_iter().rev().filter_map(|(_, m)| m) {
        pending.push_front(m);
    }
    if result.is_ok() {
        let _ = conn.close(200, "shutdown".into()).await;
    }
    result
}

/// Published events waiting for the broker's confirm; the message rides on its last confirm.
type InFlight = VecDeque<(std::pin::Pin<Box<lapin::PublisherConfirm>>, Option<Arc<Message>>)>;

/// How long connecting to the broker (TCP and the AMQP handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How many confirms may be outstanding at once.
const WINDOW: usize = 4096;

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

/// On shutdown: acknowledges what was routed, publishes what is still queued and waits for
/// its confirms, briefly.
async fn drain(s: &AmqpSettings, rx: &mut mpsc::Receiver<Arc<Message>>, pending: &mut VecDeque<Arc<Message>>, publish: &Channel, inflight: &mut InFlight, acks: &mut Acks) -> Result<(), String> {
    let _ = acks.flush().await;
    while let Ok(m) = rx.try_recv() {
        buffer(s, pending, m);
    }
    let drained = tokio::time::timeout(Duration::from_secs(3), async {
        while !pending.is_empty() {
            publish_next(s, publish, pending, inflight).await?;
        }
        while let Some((c, m)) = inflight.pop_front() {
            settle(s, c.await, m, pending)?;
        }
        Ok::<(), String>(())
    })
    .await;
    drained.unwrap_or(Ok(()))
}

/// A publish confirm: counted when it is the last of its event; an error puts the event
/// back at the front of the buffer (it goes out again after the reconnect).
fn settle(s: &AmqpSettings, c: Result<Confirmation, lapin::Error>, m: Option<Arc<Message>>, pending: &mut VecDeque<Arc<Message>>) -> Result<(), String> {
    let r = c.map_err(|e| err("confirm", e)).and_then(|c| confirmed(s, c, m.is_some()));
    if r.is_err() {
        if let Some(m) = m {
            pending.push_front(m);
        }
    }
    r
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    s: &AmqpSettings,
    router: &RouterHandle,
    id: u64,
    rx: &mut mpsc::Receiver<Arc<Message>>,
    pending: &mut VecDeque<Arc<Message>>,
    cancel: &CancellationToken,
    publish: &Channel,
    consumer: &mut lapin::Consumer,
    inflight: &mut InFlight,
) -> Result<(), String> {
    let mut acks = Acks::default();
    loop {
        while inflight.len() < WINDOW && !pending.is_empty() {
            publish_next(s, publish, pending, inflight).await?;
        }
        tokio::select! {
            _ = cancel.cancelled() => return drain(s, rx, pending, publish, inflight, &mut acks).await,
            c = async { inflight.front_mut().map(|(c, _)| c).expect("guarded").await }, if !inflight.is_empty() => {
                let (_, m) = inflight.pop_front().expect("non-empty");
                settle(s, c, m, pending)?;
            }
            m = rx.recv(), if pending.len() < s.buffer => {
                let Some(m) = m else { return Ok(()) };
                buffer(s, pending, m);
                while pending.len() < s.buffer.min(1024) {
                    let Ok(m) = rx.try_recv() else { break };
                    buffer(s, pending, m);
                }
            }
            _ = tokio::time::sleep_until(acks.by.unwrap_or_else(tokio::time::Instant::now)), if acks.last.is_some() => acks.flush().await?,
            d = consumer.next() => match d {
                Some(Ok(delivery)) => {
                    receive(s, router, id, &delivery.data, delivery.properties.headers().as_ref()).await;
                    acks.add(delivery).await?;
                }
                Some(Err(e)) => return Err(err("consume", e)),
                None => return Err("the broker cancelled our consumer".into()),
            },
        }
    }
}

/// Deliveries acknowledged together (after they were routed).
const ACK_EVERY: usize = 64;

fn confirmed(s: &AmqpSettings, c: Confirmation, last_of_event: bool) -> Result<(), String> {
    match c {
        Confirmation::Nack(_) => Err("the broker refused an event (nack)".into()),
        Confirmation::Ack(_) | Confirmation::NotRequested => {
            if last_of_event {
                s.counters.events_out.fetch_add(1, Relaxed);
            }
            Ok(())
        }
    }
}

/// Takes the next buffered event and publishes it; on a failure it goes back to the front.
async fn publish_next(s: &AmqpSettings, ch: &Channel, pending: &mut VecDeque<Arc<Message>>, inflight: &mut InFlight) -> Result<(), String> {
    let Some(m) = pending.pop_front() else { return Ok(()) };
    if let Err(e) = publish_one(s, ch, &m, inflight).await {
        pending.push_front(m);
        return Err(e);
    }
    Ok(())
}

/// Publishes one event and queues its confirm.
async fn publish_one(s: &AmqpSettings, ch: &Channel, m: &Arc<Message>, inflight: &mut InFlight) -> Result<(), String> {
    let mut confirms = Vec::with_capacity(2);
    let r = async {
        let mut headers = FieldTable::default();
        headers.insert(NODE_HEADER.into(), AMQPValue::LongString(s.node_id.as_str().into()));
        let props = BasicProperties::default().with_delivery_mode(2).with_headers(headers).with_content_type("application/xml".into());
        let key = cluster_key(m);
        confirms.push(ch.basic_publish(s.exchange.as_str().into(), key.as_str().into(), BasicPublishOptions::default(), m.encoded(WireFormat::Xml), props).await?);
        Ok::<(), lapin::Error>(())
    }
    .await;
    r.map_err(|e| err("publish", e))?;
    let last = confirms.len().saturating_sub(1);
    for (i, c) in confirms.into_iter().enumerate() {
        inflight.push_back((Box::pin(c), (i == last).then(|| m.clone())));
    }
    Ok(())
}

async fn receive(s: &AmqpSettings, router: &RouterHandle, id: u64, data: &[u8], headers: Option<&FieldTable>) {
    s.counters.bytes_in.fetch_add(data.len() as u64, Relaxed);
    let bad = |what: &dyn std::fmt::Display| {
        let n = s.counters.decode_errors.fetch_add(1, Relaxed);
        log_bad_input(n, &s.link, &crate::config::redact_address(&s.url), what);
    };
    let from = headers.and_then(|h| h.inner().get(&ShortString::from(NODE_HEADER))).and_then(|v| match v {
        AMQPValue::LongString(l) => Some(l.to_string()),
        _ => None,
    });
    if from.as_deref() == Some(s.node_id.as_str()) {
        return;
    }
    match xml::decode(data) {
        Ok(ev) => {
            record_mission(s, id, &ev);
            ingest(router, Origin { id, policy: &s.policy, counters: &s.counters }, ev, None).await;
        }
        Err(e) => bad(&e),
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
