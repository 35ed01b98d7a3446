//! Prometheus metrics with the `prometheus-client` crate (OpenMetrics text): link counters,
//! router counters, federation status, the outbound queue and the delivery latency
//! histogram. Everything is read once per scrape into a [`Scrape`], which a collector then
//! encodes, each family as one group.

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::link::latency::{HistogramSnapshot, BOUNDS, DELIVERY_LATENCY};
use crate::link::CounterSnapshot;
use crate::runtime::Control;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one scrape reports.
#[derive(Debug)]
struct Scrape {
    /// (link, transport, counters)
    links: Vec<(String, &'static str, CounterSnapshot)>,
    /// link -> (queued events, attached peers)
    peers: std::collections::BTreeMap<String, (usize, usize)>,
    /// (routed, duplicates, deliveries, direct messages to unknown contacts)
    router: [u64; 4],
    /// federation link -> connected (outgoing links only)
    fed_connected: Vec<(String, bool)>,
    /// federation link -> sessions
    fed_sessions: Vec<(String, usize)>,
    /// server -> (pending, sent)
    queue: Vec<(String, u64, u64)>,
    latency: HistogramSnapshot,
}

/// The metrics of a running gateway, in OpenMetrics text format.
pub async fn render(c: &Control) -> String {
    let scrape = Scrape::take(c).await;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

impl Scrape {
    async fn take(c: &Control) -> Scrape {
        let links = c.links();
        let peers_now = c.router.stats().await;
        let mut peers: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for p in &peers_now {
            let e = peers.entry(p.link.clone()).or_default();
            e.0 += p.queue_depth;
            e.1 += 1;
        }
        let r = &c.router.counters;
        let fed = || links.iter().filter(|l| l.transport.is_federation());
        Scrape {
            links: links.iter().map(|l| (l.name.clone(), l.transport.as_str(), l.counters.snapshot())).collect(),
            peers,
            router: [r.routed.load(Relaxed), r.duplicates.load(Relaxed), r.deliveries.load(Relaxed), r.direct_unknown.load(Relaxed)],
            fed_connected: fed().filter_map(|l| l.connection.as_ref().map(|st| (l.name.clone(), st.get().state == crate::link::LinkState::Connected))).collect(),
            fed_sessions: fed().map(|l| (l.name.clone(), peers_now.iter().filter(|p| p.link == l.name).count())).collect(),
            queue: c.store.queue_stats().map(|q| q.into_iter().map(|s| (s.server, s.pending as u64, s.sent as u64)).collect()).unwrap_or_default(),
            latency: DELIVERY_LATENCY.snapshot(),
        }
    }
}

/// One counter family over every link.
type PerLink = (&'static str, &'static str, fn(&CounterSnapshot) -> u64);

const LINK_COUNTERS: [PerLink; 7] = [
    ("takgate_events_in", "Events received on a link.", |s| s.events_in),
    ("takgate_events_out", "Events sent on a link.", |s| s.events_out),
    ("takgate_bytes_in", "Bytes received on a link.", |s| s.bytes_in),
    ("takgate_bytes_out", "Bytes sent on a link.", |s| s.bytes_out),
    ("takgate_decode_errors", "Input that could not be decoded (events, frames, refused peers).", |s| s.decode_errors),
    ("takgate_frame_errors", "Bytes skipped by a stream framer.", |s| s.frame_errors),
    ("takgate_throttled", "Times reading from a connection paused to hold its read rate limit.", |s| s.throttled),
];

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, rows: impl IntoIterator<Item = (Vec<(&'static str, String)>, u64)>) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(&labels)?.encode_counter::<NoLabelSet, u64, u64>(&v, None)?;
    }
    Ok(())
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, rows: impl IntoIterator<Item = (Vec<(&'static str, String)>, i64)>) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let link = |name: &str, t: &str| vec![("link", name.to_owned()), ("transport", t.to_owned())];
        for (name, help, get) in LINK_COUNTERS {
            counter(&mut e, name, help, self.links.iter().map(|(l, t, s)| (link(l, t), get(s))))?;
        }
        let with_reason = |l: &str, t: &str, r: &str| {
            let mut v = link(l, t);
            v.push(("reason", r.to_owned()));
            v
        };
        let drops = self.links.iter().flat_map(|(l, t, s)| {
            [("connection_refused", s.refused), ("queue_full", s.drops_queue_full), ("filtered", s.filtered), ("rate_limited", s.rate_limited), ("duplicate", s.duplicates), ("loop", s.loops), ("router_busy", s.drops_router_busy), ("truncated", s.truncated)].map(|(r, v)| (with_reason(l, t, r), v))
        });
        counter(&mut e, "takgate_drops", "Events not delivered or not accepted, by reason.", drops)?;
        let disconnects = self.links.iter().flat_map(|(l, t, s)| [("slow_consumer", s.slow_consumers), ("idle_timeout", s.idle_timeouts)].map(|(r, v)| (with_reason(l, t, r), v)));
        counter(&mut e, "takgate_disconnects", "Connections closed by a limit, by reason.", disconnects)?;
        let by_link = |f: fn(&(usize, usize)) -> usize| self.peers.iter().map(move |(l, p)| (vec![("link", l.clone())], f(p) as i64));
        gauge(&mut e, "takgate_queue_depth", "Events waiting in a peer's queue.", by_link(|p| p.0))?;
        gauge(&mut e, "takgate_peers", "Attached peers (connections, endpoints) per link.", by_link(|p| p.1))?;
        let [routed, duplicates, deliveries, unknown] = self.router;
        counter(&mut e, "takgate_router_routed", "Events routed.", [(vec![], routed)])?;
        counter(&mut e, "takgate_router_duplicates", "Events dropped as duplicates.", [(vec![], duplicates)])?;
        counter(&mut e, "takgate_router_deliveries", "Events queued to peers.", [(vec![], deliveries)])?;
        counter(&mut e, "takgate_router_direct_unknown", "Direct messages for contacts not seen yet (sent to upstream links).", [(vec![], unknown)])?;
        gauge(&mut e, "takgate_federation_connected", "Outgoing federation link state (1 connected).", self.fed_connected.iter().map(|(l, up)| (vec![("link", l.clone())], *up as i64)))?;
        gauge(&mut e, "takgate_federation_sessions", "Federate sessions attached per federation link.", self.fed_sessions.iter().map(|(l, n)| (vec![("link", l.clone())], *n as i64)))?;
        gauge(&mut e, "takgate_federation_queue_pending", "Mission changes waiting for a federate.", self.queue.iter().map(|(s, p, _)| (vec![("server", s.clone())], *p as i64)))?;
        counter(&mut e, "takgate_federation_queue_sent", "Mission changes delivered to a federate.", self.queue.iter().map(|(s, _, n)| (vec![("server", s.clone())], *n)))?;
        let h = &self.latency;
        // the crate writes f64::MAX as le="+Inf"
        let buckets: Vec<(f64, u64)> = BOUNDS.iter().copied().chain([f64::MAX]).zip(h.buckets.iter().copied()).collect();
        let mut m = e.encode_descriptor("takgate_delivery_latency_seconds", "Arrival to write toward a stream client (the oldest event of each write).", None, MetricType::Histogram)?;
        m.encode_histogram::<NoLabelSet>(h.sum_secs, h.count, &buckets, None)
    }
}
