//! The command line: flags, environment variables, and what each subcommand runs.
//!
//! Exit codes: 0 success; 1 a failure (invalid rules, a failing rule test, a bad scenario, a
//! port that cannot be bound); 2 a usage error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::agent::config::{self, ConfigError, Effective, Origin, Overrides};
use crate::duration::HumanDuration;
use crate::emulator::delivery::DeliveryPolicy;
use crate::emulator::{Clock, CoreConfig, EmulatorOptions, RunningEmulator, Scenario};
use crate::telemetry::{self, LogFormat};

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

/// The text after `run --help` and `config print --help`.
const CONFIG_HELP: &str = "\
Each setting comes from the first of: its flag, its POOLPILOT_* variable, the config file,
E2B's own variable (E2B_API_URL), the default. `poolpilot config print` shows the result.
Secrets are never flags: the API key comes from --api-key-file, the systemd credential
e2b-api-key, or E2B_API_KEY; the webhook secret from --webhook-secret-file, the credential
webhook-secret, or POOLPILOT_WEBHOOK_SECRET.";

/// poolpilot: autoscaler and alerting agent for E2B sandbox pools.
#[derive(Debug, Parser)]
#[command(
    name = "poolpilot",
    version,
    about,
    long_about = None,
    after_help = AFTER_HELP
)]
pub struct Cli {
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
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `poolpilot=debug,warn`.
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "POOLPILOT_LOG",
        display_order = 901,
        value_name = "FILTER"
    )]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: poll, listen, decide and act (docs/config.md).
    #[command(after_help = CONFIG_HELP)]
    Run(ConfigArgs),
    /// Show the configuration `run` would use, with where each setting came from.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// One-command demo: the agent against the embedded emulator under a load spike, live.
    Demo(DemoArgs),
    /// Exit 0 when an agent's /healthz answers 200 (for container health checks).
    Health(HealthArgs),
    /// Run a local E2B-compatible API server (sandboxes, metrics, events, webhooks).
    Emulator(EmulatorArgs),
    /// Validate rule files and rule tests; print every error as file:line:col.
    Check(CheckArgs),
    /// Run rule unit tests (*.test.yaml).
    Test(TestArgs),
    /// Run rules against a load scenario on the emulator core, in virtual time.
    Simulate(SimulateArgs),
}

/// `poolpilot config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration, secrets redacted.
    ///
    /// The output is YAML that loads back as a config file; each setting is commented with
    /// where it came from (flag, environment, file, default). Takes `run`'s flags.
    #[command(after_help = CONFIG_HELP)]
    Print(ConfigArgs),
}

/// The agent's settings. Each flag has a `POOLPILOT_*` variable; a flag wins over its
/// variable, and both win over the config file (docs/config.md). Secrets are never flags:
/// the API key comes from a file, the systemd credential `e2b-api-key` or E2B_API_KEY; the
/// webhook secret from a file, the credential `webhook-secret` or POOLPILOT_WEBHOOK_SECRET.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The configuration file; optional when --rules and --state-dir are given.
    #[arg(long, env = "POOLPILOT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// E2B's API base URL [file: api.url; else E2B_API_URL, else https://api.e2b.app].
    #[arg(long, env = "POOLPILOT_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
    /// File holding the API key [file: api.key_file].
    #[arg(long, env = "POOLPILOT_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Sandbox creates per second, at most [file: api.create_rate; default 5].
    #[arg(long, env = "POOLPILOT_CREATE_RATE", value_name = "PER_SECOND")]
    pub create_rate: Option<String>,
    /// Rule file or directory; repeat, or separate with commas [file: rules].
    #[arg(
        long = "rules",
        env = "POOLPILOT_RULES",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub rules: Vec<PathBuf>,
    /// State and decision log folder [file: state_dir].
    #[arg(long, env = "POOLPILOT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Address of the HTTP server [file: listen; default 127.0.0.1:9477].
    #[arg(long, env = "POOLPILOT_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Control loop interval [file: poll.metrics; default 5s].
    #[arg(long, env = "POOLPILOT_POLL_METRICS", value_name = "DURATION")]
    pub poll_metrics: Option<String>,
    /// Events API poll interval [file: poll.events; default 10s].
    #[arg(long, env = "POOLPILOT_POLL_EVENTS", value_name = "DURATION")]
    pub poll_events: Option<String>,
    /// Serve POST /webhooks/e2b [file: webhook; implied by the other --webhook-* flags].
    #[arg(long, env = "POOLPILOT_WEBHOOK", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true")]
    pub webhook: Option<String>,
    /// File holding the webhook signature secret [file: webhook.secret_file].
    #[arg(long, env = "POOLPILOT_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// URL E2B delivers to; registers the webhook at start [file: webhook.public_url].
    #[arg(long, env = "POOLPILOT_WEBHOOK_PUBLIC_URL", value_name = "URL")]
    pub webhook_public_url: Option<String>,
    /// Name of the registered webhook [file: webhook.name; default poolpilot].
    #[arg(long, env = "POOLPILOT_WEBHOOK_NAME", value_name = "NAME")]
    pub webhook_name: Option<String>,
    /// Decide and log; change nothing [file: dry_run].
    #[arg(long, env = "POOLPILOT_DRY_RUN", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true")]
    pub dry_run: Option<String>,
}

