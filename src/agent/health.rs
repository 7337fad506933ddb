//! Whether the agent can see E2B: the rule behind `/readyz` and `poolpilot_up`.
//!
//! The loop reports each turn's observation, success or failure, with the time it began; the
//! server asks [`Health::readiness`] at the time of the request. Ready means:
//!
//! - at least one observation of E2B has succeeded, and
//! - fewer than [`FAILED_POLLS_UNREADY`] polls in a row have failed (an error,
//!   or a turn cut off at its deadline), and
//! - the last successful observation is no older than [`FAILED_POLLS_UNREADY`] poll intervals
//!   plus the turn deadline: a backstop for a loop that stopped reporting at all.
//!
//! The first successful observation after an outage makes it ready again. This is not the
//! systemd watchdog's question: the watchdog says the loop is alive, and keeps beating while
//! E2B cannot be seen. Pure: no clock is read here.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

/// Polls (ticks) in a row that fail to observe E2B before the agent is not ready.
pub(crate) const FAILED_POLLS_UNREADY: u32 = 3;

/// What `/readyz` answers, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Readiness {
    pub(crate) ready: bool,
    /// Why, in a sentence.
    pub(crate) reason: String,
    /// When the last successful observation began.
    pub(crate) last_success: Option<DateTime<Utc>>,
    /// Polls in a row that failed.
    pub(crate) failed_polls: u32,
    /// The last observation error, while polls fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_error: Option<String>,
}

/// The outcomes of recent observations.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    /// How old the last success may be before the backstop says not ready.
    stale_after: TimeDelta,
    last_success: Option<DateTime<Utc>>,
    failed_polls: u32,
    last_error: Option<String>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(Duration::from_secs(5), Duration::from_secs(120))
    }
}

impl Health {
    /// Health for a loop that observes every `poll` and cuts a turn off after `deadline`.
    pub(crate) fn new(poll: Duration, deadline: Duration) -> Self {
        let stale = poll
            .saturating_mul(FAILED_POLLS_UNREADY)
            .saturating_add(deadline);
        Health {
            stale_after: TimeDelta::from_std(stale).unwrap_or(TimeDelta::MAX),
            last_success: None,
            failed_polls: 0,
            last_error: None,
        }
    }

    /// A turn that began at `at` observed E2B.
    pub(crate) fn observed(&mut self, at: DateTime<Utc>) {
        self.last_success = Some(self.last_success.map_or(at, |t| t.max(at)));
        self.failed_polls = 0;
        self.last_error = None;
    }

    /// A turn failed to observe E2B, for `error`.
    pub(crate) fn failed(&mut self, error: impl Into<String>) {
        self.failed_polls = self.failed_polls.saturating_add(1);
        self.last_error = Some(error.into());
    }

    /// Whether the agent can see E2B at `now`, and why.
    pub(crate) fn readiness(&self, now: DateTime<Utc>) -> Readiness {
        let (ready, reason) = self.judge(now);
        Readiness {
            ready,
            reason,
            last_success: self.last_success,
            failed_polls: self.failed_polls,
            last_error: self.last_error.clone(),
        }
    }

    fn judge(&self, now: DateTime<Utc>) -> (bool, String) {
        let error = self.last_error.as_deref().unwrap_or("none");
        let Some(last) = self.last_success else {
            return (
                false,
                format!("no successful poll of E2B yet (last error: {error})"),
            );
        };
        if self.failed_polls >= FAILED_POLLS_UNREADY {
            return (
                false,
                format!(
                    "cannot see E2B: {} polls in a row failed (last error: {error})",
                    self.failed_polls
                ),
            );
        }
        let age = now.signed_duration_since(last);
        if age > self.stale_after {
            return (
                false,
                format!(
                    "cannot see E2B: the last successful poll is {}s old, more than {}s",
                    age.num_seconds(),
                    self.stale_after.num_seconds()
                ),
            );
        }
        (true, "observing E2B".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(20_000) + TimeDelta::seconds(s)
    }

    fn health() -> Health {
        Health::new(Duration::from_secs(5), Duration::from_secs(120))
    }

    #[test]
    fn not_ready_before_the_first_observation() {
        let mut h = health();
        assert!(!h.readiness(t(0)).ready);
        h.failed("HTTP 401");
        let r = h.readiness(t(1));
        assert!(!r.ready);
        assert!(r.reason.contains("no successful poll"), "{r:?}");
        assert!(r.reason.contains("HTTP 401"), "{r:?}");
        h.observed(t(2));
        assert_eq!(
            h.readiness(t(2)),
            Readiness {
                ready: true,
                reason: "observing E2B".into(),
                last_success: Some(t(2)),
                failed_polls: 0,
                last_error: None,
            }
        );
    }

    #[test]
    fn an_outage_makes_it_unready_after_three_failed_polls_and_recovery_ready() {
        let mut h = health();
        h.observed(t(0));
        h.failed("503");
        h.failed("503");
        assert!(h.readiness(t(10)).ready, "a blip is not an outage");
        h.failed("HTTP 503: down");
        let r = h.readiness(t(15));
        assert!(!r.ready);
        assert_eq!(r.failed_polls, 3);
        assert!(r.reason.contains("3 polls in a row failed"), "{r:?}");
        assert!(r.reason.contains("HTTP 503: down"), "{r:?}");
        h.observed(t(20));
        assert!(h.readiness(t(20)).ready);
    }

    #[test]
    fn a_loop_that_stops_reporting_goes_unready() {
        let mut h = health();
        h.observed(t(0));
        // 3 polls of 5 s plus the 120 s deadline.
        assert!(h.readiness(t(135)).ready);
        let r = h.readiness(t(136));
        assert!(!r.ready);
        assert!(r.reason.contains("136s old"), "{r:?}");
    }

    #[test]
    fn huge_intervals_saturate() {
        let mut h = Health::new(Duration::MAX, Duration::MAX);
        h.observed(t(0));
        assert!(h.readiness(DateTime::<Utc>::MAX_UTC).ready);
    }
}
