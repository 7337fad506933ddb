//! A Prometheus histogram of durations ([`Histogram`]) and the lines it is written as
//! ([`write_histogram`]): cumulative `_bucket` series ending in `le="+Inf"`, then `_sum` and
//! `_count`, in base units (seconds). Used by the loop's turn durations and by both APIs'
//! request durations; it keeps counts only and never reads a clock.

use std::fmt::Write as _;
use std::time::Duration;

/// Bucket bounds, in seconds, for request and loop-turn durations: from a local answer
/// (milliseconds) to a slow E2B (seconds), and on to a turn near its deadline.
pub(crate) const DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Observed durations counted into [`DURATION_BUCKETS`].
#[derive(Clone, Default)]
pub(crate) struct Histogram {
    /// Cumulative: `counts[i]` is the observations at or below `DURATION_BUCKETS[i]`.
    counts: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Counts one duration.
    pub(crate) fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        for (n, bound) in self.counts.iter_mut().zip(DURATION_BUCKETS) {
            if secs <= bound {
                *n += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    /// Writes this histogram's series of `name` with `labels` (`a="x",b="y"`, or empty).
    pub(crate) fn write(&self, out: &mut String, name: &str, labels: &str) {
        let buckets = Buckets {
            bounds: &DURATION_BUCKETS,
            counts: &self.counts,
            sum: self.sum,
            count: self.count,
        };
        write_histogram(out, name, labels, &buckets);
    }
}

/// One histogram's counts as they are written: cumulative counts per bound.
pub(crate) struct Buckets<'a> {
    pub(crate) bounds: &'a [f64],
    pub(crate) counts: &'a [u64],
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

/// Writes the `_bucket`, `_sum` and `_count` series of one histogram of `name` with
/// `labels` (`a="x",b="y"`, already escaped, or empty for none).
pub(crate) fn write_histogram(out: &mut String, name: &str, labels: &str, h: &Buckets) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, n) in h.bounds.iter().zip(h.counts) {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let braced = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braced} {}", h.sum);
    let _ = writeln!(out, "{name}_count{braced} {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_in_the_count() {
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(4));
        h.observe(Duration::from_millis(250));
        h.observe(Duration::from_secs(500));
        let mut out = String::new();
        h.write(&mut out, "t_seconds", "");
        for line in [
            "t_seconds_bucket{le=\"0.005\"} 1",
            "t_seconds_bucket{le=\"0.1\"} 1",
            "t_seconds_bucket{le=\"0.25\"} 2",
            "t_seconds_bucket{le=\"120\"} 2",
            "t_seconds_bucket{le=\"+Inf\"} 3",
            "t_seconds_count 3",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
    }

    #[test]
    fn labels_come_before_le_and_brace_sum_and_count() {
        let mut out = String::new();
        Histogram::default().write(&mut out, "t_seconds", "route=\"/x\"");
        assert!(out.contains("t_seconds_bucket{route=\"/x\",le=\"+Inf\"} 0\n"));
        assert!(out.contains("t_seconds_count{route=\"/x\"} 0\n"));
    }
}
