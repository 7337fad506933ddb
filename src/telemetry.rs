//! Logging through `tracing`: readable text on a terminal, JSON lines otherwise or by flag.
//! Logs go to stderr so that stdout stays free for command output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

/// Installs the global subscriber. `level` is an EnvFilter directive such as `info` or
/// `poolpilot=debug,warn`; an invalid one falls back to `info` with a warning.
pub fn init(format: LogFormat, level: &str) {
    let (filter, bad) = match EnvFilter::try_new(level) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
