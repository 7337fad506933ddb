//! Logging through `tracing`: readable text on a terminal, JSON lines otherwise or by flag.
//! Logs go to stderr so that stdout stays free for command output, or, for a command whose
//! stdout is a live view (`demo`), to a file, so that the view shows each event once.
//!
//! Colour codes go only to a terminal, and never when `NO_COLOR` is set to anything
//! (<https://no-color.org>): in a pipe, a file or the journal they are noise. The filter is
//! `--log-level`, else `POOLPILOT_LOG`, else `RUST_LOG`, else `info` ([`filter`]).
//! This module never reads a flag itself: the command line hands it what the user gave.

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

/// The log filter to use: the one given by `--log-level` or `POOLPILOT_LOG` (clap has already
/// chosen between those two), else `RUST_LOG` when set and not empty, else `info`.
pub fn filter(given: Option<&str>) -> String {
    let rust_log = std::env::var("RUST_LOG").ok();
    choose_filter(given, rust_log.as_deref())
}

/// [`filter`] without the environment: the first of `given` and `rust_log` that is not
/// empty, else `info`.
fn choose_filter(given: Option<&str>, rust_log: Option<&str>) -> String {
    [given, rust_log]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|f| !f.is_empty())
        .unwrap_or("info")
        .to_string()
}

/// Whether a stream may carry colour codes: only when it is a terminal and `NO_COLOR` is unset
/// or empty. Every coloured output of poolpilot asks this first.
pub fn wants_colour(is_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    colour_allowed(is_terminal, no_color)
}

/// [`wants_colour`] without the environment.
fn colour_allowed(is_terminal: bool, no_color: bool) -> bool {
    is_terminal && !no_color
}

/// Installs the global subscriber, writing to stderr. `level` is an EnvFilter directive such
/// as `info` or `poolpilot=debug,warn`; an invalid one falls back to `info` with a warning.
pub fn init(format: LogFormat, level: &str) {
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    install(
        json,
        wants_colour(std::io::stderr().is_terminal()),
        level,
        std::io::stderr,
    );
}

/// Installs the global subscriber, appending to `file` (created if need be). With `auto`, a
/// file gets JSON lines.
pub fn init_to_file(format: LogFormat, level: &str, file: &Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    install(
        format != LogFormat::Text,
        false,
        level,
        std::sync::Mutex::new(f),
    );
    Ok(())
}

/// Installs the subscriber with its filter, format and writer; keeps one already installed.
/// `ansi` colours text ([`wants_colour`] decides it).
fn install<W>(json: bool, ansi: bool, level: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let (filter, bad) = match EnvFilter::try_new(level) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if result.is_err() {
        return; // A subscriber is already installed (tests): keep it.
    }
    if let Some(e) = bad {
        tracing::warn!(directive = level, error = %e, "invalid log level; using info");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_given_filter_wins_over_rust_log_which_wins_over_info() {
        assert_eq!(choose_filter(Some("debug"), Some("error")), "debug");
        assert_eq!(
            choose_filter(None, Some("poolpilot=trace")),
            "poolpilot=trace"
        );
        assert_eq!(choose_filter(Some(""), Some("warn")), "warn");
        assert_eq!(choose_filter(None, Some("  ")), "info");
        assert_eq!(choose_filter(None, None), "info");
    }

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(colour_allowed(true, false));
        assert!(!colour_allowed(true, true));
        assert!(!colour_allowed(false, false));
    }
}
