//! The command line: the `poolpilot` flags, logging setup, dispatch to one file per command,
//! and how an error becomes an exit code. Each command's flags live with its body:
//!
//! - `run`: `poolpilot run`, the agent, and `ConfigArgs` (its flags, shared with `config`);
//! - `config`: `poolpilot config print`;
//! - `demo`: `poolpilot demo`, the agent against the embedded emulator, live;
//! - `health`: `poolpilot health`, for container health checks;
//! - `status`: `poolpilot status`, a running agent's pools at a glance;
//! - `events`: `poolpilot events report`, the guide's Pattern 3 over E2B's events API;
//! - `emulator`: `poolpilot emulator`, a local E2B-compatible server;
//! - `check`: `poolpilot check`, rule and rule test validation;
//! - `test`: `poolpilot test`, rule unit tests;
//! - `simulate`: `poolpilot simulate`, rules against a scenario in virtual time;
//! - `tune`: `poolpilot tune`, a search of rule parameters over scenarios;
//! - `record`: `poolpilot record`, an agent's history turned into a scenario;
//! - `completions`: `poolpilot completions SHELL`, a shell's completion script;
//! - `man`: `poolpilot man`, the manual pages;
//! - `values`: value parsers that several commands' flags share.
//!
//! Nothing here decides or acts: a command's body calls into the library and prints.
//!
//! Exit codes: 0 success; 1 a failure (invalid rules, a failing rule test, a bad scenario, a
//! port that cannot be bound); 2 a usage error; 141 when whoever reads the output went away
//! (`poolpilot check | head`), as a Unix tool killed by SIGPIPE.
//!
//! Commands print with `outln!` and `out!`, never `println!`, which panics when the reader
//! of stdout has gone.

/// Prints a line on stdout; a closed pipe ends the command quietly (exit 141).
macro_rules! outln {
    () => {
        $crate::cli::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints on stdout without a newline; a closed pipe ends the command quietly (exit 141).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}

mod check;
mod completions;
mod config;
mod demo;
mod emulator;
mod events;
mod health;
mod man;
mod record;
mod run;
mod sim_flags;
mod simulate;
mod status;
mod store;
mod test;
mod tune;
mod values;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::agent::config::ConfigError;
use crate::telemetry::{self, LogFormat};

use self::config::ConfigCommand;
use self::run::{CONFIG_HELP, ConfigArgs};

/// The text after the top-level help: exit codes and where the documentation is.
const AFTER_HELP: &str = "\
Exit codes:
  0  success (for check: no errors; for test: every case passed; for health: 200)
  1  a failure: invalid config or rules, a failing rule test, an unhealthy agent, a bad
     scenario, a port in use, a missing secret
  2  a usage error: unknown command or flag, a value that does not parse

Every flag that has a POOLPILOT_* variable is shown with it in the command's --help.
Documentation: docs/operations.md (running it), docs/config.md, docs/rules.md,
docs/emulator.md.";

/// poolpilot: autoscaler and alerting agent for E2B sandbox pools.
#[derive(Debug, Parser)]
#[command(
    name = "poolpilot",
    version,
    about,
    long_about = None,
    after_help = AFTER_HELP
)]
pub(crate) struct Cli {
    /// Log format: text on a terminal and JSON otherwise (auto), or forced.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        env = "POOLPILOT_LOG_FORMAT",
        display_order = 900,
        value_name = "FORMAT"
    )]
    pub(crate) log_format: LogFormat,
    /// Log filter, e.g. `info` or `poolpilot=debug,warn` [default: RUST_LOG, else info].
    #[arg(
        long,
        global = true,
        env = "POOLPILOT_LOG",
        display_order = 901,
        value_name = "FILTER"
    )]
    pub(crate) log_level: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the agent: poll, listen, decide and act (docs/config.md).
    #[command(after_help = CONFIG_HELP)]
    Run(ConfigArgs),
    /// Show the configuration `run` would use, with where each setting came from.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// One-command demo: the agent against the embedded emulator under a load spike, live.
    Demo(demo::DemoArgs),
    /// Exit 0 when an agent's /healthz answers 200 (for container health checks).
    Health(health::HealthArgs),
    /// A running agent's pools at a glance: sizes, claims, last decisions, alerts, readiness.
    Status(status::StatusArgs),
    /// Lifecycle events by template and pool: creates, lifetimes, kill reasons, crash rate.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Run a local E2B-compatible API server (sandboxes, metrics, events, webhooks).
    Emulator(emulator::EmulatorArgs),
    /// Validate rule files and rule tests; print every error as file:line:col.
    Check(check::CheckArgs),
    /// Run rule unit tests (*.test.yaml).
    Test(test::TestArgs),
    /// Run rules against a load scenario on the emulator core, in virtual time.
    Simulate(simulate::SimulateArgs),
    /// Search rule parameters over scenarios: the Pareto front of cost against unmet demand.
    Tune(tune::TuneArgs),
    /// Turn what a running agent observed (its history store) into a scenario to replay.
    Record(record::RecordArgs),
    /// The store: apply its schema (`migrate`) or read its state (`check`).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the manual page, or write one page per command into a folder.
    Man(man::ManArgs),
}

