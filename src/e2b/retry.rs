//! Retry policy and create pacing for E2B calls.
//!
//! Backoff is capped exponential with full jitter, and a server's Retry-After always wins
//! over the computed delay. The pacer keeps sandbox creates under E2B's per-team create rate
//! (1/s on Hobby, 5/s on Pro) so the agent does not spend its budget on 429s. Both use
//! tokio's clock, so tests drive them with `tokio::time::pause()`.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// How failed calls are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included; 1 disables retries.
    pub max_attempts: u32,
    /// Delay ceiling before jitter for the first retry; doubles each retry.
    pub base_delay: Duration,
    /// Upper bound of any computed delay.
    pub max_delay: Duration,
    /// A Retry-After longer than this is not waited for: the error is returned instead.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The delay before retry number `retry` (0 for the first retry), given the server's
    /// Retry-After if it sent one, and `unit` in [0, 1) as the jitter draw.
    /// Returns None when the server asks for longer than `max_retry_after`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, unit: f64) -> Option<Duration> {
        if let Some(after) = retry_after {
            return (after <= self.max_retry_after).then_some(after);
        }
        let ceiling = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        Some(ceiling.mul_f64(unit.clamp(0.0, 1.0)))
    }
}

/// Spaces calls at least `1 / rate` seconds apart, across all callers sharing it.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer for `per_second` calls a second. Rates that are not positive and finite pace
    /// nothing.
    pub fn new(per_second: f64) -> Pacer {
        let interval = if per_second.is_finite() && per_second > 0.0 {
            Duration::from_secs_f64(1.0 / per_second)
        } else {
            Duration::ZERO
        };
        Pacer {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Waits for this caller's slot. Slots are handed out in call order.
    pub async fn acquire(&self) {
        let wait_until = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = match *next {
                Some(t) if t > now => t,
                _ => now,
            };
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(wait_until).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(0, None, 1.0), Some(Duration::from_millis(200)));
        assert_eq!(p.delay(1, None, 1.0), Some(Duration::from_millis(400)));
        assert_eq!(p.delay(10, None, 1.0), Some(Duration::from_secs(10)));
        assert_eq!(p.delay(40, None, 1.0), Some(Duration::from_secs(10)));
        assert_eq!(p.delay(3, None, 0.0), Some(Duration::ZERO));
        assert_eq!(p.delay(3, None, 0.5), Some(Duration::from_millis(800)));
    }

    #[test]
    fn retry_after_wins_unless_too_long() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3)), 0.1),
            Some(Duration::from_secs(3))
        );
        assert_eq!(p.delay(0, Some(Duration::from_secs(61)), 0.1), None);
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_calls_at_the_rate() {
        let pacer = std::sync::Arc::new(Pacer::new(5.0));
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..6 {
            let p = pacer.clone();
            handles.push(tokio::spawn(async move {
                p.acquire().await;
                Instant::now() - start
            }));
        }
        let mut times = Vec::new();
        for h in handles {
            times.push(h.await.unwrap());
        }
        times.sort();
        // Six calls at 5/s: the first at once, the last one second later.
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(times[5], Duration::from_millis(1000));
        for w in times.windows(2) {
            assert_eq!(w[1] - w[0], Duration::from_millis(200));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_pacer_does_not_bank_slots() {
        let pacer = Pacer::new(1.0);
        pacer.acquire().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let t = Instant::now();
        pacer.acquire().await;
        pacer.acquire().await;
        // After an idle spell the next call goes at once, the one after waits a full interval.
        assert_eq!(Instant::now() - t, Duration::from_secs(1));
    }
}
