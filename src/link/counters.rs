//! Counters of one link (or peer), shared with its tasks through an `Arc` and read for the
//! admin API and metrics. Relaxed atomics: each is an independent tally.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters of one link or peer.
        #[derive(Debug, Default)]
        pub struct LinkCounters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// The counters at one moment.
        #[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
        pub struct CounterSnapshot {
            $(pub $name: u64,)*
        }

        impl LinkCounters {
            pub fn snapshot(&self) -> CounterSnapshot {
                CounterSnapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

counters! {
    events_in,
    events_out,
    bytes_in,
    bytes_out,
    /// Dropped because this peer's queue was full.
    drops_queue_full,
    /// Not delivered to this peer by its policy.
    filtered,
    rate_limited,
    /// Events from this link that could not be decoded.
    decode_errors,
    /// Bytes skipped by the stream framer (garbage, oversized events).
    frame_errors,
    /// Datagrams larger than the maximum.
    truncated,
    /// Events from this link dropped as duplicates or loops.
    duplicates,
    loops,
    /// Events from this link dropped because the router was saturated (datagram links).
    drops_router_busy,
    /// Sessions that switched to TAK protocol v1 by negotiation.
    negotiated_proto,
    /// Connections refused by a limit (total, per address, per certificate identity, TLS
    /// handshakes in progress).
    refused,
    /// Times reading from a connection paused to hold its read rate limit.
    throttled,
    /// Connections closed because they did not take what was sent to them (a write that
    /// stalled past the write timeout, or a full queue with `overflow = "disconnect"`).
    slow_consumers,
    /// Connections closed for silence beyond the idle timeout.
    idle_timeouts,
}

impl LinkCounters {
    /// Adds one; returns the value before (for [`super::log_bad_input`]).
    pub fn inc(c: &AtomicU64) -> u64 {
        c.fetch_add(1, Relaxed)
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_every_counter() {
        let c = LinkCounters::default();
        assert_eq!(LinkCounters::inc(&c.events_in), 0);
        LinkCounters::add(&c.bytes_in, 10);
        LinkCounters::inc(&c.idle_timeouts);
        let s = c.snapshot();
        assert_eq!((s.events_in, s.bytes_in, s.idle_timeouts, s.events_out), (1, 10, 1, 0));
    }
}
