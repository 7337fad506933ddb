//! The bounds on every number and duration a user gives the emulator: command-line flags,
//! scenario files, request bodies and query parameters of the API and the `/_emulator/*`
//! controls. One place, so the docs (docs/emulator.md, "Limits") and the checks agree.
//!
//! A value outside its range is an [`OutOfRange`] that names the field, the value and what
//! would be valid. Checking here, at the edge, is what keeps the core's time arithmetic far
//! from chrono's range; the core still uses checked arithmetic, so a value that slips past
//! is refused or ignored, never a panic.

use std::fmt::Display;
use std::time::Duration;

/// Fastest wall clock: virtual seconds per wall-clock second (`--speed`).
pub(crate) const MAX_SPEED: f64 = 100_000.0;
/// Longest duration the emulator takes anywhere (a scenario's times, `advance`, a fault's
/// `for`, webhook backoff): one year (365.25 days, as humantime counts it), far inside
/// chrono's range.
pub(crate) const MAX_SPAN: Duration = Duration::from_secs(31_557_600);
/// Shortest and longest metric sampling interval (`--metrics-interval`).
pub(crate) const MIN_METRICS_INTERVAL: Duration = Duration::from_millis(100);
pub(crate) const MAX_METRICS_INTERVAL: Duration = Duration::from_secs(3600);
/// Highest create rate, per second (`--create-rate`); 0 means unlimited.
pub(crate) const MAX_CREATE_RATE: f64 = 10_000.0;
/// Most running sandboxes (`--max-concurrent`). E2B's largest plan allows 1,100; benchmarks
/// want far more, and a high cap costs nothing.
pub(crate) const MAX_CONCURRENT: usize = 100_000_000;
/// Most tries of one webhook delivery (`--webhook-attempts`).
pub(crate) const MAX_WEBHOOK_ATTEMPTS: u32 = 100;
/// Longest `Retry-After` an injected fault may send, in seconds.
pub(crate) const MAX_RETRY_AFTER_SECS: u64 = 24 * 3600;
/// Most requests one injected fault may fail (`count`).
pub(crate) const MAX_FAULT_COUNT: u64 = 1_000_000_000;
/// Most sandboxes a scenario may start with, over all its `initial` entries.
pub(crate) const MAX_INITIAL_SANDBOXES: u64 = 10_000;
/// Most sandboxes one scenario fault may kill.
pub(crate) const MAX_FAULT_KILLS: u32 = 100_000;
/// Most busy cores a load curve may ask for.
pub(crate) const MAX_DEMAND_CORES: f64 = 1_000_000.0;
/// Template sizes: vCPUs, memory and disk in MiB.
pub(crate) const MAX_CPU_COUNT: u32 = 256;
pub(crate) const MIN_MEMORY_MB: u32 = 128;
pub(crate) const MAX_MEMORY_MB: u32 = 1024 * 1024;
pub(crate) const MAX_DISK_MB: u32 = 16 * 1024 * 1024;

/// A value outside its valid range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value} is out of range; expected {expected}")]
pub(crate) struct OutOfRange {
    /// The flag, file field or request field, as the user wrote it (`--speed`, `faults[0].at`).
    pub field: String,
    pub value: String,
    /// What would be valid, e.g. `a duration from 0s to 1year`.
    pub expected: String,
}

impl OutOfRange {
    pub(crate) fn new(
        field: impl Into<String>,
        value: impl Display,
        expected: impl Into<String>,
    ) -> Self {
        OutOfRange {
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A number as a user can read it: `1e300`, not three hundred digits.
fn short(v: f64) -> String {
    if v.is_finite() && v != 0.0 && !(1e-6..1e16).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// `d` when `min <= d <= max`.
pub(crate) fn duration(
    field: &str,
    d: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, OutOfRange> {
    if (min..=max).contains(&d) {
        return Ok(d);
    }
    Err(OutOfRange::new(
        field,
        human(d),
        format!("a duration from {} to {}", human(min), human(max)),
    ))
}

/// `d` when it is at most [`MAX_SPAN`].
pub(crate) fn span(field: &str, d: Duration) -> Result<Duration, OutOfRange> {
    duration(field, d, Duration::ZERO, MAX_SPAN)
}

/// `v` when it is a finite number in `min..=max` (above `min` when `min_exclusive`).
pub(crate) fn number(
    field: &str,
    v: f64,
    min: f64,
    max: f64,
    min_exclusive: bool,
) -> Result<f64, OutOfRange> {
    let above_min = if min_exclusive { v > min } else { v >= min };
    if v.is_finite() && above_min && v <= max {
        return Ok(v);
    }
    let low = if min_exclusive {
        format!("above {min}")
    } else {
        format!("from {min}")
    };
    Err(OutOfRange::new(
        field,
        short(v),
        format!("a finite number {low} to {max}"),
    ))
}

/// `v` when it is in `min..=max`.
pub(crate) fn integer<T: PartialOrd + Display + Copy>(
    field: &str,
    v: T,
    min: T,
    max: T,
) -> Result<T, OutOfRange> {
    if v >= min && v <= max {
        return Ok(v);
    }
    Err(OutOfRange::new(
        field,
        v,
        format!("an integer from {min} to {max}"),
    ))
}

/// `--speed`: finite, above 0, at most [`MAX_SPEED`].
pub(crate) fn speed(field: &str, v: f64) -> Result<f64, OutOfRange> {
    number(field, v, 0.0, MAX_SPEED, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_numbers_are_out_of_range_and_say_what_is_valid() {
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            let e = speed("--speed", v).unwrap_err();
            assert_eq!(e.field, "--speed");
            assert!(e.to_string().contains("above 0 to 100000"), "{v}: {e}");
        }
        assert_eq!(speed("--speed", 30.0), Ok(30.0));
        let e = speed("--speed", 1e300).unwrap_err();
        assert!(e.to_string().starts_with("--speed: 1e300 is out"), "{e}");
        let huge = humantime::parse_duration("300000years").unwrap();
        let e = span("by", huge).unwrap_err();
        assert!(e.to_string().starts_with("by: 300000years"), "{e}");
        assert!(e.to_string().contains("from 0s to 1year"), "{e}");
        assert!(integer("count", 0u64, 1, 10).is_err());
        assert_eq!(integer("count", 10u64, 1, 10), Ok(10));
    }
}
