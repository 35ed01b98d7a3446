//! The token bucket: per-connection read rates (reading pauses while a connection is over)
//! and the per-uid rate limit of a peer's policy (events beyond it are not delivered).

use std::time::{Duration, Instant};

/// A bucket of `capacity` tokens refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: f64, rate: f64, now: Instant) -> TokenBucket {
        TokenBucket { capacity, rate, tokens: capacity, last: now }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = (self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.rate).min(self.capacity);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, going into debt: how long to wait until the debt is paid, if any.
    pub fn take_or_wait(&mut self, n: f64, now: Instant) -> Option<Duration> {
        self.refill(now);
        self.tokens -= n;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }

    /// Idle since `since` for longer than a full refill takes (its state can go).
    pub fn full_since(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last).as_secs_f64() * self.rate >= self.capacity - self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_the_rate_up_to_the_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 1.0 / 30.0, t0);
        assert!(b.try_take(t0) && b.try_take(t0) && !b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_secs(29)));
        assert!(b.try_take(t0 + Duration::from_secs(31)));
        assert!(b.full_since(t0 + Duration::from_secs(200)));
    }

    #[test]
    fn debt_is_waited_out() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 100.0, t0);
        assert_eq!(b.take_or_wait(100.0, t0), None);
        let wait = b.take_or_wait(50.0, t0).unwrap();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9);
        assert_eq!(b.take_or_wait(0.0, t0 + Duration::from_secs(1)), None);
    }
}

/// Per-connection read rates; reading pauses when a connection goes over.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReadRateLimits {
    pub bytes_per_sec: Option<f64>,
    pub events_per_sec: Option<f64>,
}

/// The default write timeout of a connection: a peer that stops reading this long is
/// disconnected.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

impl ReadRateLimits {
    pub fn of(c: &crate::config::link::ConnLimits) -> ReadRateLimits {
        ReadRateLimits { bytes_per_sec: c.max_read_bytes_per_sec.map(|r| r.0), events_per_sec: c.max_read_events_per_sec.map(|r| r.0) }
    }
}

/// A connection's write timeout as configured.
pub fn write_timeout(c: &crate::config::link::ConnLimits) -> Duration {
    c.write_timeout_secs.map(|s| s.duration()).unwrap_or(DEFAULT_WRITE_TIMEOUT)
}

/// The read rate state of one connection: buckets one second deep.
#[derive(Debug)]
pub struct ReadRate {
    bytes: Option<TokenBucket>,
    events: Option<TokenBucket>,
}

impl ReadRate {
    pub fn new(l: ReadRateLimits) -> ReadRate {
        let now = Instant::now();
        ReadRate { bytes: l.bytes_per_sec.map(|r| TokenBucket::new(r, r, now)), events: l.events_per_sec.map(|r| TokenBucket::new(r, r, now)) }
    }

    /// After reading `n` bytes: pauses while the connection is over its byte rate.
    pub async fn bytes(&mut self, n: usize, c: &super::counters::LinkCounters, link: &str, remote: &str, session: &tokio_util::sync::CancellationToken) {
        if let Some(b) = &mut self.bytes {
            if let Some(d) = b.take_or_wait(n as f64, Instant::now()) {
                let why = format!("over max_read_bytes_per_sec ({} B/s)", b.rate());
                pause(d, c, link, remote, why, session).await;
            }
        }
    }

    /// Before taking one more event: pauses while the connection is over its event rate.
    pub async fn event(&mut self, c: &super::counters::LinkCounters, link: &str, remote: &str, session: &tokio_util::sync::CancellationToken) {
        if let Some(b) = &mut self.events {
            if let Some(d) = b.take_or_wait(1.0, Instant::now()) {
                let why = format!("over max_read_events_per_sec ({}/s)", b.rate());
                pause(d, c, link, remote, why, session).await;
            }
        }
    }
}

async fn pause(d: Duration, c: &super::counters::LinkCounters, link: &str, remote: &str, why: String, session: &tokio_util::sync::CancellationToken) {
    let n = super::counters::LinkCounters::inc(&c.throttled);
    if n < 5 || n.is_power_of_two() {
        tracing::warn!(link, remote, count = n + 1, "reading paused {} ms: {why}", d.as_millis());
    }
    tokio::select! {
        _ = session.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
