//! Checked time arithmetic for the engine: instants plus or minus a rule's duration saturate at
//! the ends of chrono's range instead of panicking, so no rule set and no `now` can make
//! `Engine::step` overflow. A saturated instant reads as "never" (or "always, since forever").

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// `d` as a `TimeDelta`, saturating at the largest one chrono has.
pub(crate) fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// `t + d`, or the last representable instant.
pub(crate) fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(delta(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, or the first representable instant.
pub(crate) fn before(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_sub_signed(delta(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Seconds from `a` to `b` (negative when `b` is earlier); never panics.
pub(crate) fn seconds_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    b.signed_duration_since(a).as_seconds_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_at_the_ends_of_time() {
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(after(Utc::now(), huge), DateTime::<Utc>::MAX_UTC);
        assert_eq!(before(Utc::now(), huge), DateTime::<Utc>::MIN_UTC);
        assert_eq!(
            after(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)),
            DateTime::<Utc>::MAX_UTC
        );
        let t = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(after(t, Duration::from_secs(60)).timestamp(), 60);
        assert_eq!(before(t, Duration::from_secs(60)).timestamp(), -60);
        let s = seconds_between(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
        assert!(s.is_finite() && s > 0.0);
    }
}
