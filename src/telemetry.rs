//! Logging through `tracing`: readable text on a terminal, JSON lines otherwise or by flag.
//! Logs go to stderr so that stdout stays free for command output, or, for a command whose
//! stdout is a live view (`demo`), to a file, so that the view shows each event once.

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
        std::io::stderr().is_terminal(),
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
/// `ansi` colours text, only for a terminal: escape codes in a file or a pipe are noise.
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
