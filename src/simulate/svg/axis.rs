//! Axis ticks a person can read: counts on steps of 1, 2 or 5 times a power of ten, and
//! times at round durations (30s, 1m, 5m, 15m, 1h...) labelled as durations.
//!
//! Pure arithmetic over the chart's ranges; it never draws and never yields a fractional
//! count label (a chart of whole sandboxes and of cores reads best in whole steps).

/// Round durations a time axis may step by, in seconds.
const TIME_STEPS: [u64; 22] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200,
    86_400, 172_800, 604_800, 1_209_600, 2_592_000,
];

/// The ticks of a count axis from 0 to at least `max`: the smallest step of 1, 2 or 5 x 10^k
/// (at least 1) that needs at most `intervals + 1` intervals. The last tick is the axis' top,
/// so every value lies within the axis.
pub(crate) fn count_ticks(max: f64, intervals: usize) -> Vec<f64> {
    let max = if max.is_finite() { max.max(0.0) } else { 0.0 };
    let step = nice_step(max / (intervals + 1) as f64).max(1.0);
    let top = ((max / step).ceil() * step).max(step);
    let n = (top / step).round() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// The smallest of 1, 2, 5 x 10^k at least `raw` (1 for nothing).
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A count tick's label: a whole number (ticks are whole by construction).
pub(crate) fn count_label(v: f64) -> String {
    format!("{:.0}", v)
}

/// The ticks of a time axis over `[0, t_max]` seconds: multiples of the smallest round
/// duration that gives at most `max_ticks` intervals.
pub(crate) fn time_ticks(t_max: f64, max_ticks: usize) -> Vec<u64> {
    let t_max = if t_max.is_finite() {
        t_max.max(0.0)
    } else {
        0.0
    };
    let max_ticks = max_ticks.max(1) as f64;
    let step = TIME_STEPS
        .into_iter()
        .find(|s| t_max / *s as f64 <= max_ticks)
        .unwrap_or_else(|| (t_max / max_ticks).ceil() as u64)
        .max(1);
    let n = (t_max / step as f64).floor() as u64;
    (0..=n).map(|i| i * step).collect()
}

/// A duration as a person writes it: `0`, `30s`, `1m`, `1m30s`, `1h`, `1h15m`, `2d`, `1d6h`.
pub(crate) fn duration_label(secs: u64) -> String {
    if secs == 0 {
        return "0".to_string();
    }
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}
