//! `poolpilot run`: the agent, with its settings from flags, `POOLPILOT_*` variables, the
//! config file and defaults (docs/config.md). This file only resolves the settings, wires
//! SIGHUP to a rule reload and hands over to `crate::agent::run`; it never starts the agent
//! when a setting is invalid or a secret it needs cannot be read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};

use crate::agent::config::{self, ConfigError, Effective, Origin, Overrides};

/// The text after `run --help` and `config print --help`.
pub(crate) const CONFIG_HELP: &str = "\
Each setting comes from the first of: its flag, its POOLPILOT_* variable, the config file,
E2B's own variable (E2B_API_URL), the default. `poolpilot config print` shows the result.
Secrets are never flags: the API key comes from --api-key-file, the systemd credential
e2b-api-key, or E2B_API_KEY; the webhook secret from --webhook-secret-file, the credential
webhook-secret, or POOLPILOT_WEBHOOK_SECRET.";

/// The agent's settings. Each flag has a `POOLPILOT_*` variable; a flag wins over its
/// variable, and both win over the config file (docs/config.md). Secrets are never flags:
/// the API key comes from a file, the systemd credential `e2b-api-key` or E2B_API_KEY; the
/// webhook secret from a file, the credential `webhook-secret` or POOLPILOT_WEBHOOK_SECRET.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConfigArgs {
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
    pub(crate) fn resolve(&self, m: Option<&ArgMatches>) -> Result<Effective, ConfigError> {
        config::resolve(self.config.as_deref(), &self.overrides(m)?, &|k| {
            std::env::var(k).ok()
        })
    }
}

/// `poolpilot run`: resolves the settings, checks the secrets, and runs the agent until
/// SIGTERM or Ctrl-C; SIGHUP reloads the rules.
pub(crate) async fn run(args: ConfigArgs, m: Option<&ArgMatches>) -> anyhow::Result<()> {
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
    crate::agent::run::run(cfg, super::shutdown_signal(), reload_rx).await
}