/// Each [`ConfigArgs`] field: its clap id, the setting it overrides, its flag and variable.
const OVERRIDES: &[(&str, &str, &str, &str)] = &[
    ("api_url", "api.url", "--api-url", "POOLPILOT_API_URL"),
    (
        "api_key_file",
        "api.key_file",
        "--api-key-file",
        "POOLPILOT_API_KEY_FILE",
    ),
    (
        "create_rate",
        "api.create_rate",
        "--create-rate",
        "POOLPILOT_CREATE_RATE",
    ),
    ("rules", "rules", "--rules", "POOLPILOT_RULES"),
    (
        "state_dir",
        "state_dir",
        "--state-dir",
        "POOLPILOT_STATE_DIR",
    ),
    ("listen", "listen", "--listen", "POOLPILOT_LISTEN"),
    (
        "poll_metrics",
        "poll.metrics",
        "--poll-metrics",
        "POOLPILOT_POLL_METRICS",
    ),
    (
        "poll_events",
        "poll.events",
        "--poll-events",
        "POOLPILOT_POLL_EVENTS",
    ),
    ("webhook", "webhook", "--webhook", "POOLPILOT_WEBHOOK"),
    (
        "webhook_secret_file",
        "webhook.secret_file",
        "--webhook-secret-file",
        "POOLPILOT_WEBHOOK_SECRET_FILE",
    ),
    (
        "webhook_public_url",
        "webhook.public_url",
        "--webhook-public-url",
        "POOLPILOT_WEBHOOK_PUBLIC_URL",
    ),
    (
        "webhook_name",
        "webhook.name",
        "--webhook-name",
        "POOLPILOT_WEBHOOK_NAME",
    ),
    ("dry_run", "dry_run", "--dry-run", "POOLPILOT_DRY_RUN"),
];

impl ConfigArgs {
    /// Where each setting given by flag or variable came from, read from clap's matches. The
    /// values are kept as text by clap and parsed here, so that an error names its source.
    fn origins(m: Option<&ArgMatches>) -> BTreeMap<&'static str, Origin> {
        let mut origins = BTreeMap::new();
        let Some(m) = m else {
            return origins;
        };
        for (id, setting, flag, env) in OVERRIDES {
            match m.value_source(id) {
                Some(ValueSource::CommandLine) => {
                    origins.insert(*setting, Origin::Flag(flag));
                }
                Some(ValueSource::EnvVariable) => {
                    origins.insert(*setting, Origin::Env(env));
                }
                _ => {}
            }
        }
        origins
    }

    /// The overrides, each parsed with its source named in any error.
    fn overrides(&self, m: Option<&ArgMatches>) -> Result<Overrides, ConfigError> {
        let origins = Self::origins(m);
        // `--flag` or `POOLPILOT_X`: what an error about the setting blames.
        let source = |setting: &str| -> String {
            match origins.get(setting) {
                Some(Origin::Env(v)) => (*v).to_string(),
                Some(Origin::Flag(f)) => (*f).to_string(),
                _ => OVERRIDES
                    .iter()
                    .find(|o| o.1 == setting)
                    .map_or_else(|| setting.to_string(), |o| o.2.to_string()),
            }
        };
        let parse_duration = |raw: &Option<String>, setting: &str| {
            raw.as_deref()
                .map(|r| config::parse_duration_override(r, &source(setting)))
                .transpose()
        };
        let parse_bool = |raw: &Option<String>, setting: &str| {
            raw.as_deref()
                .map(|r| config::parse_bool_override(r, &source(setting)))
                .transpose()
        };
        let create_rate = self
            .create_rate
            .as_deref()
            .map(|r| config::parse_rate_override(r, &source("api.create_rate")))
            .transpose()?;
        Ok(Overrides {
            api_url: self.api_url.clone(),
            api_key_file: self.api_key_file.clone(),
            create_rate,
            rules: self.rules.clone(),
            state_dir: self.state_dir.clone(),
            listen: self.listen.clone(),
            poll_metrics: parse_duration(&self.poll_metrics, "poll.metrics")?,
            poll_events: parse_duration(&self.poll_events, "poll.events")?,
            webhook: parse_bool(&self.webhook, "webhook")?,
            webhook_secret_file: self.webhook_secret_file.clone(),
            webhook_public_url: self.webhook_public_url.clone(),
            webhook_name: self.webhook_name.clone(),
            dry_run: parse_bool(&self.dry_run, "dry_run")?,
            origins,
        })
    }

    /// The effective configuration: flags and environment over the file and defaults.
    pub fn resolve(&self, m: Option<&ArgMatches>) -> Result<Effective, ConfigError> {
        config::resolve(self.config.as_deref(), &self.overrides(m)?, &|k| {
            std::env::var(k).ok()
        })
    }
}

