//! The reconnect backoff every outgoing link uses (stream and federation connectors, the
//! RabbitMQ bridge) and the one the durable mission queue waits out after a failed attempt:
//! capped exponential growth, jitter, and a reset after a healthy period.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    /// A connection that lasted this long resets the backoff.
    pub healthy: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, healthy: Duration::from_secs(60) }
    }

    /// A link's `reconnect_*` keys, with the link kind's defaults (seconds).
    pub fn from_config(r: &crate::config::link::Reconnect, min: f64, max: f64) -> Backoff {
        use crate::config::link::secs_or;
        Backoff::new(secs_or(r.reconnect_min_secs, min), secs_or(r.reconnect_max_secs, max))
    }

    /// The delay before attempt `n` (0-based) without jitter: min·2ⁿ capped at max.
    pub fn base(&self, n: u32) -> Duration {
        let base = self.min.as_secs_f64() * 2f64.powi(n.min(30) as i32);
        Duration::from_secs_f64(base.min(self.max.as_secs_f64()))
    }

    /// The delay before attempt `n` with `jitter` in [0, 1] taking it down to half.
    pub fn delay(&self, n: u32, jitter: f64) -> Duration {
        self.base(n).mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// Attempts of one reconnecting loop: the delay grows per failure and resets after a
/// connection that stayed up for [`Backoff::healthy`].
#[derive(Debug)]
pub struct Attempts {
    backoff: Backoff,
    n: u32,
}

impl Attempts {
    pub fn new(backoff: Backoff) -> Attempts {
        Attempts { backoff, n: 0 }
    }

    /// How long to wait after an attempt that lasted `up`.
    pub fn next_delay(&mut self, up: Duration) -> Duration {
        if up >= self.backoff.healthy {
            self.n = 0;
        }
        let d = self.backoff.delay(self.n, fastrand::f64());
        self.n = self.n.saturating_add(1);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff { min: Duration::from_secs(1), max: Duration::from_secs(30), healthy: Duration::from_secs(60) };
        assert_eq!(b.delay(0, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(8));
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(30));
        assert_eq!(b.delay(10, 0.0), Duration::from_secs(15));
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(30));
    }

    #[test]
    fn attempts_reset_after_a_healthy_connection() {
        let mut a = Attempts::new(Backoff::new(Duration::from_secs(1), Duration::from_secs(8)));
        for _ in 0..5 {
            a.next_delay(Duration::ZERO);
        }
        assert!(a.next_delay(Duration::ZERO) >= Duration::from_secs(4));
        assert!(a.next_delay(Duration::from_secs(61)) <= Duration::from_secs(1));
    }
}
