//! The delivery latency histogram: time from an event's arrival to the write that carries
//! it toward a stream client. Fixed buckets, updated without locks (one observation per
//! write batch, for the oldest event in it); the metrics endpoint reads it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
pub const BOUNDS: [f64; 11] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A fixed-bucket histogram.
pub struct Histogram {
    buckets: [AtomicU64; 12],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// What a histogram holds at one moment: counts per bucket (not cumulative; the last one
/// is above every bound), the sum in seconds and the count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: [u64; 12],
    pub sum_secs: f64,
    pub count: u64,
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
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot { buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)), sum_secs: self.sum_us.load(Relaxed) as f64 / 1e6, count: self.count.load(Relaxed) }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// Arrival to write toward a stream client (the oldest event of each write).
pub static DELIVERY_LATENCY: Histogram = Histogram::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = Histogram::new();
        for ms in [0.1, 3.0, 3.0, 2000.0] {
            h.observe(Duration::from_secs_f64(ms / 1000.0));
        }
        let s = h.snapshot();
        assert_eq!((s.buckets[0], s.buckets[3], s.buckets[11], s.count), (1, 2, 1, 4));
        assert!((s.sum_secs - 2.0061).abs() < 1e-6, "{}", s.sum_secs);
    }
}