/// Flags of `poolpilot health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The agent's address, as in `run --listen`; an unspecified host (0.0.0.0, [::]) is
    /// asked on loopback.
    #[arg(
        long,
        env = "POOLPILOT_LISTEN",
        default_value = "127.0.0.1:9477",
        value_name = "HOST:PORT"
    )]
    pub listen: String,
    /// The full health URL, instead of http://<listen>/healthz.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

impl HealthArgs {
    /// The URL `poolpilot health` asks.
    pub fn target(&self) -> String {
        if let Some(u) = &self.url {
            return u.clone();
        }
        let listen = match self.listen.rsplit_once(':') {
            Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
            Some(("[::]", port)) => format!("[::1]:{port}"),
            _ => self.listen.clone(),
        };
        format!("http://{listen}/healthz")
    }
}

/// Flags of `poolpilot demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Virtual seconds per wall-clock second: at 30 the 30-minute scenario takes a minute.
    #[arg(long, default_value_t = 30.0, value_name = "FACTOR", value_parser = demo_speed)]
    pub speed: f64,
}

/// Flags of `poolpilot check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rule files, rule test files, or directories (every *.yaml / *.yml below them).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Flags of `poolpilot test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Rule test files (*.test.yaml) or directories holding them.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Flags of `poolpilot simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Rule files or directories.
    #[arg(long = "rules", required = true, value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// Scenario file (docs/emulator.md).
    #[arg(long, value_name = "FILE")]
    pub scenario: PathBuf,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Write a chart of the run (SVG) here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Time between two engine steps (the agent's poll interval).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = tick_interval)]
    pub tick: HumanDuration,
    /// Sandbox creates per second the emulated team may make (E2B: 1 Hobby, 5 Pro); 0 is
    /// unlimited.
    #[arg(long, default_value_t = 5.0, value_name = "PER_SECOND", value_parser = emulated_create_rate)]
    pub create_rate: f64,
    /// Running sandboxes the emulated team may have (E2B: 20 Hobby, 100 Pro, up to 1,100).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = max_concurrent)]
    pub max_concurrent: usize,
    /// Metric sampling interval of the emulator (E2B: 5s).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = tick_interval)]
    pub metrics_interval: HumanDuration,
}

/// Flags of `poolpilot emulator`.
#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on. Loopback by default; anything else exposes the emulator.
    #[arg(
        long,
        default_value = "127.0.0.1:3000",
        env = "POOLPILOT_EMULATOR_LISTEN",
        value_name = "HOST:PORT"
    )]
    pub listen: String,
    /// Scenario file: templates, load over time, initial sandboxes, faults (docs/emulator.md).
    #[arg(long, env = "POOLPILOT_EMULATOR_SCENARIO", value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Time between two metric samples of a sandbox (E2B: 5s).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = tick_interval)]
    pub metrics_interval: HumanDuration,
    /// API key clients must send; without it any non-empty key is accepted.
    #[arg(
        long,
        env = "POOLPILOT_EMULATOR_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Virtual seconds per wall-clock second.
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    pub speed: f64,
    /// Virtual time moves only on POST /_emulator/advance.
    #[arg(long, conflicts_with = "speed")]
    pub manual_clock: bool,
    /// Running sandboxes at most (E2B: 20 on Hobby, 100 on Pro).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = max_concurrent)]
    pub max_concurrent: usize,
    /// Sandbox creates per second (E2B: 1 on Hobby, 5 on Pro); 0 is unlimited.
    #[arg(long, default_value_t = 5.0, value_name = "PER_SECOND", value_parser = emulated_create_rate)]
    pub create_rate: f64,
    /// Tries per webhook delivery, the first included.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_attempts: u32,
    /// Wait before the first webhook retry; doubles each retry.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = webhook_backoff)]
    pub webhook_backoff: HumanDuration,
    /// Answer POST /v2/sandboxes with a router 404, like an API that only has v1 creates.
    #[arg(long)]
    pub no_v2_create: bool,
    /// Print a status line this often (wall clock); 0s prints none.
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = status_every)]
    pub status_every: HumanDuration,
    /// Exit once the scenario's duration has passed in virtual time.
    #[arg(long)]
    pub exit_at_end: bool,
}

