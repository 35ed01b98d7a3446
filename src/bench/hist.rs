//! A small log-linear latency histogram (HDR style): 64 sub-buckets per power of two,
//! under 1.6 % relative error, fixed memory, mergeable.

#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

/// Values below 128 get a bucket each; above, 64 sub-buckets per power of two.
const LINEAR: u64 = 128;
const SUB: u64 = 64;
const BUCKETS: usize = (LINEAR + (64 - 7) * SUB) as usize;

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros() as u64; // 7..=63
    let top = v >> (exp - 6); // 64..=127
    (LINEAR + (exp - 7) * SUB + (top - SUB)) as usize
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }
}

/// The largest value that falls in bucket `i`.
fn value_at(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let k = i - LINEAR;
    let exp = k / SUB + 7;
    let top = k % SUB + SUB;
    (((top + 1) as u128) << (exp - 6)).saturating_sub(1).min(u64::MAX as u128) as u64
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        let i = index(v);
        self.counts[i] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
    }
    pub fn count(&self) -> u64 {
        self.total
    }
    pub fn max(&self) -> u64 {
        self.max
    }
    /// The value at quantile `q` (0..=1): an upper bound within the bucket error.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let want = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return value_at(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_two_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 100_000);
        assert_eq!(h.max(), 100_000);
        let mut small = Histogram::default();
        for v in [0, 1, 2, 3] {
            small.record(v);
        }
        assert_eq!(small.quantile(0.5), 1);
        let mut m = Histogram::default();
        m.merge(&h);
        m.merge(&small);
        assert_eq!(m.count(), 100_004);
    }

    #[test]
    fn buckets_are_monotonic() {
        let mut last = 0;
        for v in (0..1u64 << 40).step_by(1 << 27).chain(0..5000) {
            let i = index(v);
            assert!(value_at(i) >= v, "{v}: bucket top {}", value_at(i));
            if v > 5000 {
                assert!(i >= last);
                last = i;
            }
        }
    }
}
