//! Prometheus metrics: the text exposition of link counters, router counters, federation
//! status, the outbound queue, and a delivery latency histogram.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use crate::runtime::Control;

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The metrics of a running gateway, in Prometheus text format.
pub async fn render(c: &Control) -> String {
    let mut out = String::with_capacity(8192);
    let links = c.links();
    let peers = c.router.stats().await;
    let families: [(&str, &str, fn(&crate::link::CounterSnapshot) -> u64); 6] = [
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
            let _ = writeln!(out, "{name}{{link=\"{}\",transport=\"{}\"}} {}", label(&l.name), l.transport.as_str(), get(&l.counters.snapshot()));
        }
    }
    let _ = writeln!(out, "# HELP takgate_drops_total Events not delivered or not accepted, by reason.\n# TYPE takgate_drops_total counter");
    for l in &links {
        let s = l.counters.snapshot();
        for (reason, v) in [("connection_refused", s.refused), ("queue_full", s.drops_queue_full), ("filtered", s.filtered), ("rate_limited", s.rate_limited), ("duplicate", s.duplicates), ("loop", s.loops), ("router_busy", s.drops_router_busy), ("truncated", s.truncated)] {
            let _ = writeln!(out, "takgate_drops_total{{link=\"{}\",transport=\"{}\",reason=\"{reason}\"}} {v}", label(&l.name), l.transport.as_str());
        }
    }
    let _ = writeln!(out, "# HELP takgate_disconnects_total Connections closed by a limit, by reason.\n# TYPE takgate_disconnects_total counter");
    for l in &links {
        let s = l.counters.snapshot();
        for (reason, v) in [("slow_consumer", s.slow_consumers), ("idle_timeout", s.idle_timeouts)] {
            let _ = writeln!(out, "takgate_disconnects_total{{link=\"{}\",transport=\"{}\",reason=\"{reason}\"}} {v}", label(&l.name), l.transport.as_str());
        }
    }
    let _ = writeln!(out, "# HELP takgate_throttled_total Times reading from a connection paused to hold its read rate limit.\n# TYPE takgate_throttled_total counter");
    for l in &links {
        let _ = writeln!(out, "takgate_throttled_total{{link=\"{}\",transport=\"{}\"}} {}", label(&l.name), l.transport.as_str(), l.counters.snapshot().throttled);
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
            let _ = writeln!(out, "takgate_federation_connected{{link=\"{}\"}} {}", label(&l.name), (st.get().state == crate::link::LinkState::Connected) as u8);
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
    write_histogram(&crate::link::latency::DELIVERY_LATENCY.snapshot(), "takgate_delivery_latency_seconds", "Arrival to write toward a stream client (the oldest event of each write).", &mut out);
    out
}

fn write_histogram(h: &crate::link::latency::HistogramSnapshot, name: &str, help: &str, out: &mut String) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cum = 0;
    for (i, b) in crate::link::latency::BOUNDS.iter().enumerate() {
        cum += h.buckets[i];
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
    }
    cum += h.buckets[crate::link::latency::BOUNDS.len()];
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(out, "{name}_sum {}", h.sum_secs);
    let _ = writeln!(out, "{name}_count {}", h.count);
}
