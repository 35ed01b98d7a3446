//! Prometheus metrics: the text exposition of link counters, router counters, federation
//! status, the outbound queue, and a delivery latency histogram.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::runtime::Control;

/// Upper bounds of the latency buckets, in seconds.
const BOUNDS: [f64; 11] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A fixed-bucket histogram updated without locks.
pub struct Histogram {
    buckets: [AtomicU64; 12],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram { buckets: [const { AtomicU64::new(0) }; 12], sum_us: AtomicU64::new(0), count: AtomicU64::new(0) }
    }
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BOUNDS.iter().position(|b| s <= *b).unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }
    fn write(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in BOUNDS.iter().enumerate() {
            cum += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.buckets[BOUNDS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", self.count.load(Relaxed));
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// Time from an event's arrival to its write toward a stream client (sampled: the oldest
/// event of each write batch).
pub static DELIVERY_LATENCY: Histogram = Histogram::new();

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The metrics of a running gateway, in Prometheus text format.
pub async fn render(c: &Control) -> String {
    let mut out = String::with_capacity(8192);
    let links = c.links();
    let peers = c.router.stats().await;
    let families: [(&str, &str, fn(&crate::router::CounterSnapshot) -> u64); 6] = [
        ("takgate_events_in_total", "Events received on a link.", |s| s.events_in),
        ("takgate_events_out_total", "Events sent on a link.", |s| s.events_out),
        ("takgate_bytes_in_total", "Bytes received on a link.", |s| s.bytes_in),
        ("takgate_bytes_out_total", "Bytes sent on a link.", |s| s.bytes_out),
        ("takgate_decode_errors_total", "Input that could not be decoded (events, frames, refused peers).", |s| s.decode_errors),
        ("takgate_frame_errors_total", "Bytes skipped by a stream framer.", |s| s.frame_errors),
    ];
    for (name, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for l in &links {
            let _ = writeln!(out, "{name}{{link=\"{}\",transport=\"{}\"}} {}", label(&l.name), transport_name(l.transport), get(&l.counters.snapshot()));
        }
    }
    let _ = writeln!(out, "# HELP takgate_drops_total Events not delivered or not accepted, by reason.\n# TYPE takgate_drops_total counter");
    for l in &links {
        let s = l.counters.snapshot();
        for (reason, v) in [("connection_refused", s.refused), ("queue_full", s.drops_queue_full), ("filtered", s.filtered), ("rate_limited", s.rate_limited), ("duplicate", s.duplicates), ("loop", s.loops), ("router_busy", s.drops_router_busy), ("truncated", s.truncated)] {
            let _ = writeln!(out, "takgate_drops_total{{link=\"{}\",transport=\"{}\",reason=\"{reason}\"}} {v}", label(&l.name), transport_name(l.transport));
        }
    }
    let _ = writeln!(out, "# HELP takgate_disconnects_total Connections closed by a limit, by reason.\n# TYPE takgate_disconnects_total counter");
    for l in &links {
        let s = l.counters.snapshot();
        for (reason, v) in [("slow_consumer", s.slow_consumers), ("idle_timeout", s.idle_timeouts)] {
            let _ = writeln!(out, "takgate_disconnects_total{{link=\"{}\",transport=\"{}\",reason=\"{reason}\"}} {v}", label(&l.name), transport_name(l.transport));
        }
    }
    let _ = writeln!(out, "# HELP takgate_throttled_total Times reading from a connection paused to hold its read rate limit.\n# TYPE takgate_throttled_total counter");
    for l in &links {
        let _ = writeln!(out, "takgate_throttled_total{{link=\"{}\",transport=\"{}\"}} {}", label(&l.name), transport_name(l.transport), l.counters.snapshot().throttled);
    }
    let _ = writeln!(out, "# HELP takgate_queue_depth Events waiting in a peer's queue.\n# TYPE takgate_queue_depth gauge");
    let _ = writeln!(out, "# HELP takgate_peers Attached peers (connections, endpoints) per link.\n# TYPE takgate_peers gauge");
    let mut per_link: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for p in &peers {
        let e = per_link.entry(p.link.as_str()).or_default();
        e.0 += p.queue_depth;
        e.1 += 1;
    }
    for (l, (depth, n)) in &per_link {
        let _ = writeln!(out, "takgate_queue_depth{{link=\"{}\"}} {depth}", label(l));
        let _ = writeln!(out, "takgate_peers{{link=\"{}\"}} {n}", label(l));
    }
    let r = &c.router.counters;
    let _ = writeln!(out, "# HELP takgate_router_routed_total Events routed.\n# TYPE takgate_router_routed_total counter\ntakgate_router_routed_total {}", r.routed.load(Relaxed));
    let _ = writeln!(out, "# HELP takgate_router_duplicates_total Events dropped as duplicates.\n# TYPE takgate_router_duplicates_total counter\ntakgate_router_duplicates_total {}", r.duplicates.load(Relaxed));
    let _ = writeln!(out, "# HELP takgate_router_deliveries_total Events queued to peers.\n# TYPE takgate_router_deliveries_total counter\ntakgate_router_deliveries_total {}", r.deliveries.load(Relaxed));
    let _ = writeln!(out, "# HELP takgate_federation_connected Outgoing federation link state (1 connected).\n# TYPE takgate_federation_connected gauge");
    for l in links.iter().filter(|l| l.transport.is_federation()) {
        if let Some(st) = &l.connection {
            let _ = writeln!(out, "takgate_federation_connected{{link=\"{}\"}} {}", label(&l.name), (st.get().state == "connected") as u8);
        }
    }
    let _ = writeln!(out, "# HELP takgate_federation_sessions Federate sessions attached per federation link.\n# TYPE takgate_federation_sessions gauge");
    for l in links.iter().filter(|l| l.transport.is_federation()) {
        let n = peers.iter().filter(|p| p.link == l.name).count();
        let _ = writeln!(out, "takgate_federation_sessions{{link=\"{}\"}} {n}", label(&l.name));
    }
    if let Ok(q) = c.store.queue_stats() {
        let _ = writeln!(out, "# HELP takgate_federation_queue_pending Mission changes waiting for a federate.\n# TYPE takgate_federation_queue_pending gauge");
        for s in &q {
            let _ = writeln!(out, "takgate_federation_queue_pending{{server=\"{}\"}} {}", label(&s.server), s.pending);
        }
        let _ = writeln!(out, "# HELP takgate_federation_queue_sent_total Mission changes delivered to a federate.\n# TYPE takgate_federation_queue_sent_total counter");
        for s in &q {
            let _ = writeln!(out, "takgate_federation_queue_sent_total{{server=\"{}\"}} {}", label(&s.server), s.sent);
        }
    }
    DELIVERY_LATENCY.write("takgate_delivery_latency_seconds", "Arrival to write toward a stream client (the oldest event of each write).", &mut out);
    out
}

pub fn transport_name(t: crate::config::Transport) -> &'static str {
    use crate::config::Transport::*;
    match t {
        Tcp => "tcp",
        Tls => "tls",
        Udp => "udp",
        Multicast => "multicast",
        Amqp => "amqp",
        FederationV1 => "federation-v1",
        FederationV2 => "federation-v2",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new();
        for ms in [0.1, 3.0, 3.0, 2000.0] {
            h.observe(Duration::from_secs_f64(ms / 1000.0));
        }
        let mut s = String::new();
        h.write("x", "y", &mut s);
        assert!(s.contains("x_bucket{le=\"0.0005\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.005\"} 3\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"1\"} 3\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 4\n") && s.contains("x_count 4\n"), "{s}");
    }
}