/// A number within `lo..=hi`, for a flag's value parser: the error says the valid range.
fn number_in(raw: &str, lo: f64, hi: f64, unit: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("expected {unit} from {lo} to {hi}")),
    }
}

/// A duration within `lo..=hi`, for a flag's value parser.
fn duration_in(raw: &str, lo: Duration, hi: Duration) -> Result<HumanDuration, String> {
    let d: HumanDuration = raw.parse()?;
    config::check_duration(d.0, (lo, hi)).map(|()| d)
}

/// `demo --speed`: a minute of scenario takes from 10 minutes (0.1) to 60 ms (1000).
fn demo_speed(raw: &str) -> Result<f64, String> {
    let (lo, hi) = crate::demo::SPEED_RANGE;
    number_in(raw, lo, hi, "virtual seconds per wall-clock second")
}

/// The emulated team's create rate: 0 (unlimited) or 0.001 to the emulator's own bound.
fn emulated_create_rate(raw: &str) -> Result<f64, String> {
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
fn max_concurrent(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err("expected a number of sandboxes from 1 to 1000000".into()),
    }
}

/// A step of virtual time (engine step, metric sampling): 100 ms to an hour.
fn tick_interval(raw: &str) -> Result<HumanDuration, String> {
    duration_in(raw, Duration::from_millis(100), Duration::from_secs(3600))
}

/// The first webhook retry's wait: up to an hour.
fn webhook_backoff(raw: &str) -> Result<HumanDuration, String> {
    duration_in(raw, Duration::ZERO, Duration::from_secs(3600))
}

/// The emulator's status line period: 0 (none) to a day.
fn status_every(raw: &str) -> Result<HumanDuration, String> {
    duration_in(raw, Duration::ZERO, Duration::from_secs(86_400))
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // The matches of the subcommand that takes `ConfigArgs`, for each setting's origin.
    let config_matches = matches.subcommand_matches("run").or_else(|| {
        matches
            .subcommand_matches("config")
            .and_then(|m| m.subcommand_matches("print"))
    });
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
            Command::Run(args) => run_agent(args, config_matches).await.map(|()| true),
            Command::Config(ConfigCommand::Print(args)) => {
                print_config(&args, config_matches).map(|()| true)
            }
            Command::Demo(args) => crate::demo::run(args.speed, demo_log.as_deref())
                .await
                .map(|()| true),
            Command::Health(args) => Ok(health(&args.target()).await),
            Command::Emulator(args) => run_emulator(args).await.map(|()| true),
            Command::Check(args) => Ok(run_check(&args)),
            Command::Test(args) => run_test(&args),
            Command::Simulate(args) => run_simulate(args).await.map(|()| true),
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
    if matches!(cli.command, Command::Demo(_)) {
        let file = std::env::temp_dir().join(format!("poolpilot-demo-{}.log", std::process::id()));
        match telemetry::init_to_file(cli.log_format, &cli.log_level, &file) {
            Ok(()) => return Some(file),
            Err(e) => eprintln!(
                "warning: cannot write the demo's log to {}: {e}; logging warnings only",
                file.display()
            ),
        }
        telemetry::init(cli.log_format, "warn");
        return None;
    }
    telemetry::init(cli.log_format, &cli.log_level);
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

/// `poolpilot config print`: prints what it can, then fails as `run` would when a secret
/// `run` needs cannot be read.
fn print_config(args: &ConfigArgs, m: Option<&ArgMatches>) -> anyhow::Result<()> {
    let eff = args.resolve(m)?;
    print!("{}", eff.to_yaml());
    eff.require_secrets()?;
    Ok(())
}

/// `poolpilot health`: true when the URL answers 200 within 3 s.
async fn health(url: &str) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap_or_default();
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            eprintln!("unhealthy: {url} answered {}", r.status());
            false
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e}");
            false
        }
    }
}

