//! The team's quota: the create rate limit (a token bucket) and the cap on running
//! sandboxes, each refusal a 429 with E2B's message and `Retry-After`.
//!
//! Not to be confused with `emulator::limits`, the bounds on what a user may configure: this
//! file is the emulated API's own limits at run time. Checks here only refuse and count
//! refusals; they never change a sandbox.

use chrono::{DateTime, Utc};

use super::{Core, Rejection, Res};

/// The create rate limit: tokens refill at `create_rate` per second up to a burst of the
/// same count (at least 1), and each create takes one.
pub(super) struct TokenBucket {
    /// Tokens left as of `at`; refilled lazily on the next take.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: DateTime<Utc>,
}

impl TokenBucket {
    /// A full bucket for `rate` creates per second, as of `now`.
    pub(super) fn full(rate: f64, now: DateTime<Utc>) -> TokenBucket {
        TokenBucket {
            tokens: burst(rate),
            at: now,
        }
    }
}

/// The bucket's size for a rate: the rate per second, at least 1.
fn burst(rate: f64) -> f64 {
    rate.max(1.0).ceil()
}

impl Core {
    /// Takes a create token, or answers 429 with the wait until the next one.
    pub(super) fn take_create_token(&mut self) -> Res<()> {
        let rate = self.cfg.create_rate;
        if !(rate.is_finite() && rate > 0.0) {
            return Ok(());
        }
        let burst = burst(rate);
        let bucket = &mut self.create_tokens;
        let dt = (self.now - bucket.at).as_seconds_f64().max(0.0);
        bucket.tokens = (bucket.tokens + dt * rate).min(burst);
        bucket.at = self.now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64;
        self.counters.rejected_rate_limit += 1;
        let mut r = Rejection::new(429, "Rate limit exceeded");
        r.retry_after = Some(wait);
        r.rate_limit = Some((burst as u64, 0, wait));
        Err(r)
    }

    /// The 429 when the team already runs `max_concurrent` sandboxes.
    pub(super) fn check_capacity(&mut self) -> Res<()> {
        if self.running_count() >= self.cfg.max_concurrent {
            self.counters.rejected_concurrency += 1;
            let mut r = Rejection::new(
                429,
                format!(
                    "you have reached the maximum number of concurrent E2B sandboxes ({})",
                    self.cfg.max_concurrent
                ),
            );
            r.retry_after = Some(1);
            return Err(r);
        }
        Ok(())
    }
}
