//! The standard process families of `/metrics`, as every Prometheus client library writes
//! them: `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
//! `process_max_fds` and `process_start_time_seconds`. They are read from `/proc/self` at
//! each scrape; where there is no `/proc` (not Linux) or a file cannot be read, the family
//! is left out. It only reads, and never fails the scrape.

use std::fmt::Write as _;

use super::metrics::family;

/// What `/proc/self/stat` says, in base units.
#[derive(Debug, PartialEq)]
struct Stat {
    cpu_seconds: f64,
    resident_bytes: u64,
    /// Clock ticks from boot to the process's start.
    start_ticks: u64,
}

/// One process family: name, type, help, and its value when it could be read.
type Family = (&'static str, &'static str, &'static str, Option<f64>);

/// Every process family that can be read here.
pub(super) fn render(out: &mut String) {
    for (name, kind, help, value) in read() {
        if let Some(v) = value {
            family(out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
    }
}

/// The process families, read now from `/proc/self`, `/proc/stat` and the open files limit.
fn read() -> [Family; 5] {
    let ticks = rustix::param::clock_ticks_per_second();
    let page = rustix::param::page_size() as u64;
    let stat = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s, ticks, page));
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s));
    let start = match (&stat, boot) {
        (Some(s), Some(boot)) => Some(boot as f64 + s.start_ticks as f64 / ticks as f64),
        _ => None,
    };
    // The listing itself holds one descriptor open while it is read.
    let open = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|fds| fds.count().saturating_sub(1) as f64);
    let max = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map(|m| m as f64);
    [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stat.as_ref().map(|s| s.cpu_seconds),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            stat.as_ref().map(|s| s.resident_bytes as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open,
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        ),
    ]
}

/// CPU time, resident size and start of `/proc/self/stat` (see proc(5)): fields 14 and 15
/// (utime, stime) and 22 (starttime) in clock ticks, 24 (rss) in pages. The fields are
/// counted after the command name's closing parenthesis, since the name may hold spaces.
fn parse_stat(text: &str, ticks_per_second: u64, page_size: u64) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    if ticks_per_second == 0 {
        return None;
    }
    Some(Stat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks_per_second as f64,
        resident_bytes: field(24)?.saturating_mul(page_size),
        start_ticks: field(22)?,
    })
}

/// The boot time, in seconds since the epoch: the `btime` line of `/proc/stat`.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (pool pilot) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 123456 10000000 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line, 100, 4096),
            Some(Stat {
                cpu_seconds: 3.0,
                resident_bytes: 2048 * 4096,
                start_ticks: 123456,
            })
        );
    }

    #[test]
    fn a_short_or_garbled_stat_is_none_not_a_panic() {
        assert_eq!(parse_stat("4242 (x) S 1 2", 100, 4096), None);
        assert_eq!(parse_stat("no parenthesis", 100, 4096), None);
        assert_eq!(
            parse_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 a b", 100, 4096),
            None
        );
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(boot_time("cpu 1 2 3\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_every_family() {
        let mut out = String::new();
        render(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(
                out.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{out}"
            );
        }
    }
}