/// Parses the command line and runs it.
/// Writes to stdout. When the reader has gone (EPIPE), the output is no longer wanted by
/// anyone: the process ends at once with 141, the shell's code for a death by SIGPIPE, instead
/// of panicking as `print!` does (Rust ignores SIGPIPE so that the agent's sockets see EPIPE).
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| stdout.flush());
    if let Err(e) = written
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(141);
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let demo_log = init_logs(&cli);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await.map(|()| true),
            Command::Config(command) => config::run(&command).map(|()| true),
            Command::Demo(args) => demo::run(&args, demo_log.as_deref()).await.map(|()| true),
            Command::Health(args) => Ok(health::run(&args).await),
            Command::Status(args) => status::run(&args).await.map(|()| true),
            Command::Events(command) => events::run(&command).await.map(|()| true),
            Command::Emulator(args) => emulator::run(args).await.map(|()| true),
            Command::Check(args) => Ok(check::run(&args)),
            Command::Test(args) => test::run(&args),
            Command::Simulate(args) => simulate::run(args).await.map(|()| true),
            Command::Tune(args) => tune::run(&args),
            Command::Record(args) => record::run(&args).await.map(|()| true),
            Command::Store(command) => store::run(&command).await,
            Command::Completions(args) => {
                completions::run(&args);
                Ok(true)
            }
            Command::Man(args) => man::run(&args).map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => report(&e),
    }
}

/// Installs logging: to stderr, except for `demo`, whose live view is the terminal: its logs go
/// to a file in the temporary folder, whose path it returns (the view names it).
fn init_logs(cli: &Cli) -> Option<PathBuf> {
    let level = telemetry::filter(cli.log_level.as_deref());
    if matches!(cli.command, Command::Demo(_)) {
        let file = std::env::temp_dir().join(format!("poolpilot-demo-{}.log", std::process::id()));
        match telemetry::init_to_file(cli.log_format, &level, &file) {
            Ok(()) => return Some(file),
            Err(e) => eprintln!(
                "warning: cannot write the demo's log to {}: {e}; logging warnings only",
                file.display()
            ),
        }
        telemetry::init(cli.log_format, "warn");
        return None;
    }
    telemetry::init(cli.log_format, &level);
    None
}

/// Prints an error and says how to exit: a configuration error one line per problem, with
/// its own exit code (2 for a value that does not parse, else 1).
fn report(e: &anyhow::Error) -> ExitCode {
    match e.downcast_ref::<ConfigError>() {
        Some(c) => {
            for m in c.messages() {
                eprintln!("error: {m}");
            }
            ExitCode::from(c.exit_code())
        }
        None => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM: the end of `run` and `emulator`.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