async fn run_agent(args: ConfigArgs, m: Option<&ArgMatches>) -> anyhow::Result<()> {
    let eff = args.resolve(m)?;
    eff.require_secrets()?;
    let cfg = eff.config;
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading rules");
                let _ = reload_tx.try_send(());
            }
        }
    });
    #[cfg(not(unix))]
    drop(reload_tx);
    crate::agent::run::run(cfg, shutdown_signal(), reload_rx).await
}

async fn run_emulator(args: EmulatorArgs) -> anyhow::Result<()> {
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::default(),
    };
    let opts = EmulatorOptions {
        core: CoreConfig {
            metrics_interval: args.metrics_interval.0,
            max_concurrent: args.max_concurrent,
            create_rate: args.create_rate,
            ..CoreConfig::default()
        },
        scenario: scenario.clone(),
        api_key: args.api_key.clone(),
        clock: if args.manual_clock {
            Clock::Manual
        } else {
            Clock::Wall { speed: args.speed }
        },
        delivery: DeliveryPolicy {
            max_attempts: args.webhook_attempts,
            backoff: args.webhook_backoff.0,
            ..DeliveryPolicy::default()
        },
        serve_v2_create: !args.no_v2_create,
        ..EmulatorOptions::default()
    };
    // Every flag within crate::emulator::limits, or exit 1 naming the flag and its range.
    opts.validate()?;
    crate::emulator::limits::span("--status-every", args.status_every.0)?;
    let running = RunningEmulator::bind(opts, &args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(
        url = %running.url(),
        key_required = args.api_key.is_some(),
        "emulator listening; point clients at it with E2B_API_URL={}",
        running.url()
    );
    println!("poolpilot emulator listening on {}", running.url());
    let end = scenario.duration.filter(|_| args.exit_at_end).map(|d| d.0);
    let status_every = (!args.status_every.0.is_zero()).then_some(args.status_every.0);
    let emulator = running.emulator.clone();
    let watch = async {
        let mut tick = tokio::time::interval(status_every.unwrap_or(Duration::from_millis(200)));
        loop {
            tick.tick().await;
            let stats = emulator.with_core(|c| c.stats());
            if status_every.is_some() {
                println!("{}", status_line(&stats));
            }
            if end.is_some_and(|e| stats.elapsed_s >= e.as_secs_f64()) {
                println!("scenario finished: {}", serde_json::to_string(&stats)?);
                return anyhow::Ok(());
            }
        }
    };
    tokio::select! {
        r = watch => r?,
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    running.stop().await;
    Ok(())
}

/// `poolpilot check`: true when every file is valid.
pub fn run_check(args: &CheckArgs) -> bool {
    use crate::rules::{self, Diagnostic};
    use crate::ruletest as testing;
    let mut rule_files = Vec::new();
    let mut test_files = Vec::new();
    let mut diags: Vec<Diagnostic> = Vec::new();
    for path in &args.paths {
        match rules::rule_files_in(path) {
            Ok(files) => {
                for f in files {
                    if rules::is_test_file(&f) {
                        test_files.push(f);
                    } else {
                        rule_files.push(f);
                    }
                }
            }
            Err(e) => diags.push(Diagnostic {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    let set = if rule_files.is_empty() {
        None
    } else {
        match rules::load_paths(&rule_files) {
            Ok(set) => Some(set),
            Err(d) => {
                diags.extend(d);
                None
            }
        }
    };
    for t in &test_files {
        if let Err(d) = testing::load_test_file(t) {
            diags.extend(d);
        }
    }
    if rule_files.is_empty() && test_files.is_empty() && diags.is_empty() {
        eprintln!("no rule files found (*.yaml or *.yml)");
        eprintln!("1 error found");
        return false;
    }
    if !diags.is_empty() {
        // By file, then line and column as numbers (line 7 before line 12).
        diags.sort();
        diags.dedup();
        for d in &diags {
            eprintln!("{d}");
        }
        eprintln!(
            "{} error{} found",
            diags.len(),
            if diags.len() == 1 { "" } else { "s" }
        );
        return false;
    }
    let set = set.unwrap_or_default();
    for w in &set.warnings {
        eprintln!("{w}");
    }
    println!(
        "ok: {} rule file{}, {} test file{}: {} pools, {} alerts, {} triggers, {} notifiers",
        rule_files.len(),
        if rule_files.len() == 1 { "" } else { "s" },
        test_files.len(),
        if test_files.len() == 1 { "" } else { "s" },
        set.pools.len(),
        set.alerts.len(),
        set.triggers.len(),
        set.notifiers.len()
    );
    let now = chrono::Utc::now();
    for pool in &set.pools {
        for s in &pool.schedules {
            match s.cron.next(now) {
                Some(next) => println!(
                    "  schedule {}/{} ({:?} {}): next {} ({})",
                    pool.name,
                    s.name,
                    s.cron.text,
                    s.cron.tz,
                    next.with_timezone(&s.cron.tz)
                        .format("%a %Y-%m-%d %H:%M %Z"),
                    next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                None => println!("  schedule {}/{}: never fires again", pool.name, s.name),
            }
        }
    }
    true
}

/// `poolpilot test`: Ok(true) when every case passes.
pub fn run_test(args: &TestArgs) -> anyhow::Result<bool> {
    use crate::rules;
    use crate::ruletest as testing;
    let mut files = Vec::new();
    for p in &args.files {
        let found = rules::rule_files_in(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        files.extend(
            found
                .into_iter()
                .filter(|f| !p.is_dir() || rules::is_test_file(f)),
        );
    }
    if files.is_empty() {
        anyhow::bail!("no rule test files (*.test.yaml) found");
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for f in &files {
        let tf = match testing::load_test_file(f) {
            Ok(tf) => tf,
            Err(diags) => {
                for d in diags {
                    eprintln!("{d}");
                }
                failed += 1;
                continue;
            }
        };
        for case in &tf.cases {
            match testing::run_case(&tf.rules, case) {
                Ok(()) => {
                    passed += 1;
                    println!("ok    {}: {}", f.display(), case.name);
                }
                Err(diff) => {
                    failed += 1;
                    println!("FAIL  {}: {}\n{diff}", f.display(), case.name);
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

async fn run_simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let rules = crate::rules::load_paths(&args.rules).map_err(|d| {
        anyhow::anyhow!(
            "invalid rules:\n{}",
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let scenario = Scenario::load(&args.scenario)?;
    let opts = crate::simulate::SimOptions {
        tick: args.tick.0,
        core: CoreConfig {
            create_rate: args.create_rate,
            max_concurrent: args.max_concurrent,
            metrics_interval: args.metrics_interval.0.max(Duration::from_millis(100)),
            ..CoreConfig::default()
        },
        ..Default::default()
    };
    let report = crate::simulate::simulate(std::sync::Arc::new(rules), &scenario, &opts);
    if let Some(out) = &args.out {
        let title = format!("poolpilot simulate: {}", args.scenario.display());
        std::fs::write(out, crate::simulate::svg::render(&report, &title))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", crate::simulate::summary(&report));
        if let Some(out) = &args.out {
            println!("chart written to {}", out.display());
        }
    }
    Ok(())
}

/// One human-readable line about the emulator's state.
pub fn status_line(s: &crate::emulator::core::StatsReport) -> String {
    let secs = s.elapsed_s.max(0.0) as u64;
    let mut line = format!("t+{:02}:{:02}", secs / 60, secs % 60);
    for (name, t) in &s.templates {
        if t.running == 0 && t.demand_cores == 0.0 && t.totals.creates == 0 {
            continue;
        }
        line.push_str(&format!(
            " | {name}: demand {:.1} cores, capacity {:.0} cores, {} running ({} booting), cpu avg {:.0}%",
            t.demand_cores, t.capacity_cores, t.running, t.booting, t.avg_cpu_pct
        ));
    }
    line.push_str(&format!(
        " | unmet {:.0} core-s, {:.0} sandbox-s, {} events",
        s.unmet_core_seconds, s.sandbox_seconds, s.events
    ));
    line
}

async fn shutdown_signal() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_asks_the_agents_listen_address_on_loopback() {
        let h = |listen: &str, url: Option<&str>| {
            HealthArgs {
                listen: listen.into(),
                url: url.map(Into::into),
            }
            .target()
        };
        assert_eq!(h("127.0.0.1:9477", None), "http://127.0.0.1:9477/healthz");
        assert_eq!(h("0.0.0.0:8080", None), "http://127.0.0.1:8080/healthz");
        assert_eq!(h("[::]:8080", None), "http://[::1]:8080/healthz");
        assert_eq!(h("10.0.0.5:9477", None), "http://10.0.0.5:9477/healthz");
        assert_eq!(h("0.0.0.0:1", Some("http://x/healthz")), "http://x/healthz");
    }
}
