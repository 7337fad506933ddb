//! The value parsers that more than one command's flags share: numbers and durations within
//! a range, each error saying the valid range. A parser only one command uses lives with that
//! command. Parsers never read the environment or a file: clap calls them on text only.

use std::time::Duration;

use crate::agent::config;
use crate::duration::HumanDuration;

/// A number within `lo..=hi`, for a flag's value parser: the error says the valid range.
pub(crate) fn number_in(raw: &str, lo: f64, hi: f64, unit: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("expected {unit} from {lo} to {hi}")),
    }
}

/// A duration within `lo..=hi`, for a flag's value parser.
pub(crate) fn duration_in(raw: &str, lo: Duration, hi: Duration) -> Result<HumanDuration, String> {
    let d: HumanDuration = raw.parse()?;
    config::check_duration(d.0, (lo, hi)).map(|()| d)
}

/// The emulated team's create rate: 0 (unlimited) or 0.001 to the emulator's own bound.
pub(crate) fn emulated_create_rate(raw: &str) -> Result<f64, String> {
    let hi = crate::emulator::limits::MAX_CREATE_RATE;
    match number_in(raw, 0.0, hi, "creates per second") {
        Ok(v) if v == 0.0 || v >= 0.001 => Ok(v),
        _ => Err(format!(
            "expected creates per second: 0 (unlimited), or from 0.001 to {hi}"
        )),
    }
}

/// The emulated team's cap on running sandboxes: at least one, at most what a command line
/// sensibly asks for (the emulator itself allows more, for benchmarks built in code).
pub(crate) fn max_concurrent(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err("expected a number of sandboxes from 1 to 1000000".into()),
    }
}

/// A step of virtual time (engine step, metric sampling): 100 ms to an hour.
pub(crate) fn tick_interval(raw: &str) -> Result<HumanDuration, String> {
    duration_in(raw, Duration::from_millis(100), Duration::from_secs(3600))
}
